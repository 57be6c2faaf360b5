/* tests/fuzz/fuzz_ibstatus.c - libFuzzer target: the ibstatus importer. */
#include "tests/fuzz/fuzz_topo.h"

DP_FUZZ_TARGET("ibstatus")
