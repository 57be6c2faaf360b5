/* launcher/notify.c - run event webhooks over one libcurl multi handle.
 *
 * Each (event, URL) pair is a delivery.  A delivery is either waiting
 * (easy == NULL, due at next_ms) or in flight (easy added to the multi
 * handle).  Nothing here sleeps longer than the caller allows, and no
 * failure propagates beyond a log line and a counter: a webhook is a
 * courtesy to the user, never a reason to stop training.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>

#include "common/dp_log.h"
#include "common/dp_util.h"
#include "launcher/curl_int.h"
#include "launcher/dp_notify.h"
#include "common/dp_banned.h"

struct delivery {
	struct delivery *next; /* FIFO list in post order */
	struct dp_notify *n;
	const char *url; /* borrowed from n->urls */
	char *body;	 /* owned */
	const char *kind;
	CURL *easy; /* non-NULL while in flight */
	int attempts;
	long long next_ms; /* when waiting: when to start the next attempt */
	char errbuf[CURL_ERROR_SIZE];
};

struct dp_notify {
	struct dp_notify_cfg cfg; /* defaults applied; urls points at our copies */
	char **urls;
	CURLM *multi;
	struct curl_slist *headers;
	struct delivery *head, *tail; /* pending deliveries, in post order */
	size_t n_d;
	struct dp_notify_stats st;
};

static const char *const kind_names[] = { "start", "failure", "restart", "complete" };

const char *dp_notify_kind_name(enum dp_notify_kind k)
{
	return (unsigned)k < DP_ARRAY_SIZE(kind_names) ? kind_names[k] : "?";
}

char *dp_notify_url_redact(const char *url, char *buf, size_t size)
{
	const char *sep = strstr(url, "://");
	const char *host = sep ? sep + 3 : url;
	const char *end, *at;
	int scheme_len = sep ? (int)(host - url) : 0;

	if (!size)
		return buf;
	end = host + strcspn(host, "/?#");
	at = memchr(host, '@', (size_t)(end - host));
	if (at)
		host = at + 1;
	if (snprintf(buf, size, "%.*s%.*s%s", scheme_len, url, (int)(end - host), host,
		     *end ? "/..." : "") < 0)
		buf[0] = '\0';
	return buf;
}

static int add_str(json_t *o, const char *k, const char *v)
{
	return v ? json_object_set_new(o, k, json_string(v)) : 0;
}

static int add_int(json_t *o, const char *k, long long v)
{
	return v >= 0 ? json_object_set_new(o, k, json_integer(v)) : 0;
}

static char *summary(const struct dp_notify_event *ev)
{
	char *s = NULL;
	int rc = -1;

	switch (ev->kind) {
	case DP_NOTIFY_START:
		rc = asprintf(&s, "dpctl run %s started", ev->run_id);
		break;
	case DP_NOTIFY_FAILURE:
		if (ev->root_cause)
			rc = asprintf(&s, "dpctl run %s failed: %s", ev->run_id, ev->root_cause);
		else if (ev->rank >= 0)
			rc = asprintf(&s, "dpctl run %s failed: rank %d exited with %d", ev->run_id,
				      ev->rank, ev->exit_code);
		else
			rc = asprintf(&s, "dpctl run %s failed", ev->run_id);
		break;
	case DP_NOTIFY_RESTART:
		if (ev->root_cause) /* a spare replaced a node */
			rc = asprintf(&s, "dpctl run %s restarting (restart %d): %s", ev->run_id,
				      ev->attempt, ev->root_cause);
		else
			rc = asprintf(&s, "dpctl run %s restarting (restart %d)", ev->run_id,
				      ev->attempt);
		break;
	case DP_NOTIFY_COMPLETE:
		rc = asprintf(&s, "dpctl run %s completed", ev->run_id);
		break;
	}
	return rc < 0 ? NULL : s;
}

char *dp_notify_event_json(const struct dp_notify_event *ev, struct dp_err *err)
{
	char when[32], *text = NULL, *out = NULL;
	double t = ev->time > 0 ? ev->time : (double)time(NULL);
	time_t secs = (time_t)floor(t);
	struct tm tm;
	json_t *o;
	int bad = 0;

	if (!ev->run_id || !*ev->run_id) {
		dp_err_set(err, EINVAL, "notify: event without a run id");
		return NULL;
	}
	if ((unsigned)ev->kind >= DP_ARRAY_SIZE(kind_names)) {
		dp_err_set(err, EINVAL, "notify: unknown event kind %d", (int)ev->kind);
		return NULL;
	}
	if (!gmtime_r(&secs, &tm) || !strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm))
		(void)snprintf(when, sizeof(when), "1970-01-01T00:00:00Z");
	text = summary(ev);
	o = json_object();
	if (!o || !text)
		goto nomem;
	bad |= add_str(o, "event", kind_names[ev->kind]);
	bad |= add_str(o, "run_id", ev->run_id);
	bad |= add_str(o, "time", when);
	bad |= add_int(o, "attempt", ev->attempt);
	bad |= add_str(o, "recipe", ev->recipe);
	bad |= add_int(o, "step", ev->step);
	bad |= add_int(o, "rank", ev->rank);
	if (ev->kind == DP_NOTIFY_FAILURE || ev->kind == DP_NOTIFY_COMPLETE)
		bad |= add_int(o, "exit_code", ev->exit_code);
	bad |= add_str(o, "root_cause", ev->root_cause);
	bad |= add_str(o, "text", text);
	if (bad)
		goto nomem;
	/* JSON_ENSURE_ASCII: a root-cause line may hold any bytes a worker wrote */
	out = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
	if (!out)
		goto nomem;
	json_decref(o);
	free(text);
	return out;
nomem:
	/* json_string() also fails on invalid UTF-8: report that rather than ENOMEM */
	json_decref(o);
	free(text);
	dp_err_set(err, EINVAL, "notify: cannot encode the event (out of memory or invalid UTF-8)");
	return NULL;
}

static int is_http_url(const char *s)
{
	return (strncmp(s, "http://", 7) == 0 && s[7]) || (strncmp(s, "https://", 8) == 0 && s[8]);
}

int dp_notify_new(const struct dp_notify_cfg *cfg, struct dp_notify **out, struct dp_err *err)
{
	struct dp_notify *n;
	int rc;

	if (cfg->timeout_ms < 0 || cfg->connect_timeout_ms < 0 || cfg->max_attempts < 0 ||
	    cfg->backoff_ms < 0 || cfg->backoff_max_ms < 0)
		return dp_err_set(err, EINVAL, "notify: negative setting");
	for (size_t i = 0; i < cfg->n_urls; i++)
		if (!cfg->urls[i] || !is_http_url(cfg->urls[i]))
			return dp_err_set(err, EINVAL,
					  "notify: '%s' is not an http:// or https:// URL",
					  cfg->urls[i] ? cfg->urls[i] : "(null)");
	rc = dp_curl_init(err);
	if (rc)
		return rc;
	n = calloc(1, sizeof(*n));
	if (!n)
		return dp_err_set(err, ENOMEM, "notify: out of memory");
	n->cfg = *cfg;
	n->cfg.timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : 5000;
	n->cfg.connect_timeout_ms = cfg->connect_timeout_ms ? cfg->connect_timeout_ms : 2000;
	n->cfg.max_attempts = cfg->max_attempts ? cfg->max_attempts : 5;
	n->cfg.backoff_ms = cfg->backoff_ms ? cfg->backoff_ms : 500;
	n->cfg.backoff_max_ms = cfg->backoff_max_ms ? cfg->backoff_max_ms : 30000;
	n->cfg.max_pending = cfg->max_pending ? cfg->max_pending : 256;
	rc = -ENOMEM;
	if (cfg->n_urls) {
		n->urls = calloc(cfg->n_urls, sizeof(*n->urls));
		if (!n->urls)
			goto err_free;
		for (size_t i = 0; i < cfg->n_urls; i++) {
			n->urls[i] = strdup(cfg->urls[i]);
			if (!n->urls[i])
				goto err_free;
		}
	}
	n->cfg.urls = (const char *const *)n->urls;
	n->multi = curl_multi_init();
	if (!n->multi)
		goto err_free;
	/* "Expect:" off: no 100-continue round trip for a small body */
	n->headers = curl_slist_append(NULL, "Content-Type: application/json");
	if (n->headers) {
		struct curl_slist *h = curl_slist_append(n->headers, "Expect:");

		if (!h)
			goto err_free;
		n->headers = h;
	}
	if (!n->headers)
		goto err_free;
	*out = n;
	return 0;
err_free:
	dp_notify_free(n);
	return dp_err_set(err, -rc, "notify: out of memory");
}

static void delivery_free(struct delivery *d)
{
	if (!d)
		return;
	if (d->easy) {
		(void)curl_multi_remove_handle(d->n->multi, d->easy);
		curl_easy_cleanup(d->easy);
	}
	free(d->body);
	free(d);
}

/* Remove d (which must be in the list) and free it. */
static void drop(struct dp_notify *n, struct delivery *d)
{
	struct delivery **pp = &n->head, *prev = NULL;

	while (*pp && *pp != d) {
		prev = *pp;
		pp = &(*pp)->next;
	}
	if (*pp) {
		*pp = d->next;
		if (n->tail == d)
			n->tail = prev;
		n->n_d--;
	}
	delivery_free(d);
}

static int start(struct dp_notify *n, struct delivery *d)
{
	CURL *e = curl_easy_init();
	int ok = 1;

	if (!e)
		return -ENOMEM;
	d->errbuf[0] = '\0';
	ok &= curl_easy_setopt(e, CURLOPT_URL, d->url) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_POSTFIELDS, d->body) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(d->body)) ==
	      CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_HTTPHEADER, n->headers) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_USERAGENT, "dpctl/" DP_VERSION) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, n->cfg.timeout_ms) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, n->cfg.connect_timeout_ms) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, dp_curl_discard) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, d->errbuf) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_PRIVATE, d) == CURLE_OK;
	if (!ok || curl_multi_add_handle(n->multi, e) != CURLM_OK) {
		curl_easy_cleanup(e);
		return -ENOMEM;
	}
	d->easy = e;
	d->attempts++;
	if (d->attempts > 1)
		n->st.retries++;
	return 0;
}

static long long backoff(const struct dp_notify *n, int attempts)
{
	long long ms = n->cfg.backoff_ms;

	for (int i = 1; i < attempts && ms < n->cfg.backoff_max_ms; i++)
		ms *= 2;
	return ms < n->cfg.backoff_max_ms ? ms : n->cfg.backoff_max_ms;
}

/* A finished attempt: delivered, retry later, or give up. */
static void finish(struct dp_notify *n, struct delivery *d, CURLcode res)
{
	char url[256], why[CURL_ERROR_SIZE + 64];
	long status = 0;
	int retry;

	(void)curl_easy_getinfo(d->easy, CURLINFO_RESPONSE_CODE, &status);
	(void)curl_multi_remove_handle(n->multi, d->easy);
	curl_easy_cleanup(d->easy);
	d->easy = NULL;
	dp_notify_url_redact(d->url, url, sizeof(url));
	if (res == CURLE_OK && status >= 200 && status < 300) {
		n->st.delivered++;
		dp_log(DP_LOG_DEBUG, "notify", "%s event delivered to '%s' (HTTP %ld, attempt %d)",
		       d->kind, url, status, d->attempts);
		drop(n, d);
		return;
	}
	if (res != CURLE_OK) {
		retry = 1;
		(void)snprintf(why, sizeof(why), "%s",
			       d->errbuf[0] ? d->errbuf : curl_easy_strerror(res));
	} else {
		retry = status == 408 || status == 429 || status >= 500 || status < 200;
		(void)snprintf(why, sizeof(why), "HTTP %ld", status);
	}
	if (retry && d->attempts < n->cfg.max_attempts) {
		long long wait = backoff(n, d->attempts);

		d->next_ms = dp_curl_now_ms() + wait;
		dp_log(DP_LOG_INFO, "notify",
		       "%s event to '%s': attempt %d failed: %s; retrying in %lld ms", d->kind, url,
		       d->attempts, why, wait);
		return;
	}
	n->st.failed++;
	dp_log(DP_LOG_WARN, "notify", "%s event to '%s' not delivered after %d attempt%s: %s",
	       d->kind, url, d->attempts, d->attempts == 1 ? "" : "s", why);
	drop(n, d);
}

/* Start waiting deliveries that are due; returns ms until the next one is
 * due (-1: none waiting). */
static long long start_due(struct dp_notify *n)
{
	long long now = dp_curl_now_ms(), next = -1;

	for (struct delivery *d = n->head; d; d = d->next) {
		if (d->easy)
			continue;
		if (d->next_ms <= now) {
			if (start(n, d) == 0)
				continue;
			/* no memory for a handle now: try again shortly */
			d->next_ms = now + 100;
		}
		if (next < 0 || d->next_ms - now < next)
			next = d->next_ms - now;
	}
	return next;
}

static void progress(struct dp_notify *n)
{
	struct CURLMsg *m;
	int running, left;

	(void)curl_multi_perform(n->multi, &running);
	while ((m = curl_multi_info_read(n->multi, &left))) {
		struct delivery *d = NULL;

		if (m->msg != CURLMSG_DONE)
			continue;
		(void)curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&d);
		if (d)
			finish(n, d, m->data.result);
	}
}

int dp_notify_post(struct dp_notify *n, const struct dp_notify_event *ev, struct dp_err *err)
{
	char *body;
	int rc = 0;

	if (!n->cfg.n_urls)
		return 0;
	body = dp_notify_event_json(ev, err);
	if (!body)
		return -(err ? err->code : EINVAL);
	for (size_t i = 0; i < n->cfg.n_urls; i++) {
		struct delivery *d;

		if (n->n_d >= n->cfg.max_pending) {
			n->st.failed += n->cfg.n_urls - i;
			dp_log(DP_LOG_WARN, "notify",
			       "%s event dropped for %zu webhook(s): %zu deliveries already pending",
			       kind_names[ev->kind], n->cfg.n_urls - i, n->n_d);
			rc = dp_err_set(err, ENOBUFS, "notify: too many pending deliveries (%zu)",
					n->n_d);
			break;
		}
		d = calloc(1, sizeof(*d));
		if (!d)
			goto nomem;
		d->body = i + 1 == n->cfg.n_urls ? body : strdup(body);
		if (!d->body) {
			free(d);
			goto nomem;
		}
		if (d->body == body)
			body = NULL;
		d->n = n;
		d->url = n->cfg.urls[i];
		d->kind = kind_names[ev->kind];
		if (n->tail)
			n->tail->next = d;
		else
			n->head = d;
		n->tail = d;
		n->n_d++;
	}
	free(body);
	(void)start_due(n);
	progress(n);
	return rc;
nomem:
	free(body);
	return dp_err_set(err, ENOMEM, "notify: out of memory");
}

long dp_notify_step(struct dp_notify *n, long timeout_ms)
{
	(void)start_due(n);
	progress(n);
	if (timeout_ms > 0 && n->n_d > 0) {
		long long next = start_due(n), wait = timeout_ms;

		if (next >= 0 && next < wait)
			wait = next;
		if (wait > INT_MAX)
			wait = INT_MAX;
		/* curl_multi_poll() also sleeps when no transfer is in flight,
		 * and wakes early for curl's own timers */
		(void)curl_multi_poll(n->multi, NULL, 0, (int)wait, NULL);
		(void)start_due(n);
		progress(n);
	}
	return (long)n->n_d;
}

long dp_notify_flush(struct dp_notify *n, long deadline_ms)
{
	long long end = dp_curl_now_ms() + (deadline_ms > 0 ? deadline_ms : 0);

	for (;;) {
		long long left = end - dp_curl_now_ms();
		long pending = dp_notify_step(n, left > 0 ? (long)left : 0);

		if (pending == 0 || left <= 0)
			return pending;
	}
}

void dp_notify_stats(const struct dp_notify *n, struct dp_notify_stats *out)
{
	*out = n->st;
	out->pending = n->n_d;
}

void dp_notify_free(struct dp_notify *n)
{
	if (!n)
		return;
	while (n->head) {
		struct delivery *d = n->head;
		char url[256];

		n->head = d->next;
		dp_log(DP_LOG_WARN, "notify", "%s event to '%s' dropped: still pending at exit",
		       d->kind, dp_notify_url_redact(d->url, url, sizeof(url)));
		delivery_free(d);
	}
	if (n->multi)
		(void)curl_multi_cleanup(n->multi);
	curl_slist_free_all(n->headers);
	for (size_t i = 0; n->urls && i < n->cfg.n_urls; i++)
		free(n->urls[i]);
	free(n->urls);
	free(n);
}
