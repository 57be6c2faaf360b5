/* worker/gpu_cuda.c - GPU entry points for a build with CUDA (runtime API). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include <cuda_runtime.h>

#include "worker/dp_gpu.h"

int dp_gpu_saxpy_launch(float a, const float *x, float *y, int n, cudaStream_t s);

int dp_gpu_built(void)
{
	return 1;
}

int dp_gpu_count(int *count, struct dp_err *err)
{
	int n = 0;
	cudaError_t ce = cudaGetDeviceCount(&n);

	if (ce == cudaErrorNoDevice || (ce == cudaSuccess && n == 0))
		return dp_err_set(err, ENODEV, "gpu: no CUDA device on this machine");
	if (ce != cudaSuccess)
		return dp_err_set(err, ENODEV, "gpu: CUDA unavailable: %s", cudaGetErrorString(ce));
	*count = n;
	return 0;
}

static int cuda_fail(struct dp_err *err, const char *what, cudaError_t ce)
{
	return dp_err_set(err, EIO, "gpu: %s: %s", what, cudaGetErrorString(ce));
}

int dp_gpu_selftest(int dev, int n, struct dp_err *err)
{
	float *hx = NULL, *hy = NULL, *dx = NULL, *dy = NULL;
	cudaStream_t s = NULL;
	const float a = 1.5f;
	cudaError_t ce;
	size_t bytes;
	int count = 0, rc;

	rc = dp_gpu_count(&count, err);
	if (rc)
		return rc;
	if (dev < 0 || dev >= count || n <= 0)
		return dp_err_set(err, EINVAL, "gpu: bad device %d or size %d (%d devices)", dev, n,
				  count);
	bytes = (size_t)n * sizeof(float);
	hx = malloc(bytes);
	hy = malloc(bytes);
	if (!hx || !hy) {
		rc = dp_err_set(err, ENOMEM, "gpu: out of memory");
		goto out;
	}
	for (int i = 0; i < n; i++) {
		hx[i] = (float)(i % 97) * 0.25f;
		hy[i] = (float)(i % 13) - 6.0f;
	}
	ce = cudaSetDevice(dev);
	if (ce == cudaSuccess)
		ce = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
	if (ce == cudaSuccess)
		ce = cudaMalloc((void **)&dx, bytes);
	if (ce == cudaSuccess)
		ce = cudaMalloc((void **)&dy, bytes);
	if (ce == cudaSuccess)
		ce = cudaMemcpyAsync(dx, hx, bytes, cudaMemcpyHostToDevice, s);
	if (ce == cudaSuccess)
		ce = cudaMemcpyAsync(dy, hy, bytes, cudaMemcpyHostToDevice, s);
	if (ce == cudaSuccess)
		ce = (cudaError_t)dp_gpu_saxpy_launch(a, dx, dy, n, s);
	if (ce == cudaSuccess)
		ce = cudaMemcpyAsync(hx, dy, bytes, cudaMemcpyDeviceToHost, s);
	if (ce == cudaSuccess)
		ce = cudaStreamSynchronize(s);
	if (ce != cudaSuccess) {
		rc = cuda_fail(err, "saxpy self-test", ce);
		goto out;
	}
	rc = 0;
	for (int i = 0; i < n; i++) {
		float want = fmaf(a, (float)(i % 97) * 0.25f, hy[i]);

		if (hx[i] != want) {
			rc = dp_err_set(err, EIO, "gpu: self-test mismatch at %d: %g != %g", i,
					(double)hx[i], (double)want);
			break;
		}
	}
out:
	cudaFree(dx);
	cudaFree(dy);
	if (s)
		cudaStreamDestroy(s);
	free(hx);
	free(hy);
	return rc;
}
