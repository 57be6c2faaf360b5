/* tests/unit/test_plan.c - rank layout, DualPipe pairing, link counts. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "launcher/dp_plan.h"
#include "topo/dp_topo.h"
#include "tests/unit/dp_test.h"

static struct dp_plan *build(int nodes, int g, int pp, int ep, int dp, enum dp_plan_pairing pr)
{
	struct dp_plan_cfg cfg = { nodes, g, pp, ep, dp, pr };
	struct dp_err err = { 0 };
	struct dp_plan *p = NULL;

	if (dp_plan_build(&cfg, &p, &err))
		fail_msg("%s", err.msg);
	return p;
}

static void deepseek_v3_layout(void **state)
{
	/* 256 nodes x 8: PP16 x EP64 x DP2 */
	struct dp_plan *p = build(256, 8, 16, 64, 2, DP_PLAN_DUALPIPE);
	int seen[2][16][64];

	(void)state;
	memset(seen, 0, sizeof(seen));
	assert_int_equal(p->nranks, 2048);
	for (int r = 0; r < p->nranks; r++) {
		const struct dp_plan_rank *x = &p->ranks[r];

		assert_int_equal(dp_plan_rank_of(p, x->dp, x->pp, x->ep), r);
		seen[x->dp][x->pp][x->ep]++;
		assert_int_equal(x->nstages, 2);
		assert_int_equal(x->stage[0], x->pp);
		assert_int_equal(x->stage[1], 15 - x->pp);
		/* every node holds GPUs of exactly one EP group, at local = ep % 8 */
		assert_int_equal(x->local, x->ep % 8);
	}
	for (int d = 0; d < 2; d++)
		for (int s = 0; s < 16; s++)
			for (int e = 0; e < 64; e++)
				assert_int_equal(seen[d][s][e], 1);
	/* EP64 = 8 whole nodes; PP edges all cross nodes (64 pairs per dp copy) */
	assert_int_equal(p->ep_group_nodes, 8);
	assert_int_equal(p->ep_group_links, 8 * 7 * 8);
	for (int s = 0; s < 15; s++)
		assert_int_equal(p->pp_edge_links[s], 2 * 64);
	dp_plan_free(p);
}

static void small_ep_keeps_pp_edges_on_node(void **state)
{
	/* 2 nodes x 8, EP2 PP4 DP2: 4 stages per dp copy fill one node */
	struct dp_plan *p = build(2, 8, 4, 2, 2, DP_PLAN_DUALPIPEV);

	(void)state;
	for (int s = 0; s < 3; s++)
		assert_int_equal(p->pp_edge_links[s], 0);
	assert_int_equal(p->ep_group_nodes, 1);
	assert_int_equal(p->ep_group_links, 0);
	assert_int_equal(p->ranks[3].stage[1], 2 * 4 - 1 - p->ranks[3].pp);
	assert_int_equal(p->nstages, 8);
	dp_plan_free(p);
}

static void one_f_one_b_holds_one_stage(void **state)
{
	struct dp_plan *p = build(1, 4, 4, 1, 1, DP_PLAN_SINGLE);

	(void)state;
	for (int r = 0; r < 4; r++) {
		assert_int_equal(p->ranks[r].nstages, 1);
		assert_int_equal(p->ranks[r].stage[0], r);
	}
	dp_plan_free(p);
}

static void rejects_bad_shapes(void **state)
{
	struct dp_err err = { 0 };
	struct dp_plan *p = NULL;
	struct dp_plan_cfg c1 = { 2, 8, 4, 2, 3, DP_PLAN_DUALPIPE };
	struct dp_plan_cfg c2 = { 3, 8, 2, 12, 1, DP_PLAN_SINGLE };
	struct dp_plan_cfg c3 = { 1, 6, 3, 2, 1, DP_PLAN_DUALPIPE };

	(void)state;
	assert_int_equal(dp_plan_build(&c1, &p, &err), -EINVAL);
	assert_string_equal(
		err.msg, "plan: pp*ep*dp = 4*2*3 = 24 but the cluster has 16 GPUs (2 nodes x 8)");
	assert_int_equal(dp_plan_build(&c2, &p, &err), -EINVAL);
	assert_string_equal(
		err.msg,
		"plan: ep 12 must divide or be a multiple of the 8 GPUs per node, so EP groups map onto whole nodes");
	assert_int_equal(dp_plan_build(&c3, &p, &err), -EINVAL);
	assert_string_equal(err.msg, "plan: dualpipe needs an even pp, got 3");
	assert_null(p);
}

static void cli_plans_every_shipped_recipe(void **state)
{
	static const char *const recipes[] = { "local-demo", "netns-cluster", "slurm",
					       "deepseek-v3" };

	(void)state;
	for (size_t i = 0; i < sizeof(recipes) / sizeof(recipes[0]); i++) {
		char path[512];
		struct dp_test_run r;
		json_t *o;
		json_error_t je;

		(void)snprintf(path, sizeof(path), "%s/recipes/%s.yaml", DP_SRCDIR, recipes[i]);
		r = dp_test_dpctl("plan", "--json", path);
		assert_int_equal(r.rc, 0);
		o = json_loads(r.out, 0, &je);
		if (!o)
			fail_msg("%s: bad JSON: %s", path, je.text);
		assert_int_equal(json_integer_value(json_object_get(o, "world")),
				 json_array_size(json_object_get(o, "ranks")));
		json_decref(o);
		dp_test_run_free(&r);
	}
}

static void cli_table_shows_stage_pairs(void **state)
{
	char path[512];
	struct dp_test_run r;

	(void)state;
	(void)snprintf(path, sizeof(path), "%s/recipes/local-demo.yaml", DP_SRCDIR);
	r = dp_test_dpctl("plan", path);
	assert_int_equal(r.rc, 0);
	/* rank 2 (pp rank 1, ep rank 0) of a 4-stage DualPipe x ep 2 holds
	 * stages 1 and 2 and the first half of the experts */
	assert_non_null(strstr(
		r.out, "\nlocalhost               2      2   0    1       1,2    0       0-3"));
	dp_test_run_free(&r);
}

static void cli_reports_recipe_errors_and_usage(void **state)
{
	char *bad =
		dp_test_write_tmp(".yaml", "cluster:\n  hosts: localhost\n  gpus: 4\n"
					   "model: {layers: 4, hidden: 64, experts: 8, top_k: 2}\n"
					   "parallel: {pp: 3, schedule: dualpipe}\n");
	struct dp_test_run r = dp_test_dpctl("plan", bad);

	(void)state;
	assert_int_equal(r.rc, 65);
	assert_non_null(strstr(r.err, ":5:"));
	assert_non_null(strstr(r.err, "key 'parallel.pp'"));
	dp_test_run_free(&r);
	r = dp_test_dpctl("plan");
	assert_int_equal(r.rc, 64);
	dp_test_run_free(&r);
	r = dp_test_dpctl("plan", "/nonexistent/recipe.yaml");
	assert_int_equal(r.rc, 66);
	dp_test_run_free(&r);
	(void)unlink(bad);
	free(bad);
}

static void cli_binds_ranks_from_topology(void **state)
{
	char topo[512];
	char *recipe =
		dp_test_write_tmp(".yaml", "cluster:\n  hosts: gx3d-[1-2]\n  launcher: ssh\n"
					   "  gpus: 8\n"
					   "model: {layers: 8, hidden: 64, experts: 16, top_k: 2}\n"
					   "parallel: {pp: 2, ep: 8, micro_batches: 4}\n");
	struct dp_test_run r;
	json_t *o, *ranks;
	json_error_t je;

	(void)state;
	(void)snprintf(topo, sizeof(topo), "%s/topologies/ibm-vpc-gx3d-h100-nccl-topo.xml",
		       SHARED_DIR);
	if (access(topo, R_OK) != 0)
		skip();
	r = dp_test_dpctl("plan", "--json", "--topology", topo, recipe);
	assert_int_equal(r.rc, 0);
	o = json_loads(r.out, 0, &je);
	assert_non_null(o);
	ranks = json_object_get(o, "ranks");
	assert_int_equal(json_array_size(ranks), 16);
	/* IBM gx3d pairs NICs in reverse: GPU i sits next to mlx5_(7-i) */
	for (size_t i = 0; i < 16; i++) {
		json_t *x = json_array_get(ranks, i);
		char want[32];
		int gpu = (int)json_integer_value(json_object_get(x, "gpu"));

		(void)snprintf(want, sizeof(want), "mlx5_%d", 7 - gpu);
		assert_string_equal(json_string_value(json_object_get(x, "nic")), want);
		assert_int_equal(json_integer_value(json_object_get(x, "numa")), gpu < 4 ? 0 : 1);
	}
	json_decref(o);
	dp_test_run_free(&r);
	/* a topology that does not match cluster.gpus is a data error */
	{
		char t2[512],
			*four = dp_test_write_tmp(
				".yaml", "cluster: {hosts: localhost, gpus: 4}\n"
					 "model: {layers: 4, hidden: 32, experts: 8, top_k: 2}\n"
					 "parallel: {pp: 4}\n");

		(void)snprintf(t2, sizeof(t2), "%s/topologies/azure-ndv4-a100-topo.xml",
			       SHARED_DIR);
		r = dp_test_dpctl("plan", "--topology", t2, four);
		(void)unlink(four);
		free(four);
	}
	assert_int_equal(r.rc, 65);
	assert_non_null(strstr(r.err, "the topology has 8 GPUs per node but"));
	dp_test_run_free(&r);
	(void)unlink(recipe);
	free(recipe);
}

/* ---- EPLB placement ----------------------------------------------------- */

/* A skewed load matrix as JSON (a small LCG, so every run sees the same). */
static char *loads_json(int layers, int experts, unsigned seed)
{
	size_t cap = (size_t)layers * (size_t)experts * 12 + 64, len = 0;
	char *s = malloc(cap);

	assert_non_null(s);
	len += (size_t)snprintf(s + len, cap - len, "{\"weight\": [");
	for (int l = 0; l < layers; l++) {
		len += (size_t)snprintf(s + len, cap - len, "%s[", l ? ", " : "");
		for (int e = 0; e < experts; e++) {
			seed = seed * 1103515245u + 12345u;
			/* a heavy tail: a few experts carry most of the load */
			len += (size_t)snprintf(s + len, cap - len, "%s%u", e ? ", " : "",
						(seed >> 16) % 100 *
							((seed >> 8) % 7 == 0 ? 40 : 1));
		}
		len += (size_t)snprintf(s + len, cap - len, "]");
	}
	(void)snprintf(s + len, cap - len, "]}\n");
	return s;
}

static json_t *run_json(struct dp_test_run *r)
{
	json_error_t je;
	json_t *o;

	if (r->rc != 0)
		fail_msg("dpctl exited %d: %s", r->rc, r->err);
	o = json_loads(r->out, 0, &je);
	if (!o)
		fail_msg("bad JSON (%s): %.200s", je.text, r->out);
	return o;
}

/* plan's per-EP-rank slots, flattened, equal `dpctl eplb`'s phy2log row by
 * row, and the balance figures agree. */
static void assert_same_placement(json_t *plan, json_t *eplb, int layers, int replicas)
{
	json_t *ex = json_object_get(plan, "experts"), *pl = json_object_get(ex, "layers"),
	       *p2l = json_object_get(eplb, "phy2log");

	assert_non_null(ex);
	assert_int_equal(json_array_size(pl), layers);
	assert_int_equal(json_array_size(p2l), layers);
	for (int l = 0; l < layers; l++) {
		json_t *eps = json_object_get(json_array_get(pl, (size_t)l), "ep_ranks");
		json_t *row = json_array_get(p2l, (size_t)l);
		int k = 0;

		for (size_t g = 0; g < json_array_size(eps); g++) {
			json_t *slots = json_array_get(eps, g);

			for (size_t j = 0; j < json_array_size(slots); j++, k++)
				assert_int_equal(
					json_integer_value(json_array_get(slots, j)),
					json_integer_value(json_array_get(row, (size_t)k)));
		}
		assert_int_equal(k, replicas);
		assert_int_equal(json_array_size(row), replicas);
	}
	assert_true(json_real_value(json_object_get(ex, "balance_before")) ==
		    json_real_value(json_object_get(eplb, "balance_before")));
	assert_true(json_real_value(json_object_get(ex, "balance_after")) ==
		    json_real_value(json_object_get(eplb, "balance_after")));
}

static void cli_places_experts_like_eplb(void **state)
{
	/* hierarchical: 4 groups over the 2 nodes of an EP group; global: 3
	 * groups do not divide over 2 nodes */
	static const struct {
		int groups, experts, redundant;
		const char *policy;
	} cases[] = { { 4, 16, 4, "hierarchical" }, { 3, 12, 4, "global" } };

	(void)state;
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		char *loads = loads_json(3, cases[c].experts, 7u + (unsigned)c), *lpath, *rpath;
		char text[1024], num[4][16];
		struct dp_test_run r1, r2;
		json_t *a, *b, *x;

		lpath = dp_test_write_tmp(".json", loads);
		/* a relative expert_loads is resolved against the recipe's directory */
		(void)snprintf(text, sizeof(text),
			       "cluster: {hosts: \"n[1-4]\", launcher: ssh, gpus: 2}\n"
			       "model:\n  layers: 4\n  dense_layers: 1\n  hidden: 64\n"
			       "  experts: %d\n  top_k: 2\n  groups: %d\n"
			       "  redundant_experts: %d\n  expert_loads: %s\n"
			       "parallel: {pp: 2, ep: 4, micro_batches: 4}\n",
			       cases[c].experts, cases[c].groups, cases[c].redundant,
			       strrchr(lpath, '/') + 1);
		rpath = dp_test_write_tmp(".yaml", text);
		r1 = dp_test_dpctl("plan", "--json", rpath);
		a = run_json(&r1);
		(void)snprintf(num[0], sizeof(num[0]), "%d", cases[c].experts + cases[c].redundant);
		(void)snprintf(num[1], sizeof(num[1]), "%d", cases[c].groups);
		(void)snprintf(num[2], sizeof(num[2]), "%d", 2); /* EP 4 over 2-GPU nodes */
		(void)snprintf(num[3], sizeof(num[3]), "%d", 4);
		r2 = dp_test_dpctl("eplb", "--json", "--loads", lpath, "--replicas", num[0],
				   "--groups", num[1], "--nodes", num[2], "--gpus", num[3]);
		b = run_json(&r2);
		assert_same_placement(a, b, 3, cases[c].experts + cases[c].redundant);
		x = json_object_get(a, "experts");
		assert_string_equal(json_string_value(json_object_get(x, "policy")),
				    cases[c].policy);
		assert_false(json_is_true(json_object_get(x, "uniform")));
		assert_string_equal(json_string_value(json_object_get(x, "loads")), lpath);
		assert_int_equal(json_integer_value(json_object_get(x, "slots_per_ep_rank")),
				 (cases[c].experts + cases[c].redundant) / 4);
		/* model layer numbers skip the dense layer */
		assert_int_equal(json_integer_value(json_object_get(
					 json_array_get(json_object_get(x, "layers"), 0), "layer")),
				 1);
		/* rank 5 is EP rank 1: slots R/4 .. 2R/4-1 */
		x = json_object_get(json_array_get(json_object_get(a, "ranks"), 5), "slots");
		assert_int_equal(json_integer_value(json_array_get(x, 0)),
				 (cases[c].experts + cases[c].redundant) / 4);
		json_decref(a);
		json_decref(b);
		dp_test_run_free(&r1);
		dp_test_run_free(&r2);
		/* the table says the same in short */
		r1 = dp_test_dpctl("plan", rpath);
		assert_int_equal(r1.rc, 0);
		assert_non_null(strstr(r1.out, cases[c].policy));
		assert_non_null(strstr(r1.out, "# loads: /tmp/"));
		assert_non_null(strstr(r1.out, "#   ep 3:"));
		dp_test_run_free(&r1);
		(void)unlink(lpath);
		(void)unlink(rpath);
		free(lpath);
		free(rpath);
		free(loads);
	}
}

static void cli_uniform_loads_without_a_file(void **state)
{
	char *rpath = dp_test_write_tmp(
		".yaml", "cluster: {hosts: \"n[1-2]\", launcher: ssh, gpus: 4}\n"
			 "model: {layers: 2, hidden: 64, experts: 8, top_k: 2, groups: 2,\n"
			 "        redundant_experts: 8}\n"
			 "parallel: {pp: 1, ep: 8, schedule: 1f1b}\n");
	char *ones = dp_test_write_tmp(".json", "{\"weight\": [[1,1,1,1,1,1,1,1],"
						"[1,1,1,1,1,1,1,1]]}");
	struct dp_test_run r1 = dp_test_dpctl("plan", "--json", rpath), r2;
	json_t *a = run_json(&r1), *b, *x;

	(void)state;
	x = json_object_get(a, "experts");
	assert_true(json_is_true(json_object_get(x, "uniform")));
	assert_true(json_is_null(json_object_get(x, "loads")));
	r2 = dp_test_dpctl("eplb", "--json", "--loads", ones, "--replicas", "16", "--groups", "2",
			   "--nodes", "2", "--gpus", "8");
	b = run_json(&r2);
	assert_same_placement(a, b, 2, 16);
	json_decref(a);
	json_decref(b);
	dp_test_run_free(&r1);
	dp_test_run_free(&r2);
	r1 = dp_test_dpctl("plan", rpath);
	assert_non_null(strstr(r1.out, "# loads: uniform (the recipe sets no model.expert_loads)"));
	dp_test_run_free(&r1);
	/* no redundant experts and no loads: no placement, experts split evenly */
	r1 = dp_test_dpctl("plan", "--json", FIXTURES "/../../recipes/local-demo.yaml");
	a = run_json(&r1);
	assert_null(json_object_get(a, "experts"));
	assert_non_null(json_object_get(json_array_get(json_object_get(a, "ranks"), 0), "experts"));
	json_decref(a);
	dp_test_run_free(&r1);
	(void)unlink(rpath);
	(void)unlink(ones);
	free(rpath);
	free(ones);
}

/* Each bad value is reported at its key as FILE:LINE:COL. */
static void recipe_expert_keys_report_file_line(void **state)
{
	static const struct {
		const char *loads; /* NULL: no such file */
		const char *redundant;
		const char *want;
	} cases[] = {
		{ NULL, "0", ":9:17: error: key 'model.expert_loads': cannot open '" },
		{ "{\"weight\": [[1,2,3,4]]}", "0",
		  ":9:17: error: key 'model.expert_loads': '/tmp/" },
		{ "{\"weight\": [[1,2,3,4],[1,2,3,4],[1,2,3,4]]}", "0",
		  "has 3 rows but the model has 2 MoE layers (layers 3 - dense_layers 1)" },
		{ "{\"weight\": [[1,2,3],[1,2,3]]}", "0",
		  "has 3 loads per layer but model.experts is 4" },
		{ "{\"weight\": [[1,2,3,4],[1,-2,3,4]]}", "0",
		  ":9:17: error: key 'model.expert_loads': " },
		{ "{\"weight\": [[1,2,3,4],[1,2,3,4]]}", "1",
		  ":8:22: error: key 'model.redundant_experts': experts + redundant_experts = 5 "
		  "must be a multiple of parallel.ep = 2" },
		{ "{\"weight\": [[1,2,3,4],[1,2,3,4]]}", "-2",
		  ":8:22: error: key 'model.redundant_experts': must be between 0 and 65536, "
		  "got -2" },
	};

	(void)state;
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		char *lpath = cases[c].loads ? dp_test_write_tmp(".json", cases[c].loads)
					     : strdup("/nonexistent/loads.json");
		char text[512], *rpath;
		struct dp_test_run r;

		(void)snprintf(text, sizeof(text),
			       "cluster: {hosts: localhost, gpus: 2}\n"
			       "model:\n  layers: 3\n  dense_layers: 1\n  hidden: 64\n"
			       "  experts: 4\n  top_k: 2\n"
			       "  redundant_experts: %s\n  expert_loads: %s\n"
			       "parallel: {pp: 1, ep: 2, schedule: 1f1b}\n",
			       cases[c].redundant, lpath);
		rpath = dp_test_write_tmp(".yaml", text);
		r = dp_test_dpctl("plan", rpath);
		assert_int_equal(r.rc, 65);
		if (!strstr(r.err, cases[c].want) || strncmp(r.err, rpath, strlen(rpath)) != 0)
			fail_msg("case %zu: want '%s' after '%s', got: %s", c, cases[c].want, rpath,
				 r.err);
		if (c == 4)
			assert_non_null(strstr(r.err, "weight[1][1] is negative (-2)"));
		dp_test_run_free(&r);
		(void)unlink(rpath);
		if (cases[c].loads)
			(void)unlink(lpath);
		free(rpath);
		free(lpath);
	}
}

/* model.rebalance_every: without redundant_experts or expert_loads it is
 * an error at its key (FILE:LINE:COL); with them `plan --show-env` gives
 * the ranks DP_EPLB_REBALANCE_EVERY; 0 gives nothing. */
static void recipe_rebalance_every(void **state)
{
	static const struct {
		int redundant, every, rc;
		const char *want, *where; /* in the output (NULL: absent), err or out */
	} cases[] = {
		{ 0, 5, 65,
		  ":8:20: error: key 'model.rebalance_every': 5 needs an EPLB placement to "
		  "re-place: set model.redundant_experts or model.expert_loads",
		  "err" },
		{ 2, 5, 0, "DP_EPLB_REBALANCE_EVERY=5", "out" },
		{ 2, 0, 0, NULL, "out" },
	};

	(void)state;
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		char text[512], *rpath;
		struct dp_test_run r;
		const char *got;

		(void)snprintf(text, sizeof(text),
			       "cluster: {hosts: localhost, gpus: 2}\n"
			       "model:\n  layers: 3\n  hidden: 64\n  experts: 4\n  top_k: 2\n"
			       "  redundant_experts: %d\n  rebalance_every: %d\n"
			       "parallel: {pp: 1, ep: 2, schedule: 1f1b}\n",
			       cases[c].redundant, cases[c].every);
		rpath = dp_test_write_tmp(".yaml", text);
		r = dp_test_dpctl("plan", "--show-env", rpath);
		assert_int_equal(r.rc, cases[c].rc);
		got = strcmp(cases[c].where, "err") == 0 ? r.err : r.out;
		if (cases[c].rc && strncmp(got, rpath, strlen(rpath)) != 0)
			fail_msg("case %zu: not at '%s': %s", c, rpath, got);
		if (cases[c].want ? !strstr(got, cases[c].want)
				  : strstr(got, "DP_EPLB_REBALANCE_EVERY") != NULL)
			fail_msg("case %zu: want '%s', got: %s", c,
				 cases[c].want ? cases[c].want : "no DP_EPLB_REBALANCE_EVERY", got);
		dp_test_run_free(&r);
		(void)unlink(rpath);
		free(rpath);
	}
}

/* ---- heterogeneous nodes ------------------------------------------------- */

static void heterogeneous_nodes_are_refused(void **state)
{
	char h100[512], a100[512], dgx2[512], az[512];
	char *recipe =
		dp_test_write_tmp(".yaml", "cluster:\n  hosts: node[1-3]\n  launcher: ssh\n"
					   "  gpus: 8\n"
					   "model: {layers: 8, hidden: 64, experts: 24, top_k: 2}\n"
					   "parallel: {pp: 3, ep: 8, schedule: 1f1b}\n");
	struct dp_test_run r;

	(void)state;
	(void)snprintf(h100, sizeof(h100), "%s/topologies/ibm-vpc-gx3d-h100-nccl-topo.xml",
		       SHARED_DIR);
	(void)snprintf(a100, sizeof(a100), "%s/topologies/aws-p4d-24xl-a100-topo.xml", SHARED_DIR);
	(void)snprintf(az, sizeof(az), "%s/topologies/azure-ndv4-a100-topo.xml", SHARED_DIR);
	(void)snprintf(dgx2, sizeof(dgx2), "%s/topologies/hwloc-nvidia-dgx2h-16gpu.xml",
		       SHARED_DIR);
	if (access(h100, R_OK) != 0 || access(a100, R_OK) != 0 || access(dgx2, R_OK) != 0 ||
	    access(az, R_OK) != 0)
		skip();
	/* alike nodes plan fine, bound from the first; the Azure file names no
	 * GPU model, so only its counts are compared (8 GPUs, 8 RDMA NICs) */
	r = dp_test_dpctl("plan", "--topology", h100, "--topology", h100, "--topology", az, recipe);
	assert_int_equal(r.rc, 0);
	assert_non_null(strstr(r.out, "mlx5_7"));
	dp_test_run_free(&r);
	/* one topology per host: the message names the hosts, files and what
	 * differs, every differing node */
	r = dp_test_dpctl("plan", "--topology", h100, "--topology", a100, "--topology", dgx2,
			  recipe);
	assert_int_equal(r.rc, 65);
	if (!strstr(r.err, "plan: nodes differ from 'node1 (ibm-vpc-gx3d-h100-nccl-topo.xml)' "
			   "(8 GPUs ") ||
	    !strstr(r.err, "'node2 (aws-p4d-24xl-a100-topo.xml)' has 4 RDMA NICs, GPU model "
			   "'A100 SXM4 40GB'") ||
	    !strstr(r.err, "'node3 (hwloc-nvidia-dgx2h-16gpu.xml)' has 16 GPUs, 0 RDMA NICs, "
			   "GPU model 'Tesla V100"))
		fail_msg("unexpected message: %s", r.err);
	dp_test_run_free(&r);
	(void)unlink(recipe);
	free(recipe);
}

static void nodes_check_names_each_difference(void **state)
{
	char h100[512], a100[512];
	struct dp_topo *t[3] = { NULL, NULL, NULL };
	const char *names[3] = { "a", "b", "c" };
	struct dp_err err = { 0 };

	(void)state;
	(void)snprintf(h100, sizeof(h100), "%s/topologies/ibm-vpc-gx3d-h100-nccl-topo.xml",
		       SHARED_DIR);
	(void)snprintf(a100, sizeof(a100), "%s/topologies/aws-p4d-24xl-a100-topo.xml", SHARED_DIR);
	if (access(h100, R_OK) != 0 || access(a100, R_OK) != 0)
		skip();
	assert_int_equal(dp_topo_import(h100, &t[0], &err), 0);
	assert_int_equal(dp_topo_import(h100, &t[1], &err), 0);
	assert_int_equal(dp_topo_import(a100, &t[2], &err), 0);
	assert_int_equal(dp_plan_nodes_check((const struct dp_topo *const *)t, names, 2, &err), 0);
	assert_int_equal(dp_plan_nodes_check((const struct dp_topo *const *)t, names, 1, &err), 0);
	assert_int_equal(dp_plan_nodes_check((const struct dp_topo *const *)t, names, 3, &err),
			 -EINVAL);
	/* b is like a, so only c is named, with its model */
	assert_null(strstr(err.msg, "'b'"));
	assert_non_null(strstr(err.msg, "'c' has"));
	assert_non_null(strstr(err.msg, dp_topo_gpu(t[2], 0)->model));
	for (int i = 0; i < 3; i++)
		dp_topo_free(t[i]);
}

/* ---- worker argv and environment ----------------------------------------- */

/* plan --json shows, rank by rank, exactly the argv and environment that
 * `launch --dry-run` would start: both call dp_plan_env_build(). */
static void env_and_argv_match_launch(void **state)
{
	char *recipe = dp_test_write_tmp(
		".yaml", "cluster: {hosts: \"h[1-2]\", launcher: ssh, known_hosts: accept-new,\n"
			 "          gpus: 2}\n"
			 "model: {layers: 4, hidden: 64, experts: 4, top_k: 2}\n"
			 "parallel: {pp: 2, ep: 2, schedule: dualpipev}\n"
			 "train: {steps: 7, seed: 3,\n"
			 "        checkpoint: {dir: /tmp/dp-plan-ckpt, every: 2, keep: 3}}\n"
			 "env:\n  QUOTED: \"it's \\\"$(x)\\\"; y\"\n  EMPTY:\n  TAB: \"a\\tb\"\n");
	struct dp_test_run rp = dp_test_dpctl("plan", "--json", recipe);
	struct dp_test_run rl = dp_test_dpctl("--json", "launch", "--dry-run", recipe);
	json_t *p = run_json(&rp), *l = run_json(&rl), *pr, *lr;
	struct dp_test_run rt;

	(void)state;
	pr = json_object_get(p, "ranks");
	lr = json_object_get(l, "ranks");
	assert_int_equal(json_array_size(pr), 4);
	assert_int_equal(json_array_size(lr), 4);
	for (size_t i = 0; i < 4; i++) {
		json_t *a = json_array_get(pr, i), *b = json_array_get(lr, i);

		assert_int_equal(json_integer_value(json_object_get(a, "rank")),
				 json_integer_value(json_object_get(b, "rank")));
		assert_string_equal(json_string_value(json_object_get(a, "host")),
				    json_string_value(json_object_get(b, "host")));
		assert_int_equal(json_integer_value(json_object_get(a, "gpu")),
				 json_integer_value(json_object_get(b, "local_index")));
		assert_true(json_equal(json_object_get(a, "argv"), json_object_get(b, "argv")));
		assert_true(json_equal(json_object_get(a, "env"), json_object_get(b, "env")));
	}
	/* and the values are the recipe's, verbatim */
	{
		json_t *env = json_object_get(json_array_get(pr, 3), "env");
		int seen = 0;

		for (size_t k = 0; k < json_array_size(env); k++) {
			const char *e = json_string_value(json_array_get(env, k));

			seen += strcmp(e, "QUOTED=it's \"$(x)\"; y") == 0;
			seen += strcmp(e, "EMPTY=") == 0;
			seen += strcmp(e, "TAB=a\tb") == 0;
			seen += strcmp(e, "DP_STAGES=1,2") == 0; /* DualPipeV: r and 2PP-1-r */
			seen += strcmp(e, "DP_STEPS=7") == 0;
			seen += strcmp(e, "DP_CKPT_EVERY=2") == 0;
			seen += strcmp(e, "DP_CKPT_KEEP=3") == 0;
		}
		assert_int_equal(seen, 7);
	}
	assert_true(json_equal(json_object_get(p, "launch_env"), json_object_get(l, "env")));
	json_decref(p);
	json_decref(l);
	dp_test_run_free(&rp);
	dp_test_run_free(&rl);
	/* --show-env prints them in the table */
	rt = dp_test_dpctl("plan", "--show-env", recipe);
	assert_int_equal(rt.rc, 0);
	assert_non_null(strstr(rt.out, "    env: DP_PP_RANK=0 DP_EP_RANK=1 DP_DP_RANK=0 "));
	assert_non_null(strstr(rt.out, "# set by launch at spawn time too: DP_JOB_TOKEN"));
	dp_test_run_free(&rt);
	(void)unlink(recipe);
	free(recipe);
}

/* train.batch is the global batch: dp 2 x ep 2 x 4 micro-batches of 48
 * sequences leave 3 per micro-batch, which every rank's DP_MODEL carries
 * (the text table, --show-env and --json agree). */
static void global_batch_splits_over_dp_and_ep(void **state)
{
	char *recipe = dp_test_write_tmp(
		".yaml", "cluster: {hosts: localhost, gpus: 8}\n"
			 "model: {layers: 4, hidden: 32, experts: 4, top_k: 2, seq_len: 16}\n"
			 "parallel: {pp: 2, ep: 2, dp: 2, micro_batches: 4}\n"
			 "train: {batch: 48}\n");
	struct dp_test_run rt = dp_test_dpctl("plan", "--show-env", recipe);
	struct dp_test_run rj = dp_test_dpctl("plan", "--json", recipe);
	json_t *o = run_json(&rj), *ranks;
	const char *s = rt.out;
	int n = 0;

	(void)state;
	if (rt.rc != 0)
		fail_msg("rc %d: %s", rt.rc, rt.err);
	assert_non_null(strstr(rt.out, "\n# global batch 48 = dp 2 x ep 2 x micro 4 x 3 sequences, "
				       "768 tokens per step\n"));
	while ((s = strstr(s, " DP_MODEL="))) {
		size_t len = strcspn(s + 1, " \n") + 1;
		char model[512];

		(void)snprintf(model, sizeof(model), "%.*s", (int)len, s);
		if (!strstr(model, ",seqs=3,"))
			fail_msg("rank %d: %s", n, model);
		n++;
		s += len;
	}
	assert_int_equal(n, 8);
	assert_int_equal(json_integer_value(json_object_get(o, "batch")), 48);
	assert_int_equal(json_integer_value(json_object_get(o, "micro_batches")), 4);
	assert_int_equal(json_integer_value(json_object_get(o, "seqs_per_micro_batch")), 3);
	ranks = json_object_get(o, "ranks");
	assert_int_equal(json_array_size(ranks), 8);
	for (size_t i = 0; i < json_array_size(ranks); i++) {
		json_t *env = json_object_get(json_array_get(ranks, i), "env");
		int seen = 0;

		for (size_t k = 0; k < json_array_size(env); k++) {
			const char *e = json_string_value(json_array_get(env, k));

			seen += strncmp(e, "DP_MODEL=", 9) == 0 && strstr(e, ",seqs=3,") != NULL;
		}
		assert_int_equal(seen, 1);
	}
	json_decref(o);
	dp_test_run_free(&rt);
	dp_test_run_free(&rj);
	(void)unlink(recipe);
	free(recipe);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(deepseek_v3_layout),
		cmocka_unit_test(small_ep_keeps_pp_edges_on_node),
		cmocka_unit_test(one_f_one_b_holds_one_stage),
		cmocka_unit_test(rejects_bad_shapes),
		cmocka_unit_test(cli_plans_every_shipped_recipe),
		cmocka_unit_test(cli_table_shows_stage_pairs),
		cmocka_unit_test(cli_reports_recipe_errors_and_usage),
		cmocka_unit_test(cli_binds_ranks_from_topology),
		cmocka_unit_test(cli_places_experts_like_eplb),
		cmocka_unit_test(cli_uniform_loads_without_a_file),
		cmocka_unit_test(recipe_expert_keys_report_file_line),
		cmocka_unit_test(recipe_rebalance_every),
		cmocka_unit_test(heterogeneous_nodes_are_refused),
		cmocka_unit_test(nodes_check_names_each_difference),
		cmocka_unit_test(env_and_argv_match_launch),
		cmocka_unit_test(global_batch_splits_over_dp_and_ep),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
