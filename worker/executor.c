/* worker/executor.c - one pipeline rank running its schedule on the CPU
 * model.  The schedule is built with comm tokens: SF/SB hand a
 * computed tensor to the peer's sender thread at once (asynchronous send),
 * RF/RB are queued and WAIT receives them in posting order, checking each
 * header against the post.  Tensors in flight live in an inbox/outbox table
 * indexed by (kind, leg, micro-batch), so a missing or duplicate tensor is
 * an error instead of a silent mixup.
 *
 * With ep > 1 a forward or backward runs as a "task": a list of steps that
 * alternate compute (on this thread) and an a2a exchange with the EP group
 * (on the communication thread): per layer attention, dispatch, expert MLP,
 * combine.  An F&B op runs its two tasks interleaved so one's exchange
 * progresses while the other computes.  Every EP rank of a group runs the
 * same op list and makes the same interleaving decisions (they depend on
 * the layer counts only), so the collectives line up. */
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "a2a/dp_eplb.h"
#include "common/dp_util.h"
#include "worker/dp_dev.h"
#include "worker/dp_exec.h"

#define MSG_MAGIC 0x44505050u /* "DPPP" */

enum { KIND_F = 0, KIND_B = 1, KIND_G = 2, KIND_R = 3, KIND_D = 4, KIND_C = 5 };

struct msg_hdr {
	uint32_t magic;
	uint8_t kind;
	uint8_t leg;
	uint16_t pad;
	int32_t micro;
	int32_t pad2;
	int64_t step;
	uint64_t bytes;
};

/* ---- sender thread: a FIFO of tensors for one link --------------------- */

struct send_item {
	struct send_item *next;
	struct msg_hdr hdr;
	void *buf; /* owned: freed after the send */
};

struct sender {
	struct dp_pp_link *link;
	pthread_t th;
	int started;
	pthread_mutex_t mu;
	pthread_cond_t cv;   /* work or stop */
	pthread_cond_t idle; /* queue drained */
	struct send_item *head, *tail;
	int busy, stop, rc;
	struct dp_err err;
};

static void *sender_main(void *arg)
{
	struct sender *s = arg;

	(void)pthread_mutex_lock(&s->mu);
	for (;;) {
		struct send_item *it;
		struct dp_err e = { 0 };
		int rc = 0;

		while (!s->head && !s->stop)
			(void)pthread_cond_wait(&s->cv, &s->mu);
		if (!s->head)
			break;
		it = s->head;
		s->head = it->next;
		if (!s->head)
			s->tail = NULL;
		s->busy = 1;
		(void)pthread_mutex_unlock(&s->mu);
		if (!s->rc) {
			rc = s->link->ops->send(s->link, &it->hdr, sizeof(it->hdr), &e);
			if (!rc && it->hdr.bytes)
				rc = s->link->ops->send(s->link, it->buf, it->hdr.bytes, &e);
		}
		free(it->buf);
		free(it);
		(void)pthread_mutex_lock(&s->mu);
		if (rc && !s->rc) {
			s->rc = rc;
			s->err = e;
		}
		s->busy = 0;
		if (!s->head)
			(void)pthread_cond_broadcast(&s->idle);
	}
	(void)pthread_mutex_unlock(&s->mu);
	return NULL;
}

static int sender_start(struct sender *s, struct dp_pp_link *link, struct dp_err *err)
{
	s->link = link;
	(void)pthread_mutex_init(&s->mu, NULL);
	(void)pthread_cond_init(&s->cv, NULL);
	(void)pthread_cond_init(&s->idle, NULL);
	if (pthread_create(&s->th, NULL, sender_main, s))
		return dp_err_set(err, EAGAIN, "exec: cannot start a sender thread");
	s->started = 1;
	return 0;
}

static void sender_stop(struct sender *s)
{
	if (!s->started)
		return;
	(void)pthread_mutex_lock(&s->mu);
	s->stop = 1;
	(void)pthread_cond_signal(&s->cv);
	(void)pthread_mutex_unlock(&s->mu);
	(void)pthread_join(s->th, NULL);
	while (s->head) {
		struct send_item *it = s->head;

		s->head = it->next;
		free(it->buf);
		free(it);
	}
	(void)pthread_cond_destroy(&s->idle);
	(void)pthread_cond_destroy(&s->cv);
	(void)pthread_mutex_destroy(&s->mu);
	s->started = 0;
}

/* Queue @buf (ownership taken, also on failure) behind @hdr. */
static int sender_post(struct sender *s, const struct msg_hdr *hdr, void *buf, struct dp_err *err)
{
	struct send_item *it = calloc(1, sizeof(*it));
	int rc;

	if (!it) {
		free(buf);
		return dp_err_set(err, ENOMEM, "exec: out of memory");
	}
	it->hdr = *hdr;
	it->buf = buf;
	(void)pthread_mutex_lock(&s->mu);
	rc = s->rc;
	if (rc) {
		if (err)
			*err = s->err;
		free(buf);
		free(it);
	} else {
		if (s->tail)
			s->tail->next = it;
		else
			s->head = it;
		s->tail = it;
		(void)pthread_cond_signal(&s->cv);
	}
	(void)pthread_mutex_unlock(&s->mu);
	return rc;
}

static int sender_flush(struct sender *s, struct dp_err *err)
{
	int rc;

	if (!s->started)
		return 0;
	(void)pthread_mutex_lock(&s->mu);
	while ((s->head || s->busy) && !s->rc)
		(void)pthread_cond_wait(&s->idle, &s->mu);
	rc = s->rc;
	if (rc && err)
		*err = s->err;
	(void)pthread_mutex_unlock(&s->mu);
	return rc;
}

/* ---- EP communication thread: one a2a job at a time ---------------------- */

/* The a2a plan of one (micro-batch, layer), kept from its forward to the end
 * of its backward-for-input, and where each received row goes. */
struct ep_layer {
	struct dp_a2a_plan *plan;
	int nrecv;
	int *order;  /* [nrecv]: received row of local packed row k */
	int *inv;    /* device rows: [nrecv]: local packed row of received row i */
	int *loff;   /* [nslot + 1]: local expert i (lexp) has packed rows loff[i].. */
	size_t *cnt; /* device rows: [2 ep]: rows sent to, then received from, each EP rank */
	/* device rows with an EPLB placement: [2 T K]: the send order (packed
	 * rows stably sorted by destination rank), then its inverse */
	int32_t *perm;
};

enum { JOB_PLAN_DISPATCH = 1, JOB_DISPATCH, JOB_COMBINE };

struct comm_job {
	int kind;
	struct ep_layer *el;	   /* device rows (dp_exec devep): the layer's counts */
	size_t cap;		   /* device PLAN_DISPATCH: rows rx holds */
	size_t need;		   /* set by device PLAN_DISPATCH: rx needs this many rows */
	struct dp_a2a_plan **plan; /* PLAN_DISPATCH builds it; others use *plan */
	int n;			   /* rows of this rank (T*K), one expert each */
	const int32_t *idx;	   /* PLAN_DISPATCH: expert of each row */
	const float *w;		   /* PLAN_DISPATCH: 1.0 each (rows come back as is) */
	const float *in;	   /* dispatch: [n][H]; combine: [nrecv][H] */
	float **rx;		   /* PLAN_DISPATCH: received rows, (re)allocated here */
	float *out;		   /* DISPATCH: [nrecv][H]; COMBINE: [n][H] */
};

struct commth {
	struct dp_a2a_comm *comm;
	enum dp_a2a_algo algo;
	size_t H;
	int ep, nslot; /* nslot: physical expert slots per EP rank */
	int on_device; /* rows are CUDA device memory (the cuda transport) */
	size_t *v;     /* [4 ep]: alltoallv offsets and lengths */
	long ndev;     /* exchanges of device rows */
	pthread_t th;
	int started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct comm_job *job;
	int state; /* 0 idle, 1 submitted, 2 done */
	int stop, rc;
	struct dp_err err;
};

/* Device rows: the layer's row counts per EP rank from the plan (sent:
 * the rows leave grouped by owner: packed rows are sorted by expert, and
 * with an EPLB placement they are put in that order first, ep_layer.perm;
 * received: by source). */
static int dev_counts(struct commth *ct, const struct comm_job *j, struct dp_err *err)
{
	struct ep_layer *el = j->el;
	const struct dp_a2a_recv *rv = dp_a2a_plan_recv(*j->plan);
	int n = dp_a2a_plan_recv_count(*j->plan);

	if (!el->cnt)
		el->cnt = calloc(2 * (size_t)ct->ep, sizeof(size_t));
	if (!el->cnt)
		return dp_err_set(err, ENOMEM, "exec: out of memory");
	memset(el->cnt, 0, 2 * (size_t)ct->ep * sizeof(size_t));
	for (int i = 0; i < j->n; i++)
		el->cnt[j->idx[i] / ct->nslot]++;
	for (int i = 0; i < n; i++)
		el->cnt[ct->ep + rv[i].src_rank]++;
	return 0;
}

/* Device rows: one alltoallv of whole rows with the layer's counts, from
 * packed (by owner) to received (by source) order, or back (@back). */
static int dev_exchange(struct commth *ct, const struct ep_layer *el, int back, const float *in,
			float *out, struct dp_err *err)
{
	const size_t rb = ct->H * sizeof(float), *sc = el->cnt + (back ? ct->ep : 0),
		     *rc = el->cnt + (back ? 0 : ct->ep);
	size_t *soff = ct->v, *slen = soff + ct->ep, *roff = slen + ct->ep, *rlen = roff + ct->ep;
	size_t so = 0, ro = 0;

	for (int k = 0; k < ct->ep; k++) {
		soff[k] = so;
		slen[k] = sc[k] * rb;
		so += slen[k];
		roff[k] = ro;
		rlen[k] = rc[k] * rb;
		ro += rlen[k];
	}
	ct->ndev++;
	return dp_a2a_alltoallv(ct->comm, in, soff, slen, out, roff, rlen, ct->on_device, err);
}

static int run_job(struct commth *ct, struct comm_job *j, struct dp_err *err)
{
	int rc;

	if (j->el && j->kind == JOB_PLAN_DISPATCH) {
		size_t n;

		rc = dp_a2a_plan_build(ct->comm, ct->algo, j->n, 1, j->idx, j->w, j->plan, err);
		if (!rc)
			rc = dev_counts(ct, j, err);
		if (rc)
			return rc;
		n = (size_t)dp_a2a_plan_recv_count(*j->plan);
		if (n > j->cap) { /* the compute thread grows rx, then DISPATCH */
			j->need = n;
			return 0;
		}
		return dev_exchange(ct, j->el, 0, j->in, j->out, err);
	}
	if (j->el)
		return dev_exchange(ct, j->el, j->kind == JOB_COMBINE, j->in, j->out, err);
	switch (j->kind) {
	case JOB_PLAN_DISPATCH: {
		size_t n;

		rc = dp_a2a_plan_build(ct->comm, ct->algo, j->n, 1, j->idx, j->w, j->plan, err);
		if (rc)
			return rc;
		n = (size_t)dp_a2a_plan_recv_count(*j->plan);
		free(*j->rx);
		*j->rx = malloc((n ? n : 1) * ct->H * sizeof(float));
		if (!*j->rx)
			return dp_err_set(err, ENOMEM, "exec: out of memory");
		rc = dp_a2a_dispatch_issue(*j->plan, j->in, *j->rx, err);
		return rc ? rc : dp_a2a_dispatch_wait(*j->plan, err);
	}
	case JOB_DISPATCH:
		rc = dp_a2a_dispatch_issue(*j->plan, j->in, j->out, err);
		return rc ? rc : dp_a2a_dispatch_wait(*j->plan, err);
	default:
		rc = dp_a2a_combine_issue(*j->plan, j->in, j->out, err);
		return rc ? rc : dp_a2a_combine_wait(*j->plan, err);
	}
}

static void *comm_main(void *arg)
{
	struct commth *ct = arg;

	(void)pthread_mutex_lock(&ct->mu);
	for (;;) {
		struct dp_err e = { 0 };
		int rc;

		while (ct->state != 1 && !ct->stop)
			(void)pthread_cond_wait(&ct->cv, &ct->mu);
		if (ct->state != 1)
			break;
		(void)pthread_mutex_unlock(&ct->mu);
		rc = run_job(ct, ct->job, &e);
		if (rc)
			(void)dp_err_prefix(&e, "ep exchange");
		(void)pthread_mutex_lock(&ct->mu);
		ct->rc = rc;
		ct->err = e;
		ct->state = 2;
		(void)pthread_cond_broadcast(&ct->cv);
	}
	(void)pthread_mutex_unlock(&ct->mu);
	return NULL;
}

/* Hand @j (borrowed until comm_wait) to the communication thread. */
static void comm_submit(struct commth *ct, struct comm_job *j)
{
	(void)pthread_mutex_lock(&ct->mu);
	assert(ct->state == 0);
	ct->job = j;
	ct->state = 1;
	(void)pthread_cond_broadcast(&ct->cv);
	(void)pthread_mutex_unlock(&ct->mu);
}

static int comm_wait(struct commth *ct, struct dp_err *err)
{
	int rc;

	(void)pthread_mutex_lock(&ct->mu);
	while (ct->state == 1)
		(void)pthread_cond_wait(&ct->cv, &ct->mu);
	ct->state = 0;
	rc = ct->rc;
	if (rc && err)
		*err = ct->err;
	(void)pthread_mutex_unlock(&ct->mu);
	return rc;
}

static void comm_stop(struct commth *ct)
{
	if (ct->started) {
		(void)pthread_mutex_lock(&ct->mu);
		ct->stop = 1;
		(void)pthread_cond_broadcast(&ct->cv);
		(void)pthread_mutex_unlock(&ct->mu);
		(void)pthread_join(ct->th, NULL);
		(void)pthread_cond_destroy(&ct->cv);
		(void)pthread_mutex_destroy(&ct->mu);
		ct->started = 0;
	}
	dp_a2a_comm_close(ct->comm);
	ct->comm = NULL;
	free(ct->v);
	ct->v = NULL;
}

/* ---- executor ------------------------------------------------------------ */

struct chunk {
	struct dp_model_stage *st;
	int stage;
	int embed, head;
	struct dp_model_ctx **pool; /* free contexts (a stack) */
	int nfree, npool;
};

struct post {
	int peer, kind, leg, micro;
};

struct dp_exec {
	struct dp_exec_cfg cfg;
	struct dp_sched *sched;
	int nstages, legs, mpl, T, H;
	int ep, prank, erank;
	/* expert placement (ep > 1): R physical slots per layer, nslot = R / ep
	 * on each EP rank.  place: an EPLB placement (p2l [L][R], l2p
	 * [L][E][xw], lcnt [L][E] from a2a/dp_eplb.h); else R = E, slot =
	 * expert.  lexp [L][nslot]: the distinct logical experts this rank
	 * holds in each layer, ascending (nlexp [L] of them); lpos [L][E]: the
	 * index of expert e there, -1 if not here.  slot_rows [L][R]: rows run
	 * through each slot's expert forward. */
	int place, R, nslot, xw;
	int32_t *p2l, *l2p, *lcnt;
	int *lexp, *nlexp, *lpos;
	long *slot_rows;
	/* rebalancing (cfg.rebalance_every > 0): load [L][E] built the
	 * current placement; win [L][E] the rows routed in the current
	 * window, summed over the ranks holding each layer after every step;
	 * cur [L][E] this step's rows of this rank's micro-batches */
	int rebal;
	float *load;
	int64_t *win, *cur;
	struct dp_exec_rebalance rb;
	int dp, drank; /* DP replicas, this rank's replica */
	int pbase;     /* global rank of this replica's pp rank 0, ep rank 0 */
	int nranks;    /* dp * pp * ep */
	int nch;
	struct chunk ch[2];
	struct dp_pp_link **links; /* borrowed */
	struct sender *snd;	   /* [nranks] */
	struct commth ct;	   /* ep > 1 */
	/* ep > 1 on a device stage: the packed expert rows stay in device
	 * memory (dp_model_stage_dev_io) and move by dp_a2a_alltoallv; one
	 * buffer set for forward tasks, one for backward tasks */
	int devep;
	struct dbuf *db;       /* [2]: backward, forward */
	struct ep_layer **epl; /* [legs][mpl]: [layers of the chunk], ep > 1 */
	struct dp_exec_times times;
	float **box;		    /* [2 (in/out)][2 kinds][legs][mpl] */
	struct dp_model_ctx **live; /* [legs][mpl] */
	struct post *posts;
	size_t nposts, cap_posts;
	int nlive, peak;
	int32_t *tokens, *targets;
	long step;
	double loss;
	struct dp_exec_op_time *tl; /* [nops]: timeline of the last step */
	size_t ntl;
	double tl_t0, tl_t1;
};

/* Device buffers of one kind of task (devep), allocated from chunk 0's
 * stage and kept: pk, pk2 of T*K rows, rx, lin, lout of cap rows, ord of
 * 2 cap indices (gather order in, then out). */
struct dbuf {
	float *pk, *pk2, *rx, *lin, *lout;
	int32_t *ord;
	int32_t *sord; /* EPLB placement: [2 T*K]: ep_layer.perm */
	size_t cap;
};

static double mono_s(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static float **boxp(struct dp_exec *ex, int out, int kind, int leg, int m)
{
	return &ex->box[((out * 2 + kind) * ex->legs + leg) * ex->mpl + m];
}

static const char *kind_name(int kind)
{
	static const char *const names[] = { "F", "B", "G", "R", "D", "C" };

	return kind >= 0 && kind <= KIND_C ? names[kind] : "?";
}

static int new_chunk(struct dp_exec *ex, int stage, struct chunk *c, struct dp_err *err)
{
	int rc = dp_model_stage_new_split_dev(&ex->cfg.model, ex->nstages, stage, ex->cfg.backend,
					      ex->cfg.device, &c->st, err);

	if (rc)
		return rc;
	c->stage = stage;
	c->embed = dp_model_stage_has_embed(c->st);
	c->head = dp_model_stage_has_head(c->st);
	c->npool = ex->mpl * ex->legs + 1;
	c->pool = calloc((size_t)c->npool, sizeof(struct dp_model_ctx *));
	if (!c->pool)
		return dp_err_set(err, ENOMEM, "exec: out of memory");
	return 0;
}

static int ctx_get(struct dp_exec *ex, struct chunk *c, struct dp_model_ctx **out,
		   struct dp_err *err)
{
	if (c->nfree) {
		*out = c->pool[--c->nfree];
	} else {
		int rc = dp_model_ctx_new(c->st, out, err);

		if (rc)
			return rc;
	}
	if (++ex->nlive > ex->peak)
		ex->peak = ex->nlive;
	return 0;
}

static void ctx_put(struct dp_exec *ex, struct chunk *c, struct dp_model_ctx *ctx)
{
	ex->nlive--;
	if (c->nfree < c->npool)
		c->pool[c->nfree++] = ctx;
	else
		dp_model_ctx_free(ctx);
}

/* Free the a2a plans of live slot @i (after its backward-for-input). */
static void epl_release(struct dp_exec *ex, int i)
{
	struct ep_layer *el = ex->epl[i];
	int count;

	if (!el)
		return;
	count = dp_model_stage_count(ex->ch[i / ex->mpl].st);
	for (int l = 0; l < count; l++) {
		dp_a2a_plan_free(el[l].plan);
		free(el[l].order);
		free(el[l].inv);
		free(el[l].loff);
		free(el[l].cnt);
		free(el[l].perm);
	}
	free(el);
	ex->epl[i] = NULL;
}

void dp_exec_free(struct dp_exec *ex)
{
	size_t nbox;

	if (!ex)
		return;
	if (ex->snd) {
		for (int i = 0; i < ex->nranks; i++)
			sender_stop(&ex->snd[i]);
		free(ex->snd);
	}
	if (ex->epl) {
		for (int i = 0; i < ex->legs * ex->mpl; i++)
			epl_release(ex, i);
		free(ex->epl);
	}
	comm_stop(&ex->ct);
	if (ex->live) {
		for (int i = 0; i < ex->legs * ex->mpl; i++)
			dp_model_ctx_free(ex->live[i]);
		free(ex->live);
	}
	nbox = (size_t)4 * ex->legs * ex->mpl;
	if (ex->box) {
		for (size_t i = 0; i < nbox; i++)
			free(ex->box[i]);
		free(ex->box);
	}
	for (int i = 0; ex->db && i < 2; i++) {
		struct dbuf *b = &ex->db[i];
		void *p[] = { b->pk, b->pk2, b->rx, b->lin, b->lout, b->ord, b->sord };

		for (size_t k = 0; k < DP_ARRAY_SIZE(p); k++)
			dp_model_stage_dev_free(ex->ch[0].st, p[k]);
	}
	free(ex->db);
	for (int i = 0; i < 2; i++) {
		for (int j = 0; j < ex->ch[i].nfree; j++)
			dp_model_ctx_free(ex->ch[i].pool[j]);
		free(ex->ch[i].pool);
		dp_model_stage_free(ex->ch[i].st);
	}
	free(ex->p2l);
	free(ex->l2p);
	free(ex->lcnt);
	free(ex->lexp);
	free(ex->nlexp);
	free(ex->lpos);
	free(ex->slot_rows);
	free(ex->load);
	free(ex->win);
	free(ex->cur);
	free(ex->posts);
	free(ex->tokens);
	free(ex->targets);
	free(ex->links);
	free(ex->tl);
	dp_sched_free(ex->sched);
	free(ex);
}

static int is_backend(const struct dp_exec *ex, const char *name)
{
	return ex->cfg.backend && strcmp(ex->cfg.backend, name) == 0;
}

/* devep: the chunks take device rows; pk and pk2 of both buffer sets. */
static int dev_buffers(struct dp_exec *ex, struct dp_err *err)
{
	const size_t rows = (size_t)ex->T * (size_t)ex->cfg.model.top_k,
		     bytes = rows * (size_t)ex->H * sizeof(float);
	struct dp_model_stage *st = ex->ch[0].st;
	int rc = 0;

	ex->db = calloc(2, sizeof(*ex->db));
	if (!ex->db)
		return dp_err_set(err, ENOMEM, "exec: out of memory");
	for (int i = 0; i < ex->nch && !rc; i++)
		rc = dp_model_stage_dev_io(ex->ch[i].st, 1, err);
	for (int i = 0; i < 2 && !rc; i++)
		if (!(rc = dp_model_stage_dev_alloc(st, bytes, (void **)&ex->db[i].pk, err)))
			rc = dp_model_stage_dev_alloc(st, bytes, (void **)&ex->db[i].pk2, err);
	for (int i = 0; i < 2 && !rc && ex->place; i++)
		rc = dp_model_stage_dev_alloc(st, 2 * rows * sizeof(int32_t),
					      (void **)&ex->db[i].sord, err);
	/* zeroed on chunk 0's streams: done before another chunk uses them */
	return rc ? rc : dp_model_stage_dev_sync(st, err);
}

/* devep: room for @rows received rows in @b (contents not kept). */
static int dev_grow(struct dp_exec *ex, struct dbuf *b, size_t rows, struct dp_err *err)
{
	struct dp_model_stage *st = ex->ch[0].st;
	const size_t rb = (size_t)ex->H * sizeof(float);
	size_t cap = b->cap + b->cap / 2;
	int rc;

	if (rows <= b->cap)
		return 0;
	if (cap < rows)
		cap = rows;
	dp_model_stage_dev_free(st, b->rx);
	dp_model_stage_dev_free(st, b->lin);
	dp_model_stage_dev_free(st, b->lout);
	dp_model_stage_dev_free(st, b->ord);
	b->rx = b->lin = b->lout = NULL;
	b->ord = NULL;
	b->cap = 0;
	if ((rc = dp_model_stage_dev_alloc(st, cap * rb, (void **)&b->rx, err)) ||
	    (rc = dp_model_stage_dev_alloc(st, cap * rb, (void **)&b->lin, err)) ||
	    (rc = dp_model_stage_dev_alloc(st, cap * rb, (void **)&b->lout, err)) ||
	    (rc = dp_model_stage_dev_alloc(st, 2 * cap * sizeof(int32_t), (void **)&b->ord, err)) ||
	    (rc = dp_model_stage_dev_sync(st, err)))
		return rc;
	b->cap = cap;
	return 0;
}

static int open_ep(struct dp_exec *ex, struct dp_err *err)
{
	struct dp_a2a_comm_cfg cc;
	struct commth *ct = &ex->ct;
	int rc;

	if (!ex->cfg.ep_comm)
		return dp_err_set(err, EINVAL, "exec: ep %d needs an a2a configuration", ex->ep);
	cc = *ex->cfg.ep_comm;
	cc.rank = ex->erank;
	cc.experts = ex->R; /* the a2a's experts are the physical slots */
	cc.hidden = ex->H;
	if (!cc.nodes && !cc.ranks_per_node) {
		cc.nodes = 1;
		cc.ranks_per_node = ex->ep;
	}
	if (cc.nodes * cc.ranks_per_node != ex->ep)
		return dp_err_set(err, EINVAL, "exec: a2a shape %d x %d is not ep %d", cc.nodes,
				  cc.ranks_per_node, ex->ep);
	/* a cuda stage between hosts: the cuda transport (its messages on the
	 * same tcp addresses) moves the rows GPU to GPU */
	if (is_backend(ex, "cuda") && cc.transport && strcmp(cc.transport, "tcp") == 0) {
		cc.transport = "cuda";
		cc.cuda_device = ex->cfg.device;
	}
	rc = dp_a2a_comm_open(&cc, &ct->comm, err);
	if (rc)
		return dp_err_prefix(err, "exec: rank %d: ep group", ex->cfg.rank);
	ct->algo = ex->cfg.ep_algo;
	ct->H = (size_t)ex->H;
	ct->ep = ex->ep;
	ct->nslot = ex->nslot;
	ct->on_device = dp_a2a_comm_on_device(ct->comm);
	ct->v = calloc(4 * (size_t)ex->ep, sizeof(size_t));
	if (!ct->v)
		return dp_err_set(err, ENOMEM, "exec: out of memory");
	/* emu memory is host memory: any transport moves it */
	ex->devep = is_backend(ex, "emu") || (is_backend(ex, "cuda") && ct->on_device);
	if (ex->devep && (rc = dev_buffers(ex, err)))
		return rc;
	(void)pthread_mutex_init(&ct->mu, NULL);
	(void)pthread_cond_init(&ct->cv, NULL);
	if (pthread_create(&ct->th, NULL, comm_main, ct)) {
		(void)pthread_cond_destroy(&ct->cv);
		(void)pthread_mutex_destroy(&ct->mu);
		return dp_err_set(err, EAGAIN, "exec: cannot start the communication thread");
	}
	ct->started = 1;
	return 0;
}

/* Start a sender to global rank @peer unless there is one; -EINVAL if
 * there is no link to it. */
static int need_peer(struct dp_exec *ex, struct dp_pp_link *const *links, int peer,
		     struct dp_err *err)
{
	if (peer >= 0 && peer < ex->nranks && (peer == ex->cfg.rank || ex->snd[peer].started))
		return 0;
	if (peer < 0 || peer >= ex->nranks || !links || !links[peer])
		return dp_err_set(err, EINVAL, "exec: rank %d needs a link to rank %d",
				  ex->cfg.rank, peer);
	ex->links[peer] = links[peer];
	return sender_start(&ex->snd[peer], links[peer], err);
}

/* The EPLB placement (ex->place) of the loads ex->load: every EP rank
 * builds the same one from the same loads (dp_eplb is deterministic).
 * The tables are replaced only on success. */
static int eplb_placement(struct dp_exec *ex, struct dp_err *err)
{
	const struct dp_model_cfg *m = &ex->cfg.model;
	const int L = m->layers, E = m->experts,
		  nodes = ex->cfg.ep_comm && ex->cfg.ep_comm->nodes > 0 ? ex->cfg.ep_comm->nodes
									: 1;
	const struct dp_eplb_cfg ec = { .layers = L,
					.experts = E,
					.replicas = ex->R,
					.groups = m->groups,
					.nodes = nodes,
					.gpus = ex->ep };
	struct dp_eplb_plan *plan = NULL;
	int32_t *p2l, *l2p, *lcnt;
	int rc, xw;

	rc = dp_eplb_plan_build(ex->load, &ec, &plan, err);
	if (rc)
		return dp_err_prefix(err,
				     "exec: expert placement (%d experts + %d redundant "
				     "on ep %d, %d node%s)",
				     E, ex->cfg.redundant, ex->ep, nodes, nodes == 1 ? "" : "s");
	xw = dp_eplb_plan_width(plan);
	p2l = malloc((size_t)L * (size_t)ex->R * sizeof(int32_t) + 1);
	l2p = malloc((size_t)L * (size_t)E * (size_t)xw * sizeof(int32_t) + 1);
	lcnt = malloc((size_t)L * (size_t)E * sizeof(int32_t) + 1);
	if (!p2l || !l2p || !lcnt) {
		free(p2l);
		free(l2p);
		free(lcnt);
		dp_eplb_plan_free(plan);
		return dp_err_set(err, ENOMEM, "exec: out of memory");
	}
	memcpy(p2l, dp_eplb_plan_phy2log(plan), (size_t)L * (size_t)ex->R * sizeof(int32_t));
	memcpy(l2p, dp_eplb_plan_log2phy(plan),
	       (size_t)L * (size_t)E * (size_t)xw * sizeof(int32_t));
	memcpy(lcnt, dp_eplb_plan_logcnt(plan), (size_t)L * (size_t)E * sizeof(int32_t));
	dp_eplb_plan_free(plan);
	free(ex->p2l);
	free(ex->l2p);
	free(ex->lcnt);
	ex->p2l = p2l;
	ex->l2p = l2p;
	ex->lcnt = lcnt;
	ex->xw = xw;
	return 0;
}

/* lexp, nlexp, lpos of every layer from the current placement. */
static void local_tables(struct dp_exec *ex)
{
	const int L = ex->cfg.model.layers, E = ex->cfg.model.experts;

	for (int l = 0; l < L; l++) {
		int *pos = ex->lpos + (size_t)l * E;

		ex->nlexp[l] = 0;
		for (int e = 0; e < E; e++)
			pos[e] = -1;
		for (int k = 0; k < ex->nslot; k++) {
			const int s = ex->erank * ex->nslot + k;

			pos[ex->place ? ex->p2l[(size_t)l * ex->R + s] : s] = -2; /* here */
		}
		for (int e = 0; e < E; e++)
			if (pos[e] == -2) {
				pos[e] = ex->nlexp[l];
				ex->lexp[(size_t)l * ex->nslot + ex->nlexp[l]++] = e;
			}
	}
}

/* The physical slots of this rank and the local logical experts of every
 * layer: the contiguous placement (slot = expert, E / ep per rank) or an
 * EPLB one (cfg.redundant, cfg.expert_load), and the rebalancing state. */
static int placement(struct dp_exec *ex, struct dp_err *err)
{
	const struct dp_model_cfg *m = &ex->cfg.model;
	const int L = m->layers, E = m->experts, red = ex->cfg.redundant;
	const size_t LE = (size_t)L * (size_t)E;
	int rc;

	if (red < 0 || red > 4096)
		return dp_err_set(err, EINVAL, "exec: redundant experts %d out of range 0..4096",
				  red);
	if (ex->ep == 1 && red > 0)
		return dp_err_set(err, EINVAL,
				  "exec: %d redundant experts need expert parallelism (ep > 1)",
				  red);
	ex->place = ex->ep > 1 && (red > 0 || ex->cfg.expert_load);
	if (ex->cfg.rebalance_every < 0 || (ex->cfg.rebalance_every > 0 && !ex->place))
		return dp_err_set(err, EINVAL,
				  "exec: rebalance_every %d needs an EPLB placement (ep > 1 and "
				  "redundant experts or expert loads)",
				  ex->cfg.rebalance_every);
	ex->rebal = ex->cfg.rebalance_every > 0;
	ex->rb.step = -1;
	ex->R = E + (ex->place ? red : 0);
	if (ex->R % ex->ep) {
		if (ex->place)
			return dp_err_set(err, EINVAL,
					  "exec: %d experts + %d redundant = %d expert slots do "
					  "not split over ep %d (need a multiple of ep)",
					  E, red, ex->R, ex->ep);
		return dp_err_set(err, EINVAL, "exec: %d experts do not split over ep %d", E,
				  ex->ep);
	}
	ex->nslot = ex->R / ex->ep;
	if (ex->place) {
		ex->load = malloc(LE * sizeof(float));
		if (!ex->load)
			return dp_err_set(err, ENOMEM, "exec: out of memory");
		for (size_t i = 0; i < LE; i++)
			ex->load[i] = ex->cfg.expert_load ? ex->cfg.expert_load[i] : 1.0f;
		ex->cfg.expert_load = NULL; /* borrowed for dp_exec_new only */
		if ((rc = eplb_placement(ex, err)))
			return rc;
	}
	if (ex->rebal) {
		ex->win = calloc(LE, sizeof(int64_t));
		ex->cur = calloc(LE, sizeof(int64_t));
		if (!ex->win || !ex->cur)
			return dp_err_set(err, ENOMEM, "exec: out of memory");
	}
	ex->lexp = malloc((size_t)L * (size_t)ex->nslot * sizeof(int));
	ex->nlexp = calloc((size_t)L, sizeof(int));
	ex->lpos = malloc(LE * sizeof(int));
	ex->slot_rows = calloc((size_t)L * (size_t)ex->R, sizeof(long));
	if (!ex->lexp || !ex->nlexp || !ex->lpos || !ex->slot_rows)
		return dp_err_set(err, ENOMEM, "exec: out of memory");
	local_tables(ex);
	return 0;
}

int dp_exec_new(const struct dp_exec_cfg *cfg, struct dp_pp_link *const *links,
		struct dp_exec **out, struct dp_err *err)
{
	struct dp_sched_cfg sc = {
		.algo = cfg->algo, .pp = cfg->pp, .micro = cfg->micro, .comm = 1
	};
	struct dp_exec *ex;
	const struct dp_sched_op *ops;
	size_t nops;
	int rc, pp = cfg->pp, ep = cfg->ep > 1 ? cfg->ep : 1, dp = cfg->dp > 1 ? cfg->dp : 1, r;

	if (pp < 1 || pp > 4096 || ep > 4096 || dp > 4096 || (long)dp * pp * ep > 4096 ||
	    cfg->rank < 0 || cfg->rank >= dp * pp * ep) {
		if (dp > 1)
			return dp_err_set(err, EINVAL,
					  "exec: rank %d out of range for dp %d x pp %d x ep %d",
					  cfg->rank, dp, pp, ep);
		return dp_err_set(err, EINVAL, "exec: rank %d out of range for pp %d x ep %d",
				  cfg->rank, pp, ep);
	}
	if (cfg->micro < 1 || cfg->micro > (1 << 20) / (ep * dp))
		return dp_err_set(err, EINVAL, "exec: micro %d out of range", cfg->micro);
	ex = calloc(1, sizeof(*ex));
	if (!ex)
		return dp_err_set(err, ENOMEM, "exec: out of memory");
	ex->cfg = *cfg;
	ex->cfg.ep = ep;
	ex->cfg.dp = dp;
	ex->ep = ep;
	ex->dp = dp;
	ex->nranks = dp * pp * ep;
	ex->prank = r = cfg->rank / ep % pp;
	ex->erank = cfg->rank % ep;
	ex->drank = cfg->rank / (pp * ep);
	ex->pbase = ex->drank * pp * ep;
	/* the loss is the mean over the tokens of all dp replicas' micro-batches */
	ex->cfg.model.micro_batches = cfg->micro * ep * dp;
	rc = dp_model_cfg_check(&ex->cfg.model, err);
	if (rc)
		goto fail;
	rc = placement(ex, err);
	if (rc)
		goto fail;
	rc = dp_sched_build(&sc, &ex->sched, err);
	if (rc)
		goto fail;
	ex->legs = dp_sched_legs(ex->sched);
	ex->mpl = dp_sched_leg_micro(ex->sched);
	ex->T = dp_model_cfg_tokens(&ex->cfg.model);
	ex->H = ex->cfg.model.hidden;
	ex->nstages = cfg->algo == DP_SCHED_DUALPIPEV ? 2 * pp : pp;
	if (ex->nstages > ex->cfg.model.layers + 1) {
		rc = dp_err_set(err, EINVAL,
				"exec: %d stages need at least %d layers, model has %d",
				ex->nstages, ex->nstages - 1, ex->cfg.model.layers);
		goto fail;
	}
	ex->nch = ex->legs;
	ex->links = calloc((size_t)ex->nranks, sizeof(struct dp_pp_link *));
	ex->snd = calloc((size_t)ex->nranks, sizeof(*ex->snd));
	ex->box = calloc((size_t)4 * ex->legs * ex->mpl, sizeof(float *));
	ex->live = calloc((size_t)ex->legs * ex->mpl, sizeof(struct dp_model_ctx *));
	ex->epl = calloc((size_t)ex->legs * ex->mpl, sizeof(struct ep_layer *));
	ex->tokens = calloc((size_t)ex->T, sizeof(*ex->tokens));
	ex->targets = calloc((size_t)ex->T, sizeof(*ex->targets));
	(void)dp_sched_ops(ex->sched, r, &nops);
	ex->tl = calloc(nops + 1, sizeof(*ex->tl));
	if (!ex->links || !ex->snd || !ex->box || !ex->live || !ex->epl || !ex->tokens ||
	    !ex->targets || !ex->tl) {
		rc = dp_err_set(err, ENOMEM, "exec: out of memory");
		goto fail;
	}
	rc = new_chunk(ex, r, &ex->ch[0], err);
	if (!rc && ex->nch == 2)
		rc = new_chunk(ex, cfg->algo == DP_SCHED_DUALPIPE ? pp - 1 - r : 2 * pp - 1 - r,
			       &ex->ch[1], err);
	if (rc)
		goto fail;
	/* the peers this rank talks to, all in its own replica but the last:
	 * the schedule's comm tokens (same ep rank), the DualPipe mirror rank
	 * for the gradient exchange, the rest of the EP group for the gradient
	 * all-reduce, and the same (pp rank, ep rank) of every other replica
	 * for the DP all-reduce */
	ops = dp_sched_ops(ex->sched, r, &nops);
	for (size_t i = 0; i < nops && !rc; i++)
		if (ops[i].peer >= 0)
			rc = need_peer(ex, links, ex->pbase + ops[i].peer * ep + ex->erank, err);
	if (!rc && cfg->algo == DP_SCHED_DUALPIPE)
		rc = need_peer(ex, links, ex->pbase + (pp - 1 - r) * ep + ex->erank, err);
	for (int j = 0; j < ep && !rc; j++)
		rc = need_peer(ex, links, ex->pbase + r * ep + j, err);
	for (int d = 0; d < dp && !rc; d++)
		rc = need_peer(ex, links, (d * pp + r) * ep + ex->erank, err);
	if (!rc && ep > 1)
		rc = open_ep(ex, err);
	if (rc)
		goto fail;
	*out = ex;
	return 0;
fail:
	dp_exec_free(ex);
	return rc;
}

/* The micro-batch of the whole step (micro * ep * dp of them) that (leg,
 * m) of this rank is: EP rank j of replica d takes (d * ep + j) * micro ..
 * (d * ep + j) * micro + micro - 1. */
static int global_mb(const struct dp_exec *ex, int leg, int m)
{
	return (ex->drank * ex->ep + ex->erank) * ex->cfg.micro +
	       (ex->cfg.algo == DP_SCHED_DUALPIPE ? leg * ex->mpl + m : m);
}

/* DualPipeV's last rank hands leg 0's output to its own leg 1 chunk. */
static int local_handover(const struct dp_exec *ex)
{
	return ex->cfg.algo == DP_SCHED_DUALPIPEV && ex->prank == ex->cfg.pp - 1;
}

static int check_leg(const struct dp_exec *ex, int leg, int m, struct dp_err *err)
{
	if (leg >= ex->nch || m < 0 || m >= ex->mpl)
		return dp_err_set(err, EPROTO, "exec: op for leg %d micro %d out of range", leg, m);
	return 0;
}

static int take_box(struct dp_exec *ex, int out, int kind, int leg, int m, float **buf,
		    struct dp_err *err)
{
	float **p = boxp(ex, out, kind, leg, m);

	if (!*p)
		return dp_err_set(err, EPROTO, "exec: rank %d: no %s tensor %s%d %d to %s",
				  ex->cfg.rank, out ? "computed" : "received", kind_name(kind), leg,
				  m, out ? "send" : "use");
	*buf = *p;
	*p = NULL;
	return 0;
}

static int put_box(struct dp_exec *ex, int out, int kind, int leg, int m, float *buf,
		   struct dp_err *err)
{
	float **p = boxp(ex, out, kind, leg, m);

	if (*p) {
		free(buf);
		return dp_err_set(err, EPROTO, "exec: rank %d: tensor %s%d %d twice", ex->cfg.rank,
				  kind_name(kind), leg, m);
	}
	*p = buf;
	return 0;
}

static float *tensor_alloc(const struct dp_exec *ex)
{
	return malloc((size_t)ex->T * (size_t)ex->H * sizeof(float));
}

/* ---- tasks: one forward or backward of a chunk, step by step (ep > 1) ----
 *
 * Steps alternate compute (even) and exchange (odd); per layer li of the
 * chunk (forward: layers ascending, backward: descending):
 *   4li   forward: combine of the previous layer, attention, gate, routing,
 *                  shared expert, pack rows by expert;
 *         backward: attention backward of the previous layer, combine
 *                  backward (packed output grads)
 *   4li+1 dispatch (forward: the plan is built first, with the layouts)
 *   4li+2 expert MLPs of the experts this rank owns, on the rows received
 *   4li+3 combine: the rows go back to their sources, unweighted
 *   4L    forward: last combine and forward_end; backward: last attention
 *         backward, backward_end (and the weight gradients for a full B). */

struct task {
	int fwd, full; /* forward; backward: full (B) or input only (I) */
	int leg, m;
	struct chunk *c;
	struct dp_model_ctx *ctx;
	struct ep_layer *el; /* [layers of the chunk] */
	int step, nsteps;
	struct dp_model_io io;
	float *xin;	 /* forward input (owned) */
	const float *dy; /* backward: output grad */
	float *out;	 /* forward: y; backward: dx (owned until finish) */
	double loss;
	float *pk, *pk2;   /* [T*K*H] packed rows out / back */
	float *rx;	   /* received rows */
	float *lin, *lout; /* local expert rows in / out */
	size_t cap;	   /* rows of rx (backward), lin, lout */
	int32_t *idx;	   /* [T*K] expert of each packed row */
	float *ones;	   /* [T*K] */
	struct dbuf *db;   /* devep: the device buffers (pk, pk2 are theirs) */
	struct comm_job job;
};

static void task_release(struct task *t)
{
	if (!t->db) {
		free(t->pk);
		free(t->pk2);
	}
	free(t->rx);
	free(t->lin);
	free(t->lout);
	free(t->idx);
	free(t->ones);
	t->pk = t->pk2 = t->rx = t->lin = t->lout = t->ones = NULL;
	t->idx = NULL;
}

static int task_init(struct dp_exec *ex, struct task *t, struct dp_err *err)
{
	const size_t rows = (size_t)ex->T * (size_t)ex->cfg.model.top_k;
	int count = dp_model_stage_count(t->c->st), slot = t->leg * ex->mpl + t->m;

	t->step = 0;
	t->nsteps = 4 * count + 1;
	if (t->fwd && !ex->epl[slot] && count)
		ex->epl[slot] = calloc((size_t)count, sizeof(struct ep_layer));
	t->el = ex->epl[slot];
	if (ex->devep) {
		t->db = &ex->db[t->fwd];
		t->pk = t->db->pk;
		t->pk2 = t->db->pk2;
	} else {
		t->pk = malloc(rows * (size_t)ex->H * sizeof(float));
		t->pk2 = malloc(rows * (size_t)ex->H * sizeof(float));
	}
	t->idx = malloc(rows * sizeof(int32_t));
	t->ones = malloc(rows * sizeof(float));
	if ((count && !t->el) || !t->pk || !t->pk2 || !t->idx || !t->ones)
		return dp_err_set(err, ENOMEM, "exec: out of memory");
	for (size_t i = 0; i < rows; i++)
		t->ones[i] = 1.0f;
	return 0;
}

static int task_done(const struct task *t)
{
	return t->step >= t->nsteps;
}

static int task_wants_comm(const struct task *t)
{
	return !task_done(t) && (t->step & 1);
}

static int grow(struct task *t, size_t rows, size_t H, int with_rx)
{
	float *a, *b, *c = NULL;

	if (rows <= t->cap)
		return 0;
	a = realloc(t->lin, rows * H * sizeof(float));
	if (a)
		t->lin = a;
	b = realloc(t->lout, rows * H * sizeof(float));
	if (b)
		t->lout = b;
	if (with_rx) {
		c = realloc(t->rx, rows * H * sizeof(float));
		if (c)
			t->rx = c;
	}
	if (!a || !b || (with_rx && !c))
		return -ENOMEM;
	t->cap = rows;
	return 0;
}

/* The local logical expert index (ex->lexp) of the received row @rv of
 * layer @layer, or -1 if its physical slot is not one of this rank's. */
static int row_local(const struct dp_exec *ex, int layer, const struct dp_a2a_recv *rv)
{
	const int s = rv->expert[0], s0 = ex->erank * ex->nslot;

	if (rv->nslots != 1 || s < s0 || s >= s0 + ex->nslot)
		return -1;
	return ex->lpos[(size_t)layer * ex->cfg.model.experts +
			(ex->place ? ex->p2l[(size_t)layer * ex->R + s] : s)];
}

/* After the forward dispatch: where each received row goes.  Rows arrive
 * ordered by (source rank, source row), each for a physical slot; local
 * logical expert i (ex->lexp, ascending) takes the rows of all its slots
 * here in that order, so one expert call per (layer, expert) sees them. */
static int build_order(struct dp_exec *ex, struct ep_layer *el, int layer, struct dp_err *err)
{
	const struct dp_a2a_recv *rv = dp_a2a_plan_recv(el->plan);
	const int n = dp_a2a_plan_recv_count(el->plan), nl = ex->nlexp[layer];
	long *srows = ex->slot_rows + (size_t)layer * ex->R;

	el->nrecv = n;
	el->order = malloc((size_t)(n ? n : 1) * sizeof(int));
	el->inv = ex->devep ? malloc((size_t)(n ? n : 1) * sizeof(int)) : NULL;
	el->loff = calloc((size_t)nl + 1, sizeof(int));
	if (!el->order || !el->loff || (ex->devep && !el->inv))
		return dp_err_set(err, ENOMEM, "exec: out of memory");
	for (int i = 0; i < n; i++) {
		int e = row_local(ex, layer, &rv[i]);

		if (e < 0 || rv[i].slot != i)
			return dp_err_set(err, EPROTO, "exec: rank %d got a row for expert slot %d",
					  ex->cfg.rank, rv[i].expert[0]);
		el->loff[e + 1]++;
		srows[rv[i].expert[0]]++;
	}
	ex->times.n_expert_rows += n;
	for (int e = 0; e < nl; e++)
		el->loff[e + 1] += el->loff[e];
	{
		int *fill = calloc((size_t)nl + 1, sizeof(int));

		if (!fill)
			return dp_err_set(err, ENOMEM, "exec: out of memory");
		for (int i = 0; i < n; i++) {
			int e = row_local(ex, layer, &rv[i]), k = el->loff[e] + fill[e]++;

			el->order[k] = i;
			if (el->inv)
				el->inv[i] = k;
		}
		free(fill);
	}
	return 0;
}

/* The MLP (forward or backward-for-input) of each logical expert this rank
 * holds in @layer (one call each, all its slots' rows), on its rows of @in
 * (local expert order, el->loff) into @out: host memory, or device memory
 * of the stage with devep. */
static int expert_calls(struct dp_exec *ex, struct task *t, int layer, const struct ep_layer *el,
			const float *in, float *out, struct dp_err *err)
{
	struct dp_model_stage *st = t->c->st;
	int rc = 0;

	for (int i = 0; i < ex->nlexp[layer] && !rc; i++) {
		const int e = ex->lexp[(size_t)layer * ex->nslot + i],
			  n = el->loff[i + 1] - el->loff[i];
		const size_t off = (size_t)el->loff[i] * (size_t)ex->H;

		rc = t->fwd ? dp_model_expert_forward(st, t->ctx, layer, e, n, in + off, out + off,
						      err)
			    : dp_model_expert_backward_input(st, t->ctx, layer, e, n, in + off,
							     out + off, err);
	}
	return rc;
}

/* local_experts with device rows (devep): the same moves as row gathers
 * on the device, by the layer's order uploaded next to them. */
static int local_experts_dev(struct dp_exec *ex, struct task *t, int layer, struct ep_layer *el,
			     struct dp_err *err)
{
	struct dp_model_stage *st = t->c->st;
	struct dbuf *b = t->db;
	const size_t n = (size_t)el->nrecv;
	int rc;

	if (!n)
		return 0;
	if ((rc = dp_model_stage_dev_h2d(st, b->ord, el->order, n * sizeof(int32_t), err)) ||
	    (rc = dp_model_stage_dev_h2d(st, b->ord + b->cap, el->inv, n * sizeof(int32_t), err)) ||
	    (rc = dp_model_stage_dev_gather(st, b->lin, b->rx, b->ord, (long)n, err)))
		return rc;
	rc = expert_calls(ex, t, layer, el, b->lin, b->lout, err);
	return rc ? rc
		  : dp_model_stage_dev_gather(st, b->rx, b->lout, b->ord + b->cap, (long)n, err);
}

/* The expert MLPs this rank owns on the rows in t->rx (forward or
 * backward-for-input), results back into received-row order in t->rx. */
static int local_experts(struct dp_exec *ex, struct task *t, int layer, struct ep_layer *el,
			 struct dp_err *err)
{
	const size_t H = (size_t)ex->H;
	int rc;

	if (grow(t, (size_t)el->nrecv, H, 0))
		return dp_err_set(err, ENOMEM, "exec: out of memory");
	for (int k = 0; k < el->nrecv; k++)
		memcpy(t->lin + (size_t)k * H, t->rx + (size_t)el->order[k] * H, H * sizeof(float));
	rc = expert_calls(ex, t, layer, el, t->lin, t->lout, err);
	for (int k = 0; k < el->nrecv && !rc; k++)
		memcpy(t->rx + (size_t)el->order[k] * H, t->lout + (size_t)k * H,
		       H * sizeof(float));
	return rc;
}

/* The physical slot of each packed row of @layer (route @r): the q-th row
 * of logical expert e goes to its replica q % logcnt (an even split, which
 * EPLB's balance assumes); with the contiguous placement to slot e. */
static void route_slots(const struct dp_exec *ex, int layer, const struct dp_model_route *r,
			int32_t *idx)
{
	for (int e = 0; e < r->experts; e++) {
		const size_t le = (size_t)layer * (size_t)r->experts + (size_t)e;

		for (int i = r->offset[e]; i < r->offset[e + 1]; i++)
			idx[i] = ex->place ? ex->l2p[le * (size_t)ex->xw +
						     (size_t)((i - r->offset[e]) % ex->lcnt[le])]
					   : e;
	}
}

/* Device rows with an EPLB placement: the packed rows of a layer are not
 * grouped by destination any more; el->perm gets the send order (a stable
 * sort of the @n rows by the EP rank of their slot @idx, so each
 * destination sees its rows in packed order, as the plan lists them)
 * and its inverse. */
static int send_order(const struct dp_exec *ex, struct ep_layer *el, const int32_t *idx, int n,
		      struct dp_err *err)
{
	int *next = calloc((size_t)ex->ep + 1, sizeof(int));

	free(el->perm);
	el->perm = malloc(2 * (size_t)(n ? n : 1) * sizeof(int32_t));
	if (!next || !el->perm) {
		free(next);
		return dp_err_set(err, ENOMEM, "exec: out of memory");
	}
	for (int i = 0; i < n; i++)
		next[idx[i] / ex->nslot + 1]++;
	for (int d = 0; d < ex->ep; d++)
		next[d + 1] += next[d];
	for (int i = 0; i < n; i++) {
		const int k = next[idx[i] / ex->nslot]++;

		el->perm[k] = i;
		el->perm[n + i] = k;
	}
	free(next);
	return 0;
}

/* Device rows with an EPLB placement: t->pk2 gets t->pk in send order
 * (before a dispatch), or with @back in packed order from the send order
 * a combine left in t->pk. */
static int dev_permute(const struct dp_exec *ex, struct task *t, const struct ep_layer *el,
		       int back, struct dp_err *err)
{
	struct dp_model_stage *st = t->c->st;
	const size_t n = (size_t)ex->T * (size_t)ex->cfg.model.top_k;
	int rc = dp_model_stage_dev_h2d(st, t->db->sord, el->perm + (back ? n : 0),
					n * sizeof(int32_t), err);

	return rc ? rc : dp_model_stage_dev_gather(st, t->pk2, t->pk, t->db->sord, (long)n, err);
}

static int task_compute(struct dp_exec *ex, struct task *t, struct dp_err *err)
{
	struct dp_model_stage *st = t->c->st;
	const int first = dp_model_stage_first(st), count = dp_model_stage_count(st);
	const int li = t->step / 4, nrows = ex->T * ex->cfg.model.top_k;
	const int perm = t->db && ex->place; /* device rows leave in send order */
	int rc = 0;

	if (t->step % 4 == 2) {
		int layer = t->fwd ? first + li : first + count - 1 - li;
		struct ep_layer *el = &t->el[layer - first];

		if (t->fwd)
			rc = build_order(ex, el, layer, err);
		if (!rc)
			rc = t->db ? local_experts_dev(ex, t, layer, el, err)
				   : local_experts(ex, t, layer, el, err);
		t->job = (struct comm_job){ .kind = JOB_COMBINE,
					    .plan = &el->plan,
					    .el = t->db ? el : NULL,
					    .in = t->db ? t->db->rx : t->rx,
					    .out = perm ? t->pk : t->pk2 };
	} else if (t->fwd) {
		const int layer = first + li;

		if (li > 0 && perm)
			rc = dev_permute(ex, t, &t->el[li - 1], 1, err);
		if (!rc)
			rc = li == 0 ? dp_model_forward_begin(st, t->ctx, &t->io, err)
				     : dp_model_combine_forward(st, t->ctx, layer - 1, t->pk2, err);
		if (!rc && li == count)
			rc = dp_model_forward_end(st, t->ctx, t->out, &t->loss, err);
		else if (!rc)
			rc = dp_model_attn_forward(st, t->ctx, layer, err);
		if (!rc && li < count) {
			const struct dp_model_route *r = dp_model_ctx_route(t->ctx, layer);

			rc = dp_model_dispatch(st, t->ctx, layer, t->pk, err);
			route_slots(ex, layer, r, t->idx);
			for (int e = 0; ex->rebal && e < r->experts; e++)
				ex->cur[(size_t)layer * (size_t)r->experts + (size_t)e] +=
					r->offset[e + 1] - r->offset[e];
			if (!rc && perm && !(rc = send_order(ex, &t->el[li], t->idx, nrows, err)))
				rc = dev_permute(ex, t, &t->el[li], 0, err);
			t->job = (struct comm_job){ .kind = JOB_PLAN_DISPATCH,
						    .plan = &t->el[li].plan,
						    .n = nrows,
						    .idx = t->idx,
						    .w = t->ones,
						    .in = perm ? t->pk2 : t->pk,
						    .rx = &t->rx };
			if (t->db) {
				t->job.el = &t->el[li];
				t->job.out = t->db->rx;
				t->job.cap = t->db->cap;
			} else {
				t->cap = 0; /* rx is reallocated by the exchange */
			}
		}
	} else {
		const int layer = first + count - 1 - li;

		if (li > 0 && perm)
			rc = dev_permute(ex, t, &t->el[layer + 1 - first], 1, err);
		if (!rc)
			rc = li == 0 ? dp_model_backward_begin(st, t->ctx, t->dy, err)
				     : dp_model_attn_backward(st, t->ctx, layer + 1, t->pk2, err);
		if (!rc && li == count) {
			rc = dp_model_backward_end(st, t->ctx, t->out, err);
			if (!rc && t->full)
				rc = dp_model_backward_weight(st, t->ctx, err);
		} else if (!rc) {
			struct ep_layer *el = &t->el[layer - first];

			rc = dp_model_combine_backward(st, t->ctx, layer, t->pk, err);
			if (!rc && perm)
				rc = dev_permute(ex, t, el, 0, err);
			if (!rc && t->db)
				rc = dev_grow(ex, t->db, (size_t)el->nrecv, err);
			else if (!rc && grow(t, (size_t)el->nrecv, (size_t)ex->H, 1))
				rc = dp_err_set(err, ENOMEM, "exec: out of memory");
			t->job = (struct comm_job){ .kind = JOB_DISPATCH,
						    .plan = &el->plan,
						    .el = t->db ? el : NULL,
						    .in = perm ? t->pk2 : t->pk,
						    .out = t->db ? t->db->rx : t->rx };
		}
	}
	/* device rows: the exchange (another stream, another thread) or the
	 * next task on these buffers reads what the queued kernels write */
	if (!rc && t->db)
		rc = dp_model_stage_dev_sync(st, err);
	if (!rc)
		t->step++;
	return rc;
}

/* Run @n tasks (1, or 2 for an F&B: forward first, backward second) to the
 * end.  One exchange is in flight at a time.  While one task's exchange
 * runs, the other task computes; with one task left, they alternate.  The
 * backward goes first when both could (so the forward's attention overlaps
 * the backward's dispatch). */
static int run_tasks(struct dp_exec *ex, struct task *const *t, int n, struct dp_err *err)
{
	int busy = -1, rc = 0;

	for (;;) {
		int left = 0, ran = 0;

		for (int k = 0; k < n; k++)
			left += !task_done(t[k]);
		if (!left)
			break;
		if (busy < 0)
			for (int k = n - 1; k >= 0; k--)
				if (task_wants_comm(t[k])) {
					comm_submit(&ex->ct, &t[k]->job);
					busy = k;
					break;
				}
		for (int k = n - 1; k >= 0 && !ran; k--)
			if (k != busy && !task_done(t[k]) && !task_wants_comm(t[k])) {
				ex->times.n_overlapped += busy >= 0;
				rc = task_compute(ex, t[k], err);
				if (rc)
					goto out;
				ran = 1;
			}
		if (!ran && busy >= 0) {
			struct task *b = t[busy];

			rc = comm_wait(&ex->ct, err);
			if (rc) {
				busy = -1;
				goto out;
			}
			if (b->job.need) {
				/* device rows: the plan is built, rx too small;
				 * grow it here, then move the rows at once (every
				 * rank of the group must see the same order of
				 * exchanges) */
				rc = dev_grow(ex, b->db, b->job.need, err);
				if (rc) {
					busy = -1;
					goto out;
				}
				b->job.kind = JOB_DISPATCH;
				b->job.out = b->db->rx;
				b->job.need = 0;
				comm_submit(&ex->ct, &b->job);
				continue;
			}
			b->step++;
			busy = -1;
		}
	}
out:
	if (busy >= 0)
		(void)comm_wait(&ex->ct, NULL);
	return rc;
}

/* ---- F and B ops ------------------------------------------------------------ */

static int fwd_prepare(struct dp_exec *ex, int leg, int m, struct task *t, struct dp_err *err)
{
	struct chunk *c;
	int rc = check_leg(ex, leg, m, err);

	memset(t, 0, sizeof(*t));
	t->fwd = 1;
	t->leg = leg;
	t->m = m;
	if (rc)
		return rc;
	c = t->c = &ex->ch[leg];
	if (ex->live[leg * ex->mpl + m])
		return dp_err_set(err, EPROTO, "exec: F%d %d twice", leg, m);
	if (c->embed || c->head)
		dp_model_batch(&ex->cfg.model, ex->step, global_mb(ex, leg, m), ex->tokens,
			       ex->targets);
	if (c->embed) {
		t->io.tokens = ex->tokens;
	} else {
		rc = take_box(ex, 0, KIND_F, leg, m, &t->xin, err);
		if (rc)
			return rc;
		t->io.x = t->xin;
	}
	if (c->head)
		t->io.targets = ex->targets;
	else if (!(t->out = tensor_alloc(ex)))
		return dp_err_set(err, ENOMEM, "exec: out of memory");
	rc = ctx_get(ex, c, &t->ctx, err);
	if (!rc && ex->ep > 1)
		rc = task_init(ex, t, err);
	return rc;
}

/* Hand the forward's results on (or clean up after @rc). */
static int fwd_finish(struct dp_exec *ex, struct task *t, int rc, struct dp_err *err)
{
	const int leg = t->leg, m = t->m;
	struct chunk *c = t->c;
	float *y = t->out;

	task_release(t);
	free(t->xin);
	t->xin = NULL;
	t->out = NULL;
	if (rc) {
		free(y);
		if (t->ctx && c) {
			ctx_put(ex, c, t->ctx);
			epl_release(ex, leg * ex->mpl + m);
		}
		return rc;
	}
	ex->live[leg * ex->mpl + m] = t->ctx;
	if (c->head) {
		ex->loss += t->loss;
		return 0;
	}
	if (leg == 0 && local_handover(ex))
		return put_box(ex, 0, KIND_F, 1, m, y, err);
	return put_box(ex, 1, KIND_F, leg, m, y, err);
}

static int bwd_prepare(struct dp_exec *ex, int leg, int m, int full, struct task *t,
		       struct dp_err *err)
{
	float *dy = NULL;
	int rc = check_leg(ex, leg, m, err);

	memset(t, 0, sizeof(*t));
	t->full = full;
	t->leg = leg;
	t->m = m;
	if (rc)
		return rc;
	t->c = &ex->ch[leg];
	t->ctx = ex->live[leg * ex->mpl + m];
	if (!t->ctx)
		return dp_err_set(err, EPROTO, "exec: backward of %d %d before its F", leg, m);
	if (!t->c->head) {
		rc = take_box(ex, 0, KIND_B, leg, m, &dy, err);
		if (rc)
			return rc;
		t->dy = dy;
	}
	if (!t->c->embed && !(t->out = tensor_alloc(ex)))
		return dp_err_set(err, ENOMEM, "exec: out of memory");
	return ex->ep > 1 ? task_init(ex, t, err) : 0;
}

static int bwd_finish(struct dp_exec *ex, struct task *t, int rc, struct dp_err *err)
{
	const int leg = t->leg, m = t->m;
	struct chunk *c = t->c;
	float *dx = t->out;

	task_release(t);
	free((void *)t->dy);
	t->dy = NULL;
	t->out = NULL;
	if (rc || !c) {
		free(dx);
		return rc;
	}
	epl_release(ex, leg * ex->mpl + m);
	if (t->full) {
		ex->live[leg * ex->mpl + m] = NULL;
		ctx_put(ex, c, t->ctx);
	}
	if (c->embed)
		return 0;
	if (leg == 1 && local_handover(ex))
		return put_box(ex, 0, KIND_B, 0, m, dx, err);
	return put_box(ex, 1, KIND_B, leg, m, dx, err);
}

/* The compute of one prepared task, all in one go (ep 1: the whole-stage
 * calls; ep > 1: the task's steps with blocking exchanges). */
static int run_one(struct dp_exec *ex, struct task *t, struct dp_err *err)
{
	struct dp_model_stage *st = t->c->st;

	if (ex->ep > 1)
		return run_tasks(ex, &t, 1, err);
	if (t->fwd)
		return dp_model_forward(st, t->ctx, &t->io, t->out, &t->loss, err);
	return t->full ? dp_model_backward(st, t->ctx, t->dy, t->out, err)
		       : dp_model_backward_input(st, t->ctx, t->dy, t->out, err);
}

static int op_forward(struct dp_exec *ex, int leg, int m, struct dp_err *err)
{
	struct task t;
	int rc = fwd_prepare(ex, leg, m, &t, err);

	if (!rc)
		rc = run_one(ex, &t, err);
	return fwd_finish(ex, &t, rc, err);
}

static int op_backward(struct dp_exec *ex, int leg, int m, int full, struct dp_err *err)
{
	struct task t;
	int rc = bwd_prepare(ex, leg, m, full, &t, err);

	if (!rc)
		rc = run_one(ex, &t, err);
	return bwd_finish(ex, &t, rc, err);
}

/* F&B: the forward of (leg, m) and the full backward of (leg2, m2).  With
 * EP and overlap, the two tasks interleave (run_tasks); otherwise the
 * forward runs, then the backward.  The PP sends of the surrounding SF/SB
 * tokens progress on the sender threads meanwhile either way. */
static int op_fb(struct dp_exec *ex, int leg, int m, int leg2, int m2, struct dp_err *err)
{
	struct task f, b;
	struct task *both[2] = { &f, &b };
	int rc, rc2;

	if (ex->ep == 1 || !ex->cfg.overlap) {
		rc = op_forward(ex, leg, m, err);
		return rc ? rc : op_backward(ex, leg2, m2, 1, err);
	}
	rc = fwd_prepare(ex, leg, m, &f, err);
	rc2 = bwd_prepare(ex, leg2, m2, 1, &b, rc ? NULL : err);
	if (!rc && !rc2)
		rc = run_tasks(ex, both, 2, err);
	else if (!rc)
		rc = rc2;
	rc2 = fwd_finish(ex, &f, rc, err);
	rc2 = bwd_finish(ex, &b, rc ? rc : rc2, rc ? NULL : err);
	return rc ? rc : rc2;
}

static int op_weight(struct dp_exec *ex, int leg, int m, struct dp_err *err)
{
	struct dp_model_ctx *ctx;
	int rc = check_leg(ex, leg, m, err);

	if (rc)
		return rc;
	ctx = ex->live[leg * ex->mpl + m];
	if (!ctx)
		return dp_err_set(err, EPROTO, "exec: W%d %d without its F", leg, m);
	rc = dp_model_backward_weight(ex->ch[leg].st, ctx, err);
	if (rc)
		return rc;
	ex->live[leg * ex->mpl + m] = NULL;
	ctx_put(ex, &ex->ch[leg], ctx);
	return 0;
}

static int op_send(struct dp_exec *ex, int kind, int leg, int m, int peer, struct dp_err *err)
{
	struct msg_hdr h = { .magic = MSG_MAGIC, .kind = (uint8_t)kind, .leg = (uint8_t)leg };
	float *buf = NULL;
	int rc = check_leg(ex, leg, m, err);

	if (rc)
		return rc;
	if (peer < 0 || peer >= ex->nranks || !ex->snd[peer].started)
		return dp_err_set(err, EPROTO, "exec: send to unknown peer %d", peer);
	rc = take_box(ex, 1, kind, leg, m, &buf, err);
	if (rc)
		return rc;
	h.micro = m;
	h.step = ex->step;
	h.bytes = (uint64_t)ex->T * (uint64_t)ex->H * sizeof(float);
	return sender_post(&ex->snd[peer], &h, buf, err);
}

static int op_post_recv(struct dp_exec *ex, int kind, int leg, int m, int peer, struct dp_err *err)
{
	int rc = check_leg(ex, leg, m, err);

	if (rc)
		return rc;
	if (peer < 0 || peer >= ex->nranks || !ex->links[peer])
		return dp_err_set(err, EPROTO, "exec: receive from unknown peer %d", peer);
	if (ex->nposts == ex->cap_posts) {
		size_t cap = ex->cap_posts ? 2 * ex->cap_posts : 16;
		struct post *p = realloc(ex->posts, cap * sizeof(*p));

		if (!p)
			return dp_err_set(err, ENOMEM, "exec: out of memory");
		ex->posts = p;
		ex->cap_posts = cap;
	}
	ex->posts[ex->nposts++] =
		(struct post){ .peer = peer, .kind = kind, .leg = leg, .micro = m };
	return 0;
}

/* Receive one message from @peer that must be (kind, leg, micro) of this
 * step with @bytes of payload into @buf. */
static int recv_msg(struct dp_exec *ex, int peer, int kind, int leg, int m, void *buf, size_t bytes,
		    struct dp_err *err)
{
	struct dp_pp_link *l = ex->links[peer];
	struct msg_hdr h;
	int rc = l->ops->recv(l, &h, sizeof(h), err);

	if (rc)
		return dp_err_prefix(err, "rank %d from %d", ex->cfg.rank, peer);
	if (h.magic != MSG_MAGIC || h.kind != kind || h.leg != leg || h.micro != m ||
	    h.step != ex->step || h.bytes != bytes)
		return dp_err_set(err, EPROTO,
				  "exec: rank %d expected %s%d %d (step %ld) from rank %d, got "
				  "%s%d %d (step %ld, %llu bytes)",
				  ex->cfg.rank, kind_name(kind), leg, m, ex->step, peer,
				  h.magic == MSG_MAGIC ? kind_name(h.kind) : "?", h.leg,
				  (int)h.micro, (long)h.step, (unsigned long long)h.bytes);
	rc = l->ops->recv(l, buf, bytes, err);
	if (rc)
		return dp_err_prefix(err, "rank %d from %d", ex->cfg.rank, peer);
	return 0;
}

static int op_wait(struct dp_exec *ex, struct dp_err *err)
{
	size_t bytes = (size_t)ex->T * (size_t)ex->H * sizeof(float);

	for (size_t i = 0; i < ex->nposts; i++) {
		const struct post *p = &ex->posts[i];
		float *buf = tensor_alloc(ex);
		int rc;

		if (!buf)
			return dp_err_set(err, ENOMEM, "exec: out of memory");
		rc = recv_msg(ex, p->peer, p->kind, p->leg, p->micro, buf, bytes, err);
		if (!rc)
			rc = put_box(ex, 0, p->kind, p->leg, p->micro, buf, err);
		else
			free(buf);
		if (rc)
			return rc;
	}
	ex->nposts = 0;
	return 0;
}

static double now_s(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int run_op(struct dp_exec *ex, const struct dp_sched_op *op, struct dp_err *err)
{
	/* schedule peers are pp ranks: the one of this replica with the same ep rank */
	const int peer = op->peer >= 0 ? ex->pbase + op->peer * ex->ep + ex->erank : -1;
	struct dp_exec_times *tm = &ex->times;
	double t0 = now_s();
	int rc;

	switch (op->kind) {
	case DP_SCHED_OP_F:
		rc = op_forward(ex, op->leg, op->micro, err);
		tm->f += now_s() - t0;
		tm->n_f++;
		return rc;
	case DP_SCHED_OP_B:
		rc = op_backward(ex, op->leg, op->micro, 1, err);
		tm->b += now_s() - t0;
		tm->n_b++;
		return rc;
	case DP_SCHED_OP_I:
		rc = op_backward(ex, op->leg, op->micro, 0, err);
		tm->i += now_s() - t0;
		tm->n_i++;
		return rc;
	case DP_SCHED_OP_W:
		rc = op_weight(ex, op->leg, op->micro, err);
		tm->w += now_s() - t0;
		tm->n_w++;
		return rc;
	case DP_SCHED_OP_FB:
		rc = op_fb(ex, op->leg, op->micro, op->leg2, op->micro2, err);
		tm->fb += now_s() - t0;
		tm->n_fb++;
		return rc;
	case DP_SCHED_OP_RF:
		return op_post_recv(ex, KIND_F, op->leg, op->micro, peer, err);
	case DP_SCHED_OP_RB:
		return op_post_recv(ex, KIND_B, op->leg, op->micro, peer, err);
	case DP_SCHED_OP_SF:
		return op_send(ex, KIND_F, op->leg, op->micro, peer, err);
	case DP_SCHED_OP_SB:
		return op_send(ex, KIND_B, op->leg, op->micro, peer, err);
	case DP_SCHED_OP_WAIT:
		return op_wait(ex, err);
	default:
		return dp_err_set(err, EPROTO, "exec: unknown op kind %d", op->kind);
	}
}

/* DualPipe: both copies of each stage get g(leg 0 copy) + g(leg 1 copy), in
 * that order, so the two copies stay bit-identical after Adam. */
static int reduce_copies(struct dp_exec *ex, struct dp_err *err)
{
	struct dp_model_flat f0, f1;
	int peer = ex->pbase + (ex->cfg.pp - 1 - ex->prank) * ex->ep + ex->erank, rc;
	struct msg_hdr h = { .magic = MSG_MAGIC, .kind = KIND_G };
	float *peer0 = NULL, *peer1 = NULL;
	size_t b0, b1;

	dp_model_stage_flat(ex->ch[0].st, &f0);
	dp_model_stage_flat(ex->ch[1].st, &f1);
	b0 = f0.n * sizeof(float);
	b1 = f1.n * sizeof(float);
	for (int leg = 0; leg < 2; leg++) {
		const struct dp_model_flat *f = leg ? &f1 : &f0;
		float *copy = malloc(f->n * sizeof(float) + 1);

		if (!copy)
			return dp_err_set(err, ENOMEM, "exec: out of memory");
		memcpy(copy, f->g, f->n * sizeof(float));
		h.leg = (uint8_t)leg;
		h.step = ex->step;
		h.bytes = f->n * sizeof(float);
		rc = sender_post(&ex->snd[peer], &h, copy, err);
		if (rc)
			return rc;
	}
	/* the peer's leg 0 copy is our leg 1 stage and vice versa */
	peer0 = calloc(1, b1 + 1);
	peer1 = calloc(1, b0 + 1);
	if (!peer0 || !peer1) {
		rc = dp_err_set(err, ENOMEM, "exec: out of memory");
		goto out;
	}
	rc = recv_msg(ex, peer, KIND_G, 0, 0, peer0, b1, err);
	if (!rc)
		rc = recv_msg(ex, peer, KIND_G, 1, 0, peer1, b0, err);
	if (rc)
		goto out;
	for (size_t i = 0; i < f0.n; i++)
		f0.g[i] = f0.g[i] + peer1[i];
	for (size_t i = 0; i < f1.n; i++)
		f1.g[i] = peer0[i] + f1.g[i];
	/* device stages: the sums go back to the device */
	rc = dp_model_stage_flat_commit(ex->ch[0].st, err);
	if (!rc)
		rc = dp_model_stage_flat_commit(ex->ch[1].st, err);
out:
	free(peer0);
	free(peer1);
	return rc;
}

/* Gradient elements of chunk @c summed over the EP group: every tensor but
 * the routed experts, or with @experts (an EPLB placement: an expert's
 * rows were spread over the ranks holding its replicas) every tensor.
 * Packs them into @buf (NULL: count only) or, with @back, unpacks @buf
 * into the gradients.  Returns the count. */
static size_t replicated(struct dp_model_stage *st, float *buf, int back, int experts)
{
	size_t n = 0;

	for (int i = 0; i < dp_model_stage_ntensors(st); i++) {
		struct dp_model_tensor t;

		if (dp_model_stage_tensor(st, i, &t) || (t.expert >= 0 && !experts))
			continue;
		if (buf && back)
			memcpy(t.g, buf + n, t.n * sizeof(float));
		else if (buf)
			memcpy(buf + n, t.g, t.n * sizeof(float));
		n += t.n;
	}
	return n;
}

/* Shard @k of @count of @n floats: [*off, *off + *len), the first n %
 * count shards one float longer. */
static void shard_of(size_t n, int count, int k, size_t *off, size_t *len)
{
	const size_t q = n / (size_t)count, r = n % (size_t)count, kk = (size_t)k;

	*off = kk * q + (kk < r ? kk : r);
	*len = q + (kk < r);
}

/* Queue @bytes at @src for global rank @peer as message (@kind, leg @c,
 * micro @phase) of this step (copied: the caller's buffer stays its). */
static int post_bytes(struct dp_exec *ex, int peer, int kind, int c, int phase, const void *src,
		      size_t bytes, struct dp_err *err)
{
	struct msg_hdr h = {
		.magic = MSG_MAGIC, .kind = (uint8_t)kind, .leg = (uint8_t)c, .micro = phase
	};
	void *copy = malloc(bytes + 1);

	if (!copy)
		return dp_err_set(err, ENOMEM, "exec: out of memory");
	if (bytes)
		memcpy(copy, src, bytes);
	h.step = ex->step;
	h.bytes = bytes;
	return sender_post(&ex->snd[peer], &h, copy, err);
}

static int post_floats(struct dp_exec *ex, int peer, int kind, int c, int phase, const float *src,
		       size_t len, struct dp_err *err)
{
	return post_bytes(ex, peer, kind, c, phase, src, len * sizeof(float), err);
}

/* Sum @buf[c] (@n[c] floats, c < nch) over @count ranks, global rank
 * @base + j * @stride for j = 0..count-1 (this rank is j = @me), into
 * @buf on every one of them, as a reduce-scatter then an all-gather: rank
 * j owns shard j (shard_of) and gets that shard of every rank (micro 0),
 * adds them in j order (0 + 1 + 2 ...), and sends the sum to every rank
 * (micro 1).  Every element is the same sum in the same order wherever it
 * is computed, so all ranks get the same bits (and the bits of summing
 * whole vectors in j order); each rank sends about 2 n (count - 1) / count
 * floats instead of n (count - 1), and adds n instead of n count.  All of
 * a phase's sends are queued before its first receive, and each link
 * carries (scatter c0, c1, gather c0, c1) in the order they are read, so
 * nothing waits on socket buffers.  Messages are @kind, leg c. */
static int sum_over(struct dp_exec *ex, int kind, int base, int stride, int count, int me,
		    float *const *buf, const size_t *n, struct dp_err *err)
{
	float *acc = NULL, *in = NULL;
	size_t off, len;
	int rc = 0;

	for (int c = 0; c < ex->nch && !rc; c++)
		for (int j = 0; j < count && !rc; j++) {
			shard_of(n[c], count, j, &off, &len);
			if (j != me)
				rc = post_floats(ex, base + j * stride, kind, c, 0, buf[c] + off,
						 len, err);
		}
	for (int c = 0; c < ex->nch && !rc; c++) {
		shard_of(n[c], count, me, &off, &len);
		free(acc);
		free(in);
		acc = malloc(len * sizeof(float) + 1);
		in = malloc(len * sizeof(float) + 1);
		if (!acc || !in) {
			rc = dp_err_set(err, ENOMEM, "exec: out of memory");
			break;
		}
		for (int j = 0; j < count && !rc; j++) {
			const float *src = buf[c] + off;

			if (j != me) {
				rc = recv_msg(ex, base + j * stride, kind, c, 0, in,
					      len * sizeof(float), err);
				src = in;
			}
			if (rc)
				break;
			if (j == 0)
				memcpy(acc, src, len * sizeof(float));
			else
				for (size_t i = 0; i < len; i++)
					acc[i] = acc[i] + src[i];
		}
		if (rc)
			break;
		memcpy(buf[c] + off, acc, len * sizeof(float));
		for (int j = 0; j < count && !rc; j++)
			if (j != me)
				rc = post_floats(ex, base + j * stride, kind, c, 1, acc, len, err);
	}
	for (int c = 0; c < ex->nch && !rc; c++)
		for (int j = 0; j < count && !rc; j++) {
			shard_of(n[c], count, j, &off, &len);
			if (j != me)
				rc = recv_msg(ex, base + j * stride, kind, c, 1, buf[c] + off,
					      len * sizeof(float), err);
		}
	free(acc);
	free(in);
	return rc;
}

/* EP all-reduce: each chunk's replicated gradients (with an EPLB placement
 * the routed experts too: every rank ends with every expert's whole
 * gradient) become the sum over the EP ranks of the group, in EP rank
 * order, so the replicas stay bit-identical. */
static int reduce_ep(struct dp_exec *ex, struct dp_err *err)
{
	float *mine[2] = { NULL, NULL };
	size_t n[2] = { 0, 0 };
	int rc = 0;

	for (int c = 0; c < ex->nch && !rc; c++) {
		n[c] = replicated(ex->ch[c].st, NULL, 0, ex->place);
		mine[c] = malloc(n[c] * sizeof(float) + 1);
		if (!mine[c])
			rc = dp_err_set(err, ENOMEM, "exec: out of memory");
		else
			(void)replicated(ex->ch[c].st, mine[c], 0, ex->place);
	}
	if (!rc)
		rc = sum_over(ex, KIND_R, ex->pbase + ex->prank * ex->ep, 1, ex->ep, ex->erank,
			      mine, n, err);
	for (int c = 0; c < ex->nch && !rc; c++) {
		(void)replicated(ex->ch[c].st, mine[c], 1, ex->place);
		/* replicated() wrote the host mirror of a device stage */
		rc = dp_model_stage_flat_commit(ex->ch[c].st, err);
	}
	free(mine[0]);
	free(mine[1]);
	return rc;
}

/* DP all-reduce: every gradient of each chunk (routed experts included:
 * the DP peers hold the same experts) summed over the replicas, replica
 * 0 + 1 + ..., the same bits on every replica, so they stay identical
 * after Adam. */
static int reduce_dp(struct dp_exec *ex, struct dp_err *err)
{
	float *g[2] = { NULL, NULL };
	size_t n[2] = { 0, 0 };

	for (int c = 0; c < ex->nch; c++) {
		struct dp_model_flat f;

		dp_model_stage_flat(ex->ch[c].st, &f);
		g[c] = f.g;
		n[c] = f.n;
	}
	int rc = sum_over(ex, KIND_D, ex->prank * ex->ep + ex->erank, ex->cfg.pp * ex->ep, ex->dp,
			  ex->drank, g, n, err);

	/* the sums went into the host mirrors of device stages */
	for (int c = 0; c < ex->nch && !rc; c++)
		rc = dp_model_stage_flat_commit(ex->ch[c].st, err);
	return rc;
}

/* Rebalancing: add @v ([L][E] routed rows) of the @n global ranks @peers
 * (this rank left out) to @v on every one of them, as message (KIND_C, leg
 * @phase).  Integer sums: the same result in any order. */
static int sum_rows(struct dp_exec *ex, const int *peers, int n, int phase, int64_t *v,
		    struct dp_err *err)
{
	const size_t LE = (size_t)ex->cfg.model.layers * (size_t)ex->cfg.model.experts;
	int64_t *in = calloc(LE + 1, sizeof(int64_t));
	int rc = 0;

	if (!in)
		return dp_err_set(err, ENOMEM, "exec: out of memory");
	for (int i = 0; i < n && !rc; i++)
		rc = post_bytes(ex, peers[i], KIND_C, phase, 0, v, LE * sizeof(int64_t), err);
	for (int i = 0; i < n && !rc; i++) {
		rc = recv_msg(ex, peers[i], KIND_C, phase, 0, in, LE * sizeof(int64_t), err);
		for (size_t k = 0; k < LE && !rc; k++)
			v[k] += in[k];
	}
	free(in);
	return rc;
}

/* Rebalancing, after a step's gradient sums: this step's routed rows
 * (ex->cur, this rank's micro-batches) summed over the DualPipe mirror
 * (the other copy of this rank's stages ran the other leg), the EP group
 * and the dp replicas, so every rank holding a layer gets the rows of all
 * the step's micro-batches there, and added to the window. */
static int count_step(struct dp_exec *ex, struct dp_err *err)
{
	const int pp = ex->cfg.pp, ep = ex->ep;
	const size_t LE = (size_t)ex->cfg.model.layers * (size_t)ex->cfg.model.experts;
	int *peers = malloc((size_t)(ep > ex->dp ? ep : ex->dp) * sizeof(int)), n = 0, rc = 0;

	if (!peers)
		return dp_err_set(err, ENOMEM, "exec: out of memory");
	if (ex->cfg.algo == DP_SCHED_DUALPIPE) {
		peers[0] = ex->pbase + (pp - 1 - ex->prank) * ep + ex->erank;
		if (peers[0] != ex->cfg.rank)
			rc = sum_rows(ex, peers, 1, 0, ex->cur, err);
	}
	for (int j = 0; j < ep && !rc; j++)
		if (j != ex->erank)
			peers[n++] = ex->pbase + ex->prank * ep + j;
	if (!rc)
		rc = sum_rows(ex, peers, n, 1, ex->cur, err);
	n = 0;
	for (int d = 0; d < ex->dp && !rc; d++)
		if (d != ex->drank)
			peers[n++] = (d * pp + ex->prank) * ep + ex->erank;
	if (!rc)
		rc = sum_rows(ex, peers, n, 2, ex->cur, err);
	free(peers);
	if (rc)
		return rc;
	for (size_t k = 0; k < LE; k++) /* dp_exec_step clears cur before the next step */
		ex->win[k] += ex->cur[k];
	ex->rb.window_steps++;
	return 0;
}

/* Is model layer @l in one of this rank's chunks? */
static int holds_layer(const struct dp_exec *ex, int l)
{
	for (int c = 0; c < ex->nch; c++) {
		const int first = dp_model_stage_first(ex->ch[c].st);

		if (l >= first && l < first + dp_model_stage_count(ex->ch[c].st))
			return 1;
	}
	return 0;
}

/* The most rows the window's rows put on one EP rank in one layer of this
 * rank, with the current placement: replica i of expert e's cnt takes
 * n / cnt rows, one more if i < n % cnt (route_slots). */
static long busiest(const struct dp_exec *ex)
{
	const int L = ex->cfg.model.layers, E = ex->cfg.model.experts;
	long most = 0;

	for (int l = 0; l < L; l++) {
		if (!holds_layer(ex, l))
			continue;
		for (int j = 0; j < ex->ep; j++) {
			long rows = 0;

			for (int k = 0; k < ex->nslot; k++) {
				const int s = j * ex->nslot + k, e = ex->p2l[(size_t)l * ex->R + s];
				const size_t le = (size_t)l * (size_t)E + (size_t)e;
				const int64_t n = ex->win[le], cnt = ex->lcnt[le];
				int i = 0;

				while (i < cnt && ex->l2p[le * (size_t)ex->xw + (size_t)i] != s)
					i++;
				rows += (long)(n / cnt + (i < n % cnt));
			}
			if (rows > most)
				most = rows;
		}
	}
	return most;
}

/* Make @load the loads of the placement and rebuild it (EPLB, then the
 * local tables); on failure the old loads and placement stay. */
static int place_from(struct dp_exec *ex, const float *load, struct dp_err *err)
{
	const size_t LE = (size_t)ex->cfg.model.layers * (size_t)ex->cfg.model.experts;
	float *old = malloc(LE * sizeof(float) + 1);
	int rc;

	if (!old)
		return dp_err_set(err, ENOMEM, "exec: out of memory");
	memcpy(old, ex->load, LE * sizeof(float));
	memmove(ex->load, load, LE * sizeof(float));
	rc = eplb_placement(ex, err);
	if (rc)
		memcpy(ex->load, old, LE * sizeof(float));
	else
		local_tables(ex);
	free(old);
	return rc;
}

/* Re-place from the window: this rank's layers get the window's rows as
 * loads (the others keep theirs: nobody here routes them), EPLB builds
 * the new placement (the same on every rank holding a layer: they all
 * have the same rows), and the window starts again.  Between steps:
 * no plan of the old placement is alive. */
static int replace_experts(struct dp_exec *ex, struct dp_err *err)
{
	const int L = ex->cfg.model.layers, E = ex->cfg.model.experts;
	const size_t LE = (size_t)L * (size_t)E;
	float *load = malloc(LE * sizeof(float) + 1);
	long before = busiest(ex);
	int rc;

	if (!load)
		return dp_err_set(err, ENOMEM, "exec: out of memory");
	memcpy(load, ex->load, LE * sizeof(float));
	for (int l = 0; l < L; l++) {
		if (!holds_layer(ex, l))
			continue;
		for (int e = 0; e < E; e++)
			load[(size_t)l * E + e] = (float)ex->win[(size_t)l * E + e];
	}
	rc = place_from(ex, load, err);
	free(load);
	if (rc)
		return rc;
	ex->rb.count++;
	ex->rb.step = ex->step + 1;
	ex->rb.window = ex->rb.window_steps;
	ex->rb.busiest_before = before;
	ex->rb.busiest_after = busiest(ex);
	memset(ex->win, 0, LE * sizeof(int64_t));
	ex->rb.window_steps = 0;
	return 0;
}

int dp_exec_step(struct dp_exec *ex, long step, double *loss, struct dp_err *err)
{
	const struct dp_sched_op *ops;
	size_t nops, nbox = (size_t)4 * ex->legs * ex->mpl;
	int rc = 0;

	ex->step = step;
	ex->loss = 0;
	ex->peak = ex->nlive;
	ex->nposts = 0;
	ex->ntl = 0;
	ex->tl_t0 = mono_s();
	for (int i = 0; i < ex->nch; i++)
		dp_model_stage_zero_grad(ex->ch[i].st);
	if (ex->rebal)
		memset(ex->cur, 0,
		       (size_t)ex->cfg.model.layers * (size_t)ex->cfg.model.experts *
			       sizeof(int64_t));
	ops = dp_sched_ops(ex->sched, ex->prank, &nops);
	for (size_t i = 0; i < nops && !rc; i++) {
		int compute = ops[i].kind <= DP_SCHED_OP_FB;
		double t = compute ? mono_s() : 0;

		rc = run_op(ex, &ops[i], err);
		if (compute)
			ex->tl[ex->ntl++] = (struct dp_exec_op_time){ .op = ops[i],
								      .start = t,
								      .end = mono_s() };
		if (rc) {
			char s[64];

			(void)dp_sched_op_str(&ops[i], s, sizeof(s));
			return dp_err_prefix(err, "step %ld op %zu '%s'", step, i, s);
		}
	}
	if (ex->nposts)
		return dp_err_set(err, EPROTO, "exec: receives posted but never waited for");
	for (size_t i = 0; i < nbox; i++)
		if (ex->box[i])
			return dp_err_set(err, EPROTO, "exec: rank %d: a tensor was left unused",
					  ex->cfg.rank);
	if (ex->nlive)
		return dp_err_set(err, EPROTO, "exec: rank %d: %d activations left at step end",
				  ex->cfg.rank, ex->nlive);
	if (ex->cfg.algo == DP_SCHED_DUALPIPE) {
		rc = reduce_copies(ex, err);
		if (rc)
			return rc;
	}
	if (ex->ep > 1) {
		rc = reduce_ep(ex, err);
		if (rc)
			return rc;
	}
	if (ex->dp > 1) {
		rc = reduce_dp(ex, err);
		if (rc)
			return rc;
	}
	if (ex->rebal) {
		rc = count_step(ex, err);
		if (!rc && (step + 1) % ex->cfg.rebalance_every == 0)
			rc = replace_experts(ex, err);
		if (rc)
			return dp_err_prefix(err, "step %ld: rebalancing", step);
	}
	for (int i = 0; i < ex->nranks; i++) {
		rc = sender_flush(&ex->snd[i], err);
		if (rc)
			return rc;
	}
	if (loss)
		*loss = ex->loss;
	ex->tl_t1 = mono_s();
	return 0;
}

const struct dp_exec_op_time *dp_exec_timeline(const struct dp_exec *ex, size_t *n, double *t0,
					       double *t1)
{
	*n = ex->ntl;
	if (t0)
		*t0 = ex->tl_t0;
	if (t1)
		*t1 = ex->tl_t1;
	return ex->tl;
}

void dp_exec_optimizer_step(struct dp_exec *ex)
{
	for (int i = 0; i < ex->nch; i++)
		dp_model_stage_step(ex->ch[i].st);
}

int dp_exec_nchunks(const struct dp_exec *ex)
{
	return ex->nch;
}

struct dp_model_stage *dp_exec_chunk(struct dp_exec *ex, int i, int *stage)
{
	if (i < 0 || i >= ex->nch)
		return NULL;
	if (stage)
		*stage = ex->ch[i].stage;
	return ex->ch[i].st;
}

int dp_exec_nstages(const struct dp_exec *ex)
{
	return ex->nstages;
}

int dp_exec_peak_live(const struct dp_exec *ex)
{
	return ex->peak;
}

const struct dp_sched *dp_exec_sched(const struct dp_exec *ex)
{
	return ex->sched;
}

void dp_exec_dp_coords(const struct dp_exec *ex, int *dp_rank, int *dp)
{
	if (dp_rank)
		*dp_rank = ex->drank;
	if (dp)
		*dp = ex->dp;
}

void dp_exec_coords(const struct dp_exec *ex, int *pp_rank, int *ep_rank, int *ep)
{
	if (pp_rank)
		*pp_rank = ex->prank;
	if (ep_rank)
		*ep_rank = ex->erank;
	if (ep)
		*ep = ex->ep;
}

int dp_exec_owns_expert(const struct dp_exec *ex, int e)
{
	return ex->place || dp_model_expert_owner(&ex->cfg.model, ex->ep, e) == ex->erank;
}

const int32_t *dp_exec_placement(const struct dp_exec *ex, int *slots)
{
	*slots = ex->R;
	return ex->place ? ex->p2l : NULL;
}

int dp_exec_slot_rows(const struct dp_exec *ex, int layer, long *rows)
{
	if (layer < 0 || layer >= ex->cfg.model.layers)
		return -EINVAL;
	memcpy(rows, ex->slot_rows + (size_t)layer * ex->R, (size_t)ex->R * sizeof(long));
	return 0;
}

int dp_exec_rebalance_info(const struct dp_exec *ex, struct dp_exec_rebalance *out,
			   struct dp_err *err)
{
	if (!ex->rebal)
		return dp_err_set(err, EINVAL, "exec: this executor does not rebalance");
	*out = ex->rb;
	out->load = ex->load;
	out->rows = ex->win;
	return 0;
}

int dp_exec_rebalance_note(const struct dp_exec *ex, long step, char *buf, size_t size)
{
	if (!ex->rebal || ex->rb.step != step + 1 || !size)
		return 0;
	(void)snprintf(buf, size,
		       "step %ld: EPLB re-placed from the last %ld step%s' loads; busiest "
		       "rank-layer %ld -> %ld rows",
		       ex->rb.step, ex->rb.window, ex->rb.window == 1 ? "" : "s",
		       ex->rb.busiest_before, ex->rb.busiest_after);
	return 1;
}

int dp_exec_rebalance_restore(struct dp_exec *ex, const float *load, const int64_t *rows,
			      long window_steps, long count, struct dp_err *err)
{
	const size_t LE = (size_t)ex->cfg.model.layers * (size_t)ex->cfg.model.experts;
	int rc;

	if (!ex->rebal)
		return dp_err_set(err, EINVAL, "exec: this executor does not rebalance");
	if (window_steps < 0 || count < 0)
		return dp_err_set(err, EINVAL, "exec: bad rebalancing state");
	for (size_t k = 0; k < LE; k++)
		if (rows[k] < 0)
			return dp_err_set(err, EINVAL, "exec: bad rebalancing state");
	rc = place_from(ex, load, err);
	if (rc)
		return rc;
	memcpy(ex->win, rows, LE * sizeof(int64_t));
	ex->rb.window_steps = window_steps;
	ex->rb.count = count;
	return 0;
}

void dp_exec_times(const struct dp_exec *ex, struct dp_exec_times *out)
{
	*out = ex->times;
	out->n_dev_exchanges = ex->ct.ndev;
}
