/* worker/moe_gpu_nocuda.c - the model's CUDA backend in a build without
 * CUDA: every call says so. */
#include <errno.h>

#include "worker/dp_moe_gpu.h"

int dp_moe_gpu_built(void)
{
	return 0;
}

int dp_moe_gpu_experts_forward(struct dp_model_stage *st, int layer, const int *offset,
			       const float *in,
			       float *out, // NOLINT(readability-non-const-parameter)
			       int dev, struct dp_moe_gpu_times *times, struct dp_err *err)
{
	(void)st;
	(void)layer;
	(void)offset;
	(void)in;
	(void)out;
	(void)dev;
	(void)times;
	return dp_err_set(err, ENOSYS,
			  "moe-gpu: dpctl was built without CUDA (rebuild with WITH_CUDA=yes)");
}
