/* worker/worker.c - dpworker option parsing and dispatch. */
#include <getopt.h>
#include <string.h>
#include <sysexits.h>

#include "worker/dp_model.h"
#include "worker/dp_worker.h"

#ifndef DP_VERSION
#define DP_VERSION "0.0.0-dev"
#endif

static const char usage[] =
	"usage: dpworker [options]\n"
	"\n"
	"One rank of a dpctl run.  Normally started by 'dpctl launch', not by hand.\n"
	"\n"
	"Options:\n"
	"  -V, --version     print the version\n"
	"  -h, --help        print this help\n";

static const struct option opts[] = {
	{ "version", no_argument, NULL, 'V' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

int dp_worker_main(int argc, char **argv, FILE *out, FILE *err)
{
	int c;

	if (argc > 1 && strcmp(argv[1], "--train-reference") == 0)
		return dp_worker_cmd_reference(argc, argv, out, err);
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "Vh", opts, NULL)) != -1) {
		switch (c) {
		case 'V':
			(void)fprintf(out, "dpworker %s\n", DP_VERSION);
			return EX_OK;
		case 'h':
			(void)fputs(usage, out);
			return EX_OK;
		default:
			(void)fprintf(err,
				      "dpworker: error: option '%s' is unknown or needs a value\n",
				      argv[optind - 1]);
			return EX_USAGE;
		}
	}
	(void)fputs("dpworker: error: nothing to do; dpworker is started by 'dpctl launch'\n", err);
	return EX_USAGE;
}
