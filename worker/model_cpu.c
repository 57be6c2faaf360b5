/* worker/model_cpu.c - the MoE model on the CPU: configuration, parameter
 * init, routing, the four forward/backward components, I/W split, Adam.
 *
 * Every kernel here is a plain loop with a fixed order (see docs/model.md):
 * a row's outputs never depend on the other rows, and every weight gradient
 * element is one running float sum with terms added in row order, so the
 * results are bit-reproducible across stage splits, expert packings and the
 * I/W schedule.  Matrices are row-major [in][out]: y = x W.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker/dev_kernels.h"
#include "worker/dp_dev.h"
#include "worker/dp_model.h"
#include "worker/model_int.h"

static const char *const part_names[P_NFIXED] = {
	"attn.wq", "attn.wk", "attn.wv", "attn.wo", "gate", "shared.w1", "shared.w2",
};

/* ---- config ------------------------------------------------------------- */

void dp_model_cfg_default(struct dp_model_cfg *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->layers = 4;
	cfg->hidden = 32;
	cfg->ffn_hidden = 64;
	cfg->experts = 8;
	cfg->shared_experts = 1;
	cfg->top_k = 2;
	cfg->groups = 4;
	cfg->topk_groups = 2;
	cfg->vocab = 32;
	cfg->seq_len = 16;
	cfg->seqs = 4;
	cfg->micro_batches = 4;
	cfg->lr = 0.003f;
	cfg->seed = 1;
}

static int check_range(int v, int lo, int hi, const char *what, struct dp_err *err)
{
	if (v < lo || v > hi)
		return dp_err_set(err, EINVAL, "model: %s %d is out of range %d..%d", what, v, lo,
				  hi);
	return 0;
}

int dp_model_cfg_check(const struct dp_model_cfg *c, struct dp_err *err)
{
	int rc;

	if ((rc = check_range(c->layers, 1, 4096, "layers", err)) ||
	    (rc = check_range(c->hidden, 1, MAX_DIM, "hidden", err)) ||
	    (rc = check_range(c->ffn_hidden, 1, MAX_DIM, "ffn_hidden", err)) ||
	    (rc = check_range(c->experts, 1, MAX_EXPERTS, "experts", err)) ||
	    (rc = check_range(c->shared_experts, 1, 1, "shared_experts", err)) ||
	    (rc = check_range(c->groups, 1, c->experts, "groups", err)) ||
	    (rc = check_range(c->vocab, 2, MAX_DIM, "vocab", err)) ||
	    (rc = check_range(c->seq_len, 1, 4096, "seq_len", err)) ||
	    (rc = check_range(c->seqs, 1, MAX_DIM, "seqs", err)) ||
	    (rc = check_range(c->micro_batches, 1, MAX_DIM, "micro_batches", err)))
		return rc;
	if (c->experts % c->groups)
		return dp_err_set(err, EINVAL, "model: %d experts do not split into %d groups",
				  c->experts, c->groups);
	if ((rc = check_range(c->topk_groups, 1, c->groups, "topk_groups", err)) ||
	    (rc = check_range(c->top_k, 1, c->topk_groups * (c->experts / c->groups), "top_k",
			      err)))
		return rc;
	if ((long)c->seqs * c->seq_len > (1L << 20))
		return dp_err_set(err, EINVAL, "model: %ld tokens per micro-batch is too many",
				  (long)c->seqs * c->seq_len);
	if (!(c->lr > 0.0f) || !isfinite(c->lr))
		return dp_err_set(err, EINVAL, "model: learning rate %g is not positive",
				  (double)c->lr);
	return 0;
}

int dp_model_cfg_tokens(const struct dp_model_cfg *cfg)
{
	return cfg->seqs * cfg->seq_len;
}

void dp_model_split(int layers, int nstages, int stage, int *first, int *count)
{
	int base = layers / nstages, extra = layers % nstages;

	*first = stage * base + (stage < extra ? stage : extra);
	*count = base + (stage < extra ? 1 : 0);
}

int dp_model_expert_owner(const struct dp_model_cfg *cfg, int ep, int e)
{
	return e / (cfg->experts / ep);
}

/* ---- PRNG (splitmix64) -------------------------------------------------- */

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Uniform in [-1, 1). */
static float uniform_pm1(uint64_t *s)
{
	return (float)(splitmix(s) >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

/* ---- routing ------------------------------------------------------------ */

void dp_model_route_select(const struct dp_model_cfg *cfg, const float *scores, int *sel)
{
	/* one body for the host and the device kernels (worker/dev_kernels.h) */
	dp_dev_route_select(cfg->experts, cfg->groups, cfg->topk_groups, cfg->top_k, scores, sel);
}

void dp_model_pack_route(size_t T, size_t K, size_t E, const int *sel, int *fill, int *off,
			 int *row_tok, int *tok_row)
{
	/* packed layout: by expert, then by token */
	memset(fill, 0, E * sizeof(int));
	for (size_t i = 0; i < T * K; i++)
		fill[sel[i]]++;
	off[0] = 0;
	for (size_t e = 0; e < E; e++)
		off[e + 1] = off[e] + fill[e];
	memset(fill, 0, E * sizeof(int));
	for (size_t t = 0; t < T; t++)
		for (size_t k = 0; k < K; k++) {
			const int e = sel[t * K + k];
			const int row = off[e] + fill[e]++;

			row_tok[row] = (int)t;
			tok_row[t * K + k] = row;
		}
}

/* ---- kernels -------------------------------------------------------------- */

/* y[r][:] = sum over i ascending of x[r][i] * W[i][:] */
static void mm(const float *x, const float *W, float *y, size_t rows, size_t in, size_t out)
{
	for (size_t r = 0; r < rows; r++) {
		const float *xr = x + r * in;
		float *yr = y + r * out;

		memset(yr, 0, out * sizeof(*yr));
		for (size_t i = 0; i < in; i++) {
			const float xi = xr[i];
			const float *wi = W + i * out;

			for (size_t o = 0; o < out; o++)
				yr[o] += xi * wi[o];
		}
	}
}

/* dx[r][i] (= or +=) sum over o ascending of dy[r][o] * W[i][o]; with @acc
 * the dot product is formed first, then added. */
static void mm_t(const float *dy, const float *W, float *dx, size_t rows, size_t in, size_t out,
		 int acc)
{
	for (size_t r = 0; r < rows; r++) {
		const float *dyr = dy + r * out;
		float *dxr = dx + r * in;

		for (size_t i = 0; i < in; i++) {
			const float *wi = W + i * out;
			float s = 0.0f;

			for (size_t o = 0; o < out; o++)
				s += dyr[o] * wi[o];
			dxr[i] = acc ? dxr[i] + s : s;
		}
	}
}

/* G[i][:] += x[r][i] * dy[r][:] for r ascending. */
static void mm_grad(const float *x, const float *dy, float *G, size_t rows, size_t in, size_t out)
{
	for (size_t r = 0; r < rows; r++) {
		const float *xr = x + r * in;
		const float *dyr = dy + r * out;

		for (size_t i = 0; i < in; i++) {
			const float xi = xr[i];
			float *gi = G + i * out;

			for (size_t o = 0; o < out; o++)
				gi[o] += xi * dyr[o];
		}
	}
}

/* Elements or rows 0..n-1 of kernel @id of worker/dev_kernels.h on the host:
 * the device backends run the same bodies. */
static void host_run(int id, const struct dp_dev_kargs *a, size_t n)
{
	for (size_t i = 0; i < n; i++)
		dp_dev_kernel_run(id, a, (long)i);
}

static void silu(const float *u, float *z, size_t n)
{
	host_run(DP_DEV_K_SILU, &(struct dp_dev_kargs){ .a = u, .y = z }, n);
}

/* d[i] *= silu'(u[i]) */
static void silu_back(const float *u, float *d, size_t n)
{
	host_run(DP_DEV_K_SILU_BACK, &(struct dp_dev_kargs){ .a = u, .y = d }, n);
}

/* ---- stage ---------------------------------------------------------------- */

static float *PW(const struct dp_model_stage *st, int layer, int id)
{
	return st->w + st->tens[st->layer_base + (layer - st->first) * st->per_layer + id].off;
}

static float *PG(const struct dp_model_stage *st, int layer, int id)
{
	return st->g + st->tens[st->layer_base + (layer - st->first) * st->per_layer + id].off;
}

static void add_tensor(struct dp_model_stage *st, const char *name, size_t rows, size_t cols,
		       int layer, int expert)
{
	struct tensor_meta *t = &st->tens[st->ntens++];

	(void)snprintf(t->name, sizeof(t->name), "%s", name);
	t->off = st->total;
	t->n = rows * cols;
	t->layer = layer;
	t->expert = expert;
	st->total += t->n;
}

/* Uniform init with bound @a from a stream keyed by the seed and the tensor's
 * global index, so every split of the model gets the same values. */
static void init_tensor(const struct dp_model_stage *st, const struct tensor_meta *t, uint64_t gid,
			float a)
{
	uint64_t s = st->cfg.seed ^ (0xd1b54a32d192ed03ULL * (gid + 1));
	float *w = st->w + t->off;

	for (size_t i = 0; i < t->n; i++)
		w[i] = a * uniform_pm1(&s);
}

static void init_params(struct dp_model_stage *st)
{
	const float H = (float)st->H, F = (float)st->F;
	const float in_h = sqrtf(3.0f / H), in_f = sqrtf(3.0f / F);
	uint64_t per = (uint64_t)st->per_layer;

	if (st->has_embed)
		init_tensor(st, &st->tens[st->embed_idx], 0, 1.0f);
	for (int l = 0; l < st->count; l++) {
		uint64_t base = 1 + (uint64_t)(st->first + l) * per;
		const struct tensor_meta *lt = &st->tens[st->layer_base + l * st->per_layer];

		for (int id = 0; id < st->per_layer; id++) {
			float a = in_h;

			if (id == P_WO)
				a = 0.5f * in_h;
			else if (id == P_S2 || (id >= P_NFIXED && (id - P_NFIXED) % 2 == 1))
				a = 0.5f * in_f;
			init_tensor(st, &lt[id], base + (uint64_t)id, a);
		}
	}
	if (st->has_head)
		init_tensor(st, &st->tens[st->head_idx], 1 + (uint64_t)st->cfg.layers * per, in_h);
}

int dp_model_stage_new_split(const struct dp_model_cfg *cfg, int nstages, int stage,
			     struct dp_model_stage **out, struct dp_err *err)
{
	int first, count;

	if (nstages < 1 || stage < 0 || stage >= nstages)
		return dp_err_set(err, EINVAL, "model: no stage %d of %d", stage, nstages);
	dp_model_split(cfg->layers, nstages, stage, &first, &count);
	return dp_model_stage_new(cfg, first, count,
				  (stage == 0 ? DP_MODEL_EMBED : 0) |
					  (stage == nstages - 1 ? DP_MODEL_HEAD : 0),
				  out, err);
}

int dp_model_stage_new(const struct dp_model_cfg *cfg, int first, int count, int roles,
		       struct dp_model_stage **out, struct dp_err *err)
{
	struct dp_model_stage *st;
	char name[48];
	int rc;

	rc = dp_model_cfg_check(cfg, err);
	if (rc)
		return rc;
	if (first < 0 || count < 0 || first + count > cfg->layers)
		return dp_err_set(err, EINVAL, "model: layers %d..%d are not in a %d-layer model",
				  first, first + count - 1, cfg->layers);
	if ((roles & DP_MODEL_EMBED) && first != 0)
		return dp_err_set(err, EINVAL,
				  "model: a stage from layer %d cannot hold the embedding", first);
	if ((roles & DP_MODEL_HEAD) && first + count != cfg->layers)
		return dp_err_set(err, EINVAL,
				  "model: a stage ending before layer %d cannot hold the head",
				  cfg->layers);
	st = calloc(1, sizeof(*st));
	if (!st)
		return dp_err_set(err, ENOMEM, "model: out of memory");
	st->cfg = *cfg;
	st->first = first;
	st->count = count;
	st->has_embed = !!(roles & DP_MODEL_EMBED);
	st->has_head = !!(roles & DP_MODEL_HEAD);
	st->H = (size_t)cfg->hidden;
	st->F = (size_t)cfg->ffn_hidden;
	st->E = (size_t)cfg->experts;
	st->K = (size_t)cfg->top_k;
	st->V = (size_t)cfg->vocab;
	st->S = (size_t)cfg->seq_len;
	st->T = (size_t)cfg->seqs * st->S;
	st->M = (size_t)cfg->micro_batches;
	st->per_layer = P_NFIXED + 2 * cfg->experts;
	st->embed_idx = st->head_idx = -1;
	rc = -ENOMEM;
	st->tens = calloc(2 + (size_t)count * (size_t)st->per_layer, sizeof(*st->tens));
	if (!st->tens)
		goto err_free;
	if (st->has_embed) {
		st->embed_idx = st->ntens;
		add_tensor(st, "embed", st->V, st->H, -1, -1);
	}
	st->layer_base = st->ntens;
	for (int l = first; l < first + count; l++) {
		for (int id = 0; id < P_NFIXED; id++) {
			size_t rows = id == P_S2 ? st->F : st->H;
			size_t cols = id == P_WG ? st->E : id == P_S1 ? st->F : st->H;

			(void)snprintf(name, sizeof(name), "layer%d.%s", l, part_names[id]);
			add_tensor(st, name, rows, cols, l, -1);
		}
		for (int e = 0; e < cfg->experts; e++) {
			(void)snprintf(name, sizeof(name), "layer%d.expert%d.w1", l, e);
			add_tensor(st, name, st->H, st->F, l, e);
			(void)snprintf(name, sizeof(name), "layer%d.expert%d.w2", l, e);
			add_tensor(st, name, st->F, st->H, l, e);
		}
	}
	if (st->has_head) {
		st->head_idx = st->ntens;
		add_tensor(st, "head", st->H, st->V, -1, -1);
	}
	st->w = calloc(st->total ? st->total : 1, sizeof(float));
	st->g = calloc(st->total ? st->total : 1, sizeof(float));
	st->m = calloc(st->total ? st->total : 1, sizeof(float));
	st->v = calloc(st->total ? st->total : 1, sizeof(float));
	st->pk_a = calloc(st->T * st->K * st->H, sizeof(float));
	st->pk_b = calloc(st->T * st->K * st->H, sizeof(float));
	if (!st->w || !st->g || !st->m || !st->v || !st->pk_a || !st->pk_b)
		goto err_free;
	init_params(st);
	*out = st;
	return 0;
err_free:
	dp_model_stage_free(st);
	return dp_err_set(err, -rc, "model: out of memory");
}

void dp_model_stage_free(struct dp_model_stage *st)
{
	if (!st)
		return;
	devm_stage_free(st->dev);
	free(st->tens);
	free(st->w);
	free(st->g);
	free(st->m);
	free(st->v);
	free(st->pk_a);
	free(st->pk_b);
	free(st);
}

const struct dp_model_cfg *dp_model_stage_cfg(const struct dp_model_stage *st)
{
	return &st->cfg;
}

int dp_model_stage_first(const struct dp_model_stage *st)
{
	return st->first;
}

int dp_model_stage_count(const struct dp_model_stage *st)
{
	return st->count;
}

int dp_model_stage_has_embed(const struct dp_model_stage *st)
{
	return st->has_embed;
}

int dp_model_stage_has_head(const struct dp_model_stage *st)
{
	return st->has_head;
}

int dp_model_stage_ntensors(const struct dp_model_stage *st)
{
	return st->ntens;
}

int dp_model_stage_tensor(const struct dp_model_stage *st, int i, struct dp_model_tensor *out)
{
	if (st->dev && i >= 0 && i < st->ntens) /* the mirror is a cache: not a change */
		(void)devm_flat_download((struct dp_model_stage *)st);
	const struct tensor_meta *t;

	if (i < 0 || i >= st->ntens)
		return -EINVAL;
	t = &st->tens[i];
	out->name = t->name;
	out->w = st->w + t->off;
	out->g = st->g + t->off;
	out->n = t->n;
	out->layer = t->layer;
	out->expert = t->expert;
	return 0;
}

void dp_model_stage_flat(struct dp_model_stage *st, struct dp_model_flat *out)
{
	if (st->dev)
		(void)devm_flat_download(st); /* a failure is kept for the next call */
	out->w = st->w;
	out->g = st->g;
	out->m = st->m;
	out->v = st->v;
	out->n = st->total;
	out->adam_step = &st->adam_t;
}

int dp_model_stage_flat_commit(struct dp_model_stage *st, struct dp_err *err)
{
	return st->dev ? devm_flat_commit(st, err) : 0;
}

void dp_model_stage_zero_grad(struct dp_model_stage *st)
{
	if (st->dev) {
		devm_zero_grad(st);
		return;
	}
	memset(st->g, 0, st->total * sizeof(float));
}

void dp_model_stage_step(struct dp_model_stage *st)
{
	if (st->dev) {
		devm_step(st);
		return;
	}
	struct dp_dev_kargs a = { .a = st->g, .y = st->w, .z = st->m, .u = st->v };

	st->adam_t++;
	a.f0 = st->cfg.lr;
	a.f1 = (float)(1.0 - pow(0.9, (double)st->adam_t));
	a.f2 = (float)(1.0 - pow(0.99, (double)st->adam_t));
	host_run(DP_DEV_K_ADAM, &a, st->total);
}

/* ---- contexts ------------------------------------------------------------ */

/* Carve @bytes (64-aligned) at *@used of @base; with no base, only count. */
static void *carve_in(char *base, size_t *used, size_t bytes)
{
	void *p = base ? base + *used : NULL;

	*used += (bytes + 63) & ~(size_t)63;
	return p;
}

/* The block: device memory on a device stage. */
static void *carve(struct dp_model_ctx *c, size_t bytes)
{
	return carve_in(c->block, &c->block_bytes, bytes);
}

/* What the host reads: the host block on a device stage. */
static void *hcarve(struct dp_model_ctx *c, size_t bytes)
{
	return c->st->dev ? carve_in(c->hblock, &c->hblock_bytes, bytes) : carve(c, bytes);
}

void dp_model_ctx_layout(struct dp_model_ctx *c)
{
	const struct dp_model_stage *st = c->st;
	const size_t T = st->T, H = st->H, F = st->F, E = st->E, K = st->K, S = st->S;
	const size_t f = sizeof(float), i4 = sizeof(int);
	const int dev = st->dev != NULL;

	c->block_bytes = c->hblock_bytes = 0;
	c->tokens = carve(c, T * sizeof(int32_t));
	c->targets = carve(c, T * sizeof(int32_t));
	c->x_in = carve(c, T * H * f);
	c->dtop = carve(c, T * H * f);
	c->logits = st->has_head ? carve(c, T * st->V * f) : NULL;
	c->lrow = carve(c, T * sizeof(double));
	c->lrow_h = dev ? hcarve(c, T * sizeof(double)) : c->lrow;
	c->L = hcarve(c, (size_t)st->count * sizeof(*c->L));
	for (int l = 0; l < st->count; l++) {
		struct lctx tmp = { 0 }, *L = c->L ? &c->L[l] : &tmp;

		L->q = carve(c, T * H * f);
		L->k = carve(c, T * H * f);
		L->v = carve(c, T * H * f);
		L->p = carve(c, T * S * f);
		L->a = carve(c, T * H * f);
		L->h = carve(c, T * H * f);
		L->s = carve(c, T * E * f);
		L->w = carve(c, T * K * f);
		L->su = carve(c, T * F * f);
		L->sz = carve(c, T * F * f);
		L->ey = carve(c, T * K * H * f);
		L->out = carve(c, T * H * f);
		L->dh = carve(c, T * H * f);
		L->da = carve(c, T * H * f);
		L->dl = carve(c, T * E * f);
		L->dsu = carve(c, T * F * f);
		L->dq = carve(c, T * H * f);
		L->dk = carve(c, T * H * f);
		L->dv = carve(c, T * H * f);
		L->dx = carve(c, T * H * f);
		L->sel = hcarve(c, T * K * i4);
		L->off = hcarve(c, (E + 1) * i4);
		L->row_tok = hcarve(c, T * K * i4);
		L->tok_row = hcarve(c, T * K * i4);
		L->fill = hcarve(c, E * i4);
		L->ex = hcarve(c, E * sizeof(*L->ex));
		L->ds = carve(c, T * S * f);
		if (dev) {
			L->sel_d = carve(c, T * K * i4);
			L->row_tok_d = carve(c, T * K * i4);
			L->tok_row_d = carve(c, T * K * i4);
			L->wh = hcarve(c, T * K * f);
		}
	}
	if (dev)
		c->pk = carve(c, T * K * H * f);
}

int dp_model_ctx_new(struct dp_model_stage *st, struct dp_model_ctx **out, struct dp_err *err)
{
	struct dp_model_ctx *c;

	if (st->dev) /* the activations live on the device */
		return devm_ctx_new(st, out, err);
	c = calloc(1, sizeof(*c));
	if (!c)
		return dp_err_set(err, ENOMEM, "model: out of memory");
	c->st = st;
	dp_model_ctx_layout(c);
	c->block = aligned_alloc(64, c->block_bytes);
	if (!c->block) {
		size_t bytes = c->block_bytes;

		free(c);
		return dp_err_set(err, ENOMEM, "model: out of memory for %zu bytes of activations",
				  bytes);
	}
	memset(c->block, 0, c->block_bytes);
	dp_model_ctx_layout(c);
	*out = c;
	return 0;
}

static void ectx_release(struct ectx *x)
{
	free(x->in);
	free(x->u);
	free(x->z);
	free(x->dy);
	free(x->du);
	memset(x, 0, sizeof(*x));
}

void dp_model_ctx_free(struct dp_model_ctx *ctx)
{
	if (!ctx)
		return;
	if (ctx->st->dev) {
		devm_ctx_free(ctx);
		return;
	}
	for (int l = 0; l < ctx->st->count; l++)
		for (size_t e = 0; e < ctx->st->E; e++)
			ectx_release(&ctx->L[l].ex[e]);
	free(ctx->block);
	free(ctx);
}

size_t dp_model_ctx_bytes(const struct dp_model_ctx *ctx)
{
	if (ctx->st->dev)
		return devm_ctx_bytes(ctx);
	const struct dp_model_stage *st = ctx->st;
	size_t b = ctx->block_bytes;

	for (int l = 0; l < st->count; l++)
		for (size_t e = 0; e < st->E; e++)
			b += ctx->L[l].ex[e].cap * (2 * st->H + 3 * st->F) * sizeof(float);
	return b;
}

struct lctx *dp_model_layer_ctx(const struct dp_model_ctx *ctx, int layer)
{
	const struct dp_model_stage *st = ctx->st;

	if (layer < st->first || layer >= st->first + st->count)
		return NULL;
	return &ctx->L[layer - st->first];
}

const struct dp_model_route *dp_model_ctx_route(const struct dp_model_ctx *ctx, int layer)
{
	const struct lctx *L = dp_model_layer_ctx(ctx, layer);

	return L && L->done >= L_ATTN ? &L->route : NULL;
}

/* Input of @layer: the stage input or the previous layer's output. */
const float *dp_model_layer_in(const struct dp_model_ctx *ctx, int layer)
{
	return layer == ctx->st->first ? ctx->x_in : ctx->L[layer - 1 - ctx->st->first].out;
}

/* Output of the stage's last layer (the stage input if it has none). */
const float *dp_model_stage_out(const struct dp_model_ctx *ctx)
{
	return ctx->st->count ? ctx->L[ctx->st->count - 1].out : ctx->x_in;
}

/* Gradient of @layer's output: the stage's top grad or the next layer's dx. */
const float *dp_model_layer_dout(const struct dp_model_ctx *ctx, int layer)
{
	const struct dp_model_stage *st = ctx->st;

	return layer == st->first + st->count - 1 ? ctx->dtop : ctx->L[layer + 1 - st->first].dx;
}

/* Gradient of the stage input. */
const float *dp_model_stage_din(const struct dp_model_ctx *ctx)
{
	return ctx->st->count ? ctx->L[0].dx : ctx->dtop;
}

static int check_ctx(const struct dp_model_stage *st, const struct dp_model_ctx *ctx, int state,
		     const char *what, struct dp_err *err)
{
	static const char *const names[] = { "empty", "after forward", "after backward_input" };

	/* constant -EINVAL returns: callers rely on 0 meaning "checked" */
	if (st->dev && devm_sticky(st, err))
		return -EIO;
	if (ctx->st != st) {
		(void)dp_err_set(err, EINVAL, "model: %s: context belongs to another stage", what);
		return -EINVAL;
	}
	if (ctx->state != state) {
		(void)dp_err_set(err, EINVAL, "model: %s: context is %s, not %s", what,
				 names[ctx->state], names[state]);
		return -EINVAL;
	}
	return 0;
}

static int check_layer(const struct dp_model_ctx *ctx, int layer, const char *what,
		       struct lctx **out, struct dp_err *err)
{
	struct lctx *L = dp_model_layer_ctx(ctx, layer);

	if (!L) {
		(void)dp_err_set(err, EINVAL, "model: %s: layer %d is not in this stage", what,
				 layer);
		return -EINVAL;
	}
	*out = L;
	return 0;
}

/* -EINVAL unless step @step is the last one done on layer @layer of @ctx. */
static int need_step(const struct dp_model_ctx *ctx, int layer, int step, const char *what,
		     struct dp_err *err)
{
	static const char *const names[] = { "nothing", "attn_forward", "combine_forward",
					     "combine_backward", "attn_backward" };
	const struct lctx *L = dp_model_layer_ctx(ctx, layer);

	if (L && L->done == step)
		return 0;
	(void)dp_err_set(err, EINVAL, "model: %s: layer %d is at %s, needs %s", what, layer,
			 L ? names[L->done] : "?", names[step]);
	return -EINVAL;
}

/* ---- kernel arguments ------------------------------------------------------ */

struct dp_dev_kargs dp_model_kargs(const struct dp_model_ctx *c, const struct lctx *L, int id)
{
	const struct dp_model_stage *st = c->st;
	const int dev = st->dev != NULL;
	const long H = (long)st->H, S = (long)st->S, K = (long)st->K;
	const float scale = 1.0f / sqrtf((float)st->H);

	/* which field is what: the kernel list in worker/dev_kernels.h */
	switch (id) {
	case DP_DEV_K_ATTN_FWD:
		return (struct dp_dev_kargs){ L->q, L->k,    L->v,    NULL,	  L->p,
					      L->a, .n0 = H, .n1 = S, .f0 = scale };
	case DP_DEV_K_ATTN_BWD_Q:
		return (struct dp_dev_kargs){ L->p,  L->da,   L->v,    L->k,	   L->ds,
					      L->dq, .n0 = H, .n1 = S, .f0 = scale };
	case DP_DEV_K_ATTN_BWD_KV:
		return (struct dp_dev_kargs){ L->ds, L->q,  L->p,    L->da,
					      L->dk, L->dv, .n0 = H, .n1 = S };
	case DP_DEV_K_GATE_ROUTE:
		return (struct dp_dev_kargs){ .y = L->s,
					      .z = L->w,
					      .iy = dev ? L->sel_d : L->sel,
					      .n0 = (long)st->E,
					      .n1 = K,
					      .n2 = st->cfg.groups,
					      .n3 = st->cfg.topk_groups };
	case DP_DEV_K_COMBINE:
		return (struct dp_dev_kargs){ L->h,    L->w,
					      L->ey,   NULL,
					      L->out,  .ia = dev ? L->tok_row_d : L->tok_row,
					      .n0 = H, .n1 = K };
	case DP_DEV_K_COMBINE_BWD: /* the caller sets a = dOut, y = packed dY */
		return (struct dp_dev_kargs){ NULL,
					      L->s,
					      L->w,
					      L->ey,
					      NULL,
					      L->dl,
					      .ia = dev ? L->tok_row_d : L->tok_row,
					      .ib = dev ? L->sel_d : L->sel,
					      .n0 = H,
					      .n1 = (long)st->E,
					      .n2 = K };
	case DP_DEV_K_ADD_ROWS: /* the caller sets a = packed dX */
		return (struct dp_dev_kargs){
			.y = L->dh, .ia = dev ? L->tok_row_d : L->tok_row, .n0 = H, .n1 = K
		};
	case DP_DEV_K_XENT:
		return (struct dp_dev_kargs){ .y = c->logits,
					      .ia = c->targets,
					      .dy = c->lrow,
					      .n0 = (long)st->V,
					      .f0 = 1.0f / (float)(st->M * st->T) };
	case DP_DEV_K_EMBED_GRAD: /* the caller sets y = the embedding's grad */
		return (struct dp_dev_kargs){
			.a = dp_model_stage_din(c), .ia = c->tokens, .n0 = H, .n1 = (long)st->T
		};
	default:
		return (struct dp_dev_kargs){ .n0 = H };
	}
}

/* Kernel @id of layer @L (NULL: stage-wide) on the host, @n threads. */
static void host_k(const struct dp_model_ctx *c, const struct lctx *L, int id, size_t n)
{
	const struct dp_dev_kargs a = dp_model_kargs(c, L, id);

	host_run(id, &a, n);
}

/* ---- forward ------------------------------------------------------------- */

int dp_model_forward_begin(struct dp_model_stage *st, struct dp_model_ctx *ctx,
			   const struct dp_model_io *in, struct dp_err *err)
{
	const size_t T = st->T, H = st->H;

	if (ctx->st != st)
		return dp_err_set(err, EINVAL, "model: forward: context belongs to another stage");
	if (ctx->state == CTX_BWD_INPUT)
		return dp_err_set(err, EINVAL,
				  "model: forward: context still waits for backward_weight");
	if (st->has_embed ? !in->tokens : !in->x)
		return dp_err_set(err, EINVAL, "model: forward: no input %s",
				  st->has_embed ? "tokens" : "activations");
	if (st->has_head && !in->targets)
		return dp_err_set(err, EINVAL, "model: forward: no targets for the loss");
	for (size_t t = 0; st->has_embed && t < T; t++)
		if (in->tokens[t] < 0 || (size_t)in->tokens[t] >= st->V)
			return dp_err_set(err, EINVAL, "model: token %d is not in 0..%zu",
					  (int)in->tokens[t], st->V - 1);
	for (size_t t = 0; st->has_head && t < T; t++)
		if (in->targets[t] < 0 || (size_t)in->targets[t] >= st->V)
			return dp_err_set(err, EINVAL, "model: target %d is not in 0..%zu",
					  (int)in->targets[t], st->V - 1);
	if (st->dev) { /* a device stage: worker/model_dev.c */
		int rc = devm_forward_begin(st, ctx, in, err);

		if (rc)
			return rc;
	} else if (st->has_embed) {
		const float *E = st->w + st->tens[st->embed_idx].off;

		host_run(DP_DEV_K_EMBED,
			 &(struct dp_dev_kargs){
				 .a = E, .ia = in->tokens, .y = ctx->x_in, .n0 = (long)H },
			 T);
		memcpy(ctx->tokens, in->tokens, T * sizeof(int32_t));
	} else {
		memcpy(ctx->x_in, in->x, T * H * sizeof(float));
	}
	if (st->has_head && !st->dev)
		memcpy(ctx->targets, in->targets, T * sizeof(int32_t));
	for (int l = 0; l < st->count; l++)
		ctx->L[l].done = L_NONE;
	ctx->state = CTX_FWD;
	return 0;
}

static void attention_fwd(const struct dp_model_stage *st, struct dp_model_ctx *ctx, struct lctx *L,
			  int layer)
{
	const size_t T = st->T, H = st->H;
	const float *x = dp_model_layer_in(ctx, layer);

	mm(x, PW(st, layer, P_WQ), L->q, T, H, H);
	mm(x, PW(st, layer, P_WK), L->k, T, H, H);
	mm(x, PW(st, layer, P_WV), L->v, T, H, H);
	host_k(ctx, L, DP_DEV_K_ATTN_FWD, T);
	mm(L->a, PW(st, layer, P_WO), L->h, T, H, H);
	for (size_t i = 0; i < T * H; i++)
		L->h[i] = x[i] + L->h[i];
}

static void gate_fwd(const struct dp_model_stage *st, const struct dp_model_ctx *ctx,
		     struct lctx *L, int layer)
{
	const size_t T = st->T, H = st->H, E = st->E, K = st->K;

	/* softmax, routing and the gate weights, token by token */
	mm(L->h, PW(st, layer, P_WG), L->s, T, H, E);
	host_k(ctx, L, DP_DEV_K_GATE_ROUTE, T);
	dp_model_pack_route(T, K, E, L->sel, L->fill, L->off, L->row_tok, L->tok_row);
	L->route = (struct dp_model_route){
		.tokens = (int)T,
		.top_k = (int)K,
		.experts = (int)E,
		.expert = L->sel,
		.weight = L->w,
		.offset = L->off,
		.row_token = L->row_tok,
		.token_row = L->tok_row,
	};
	L->done = L_ATTN;
}

int dp_model_attn_forward(struct dp_model_stage *st, struct dp_model_ctx *ctx, int layer,
			  struct dp_err *err)
{
	struct lctx *L = NULL;
	int rc;

	if ((rc = check_ctx(st, ctx, CTX_FWD, "attn_forward", err)) ||
	    (rc = check_layer(ctx, layer, "attn_forward", &L, err)) ||
	    (layer > st->first &&
	     (rc = need_step(ctx, layer - 1, L_COMBINED, "attn_forward", err))))
		return rc;
	if (st->dev) {
		rc = devm_attn_forward(st, ctx, L, layer, err);
		if (!rc)
			L->done = L_ATTN;
		return rc;
	}
	attention_fwd(st, ctx, L, layer);
	gate_fwd(st, ctx, L, layer);
	/* shared expert: its output goes to L->out, combine adds the rest */
	mm(L->h, PW(st, layer, P_S1), L->su, st->T, st->H, st->F);
	silu(L->su, L->sz, st->T * st->F);
	mm(L->sz, PW(st, layer, P_S2), L->out, st->T, st->F, st->H);
	return 0;
}

int dp_model_dispatch(struct dp_model_stage *st, struct dp_model_ctx *ctx, int layer, float *packed,
		      struct dp_err *err)
{
	const size_t H = st->H;
	struct lctx *L = NULL;
	int rc;

	if ((rc = check_ctx(st, ctx, CTX_FWD, "dispatch", err)) ||
	    (rc = check_layer(ctx, layer, "dispatch", &L, err)))
		return rc;
	rc = need_step(ctx, layer, L_ATTN, "dispatch", err);
	if (rc)
		return rc;
	if (st->dev)
		return devm_dispatch(st, ctx, L, packed, err);
	host_run(DP_DEV_K_GATHER,
		 &(struct dp_dev_kargs){ .a = L->h, .ia = L->row_tok, .y = packed, .n0 = (long)H },
		 st->T * st->K);
	return 0;
}

static int ectx_reserve(struct ectx *x, size_t n, size_t H, size_t F)
{
	float *p[5];
	const size_t sz[5] = { H, F, F, H, F };

	if (n <= x->cap)
		return 0;
	for (int i = 0; i < 5; i++) {
		p[i] = calloc(n * sz[i], sizeof(float));
		if (!p[i]) {
			while (i--)
				free(p[i]);
			return -ENOMEM;
		}
	}
	ectx_release(x);
	x->in = p[0];
	x->u = p[1];
	x->z = p[2];
	x->dy = p[3];
	x->du = p[4];
	x->cap = n;
	return 0;
}

static int check_expert(const struct dp_model_stage *st, struct dp_model_ctx *ctx, int layer, int e,
			int n, const char *what, struct ectx **out, struct dp_err *err)
{
	struct lctx *L = NULL;
	int rc;

	if (st->dev && devm_sticky(st, err))
		return -EIO;
	if (ctx->st != st) {
		(void)dp_err_set(err, EINVAL, "model: %s: context belongs to another stage", what);
		return -EINVAL;
	}
	rc = check_layer(ctx, layer, what, &L, err);
	if (rc)
		return rc;
	if (e < 0 || (size_t)e >= st->E || n < 0) {
		(void)dp_err_set(err, EINVAL, "model: %s: no expert %d or bad row count %d", what,
				 e, n);
		return -EINVAL;
	}
	*out = &L->ex[e];
	return 0;
}

int dp_model_expert_forward(struct dp_model_stage *st, struct dp_model_ctx *ctx, int layer, int e,
			    int n, const float *in, float *out, struct dp_err *err)
{
	const size_t H = st->H, F = st->F, rows = (size_t)n;
	struct ectx *x = NULL;
	int rc;

	rc = check_expert(st, ctx, layer, e, n, "expert_forward", &x, err);
	if (rc)
		return rc;
	if (x->bwd)
		return dp_err_set(err, EBUSY,
				  "model: expert_forward: layer %d expert %d still waits for its W",
				  layer, e);
	if (st->dev)
		rc = devm_expert_reserve(st, x, rows, err);
	else if (ectx_reserve(x, rows, H, F))
		rc = dp_err_set(err, ENOMEM, "model: out of memory for %d expert rows", n);
	if (rc)
		return rc;
	x->n = rows;
	x->fwd = 1;
	x->bwd = 0;
	if (!rows)
		return 0;
	if (st->dev)
		return devm_expert_forward(st, x, layer, e, in, out, err);
	memcpy(x->in, in, rows * H * sizeof(float));
	mm(x->in, PW(st, layer, P_E1(e)), x->u, rows, H, F);
	silu(x->u, x->z, rows * F);
	mm(x->z, PW(st, layer, P_E2(e)), out, rows, F, H);
	return 0;
}

int dp_model_combine_forward(struct dp_model_stage *st, struct dp_model_ctx *ctx, int layer,
			     const float *packed_out, struct dp_err *err)
{
	const size_t T = st->T, H = st->H, K = st->K;
	struct lctx *L = NULL;
	int rc;

	if ((rc = check_ctx(st, ctx, CTX_FWD, "combine_forward", err)) ||
	    (rc = check_layer(ctx, layer, "combine_forward", &L, err)))
		return rc;
	rc = need_step(ctx, layer, L_ATTN, "combine_forward", err);
	if (rc)
		return rc;
	L->done = L_COMBINED;
	if (st->dev)
		return devm_combine_forward(st, ctx, L, packed_out, err);
	memcpy(L->ey, packed_out, T * K * H * sizeof(float));
	/* out = (h + shared) + w_0 y_0 + w_1 y_1 + ... in slot order */
	host_k(ctx, L, DP_DEV_K_COMBINE, T);
	return 0;
}

int dp_model_forward_end(struct dp_model_stage *st, struct dp_model_ctx *ctx, float *y,
			 double *loss, struct dp_err *err)
{
	const size_t T = st->T, H = st->H, V = st->V;
	const float *h = dp_model_stage_out(ctx);
	int rc;

	rc = check_ctx(st, ctx, CTX_FWD, "forward_end", err);
	if (rc)
		return rc;
	for (int l = st->first; l < st->first + st->count; l++)
		if ((rc = need_step(ctx, l, L_COMBINED, "forward_end", err)))
			return rc;
	if (st->dev)
		return devm_forward_end(st, ctx, y, loss, err);
	if (!st->has_head) {
		if (y)
			memcpy(y, h, T * H * sizeof(float));
		return 0;
	}
	/* logits, then in place the gradient of the loss share wrt the logits */
	double total = 0.0;

	mm(h, st->w + st->tens[st->head_idx].off, ctx->logits, T, H, V);
	host_k(ctx, NULL, DP_DEV_K_XENT, T);
	for (size_t t = 0; t < T; t++) /* token order */
		total += ctx->lrow[t];
	if (loss)
		*loss = total / (double)(st->M * T);
	return 0;
}

int dp_model_forward(struct dp_model_stage *st, struct dp_model_ctx *ctx,
		     const struct dp_model_io *in, float *y, double *loss, struct dp_err *err)
{
	const size_t H = st->H;
	int rc;

	rc = dp_model_forward_begin(st, ctx, in, err);
	for (int l = st->first; !rc && l < st->first + st->count; l++) {
		const struct dp_model_route *r;

		rc = dp_model_attn_forward(st, ctx, l, err);
		if (!rc)
			rc = dp_model_dispatch(st, ctx, l, st->pk_a, err);
		r = dp_model_ctx_route(ctx, l);
		for (int e = 0; !rc && e < (int)st->E; e++) {
			const size_t off = (size_t)r->offset[e] * H;

			rc = dp_model_expert_forward(st, ctx, l, e, r->offset[e + 1] - r->offset[e],
						     st->pk_a + off, st->pk_b + off, err);
		}
		if (!rc)
			rc = dp_model_combine_forward(st, ctx, l, st->pk_b, err);
	}
	if (!rc)
		rc = dp_model_forward_end(st, ctx, y, loss, err);
	return rc;
}

/* ---- backward for input ---------------------------------------------------- */

int dp_model_backward_begin(struct dp_model_stage *st, struct dp_model_ctx *ctx, const float *dy,
			    struct dp_err *err)
{
	const size_t T = st->T, H = st->H;
	int rc;

	rc = check_ctx(st, ctx, CTX_FWD, "backward_input", err);
	if (rc)
		return rc;
	for (int l = st->first; l < st->first + st->count; l++)
		if ((rc = need_step(ctx, l, L_COMBINED, "backward_input", err)))
			return rc;
	if (!st->has_head && !dy)
		return dp_err_set(err, EINVAL, "model: backward_input: no output gradient");
	if (st->dev)
		rc = devm_backward_begin(st, ctx, dy, err);
	else if (st->has_head)
		mm_t(ctx->logits, st->w + st->tens[st->head_idx].off, ctx->dtop, T, H, st->V, 0);
	else
		memcpy(ctx->dtop, dy, T * H * sizeof(float));
	if (rc)
		return rc;
	ctx->state = CTX_BWD_INPUT;
	return 0;
}

int dp_model_combine_backward(struct dp_model_stage *st, struct dp_model_ctx *ctx, int layer,
			      float *packed_dy, struct dp_err *err)
{
	const size_t T = st->T, H = st->H, F = st->F, E = st->E;
	struct dp_dev_kargs kb;
	const float *dout = NULL;
	struct lctx *L = NULL;
	int rc;

	if ((rc = check_ctx(st, ctx, CTX_BWD_INPUT, "combine_backward", err)) ||
	    (rc = check_layer(ctx, layer, "combine_backward", &L, err)) ||
	    (rc = need_step(ctx, layer, L_COMBINED, "combine_backward", err)) ||
	    (layer < st->first + st->count - 1 &&
	     (rc = need_step(ctx, layer + 1, L_ATTN_BWD, "combine_backward", err))))
		return rc;
	L->done = L_COMBINE_BWD;
	if (st->dev)
		return devm_combine_backward(st, ctx, L, layer, packed_dy, err);
	dout = dp_model_layer_dout(ctx, layer);
	/* shared expert */
	mm_t(dout, PW(st, layer, P_S2), L->dsu, T, F, H, 0);
	silu_back(L->su, L->dsu, T * F);
	/* routed: packed dY = w * dOut; dw = dOut . y; softmax backward */
	kb = dp_model_kargs(ctx, L, DP_DEV_K_COMBINE_BWD);
	kb.a = dout;
	kb.y = packed_dy;
	host_run(DP_DEV_K_COMBINE_BWD, &kb, T);
	/* dh = dOut + shared + gate; attn_backward adds the experts */
	memcpy(L->dh, dout, T * H * sizeof(float));
	mm_t(L->dsu, PW(st, layer, P_S1), L->dh, T, H, F, 1);
	mm_t(L->dl, PW(st, layer, P_WG), L->dh, T, H, E, 1);
	return 0;
}

int dp_model_expert_backward_input(struct dp_model_stage *st, struct dp_model_ctx *ctx, int layer,
				   int e, int n, const float *dout, float *din, struct dp_err *err)
{
	const size_t H = st->H, F = st->F, rows = (size_t)n;
	struct ectx *x = NULL;
	int rc;

	rc = check_expert(st, ctx, layer, e, n, "expert_backward_input", &x, err);
	if (rc)
		return rc;
	if (x->bwd)
		return dp_err_set(err, EBUSY,
				  "model: expert_backward_input: layer %d expert %d already done",
				  layer, e);
	if (!x->fwd || x->n != rows)
		return dp_err_set(err, EINVAL,
				  "model: expert_backward_input: layer %d expert %d ran forward "
				  "on %zu rows, not %d",
				  layer, e, x->fwd ? x->n : 0, n);
	x->bwd = 1;
	if (!rows)
		return 0;
	if (st->dev)
		return devm_expert_backward_input(st, x, layer, e, dout, din, err);
	memcpy(x->dy, dout, rows * H * sizeof(float));
	mm_t(x->dy, PW(st, layer, P_E2(e)), x->du, rows, F, H, 0);
	silu_back(x->u, x->du, rows * F);
	mm_t(x->du, PW(st, layer, P_E1(e)), din, rows, H, F, 0);
	return 0;
}

static void attention_bwd(const struct dp_model_stage *st, struct dp_model_ctx *ctx, struct lctx *L,
			  int layer)
{
	const size_t T = st->T, H = st->H;

	mm_t(L->dh, PW(st, layer, P_WO), L->da, T, H, H, 0);
	/* per query token: score grads and dq; per key token: dk, dv summed
	 * over the later queries in query order */
	host_k(ctx, L, DP_DEV_K_ATTN_BWD_Q, T);
	host_k(ctx, L, DP_DEV_K_ATTN_BWD_KV, T);
	/* dx = dh + dq Wq' + dk Wk' + dv Wv' */
	memcpy(L->dx, L->dh, T * H * sizeof(float));
	mm_t(L->dq, PW(st, layer, P_WQ), L->dx, T, H, H, 1);
	mm_t(L->dk, PW(st, layer, P_WK), L->dx, T, H, H, 1);
	mm_t(L->dv, PW(st, layer, P_WV), L->dx, T, H, H, 1);
}

int dp_model_attn_backward(struct dp_model_stage *st, struct dp_model_ctx *ctx, int layer,
			   const float *packed_dx, struct dp_err *err)
{
	struct dp_dev_kargs kb;
	struct lctx *L = NULL;
	int rc;

	if ((rc = check_ctx(st, ctx, CTX_BWD_INPUT, "attn_backward", err)) ||
	    (rc = check_layer(ctx, layer, "attn_backward", &L, err)) ||
	    (rc = need_step(ctx, layer, L_COMBINE_BWD, "attn_backward", err)))
		return rc;
	L->done = L_ATTN_BWD;
	if (st->dev)
		return devm_attn_backward(st, ctx, L, layer, packed_dx, err);
	kb = dp_model_kargs(ctx, L, DP_DEV_K_ADD_ROWS);
	kb.a = packed_dx;
	host_run(DP_DEV_K_ADD_ROWS, &kb, st->T);
	attention_bwd(st, ctx, L, layer);
	return 0;
}

int dp_model_backward_end(struct dp_model_stage *st, struct dp_model_ctx *ctx, float *dx,
			  struct dp_err *err)
{
	int rc;

	rc = check_ctx(st, ctx, CTX_BWD_INPUT, "backward_end", err);
	if (rc)
		return rc;
	if (st->count && (rc = need_step(ctx, st->first, L_ATTN_BWD, "backward_end", err)))
		return rc;
	if (dx && !st->has_embed && st->dev)
		return devm_backward_end(st, ctx, dx, err);
	if (dx && !st->has_embed)
		memcpy(dx, dp_model_stage_din(ctx), st->T * st->H * sizeof(float));
	return 0;
}

/* ---- backward for weights --------------------------------------------------- */

static void head_w(const struct dp_model_stage *st, const struct dp_model_ctx *ctx)
{
	if (st->has_head)
		mm_grad(dp_model_stage_out(ctx), ctx->logits, st->g + st->tens[st->head_idx].off,
			st->T, st->H, st->V);
}

static void embed_w(const struct dp_model_stage *st, const struct dp_model_ctx *ctx)
{
	struct dp_dev_kargs kb;

	if (!st->has_embed)
		return;
	/* one vocabulary row each, its tokens in order */
	kb = dp_model_kargs(ctx, NULL, DP_DEV_K_EMBED_GRAD);
	kb.y = st->g + st->tens[st->embed_idx].off;
	host_run(DP_DEV_K_EMBED_GRAD, &kb, st->V);
}

/* Gate and shared-expert weights of one layer (after combine_backward). */
static void combine_w(const struct dp_model_stage *st, const struct dp_model_ctx *ctx,
		      const struct lctx *L, int layer)
{
	const size_t T = st->T, H = st->H, F = st->F;

	mm_grad(L->h, L->dl, PG(st, layer, P_WG), T, H, st->E);
	mm_grad(L->h, L->dsu, PG(st, layer, P_S1), T, H, F);
	mm_grad(L->sz, dp_model_layer_dout(ctx, layer), PG(st, layer, P_S2), T, F, H);
}

static void expert_w(const struct dp_model_stage *st, struct ectx *x, int layer, int e)
{
	if (x->n) {
		mm_grad(x->in, x->du, PG(st, layer, P_E1(e)), x->n, st->H, st->F);
		mm_grad(x->z, x->dy, PG(st, layer, P_E2(e)), x->n, st->F, st->H);
	}
	x->bwd = 0;
	x->fwd = 0;
}

int dp_model_expert_backward_weight(struct dp_model_stage *st, struct dp_model_ctx *ctx, int layer,
				    int e, struct dp_err *err)
{
	struct ectx *x = NULL;
	int rc;

	rc = check_expert(st, ctx, layer, e, 0, "expert_backward_weight", &x, err);
	if (rc)
		return rc;
	if (!x->bwd)
		return dp_err_set(err, EINVAL,
				  "model: expert_backward_weight: layer %d expert %d has no "
				  "backward_input",
				  layer, e);
	if (st->dev)
		return devm_expert_w(st, x, layer, e, err);
	expert_w(st, x, layer, e);
	return 0;
}

/* Attention weights of one layer (after attention_bwd). */
static void attn_w(const struct dp_model_stage *st, const struct dp_model_ctx *ctx,
		   const struct lctx *L, int layer)
{
	const size_t T = st->T, H = st->H;
	const float *x = dp_model_layer_in(ctx, layer);

	mm_grad(x, L->dq, PG(st, layer, P_WQ), T, H, H);
	mm_grad(x, L->dk, PG(st, layer, P_WK), T, H, H);
	mm_grad(x, L->dv, PG(st, layer, P_WV), T, H, H);
	mm_grad(L->a, L->dh, PG(st, layer, P_WO), T, H, H);
}

int dp_model_backward_weight(struct dp_model_stage *st, struct dp_model_ctx *ctx,
			     struct dp_err *err)
{
	int rc;

	rc = check_ctx(st, ctx, CTX_BWD_INPUT, "backward_weight", err);
	if (rc)
		return rc;
	if (st->count && (rc = need_step(ctx, st->first, L_ATTN_BWD, "backward_weight", err)))
		return rc;
	if (st->dev) {
		rc = devm_backward_weight(st, ctx, err);
		if (!rc)
			ctx->state = CTX_EMPTY;
		return rc;
	}
	head_w(st, ctx);
	for (int l = st->first + st->count - 1; l >= st->first; l--) {
		struct lctx *L = dp_model_layer_ctx(ctx, l);

		combine_w(st, ctx, L, l);
		for (size_t e = 0; e < st->E; e++)
			if (L->ex[e].bwd)
				expert_w(st, &L->ex[e], l, (int)e);
		attn_w(st, ctx, L, l);
	}
	embed_w(st, ctx);
	ctx->state = CTX_EMPTY;
	return 0;
}

/* Backward for input with all experts local; with @fused the weight
 * gradients of each part are taken as soon as its input gradient is. */
static int backward_local(struct dp_model_stage *st, struct dp_model_ctx *ctx, const float *dy,
			  float *dx, int fused, struct dp_err *err)
{
	const size_t H = st->H;
	int rc;

	rc = dp_model_backward_begin(st, ctx, dy, err);
	if (rc)
		return rc;
	if (fused)
		head_w(st, ctx);
	for (int l = st->first + st->count - 1; !rc && l >= st->first; l--) {
		struct lctx *L = fused ? dp_model_layer_ctx(ctx, l) : NULL;
		const int *off = dp_model_ctx_route(ctx, l)->offset;

		rc = dp_model_combine_backward(st, ctx, l, st->pk_a, err);
		if (!rc && fused)
			combine_w(st, ctx, L, l);
		for (int e = 0; !rc && e < (int)st->E; e++) {
			rc = dp_model_expert_backward_input(st, ctx, l, e, off[e + 1] - off[e],
							    st->pk_a + (size_t)off[e] * H,
							    st->pk_b + (size_t)off[e] * H, err);
			if (!rc && fused)
				expert_w(st, &L->ex[e], l, e);
		}
		if (!rc)
			rc = dp_model_attn_backward(st, ctx, l, st->pk_b, err);
		if (!rc && fused)
			attn_w(st, ctx, L, l);
	}
	if (!rc)
		rc = dp_model_backward_end(st, ctx, dx, err);
	if (!rc && fused) {
		embed_w(st, ctx);
		ctx->state = CTX_EMPTY;
	}
	return rc;
}

int dp_model_backward_input(struct dp_model_stage *st, struct dp_model_ctx *ctx, const float *dy,
			    float *dx, struct dp_err *err)
{
	return backward_local(st, ctx, dy, dx, 0, err);
}

int dp_model_backward(struct dp_model_stage *st, struct dp_model_ctx *ctx, const float *dy,
		      float *dx, struct dp_err *err)
{
	int rc;

	if (st->dev) { /* device stage: W after the whole I, as backward_input */
		rc = backward_local(st, ctx, dy, dx, 0, err);
		return rc ? rc : dp_model_backward_weight(st, ctx, err);
	}
	return backward_local(st, ctx, dy, dx, 1, err);
}
