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
#include "topo/dp_topo.h"
#include "common/dp_banned.h"

enum { OPT_TOPOLOGY = 256, OPT_JSON, OPT_DRY_RUN };

static const struct option opts[] = {
	{ "topology", required_argument, NULL, OPT_TOPOLOGY },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "dry-run", no_argument, NULL, OPT_DRY_RUN },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

#define MAX_TOPO_FILES 16

/* Per local GPU index: what a rank on that GPU binds to (from --topology). */
struct binding {
	char nic[64];
	int numa;
	char cpus[256];
};

/* Import and merge the --topology files (one node type for every node) and
 * derive the binding of each local GPU.  Returns an exit code. */
static int load_bindings(struct dp_cli *cli, const struct dp_recipe *r, char **files, int nfiles,
			 struct binding *b)
{
	struct dp_topo *t = NULL;
	struct dp_err e = { 0 };
	int code = EX_OK;

	for (int i = 0; i < nfiles; i++) {
		struct dp_topo *x = NULL;
		int rc = dp_topo_import(files[i], &x, &e);

		if (rc == 0 && t)
			rc = dp_topo_merge(t, x, &e);
		if (rc) {
			dp_topo_free(x);
			code = dp_cli_error(cli, dp_cli_exit_code(rc), "%s", e.msg);
			goto out;
		}
		if (!t)
			t = x;
		else
			dp_topo_free(x);
	}
	if (!t) {
		code = dp_cli_usage_error(cli, "plan ", "--topology needs a FILE");
		goto out;
	}
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
	dp_topo_free(t);
	return code;
}

static void print_table(struct dp_cli *cli, const struct dp_recipe *r, const struct dp_plan *p,
			const struct binding *b)
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
		char stages[24], experts[24], numa[16];

		if (x->nstages == 2)
			(void)snprintf(stages, sizeof(stages), "%d,%d", x->stage[0], x->stage[1]);
		else
			(void)snprintf(stages, sizeof(stages), "%d", x->stage[0]);
		(void)snprintf(experts, sizeof(experts), "%d-%d", x->ep * per_ep,
			       (x->ep + 1) * per_ep - 1);
		if (b && b[x->local].numa >= 0)
			(void)snprintf(numa, sizeof(numa), "%d", b[x->local].numa);
		else
			(void)snprintf(numa, sizeof(numa), "-");
		(void)fprintf(cli->out, "%-20s %4d %6d %3d %4d %9s %4d %9s %8s %4s\n",
			      dp_hostlist_get(r->cluster.hosts, (size_t)x->node), x->local, x->rank,
			      x->dp, x->pp, stages, x->ep, experts, b ? b[x->local].nic : "-",
			      numa);
	}
	(void)fprintf(cli->out, "# pp edges crossing nodes (GPU pairs):");
	for (int s = 0; s + 1 < r->parallel.pp; s++)
		(void)fprintf(cli->out, " %d-%d:%d", s, s + 1, p->pp_edge_links[s]);
	(void)fprintf(cli->out, "\n# ep group: %d node(s), %d inter-node rail links (two-hop)\n",
		      p->ep_group_nodes, p->ep_group_links);
}

static json_t *plan_json(const struct dp_recipe *r, const struct dp_plan *p,
			 const struct binding *b)
{
	int per_ep = r->model.experts / r->parallel.ep;
	json_t *ranks = json_array(), *edges = json_array(), *o;

	for (int i = 0; ranks && i < p->nranks; i++) {
		const struct dp_plan_rank *x = &p->ranks[i];
		json_t *st = json_array();

		json_t *rk;

		for (int k = 0; st && k < x->nstages; k++)
			(void)json_array_append_new(st, json_integer(x->stage[k]));
		rk = json_pack("{s:i, s:s, s:i, s:i, s:i, s:i, s:i, s:o, s:[i,i]}", "rank", x->rank,
			       "host", dp_hostlist_get(r->cluster.hosts, (size_t)x->node), "node",
			       x->node, "gpu", x->local, "dp", x->dp, "pp", x->pp, "ep", x->ep,
			       "stages", st, "experts", x->ep * per_ep, (x->ep + 1) * per_ep - 1);
		if (rk && b) {
			const struct binding *xb = &b[x->local];

			(void)json_object_set_new(rk, "nic", json_string(xb->nic));
			(void)json_object_set_new(rk, "numa", json_integer(xb->numa));
			(void)json_object_set_new(rk, "cpus", json_string(xb->cpus));
		}
		(void)json_array_append_new(ranks, rk);
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
	struct binding *b = NULL;
	struct dp_err e = { 0 };
	char *topo_files[MAX_TOPO_FILES];
	int json = cli->json, c, code, ntopo = 0;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case OPT_JSON:
			json = 1;
			break;
		case OPT_DRY_RUN:
			break; /* plan never starts anything */
		case OPT_TOPOLOGY:
			if (ntopo == MAX_TOPO_FILES)
				return dp_cli_usage_error(cli, "plan ",
							  "at most %d --topology files",
							  MAX_TOPO_FILES);
			topo_files[ntopo++] = optarg;
			break;
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
	if (json) {
		json_t *o = plan_json(r, p, b);

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
		print_table(cli, r, p, b);
	}
	code = EX_OK;
out:
	free(b);
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
