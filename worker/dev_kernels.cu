/* worker/dev_kernels.cu - the model's device kernels for the "cuda" backend
 * (worker/dev_cuda.c): one grid-stride kernel running the per-thread bodies
 * of worker/dev_kernels.h, the same code the "emu" backend runs on the
 * host. */
#include <cuda_runtime.h>

/* C structs and static inline bodies: no linkage to declare */
#include "worker/dev_kernels.h"

extern "C" int dp_dev_cuda_launch(int id, const struct dp_dev_kargs *a, long n, cudaStream_t s);

__global__ static void dev_kernel(int id, struct dp_dev_kargs a, long n)
{
	for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n;
	     i += (long)blockDim.x * gridDim.x)
		dp_dev_kernel_run(id, &a, i);
}

/* 0 or the cudaError_t of the launch.  Row kernels (one thread per token)
 * run heavier bodies: smaller blocks spread them over more SMs. */
extern "C" int dp_dev_cuda_launch(int id, const struct dp_dev_kargs *a, long n, cudaStream_t s)
{
	const int threads = n < 4096 ? 64 : 256;
	long blocks = (n + threads - 1) / threads;

	if (blocks > 65535)
		blocks = 65535;
	if (blocks < 1)
		blocks = 1;
	dev_kernel<<<(unsigned)blocks, threads, 0, s>>>(id, *a, n);
	return (int)cudaGetLastError();
}
