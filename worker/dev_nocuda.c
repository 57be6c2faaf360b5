/* worker/dev_nocuda.c - the "cuda" device backend of the model in a build
 * without CUDA: opening it says so (-ENOSYS). */
#include <errno.h>

#include "worker/dp_dev.h"

static int nocuda_open(int device, struct dp_dev **out, struct dp_err *err)
{
	(void)device;
	(void)out;
	return dp_err_set(err, ENOSYS,
			  "model: backend 'cuda' is not built with CUDA: dpctl was built without "
			  "CUDA (rebuild with WITH_CUDA=yes)");
}

static void nocuda_close(struct dp_dev *d)
{
	(void)d;
}

/* Never reached (open fails), but no op of a table is NULL. */
static int nocuda_alloc(struct dp_dev *d, size_t bytes, void **out, struct dp_err *err)
{
	(void)d;
	(void)bytes;
	(void)out;
	return nocuda_open(0, NULL, err);
}

static void nocuda_free(struct dp_dev *d, void *p)
{
	(void)d;
	(void)p;
}

static int nocuda_copy(struct dp_dev *d, void *dst, const void *src, size_t bytes,
		       struct dp_err *err)
{
	(void)d;
	(void)dst;
	(void)src;
	(void)bytes;
	return nocuda_open(0, NULL, err);
}

static int nocuda_gemm(struct dp_dev *d, int ta, int tb, int m, int n, int k, float alpha,
		       const float *A, int lda, const float *B, int ldb, float beta,
		       float *C, // NOLINT(readability-non-const-parameter)
		       int ldc, struct dp_err *err)
{
	(void)d;
	(void)ta;
	(void)tb;
	(void)m;
	(void)n;
	(void)k;
	(void)alpha;
	(void)A;
	(void)lda;
	(void)B;
	(void)ldb;
	(void)beta;
	(void)C;
	(void)ldc;
	return nocuda_open(0, NULL, err);
}

static int nocuda_kernel(struct dp_dev *d, int id, const struct dp_dev_kargs *a, long n,
			 struct dp_err *err)
{
	(void)d;
	(void)id;
	(void)a;
	(void)n;
	return nocuda_open(0, NULL, err);
}

static int nocuda_sync(struct dp_dev *d, struct dp_err *err)
{
	(void)d;
	return nocuda_open(0, NULL, err);
}

const struct dp_dev_ops dp_dev_cuda = {
	.name = "cuda",
	.open = nocuda_open,
	.close = nocuda_close,
	.alloc = nocuda_alloc,
	.free = nocuda_free,
	.h2d = nocuda_copy,
	.d2h = nocuda_copy,
	.gemm = nocuda_gemm,
	.kernel = nocuda_kernel,
	.sync = nocuda_sync,
};
