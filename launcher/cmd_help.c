/* launcher/cmd_help.c - `dpctl help [COMMAND]`. */
#include <string.h>

#include "launcher/cli_int.h"
#include "launcher/dp_launcher.h"

static const struct option opts[] = {
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static int cmd_help(struct dp_cli *cli, int argc, char **argv)
{
	const struct dp_cli_cmd *cmd;
	char *hargv[] = { "dpctl", "--help", NULL };

	if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)
		return dp_cli_main(2, hargv, cli->out, cli->err);
	cmd = dp_cli_find(argv[1]);
	if (!cmd)
		return dp_cli_usage_error(cli, NULL, "unknown command '%s'", argv[1]);
	return dp_cli_help(cli, cmd);
}

const struct dp_cli_cmd dp_cmd_help = {
	.name = "help",
	.fn = cmd_help,
	.opts = opts,
	.summary = "print help for dpctl or one command",
	.usage = "usage: dpctl help [COMMAND]\n"
		 "\n"
		 "Print the list of commands, or COMMAND's options.\n"
		 "\n"
		 "Options:\n"
		 "  -h, --help        print this help\n",
};
