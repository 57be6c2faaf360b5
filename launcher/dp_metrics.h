/* launcher/dp_metrics.h - run metrics in the Prometheus text exposition format.
 *
 * The controller keeps the latest values per rank in a struct dp_metrics,
 * renders them as Prometheus text (version 0.0.4), writes them atomically
 * to RUN_DIR/metrics.prom (a node_exporter textfile collector or a human
 * can read it) and pushes them to a Pushgateway-style endpoint with an HTTP
 * PUT to <push_url>/metrics/job/dpctl/run/<run id> (PUT replaces the whole
 * group, so ranks that left do not linger); a push_url that already names a
 * job (".../metrics/job/NAME") gets only "/run/<run id>" appended.  Pushes use a libcurl multi
 * handle and never block the controller loop:
 *
 *   struct dp_metrics_cfg cfg = { .run_id = id, .run_dir = dir,
 *                                 .push_url = r->metrics.push_url,
 *                                 .interval_s = r->metrics.interval_s };
 *   dp_metrics_new(&cfg, &m, &err);
 *   dp_metrics_set(m, rank, &(struct dp_metrics_rank){ .set = DP_METRICS_LOSS, .loss = l });
 *   for (;;) { ... dp_metrics_tick(m); dp_metrics_step(m, 0); ... }
 *   dp_metrics_flush(m, 5000, NULL);   // final write + push, bounded
 *   dp_metrics_free(m);
 *
 * Metric families (all labelled rank="N", plus host="..." when known):
 *   dpctl_step_seconds           gauge    duration of the last training step
 *   dpctl_tokens_per_second      gauge    throughput over the last step
 *   dpctl_loss                   gauge    training loss at the last step
 *   dpctl_bubble_ratio           gauge    pipeline idle fraction, 0..1
 *   dpctl_a2a_bytes_total        counter  all-to-all bytes sent since start
 *   dpctl_heartbeat_lag_seconds  gauge    time since the rank's last heartbeat
 *
 * A failed push or write is logged (dp_log warn, module "metrics") and
 * returned, never fatal.  Threads: one object belongs to one thread.
 */
#ifndef DP_METRICS_H
#define DP_METRICS_H

#include <stddef.h>

#include "common/dp_buf.h"
#include "common/dp_err.h"

struct dp_metrics; /* opaque: dp_metrics_new() creates, dp_metrics_free() frees */

/* Bits of dp_metrics_rank.set: which fields a dp_metrics_set() call updates. */
enum {
	DP_METRICS_STEP_SECONDS = 1u << 0,
	DP_METRICS_TOKENS_PER_SECOND = 1u << 1,
	DP_METRICS_LOSS = 1u << 2,
	DP_METRICS_BUBBLE_RATIO = 1u << 3,
	DP_METRICS_A2A_BYTES = 1u << 4,
	DP_METRICS_HEARTBEAT_LAG = 1u << 5,
};

struct dp_metrics_rank {
	unsigned set;	  /* DP_METRICS_* bits of the fields below that are given */
	const char *host; /* the rank's host for the host label; NULL: keep the last one */
	double step_seconds;
	double tokens_per_second;
	double loss; /* NaN is a value (a diverged run), written as NaN */
	double bubble_ratio;
	double a2a_bytes_total; /* cumulative; a counter, so it should only grow */
	double heartbeat_lag_seconds;
};

struct dp_metrics_cfg {
	const char *run_id;   /* required; the Pushgateway "run" label value */
	const char *run_dir;  /* where metrics.prom is written; NULL: no file */
	const char *push_url; /* Pushgateway base URL (http:// or https://); NULL: no push */
	double interval_s;    /* dp_metrics_tick() period; 0: 10 */
	long timeout_ms;      /* per push; 0: 5000 */
};

/* 0 and *out set, or -EINVAL (no run id, push_url not http(s)://, negative
 * interval), -ENOMEM, with @err set.  Strings are copied. */
int dp_metrics_new(const struct dp_metrics_cfg *cfg, struct dp_metrics **out, struct dp_err *err);

/* Update the fields of @v->set for @rank (>= 0; ranks may come in any order).
 * 0, -EINVAL (negative rank), -ENOMEM. */
int dp_metrics_set(struct dp_metrics *m, int rank, const struct dp_metrics_rank *v,
		   struct dp_err *err);

/* Append the exposition text to @out: for each family that has at least
 * one sample, "# HELP", "# TYPE" and one line per rank that set it, ranks
 * ascending.  Label values are escaped (\\, \", \n); numbers use the
 * shortest form that reads back exactly, NaN, +Inf, -Inf.  0 or -E2BIG /
 * -ENOMEM from @out. */
int dp_metrics_render(const struct dp_metrics *m, struct dp_buf *out);

/* Write the text to <run_dir>/metrics.prom via a temporary file in the same
 * directory and rename(2), so a reader never sees half a file.  0 (also
 * when there is no run_dir), or -errno with @err naming the path. */
int dp_metrics_write(struct dp_metrics *m, struct dp_err *err);

/* Start a push of the current text (no waiting).  0, -EBUSY (the previous
 * push is still in flight; nothing started), -ENOMEM; 0 and nothing done
 * when there is no push_url. */
int dp_metrics_push(struct dp_metrics *m, struct dp_err *err);

/* Write and push if interval_s has passed since the last tick that did
 * (the first call always does).  Returns 1 if it wrote/pushed, 0 if not due. */
int dp_metrics_tick(struct dp_metrics *m);

/* Drive an in-flight push: progress, then wait up to @timeout_ms for
 * activity.  Returns 1 while a push is in flight, 0 when idle. */
int dp_metrics_step(struct dp_metrics *m, long timeout_ms);

/* Final write and push, waiting at most @deadline_ms for the push.  0, or
 * the first failure (-ETIMEDOUT if the push did not finish in time, the
 * push's or the write's error) with @err set. */
int dp_metrics_flush(struct dp_metrics *m, long deadline_ms, struct dp_err *err);

/* Result of the last finished push: 0 (2xx), -EIO (HTTP error status),
 * -ECONNREFUSED, -ETIMEDOUT, ...; 1 if none has finished yet. */
int dp_metrics_last_push(const struct dp_metrics *m);

/* The push target, <push_url>/metrics/job/dpctl/run/<run id>, or NULL
 * without push_url.  A run id that is not all [A-Za-z0-9._-] is sent the
 * Pushgateway way, "/run@base64/<base64url>".  Lives as long as @m. */
const char *dp_metrics_push_target(const struct dp_metrics *m);

void dp_metrics_free(struct dp_metrics *m); /* aborts an in-flight push; NULL-safe */

#endif
