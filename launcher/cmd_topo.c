/* launcher/cmd_topo.c - `dpctl topo` (reserved: filled by a later change). */
#include "launcher/cli_int.h"

static const struct option opts[] = {
	{ "json", no_argument, NULL, 256 },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

const struct dp_cli_cmd dp_cmd_topo = {
	.name = "topo",
	.fn = dp_cli_reserved,
	.opts = opts,
	.summary = "discover, show or validate node topology",
	.usage = "usage: dpctl topo discover [--json]\n"
		 "       dpctl topo show [--json] FILE...\n"
		 "       dpctl topo validate [--json] [FILE...]\n"
		 "\n"
		 "Options:\n"
		 "  --json            print JSON\n"
		 "  -h, --help        print this help\n",
};
