/* worker/dp_worker.h - dpworker: one rank of a run (control-plane client and
 * executor).  The entry point is a library function so tests can drive it. */
#ifndef DP_WORKER_H
#define DP_WORKER_H

#include <stdio.h>

/* Run dpworker with @argc/@argv; data on @out, diagnostics on @err.
 * Returns a sysexits.h code; never exits. */
int dp_worker_main(int argc, char **argv, FILE *out, FILE *err);

#endif
