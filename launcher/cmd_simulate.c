/* launcher/cmd_simulate.c - `dpctl simulate` (reserved: filled by a later change). */
#include "launcher/cli_int.h"

static const struct option opts[] = {
	{ "algo", required_argument, NULL, 256 },  { "pp", required_argument, NULL, 257 },
	{ "micro", required_argument, NULL, 258 }, { "F", required_argument, NULL, 259 },
	{ "B", required_argument, NULL, 260 },	   { "W", required_argument, NULL, 261 },
	{ "FB", required_argument, NULL, 262 },	   { "json", no_argument, NULL, 263 },
	{ "help", no_argument, NULL, 'h' },	   { NULL, 0, NULL, 0 },
};

const struct dp_cli_cmd dp_cmd_simulate = {
	.name = "simulate",
	.fn = dp_cli_reserved,
	.opts = opts,
	.summary = "simulate a schedule: makespan, bubbles, activation memory",
	.usage =
		"usage: dpctl simulate --algo A --pp N --micro M --F f --B b --W w --FB fb [--json]\n"
		"\n"
		"Options:\n"
		"  --algo A          dualpipe, dualpipev, 1f1b or zb1p\n"
		"  --pp N            pipeline ranks\n"
		"  --micro M         micro-batches\n"
		"  --F f             forward chunk time\n"
		"  --B b             full backward chunk time\n"
		"  --W w             weight-gradient chunk time\n"
		"  --FB fb           overlapped forward+backward time\n"
		"  --json            print JSON\n"
		"  -h, --help        print this help\n",
};
