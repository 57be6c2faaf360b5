/* worker/dp_gpu.h - the GPU side of a worker: device discovery and a kernel
 * self-test.  Built from worker/gpu_cuda.c + worker/gpu_kernels.cu when dpctl
 * is built with CUDA, else from worker/gpu_nocuda.c, whose calls all fail with
 * -ENOSYS and "dpctl was built without CUDA".  Callers never #ifdef.
 */
#ifndef DP_GPU_H
#define DP_GPU_H

#include "common/dp_err.h"

/* 1 if this binary was built with CUDA, else 0. */
int dp_gpu_built(void);

/* Number of usable CUDA devices in *count.  0; -ENOSYS (built without CUDA);
 * -ENODEV (CUDA built in, but no driver or no device: the message says which). */
int dp_gpu_count(int *count, struct dp_err *err);

/* Run y = a*x + y for @n floats on device @dev and compare with the host
 * result.  0 if they match exactly; -ENOSYS/-ENODEV as above; -EIO on a
 * mismatch or a CUDA failure, with the CUDA error string in @err. */
int dp_gpu_selftest(int dev, int n, struct dp_err *err);

#endif
