/* launcher/cmd_simulate.c - `dpctl simulate`: discrete-event simulation of a
 * schedule (makespan, per-rank bubble and peak activations) next to the
 * DualPipe README formula; --compare runs all four algorithms. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/dp_util.h"
#include "launcher/cli_int.h"
#include "sched/dp_sched.h"

enum { OPT_ALGO = 256, OPT_PP, OPT_MICRO, OPT_F, OPT_B, OPT_W, OPT_FB, OPT_JSON, OPT_COMPARE };

static const struct option opts[] = {
	{ "algo", required_argument, NULL, OPT_ALGO },
	{ "pp", required_argument, NULL, OPT_PP },
	{ "micro", required_argument, NULL, OPT_MICRO },
	{ "F", required_argument, NULL, OPT_F },
	{ "B", required_argument, NULL, OPT_B },
	{ "W", required_argument, NULL, OPT_W },
	{ "FB", required_argument, NULL, OPT_FB },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "compare", no_argument, NULL, OPT_COMPARE },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static const char *formula_text(enum dp_sched_algo a)
{
	switch (a) {
	case DP_SCHED_1F1B:
		return "(PP-1)(F+B)";
	case DP_SCHED_ZB1P:
		return "(PP-1)(F+B-2W)";
	default:
		return "(PP/2-1)(F&B+B-3W)";
	}
}

static json_t *sim_json(const struct dp_sched_cfg *cfg, const struct dp_sched_sim *sim)
{
	json_t *ranks = json_array(), *o;

	if (!ranks)
		return NULL;
	for (int r = 0; r < sim->nranks; r++) {
		if (json_array_append_new(ranks, json_pack("{s:i, s:f, s:i}", "rank", r, "bubble",
							   sim->ranks[r].bubble, "peak_activations",
							   sim->ranks[r].peak_activations))) {
			json_decref(ranks);
			return NULL;
		}
	}
	o = json_pack("{s:s, s:i, s:i, s:f, s:f, s:o}", "algo", dp_sched_algo_name(cfg->algo), "pp",
		      cfg->pp, "micro", cfg->micro, "makespan", sim->makespan, "bubble_max",
		      sim->bubble_max, "ranks", ranks);
	return o;
}

static int peak_max(const struct dp_sched_sim *sim)
{
	int m = 0;

	for (int r = 0; r < sim->nranks; r++)
		if (sim->ranks[r].peak_activations > m)
			m = sim->ranks[r].peak_activations;
	return m;
}

static int run_one(const struct dp_sched_cfg *cfg, const struct dp_sched_times *t,
		   struct dp_sched_sim *sim, struct dp_err *err)
{
	struct dp_sched *s = NULL;
	int rc = dp_sched_build(cfg, &s, err);

	if (!rc)
		rc = dp_sched_simulate(s, t, sim, err);
	dp_sched_free(s);
	return rc;
}

static int print_json(struct dp_cli *cli, json_t *o)
{
	char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;

	json_decref(o);
	if (!text)
		return dp_cli_error(cli, EX_OSERR, "simulate: out of memory");
	(void)fprintf(cli->out, "%s\n", text);
	free(text);
	return EX_OK;
}

static int simulate_one(struct dp_cli *cli, const struct dp_sched_cfg *cfg,
			const struct dp_sched_times *t, int json)
{
	struct dp_sched_sim sim = { 0 };
	struct dp_err err = { 0 };
	int rc = run_one(cfg, t, &sim, &err);

	if (rc)
		return dp_cli_error(cli, dp_cli_exit_code(rc), "%s", err.msg);
	if (json) {
		rc = print_json(cli, sim_json(cfg, &sim));
	} else {
		(void)fprintf(cli->out,
			      "%s pp=%d micro=%d F=%g B=%g W=%g FB=%g\n"
			      "makespan    %g\n"
			      "bubble max  %g (README %s = %g)\n"
			      "peak act.   %d\n"
			      "rank  bubble  peak_activations\n",
			      dp_sched_algo_name(cfg->algo), cfg->pp, cfg->micro, t->f, t->b, t->w,
			      t->fb, sim.makespan, sim.bubble_max, formula_text(cfg->algo),
			      sim.formula_bubble, peak_max(&sim));
		for (int r = 0; r < sim.nranks; r++)
			(void)fprintf(cli->out, "%4d  %6g  %d\n", r, sim.ranks[r].bubble,
				      sim.ranks[r].peak_activations);
		rc = EX_OK;
	}
	dp_sched_sim_release(&sim);
	return rc;
}

/* The README table: same number of PP stages; DualPipeV runs on pp/2 ranks. */
static int compare(struct dp_cli *cli, int pp, int micro, const struct dp_sched_times *t, int json)
{
	static const enum dp_sched_algo order[] = { DP_SCHED_1F1B, DP_SCHED_ZB1P, DP_SCHED_DUALPIPE,
						    DP_SCHED_DUALPIPEV };
	json_t *arr = json ? json_array() : NULL;

	if (!json)
		(void)fprintf(cli->out,
			      "PP=%d stages, micro=%d, F=%g B=%g W=%g FB=%g\n"
			      "%-10s %5s %9s %10s %14s %8s\n",
			      pp, micro, t->f, t->b, t->w, t->fb, "algo", "ranks", "makespan",
			      "bubble_max", "README_bubble", "peak_act");
	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
		struct dp_sched_cfg cfg = { .algo = order[i], .pp = pp, .micro = micro };
		struct dp_sched_sim sim = { 0 };
		struct dp_err err = { 0 };

		if (order[i] == DP_SCHED_DUALPIPEV)
			cfg.pp = pp % 2 ? 0 : pp / 2;
		if (run_one(&cfg, t, &sim, &err)) {
			if (!json)
				(void)fprintf(cli->out, "%-10s n/a: %s\n",
					      dp_sched_algo_name(order[i]), err.msg);
			continue;
		}
		if (json) {
			if (!arr || json_array_append_new(arr, sim_json(&cfg, &sim))) {
				dp_sched_sim_release(&sim);
				json_decref(arr);
				return dp_cli_error(cli, EX_OSERR, "simulate: out of memory");
			}
		} else {
			(void)fprintf(cli->out, "%-10s %5d %9g %10g %14g %8d\n",
				      dp_sched_algo_name(order[i]), cfg.pp, sim.makespan,
				      sim.bubble_max, sim.formula_bubble, peak_max(&sim));
		}
		dp_sched_sim_release(&sim);
	}
	return json ? print_json(cli, arr) : EX_OK;
}

static int cmd_simulate(struct dp_cli *cli, int argc, char **argv)
{
	struct dp_sched_cfg cfg = { .algo = DP_SCHED_DUALPIPE };
	struct dp_sched_times t = { .f = 1, .b = 2, .w = 1, .fb = 2.5 };
	struct dp_err err = { 0 };
	long pp = -1, micro = -1;
	int json = cli->json, cmp = 0, have_algo = 0, c;
	double *dst;
	const char *what;

	optind = 0;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case OPT_ALGO:
			if (dp_sched_algo_parse(optarg, &cfg.algo, &err))
				return dp_cli_usage_error(cli, "simulate ", "--algo: %s", err.msg);
			have_algo = 1;
			break;
		case OPT_PP:
			if (dp_parse_long(optarg, 1, DP_SCHED_MAX_PP, &pp, "--pp", &err))
				return dp_cli_usage_error(cli, "simulate ", "%s", err.msg);
			break;
		case OPT_MICRO:
			if (dp_parse_long(optarg, 1, DP_SCHED_MAX_MICRO, &micro, "--micro", &err))
				return dp_cli_usage_error(cli, "simulate ", "%s", err.msg);
			break;
		case OPT_F:
		case OPT_B:
		case OPT_W:
		case OPT_FB:
			dst = c == OPT_F ? &t.f : c == OPT_B ? &t.b : c == OPT_W ? &t.w : &t.fb;
			what = c == OPT_F   ? "--F"
			       : c == OPT_B ? "--B"
			       : c == OPT_W ? "--W"
					    : "--FB";
			if (dp_parse_double(optarg, 0, 1e9, dst, what, &err))
				return dp_cli_usage_error(cli, "simulate ", "%s", err.msg);
			break;
		case OPT_JSON:
			json = 1;
			break;
		case OPT_COMPARE:
			cmp = 1;
			break;
		case 'h':
			return dp_cli_help(cli, &dp_cmd_simulate);
		default:
			return dp_cli_bad_option(cli, "simulate", argc, argv);
		}
	}
	if (optind < argc)
		return dp_cli_usage_error(cli, "simulate ", "unexpected argument '%s'",
					  argv[optind]);
	if ((!have_algo && !cmp) || pp < 0 || micro < 0)
		return dp_cli_usage_error(cli, "simulate ",
					  "--pp, --micro and --algo (or --compare) are required");
	if (t.w > t.b)
		return dp_cli_error(cli, EX_DATAERR,
				    "simulate: --W (%g) must not exceed --B (%g): I takes B - W",
				    t.w, t.b);
	if (cmp)
		return compare(cli, (int)pp, (int)micro, &t, json);
	cfg.pp = (int)pp;
	cfg.micro = (int)micro;
	return simulate_one(cli, &cfg, &t, json);
}

const struct dp_cli_cmd dp_cmd_simulate = {
	.name = "simulate",
	.fn = cmd_simulate,
	.opts = opts,
	.summary = "simulate a schedule: makespan, bubbles, activation memory",
	.usage =
		"usage: dpctl simulate --algo A --pp N --micro M [--F f] [--B b] [--W w] [--FB fb]\n"
		"                      [--json]\n"
		"       dpctl simulate --compare --pp N --micro M [--F f] [--B b] [--W w] [--FB fb]\n"
		"                      [--json]\n"
		"\n"
		"Simulate the schedule with the given op durations (I takes B - W; no comm\n"
		"latency) and print the makespan, each rank's bubble (idle time) and peak\n"
		"in-flight activations (chunks), and the DualPipe README bubble formula.\n"
		"\n"
		"Options:\n"
		"  --algo A          dualpipe, dualpipev, 1f1b or zb1p\n"
		"  --pp N            pipeline ranks\n"
		"  --micro M         micro-batches\n"
		"  --F f             forward chunk time (default 1)\n"
		"  --B b             full backward chunk time (default 2)\n"
		"  --W w             weight-gradient chunk time (default 1; at most B)\n"
		"  --FB fb           overlapped forward+backward time (default 2.5)\n"
		"  --compare         all four algorithms for PP=N stages side by side\n"
		"                    (dualpipev on N/2 ranks)\n"
		"  --json            print JSON\n"
		"  -h, --help        print this help\n",
};
