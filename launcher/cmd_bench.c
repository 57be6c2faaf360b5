/* launcher/cmd_bench.c - `dpctl bench` (reserved: filled by a later change). */
#include "launcher/cli_int.h"

static const struct option opts[] = {
	{ "json", no_argument, NULL, 256 },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

const struct dp_cli_cmd dp_cmd_bench = {
	.name = "bench",
	.fn = dp_cli_reserved,
	.opts = opts,
	.summary = "run micro-benchmarks (all-to-all, pipeline, launch)",
	.usage = "usage: dpctl bench [options] NAME\n"
		 "\n"
		 "Options:\n"
		 "  --json            print JSON\n"
		 "  -h, --help        print this help\n",
};
