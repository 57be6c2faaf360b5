/* worker/dev_emu.c - the "emu" device backend: the device table of
 * worker/dp_dev.h run on the host, so the device code of the model (its
 * kernels, GEMM calls, copies) is tested on a machine without a GPU.
 *
 * Device memory is malloc'd; a copy is memcpy; GEMM is a plain loop with
 * cuBLAS's column-major semantics (each C element one float sum over k in
 * ascending order, then alpha and beta applied as cublasSgemm does); a
 * kernel runs dp_dev_kernel_run() for thread 0, 1, ... n-1 in turn; the
 * streams and events of the CUDA backend collapse into program order. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "worker/dev_kernels.h"
#include "worker/dp_dev.h"

static int emu_open(int device, struct dp_dev **out, struct dp_err *err)
{
	struct dp_dev *d;

	if (device != 0)
		return dp_err_set(err, ENODEV, "model: emu: no device %d (the emulator has one, 0)",
				  device);
	d = calloc(1, sizeof(*d));
	if (!d)
		return dp_err_set(err, ENOMEM, "model: out of memory");
	d->ops = &dp_dev_emu;
	*out = d;
	return 0;
}

static void emu_close(struct dp_dev *d)
{
	free(d);
}

static int emu_alloc(struct dp_dev *d, size_t bytes, void **out, struct dp_err *err)
{
	void *p = calloc(1, bytes ? bytes : 1);

	(void)d;
	if (!p)
		return dp_err_set(err, ENOMEM, "model: emu: out of memory for %zu bytes", bytes);
	*out = p;
	return 0;
}

static void emu_free(struct dp_dev *d, void *p)
{
	(void)d;
	free(p);
}

static int emu_copy(struct dp_dev *d, void *dst, const void *src, size_t bytes, struct dp_err *err)
{
	(void)d;
	(void)err;
	memcpy(dst, src, bytes);
	return 0;
}

static int emu_gemm(struct dp_dev *d, int ta, int tb, int m, int n, int k, float alpha,
		    const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc,
		    struct dp_err *err)
{
	(void)d;
	if (m < 0 || n < 0 || k < 0 || lda < (ta ? k : m) || ldb < (tb ? n : k) || ldc < m)
		return dp_err_set(err, EINVAL, "model: emu: bad gemm shape m %d n %d k %d", m, n,
				  k);
	for (long j = 0; j < n; j++)
		for (long i = 0; i < m; i++) {
			float s = 0.0f;

			for (long l = 0; l < k; l++) {
				const float a = ta ? A[l + i * lda] : A[i + l * lda];
				const float b = tb ? B[j + l * ldb] : B[l + j * ldb];

				s += a * b;
			}
			C[i + j * ldc] =
				beta == 0.0f ? alpha * s : alpha * s + beta * C[i + j * ldc];
		}
	return 0;
}

static int emu_kernel(struct dp_dev *d, int id, const struct dp_dev_kargs *a, long n,
		      struct dp_err *err)
{
	(void)d;
	if (id < 0 || id >= DP_DEV_K_COUNT)
		return dp_err_set(err, EINVAL, "model: emu: no kernel %d", id);
	for (long i = 0; i < n; i++)
		dp_dev_kernel_run(id, a, i);
	return 0;
}

static int emu_sync(struct dp_dev *d, struct dp_err *err)
{
	(void)d;
	(void)err;
	return 0;
}

const struct dp_dev_ops dp_dev_emu = {
	.name = "emu",
	.open = emu_open,
	.close = emu_close,
	.alloc = emu_alloc,
	.free = emu_free,
	.h2d = emu_copy,
	.d2h = emu_copy,
	.gemm = emu_gemm,
	.kernel = emu_kernel,
	.sync = emu_sync,
};
