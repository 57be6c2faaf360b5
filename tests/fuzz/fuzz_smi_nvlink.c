/* tests/fuzz/fuzz_smi_nvlink.c - libFuzzer target: the nvidia-smi-nvlink importer. */
#include "tests/fuzz/fuzz_topo.h"

DP_FUZZ_TARGET("nvidia-smi-nvlink")
