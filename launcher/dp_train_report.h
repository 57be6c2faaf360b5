/* launcher/dp_train_report.h - what the controller makes of a training run's
 * STEP and TIMELINE frames: the step loss (the sum of every rank's loss
 * share, added in rank order, as `dpworker --train-local` does), tokens/s,
 * the op timelines of the last step merged into one Chrome trace and one SVG
 * timeline (measured over simulated), and the measured bubble of every rank
 * next to the simulator's prediction for the measured F, B, W and F&B
 * durations.
 *
 *   struct dp_train_report_cfg rc = { .nranks = 4, .algo = DP_SCHED_DUALPIPE,
 *                                     .pp = 4, .micro = 8 };
 *   dp_train_report_new(&rc, &tr, &err);
 *   cfg.train = &dp_train_report_events; cfg.train_arg = tr;   (struct dp_ctl_cfg)
 *   dp_ctl_run(&cfg, &spec, &res, &err);
 *   dp_train_report_write_trace(tr, "run/trace.json", &err);
 *   dp_train_report_write_svg(tr, "run/timeline.svg", &err);
 *   dp_train_report_summary(tr, &buf, &err);
 *   dp_train_report_free(tr);
 *
 * Threads: one report is used from one thread (the controller's).
 */
#ifndef DP_TRAIN_REPORT_H
#define DP_TRAIN_REPORT_H

#include <stddef.h>
#include <stdint.h>

#include "common/dp_buf.h"
#include "common/dp_err.h"
#include "launcher/ctl_launch.h"
#include "sched/dp_sched.h"

struct dp_train_report; /* opaque: _new() creates, _free() frees */

struct dp_train_report_cfg {
	int nranks; /* ranks that report (every rank of the run): dp x pp x ep, rank
		     * order (dp_rank * pp + pp_rank) * ep + ep_rank */
	enum dp_sched_algo algo;
	int pp, micro; /* the schedule, for the simulated bubble */
	int dp;	       /* data-parallel replicas; 0 or 1: none */
	/* Called when every rank has reported step @step (0-based), in step
	 * order; @loss is the step loss, @tokens the tokens trained in it. */
	void (*on_step)(void *arg, uint64_t step, double loss, uint64_t tokens, double seconds);
	void *arg;
};

/* Feeds a report from dp_ctl_run(): cfg.train = &dp_train_report_events,
 * cfg.train_arg = the report. */
extern const struct dp_ctl_train_events dp_train_report_events;

int dp_train_report_new(const struct dp_train_report_cfg *cfg, struct dp_train_report **out,
			struct dp_err *err);
void dp_train_report_free(struct dp_train_report *tr); /* NULL-safe */

/* Direct feeding (what the events do; also for tests). */
void dp_train_report_step(struct dp_train_report *tr, int rank, const struct dp_ctl_step *s);
void dp_train_report_timeline(struct dp_train_report *tr, int rank, const char *host,
			      const struct dp_ctl_timeline *t);

/* A restart begins (what dp_train_report_events does on one): steps the
 * failed attempt left incomplete are dropped, unreported, so that the new
 * attempt's shares of them start afresh. */
void dp_train_report_restart(struct dp_train_report *tr);

/* 1 + the highest step complete so far (every rank reported it), and the
 * loss of step @i (NaN if out of range or never complete).  After a restart
 * that resumed at step k, steps k.. are reported again and the latest value
 * of each is kept. */
size_t dp_train_report_nsteps(const struct dp_train_report *tr);
double dp_train_report_loss(const struct dp_train_report *tr, size_t i);
/* Tokens of all complete steps / training wall time (first step start to
 * last step end, on the controller's clock); 0 before a step. */
double dp_train_report_tokens_per_s(const struct dp_train_report *tr);
double dp_train_report_wall_s(const struct dp_train_report *tr);

/* Per-rank bubble of the last timeline (rank @r): measured (the longest
 * rank's span minus this rank's busy time) and simulated (the simulator's
 * makespan minus busy for the measured mean durations; with ep > 1 or
 * dp > 1 a rank gets its pp rank's figure), in seconds.  0, or
 * -ENODATA (no timeline from every rank) / -EPROTO (cannot simulate). */
struct dp_train_bubble {
	double busy, bubble, predicted;
};
struct dp_train_durations {
	double f, b, w, fb; /* measured means, seconds (b: full backward, or I + W) */
};
int dp_train_report_bubbles(const struct dp_train_report *tr, struct dp_train_bubble *per_rank,
			    struct dp_train_durations *d, struct dp_err *err);

/* Write the merged Chrome trace (one thread per rank, one "X" event per op,
 * microseconds; ranks on one host share their monotonic clock, otherwise each
 * rank's step starts at 0) to @path, atomically.  0, -ENODATA (no timeline),
 * or -errno with @err naming the path. */
int dp_train_report_write_trace(const struct dp_train_report *tr, const char *path,
				struct dp_err *err);

/* The measured timeline as a standalone SVG document (sched's chart, see
 * dp_sched_chart_svg): group "measured", one lane per rank labelled
 * "rank R (pp P, ep E[, dp D])" holding the ops of the last step that rank
 * recorded (the ranks send the timeline of their last step), in ms from the
 * earliest op of any rank (ranks on one host share their clock; otherwise
 * each rank is placed from its own step start), a rank without a timeline
 * an empty lane (": no timeline"); then group "simulated", one lane per pp
 * rank, the simulator's timeline of the same schedule for the measured mean
 * F, B, W and F&B durations (dp_train_report_bubbles' prediction), on the
 * same ms axis.  Works with what was received (a failed run): 0, or
 * -ENODATA (no timeline from any rank) / -ENOMEM / -E2BIG with @err.
 * dp_train_report_write_svg() writes it to @path atomically. */
int dp_train_report_svg(const struct dp_train_report *tr, struct dp_buf *out, struct dp_err *err);
int dp_train_report_write_svg(const struct dp_train_report *tr, const char *path,
			      struct dp_err *err);

/* Append the human summary (loss first -> last, tokens/s, wall time, the
 * bubble table) to @out.  0 or -ENOMEM/-E2BIG. */
int dp_train_report_summary(const struct dp_train_report *tr, struct dp_buf *out,
			    struct dp_err *err);

#endif
