/* launcher/cmd_eplb.c - `dpctl eplb`: place experts on GPUs with DeepSeek's
 * EPLB (a2a/dp_eplb.h) and print the plan as a table or as JSON. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "a2a/dp_eplb.h"
#include "common/dp_util.h"
#include "launcher/cli_int.h"

enum { OPT_LOADS = 256, OPT_REPLICAS, OPT_GROUPS, OPT_NODES, OPT_GPUS, OPT_JSON };

static const struct option opts[] = {
	{ "loads", required_argument, NULL, OPT_LOADS },
	{ "replicas", required_argument, NULL, OPT_REPLICAS },
	{ "groups", required_argument, NULL, OPT_GROUPS },
	{ "nodes", required_argument, NULL, OPT_NODES },
	{ "gpus", required_argument, NULL, OPT_GPUS },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* A JSON number for a ratio: shortest-enough round-trip form, always with a
 * fraction or exponent so readers see a real; null when there is none. */
static void put_real(FILE *out, double v)
{
	char buf[64];

	if (isnan(v)) {
		(void)fputs("null", out);
		return;
	}
	(void)snprintf(buf, sizeof(buf), "%.17g", v);
	(void)fputs(buf, out);
	if (!strpbrk(buf, ".eE"))
		(void)fputs(".0", out);
}

/* Integers are most of the output (log2phy is [L][E][X] with X the largest
 * replica count, 12 MB for skewed DeepSeek-V3 loads), so format them by hand
 * into a block and write it at once instead of one fprintf per number. */
static void put_ints(FILE *out, const int32_t *v, int n)
{
	char buf[4096];
	size_t len = 0;

	buf[len++] = '[';
	for (int i = 0; i < n; i++) {
		char tmp[16];
		int k = 0;
		uint32_t u = v[i] < 0 ? 0u - (uint32_t)v[i] : (uint32_t)v[i];

		if (len > sizeof(buf) - 16) {
			(void)fwrite(buf, 1, len, out);
			len = 0;
		}
		if (i)
			buf[len++] = ',';
		if (v[i] < 0)
			buf[len++] = '-';
		do {
			tmp[k++] = (char)('0' + u % 10);
			u /= 10;
		} while (u);
		while (k)
			buf[len++] = tmp[--k];
	}
	buf[len++] = ']';
	(void)fwrite(buf, 1, len, out);
}

static void print_json(FILE *out, const struct dp_eplb_plan *pl)
{
	const struct dp_eplb_cfg *c = dp_eplb_plan_cfg(pl);
	const int32_t *l2p = dp_eplb_plan_log2phy(pl);
	int L = c->layers, E = c->experts, R = c->replicas, X = dp_eplb_plan_width(pl);
	double before = NAN, after = NAN;

	(void)dp_eplb_plan_balance_max(pl, &before, &after);
	(void)fputs("{\"phy2log\":[", out);
	for (int l = 0; l < L; l++) {
		if (l)
			(void)fputc(',', out);
		put_ints(out, dp_eplb_plan_phy2log(pl) + (size_t)l * (size_t)R, R);
	}
	(void)fputs("],\"log2phy\":[", out);
	for (int l = 0; l < L; l++) {
		(void)fputs(l ? ",[" : "[", out);
		for (int e = 0; e < E; e++) {
			if (e)
				(void)fputc(',', out);
			put_ints(out, l2p + ((size_t)l * (size_t)E + (size_t)e) * (size_t)X, X);
		}
		(void)fputc(']', out);
	}
	(void)fputs("],\"logcnt\":[", out);
	for (int l = 0; l < L; l++) {
		if (l)
			(void)fputc(',', out);
		put_ints(out, dp_eplb_plan_logcnt(pl) + (size_t)l * (size_t)E, E);
	}
	(void)fputs("],\"balance_before\":", out);
	put_real(out, before);
	(void)fputs(",\"balance_after\":", out);
	put_real(out, after);
	(void)fputs("}\n", out);
}

static void put_ratio(FILE *out, const char *label, double v)
{
	if (isnan(v))
		(void)fprintf(out, "%s -", label);
	else
		(void)fprintf(out, "%s %.4f", label, v);
}

static void print_table(FILE *out, const struct dp_eplb_plan *pl)
{
	const struct dp_eplb_cfg *c = dp_eplb_plan_cfg(pl);
	int R = c->replicas, P = c->gpus, spg = R / P;
	int ppn = c->gpus % c->nodes == 0 ? c->gpus / c->nodes : 0;
	int hier = dp_eplb_plan_hierarchical(pl);
	double b, a;

	(void)fprintf(out,
		      "eplb: %s policy, %d layers, %d experts, %d replicas (%d redundant), "
		      "%d groups, %d nodes, %d gpus (%d slots each)\n",
		      hier ? "hierarchical" : "global", c->layers, c->experts, R, R - c->experts,
		      c->groups, c->nodes, P, spg);
	for (int l = 0; l < c->layers; l++) {
		const int32_t *p2l = dp_eplb_plan_phy2log(pl) + (size_t)l * (size_t)R;

		(void)fprintf(out, "\nlayer %d:", l);
		put_ratio(out, " balance before", dp_eplb_plan_balance_before(pl, l));
		put_ratio(out, ", after", dp_eplb_plan_balance_after(pl, l));
		if (hier)
			put_ratio(out, ", node balance after",
				  dp_eplb_plan_node_balance_after(pl, l));
		(void)fputs("\n  gpu  node  experts\n", out);
		for (int g = 0; g < P; g++) {
			if (ppn)
				(void)fprintf(out, "  %-4d %-5d", g, g / ppn);
			else
				(void)fprintf(out, "  %-4d %-5s", g, "-");
			for (int s = 0; s < spg; s++)
				(void)fprintf(out, " %d", (int)p2l[g * spg + s]);
			(void)fputc('\n', out);
		}
	}
	if (dp_eplb_plan_balance_max(pl, &b, &a) == 0) {
		(void)fprintf(out, "\nbalance, max over layers:  before %.4f, after %.4f\n", b, a);
		(void)dp_eplb_plan_balance_mean(pl, &b, &a);
		(void)fprintf(out, "balance, mean over layers: before %.4f, after %.4f\n", b, a);
	} else {
		(void)fputs("\nbalance: no layer has any load\n", out);
	}
}

static int cmd_eplb(struct dp_cli *cli, int argc, char **argv)
{
	static const char *const names[] = { "--replicas", "--groups", "--nodes", "--gpus" };
	long val[4] = { 0, 0, 0, 0 };
	const char *loads = NULL;
	struct dp_eplb_plan *pl = NULL;
	struct dp_eplb_cfg cfg;
	struct dp_err err = { 0 };
	float *w = NULL;
	int json = cli->json, c, rc;

	optind = 0;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'h':
			return dp_cli_help(cli, &dp_cmd_eplb);
		case OPT_LOADS:
			loads = optarg;
			break;
		case OPT_REPLICAS:
		case OPT_GROUPS:
		case OPT_NODES:
		case OPT_GPUS:
			if (dp_parse_long(optarg, 1, INT_MAX, &val[c - OPT_REPLICAS],
					  names[c - OPT_REPLICAS], &err))
				return dp_cli_usage_error(cli, "eplb ", "%s", err.msg);
			break;
		case OPT_JSON:
			json = 1;
			break;
		default:
			return dp_cli_bad_option(cli, "eplb", argc, argv);
		}
	}
	if (optind < argc)
		return dp_cli_usage_error(cli, "eplb ", "unexpected argument '%s'", argv[optind]);
	if (!loads)
		return dp_cli_usage_error(cli, "eplb ", "missing --loads FILE.json");
	for (int i = 0; i < 4; i++)
		if (!val[i])
			return dp_cli_usage_error(cli, "eplb ", "missing %s", names[i]);
	cfg.replicas = (int)val[0];
	cfg.groups = (int)val[1];
	cfg.nodes = (int)val[2];
	cfg.gpus = (int)val[3];
	rc = dp_eplb_loads_read(loads, &w, &cfg.layers, &cfg.experts, &err);
	if (rc)
		return dp_cli_error(cli, dp_cli_exit_code(rc), "%s", err.msg);
	rc = dp_eplb_plan_build(w, &cfg, &pl, &err);
	free(w);
	if (rc)
		return dp_cli_error(cli, dp_cli_exit_code(rc), "%s", err.msg);
	if (json)
		print_json(cli->out, pl);
	else
		print_table(cli->out, pl);
	dp_eplb_plan_free(pl);
	if (fflush(cli->out) != 0 || ferror(cli->out))
		return dp_cli_error(cli, EX_IOERR, "eplb: cannot write the output");
	return EX_OK;
}

const struct dp_cli_cmd dp_cmd_eplb = {
	.name = "eplb",
	.fn = cmd_eplb,
	.opts = opts,
	.summary = "balance experts over GPUs (DeepSeek EPLB)",
	.usage =
		"usage: dpctl eplb --loads FILE.json --replicas R --groups G --nodes N --gpus P [--json]\n"
		"\n"
		"Place R physical expert slots per layer on P GPUs in N nodes with DeepSeek's\n"
		"EPLB: the hierarchical policy when G % N == 0 (whole groups per node), else\n"
		"the global one.  Prints, per layer, the experts on each GPU and the balance\n"
		"(max GPU load / mean GPU load) before (expert e on GPU e*P/E, no replicas)\n"
		"and after; --json prints phy2log, log2phy, logcnt and the balance of the\n"
		"worst layer.\n"
		"\n"
		"Options:\n"
		"  --loads FILE      JSON {\"weight\": [[load, ...], ...]}, one row per layer\n"
		"  --replicas R      physical expert slots per layer (multiple of P, >= experts)\n"
		"  --groups G        expert groups\n"
		"  --nodes N         nodes\n"
		"  --gpus P          GPUs (all nodes together)\n"
		"  --json            print JSON\n"
		"  -h, --help        print this help\n"
		"\n"
		"Exit status: 0 ok, 64 bad options, 65 bad loads or shape, 66 file not found.\n",
};
