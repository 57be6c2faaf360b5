/* sched/dp_sched.h - pipeline-parallel schedules: DualPipe, DualPipeV, 1F1B, ZB1P.
 *
 * Pure functions, no I/O.  A schedule is, for every pipeline rank, the ordered
 * list of operations that rank runs: compute ops (F, B, I, W, overlapped FB)
 * and, optionally, the communication tokens (RF/SF/RB/SB posts and WAIT
 * commits) exactly where upstream DualPipe posts them.  See docs/schedules.md
 * and ../shared/docs/DUALPIPE.md for the meaning of legs and steps.
 *
 *   struct dp_sched_cfg cfg = { .algo = DP_SCHED_DUALPIPE, .pp = 8, .micro = 20 };
 *   struct dp_sched *s;
 *   if (dp_sched_build(&cfg, &s, &err) == 0) {
 *           dp_sched_format(s, DP_SCHED_FMT_OPS, -1, &buf, &err);
 *           dp_sched_free(s);
 *   }
 *
 * Threads: a schedule is immutable after build (except through
 * dp_sched_append on one built by dp_sched_new); concurrent readers are fine.
 */
#ifndef DP_SCHED_H
#define DP_SCHED_H

#include <stddef.h>

#include "common/dp_buf.h"
#include "common/dp_err.h"

enum dp_sched_algo {
	DP_SCHED_DUALPIPE = 0,
	DP_SCHED_DUALPIPEV,
	DP_SCHED_1F1B,
	DP_SCHED_ZB1P,
};

enum dp_sched_kind {
	DP_SCHED_OP_F = 0, /* forward of (leg, micro) */
	DP_SCHED_OP_B,	   /* full backward */
	DP_SCHED_OP_I,	   /* backward for input only; weight grad queued (FIFO) */
	DP_SCHED_OP_W,	   /* deferred weight grad of an earlier I of (leg, micro) */
	DP_SCHED_OP_FB,	   /* F of (leg, micro) overlapped with full B of (leg2, micro2) */
	DP_SCHED_OP_RF,	   /* post receive of the forward input of (leg, micro) from peer */
	DP_SCHED_OP_SF,	   /* post send of our forward output of (leg, micro) to peer */
	DP_SCHED_OP_RB,	   /* post receive of the output gradient of (leg, micro) from peer */
	DP_SCHED_OP_SB,	   /* post send of the input gradient of (leg, micro) to peer */
	DP_SCHED_OP_WAIT,  /* launch everything posted since the last WAIT and wait */
};

struct dp_sched_op {
	unsigned char kind; /* enum dp_sched_kind */
	unsigned char step; /* upstream step() section 1..8, 0 = final commit (see docs) */
	unsigned char leg;  /* leg (FB: of the forward) */
	unsigned char leg2; /* FB: leg of the backward; else 0 */
	int micro;	    /* micro-batch within the leg (FB: of the forward); WAIT: -1 */
	int micro2;	    /* FB: micro-batch of the backward; else -1 */
	int peer;	    /* comm posts: the other rank; else -1 */
};

struct dp_sched_cfg {
	enum dp_sched_algo algo;
	int pp;	   /* pipeline ranks (DualPipeV: ranks, i.e. half the stages) */
	int micro; /* micro-batches in total (DualPipe: both directions together) */
	int comm;  /* non-zero: include RF/SF/RB/SB/WAIT tokens */
};

struct dp_sched; /* opaque: dp_sched_build()/dp_sched_new() create, dp_sched_free() frees */

/* Largest pp and micro accepted (keeps every count in an int). */
#define DP_SCHED_MAX_PP	   4096
#define DP_SCHED_MAX_MICRO (1 << 20)

/* "dualpipe", "dualpipev", "1f1b", "zb1p" -> *out; -EINVAL with @err otherwise. */
int dp_sched_algo_parse(const char *name, enum dp_sched_algo *out, struct dp_err *err);
const char *dp_sched_algo_name(enum dp_sched_algo algo); /* "?" if unknown */

/* 0 if @cfg is a configuration the algorithm accepts, else -EINVAL with the
 * upstream constraint as the reason, e.g.
 * "sched: dualpipe needs micro >= 2*pp (num_chunks >= num_ranks * 2): micro=6, pp=4". */
int dp_sched_check(const struct dp_sched_cfg *cfg, struct dp_err *err);

/* Build the schedule of @cfg.  0 and *out (caller frees with dp_sched_free),
 * or -EINVAL (bad config, see dp_sched_check) / -ENOMEM with @err. */
int dp_sched_build(const struct dp_sched_cfg *cfg, struct dp_sched **out, struct dp_err *err);

/* An empty schedule with the placement of @cfg->algo (which ranks hold which
 * stages) but no ops, to be filled with dp_sched_append(); for hand-made or
 * edited schedules given to the verifier.  @cfg must pass dp_sched_check(). */
int dp_sched_new(const struct dp_sched_cfg *cfg, struct dp_sched **out, struct dp_err *err);
/* Append a copy of @op to @rank's list: 0, -EINVAL (bad rank), -ENOMEM. */
int dp_sched_append(struct dp_sched *s, int rank, const struct dp_sched_op *op, struct dp_err *err);
void dp_sched_free(struct dp_sched *s); /* NULL is a no-op */

const struct dp_sched_cfg *dp_sched_config(const struct dp_sched *s);
/* Number of legs (2 for dualpipe/dualpipev, 1 otherwise) and micro-batches per leg. */
int dp_sched_legs(const struct dp_sched *s);
int dp_sched_leg_micro(const struct dp_sched *s);
/* The ops of @rank in program order; *n gets the count.  The array lives as
 * long as @s (until the next dp_sched_append on that rank).  NULL, *n = 0 for a
 * bad rank. */
const struct dp_sched_op *dp_sched_ops(const struct dp_sched *s, int rank, size_t *n);

/* Check any schedule: every (leg, micro) gets exactly one F and one backward
 * (B, or I then a W; W's in FIFO order of the I's) on every rank, each
 * backward after its forward, and the cross-rank dependencies can all be
 * satisfied (no cycle).  If the schedule has comm tokens, also runs the
 * posting order with synchronous batch commits: sends and receives between a
 * pair of ranks match in posting order with the same kind, leg and
 * micro-batch, every input is received (and committed) before it is used,
 * every output is sent after it is computed, and no rank deadlocks.
 * 0, or -EPROTO with @err describing the first problem found, -ENOMEM. */
int dp_sched_verify(const struct dp_sched *s, struct dp_err *err);

/* ---- simulation --------------------------------------------------------- */

struct dp_sched_times {
	double f;  /* forward chunk */
	double b;  /* full backward chunk (I takes b - w) */
	double w;  /* weight-gradient chunk */
	double fb; /* overlapped forward + full backward */
};

/* One compute op on the simulated timeline. */
struct dp_sched_slot {
	const struct dp_sched_op *op; /* borrowed from the schedule */
	double start, end;
};

struct dp_sched_rank_stats {
	double busy;	      /* sum of op durations */
	double bubble;	      /* makespan - busy: idle time */
	int peak_activations; /* in chunk units */
	size_t nslots;
	struct dp_sched_slot *slots; /* compute ops in program order; owned by the result */
};

struct dp_sched_sim {
	double makespan;
	double bubble_max;
	double formula_bubble; /* the DualPipe README table formula for this algo */
	int nranks;
	struct dp_sched_rank_stats *ranks;
};

/* Simulate @s with durations @t (all >= 0, b >= w): every compute op starts
 * when its rank is free and its inputs exist (the previous stage's forward,
 * the next stage's backward; no latency; comm tokens are ignored).  An
 * activation lives from the start of its F (or FB) to the end of its full B
 * (or FB) or its W.  0 and *out filled (release with dp_sched_sim_release),
 * or -EINVAL (bad times), -EPROTO (the schedule cannot run), -ENOMEM. */
int dp_sched_simulate(const struct dp_sched *s, const struct dp_sched_times *t,
		      struct dp_sched_sim *out, struct dp_err *err);
void dp_sched_sim_release(struct dp_sched_sim *sim); /* NULL-safe; zeroes it */

/* README formula of the bubble for @algo with @pp ranks (DualPipeV: 2*pp stages). */
double dp_sched_formula_bubble(enum dp_sched_algo algo, int pp, const struct dp_sched_times *t);

/* ---- output ------------------------------------------------------------- */

enum dp_sched_fmt {
	DP_SCHED_FMT_OPS = 0, /* canonical one line per rank */
	DP_SCHED_FMT_LONG,    /* canonical one line per op */
	DP_SCHED_FMT_JSON,    /* {"algo":..,"ranks":[{"rank":0,"ops":[{..}]}]} */
	DP_SCHED_FMT_SVG,     /* timeline chart (needs @t) */
	DP_SCHED_FMT_TRACE,   /* Chrome trace-event JSON of the simulated timeline (needs @t) */
};

/* "ops", "long", "json", "svg", "trace" -> *out; -EINVAL with @err otherwise. */
int dp_sched_fmt_parse(const char *name, enum dp_sched_fmt *out, struct dp_err *err);

/* Append @s in format @fmt to @out; @rank >= 0 prints only that rank, -1 all.
 * @t gives the durations for svg and trace (NULL: F=1, B=2, W=1, FB=2.5).
 * 0, or -EINVAL (bad rank), -EPROTO (cannot simulate), -ENOMEM/-E2BIG from @out. */
int dp_sched_format(const struct dp_sched *s, enum dp_sched_fmt fmt, int rank,
		    const struct dp_sched_times *t, struct dp_buf *out, struct dp_err *err);

/* ---- timeline charts (SVG) ----------------------------------------------
 * The drawing behind DP_SCHED_FMT_SVG, for any timeline of compute ops, so
 * that a measured timeline (RUN_DIR/timeline.svg of a training run, see
 * launcher/dp_train_report.h) uses the colours and letters of the simulated
 * one: F orange, B blue, I purple, W green, F&B red, a darker shade for leg
 * 1, the micro-batch ("m", F&B "m|m2") in every box wide enough for it. */
struct dp_sched_chart_box {
	struct dp_sched_op op; /* kind F, B, I, W or FB (other kinds are not drawn) */
	double start, end;     /* in the chart's time unit, 0 <= start <= end */
};

struct dp_sched_chart_lane {
	const char *label; /* plain text, escaped here; NULL: none */
	const struct dp_sched_chart_box *box;
	size_t nbox;
};

struct dp_sched_chart_group {
	const char *id;	   /* NULL, or an XML name: the group is <g id="..."> */
	const char *title; /* NULL, or a line of plain text above the lanes */
	const struct dp_sched_chart_lane *lane;
	int nlanes;
};

struct dp_sched_chart {
	const char *title; /* first line, plain text; NULL: empty */
	const char *unit;  /* NULL: no axis; else a time axis (<g class="axis">) under
			    * every group, ticks every 1, 2 or 5 x 10^k, "0 <unit>" first */
	double span;	   /* the time the lanes cover, from 0; <= 0: 1 */
	double scale;	   /* pixels per time unit; 0: min(24, max(1, 1600 / span)) */
	double label_w;	   /* width of the lane label column in pixels; 0: 64 */
	const struct dp_sched_chart_group *group;
	int ngroups;
};

/* Append a standalone SVG document drawing @c to @out: a title line, then
 * per group its title, one lane per lane (label, grey idle background as
 * <rect class="idle">, a <rect class="op"> per box at x = label_w + start *
 * scale, width (end - start) * scale, with a <title> tooltip), its axis, and
 * a legend.  Everything of @c is borrowed for the call.  0 or -ENOMEM /
 * -E2BIG (from @out) with @err. */
int dp_sched_chart_svg(const struct dp_sched_chart *c, struct dp_buf *out, struct dp_err *err);

/* One op as canonical text ("F0B1 7 3", "RF0 2 1", "WAIT") into @buf of @len
 * bytes; returns the snprintf-style length. */
int dp_sched_op_str(const struct dp_sched_op *op, char *buf, size_t len);

#endif
