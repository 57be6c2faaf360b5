/* tests/unit/test_eplb.c - EPLB expert placement (a2a/dp_eplb.h) and
 * `dpctl eplb`: upstream's README example, golden cases from an independent
 * reference (tests/fixtures/eplb/README.md), the property list of EPLB.md
 * section 2 on many random inputs, preconditions, and the CLI. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include <jansson.h>

#include "a2a/dp_eplb.h"
#include "common/dp_util.h"
#include "tests/unit/dp_test.h"

/* ---- the README example (EPLB.md section 3) ------------------------------ */

static const float readme_w[2][12] = {
	{ 90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86 },
	{ 20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27 },
};
static const struct dp_eplb_cfg readme_cfg = {
	.layers = 2, .experts = 12, .replicas = 16, .groups = 4, .nodes = 2, .gpus = 8
};

static const char readme_json[] =
	"{\"weight\": [[ 90, 132,  40,  61, 104, 165,  39,   4,  73,  56, 183,  86],\n"
	"           [ 20, 107, 104,  64,  19, 197, 187, 157, 172,  86,  16,  27]]}\n";

static void readme_example_is_exact(void **state)
{
	static const int32_t phy2log[2][16] = {
		{ 5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1 },
		{ 7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1 },
	};
	static const int32_t log2phy[2][12][2] = {
		{ { 12, -1 },
		  { 15, 13 },
		  { 11, -1 },
		  { 6, -1 },
		  { 7, 5 },
		  { 0, 2 },
		  { 1, -1 },
		  { 3, -1 },
		  { 4, -1 },
		  { 9, -1 },
		  { 8, 10 },
		  { 14, -1 } },
		{ { 13, -1 },
		  { 15, 11 },
		  { 8, -1 },
		  { 14, -1 },
		  { 9, -1 },
		  { 10, 12 },
		  { 2, 4 },
		  { 0, -1 },
		  { 6, 3 },
		  { 7, -1 },
		  { 1, -1 },
		  { 5, -1 } },
	};
	static const int32_t logcnt[2][12] = {
		{ 1, 2, 1, 1, 2, 2, 1, 1, 1, 1, 2, 1 },
		{ 1, 2, 1, 1, 1, 2, 2, 1, 2, 1, 1, 1 },
	};
	struct dp_err err = { 0 };
	struct dp_eplb_plan *pl = NULL;
	double b, a;

	(void)state;
	assert_int_equal(dp_eplb_plan_build(&readme_w[0][0], &readme_cfg, &pl, &err), 0);
	assert_true(dp_eplb_plan_hierarchical(pl));
	assert_int_equal(dp_eplb_plan_width(pl), 2);
	assert_memory_equal(dp_eplb_plan_phy2log(pl), phy2log, sizeof(phy2log));
	assert_memory_equal(dp_eplb_plan_log2phy(pl), log2phy, sizeof(log2phy));
	assert_memory_equal(dp_eplb_plan_logcnt(pl), logcnt, sizeof(logcnt));
	/* balances as printed in the doc: 1.2081 and 1.2422; baseline 1.85 and 2.38 */
	assert_true(fabs(dp_eplb_plan_balance_after(pl, 0) - 1.2081) < 5e-5);
	assert_true(fabs(dp_eplb_plan_balance_after(pl, 1) - 1.2422) < 5e-5);
	assert_true(fabs(dp_eplb_plan_balance_before(pl, 0) - 1.85) < 5e-3);
	assert_true(fabs(dp_eplb_plan_balance_before(pl, 1) - 2.38) < 5e-3);
	/* exact value: the busiest GPU of layer 0 (6: experts 0 and 1) holds
	 * 90 + 132/2 = 156 against a mean of 1033/8 */
	assert_true(fabs(dp_eplb_plan_balance_after(pl, 0) - 156.0 / (1033.0 / 8)) < 1e-12);
	assert_int_equal(dp_eplb_plan_balance_max(pl, &b, &a), 0);
	assert_true(b == dp_eplb_plan_balance_before(pl, 1));
	assert_true(a == dp_eplb_plan_balance_after(pl, 1));
	dp_eplb_plan_free(pl);
}

/* Layer 1 has a real cross-item tie inside node 0: expert 9 (86) and the
 * second replica of expert 8 (172/2 = 86).  Ties go to the lower index in
 * the node's replica list, where expert 9's first replica comes before the
 * extra replica of 8: so 9 is packed first. */
static void readme_layer1_tie_follows_stable_rule(void **state)
{
	struct dp_err err = { 0 };
	struct dp_eplb_plan *pl = NULL;
	const int32_t *l2p, *rank;

	(void)state;
	assert_int_equal(dp_eplb_plan_build(&readme_w[0][0], &readme_cfg, &pl, &err), 0);
	l2p = dp_eplb_plan_log2phy(pl) + (size_t)12 * 2;
	rank = dp_eplb_plan_phyrank(pl) + 16;
	assert_int_equal(l2p[9 * 2 + 0], 7); /* expert 9: GPU 3 slot 1 */
	assert_int_equal(l2p[8 * 2 + 0], 6); /* expert 8 rank 0: GPU 3 slot 0 */
	assert_int_equal(l2p[8 * 2 + 1], 3); /* expert 8 rank 1: GPU 1 slot 1 */
	assert_int_equal(rank[3], 1);
	assert_int_equal(rank[6], 0);
	dp_eplb_plan_free(pl);
}

/* ---- golden cases --------------------------------------------------------- */

static json_t *parse_or_fail(const char *text, const char *what)
{
	json_error_t jerr;
	json_t *j = json_loads(text, 0, &jerr);

	if (!j)
		fail_msg("%s: not JSON: line %d: %s", what, jerr.line, jerr.text);
	return j;
}

static void assert_real_close(json_t *got, json_t *want, const char *what)
{
	if (json_is_null(want)) {
		if (!json_is_null(got))
			fail_msg("%s: expected null", what);
		return;
	}
	if (!json_is_real(got))
		fail_msg("%s: expected a real", what);
	if (fabs(json_real_value(got) - json_number_value(want)) >
	    1e-9 * fabs(json_number_value(want)))
		fail_msg("%s: %.17g != %.17g", what, json_real_value(got), json_number_value(want));
}

static struct dp_test_run run_case(const char *path, json_t *c, const char *groups,
				   const char *nodes)
{
	char r[32], g[32], n[32], p[32];

	(void)snprintf(r, sizeof(r), "%lld",
		       (long long)json_integer_value(json_object_get(c, "replicas")));
	(void)snprintf(g, sizeof(g), "%lld",
		       (long long)json_integer_value(json_object_get(c, "groups")));
	(void)snprintf(n, sizeof(n), "%lld",
		       (long long)json_integer_value(json_object_get(c, "nodes")));
	(void)snprintf(p, sizeof(p), "%lld",
		       (long long)json_integer_value(json_object_get(c, "gpus")));
	return dp_test_dpctl("eplb", "--loads", path, "--replicas", r, "--groups",
			     groups ? groups : g, "--nodes", nodes ? nodes : n, "--gpus", p,
			     "--json");
}

static void golden_cases_match(void **state)
{
	const char *dir = FIXTURES "/eplb";
	struct dirent *de;
	int ncases = 0;
	DIR *d;

	(void)state;
	d = opendir(dir);
	assert_non_null(d);
	while ((de = readdir(d))) {
		static const char *const arrays[] = { "phy2log", "log2phy", "logcnt" };
		char path[1024];
		json_t *c, *want, *got, *alt;
		struct dp_test_run r;
		char *text;

		if (!dp_str_endswith(de->d_name, ".json"))
			continue;
		(void)snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		text = dp_test_slurp(path);
		c = parse_or_fail(text, path);
		free(text);
		want = json_object_get(c, "expected");
		assert_non_null(want);
		r = run_case(path, c, NULL, NULL);
		if (r.rc != 0)
			fail_msg("%s: rc %d: %s", path, r.rc, r.err);
		got = parse_or_fail(r.out, path);
		for (size_t i = 0; i < 3; i++)
			if (!json_equal(json_object_get(got, arrays[i]),
					json_object_get(want, arrays[i])))
				fail_msg("%s: %s differs", path, arrays[i]);
		assert_real_close(json_object_get(got, "balance_before"),
				  json_object_get(want, "balance_before"), path);
		assert_real_close(json_object_get(got, "balance_after"),
				  json_object_get(want, "balance_after"), path);
		/* float32-sensitive: float64 arithmetic would give another plan */
		alt = json_object_get(c, "float64_phy2log");
		if (alt)
			assert_false(json_equal(json_object_get(got, "phy2log"), alt));
		json_decref(got);
		dp_test_run_free(&r);
		/* hierarchical with N = 1 differs from global (G = N = 1) */
		alt = json_object_get(c, "global_phy2log");
		if (alt) {
			assert_false(json_equal(json_object_get(want, "phy2log"), alt));
			r = run_case(path, c, "1", "1");
			assert_int_equal(r.rc, 0);
			got = parse_or_fail(r.out, path);
			assert_true(json_equal(json_object_get(got, "phy2log"), alt));
			json_decref(got);
			dp_test_run_free(&r);
		}
		json_decref(c);
		ncases++;
	}
	(void)closedir(d);
	assert_true(ncases >= 10);
}

/* ---- properties on random inputs (EPLB.md section 2) --------------------- */

static uint64_t rng_state;

static uint32_t rnd(uint32_t n) /* uniform-ish in [0, n) */
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)((rng_state >> 11) % n);
}

static int ceil_div(int a, int b)
{
	return (a + b - 1) / b;
}

/* A random valid shape; @kind 0 hierarchical, 1 global, 2 hierarchical N=1,
 * 3 R == P (either policy). */
static void random_cfg(struct dp_eplb_cfg *c, int kind)
{
	c->layers = 1 + (int)rnd(3);
	if (kind == 1) {
		do {
			c->nodes = 2 + (int)rnd(4);
			c->groups = 1 + (int)rnd(12);
		} while (c->groups % c->nodes == 0);
		c->experts = 1 + (int)rnd(40);
		c->gpus = 1 + (int)rnd(16);
		c->replicas = c->gpus * (ceil_div(c->experts, c->gpus) + (int)rnd(3));
		return;
	}
	c->nodes = kind == 2 ? 1 : 1 + (int)rnd(4);
	c->groups = c->nodes * (1 + (int)rnd(4));
	c->experts = c->groups * (1 + (int)rnd(5));
	c->gpus = c->nodes * (1 + (int)rnd(4));
	if (kind == 3) {
		c->gpus = c->nodes * ceil_div(c->experts + (int)rnd(4), c->nodes);
		c->replicas = c->gpus;
		return;
	}
	c->replicas = c->gpus * (ceil_div(c->experts, c->gpus) + (int)rnd(3));
}

static void random_loads(float *w, int n)
{
	int type = (int)rnd(5);

	for (int i = 0; i < n; i++) {
		switch (type) {
		case 0:
			w[i] = (float)rnd(4); /* tie-heavy */
			break;
		case 1:
			w[i] = (float)rnd(1000);
			break;
		case 2:
			w[i] = (float)rnd(1u << 24) / 1024.0f;
			break;
		case 3:
			w[i] = (float)(16777216 + (int)rnd(9) - 4); /* float32 rounding */
			break;
		default:
			w[i] = rnd(3) ? 0.0f : 1.0f;
			break;
		}
	}
}

static void check_properties(const float *w, const struct dp_eplb_cfg *c,
			     const struct dp_eplb_plan *pl)
{
	int L = c->layers, E = c->experts, R = c->replicas, X = dp_eplb_plan_width(pl);
	int hier = c->groups % c->nodes == 0, maxcnt = 0;
	int G = hier ? c->groups : 1, N = hier ? c->nodes : 1;
	int rpn = R / N, gs = E / G;
	int *seen = calloc((size_t)E, sizeof(int));
	int *node_of = calloc((size_t)E, sizeof(int));

	assert_non_null(seen);
	assert_non_null(node_of);
	assert_int_equal(dp_eplb_plan_hierarchical(pl), hier);
	for (int l = 0; l < L; l++) {
		const int32_t *p2l = dp_eplb_plan_phy2log(pl) + (size_t)l * R;
		const int32_t *rk = dp_eplb_plan_phyrank(pl) + (size_t)l * R;
		const int32_t *cnt = dp_eplb_plan_logcnt(pl) + (size_t)l * E;
		const int32_t *l2p = dp_eplb_plan_log2phy(pl) + (size_t)l * E * X;
		const float *wl = w + (size_t)l * E;
		int sum = 0;

		memset(seen, 0, (size_t)E * sizeof(int));
		for (int p = 0; p < R; p++) {
			assert_true(p2l[p] >= 0 && p2l[p] < E);
			seen[p2l[p]]++;
		}
		for (int e = 0; e < E; e++) {
			assert_true(cnt[e] >= 1);
			assert_int_equal(seen[e], cnt[e]);
			sum += cnt[e];
			maxcnt = cnt[e] > maxcnt ? cnt[e] : maxcnt;
			for (int r = 0; r < X; r++) {
				int s = l2p[e * X + r];

				if (r < cnt[e]) {
					assert_true(s >= 0 && s < R);
					assert_int_equal(p2l[s], e);
					assert_int_equal(rk[s], r);
				} else {
					assert_int_equal(s, -1);
				}
			}
			if (hier) {
				/* all replicas of an expert on one node */
				node_of[e] = l2p[(size_t)e * X] / rpn;
				for (int r = 1; r < cnt[e]; r++)
					assert_int_equal(l2p[e * X + r] / rpn, node_of[e]);
			}
		}
		assert_int_equal(sum, R);
		if (hier) {
			/* whole groups per node, G/N of them */
			for (int n = 0; n < N; n++) {
				int groups_here = 0;

				for (int g = 0; g < G; g++) {
					for (int j = 1; j < gs; j++)
						assert_int_equal(node_of[(size_t)g * gs + j],
								 node_of[(size_t)g * gs]);
					groups_here += node_of[(size_t)g * gs] == n;
				}
				assert_int_equal(groups_here, G / N);
			}
		}
		/* D'Hondt: an expert given k > 1 replicas had, at its last pick,
		 * a share w/(k-1) no smaller than any expert's final share in the
		 * same replication domain (shares only shrink for loads >= 0). */
		for (int e = 0; e < E; e++) {
			float last;

			if (cnt[e] < 2)
				continue;
			last = (float)(wl[e] / (float)(cnt[e] - 1));
			for (int f = 0; f < E; f++)
				if (!hier || node_of[f] == node_of[e])
					assert_true(last >= (float)(wl[f] / (float)cnt[f]));
		}
		/* R == P in global policy: step 3 is the identity */
		if (R == c->gpus && !hier)
			for (int p = 0; p < E; p++)
				assert_int_equal(p2l[p], p);
		if (!isnan(dp_eplb_plan_balance_after(pl, l)))
			assert_true(dp_eplb_plan_balance_after(pl, l) >= 1.0 - 1e-12);
	}
	assert_int_equal(X, maxcnt);
	free(seen);
	free(node_of);
}

static void random_plans_have_the_properties(void **state)
{
	(void)state;
	rng_state = 0x9e3779b97f4a7c15ull;
	for (int it = 0; it < 3000; it++) {
		struct dp_eplb_cfg c;
		struct dp_err err = { 0 };
		struct dp_eplb_plan *pl = NULL, *again = NULL;
		float *w;
		size_t LR;

		random_cfg(&c, it % 4);
		w = malloc((size_t)c.layers * (size_t)c.experts * sizeof(*w));
		assert_non_null(w);
		random_loads(w, c.layers * c.experts);
		if (dp_eplb_plan_build(w, &c, &pl, &err) != 0)
			fail_msg("case %d: %s", it, err.msg);
		check_properties(w, &c, pl);
		/* deterministic */
		assert_int_equal(dp_eplb_plan_build(w, &c, &again, &err), 0);
		LR = (size_t)c.layers * (size_t)c.replicas;
		assert_memory_equal(dp_eplb_plan_phy2log(pl), dp_eplb_plan_phy2log(again),
				    LR * sizeof(int32_t));
		assert_memory_equal(dp_eplb_plan_phyrank(pl), dp_eplb_plan_phyrank(again),
				    LR * sizeof(int32_t));
		dp_eplb_plan_free(again);
		/* global is hierarchical with G = N = 1 */
		if (c.groups % c.nodes != 0) {
			struct dp_eplb_cfg one = c;

			one.groups = 1;
			one.nodes = 1;
			assert_int_equal(dp_eplb_plan_build(w, &one, &again, &err), 0);
			assert_memory_equal(dp_eplb_plan_phy2log(pl), dp_eplb_plan_phy2log(again),
					    LR * sizeof(int32_t));
			dp_eplb_plan_free(again);
		}
		dp_eplb_plan_free(pl);
		free(w);
	}
}

/* The low-level call fills every slot and agrees with the plan object. */
static void rebalance_fills_caller_arrays(void **state)
{
	int32_t p2l[2 * 16], rk[2 * 16], cnt[2 * 12];
	struct dp_err err = { 0 };
	struct dp_eplb_plan *pl = NULL;

	(void)state;
	memset(p2l, 0xff, sizeof(p2l));
	memset(rk, 0xff, sizeof(rk));
	assert_int_equal(dp_eplb_rebalance(&readme_w[0][0], &readme_cfg, p2l, rk, cnt, &err), 0);
	assert_int_equal(dp_eplb_plan_build(&readme_w[0][0], &readme_cfg, &pl, &err), 0);
	assert_memory_equal(p2l, dp_eplb_plan_phy2log(pl), sizeof(p2l));
	assert_memory_equal(rk, dp_eplb_plan_phyrank(pl), sizeof(rk));
	assert_memory_equal(cnt, dp_eplb_plan_logcnt(pl), sizeof(cnt));
	dp_eplb_plan_free(pl);
}

/* float32 bin sums, traced by hand (global: G 3 % N 2 != 0; R = E = 6 on
 * P = 2 GPUs, three items each).  Sorted: e0 = 2^24, e1 = 2^24 - 1, then
 * e2, e3, e4 = 1 (ties by index), e5 = 0.5.
 *   e0 -> gpu 0 (0 == 0, lower index);  e1 -> gpu 1;
 *   e2 -> gpu 1, which becomes 2^24;  e3: tie 2^24 == 2^24 -> gpu 0, and
 *   float(2^24 + 1) == 2^24;  e4: tie again -> gpu 0 (now full);  e5 -> gpu 1.
 * With a double bin sum gpu 0 would hold 2^24 + 1 and e4 would go to gpu 1,
 * giving [0,3,5, 1,2,4]. */
static void bin_sums_round_to_float(void **state)
{
	static const float w[6] = { 16777216.0f, 16777215.0f, 1.0f, 1.0f, 1.0f, 0.5f };
	static const struct dp_eplb_cfg c = {
		.layers = 1, .experts = 6, .replicas = 6, .groups = 3, .nodes = 2, .gpus = 2
	};
	static const int32_t want[6] = { 0, 3, 4, 1, 2, 5 };
	struct dp_err err = { 0 };
	struct dp_eplb_plan *pl = NULL;

	(void)state;
	assert_int_equal(dp_eplb_plan_build(w, &c, &pl, &err), 0);
	assert_false(dp_eplb_plan_hierarchical(pl));
	assert_memory_equal(dp_eplb_plan_phy2log(pl), want, sizeof(want));
	dp_eplb_plan_free(pl);
}

/* Loads are float32 from the start, as upstream's weight.float(): a JSON
 * integer goes int64 -> float with one rounding. */
static void integer_loads_convert_like_torch(void **state)
{
	/* 16777217 is not a float: int64 -> float32 rounds to even, 16777216,
	 * so it ties with the 16777216 load and the lower index is packed first. */
	char *path = dp_test_write_tmp(".json", "{\"weight\": [[16777216, 16777217, 5, 3]]}");
	struct dp_test_run r = dp_test_dpctl("eplb", "--loads", path, "--replicas", "4", "--groups",
					     "1", "--nodes", "1", "--gpus", "2", "--json");

	(void)state;
	assert_int_equal(r.rc, EX_OK);
	/* sorted e0, e1 (tie), e2, e3: e0 -> gpu 0, e1 -> gpu 1, e2 -> gpu 0
	 * (2^24 == 2^24, lower index), e3 -> gpu 1 */
	assert_non_null(strstr(r.out, "\"phy2log\":[[0,2,1,3]]"));
	dp_test_run_free(&r);
	(void)unlink(path);
	free(path);
}

/* ---- preconditions --------------------------------------------------------- */

static void expect_cfg_error(struct dp_eplb_cfg c, int rc, const char *msg)
{
	struct dp_err err = { 0 };
	float w[64] = { 0 };
	int32_t a[4096], b[4096], k[4096];

	assert_int_equal(dp_eplb_cfg_check(&c, &err), rc);
	assert_string_equal(err.msg, msg);
	if (c.layers == 1 && c.experts > 0 && c.experts <= 64) {
		dp_err_clear(&err);
		assert_int_equal(dp_eplb_rebalance(w, &c, a, b, k, &err), rc);
		assert_string_equal(err.msg, msg);
	}
}

static void preconditions_follow_upstream(void **state)
{
	struct dp_eplb_cfg c = { 1, 12, 16, 4, 2, 8 };
	struct dp_err err = { 0 };

	(void)state;
	assert_int_equal(dp_eplb_cfg_check(&c, &err), 0);
	c.groups = 5;
	c.nodes = 1;
	expect_cfg_error(
		c, -EINVAL,
		"eplb: hierarchical policy needs experts % groups == 0 (experts 12, groups 5)");
	c = (struct dp_eplb_cfg){ 1, 12, 14, 4, 2, 7 };
	expect_cfg_error(c, -EINVAL,
			 "eplb: hierarchical policy needs gpus % nodes == 0 (gpus 7, nodes 2)");
	c = (struct dp_eplb_cfg){ 1, 12, 18, 4, 2, 8 };
	expect_cfg_error(
		c, -EINVAL,
		"eplb: hierarchical policy needs replicas % gpus == 0 (replicas 18, gpus 8)");
	c = (struct dp_eplb_cfg){ 1, 12, 8, 4, 2, 8 };
	expect_cfg_error(
		c, -EINVAL,
		"eplb: hierarchical policy needs replicas >= experts (replicas 8, experts 12)");
	c = (struct dp_eplb_cfg){ 1, 12, 18, 3, 2, 8 };
	expect_cfg_error(c, -EINVAL,
			 "eplb: global policy needs replicas % gpus == 0 (replicas 18, gpus 8)");
	c = (struct dp_eplb_cfg){ 1, 12, 8, 3, 2, 8 };
	expect_cfg_error(c, -EINVAL,
			 "eplb: global policy needs replicas >= experts (replicas 8, experts 12)");
	c = (struct dp_eplb_cfg){ 0, 12, 16, 4, 2, 8 };
	expect_cfg_error(c, -EINVAL, "eplb: layers must be at least 1 (got 0)");
	c = (struct dp_eplb_cfg){ 1, 12, 16, 4, 0, 8 };
	expect_cfg_error(c, -EINVAL, "eplb: nodes must be at least 1 (got 0)");
	/* global checks neither experts % groups nor gpus % nodes */
	c = (struct dp_eplb_cfg){ 1, 10, 10, 3, 2, 5 };
	assert_int_equal(dp_eplb_cfg_check(&c, &err), 0);
	assert_false(dp_eplb_cfg_hierarchical(&c));
}

static void non_finite_loads_are_rejected(void **state)
{
	float w[4] = { 1, NAN, 2, 3 };
	struct dp_eplb_cfg c = { 1, 4, 4, 1, 1, 2 };
	struct dp_err err = { 0 };
	struct dp_eplb_plan *pl = NULL;

	(void)state;
	assert_int_equal(dp_eplb_plan_build(w, &c, &pl, &err), -EINVAL);
	assert_null(pl);
	assert_string_equal(err.msg, "eplb: load of layer 0 expert 1 is not finite");
	w[1] = INFINITY;
	assert_int_equal(dp_eplb_plan_build(w, &c, &pl, &err), -EINVAL);
}

static void zero_layers_have_no_ratio(void **state)
{
	float w[2][4] = { { 0, 0, 0, 0 }, { 1, 2, 3, 4 } };
	struct dp_eplb_cfg c = { 2, 4, 4, 1, 1, 2 };
	struct dp_err err = { 0 };
	struct dp_eplb_plan *pl = NULL;
	double b = 0, a = 0;

	(void)state;
	assert_int_equal(dp_eplb_plan_build(&w[0][0], &c, &pl, &err), 0);
	assert_true(isnan(dp_eplb_plan_balance_after(pl, 0)));
	assert_true(isnan(dp_eplb_plan_balance_before(pl, 0)));
	assert_int_equal(dp_eplb_plan_balance_max(pl, &b, &a), 0);
	assert_true(b == dp_eplb_plan_balance_before(pl, 1));
	dp_eplb_plan_free(pl);
	c.layers = 1;
	assert_int_equal(dp_eplb_plan_build(&w[0][0], &c, &pl, &err), 0);
	assert_int_equal(dp_eplb_plan_balance_max(pl, &b, &a), -ENODATA);
	assert_int_equal(dp_eplb_plan_balance_mean(pl, NULL, NULL), -ENODATA);
	dp_eplb_plan_free(pl);
}

/* ---- the CLI --------------------------------------------------------------- */

static struct dp_test_run run_text(const char *json, const char *R, const char *G, const char *N,
				   const char *P)
{
	char *path = dp_test_write_tmp(".json", json);
	struct dp_test_run r = dp_test_dpctl("eplb", "--loads", path, "--replicas", R, "--groups",
					     G, "--nodes", N, "--gpus", P, "--json");

	(void)unlink(path);
	free(path);
	return r;
}

static void cli_json_has_the_exact_shape(void **state)
{
	static const char *const keys[] = { "\"phy2log\":[[", "\"log2phy\":[[[", "\"logcnt\":[[",
					    "\"balance_before\":", "\"balance_after\":" };
	struct dp_test_run r = run_text(readme_json, "16", "4", "2", "8");
	const char *prev;
	json_t *j;

	(void)state;
	assert_int_equal(r.rc, EX_OK);
	assert_string_equal(r.err, "");
	assert_true(strncmp(r.out,
			    "{\"phy2log\":[[5,6,5,7,8,4,3,4,10,9,10,2,0,1,11,1],[7,10,6,8,6,11,8,"
			    "9,2,4,5,1,5,0,3,1]],\"log2phy\":[[[12,-1],[15,13],",
			    80) == 0);
	prev = r.out;
	for (size_t i = 0; i < 5; i++) { /* keys in this order */
		const char *k = strstr(r.out, keys[i]);

		assert_non_null(k);
		assert_true(k >= prev);
		prev = k;
	}
	j = parse_or_fail(r.out, "dpctl eplb --json");
	assert_int_equal(json_object_size(j), 5);
	assert_true(json_is_real(json_object_get(j, "balance_before")));
	assert_true(fabs(json_real_value(json_object_get(j, "balance_after")) - 1.2422) < 5e-5);
	assert_int_equal(json_array_size(json_object_get(j, "log2phy")), 2);
	json_decref(j);
	dp_test_run_free(&r);
}

static void cli_table_shows_gpus_and_balance(void **state)
{
	char *path = dp_test_write_tmp(".json", readme_json);
	struct dp_test_run r = dp_test_dpctl("eplb", "--loads", path, "--replicas", "16",
					     "--groups", "4", "--nodes", "2", "--gpus", "8");

	(void)state;
	assert_int_equal(r.rc, EX_OK);
	assert_non_null(strstr(r.out, "hierarchical policy"));
	assert_non_null(strstr(r.out, "layer 0: balance before 1.8509, after 1.2081"));
	assert_non_null(strstr(r.out, "layer 1: balance before 2.3806, after 1.2422"));
	assert_non_null(strstr(r.out, "  0    0     5 6\n"));
	assert_non_null(strstr(r.out, "  7    1     11 1\n"));
	assert_non_null(strstr(r.out, "max over layers:  before 2.3806, after 1.2422"));
	dp_test_run_free(&r);
	/* global policy is named */
	r = dp_test_dpctl("eplb", "--loads", path, "--replicas", "16", "--groups", "3", "--nodes",
			  "2", "--gpus", "8");
	assert_int_equal(r.rc, EX_OK);
	assert_non_null(strstr(r.out, "global policy"));
	dp_test_run_free(&r);
	(void)unlink(path);
	free(path);
}

static void expect_cli(const char *json, int rc, const char *needle)
{
	struct dp_test_run r = run_text(json, "4", "1", "1", "2");

	if (r.rc != rc || !strstr(r.err, needle))
		fail_msg("for %s: rc %d (want %d), err '%s' (want '%s')", json, r.rc, rc, r.err,
			 needle);
	if (rc != EX_OK)
		assert_string_equal(r.out, "");
	dp_test_run_free(&r);
}

static void cli_rejects_bad_loads(void **state)
{
	(void)state;
	expect_cli("{\"weight\": [[1, 2, 3, 4]]}", EX_OK, "");
	expect_cli("{\"weight\": [[1, 2,\n 3, ]]}", EX_DATAERR, "line 2 column");
	expect_cli("{\"weight\": [[1, 2, 3, 4], [1, 2, 3]]}", EX_DATAERR,
		   "weight[1] has 3 loads but weight[0] has 4");
	expect_cli("{\"weight\": [[1, -2, 3, 4]]}", EX_DATAERR, "weight[0][1] is negative (-2)");
	expect_cli("{\"weight\": [[1, 2, -0.5, 4]]}", EX_DATAERR, "weight[0][2] is negative");
	expect_cli("{\"weight\": [[1, \"2\", 3, 4]]}", EX_DATAERR, "weight[0][1] is not a number");
	expect_cli("{\"weight\": [[1, null, 3, 4]]}", EX_DATAERR, "weight[0][1] is not a number");
	expect_cli("{\"weight\": [[1, NaN, 3, 4]]}", EX_DATAERR, "line 1 column");
	expect_cli("{\"weight\": [[1, 1e39, 3, 4]]}", EX_DATAERR, "does not fit in float32");
	expect_cli("{\"weight\": []}", EX_DATAERR, "\"weight\" has no layers");
	expect_cli("{\"weight\": [[]]}", EX_DATAERR, "weight[0] has no experts");
	expect_cli("{\"weight\": [5]}", EX_DATAERR, "weight[0] is not an array");
	expect_cli("{\"loads\": [[1]]}", EX_DATAERR, "expected an object {\"weight\"");
	expect_cli("[[1, 2]]", EX_DATAERR, "expected an object");
	expect_cli("", EX_DATAERR, "line ");
	/* shape violations are data errors too, with the rule named */
	expect_cli("{\"weight\": [[1, 2, 3, 4, 5]]}", EX_DATAERR,
		   "eplb: hierarchical policy needs replicas >= experts (replicas 4, experts 5)");
}

static void cli_usage_errors(void **state)
{
	struct dp_test_run r;

	(void)state;
	r = dp_test_dpctl("eplb", "--replicas", "16", "--groups", "4", "--nodes", "2", "--gpus",
			  "8");
	assert_int_equal(r.rc, EX_USAGE);
	assert_non_null(strstr(r.err, "missing --loads FILE.json"));
	dp_test_run_free(&r);
	r = dp_test_dpctl("eplb", "--loads", "x.json", "--replicas", "16", "--groups", "4",
			  "--gpus", "8");
	assert_int_equal(r.rc, EX_USAGE);
	assert_non_null(strstr(r.err, "missing --nodes"));
	dp_test_run_free(&r);
	r = dp_test_dpctl("eplb", "--loads", "x.json", "--replicas", "sixteen");
	assert_int_equal(r.rc, EX_USAGE);
	assert_non_null(strstr(r.err, "--replicas: 'sixteen' is not an integer"));
	dp_test_run_free(&r);
	r = dp_test_dpctl("eplb", "--loads", "x.json", "--gpus", "0");
	assert_int_equal(r.rc, EX_USAGE);
	assert_non_null(strstr(r.err, "--gpus: 0 is out of range"));
	dp_test_run_free(&r);
	r = dp_test_dpctl("eplb", "--bogus");
	assert_int_equal(r.rc, EX_USAGE);
	dp_test_run_free(&r);
	r = dp_test_dpctl("eplb", "--loads", "/nonexistent/w.json", "--replicas", "16", "--groups",
			  "4", "--nodes", "2", "--gpus", "8");
	assert_int_equal(r.rc, EX_NOINPUT);
	assert_non_null(strstr(r.err, "eplb: cannot open '/nonexistent/w.json'"));
	dp_test_run_free(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(readme_example_is_exact),
		cmocka_unit_test(readme_layer1_tie_follows_stable_rule),
		cmocka_unit_test(golden_cases_match),
		cmocka_unit_test(random_plans_have_the_properties),
		cmocka_unit_test(rebalance_fills_caller_arrays),
		cmocka_unit_test(bin_sums_round_to_float),
		cmocka_unit_test(integer_loads_convert_like_torch),
		cmocka_unit_test(preconditions_follow_upstream),
		cmocka_unit_test(non_finite_loads_are_rejected),
		cmocka_unit_test(zero_layers_have_no_ratio),
		cmocka_unit_test(cli_json_has_the_exact_shape),
		cmocka_unit_test(cli_table_shows_gpus_and_balance),
		cmocka_unit_test(cli_rejects_bad_loads),
		cmocka_unit_test(cli_usage_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
