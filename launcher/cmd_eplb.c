/* launcher/cmd_eplb.c - `dpctl eplb` (reserved: filled by a later change). */
#include "launcher/cli_int.h"

static const struct option opts[] = {
	{ "loads", required_argument, NULL, 256 },  { "replicas", required_argument, NULL, 257 },
	{ "groups", required_argument, NULL, 258 }, { "nodes", required_argument, NULL, 259 },
	{ "gpus", required_argument, NULL, 260 },   { "json", no_argument, NULL, 261 },
	{ "help", no_argument, NULL, 'h' },	    { NULL, 0, NULL, 0 },
};

const struct dp_cli_cmd dp_cmd_eplb = {
	.name = "eplb",
	.fn = dp_cli_reserved,
	.opts = opts,
	.summary = "balance experts over GPUs (DeepSeek EPLB)",
	.usage =
		"usage: dpctl eplb --loads FILE.json --replicas R --groups G --nodes N --gpus P [--json]\n"
		"\n"
		"Options:\n"
		"  --loads FILE      JSON {\"weight\": [[load, ...], ...]}, one row per layer\n"
		"  --replicas R      physical expert slots per layer\n"
		"  --groups G        expert groups\n"
		"  --nodes N         nodes\n"
		"  --gpus P          GPUs\n"
		"  --json            print JSON\n"
		"  -h, --help        print this help\n",
};
