/* worker/model_dev.c - the model's stage on a device (worker/dp_dev.h):
 * the same math as worker/model_cpu.c, with every matrix product a GEMM of
 * the backend table and everything else a kernel of worker/dev_kernels.h.
 *
 * The host stage struct (model_int.h) keeps the tensor layout and, in its
 * w/g/m/v arrays, the host mirror; the device holds the real state.  A
 * context keeps all activations of one micro-batch on the device; only the
 * routing (needed by the executor's dispatch) is also on the host.  At the
 * component boundaries the host arrays of the caller are copied in (h2d,
 * communication stream) and out (d2h), so the executor, the checkpoint and
 * the gradient all-reduce see the stage API of dp_model.h unchanged; with
 * dp_model_stage_dev_io() the packed expert rows are device memory
 * instead and never leave the device.
 *
 * Differences from the host model (docs/model.md, "Device backend"): GEMMs
 * may sum in their own order (cuBLAS does; the emulator sums each element
 * in k order, but adds a micro-batch's weight gradient to G as one sum
 * where the host model adds row by row), so results agree to float
 * rounding, not bit for bit; a full backward is backward_input then
 * backward_weight.  The checks and the context's state machine are the
 * host model's (model_cpu.c calls in here after them).
 */
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "worker/dev_kernels.h"
#include "worker/dp_dev.h"
#include "worker/model_int.h"

struct devm_stage {
	struct dp_dev *dev;
	const struct dp_dev_ops *ops;
	float *w, *g, *m, *v; /* device: the tensors back to back */
	int mirror;	      /* the host arrays hold the device state */
	int io;		      /* dp_model_stage_dev_io(): packed rows are device memory */
	int rc;		      /* a failure in a void call, for the next int call */
	struct dp_err err;
};

static const struct dp_dev_ops *const backends[] = {
	&dp_dev_cuda,
	&dp_dev_emu,
	NULL,
};

const struct dp_dev_ops *const *dp_dev_backends(void)
{
	return backends;
}

static int find_backend(const char *name, const struct dp_dev_ops **out, struct dp_err *err)
{
	for (int i = 0; backends[i]; i++)
		if (strcmp(backends[i]->name, name) == 0) {
			*out = backends[i];
			return 0;
		}
	(void)dp_err_set(err, EINVAL, "model: unknown backend '%s' (cpu, emu or cuda)", name);
	return -EINVAL; /* a constant: callers rely on 0 meaning "found" */
}

int dp_dev_backend_check(const char *name, struct dp_err *err)
{
	const struct dp_dev_ops *ops;

	if (!name || strcmp(name, "cpu") == 0)
		return 0;
	return find_backend(name, &ops, err);
}

const char *dp_model_stage_backend(const struct dp_model_stage *st)
{
	return st->dev ? st->dev->ops->name : "cpu";
}

/* ---- stage ---------------------------------------------------------------- */

void devm_stage_free(struct devm_stage *sd)
{
	if (!sd)
		return;
	if (sd->dev) {
		sd->ops->free(sd->dev, sd->w);
		sd->ops->free(sd->dev, sd->g);
		sd->ops->free(sd->dev, sd->m);
		sd->ops->free(sd->dev, sd->v);
		sd->ops->close(sd->dev);
	}
	free(sd);
}

int dp_model_stage_new_dev(const struct dp_model_cfg *cfg, int first, int count, int roles,
			   const char *backend, int device, struct dp_model_stage **out,
			   struct dp_err *err)
{
	const struct dp_dev_ops *ops = NULL;
	struct dp_model_stage *st = NULL;
	struct devm_stage *sd;
	size_t bytes;
	int rc;

	if (!backend || strcmp(backend, "cpu") == 0)
		return dp_model_stage_new(cfg, first, count, roles, out, err);
	rc = find_backend(backend, &ops, err);
	if (rc)
		return rc;
	if (device < 0)
		return dp_err_set(err, EINVAL, "model: bad device %d", device);
	rc = dp_model_stage_new(cfg, first, count, roles, &st, err);
	if (rc)
		return rc;
	sd = calloc(1, sizeof(*sd));
	if (!sd) {
		dp_model_stage_free(st);
		return dp_err_set(err, ENOMEM, "model: out of memory");
	}
	st->dev = sd;
	sd->ops = ops;
	rc = ops->open(device, &sd->dev, err);
	if (rc)
		goto fail;
	bytes = (st->total ? st->total : 1) * sizeof(float);
	if ((rc = ops->alloc(sd->dev, bytes, (void **)&sd->w, err)) ||
	    (rc = ops->alloc(sd->dev, bytes, (void **)&sd->g, err)) ||
	    (rc = ops->alloc(sd->dev, bytes, (void **)&sd->m, err)) ||
	    (rc = ops->alloc(sd->dev, bytes, (void **)&sd->v, err)) ||
	    (rc = ops->h2d(sd->dev, sd->w, st->w, st->total * sizeof(float), err)) ||
	    (rc = ops->sync(sd->dev, err)))
		goto fail;
	sd->mirror = 1; /* g, m, v are zero on both sides */
	*out = st;
	return 0;
fail:
	dp_model_stage_free(st);
	return rc;
}

int dp_model_stage_new_split_dev(const struct dp_model_cfg *cfg, int nstages, int stage,
				 const char *backend, int device, struct dp_model_stage **out,
				 struct dp_err *err)
{
	int first, count;

	if (nstages < 1 || stage < 0 || stage >= nstages)
		return dp_err_set(err, EINVAL, "model: no stage %d of %d", stage, nstages);
	dp_model_split(cfg->layers, nstages, stage, &first, &count);
	return dp_model_stage_new_dev(cfg, first, count,
				      (stage == 0 ? DP_MODEL_EMBED : 0) |
					      (stage == nstages - 1 ? DP_MODEL_HEAD : 0),
				      backend, device, out, err);
}

int devm_sticky(const struct dp_model_stage *st, struct dp_err *err)
{
	const struct devm_stage *sd = st->dev;

	if (!sd->rc)
		return 0;
	(void)dp_err_set(err, -sd->rc, "%s (in an earlier call)", sd->err.msg);
	return sd->rc;
}

static void keep(struct dp_model_stage *st, int rc)
{
	if (rc && !st->dev->rc)
		st->dev->rc = rc;
}

int devm_flat_download(struct dp_model_stage *st)
{
	struct devm_stage *sd = st->dev;
	const size_t b = st->total * sizeof(float);
	int rc;

	if (sd->mirror)
		return 0;
	if ((rc = sd->ops->d2h(sd->dev, st->w, sd->w, b, &sd->err)) ||
	    (rc = sd->ops->d2h(sd->dev, st->g, sd->g, b, &sd->err)) ||
	    (rc = sd->ops->d2h(sd->dev, st->m, sd->m, b, &sd->err)) ||
	    (rc = sd->ops->d2h(sd->dev, st->v, sd->v, b, &sd->err))) {
		keep(st, rc);
		return rc;
	}
	sd->mirror = 1;
	return 0;
}

int devm_flat_commit(struct dp_model_stage *st, struct dp_err *err)
{
	struct devm_stage *sd = st->dev;
	const size_t b = st->total * sizeof(float);
	int rc = devm_sticky(st, err);

	if (rc || !sd->mirror) /* !mirror: nothing downloaded, the device is current */
		return rc;
	if ((rc = sd->ops->h2d(sd->dev, sd->w, st->w, b, err)) ||
	    (rc = sd->ops->h2d(sd->dev, sd->g, st->g, b, err)) ||
	    (rc = sd->ops->h2d(sd->dev, sd->m, st->m, b, err)))
		return rc;
	return sd->ops->h2d(sd->dev, sd->v, st->v, b, err);
}

static int kern(const struct dp_model_stage *st, int id, const struct dp_dev_kargs *a, size_t n,
		struct dp_err *err)
{
	if (!n)
		return 0;
	return st->dev->ops->kernel(st->dev->dev, id, a, (long)n, err);
}

void devm_zero_grad(struct dp_model_stage *st)
{
	struct dp_dev_kargs a = { .y = st->dev->g };

	st->dev->mirror = 0;
	keep(st, kern(st, DP_DEV_K_ZERO, &a, st->total, &st->dev->err));
}

void devm_step(struct dp_model_stage *st)
{
	struct devm_stage *sd = st->dev;
	struct dp_dev_kargs a = { .a = sd->g, .y = sd->w, .z = sd->m, .u = sd->v };

	st->adam_t++;
	a.f0 = st->cfg.lr;
	a.f1 = (float)(1.0 - pow(0.9, (double)st->adam_t));
	a.f2 = (float)(1.0 - pow(0.99, (double)st->adam_t));
	sd->mirror = 0;
	keep(st, kern(st, DP_DEV_K_ADAM, &a, st->total, &sd->err));
}

/* ---- GEMMs on row-major [in][out] matrices ---------------------------------
 *
 * A row-major r x c array is, to column-major cuBLAS, its c x r transpose.
 * So y = x W (rows x out) is y^T = W^T x^T: gemm(N, N, out, rows, in). */

static float *DW(const struct dp_model_stage *st, int layer, int id)
{
	return st->dev->w + st->tens[st->layer_base + (layer - st->first) * st->per_layer + id].off;
}

static float *DG(const struct dp_model_stage *st, int layer, int id)
{
	return st->dev->g + st->tens[st->layer_base + (layer - st->first) * st->per_layer + id].off;
}

/* y = x W + beta y */
static int mm(const struct dp_model_stage *st, const float *x, const float *W, float *y,
	      size_t rows, size_t in, size_t out, float beta, struct dp_err *err)
{
	if (!rows)
		return 0;
	return st->dev->ops->gemm(st->dev->dev, 0, 0, (int)out, (int)rows, (int)in, 1.0f, W,
				  (int)out, x, (int)in, beta, y, (int)out, err);
}

/* dx = dy W^T + beta dx: dx^T (in x rows) = W (in x out) dy^T */
static int mm_t(const struct dp_model_stage *st, const float *dy, const float *W, float *dx,
		size_t rows, size_t in, size_t out, float beta, struct dp_err *err)
{
	if (!rows)
		return 0;
	return st->dev->ops->gemm(st->dev->dev, 1, 0, (int)in, (int)rows, (int)out, 1.0f, W,
				  (int)out, dy, (int)out, beta, dx, (int)in, err);
}

/* G += x^T dy: G^T (out x in) += dy^T x */
static int mm_grad(const struct dp_model_stage *st, const float *x, const float *dy, float *G,
		   size_t rows, size_t in, size_t out, struct dp_err *err)
{
	if (!rows)
		return 0;
	return st->dev->ops->gemm(st->dev->dev, 0, 1, (int)out, (int)in, (int)rows, 1.0f, dy,
				  (int)out, x, (int)in, 1.0f, G, (int)out, err);
}

static int h2d(const struct dp_model_stage *st, void *dst, const void *src, size_t bytes,
	       struct dp_err *err)
{
	return bytes ? st->dev->ops->h2d(st->dev->dev, dst, src, bytes, err) : 0;
}

static int d2h(const struct dp_model_stage *st,
	       void *dst, // NOLINT(readability-non-const-parameter): written by the copy
	       const void *src, size_t bytes, struct dp_err *err)
{
	return bytes ? st->dev->ops->d2h(st->dev->dev, dst, src, bytes, err) : 0;
}

/* Kernel @id of layer @L (NULL: stage-wide) with the context's arguments. */
static int kern_l(const struct dp_model_stage *st, const struct dp_model_ctx *c,
		  const struct lctx *L, int id, size_t n, struct dp_err *err)
{
	const struct dp_dev_kargs a = dp_model_kargs(c, L, id);

	return kern(st, id, &a, n, err);
}

static int copy(const struct dp_model_stage *st,
		float *dst, // NOLINT(readability-non-const-parameter): written by the kernel
		const float *src, size_t n, struct dp_err *err)
{
	struct dp_dev_kargs a = { .a = src, .y = dst };

	return kern(st, DP_DEV_K_COPY, &a, n, err);
}

/* Rows the caller hands in (@src: host memory, or device memory with
 * dp_model_stage_dev_io) into device array @dst. */
static int rows_in(const struct dp_model_stage *st, float *dst, const float *src, size_t n,
		   struct dp_err *err)
{
	return st->dev->io ? copy(st, dst, src, n, err) : h2d(st, dst, src, n * sizeof(float), err);
}

/* Device rows @src out to the caller's host @dst.  With dev_io the
 * callers have the kernel write straight into the caller's device buffer
 * (@src == @dst), so there is nothing to move. */
static int rows_out(const struct dp_model_stage *st, float *dst, const float *src, size_t n,
		    struct dp_err *err)
{
	assert(!st->dev->io || dst == src);
	return st->dev->io ? 0 : d2h(st, dst, src, n * sizeof(float), err);
}

/* ---- device memory for the caller ------------------------------------------------ */

int dp_model_stage_dev_io(struct dp_model_stage *st, int on, struct dp_err *err)
{
	if (!st->dev)
		return dp_err_set(err, EINVAL, "model: dev_io: a cpu stage has no device");
	st->dev->io = on != 0;
	return 0;
}

int dp_model_stage_dev_alloc(struct dp_model_stage *st, size_t bytes, void **out,
			     struct dp_err *err)
{
	if (!st->dev)
		return dp_err_set(err, EINVAL, "model: dev_alloc: a cpu stage has no device");
	return st->dev->ops->alloc(st->dev->dev, bytes ? bytes : 1, out, err);
}

void dp_model_stage_dev_free(struct dp_model_stage *st, void *p)
{
	if (st && st->dev && p)
		st->dev->ops->free(st->dev->dev, p);
}

int dp_model_stage_dev_h2d(struct dp_model_stage *st, void *dst, const void *src, size_t bytes,
			   struct dp_err *err)
{
	if (!st->dev)
		return dp_err_set(err, EINVAL, "model: dev_h2d: a cpu stage has no device");
	return h2d(st, dst, src, bytes, err);
}

int dp_model_stage_dev_d2h(
	struct dp_model_stage *st,
	void *dst, // NOLINT(readability-non-const-parameter): written by the copy
	const void *src, size_t bytes, struct dp_err *err)
{
	if (!st->dev)
		return dp_err_set(err, EINVAL, "model: dev_d2h: a cpu stage has no device");
	return d2h(st, dst, src, bytes, err);
}

int dp_model_stage_dev_gather(struct dp_model_stage *st,
			      float *dst, // NOLINT(readability-non-const-parameter): kernel output
			      const float *src, const int32_t *idx, long rows, struct dp_err *err)
{
	struct dp_dev_kargs a = { .a = src, .ia = idx, .y = dst, .n0 = (long)st->H };

	if (!st->dev)
		return dp_err_set(err, EINVAL, "model: dev_gather: a cpu stage has no device");
	return rows > 0 ? kern(st, DP_DEV_K_GATHER, &a, (size_t)rows, err) : 0;
}

int dp_model_stage_dev_sync(struct dp_model_stage *st, struct dp_err *err)
{
	if (!st->dev)
		return 0;
	return st->dev->ops->sync(st->dev->dev, err);
}

/* ---- contexts ---------------------------------------------------------------- */

int devm_ctx_new(struct dp_model_stage *st, struct dp_model_ctx **out, struct dp_err *err)
{
	struct dp_model_ctx *c;
	int rc = devm_sticky(st, err);

	if (rc)
		return rc;
	c = calloc(1, sizeof(*c));
	if (!c)
		return dp_err_set(err, ENOMEM, "model: out of memory");
	c->st = st;
	dp_model_ctx_layout(c); /* sizes only */
	c->hblock = calloc(1, c->hblock_bytes);
	if (!c->hblock) {
		free(c);
		return dp_err_set(err, ENOMEM, "model: out of memory");
	}
	rc = st->dev->ops->alloc(st->dev->dev, c->block_bytes, (void **)&c->block, err);
	if (rc) {
		free(c->hblock);
		free(c);
		return rc;
	}
	dp_model_ctx_layout(c);
	*out = c;
	return 0;
}

static void expert_release(const struct dp_model_stage *st, struct ectx *x)
{
	float **b[] = { &x->in, &x->u, &x->z, &x->dy, &x->du, &x->o };

	for (int i = 0; i < 6; i++) {
		st->dev->ops->free(st->dev->dev, *b[i]);
		*b[i] = NULL;
	}
	x->cap = 0;
}

void devm_ctx_free(struct dp_model_ctx *c)
{
	const struct dp_model_stage *st = c->st;

	for (int l = 0; l < st->count; l++)
		for (size_t e = 0; e < st->E; e++)
			expert_release(st, &c->L[l].ex[e]);
	st->dev->ops->free(st->dev->dev, c->block);
	free(c->hblock);
	free(c);
}

size_t devm_ctx_bytes(const struct dp_model_ctx *c)
{
	const struct dp_model_stage *st = c->st;
	size_t b = c->block_bytes;

	for (int l = 0; l < st->count; l++)
		for (size_t e = 0; e < st->E; e++)
			b += c->L[l].ex[e].cap * (3 * st->H + 3 * st->F) * sizeof(float);
	return b;
}

int devm_expert_reserve(const struct dp_model_stage *st, struct ectx *x, size_t n,
			struct dp_err *err)
{
	const size_t H = st->H, F = st->F, sz[6] = { H, F, F, H, F, H };
	float **b[] = { &x->in, &x->u, &x->z, &x->dy, &x->du, &x->o };
	int rc;

	if (n <= x->cap)
		return 0;
	expert_release(st, x);
	for (int i = 0; i < 6; i++) {
		rc = st->dev->ops->alloc(st->dev->dev, n * sz[i] * sizeof(float), (void **)b[i],
					 err);
		if (rc) {
			expert_release(st, x);
			return rc;
		}
	}
	x->cap = n;
	return 0;
}

#define layer_in   dp_model_layer_in
#define stage_out  dp_model_stage_out
#define layer_dout dp_model_layer_dout
#define stage_din  dp_model_stage_din

/* ---- forward ------------------------------------------------------------------- */

int devm_forward_begin(struct dp_model_stage *st, struct dp_model_ctx *c,
		       const struct dp_model_io *in, struct dp_err *err)
{
	const size_t T = st->T, H = st->H;
	int rc;

	if (st->has_embed) {
		struct dp_dev_kargs a = { .a = st->dev->w + st->tens[st->embed_idx].off,
					  .ia = c->tokens,
					  .y = c->x_in,
					  .n0 = (long)H };

		rc = h2d(st, c->tokens, in->tokens, T * sizeof(int32_t), err);
		if (!rc)
			rc = kern(st, DP_DEV_K_EMBED, &a, T, err);
	} else {
		rc = h2d(st, c->x_in, in->x, T * H * sizeof(float), err);
	}
	if (!rc && st->has_head)
		rc = h2d(st, c->targets, in->targets, T * sizeof(int32_t), err);
	return rc;
}

static int attention_fwd(const struct dp_model_stage *st, const struct dp_model_ctx *c,
			 struct lctx *L, int layer, struct dp_err *err)
{
	const size_t T = st->T, H = st->H;
	const float *x = layer_in(c, layer);
	int rc;

	if ((rc = mm(st, x, DW(st, layer, P_WQ), L->q, T, H, H, 0.0f, err)) ||
	    (rc = mm(st, x, DW(st, layer, P_WK), L->k, T, H, H, 0.0f, err)) ||
	    (rc = mm(st, x, DW(st, layer, P_WV), L->v, T, H, H, 0.0f, err)) ||
	    (rc = kern_l(st, c, L, DP_DEV_K_ATTN_FWD, T, err)) ||
	    /* h = x + a Wo */
	    (rc = copy(st, L->h, x, T * H, err)) ||
	    (rc = mm(st, L->a, DW(st, layer, P_WO), L->h, T, H, H, 1.0f, err)))
		return rc;
	return 0;
}

/* Gate softmax and routing on the device (one thread per token), then the
 * packed layout on the host, where the executor needs it, and back. */
static int gate_fwd(const struct dp_model_stage *st, const struct dp_model_ctx *c, struct lctx *L,
		    int layer, struct dp_err *err)
{
	const size_t T = st->T, H = st->H, E = st->E, K = st->K;
	int rc;

	if ((rc = mm(st, L->h, DW(st, layer, P_WG), L->s, T, H, E, 0.0f, err)) ||
	    (rc = kern_l(st, c, L, DP_DEV_K_GATE_ROUTE, T, err)) ||
	    (rc = d2h(st, L->sel, L->sel_d, T * K * sizeof(int32_t), err)) ||
	    (rc = d2h(st, L->wh, L->w, T * K * sizeof(float), err)))
		return rc;
	dp_model_pack_route(T, K, E, L->sel, L->fill, L->off, L->row_tok, L->tok_row);
	if ((rc = h2d(st, L->row_tok_d, L->row_tok, T * K * sizeof(int32_t), err)) ||
	    (rc = h2d(st, L->tok_row_d, L->tok_row, T * K * sizeof(int32_t), err)))
		return rc;
	L->route = (struct dp_model_route){
		.tokens = (int)T,
		.top_k = (int)K,
		.experts = (int)E,
		.expert = L->sel,
		.weight = L->wh,
		.offset = L->off,
		.row_token = L->row_tok,
		.token_row = L->tok_row,
	};
	return 0;
}

int devm_attn_forward(struct dp_model_stage *st, struct dp_model_ctx *c, struct lctx *L, int layer,
		      struct dp_err *err)
{
	const size_t T = st->T, H = st->H, F = st->F;
	struct dp_dev_kargs a = { .a = L->su, .y = L->sz };
	int rc;

	/* the shared expert's output goes to L->out, combine adds the rest */
	if ((rc = attention_fwd(st, c, L, layer, err)) || (rc = gate_fwd(st, c, L, layer, err)) ||
	    (rc = mm(st, L->h, DW(st, layer, P_S1), L->su, T, H, F, 0.0f, err)) ||
	    (rc = kern(st, DP_DEV_K_SILU, &a, T * F, err)) ||
	    (rc = mm(st, L->sz, DW(st, layer, P_S2), L->out, T, F, H, 0.0f, err)))
		return rc;
	return 0;
}

int devm_dispatch(struct dp_model_stage *st, struct dp_model_ctx *c, struct lctx *L, float *packed,
		  struct dp_err *err)
{
	const size_t H = st->H, R = st->T * st->K;
	float *dst = st->dev->io ? packed : c->pk;
	struct dp_dev_kargs a = { .a = L->h, .ia = L->row_tok_d, .y = dst, .n0 = (long)H };
	int rc = kern(st, DP_DEV_K_GATHER, &a, R, err);

	return rc ? rc : rows_out(st, packed, dst, R * H, err);
}

int devm_expert_forward(struct dp_model_stage *st, struct ectx *x, int layer, int e,
			const float *in, float *out, struct dp_err *err)
{
	const size_t H = st->H, F = st->F, rows = x->n;
	struct dp_dev_kargs a = { .a = x->u, .y = x->z };
	float *o = st->dev->io ? out : x->o;
	int rc;

	if ((rc = rows_in(st, x->in, in, rows * H, err)) ||
	    (rc = mm(st, x->in, DW(st, layer, P_E1(e)), x->u, rows, H, F, 0.0f, err)) ||
	    (rc = kern(st, DP_DEV_K_SILU, &a, rows * F, err)) ||
	    (rc = mm(st, x->z, DW(st, layer, P_E2(e)), o, rows, F, H, 0.0f, err)))
		return rc;
	return rows_out(st, out, o, rows * H, err);
}

int devm_combine_forward(struct dp_model_stage *st, struct dp_model_ctx *c, struct lctx *L,
			 const float *packed_out, struct dp_err *err)
{
	int rc = rows_in(st, L->ey, packed_out, st->T * st->K * st->H, err);

	return rc ? rc : kern_l(st, c, L, DP_DEV_K_COMBINE, st->T, err);
}

int devm_forward_end(struct dp_model_stage *st, struct dp_model_ctx *c, float *y, double *loss,
		     struct dp_err *err)
{
	const size_t T = st->T, H = st->H, V = st->V;
	double total = 0.0;
	int rc;

	if (!st->has_head)
		return y ? d2h(st, y, stage_out(c), T * H * sizeof(float), err) : 0;
	/* logits, then in place the gradient of the loss share wrt the logits */
	if ((rc = mm(st, stage_out(c), st->dev->w + st->tens[st->head_idx].off, c->logits, T, H, V,
		     0.0f, err)) ||
	    (rc = kern_l(st, c, NULL, DP_DEV_K_XENT, T, err)) ||
	    (rc = d2h(st, c->lrow_h, c->lrow, T * sizeof(double), err)))
		return rc;
	for (size_t t = 0; t < T; t++) /* token order, as the host model */
		total += c->lrow_h[t];
	if (loss)
		*loss = total / (double)(st->M * T);
	return 0;
}

/* ---- backward for input ------------------------------------------------------------ */

int devm_backward_begin(struct dp_model_stage *st, struct dp_model_ctx *c, const float *dy,
			struct dp_err *err)
{
	const size_t T = st->T, H = st->H;

	if (st->has_head)
		return mm_t(st, c->logits, st->dev->w + st->tens[st->head_idx].off, c->dtop, T, H,
			    st->V, 0.0f, err);
	return h2d(st, c->dtop, dy, T * H * sizeof(float), err);
}

int devm_combine_backward(struct dp_model_stage *st, struct dp_model_ctx *c, struct lctx *L,
			  int layer, float *packed_dy, struct dp_err *err)
{
	const size_t T = st->T, H = st->H, F = st->F, E = st->E, K = st->K;
	const float *dout = layer_dout(c, layer);
	struct dp_dev_kargs sb = { .a = L->su, .y = L->dsu };
	struct dp_dev_kargs cb = dp_model_kargs(c, L, DP_DEV_K_COMBINE_BWD);
	int rc;

	cb.a = dout;
	cb.y = st->dev->io ? packed_dy : c->pk;
	/* shared expert; routed: packed dY = w * dOut, softmax backward; then
	 * dh = dOut + shared + gate (attn_backward adds the experts) */
	if ((rc = mm_t(st, dout, DW(st, layer, P_S2), L->dsu, T, F, H, 0.0f, err)) ||
	    (rc = kern(st, DP_DEV_K_SILU_BACK, &sb, T * F, err)) ||
	    (rc = kern(st, DP_DEV_K_COMBINE_BWD, &cb, T, err)) ||
	    (rc = rows_out(st, packed_dy, cb.y, T * K * H, err)) ||
	    (rc = copy(st, L->dh, dout, T * H, err)) ||
	    (rc = mm_t(st, L->dsu, DW(st, layer, P_S1), L->dh, T, H, F, 1.0f, err)) ||
	    (rc = mm_t(st, L->dl, DW(st, layer, P_WG), L->dh, T, H, E, 1.0f, err)))
		return rc;
	return 0;
}

int devm_expert_backward_input(struct dp_model_stage *st, struct ectx *x, int layer, int e,
			       const float *dout, float *din, struct dp_err *err)
{
	const size_t H = st->H, F = st->F, rows = x->n;
	struct dp_dev_kargs a = { .a = x->u, .y = x->du };
	float *o = st->dev->io ? din : x->o;
	int rc;

	if ((rc = rows_in(st, x->dy, dout, rows * H, err)) ||
	    (rc = mm_t(st, x->dy, DW(st, layer, P_E2(e)), x->du, rows, F, H, 0.0f, err)) ||
	    (rc = kern(st, DP_DEV_K_SILU_BACK, &a, rows * F, err)) ||
	    (rc = mm_t(st, x->du, DW(st, layer, P_E1(e)), o, rows, H, F, 0.0f, err)))
		return rc;
	return rows_out(st, din, o, rows * H, err);
}

int devm_attn_backward(struct dp_model_stage *st, struct dp_model_ctx *c, struct lctx *L, int layer,
		       const float *packed_dx, struct dp_err *err)
{
	const size_t T = st->T, H = st->H, K = st->K;
	struct dp_dev_kargs rows = dp_model_kargs(c, L, DP_DEV_K_ADD_ROWS);
	int rc;

	rows.a = st->dev->io ? packed_dx : c->pk;
	/* dh += the experts' rows; then dx = dh + dq Wq' + dk Wk' + dv Wv' */
	if ((!st->dev->io && (rc = h2d(st, c->pk, packed_dx, T * K * H * sizeof(float), err))) ||
	    (rc = kern(st, DP_DEV_K_ADD_ROWS, &rows, T, err)) ||
	    (rc = mm_t(st, L->dh, DW(st, layer, P_WO), L->da, T, H, H, 0.0f, err)) ||
	    (rc = kern_l(st, c, L, DP_DEV_K_ATTN_BWD_Q, T, err)) ||
	    (rc = kern_l(st, c, L, DP_DEV_K_ATTN_BWD_KV, T, err)) ||
	    (rc = copy(st, L->dx, L->dh, T * H, err)) ||
	    (rc = mm_t(st, L->dq, DW(st, layer, P_WQ), L->dx, T, H, H, 1.0f, err)) ||
	    (rc = mm_t(st, L->dk, DW(st, layer, P_WK), L->dx, T, H, H, 1.0f, err)) ||
	    (rc = mm_t(st, L->dv, DW(st, layer, P_WV), L->dx, T, H, H, 1.0f, err)))
		return rc;
	return 0;
}

int devm_backward_end(struct dp_model_stage *st, struct dp_model_ctx *c, float *dx,
		      struct dp_err *err)
{
	return d2h(st, dx, stage_din(c), st->T * st->H * sizeof(float), err);
}

/* ---- backward for weights ------------------------------------------------------------ */

int devm_expert_w(struct dp_model_stage *st, struct ectx *x, int layer, int e, struct dp_err *err)
{
	int rc = 0;

	st->dev->mirror = 0;
	if (x->n &&
	    ((rc = mm_grad(st, x->in, x->du, DG(st, layer, P_E1(e)), x->n, st->H, st->F, err)) ||
	     (rc = mm_grad(st, x->z, x->dy, DG(st, layer, P_E2(e)), x->n, st->F, st->H, err))))
		return rc;
	x->bwd = 0;
	x->fwd = 0;
	return 0;
}

/* Gate, shared expert, routed experts whose W is pending, attention. */
static int layer_w(struct dp_model_stage *st, struct dp_model_ctx *c, int layer, struct dp_err *err)
{
	const size_t T = st->T, H = st->H, F = st->F;
	struct lctx *L = dp_model_layer_ctx(c, layer);
	const float *x = layer_in(c, layer);
	int rc;

	if ((rc = mm_grad(st, L->h, L->dl, DG(st, layer, P_WG), T, H, st->E, err)) ||
	    (rc = mm_grad(st, L->h, L->dsu, DG(st, layer, P_S1), T, H, F, err)) ||
	    (rc = mm_grad(st, L->sz, layer_dout(c, layer), DG(st, layer, P_S2), T, F, H, err)))
		return rc;
	for (size_t e = 0; e < st->E; e++)
		if (L->ex[e].bwd && (rc = devm_expert_w(st, &L->ex[e], layer, (int)e, err)))
			return rc;
	if ((rc = mm_grad(st, x, L->dq, DG(st, layer, P_WQ), T, H, H, err)) ||
	    (rc = mm_grad(st, x, L->dk, DG(st, layer, P_WK), T, H, H, err)) ||
	    (rc = mm_grad(st, x, L->dv, DG(st, layer, P_WV), T, H, H, err)) ||
	    (rc = mm_grad(st, L->a, L->dh, DG(st, layer, P_WO), T, H, H, err)))
		return rc;
	return 0;
}

int devm_backward_weight(struct dp_model_stage *st, struct dp_model_ctx *c, struct dp_err *err)
{
	int rc;

	st->dev->mirror = 0;
	if (st->has_head &&
	    (rc = mm_grad(st, stage_out(c), c->logits, st->dev->g + st->tens[st->head_idx].off,
			  st->T, st->H, st->V, err)))
		return rc;
	for (int l = st->first + st->count - 1; l >= st->first; l--)
		if ((rc = layer_w(st, c, l, err)))
			return rc;
	if (st->has_embed) {
		struct dp_dev_kargs a = dp_model_kargs(c, NULL, DP_DEV_K_EMBED_GRAD);

		a.y = st->dev->g + st->tens[st->embed_idx].off;

		return kern(st, DP_DEV_K_EMBED_GRAD, &a, st->V, err);
	}
	return 0;
}
