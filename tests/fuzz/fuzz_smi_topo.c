/* tests/fuzz/fuzz_smi_topo.c - libFuzzer target: the nvidia-smi-topo importer. */
#include "tests/fuzz/fuzz_topo.h"

DP_FUZZ_TARGET("nvidia-smi-topo")
