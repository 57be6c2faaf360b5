/* launcher/dp_notify.h - run event webhooks: JSON POSTs that never block or stop a run.
 *
 * The controller creates one notifier per run from the recipe's
 * notify.webhooks and posts an event at run start, on a failure (with the
 * root-cause line), on each restart and on completion.  Every event becomes
 * one delivery per webhook URL; deliveries run concurrently on one libcurl
 * multi handle, so posting never blocks and the controller drives the
 * transfers from its own loop:
 *
 *   struct dp_notify_cfg cfg = { .urls = (const char *const *)r->notify.webhooks,
 *                                .n_urls = r->notify.n_webhooks };
 *   struct dp_notify *n;
 *   dp_notify_new(&cfg, &n, &err);
 *   dp_notify_post(n, &(struct dp_notify_event){ .kind = DP_NOTIFY_START,
 *                                                .run_id = id }, NULL);
 *   for (;;) { ... dp_notify_step(n, 0); ... }   // or a small timeout when idle
 *   dp_notify_flush(n, 5000);                      // at the end: bounded wait
 *   dp_notify_free(n);
 *
 * Delivery: each attempt has a total timeout (cfg.timeout_ms) and a connect
 * timeout; a connection failure, a timeout, HTTP 408, 429 or 5xx is retried
 * after backoff_ms, 2*backoff_ms, 4*backoff_ms, ... capped at backoff_max_ms,
 * up to max_attempts attempts in all.  Other 4xx answers are final (the URL
 * or payload is wrong; retrying cannot help).  Redirects are not followed.
 * A delivery that gives up is logged (dp_log warn, module "notify", with the
 * URL's path hidden since webhook URLs often carry a secret token) and
 * counted in dp_notify_stats(); it is never an error of the run.
 *
 * Threads: one notifier belongs to one thread (the controller loop).
 */
#ifndef DP_NOTIFY_H
#define DP_NOTIFY_H

#include <stddef.h>

#include "common/dp_err.h"

struct dp_notify; /* opaque: dp_notify_new() creates, dp_notify_free() frees */

enum dp_notify_kind {
	DP_NOTIFY_START,    /* "start": workers are being launched */
	DP_NOTIFY_FAILURE,  /* "failure": a rank failed; root_cause says why */
	DP_NOTIFY_RESTART,  /* "restart": the run restarts (attempt = restart number) */
	DP_NOTIFY_COMPLETE, /* "complete": the run finished successfully */
};

/* "start", "failure", "restart", "complete"; "?" if out of range. */
const char *dp_notify_kind_name(enum dp_notify_kind k);

/* One run event.  Strings are borrowed for the call (the body is built at
 * once).  Fields that do not apply are left out of the JSON: NULL strings,
 * negative numbers. */
struct dp_notify_event {
	enum dp_notify_kind kind;
	const char *run_id;	/* required */
	const char *recipe;	/* recipe path or URL, or NULL */
	long step;		/* last step reached; < 0: unknown (left out) */
	int attempt;		/* 0 for the first launch, n for the n-th restart */
	int rank;		/* failing rank; < 0: none (left out) */
	int exit_code;		/* failure/complete: the run's exit code; < 0: left out */
	const char *root_cause; /* failure: the root-cause line; restart: the spare
				 * replacement line ("restart 1: node X failed
				 * (why); replaced by spare Y"), or NULL */
	double time;		/* seconds since the epoch; 0: now */
};

/* The JSON body sent for @ev, compact, keys in this order:
 *   {"event":"failure","run_id":"r1","time":"2026-01-02T03:04:05Z",
 *    "attempt":1,"recipe":"x.yaml","step":42,"rank":3,"exit_code":70,
 *    "root_cause":"rank 3: ...","text":"dpctl run r1 failed: rank 3: ..."}
 * "text" is a one-line human summary, so chat webhooks (Slack, Mattermost)
 * that show a "text" field need no adapter.  Returns a string the caller
 * frees, or NULL with @err set (-EINVAL: no run_id or bad kind; -ENOMEM). */
char *dp_notify_event_json(const struct dp_notify_event *ev, struct dp_err *err);

struct dp_notify_cfg {
	const char *const *urls; /* http:// or https:// webhook URLs; copied */
	size_t n_urls;		 /* 0 is fine: every post is a no-op */
	long timeout_ms;	 /* per attempt, whole transfer; 0: 5000 */
	long connect_timeout_ms; /* per attempt; 0: 2000 */
	int max_attempts;	 /* attempts per delivery, first included; 0: 5 */
	long backoff_ms;	 /* delay before the first retry; 0: 500 */
	long backoff_max_ms;	 /* cap on the delay; 0: 30000 */
	size_t max_pending;	 /* deliveries queued or in flight; 0: 256 */
};

/* Counters since dp_notify_new(). */
struct dp_notify_stats {
	unsigned long delivered; /* got a 2xx answer */
	unsigned long failed;	 /* gave up: attempts used up, a final 4xx, dropped */
	unsigned long retries;	 /* attempts after a delivery's first */
	unsigned long pending;	 /* queued, waiting for a retry, or in flight */
};

/* 0 and *out set, or -EINVAL (a URL is not http(s)://, a negative setting),
 * -ENOMEM, with @err set.  Initialises libcurl once per process. */
int dp_notify_new(const struct dp_notify_cfg *cfg, struct dp_notify **out, struct dp_err *err);

/* Queue @ev for every URL and start the transfers (no waiting).  0, or
 * -EINVAL (bad event), -ENOMEM, -ENOBUFS (max_pending reached: the event is
 * dropped for the URLs that did not fit and counted as failed).  Never
 * fatal for a run: callers may ignore the result. */
int dp_notify_post(struct dp_notify *n, const struct dp_notify_event *ev, struct dp_err *err);

/* Drive the transfers: make progress, then wait up to @timeout_ms (0: do
 * not wait) for network activity or the next retry, and make progress
 * again.  Returns the number of deliveries still pending (>= 0). */
long dp_notify_step(struct dp_notify *n, long timeout_ms);

/* Step until nothing is pending or @deadline_ms milliseconds have passed.
 * Deliveries still pending then stay queued (dp_notify_free() drops them).
 * Returns the number still pending (0: all delivered or given up). */
long dp_notify_flush(struct dp_notify *n, long deadline_ms);

void dp_notify_stats(const struct dp_notify *n, struct dp_notify_stats *out);

/* Abort what is in flight (each dropped delivery is logged) and free. NULL-safe. */
void dp_notify_free(struct dp_notify *n);

/* For logs: @url with the userinfo, path and query replaced by "...", e.g.
 * "https://hooks.example.com/..." (webhook URLs carry secrets).  Writes at
 * most @size bytes to @buf, always NUL-terminated; returns @buf. */
char *dp_notify_url_redact(const char *url, char *buf, size_t size);

#endif
