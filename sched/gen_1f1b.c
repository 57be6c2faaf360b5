/* sched/gen_1f1b.c - 1F1B and ZB1P (zero-bubble ZB-H1) op order.
 *
 * 1F1B: rank r runs min(pp-1-r, micro) warm-up forwards, then alternates one
 * forward and one full backward, then the remaining backwards.
 *
 * ZB1P: the same order with every backward split into I (input grad, on the
 * critical path) and W (weight grad, FIFO).  Rank r keeps up to r weight
 * grads queued and runs a W as soon as more than r are waiting; the rest are
 * flushed at the end, where rank r's 1F1B cool-down bubble would be.  An
 * activation lives until its W, so rank r holds at most (pp-1-r) + 1 + r = pp
 * activations, the 1F1B peak, and with F = B-W = W the bubble is
 * (pp-1)(F+B-2W) as in the zero-bubble paper (ZB-H1).
 *
 * With comm tokens every compute op posts its receive, commits, computes
 * and posts its send, like upstream's helpers; W commits too.
 */
#include <errno.h>

#include "sched/sched_int.h"

struct gen1 {
	struct dp_sched *s;
	int rank, step, zb, pending, rc;
	int nsf, nrf, nsb, nrb;
	int wq_head, wq_tail; /* queued weight grads are micro-batches wq_head..wq_tail-1 */
};

static void emit(struct gen1 *g, int kind, int micro, int peer)
{
	if (!g->rc)
		g->rc = sched_push(g->s, g->rank, kind, g->step, 0, micro, 0, -1, peer);
}

static void post(struct gen1 *g, int kind, int *counter, int peer)
{
	if (peer < 0 || peer >= g->s->cfg.pp)
		return;
	g->pending++;
	if (g->s->cfg.comm)
		emit(g, kind, *counter, peer);
	(*counter)++;
}

static void commit(struct gen1 *g)
{
	if (!g->pending)
		return;
	g->pending = 0;
	if (g->s->cfg.comm)
		emit(g, DP_SCHED_OP_WAIT, -1, -1);
}

static void forward(struct gen1 *g, int m)
{
	post(g, DP_SCHED_OP_RF, &g->nrf, g->rank - 1);
	commit(g);
	emit(g, DP_SCHED_OP_F, m, -1);
	post(g, DP_SCHED_OP_SF, &g->nsf, g->rank + 1);
}

static void weight(struct gen1 *g)
{
	commit(g);
	emit(g, DP_SCHED_OP_W, g->wq_head++, -1);
}

static void backward(struct gen1 *g, int m)
{
	post(g, DP_SCHED_OP_RB, &g->nrb, g->rank + 1);
	commit(g);
	emit(g, g->zb ? DP_SCHED_OP_I : DP_SCHED_OP_B, m, -1);
	post(g, DP_SCHED_OP_SB, &g->nsb, g->rank - 1);
	if (g->zb) {
		g->wq_tail++;
		while (g->wq_tail - g->wq_head > g->rank)
			weight(g);
	}
}

int sched_gen_1f1b(struct dp_sched *s, int zero_bubble, struct dp_err *err)
{
	int pp = s->cfg.pp, micro = s->cfg.micro;

	for (int r = 0; r < pp; r++) {
		struct gen1 g = { .s = s, .rank = r, .zb = zero_bubble };
		int warm = pp - 1 - r < micro ? pp - 1 - r : micro;

		g.step = 1;
		for (int m = 0; m < warm; m++)
			forward(&g, m);
		g.step = 2;
		for (int j = 0; j < micro - warm; j++) {
			forward(&g, warm + j);
			backward(&g, j);
		}
		g.step = 3;
		for (int j = micro - warm; j < micro; j++)
			backward(&g, j);
		g.step = 4;
		while (g.wq_head < g.wq_tail)
			weight(&g);
		g.step = 0;
		commit(&g);
		if (g.rc)
			return dp_err_set(err, ENOMEM, "sched: out of memory");
	}
	return 0;
}
