/* tests/fuzz/fuzz_detect.c - libFuzzer target: format detection, then
 * whichever importer claims the input. */
#include "tests/fuzz/fuzz_topo.h"

DP_FUZZ_TARGET(NULL)
