/* launcher/cmd_launch.c - `dpctl launch` (reserved: filled by a later change). */
#include "launcher/cli_int.h"

static const struct option opts[] = {
	{ "dry-run", no_argument, NULL, 256 },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

const struct dp_cli_cmd dp_cmd_launch = {
	.name = "launch",
	.fn = dp_cli_reserved,
	.opts = opts,
	.summary = "launch a training run from a recipe",
	.usage = "usage: dpctl launch [options] RECIPE\n"
		 "\n"
		 "Plan the run described by RECIPE, start dpworker on every node, watch it and\n"
		 "tear it down.\n"
		 "\n"
		 "Options:\n"
		 "  --dry-run         print what would be started, start nothing\n"
		 "  -h, --help        print this help\n",
};
