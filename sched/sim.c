/* sched/sim.c - discrete-event simulation of a schedule.
 *
 * Every rank runs its compute ops in program order; an op starts when the
 * rank is free and its inputs exist: a forward needs the previous chunk's
 * forward of the same micro-batch, a backward needs the next chunk's backward
 * (or, on the chunk that computes the loss, its own forward), a W needs its I.
 * Communication is free and the comm tokens are ignored.  Start times only
 * depend on already-placed ops, so the order in which ranks are advanced does
 * not change the result.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sched/sched_int.h"

struct act_ev {
	double t;
	int delta;
};

static int ev_cmp(const void *a, const void *b)
{
	const struct act_ev *x = a, *y = b;

	if (x->t < y->t)
		return -1;
	if (x->t > y->t)
		return 1;
	return x->delta - y->delta; /* frees before allocations at the same time */
}

struct simstate {
	const struct dp_sched *s;
	double *fend, *bend; /* per (rank, leg, micro); < 0: not placed yet */
};

static size_t idx(const struct dp_sched *s, int rank, int leg, int m)
{
	return ((size_t)rank * (size_t)s->legs + (size_t)leg) * (size_t)s->leg_micro + (size_t)m;
}

static int valid_ref(const struct dp_sched *s, int leg, int m)
{
	return leg >= 0 && leg < s->legs && m >= 0 && m < s->leg_micro;
}

/* Time the forward input of (rank, leg, m) is available, or -1. */
static double f_ready(const struct simstate *st, int rank, int leg, int m)
{
	const struct dp_sched *s = st->s;
	int pos = sched_pos_of(s, rank, leg);
	int r2, l2;

	if (pos == 0)
		return 0;
	sched_chunk_at(s, sched_pipe_of(s, leg), pos - 1, &r2, &l2);
	return st->fend[idx(s, r2, l2, m)];
}

/* Time the output gradient of (rank, leg, m) is available (and its own
 * forward has run), or -1. */
static double b_ready(const struct simstate *st, int rank, int leg, int m)
{
	const struct dp_sched *s = st->s;
	int pos = sched_pos_of(s, rank, leg);
	double own = st->fend[idx(s, rank, leg, m)];
	double g;
	int r2, l2;

	if (own < 0)
		return -1;
	if (pos == s->pipe_len - 1)
		return own;
	sched_chunk_at(s, sched_pipe_of(s, leg), pos + 1, &r2, &l2);
	g = st->bend[idx(s, r2, l2, m)];
	return g < 0 ? -1 : fmax(g, own);
}

double dp_sched_formula_bubble(enum dp_sched_algo algo, int pp, const struct dp_sched_times *t)
{
	switch (algo) {
	case DP_SCHED_1F1B:
		return (pp - 1) * (t->f + t->b);
	case DP_SCHED_ZB1P:
		return (pp - 1) * (t->f + t->b - 2 * t->w);
	case DP_SCHED_DUALPIPE:
		return (pp / 2.0 - 1) * (t->fb + t->b - 3 * t->w);
	case DP_SCHED_DUALPIPEV: /* PP in the README counts stages: 2*pp here */
		return (pp - 1) * (t->fb + t->b - 3 * t->w);
	}
	return 0;
}

void dp_sched_sim_release(struct dp_sched_sim *sim)
{
	if (!sim)
		return;
	for (int r = 0; sim->ranks && r < sim->nranks; r++)
		free(sim->ranks[r].slots);
	free(sim->ranks);
	memset(sim, 0, sizeof(*sim));
}

static int check_times(const struct dp_sched_times *t, struct dp_err *err)
{
	const double v[] = { t->f, t->b, t->w, t->fb };
	const char *const n[] = { "F", "B", "W", "FB" };

	for (int i = 0; i < 4; i++)
		if (!isfinite(v[i]) || v[i] < 0)
			return dp_err_set(err, EINVAL, "sched: duration %s must be >= 0: %g", n[i],
					  v[i]);
	if (t->w > t->b)
		return dp_err_set(err, EINVAL,
				  "sched: W (%g) must not exceed B (%g): I takes B - W", t->w,
				  t->b);
	return 0;
}

/* Try to place the op at the head of rank @r; 1 if placed, 0 if it waits. */
static int place(struct simstate *st, const struct dp_sched_op *op, int r, double now,
		 const struct dp_sched_times *t, double *start, double *end)
{
	const struct dp_sched *s = st->s;
	double ready = now, x, y;

	switch (op->kind) {
	case DP_SCHED_OP_F:
		x = f_ready(st, r, op->leg, op->micro);
		if (x < 0)
			return 0;
		*start = fmax(ready, x);
		*end = *start + t->f;
		st->fend[idx(s, r, op->leg, op->micro)] = *end;
		return 1;
	case DP_SCHED_OP_B:
	case DP_SCHED_OP_I:
		x = b_ready(st, r, op->leg, op->micro);
		if (x < 0)
			return 0;
		*start = fmax(ready, x);
		*end = *start + (op->kind == DP_SCHED_OP_B ? t->b : t->b - t->w);
		st->bend[idx(s, r, op->leg, op->micro)] = *end;
		return 1;
	case DP_SCHED_OP_W:
		if (st->bend[idx(s, r, op->leg, op->micro)] < 0)
			return 0;
		*start = ready;
		*end = ready + t->w;
		return 1;
	case DP_SCHED_OP_FB:
		x = f_ready(st, r, op->leg, op->micro);
		y = b_ready(st, r, op->leg2, op->micro2);
		if (x < 0 || y < 0)
			return 0;
		*start = fmax(ready, fmax(x, y));
		*end = *start + t->fb;
		st->fend[idx(s, r, op->leg, op->micro)] = *end;
		st->bend[idx(s, r, op->leg2, op->micro2)] = *end;
		return 1;
	default:
		return 0;
	}
}

static int is_compute(int kind)
{
	return kind <= DP_SCHED_OP_FB;
}

static int ops_valid(const struct dp_sched *s, struct dp_err *err)
{
	for (int r = 0; r < s->cfg.pp; r++) {
		for (size_t i = 0; i < s->ranks[r].len; i++) {
			const struct dp_sched_op *op = &s->ranks[r].ops[i];

			if (op->kind > DP_SCHED_OP_WAIT ||
			    (is_compute(op->kind) && !valid_ref(s, op->leg, op->micro)) ||
			    (op->kind == DP_SCHED_OP_FB && !valid_ref(s, op->leg2, op->micro2)))
				return dp_err_set(err, EPROTO,
						  "sched: rank %d op #%zu has a bad kind, leg or "
						  "micro-batch",
						  r, i);
		}
	}
	return 0;
}

static int peak_activations(const struct dp_sched_rank_stats *rs, struct act_ev *ev)
{
	size_t n = 0;
	int cur = 0, peak = 0;

	for (size_t i = 0; i < rs->nslots; i++) {
		const struct dp_sched_slot *sl = &rs->slots[i];

		switch (sl->op->kind) {
		case DP_SCHED_OP_F:
			ev[n++] = (struct act_ev){ sl->start, +1 };
			break;
		case DP_SCHED_OP_FB:
			ev[n++] = (struct act_ev){ sl->start, +1 };
			ev[n++] = (struct act_ev){ sl->end, -1 };
			break;
		case DP_SCHED_OP_B:
		case DP_SCHED_OP_W:
			ev[n++] = (struct act_ev){ sl->end, -1 };
			break;
		default:
			break;
		}
	}
	qsort(ev, n, sizeof(*ev), ev_cmp);
	for (size_t i = 0; i < n; i++) {
		cur += ev[i].delta;
		if (cur > peak)
			peak = cur;
	}
	return peak;
}

int dp_sched_simulate(const struct dp_sched *s, const struct dp_sched_times *t,
		      struct dp_sched_sim *out, struct dp_err *err)
{
	int pp = s->cfg.pp;
	size_t ncell = (size_t)pp * (size_t)s->legs * (size_t)s->leg_micro;
	struct simstate st = { .s = s };
	struct dp_sched_sim sim = { 0 };
	size_t *pc = NULL, maxslots = 0;
	double *freeat = NULL;
	struct act_ev *ev = NULL;
	int rc, progress;

	rc = check_times(t, err);
	if (!rc)
		rc = ops_valid(s, err);
	if (rc)
		return rc;
	st.fend = malloc(ncell * sizeof(double));
	st.bend = malloc(ncell * sizeof(double));
	pc = calloc((size_t)pp, sizeof(*pc));
	freeat = calloc((size_t)pp, sizeof(*freeat));
	sim.ranks = calloc((size_t)pp, sizeof(*sim.ranks));
	sim.nranks = pp;
	if (!st.fend || !st.bend || !pc || !freeat || !sim.ranks)
		goto nomem;
	for (size_t i = 0; i < ncell; i++)
		st.fend[i] = st.bend[i] = -1;
	for (int r = 0; r < pp; r++) {
		size_t n = 0;

		for (size_t i = 0; i < s->ranks[r].len; i++)
			n += is_compute(s->ranks[r].ops[i].kind);
		sim.ranks[r].slots = calloc(n ? n : 1, sizeof(struct dp_sched_slot));
		if (!sim.ranks[r].slots)
			goto nomem;
		if (n > maxslots)
			maxslots = n;
	}
	/* Forwards travel to higher ranks and backwards to lower ones (leg 0):
	 * sweeping up and down in turn lets both chains move in one pass. */
	for (int pass = 0;; pass++) {
		progress = 0;
		for (int j = 0; j < pp; j++) {
			int r = pass % 2 ? pp - 1 - j : j;
			const struct sched_rank *rk = &s->ranks[r];
			struct dp_sched_rank_stats *rs = &sim.ranks[r];

			while (pc[r] < rk->len) {
				const struct dp_sched_op *op = &rk->ops[pc[r]];
				double a, b;

				if (is_compute(op->kind)) {
					if (!place(&st, op, r, freeat[r], t, &a, &b))
						break;
					rs->slots[rs->nslots++] =
						(struct dp_sched_slot){ op, a, b };
					rs->busy += b - a;
					freeat[r] = b;
				}
				pc[r]++;
				progress = 1;
			}
		}
		if (!progress)
			break;
	}
	for (int r = 0; r < pp; r++) {
		if (pc[r] < s->ranks[r].len) {
			char tok[96];

			(void)dp_sched_op_str(&s->ranks[r].ops[pc[r]], tok, sizeof(tok));
			rc = dp_err_set(
				err, EPROTO,
				"sched: cannot run: rank %d op #%zu '%s' never gets its input "
				"(dependency cycle)",
				r, pc[r], tok);
			goto fail;
		}
		if (freeat[r] > sim.makespan)
			sim.makespan = freeat[r];
	}
	ev = malloc((2 * maxslots + 1) * sizeof(*ev));
	if (!ev)
		goto nomem;
	for (int r = 0; r < pp; r++) {
		struct dp_sched_rank_stats *rs = &sim.ranks[r];

		rs->bubble = sim.makespan - rs->busy;
		if (rs->bubble > sim.bubble_max)
			sim.bubble_max = rs->bubble;
		rs->peak_activations = peak_activations(rs, ev);
	}
	sim.formula_bubble = dp_sched_formula_bubble(s->cfg.algo, pp, t);
	*out = sim;
	rc = 0;
	goto out;
nomem:
	rc = dp_err_set(err, ENOMEM, "sched: out of memory");
fail:
	dp_sched_sim_release(&sim);
out:
	free(ev);
	free(freeat);
	free(pc);
	free(st.bend);
	free(st.fend);
	return rc;
}
