/* launcher/dp_progress.h - what `dpctl launch` shows and keeps of a run:
 *
 *  - per-rank log files RUN_DIR/logs/rank-NNNN.log (every output line of the
 *    rank as received, appended across restarts) and RUN_DIR/events.jsonl
 *    (the controller's events, one JSON object per line);
 *  - the --json event stream (the same objects, on the given FILE);
 *  - progress: on a terminal one live status line (step/total, loss,
 *    tokens/s, ETA) rewritten with \r, plain periodic lines otherwise (every
 *    10% of the steps or every interval_s, whichever comes first).
 *
 * Plug it into the controller with dp_ctl_cfg.on_event = dp_progress_event,
 * .on_line = dp_progress_line, .event_arg = the object.  Single-threaded (the
 * controller's thread).
 */
#ifndef DP_PROGRESS_H
#define DP_PROGRESS_H

#include <stdio.h>

#include "common/dp_err.h"
#include "launcher/ctl_launch.h"

struct dp_progress; /* opaque: dp_progress_new() creates, dp_progress_free() frees */

struct dp_progress_cfg {
	const char *run_dir; /* NULL: no log files, no events.jsonl; created if missing */
	FILE *json;	     /* NULL: no JSON stream; borrowed */
	FILE *status;	     /* progress output; NULL: none; borrowed */
	int tty;	     /* @status is a terminal: one live line */
	int color;	     /* bold on the live line (tty and $NO_COLOR unset) */
	double interval_s;   /* plain lines at least this often; <= 0: 10 */
};

/* 0, or -errno (run dir not creatable) with @err set. */
int dp_progress_new(const struct dp_progress_cfg *cfg, struct dp_progress **out,
		    struct dp_err *err);

/* dp_ctl_cfg.on_event / .on_line callbacks; @arg is the struct dp_progress. */
void dp_progress_event(void *arg, const struct dp_ctl_event *ev);
void dp_progress_line(void *arg, int rank, const char *host, int stream, const char *line);

/* The event as one compact JSON object without newline; caller frees.
 * NULL on ENOMEM. */
char *dp_progress_event_json(const struct dp_ctl_event *ev);

/* Erase the live line, close every file, free.  NULL-safe. */
void dp_progress_free(struct dp_progress *p);

#endif
