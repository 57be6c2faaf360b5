/* worker/dev_cuda.c - the "cuda" device backend of the model (worker/dp_dev.h):
 * cudart memory, cuBLAS sgemm, and the kernels of worker/dev_kernels.cu.
 *
 * Streams and events: each device handle (one per stage) has a compute
 * stream (kernels, cuBLAS via cublasSetStream) and a communication stream
 * (host <-> device copies).  h2d: the communication stream first waits for
 * the compute work queued so far (event "compute"; the copy may overwrite a
 * buffer a queued kernel still reads), copies, and records event "copied"
 * which the compute stream waits for.  d2h: the communication stream waits
 * for "compute", copies, and the host waits for that stream only.  So
 * copies of one stage's component inputs and outputs leave the compute
 * stream free while they travel, and the work of other stages (other
 * handles) overlaps with them.  Pageable host memory is fine:
 * cudaMemcpyAsync stages it and returns when the source may be reused.
 *
 * Errors: a CUDA or cuBLAS failure is -EIO naming the call and the error
 * string; no device (cudaGetDeviceCount fails or is 0) is -ENODEV. */
#include <errno.h>
#include <stdlib.h>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "worker/dev_kernels.h"
#include "worker/dp_dev.h"

int dp_dev_cuda_launch(int id, const struct dp_dev_kargs *a, long n, cudaStream_t s);

struct cuda_dev {
	struct dp_dev base;
	int device;
	cudaStream_t comp, comm;
	cudaEvent_t ev_comp, ev_copied;
	cublasHandle_t blas;
};

static struct cuda_dev *cdev(struct dp_dev *d)
{
	return (struct cuda_dev *)d; /* base is the first member */
}

static int cu_err(struct dp_err *err, const char *what, cudaError_t ce)
{
	return dp_err_set(err, EIO, "model: cuda: %s: %s", what, cudaGetErrorString(ce));
}

static int cu_check(struct dp_err *err, const char *what, cudaError_t ce)
{
	return ce == cudaSuccess ? 0 : cu_err(err, what, ce);
}

static void cuda_close(struct dp_dev *d)
{
	struct cuda_dev *c = cdev(d);

	if (!d)
		return;
	(void)cudaSetDevice(c->device);
	if (c->comm)
		(void)cudaStreamSynchronize(c->comm);
	if (c->comp)
		(void)cudaStreamSynchronize(c->comp);
	if (c->blas)
		(void)cublasDestroy(c->blas);
	if (c->ev_comp)
		(void)cudaEventDestroy(c->ev_comp);
	if (c->ev_copied)
		(void)cudaEventDestroy(c->ev_copied);
	if (c->comp)
		(void)cudaStreamDestroy(c->comp);
	if (c->comm)
		(void)cudaStreamDestroy(c->comm);
	free(c);
}

static int cuda_open(int device, struct dp_dev **out, struct dp_err *err)
{
	struct cuda_dev *c;
	int n = 0, rc;
	cudaError_t ce = cudaGetDeviceCount(&n);

	if (ce != cudaSuccess || n == 0)
		return dp_err_set(err, ENODEV, "model: cuda: no CUDA device (%s)",
				  ce != cudaSuccess ? cudaGetErrorString(ce) : "count is 0");
	if (device < 0 || device >= n)
		return dp_err_set(err, ENODEV, "model: cuda: no device %d (%d found)", device, n);
	c = calloc(1, sizeof(*c));
	if (!c)
		return dp_err_set(err, ENOMEM, "model: out of memory");
	c->base.ops = &dp_dev_cuda;
	c->device = device;
	if ((rc = cu_check(err, "cudaSetDevice", cudaSetDevice(device))) ||
	    (rc = cu_check(err, "cudaStreamCreate",
			   cudaStreamCreateWithFlags(&c->comp, cudaStreamNonBlocking))) ||
	    (rc = cu_check(err, "cudaStreamCreate",
			   cudaStreamCreateWithFlags(&c->comm, cudaStreamNonBlocking))) ||
	    (rc = cu_check(err, "cudaEventCreate",
			   cudaEventCreateWithFlags(&c->ev_comp, cudaEventDisableTiming))) ||
	    (rc = cu_check(err, "cudaEventCreate",
			   cudaEventCreateWithFlags(&c->ev_copied, cudaEventDisableTiming))))
		goto fail;
	if (cublasCreate(&c->blas) != CUBLAS_STATUS_SUCCESS) {
		c->blas = NULL;
		rc = dp_err_set(err, EIO, "model: cuda: cublasCreate failed");
		goto fail;
	}
	if (cublasSetStream(c->blas, c->comp) != CUBLAS_STATUS_SUCCESS) {
		rc = dp_err_set(err, EIO, "model: cuda: cublasSetStream failed");
		goto fail;
	}
	*out = &c->base;
	return 0;
fail:
	cuda_close(&c->base);
	return rc;
}

static int cuda_alloc(struct dp_dev *d, size_t bytes, void **out, struct dp_err *err)
{
	struct cuda_dev *c = cdev(d);
	void *p = NULL;
	int rc;

	if ((rc = cu_check(err, "cudaSetDevice", cudaSetDevice(c->device))))
		return rc;
	if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess)
		return dp_err_set(err, ENOMEM, "model: cuda: out of device memory for %zu bytes",
				  bytes);
	/* zeroed on the compute stream: ordered before the kernels that use
	 * it, and before any copy (h2d waits for the compute stream) */
	if ((rc = cu_check(err, "cudaMemsetAsync",
			   cudaMemsetAsync(p, 0, bytes ? bytes : 1, c->comp)))) {
		(void)cudaFree(p);
		return rc;
	}
	*out = p;
	return 0;
}

static void cuda_free(struct dp_dev *d, void *p)
{
	struct cuda_dev *c = cdev(d);

	if (!p)
		return;
	/* the streams may still use it */
	(void)cudaSetDevice(c->device);
	(void)cudaStreamSynchronize(c->comp);
	(void)cudaStreamSynchronize(c->comm);
	(void)cudaFree(p);
}

/* The communication stream waits for the compute work queued so far. */
static int comm_after_compute(struct cuda_dev *c, struct dp_err *err)
{
	int rc;

	if ((rc = cu_check(err, "cudaSetDevice", cudaSetDevice(c->device))) ||
	    (rc = cu_check(err, "cudaEventRecord", cudaEventRecord(c->ev_comp, c->comp))) ||
	    (rc = cu_check(err, "cudaStreamWaitEvent",
			   cudaStreamWaitEvent(c->comm, c->ev_comp, 0))))
		return rc;
	return 0;
}

static int cuda_h2d(struct dp_dev *d, void *dst, const void *src, size_t bytes, struct dp_err *err)
{
	struct cuda_dev *c = cdev(d);
	int rc = comm_after_compute(c, err);

	/* the copy, then the compute stream waits for it */
	if (rc ||
	    (rc = cu_check(err, "cudaMemcpyAsync (to the device)",
			   cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->comm))) ||
	    (rc = cu_check(err, "cudaEventRecord", cudaEventRecord(c->ev_copied, c->comm))))
		return rc;
	return cu_check(err, "cudaStreamWaitEvent", cudaStreamWaitEvent(c->comp, c->ev_copied, 0));
}

static int cuda_d2h(struct dp_dev *d, void *dst, const void *src, size_t bytes, struct dp_err *err)
{
	struct cuda_dev *c = cdev(d);
	int rc = comm_after_compute(c, err);

	/* the copy, then the host waits for the communication stream only */
	if (rc ||
	    (rc = cu_check(err, "cudaMemcpyAsync (to the host)",
			   cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->comm))))
		return rc;
	return cu_check(err, "cudaStreamSynchronize", cudaStreamSynchronize(c->comm));
}

static int cuda_gemm(struct dp_dev *d, int ta, int tb, int m, int n, int k, float alpha,
		     const float *A, int lda, const float *B, int ldb, float beta, float *C,
		     int ldc, struct dp_err *err)
{
	struct cuda_dev *c = cdev(d);
	cublasStatus_t bs;
	int rc;

	if ((rc = cu_check(err, "cudaSetDevice", cudaSetDevice(c->device))))
		return rc;
	bs = cublasSgemm(c->blas, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, m,
			 n, k, &alpha, A, lda, B, ldb, &beta, C, ldc);
	if (bs != CUBLAS_STATUS_SUCCESS)
		return dp_err_set(err, EIO, "model: cuda: cublasSgemm m %d n %d k %d: status %d", m,
				  n, k, (int)bs);
	return 0;
}

static int cuda_kernel(struct dp_dev *d, int id, const struct dp_dev_kargs *a, long n,
		       struct dp_err *err)
{
	struct cuda_dev *c = cdev(d);
	int rc;

	if (id < 0 || id >= DP_DEV_K_COUNT)
		return dp_err_set(err, EINVAL, "model: cuda: no kernel %d", id);
	if ((rc = cu_check(err, "cudaSetDevice", cudaSetDevice(c->device))))
		return rc;
	rc = dp_dev_cuda_launch(id, a, n, c->comp);
	if (rc)
		return dp_err_set(err, EIO, "model: cuda: kernel %d on %ld threads: %s", id, n,
				  cudaGetErrorString((cudaError_t)rc));
	return 0;
}

static int cuda_sync(struct dp_dev *d, struct dp_err *err)
{
	struct cuda_dev *c = cdev(d);
	int rc;

	if ((rc = cu_check(err, "cudaSetDevice", cudaSetDevice(c->device))) ||
	    (rc = cu_check(err, "cudaStreamSynchronize", cudaStreamSynchronize(c->comp))) ||
	    (rc = cu_check(err, "cudaStreamSynchronize", cudaStreamSynchronize(c->comm))))
		return rc;
	return 0;
}

const struct dp_dev_ops dp_dev_cuda = {
	.name = "cuda",
	.open = cuda_open,
	.close = cuda_close,
	.alloc = cuda_alloc,
	.free = cuda_free,
	.h2d = cuda_h2d,
	.d2h = cuda_d2h,
	.gemm = cuda_gemm,
	.kernel = cuda_kernel,
	.sync = cuda_sync,
};
