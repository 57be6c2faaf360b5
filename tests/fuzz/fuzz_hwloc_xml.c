/* tests/fuzz/fuzz_hwloc_xml.c - libFuzzer target: the hwloc-xml importer. */
#include "tests/fuzz/fuzz_topo.h"

DP_FUZZ_TARGET("hwloc-xml")
