/* sched/sched.c - the schedule object: configuration checks, placement of
 * stages on ranks, op storage and the canonical text of one op. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched/sched_int.h"

static const char *const algo_names[] = { "dualpipe", "dualpipev", "1f1b", "zb1p" };

int dp_sched_algo_parse(const char *name, enum dp_sched_algo *out, struct dp_err *err)
{
	for (size_t i = 0; i < sizeof(algo_names) / sizeof(algo_names[0]); i++) {
		if (name && strcmp(name, algo_names[i]) == 0) {
			*out = (enum dp_sched_algo)i;
			return 0;
		}
	}
	return dp_err_set(
		err, EINVAL,
		"sched: unknown algorithm '%s' (expected dualpipe, dualpipev, 1f1b or zb1p)",
		name ? name : "");
}

const char *dp_sched_algo_name(enum dp_sched_algo algo)
{
	if ((unsigned)algo < sizeof(algo_names) / sizeof(algo_names[0]))
		return algo_names[algo];
	return "?";
}

int dp_sched_check(const struct dp_sched_cfg *cfg, struct dp_err *err)
{
	const char *name = dp_sched_algo_name(cfg->algo);

	if ((unsigned)cfg->algo > DP_SCHED_ZB1P)
		return dp_err_set(err, EINVAL, "sched: unknown algorithm %d", (int)cfg->algo);
	if (cfg->pp < 1 || cfg->pp > DP_SCHED_MAX_PP)
		return dp_err_set(err, EINVAL, "sched: pp must be in [1, %d]: pp=%d",
				  DP_SCHED_MAX_PP, cfg->pp);
	if (cfg->micro < 1 || cfg->micro > DP_SCHED_MAX_MICRO)
		return dp_err_set(
			err, EINVAL,
			"sched: %s needs micro > 0 (num_chunks > 0), at most %d: micro=%d", name,
			DP_SCHED_MAX_MICRO, cfg->micro);
	if (cfg->algo == DP_SCHED_DUALPIPE && cfg->pp % 2)
		return dp_err_set(err, EINVAL,
				  "sched: dualpipe needs an even pp (num_ranks %% 2 == 0): pp=%d",
				  cfg->pp);
	if (cfg->algo == DP_SCHED_DUALPIPE && cfg->micro % 2)
		return dp_err_set(
			err, EINVAL,
			"sched: dualpipe needs an even micro (num_chunks %% 2 == 0): micro=%d",
			cfg->micro);
	if ((cfg->algo == DP_SCHED_DUALPIPE || cfg->algo == DP_SCHED_DUALPIPEV) &&
	    cfg->micro < 2 * cfg->pp)
		return dp_err_set(
			err, EINVAL,
			"sched: %s needs micro >= 2*pp (num_chunks >= num_ranks * 2): micro=%d, pp=%d",
			name, cfg->micro, cfg->pp);
	return 0;
}

int dp_sched_new(const struct dp_sched_cfg *cfg, struct dp_sched **out, struct dp_err *err)
{
	struct dp_sched *s;
	int rc = dp_sched_check(cfg, err);

	if (rc)
		return rc;
	s = calloc(1, sizeof(*s));
	if (!s)
		return dp_err_set(err, ENOMEM, "sched: out of memory");
	s->cfg = *cfg;
	s->cfg.comm = !!cfg->comm;
	switch (cfg->algo) {
	case DP_SCHED_DUALPIPE:
		s->legs = 2;
		s->pipes = 2;
		s->leg_micro = cfg->micro / 2;
		s->pipe_len = cfg->pp;
		break;
	case DP_SCHED_DUALPIPEV:
		s->legs = 2;
		s->pipes = 1;
		s->leg_micro = cfg->micro;
		s->pipe_len = 2 * cfg->pp;
		break;
	default:
		s->legs = 1;
		s->pipes = 1;
		s->leg_micro = cfg->micro;
		s->pipe_len = cfg->pp;
		break;
	}
	s->ranks = calloc((size_t)cfg->pp, sizeof(*s->ranks));
	if (!s->ranks) {
		free(s);
		return dp_err_set(err, ENOMEM, "sched: out of memory");
	}
	*out = s;
	return 0;
}

void dp_sched_free(struct dp_sched *s)
{
	if (!s)
		return;
	for (int r = 0; r < s->cfg.pp; r++)
		free(s->ranks[r].ops);
	free(s->ranks);
	free(s);
}

static int grow(struct sched_rank *rk, size_t hint)
{
	size_t cap = rk->cap ? rk->cap * 2 : hint;
	struct dp_sched_op *ops = realloc(rk->ops, cap * sizeof(*ops));

	if (!ops)
		return -ENOMEM;
	rk->ops = ops;
	rk->cap = cap;
	return 0;
}

int sched_push(struct dp_sched *s, int rank, int kind, int step, int leg, int micro, int leg2,
	       int micro2, int peer)
{
	struct sched_rank *rk = &s->ranks[rank];
	struct dp_sched_op *op;

	/* first allocation: enough for every op of the rank (at most 3 compute
	 * ops per micro-batch and leg, about 5 more tokens each with comm) */
	if (rk->len == rk->cap &&
	    grow(rk, (size_t)s->legs * (size_t)s->leg_micro * (s->cfg.comm ? 12 : 3) + 16))
		return -ENOMEM;
	op = &rk->ops[rk->len++];
	op->kind = (unsigned char)kind;
	op->step = (unsigned char)step;
	op->leg = (unsigned char)leg;
	op->leg2 = (unsigned char)leg2;
	op->micro = micro;
	op->micro2 = micro2;
	op->peer = peer;
	return 0;
}

int dp_sched_append(struct dp_sched *s, int rank, const struct dp_sched_op *op, struct dp_err *err)
{
	if (rank < 0 || rank >= s->cfg.pp)
		return dp_err_set(err, EINVAL, "sched: rank %d out of range [0, %d)", rank,
				  s->cfg.pp);
	if (sched_push(s, rank, op->kind, op->step, op->leg, op->micro, op->leg2, op->micro2,
		       op->peer))
		return dp_err_set(err, ENOMEM, "sched: out of memory");
	return 0;
}

int dp_sched_build(const struct dp_sched_cfg *cfg, struct dp_sched **out, struct dp_err *err)
{
	struct dp_sched *s = NULL;
	int rc = dp_sched_new(cfg, &s, err);

	if (rc)
		return rc;
	switch (cfg->algo) {
	case DP_SCHED_DUALPIPE:
	case DP_SCHED_DUALPIPEV:
		rc = sched_gen_dualpipe(s, err);
		break;
	default:
		rc = sched_gen_1f1b(s, cfg->algo == DP_SCHED_ZB1P, err);
		break;
	}
	if (rc) {
		dp_sched_free(s);
		return rc;
	}
	*out = s;
	return 0;
}

const struct dp_sched_cfg *dp_sched_config(const struct dp_sched *s)
{
	return &s->cfg;
}

int dp_sched_legs(const struct dp_sched *s)
{
	return s->legs;
}

int dp_sched_leg_micro(const struct dp_sched *s)
{
	return s->leg_micro;
}

const struct dp_sched_op *dp_sched_ops(const struct dp_sched *s, int rank, size_t *n)
{
	if (rank < 0 || rank >= s->cfg.pp) {
		*n = 0;
		return NULL;
	}
	*n = s->ranks[rank].len;
	return s->ranks[rank].ops;
}

int sched_pipe_of(const struct dp_sched *s, int leg)
{
	return s->cfg.algo == DP_SCHED_DUALPIPE ? leg : 0;
}

int sched_pos_of(const struct dp_sched *s, int rank, int leg)
{
	int pp = s->cfg.pp;

	if (leg == 0)
		return rank;
	return s->cfg.algo == DP_SCHED_DUALPIPEV ? 2 * pp - 1 - rank : pp - 1 - rank;
}

void sched_chunk_at(const struct dp_sched *s, int pipe, int pos, int *rank, int *leg)
{
	int pp = s->cfg.pp;

	if (s->cfg.algo == DP_SCHED_DUALPIPEV && pos >= pp) {
		*rank = 2 * pp - 1 - pos;
		*leg = 1;
	} else if (pipe == 1) {
		*rank = pp - 1 - pos;
		*leg = 1;
	} else {
		*rank = pos;
		*leg = 0;
	}
}

int dp_sched_op_str(const struct dp_sched_op *op, char *buf, size_t len)
{
	static const char *const names[] = { "F", "B", "I", "W", "FB", "RF", "SF", "RB", "SB" };

	switch (op->kind) {
	case DP_SCHED_OP_F:
	case DP_SCHED_OP_B:
	case DP_SCHED_OP_I:
	case DP_SCHED_OP_W:
		return snprintf(buf, len, "%s%d %d", names[op->kind], op->leg, op->micro);
	case DP_SCHED_OP_FB:
		return snprintf(buf, len, "F%dB%d %d %d", op->leg, op->leg2, op->micro, op->micro2);
	case DP_SCHED_OP_RF:
	case DP_SCHED_OP_SF:
	case DP_SCHED_OP_RB:
	case DP_SCHED_OP_SB:
		return snprintf(buf, len, "%s%d %d %d", names[op->kind], op->leg, op->micro,
				op->peer);
	case DP_SCHED_OP_WAIT:
		return snprintf(buf, len, "WAIT");
	default:
		return snprintf(buf, len, "?%d", op->kind);
	}
}
