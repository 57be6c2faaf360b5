/* tests/unit/test_moe_gpu.c - the model's CUDA backend skeleton: without
 * CUDA it says so; with CUDA but no device it says that (and the GPU test
 * skips, printing why); on a GPU one MoE layer's experts must match the CPU
 * model's dp_model_expert_forward to float rounding (cuBLAS sums in its own
 * order): |gpu - cpu| <= 1e-4 * max|cpu| + 1e-5 per expert output. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker/dp_moe_gpu.h"
#include "tests/unit/dp_test.h"

static void small_cfg(struct dp_model_cfg *m)
{
	dp_model_cfg_default(m);
	m->layers = 1;
	m->hidden = 48;
	m->ffn_hidden = 96;
	m->experts = 8;
	m->seqs = 8;
	m->seq_len = 16;
}

static void without_cuda_says_so(void **state)
{
	struct dp_model_cfg mc;
	struct dp_model_stage *st = NULL;
	struct dp_err err = { 0 };
	int off[9] = { 0 };
	float x = 0, y = 0;

	(void)state;
	if (dp_moe_gpu_built())
		skip();
	small_cfg(&mc);
	assert_int_equal(dp_model_stage_new_split(&mc, 1, 0, &st, &err), 0);
	assert_int_equal(dp_moe_gpu_experts_forward(st, 0, off, &x, &y, 0, NULL, &err), -ENOSYS);
	assert_non_null(strstr(err.msg, "built without CUDA"));
	dp_model_stage_free(st);
}

static void gpu_experts_match_the_cpu_model(void **state)
{
	struct dp_model_cfg mc;
	struct dp_model_stage *st = NULL;
	struct dp_model_ctx *ctx = NULL;
	struct dp_err err = { 0 };
	struct dp_moe_gpu_times tm = { 0 };
	const struct dp_model_route *r;
	struct dp_model_io io = { 0 };
	int32_t *tok, *tgt;
	float *packed, *cpu, *gpu;
	size_t rows, H;
	int rc;

	(void)state;
	if (!dp_moe_gpu_built())
		skip();
	small_cfg(&mc);
	H = (size_t)mc.hidden;
	tok = calloc((size_t)dp_model_cfg_tokens(&mc), sizeof(*tok));
	tgt = calloc((size_t)dp_model_cfg_tokens(&mc), sizeof(*tgt));
	assert_non_null(tok);
	assert_non_null(tgt);
	dp_model_batch(&mc, 0, 0, tok, tgt);
	io.tokens = tok;
	io.targets = tgt;
	assert_int_equal(dp_model_stage_new_split(&mc, 1, 0, &st, &err), 0);
	assert_int_equal(dp_model_ctx_new(st, &ctx, &err), 0);
	assert_int_equal(dp_model_forward_begin(st, ctx, &io, &err), 0);
	assert_int_equal(dp_model_attn_forward(st, ctx, 0, &err), 0);
	r = dp_model_ctx_route(ctx, 0);
	assert_non_null(r);
	rows = (size_t)r->tokens * (size_t)r->top_k;
	packed = malloc(rows * H * sizeof(float));
	cpu = calloc(rows * H, sizeof(float));
	gpu = calloc(rows * H, sizeof(float));
	assert_true(packed && cpu && gpu);
	assert_int_equal(dp_model_dispatch(st, ctx, 0, packed, &err), 0);
	for (int e = 0; e < r->experts; e++)
		assert_int_equal(dp_model_expert_forward(st, ctx, 0, e,
							 r->offset[e + 1] - r->offset[e],
							 packed + (size_t)r->offset[e] * H,
							 cpu + (size_t)r->offset[e] * H, &err),
				 0);
	rc = dp_moe_gpu_experts_forward(st, 0, r->offset, packed, gpu, 0, &tm, &err);
	if (rc == -ENODEV) {
		printf("# skip: %s (the device machine runs this test)\n", err.msg);
		assert_non_null(strstr(err.msg, "moe-gpu: "));
	} else {
		double mx = 0, worst = 0;

		assert_int_equal(rc, 0);
		for (size_t i = 0; i < rows * H; i++)
			mx = fmax(mx, fabs((double)cpu[i]));
		for (size_t i = 0; i < rows * H; i++) {
			double d = fabs((double)gpu[i] - (double)cpu[i]);

			worst = fmax(worst, d);
			if (d > 1e-4 * mx + 1e-5)
				fail_msg("row %zu col %zu: gpu %.9g cpu %.9g", i / H, i % H, gpu[i],
					 cpu[i]);
		}
		printf("# gpu experts: %zu rows, worst diff %.3g of max %.3g, %.3f ms total, "
		       "%.3f ms compute\n",
		       rows, worst, mx, (double)tm.total, (double)tm.compute);
		/* a bad layer or device is refused */
		assert_int_equal(
			dp_moe_gpu_experts_forward(st, 1, r->offset, packed, gpu, 0, NULL, &err),
			-EINVAL);
		assert_int_equal(
			dp_moe_gpu_experts_forward(st, 0, r->offset, packed, gpu, 999, NULL, &err),
			-EINVAL);
	}
	free(packed);
	free(cpu);
	free(gpu);
	free(tok);
	free(tgt);
	dp_model_ctx_free(ctx);
	dp_model_stage_free(st);
	if (rc == -ENODEV)
		skip();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(without_cuda_says_so),
		cmocka_unit_test(gpu_experts_match_the_cpu_model),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
