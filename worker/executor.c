/* worker/executor.c - one pipeline rank running its schedule on the CPU
 * model (PP only).  The schedule is built with comm tokens: SF/SB hand a
 * computed tensor to the peer's sender thread at once (asynchronous send),
 * RF/RB are queued and WAIT receives them in posting order, checking each
 * header against the post.  Tensors in flight live in an inbox/outbox table
 * indexed by (kind, leg, micro-batch), so a missing or duplicate tensor is
 * an error instead of a silent mixup. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "worker/dp_exec.h"

#define MSG_MAGIC 0x44505050u /* "DPPP" */

enum { KIND_F = 0, KIND_B = 1, KIND_G = 2 };

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
	int nch;
	struct chunk ch[2];
	struct dp_pp_link **links;  /* borrowed */
	struct sender *snd;	    /* [pp] */
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
	return kind == KIND_F ? "F" : kind == KIND_B ? "B" : "G";
}

static int new_chunk(struct dp_exec *ex, int stage, struct chunk *c, struct dp_err *err)
{
	int rc = dp_model_stage_new_split(&ex->cfg.model, ex->nstages, stage, &c->st, err);

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

void dp_exec_free(struct dp_exec *ex)
{
	size_t nbox;

	if (!ex)
		return;
	if (ex->snd) {
		for (int i = 0; i < ex->cfg.pp; i++)
			sender_stop(&ex->snd[i]);
		free(ex->snd);
	}
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
	for (int i = 0; i < 2; i++) {
		for (int j = 0; j < ex->ch[i].nfree; j++)
			dp_model_ctx_free(ex->ch[i].pool[j]);
		free(ex->ch[i].pool);
		dp_model_stage_free(ex->ch[i].st);
	}
	free(ex->posts);
	free(ex->tokens);
	free(ex->targets);
	free(ex->links);
	free(ex->tl);
	dp_sched_free(ex->sched);
	free(ex);
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
	int rc, r = cfg->rank, pp = cfg->pp;

	if (pp < 1 || r < 0 || r >= pp)
		return dp_err_set(err, EINVAL, "exec: rank %d out of range for pp %d", r, pp);
	ex = calloc(1, sizeof(*ex));
	if (!ex)
		return dp_err_set(err, ENOMEM, "exec: out of memory");
	ex->cfg = *cfg;
	ex->cfg.model.micro_batches = cfg->micro;
	rc = dp_model_cfg_check(&ex->cfg.model, err);
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
	ex->links = calloc((size_t)pp, sizeof(struct dp_pp_link *));
	ex->snd = calloc((size_t)pp, sizeof(*ex->snd));
	ex->box = calloc((size_t)4 * ex->legs * ex->mpl, sizeof(float *));
	ex->live = calloc((size_t)ex->legs * ex->mpl, sizeof(struct dp_model_ctx *));
	ex->tokens = calloc((size_t)ex->T, sizeof(*ex->tokens));
	ex->targets = calloc((size_t)ex->T, sizeof(*ex->targets));
	(void)dp_sched_ops(ex->sched, r, &nops);
	ex->tl = calloc(nops + 1, sizeof(*ex->tl));
	if (!ex->links || !ex->snd || !ex->box || !ex->live || !ex->tokens || !ex->targets ||
	    !ex->tl) {
		rc = dp_err_set(err, ENOMEM, "exec: out of memory");
		goto fail;
	}
	rc = new_chunk(ex, r, &ex->ch[0], err);
	if (!rc && ex->nch == 2)
		rc = new_chunk(ex, cfg->algo == DP_SCHED_DUALPIPE ? pp - 1 - r : 2 * pp - 1 - r,
			       &ex->ch[1], err);
	if (rc)
		goto fail;
	/* the peers this rank talks to: the schedule's comm tokens, plus the
	 * DualPipe mirror rank for the gradient exchange */
	ops = dp_sched_ops(ex->sched, r, &nops);
	for (size_t i = 0; i <= nops; i++) {
		int peer =
			i < nops ? ops[i].peer : (cfg->algo == DP_SCHED_DUALPIPE ? pp - 1 - r : -1);

		if (peer < 0 || peer == r || ex->snd[peer].started)
			continue;
		if (peer >= pp || !links || !links[peer]) {
			rc = dp_err_set(err, EINVAL, "exec: rank %d needs a link to rank %d", r,
					peer);
			goto fail;
		}
		ex->links[peer] = links[peer];
		rc = sender_start(&ex->snd[peer], links[peer], err);
		if (rc)
			goto fail;
	}
	*out = ex;
	return 0;
fail:
	dp_exec_free(ex);
	return rc;
}

static int global_mb(const struct dp_exec *ex, int leg, int m)
{
	return ex->cfg.algo == DP_SCHED_DUALPIPE ? leg * ex->mpl + m : m;
}

/* DualPipeV's last rank hands leg 0's output to its own leg 1 chunk. */
static int local_handover(const struct dp_exec *ex)
{
	return ex->cfg.algo == DP_SCHED_DUALPIPEV && ex->cfg.rank == ex->cfg.pp - 1;
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

static int op_forward(struct dp_exec *ex, int leg, int m, struct dp_err *err)
{
	struct chunk *c;
	struct dp_model_io io = { 0 };
	struct dp_model_ctx *ctx = NULL;
	float *x = NULL, *y = NULL;
	double loss = 0;
	int rc = check_leg(ex, leg, m, err);

	if (rc)
		return rc;
	c = &ex->ch[leg];
	if (ex->live[leg * ex->mpl + m])
		return dp_err_set(err, EPROTO, "exec: F%d %d twice", leg, m);
	if (c->embed || c->head)
		dp_model_batch(&ex->cfg.model, ex->step, global_mb(ex, leg, m), ex->tokens,
			       ex->targets);
	if (c->embed) {
		io.tokens = ex->tokens;
	} else {
		rc = take_box(ex, 0, KIND_F, leg, m, &x, err);
		if (rc)
			return rc;
		io.x = x;
	}
	if (c->head)
		io.targets = ex->targets;
	else if (!(y = tensor_alloc(ex)))
		rc = dp_err_set(err, ENOMEM, "exec: out of memory");
	if (!rc)
		rc = ctx_get(ex, c, &ctx, err);
	if (!rc) {
		rc = dp_model_forward(c->st, ctx, &io, y, &loss, err);
		if (rc)
			ctx_put(ex, c, ctx);
	}
	free(x);
	if (rc) {
		free(y);
		return rc;
	}
	ex->live[leg * ex->mpl + m] = ctx;
	if (c->head) {
		ex->loss += loss;
		return 0;
	}
	if (leg == 0 && local_handover(ex))
		return put_box(ex, 0, KIND_F, 1, m, y, err);
	return put_box(ex, 1, KIND_F, leg, m, y, err);
}

/* mode: 0 full backward, 1 backward for input (I) */
static int op_backward(struct dp_exec *ex, int leg, int m, int mode, struct dp_err *err)
{
	struct chunk *c;
	struct dp_model_ctx *ctx;
	float *dy = NULL, *dx = NULL;
	int rc = check_leg(ex, leg, m, err);

	if (rc)
		return rc;
	c = &ex->ch[leg];
	ctx = ex->live[leg * ex->mpl + m];
	if (!ctx)
		return dp_err_set(err, EPROTO, "exec: backward of %d %d before its F", leg, m);
	if (!c->head) {
		rc = take_box(ex, 0, KIND_B, leg, m, &dy, err);
		if (rc)
			return rc;
	}
	if (!c->embed && !(dx = tensor_alloc(ex)))
		rc = dp_err_set(err, ENOMEM, "exec: out of memory");
	if (!rc)
		rc = mode ? dp_model_backward_input(c->st, ctx, dy, dx, err)
			  : dp_model_backward(c->st, ctx, dy, dx, err);
	free(dy);
	if (rc) {
		free(dx);
		return rc;
	}
	if (!mode) {
		ex->live[leg * ex->mpl + m] = NULL;
		ctx_put(ex, c, ctx);
	}
	if (c->embed)
		return 0;
	if (leg == 1 && local_handover(ex))
		return put_box(ex, 0, KIND_B, 0, m, dx, err);
	return put_box(ex, 1, KIND_B, leg, m, dx, err);
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
	if (peer < 0 || peer >= ex->cfg.pp || !ex->snd[peer].started)
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
	if (peer < 0 || peer >= ex->cfg.pp || !ex->links[peer])
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

static int run_op(struct dp_exec *ex, const struct dp_sched_op *op, struct dp_err *err)
{
	int rc;

	switch (op->kind) {
	case DP_SCHED_OP_F:
		return op_forward(ex, op->leg, op->micro, err);
	case DP_SCHED_OP_B:
		return op_backward(ex, op->leg, op->micro, 0, err);
	case DP_SCHED_OP_I:
		return op_backward(ex, op->leg, op->micro, 1, err);
	case DP_SCHED_OP_W:
		return op_weight(ex, op->leg, op->micro, err);
	case DP_SCHED_OP_FB:
		/* the sends of the backward's neighbours progress on the
		 * sender threads while this thread computes */
		rc = op_forward(ex, op->leg, op->micro, err);
		return rc ? rc : op_backward(ex, op->leg2, op->micro2, 0, err);
	case DP_SCHED_OP_RF:
		return op_post_recv(ex, KIND_F, op->leg, op->micro, op->peer, err);
	case DP_SCHED_OP_RB:
		return op_post_recv(ex, KIND_B, op->leg, op->micro, op->peer, err);
	case DP_SCHED_OP_SF:
		return op_send(ex, KIND_F, op->leg, op->micro, op->peer, err);
	case DP_SCHED_OP_SB:
		return op_send(ex, KIND_B, op->leg, op->micro, op->peer, err);
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
	int peer = ex->cfg.pp - 1 - ex->cfg.rank, rc;
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
out:
	free(peer0);
	free(peer1);
	return rc;
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
	ops = dp_sched_ops(ex->sched, ex->cfg.rank, &nops);
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
	for (int i = 0; i < ex->cfg.pp; i++) {
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
