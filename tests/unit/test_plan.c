/* tests/unit/test_plan.c - rank layout, DualPipe pairing, link counts. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "launcher/dp_plan.h"
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
	/* rank 1 of a 4-stage DualPipe holds stages 1 and 2 */
	assert_non_null(
		strstr(r.out, "\nlocalhost               1      1   0    1       1,2    0"));
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
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
