/* launcher/cmd_schedule.c - `dpctl schedule` (reserved: filled by a later change). */
#include "launcher/cli_int.h"

static const struct option opts[] = {
	{ "algo", required_argument, NULL, 256 },  { "pp", required_argument, NULL, 257 },
	{ "micro", required_argument, NULL, 258 }, { "comm", no_argument, NULL, 259 },
	{ "rank", required_argument, NULL, 260 },  { "format", required_argument, NULL, 261 },
	{ "help", no_argument, NULL, 'h' },	   { NULL, 0, NULL, 0 },
};

const struct dp_cli_cmd dp_cmd_schedule = {
	.name = "schedule",
	.fn = dp_cli_reserved,
	.opts = opts,
	.summary = "print a pipeline schedule (dualpipe, dualpipev, 1f1b, zb1p)",
	.usage =
		"usage: dpctl schedule --algo A --pp N --micro M [--comm] [--rank R] [--format F]\n"
		"\n"
		"Options:\n"
		"  --algo A          dualpipe, dualpipev, 1f1b or zb1p\n"
		"  --pp N            pipeline ranks\n"
		"  --micro M         micro-batches\n"
		"  --comm            include communication posts and waits\n"
		"  --rank R          print only rank R\n"
		"  --format F        ops, long, json, svg or trace\n"
		"  -h, --help        print this help\n",
};
