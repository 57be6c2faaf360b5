/* worker/worker.c - dpworker option parsing and dispatch. */
#include <getopt.h>
#include <string.h>
#include <sysexits.h>

#include "common/dp_buf.h"
#include "topo/dp_topo.h"
#include "worker/dp_exec.h"
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
	"  --discover        print this node's topology (as 'dpctl topo discover') and exit\n"
	"  --json            with --discover: print JSON ({\"nodes\":[...]})\n"
	"  -V, --version     print the version\n"
	"  -h, --help        print this help\n";

enum { OPT_DISCOVER = 256, OPT_JSON };

static const struct option opts[] = {
	{ "discover", no_argument, NULL, OPT_DISCOVER },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "version", no_argument, NULL, 'V' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* --discover: the controller collects every node's topology over ssh. */
static int discover(int json, FILE *out, FILE *err)
{
	struct dp_err e = { 0 };
	struct dp_topo *t = NULL;
	struct dp_buf b;
	int rc;

	rc = dp_topo_discover(NULL, &t, &e);
	if (rc) {
		(void)fprintf(err, "dpworker: error: %s\n", e.msg);
		return EX_UNAVAILABLE;
	}
	dp_buf_init(&b, 64u << 20);
	if (json) {
		rc = dp_buf_adds(&b, "{\"nodes\":[");
		rc |= dp_topo_format_json(t, &b);
		rc |= dp_buf_adds(&b, "]}\n");
	} else {
		rc = dp_topo_format_text(t, &b);
	}
	if (!rc)
		(void)fputs(dp_buf_str(&b), out);
	dp_buf_release(&b);
	dp_topo_free(t);
	if (rc) {
		(void)fputs("dpworker: error: topology output too large\n", err);
		return EX_SOFTWARE;
	}
	return EX_OK;
}

int dp_worker_main(int argc, char **argv, FILE *out, FILE *err)
{
	int c, want_discover = 0, json = 0;

	if (argc > 1 && strcmp(argv[1], "--train-reference") == 0)
		return dp_worker_cmd_reference(argc, argv, out, err);
	if (argc > 1 && (strcmp(argv[1], "--train-local") == 0 || strcmp(argv[1], "--train") == 0))
		return dp_worker_cmd_train(argc, argv, out, err);
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "Vh", opts, NULL)) != -1) {
		switch (c) {
		case OPT_DISCOVER:
			want_discover = 1;
			break;
		case OPT_JSON:
			json = 1;
			break;
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
	if (want_discover)
		return discover(json, out, err);
	if (json) {
		(void)fputs("dpworker: error: --json is only for --discover\n", err);
		return EX_USAGE;
	}
	(void)fputs("dpworker: error: nothing to do; dpworker is started by 'dpctl launch'\n", err);
	return EX_USAGE;
}
