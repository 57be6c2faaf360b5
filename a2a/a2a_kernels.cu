/* a2a/a2a_kernels.cu - device kernels of the all-to-all: pack rows into a
 * send buffer, unpack received rows, and the weighted combine.  The combine
 * adds each token's slots in slot order (one thread per (token, element)),
 * the same fixed order as the host code in plan.c. */
#include <cuda_runtime.h>
#include <errno.h>
#include <stdint.h>

__global__ void pack_rows(const float *x, const int32_t *rows, int n, int hidden, float *out)
{
	long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	long long total = (long long)n * hidden;

	for (; i < total; i += (long long)gridDim.x * blockDim.x) {
		long long r = i / hidden, h = i % hidden;

		out[i] = x[(long long)rows[r] * hidden + h];
	}
}

__global__ void unpack_rows(const float *in, const int32_t *rows, int n, int hidden, float *x)
{
	long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	long long total = (long long)n * hidden;

	for (; i < total; i += (long long)gridDim.x * blockDim.x) {
		long long r = i / hidden, h = i % hidden;

		x[(long long)rows[r] * hidden + h] = in[i];
	}
}

/* out[t][h] = sum over s in [slot_off[t], slot_off[t+1]) of w[s] * y[s][h] */
__global__ void weighted_combine(const float *y, const float *w, const int32_t *slot_off, int ntok,
				 int hidden, float *out)
{
	long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	long long total = (long long)ntok * hidden;

	for (; i < total; i += (long long)gridDim.x * blockDim.x) {
		long long t = i / hidden, h = i % hidden;
		float acc = 0.0f;

		for (int s = slot_off[t]; s < slot_off[t + 1]; s++)
			acc = __fadd_rn(acc, __fmul_rn(w[s], y[(long long)s * hidden + h]));
		out[i] = acc;
	}
}

static int grid_for(long long total)
{
	long long g = (total + 255) / 256;

	return g < 1 ? 1 : (g > 65535 ? 65535 : (int)g);
}

static int launched(void)
{
	return cudaGetLastError() == cudaSuccess ? 0 : -EIO;
}

extern "C" int dp_a2a_cuda_pack(const float *x, const int32_t *rows, int n, int hidden, float *out,
				void *stream)
{
	long long total = (long long)n * hidden;

	if (total <= 0)
		return 0;
	pack_rows<<<grid_for(total), 256, 0, (cudaStream_t)stream>>>(x, rows, n, hidden, out);
	return launched();
}

extern "C" int dp_a2a_cuda_unpack(const float *in, const int32_t *rows, int n, int hidden, float *x,
				  void *stream)
{
	long long total = (long long)n * hidden;

	if (total <= 0)
		return 0;
	unpack_rows<<<grid_for(total), 256, 0, (cudaStream_t)stream>>>(in, rows, n, hidden, x);
	return launched();
}

extern "C" int dp_a2a_cuda_combine(const float *y, const float *w, const int32_t *slot_off,
				   int ntok, int hidden, float *out, void *stream)
{
	long long total = (long long)ntok * hidden;

	if (total <= 0)
		return 0;
	weighted_combine<<<grid_for(total), 256, 0, (cudaStream_t)stream>>>(y, w, slot_off, ntok,
									    hidden, out);
	return launched();
}
