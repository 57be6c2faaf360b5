/* launcher/cli.c - dpctl global options, the command table and dispatch.
 *
 * dp_cli_main() is the whole program minus process setup, so tests can run
 * any command in-process with memory streams for stdout and stderr.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/dp_log.h"
#include "common/dp_util.h"
#include "launcher/cli_int.h"
#include "launcher/dp_launcher.h"

const struct dp_cli_cmd *const dp_cli_cmds[] = {
	&dp_cmd_launch,	  &dp_cmd_plan, &dp_cmd_recipe, &dp_cmd_topo,	  &dp_cmd_schedule,
	&dp_cmd_simulate, &dp_cmd_eplb, &dp_cmd_bench,	&dp_cmd_hostlist, &dp_cmd_report,
	&dp_cmd_version,  &dp_cmd_help, NULL,
};

static const char main_usage[] =
	"usage: dpctl [global options] <command> [options] [args]\n"
	"\n"
	"Launch and run DeepSeek-style MoE training with DualPipe.\n"
	"\n"
	"Global options (each also read from the environment variable shown):\n"
	"  --json            print data as JSON where a command prints data (DPCTL_JSON=1)\n"
	"  --color=WHEN      colour diagnostics: auto, always, never (DPCTL_COLOR; NO_COLOR)\n"
	"  --log=SPEC        log levels, e.g. info or warn,topo:debug (DPCTL_LOG)\n"
	"  -q, --quiet       print only errors (DPCTL_QUIET=1)\n"
	"  -V, --version     print the version and compiled-in features\n"
	"  -h, --help        print this help\n"
	"\n"
	"Commands:\n";

static const struct option global_opts[] = {
	{ "json", no_argument, NULL, 'j' },
	{ "color", required_argument, NULL, 'c' },
	{ "log", required_argument, NULL, 'l' },
	{ "quiet", no_argument, NULL, 'q' },
	{ "version", no_argument, NULL, 'V' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

const struct option *dp_cli_global_opts(void)
{
	return global_opts;
}

const struct dp_cli_cmd *dp_cli_find(const char *name)
{
	for (int i = 0; dp_cli_cmds[i]; i++)
		if (strcmp(dp_cli_cmds[i]->name, name) == 0)
			return dp_cli_cmds[i];
	return NULL;
}

static void vreport(struct dp_cli *cli, const char *what, const char *fmt, va_list ap)
{
	if (cli->color)
		(void)fprintf(cli->err, "%s: \033[1;31m%s:\033[0m ", cli->prog, what);
	else
		(void)fprintf(cli->err, "%s: %s: ", cli->prog, what);
	(void)vfprintf(cli->err, fmt, ap);
	(void)fputc('\n', cli->err);
}

int dp_cli_error(struct dp_cli *cli, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vreport(cli, "error", fmt, ap);
	va_end(ap);
	return code;
}

int dp_cli_usage_error(struct dp_cli *cli, const char *cmd, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vreport(cli, "error", fmt, ap);
	va_end(ap);
	(void)fprintf(cli->err, "Try '%s %s--help'.\n", cli->prog, cmd ? cmd : "");
	return EX_USAGE;
}

int dp_cli_bad_option(struct dp_cli *cli, const char *cmd, int argc, char **argv)
{
	char full[128];
	const char *bad = optind > 0 && optind <= argc ? argv[optind - 1] : "?";

	(void)snprintf(full, sizeof(full), "%s ", cmd);
	if (optopt && bad[0] == '-' && bad[1] != '-')
		return dp_cli_usage_error(cli, full, "option '-%c' is unknown or needs a value",
					  optopt);
	return dp_cli_usage_error(cli, full, "option '%s' is unknown or needs a value", bad);
}

int dp_cli_help(struct dp_cli *cli, const struct dp_cli_cmd *cmd)
{
	(void)fputs(cmd->usage, cli->out);
	return EX_OK;
}

int dp_cli_exit_code(int neg_errno)
{
	switch (-neg_errno) {
	case 0:
		return EX_OK;
	case EINVAL:
	case ERANGE:
	case EBADMSG:
	case EPROTO:
	case E2BIG:
	case EPROTONOSUPPORT: /* unknown input format */
		return EX_DATAERR;
	case ENOENT:
	case EACCES:
	case EISDIR:
		return EX_NOINPUT;
	case ENOSYS:
	case ENODEV:
	case EOPNOTSUPP:
	case ECONNREFUSED:
	case EHOSTUNREACH:
	case ETIMEDOUT:
		return EX_UNAVAILABLE;
	case ENOMEM:
		return EX_OSERR;
	case EIO:
		return EX_IOERR;
	default:
		return EX_SOFTWARE;
	}
}

int dp_cli_reserved(struct dp_cli *cli, int argc, char **argv)
{
	const struct dp_cli_cmd *cmd = dp_cli_find(argv[0]);

	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
			return dp_cli_help(cli, cmd);
	return dp_cli_error(cli, EX_UNAVAILABLE,
			    "'%s' is reserved but not available in dpctl %s yet", argv[0],
			    dp_version_string());
}

static int print_main_help(struct dp_cli *cli)
{
	(void)fputs(main_usage, cli->out);
	for (int i = 0; dp_cli_cmds[i]; i++)
		(void)fprintf(cli->out, "  %-10s %s\n", dp_cli_cmds[i]->name,
			      dp_cli_cmds[i]->summary);
	(void)fputs("\nRun 'dpctl <command> --help' for a command's options.\n", cli->out);
	return EX_OK;
}

static int env_true(const char *name)
{
	const char *v = getenv(name);

	return v && *v && strcmp(v, "0") != 0 && strcmp(v, "no") != 0 && strcmp(v, "false") != 0;
}

static int resolve_color(struct dp_cli *cli, const char *when, int is_tty)
{
	if (!when || strcmp(when, "auto") == 0) {
		const char *nc = getenv("NO_COLOR");

		cli->color = is_tty && !(nc && *nc);
		return 0;
	}
	if (strcmp(when, "always") == 0) {
		cli->color = 1;
		return 0;
	}
	if (strcmp(when, "never") == 0) {
		cli->color = 0;
		return 0;
	}
	return -EINVAL;
}

int dp_cli_main(int argc, char **argv, FILE *out, FILE *err)
{
	struct dp_cli cli = { .out = out, .err = err, .prog = "dpctl" };
	const char *color = getenv("DPCTL_COLOR");
	const char *logspec = getenv("DPCTL_LOG");
	const struct dp_cli_cmd *cmd;
	struct dp_err e = { 0 };
	int c;

	cli.json = env_true("DPCTL_JSON");
	cli.quiet = env_true("DPCTL_QUIET");
	if (!logspec)
		logspec = getenv("DP_LOG");
	optind = 0;
	opterr = 0;
	/* '+': stop at the first non-option, the command name */
	while ((c = getopt_long(argc, argv, "+qVh", global_opts, NULL)) != -1) {
		switch (c) {
		case 'j':
			cli.json = 1;
			break;
		case 'c':
			color = optarg;
			break;
		case 'l':
			logspec = optarg;
			break;
		case 'q':
			cli.quiet = 1;
			break;
		case 'V':
			(void)fprintf(out, "dpctl %s\n%s\n", dp_version_string(),
				      dp_features_string());
			return EX_OK;
		case 'h':
			return print_main_help(&cli);
		default:
			return dp_cli_bad_option(&cli, "", argc, argv);
		}
	}
	if (resolve_color(&cli, color, err == stderr && isatty(STDERR_FILENO)))
		return dp_cli_usage_error(&cli, NULL, "--color: '%s' is not auto, always or never",
					  color);
	if (dp_log_configure(cli.quiet ? "error" : logspec, &e))
		return dp_cli_usage_error(&cli, NULL, "--log: %s", e.msg);
	dp_log_set_sink(err);
	if (optind >= argc) {
		(void)print_main_help(&(struct dp_cli){ .out = err, .err = err, .prog = "dpctl" });
		return EX_USAGE;
	}
	cmd = dp_cli_find(argv[optind]);
	if (!cmd)
		return dp_cli_usage_error(&cli, NULL, "unknown command '%s'", argv[optind]);
	{
		int sub_argc = argc - optind;
		char **sub_argv = argv + optind;
		int code;

		optind = 0;
		code = cmd->fn(&cli, sub_argc, sub_argv);
		/* @err is borrowed: it may be closed once we return */
		dp_log_set_sink(NULL);
		return code;
	}
}
