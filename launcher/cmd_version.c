/* launcher/cmd_version.c - `dpctl version`: version and compiled-in features. */
#include <string.h>

#include <jansson.h>

#include "launcher/cli_int.h"

#ifndef DP_VERSION
#define DP_VERSION "0.0.0-dev"
#endif

static const struct option opts[] = {
	{ "json", no_argument, NULL, 'j' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

const char *dp_version_string(void)
{
	return DP_VERSION;
}

const char *dp_features_string(void)
{
	return "features: cuda="
#ifdef DP_HAVE_CUDA
	       "yes"
#else
	       "no"
#endif
	       " verbs="
#ifdef DP_HAVE_VERBS
	       "yes"
#else
	       "no"
#endif
		;
}

static int cmd_version(struct dp_cli *cli, int argc, char **argv)
{
	int json = cli->json, c;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (c == 'j')
			json = 1;
		else if (c == 'h')
			return dp_cli_help(cli, &dp_cmd_version);
		else
			return dp_cli_bad_option(cli, "version", argc, argv);
	}
	if (optind < argc)
		return dp_cli_usage_error(cli, "version ", "unexpected argument '%s'",
					  argv[optind]);
	if (json) {
		json_t *o =
			json_pack("{s:s, s:{s:b, s:b}}", "version", DP_VERSION, "features", "cuda",
#ifdef DP_HAVE_CUDA
				  1,
#else
				  0,
#endif
				  "verbs",
#ifdef DP_HAVE_VERBS
				  1
#else
				  0
#endif
			);
		if (!o)
			return dp_cli_error(cli, EX_SOFTWARE, "out of memory");
		(void)json_dumpf(o, cli->out, JSON_COMPACT);
		(void)fputc('\n', cli->out);
		json_decref(o);
		return EX_OK;
	}
	(void)fprintf(cli->out, "dpctl %s\n%s\n", DP_VERSION, dp_features_string());
	return EX_OK;
}

const struct dp_cli_cmd dp_cmd_version = {
	.name = "version",
	.fn = cmd_version,
	.opts = opts,
	.summary = "print the version and compiled-in features",
	.usage = "usage: dpctl version [--json]\n"
		 "\n"
		 "Print the dpctl version and which optional parts (CUDA, verbs) were built.\n"
		 "\n"
		 "Options:\n"
		 "  --json            print JSON\n"
		 "  -h, --help        print this help\n",
};
