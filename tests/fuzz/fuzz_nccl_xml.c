/* tests/fuzz/fuzz_nccl_xml.c - libFuzzer target: the nccl-xml importer. */
#include "tests/fuzz/fuzz_topo.h"

DP_FUZZ_TARGET("nccl-xml")
