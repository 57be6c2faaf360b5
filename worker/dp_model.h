/* worker/dp_model.h - the small MoE model of the CPU backend: forward,
 * backward-for-input (I) and backward-for-weights (W) per pipeline stage and
 * micro-batch, split into the four components an executor overlaps
 * (attention, dispatch, expert MLP, combine), an Adam step, the synthetic
 * data, and a single-process reference trainer.  docs/model.md has the math
 * and the reduction order.
 *
 * Model: tokens -> embedding -> L x [ single-head causal attention with a
 * residual; MoE block: softmax gate, group-limited top-k routing, routed
 * SiLU expert MLPs weighted by their gate probability, one shared expert,
 * residual ] -> output head -> cross-entropy over the vocabulary, averaged
 * over every token of the step's micro-batches.
 *
 * Stages: a stage is a contiguous range of layers [first, first + count);
 * the first stage also owns the embedding, the last the head and the loss.
 * A stage owns parameters, gradients and Adam state for its layers,
 * including every routed expert (an EP executor only computes and updates
 * the experts it owns, see dp_model_expert_owner()).  Parameters are
 * initialised from the seed per tensor, so any split gives the same values.
 *
 * Determinism: all math is float32 in a fixed loop order, no threads, no
 * BLAS.  Forward activations, the loss and all input gradients of a row do
 * not depend on how rows are grouped (per micro-batch, per expert pack);
 * every parameter gradient element is one running float sum whose terms are
 * added in call order, then row order (see docs/model.md).
 *
 * Device stages: worker/dp_dev.h makes stages whose state and math live on
 * a device ("emu", "cuda"); they are used through these same calls.
 *
 * Threads: a stage and its contexts are not thread-safe; different stages
 * may be used from different threads.  Functions returning int give 0 or a
 * negative errno with @err (may be NULL) filled.
 */
#ifndef DP_MODEL_H
#define DP_MODEL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/dp_err.h"

struct dp_model_cfg {
	int layers;	    /* L: MoE layers in the whole model, >= 1 */
	int hidden;	    /* H: model width */
	int ffn_hidden;	    /* F: width of every expert MLP (routed and shared) */
	int experts;	    /* E: routed experts per layer */
	int shared_experts; /* must be 1 */
	int top_k;	    /* routed experts per token, 1..E */
	int groups;	    /* expert groups; E % groups == 0; group g = experts g*E/G.. */
	int topk_groups;    /* groups a token may use; top_k <= topk_groups * E/groups */
	int vocab;	    /* V: token ids 0..V-1, >= 2 */
	int seq_len;	    /* S: tokens per sequence (the attention span) */
	int seqs;	    /* sequences per micro-batch: T = seqs * seq_len tokens */
	int micro_batches;  /* per step: the loss is the mean over all their tokens */
	float lr;	    /* Adam learning rate */
	uint64_t seed;	    /* parameters and data */
};

/* Fill @cfg with the demo-sized defaults (4 layers, H 32, F 64, 8 experts in
 * 4 groups, top-2 within 2 groups, vocab 32, 4 x 16 tokens, 4 micro-batches). */
void dp_model_cfg_default(struct dp_model_cfg *cfg);

/* 0 if @cfg is usable, else -EINVAL naming the bad field. */
int dp_model_cfg_check(const struct dp_model_cfg *cfg, struct dp_err *err);

/* Tokens in one micro-batch (seqs * seq_len). */
int dp_model_cfg_tokens(const struct dp_model_cfg *cfg);

/* Even split of the layers over @nstages: stage @stage gets [*first, *first +
 * *count); earlier stages get the extra layer.  Counts may be 0. */
void dp_model_split(int layers, int nstages, int stage, int *first, int *count);

/* EP rank that owns expert @e when the experts are sharded over @ep ranks
 * (ep divides E): e / (E / ep). */
int dp_model_expert_owner(const struct dp_model_cfg *cfg, int ep, int e);

/* ---- routing ---------------------------------------------------------- */

/* Group-limited top-k for one token: @scores are its E gate probabilities.
 * A group's score is the largest score of its experts; the topk_groups best
 * groups are kept (ties: lower group index), then the top_k best experts of
 * the kept groups (ties: lower expert index).  @sel gets top_k expert ids in
 * selection order (best first).  Pure function. */
void dp_model_route_select(const struct dp_model_cfg *cfg, const float *scores, int *sel);

/* Routing of one layer for one micro-batch, owned by the context (valid
 * until the context's next forward).  Packed layout: the T*top_k (token,
 * slot) pairs sorted by expert, then by token; expert e's rows are
 * [offset[e], offset[e+1]).  Dispatch, expert and combine buffers all use
 * this layout (rows of H floats). */
struct dp_model_route {
	int tokens;	      /* T */
	int top_k;	      /* K */
	int experts;	      /* E */
	const int *expert;    /* [T*K] expert of token t, slot k (best first) */
	const float *weight;  /* [T*K] its gate probability */
	const int *offset;    /* [E+1] packed rows of expert e start at offset[e] */
	const int *row_token; /* [T*K] token of packed row r */
	const int *token_row; /* [T*K] packed row of token t, slot k */
};

/* ---- synthetic data ---------------------------------------------------- */

/* Micro-batch @mb of step @step: T token ids and the T next-token targets.
 * Each sequence starts at a random token; the next token is perm_p(x_t) where
 * p is the parity of the previous token (p = 0 at the start) and perm_0,
 * perm_1 are affine permutations x -> (a x + b) mod V drawn from the seed:
 * learnable from the current token up to a 1-bit ambiguity that attention
 * resolves.  Pure function. */
void dp_model_batch(const struct dp_model_cfg *cfg, long step, int mb, int32_t *tokens,
		    int32_t *targets);

/* ---- stages and parameters --------------------------------------------- */

struct dp_model_stage; /* opaque: dp_model_stage_new() creates, _free() frees */
struct dp_model_ctx;   /* opaque: saved activations of one (stage, micro-batch) */

/* Roles of a stage beyond its layers. */
#define DP_MODEL_EMBED 1 /* owns the input embedding: needs first == 0 */
#define DP_MODEL_HEAD  2 /* owns the output head and loss: needs first + count == layers */

/* Create the stage holding layers [@first, @first + @count) of @cfg (copied)
 * and the parts named in @roles, with parameters initialised from cfg->seed,
 * zero gradients and Adam state.  -EINVAL if a role does not fit the range. */
int dp_model_stage_new(const struct dp_model_cfg *cfg, int first, int count, int roles,
		       struct dp_model_stage **out, struct dp_err *err);
/* Stage @stage of @nstages even stages (dp_model_split): the first gets
 * the embedding, the last the head (trailing stages may hold no layers). */
int dp_model_stage_new_split(const struct dp_model_cfg *cfg, int nstages, int stage,
			     struct dp_model_stage **out, struct dp_err *err);
void dp_model_stage_free(struct dp_model_stage *st); /* NULL is a no-op */

const struct dp_model_cfg *dp_model_stage_cfg(const struct dp_model_stage *st);
int dp_model_stage_first(const struct dp_model_stage *st); /* first layer */
int dp_model_stage_count(const struct dp_model_stage *st); /* layers held */
int dp_model_stage_has_embed(const struct dp_model_stage *st);
int dp_model_stage_has_head(const struct dp_model_stage *st);

/* One parameter tensor: name is "embed", "head" or "layer<l>.<part>" with
 * part in attn.wq attn.wk attn.wv attn.wo gate shared.w1 shared.w2
 * expert<e>.w1 expert<e>.w2.  Matrices are row-major [in][out]. */
struct dp_model_tensor {
	const char *name; /* lives as long as the stage */
	float *w;	  /* values */
	float *g;	  /* gradient accumulator */
	size_t n;	  /* elements */
	int layer;	  /* -1 for embed/head */
	int expert;	  /* routed expert index, -1 if not an expert tensor */
};
int dp_model_stage_ntensors(const struct dp_model_stage *st);
/* Tensor @i (0 <= i < ntensors) into *out; -EINVAL if out of range. */
int dp_model_stage_tensor(const struct dp_model_stage *st, int i, struct dp_model_tensor *out);

/* The stage's whole state as flat arrays of @n floats each, the tensors back
 * to back in tensor order: values, gradients, Adam moments, and the Adam
 * step count.  Owned by the stage; for gradient all-reduce between replicas
 * (DualPipe's two copies of a stage) and for checkpoints (w, m, v, step). */
struct dp_model_flat {
	float *w, *g, *m, *v;
	size_t n;
	long *adam_step;
};
void dp_model_stage_flat(struct dp_model_stage *st, struct dp_model_flat *out);
/* After writing to the arrays of dp_model_stage_flat() (or to the w/g of
 * dp_model_stage_tensor()): make the stage use them.  A no-op (0) on a host
 * stage, whose arrays are the state itself; a device stage
 * (worker/dp_dev.h) uploads its host mirror, so call it before any other
 * call on the stage.  0, or -errno (-EIO: the device failed) with @err. */
int dp_model_stage_flat_commit(struct dp_model_stage *st, struct dp_err *err);

void dp_model_stage_zero_grad(struct dp_model_stage *st);
/* Adam (beta1 0.9, beta2 0.99, eps 1e-8, bias-corrected, lr from the cfg) on
 * every tensor, elementwise, so the result does not depend on the order. */
void dp_model_stage_step(struct dp_model_stage *st);

/* ---- contexts ------------------------------------------------------------ */

/* A context for one micro-batch on @st; reusable after its W (or a full
 * backward) is done, or right after a forward (the forward is discarded).
 * An executor keeps as many as it has micro-batches in flight. */
int dp_model_ctx_new(struct dp_model_stage *st, struct dp_model_ctx **out, struct dp_err *err);
void dp_model_ctx_free(struct dp_model_ctx *ctx); /* NULL is a no-op */
/* Bytes of activation/gradient memory the context holds now (grows with the
 * expert rows it received). */
size_t dp_model_ctx_bytes(const struct dp_model_ctx *ctx);
/* Routing of layer @layer (a layer of the stage) after its attention step;
 * NULL before that or for a layer outside the stage. */
const struct dp_model_route *dp_model_ctx_route(const struct dp_model_ctx *ctx, int layer);

/* Stage input: tokens for the embedding stage, activations otherwise. */
struct dp_model_io {
	const int32_t *tokens;	/* [T], stage with the embedding */
	const int32_t *targets; /* [T], stage with the head */
	const float *x;		/* [T*H], any other stage */
};

/* ---- whole-stage calls (all experts local) -------------------------------- */

/* Forward one micro-batch.  @y gets T*H output activations (not for the head
 * stage: may be NULL there); *loss (head stage only, may be NULL elsewhere)
 * gets this micro-batch's share of the step loss: sum of its token
 * cross-entropies / (micro_batches * T).  Saves what backward needs in @ctx. */
int dp_model_forward(struct dp_model_stage *st, struct dp_model_ctx *ctx,
		     const struct dp_model_io *in, float *y, double *loss, struct dp_err *err);
/* Backward for input: @dy is dLoss/dy (T*H; ignored, may be NULL, on the head
 * stage); @dx gets dLoss/dx (T*H; NULL allowed, unused on the embedding
 * stage).  Keeps what W needs. */
int dp_model_backward_input(struct dp_model_stage *st, struct dp_model_ctx *ctx, const float *dy,
			    float *dx, struct dp_err *err);
/* Backward for weights: adds this micro-batch's parameter gradients (every
 * tensor whose rows are in @ctx: embedding, head, token-side layer weights,
 * and each expert whose backward_input ran in @ctx and whose W is still
 * pending) and frees @ctx for reuse. */
int dp_model_backward_weight(struct dp_model_stage *st, struct dp_model_ctx *ctx,
			     struct dp_err *err);
/* Full backward: the same results as backward_input then backward_weight,
 * bit for bit, but weight gradients are computed layer by layer as the input
 * gradient goes down (no W left pending). */
int dp_model_backward(struct dp_model_stage *st, struct dp_model_ctx *ctx, const float *dy,
		      float *dx, struct dp_err *err);

/* ---- the four components, for an overlapping / EP executor ---------------
 *
 * Forward of a stage = forward_begin; for each layer l of the stage in
 * order: attn_forward, dispatch (pack, then send rows to expert owners),
 * expert_forward on each expert's packed rows, (receive), combine_forward;
 * then forward_end.  Backward for input = backward_begin; for each layer in
 * reverse: combine_backward (gives packed expert output grads), (send),
 * expert_backward_input, (receive), attn_backward; then backward_end.
 * @layer is always the global layer index.  The expert calls may run on the
 * EP rank that owns the expert, in any context of that rank's stage (usually
 * its own context for the same micro-batch; it needs no forward_begin): they
 * only touch the (layer, expert) slot of the context, and packed row counts
 * there are whatever that rank received.  The expert's W is then either
 * dp_model_expert_backward_weight() or part of that context's
 * dp_model_backward_weight(). */
int dp_model_forward_begin(struct dp_model_stage *st, struct dp_model_ctx *ctx,
			   const struct dp_model_io *in, struct dp_err *err);
/* Attention, residual, gate, routing and shared expert of layer @layer. */
int dp_model_attn_forward(struct dp_model_stage *st, struct dp_model_ctx *ctx, int layer,
			  struct dp_err *err);
/* Pack the attention output rows in the route's layout into @packed (T*K*H). */
int dp_model_dispatch(struct dp_model_stage *st, struct dp_model_ctx *ctx, int layer, float *packed,
		      struct dp_err *err);
/* Expert @e of @layer on @n packed rows: out = silu(in W1) W2.  Saves its
 * input and activations in @ctx (replacing any earlier rows of this expert
 * and layer in @ctx; -EBUSY if their W is still pending). */
int dp_model_expert_forward(struct dp_model_stage *st, struct dp_model_ctx *ctx, int layer, int e,
			    int n, const float *in, float *out, struct dp_err *err);
/* out = h + shared(h) + sum over slots k (in order) of weight * expert row,
 * with @packed_out (T*K*H) in the route's layout. */
int dp_model_combine_forward(struct dp_model_stage *st, struct dp_model_ctx *ctx, int layer,
			     const float *packed_out, struct dp_err *err);
/* Head and loss (head stage), or copy the output into @y. */
int dp_model_forward_end(struct dp_model_stage *st, struct dp_model_ctx *ctx, float *y,
			 double *loss, struct dp_err *err);

int dp_model_backward_begin(struct dp_model_stage *st, struct dp_model_ctx *ctx, const float *dy,
			    struct dp_err *err);
/* Gradient through the combine, the shared expert and the gate; @packed_dy
 * (T*K*H) gets the grad of each expert output row (weight * dOut). */
int dp_model_combine_backward(struct dp_model_stage *st, struct dp_model_ctx *ctx, int layer,
			      float *packed_dy, struct dp_err *err);
/* Expert @e: @n rows (as in its forward) of dOut -> @din.  Keeps W's inputs. */
int dp_model_expert_backward_input(struct dp_model_stage *st, struct dp_model_ctx *ctx, int layer,
				   int e, int n, const float *dout, float *din, struct dp_err *err);
/* W of expert @e alone: adds its rows' gradients (row order) to W1, W2.
 * -EINVAL if its backward_input has not run since its forward. */
int dp_model_expert_backward_weight(struct dp_model_stage *st, struct dp_model_ctx *ctx, int layer,
				    int e, struct dp_err *err);
/* Adds the expert's rows (packed input grads @packed_dx, T*K*H) into the
 * grad of h, then goes back through the attention to the layer input. */
int dp_model_attn_backward(struct dp_model_stage *st, struct dp_model_ctx *ctx, int layer,
			   const float *packed_dx, struct dp_err *err);
int dp_model_backward_end(struct dp_model_stage *st, struct dp_model_ctx *ctx, float *dx,
			  struct dp_err *err);

/* ---- reference trainer ----------------------------------------------------- */

struct dp_model_ref; /* opaque: one process, all stages in order, no pipeline */

/* The whole model cut into @nstages even stages (dp_model_split). */
int dp_model_ref_new(const struct dp_model_cfg *cfg, int nstages, struct dp_model_ref **out,
		     struct dp_err *err);
void dp_model_ref_free(struct dp_model_ref *ref); /* NULL is a no-op */
struct dp_model_stage *dp_model_ref_stage(struct dp_model_ref *ref, int i);
int dp_model_ref_nstages(const struct dp_model_ref *ref);
/* Stage @i's context: after dp_model_ref_grads it holds the last
 * micro-batch's activations and routing (for tests and inspection). */
struct dp_model_ctx *dp_model_ref_ctx(struct dp_model_ref *ref, int i);

/* Zero the gradients, then for each micro-batch m = 0..M-1 of step @step in
 * order: forward through the stages, full backward back through them.
 * *loss = the step loss (sum of the micro-batch shares, in m order).  With
 * @split_iw each stage runs backward_input then backward_weight instead. */
int dp_model_ref_grads(struct dp_model_ref *ref, long step, int split_iw, double *loss,
		       struct dp_err *err);
/* dp_model_ref_grads then an Adam step on every stage. */
int dp_model_ref_train_step(struct dp_model_ref *ref, long step, double *loss, struct dp_err *err);

/* `dpworker --train-reference [--steps N] [--seed S] [--stages P]`: trains the
 * default model with the reference trainer, "step k loss x" per step on @out. */
int dp_worker_cmd_reference(int argc, char **argv, FILE *out, FILE *err);

#endif
