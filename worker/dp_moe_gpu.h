/* worker/dp_moe_gpu.h - the CUDA backend of the model, a skeleton: the routed
 * experts of one MoE layer of a stage (worker/dp_model.h) computed on a GPU
 * with cuBLAS sgemm, with a compute stream and a communication stream
 * ordered by events (expert e+1's rows go in and expert e-1's results come
 * out while expert e computes).  Built from worker/moe_gpu_cuda.c and
 * worker/moe_gpu_kernels.cu with CUDA, else worker/moe_gpu_nocuda.c whose
 * calls fail with -ENOSYS.  docs/model.md, "CUDA backend".
 *
 * Threads: a call uses its own streams and handle; calls on different
 * stages may run in parallel.
 */
#ifndef DP_MOE_GPU_H
#define DP_MOE_GPU_H

#include "common/dp_err.h"
#include "worker/dp_model.h"

/* 1 if built with CUDA, else 0. */
int dp_moe_gpu_built(void);

/* Timings of one call, from CUDA events (milliseconds). */
struct dp_moe_gpu_times {
	float total;   /* first copy in to last copy out */
	float compute; /* sum over experts of their sgemm + SiLU time */
};

/* Expert MLPs of layer @layer (a layer of @st) on GPU @dev: for every routed
 * expert e, the rows [offset[e], offset[e+1]) of @in (packed, hidden floats
 * each, as dp_model_dispatch lays them out) give the same rows of @out =
 * silu(in W1e) W2e, as dp_model_expert_forward computes them (to float
 * rounding: cuBLAS sums in its own order).  @offset has experts + 1
 * entries.  @times may be NULL.  0; -ENOSYS (built without CUDA); -ENODEV
 * (no device: the message says so); -EINVAL (bad layer/device/offsets);
 * -EIO (a CUDA or cuBLAS failure, named in @err); -ENOMEM. */
int dp_moe_gpu_experts_forward(struct dp_model_stage *st, int layer, const int *offset,
			       const float *in, float *out, int dev, struct dp_moe_gpu_times *times,
			       struct dp_err *err);

#endif
