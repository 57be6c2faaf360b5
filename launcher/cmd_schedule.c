/* launcher/cmd_schedule.c - `dpctl schedule`: print a pipeline schedule in the
 * canonical text formats, JSON, an SVG chart or a Chrome trace. */
#include <errno.h>
#include <string.h>

#include "common/dp_buf.h"
#include "common/dp_util.h"
#include "launcher/cli_int.h"
#include "sched/dp_sched.h"

enum { OPT_ALGO = 256, OPT_PP, OPT_MICRO, OPT_COMM, OPT_RANK, OPT_FORMAT };

static const struct option opts[] = {
	{ "algo", required_argument, NULL, OPT_ALGO },
	{ "pp", required_argument, NULL, OPT_PP },
	{ "micro", required_argument, NULL, OPT_MICRO },
	{ "comm", no_argument, NULL, OPT_COMM },
	{ "rank", required_argument, NULL, OPT_RANK },
	{ "format", required_argument, NULL, OPT_FORMAT },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* Output cap: pp=4096 with comm tokens stays far below this. */
#define OUT_CAP ((size_t)1 << 30)

static int cmd_schedule(struct dp_cli *cli, int argc, char **argv)
{
	struct dp_sched_cfg cfg = { .algo = DP_SCHED_DUALPIPE };
	enum dp_sched_fmt fmt = cli->json ? DP_SCHED_FMT_JSON : DP_SCHED_FMT_OPS;
	const char *algo = NULL;
	long pp = -1, micro = -1, rank = -1;
	struct dp_sched *s = NULL;
	struct dp_err err = { 0 };
	struct dp_buf out;
	int c, rc;

	optind = 0;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case OPT_ALGO:
			algo = optarg;
			if (dp_sched_algo_parse(optarg, &cfg.algo, &err))
				return dp_cli_usage_error(cli, "schedule ", "--algo: %s", err.msg);
			break;
		case OPT_PP:
			if (dp_parse_long(optarg, 1, DP_SCHED_MAX_PP, &pp, "--pp", &err))
				return dp_cli_usage_error(cli, "schedule ", "%s", err.msg);
			break;
		case OPT_MICRO:
			if (dp_parse_long(optarg, 1, DP_SCHED_MAX_MICRO, &micro, "--micro", &err))
				return dp_cli_usage_error(cli, "schedule ", "%s", err.msg);
			break;
		case OPT_COMM:
			cfg.comm = 1;
			break;
		case OPT_RANK:
			if (dp_parse_long(optarg, 0, DP_SCHED_MAX_PP - 1, &rank, "--rank", &err))
				return dp_cli_usage_error(cli, "schedule ", "%s", err.msg);
			break;
		case OPT_FORMAT:
			if (dp_sched_fmt_parse(optarg, &fmt, &err))
				return dp_cli_usage_error(cli, "schedule ", "--format: %s",
							  err.msg);
			break;
		case 'h':
			return dp_cli_help(cli, &dp_cmd_schedule);
		default:
			return dp_cli_bad_option(cli, "schedule", argc, argv);
		}
	}
	if (optind < argc)
		return dp_cli_usage_error(cli, "schedule ", "unexpected argument '%s'",
					  argv[optind]);
	if (!algo || pp < 0 || micro < 0)
		return dp_cli_usage_error(cli, "schedule ",
					  "--algo, --pp and --micro are required");
	if (rank >= pp)
		return dp_cli_usage_error(cli, "schedule ", "--rank: %ld is out of range [0, %ld)",
					  rank, pp);
	cfg.pp = (int)pp;
	cfg.micro = (int)micro;
	rc = dp_sched_build(&cfg, &s, &err);
	if (rc)
		return dp_cli_error(cli, dp_cli_exit_code(rc), "%s", err.msg);
	dp_buf_init(&out, OUT_CAP);
	rc = dp_sched_format(s, fmt, (int)rank, NULL, &out, &err);
	if (rc) {
		rc = dp_cli_error(cli, dp_cli_exit_code(rc), "%s", err.msg);
	} else {
		(void)fwrite(dp_buf_str(&out), 1, out.len, cli->out);
		rc = EX_OK;
	}
	dp_buf_release(&out);
	dp_sched_free(s);
	return rc;
}

const struct dp_cli_cmd dp_cmd_schedule = {
	.name = "schedule",
	.fn = cmd_schedule,
	.opts = opts,
	.summary = "print a pipeline schedule (dualpipe, dualpipev, 1f1b, zb1p)",
	.usage =
		"usage: dpctl schedule --algo A --pp N --micro M [--comm] [--rank R] [--format F]\n"
		"\n"
		"Print the per-rank op order of a pipeline schedule.  DualPipe and DualPipeV\n"
		"follow upstream step() exactly; the text formats are described in\n"
		"docs/schedules.md.\n"
		"\n"
		"Options:\n"
		"  --algo A          dualpipe, dualpipev, 1f1b or zb1p\n"
		"  --pp N            pipeline ranks\n"
		"  --micro M         micro-batches (in total; dualpipe: even, >= 2*pp;\n"
		"                    dualpipev: >= 2*pp)\n"
		"  --comm            include communication posts and waits\n"
		"  --rank R          print only rank R\n"
		"  --format F        ops (default), long, json, svg or trace; svg and trace\n"
		"                    show the timeline simulated with F=1 B=2 W=1 FB=2.5\n"
		"  -h, --help        print this help\n",
};
