/* a2a/eplb.c - expert-parallel load balancing, a faithful float32 port of
 * DeepSeek's eplb.py (algorithm facts: ../shared/docs/EPLB.md).
 *
 * Why the care with floats: upstream works on float32 tensors, and the
 * decisions (sort order, lightest bin, heaviest share) flip on the last bit.
 * So loads, load/count shares and bin sums stay `float`, every float result
 * is stored through a (float) cast (with -std=c11 GCC honours it:
 * -fexcess-precision=standard, -ffp-contract=off), and the build never uses
 * -ffast-math.  Group loads are the exact sum rounded to double (Shewchuk's
 * msum plus a half-way fix, like Python's math.fsum) and then to float, as
 * the reference does; whenever the plain double sum is exact that is the same
 * thing.
 *
 * Ties: upstream sorts with stable=False; the project's rule is the stable
 * order (descending value, ascending index).  Bin choice takes the first
 * lightest bin, replica choice the first heaviest share.  Both use binary
 * heaps keyed on (value, index), which is exactly "first extremum" because
 * (value, index) is a total order once NaN is excluded (we reject NaN).
 */
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "a2a/dp_eplb.h"

/* With FLT_EVAL_METHOD 1 or 2 one float + or / is computed wider and then
 * rounded by the (float) cast: still the correctly rounded float result
 * (the wider format has over 2*24+2 bits).  An indeterminable method is refused. */
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD < 0
#error "eplb: float evaluation method is indeterminable"
#endif

/* Largest array we agree to build, in elements. */
#define EPLB_MAX_CELLS ((size_t)INT32_MAX)

struct dp_eplb_plan {
	struct dp_eplb_cfg cfg;
	int hierarchical;
	int width; /* X */
	int32_t *phy2log, *phyrank, *logcnt, *log2phy;
	double *before, *after, *node_after; /* [L], NaN: no ratio */
};

/* ---- building blocks ----------------------------------------------------- */

struct item {
	float v;
	int idx;
};

/* Descending value, ties by ascending index: upstream's sort with stable=True. */
static int item_cmp_desc(const void *pa, const void *pb)
{
	const struct item *a = pa, *b = pb;

	if (a->v > b->v)
		return -1;
	if (a->v < b->v)
		return 1;
	return (a->idx > b->idx) - (a->idx < b->idx);
}

struct bin {
	float load;
	int idx;
	int count;
};

/* Min-heap order: lighter first, then lower index (Python min() keeps the first). */
static int bin_before(const struct bin *a, const struct bin *b)
{
	return a->load < b->load || (a->load == b->load && a->idx < b->idx);
}

static void bin_sift_down(struct bin *h, int n, int i)
{
	for (;;) {
		int l = 2 * i + 1, r = l + 1, m = i;
		struct bin t;

		if (l < n && bin_before(&h[l], &h[m]))
			m = l;
		if (r < n && bin_before(&h[r], &h[m]))
			m = r;
		if (m == i)
			return;
		t = h[i];
		h[i] = h[m];
		h[m] = t;
		i = m;
	}
}

struct ws {
	struct item *items; /* max n */
	struct bin *bins;   /* max m */
	int *heap;	    /* replicate: expert heap, max n */
	float *share;	    /* replicate: load/count per expert */
};

/* balanced_packing: n items into m bins of exactly n/m.  Bin sums are float
 * running sums in sorted item order, starting from 0 (0 + x == x). */
static void balanced_packing(const float *w, int n, int m, int *pack, int *rank, struct ws *ws)
{
	int per = n / m, live = m;

	if (per == 1) {
		for (int i = 0; i < n; i++) {
			pack[i] = i;
			rank[i] = 0;
		}
		return;
	}
	for (int i = 0; i < n; i++) {
		ws->items[i].v = w[i];
		ws->items[i].idx = i;
	}
	qsort(ws->items, (size_t)n, sizeof(*ws->items), item_cmp_desc);
	/* all bins start equal at 0: index order is already a valid heap */
	for (int b = 0; b < m; b++) {
		ws->bins[b].load = 0.0f;
		ws->bins[b].idx = b;
		ws->bins[b].count = 0;
	}
	for (int k = 0; k < n; k++) {
		int it = ws->items[k].idx;
		struct bin *top = &ws->bins[0];

		pack[it] = top->idx;
		rank[it] = top->count;
		top->load = (float)(top->load + w[it]);
		if (++top->count == per) {
			ws->bins[0] = ws->bins[--live];
			if (live == 0)
				break;
		}
		bin_sift_down(ws->bins, live, 0);
	}
}

/* Max-heap order on experts: larger share first, then lower index (first argmax). */
static int exp_before(const float *share, int a, int b)
{
	float sa = share[a], sb = share[b];

	return sa > sb || (sa == sb && a < b);
}

static void exp_sift_down(int *h, int n, int i, const float *share)
{
	for (;;) {
		int l = 2 * i + 1, r = l + 1, m = i, t;

		if (l < n && exp_before(share, h[l], h[m]))
			m = l;
		if (r < n && exp_before(share, h[r], h[m]))
			m = r;
		if (m == i)
			return;
		t = h[i];
		h[i] = h[m];
		h[m] = t;
		i = m;
	}
}

/* replicate_experts: n experts into r >= n slots.  Slot j < n is expert j;
 * each extra slot goes to the largest float32 load/count (first on ties). */
static void replicate_experts(const float *w, int n, int r, int *p2l, int *rank, int *cnt,
			      struct ws *ws)
{
	int *h = ws->heap;
	float *share = ws->share;

	for (int j = 0; j < n; j++) {
		p2l[j] = j;
		rank[j] = 0;
		cnt[j] = 1;
		share[j] = w[j];
		h[j] = j;
	}
	if (r == n)
		return;
	for (int i = n / 2 - 1; i >= 0; i--)
		exp_sift_down(h, n, i, share);
	for (int s = n; s < r; s++) {
		int e = h[0];

		p2l[s] = e;
		rank[s] = cnt[e];
		cnt[e]++;
		share[e] = (float)(w[e] / (float)cnt[e]);
		exp_sift_down(h, n, 0, share);
	}
}

/* Correctly rounded double sum of @n floats (Shewchuk partials, then the
 * round-half-even fix-up of the top partials), as Python's math.fsum.  The
 * inputs are floats, so no partial can overflow a double. */
static double exact_sum(const float *x, int n, double *partials)
{
	int np = 0;
	double hi = 0.0, lo = 0.0;

	for (int k = 0; k < n; k++) {
		double v = x[k];
		int i = 0;

		for (int j = 0; j < np; j++) {
			double y = partials[j], t, h, l;

			if (fabs(v) < fabs(y)) {
				t = v;
				v = y;
				y = t;
			}
			h = v + y;
			l = y - (h - v);
			if (l != 0.0)
				partials[i++] = l;
			v = h;
		}
		partials[i] = v;
		np = i + 1;
	}
	if (np == 0)
		return 0.0;
	hi = partials[--np];
	while (np > 0) {
		double v = hi, y = partials[--np], yr;

		hi = v + y;
		yr = hi - v;
		lo = y - yr;
		if (lo != 0.0)
			break;
	}
	if (np > 0 &&
	    ((lo < 0.0 && partials[np - 1] < 0.0) || (lo > 0.0 && partials[np - 1] > 0.0))) {
		double y = lo * 2.0, v = hi + y, yr = v - hi;

		if (y == yr)
			hi = v;
	}
	return hi;
}

/* Per-layer scratch of the hierarchical algorithm. */
struct layer_ws {
	struct ws ws;
	float *gload;  /* [G] */
	int *gpack;    /* [G] */
	int *grank;    /* [G] */
	int *log2mlog; /* [E] */
	int *mlog2log; /* [E] */
	float *wm;     /* [E/N] node-local loads */
	int *p2m;      /* [R/N] */
	int *prank;    /* [R/N] */
	int *mcnt;     /* [E] */
	float *rload;  /* [R/N] */
	int *pk;       /* [R/N] */
	int *rk;       /* [R/N] */
	double *parts; /* [E/G + 1] fsum partials */
	void *block;   /* one allocation for all of the above */
};

static size_t align8(size_t n)
{
	return (n + 7) & ~(size_t)7;
}

static int layer_ws_init(struct layer_ws *lw, int E, int R, int G, int N)
{
	size_t epn = (size_t)(E / N), rpn = (size_t)(R / N), gs = (size_t)(E / G);
	size_t nmax = rpn > (size_t)G ? rpn : (size_t)G;
	size_t sz[16], off = 0;
	char *p;
	int k = 0;

	sz[k++] = align8(nmax * sizeof(struct item));
	sz[k++] = align8(nmax * sizeof(struct bin));
	sz[k++] = align8(epn * sizeof(int));
	sz[k++] = align8(epn * sizeof(float));
	sz[k++] = align8((size_t)G * sizeof(float));
	sz[k++] = align8((size_t)G * sizeof(int));
	sz[k++] = align8((size_t)G * sizeof(int));
	sz[k++] = align8((size_t)E * sizeof(int));
	sz[k++] = align8((size_t)E * sizeof(int));
	sz[k++] = align8(epn * sizeof(float));
	sz[k++] = align8(rpn * sizeof(int));
	sz[k++] = align8(rpn * sizeof(int));
	sz[k++] = align8((size_t)E * sizeof(int));
	sz[k++] = align8(rpn * sizeof(float));
	sz[k++] = align8(rpn * sizeof(int));
	sz[k++] = align8(rpn * sizeof(int));
	for (int i = 0; i < k; i++)
		off += sz[i];
	off += align8((gs + 1) * sizeof(double));
	lw->block = malloc(off);
	if (!lw->block)
		return -ENOMEM;
	p = lw->block;
	k = 0;
#define TAKE(field)                                                                                \
	do {                                                                                       \
		lw->field = (void *)p;                                                             \
		p += sz[k++];                                                                      \
	} while (0)
	TAKE(ws.items);
	TAKE(ws.bins);
	TAKE(ws.heap);
	TAKE(ws.share);
	TAKE(gload);
	TAKE(gpack);
	TAKE(grank);
	TAKE(log2mlog);
	TAKE(mlog2log);
	TAKE(wm);
	TAKE(p2m);
	TAKE(prank);
	TAKE(mcnt);
	TAKE(rload);
	TAKE(pk);
	TAKE(rk);
#undef TAKE
	lw->parts = (double *)(void *)p;
	return 0;
}

/* rebalance_experts_hierarchical for one layer (global = G = N = 1). */
static void rebalance_layer(const float *w, int E, int R, int G, int N, int P, int32_t *phy2log,
			    int32_t *phyrank, int32_t *logcnt, struct layer_ws *lw)
{
	int gs = E / G, gpn = G / N, epn = E / N, rpn = R / N, ppn = P / N, spg = R / P;

	/* 1: groups -> nodes, then node-major relabelling */
	for (int g = 0; g < G; g++)
		lw->gload[g] = (float)exact_sum(w + (size_t)g * (size_t)gs, gs, lw->parts);
	balanced_packing(lw->gload, G, N, lw->gpack, lw->grank, &lw->ws);
	for (int g = 0; g < G; g++) {
		int base = (lw->gpack[g] * gpn + lw->grank[g]) * gs;

		for (int j = 0; j < gs; j++) {
			lw->log2mlog[g * gs + j] = base + j;
			lw->mlog2log[base + j] = g * gs + j;
		}
	}
	for (int n = 0; n < N; n++) {
		const int *m2l = lw->mlog2log + (size_t)n * (size_t)epn;
		int *mcnt = lw->mcnt + (size_t)n * (size_t)epn;
		int slot0 = n * rpn;

		/* 2: replicate inside the node, experts in node-major order */
		for (int k = 0; k < epn; k++)
			lw->wm[k] = w[m2l[k]];
		replicate_experts(lw->wm, epn, rpn, lw->p2m, lw->prank, mcnt, &lw->ws);
		/* 3: replicas -> the node's GPUs */
		for (int q = 0; q < rpn; q++)
			lw->rload[q] = (float)(lw->wm[lw->p2m[q]] / (float)mcnt[lw->p2m[q]]);
		balanced_packing(lw->rload, rpn, ppn, lw->pk, lw->rk, &lw->ws);
		for (int q = 0; q < rpn; q++) {
			int slot = slot0 + lw->pk[q] * spg + lw->rk[q];

			phy2log[slot] = m2l[lw->p2m[q]];
			phyrank[slot] = lw->prank[q];
		}
	}
	/* 4: counts back in logical order */
	for (int e = 0; e < E; e++)
		logcnt[e] = lw->mcnt[lw->log2mlog[e]];
}

/* ---- public API ---------------------------------------------------------- */

int dp_eplb_cfg_hierarchical(const struct dp_eplb_cfg *cfg)
{
	return cfg->groups % cfg->nodes == 0;
}

int dp_eplb_cfg_check(const struct dp_eplb_cfg *cfg, struct dp_err *err)
{
	static const char *const names[] = { "layers", "experts", "replicas",
					     "groups", "nodes",	  "gpus" };
	const int vals[] = { cfg->layers, cfg->experts, cfg->replicas,
			     cfg->groups, cfg->nodes,	cfg->gpus };
	const char *pol;
	size_t cells;

	for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++)
		if (vals[i] < 1)
			return dp_err_set(err, EINVAL, "eplb: %s must be at least 1 (got %d)",
					  names[i], vals[i]);
	if (dp_eplb_cfg_hierarchical(cfg)) {
		pol = "hierarchical";
		if (cfg->experts % cfg->groups != 0)
			return dp_err_set(err, EINVAL,
					  "eplb: %s policy needs experts %% groups == 0 "
					  "(experts %d, groups %d)",
					  pol, cfg->experts, cfg->groups);
		if (cfg->gpus % cfg->nodes != 0)
			return dp_err_set(err, EINVAL,
					  "eplb: %s policy needs gpus %% nodes == 0 "
					  "(gpus %d, nodes %d)",
					  pol, cfg->gpus, cfg->nodes);
	} else {
		pol = "global";
	}
	if (cfg->replicas % cfg->gpus != 0)
		return dp_err_set(err, EINVAL,
				  "eplb: %s policy needs replicas %% gpus == 0 "
				  "(replicas %d, gpus %d)",
				  pol, cfg->replicas, cfg->gpus);
	if (cfg->replicas < cfg->experts)
		return dp_err_set(err, EINVAL,
				  "eplb: %s policy needs replicas >= experts "
				  "(replicas %d, experts %d)",
				  pol, cfg->replicas, cfg->experts);
	cells = (size_t)cfg->layers * (size_t)cfg->replicas;
	if (cells > EPLB_MAX_CELLS)
		return dp_err_set(err, E2BIG, "eplb: %d layers x %d replicas is too large",
				  cfg->layers, cfg->replicas);
	return 0;
}

int dp_eplb_rebalance(const float *weight, const struct dp_eplb_cfg *cfg, int32_t *phy2log,
		      int32_t *phyrank, int32_t *logcnt, struct dp_err *err)
{
	struct layer_ws lw;
	int L, E, R, G, N, P, rc;

	rc = dp_eplb_cfg_check(cfg, err);
	if (rc)
		return rc;
	L = cfg->layers;
	E = cfg->experts;
	R = cfg->replicas;
	P = cfg->gpus;
	if (dp_eplb_cfg_hierarchical(cfg)) {
		G = cfg->groups;
		N = cfg->nodes;
	} else {
		G = 1;
		N = 1;
	}
	for (size_t i = 0; i < (size_t)L * (size_t)E; i++)
		if (!isfinite(weight[i]))
			return dp_err_set(err, EINVAL,
					  "eplb: load of layer %zu expert %zu is not finite",
					  i / (size_t)E, i % (size_t)E);
	if (layer_ws_init(&lw, E, R, G, N))
		return dp_err_set(err, ENOMEM, "eplb: out of memory");
	for (int l = 0; l < L; l++)
		rebalance_layer(weight + (size_t)l * (size_t)E, E, R, G, N, P,
				phy2log + (size_t)l * (size_t)R, phyrank + (size_t)l * (size_t)R,
				logcnt + (size_t)l * (size_t)E, &lw);
	free(lw.block);
	return 0;
}

/* max / mean of @n loads, or NaN when the total is not positive. */
static double ratio(const double *load, int n, double total)
{
	double mx = load[0], mean = total / n;

	if (!(total > 0.0))
		return NAN;
	for (int i = 1; i < n; i++)
		if (load[i] > mx)
			mx = load[i];
	return mx / mean;
}

static int plan_balance(struct dp_eplb_plan *pl, const float *weight)
{
	const struct dp_eplb_cfg *c = &pl->cfg;
	int E = c->experts, R = c->replicas, P = c->gpus, N = c->nodes, spg = R / P;
	/* node figures only make sense where P divides into nodes */
	int ppn = P % N == 0 ? P / N : 0;
	double *gpu = calloc((size_t)P + (size_t)N, sizeof(*gpu));
	double *node;

	if (!gpu)
		return -ENOMEM;
	node = gpu + P;
	for (int l = 0; l < c->layers; l++) {
		const float *w = weight + (size_t)l * (size_t)E;
		const int32_t *p2l = pl->phy2log + (size_t)l * (size_t)R;
		const int32_t *cnt = pl->logcnt + (size_t)l * (size_t)E;
		double total = 0.0;

		for (int e = 0; e < E; e++)
			total += (double)w[e];
		memset(gpu, 0, ((size_t)P + (size_t)N) * sizeof(*gpu));
		for (int e = 0; e < E; e++)
			gpu[(int64_t)e * P / E] += (double)w[e];
		pl->before[l] = ratio(gpu, P, total);
		memset(gpu, 0, (size_t)P * sizeof(*gpu));
		for (int p = 0; p < R; p++)
			gpu[p / spg] += (double)w[p2l[p]] / (double)cnt[p2l[p]];
		pl->after[l] = ratio(gpu, P, total);
		if (ppn) {
			for (int g = 0; g < P; g++)
				node[g / ppn] += gpu[g];
			pl->node_after[l] = ratio(node, N, total);
		} else {
			pl->node_after[l] = NAN;
		}
	}
	free(gpu);
	return 0;
}

void dp_eplb_plan_free(struct dp_eplb_plan *plan)
{
	if (!plan)
		return;
	free(plan->phy2log);
	free(plan->phyrank);
	free(plan->logcnt);
	free(plan->log2phy);
	free(plan->before);
	free(plan->after);
	free(plan->node_after);
	free(plan);
}

int dp_eplb_plan_build(const float *weight, const struct dp_eplb_cfg *cfg,
		       struct dp_eplb_plan **out, struct dp_err *err)
{
	struct dp_eplb_plan *pl;
	size_t LR, LE, cells;
	int rc, X = 0;

	rc = dp_eplb_cfg_check(cfg, err);
	if (rc)
		return rc;
	pl = calloc(1, sizeof(*pl));
	if (!pl)
		return dp_err_set(err, ENOMEM, "eplb: out of memory");
	pl->cfg = *cfg;
	pl->hierarchical = dp_eplb_cfg_hierarchical(cfg);
	LR = (size_t)cfg->layers * (size_t)cfg->replicas;
	LE = (size_t)cfg->layers * (size_t)cfg->experts;
	pl->phy2log = calloc(LR, sizeof(int32_t));
	pl->phyrank = calloc(LR, sizeof(int32_t));
	pl->logcnt = calloc(LE, sizeof(int32_t));
	pl->before = malloc((size_t)cfg->layers * sizeof(double));
	pl->after = malloc((size_t)cfg->layers * sizeof(double));
	pl->node_after = malloc((size_t)cfg->layers * sizeof(double));
	if (!pl->phy2log || !pl->phyrank || !pl->logcnt || !pl->before || !pl->after ||
	    !pl->node_after) {
		rc = dp_err_set(err, ENOMEM, "eplb: out of memory");
		goto err_free;
	}
	rc = dp_eplb_rebalance(weight, cfg, pl->phy2log, pl->phyrank, pl->logcnt, err);
	if (rc)
		goto err_free;
	for (size_t i = 0; i < LE; i++)
		if (pl->logcnt[i] > X)
			X = pl->logcnt[i];
	cells = LE * (size_t)X;
	if (X < 1) { /* cannot happen: every count is >= 1 */
		rc = dp_err_set(err, EFAULT, "eplb: internal error: no replica counts");
		goto err_free;
	}
	if (cells > EPLB_MAX_CELLS) {
		rc = dp_err_set(err, E2BIG, "eplb: log2phy of %zu entries is too large", cells);
		goto err_free;
	}
	pl->width = X;
	pl->log2phy = malloc(cells * sizeof(int32_t));
	if (!pl->log2phy) {
		rc = dp_err_set(err, ENOMEM, "eplb: out of memory");
		goto err_free;
	}
	for (size_t i = 0; i < cells; i++)
		pl->log2phy[i] = -1;
	for (int l = 0; l < cfg->layers; l++)
		for (int p = 0; p < cfg->replicas; p++) {
			size_t s = (size_t)l * (size_t)cfg->replicas + (size_t)p;
			size_t e = (size_t)l * (size_t)cfg->experts + (size_t)pl->phy2log[s];

			pl->log2phy[e * (size_t)X + (size_t)pl->phyrank[s]] = p;
		}
	if (plan_balance(pl, weight)) {
		rc = dp_err_set(err, ENOMEM, "eplb: out of memory");
		goto err_free;
	}
	*out = pl;
	return 0;
err_free:
	dp_eplb_plan_free(pl);
	return rc;
}

const struct dp_eplb_cfg *dp_eplb_plan_cfg(const struct dp_eplb_plan *plan)
{
	return &plan->cfg;
}

int dp_eplb_plan_hierarchical(const struct dp_eplb_plan *plan)
{
	return plan->hierarchical;
}

const int32_t *dp_eplb_plan_phy2log(const struct dp_eplb_plan *plan)
{
	return plan->phy2log;
}

const int32_t *dp_eplb_plan_phyrank(const struct dp_eplb_plan *plan)
{
	return plan->phyrank;
}

const int32_t *dp_eplb_plan_logcnt(const struct dp_eplb_plan *plan)
{
	return plan->logcnt;
}

const int32_t *dp_eplb_plan_log2phy(const struct dp_eplb_plan *plan)
{
	return plan->log2phy;
}

int dp_eplb_plan_width(const struct dp_eplb_plan *plan)
{
	return plan->width;
}

double dp_eplb_plan_balance_before(const struct dp_eplb_plan *plan, int layer)
{
	return plan->before[layer];
}

double dp_eplb_plan_balance_after(const struct dp_eplb_plan *plan, int layer)
{
	return plan->after[layer];
}

double dp_eplb_plan_node_balance_after(const struct dp_eplb_plan *plan, int layer)
{
	return plan->node_after[layer];
}

static int aggregate(const struct dp_eplb_plan *plan, int want_max, double *before, double *after)
{
	double b = 0.0, a = 0.0;
	int n = 0;

	for (int l = 0; l < plan->cfg.layers; l++) {
		if (isnan(plan->after[l]))
			continue;
		if (want_max) {
			b = n == 0 || plan->before[l] > b ? plan->before[l] : b;
			a = n == 0 || plan->after[l] > a ? plan->after[l] : a;
		} else {
			b += plan->before[l];
			a += plan->after[l];
		}
		n++;
	}
	if (n == 0)
		return -ENODATA;
	if (!want_max) {
		b /= n;
		a /= n;
	}
	if (before)
		*before = b;
	if (after)
		*after = a;
	return 0;
}

int dp_eplb_plan_balance_max(const struct dp_eplb_plan *plan, double *before, double *after)
{
	return aggregate(plan, 1, before, after);
}

int dp_eplb_plan_balance_mean(const struct dp_eplb_plan *plan, double *before, double *after)
{
	return aggregate(plan, 0, before, after);
}
