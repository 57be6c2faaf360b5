/* launcher/cmd_hostlist.c - `dpctl hostlist` (reserved: filled by a later change). */
#include "launcher/cli_int.h"

static const struct option opts[] = {
	{ "sep", required_argument, NULL, 256 },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

const struct dp_cli_cmd dp_cmd_hostlist = {
	.name = "hostlist",
	.fn = dp_cli_reserved,
	.opts = opts,
	.summary = "expand or compress Slurm-style host lists",
	.usage = "usage: dpctl hostlist expand [--sep S] HOSTLIST...\n"
		 "       dpctl hostlist compress HOST...\n"
		 "\n"
		 "Options:\n"
		 "  --sep S           separator between expanded hosts (default newline)\n"
		 "  -h, --help        print this help\n",
};
