/* sched/sched_int.h - private parts of the sched module: the schedule object,
 * the placement of stages on ranks, and the generators. */
#ifndef DP_SCHED_INT_H
#define DP_SCHED_INT_H

#include "sched/dp_sched.h"

struct sched_rank {
	struct dp_sched_op *ops;
	size_t len, cap;
};

struct dp_sched {
	struct dp_sched_cfg cfg;
	int legs;      /* 2 for dualpipe/dualpipev, 1 otherwise */
	int leg_micro; /* micro-batches per leg */
	int pipes;     /* independent micro-batch streams: 2 for dualpipe, 1 otherwise */
	int pipe_len;  /* chunks a micro-batch passes through: pp, or 2*pp for dualpipev */
	struct sched_rank *ranks;
};

/* Placement.  A micro-batch of pipe p passes through pipe_len chunks; chunk
 * position i of pipe p is held by (rank, leg). */
int sched_pipe_of(const struct dp_sched *s, int leg);
int sched_pos_of(const struct dp_sched *s, int rank, int leg);
void sched_chunk_at(const struct dp_sched *s, int pipe, int pos, int *rank, int *leg);

/* Append helper used by the generators: 0 or -ENOMEM. */
int sched_push(struct dp_sched *s, int rank, int kind, int step, int leg, int micro, int leg2,
	       int micro2, int peer);

/* Generators: fill an empty schedule made by dp_sched_new(). */
int sched_gen_dualpipe(struct dp_sched *s, struct dp_err *err);
int sched_gen_1f1b(struct dp_sched *s, int zero_bubble, struct dp_err *err);

/* Formatters (sched/svg.c, sched/trace.c) over a finished simulation. */
int sched_fmt_svg(const struct dp_sched *s, const struct dp_sched_sim *sim, int rank,
		  struct dp_buf *out, struct dp_err *err);
int sched_fmt_trace(const struct dp_sched *s, const struct dp_sched_sim *sim, int rank,
		    struct dp_buf *out, struct dp_err *err);
/* Short op name for charts and traces ("F", "B", "I", "W", "FB", ...). */
const char *sched_kind_name(int kind);

#endif
