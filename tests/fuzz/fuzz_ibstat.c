/* tests/fuzz/fuzz_ibstat.c - libFuzzer target: the ibstat importer. */
#include "tests/fuzz/fuzz_topo.h"

DP_FUZZ_TARGET("ibstat")
