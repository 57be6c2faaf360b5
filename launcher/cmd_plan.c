/* launcher/cmd_plan.c - `dpctl plan RECIPE`: the exact layout `launch` would
 * start (ranks, nodes, GPUs, DualPipe stage pairs, EP ranks and their
 * experts, inter-node link counts), without starting anything. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "a2a/dp_eplb.h"
#include "common/dp_buf.h"
#include "common/dp_util.h"
#include "launcher/cli_int.h"
#include "launcher/dp_launcher.h"
#include "launcher/dp_plan.h"
#include "topo/dp_topo.h"
#include "common/dp_banned.h"

enum { OPT_TOPOLOGY = 256, OPT_JSON, OPT_DRY_RUN, OPT_SHOW_ENV };

static const struct option opts[] = {
	{ "topology", required_argument, NULL, OPT_TOPOLOGY },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "show-env", no_argument, NULL, OPT_SHOW_ENV },
	{ "dry-run", no_argument, NULL, OPT_DRY_RUN },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* Per local GPU index: what a rank on that GPU binds to (from --topology). */
struct binding {
	char nic[64];
	int numa;
	char cpus[256];
};

/* Everything one plan prints. */
struct view {
	const struct dp_recipe *r;
	const struct dp_plan *p;
	const struct binding *b;	 /* NULL without --topology */
	const struct dp_eplb_plan *eplb; /* NULL: experts split evenly */
	char **renv;			 /* the recipe's env as NAME=value */
	const char *worker;		 /* argv[0] of every rank */
	int show_env;
};

/* Set by the controller at spawn time (launcher/controller.c), not known
 * before the run: listed so the plan shows the whole environment. */
static const char *const launch_env[] = { "DP_JOB_TOKEN",   "DP_CONTROLLER", "DP_RANK",
					  "DP_WORLD_SIZE",  "DP_LOCAL_RANK", "DP_HEARTBEAT_S",
					  "DP_RENDEZVOUS_S" };

static const char *base_name(const char *p)
{
	const char *s = strrchr(p, '/');

	return s && s[1] ? s + 1 : p;
}

/* One node's topology: FILE, or FILE+FILE+... merged (as `topo show`).  An
 * existing path that contains '+' is taken whole. */
static int load_node(const char *arg, struct dp_topo **out, struct dp_err *e)
{
	struct dp_topo *t = NULL, *more = NULL;
	struct stat st;
	char *copy, *save = NULL;
	int rc = 0;

	if (!strchr(arg, '+') || stat(arg, &st) == 0)
		return dp_topo_import(arg, out, e);
	copy = dp_strdup(arg, e);
	if (!copy)
		return -ENOMEM;
	for (char *p = strtok_r(copy, "+", &save); p && !rc; p = strtok_r(NULL, "+", &save)) {
		if (!t) {
			rc = dp_topo_import(p, &t, e);
			continue;
		}
		rc = dp_topo_import(p, &more, e);
		if (!rc)
			rc = dp_topo_merge(t, more, e);
		dp_topo_free(more);
		more = NULL;
	}
	free(copy);
	if (rc) {
		dp_topo_free(t);
		return rc;
	}
	*out = t;
	return 0;
}

/* Import the --topology nodes (one argument per node), check that they are
 * alike, and derive the binding of each local GPU from the first.  When
 * there is one topology per host, node i is host i.  Returns an exit code. */
static int load_bindings(struct dp_cli *cli, const struct dp_recipe *r, char **files, int nfiles,
			 struct binding *b)
{
	size_t nhosts = dp_hostlist_count(r->cluster.hosts);
	struct dp_topo **nodes =
		calloc((size_t)nfiles, sizeof(*nodes)); /* NOLINT(bugprone-sizeof-expression) */
	char **names = calloc((size_t)nfiles, sizeof(*names));
	struct dp_topo *t;
	struct dp_err e = { 0 };
	int code = EX_OK, rc;

	if (!nodes || !names) {
		code = dp_cli_error(cli, EX_OSERR, "plan: out of memory");
		goto out;
	}
	for (int i = 0; i < nfiles; i++) {
		rc = load_node(files[i], &nodes[i], &e);
		if (rc) {
			code = dp_cli_error(cli, dp_cli_exit_code(rc), "%s", e.msg);
			goto out;
		}
		if ((size_t)nfiles == nhosts)
			rc = asprintf(&names[i], "%s (%s)",
				      dp_hostlist_get(r->cluster.hosts, (size_t)i),
				      base_name(files[i]));
		else
			rc = asprintf(&names[i], "%s",
				      *dp_topo_hostname(nodes[i]) ? dp_topo_hostname(nodes[i])
								  : base_name(files[i]));
		if (rc < 0) {
			names[i] = NULL;
			code = dp_cli_error(cli, EX_OSERR, "plan: out of memory");
			goto out;
		}
	}
	if (dp_plan_nodes_check((const struct dp_topo *const *)nodes, (const char *const *)names,
				nfiles, &e)) {
		code = dp_cli_error(cli, EX_DATAERR, "%s", e.msg);
		goto out;
	}
	t = nodes[0];
	if (dp_topo_gpu_count(t) != r->cluster.gpus) {
		code = dp_cli_error(
			cli, EX_DATAERR,
			"plan: the topology has %d GPUs per node but %s sets cluster.gpus %d",
			dp_topo_gpu_count(t), r->path, r->cluster.gpus);
		goto out;
	}
	for (int g = 0; g < r->cluster.gpus; g++) {
		const struct dp_topo_gpu *gpu = dp_topo_gpu(t, g);

		(void)snprintf(b[g].nic, sizeof(b[g].nic), "%s",
			       gpu->nic >= 0 ? dp_topo_nic_label(t, gpu->nic) : "-");
		b[g].numa = gpu->numa;
		b[g].cpus[0] = '\0';
		for (int k = 0; k < dp_topo_numa_count(t); k++)
			if (dp_topo_numa(t, k)->id == gpu->numa)
				(void)snprintf(b[g].cpus, sizeof(b[g].cpus), "%s",
					       dp_topo_numa(t, k)->cpus);
	}
out:
	for (int i = 0; nodes && names && i < nfiles; i++) {
		dp_topo_free(nodes[i]);
		free(names[i]);
	}
	free(nodes);
	free(names);
	return code;
}

/* Slots (EPLB) or logical experts (even split) of EP rank @ep: [*lo, *hi]. */
static void expert_range(const struct view *v, int ep, int *lo, int *hi)
{
	int n = v->eplb ? dp_eplb_plan_cfg(v->eplb)->replicas / v->r->parallel.ep
			: v->r->model.experts / v->r->parallel.ep;

	*lo = ep * n;
	*hi = (ep + 1) * n - 1;
}

static void print_experts(struct dp_cli *cli, const struct view *v)
{
	const struct dp_eplb_plan *pl = v->eplb;
	const struct dp_eplb_cfg *c = dp_eplb_plan_cfg(pl);
	const struct dp_recipe *r = v->r;
	int spr = c->replicas / c->gpus;
	const int32_t *p2l = dp_eplb_plan_phy2log(pl);
	double b, a;

	(void)fprintf(cli->out,
		      "# experts: EPLB %s policy over one EP group (%d GPUs, %d node(s), %d "
		      "groups): %d experts + %d redundant = %d slots, %d per EP rank\n",
		      dp_eplb_plan_hierarchical(pl) ? "hierarchical" : "global", c->gpus, c->nodes,
		      c->groups, c->experts, c->replicas - c->experts, c->replicas, spr);
	if (r->model.expert_load)
		(void)fprintf(cli->out, "# loads: %s (%d MoE layers)\n", r->model.expert_loads,
			      c->layers);
	else
		(void)fprintf(cli->out,
			      "# loads: uniform (the recipe sets no model.expert_loads), %d MoE "
			      "layers\n",
			      c->layers);
	if (dp_eplb_plan_balance_max(pl, &b, &a) == 0) {
		(void)fprintf(cli->out,
			      "# balance (max/mean EP-rank load): worst layer before %.4f, after "
			      "%.4f",
			      b, a);
		(void)dp_eplb_plan_balance_mean(pl, &b, &a);
		(void)fprintf(cli->out, "; mean before %.4f, after %.4f\n", b, a);
	}
	(void)fprintf(cli->out,
		      "# layer %d (first MoE layer): logical experts per EP rank (--json: every "
		      "layer)\n",
		      r->model.dense_layers);
	for (int g = 0; g < c->gpus; g++) {
		(void)fprintf(cli->out, "#   ep %d:", g);
		for (int k = 0; k < spr; k++)
			(void)fprintf(cli->out, " %d", (int)p2l[g * spr + k]);
		(void)fputc('\n', cli->out);
	}
}

static void print_table(struct dp_cli *cli, const struct view *v)
{
	const struct dp_recipe *r = v->r;
	const struct dp_plan *p = v->p;
	const struct binding *b = v->b;

	(void)fprintf(cli->out, "# %s: %d ranks = pp %d x ep %d x dp %d on %d nodes x %d, %s\n",
		      r->path, p->nranks, r->parallel.pp, r->parallel.ep, r->parallel.dp,
		      p->cfg.nodes, p->cfg.gpus_per_node,
		      dp_recipe_schedule_name(r->parallel.schedule));
	/* train.batch is the global batch: every DP replica and EP rank trains
	 * micro_batches micro-batches of its own */
	(void)fprintf(cli->out,
		      "# global batch %ld = dp %d x ep %d x micro %d x %ld sequences, %.0f tokens "
		      "per step\n",
		      r->train.batch, r->parallel.dp, r->parallel.ep, r->parallel.micro_batches,
		      dp_plan_seqs_per_micro(r), (double)r->train.batch * r->model.seq_len);
	(void)fprintf(cli->out, "%-20s %4s %6s %3s %4s %9s %4s %9s %4s %4s\n", "node", "gpu",
		      "rank", "dp", "pp", "stages", "ep", v->eplb ? "slots" : "experts", "nic",
		      "numa");
	for (int i = 0; i < p->nranks; i++) {
		const struct dp_plan_rank *x = &p->ranks[i];
		char stages[24], experts[24], numa[16];
		int lo, hi;

		if (x->nstages == 2)
			(void)snprintf(stages, sizeof(stages), "%d,%d", x->stage[0], x->stage[1]);
		else
			(void)snprintf(stages, sizeof(stages), "%d", x->stage[0]);
		expert_range(v, x->ep, &lo, &hi);
		(void)snprintf(experts, sizeof(experts), "%d-%d", lo, hi);
		if (b && b[x->local].numa >= 0)
			(void)snprintf(numa, sizeof(numa), "%d", b[x->local].numa);
		else
			(void)snprintf(numa, sizeof(numa), "-");
		(void)fprintf(cli->out, "%-20s %4d %6d %3d %4d %9s %4d %9s %8s %4s\n",
			      dp_hostlist_get(r->cluster.hosts, (size_t)x->node), x->local, x->rank,
			      x->dp, x->pp, stages, x->ep, experts, b ? b[x->local].nic : "-",
			      numa);
		if (v->show_env) {
			struct dp_plan_env env = { 0 };

			dp_plan_env_build(r, v->renv, x, &env);
			(void)fprintf(cli->out, "    argv: %s\n    env:", v->worker);
			for (const char *const *e = env.v; *e; e++)
				(void)fprintf(cli->out, " %s", *e);
			(void)fputc('\n', cli->out);
		}
	}
	(void)fprintf(cli->out, "# pp edges crossing nodes (GPU pairs):");
	for (int s = 0; s + 1 < r->parallel.pp; s++)
		(void)fprintf(cli->out, " %d-%d:%d", s, s + 1, p->pp_edge_links[s]);
	(void)fprintf(cli->out, "\n# ep group: %d node(s), %d inter-node rail links (two-hop)\n",
		      p->ep_group_nodes, p->ep_group_links);
	if (r->cluster.spares) {
		(void)fputs("# spares (replace a failed node on a restart, in order):", cli->out);
		for (size_t i = 0; i < dp_hostlist_count(r->cluster.spares); i++)
			(void)fprintf(cli->out, " %s", dp_hostlist_get(r->cluster.spares, i));
		(void)fputc('\n', cli->out);
	}
	if (v->eplb)
		print_experts(cli, v);
	if (v->show_env) {
		(void)fputs("# set by launch at spawn time too:", cli->out);
		for (size_t i = 0; i < sizeof(launch_env) / sizeof(launch_env[0]); i++)
			(void)fprintf(cli->out, " %s", launch_env[i]);
		(void)fputs(" (DP_JOB_TOKEN is a fresh secret per run, never in argv)\n", cli->out);
	}
}

/* ---- JSON -------------------------------------------------------------------
 *
 * Written by hand into one buffer rather than built with jansson: the
 * DeepSeek-V3 plan has 2048 ranks with a dozen environment strings each, and
 * a jansson tree of that costs more than the whole plan budget (docs: make
 * bench).  The tests parse the output back with jansson. */

struct jw {
	struct dp_buf b;
	int rc; /* first failure, sticky */
};

static void jw_raw(struct jw *w, const char *s)
{
	if (!w->rc)
		w->rc = dp_buf_adds(&w->b, s);
}

static void jw_int(struct jw *w, long v)
{
	char tmp[24], *p = tmp + sizeof(tmp);
	unsigned long u = v < 0 ? 0ul - (unsigned long)v : (unsigned long)v;

	*--p = '\0';
	do {
		*--p = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	if (v < 0)
		*--p = '-';
	jw_raw(w, p);
}

/* A JSON string: quotes, backslashes and control characters escaped; other
 * bytes (UTF-8 from the recipe) as they are. */
static void jw_str(struct jw *w, const char *s)
{
	const char *run = s;

	jw_raw(w, "\"");
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		char esc[8];

		if (ch >= 0x20 && ch != '"' && ch != '\\')
			continue;
		if (!w->rc && s > run)
			w->rc = dp_buf_add(&w->b, run, (size_t)(s - run));
		if (ch == '"' || ch == '\\')
			(void)snprintf(esc, sizeof(esc), "\\%c", ch);
		else
			(void)snprintf(esc, sizeof(esc), "\\u%04x", ch);
		jw_raw(w, esc);
		run = s + 1;
	}
	if (!w->rc && s > run)
		w->rc = dp_buf_add(&w->b, run, (size_t)(s - run));
	jw_raw(w, "\"");
}

/* "key": */
static void jw_key(struct jw *w, const char *sep, const char *key)
{
	jw_raw(w, sep);
	jw_str(w, key);
	jw_raw(w, ":");
}

static void jw_real(struct jw *w, double v)
{
	char buf[64];

	if (isnan(v)) {
		jw_raw(w, "null");
		return;
	}
	(void)snprintf(buf, sizeof(buf), "%.17g", v);
	jw_raw(w, buf);
	if (!strpbrk(buf, ".eEn"))
		jw_raw(w, ".0");
}

static void experts_json(struct jw *w, const struct view *v)
{
	const struct dp_eplb_plan *pl = v->eplb;
	const struct dp_eplb_cfg *c = dp_eplb_plan_cfg(pl);
	const int32_t *p2l = dp_eplb_plan_phy2log(pl);
	int spr = c->replicas / c->gpus;
	double b = NAN, a = NAN;

	(void)dp_eplb_plan_balance_max(pl, &b, &a);
	jw_key(w, ",", "experts");
	jw_key(w, "{", "policy");
	jw_str(w, dp_eplb_plan_hierarchical(pl) ? "hierarchical" : "global");
	jw_key(w, ",", "loads");
	if (v->r->model.expert_load)
		jw_str(w, v->r->model.expert_loads);
	else
		jw_raw(w, "null");
	jw_key(w, ",", "uniform");
	jw_raw(w, v->r->model.expert_load ? "false" : "true");
#define INTKEY(k, x) (jw_key(w, ",", (k)), jw_int(w, (x)))
	INTKEY("experts", c->experts);
	INTKEY("redundant", c->replicas - c->experts);
	INTKEY("replicas", c->replicas);
	INTKEY("groups", c->groups);
	INTKEY("nodes", c->nodes);
	INTKEY("gpus", c->gpus);
	INTKEY("slots_per_ep_rank", spr);
	jw_key(w, ",", "balance_before");
	jw_real(w, b);
	jw_key(w, ",", "balance_after");
	jw_real(w, a);
	jw_key(w, ",", "layers");
	for (int l = 0; l < c->layers; l++) {
		jw_key(w, l ? ",{" : "[{", "layer");
		jw_int(w, v->r->model.dense_layers + l);
		jw_key(w, ",", "balance_before");
		jw_real(w, dp_eplb_plan_balance_before(pl, l));
		jw_key(w, ",", "balance_after");
		jw_real(w, dp_eplb_plan_balance_after(pl, l));
		jw_key(w, ",", "ep_ranks");
		for (int g = 0; g < c->gpus; g++) {
			jw_raw(w, g ? ",[" : "[[");
			for (int k = 0; k < spr; k++) {
				if (k)
					jw_raw(w, ",");
				jw_int(w, p2l[(size_t)l * (size_t)c->replicas +
					      (size_t)(g * spr + k)]);
			}
			jw_raw(w, "]");
		}
		jw_raw(w, "]}");
	}
	jw_raw(w, c->layers ? "]}" : "[]}");
}

static void plan_json(struct jw *w, const struct view *v)
{
	const struct dp_recipe *r = v->r;
	const struct dp_plan *p = v->p;

	jw_key(w, "{", "recipe");
	jw_str(w, r->path);
	jw_key(w, ",", "schedule");
	jw_str(w, dp_recipe_schedule_name(r->parallel.schedule));
	INTKEY("world", p->nranks);
	INTKEY("nodes", p->cfg.nodes);
	INTKEY("gpus_per_node", p->cfg.gpus_per_node);
	INTKEY("pp", r->parallel.pp);
	INTKEY("ep", r->parallel.ep);
	INTKEY("dp", r->parallel.dp);
	INTKEY("micro_batches", r->parallel.micro_batches);
	INTKEY("batch", r->train.batch);
	INTKEY("seqs_per_micro_batch", dp_plan_seqs_per_micro(r));
	INTKEY("stages", p->nstages);
	jw_key(w, ",", "spares");
	jw_raw(w, "[");
	for (size_t i = 0; r->cluster.spares && i < dp_hostlist_count(r->cluster.spares); i++) {
		if (i)
			jw_raw(w, ",");
		jw_str(w, dp_hostlist_get(r->cluster.spares, i));
	}
	jw_raw(w, "]");
	jw_key(w, ",", "pp_edge_internode_pairs");
	jw_raw(w, "[");
	for (int s = 0; s + 1 < r->parallel.pp; s++) {
		if (s)
			jw_raw(w, ",");
		jw_int(w, p->pp_edge_links[s]);
	}
	jw_raw(w, "],\"ep_group\":{\"nodes\":");
	jw_int(w, p->ep_group_nodes);
	jw_key(w, ",", "internode_links");
	jw_int(w, p->ep_group_links);
	jw_raw(w, "},\"launch_env\":");
	for (size_t i = 0; i < sizeof(launch_env) / sizeof(launch_env[0]); i++) {
		jw_raw(w, i ? "," : "[");
		jw_str(w, launch_env[i]);
	}
	jw_raw(w, "]");
	jw_key(w, ",", "ranks");
	jw_raw(w, "[");
	for (int i = 0; i < p->nranks && !w->rc; i++) {
		const struct dp_plan_rank *x = &p->ranks[i];
		struct dp_plan_env pe = { 0 };
		int lo, hi;

		jw_key(w, i ? ",{" : "{", "rank");
		jw_int(w, x->rank);
		jw_key(w, ",", "host");
		jw_str(w, dp_hostlist_get(r->cluster.hosts, (size_t)x->node));
		INTKEY("node", x->node);
		INTKEY("gpu", x->local);
		INTKEY("dp", x->dp);
		INTKEY("pp", x->pp);
		INTKEY("ep", x->ep);
		jw_key(w, ",", "stages");
		for (int k = 0; k < x->nstages; k++) {
			jw_raw(w, k ? "," : "[");
			jw_int(w, x->stage[k]);
		}
		jw_raw(w, "]");
		expert_range(v, x->ep, &lo, &hi);
		jw_key(w, ",", v->eplb ? "slots" : "experts");
		jw_raw(w, "[");
		jw_int(w, lo);
		jw_raw(w, ",");
		jw_int(w, hi);
		jw_raw(w, "]");
		if (v->b) {
			const struct binding *xb = &v->b[x->local];

			jw_key(w, ",", "nic");
			jw_str(w, xb->nic);
			INTKEY("numa", xb->numa);
			jw_key(w, ",", "cpus");
			jw_str(w, xb->cpus);
		}
		jw_key(w, ",", "argv");
		jw_raw(w, "[");
		jw_str(w, v->worker);
		jw_raw(w, "]");
		jw_key(w, ",", "env");
		dp_plan_env_build(r, v->renv, x, &pe);
		for (const char *const *e = pe.v; *e; e++) {
			jw_raw(w, e == pe.v ? "[" : ",");
			jw_str(w, *e);
		}
		jw_raw(w, pe.v[0] ? "]}" : "[]}");
	}
#undef INTKEY
	jw_raw(w, "]");
	if (v->eplb)
		experts_json(w, v);
	jw_raw(w, "}\n");
}

static int print_json(struct dp_cli *cli, const struct view *v)
{
	struct jw w = { .rc = 0 };

	dp_buf_init(&w.b, (size_t)1 << 30);
	plan_json(&w, v);
	if (w.rc) {
		dp_buf_release(&w.b);
		return dp_cli_error(cli, EX_OSERR, "plan: out of memory");
	}
	(void)fwrite(w.b.data, 1, w.b.len, cli->out);
	dp_buf_release(&w.b);
	return EX_OK;
}

static int cmd_plan(struct dp_cli *cli, int argc, char **argv)
{
	struct view v = { 0 };
	struct dp_recipe *r = NULL;
	struct dp_plan *p = NULL;
	struct dp_eplb_plan *eplb = NULL;
	struct binding *b = NULL;
	struct dp_err e = { 0 };
	char **topo_files, wbuf[4096];
	int json = cli->json, c, code, ntopo = 0;

	/* every --topology is an argument, so argc bounds their number */
	topo_files = calloc((size_t)argc, sizeof(*topo_files));
	if (!topo_files)
		return dp_cli_error(cli, EX_OSERR, "plan: out of memory");
	optind = 0;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case OPT_JSON:
			json = 1;
			break;
		case OPT_DRY_RUN:
			break; /* plan never starts anything */
		case OPT_SHOW_ENV:
			v.show_env = 1;
			break;
		case OPT_TOPOLOGY:
			topo_files[ntopo++] = optarg;
			break;
		case 'h':
			code = dp_cli_help(cli, &dp_cmd_plan);
			goto out;
		default:
			code = dp_cli_bad_option(cli, "plan", argc, argv);
			goto out;
		}
	}
	if (optind + 1 != argc) {
		code = dp_cli_usage_error(cli, "plan ", "expected exactly one RECIPE");
		goto out;
	}
	code = dp_cli_load_recipe(cli, argv[optind], &r);
	if (code)
		goto out;
	if (dp_plan_from_recipe(r, &p, &e) || dp_plan_experts(r, p, &eplb, &e)) {
		code = dp_cli_error(cli, e.code == ENOMEM ? EX_OSERR : EX_DATAERR, "%s", e.msg);
		goto out;
	}
	if (ntopo) {
		b = calloc((size_t)r->cluster.gpus, sizeof(*b));
		if (!b) {
			code = dp_cli_error(cli, EX_OSERR, "plan: out of memory");
			goto out;
		}
		code = load_bindings(cli, r, topo_files, ntopo, b);
		if (code)
			goto out;
	}
	v.renv = dp_plan_recipe_env(r, &e);
	if (!v.renv) {
		code = dp_cli_error(cli, EX_OSERR, "%s", e.msg);
		goto out;
	}
	v.r = r;
	v.p = p;
	v.b = b;
	v.eplb = eplb;
	v.worker = dp_plan_worker_path(wbuf, sizeof(wbuf));
	if (json) {
		code = print_json(cli, &v);
	} else {
		print_table(cli, &v);
		code = EX_OK;
	}
out:
	dp_plan_strv_free(v.renv);
	free(topo_files);
	free(b);
	dp_eplb_plan_free(eplb);
	dp_plan_free(p);
	dp_recipe_free(r);
	return code;
}

const struct dp_cli_cmd dp_cmd_plan = {
	.name = "plan",
	.fn = cmd_plan,
	.opts = opts,
	.summary = "print the PP/EP/DP layout, bindings and expert placement",
	.usage = "usage: dpctl plan [options] RECIPE\n"
		 "\n"
		 "Turn RECIPE (plus topology) into the exact layout launch would start, and\n"
		 "start nothing: every rank's node, GPU, (dp, pp, ep) coordinates, the pipeline\n"
		 "stages it holds (DualPipe: r and PP-1-r; DualPipeV: r and 2PP-1-r), its\n"
		 "experts, and the inter-node links each PP edge and EP group uses.  With\n"
		 "model.redundant_experts or model.expert_loads in the recipe, EPLB places\n"
		 "the expert slots of every EP rank.\n"
		 "\n"
		 "Options:\n"
		 "  --topology FILE   topology of one node, FILE+FILE merges files of one node;\n"
		 "                    repeat for more nodes (they must be alike)\n"
		 "  --show-env        print each rank's worker argv and environment\n"
		 "  --json            print JSON (with every rank's argv and environment)\n"
		 "  --dry-run         same as the default: start nothing\n"
		 "  -h, --help        print this help\n",
};
