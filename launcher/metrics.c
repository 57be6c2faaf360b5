/* launcher/metrics.c - Prometheus text exposition: render, atomic file, push.
 *
 * Values are kept per rank in a growing array indexed by rank.  The text is
 * rendered afresh for each write/push (a few hundred ranks at most), so the
 * file and the push always agree.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>

#include "common/dp_log.h"
#include "common/dp_util.h"
#include "launcher/curl_int.h"
#include "launcher/dp_metrics.h"
#include "common/dp_banned.h"

#define TEXT_CAP (64u << 20)

struct slot {
	unsigned set; /* DP_METRICS_* given so far */
	char *host;
	double v[6]; /* indexed like families[] */
};

static const struct family {
	unsigned bit;
	const char *name, *type, *help;
} families[] = {
	{ DP_METRICS_STEP_SECONDS, "dpctl_step_seconds", "gauge",
	  "Duration of the last training step in seconds." },
	{ DP_METRICS_TOKENS_PER_SECOND, "dpctl_tokens_per_second", "gauge",
	  "Training throughput over the last step in tokens per second." },
	{ DP_METRICS_LOSS, "dpctl_loss", "gauge", "Training loss at the last step." },
	{ DP_METRICS_BUBBLE_RATIO, "dpctl_bubble_ratio", "gauge",
	  "Fraction of the last step the rank's pipeline stage was idle (0 to 1)." },
	{ DP_METRICS_A2A_BYTES, "dpctl_a2a_bytes_total", "counter",
	  "All-to-all bytes sent by the rank since the run started." },
	{ DP_METRICS_HEARTBEAT_LAG, "dpctl_heartbeat_lag_seconds", "gauge",
	  "Seconds since the controller last heard the rank's heartbeat." },
};

struct dp_metrics {
	char *run_id, *run_dir, *target;
	double interval_s;
	long timeout_ms;
	struct slot *slots;
	size_t n_slots;
	long long last_tick_ms; /* -1: never */
	/* the push in flight */
	CURLM *multi;
	CURL *easy;
	struct curl_slist *headers;
	struct dp_buf body;
	char errbuf[CURL_ERROR_SIZE];
	int last_push; /* 1: none finished yet */
};

/* Pushgateway grouping-key values: plain when URL-safe, else base64url
 * with the "@base64" suffix on the label name (the Pushgateway convention,
 * which also carries '/' and the empty string). */
static int add_label_path(struct dp_buf *b, const char *name, const char *value)
{
	static const char b64[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t n = strlen(value);
	int rc;

	if (n && strspn(value, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
			       "0123456789._-") == n)
		return dp_buf_addf(b, "/%s/%s", name, value);
	rc = dp_buf_addf(b, "/%s@base64/", name);
	if (!rc && n == 0)
		rc = dp_buf_adds(b, "=");
	for (size_t i = 0; !rc && i < n; i += 3) {
		unsigned long w = (unsigned long)(unsigned char)value[i] << 16;
		char q[5] = "====";

		if (i + 1 < n)
			w |= (unsigned long)(unsigned char)value[i + 1] << 8;
		if (i + 2 < n)
			w |= (unsigned char)value[i + 2];
		q[0] = b64[(w >> 18) & 63];
		q[1] = b64[(w >> 12) & 63];
		if (i + 1 < n)
			q[2] = b64[(w >> 6) & 63];
		if (i + 2 < n)
			q[3] = b64[w & 63];
		rc = dp_buf_adds(b, q);
	}
	return rc;
}

static int is_http_url(const char *s)
{
	return (strncmp(s, "http://", 7) == 0 && s[7]) || (strncmp(s, "https://", 8) == 0 && s[8]);
}

int dp_metrics_new(const struct dp_metrics_cfg *cfg, struct dp_metrics **out, struct dp_err *err)
{
	struct dp_metrics *m;
	int rc = -ENOMEM;

	if (!cfg->run_id)
		return dp_err_set(err, EINVAL, "metrics: no run id");
	if (cfg->push_url && !is_http_url(cfg->push_url))
		return dp_err_set(err, EINVAL, "metrics: push URL '%s' is not http:// or https://",
				  cfg->push_url);
	if (cfg->interval_s < 0 || !isfinite(cfg->interval_s) || cfg->timeout_ms < 0)
		return dp_err_set(err, EINVAL, "metrics: negative interval or timeout");
	if (cfg->push_url) {
		rc = dp_curl_init(err);
		if (rc)
			return rc;
		rc = -ENOMEM;
	}
	m = calloc(1, sizeof(*m));
	if (!m)
		return dp_err_set(err, ENOMEM, "metrics: out of memory");
	dp_buf_init(&m->body, TEXT_CAP);
	m->interval_s = cfg->interval_s > 0 ? cfg->interval_s : 10;
	m->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 5000;
	m->last_tick_ms = -1;
	m->last_push = 1;
	m->run_id = strdup(cfg->run_id);
	if (!m->run_id)
		goto err_free;
	if (cfg->run_dir) {
		m->run_dir = strdup(cfg->run_dir);
		if (!m->run_dir)
			goto err_free;
	}
	if (cfg->push_url) {
		struct dp_buf t;
		size_t ulen = strlen(cfg->push_url);

		while (ulen > 0 && cfg->push_url[ulen - 1] == '/')
			ulen--;
		dp_buf_init(&t, 16384);
		/* a URL that already names the job (".../metrics/job/NAME") keeps it */
		if (dp_buf_add(&t, cfg->push_url, ulen) ||
		    (!strstr(dp_buf_str(&t), "/metrics/job/") &&
		     dp_buf_adds(&t, "/metrics/job/dpctl")) ||
		    add_label_path(&t, "run", cfg->run_id)) {
			dp_buf_release(&t);
			goto err_free;
		}
		m->target = dp_buf_detach(&t, NULL);
		m->multi = curl_multi_init();
		m->headers = curl_slist_append(NULL, "Content-Type: text/plain; version=0.0.4");
		if (!m->multi || !m->headers)
			goto err_free;
	}
	*out = m;
	return 0;
err_free:
	dp_metrics_free(m);
	return dp_err_set(err, -rc, "metrics: out of memory");
}

int dp_metrics_set(struct dp_metrics *m, int rank, const struct dp_metrics_rank *v,
		   struct dp_err *err)
{
	struct slot *s;

	if (rank < 0)
		return dp_err_set(err, EINVAL, "metrics: negative rank %d", rank);
	if ((size_t)rank >= m->n_slots) {
		size_t n = (size_t)rank + 1;
		struct slot *p = realloc(m->slots, n * sizeof(*p));

		if (!p)
			return dp_err_set(err, ENOMEM, "metrics: out of memory");
		memset(p + m->n_slots, 0, (n - m->n_slots) * sizeof(*p));
		m->slots = p;
		m->n_slots = n;
	}
	s = &m->slots[rank];
	if (v->host && (!s->host || strcmp(s->host, v->host) != 0)) {
		char *h = strdup(v->host);

		if (!h)
			return dp_err_set(err, ENOMEM, "metrics: out of memory");
		free(s->host);
		s->host = h;
	}
	{
		const double vals[] = {
			v->step_seconds, v->tokens_per_second, v->loss,
			v->bubble_ratio, v->a2a_bytes_total,   v->heartbeat_lag_seconds
		};

		for (size_t i = 0; i < DP_ARRAY_SIZE(families); i++)
			if (v->set & families[i].bit)
				s->v[i] = vals[i];
	}
	s->set |= v->set &
		  (DP_METRICS_STEP_SECONDS | DP_METRICS_TOKENS_PER_SECOND | DP_METRICS_LOSS |
		   DP_METRICS_BUBBLE_RATIO | DP_METRICS_A2A_BYTES | DP_METRICS_HEARTBEAT_LAG);
	return 0;
}

/* Shortest "%.*g" that reads back as the same double (Prometheus parses
 * values with Go's ParseFloat, which accepts this form). */
static int add_value(struct dp_buf *b, double x)
{
	char tmp[40];

	if (isnan(x))
		return dp_buf_adds(b, "NaN");
	if (isinf(x))
		return dp_buf_adds(b, x > 0 ? "+Inf" : "-Inf");
	for (int prec = 1; prec <= 17; prec++) {
		(void)snprintf(tmp, sizeof(tmp), "%.*g", prec, x);
		if (strtod(tmp, NULL) == x)
			break;
	}
	return dp_buf_adds(b, tmp);
}

/* A label value between double quotes: backslash, double quote and newline escaped. */
static int add_label_value(struct dp_buf *b, const char *s)
{
	int rc = 0;

	for (; !rc && *s; s++) {
		if (*s == '\\')
			rc = dp_buf_adds(b, "\\\\");
		else if (*s == '"')
			rc = dp_buf_adds(b, "\\\"");
		else if (*s == '\n')
			rc = dp_buf_adds(b, "\\n");
		else
			rc = dp_buf_add(b, s, 1);
	}
	return rc;
}

int dp_metrics_render(const struct dp_metrics *m, struct dp_buf *out)
{
	int rc = 0;

	for (size_t f = 0; !rc && f < DP_ARRAY_SIZE(families); f++) {
		const struct family *fam = &families[f];
		int header = 0;

		for (size_t r = 0; !rc && r < m->n_slots; r++) {
			const struct slot *s = &m->slots[r];

			if (!(s->set & fam->bit))
				continue;
			if (!header) {
				rc = dp_buf_addf(out, "# HELP %s %s\n# TYPE %s %s\n", fam->name,
						 fam->help, fam->name, fam->type);
				header = 1;
			}
			if (!rc)
				rc = dp_buf_addf(out, "%s{rank=\"%zu\"", fam->name, r);
			if (!rc && s->host) {
				rc = dp_buf_adds(out, ",host=\"");
				if (!rc)
					rc = add_label_value(out, s->host);
				if (!rc)
					rc = dp_buf_adds(out, "\"");
			}
			if (!rc)
				rc = dp_buf_adds(out, "} ");
			if (!rc)
				rc = add_value(out, s->v[f]);
			if (!rc)
				rc = dp_buf_adds(out, "\n");
		}
	}
	return rc;
}

int dp_metrics_write(struct dp_metrics *m, struct dp_err *err)
{
	char *tmp = NULL, *path = NULL;
	struct dp_buf text;
	int fd = -1, rc;

	if (!m->run_dir)
		return 0;
	dp_buf_init(&text, TEXT_CAP);
	if (dp_metrics_render(m, &text) || asprintf(&path, "%s/metrics.prom", m->run_dir) < 0) {
		path = NULL;
		rc = dp_err_set(err, ENOMEM, "metrics: out of memory");
		goto out;
	}
	if (asprintf(&tmp, "%s/.metrics.prom.XXXXXX", m->run_dir) < 0) {
		tmp = NULL;
		rc = dp_err_set(err, ENOMEM, "metrics: out of memory");
		goto out;
	}
	fd = mkstemp(tmp);
	if (fd < 0) {
		int e = errno;

		free(tmp);
		tmp = NULL;
		rc = dp_err_set(err, e, "metrics: cannot create a file in '%s': %s", m->run_dir,
				strerror(e));
		goto out;
	}
	{
		const char *p = dp_buf_str(&text);
		size_t left = text.len;

		while (left > 0) {
			ssize_t w = write(fd, p, left);

			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0) {
				int e = errno;

				rc = dp_err_set(err, e, "metrics: cannot write '%s': %s", tmp,
						strerror(e));
				goto out;
			}
			p += w;
			left -= (size_t)w;
		}
	}
	/* mkstemp makes 0600; the file is for collectors and people too */
	if (fchmod(fd, 0644) || close(fd)) {
		int e = errno;

		fd = -1;
		rc = dp_err_set(err, e, "metrics: cannot write '%s': %s", tmp, strerror(e));
		goto out;
	}
	fd = -1;
	if (rename(tmp, path)) {
		int e = errno;

		rc = dp_err_set(err, e, "metrics: cannot rename '%s' to '%s': %s", tmp, path,
				strerror(e));
		goto out;
	}
	free(tmp);
	tmp = NULL;
	rc = 0;
out:
	if (fd >= 0)
		(void)close(fd);
	if (tmp)
		(void)unlink(tmp);
	if (rc)
		dp_log(DP_LOG_WARN, "metrics", "%s", err ? err->msg : "cannot write metrics.prom");
	free(tmp);
	free(path);
	dp_buf_release(&text);
	return rc;
}

static void push_done(struct dp_metrics *m, CURLcode res)
{
	long status = 0;

	(void)curl_easy_getinfo(m->easy, CURLINFO_RESPONSE_CODE, &status);
	(void)curl_multi_remove_handle(m->multi, m->easy);
	curl_easy_cleanup(m->easy);
	m->easy = NULL;
	if (res != CURLE_OK) {
		m->last_push = dp_curl_errno(res);
		dp_log(DP_LOG_WARN, "metrics", "push to '%s' failed: %s", m->target,
		       m->errbuf[0] ? m->errbuf : curl_easy_strerror(res));
	} else if (status < 200 || status > 299) {
		m->last_push = -EIO;
		dp_log(DP_LOG_WARN, "metrics", "push to '%s' failed: HTTP %ld", m->target, status);
	} else {
		m->last_push = 0;
		dp_log(DP_LOG_DEBUG, "metrics", "pushed to '%s' (HTTP %ld)", m->target, status);
	}
}

static void progress(struct dp_metrics *m)
{
	struct CURLMsg *msg;
	int running, left;

	if (!m->easy)
		return;
	(void)curl_multi_perform(m->multi, &running);
	while ((msg = curl_multi_info_read(m->multi, &left)))
		if (msg->msg == CURLMSG_DONE && msg->easy_handle == m->easy)
			push_done(m, msg->data.result);
}

int dp_metrics_push(struct dp_metrics *m, struct dp_err *err)
{
	CURL *e;
	int ok = 1;

	if (!m->target)
		return 0;
	if (m->easy)
		return dp_err_set(err, EBUSY, "metrics: the previous push is still in flight");
	dp_buf_reset(&m->body);
	if (dp_metrics_render(m, &m->body))
		return dp_err_set(err, ENOMEM, "metrics: out of memory");
	e = curl_easy_init();
	if (!e)
		return dp_err_set(err, ENOMEM, "metrics: out of memory");
	m->errbuf[0] = '\0';
	ok &= curl_easy_setopt(e, CURLOPT_URL, m->target) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "PUT") == CURLE_OK;
	/* POSTFIELDS copies nothing: m->body lives until the next push */
	ok &= curl_easy_setopt(e, CURLOPT_POSTFIELDS, dp_buf_str(&m->body)) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)m->body.len) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_HTTPHEADER, m->headers) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_USERAGENT, "dpctl/" DP_VERSION) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, m->timeout_ms) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, dp_curl_discard) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, m->errbuf) == CURLE_OK;
	if (!ok || curl_multi_add_handle(m->multi, e) != CURLM_OK) {
		curl_easy_cleanup(e);
		return dp_err_set(err, ENOMEM, "metrics: out of memory");
	}
	m->easy = e;
	progress(m);
	return 0;
}

int dp_metrics_tick(struct dp_metrics *m)
{
	long long now = dp_curl_now_ms();

	if (m->last_tick_ms >= 0 && (double)(now - m->last_tick_ms) < m->interval_s * 1000.0)
		return 0;
	m->last_tick_ms = now;
	(void)dp_metrics_write(m, NULL);
	(void)dp_metrics_push(m, NULL); /* -EBUSY: a slow gateway; skip this round */
	return 1;
}

int dp_metrics_step(struct dp_metrics *m, long timeout_ms)
{
	progress(m);
	if (m->easy && timeout_ms > 0) {
		(void)curl_multi_poll(m->multi, NULL, 0,
				      timeout_ms > INT_MAX ? INT_MAX : (int)timeout_ms, NULL);
		progress(m);
	}
	return m->easy != NULL;
}

int dp_metrics_flush(struct dp_metrics *m, long deadline_ms, struct dp_err *err)
{
	long long end = dp_curl_now_ms() + (deadline_ms > 0 ? deadline_ms : 0);
	struct dp_err e = { 0 };
	int rc, prc;

	rc = dp_metrics_write(m, &e);
	/* a push still in flight carries older values: let it finish first */
	while (m->easy && dp_curl_now_ms() < end)
		(void)dp_metrics_step(m, (long)(end - dp_curl_now_ms()));
	prc = m->target ? dp_metrics_push(m, rc ? NULL : &e) : 0;
	while (m->easy && dp_curl_now_ms() < end)
		(void)dp_metrics_step(m, (long)(end - dp_curl_now_ms()));
	if (!rc && !prc && m->easy)
		prc = dp_err_set(&e, ETIMEDOUT, "metrics: push to '%s' did not finish in %ld ms",
				 m->target, deadline_ms);
	else if (!rc && !prc && m->target && m->last_push < 0)
		prc = dp_err_set(&e, -m->last_push, "metrics: push to '%s' failed: %s", m->target,
				 m->errbuf[0] ? m->errbuf : strerror(-m->last_push));
	if (!rc)
		rc = prc;
	if (rc && err)
		*err = e;
	return rc;
}

int dp_metrics_last_push(const struct dp_metrics *m)
{
	return m->last_push;
}

const char *dp_metrics_push_target(const struct dp_metrics *m)
{
	return m->target;
}

void dp_metrics_free(struct dp_metrics *m)
{
	if (!m)
		return;
	if (m->easy) {
		(void)curl_multi_remove_handle(m->multi, m->easy);
		curl_easy_cleanup(m->easy);
	}
	if (m->multi)
		(void)curl_multi_cleanup(m->multi);
	curl_slist_free_all(m->headers);
	for (size_t i = 0; i < m->n_slots; i++)
		free(m->slots[i].host);
	free(m->slots);
	dp_buf_release(&m->body);
	free(m->run_id);
	free(m->run_dir);
	free(m->target);
	free(m);
}
