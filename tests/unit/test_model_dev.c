/* tests/unit/test_model_dev.c - the model's device backends (worker/dp_dev.h)
 * against the host model (worker/model_cpu.c): the same stages, micro-batches
 * and schedule of calls on "cpu" and on a device backend, comparing the loss,
 * the routing of every layer, every parameter gradient (full backward, and
 * backward_input then backward_weight) and the parameters after 3 Adam steps.
 *
 * Tolerances, per tensor with m = max |reference element|:
 * - "emu" (the kernels and GEMM loops on the host): gradients
 *   |a - b| <= 1e-5 m + 1e-6, parameters after 3 Adam steps 1e-4 m + 1e-5,
 *   the loss to 1e-6 relative, routing identical.  The forward is the host
 *   model's arithmetic; a weight gradient GEMM adds a micro-batch's
 *   X^T dY to G as one sum (beta 1) where the host model adds row by row,
 *   so gradients differ by rounding (worst seen 0.026 of the bound, 6e-8
 *   absolute), and Adam, dividing by sqrt(v), turns that into up to 3.4e-6
 *   in a value (0.08 of the bound).
 * - "cuda" (cuBLAS sums in its own order, fused multiply-adds): gradients
 *   1e-3 m + 1e-5, parameters after Adam 1e-3 m + 1e-4 (Adam divides by
 *   sqrt(v): a near-zero gradient that rounds differently may move an
 *   element by up to lr), the loss 1e-4 relative; if a near-tie routes a
 *   token differently the gradients are not compared.  Skipped without a
 *   CUDA build or device. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker/dp_dev.h"
#include "worker/dp_model.h"
#include "tests/unit/dp_test.h"

#define MAX_STAGES 4
#define STEPS	   3

struct tol {
	double rel, abs, w_rel, w_abs, loss_rel;
};

static const struct tol emu_tol = { 1e-5, 1e-6, 1e-4, 1e-5, 1e-6 };
static const struct tol cuda_tol = { 1e-3, 1e-5, 1e-3, 1e-4, 1e-4 };

#define MAX_TH	   4096 /* T * H of the test models */
#define MAX_T	   1024
#define MAX_ROUTES 8192 /* T * K * layers * micro-batches */

/* All stages of one model cut on one backend, one context each. */
struct pipe {
	int n;
	struct dp_model_stage *st[MAX_STAGES];
	struct dp_model_ctx *ctx[MAX_STAGES];
	float x[MAX_STAGES + 1][MAX_TH], d[MAX_STAGES + 1][MAX_TH]; /* stage inputs, grads */
	int32_t tok[MAX_T], tgt[MAX_T];
	int routes[MAX_ROUTES]; /* every layer's expert ids of every micro-batch of a step */
	size_t nroutes;
};

/* 0, or the dp_model_stage_new_split_dev error (pipe_free still frees). */
static int pipe_new(const struct dp_model_cfg *cfg, int n, const char *backend, struct pipe *p,
		    struct dp_err *err)
{
	int rc = 0;

	assert_true((size_t)dp_model_cfg_tokens(cfg) * (size_t)cfg->hidden <= MAX_TH);
	assert_true((size_t)dp_model_cfg_tokens(cfg) * (size_t)(cfg->top_k * cfg->layers) *
			    (size_t)cfg->micro_batches <=
		    MAX_ROUTES);
	memset(p, 0, sizeof(*p));
	p->n = n;
	for (int i = 0; i < n && !rc; i++) {
		rc = dp_model_stage_new_split_dev(cfg, n, i, backend, 0, &p->st[i], err);
		if (!rc)
			rc = dp_model_ctx_new(p->st[i], &p->ctx[i], err);
	}
	return rc;
}

static void pipe_free(struct pipe *p)
{
	for (int i = 0; i < p->n; i++) {
		dp_model_ctx_free(p->ctx[i]);
		dp_model_stage_free(p->st[i]);
	}
}

/* Zero the grads, then each micro-batch of step @step through the stages
 * and back (@split: backward_input then backward_weight).  Routes kept. */
static double pipe_grads(struct pipe *p, long step, int split)
{
	const struct dp_model_cfg *cfg = dp_model_stage_cfg(p->st[0]);
	struct dp_err err = { 0 };
	double total = 0;

	p->nroutes = 0;
	for (int i = 0; i < p->n; i++)
		dp_model_stage_zero_grad(p->st[i]);
	for (int m = 0; m < cfg->micro_batches; m++) {
		dp_model_batch(cfg, step, m, p->tok, p->tgt);
		for (int i = 0; i < p->n; i++) {
			struct dp_model_io io = { .tokens = p->tok,
						  .targets = p->tgt,
						  .x = p->x[i] };
			struct dp_model_stage *st = p->st[i];
			double loss = 0;

			if (dp_model_forward(st, p->ctx[i], &io, p->x[i + 1], &loss, &err))
				fail_msg("%s forward: %s", dp_model_stage_backend(st), err.msg);
			total += loss;
			for (int l = dp_model_stage_first(st);
			     l < dp_model_stage_first(st) + dp_model_stage_count(st); l++) {
				const struct dp_model_route *r = dp_model_ctx_route(p->ctx[i], l);

				assert_non_null(r);
				memcpy(p->routes + p->nroutes, r->expert,
				       (size_t)(r->tokens * r->top_k) * sizeof(int));
				p->nroutes += (size_t)(r->tokens * r->top_k);
			}
		}
		for (int i = p->n - 1; i >= 0; i--) {
			int rc = split ? dp_model_backward_input(p->st[i], p->ctx[i], p->d[i + 1],
								 p->d[i], &err)
				       : dp_model_backward(p->st[i], p->ctx[i], p->d[i + 1],
							   p->d[i], &err);

			if (!rc && split)
				rc = dp_model_backward_weight(p->st[i], p->ctx[i], &err);
			if (rc)
				fail_msg("%s backward: %s", dp_model_stage_backend(p->st[i]),
					 err.msg);
		}
	}
	return total;
}

/* Worst |a - b| / (rel m + abs) over the tensors of stage @i (w or g), m
 * the largest |element| of the reference's tensor; fails above 1. */
static double compare_stage(struct dp_model_stage *ref, struct dp_model_stage *dev, int grads,
			    double rel, double abs_tol, double *worst_abs)
{
	double worst = 0;

	assert_int_equal(dp_model_stage_ntensors(ref), dp_model_stage_ntensors(dev));
	for (int i = 0; i < dp_model_stage_ntensors(ref); i++) {
		struct dp_model_tensor a, b;
		double m = 0;

		assert_int_equal(dp_model_stage_tensor(ref, i, &a), 0);
		assert_int_equal(dp_model_stage_tensor(dev, i, &b), 0);
		assert_string_equal(a.name, b.name);
		assert_int_equal(a.n, b.n);
		for (size_t j = 0; j < a.n; j++)
			m = fmax(m, fabs((double)(grads ? a.g : a.w)[j]));
		for (size_t j = 0; j < a.n; j++) {
			const double x = (grads ? a.g : a.w)[j], y = (grads ? b.g : b.w)[j];
			const double q = fabs(x - y) / (rel * m + abs_tol);

			if (fabs(x - y) > *worst_abs)
				*worst_abs = fabs(x - y);
			if (q > worst)
				worst = q;
			if (q > 1.0)
				fail_msg("%s %s[%zu]: %s %.9g, %s %.9g (tensor max %.3g)",
					 grads ? "grad" : "value", a.name, j,
					 dp_model_stage_backend(ref), x,
					 dp_model_stage_backend(dev), y, m);
		}
	}
	return worst;
}

/* The whole comparison on @backend for a cut into @nstages; 0, or the
 * stage creation error (-ENOSYS, -ENODEV) for the caller to skip on. */
static int compare_backend(const struct dp_model_cfg *cfg, int nstages, const char *backend,
			   const struct tol *tol, struct dp_err *err)
{
	static struct pipe ref, dev;
	double worst_g = 0, worst_w = 0, abs_g = 0, abs_w = 0;
	int rc;

	assert_int_equal(pipe_new(cfg, nstages, "cpu", &ref, err), 0);
	rc = pipe_new(cfg, nstages, backend, &dev, err);
	if (rc) {
		pipe_free(&dev);
		pipe_free(&ref);
		return rc;
	}
	for (int split = 0; split < 2; split++) {
		const double la = pipe_grads(&ref, 0, split), lb = pipe_grads(&dev, 0, split);
		int same = ref.nroutes == dev.nroutes &&
			   memcmp(ref.routes, dev.routes, ref.nroutes * sizeof(int)) == 0;

		assert_true(fabs(la - lb) <= tol->loss_rel * fabs(la));
		if (strcmp(backend, "emu") == 0)
			assert_true(same);
		if (!same) {
			print_message("%s: a near-tie routed a token differently: grads not "
				      "compared\n",
				      backend);
			continue;
		}
		for (int i = 0; i < nstages; i++)
			worst_g = fmax(worst_g, compare_stage(ref.st[i], dev.st[i], 1, tol->rel,
							      tol->abs, &abs_g));
	}
	for (long k = 0; k < STEPS; k++) {
		const double la = pipe_grads(&ref, k, 1), lb = pipe_grads(&dev, k, 1);

		assert_true(fabs(la - lb) <= tol->loss_rel * fabs(la));
		for (int i = 0; i < nstages; i++) {
			dp_model_stage_step(ref.st[i]);
			dp_model_stage_step(dev.st[i]);
		}
	}
	for (int i = 0; i < nstages; i++)
		worst_w = fmax(worst_w, compare_stage(ref.st[i], dev.st[i], 0, tol->w_rel,
						      tol->w_abs, &abs_w));
	print_message("%s vs cpu, %d stage(s): worst grad %.3g of the bound (|d| %.3g), "
		      "values after %d Adam steps %.3g (|d| %.3g)\n",
		      backend, nstages, worst_g, abs_g, STEPS, worst_w, abs_w);
	pipe_free(&dev);
	pipe_free(&ref);
	return 0;
}

static void emu_matches_cpu(void **state)
{
	struct dp_model_cfg cfg;
	struct dp_err err = { 0 };

	(void)state;
	dp_model_cfg_default(&cfg);
	for (int n = 1; n <= 2; n++)
		if (compare_backend(&cfg, n, "emu", &emu_tol, &err))
			fail_msg("%s", err.msg);
	/* uneven shapes: odd sizes, a stage with no layer (3 stages, 2 layers) */
	cfg.layers = 2;
	cfg.hidden = 12;
	cfg.ffn_hidden = 20;
	cfg.experts = 6;
	cfg.groups = 3;
	cfg.vocab = 13;
	cfg.seq_len = 5;
	cfg.seqs = 3;
	cfg.micro_batches = 2;
	if (compare_backend(&cfg, 3, "emu", &emu_tol, &err))
		fail_msg("%s", err.msg);
}

static void cuda_matches_cpu(void **state)
{
	struct dp_model_cfg cfg;
	struct dp_err err = { 0 };
	int rc;

	(void)state;
	dp_model_cfg_default(&cfg);
	rc = compare_backend(&cfg, 2, "cuda", &cuda_tol, &err);
	if (rc == -ENOSYS || rc == -ENODEV) {
		print_message("skip: %s\n", err.msg);
		skip();
	}
	if (rc)
		fail_msg("%s", err.msg);
}

/* The expert calls on their own, as an EP rank runs them: rows of two
 * micro-batches in one call, and an expert's W alone. */
static void emu_expert_calls_match_cpu(void **state)
{
	struct dp_model_cfg cfg;
	struct dp_model_stage *st[2] = { NULL, NULL };
	struct dp_model_ctx *ctx[2] = { NULL, NULL };
	struct dp_model_tensor a, b;
	struct dp_err err = { 0 };
	enum { n = 37, H = 32 };
	static float in[n * H], out[2][n * H], din[2][n * H];

	(void)state;
	dp_model_cfg_default(&cfg);
	for (int i = 0; i < n * H; i++)
		in[i] = (float)((i * 7919) % 97) / 97.0f - 0.5f;
	for (int k = 0; k < 2; k++) {
		assert_int_equal(dp_model_stage_new_split_dev(&cfg, 1, 0, k ? "emu" : "cpu", 0,
							      &st[k], &err),
				 0);
		assert_int_equal(dp_model_ctx_new(st[k], &ctx[k], &err), 0);
		assert_int_equal(dp_model_expert_forward(st[k], ctx[k], 2, 5, n, in, out[k], &err),
				 0);
		assert_int_equal(dp_model_expert_forward(st[k], ctx[k], 2, 5, n, in, out[k], &err),
				 0); /* replaces the rows */
		assert_int_equal(
			dp_model_expert_backward_input(st[k], ctx[k], 2, 5, n, in, din[k], &err),
			0);
		assert_int_equal(dp_model_expert_forward(st[k], ctx[k], 2, 5, n, in, out[k], &err),
				 -EBUSY);
		assert_int_equal(dp_model_expert_backward_weight(st[k], ctx[k], 2, 5, &err), 0);
		assert_int_equal(dp_model_expert_backward_weight(st[k], ctx[k], 2, 5, &err),
				 -EINVAL);
	}
	for (int i = 0; i < n * H; i++) {
		assert_true(fabsf(out[0][i] - out[1][i]) <= 1e-6f);
		assert_true(fabsf(din[0][i] - din[1][i]) <= 1e-6f);
	}
	for (int i = 0; i < dp_model_stage_ntensors(st[0]); i++) {
		assert_int_equal(dp_model_stage_tensor(st[0], i, &a), 0);
		assert_int_equal(dp_model_stage_tensor(st[1], i, &b), 0);
		for (size_t j = 0; j < a.n; j++)
			assert_true(fabsf(a.g[j] - b.g[j]) <= 1e-5f * (1.0f + fabsf(a.g[j])));
		if (a.layer == 2 && a.expert == 5)
			assert_true(a.g[0] != 0.0f || a.g[1] != 0.0f);
	}
	for (int k = 0; k < 2; k++) {
		dp_model_ctx_free(ctx[k]);
		dp_model_stage_free(st[k]);
	}
}

/* One micro-batch through a whole-model stage by the component calls, as
 * an EP executor runs them; with @dev_io the packed rows stay in device
 * buffers (dp_model_stage_dev_io).  *loss and the stage's gradients are
 * the result.  0 or the first error. */
static int component_pass(struct dp_model_stage *st, int dev_io, double *loss, struct dp_err *err)
{
	const struct dp_model_cfg *cfg = dp_model_stage_cfg(st);
	const size_t T = (size_t)dp_model_cfg_tokens(cfg), H = (size_t)cfg->hidden;
	const size_t bytes = T * (size_t)cfg->top_k * H * sizeof(float);
	struct dp_model_ctx *ctx = NULL;
	float *pk = NULL, *out = NULL, *din = NULL;
	static int32_t tok[MAX_T], tgt[MAX_T];
	struct dp_model_io io = { .tokens = tok, .targets = tgt };
	int rc;

	dp_model_batch(cfg, 0, 0, tok, tgt);
	rc = dp_model_ctx_new(st, &ctx, err);
	if (!rc && dev_io) {
		if (!(rc = dp_model_stage_dev_io(st, 1, err)) &&
		    !(rc = dp_model_stage_dev_alloc(st, bytes, (void **)&pk, err)) &&
		    !(rc = dp_model_stage_dev_alloc(st, bytes, (void **)&out, err)))
			rc = dp_model_stage_dev_alloc(st, bytes, (void **)&din, err);
	} else if (!rc) {
		pk = malloc(bytes);
		out = malloc(bytes);
		din = malloc(bytes);
		rc = pk && out && din ? 0 : -ENOMEM;
	}
	dp_model_stage_zero_grad(st);
	if (!rc)
		rc = dp_model_forward_begin(st, ctx, &io, err);
	for (int l = 0; l < cfg->layers && !rc; l++) {
		const struct dp_model_route *r;

		if ((rc = dp_model_attn_forward(st, ctx, l, err)) ||
		    (rc = dp_model_dispatch(st, ctx, l, pk, err)))
			break;
		r = dp_model_ctx_route(ctx, l);
		for (int e = 0; e < cfg->experts && !rc; e++) {
			size_t o = (size_t)r->offset[e] * H;

			rc = dp_model_expert_forward(st, ctx, l, e, r->offset[e + 1] - r->offset[e],
						     pk + o, out + o, err);
		}
		if (!rc)
			rc = dp_model_combine_forward(st, ctx, l, out, err);
	}
	if (!rc)
		rc = dp_model_forward_end(st, ctx, NULL, loss, err);
	if (!rc)
		rc = dp_model_backward_begin(st, ctx, NULL, err);
	for (int l = cfg->layers - 1; l >= 0 && !rc; l--) {
		const struct dp_model_route *r = dp_model_ctx_route(ctx, l);

		rc = dp_model_combine_backward(st, ctx, l, pk, err);
		for (int e = 0; e < cfg->experts && !rc; e++) {
			size_t o = (size_t)r->offset[e] * H;

			rc = dp_model_expert_backward_input(st, ctx, l, e,
							    r->offset[e + 1] - r->offset[e], pk + o,
							    din + o, err);
		}
		if (!rc)
			rc = dp_model_attn_backward(st, ctx, l, din, err);
	}
	if (!rc)
		rc = dp_model_backward_end(st, ctx, NULL, err);
	if (!rc)
		rc = dp_model_backward_weight(st, ctx, err);
	if (dev_io) {
		dp_model_stage_dev_free(st, pk);
		dp_model_stage_dev_free(st, out);
		dp_model_stage_dev_free(st, din);
	} else {
		free(pk);
		free(out);
		free(din);
	}
	dp_model_ctx_free(ctx);
	return rc;
}

/* Packed rows in device memory give the same loss and gradients, bit for
 * bit, as packed rows copied through the host: only the copies change.
 * 0, or the error of a stage call. */
static int dev_io_matches(const char *backend, struct dp_err *err)
{
	struct dp_model_cfg cfg;
	struct dp_model_stage *st[2] = { NULL, NULL };
	double loss[2] = { 0, 0 };
	int rc = 0;

	dp_model_cfg_default(&cfg);
	cfg.micro_batches = 1;
	for (int k = 0; k < 2 && !rc; k++) {
		rc = dp_model_stage_new_split_dev(&cfg, 1, 0, backend, 0, &st[k], err);
		if (!rc)
			rc = component_pass(st[k], k, &loss[k], err);
	}
	if (!rc) {
		struct dp_model_flat a, b;

		assert_true(loss[0] > 0.5);
		assert_true(loss[0] == loss[1]);
		dp_model_stage_flat(st[0], &a);
		dp_model_stage_flat(st[1], &b);
		assert_int_equal(a.n, b.n);
		assert_memory_equal(a.g, b.g, a.n * sizeof(float));
		assert_true(a.g[0] != 0.0f || a.g[a.n - 1] != 0.0f);
	}
	dp_model_stage_free(st[0]);
	dp_model_stage_free(st[1]);
	return rc;
}

static void emu_dev_io_matches_host_io(void **state)
{
	struct dp_model_cfg cfg;
	struct dp_model_stage *st = NULL;
	struct dp_err err = { 0 };
	void *p = NULL;

	(void)state;
	if (dev_io_matches("emu", &err))
		fail_msg("%s", err.msg);
	/* a cpu stage has no device memory to give */
	dp_model_cfg_default(&cfg);
	assert_int_equal(dp_model_stage_new_split(&cfg, 1, 0, &st, &err), 0);
	assert_int_equal(dp_model_stage_dev_io(st, 1, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "cpu stage"));
	assert_int_equal(dp_model_stage_dev_alloc(st, 64, &p, &err), -EINVAL);
	assert_null(p);
	dp_model_stage_free(st);
}

static void cuda_dev_io_matches_host_io(void **state)
{
	struct dp_err err = { 0 };
	int rc;

	(void)state;
	rc = dev_io_matches("cuda", &err);
	if (rc == -ENOSYS || rc == -ENODEV) {
		print_message("skip: %s\n", err.msg);
		skip();
	}
	if (rc)
		fail_msg("%s", err.msg);
}

/* Host changes to the flat arrays reach the device after the commit (as the
 * executor's all-reduce and a checkpoint load do), and not before. */
static void flat_commit_uploads_the_mirror(void **state)
{
	struct dp_model_cfg cfg;
	static struct pipe cpu, emu;
	struct dp_err err = { 0 };
	struct dp_model_flat fc, fe;
	double la, lb, worst = 0, abs_w = 0;

	(void)state;
	dp_model_cfg_default(&cfg);
	cfg.layers = 2;
	assert_int_equal(pipe_new(&cfg, 1, "cpu", &cpu, &err), 0);
	assert_int_equal(pipe_new(&cfg, 1, "emu", &emu, &err), 0);
	la = pipe_grads(&cpu, 0, 0);
	lb = pipe_grads(&emu, 0, 0);
	assert_true(fabs(la - lb) <= 1e-6 * la);
	dp_model_stage_flat(cpu.st[0], &fc);
	dp_model_stage_flat(emu.st[0], &fe);
	assert_int_equal(fc.n, fe.n);
	for (size_t i = 0; i < fc.n; i++) { /* e.g. a peer's gradients added */
		fc.g[i] *= 2.0f;
		fe.g[i] *= 2.0f;
		fc.w[i] += 0.01f;
		fe.w[i] += 0.01f;
	}
	*fc.adam_step = *fe.adam_step = 5;
	assert_int_equal(dp_model_stage_flat_commit(cpu.st[0], &err), 0);
	assert_int_equal(dp_model_stage_flat_commit(emu.st[0], &err), 0);
	dp_model_stage_step(cpu.st[0]);
	dp_model_stage_step(emu.st[0]);
	worst = compare_stage(cpu.st[0], emu.st[0], 0, 1e-5, 1e-6, &abs_w);
	assert_true(worst <= 1.0);
	la = pipe_grads(&cpu, 1, 0);
	lb = pipe_grads(&emu, 1, 0);
	assert_true(fabs(la - lb) <= 1e-6 * la);
	/* without the commit, writes to the mirror are lost at the next download */
	dp_model_stage_flat(emu.st[0], &fe);
	fe.w[0] += 1.0f;
	dp_model_stage_step(emu.st[0]);
	dp_model_stage_step(cpu.st[0]);
	dp_model_stage_flat(emu.st[0], &fe);
	dp_model_stage_flat(cpu.st[0], &fc);
	assert_true(fabsf(fe.w[0] - fc.w[0]) < 0.5f);
	pipe_free(&emu);
	pipe_free(&cpu);
}

static void bad_backends_are_named(void **state)
{
	struct dp_model_cfg cfg;
	struct dp_model_stage *st = NULL;
	struct dp_err err = { 0 };
	int rc;

	(void)state;
	dp_model_cfg_default(&cfg);
	assert_int_equal(dp_model_stage_new_split_dev(&cfg, 1, 0, "tpu", 0, &st, &err), -EINVAL);
	assert_null(st);
	assert_non_null(strstr(err.msg, "'tpu'"));
	assert_int_equal(dp_dev_backend_check("tpu", &err), -EINVAL);
	assert_int_equal(dp_dev_backend_check(NULL, &err), 0);
	assert_int_equal(dp_dev_backend_check("cuda", &err), 0);
	assert_int_equal(dp_model_stage_new_split_dev(&cfg, 1, 0, "emu", 3, &st, &err), -ENODEV);
	assert_null(st);
	rc = dp_model_stage_new_split_dev(&cfg, 1, 0, "cuda", 0, &st, &err);
#ifdef DP_HAVE_CUDA
	if (rc == 0) {
		assert_string_equal(dp_model_stage_backend(st), "cuda");
		dp_model_stage_free(st);
	} else {
		assert_int_equal(rc, -ENODEV);
		assert_non_null(strstr(err.msg, "no CUDA device"));
	}
#else
	assert_int_equal(rc, -ENOSYS);
	assert_non_null(strstr(err.msg, "not built with CUDA"));
#endif
	assert_int_equal(dp_model_stage_new_split_dev(&cfg, 1, 0, NULL, 0, &st, &err), 0);
	assert_string_equal(dp_model_stage_backend(st), "cpu");
	dp_model_stage_free(st);
}

/* Every backend table has its ops; names are unique. */
static void backend_tables_are_complete(void **state)
{
	const struct dp_dev_ops *const *b = dp_dev_backends();
	int n = 0;

	(void)state;
	for (int i = 0; b[i]; i++, n++) {
		assert_non_null(b[i]->name);
		assert_true(b[i]->open && b[i]->close && b[i]->alloc && b[i]->free && b[i]->h2d &&
			    b[i]->d2h && b[i]->gemm && b[i]->kernel && b[i]->sync);
		for (int j = 0; j < i; j++)
			assert_string_not_equal(b[i]->name, b[j]->name);
	}
	assert_int_equal(n, 2);
}

/* The emulator's GEMM keeps cuBLAS's column-major contract: op(A), op(B),
 * leading dimensions larger than the rows, beta 0 not reading C. */
static void emu_gemm_is_column_major(void **state)
{
	struct dp_dev *d = NULL;
	/* A: 2 x 3 column-major with lda 3 (a padding row) */
	const float A[] = { 1, 2, 99, 3, 4, 99, 5, 6, 99 };
	const float B[] = { 1, 0, 2, 0, 1, 1 }; /* 3 x 2, ldb 3 */
	float C[4] = { NAN, NAN, NAN, NAN }, Ct[4] = { 1, 1, 1, 1 };
	struct dp_err err = { 0 };

	(void)state;
	assert_int_equal(dp_dev_emu.open(0, &d, &err), 0);
	/* C = A B: [1 3 5; 2 4 6] [1 0; 0 1; 2 1] = [11 8; 14 10] */
	assert_int_equal(dp_dev_emu.gemm(d, 0, 0, 2, 2, 3, 1.0f, A, 3, B, 3, 0.0f, C, 2, &err), 0);
	assert_true(C[0] == 11 && C[1] == 14 && C[2] == 8 && C[3] == 10);
	/* Ct = 2 B^T A^T + Ct = 2 (A B)^T + 1 */
	assert_int_equal(dp_dev_emu.gemm(d, 1, 1, 2, 2, 3, 2.0f, B, 3, A, 3, 1.0f, Ct, 2, &err), 0);
	assert_true(Ct[0] == 23 && Ct[1] == 17 && Ct[2] == 29 && Ct[3] == 21);
	assert_int_equal(dp_dev_emu.gemm(d, 0, 0, 2, 2, 3, 1.0f, A, 1, B, 3, 0.0f, C, 2, &err),
			 -EINVAL);
	dp_dev_emu.close(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(backend_tables_are_complete),
		cmocka_unit_test(bad_backends_are_named),
		cmocka_unit_test(emu_gemm_is_column_major),
		cmocka_unit_test(emu_matches_cpu),
		cmocka_unit_test(emu_expert_calls_match_cpu),
		cmocka_unit_test(emu_dev_io_matches_host_io),
		cmocka_unit_test(cuda_dev_io_matches_host_io),
		cmocka_unit_test(flat_commit_uploads_the_mirror),
		cmocka_unit_test(cuda_matches_cpu),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
