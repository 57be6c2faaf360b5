/* launcher/cli_int.h - the dpctl command table and helpers for commands.
 *
 * Every command lives in launcher/cmd_<name>.c and exports one
 * `const struct dp_cli_cmd dp_cmd_<name>` listed in launcher/cli.c.  A
 * command parses its own options with getopt_long (reset optind = 0 first),
 * prints data to cli->out and diagnostics to cli->err, and returns a
 * sysexits.h code.  It never calls exit().
 */
#ifndef DP_CLI_INT_H
#define DP_CLI_INT_H

#include <getopt.h>
#include <stdio.h>
#include <sysexits.h>

#include "common/dp_err.h"

struct dp_cli {
	FILE *out;	  /* data (stdout); borrowed */
	FILE *err;	  /* diagnostics (stderr); borrowed */
	int json;	  /* --json / DPCTL_JSON given globally */
	int color;	  /* resolved: 1 = use ANSI colour on cli->err */
	int quiet;	  /* -q / DPCTL_QUIET */
	const char *prog; /* "dpctl" */
};

struct dp_cli_cmd {
	const char *name;
	int (*fn)(struct dp_cli *cli, int argc, char **argv); /* argv[0] = name */
	const struct option *opts; /* long options, {0} terminated; docs are checked against it */
	const char *summary;	   /* one line for `dpctl --help` */
	const char *usage;	   /* full --help text */
};

/* One per launcher/cmd_<name>.c. */
extern const struct dp_cli_cmd dp_cmd_launch, dp_cmd_plan, dp_cmd_recipe, dp_cmd_topo,
	dp_cmd_schedule, dp_cmd_simulate, dp_cmd_eplb, dp_cmd_bench, dp_cmd_hostlist,
	dp_cmd_version, dp_cmd_help, dp_cmd_report;

/* The table, NULL-terminated, in help order. */
extern const struct dp_cli_cmd *const dp_cli_cmds[];

const struct dp_cli_cmd *dp_cli_find(const char *name);

/* The global options (--json, --color, ...), {0} terminated. */
const struct option *dp_cli_global_opts(void);

/* "dpctl: error: <msg>" on cli->err (red if colour); returns @code. */
int dp_cli_error(struct dp_cli *cli, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Usage error for @cmd: message, then "Try 'dpctl <cmd> --help'."; returns EX_USAGE. */
int dp_cli_usage_error(struct dp_cli *cli, const char *cmd, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Print the command's usage text to cli->out; returns EX_OK. */
int dp_cli_help(struct dp_cli *cli, const struct dp_cli_cmd *cmd);
/* Standard getopt error for the option at argv[optind - 1] (uses optopt). */
int dp_cli_bad_option(struct dp_cli *cli, const char *cmd, int argc, char **argv);

/* Map a negative errno from the library to a sysexits code. */
int dp_cli_exit_code(int neg_errno);

/* Reserved command body: says it is not available in this version (EX_UNAVAILABLE). */
int dp_cli_reserved(struct dp_cli *cli, int argc, char **argv);

struct dp_recipe;
struct dp_recipe_diag;
/* Print one recipe diagnostic as FILE:LINE:COL: error: key 'x.y': what. */
void dp_cli_print_diag(struct dp_cli *cli, const struct dp_recipe_diag *d);
/* Load a recipe for a command: on failure print every diagnostic (or the open
 * error) and return the exit code (65, 66, ...); 0 and *out on success. */
int dp_cli_load_recipe(struct dp_cli *cli, const char *path, struct dp_recipe **out);

/* Text for `dpctl version`: version and compiled-in features. */
const char *dp_version_string(void);
const char *dp_features_string(void);

#endif
