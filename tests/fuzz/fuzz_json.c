/* tests/fuzz/fuzz_json.c - libFuzzer target: the dpctl-json importer. */
#include "tests/fuzz/fuzz_topo.h"

DP_FUZZ_TARGET("dpctl-json")
