/* worker/moe_gpu_kernels.cu - element-wise kernels of the model's CUDA
 * backend (the matrix products are cuBLAS). */
#include <cuda_runtime.h>

extern "C" int dp_moe_gpu_silu_launch(const float *u, float *z, long n, cudaStream_t s);

/* z = u * sigmoid(u), as the CPU model computes it (expf, one division). */
__global__ static void silu_kernel(const float *u, float *z, long n)
{
	for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n;
	     i += (long)blockDim.x * gridDim.x)
		z[i] = u[i] * (1.0f / (1.0f + expf(-u[i])));
}

extern "C" int dp_moe_gpu_silu_launch(const float *u, float *z, long n, cudaStream_t s)
{
	long blocks = (n + 255) / 256;

	if (blocks > 4096)
		blocks = 4096;
	if (blocks < 1)
		blocks = 1;
	silu_kernel<<<(unsigned)blocks, 256, 0, s>>>(u, z, n);
	return (int)cudaGetLastError();
}
