/* launcher/cmd_recipe.c - `dpctl recipe` (reserved: filled by a later change). */
#include "launcher/cli_int.h"

static const struct option opts[] = {
	{ "json", no_argument, NULL, 256 },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

const struct dp_cli_cmd dp_cmd_recipe = {
	.name = "recipe",
	.fn = dp_cli_reserved,
	.opts = opts,
	.summary = "check a recipe",
	.usage =
		"usage: dpctl recipe check [--json] FILE...\n"
		"\n"
		"Validate recipes and report every error as FILE:LINE:COL: error: key 'x.y': what.\n"
		"\n"
		"Options:\n"
		"  --json            print JSON\n"
		"  -h, --help        print this help\n",
};
