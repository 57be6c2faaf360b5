/* worker/model_int.h - internals of the model shared by the host model
 * (worker/model_cpu.c) and its device stages (worker/model_dev.c): the
 * stage struct and tensor layout, and the device entry points the public
 * dp_model_* calls forward to when a stage lives on a device (st->dev). */
#ifndef DP_MODEL_INT_H
#define DP_MODEL_INT_H

#include <stddef.h>

#include "worker/dp_dev.h"
#include "worker/dp_model.h"

#define MAX_EXPERTS 256
#define MAX_DIM	    (1 << 16)

/* Per-layer tensors: 7 fixed ones, then (w1, w2) per routed expert. */
enum { P_WQ, P_WK, P_WV, P_WO, P_WG, P_S1, P_S2, P_NFIXED };
#define P_E1(e) (P_NFIXED + 2 * (e))
#define P_E2(e) (P_NFIXED + 2 * (e) + 1)

struct tensor_meta {
	char name[48];
	size_t off, n;
	int layer, expert;
};

struct devm_stage; /* model_dev.c */

struct dp_model_stage {
	struct dp_model_cfg cfg;
	int first, count, has_embed, has_head;
	size_t H, F, E, K, V, S, T, M;
	float *w, *g, *m, *v; /* all tensors back to back (device stage: host mirror) */
	size_t total;
	struct tensor_meta *tens;
	int ntens, per_layer, layer_base, embed_idx, head_idx;
	long adam_t;
	float *pk_a, *pk_b;	/* T*K*H scratch for the whole-stage calls */
	struct devm_stage *dev; /* NULL: the host model */
};

/* Context states and the steps of one layer, in the order they must happen. */
enum { CTX_EMPTY, CTX_FWD, CTX_BWD_INPUT };
enum layer_step { L_NONE, L_ATTN, L_COMBINED, L_COMBINE_BWD, L_ATTN_BWD };

/* Contexts: one layout for both; on a device stage the float activations
 * and the dev-only arrays are device memory, the routing (sel, off,
 * row_tok, tok_row, fill, wh) host memory. */

/* Expert side of one (layer, expert): the rows this context computed. */
struct ectx {
	size_t n, cap;
	int fwd, bwd;
	float *in, *u, *z, *dy, *du;
	float *o; /* device: the rows going out */
};

/* Token side of one layer. */
struct lctx {
	float *q, *k, *v, *p, *a, *h, *s, *w, *su, *sz, *ey, *out;
	float *dh, *da, *dl, *dsu, *dq, *dk, *dv, *dx;
	int *sel, *off, *row_tok, *tok_row, *fill;
	int done; /* last step done on this layer, enum layer_step */
	struct dp_model_route route;
	struct ectx *ex; /* [E] */
	/* device stage only */
	float *ds, *wh;				/* attention score grads; host gate weights */
	int32_t *sel_d, *row_tok_d, *tok_row_d; /* device copies of the routing */
};

struct dp_model_ctx {
	struct dp_model_stage *st;
	int state;
	char *block; /* one allocation for everything but the expert rows */
	size_t block_bytes;
	char *hblock; /* device stage: the host part */
	size_t hblock_bytes;
	int32_t *tokens, *targets;
	float *x_in, *dtop, *logits;
	double *lrow, *lrow_h; /* per-token losses (on a device stage: device, host) */
	struct lctx *L;	       /* [count] */
	float *pk;	       /* device stage: packed rows in/out */
};

/* Carve the arrays of @c from its blocks (NULL blocks: only count bytes). */
void dp_model_ctx_layout(struct dp_model_ctx *c);

/* The arguments of kernel @id (enum dp_dev_kernel) for layer @L of @c
 * (NULL for the stage-wide ones): the same for the host model and a device
 * stage, whose kernels read the device copies of the routing.  Callers
 * add what is not in the context: the attention/combine packed rows
 * (COMBINE_BWD: a = dOut, y = packed dY; ADD_ROWS: a = packed dX) and the
 * embedding gradient (EMBED_GRAD: y). */
struct dp_dev_kargs dp_model_kargs(const struct dp_model_ctx *c, const struct lctx *L, int id);

/* Where a layer's input/output and their gradients live in @ctx. */
struct lctx *dp_model_layer_ctx(const struct dp_model_ctx *ctx, int layer);
const float *dp_model_layer_in(const struct dp_model_ctx *ctx, int layer);
const float *dp_model_stage_out(const struct dp_model_ctx *ctx);
const float *dp_model_layer_dout(const struct dp_model_ctx *ctx, int layer);
const float *dp_model_stage_din(const struct dp_model_ctx *ctx);

/* The packed layout of one layer's routing (model_cpu.c): @sel [T*K] ->
 * @off [E+1], @row_tok, @tok_row [T*K]; @fill [E] is scratch. */
void dp_model_pack_route(size_t T, size_t K, size_t E, const int *sel, int *fill, int *off,
			 int *row_tok, int *tok_row);

/* ---- model_dev.c: the device math of each public call ----
 * Called by model_cpu.c after its checks, with the context's state
 * updated there; each returns 0 or -errno with @err. */
void devm_stage_free(struct devm_stage *sd);
/* The kept failure of a void call (as -errno with @err), or 0. */
int devm_sticky(const struct dp_model_stage *st, struct dp_err *err);
int devm_flat_download(struct dp_model_stage *st);
int devm_flat_commit(struct dp_model_stage *st, struct dp_err *err);
void devm_zero_grad(struct dp_model_stage *st);
void devm_step(struct dp_model_stage *st);

int devm_ctx_new(struct dp_model_stage *st, struct dp_model_ctx **out, struct dp_err *err);
void devm_ctx_free(struct dp_model_ctx *c);
size_t devm_ctx_bytes(const struct dp_model_ctx *c);
int devm_expert_reserve(const struct dp_model_stage *st, struct ectx *x, size_t n,
			struct dp_err *err);

int devm_forward_begin(struct dp_model_stage *st, struct dp_model_ctx *c,
		       const struct dp_model_io *in, struct dp_err *err);
int devm_attn_forward(struct dp_model_stage *st, struct dp_model_ctx *c, struct lctx *L, int layer,
		      struct dp_err *err);
int devm_dispatch(struct dp_model_stage *st, struct dp_model_ctx *c, struct lctx *L, float *packed,
		  struct dp_err *err);
int devm_expert_forward(struct dp_model_stage *st, struct ectx *x, int layer, int e,
			const float *in, float *out, struct dp_err *err);
int devm_combine_forward(struct dp_model_stage *st, struct dp_model_ctx *c, struct lctx *L,
			 const float *packed_out, struct dp_err *err);
int devm_forward_end(struct dp_model_stage *st, struct dp_model_ctx *c, float *y, double *loss,
		     struct dp_err *err);
int devm_backward_begin(struct dp_model_stage *st, struct dp_model_ctx *c, const float *dy,
			struct dp_err *err);
int devm_combine_backward(struct dp_model_stage *st, struct dp_model_ctx *c, struct lctx *L,
			  int layer, float *packed_dy, struct dp_err *err);
int devm_expert_backward_input(struct dp_model_stage *st, struct ectx *x, int layer, int e,
			       const float *dout, float *din, struct dp_err *err);
int devm_expert_w(struct dp_model_stage *st, struct ectx *x, int layer, int e, struct dp_err *err);
int devm_attn_backward(struct dp_model_stage *st, struct dp_model_ctx *c, struct lctx *L, int layer,
		       const float *packed_dx, struct dp_err *err);
int devm_backward_end(struct dp_model_stage *st, struct dp_model_ctx *c, float *dx,
		      struct dp_err *err);
int devm_backward_weight(struct dp_model_stage *st, struct dp_model_ctx *c, struct dp_err *err);

#endif
