/* sched/verify.c - check that any schedule is complete, ordered, runnable and,
 * with comm tokens, that its messages match without deadlock.
 *
 * Three passes:
 *  1. per rank, in program order: legal ops; each backward after its forward;
 *     W's pop a FIFO of the I's; then every (rank, leg, micro) has exactly one
 *     forward and one backward.
 *  2. the compute dependencies across ranks are satisfiable (the simulator
 *     with unit times must finish).
 *  3. with comm tokens: the programs are run with synchronous batch commits.
 *     Posts accumulate; a WAIT launches them and blocks until every partner
 *     has been launched by the other rank.  Messages on a directed link are
 *     matched by posting order and must agree in kind, leg and micro-batch.
 *     Every input must be received by a completed WAIT before the compute op
 *     that uses it, every output sent after it is computed.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sched/sched_int.h"

struct vmsg {
	unsigned char kind, leg, launched;
	int micro;
};

struct vlink {
	int src, dst;
	struct vmsg *sends, *recvs;
	size_t ns, nr, cs, cr;
};

struct vpost {
	int link, is_send;
	size_t idx;
};

struct vrank {
	size_t pc;
	struct vpost *batch;
	size_t nbatch, cbatch;
	int launched; /* the WAIT at pc has launched the batch */
	int *links;   /* indices of links this rank sends or receives on */
	size_t nlinks, clinks;
};

struct vstate {
	const struct dp_sched *s;
	unsigned char *fdone, *bdone, *rfdone, *rbdone;
	struct vlink *links;
	size_t nlinks, clinks;
	struct vrank *ranks;
};

static size_t cell(const struct dp_sched *s, int rank, int leg, int m)
{
	return ((size_t)rank * (size_t)s->legs + (size_t)leg) * (size_t)s->leg_micro + (size_t)m;
}

static int op_err(struct dp_err *err, int rank, size_t i, const struct dp_sched_op *op,
		  const char *what)
{
	char tok[96];

	(void)dp_sched_op_str(op, tok, sizeof(tok));
	return dp_err_set(err, EPROTO, "sched: rank %d op #%zu '%s': %s", rank, i, tok, what);
}

/* The rank next to (rank, leg) along the pipe (dir -1 upstream, +1
 * downstream): -2 if none, the rank (may be @rank itself) otherwise. */
static int neighbour(const struct dp_sched *s, int rank, int leg, int dir)
{
	int pos = sched_pos_of(s, rank, leg) + dir, r2, l2;

	if (pos < 0 || pos >= s->pipe_len)
		return -2;
	sched_chunk_at(s, sched_pipe_of(s, leg), pos, &r2, &l2);
	return r2;
}

static int valid_ref(const struct dp_sched *s, int leg, int m)
{
	return leg >= 0 && leg < s->legs && m >= 0 && m < s->leg_micro;
}

/* ---- pass 1 -------------------------------------------------------------- */

static int check_rank(const struct dp_sched *s, int r, unsigned char *fcnt, unsigned char *bcnt,
		      int *qleg, int *qmicro, struct dp_err *err)
{
	const struct sched_rank *rk = &s->ranks[r];
	size_t head = 0, tail = 0;

	for (size_t i = 0; i < rk->len; i++) {
		const struct dp_sched_op *op = &rk->ops[i];
		int k = op->kind;

		if (k > DP_SCHED_OP_WAIT)
			return op_err(err, r, i, op, "unknown op kind");
		if (k == DP_SCHED_OP_WAIT)
			continue;
		if (!valid_ref(s, op->leg, op->micro) ||
		    (k == DP_SCHED_OP_FB && !valid_ref(s, op->leg2, op->micro2)))
			return op_err(err, r, i, op, "leg or micro-batch out of range");
		if (k >= DP_SCHED_OP_RF) {
			int dir = (k == DP_SCHED_OP_RF || k == DP_SCHED_OP_SB) ? -1 : +1;
			int want = neighbour(s, r, op->leg, dir);

			if (want == r || want < 0 || op->peer != want)
				return op_err(err, r, i, op,
					      "no message goes to or comes from that peer");
			continue;
		}
		if (k == DP_SCHED_OP_F || k == DP_SCHED_OP_FB) {
			size_t c = cell(s, r, op->leg, op->micro);

			if (fcnt[c]++)
				return op_err(err, r, i, op, "second forward of this micro-batch");
		}
		if (k == DP_SCHED_OP_B || k == DP_SCHED_OP_I || k == DP_SCHED_OP_FB) {
			int leg = k == DP_SCHED_OP_FB ? op->leg2 : op->leg;
			int m = k == DP_SCHED_OP_FB ? op->micro2 : op->micro;
			size_t c = cell(s, r, leg, m);

			if (!fcnt[c] || (k == DP_SCHED_OP_FB && leg == op->leg && m == op->micro))
				return op_err(err, r, i, op, "backward before its forward");
			if (bcnt[c]++)
				return op_err(err, r, i, op, "second backward of this micro-batch");
			if (k == DP_SCHED_OP_I) {
				qleg[tail] = leg;
				qmicro[tail++] = m;
			}
		}
		if (k == DP_SCHED_OP_W) {
			if (head == tail)
				return op_err(err, r, i, op, "W with no I waiting for it");
			if (qleg[head] != op->leg || qmicro[head] != op->micro)
				return op_err(err, r, i, op,
					      "W out of FIFO order of the I's (or of a B)");
			head++;
		}
	}
	if (head != tail)
		return dp_err_set(err, EPROTO, "sched: rank %d: I%d %d has no W", r, qleg[head],
				  qmicro[head]);
	for (int leg = 0; leg < s->legs; leg++) {
		for (int m = 0; m < s->leg_micro; m++) {
			size_t c = cell(s, r, leg, m);

			if (!fcnt[c])
				return dp_err_set(
					err, EPROTO,
					"sched: rank %d: no forward of leg %d micro-batch %d", r,
					leg, m);
			if (!bcnt[c])
				return dp_err_set(
					err, EPROTO,
					"sched: rank %d: no backward of leg %d micro-batch %d", r,
					leg, m);
		}
	}
	return 0;
}

static int pass_local(const struct dp_sched *s, struct dp_err *err)
{
	size_t ncell = (size_t)s->cfg.pp * (size_t)s->legs * (size_t)s->leg_micro;
	size_t q = (size_t)s->legs * (size_t)s->leg_micro;
	unsigned char *fcnt = calloc(ncell, 1), *bcnt = calloc(ncell, 1);
	int *qleg = calloc(q, sizeof(int)), *qmicro = calloc(q, sizeof(int));
	int rc = 0;

	if (!fcnt || !bcnt || !qleg || !qmicro) {
		rc = dp_err_set(err, ENOMEM, "sched: out of memory");
		goto out;
	}
	for (int r = 0; r < s->cfg.pp && !rc; r++)
		rc = check_rank(s, r, fcnt, bcnt, qleg, qmicro, err);
out:
	free(fcnt);
	free(bcnt);
	free(qleg);
	free(qmicro);
	return rc;
}

/* ---- pass 3 -------------------------------------------------------------- */

static int add_to(void **arr, size_t *n, size_t *cap, size_t size)
{
	if (*n == *cap) {
		size_t nc = *cap ? *cap * 2 : 8;
		void *p = realloc(*arr, nc * size);

		if (!p)
			return -ENOMEM;
		*arr = p;
		*cap = nc;
	}
	(*n)++;
	return 0;
}

static int find_link(struct vstate *v, int src, int dst)
{
	struct vrank *vr = &v->ranks[src];
	struct vlink *l;

	for (size_t i = 0; i < vr->nlinks; i++)
		if (v->links[vr->links[i]].src == src && v->links[vr->links[i]].dst == dst)
			return vr->links[i];
	if (add_to((void **)&v->links, &v->nlinks, &v->clinks, sizeof(*v->links)))
		return -ENOMEM;
	l = &v->links[v->nlinks - 1];
	memset(l, 0, sizeof(*l));
	l->src = src;
	l->dst = dst;
	if (add_to((void **)&vr->links, &vr->nlinks, &vr->clinks, sizeof(int)))
		return -ENOMEM;
	vr->links[vr->nlinks - 1] = (int)v->nlinks - 1;
	return (int)v->nlinks - 1;
}

static int msgs_match(const struct vmsg *snd, const struct vmsg *rcv)
{
	int want = snd->kind == DP_SCHED_OP_SF ? DP_SCHED_OP_RF : DP_SCHED_OP_RB;

	return rcv->kind == want && rcv->leg == snd->leg && rcv->micro == snd->micro;
}

static int post(struct vstate *v, int r, size_t i, const struct dp_sched_op *op, struct dp_err *err)
{
	const struct dp_sched *s = v->s;
	int is_send = op->kind == DP_SCHED_OP_SF || op->kind == DP_SCHED_OP_SB;
	int li = is_send ? find_link(v, r, op->peer) : find_link(v, op->peer, r);
	struct vrank *vr = &v->ranks[r];
	struct vlink *l;
	struct vmsg *m, *other;
	size_t idx;

	if (li < 0)
		return dp_err_set(err, ENOMEM, "sched: out of memory");
	l = &v->links[li];
	if (op->kind == DP_SCHED_OP_SF && !v->fdone[cell(s, r, op->leg, op->micro)])
		return op_err(err, r, i, op, "sends an output that is not computed yet");
	if (op->kind == DP_SCHED_OP_SB && !v->bdone[cell(s, r, op->leg, op->micro)])
		return op_err(err, r, i, op, "sends a gradient that is not computed yet");
	if (is_send ? add_to((void **)&l->sends, &l->ns, &l->cs, sizeof(struct vmsg))
		    : add_to((void **)&l->recvs, &l->nr, &l->cr, sizeof(struct vmsg)))
		return dp_err_set(err, ENOMEM, "sched: out of memory");
	idx = is_send ? l->ns - 1 : l->nr - 1;
	m = is_send ? &l->sends[idx] : &l->recvs[idx];
	*m = (struct vmsg){ .kind = op->kind, .leg = op->leg, .micro = op->micro };
	other = is_send ? (idx < l->nr ? &l->recvs[idx] : NULL)
			: (idx < l->ns ? &l->sends[idx] : NULL);
	if (other && !(is_send ? msgs_match(m, other) : msgs_match(other, m))) {
		char tok[96];
		struct dp_sched_op o = {
			.kind = other->kind, .leg = other->leg, .micro = other->micro, .peer = r
		};

		(void)dp_sched_op_str(&o, tok, sizeof(tok));
		return dp_err_set(err, EPROTO,
				  "sched: rank %d op #%zu: message %zu between ranks %d and %d is "
				  "matched with '%s' on rank %d (kind, leg or micro-batch differ)",
				  r, i, idx, l->src, l->dst, tok, op->peer);
	}
	if (add_to((void **)&vr->batch, &vr->nbatch, &vr->cbatch, sizeof(*vr->batch)))
		return dp_err_set(err, ENOMEM, "sched: out of memory");
	vr->batch[vr->nbatch - 1] = (struct vpost){ li, is_send, idx };
	return 0;
}

/* 1 if every partner of the batch is launched. */
static int batch_complete(const struct vstate *v, const struct vrank *vr)
{
	for (size_t j = 0; j < vr->nbatch; j++) {
		const struct vpost *p = &vr->batch[j];
		const struct vlink *l = &v->links[p->link];
		size_t n = p->is_send ? l->nr : l->ns;
		const struct vmsg *o = p->is_send ? l->recvs : l->sends;

		if (p->idx >= n || !o[p->idx].launched)
			return 0;
	}
	return 1;
}

/* Is the input of (r, leg, m) there?  dir -1: forward input, +1: gradient. */
static int have_input(const struct vstate *v, int r, int leg, int m, int dir)
{
	const struct dp_sched *s = v->s;
	int nb = neighbour(s, r, leg, dir);
	size_t c = cell(s, r, leg, m);

	if (nb == -2) /* first stage, or the loss: only the own forward is needed */
		return dir < 0 || v->fdone[c];
	if (nb == r) { /* local hand-over (DualPipeV last rank) */
		int pos = sched_pos_of(s, r, leg) + dir, r2, l2;

		sched_chunk_at(s, sched_pipe_of(s, leg), pos, &r2, &l2);
		return dir < 0 ? v->fdone[cell(s, r, l2, m)] : v->bdone[cell(s, r, l2, m)];
	}
	return dir < 0 ? v->rfdone[c] : v->rbdone[c];
}

static int step_rank(struct vstate *v, int r, int *progress, struct dp_err *err)
{
	const struct dp_sched *s = v->s;
	const struct sched_rank *rk = &s->ranks[r];
	struct vrank *vr = &v->ranks[r];
	int rc;

	while (vr->pc < rk->len) {
		const struct dp_sched_op *op = &rk->ops[vr->pc];

		switch (op->kind) {
		case DP_SCHED_OP_RF:
		case DP_SCHED_OP_SF:
		case DP_SCHED_OP_RB:
		case DP_SCHED_OP_SB:
			rc = post(v, r, vr->pc, op, err);
			if (rc)
				return rc;
			break;
		case DP_SCHED_OP_WAIT:
			if (!vr->launched) {
				for (size_t j = 0; j < vr->nbatch; j++) {
					struct vpost *p = &vr->batch[j];
					struct vlink *l = &v->links[p->link];

					(p->is_send ? l->sends : l->recvs)[p->idx].launched = 1;
				}
				vr->launched = 1;
				*progress = 1;
			}
			if (!batch_complete(v, vr))
				return 0;
			for (size_t j = 0; j < vr->nbatch; j++) {
				struct vpost *p = &vr->batch[j];
				struct vmsg *m = &v->links[p->link].recvs[p->idx];

				if (p->is_send)
					continue;
				if (m->kind == DP_SCHED_OP_RF)
					v->rfdone[cell(s, r, m->leg, m->micro)] = 1;
				else
					v->rbdone[cell(s, r, m->leg, m->micro)] = 1;
			}
			vr->nbatch = 0;
			vr->launched = 0;
			break;
		case DP_SCHED_OP_F:
		case DP_SCHED_OP_FB:
			if (!have_input(v, r, op->leg, op->micro, -1))
				return op_err(
					err, r, vr->pc, op,
					"forward input not received (and committed) before use");
			if (op->kind == DP_SCHED_OP_FB &&
			    !have_input(v, r, op->leg2, op->micro2, +1))
				return op_err(err, r, vr->pc, op,
					      "output gradient not received (and committed) before "
					      "use");
			v->fdone[cell(s, r, op->leg, op->micro)] = 1;
			if (op->kind == DP_SCHED_OP_FB)
				v->bdone[cell(s, r, op->leg2, op->micro2)] = 1;
			break;
		case DP_SCHED_OP_B:
		case DP_SCHED_OP_I:
			if (!have_input(v, r, op->leg, op->micro, +1))
				return op_err(err, r, vr->pc, op,
					      "output gradient not received (and committed) before "
					      "use");
			v->bdone[cell(s, r, op->leg, op->micro)] = 1;
			break;
		default:
			break;
		}
		vr->pc++;
		*progress = 1;
	}
	return 0;
}

static int pass_comm(const struct dp_sched *s, struct dp_err *err)
{
	size_t ncell = (size_t)s->cfg.pp * (size_t)s->legs * (size_t)s->leg_micro;
	struct vstate v = { .s = s };
	int pp = s->cfg.pp, rc = 0, progress;

	v.fdone = calloc(ncell, 1);
	v.bdone = calloc(ncell, 1);
	v.rfdone = calloc(ncell, 1);
	v.rbdone = calloc(ncell, 1);
	v.ranks = calloc((size_t)pp, sizeof(*v.ranks));
	if (!v.fdone || !v.bdone || !v.rfdone || !v.rbdone || !v.ranks) {
		rc = dp_err_set(err, ENOMEM, "sched: out of memory");
		goto out;
	}
	do {
		progress = 0;
		for (int r = 0; r < pp && !rc; r++)
			rc = step_rank(&v, r, &progress, err);
	} while (progress && !rc);
	for (int r = 0; r < pp && !rc; r++) {
		const struct vrank *vr = &v.ranks[r];

		if (vr->pc < s->ranks[r].len)
			rc = op_err(err, r, vr->pc, &s->ranks[r].ops[vr->pc],
				    "deadlock: a message of this batch is never posted or launched "
				    "by its peer");
		else if (vr->nbatch)
			rc = dp_err_set(
				err, EPROTO,
				"sched: rank %d ends with %zu posts never committed by a WAIT", r,
				vr->nbatch);
	}
	for (size_t i = 0; i < v.nlinks && !rc; i++) {
		const struct vlink *l = &v.links[i];

		if (l->ns != l->nr)
			rc = dp_err_set(
				err, EPROTO,
				"sched: rank %d sends %zu messages to rank %d, which receives "
				"%zu",
				l->src, l->ns, l->dst, l->nr);
	}
out:
	for (size_t i = 0; i < v.nlinks; i++) {
		free(v.links[i].sends);
		free(v.links[i].recvs);
	}
	free(v.links);
	for (int r = 0; v.ranks && r < pp; r++) {
		free(v.ranks[r].batch);
		free(v.ranks[r].links);
	}
	free(v.ranks);
	free(v.fdone);
	free(v.bdone);
	free(v.rfdone);
	free(v.rbdone);
	return rc;
}

static int has_comm(const struct dp_sched *s)
{
	for (int r = 0; r < s->cfg.pp; r++)
		for (size_t i = 0; i < s->ranks[r].len; i++)
			if (s->ranks[r].ops[i].kind >= DP_SCHED_OP_RF)
				return 1;
	return 0;
}

int dp_sched_verify(const struct dp_sched *s, struct dp_err *err)
{
	static const struct dp_sched_times unit = { .f = 1, .b = 1, .w = 0, .fb = 1 };
	struct dp_sched_sim sim;
	int rc;

	rc = pass_local(s, err);
	if (rc)
		return rc;
	rc = dp_sched_simulate(s, &unit, &sim, err);
	if (rc)
		return rc;
	dp_sched_sim_release(&sim);
	if (s->cfg.comm || has_comm(s))
		return pass_comm(s, err);
	return 0;
}
