/* worker/dp_dev.h - the device backends of the model (issue 8): a stage whose
 * parameters, gradients, Adam state and activations live in device memory
 * and whose math runs as device kernels and GEMMs, behind a small backend
 * table.  The stage API stays worker/dp_model.h: a stage made here is used
 * through the same dp_model_* calls with host pointers at the component
 * boundaries (stage inputs/outputs, dx/dy, packed expert rows), which are
 * copied in and out.  docs/model.md, "Device backend".
 *
 * Backends (a NULL-terminated list, best first):
 *   "cuda"  cudart + cuBLAS on GPU @device: a compute stream and a
 *           communication stream per stage, ordered by events (copies on
 *           the communication stream, kernels and GEMMs on the compute
 *           stream).  Built WITH_CUDA (worker/dev_cuda.c, dev_kernels.cu);
 *           otherwise worker/dev_nocuda.c answers -ENOSYS.  No device:
 *           -ENODEV.
 *   "emu"   a host emulation of the same table, always built: device
 *           memory is malloc'd, GEMM is a plain loop with cuBLAS's
 *           column-major semantics, a kernel is a loop over its thread
 *           index, streams and events run in program order.
 * Both run the same kernel bodies (worker/dev_kernels.h), so the emulator
 * tests the device math on a machine without a GPU.  "cpu" names the host
 * model of worker/model_cpu.c (no device).
 *
 * Host mirror: a device stage keeps host copies of its flat arrays.
 * dp_model_stage_flat() and dp_model_stage_tensor() download them (all of
 * them, once per change on the device); a caller that writes to them (the
 * executor's gradient all-reduce, checkpoint load) then calls
 * dp_model_stage_flat_commit() to upload them again, before any other call
 * on the stage.  A device failure inside one of the void calls
 * (dp_model_stage_flat, _zero_grad, _step) is kept and returned by the
 * stage's next int-returning call.
 *
 * Threads: one device handle per stage; a stage is used by one thread at a
 * time, as any model stage.
 */
#ifndef DP_DEV_H
#define DP_DEV_H

#include <stddef.h>
#include <stdint.h>

#include "common/dp_err.h"
#include "worker/dp_model.h"

/* ---- stages on a device -------------------------------------------------- */

/* dp_model_stage_new() on backend @backend ("cpu" or NULL: the host model;
 * "emu"; "cuda" on GPU @device).  -EINVAL naming an unknown backend,
 * -ENOSYS (cuda in a build without CUDA), -ENODEV (no such device), -EIO (a
 * device call failed), -ENOMEM. */
int dp_model_stage_new_dev(const struct dp_model_cfg *cfg, int first, int count, int roles,
			   const char *backend, int device, struct dp_model_stage **out,
			   struct dp_err *err);
/* dp_model_stage_new_split() on a backend, as above. */
int dp_model_stage_new_split_dev(const struct dp_model_cfg *cfg, int nstages, int stage,
				 const char *backend, int device, struct dp_model_stage **out,
				 struct dp_err *err);
/* "cpu", "emu" or "cuda": the backend the stage runs on (lives as long as
 * the program). */
const char *dp_model_stage_backend(const struct dp_model_stage *st);
/* 0 if @name (NULL: "cpu") names a backend of this build's list, else
 * -EINVAL naming it.  Does not probe the device. */
int dp_dev_backend_check(const char *name, struct dp_err *err);

/* ---- device memory for an executor (expert parallelism on the device) ----
 * A device stage's own device: an executor keeps the packed expert rows
 * there and moves them with a device all-to-all (dp_a2a_alltoallv on the
 * cuda transport), so they never cross to the host.  All return -EINVAL
 * on a cpu stage (dev_sync: 0).  Memory from one stage may be used by
 * another stage of the same backend and device; the caller orders the
 * uses across stages with dp_model_stage_dev_sync(). */

/* @on: the packed-row arguments of dp_model_dispatch, _expert_forward,
 * _combine_forward, _combine_backward, _expert_backward_input and
 * _attn_backward are device memory (dp_model_stage_dev_alloc) and stay
 * there; off (the default): host memory, copied in and out. */
int dp_model_stage_dev_io(struct dp_model_stage *st, int on, struct dp_err *err);
/* Zeroed device memory of @bytes (at least 1); caller frees with
 * dp_model_stage_dev_free (NULL-safe). */
int dp_model_stage_dev_alloc(struct dp_model_stage *st, size_t bytes, void **out,
			     struct dp_err *err);
void dp_model_stage_dev_free(struct dp_model_stage *st, void *p);
/* Host @src to device @dst, ordered before the stage's later kernels. */
int dp_model_stage_dev_h2d(struct dp_model_stage *st, void *dst, const void *src, size_t bytes,
			   struct dp_err *err);
/* Device @src to host @dst, after the stage's queued work; returns when
 * @dst holds the data. */
int dp_model_stage_dev_d2h(struct dp_model_stage *st, void *dst, const void *src, size_t bytes,
			   struct dp_err *err);
/* Row gather on the device: dst row r = src row idx[r] (rows of H floats,
 * @idx device memory), r < @rows. */
int dp_model_stage_dev_gather(struct dp_model_stage *st, float *dst, const float *src,
			      const int32_t *idx, long rows, struct dp_err *err);
/* Wait until the work queued on the stage's streams is done. */
int dp_model_stage_dev_sync(struct dp_model_stage *st, struct dp_err *err);

/* ---- the backend table ---------------------------------------------------- */

/* Arguments of one kernel launch (worker/dev_kernels.h says which fields
 * each kernel reads); passed by value to the device. */
struct dp_dev_kargs {
	const float *a, *b, *c, *d;
	float *y, *z, *u;
	const int32_t *ia, *ib;
	int32_t *iy;
	double *dy;
	long n0, n1, n2, n3;
	float f0, f1, f2;
};

struct dp_dev {
	const struct dp_dev_ops *ops;
};

/* All ops but open/close/free return 0 or -errno with @err.  Ordering:
 * every op of one device handle is ordered after the ones before it (on
 * CUDA by stream order and events); d2h and sync return when done. */
struct dp_dev_ops {
	const char *name;
	/* -ENODEV: no such device (the message says why), -ENOSYS: not built */
	int (*open)(int device, struct dp_dev **out, struct dp_err *err);
	void (*close)(struct dp_dev *d); /* NULL-safe; waits for the streams */
	/* zeroed device memory */
	int (*alloc)(struct dp_dev *d, size_t bytes, void **out, struct dp_err *err);
	void (*free)(struct dp_dev *d, void *p); /* NULL-safe */
	/* host -> device on the communication stream; the compute stream waits
	 * for it (and the copy waits for the compute work queued before it) */
	int (*h2d)(struct dp_dev *d, void *dst, const void *src, size_t bytes, struct dp_err *err);
	/* device -> host after the compute work queued before it, on the
	 * communication stream; returns when @dst holds the data */
	int (*d2h)(struct dp_dev *d, void *dst, const void *src, size_t bytes, struct dp_err *err);
	/* cublasSgemm semantics, column-major: C = alpha op(A) op(B) + beta C,
	 * op(A) m x k, op(B) k x n, C m x n; ta/tb: 0 'N', 1 'T'; with beta 0
	 * C is not read */
	int (*gemm)(struct dp_dev *d, int ta, int tb, int m, int n, int k, float alpha,
		    const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc,
		    struct dp_err *err);
	/* kernel @id (enum dp_dev_kernel) on threads 0..n-1 */
	int (*kernel)(struct dp_dev *d, int id, const struct dp_dev_kargs *a, long n,
		      struct dp_err *err);
	int (*sync)(struct dp_dev *d, struct dp_err *err);
};

extern const struct dp_dev_ops dp_dev_emu;
extern const struct dp_dev_ops dp_dev_cuda; /* dev_cuda.c, or dev_nocuda.c: -ENOSYS */

/* The list, NULL-terminated. */
const struct dp_dev_ops *const *dp_dev_backends(void);

#endif
