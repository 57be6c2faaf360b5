/* tests/fuzz/fuzz_ibv_devinfo.c - libFuzzer target: the ibv_devinfo importer. */
#include "tests/fuzz/fuzz_topo.h"

DP_FUZZ_TARGET("ibv_devinfo")
