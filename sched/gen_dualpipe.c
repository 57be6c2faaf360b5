/* sched/gen_dualpipe.c - DualPipe and DualPipeV op order.
 *
 * Reproduces the order of upstream DualPipe/DualPipeV step() (the eight
 * sections described in ../shared/docs/DUALPIPE.md): each rank's program is
 * replayed with the compute and communication helpers turned into recorders.
 * Upstream works with *local* phases (0 = the near leg); everything stored
 * here is in legs, so every helper maps phase -> leg first.  Whether a post
 * happens is decided from the placement (is the neighbouring chunk of the
 * micro-batch on another rank?), which gives upstream's first/last-stage
 * rules for both variants, including DualPipeV's local hand-over on the last
 * rank.
 */
#include <errno.h>
#include <stdlib.h>

#include "sched/sched_int.h"

struct gen {
	struct dp_sched *s;
	int rank;
	int flip;  /* local phase XOR: 1 on DualPipe ranks >= pp/2 */
	int early; /* DualPipe middle ranks send the near output right after it in step 2 */
	int inner; /* innermost rank: DualPipe middle ranks, DualPipeV last rank */
	int step;
	int pending; /* posts since the last commit */
	int nf[2], nb[2], nsf[2], nsb[2], nrf[2], nrb[2];
	int *wq_leg, *wq_micro; /* FIFO of split backwards waiting for their W */
	size_t wq_head, wq_tail;
	int rc;
};

static void emit(struct gen *g, int kind, int leg, int micro, int leg2, int micro2, int peer)
{
	if (!g->rc)
		g->rc = sched_push(g->s, g->rank, kind, g->step, leg, micro, leg2, micro2, peer);
}

/* The rank holding the neighbouring chunk of this rank's chunk of @leg, in
 * the direction of travel (dir = +1 downstream, -1 upstream); -1 if there is
 * none or it is this rank (no message). */
static int remote_peer(const struct gen *g, int leg, int dir)
{
	const struct dp_sched *s = g->s;
	int pos = sched_pos_of(s, g->rank, leg) + dir;
	int rank, l;

	if (pos < 0 || pos >= s->pipe_len)
		return -1;
	sched_chunk_at(s, sched_pipe_of(s, leg), pos, &rank, &l);
	return rank == g->rank ? -1 : rank;
}

static void post(struct gen *g, int kind, int leg, int *counter, int dir)
{
	int peer = remote_peer(g, leg, dir);

	if (peer < 0)
		return;
	g->pending++;
	if (g->s->cfg.comm)
		emit(g, kind, leg, counter[leg], 0, -1, peer);
	counter[leg]++;
}

static void recv_f(struct gen *g, int phase)
{
	int leg = phase ^ g->flip;

	post(g, DP_SCHED_OP_RF, leg, g->nrf, -1);
}

static void send_f(struct gen *g, int phase)
{
	int leg = phase ^ g->flip;

	post(g, DP_SCHED_OP_SF, leg, g->nsf, +1);
}

static void recv_b(struct gen *g, int phase)
{
	int leg = phase ^ g->flip;

	post(g, DP_SCHED_OP_RB, leg, g->nrb, +1);
}

static void send_b(struct gen *g, int phase)
{
	int leg = phase ^ g->flip;

	post(g, DP_SCHED_OP_SB, leg, g->nsb, -1);
}

static void commit(struct gen *g)
{
	if (!g->pending)
		return;
	g->pending = 0;
	if (g->s->cfg.comm)
		emit(g, DP_SCHED_OP_WAIT, 0, -1, 0, -1, -1);
}

static void forward(struct gen *g, int phase, int recv, int send)
{
	int leg = phase ^ g->flip;

	if (recv)
		recv_f(g, phase);
	commit(g);
	emit(g, DP_SCHED_OP_F, leg, g->nf[leg]++, 0, -1, -1);
	if (send)
		send_f(g, phase);
}

static void backward(struct gen *g, int phase, int zb, int recv, int send)
{
	int leg = phase ^ g->flip;
	int m;

	if (recv)
		recv_b(g, phase);
	commit(g);
	m = g->nb[leg]++;
	if (zb) {
		g->wq_leg[g->wq_tail] = leg;
		g->wq_micro[g->wq_tail] = m;
		g->wq_tail++;
	}
	emit(g, zb ? DP_SCHED_OP_I : DP_SCHED_OP_B, leg, m, 0, -1, -1);
	if (send)
		send_b(g, phase);
}

static void forward_backward(struct gen *g, int phase0, int phase1, int recv0)
{
	int leg0 = phase0 ^ g->flip, leg1 = phase1 ^ g->flip;
	int mf, mb;

	if (recv0)
		recv_f(g, phase0);
	recv_b(g, phase1);
	commit(g);
	mf = g->nf[leg0]++;
	mb = g->nb[leg1]++;
	emit(g, DP_SCHED_OP_FB, leg0, mf, leg1, mb, -1);
	send_f(g, phase0);
	send_b(g, phase1);
}

static void weight(struct gen *g)
{
	commit(g);
	if (g->wq_head == g->wq_tail) { /* cannot happen: the sections balance I and W */
		if (!g->rc)
			g->rc = -EPROTO;
		return;
	}
	emit(g, DP_SCHED_OP_W, g->wq_leg[g->wq_head], g->wq_micro[g->wq_head], 0, -1, -1);
	g->wq_head++;
}

static void run_rank(struct gen *g)
{
	const struct dp_sched *s = g->s;
	int pp = s->cfg.pp;
	int v = s->cfg.algo == DP_SCHED_DUALPIPEV;
	int n = v ? pp : pp / 2;
	int k = v ? g->rank : (g->rank < pp - 1 - g->rank ? g->rank : pp - 1 - g->rank);
	int C = s->leg_micro;
	int o = n - k - 1;
	int zb;

	g->step = 1; /* nF0 */
	for (int i = 0; i < 2 * o; i++)
		forward(g, 0, 1, 1);

	g->step = 2; /* nF0F1: the next near input travels with the far input */
	recv_f(g, 0);
	for (int i = 0; i <= k; i++) {
		forward(g, 0, 0, g->early);
		recv_f(g, 0);
		forward(g, 1, 1, !g->inner || i < k);
		if (!g->early)
			send_f(g, 0);
	}

	g->step = 3; /* nB1W1F1: the W's commit carries the next far input */
	for (int i = 0; i < o; i++) {
		backward(g, 1, 1, 1, 1);
		recv_f(g, 1);
		weight(g);
		forward(g, 1, 0, 1);
	}

	g->step = 4; /* nF0B1F1B0 */
	for (int i = 0; i < C - 2 * n + k + 1; i++) {
		if (i == 0 && g->inner) {
			/* not overlapped; the held-back far output goes out in between */
			forward(g, 0, 0, 0);
			send_f(g, 1);
			backward(g, 1, 0, 1, 0);
			send_f(g, 0);
			send_b(g, 1);
		} else {
			forward_backward(g, 0, 1, i != 0);
		}
		forward_backward(g, 1, 0, 1);
	}

	g->step = 5; /* nB1F1B0 */
	for (int i = 0; i < o; i++) {
		backward(g, 1, 0, 1, 1);
		forward_backward(g, 1, 0, 1);
	}

	g->step = 6; /* nB1B0: the second half of these backwards is split */
	zb = 0;
	for (int i = 0; i <= k; i++) {
		if (i == (k + 1) / 2 && k % 2 == 1)
			zb = 1;
		backward(g, 1, zb, 1, 1);
		if (i == (k + 1) / 2 && k % 2 == 0)
			zb = 1;
		backward(g, 0, zb, 1, 1);
	}

	g->step = 7; /* nWB0 */
	for (int i = 0; i < o; i++) {
		weight(g);
		backward(g, 0, 1, 1, 1);
	}

	g->step = 8; /* nW */
	for (int i = 0; i <= k; i++)
		weight(g);
	if (!g->rc && g->wq_head != g->wq_tail)
		g->rc = -EPROTO;

	g->step = 0; /* final commit */
	commit(g);
}

int sched_gen_dualpipe(struct dp_sched *s, struct dp_err *err)
{
	size_t qcap = 2 * (size_t)s->leg_micro;
	int *wq_leg = calloc(qcap, sizeof(int));
	int *wq_micro = calloc(qcap, sizeof(int));
	int pp = s->cfg.pp;
	int rc = 0;

	if (!wq_leg || !wq_micro) {
		rc = dp_err_set(err, ENOMEM, "sched: out of memory");
		goto out;
	}
	for (int r = 0; r < pp && !rc; r++) {
		struct gen g = {
			.s = s,
			.rank = r,
			.wq_leg = wq_leg,
			.wq_micro = wq_micro,
		};

		if (s->cfg.algo == DP_SCHED_DUALPIPEV) {
			g.inner = r == pp - 1;
		} else {
			g.flip = r >= pp / 2;
			g.inner = r == pp / 2 - 1 || r == pp / 2;
			g.early = g.inner;
		}
		run_rank(&g);
		if (g.rc == -ENOMEM)
			rc = dp_err_set(err, ENOMEM, "sched: out of memory");
		else if (g.rc)
			rc = dp_err_set(err, EPROTO,
					"sched: internal error: rank %d weight queue "
					"out of balance",
					r);
	}
out:
	free(wq_leg);
	free(wq_micro);
	return rc;
}
