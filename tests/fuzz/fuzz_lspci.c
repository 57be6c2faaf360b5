/* tests/fuzz/fuzz_lspci.c - libFuzzer target: the lspci importer. */
#include "tests/fuzz/fuzz_topo.h"

DP_FUZZ_TARGET("lspci")
