/* launcher/dp_launcher.h - the dpctl controller: CLI entry point, recipes,
 * launch backends.  (Recipe and launch APIs are declared here as they land.)
 */
#ifndef DP_LAUNCHER_H
#define DP_LAUNCHER_H

#include <stdio.h>

/* Run dpctl with @argc/@argv (argv[0] is the program name), printing data on
 * @out and diagnostics on @err (both borrowed).  Returns a sysexits.h code.
 * Never exits; usable in-process by tests. */
int dp_cli_main(int argc, char **argv, FILE *out, FILE *err);

#endif
