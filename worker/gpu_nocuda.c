/* worker/gpu_nocuda.c - GPU entry points for a build without CUDA. */
#include <errno.h>

#include "worker/dp_gpu.h"

int dp_gpu_built(void)
{
	return 0;
}

int dp_gpu_count(int *count, struct dp_err *err) // NOLINT(readability-non-const-parameter)
{
	(void)count;
	return dp_err_set(err, ENOSYS,
			  "gpu: dpctl was built without CUDA (rebuild with WITH_CUDA=yes)");
}

int dp_gpu_selftest(int dev, int n, struct dp_err *err)
{
	(void)dev;
	(void)n;
	return dp_err_set(err, ENOSYS,
			  "gpu: dpctl was built without CUDA (rebuild with WITH_CUDA=yes)");
}
