/* tests/unit/test_model.c - the CPU MoE model: finite-difference gradient
 * checks, I+W against the fused backward, determinism, routing rules, stage
 * splits, an EP-style component run, and that training lowers the loss.
 *
 * Finite differences: the model is float32, so each check is a directional
 * derivative along a random +-1 direction over a whole tensor (or input),
 * central difference with eps 3e-3 against the analytic dot product, passing
 * when |num - ana| <= 2e-2 * max(|num|, |ana|) + 2e-4.  A direction whose +/-
 * evaluations route some token differently is discarded (routing is
 * piecewise constant); each check needs most of its directions to count. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker/dp_model.h"
#include "worker/dp_worker.h"
#include "tests/unit/dp_test.h"

#define FD_EPS	   3e-3
#define FD_REL	   2e-2
#define FD_ABS	   2e-4
#define FD_DIRS	   3
#define MAX_ROUTES 4096

static uint64_t rng_state = 12345;

static float rnd_pm1(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	z ^= z >> 31;
	return (float)(z >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

static void small_cfg(struct dp_model_cfg *c)
{
	dp_model_cfg_default(c);
	c->layers = 3;
	c->hidden = 8;
	c->ffn_hidden = 12;
	c->experts = 6;
	c->groups = 3;
	c->topk_groups = 2;
	c->top_k = 2;
	c->vocab = 11;
	c->seq_len = 5;
	c->seqs = 2;
	c->micro_batches = 2;
	c->lr = 0.01f;
	c->seed = 7;
}

static struct dp_model_ref *new_ref(const struct dp_model_cfg *cfg, int nstages)
{
	struct dp_model_ref *ref = NULL;
	struct dp_err err = { 0 };

	if (dp_model_ref_new(cfg, nstages, &ref, &err))
		fail_msg("%s", err.msg);
	return ref;
}

static void *xcalloc(size_t n, size_t sz)
{
	void *p = calloc(n, sz);

	assert_non_null(p);
	return p;
}

/* Routing of every layer of @ctx appended to @buf; returns the count. */
static size_t snap_ctx_routes(const struct dp_model_stage *st, const struct dp_model_ctx *ctx,
			      int *buf, size_t at)
{
	for (int l = dp_model_stage_first(st);
	     l < dp_model_stage_first(st) + dp_model_stage_count(st); l++) {
		const struct dp_model_route *r = dp_model_ctx_route(ctx, l);
		size_t n;

		assert_non_null(r);
		n = (size_t)r->tokens * (size_t)r->top_k;
		assert_true(at + n <= MAX_ROUTES);
		memcpy(buf + at, r->expert, n * sizeof(int));
		at += n;
	}
	return at;
}

/* ---- routing ---------------------------------------------------------------- */

static void route_ties_go_to_lower_index(void **state)
{
	struct dp_model_cfg c;
	float s[6] = { 0.25f, 0.25f, 0.25f, 0.25f, 0.25f, 0.25f };
	int sel[4];

	(void)state;
	small_cfg(&c); /* 6 experts, 3 groups of 2, 2 groups, top-2 */
	dp_model_route_select(&c, s, sel);
	assert_int_equal(sel[0], 0);
	assert_int_equal(sel[1], 1);
	/* groups 1 and 2 tie for best: group 1 wins; inside it 2 and 3 tie */
	s[0] = s[1] = 0.1f;
	dp_model_route_select(&c, s, sel);
	assert_int_equal(sel[0], 2);
	assert_int_equal(sel[1], 3);
}

static void route_limits_groups(void **state)
{
	struct dp_model_cfg c;
	/* group scores (max): g0 0.30, g1 0.20, g2 0.29; expert 5 (0.29) beats
	 * expert 1 (0.05) but with one group only group 0 may be used */
	const float s[6] = { 0.30f, 0.05f, 0.20f, 0.01f, 0.15f, 0.29f };
	int sel[4];

	(void)state;
	small_cfg(&c);
	c.topk_groups = 1;
	dp_model_route_select(&c, s, sel);
	assert_int_equal(sel[0], 0);
	assert_int_equal(sel[1], 1);
	c.topk_groups = 2;
	dp_model_route_select(&c, s, sel);
	assert_int_equal(sel[0], 0);
	assert_int_equal(sel[1], 5);
	/* k = 1: the best expert overall */
	c.top_k = 1;
	dp_model_route_select(&c, s, sel);
	assert_int_equal(sel[0], 0);
	/* k spanning both kept groups: all four of groups 0 and 2, best first */
	c.top_k = 4;
	dp_model_route_select(&c, s, sel);
	assert_int_equal(sel[0], 0);
	assert_int_equal(sel[1], 5);
	assert_int_equal(sel[2], 4);
	assert_int_equal(sel[3], 1);
}

static void cfg_check_rejects_bad_shapes(void **state)
{
	struct dp_model_cfg c;
	struct dp_err err = { 0 };

	(void)state;
	small_cfg(&c);
	assert_int_equal(dp_model_cfg_check(&c, &err), 0);
	c.groups = 4;
	assert_int_equal(dp_model_cfg_check(&c, &err), -EINVAL);
	assert_string_equal(err.msg, "model: 6 experts do not split into 4 groups");
	small_cfg(&c);
	c.top_k = 5; /* more than 2 groups x 2 experts */
	assert_int_equal(dp_model_cfg_check(&c, &err), -EINVAL);
	assert_string_equal(err.msg, "model: top_k 5 is out of range 1..4");
	small_cfg(&c);
	c.shared_experts = 2;
	assert_int_equal(dp_model_cfg_check(&c, &err), -EINVAL);
	small_cfg(&c);
	c.lr = 0.0f;
	assert_int_equal(dp_model_cfg_check(&c, &err), -EINVAL);
}

static void split_covers_layers_in_order(void **state)
{
	int first, count, next = 0;

	(void)state;
	for (int s = 0; s < 4; s++) {
		dp_model_split(10, 4, s, &first, &count);
		assert_int_equal(first, next);
		assert_int_equal(count, s < 2 ? 3 : 2);
		next = first + count;
	}
	assert_int_equal(next, 10);
	dp_model_split(3, 4, 3, &first, &count);
	assert_int_equal(first, 3);
	assert_int_equal(count, 0);
}

/* ---- finite differences --------------------------------------------------------- */

/* Loss of @ref (1 micro-batch config), and its routes into @routes. */
static double ref_loss(struct dp_model_ref *ref, int *routes, size_t *nroutes)
{
	struct dp_err err = { 0 };
	double loss = 0.0;
	size_t at = 0;

	if (dp_model_ref_grads(ref, 0, 0, &loss, &err))
		fail_msg("%s", err.msg);
	for (int i = 0; i < dp_model_ref_nstages(ref); i++)
		at = snap_ctx_routes(dp_model_ref_stage(ref, i), dp_model_ref_ctx(ref, i), routes,
				     at);
	*nroutes = at;
	return loss;
}

struct fd_stats {
	int checked, skipped, nonzero;
	double worst;
};

static void fd_compare(double num, double ana, const char *what, struct fd_stats *fs)
{
	double diff = fabs(num - ana), scale = fmax(fabs(num), fabs(ana));

	if (diff > FD_REL * scale + FD_ABS)
		fail_msg("%s: finite difference %.6g, analytic %.6g", what, num, ana);
	if (scale > 1e-3) {
		fs->nonzero++;
		if (diff / scale > fs->worst)
			fs->worst = diff / scale;
	}
	fs->checked++;
}

static void param_grads_match_finite_differences(void **state)
{
	struct dp_model_cfg c;
	struct dp_model_ref *ref;
	struct dp_model_stage *st;
	struct fd_stats fs = { 0 };
	int *r0 = xcalloc(MAX_ROUTES, sizeof(int)), *r1 = xcalloc(MAX_ROUTES, sizeof(int));
	int nt;

	(void)state;
	small_cfg(&c);
	c.micro_batches = 1;
	ref = new_ref(&c, 1);
	st = dp_model_ref_stage(ref, 0);
	nt = dp_model_stage_ntensors(st);
	for (int i = 0; i < nt; i++) {
		struct dp_model_tensor t;
		float *w0, *g0, *d;
		size_t n0, n1;
		int before;

		assert_int_equal(dp_model_stage_tensor(st, i, &t), 0);
		w0 = xcalloc(t.n, sizeof(float));
		g0 = xcalloc(t.n, sizeof(float));
		d = xcalloc(t.n, sizeof(float));
		(void)ref_loss(ref, r0, &n0);
		memcpy(w0, t.w, t.n * sizeof(float));
		memcpy(g0, t.g, t.n * sizeof(float));
		before = fs.checked;
		for (int k = 0; k < FD_DIRS; k++) {
			double ana = 0.0, lp, lm, eps = FD_EPS;

			for (size_t j = 0; j < t.n; j++) {
				d[j] = rnd_pm1();
				ana += (double)g0[j] * d[j];
			}
			/* a routing change: retry closer (gate weights need it) */
			for (int tries = 0;; tries++) {
				for (size_t j = 0; j < t.n; j++)
					t.w[j] = w0[j] + (float)eps * d[j];
				lp = ref_loss(ref, r0, &n0);
				for (size_t j = 0; j < t.n; j++)
					t.w[j] = w0[j] - (float)eps * d[j];
				lm = ref_loss(ref, r1, &n1);
				memcpy(t.w, w0, t.n * sizeof(float));
				if ((n0 == n1 && memcmp(r0, r1, n0 * sizeof(int)) == 0) ||
				    tries == 2)
					break;
				eps /= 3;
			}
			if (n0 != n1 || memcmp(r0, r1, n0 * sizeof(int)) != 0) {
				fs.skipped++;
				continue;
			}
			fd_compare((lp - lm) / (2 * eps), ana, t.name, &fs);
		}
		if (fs.checked == before)
			fail_msg("%s: every direction changed the routing", t.name);
		free(w0);
		free(g0);
		free(d);
	}
	print_message("# param FD: %d checked, %d skipped, %d non-zero, worst rel %.3g\n",
		      fs.checked, fs.skipped, fs.nonzero, fs.worst);
	assert_true(fs.nonzero > fs.checked / 2);
	free(r0);
	free(r1);
	dp_model_ref_free(ref);
}

static double dot_d(const float *a, const float *b, size_t n)
{
	double s = 0.0;

	for (size_t i = 0; i < n; i++)
		s += (double)a[i] * b[i];
	return s;
}

/* f(x) for the input-gradient checks: the loss on a head stage, else
 * sum(R . y) for a fixed random R. */
static double stage_objective(struct dp_model_stage *st, struct dp_model_ctx *ctx, const float *x,
			      const int32_t *tgt, const float *R, float *y, int *routes,
			      size_t *nroutes)
{
	const struct dp_model_cfg *c = dp_model_stage_cfg(st);
	const size_t TH = (size_t)dp_model_cfg_tokens(c) * (size_t)c->hidden;
	struct dp_model_io io = { .x = x, .targets = tgt };
	struct dp_err err = { 0 };
	double loss = 0.0;

	if (dp_model_forward(st, ctx, &io, y, &loss, &err))
		fail_msg("%s", err.msg);
	*nroutes = snap_ctx_routes(st, ctx, routes, 0);
	return dp_model_stage_has_head(st) ? loss : dot_d(R, y, TH);
}

static void check_input_grad(int first, int count, struct fd_stats *fs)
{
	struct dp_model_cfg c;
	struct dp_model_stage *st = NULL;
	struct dp_model_ctx *ctx = NULL;
	struct dp_err err = { 0 };
	size_t T, TH, n0, n1;
	float *x, *R, *y, *dx, *xp, *d;
	int32_t *tok, *tgt;
	int *r0 = xcalloc(MAX_ROUTES, sizeof(int)), *r1 = xcalloc(MAX_ROUTES, sizeof(int));
	int before = fs->checked;
	char what[64];

	small_cfg(&c);
	c.micro_batches = 1;
	T = (size_t)dp_model_cfg_tokens(&c);
	TH = T * (size_t)c.hidden;
	assert_int_equal(dp_model_stage_new(&c, first, count,
					    first + count == c.layers ? DP_MODEL_HEAD : 0, &st,
					    &err),
			 0);
	assert_int_equal(dp_model_ctx_new(st, &ctx, &err), 0);
	x = xcalloc(TH, sizeof(float));
	R = xcalloc(TH, sizeof(float));
	y = xcalloc(TH, sizeof(float));
	dx = xcalloc(TH, sizeof(float));
	xp = xcalloc(TH, sizeof(float));
	d = xcalloc(TH, sizeof(float));
	tok = xcalloc(T, sizeof(int32_t));
	tgt = xcalloc(T, sizeof(int32_t));
	dp_model_batch(&c, 0, 0, tok, tgt);
	for (size_t i = 0; i < TH; i++) {
		x[i] = rnd_pm1();
		R[i] = rnd_pm1();
	}
	(void)stage_objective(st, ctx, x, tgt, R, y, r0, &n0);
	assert_int_equal(dp_model_backward_input(st, ctx, R, dx, &err), 0);
	assert_int_equal(dp_model_backward_weight(st, ctx, &err), 0);
	(void)snprintf(what, sizeof(what), "dx of layers %d..%d%s", first, first + count - 1,
		       dp_model_stage_has_head(st) ? " + head" : "");
	for (int k = 0; k < FD_DIRS; k++) {
		double fp, fm;

		for (size_t i = 0; i < TH; i++) {
			d[i] = rnd_pm1();
			xp[i] = x[i] + (float)FD_EPS * d[i];
		}
		fp = stage_objective(st, ctx, xp, tgt, R, y, r0, &n0);
		for (size_t i = 0; i < TH; i++)
			xp[i] = x[i] - (float)FD_EPS * d[i];
		fm = stage_objective(st, ctx, xp, tgt, R, y, r1, &n1);
		if (n0 != n1 || memcmp(r0, r1, n0 * sizeof(int)) != 0) {
			fs->skipped++;
			continue;
		}
		fd_compare((fp - fm) / (2 * FD_EPS), dot_d(dx, d, TH), what, fs);
	}
	if (fs->checked == before)
		fail_msg("%s: every direction changed the routing", what);
	free(x);
	free(R);
	free(y);
	free(dx);
	free(xp);
	free(d);
	free(tok);
	free(tgt);
	free(r0);
	free(r1);
	dp_model_ctx_free(ctx);
	dp_model_stage_free(st);
}

static void input_grads_match_finite_differences(void **state)
{
	struct fd_stats fs = { 0 };

	(void)state;
	check_input_grad(1, 1, &fs); /* attention + MoE layer */
	check_input_grad(3, 0, &fs); /* head and loss only */
	check_input_grad(1, 2, &fs); /* two layers and the head */
	print_message("# input FD: %d checked, %d skipped, worst rel %.3g\n", fs.checked,
		      fs.skipped, fs.worst);
	assert_true(fs.nonzero == fs.checked);
}

/* Every gradient and value of @a equals @b's tensor of the same name, bit
 * for bit; returns how many tensors were compared. */
static int same_tensors(struct dp_model_ref *a, struct dp_model_ref *b)
{
	int compared = 0;

	for (int i = 0; i < dp_model_ref_nstages(a); i++) {
		struct dp_model_stage *sa = dp_model_ref_stage(a, i);

		for (int ti = 0; ti < dp_model_stage_ntensors(sa); ti++) {
			struct dp_model_tensor ta, tb = { 0 };
			int found = 0;

			assert_int_equal(dp_model_stage_tensor(sa, ti, &ta), 0);
			for (int j = 0; j < dp_model_ref_nstages(b) && !found; j++) {
				struct dp_model_stage *sb = dp_model_ref_stage(b, j);

				for (int tj = 0; tj < dp_model_stage_ntensors(sb) && !found; tj++) {
					assert_int_equal(dp_model_stage_tensor(sb, tj, &tb), 0);
					found = strcmp(ta.name, tb.name) == 0;
				}
			}
			if (!found) {
				fail_msg("tensor %s missing", ta.name);
				continue;
			}
			assert_int_equal(ta.n, tb.n);
			if (memcmp(ta.w, tb.w, ta.n * sizeof(float)) != 0)
				fail_msg("tensor %s: values differ", ta.name);
			if (memcmp(ta.g, tb.g, ta.n * sizeof(float)) != 0)
				fail_msg("tensor %s: gradients differ", ta.name);
			compared++;
		}
	}
	return compared;
}

static int ntensors_total(const struct dp_model_cfg *c)
{
	return 2 + c->layers * (7 + 2 * c->experts);
}

static void split_iw_equals_fused_backward(void **state)
{
	struct dp_model_cfg c;
	struct dp_model_ref *a, *b;
	double la, lb;

	(void)state;
	small_cfg(&c);
	a = new_ref(&c, 2);
	b = new_ref(&c, 2);
	for (long step = 0; step < 2; step++) {
		assert_int_equal(dp_model_ref_grads(a, step, 0, &la, NULL), 0);
		assert_int_equal(dp_model_ref_grads(b, step, 1, &lb, NULL), 0);
		assert_memory_equal(&la, &lb, sizeof(la));
		assert_int_equal(same_tensors(a, b), ntensors_total(&c));
		for (int i = 0; i < 2; i++) {
			dp_model_stage_step(dp_model_ref_stage(a, i));
			dp_model_stage_step(dp_model_ref_stage(b, i));
		}
	}
	dp_model_ref_free(a);
	dp_model_ref_free(b);
}

/* Zero-bubble order on one whole-model stage: F0 F1 F2 I0 I1 W0 I2 W1 W2
 * gives the same gradients as F0 B0 F1 B1 F2 B2 (W in micro-batch order). */
static void interleaved_iw_matches_sequential(void **state)
{
	struct dp_model_cfg c;
	struct dp_model_stage *zb = NULL, *seq = NULL;
	struct dp_model_ctx *ctx[3] = { NULL }, *one = NULL;
	struct dp_err err = { 0 };
	int32_t tok[3][64], tgt[3][64];
	double lz[3], ls[3];

	(void)state;
	small_cfg(&c);
	c.micro_batches = 3;
	assert_true(dp_model_cfg_tokens(&c) <= 64);
	assert_int_equal(
		dp_model_stage_new(&c, 0, c.layers, DP_MODEL_EMBED | DP_MODEL_HEAD, &zb, &err), 0);
	assert_int_equal(
		dp_model_stage_new(&c, 0, c.layers, DP_MODEL_EMBED | DP_MODEL_HEAD, &seq, &err), 0);
	assert_int_equal(dp_model_ctx_new(seq, &one, &err), 0);
	for (int m = 0; m < 3; m++) {
		struct dp_model_io io = { .tokens = tok[m], .targets = tgt[m] };

		dp_model_batch(&c, 5, m, tok[m], tgt[m]);
		assert_int_equal(dp_model_ctx_new(zb, &ctx[m], &err), 0);
		assert_int_equal(dp_model_forward(zb, ctx[m], &io, NULL, &lz[m], &err), 0);
		assert_int_equal(dp_model_forward(seq, one, &io, NULL, &ls[m], &err), 0);
		assert_int_equal(dp_model_backward(seq, one, NULL, NULL, &err), 0);
	}
	assert_int_equal(dp_model_backward_input(zb, ctx[0], NULL, NULL, &err), 0);
	assert_int_equal(dp_model_backward_input(zb, ctx[1], NULL, NULL, &err), 0);
	assert_int_equal(dp_model_backward_weight(zb, ctx[0], &err), 0);
	assert_int_equal(dp_model_backward_input(zb, ctx[2], NULL, NULL, &err), 0);
	assert_int_equal(dp_model_backward_weight(zb, ctx[1], &err), 0);
	assert_int_equal(dp_model_backward_weight(zb, ctx[2], &err), 0);
	assert_memory_equal(lz, ls, sizeof(lz));
	for (int i = 0; i < dp_model_stage_ntensors(zb); i++) {
		struct dp_model_tensor a, b;

		assert_int_equal(dp_model_stage_tensor(zb, i, &a), 0);
		assert_int_equal(dp_model_stage_tensor(seq, i, &b), 0);
		assert_string_equal(a.name, b.name);
		if (memcmp(a.g, b.g, a.n * sizeof(float)) != 0)
			fail_msg("tensor %s: gradients differ", a.name);
	}
	for (int m = 0; m < 3; m++)
		dp_model_ctx_free(ctx[m]);
	dp_model_ctx_free(one);
	dp_model_stage_free(zb);
	dp_model_stage_free(seq);
}

static void forward_is_deterministic_with_seed(void **state)
{
	struct dp_model_cfg c;
	struct dp_model_ref *a, *b, *d;
	double la, lb, ld;

	(void)state;
	small_cfg(&c);
	a = new_ref(&c, 1);
	b = new_ref(&c, 1);
	c.seed++;
	d = new_ref(&c, 1);
	assert_int_equal(dp_model_ref_grads(a, 3, 0, &la, NULL), 0);
	assert_int_equal(dp_model_ref_grads(b, 3, 0, &lb, NULL), 0);
	assert_int_equal(dp_model_ref_grads(d, 3, 0, &ld, NULL), 0);
	assert_memory_equal(&la, &lb, sizeof(la));
	assert_int_equal(same_tensors(a, b), ntensors_total(&c));
	assert_true(la != ld);
	assert_true(isfinite(la) && la > 0.0);
	/* the same step again on the same model: the same loss */
	assert_int_equal(dp_model_ref_grads(a, 3, 0, &lb, NULL), 0);
	assert_memory_equal(&la, &lb, sizeof(la));
	dp_model_ref_free(a);
	dp_model_ref_free(b);
	dp_model_ref_free(d);
}

static void stage_splits_give_identical_results(void **state)
{
	struct dp_model_cfg c;
	struct dp_model_ref *whole;
	double l1;

	(void)state;
	small_cfg(&c);
	whole = new_ref(&c, 1);
	assert_int_equal(dp_model_ref_train_step(whole, 0, &l1, NULL), 0);
	assert_int_equal(dp_model_ref_grads(whole, 1, 0, &l1, NULL), 0);
	for (int n = 2; n <= 4; n++) { /* 4 stages: the last holds only the head */
		struct dp_model_ref *r = new_ref(&c, n);
		double ln;

		assert_int_equal(dp_model_ref_train_step(r, 0, &ln, NULL), 0);
		assert_int_equal(dp_model_ref_grads(r, 1, 0, &ln, NULL), 0);
		assert_memory_equal(&l1, &ln, sizeof(l1));
		assert_int_equal(same_tensors(whole, r), ntensors_total(&c));
		assert_int_equal(same_tensors(r, whole), ntensors_total(&c));
		dp_model_ref_free(r);
	}
	dp_model_ref_free(whole);
}

/* EP by hand: stage A computes the tokens and experts 0..2, stage B (same
 * parameters) only serves experts 3..5 in its own context, called in reverse
 * expert order.  Loss, token-side and expert gradients equal a local run. */
static void ep_components_match_local_run(void **state)
{
	struct dp_model_cfg c;
	struct dp_model_stage *A = NULL, *B = NULL, *L = NULL;
	struct dp_model_ctx *ca = NULL, *cb = NULL, *cl = NULL;
	struct dp_err err = { 0 };
	int32_t tok[64], tgt[64];
	float *pin, *pout;
	double la = 0.0, ll = 0.0;
	size_t H;

	(void)state;
	small_cfg(&c);
	c.micro_batches = 1;
	H = (size_t)c.hidden;
	dp_model_batch(&c, 2, 0, tok, tgt);
	assert_int_equal(
		dp_model_stage_new(&c, 0, c.layers, DP_MODEL_EMBED | DP_MODEL_HEAD, &A, &err), 0);
	assert_int_equal(
		dp_model_stage_new(&c, 0, c.layers, DP_MODEL_EMBED | DP_MODEL_HEAD, &B, &err), 0);
	assert_int_equal(
		dp_model_stage_new(&c, 0, c.layers, DP_MODEL_EMBED | DP_MODEL_HEAD, &L, &err), 0);
	assert_int_equal(dp_model_ctx_new(A, &ca, &err), 0);
	assert_int_equal(dp_model_ctx_new(B, &cb, &err), 0);
	assert_int_equal(dp_model_ctx_new(L, &cl, &err), 0);
	pin = xcalloc((size_t)dp_model_cfg_tokens(&c) * (size_t)c.top_k * H, sizeof(float));
	pout = xcalloc((size_t)dp_model_cfg_tokens(&c) * (size_t)c.top_k * H, sizeof(float));
	{
		struct dp_model_io io = { .tokens = tok, .targets = tgt };

		assert_int_equal(dp_model_forward(L, cl, &io, NULL, &ll, &err), 0);
		assert_int_equal(dp_model_backward(L, cl, NULL, NULL, &err), 0);
		assert_int_equal(dp_model_forward_begin(A, ca, &io, &err), 0);
	}
	for (int l = 0; l < c.layers; l++) {
		const struct dp_model_route *r;

		assert_int_equal(dp_model_attn_forward(A, ca, l, &err), 0);
		assert_int_equal(dp_model_dispatch(A, ca, l, pin, &err), 0);
		r = dp_model_ctx_route(ca, l);
		assert_non_null(r);
		for (int e = c.experts - 1; e >= 0; e--) {
			const int own = dp_model_expert_owner(&c, 2, e);
			const size_t off = (size_t)r->offset[e] * H;

			assert_int_equal(dp_model_expert_forward(own ? B : A, own ? cb : ca, l, e,
								 r->offset[e + 1] - r->offset[e],
								 pin + off, pout + off, &err),
					 0);
		}
		assert_int_equal(dp_model_combine_forward(A, ca, l, pout, &err), 0);
	}
	assert_int_equal(dp_model_forward_end(A, ca, NULL, &la, &err), 0);
	assert_memory_equal(&la, &ll, sizeof(la));
	assert_int_equal(dp_model_backward_begin(A, ca, NULL, &err), 0);
	for (int l = c.layers - 1; l >= 0; l--) {
		const struct dp_model_route *r = dp_model_ctx_route(ca, l);

		assert_int_equal(dp_model_combine_backward(A, ca, l, pin, &err), 0);
		for (int e = c.experts - 1; e >= 0; e--) {
			const int own = dp_model_expert_owner(&c, 2, e);
			const size_t off = (size_t)r->offset[e] * H;

			assert_int_equal(
				dp_model_expert_backward_input(own ? B : A, own ? cb : ca, l, e,
							       r->offset[e + 1] - r->offset[e],
							       pin + off, pout + off, &err),
				0);
			if (own)
				assert_int_equal(dp_model_expert_backward_weight(B, cb, l, e, &err),
						 0);
		}
		assert_int_equal(dp_model_attn_backward(A, ca, l, pout, &err), 0);
	}
	assert_int_equal(dp_model_backward_end(A, ca, NULL, &err), 0);
	assert_int_equal(dp_model_backward_weight(A, ca, &err), 0);
	for (int i = 0; i < dp_model_stage_ntensors(L); i++) {
		struct dp_model_tensor tl, ta, tb;
		int on_b;

		assert_int_equal(dp_model_stage_tensor(L, i, &tl), 0);
		assert_int_equal(dp_model_stage_tensor(A, i, &ta), 0);
		assert_int_equal(dp_model_stage_tensor(B, i, &tb), 0);
		on_b = tl.expert >= 0 && dp_model_expert_owner(&c, 2, tl.expert) == 1;
		if (memcmp(tl.g, on_b ? tb.g : ta.g, tl.n * sizeof(float)) != 0)
			fail_msg("tensor %s: gradient differs", tl.name);
		for (size_t j = 0; j < tl.n; j++) /* nothing leaked to the other side */
			assert_true((on_b ? ta.g : tb.g)[j] == 0.0f);
	}
	free(pin);
	free(pout);
	dp_model_ctx_free(ca);
	dp_model_ctx_free(cb);
	dp_model_ctx_free(cl);
	dp_model_stage_free(A);
	dp_model_stage_free(B);
	dp_model_stage_free(L);
}

/* Copying the flat state (w, m, v, step) into a fresh model resumes training
 * exactly: what a checkpoint needs. */
static void flat_state_resumes_training(void **state)
{
	struct dp_model_cfg c;
	struct dp_model_ref *a, *b;
	double la, lb;
	size_t sum = 0;

	(void)state;
	small_cfg(&c);
	a = new_ref(&c, 2);
	b = new_ref(&c, 2);
	for (long k = 0; k < 3; k++)
		assert_int_equal(dp_model_ref_train_step(a, k, &la, NULL), 0);
	for (int i = 0; i < 2; i++) {
		struct dp_model_stage *sa = dp_model_ref_stage(a, i),
				      *sb = dp_model_ref_stage(b, i);
		struct dp_model_flat fa, fb;
		struct dp_model_tensor t;

		dp_model_stage_flat(sa, &fa);
		dp_model_stage_flat(sb, &fb);
		assert_int_equal(fa.n, fb.n);
		assert_int_equal(*fa.adam_step, 3);
		assert_int_equal(dp_model_stage_tensor(sa, 0, &t), 0);
		assert_ptr_equal(t.w, fa.w); /* tensors are views into the flat arrays */
		assert_ptr_equal(t.g, fa.g);
		for (int ti = 0; ti < dp_model_stage_ntensors(sa); ti++) {
			assert_int_equal(dp_model_stage_tensor(sa, ti, &t), 0);
			sum += t.n;
		}
		memcpy(fb.w, fa.w, fa.n * sizeof(float));
		memcpy(fb.m, fa.m, fa.n * sizeof(float));
		memcpy(fb.v, fa.v, fa.n * sizeof(float));
		*fb.adam_step = *fa.adam_step;
	}
	{
		struct dp_model_flat f0, f1;

		dp_model_stage_flat(dp_model_ref_stage(a, 0), &f0);
		dp_model_stage_flat(dp_model_ref_stage(a, 1), &f1);
		assert_int_equal(sum, f0.n + f1.n);
	}
	for (long k = 3; k < 5; k++) {
		assert_int_equal(dp_model_ref_train_step(a, k, &la, NULL), 0);
		assert_int_equal(dp_model_ref_train_step(b, k, &lb, NULL), 0);
		assert_memory_equal(&la, &lb, sizeof(la));
	}
	assert_int_equal(same_tensors(a, b), ntensors_total(&c));
	dp_model_ref_free(a);
	dp_model_ref_free(b);
}

/* Regrouped sums (W in another micro-batch order, two replicas of a stage
 * added afterwards, as DualPipe does) stay within the tolerance that
 * docs/model.md gives the executor: 1e-4 * max|g| + 1e-6 per element. */
static void regrouped_sums_stay_within_stated_tolerance(void **state)
{
	struct dp_model_cfg c;
	struct dp_model_ref *ref;
	struct dp_model_stage *x = NULL, *y = NULL, *r;
	struct dp_model_ctx *cx = NULL, *cy = NULL;
	struct dp_err err = { 0 };
	int32_t *tok, *tgt;
	double lref, lsum = 0.0, worst = 0.0;
	int inexact = 0;

	(void)state;
	dp_model_cfg_default(&c); /* the demo sizes: longer sums */
	c.layers = 2;
	ref = new_ref(&c, 1);
	r = dp_model_ref_stage(ref, 0);
	tok = xcalloc((size_t)dp_model_cfg_tokens(&c), sizeof(int32_t));
	tgt = xcalloc((size_t)dp_model_cfg_tokens(&c), sizeof(int32_t));
	assert_int_equal(dp_model_ref_grads(ref, 4, 0, &lref, NULL), 0);
	assert_int_equal(dp_model_stage_new_split(&c, 1, 0, &x, &err), 0);
	assert_int_equal(dp_model_stage_new_split(&c, 1, 0, &y, &err), 0);
	assert_int_equal(dp_model_ctx_new(x, &cx, &err), 0);
	assert_int_equal(dp_model_ctx_new(y, &cy, &err), 0);
	/* replica x takes the odd micro-batches, y the even ones, both reversed */
	for (int m = c.micro_batches - 1; m >= 0; m--) {
		struct dp_model_stage *st = m % 2 ? x : y;
		struct dp_model_ctx *ctx = m % 2 ? cx : cy;
		struct dp_model_io io = { .tokens = tok, .targets = tgt };
		double l;

		dp_model_batch(&c, 4, m, tok, tgt);
		assert_int_equal(dp_model_forward(st, ctx, &io, NULL, &l, &err), 0);
		assert_int_equal(dp_model_backward(st, ctx, NULL, NULL, &err), 0);
		lsum += l;
	}
	assert_true(fabs(lsum - lref) <= 1e-9 * lref);
	for (int i = 0; i < dp_model_stage_ntensors(r); i++) {
		struct dp_model_tensor tr, tx, ty;
		double gmax = 0.0;

		assert_int_equal(dp_model_stage_tensor(r, i, &tr), 0);
		assert_int_equal(dp_model_stage_tensor(x, i, &tx), 0);
		assert_int_equal(dp_model_stage_tensor(y, i, &ty), 0);
		for (size_t j = 0; j < tr.n; j++)
			gmax = fmax(gmax, fabs((double)tr.g[j]));
		for (size_t j = 0; j < tr.n; j++) {
			const float sum = tx.g[j] + ty.g[j];
			const double diff = fabs((double)sum - tr.g[j]);

			inexact += sum != tr.g[j];
			if (diff > 1e-4 * gmax + 1e-6)
				fail_msg("%s[%zu]: %.9g vs %.9g", tr.name, j, (double)sum,
					 (double)tr.g[j]);
			if (gmax > 0.0 && diff / gmax > worst)
				worst = diff / gmax;
		}
	}
	print_message("# regrouped: %d elements not bit-equal, worst diff %.3g of max|g|\n",
		      inexact, worst);
	free(tok);
	free(tgt);
	dp_model_ctx_free(cx);
	dp_model_ctx_free(cy);
	dp_model_stage_free(x);
	dp_model_stage_free(y);
	dp_model_ref_free(ref);
}

static void misuse_is_reported(void **state)
{
	struct dp_model_cfg c;
	struct dp_model_stage *st = NULL, *other = NULL;
	struct dp_model_ctx *ctx = NULL;
	struct dp_err err = { 0 };
	int32_t tok[64], tgt[64];
	struct dp_model_io io = { .tokens = tok, .targets = tgt };
	float buf[8 * 64];

	(void)state;
	small_cfg(&c);
	assert_int_equal(dp_model_stage_new(&c, 2, 2, 0, &st, &err), -EINVAL);
	assert_int_equal(dp_model_stage_new(&c, 1, 2, DP_MODEL_EMBED, &st, &err), -EINVAL);
	assert_int_equal(dp_model_stage_new(&c, 0, 2, DP_MODEL_HEAD, &st, &err), -EINVAL);
	assert_int_equal(dp_model_stage_new_split(&c, 2, 2, &st, &err), -EINVAL);
	assert_null(st);
	assert_int_equal(dp_model_stage_new_split(&c, 1, 0, &st, &err), 0);
	assert_int_equal(dp_model_stage_new(&c, 1, 1, 0, &other, &err), 0);
	assert_int_equal(dp_model_ctx_new(st, &ctx, &err), 0);
	assert_int_equal(dp_model_backward_weight(st, ctx, &err), -EINVAL);
	assert_string_equal(err.msg, "model: backward_weight: context is empty, not after "
				     "backward_input");
	assert_int_equal(dp_model_forward(other, ctx, &io, buf, NULL, &err), -EINVAL);
	dp_model_batch(&c, 0, 0, tok, tgt);
	tok[3] = 11;
	assert_int_equal(dp_model_forward(st, ctx, &io, NULL, NULL, &err), -EINVAL);
	assert_string_equal(err.msg, "model: token 11 is not in 0..10");
	tok[3] = 0;
	/* components out of order */
	assert_int_equal(dp_model_forward_begin(st, ctx, &io, &err), 0);
	assert_int_equal(dp_model_attn_forward(st, ctx, 0, &err), 0);
	assert_int_equal(dp_model_attn_forward(st, ctx, 1, &err), -EINVAL);
	assert_string_equal(err.msg, "model: attn_forward: layer 0 is at attn_forward, needs "
				     "combine_forward");
	assert_int_equal(dp_model_forward_end(st, ctx, NULL, NULL, &err), -EINVAL);
	assert_int_equal(dp_model_backward_begin(st, ctx, NULL, &err), -EINVAL);
	assert_int_equal(dp_model_forward(st, ctx, &io, NULL, NULL, &err), 0);
	assert_int_equal(dp_model_backward_begin(st, ctx, NULL, &err), 0);
	assert_int_equal(dp_model_combine_backward(st, ctx, 1, buf, &err), -EINVAL);
	assert_int_equal(dp_model_backward_weight(st, ctx, &err), -EINVAL);
	assert_string_equal(err.msg, "model: backward_weight: layer 0 is at combine_forward, "
				     "needs attn_backward");
	assert_int_equal(dp_model_forward(st, ctx, &io, NULL, NULL, &err), -EINVAL);
	dp_model_ctx_free(ctx);
	assert_int_equal(dp_model_ctx_new(st, &ctx, &err), 0);
	assert_int_equal(dp_model_forward(st, ctx, &io, NULL, NULL, &err), 0);
	assert_null(dp_model_ctx_route(ctx, 3));
	assert_int_equal(dp_model_attn_forward(st, ctx, 5, &err), -EINVAL);
	assert_int_equal(dp_model_expert_backward_weight(st, ctx, 0, 0, &err), -EINVAL);
	assert_int_equal(dp_model_backward_input(st, ctx, NULL, NULL, &err), 0);
	assert_int_equal(dp_model_forward(st, ctx, &io, NULL, NULL, &err), -EINVAL);
	assert_int_equal(dp_model_backward_input(st, ctx, NULL, NULL, &err), -EINVAL);
	assert_int_equal(dp_model_backward_weight(st, ctx, &err), 0);
	assert_true(dp_model_ctx_bytes(ctx) > 0);
	dp_model_ctx_free(ctx);
	dp_model_stage_free(st);
	dp_model_stage_free(other);
}

static void loss_falls_over_30_steps(void **state)
{
	struct dp_model_cfg c;
	struct dp_model_ref *ref;
	double loss[30];

	(void)state;
	small_cfg(&c);
	ref = new_ref(&c, 1);
	for (int k = 0; k < 30; k++) {
		assert_int_equal(dp_model_ref_train_step(ref, k, &loss[k], NULL), 0);
		assert_true(isfinite(loss[k]));
	}
	print_message("# loss %.4f %.4f %.4f ... %.4f %.4f %.4f\n", loss[0], loss[1], loss[2],
		      loss[27], loss[28], loss[29]);
	assert_true(loss[0] > 0.8 * log((double)c.vocab)); /* starts near chance */
	assert_true(loss[27] + loss[28] + loss[29] < 0.5 * (loss[0] + loss[1] + loss[2]));
	dp_model_ref_free(ref);
}

static void train_reference_command_prints_steps(void **state)
{
	char *obuf = NULL, *ebuf = NULL;
	size_t olen = 0, elen = 0;
	FILE *out = open_memstream(&obuf, &olen), *err = open_memstream(&ebuf, &elen);
	char *argv[] = { "dpworker", "--train-reference", "--steps", "3", "--stages", "2", NULL };
	char *bad[] = { "dpworker", "--train-reference", "--steps", "0", NULL };
	double l0, l2;
	const char *p;

	(void)state;
	assert_non_null(out);
	assert_non_null(err);
	assert_int_equal(dp_worker_main(6, argv, out, err), 0);
	assert_int_equal(dp_worker_main(4, bad, out, err), 64);
	assert_int_equal(fclose(out), 0);
	assert_int_equal(fclose(err), 0);
	p = strstr(obuf, "step 0 loss ");
	assert_non_null(p);
	l0 = strtod(p + 12, NULL);
	assert_non_null(strstr(obuf, "\nstep 1 loss "));
	p = strstr(obuf, "\nstep 2 loss ");
	assert_non_null(p);
	l2 = strtod(p + 13, NULL);
	assert_null(strstr(obuf, "step 3"));
	assert_true(l0 > 1.0 && l2 < l0);
	assert_non_null(strstr(ebuf, "--steps"));
	free(obuf);
	free(ebuf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(route_ties_go_to_lower_index),
		cmocka_unit_test(route_limits_groups),
		cmocka_unit_test(cfg_check_rejects_bad_shapes),
		cmocka_unit_test(split_covers_layers_in_order),
		cmocka_unit_test(param_grads_match_finite_differences),
		cmocka_unit_test(input_grads_match_finite_differences),
		cmocka_unit_test(split_iw_equals_fused_backward),
		cmocka_unit_test(interleaved_iw_matches_sequential),
		cmocka_unit_test(forward_is_deterministic_with_seed),
		cmocka_unit_test(stage_splits_give_identical_results),
		cmocka_unit_test(ep_components_match_local_run),
		cmocka_unit_test(flat_state_resumes_training),
		cmocka_unit_test(regrouped_sums_stay_within_stated_tolerance),
		cmocka_unit_test(misuse_is_reported),
		cmocka_unit_test(loss_falls_over_30_steps),
		cmocka_unit_test(train_reference_command_prints_steps),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
