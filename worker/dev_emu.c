/* worker/dev_emu.c - the "emu" device backend: the device table of
 * worker/dp_dev.h run on the host, so the device code of the model (its
 * kernels, GEMM calls, copies) is tested on a machine without a GPU.
 *
 * Device memory is malloc'd; a copy is memcpy; GEMM is a plain loop with
 * cuBLAS's column-major semantics (each C element one float sum over k in
 * ascending order, then alpha and beta applied as cublasSgemm does); a
 * kernel runs dp_dev_kernel_run() for thread 0, 1, ... n-1 in turn; the
 * streams and events of the CUDA backend collapse into program order.
 *
 * Strict copies: the emulator remembers every block it handed out, and
 * h2d/d2h fail (-EFAULT) unless the device side lies inside one block and
 * the host side in none, so a caller that mixes up host and device
 * pointers fails here as it would on a GPU, instead of working by luck. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
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

/* The blocks handed out, sorted by address (all emu devices: memory of one
 * stage may serve another). */
struct block {
	uintptr_t p;
	size_t n;
};

static pthread_mutex_t blocks_mu = PTHREAD_MUTEX_INITIALIZER;
static struct block *blocks;
static size_t nblocks, capblocks;

/* Index of the first block with p > @a. */
static size_t upper(uintptr_t a)
{
	size_t lo = 0, hi = nblocks;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (blocks[mid].p <= a)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* 1 if [@a, @a + @n) lies in one block, -1 if it overlaps none, 0 if it
 * straddles (caller holds blocks_mu). */
static int where(const void *ptr, size_t n)
{
	uintptr_t a = (uintptr_t)ptr;
	size_t i = upper(a);

	if (i > 0 && a - blocks[i - 1].p < blocks[i - 1].n)
		return n <= blocks[i - 1].n - (a - blocks[i - 1].p) ? 1 : 0;
	return i < nblocks && blocks[i].p < a + n ? 0 : -1;
}

static int emu_alloc(struct dp_dev *d, size_t bytes, void **out, struct dp_err *err)
{
	void *p = calloc(1, bytes ? bytes : 1);
	int rc = 0;

	(void)d;
	if (!p)
		return dp_err_set(err, ENOMEM, "model: emu: out of memory for %zu bytes", bytes);
	(void)pthread_mutex_lock(&blocks_mu);
	if (nblocks == capblocks) {
		size_t cap = capblocks ? 2 * capblocks : 256;
		struct block *b = realloc(blocks, cap * sizeof(*b));

		if (b) {
			blocks = b;
			capblocks = cap;
		} else {
			rc = -ENOMEM;
		}
	}
	if (!rc) {
		size_t i = upper((uintptr_t)p);

		memmove(blocks + i + 1, blocks + i, (nblocks - i) * sizeof(*blocks));
		blocks[i] = (struct block){ (uintptr_t)p, bytes ? bytes : 1 };
		nblocks++;
	}
	(void)pthread_mutex_unlock(&blocks_mu);
	if (rc) {
		free(p);
		return dp_err_set(err, ENOMEM, "model: emu: out of memory");
	}
	*out = p;
	return 0;
}

static void emu_free(struct dp_dev *d, void *p)
{
	(void)d;
	if (!p)
		return;
	(void)pthread_mutex_lock(&blocks_mu);
	{
		size_t i = upper((uintptr_t)p);

		if (i > 0 && blocks[i - 1].p == (uintptr_t)p) {
			memmove(blocks + i - 1, blocks + i, (nblocks - i) * sizeof(*blocks));
			nblocks--;
		}
		if (!nblocks) {
			free(blocks);
			blocks = NULL;
			capblocks = 0;
		}
	}
	(void)pthread_mutex_unlock(&blocks_mu);
	free(p);
}

/* A copy between device @dev and host @host, checked as a GPU would. */
static int emu_copy(void *dst, const void *src, size_t bytes, int to_dev, struct dp_err *err)
{
	const void *dev = to_dev ? (const void *)dst : src,
		   *host = to_dev ? src : (const void *)dst;
	int d, h;

	if (!bytes)
		return 0;
	(void)pthread_mutex_lock(&blocks_mu);
	d = where(dev, bytes);
	h = where(host, bytes);
	(void)pthread_mutex_unlock(&blocks_mu);
	if (d != 1 || h != -1)
		return dp_err_set(err, EFAULT, "model: emu: %s of %zu bytes: %s",
				  to_dev ? "h2d" : "d2h", bytes,
				  d != 1 ? "the device side is not device memory"
					 : "the host side is device memory");
	memcpy(dst, src, bytes);
	return 0;
}

static int emu_h2d(struct dp_dev *d, void *dst, const void *src, size_t bytes, struct dp_err *err)
{
	(void)d;
	return emu_copy(dst, src, bytes, 1, err);
}

static int emu_d2h(struct dp_dev *d, void *dst, const void *src, size_t bytes, struct dp_err *err)
{
	(void)d;
	return emu_copy(dst, src, bytes, 0, err);
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
	.h2d = emu_h2d,
	.d2h = emu_d2h,
	.gemm = emu_gemm,
	.kernel = emu_kernel,
	.sync = emu_sync,
};
