/* worker/moe_gpu_cuda.c - the model's CUDA backend (skeleton): one MoE
 * layer's routed experts with cuBLAS on two streams.
 *
 * Streams and events: the communication stream first copies all expert
 * weights and then every expert's rows in (recording "in" event e after
 * expert e's rows); the compute stream waits for "in" e, runs
 * U = X W1 (sgemm), Z = silu(U), Y = Z W2 (sgemm) and records "out" e; the
 * communication stream, after the last copy in, waits for "out" e and
 * copies expert e's results out.  So expert e+1's rows travel while expert
 * e computes, and expert e's results travel while e+1 computes.
 *
 * Row-major [in][out] matrices seen by column-major cuBLAS are their
 * transposes: y = x W (rows x out) is Y^T = W^T X^T, i.e.
 * sgemm(N, N, m = out, n = rows, k = in, A = W (ld out), B = X (ld in)). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "worker/dp_moe_gpu.h"

int dp_moe_gpu_silu_launch(const float *u, float *z, long n, cudaStream_t s);

int dp_moe_gpu_built(void)
{
	return 1;
}

struct gpu_run {
	cudaStream_t comp, comm;
	cublasHandle_t blas;
	cudaEvent_t *ev_in, *ev_out, t0, t1, c0, c1;
	int nev;
	float *w1, *w2, *x, *u, *y; /* device */
};

static int cuda_err(struct dp_err *err, const char *what, cudaError_t ce)
{
	return dp_err_set(err, EIO, "moe-gpu: %s: %s", what, cudaGetErrorString(ce));
}

static void run_release(struct gpu_run *g)
{
	if (g->comm)
		(void)cudaStreamSynchronize(g->comm);
	if (g->comp)
		(void)cudaStreamSynchronize(g->comp);
	for (int i = 0; i < g->nev; i++) {
		if (g->ev_in && g->ev_in[i])
			(void)cudaEventDestroy(g->ev_in[i]);
		if (g->ev_out && g->ev_out[i])
			(void)cudaEventDestroy(g->ev_out[i]);
	}
	free(g->ev_in);
	free(g->ev_out);
	if (g->t0)
		(void)cudaEventDestroy(g->t0);
	if (g->t1)
		(void)cudaEventDestroy(g->t1);
	if (g->c0)
		(void)cudaEventDestroy(g->c0);
	if (g->c1)
		(void)cudaEventDestroy(g->c1);
	if (g->blas)
		(void)cublasDestroy(g->blas);
	(void)cudaFree(g->w1);
	(void)cudaFree(g->w2);
	(void)cudaFree(g->x);
	(void)cudaFree(g->u);
	(void)cudaFree(g->y);
	if (g->comp)
		(void)cudaStreamDestroy(g->comp);
	if (g->comm)
		(void)cudaStreamDestroy(g->comm);
}

/* Host pointers of expert @e's W1 and W2 in layer @layer of @st. */
static int expert_weights(struct dp_model_stage *st, int layer, int e, const float **w1,
			  const float **w2)
{
	int found = 0;

	for (int i = 0; i < dp_model_stage_ntensors(st); i++) {
		struct dp_model_tensor t;
		size_t len;

		if (dp_model_stage_tensor(st, i, &t) || t.layer != layer || t.expert != e)
			continue;
		len = strlen(t.name);
		if (len > 3 && strcmp(t.name + len - 3, ".w1") == 0) {
			*w1 = t.w;
			found |= 1;
		} else if (len > 3 && strcmp(t.name + len - 3, ".w2") == 0) {
			*w2 = t.w;
			found |= 2;
		}
	}
	return found == 3 ? 0 : -EINVAL;
}

int dp_moe_gpu_experts_forward(struct dp_model_stage *st, int layer, const int *offset,
			       const float *in, float *out, int dev, struct dp_moe_gpu_times *times,
			       struct dp_err *err)
{
	const struct dp_model_cfg *cfg = dp_model_stage_cfg(st);
	const int E = cfg->experts, H = cfg->hidden, F = cfg->ffn_hidden;
	const size_t hf = (size_t)H * (size_t)F, fb = sizeof(float);
	const float one = 1.0f, zero = 0.0f;
	struct gpu_run g;
	cudaError_t ce = cudaSuccess;
	cublasStatus_t bs;
	size_t rows;
	int count = 0, rc = 0;

	memset(&g, 0, sizeof(g));
	if (layer < dp_model_stage_first(st) ||
	    layer >= dp_model_stage_first(st) + dp_model_stage_count(st))
		return dp_err_set(err, EINVAL, "moe-gpu: layer %d is not in this stage", layer);
	if (offset[0] != 0)
		return dp_err_set(err, EINVAL, "moe-gpu: offsets must start at 0");
	for (int e = 0; e < E; e++)
		if (offset[e + 1] < offset[e])
			return dp_err_set(err, EINVAL, "moe-gpu: offsets of expert %d go back", e);
	rows = (size_t)offset[E];
	ce = cudaGetDeviceCount(&count);
	if (ce == cudaErrorNoDevice || ce == cudaErrorInsufficientDriver ||
	    (ce == cudaSuccess && count == 0))
		return dp_err_set(err, ENODEV, "moe-gpu: no CUDA device on this machine");
	if (ce != cudaSuccess)
		return dp_err_set(err, ENODEV, "moe-gpu: CUDA unavailable: %s",
				  cudaGetErrorString(ce));
	if (dev < 0 || dev >= count)
		return dp_err_set(err, EINVAL, "moe-gpu: no device %d (%d devices)", dev, count);
	g.ev_in = calloc((size_t)E, sizeof(cudaEvent_t));
	g.ev_out = calloc((size_t)E, sizeof(cudaEvent_t));
	if (!g.ev_in || !g.ev_out) {
		run_release(&g);
		return dp_err_set(err, ENOMEM, "moe-gpu: out of memory");
	}
	ce = cudaSetDevice(dev);
	if (ce == cudaSuccess)
		ce = cudaStreamCreateWithFlags(&g.comp, cudaStreamNonBlocking);
	if (ce == cudaSuccess)
		ce = cudaStreamCreateWithFlags(&g.comm, cudaStreamNonBlocking);
	for (; ce == cudaSuccess && g.nev < E; g.nev++) {
		ce = cudaEventCreateWithFlags(&g.ev_in[g.nev], cudaEventDisableTiming);
		if (ce == cudaSuccess)
			ce = cudaEventCreateWithFlags(&g.ev_out[g.nev], cudaEventDisableTiming);
	}
	if (ce == cudaSuccess)
		ce = cudaEventCreate(&g.t0);
	if (ce == cudaSuccess)
		ce = cudaEventCreate(&g.t1);
	if (ce == cudaSuccess)
		ce = cudaEventCreate(&g.c0);
	if (ce == cudaSuccess)
		ce = cudaEventCreate(&g.c1);
	if (ce == cudaSuccess)
		ce = cudaMalloc((void **)&g.w1, (size_t)E * hf * fb);
	if (ce == cudaSuccess)
		ce = cudaMalloc((void **)&g.w2, (size_t)E * hf * fb);
	if (ce == cudaSuccess)
		ce = cudaMalloc((void **)&g.x, (rows ? rows : 1) * (size_t)H * fb);
	if (ce == cudaSuccess)
		ce = cudaMalloc((void **)&g.u, (rows ? rows : 1) * (size_t)F * fb);
	if (ce == cudaSuccess)
		ce = cudaMalloc((void **)&g.y, (rows ? rows : 1) * (size_t)H * fb);
	if (ce != cudaSuccess) {
		rc = cuda_err(err, "setup", ce);
		goto out;
	}
	bs = cublasCreate(&g.blas);
	if (bs == CUBLAS_STATUS_SUCCESS)
		bs = cublasSetStream(g.blas, g.comp);
	if (bs != CUBLAS_STATUS_SUCCESS) {
		rc = dp_err_set(err, EIO, "moe-gpu: cuBLAS setup failed (status %d)", (int)bs);
		goto out;
	}
	/* communication stream: weights, then each expert's rows in */
	ce = cudaEventRecord(g.t0, g.comm);
	for (int e = 0; ce == cudaSuccess && e < E; e++) {
		const float *w1 = NULL, *w2 = NULL;

		if (expert_weights(st, layer, e, &w1, &w2)) {
			rc = dp_err_set(err, EINVAL, "moe-gpu: layer %d has no expert %d", layer,
					e);
			goto out;
		}
		ce = cudaMemcpyAsync(g.w1 + (size_t)e * hf, w1, hf * fb, cudaMemcpyHostToDevice,
				     g.comm);
		if (ce == cudaSuccess)
			ce = cudaMemcpyAsync(g.w2 + (size_t)e * hf, w2, hf * fb,
					     cudaMemcpyHostToDevice, g.comm);
	}
	for (int e = 0; ce == cudaSuccess && e < E; e++) {
		const size_t off = (size_t)offset[e] * (size_t)H,
			     n = (size_t)(offset[e + 1] - offset[e]);

		if (n)
			ce = cudaMemcpyAsync(g.x + off, in + off, n * (size_t)H * fb,
					     cudaMemcpyHostToDevice, g.comm);
		if (ce == cudaSuccess)
			ce = cudaEventRecord(g.ev_in[e], g.comm);
	}
	/* compute stream: each expert once its rows are in */
	if (ce == cudaSuccess)
		ce = cudaEventRecord(g.c0, g.comp);
	for (int e = 0; ce == cudaSuccess && e < E; e++) {
		const int n = offset[e + 1] - offset[e];
		float *x = g.x + (size_t)offset[e] * (size_t)H;
		float *u = g.u + (size_t)offset[e] * (size_t)F;
		float *y = g.y + (size_t)offset[e] * (size_t)H;

		ce = cudaStreamWaitEvent(g.comp, g.ev_in[e], 0);
		if (ce == cudaSuccess && n) {
			bs = cublasSgemm(g.blas, CUBLAS_OP_N, CUBLAS_OP_N, F, n, H, &one,
					 g.w1 + (size_t)e * hf, F, x, H, &zero, u, F);
			if (bs == CUBLAS_STATUS_SUCCESS)
				ce = (cudaError_t)dp_moe_gpu_silu_launch(u, u, (long)n * F, g.comp);
			if (bs == CUBLAS_STATUS_SUCCESS && ce == cudaSuccess)
				bs = cublasSgemm(g.blas, CUBLAS_OP_N, CUBLAS_OP_N, H, n, F, &one,
						 g.w2 + (size_t)e * hf, H, u, F, &zero, y, H);
			if (bs != CUBLAS_STATUS_SUCCESS) {
				rc = dp_err_set(err, EIO,
						"moe-gpu: sgemm of expert %d failed (status %d)", e,
						(int)bs);
				goto out;
			}
		}
		if (ce == cudaSuccess)
			ce = cudaEventRecord(g.ev_out[e], g.comp);
	}
	if (ce == cudaSuccess)
		ce = cudaEventRecord(g.c1, g.comp);
	/* communication stream: each expert's results out once computed */
	for (int e = 0; ce == cudaSuccess && e < E; e++) {
		const size_t off = (size_t)offset[e] * (size_t)H,
			     n = (size_t)(offset[e + 1] - offset[e]);

		ce = cudaStreamWaitEvent(g.comm, g.ev_out[e], 0);
		if (ce == cudaSuccess && n)
			ce = cudaMemcpyAsync(out + off, g.y + off, n * (size_t)H * fb,
					     cudaMemcpyDeviceToHost, g.comm);
	}
	if (ce == cudaSuccess)
		ce = cudaEventRecord(g.t1, g.comm);
	if (ce == cudaSuccess)
		ce = cudaStreamSynchronize(g.comm);
	if (ce != cudaSuccess) {
		rc = cuda_err(err, "expert forward", ce);
		goto out;
	}
	if (times) {
		ce = cudaEventElapsedTime(&times->total, g.t0, g.t1);
		if (ce == cudaSuccess)
			ce = cudaEventElapsedTime(&times->compute, g.c0, g.c1);
		if (ce != cudaSuccess)
			rc = cuda_err(err, "timing", ce);
	}
out:
	run_release(&g);
	return rc;
}
