/* launcher/cmd_plan.c - `dpctl plan` (reserved: filled by a later change). */
#include "launcher/cli_int.h"

static const struct option opts[] = {
	{ "topology", required_argument, NULL, 256 },
	{ "json", no_argument, NULL, 257 },
	{ "dry-run", no_argument, NULL, 258 },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

const struct dp_cli_cmd dp_cmd_plan = {
	.name = "plan",
	.fn = dp_cli_reserved,
	.opts = opts,
	.summary = "print the PP/EP/DP layout, bindings and expert placement",
	.usage = "usage: dpctl plan [options] RECIPE\n"
		 "\n"
		 "Turn RECIPE (plus topology) into the exact run launch would start.\n"
		 "\n"
		 "Options:\n"
		 "  --topology FILE   topology file for the nodes (repeatable)\n"
		 "  --json            print JSON\n"
		 "  --dry-run         same as the default: start nothing\n"
		 "  -h, --help        print this help\n",
};
