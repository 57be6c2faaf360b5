/* worker/gpu_kernels.cu - small device kernels of the worker's CUDA backend. */
#include <cuda_runtime.h>

extern "C" int dp_gpu_saxpy_launch(float a, const float *x, float *y, int n, cudaStream_t s);

/* y[i] = a * x[i] + y[i], written with an explicit fmaf so the host check can
 * use the same single rounding. */
__global__ static void saxpy_kernel(float a, const float *x, float *y, int n)
{
	for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)
		y[i] = fmaf(a, x[i], y[i]);
}

extern "C" int dp_gpu_saxpy_launch(float a, const float *x, float *y, int n, cudaStream_t s)
{
	int blocks = (n + 255) / 256;

	if (blocks > 1024)
		blocks = 1024;
	if (blocks < 1)
		blocks = 1;
	saxpy_kernel<<<blocks, 256, 0, s>>>(a, x, y, n);
	return (int)cudaGetLastError();
}
