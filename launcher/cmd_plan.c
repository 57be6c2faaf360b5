/* launcher/cmd_plan.c - `dpctl plan RECIPE`: the exact layout `launch` would
 * start (ranks, nodes, GPUs, DualPipe stage pairs, EP ranks and their
 * experts, inter-node link counts), without starting anything. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "launcher/cli_int.h"
#include "launcher/dp_launcher.h"
#include "launcher/dp_plan.h"
#include "common/dp_banned.h"

enum { OPT_TOPOLOGY = 256, OPT_JSON, OPT_DRY_RUN };

static const struct option opts[] = {
	{ "topology", required_argument, NULL, OPT_TOPOLOGY },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "dry-run", no_argument, NULL, OPT_DRY_RUN },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static enum dp_plan_pairing pairing_of(enum dp_recipe_schedule s)
{
	switch (s) {
	case DP_RECIPE_SCHED_DUALPIPE:
		return DP_PLAN_DUALPIPE;
	case DP_RECIPE_SCHED_DUALPIPEV:
		return DP_PLAN_DUALPIPEV;
	default:
		return DP_PLAN_SINGLE;
	}
}

/* Build the layout of a loaded recipe. */
int dp_plan_from_recipe(const struct dp_recipe *r, struct dp_plan **out, struct dp_err *err)
{
	struct dp_plan_cfg cfg = {
		.nodes = (int)dp_hostlist_count(r->cluster.hosts),
		.gpus_per_node = r->cluster.gpus,
		.pp = r->parallel.pp,
		.ep = r->parallel.ep,
		.dp = r->parallel.dp,
		.pairing = pairing_of(r->parallel.schedule),
	};
	int rc = dp_plan_build(&cfg, out, err);

	if (rc)
		return dp_err_prefix(err, "%s", r->path);
	return 0;
}

static void print_table(struct dp_cli *cli, const struct dp_recipe *r, const struct dp_plan *p)
{
	int per_ep = r->model.experts / r->parallel.ep;

	(void)fprintf(cli->out, "# %s: %d ranks = pp %d x ep %d x dp %d on %d nodes x %d, %s\n",
		      r->path, p->nranks, r->parallel.pp, r->parallel.ep, r->parallel.dp,
		      p->cfg.nodes, p->cfg.gpus_per_node,
		      dp_recipe_schedule_name(r->parallel.schedule));
	(void)fprintf(cli->out, "%-20s %4s %6s %3s %4s %9s %4s %9s %4s %4s\n", "node", "gpu",
		      "rank", "dp", "pp", "stages", "ep", "experts", "nic", "numa");
	for (int i = 0; i < p->nranks; i++) {
		const struct dp_plan_rank *x = &p->ranks[i];
		char stages[24], experts[24];

		if (x->nstages == 2)
			(void)snprintf(stages, sizeof(stages), "%d,%d", x->stage[0], x->stage[1]);
		else
			(void)snprintf(stages, sizeof(stages), "%d", x->stage[0]);
		(void)snprintf(experts, sizeof(experts), "%d-%d", x->ep * per_ep,
			       (x->ep + 1) * per_ep - 1);
		(void)fprintf(cli->out, "%-20s %4d %6d %3d %4d %9s %4d %9s %4s %4s\n",
			      dp_hostlist_get(r->cluster.hosts, (size_t)x->node), x->local, x->rank,
			      x->dp, x->pp, stages, x->ep, experts, "-", "-");
	}
	(void)fprintf(cli->out, "# pp edges crossing nodes (GPU pairs):");
	for (int s = 0; s + 1 < r->parallel.pp; s++)
		(void)fprintf(cli->out, " %d-%d:%d", s, s + 1, p->pp_edge_links[s]);
	(void)fprintf(cli->out, "\n# ep group: %d node(s), %d inter-node rail links (two-hop)\n",
		      p->ep_group_nodes, p->ep_group_links);
}

static json_t *plan_json(const struct dp_recipe *r, const struct dp_plan *p)
{
	int per_ep = r->model.experts / r->parallel.ep;
	json_t *ranks = json_array(), *edges = json_array(), *o;

	for (int i = 0; ranks && i < p->nranks; i++) {
		const struct dp_plan_rank *x = &p->ranks[i];
		json_t *st = json_array();

		for (int k = 0; st && k < x->nstages; k++)
			(void)json_array_append_new(st, json_integer(x->stage[k]));
		(void)json_array_append_new(
			ranks, json_pack("{s:i, s:s, s:i, s:i, s:i, s:i, s:i, s:o, s:[i,i]}",
					 "rank", x->rank, "host",
					 dp_hostlist_get(r->cluster.hosts, (size_t)x->node), "node",
					 x->node, "gpu", x->local, "dp", x->dp, "pp", x->pp, "ep",
					 x->ep, "stages", st, "experts", x->ep * per_ep,
					 (x->ep + 1) * per_ep - 1));
	}
	for (int s = 0; edges && s + 1 < r->parallel.pp; s++)
		(void)json_array_append_new(edges, json_integer(p->pp_edge_links[s]));
	o = json_pack("{s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:o, s:{s:i, s:i}, s:o}",
		      "recipe", r->path, "schedule", dp_recipe_schedule_name(r->parallel.schedule),
		      "world", p->nranks, "nodes", p->cfg.nodes, "gpus_per_node",
		      p->cfg.gpus_per_node, "pp", r->parallel.pp, "ep", r->parallel.ep, "dp",
		      r->parallel.dp, "stages", p->nstages, "pp_edge_internode_pairs", edges,
		      "ep_group", "nodes", p->ep_group_nodes, "internode_links", p->ep_group_links,
		      "ranks", ranks);
	return o;
}

static int cmd_plan(struct dp_cli *cli, int argc, char **argv)
{
	struct dp_recipe *r = NULL;
	struct dp_plan *p = NULL;
	struct dp_err e = { 0 };
	int json = cli->json, c, code;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case OPT_JSON:
			json = 1;
			break;
		case OPT_DRY_RUN:
			break; /* plan never starts anything */
		case OPT_TOPOLOGY:
			return dp_cli_error(
				cli, EX_UNAVAILABLE,
				"plan: --topology needs the topology importers, which this build does not have yet");
		case 'h':
			return dp_cli_help(cli, &dp_cmd_plan);
		default:
			return dp_cli_bad_option(cli, "plan", argc, argv);
		}
	}
	if (optind + 1 != argc)
		return dp_cli_usage_error(cli, "plan ", "expected exactly one RECIPE");
	code = dp_cli_load_recipe(cli, argv[optind], &r);
	if (code)
		return code;
	if (dp_plan_from_recipe(r, &p, &e)) {
		code = dp_cli_error(cli, EX_DATAERR, "%s", e.msg);
		goto out;
	}
	if (json) {
		json_t *o = plan_json(r, p);

		if (!o) {
			code = dp_cli_error(cli, EX_OSERR, "plan: out of memory");
			goto out;
		}
		char *text = json_dumps(o, JSON_COMPACT); /* one buffer: much cheaper than dumpf */

		json_decref(o);
		if (!text) {
			code = dp_cli_error(cli, EX_OSERR, "plan: out of memory");
			goto out;
		}
		(void)fputs(text, cli->out);
		(void)fputc('\n', cli->out);
		free(text);
	} else {
		print_table(cli, r, p);
	}
	code = EX_OK;
out:
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
		 "experts, and the inter-node links each PP edge and EP group uses.\n"
		 "\n"
		 "Options:\n"
		 "  --topology FILE   topology file for the nodes (repeatable)\n"
		 "  --json            print JSON\n"
		 "  --dry-run         same as the default: start nothing\n"
		 "  -h, --help        print this help\n",
};
