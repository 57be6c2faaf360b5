/* a2a/plan.c - routing plan, dispatch and combine, naive and two-hop.
 *
 * Both algorithms are written over "channels": a peer and a list of rows.
 *   out1  source -> first hop: naive, one per rank (tokens with an expert
 *         there); two-hop, one per node, to the rank with our local index
 *         on that node (tokens with an expert on that node)
 *   in1   two-hop relay: one per node, from the rank with our local index
 *   out2  two-hop relay -> the ranks of our node, rows picked from in1
 *   in2   final hop into this rank: naive, from every rank; two-hop, from
 *         every relay of our node.  map[j] = received-token index of row j.
 * The layout (one record per row: source rank, token, K experts, K
 * weights) travels the same channels first, so every buffer is sized
 * before any payload moves.  Messages are queued by the transport, so the
 * order "send all, then receive" cannot deadlock. */
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "a2a/a2a_int.h"
#include "common/dp_log.h"
#include "common/dp_banned.h"

enum {
	TAG_L1 = 0x101, /* layout, first hop */
	TAG_L2 = 0x102, /* layout, relay -> target */
	TAG_D1 = 0x201,
	TAG_D2 = 0x202,
	TAG_C2 = 0x301, /* target -> relay (two-hop) or source (naive) */
	TAG_C1 = 0x302, /* relay -> source */
};

struct chan {
	int peer;
	int n;
	int32_t *idx; /* out1: token; in2: recv index; out2: in1 channel */
	int32_t *row; /* out2: row in that in1 channel */
};

struct lhdr {
	uint32_t count;
	uint32_t k;
};

struct dp_a2a_plan {
	struct dp_a2a_comm *c;
	enum dp_a2a_algo algo;
	int T, K;
	int32_t *idx;
	float *w;
	int nout1, nin1, nout2, nin2;
	struct chan *out1, *in1, *out2, *in2;
	struct dp_a2a_recv *recv;
	int nrecv, nslots;
	struct dp_a2a_stats st;
	/* two-hop pipelining (pipe_build): C tokens per chunk; out2 channel q
	 * holds in1 channel n's rows at positions [lo2, hi2)[q * nodes + n]
	 * (sorted by row); chunk c of in1 channel n is chunk coff[n] + c, and
	 * cneed[] counts the out2 rows (contributions) that fall in each;
	 * tneed[t] = out1 channels holding token t, tpos[t * nodes + i] its row
	 * in out1 channel i or -1 */
	int C;
	int *lo2, *hi2, *coff, *cneed, *tneed, *tpos;
	/* the op in flight */
	pthread_t th;
	int op; /* 0 none, 1 dispatch, 2 combine */
	const float *x, *y;
	float *rx, *out;
	int rc;
	struct dp_err err;
};

static size_t rec_size(int K)
{
	return 8 + 8 * (size_t)K;
}

static int rank_of(const struct dp_a2a_comm *c, int e)
{
	return e / c->epr;
}

static void count_bytes(struct dp_a2a_plan *p, int peer, size_t n, uint64_t *inter, uint64_t *intra)
{
	const struct dp_a2a_comm *c = p->c;

	if (peer == c->rank)
		return;
	if (peer / c->rpn != c->rank / c->rpn)
		*inter += n;
	else
		*intra += n;
}

static int send_counted(struct dp_a2a_plan *p, int peer, uint32_t tag, const void *buf, size_t n,
			uint64_t *inter, uint64_t *intra, struct dp_err *err)
{
	count_bytes(p, peer, n, inter, intra);
	return p->c->ep->tp->send(p->c->ep, peer, tag, buf, n, err);
}

static void free_chans(struct chan *ch, int n)
{
	for (int i = 0; ch && i < n; i++) {
		free(ch[i].idx);
		free(ch[i].row);
	}
	free(ch);
}

void dp_a2a_plan_free(struct dp_a2a_plan *p)
{
	if (!p)
		return;
	if (p->op) {
		(void)pthread_join(p->th, NULL);
		p->c->busy = 0;
	}
	free_chans(p->out1, p->nout1);
	free_chans(p->in1, p->nin1);
	free_chans(p->out2, p->nout2);
	free_chans(p->in2, p->nin2);
	free(p->recv);
	free(p->lo2);
	free(p->hi2);
	free(p->coff);
	free(p->cneed);
	free(p->tneed);
	free(p->tpos);
	free(p->idx);
	free(p->w);
	free(p);
}

/* Does token record (experts @e[K]) have an expert on rank @r / node @n? */
static int hits_rank(const struct dp_a2a_comm *c, const int32_t *e, int K, int r)
{
	for (int j = 0; j < K; j++)
		if (e[j] >= 0 && rank_of(c, e[j]) == r)
			return 1;
	return 0;
}

static int hits_node(const struct dp_a2a_comm *c, const int32_t *e, int K, int n)
{
	for (int j = 0; j < K; j++)
		if (e[j] >= 0 && rank_of(c, e[j]) / c->rpn == n)
			return 1;
	return 0;
}

static void put_rec(char *dst, int src_rank, int tok, const int32_t *e, const float *w, int K)
{
	int32_t h[2] = { src_rank, tok };

	memcpy(dst, h, sizeof(h));
	memcpy(dst + 8, e, 4 * (size_t)K);
	memcpy(dst + 8 + 4 * (size_t)K, w, 4 * (size_t)K);
}

/* Send the layout records of @ch (rows given by @get) with @tag. */
static int send_layout(struct dp_a2a_plan *p, const struct chan *ch, uint32_t tag,
		       const char *const *recs, struct dp_err *err)
{
	size_t rs = rec_size(p->K), len = sizeof(struct lhdr) + (size_t)ch->n * rs;
	char *buf = malloc(len);
	struct lhdr h = { (uint32_t)ch->n, (uint32_t)p->K };
	int rc;

	if (!buf)
		return dp_err_set(err, ENOMEM, "a2a: out of memory");
	memcpy(buf, &h, sizeof(h));
	for (int j = 0; j < ch->n; j++) {
		assert(recs[j]);
		memcpy(buf + sizeof(h) + (size_t)j * rs, recs[j], rs);
	}
	rc = send_counted(p, ch->peer, tag, buf, len, &p->st.layout_inter, &p->st.layout_intra,
			  err);
	free(buf);
	return rc;
}

/* Receive a layout from @peer; checks it.  *recs points into *buf. */
static int recv_layout(struct dp_a2a_plan *p, int peer, uint32_t tag, char **buf, int *count,
		       struct dp_err *err)
{
	const struct dp_a2a_comm *c = p->c;
	size_t rs = rec_size(p->K), len = 0;
	struct lhdr h;
	void *b = NULL;
	int rc;

	rc = c->ep->tp->recv(c->ep, peer, tag, &b, &len, err);
	if (rc)
		return rc;
	if (len < sizeof(h) || !b)
		goto bad;
	memcpy(&h, b, sizeof(h));
	if (h.k != (uint32_t)p->K || len != sizeof(h) + (size_t)h.count * rs)
		goto bad;
	for (uint32_t j = 0; j < h.count; j++) {
		const char *r = (const char *)b + sizeof(h) + j * rs;
		int32_t hd[2], e;

		memcpy(hd, r, sizeof(hd));
		if (hd[0] < 0 || hd[0] >= c->world || hd[1] < 0)
			goto bad;
		for (int k = 0; k < p->K; k++) {
			memcpy(&e, r + 8 + 4 * (size_t)k, 4);
			if (e < -1 || e >= c->experts)
				goto bad;
		}
	}
	*buf = b;
	*count = (int)h.count;
	return 0;
bad:
	free(b);
	return dp_err_set(err, EPROTO, "a2a: bad layout message from rank %d", peer);
}

static struct chan *new_chans(int n)
{
	return calloc((size_t)(n > 0 ? n : 1), sizeof(struct chan));
}

/* Source side: the first-hop channels and their layout records. */
static int build_out1(struct dp_a2a_plan *p, struct dp_err *err)
{
	struct dp_a2a_comm *c = p->c;
	int two = p->algo == DP_A2A_TWO_HOP;
	size_t rs = rec_size(p->K);
	char *recs = NULL;
	const char **ptrs = NULL;
	int rc = 0;

	p->nout1 = two ? c->nodes : c->world;
	p->out1 = new_chans(p->nout1);
	recs = calloc((size_t)(p->T > 0 ? p->T : 1), rs);
	ptrs = calloc((size_t)(p->T > 0 ? p->T : 1), sizeof(*ptrs));
	if (!p->out1 || !recs || !ptrs) {
		rc = dp_err_set(err, ENOMEM, "a2a: out of memory");
		goto out;
	}
	for (int t = 0; t < p->T; t++)
		put_rec(recs + (size_t)t * rs, c->rank, t, p->idx + (size_t)t * p->K,
			p->w + (size_t)t * p->K, p->K);
	for (int i = 0; i < p->nout1; i++) {
		struct chan *ch = &p->out1[i];

		ch->peer = two ? i * c->rpn + c->rank % c->rpn : i;
		ch->idx = calloc((size_t)(p->T > 0 ? p->T : 1), sizeof(int32_t));
		if (!ch->idx) {
			rc = dp_err_set(err, ENOMEM, "a2a: out of memory");
			goto out;
		}
		for (int t = 0; t < p->T; t++) {
			const int32_t *e = p->idx + (size_t)t * p->K;

			if (two ? hits_node(c, e, p->K, i) : hits_rank(c, e, p->K, i)) {
				ptrs[ch->n] = recs + (size_t)t * rs;
				ch->idx[ch->n++] = t;
			}
		}
		rc = send_layout(p, ch, TAG_L1, ptrs, err);
		if (rc)
			goto out;
	}
out:
	free(ptrs);
	free(recs);
	return rc;
}

/* Two-hop relay: read the first-hop layouts, pick rows for each local rank. */
static int build_relay(struct dp_a2a_plan *p, struct dp_err *err)
{
	struct dp_a2a_comm *c = p->c;
	int node = c->rank / c->rpn, li = c->rank % c->rpn, rc = 0, total = 0;
	size_t rs = rec_size(p->K);
	char **bufs = calloc((size_t)c->nodes, sizeof(char *));
	const char **ptrs = NULL;

	p->nin1 = c->nodes;
	p->nout2 = c->rpn;
	p->in1 = new_chans(p->nin1);
	p->out2 = new_chans(p->nout2);
	if (!bufs || !p->in1 || !p->out2) {
		rc = dp_err_set(err, ENOMEM, "a2a: out of memory");
		goto out;
	}
	for (int n = 0; n < c->nodes; n++) {
		p->in1[n].peer = n * c->rpn + li;
		rc = recv_layout(p, p->in1[n].peer, TAG_L1, &bufs[n], &p->in1[n].n, err);
		if (rc)
			goto out;
		total += p->in1[n].n;
	}
	ptrs = calloc((size_t)(total > 0 ? total : 1), sizeof(*ptrs));
	if (!ptrs) {
		rc = dp_err_set(err, ENOMEM, "a2a: out of memory");
		goto out;
	}
	for (int q = 0; q < c->rpn; q++) {
		struct chan *ch = &p->out2[q];

		ch->peer = node * c->rpn + q;
		ch->idx = calloc((size_t)(total > 0 ? total : 1), sizeof(int32_t));
		ch->row = calloc((size_t)(total > 0 ? total : 1), sizeof(int32_t));
		if (!ch->idx || !ch->row) {
			rc = dp_err_set(err, ENOMEM, "a2a: out of memory");
			goto out;
		}
		for (int n = 0; n < c->nodes; n++)
			for (int j = 0; j < p->in1[n].n; j++) {
				const char *r = bufs[n] + sizeof(struct lhdr) + (size_t)j * rs;
				int32_t e[DP_A2A_MAX_TOPK] = { 0 };

				memcpy(e, r + 8, 4 * (size_t)p->K);
				if (!hits_rank(c, e, p->K, ch->peer))
					continue;
				ptrs[ch->n] = r;
				ch->idx[ch->n] = n;
				ch->row[ch->n++] = j;
			}
		rc = send_layout(p, ch, TAG_L2, ptrs, err);
		if (rc)
			goto out;
	}
out:
	for (int n = 0; bufs && n < c->nodes; n++)
		free(bufs[n]);
	free(bufs);
	free(ptrs);
	return rc;
}

struct pending {
	int32_t src_rank, src_token;
	int ch, j;
	const char *rec;
};

static int cmp_pending(const void *a, const void *b)
{
	const struct pending *x = a, *y = b;

	if (x->src_rank != y->src_rank)
		return x->src_rank < y->src_rank ? -1 : 1;
	if (x->src_token != y->src_token)
		return x->src_token < y->src_token ? -1 : 1;
	return 0;
}

/* Target side: read the final-hop layouts; order by (source rank, token). */
static int build_in2(struct dp_a2a_plan *p, struct dp_err *err)
{
	struct dp_a2a_comm *c = p->c;
	int two = p->algo == DP_A2A_TWO_HOP;
	size_t rs = rec_size(p->K);
	char **bufs = NULL;
	struct pending *pend = NULL;
	int rc = 0, total = 0, k = 0;

	p->nin2 = two ? c->rpn : c->world;
	p->in2 = new_chans(p->nin2);
	bufs = calloc((size_t)p->nin2, sizeof(char *));
	if (!p->in2 || !bufs) {
		rc = dp_err_set(err, ENOMEM, "a2a: out of memory");
		goto out;
	}
	for (int i = 0; i < p->nin2; i++) {
		struct chan *ch = &p->in2[i];

		ch->peer = two ? (c->rank / c->rpn) * c->rpn + i : i;
		rc = recv_layout(p, ch->peer, two ? TAG_L2 : TAG_L1, &bufs[i], &ch->n, err);
		if (rc)
			goto out;
		ch->idx = calloc((size_t)(ch->n > 0 ? ch->n : 1), sizeof(int32_t));
		if (!ch->idx) {
			rc = dp_err_set(err, ENOMEM, "a2a: out of memory");
			goto out;
		}
		total += ch->n;
	}
	pend = calloc((size_t)(total > 0 ? total : 1), sizeof(*pend));
	p->recv = calloc((size_t)(total > 0 ? total : 1), sizeof(*p->recv));
	if (!pend || !p->recv) {
		rc = dp_err_set(err, ENOMEM, "a2a: out of memory");
		goto out;
	}
	for (int i = 0; i < p->nin2; i++)
		for (int j = 0; j < p->in2[i].n; j++) {
			struct pending *q = &pend[k++];
			int32_t hd[2];

			q->rec = bufs[i] + sizeof(struct lhdr) + (size_t)j * rs;
			memcpy(hd, q->rec, sizeof(hd));
			q->src_rank = hd[0];
			q->src_token = hd[1];
			q->ch = i;
			q->j = j;
		}
	qsort(pend, (size_t)total, sizeof(*pend), cmp_pending);
	for (int i = 0; i < total; i++) {
		struct dp_a2a_recv *r = &p->recv[i];
		int32_t e[DP_A2A_MAX_TOPK] = { 0 };
		float w[DP_A2A_MAX_TOPK] = { 0 };

		if (i && cmp_pending(&pend[i - 1], &pend[i]) == 0) {
			rc = dp_err_set(err, EPROTO, "a2a: token %d of rank %d arrived twice",
					pend[i].src_token, pend[i].src_rank);
			goto out;
		}
		memcpy(e, pend[i].rec + 8, 4 * (size_t)p->K);
		memcpy(w, pend[i].rec + 8 + 4 * (size_t)p->K, 4 * (size_t)p->K);
		r->src_rank = pend[i].src_rank;
		r->src_token = pend[i].src_token;
		r->slot = p->nslots;
		for (int j = 0; j < p->K; j++)
			if (e[j] >= 0 && rank_of(c, e[j]) == c->rank) {
				r->expert[r->nslots] = e[j];
				r->weight[r->nslots++] = w[j];
			}
		if (!r->nslots) {
			rc = dp_err_set(err, EPROTO,
					"a2a: rank %d sent a token with no expert here",
					p->in2[pend[i].ch].peer);
			goto out;
		}
		p->nslots += r->nslots;
		assert(p->in2[pend[i].ch].idx);
		p->in2[pend[i].ch].idx[pend[i].j] = i;
	}
	p->nrecv = total;
out:
	for (int i = 0; bufs && i < p->nin2; i++)
		free(bufs[i]);
	free(bufs);
	free(pend);
	return rc;
}

/* Two-hop pipelining tables (see struct dp_a2a_plan). */
static int pipe_build(struct dp_a2a_plan *p, struct dp_err *err)
{
	const struct dp_a2a_comm *c = p->c;
	int N = c->nodes, R = c->rpn, C = c->chunk_rows > 0 ? c->chunk_rows : 1, nch = 0;
	size_t T = (size_t)p->T;

	p->C = C;
	p->lo2 = calloc((size_t)N * (size_t)R, sizeof(int));
	p->hi2 = calloc((size_t)N * (size_t)R, sizeof(int));
	p->coff = calloc((size_t)N + 1, sizeof(int));
	p->tneed = calloc(T + 1, sizeof(int));
	p->tpos = malloc((T * (size_t)N + 1) * sizeof(int));
	if (!p->lo2 || !p->hi2 || !p->coff || !p->tneed || !p->tpos)
		return dp_err_set(err, ENOMEM, "a2a: out of memory");
	for (int n = 0; n < N; n++) {
		p->coff[n] = nch;
		nch += (p->in1[n].n + C - 1) / C;
	}
	p->coff[N] = nch;
	p->cneed = calloc((size_t)nch + 1, sizeof(int));
	if (!p->cneed)
		return dp_err_set(err, ENOMEM, "a2a: out of memory");
	for (int q = 0; q < R; q++) {
		const struct chan *o = &p->out2[q];
		int *lo = p->lo2 + (size_t)q * N, *hi = p->hi2 + (size_t)q * N;

		/* rows are in (in1 channel, row) order: one run per channel */
		for (int pos = 0; pos < o->n; pos++)
			hi[o->idx[pos]]++;
		for (int n = 0, at = 0; n < N; n++) {
			lo[n] = at;
			at += hi[n];
			hi[n] = at;
		}
		for (int pos = 0; pos < o->n; pos++)
			p->cneed[p->coff[o->idx[pos]] + o->row[pos] / C]++;
	}
	for (size_t i = 0; i < T * (size_t)N; i++)
		p->tpos[i] = -1;
	for (int i = 0; i < p->nout1; i++)
		for (int j = 0; j < p->out1[i].n; j++) {
			int t = p->out1[i].idx[j];

			p->tpos[(size_t)t * N + i] = j;
			p->tneed[t]++;
		}
	return 0;
}

int dp_a2a_plan_build(struct dp_a2a_comm *c, enum dp_a2a_algo algo, int ntokens, int topk,
		      const int32_t *idx, const float *w, struct dp_a2a_plan **out,
		      struct dp_err *err)
{
	struct dp_a2a_plan *p;
	int rc;

	if (c->busy)
		return dp_err_set(err, EBUSY, "a2a: an operation is in flight on this comm");
	if (ntokens < 0 || topk < 1 || topk > DP_A2A_MAX_TOPK || (ntokens && (!idx || !w)) ||
	    (algo != DP_A2A_NAIVE && algo != DP_A2A_TWO_HOP))
		return dp_err_set(err, EINVAL, "a2a: bad plan arguments");
	for (size_t i = 0; i < (size_t)ntokens * (size_t)topk; i++)
		if (idx[i] < -1 || idx[i] >= c->experts)
			return dp_err_set(err, EINVAL, "a2a: expert %d out of range", idx[i]);
	p = calloc(1, sizeof(*p));
	if (!p)
		return dp_err_set(err, ENOMEM, "a2a: out of memory");
	p->c = c;
	p->algo = algo;
	p->T = ntokens;
	p->K = topk;
	p->st.token_bytes = (uint64_t)c->hidden * sizeof(float);
	p->idx = calloc((size_t)ntokens * (size_t)topk + 1, sizeof(*p->idx));
	p->w = calloc((size_t)ntokens * (size_t)topk + 1, sizeof(*p->w));
	if (!p->idx || !p->w) {
		rc = dp_err_set(err, ENOMEM, "a2a: out of memory");
		goto fail;
	}
	if (ntokens) {
		memcpy(p->idx, idx, (size_t)ntokens * (size_t)topk * sizeof(*idx));
		memcpy(p->w, w, (size_t)ntokens * (size_t)topk * sizeof(*w));
	}
	rc = build_out1(p, err);
	if (!rc && algo == DP_A2A_TWO_HOP)
		rc = build_relay(p, err);
	if (!rc)
		rc = build_in2(p, err);
	if (!rc && algo == DP_A2A_TWO_HOP)
		rc = pipe_build(p, err);
	if (rc)
		goto fail;
	*out = p;
	return 0;
fail:
	dp_a2a_plan_free(p);
	return rc;
}

int dp_a2a_plan_recv_count(const struct dp_a2a_plan *p)
{
	return p->nrecv;
}

int dp_a2a_plan_slot_count(const struct dp_a2a_plan *p)
{
	return p->nslots;
}

const struct dp_a2a_recv *dp_a2a_plan_recv(const struct dp_a2a_plan *p)
{
	return p->recv;
}

void dp_a2a_plan_stats(const struct dp_a2a_plan *p, struct dp_a2a_stats *out)
{
	*out = p->st;
}

/* ---- payload -------------------------------------------------------------- */

static int recv_rows(struct dp_a2a_plan *p, int peer, uint32_t tag, int rows, float **out,
		     struct dp_err *err)
{
	size_t hb = (size_t)p->c->hidden * sizeof(float), len = 0;
	void *b = NULL;
	int rc = p->c->ep->tp->recv(p->c->ep, peer, tag, &b, &len, err);

	if (rc)
		return rc;
	if (len != (size_t)rows * hb || (len && !b)) {
		free(b);
		/* explicit returns: the analyzer cannot see dp_err_set() is < 0 */
		(void)dp_err_set(err, EPROTO, "a2a: rank %d sent %zu bytes, expected %zu", peer,
				 len, (size_t)rows * hb);
		return -EPROTO;
	}
	if (!b) /* empty message: hand back a real buffer */
		b = calloc((size_t)rows * hb + 1, 1);
	if (!b) {
		(void)dp_err_set(err, ENOMEM, "a2a: out of memory");
		return -ENOMEM;
	}
	*out = b;
	return 0;
}

/* Gather rows @src[sel(j)] of @n rows and send them. */
static int send_rows(struct dp_a2a_plan *p, int peer, uint32_t tag, const float *const *rows, int n,
		     uint64_t *inter, uint64_t *intra, struct dp_err *err)
{
	size_t hb = (size_t)p->c->hidden * sizeof(float);
	char *buf = n ? malloc((size_t)n * hb) : NULL;

	if (n && !buf)
		return dp_err_set(err, ENOMEM, "a2a: out of memory");
	for (int j = 0; j < n; j++) {
		assert(rows[j]);
		memcpy(buf + (size_t)j * hb, rows[j], hb);
	}
	count_bytes(p, peer, (size_t)n * hb, inter, intra);
	return p->c->ep->tp->send_take(p->c->ep, peer, tag, buf, (size_t)n * hb, err);
}

static int max_rows(const struct chan *ch, int n)
{
	int m = 1;

	for (int i = 0; i < n; i++)
		if (ch[i].n > m)
			m = ch[i].n;
	return m;
}

static int do_dispatch(struct dp_a2a_plan *p, struct dp_err *err)
{
	int H = p->c->hidden, two = p->algo == DP_A2A_TWO_HOP, rc = 0;
	size_t hb = (size_t)H * sizeof(float);
	float **in1 = NULL;
	const float **rows = NULL;
	int mr = max_rows(p->out1, p->nout1);

	if (two && max_rows(p->out2, p->nout2) > mr)
		mr = max_rows(p->out2, p->nout2);
	rows = calloc((size_t)mr, sizeof(*rows));
	in1 = calloc((size_t)p->nin1 + 1, sizeof(*in1));
	if (!rows || !in1) {
		rc = dp_err_set(err, ENOMEM, "a2a: out of memory");
		goto out;
	}
	for (int i = 0; i < p->nout1; i++) {
		const struct chan *ch = &p->out1[i];

		for (int j = 0; j < ch->n; j++)
			rows[j] = p->x + (size_t)ch->idx[j] * H;
		rc = send_rows(p, ch->peer, TAG_D1, rows, ch->n, &p->st.dispatch_inter,
			       &p->st.dispatch_intra, err);
		if (rc)
			goto out;
	}
	if (two) {
		for (int n = 0; n < p->nin1; n++) {
			rc = recv_rows(p, p->in1[n].peer, TAG_D1, p->in1[n].n, &in1[n], err);
			if (rc)
				goto out;
		}
		for (int q = 0; q < p->nout2; q++) {
			const struct chan *ch = &p->out2[q];

			for (int j = 0; j < ch->n; j++)
				rows[j] = in1[ch->idx[j]] + (size_t)ch->row[j] * H;
			rc = send_rows(p, ch->peer, TAG_D2, rows, ch->n, &p->st.dispatch_inter,
				       &p->st.dispatch_intra, err);
			if (rc)
				goto out;
		}
	}
	for (int i = 0; i < p->nin2; i++) {
		const struct chan *ch = &p->in2[i];
		float *b = NULL;

		rc = recv_rows(p, ch->peer, two ? TAG_D2 : TAG_D1, ch->n, &b, err);
		if (rc)
			goto out;
		for (int j = 0; j < ch->n; j++)
			memcpy(p->rx + (size_t)ch->idx[j] * H, b + (size_t)j * H, hb);
		free(b);
	}
out:
	for (int n = 0; in1 && n < p->nin1; n++)
		free(in1[n]);
	free(in1);
	free(rows);
	return rc;
}

static int do_combine(struct dp_a2a_plan *p, struct dp_err *err)
{
	int H = p->c->hidden, two = p->algo == DP_A2A_TWO_HOP, rc = 0;
	size_t hb = (size_t)H * sizeof(float);
	float *part = NULL, **acc = NULL;
	const float **rows = NULL;
	int mr = max_rows(p->in2, p->nin2);

	if (two && max_rows(p->in1, p->nin1) > mr)
		mr = max_rows(p->in1, p->nin1);
	part = calloc((size_t)(p->nrecv > 0 ? p->nrecv : 1) * (size_t)H, sizeof(float));
	rows = calloc((size_t)mr, sizeof(*rows));
	acc = calloc((size_t)p->nin1 + 1, sizeof(*acc));
	if (!part || !rows || !acc) {
		rc = dp_err_set(err, ENOMEM, "a2a: out of memory");
		goto out;
	}
	/* 1. this rank's experts of each received token, in k order */
	for (int i = 0; i < p->nrecv; i++) {
		const struct dp_a2a_recv *r = &p->recv[i];
		float *d = part + (size_t)i * H;

		for (int s = 0; s < r->nslots; s++) {
			const float *y = p->y + (size_t)(r->slot + s) * H;

			for (int h = 0; h < H; h++)
				d[h] += r->weight[s] * y[h];
		}
	}
	for (int i = 0; i < p->nin2; i++) {
		const struct chan *ch = &p->in2[i];

		for (int j = 0; j < ch->n; j++)
			rows[j] = part + (size_t)ch->idx[j] * H;
		rc = send_rows(p, ch->peer, TAG_C2, rows, ch->n, &p->st.combine_inter,
			       &p->st.combine_intra, err);
		if (rc)
			goto out;
	}
	/* 2. two-hop relay: sum the ranks of this node, in rank order */
	if (two) {
		for (int n = 0; n < p->nin1; n++) {
			acc[n] = calloc((size_t)(p->in1[n].n > 0 ? p->in1[n].n : 1) * (size_t)H,
					sizeof(float));
			if (!acc[n]) {
				rc = dp_err_set(err, ENOMEM, "a2a: out of memory");
				goto out;
			}
		}
		for (int q = 0; q < p->nout2; q++) {
			const struct chan *ch = &p->out2[q];
			float *b = NULL;

			rc = recv_rows(p, ch->peer, TAG_C2, ch->n, &b, err);
			if (rc)
				goto out;
			for (int j = 0; j < ch->n; j++) {
				float *d = acc[ch->idx[j]] + (size_t)ch->row[j] * H;
				const float *s = b + (size_t)j * H;

				for (int h = 0; h < H; h++)
					d[h] += s[h];
			}
			free(b);
		}
		for (int n = 0; n < p->nin1; n++) {
			for (int j = 0; j < p->in1[n].n; j++)
				rows[j] = acc[n] + (size_t)j * H;
			rc = send_rows(p, p->in1[n].peer, TAG_C1, rows, p->in1[n].n,
				       &p->st.combine_inter, &p->st.combine_intra, err);
			if (rc)
				goto out;
		}
	}
	/* 3. the token's owner: sum nodes (two-hop) or ranks (naive) in order */
	if (p->T)
		memset(p->out, 0, (size_t)p->T * hb);
	for (int i = 0; i < p->nout1; i++) {
		const struct chan *ch = &p->out1[i];
		float *b = NULL;

		rc = recv_rows(p, ch->peer, two ? TAG_C1 : TAG_C2, ch->n, &b, err);
		if (rc)
			goto out;
		for (int j = 0; j < ch->n; j++) {
			float *d = p->out + (size_t)ch->idx[j] * H;
			const float *s = b + (size_t)j * H;

			for (int h = 0; h < H; h++)
				d[h] += s[h];
		}
		free(b);
	}
out:
	for (int n = 0; acc && n < p->nin1; n++)
		free(acc[n]);
	free(acc);
	free(rows);
	free(part);
	return rc;
}

/* ---- two-hop, pipelined ----------------------------------------------------
 * Dispatch: the source queues every chunk of C tokens for every remote node
 * at once; a relay takes whichever first-hop chunk lands first (recv_any)
 * and forwards its rows to the ranks of its node right away, each forwarded
 * piece headed by its position in the relay -> target layout, so targets
 * place pieces in any order.  Combine: a target sends its partial sums to
 * the relays in chunks; a relay adds a chunk of a source's rows once every
 * contribution to it is in (in local rank order, as the unpipelined sum did)
 * and sends it back with its position; the source sums a token over nodes
 * in node order once every node's part is in.  A rank's own node goes
 * through memory, not messages.  Peers are listed first-hop first, so the
 * recv_any fallback (block on the first) cannot deadlock: first-hop data is
 * all queued before anyone waits. */

struct fwd_hdr {
	uint32_t start; /* row position in the channel's layout */
	uint32_t count;
};

struct pipe {
	/* combine, relay: srow[q][pos] = partial row pos of out2 channel q,
	 * pointing into the message it came in (or into own2 for this rank's
	 * own partials); combine, source: brow[i][j] = row j of out1 channel i
	 * as sent back (or into own1 for this node's part) */
	const float ***srow, ***brow;
	float *own1, *own2;
	void **held; /* messages srow/brow point into, freed at the end */
	int nheld, capheld;
	int64_t t0, first_emit, last_emit, last_part; /* debug timeline, us */
	int *need;				      /* combine: contributions missing per chunk */
	int *tneed;				      /* combine: node parts missing per token */
	const float **rows;
	unsigned char *filled; /* dispatch: received token rows seen */
};

static void pipe_release(struct pipe *w, const struct dp_a2a_plan *p)
{
	for (int q = 0; w->srow && q < p->c->rpn; q++)
		free((void *)w->srow[q]);
	for (int i = 0; w->brow && i < p->nout1; i++)
		free((void *)w->brow[i]);
	for (int i = 0; i < w->nheld; i++)
		free(w->held[i]);
	free((void *)w->srow);
	free((void *)w->brow);
	free(w->own1);
	free(w->own2);
	free((void *)w->held);
	free(w->need);
	free(w->tneed);
	free((void *)w->rows);
	free(w->filled);
}

/* Keep message @b until the op ends (rows point into it); frees it on error. */
static int hold(struct pipe *w, void *b, struct dp_err *err)
{
	if (w->nheld == w->capheld) {
		int cap = w->capheld ? 2 * w->capheld : 64;
		void **n = realloc((void *)w->held, (size_t)cap * sizeof(*n));

		if (!n) {
			free(b);
			return dp_err_set(err, ENOMEM, "a2a: out of memory");
		}
		w->held = n;
		w->capheld = cap;
	}
	w->held[w->nheld++] = b;
	return 0;
}

/* First position in [lo, hi) of out2 channel @q whose in1 row is >= @v. */
static int lower_row(const struct dp_a2a_plan *p, int q, int n, int v)
{
	const struct chan *o = &p->out2[q];
	int lo = p->lo2[(size_t)q * p->c->nodes + n], hi = p->hi2[(size_t)q * p->c->nodes + n];

	while (lo < hi) {
		int mid = lo + (hi - lo) / 2;

		if (o->row[mid] < v)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Send @n rows headed by their @start position (rows bytes are counted). */
static int send_fwd(struct dp_a2a_plan *p, int peer, uint32_t tag, int start,
		    const float *const *rows, int n, uint64_t *inter, uint64_t *intra,
		    struct dp_err *err)
{
	size_t hb = (size_t)p->c->hidden * sizeof(float), len = sizeof(struct fwd_hdr) + n * hb;
	struct fwd_hdr h = { (uint32_t)start, (uint32_t)n };
	char *buf = malloc(len);

	if (!buf)
		return dp_err_set(err, ENOMEM, "a2a: out of memory");
	memcpy(buf, &h, sizeof(h));
	for (int j = 0; j < n; j++) {
		assert(rows[j]);
		memcpy(buf + sizeof(h) + (size_t)j * hb, rows[j], hb);
	}
	count_bytes(p, peer, (size_t)n * hb, inter, intra);
	return p->c->ep->tp->send_take(p->c->ep, peer, tag, buf, len, err);
}

/* Check a positioned message against channel @ch; rows start at *data. */
static int check_fwd(const struct dp_a2a_plan *p, const struct chan *ch, const void *b, size_t len,
		     int *start, int *count, struct dp_err *err)
{
	size_t hb = (size_t)p->c->hidden * sizeof(float);
	struct fwd_hdr h;

	if (len < sizeof(h) || !b)
		goto bad;
	memcpy(&h, b, sizeof(h));
	if (h.count < 1 || h.start >= (uint32_t)ch->n || h.count > (uint32_t)ch->n - h.start ||
	    len != sizeof(h) + (size_t)h.count * hb)
		goto bad;
	*start = (int)h.start;
	*count = (int)h.count;
	return 0;
bad:
	(void)dp_err_set(err, EPROTO, "a2a: bad chunk from rank %d", ch->peer);
	return -EPROTO;
}

/* Relay: forward rows [c0, c0 + cnt) of in1 channel @n (at @chunk, or this
 * rank's own tokens when NULL) to the ranks of this node. */
static int forward_chunk(struct dp_a2a_plan *p, struct pipe *w, int n, int c0, int cnt,
			 const float *chunk, struct dp_err *err)
{
	const struct dp_a2a_comm *c = p->c;
	int H = c->hidden, node = c->rank / c->rpn, li = c->rank % c->rpn;
	size_t hb = (size_t)H * sizeof(float);

	for (int q = 0; q < c->rpn; q++) {
		const struct chan *o = &p->out2[q];
		int a = lower_row(p, q, n, c0), b = lower_row(p, q, n, c0 + cnt), rc;

		for (int pos = a; pos < b; pos++) {
			int j = o->row[pos];

			w->rows[pos - a] = chunk ? chunk + (size_t)(j - c0) * H
						 : p->x + (size_t)p->out1[node].idx[j] * H;
		}
		if (a == b)
			continue;
		if (q == li) { /* this rank is the target: the layouts match */
			for (int pos = a; pos < b; pos++) {
				int r = p->in2[li].idx[pos];

				memcpy(p->rx + (size_t)r * H, w->rows[pos - a], hb);
				w->filled[r] = 1;
			}
			continue;
		}
		rc = send_fwd(p, o->peer, TAG_D2, a, w->rows, b - a, &p->st.dispatch_inter,
			      &p->st.dispatch_intra, err);
		if (rc)
			return rc;
	}
	return 0;
}

static int dispatch_two_hop(struct dp_a2a_plan *p, struct dp_err *err)
{
	struct dp_a2a_comm *c = p->c;
	int N = c->nodes, R = c->rpn, node = c->rank / R, li = c->rank % R, H = c->hidden;
	int C = p->C, pending = 0, rc = 0, nmsg = 0;
	int64_t t0 = dp_a2a_now_us(), t1, t2, twait = 0;
	size_t hb = (size_t)H * sizeof(float);
	struct pipe w = { 0 };
	int *peers = calloc(((size_t)N + (size_t)R), sizeof(int)),
	    *ent = calloc(((size_t)N + (size_t)R), sizeof(int));
	int *rem = calloc(((size_t)N + (size_t)R), sizeof(int)),
	    *got = calloc((size_t)N, sizeof(int));
	uint32_t *tags = calloc(((size_t)N + (size_t)R), sizeof(uint32_t));

	w.rows = calloc((size_t)C, sizeof(*w.rows));
	w.filled = calloc((size_t)p->nrecv + 1, 1);
	if (!peers || !ent || !rem || !got || !tags || !w.rows || !w.filled) {
		rc = dp_err_set(err, ENOMEM, "a2a: out of memory");
		goto out;
	}
	/* 1. first hop: every chunk for every other node, queued now */
	for (int c0 = 0, any = 1; any; c0 += C) {
		any = 0;
		for (int k = 1; k < N; k++) {
			const struct chan *ch = &p->out1[(node + k) % N];
			int cnt = ch->n - c0 < C ? ch->n - c0 : C;

			if (cnt <= 0)
				continue;
			any = 1;
			for (int j = 0; j < cnt; j++)
				w.rows[j] = p->x + (size_t)ch->idx[c0 + j] * H;
			rc = send_rows(p, ch->peer, TAG_D1, w.rows, cnt, &p->st.dispatch_inter,
				       &p->st.dispatch_intra, err);
			if (rc)
				goto out;
		}
	}
	/* 2. this node's own tokens need no first hop */
	for (int c0 = 0; c0 < p->in1[node].n; c0 += C) {
		int cnt = p->in1[node].n - c0 < C ? p->in1[node].n - c0 : C;

		rc = forward_chunk(p, &w, node, c0, cnt, NULL, err);
		if (rc)
			goto out;
	}
	for (int n = 0; n < N; n++)
		if (n != node) {
			rem[n] = (p->in1[n].n + C - 1) / C;
			pending += rem[n];
		}
	for (int i = 0; i < R; i++)
		if (i != li) {
			rem[N + i] = p->in2[i].n;
			pending += rem[N + i];
		}
	t1 = dp_a2a_now_us();
	/* 3. whatever lands first: forward first-hop chunks, place final rows */
	while (pending > 0) {
		int k = 0, which = 0, e;
		void *b = NULL;
		size_t len = 0;

		for (int e2 = 0; e2 < N + R; e2++) {
			if (!rem[e2])
				continue;
			peers[k] = e2 < N ? p->in1[e2].peer : p->in2[e2 - N].peer;
			tags[k] = e2 < N ? TAG_D1 : TAG_D2;
			ent[k++] = e2;
		}
		t2 = dp_a2a_now_us();
		rc = c->ep->tp->recv_any(c->ep, peers, tags, k, &which, &b, &len, err);
		twait += dp_a2a_now_us() - t2;
		nmsg++;
		if (rc)
			goto out;
		e = ent[which];
		if (e < N) {
			int c0 = got[e] * C, cnt = p->in1[e].n - c0 < C ? p->in1[e].n - c0 : C;

			if (len != (size_t)cnt * hb || !b) {
				free(b);
				(void)dp_err_set(err, EPROTO, "a2a: bad chunk from rank %d",
						 p->in1[e].peer);
				rc = -EPROTO;
				goto out;
			}
			rc = forward_chunk(p, &w, e, c0, cnt, b, err);
			got[e]++;
			rem[e]--;
			pending--;
		} else {
			const struct chan *ch = &p->in2[e - N];
			int start = 0, cnt = 0;

			rc = check_fwd(p, ch, b, len, &start, &cnt, err);
			for (int j = 0; !rc && j < cnt; j++) {
				int r = ch->idx[start + j];

				if (w.filled[r] || cnt > rem[e]) {
					rc = dp_err_set(err, EPROTO,
							"a2a: rank %d sent row %d twice", ch->peer,
							start + j);
					break;
				}
				w.filled[r] = 1;
				memcpy(p->rx + (size_t)r * H,
				       (const char *)b + sizeof(struct fwd_hdr) + (size_t)j * hb,
				       hb);
			}
			rem[e] -= cnt;
			pending -= cnt;
		}
		free(b);
		if (rc)
			goto out;
	}
	dp_log(DP_LOG_DEBUG, "a2a",
	       "rank %d dispatch: queue %.1f ms, then %d messages in %.1f ms (%.1f ms waiting)",
	       c->rank, (double)(t1 - t0) / 1e3, nmsg, (double)(dp_a2a_now_us() - t1) / 1e3,
	       (double)twait / 1e3);
out:
	pipe_release(&w, p);
	free(peers);
	free(ent);
	free(rem);
	free(got);
	free(tags);
	return rc;
}

/* Combine, source: node parts of out1 channel @i rows [a, a + cnt) are in. */
static void landed(struct dp_a2a_plan *p, struct pipe *w, int i, int a, int cnt)
{
	int N = p->c->nodes, H = p->c->hidden;

	for (int j = a; j < a + cnt; j++) {
		int t = p->out1[i].idx[j];
		float *d = p->out + (size_t)t * H;

		if (--w->tneed[t])
			continue;
		memset(d, 0, (size_t)H * sizeof(float));
		for (int n = 0; n < N; n++) { /* node order */
			int pos = p->tpos[(size_t)t * N + n];
			const float *s;

			if (pos < 0)
				continue;
			s = w->brow[n][pos];
			assert(s);
			for (int h = 0; h < H; h++)
				d[h] += s[h];
		}
	}
}

/* Combine, relay: chunk @cc of in1 channel @n has all its contributions.
 * The sum goes straight into the message that carries it back (or into
 * own1 for this node's tokens): no staging copy. */
static int emit(struct dp_a2a_plan *p, struct pipe *w, int n, int cc, struct dp_err *err)
{
	const struct dp_a2a_comm *c = p->c;
	int H = c->hidden, C = p->C, node = c->rank / c->rpn, c0 = cc * C;
	int cnt = p->in1[n].n - c0 < C ? p->in1[n].n - c0 : C;
	size_t hb = (size_t)H * sizeof(float), len = sizeof(struct fwd_hdr) + (size_t)cnt * hb;
	struct fwd_hdr hd = { (uint32_t)c0, (uint32_t)cnt };
	char *msg = NULL;
	float *acc;

	if (n == node) {
		acc = w->own1 + (size_t)c0 * H;
	} else {
		msg = malloc(len);
		if (!msg)
			return dp_err_set(err, ENOMEM, "a2a: out of memory");
		memcpy(msg, &hd, sizeof(hd));
		acc = (float *)(void *)(msg + sizeof(hd));
	}
	memset(acc, 0, (size_t)cnt * hb);
	for (int q = 0; q < c->rpn; q++) { /* local rank order */
		int a = lower_row(p, q, n, c0), b = lower_row(p, q, n, c0 + cnt);

		for (int pos = a; pos < b; pos++) {
			float *d = acc + (size_t)(p->out2[q].row[pos] - c0) * H;
			const float *s = w->srow[q][pos];

			assert(s);
			for (int h = 0; h < H; h++)
				d[h] += s[h];
		}
	}
	if (n == node) {
		landed(p, w, node, c0, cnt);
		return 0;
	}
	w->last_emit = dp_a2a_now_us() - w->t0;
	if (!w->first_emit)
		w->first_emit = w->last_emit;
	count_bytes(p, p->in1[n].peer, (size_t)cnt * hb, &p->st.combine_inter,
		    &p->st.combine_intra);
	return c->ep->tp->send_take(c->ep, p->in1[n].peer, TAG_C1, msg, len, err);
}

/* Combine, relay: partial rows [a, a + cnt) of out2 channel @q are in. */
static int arrived(struct dp_a2a_plan *p, struct pipe *w, int q, int a, int cnt, struct dp_err *err)
{
	const struct chan *o = &p->out2[q];

	for (int pos = a; pos < a + cnt; pos++) {
		int n = o->idx[pos], cc = o->row[pos] / p->C, rc;

		if (w->need[p->coff[n] + cc] <= 0)
			return dp_err_set(err, EPROTO, "a2a: rank %d sent row %d twice", o->peer,
					  pos);
		if (--w->need[p->coff[n] + cc])
			continue;
		rc = emit(p, w, n, cc, err);
		if (rc)
			return rc;
	}
	return 0;
}

/* Combine: the peers still owing messages (partials into this relay first,
 * then sums back to this source), for recv_any. */
struct cwait {
	int *peers, *ent, *rem;
	uint32_t *tags;
	int pending;
};

static int cwait_list(const struct dp_a2a_plan *p, const struct cwait *cw)
{
	int N = p->c->nodes, R = p->c->rpn, k = 0;

	for (int e = 0; e < N + R; e++) {
		if (!cw->rem[e])
			continue;
		cw->peers[k] = e < R ? p->out2[e].peer : p->out1[e - R].peer;
		cw->tags[k] = e < R ? TAG_C2 : TAG_C1;
		cw->ent[k++] = e;
	}
	return k;
}

/* Combine: take message @b (@len bytes) from the peer of entry @e. */
static int combine_take(struct dp_a2a_plan *p, struct pipe *w, struct cwait *cw, int e, void *b,
			size_t len, struct dp_err *err)
{
	int R = p->c->rpn, H = p->c->hidden, start = 0, cnt = 0, rc;
	const struct chan *ch = e < R ? &p->out2[e] : &p->out1[e - R];
	const float *rows;

	rc = check_fwd(p, ch, b, len, &start, &cnt, err);
	if (!rc && cnt > cw->rem[e])
		rc = dp_err_set(err, EPROTO, "a2a: rank %d sent too many rows", ch->peer);
	if (rc) {
		free(b);
		return rc;
	}
	rc = hold(w, b, err);
	if (rc)
		return rc;
	rows = (const float *)(const void *)((const char *)b + sizeof(struct fwd_hdr));
	for (int j = 0; j < cnt; j++)
		(e < R ? w->srow[e] : w->brow[e - R])[start + j] = rows + (size_t)j * H;
	cw->rem[e] -= cnt;
	cw->pending -= cnt;
	if (e < R) {
		w->last_part = dp_a2a_now_us() - w->t0;
		return arrived(p, w, e, start, cnt, err);
	}
	landed(p, w, e - R, start, cnt);
	return 0;
}

/* Combine: handle what has already come in, without waiting, so that a
 * relay sums and sends back complete chunks while this rank still computes
 * its own partials.  *off set when the transport cannot (try_recv_any
 * -EOPNOTSUPP): then everything waits for step 2. */
static int combine_drain(struct dp_a2a_plan *p, struct pipe *w, struct cwait *cw, int *off,
			 struct dp_err *err)
{
	const struct dp_a2a_comm *c = p->c;

	while (!*off && cw->pending > 0) {
		int k = cwait_list(p, cw), which = 0, rc;
		void *b = NULL;
		size_t len = 0;

		rc = c->ep->tp->try_recv_any(c->ep, cw->peers, cw->tags, k, &which, &b, &len, err);
		if (rc == -EAGAIN)
			return 0;
		if (rc == -EOPNOTSUPP) {
			*off = 1;
			return 0;
		}
		if (rc)
			return rc;
		rc = combine_take(p, w, cw, cw->ent[which], b, len, err);
		if (rc)
			return rc;
	}
	return 0;
}

static int combine_two_hop(struct dp_a2a_plan *p, struct dp_err *err)
{
	struct dp_a2a_comm *c = p->c;
	int N = c->nodes, R = c->rpn, node = c->rank / R, li = c->rank % R, H = c->hidden;
	int C = p->C, rc = 0, maxn = 0, nmsg = 0, nodrain = 0;
	int64_t t0 = dp_a2a_now_us(), t1, t2, twait = 0;
	size_t hb = (size_t)H * sizeof(float);
	struct pipe w = { 0 };
	struct cwait cw = { 0 };
	int *clo = calloc(((size_t)N * (size_t)R), sizeof(int)),
	    *chi = calloc(((size_t)N * (size_t)R), sizeof(int));
	float *part = malloc((size_t)C * hb);

	w.t0 = t0;
	cw.peers = calloc(((size_t)N + (size_t)R), sizeof(int));
	cw.ent = calloc(((size_t)N + (size_t)R), sizeof(int));
	cw.rem = calloc(((size_t)N + (size_t)R), sizeof(int));
	cw.tags = calloc(((size_t)N + (size_t)R), sizeof(uint32_t));
	w.srow = calloc((size_t)R, sizeof(*w.srow));
	w.brow = calloc((size_t)N, sizeof(*w.brow));
	w.own1 = malloc((size_t)(p->out1[node].n + 1) * hb);
	w.own2 = malloc((size_t)(p->out2[li].n + 1) * hb);
	w.need = malloc(((size_t)p->coff[N] + 1) * sizeof(int));
	w.tneed = malloc(((size_t)p->T + 1) * sizeof(int));
	w.rows = calloc((size_t)C, sizeof(*w.rows));
	if (!cw.peers || !cw.ent || !cw.rem || !clo || !chi || !cw.tags || !part || !w.srow ||
	    !w.brow || !w.own1 || !w.own2 || !w.need || !w.tneed || !w.rows) {
		rc = dp_err_set(err, ENOMEM, "a2a: out of memory");
		goto out;
	}
	for (int q = 0; q < R && !rc; q++)
		if (!(w.srow[q] = calloc((size_t)p->out2[q].n + 1, sizeof(**w.srow))))
			rc = dp_err_set(err, ENOMEM, "a2a: out of memory");
	for (int i = 0; i < N && !rc; i++)
		if (!(w.brow[i] = calloc((size_t)p->out1[i].n + 1, sizeof(**w.brow))))
			rc = dp_err_set(err, ENOMEM, "a2a: out of memory");
	if (rc)
		goto out;
	for (int pos = 0; pos < p->out2[li].n; pos++)
		w.srow[li][pos] = w.own2 + (size_t)pos * H;
	for (int j = 0; j < p->out1[node].n; j++)
		w.brow[node][j] = w.own1 + (size_t)j * H;
	memcpy(w.need, p->cneed, (size_t)p->coff[N] * sizeof(int));
	memcpy(w.tneed, p->tneed, (size_t)p->T * sizeof(int));
	for (int t = 0; t < p->T; t++) /* routed nowhere */
		if (!w.tneed[t])
			memset(p->out + (size_t)t * H, 0, hb);
	for (int q = 0; q < R; q++)
		if (q != li) {
			cw.rem[q] = p->out2[q].n;
			cw.pending += cw.rem[q];
		}
	for (int i = 0; i < N; i++)
		if (i != node) {
			cw.rem[R + i] = p->out1[i].n;
			cw.pending += cw.rem[R + i];
		}
	/* in2 channel i holds source node n's tokens at [clo, chi)[i * N + n] */
	for (int i = 0; i < R; i++) {
		const struct chan *ch = &p->in2[i];

		for (int pos = ch->n - 1; pos >= 0; pos--) {
			int n = p->recv[ch->idx[pos]].src_rank / R;

			if (!chi[i * N + n])
				chi[i * N + n] = pos + 1;
			clo[i * N + n] = pos;
		}
		for (int n = 0; n < N; n++)
			if (chi[i * N + n] - clo[i * N + n] > maxn)
				maxn = chi[i * N + n] - clo[i * N + n];
	}
	/* 1. this rank's experts, in rounds of one chunk per (source node,
	 * relay); node X starts with node X + 1, so that the relays of
	 * different nodes send back to different nodes at the same time.
	 * Between sends, whatever has come in is handled (combine_drain): a
	 * relay's sums leave as soon as their chunk is complete, not after
	 * this rank's own compute. */
	for (int c0 = 0; c0 < maxn; c0 += C)
		for (int kn = 1; kn <= N; kn++)
			for (int k = 1; k <= R; k++) {
				int n = (node + kn) % N, i = (li + k) % R;
				const struct chan *ch = &p->in2[i];
				int a = clo[i * N + n] + c0, cnt = chi[i * N + n] - a;
				float *dst = i == li ? w.own2 + (size_t)a * H : part;

				if (cnt <= 0)
					continue;
				if (cnt > C)
					cnt = C;
				for (int j = 0; j < cnt; j++) {
					const struct dp_a2a_recv *r = &p->recv[ch->idx[a + j]];
					float *d = dst + (size_t)j * H;
					const float *y = p->y + (size_t)r->slot * H;
					float wt = r->weight[0];

					/* 0 + first term: what memset and += gave */
					for (int h = 0; h < H; h++)
						d[h] = 0.0f + wt * y[h];
					for (int sl = 1; sl < r->nslots; sl++) {
						y = p->y + (size_t)(r->slot + sl) * H;
						wt = r->weight[sl];
						for (int h = 0; h < H; h++)
							d[h] += wt * y[h];
					}
					w.rows[j] = d;
				}
				rc = i == li ? arrived(p, &w, li, a, cnt, err)
					     : send_fwd(p, ch->peer, TAG_C2, a, w.rows, cnt,
							&p->st.combine_inter, &p->st.combine_intra,
							err);
				if (!rc)
					rc = combine_drain(p, &w, &cw, &nodrain, err);
				if (rc)
					goto out;
			}
	t1 = dp_a2a_now_us();
	/* 2. the rest: partials into the relay, sums back at the source */
	while (cw.pending > 0) {
		int k = cwait_list(p, &cw), which = 0;
		void *b = NULL;
		size_t len = 0;

		t2 = dp_a2a_now_us();
		rc = c->ep->tp->recv_any(c->ep, cw.peers, cw.tags, k, &which, &b, &len, err);
		twait += dp_a2a_now_us() - t2;
		nmsg++;
		if (!rc)
			rc = combine_take(p, &w, &cw, cw.ent[which], b, len, err);
		if (rc)
			goto out;
	}
	dp_log(DP_LOG_DEBUG, "a2a",
	       "rank %d combine: compute %.1f ms, then %d messages in %.1f ms (%.1f ms waiting); "
	       "sums sent back from %.1f to %.1f ms, last partial in at %.1f ms",
	       c->rank, (double)(t1 - t0) / 1e3, nmsg, (double)(dp_a2a_now_us() - t1) / 1e3,
	       (double)twait / 1e3, (double)w.first_emit / 1e3, (double)w.last_emit / 1e3,
	       (double)w.last_part / 1e3);
out:
	pipe_release(&w, p);
	free(part);
	free(cw.peers);
	free(cw.ent);
	free(cw.rem);
	free(cw.tags);
	free(clo);
	free(chi);
	return rc;
}

static void *op_thread(void *arg)
{
	struct dp_a2a_plan *p = arg;

	int two = p->algo == DP_A2A_TWO_HOP, rc;

	if (p->op == 1)
		rc = two ? dispatch_two_hop(p, &p->err) : do_dispatch(p, &p->err);
	else
		rc = two ? combine_two_hop(p, &p->err) : do_combine(p, &p->err);
	/* what is still queued here would only move on our next call */
	if (!rc) {
		int64_t t0 = dp_a2a_now_us();

		rc = p->c->ep->tp->flush(p->c->ep, &p->err);
		if (rc == -EOPNOTSUPP)
			rc = 0;
		dp_log(DP_LOG_DEBUG, "a2a", "rank %d %s: flush %.1f ms", p->c->rank,
		       p->op == 1 ? "dispatch" : "combine", (double)(dp_a2a_now_us() - t0) / 1e3);
	}
	p->rc = rc;
	return NULL;
}

static int issue(struct dp_a2a_plan *p, int op, struct dp_err *err)
{
	int rc;

	if (p->c->busy)
		return dp_err_set(err, EBUSY, "a2a: an operation is in flight on this comm");
	p->op = op;
	p->rc = 0;
	dp_err_clear(&p->err);
	rc = pthread_create(&p->th, NULL, op_thread, p);
	if (rc) {
		p->op = 0;
		return dp_err_set(err, rc, "a2a: cannot start the communication thread: %s",
				  strerror(rc));
	}
	p->c->busy = 1;
	return 0;
}

static int wait_op(struct dp_a2a_plan *p, int op, struct dp_err *err)
{
	if (p->op != op)
		return dp_err_set(err, EINVAL, "a2a: no %s in flight",
				  op == 1 ? "dispatch" : "combine");
	(void)pthread_join(p->th, NULL);
	p->op = 0;
	p->c->busy = 0;
	if (p->rc && err)
		*err = p->err;
	return p->rc;
}

int dp_a2a_dispatch_issue(struct dp_a2a_plan *p, const float *x, float *recv_x, struct dp_err *err)
{
	if ((p->T && !x) || (p->nrecv && !recv_x))
		return dp_err_set(err, EINVAL, "a2a: dispatch needs its buffers");
	p->x = x;
	p->rx = recv_x;
	return issue(p, 1, err);
}

int dp_a2a_dispatch_wait(struct dp_a2a_plan *p, struct dp_err *err)
{
	return wait_op(p, 1, err);
}

int dp_a2a_combine_issue(struct dp_a2a_plan *p, const float *y, float *out, struct dp_err *err)
{
	if ((p->nslots && !y) || (p->T && !out))
		return dp_err_set(err, EINVAL, "a2a: combine needs its buffers");
	p->y = y;
	p->out = out;
	return issue(p, 2, err);
}

int dp_a2a_combine_wait(struct dp_a2a_plan *p, struct dp_err *err)
{
	return wait_op(p, 2, err);
}
