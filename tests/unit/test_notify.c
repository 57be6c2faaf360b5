/* tests/unit/test_notify.c - run event webhooks: the exact JSON, delivery to
 * every URL, retries with backoff on 5xx, a final 4xx, a hanging and a dead
 * webhook that never block the caller, and URL redaction in logs.  The
 * webhooks are dp_test_httpd servers on 127.0.0.1 started by each test. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/dp_log.h"
#include "launcher/dp_launcher.h"
#include "launcher/dp_notify.h"
#include "tests/unit/dp_test.h"
#include "tests/unit/dp_test_httpd.h"

#define T0 1767323045.0 /* 2026-01-02T03:04:05Z */

static long long now_ms(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char *json_of(const struct dp_notify_event *ev)
{
	struct dp_err err = { 0 };
	char *s = dp_notify_event_json(ev, &err);

	if (!s)
		fail_msg("dp_notify_event_json: %s", err.msg);
	return s;
}

static void event_json_is_exact(void **state)
{
	struct dp_notify_event ev = { .kind = DP_NOTIFY_START,
				      .run_id = "r1",
				      .step = -1,
				      .rank = -1,
				      .exit_code = -1,
				      .time = T0 };
	char *s;

	(void)state;
	s = json_of(&ev);
	assert_string_equal(
		s, "{\"event\":\"start\",\"run_id\":\"r1\",\"time\":\"2026-01-02T03:04:05Z\","
		   "\"attempt\":0,\"text\":\"dpctl run r1 started\"}");
	free(s);

	ev = (struct dp_notify_event){ .kind = DP_NOTIFY_FAILURE,
				       .run_id = "r1",
				       .recipe = "recipes/x.yaml",
				       .step = 42,
				       .attempt = 1,
				       .rank = 3,
				       .exit_code = 70,
				       .root_cause =
					       "rank 3 (node2): worker: \"nan\" loss\tat step 42",
				       .time = T0 };
	s = json_of(&ev);
	assert_string_equal(
		s,
		"{\"event\":\"failure\",\"run_id\":\"r1\",\"time\":\"2026-01-02T03:04:05Z\","
		"\"attempt\":1,\"recipe\":\"recipes/x.yaml\",\"step\":42,\"rank\":3,"
		"\"exit_code\":70,\"root_cause\":\"rank 3 (node2): worker: \\\"nan\\\" loss\\tat step 42\","
		"\"text\":\"dpctl run r1 failed: rank 3 (node2): worker: \\\"nan\\\" loss\\tat step 42\"}");
	free(s);

	ev = (struct dp_notify_event){ .kind = DP_NOTIFY_FAILURE,
				       .run_id = "r1",
				       .step = -1,
				       .rank = 5,
				       .exit_code = 137,
				       .time = T0 };
	s = json_of(&ev);
	assert_non_null(strstr(s, "\"text\":\"dpctl run r1 failed: rank 5 exited with 137\"}"));
	free(s);

	ev = (struct dp_notify_event){ .kind = DP_NOTIFY_RESTART,
				       .run_id = "r1",
				       .step = 40,
				       .attempt = 2,
				       .rank = -1,
				       .exit_code = 70,
				       .time = T0 };
	s = json_of(&ev);
	/* exit_code belongs to failure/complete only */
	assert_string_equal(
		s, "{\"event\":\"restart\",\"run_id\":\"r1\",\"time\":\"2026-01-02T03:04:05Z\","
		   "\"attempt\":2,\"step\":40,\"text\":\"dpctl run r1 restarting (restart 2)\"}");
	free(s);

	ev = (struct dp_notify_event){ .kind = DP_NOTIFY_COMPLETE,
				       .run_id = "r\xc3\xa9",
				       .step = 100,
				       .rank = -1,
				       .exit_code = 0,
				       .time = T0 + 0.9 };
	s = json_of(&ev);
	assert_string_equal(
		s,
		"{\"event\":\"complete\",\"run_id\":\"r\\u00E9\",\"time\":\"2026-01-02T03:04:05Z\","
		"\"attempt\":0,\"step\":100,\"exit_code\":0,"
		"\"text\":\"dpctl run r\\u00E9 completed\"}");
	free(s);
}

static void bad_events_are_rejected(void **state)
{
	struct dp_err err = { 0 };
	struct dp_notify_event ev = { .kind = DP_NOTIFY_START, .rank = -1, .step = -1 };

	(void)state;
	assert_null(dp_notify_event_json(&ev, &err));
	assert_int_equal(err.code, EINVAL);
	assert_string_equal(err.msg, "notify: event without a run id");
	ev.run_id = "r";
	ev.kind = (enum dp_notify_kind)9;
	assert_null(dp_notify_event_json(&ev, &err));
	assert_string_equal(err.msg, "notify: unknown event kind 9");
	ev.kind = DP_NOTIFY_FAILURE;
	ev.root_cause = "bad \xff utf-8";
	assert_null(dp_notify_event_json(&ev, &err));
	assert_int_equal(err.code, EINVAL);
	assert_string_equal(dp_notify_kind_name(DP_NOTIFY_RESTART), "restart");
	assert_string_equal(dp_notify_kind_name((enum dp_notify_kind) - 1), "?");
}

static void bad_config_is_rejected(void **state)
{
	const char *urls[] = { "http://127.0.0.1:1/x", "ftp://example.com/hook" };
	struct dp_notify_cfg cfg = { .urls = urls, .n_urls = 2 };
	struct dp_notify *n = NULL;
	struct dp_err err = { 0 };

	(void)state;
	assert_int_equal(dp_notify_new(&cfg, &n, &err), -EINVAL);
	assert_null(n);
	assert_string_equal(err.msg,
			    "notify: 'ftp://example.com/hook' is not an http:// or https:// URL");
	cfg.n_urls = 1;
	cfg.backoff_ms = -1;
	assert_int_equal(dp_notify_new(&cfg, &n, &err), -EINVAL);
	assert_null(n);
	/* no webhooks at all: posting is a no-op */
	cfg = (struct dp_notify_cfg){ .n_urls = 0 };
	assert_int_equal(dp_notify_new(&cfg, &n, &err), 0);
	assert_int_equal(dp_notify_post(n, &(struct dp_notify_event){ .run_id = "r" }, &err), 0);
	assert_int_equal(dp_notify_flush(n, 10), 0);
	dp_notify_free(n);
	dp_notify_free(NULL);
}

static struct dp_notify *notifier(const char *const *urls, size_t n_urls, long timeout_ms,
				  int attempts, long backoff_ms, long backoff_max_ms)
{
	struct dp_notify_cfg cfg = { .urls = urls,
				     .n_urls = n_urls,
				     .timeout_ms = timeout_ms,
				     .connect_timeout_ms = timeout_ms,
				     .max_attempts = attempts,
				     .backoff_ms = backoff_ms,
				     .backoff_max_ms = backoff_max_ms };
	struct dp_notify *n = NULL;
	struct dp_err err = { 0 };

	if (dp_notify_new(&cfg, &n, &err))
		fail_msg("dp_notify_new: %s", err.msg);
	return n;
}

/* The notifier built from a recipe's notify.webhooks posts the exact body to
 * every URL (path and query kept) with Content-Type application/json. */
static void posts_to_every_webhook_of_a_recipe(void **state)
{
	static const struct dp_test_httpd_resp ok[] = { { .status = 200, .body = "ok" } };
	static const struct dp_test_httpd_resp created[] = { { .status = 204 } };
	struct dp_test_httpd *a = dp_test_httpd_start(ok, 1), *b = dp_test_httpd_start(created, 1);
	struct dp_notify_event ev = { .kind = DP_NOTIFY_COMPLETE,
				      .run_id = "run-7",
				      .step = 50,
				      .rank = -1,
				      .exit_code = 0,
				      .time = T0 };
	struct dp_recipe_diags d;
	struct dp_notify_stats st;
	struct dp_recipe *r = NULL;
	struct dp_err err = { 0 };
	struct dp_notify *n;
	char *text, *body;

	(void)state;
	assert_true(asprintf(&text,
			     "cluster: {hosts: localhost, gpus: 2}\n"
			     "model: {layers: 2, hidden: 8, heads: 2, experts: 2, top_k: 1}\n"
			     "parallel: {pp: 2, micro_batches: 4}\n"
			     "notify:\n  webhooks:\n    - %s/hooks/a?token=s3cret\n    - %s/b\n",
			     dp_test_httpd_url(a), dp_test_httpd_url(b)) > 0);
	dp_recipe_diags_init(&d);
	if (dp_recipe_load_mem("mem.yaml", text, strlen(text), &r, &d, &err))
		fail_msg("recipe: %s", err.msg);
	assert_int_equal(r->notify.n_webhooks, 2);
	n = notifier((const char *const *)r->notify.webhooks, r->notify.n_webhooks, 3000, 3, 50,
		     100);
	assert_int_equal(dp_notify_post(n, &ev, &err), 0);
	assert_int_equal(dp_notify_flush(n, 5000), 0);
	dp_notify_stats(n, &st);
	assert_int_equal(st.delivered, 2);
	assert_int_equal(st.failed, 0);
	assert_int_equal(st.retries, 0);
	assert_int_equal(st.pending, 0);

	body = json_of(&ev);
	assert_int_equal(dp_test_httpd_wait(a, 1, 1000), 1);
	assert_int_equal(dp_test_httpd_wait(b, 1, 1000), 1);
	assert_string_equal(dp_test_httpd_req(a, 0)->method, "POST");
	assert_string_equal(dp_test_httpd_req(a, 0)->path, "/hooks/a?token=s3cret");
	assert_string_equal(dp_test_httpd_req(a, 0)->content_type, "application/json");
	assert_string_equal(dp_test_httpd_req(a, 0)->body, body);
	assert_string_equal(dp_test_httpd_req(b, 0)->path, "/b");
	assert_string_equal(
		dp_test_httpd_req(b, 0)->body,
		"{\"event\":\"complete\",\"run_id\":\"run-7\",\"time\":\"2026-01-02T03:04:05Z\","
		"\"attempt\":0,\"step\":50,\"exit_code\":0,\"text\":\"dpctl run run-7 completed\"}");
	free(body);
	dp_notify_free(n);
	dp_recipe_free(r);
	dp_recipe_diags_release(&d);
	free(text);
	dp_test_httpd_stop(a);
	dp_test_httpd_stop(b);
}

/* 500 then 200: one retry after the backoff, the same body both times. */
static void retries_a_500_after_backoff(void **state)
{
	static const struct dp_test_httpd_resp script[] = { { .status = 500 }, { .status = 200 } };
	struct dp_test_httpd *h = dp_test_httpd_start(script, 2);
	const char *urls[] = { dp_test_httpd_url(h) };
	struct dp_notify *n = notifier(urls, 1, 3000, 5, 150, 1000);
	struct dp_notify_event ev = { .kind = DP_NOTIFY_START,
				      .run_id = "r2",
				      .step = -1,
				      .rank = -1,
				      .exit_code = -1,
				      .time = T0 };
	struct dp_notify_stats st;
	long long t0;

	(void)state;
	t0 = now_ms();
	assert_int_equal(dp_notify_post(n, &ev, NULL), 0);
	assert_int_equal(dp_notify_flush(n, 5000), 0);
	/* the retry waited for the backoff (150 ms) */
	assert_true(now_ms() - t0 >= 150);
	dp_notify_stats(n, &st);
	assert_int_equal(st.delivered, 1);
	assert_int_equal(st.retries, 1);
	assert_int_equal(st.failed, 0);
	assert_int_equal(dp_test_httpd_wait(h, 2, 1000), 2);
	assert_string_equal(dp_test_httpd_req(h, 0)->body, dp_test_httpd_req(h, 1)->body);
	assert_non_null(strstr(dp_test_httpd_req(h, 1)->body, "\"run_id\":\"r2\""));
	dp_notify_free(n);
	dp_test_httpd_stop(h);
}

/* Always 503: max_attempts attempts with capped backoff, then given up; a
 * 404 is final at once. */
static void gives_up_after_max_attempts_and_on_4xx(void **state)
{
	static const struct dp_test_httpd_resp busy[] = { { .status = 503 } };
	static const struct dp_test_httpd_resp gone[] = { { .status = 404 } };
	struct dp_test_httpd *h = dp_test_httpd_start(busy, 1), *g = dp_test_httpd_start(gone, 1);
	const char *urls[] = { dp_test_httpd_url(h), dp_test_httpd_url(g) };
	/* backoff 40, 80, then capped at 100: >= 220 ms over 4 attempts */
	struct dp_notify *n = notifier(urls, 2, 3000, 4, 40, 100);
	struct dp_notify_event ev = { .kind = DP_NOTIFY_RESTART,
				      .run_id = "r3",
				      .attempt = 1,
				      .step = -1,
				      .rank = -1,
				      .exit_code = -1 };
	struct dp_notify_stats st;
	long long t0 = now_ms(), dt;

	(void)state;
	assert_int_equal(dp_notify_post(n, &ev, NULL), 0);
	assert_int_equal(dp_notify_flush(n, 5000), 0);
	dt = now_ms() - t0;
	assert_true(dt >= 220);
	assert_true(dt < 3000);
	dp_notify_stats(n, &st);
	assert_int_equal(st.delivered, 0);
	assert_int_equal(st.failed, 2);
	assert_int_equal(st.retries, 3);
	assert_int_equal(dp_test_httpd_wait(h, 4, 1000), 4);
	assert_int_equal(dp_test_httpd_wait(g, 2, 200), 1);
	dp_notify_free(n);
	dp_test_httpd_stop(h);
	dp_test_httpd_stop(g);
}

/* A webhook that accepts and never answers, and one that refuses
 * connections: post and step return at once, the good webhook still gets
 * its event, and both bad ones end as failures within their timeouts. */
static void hanging_and_dead_webhooks_never_block(void **state)
{
	static const struct dp_test_httpd_resp hang[] = { { .status = 0 } };
	static const struct dp_test_httpd_resp ok[] = { { .status = 200 } };
	struct dp_test_httpd *h = dp_test_httpd_start(hang, 1), *good = dp_test_httpd_start(ok, 1);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	char dead[64];
	int s = socket(AF_INET, SOCK_STREAM, 0);
	const char *urls[3];
	struct dp_notify *n;
	struct dp_notify_event ev = { .kind = DP_NOTIFY_FAILURE,
				      .run_id = "r4",
				      .root_cause = "rank 0: killed",
				      .step = 3,
				      .rank = 0,
				      .exit_code = 137 };
	struct dp_notify_stats st;
	long long t0, dt;

	(void)state;
	/* a port that nothing listens on: bind, read the port, close */
	assert_true(s >= 0);
	assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(s, (struct sockaddr *)&a, &alen), 0);
	(void)snprintf(dead, sizeof(dead), "http://127.0.0.1:%u/x", ntohs(a.sin_port));
	(void)close(s);
	urls[0] = dp_test_httpd_url(h);
	urls[1] = dead;
	urls[2] = dp_test_httpd_url(good);
	n = notifier(urls, 3, 400, 2, 20, 20);

	t0 = now_ms();
	assert_int_equal(dp_notify_post(n, &ev, NULL), 0);
	assert_true(dp_notify_step(n, 0) > 0);
	assert_true(now_ms() - t0 < 300); /* never waited for the hanging server */
	assert_int_equal(dp_notify_flush(n, 5000), 0);
	dt = now_ms() - t0;
	/* two attempts of 400 ms each at most, plus backoff and slack */
	assert_true(dt >= 400);
	assert_true(dt < 3000);
	dp_notify_stats(n, &st);
	assert_int_equal(st.delivered, 1);
	assert_int_equal(st.failed, 2);
	assert_int_equal(dp_test_httpd_wait(h, 2, 1000), 2);
	assert_int_equal(dp_test_httpd_wait(good, 1, 1000), 1);
	assert_non_null(strstr(dp_test_httpd_req(h, 1)->body, "\"root_cause\":\"rank 0: killed\""));
	dp_notify_free(n);
	dp_test_httpd_stop(h);
	dp_test_httpd_stop(good);
}

/* flush() honours its deadline and leaves the rest pending; free() drops it. */
static void flush_deadline_is_bounded(void **state)
{
	static const struct dp_test_httpd_resp hang[] = { { .status = 0 } };
	struct dp_test_httpd *h = dp_test_httpd_start(hang, 1);
	const char *urls[] = { dp_test_httpd_url(h) };
	struct dp_notify *n = notifier(urls, 1, 10000, 3, 100, 100);
	struct dp_notify_stats st;
	long long t0;

	(void)state;
	assert_int_equal(
		dp_notify_post(n,
			       &(struct dp_notify_event){ .run_id = "r5", .step = -1, .rank = -1 },
			       NULL),
		0);
	t0 = now_ms();
	assert_int_equal(dp_notify_flush(n, 150), 1);
	assert_true(now_ms() - t0 >= 150);
	assert_true(now_ms() - t0 < 1000);
	dp_notify_stats(n, &st);
	assert_int_equal(st.pending, 1);
	dp_notify_free(n);
	dp_test_httpd_stop(h);
}

static void too_many_pending_is_counted(void **state)
{
	static const struct dp_test_httpd_resp hang[] = { { .status = 0 } };
	struct dp_test_httpd *h = dp_test_httpd_start(hang, 1);
	const char *urls[] = { dp_test_httpd_url(h), dp_test_httpd_url(h) };
	struct dp_notify_cfg cfg = { .urls = urls, .n_urls = 2, .max_pending = 1 };
	struct dp_notify_stats st;
	struct dp_err err = { 0 };
	struct dp_notify *n = NULL;

	(void)state;
	assert_int_equal(dp_notify_new(&cfg, &n, &err), 0);
	assert_int_equal(
		dp_notify_post(n, &(struct dp_notify_event){ .run_id = "r", .rank = -1 }, &err),
		-ENOBUFS);
	dp_notify_stats(n, &st);
	assert_int_equal(st.pending, 1);
	assert_int_equal(st.failed, 1);
	dp_notify_free(n);
	dp_test_httpd_stop(h);
}

/* Webhook URLs carry secrets: logs show only scheme and host. */
static void logs_hide_url_secrets(void **state)
{
	static const struct dp_test_httpd_resp gone[] = { { .status = 410 } };
	struct dp_test_httpd *h = dp_test_httpd_start(gone, 1);
	char url[256], redacted[256], want[300], *log = NULL;
	size_t loglen = 0;
	FILE *sink = open_memstream(&log, &loglen);
	const char *urls[1];
	struct dp_notify *n;

	(void)state;
	assert_string_equal(dp_notify_url_redact("https://u:pw@hooks.example.com/T0/B1/x?y=1",
						 redacted, sizeof(redacted)),
			    "https://hooks.example.com/...");
	assert_string_equal(dp_notify_url_redact("http://127.0.0.1:80", redacted, sizeof(redacted)),
			    "http://127.0.0.1:80");
	assert_string_equal(dp_notify_url_redact("https://h.example/abc", redacted, 12),
			    "https://h.e");
	(void)snprintf(url, sizeof(url), "%s/services/SECRET-TOKEN", dp_test_httpd_url(h));
	urls[0] = url;
	n = notifier(urls, 1, 2000, 3, 10, 10);
	assert_non_null(sink);
	dp_log_set_sink(sink);
	assert_int_equal(dp_log_configure("warn", NULL), 0);
	assert_int_equal(
		dp_notify_post(n, &(struct dp_notify_event){ .run_id = "r", .rank = -1 }, NULL), 0);
	assert_int_equal(dp_notify_flush(n, 3000), 0);
	dp_log_set_sink(NULL);
	(void)fclose(sink);
	(void)snprintf(want, sizeof(want),
		       "start event to '%s/...' not delivered after 1 attempt: HTTP 410",
		       dp_test_httpd_url(h));
	assert_non_null(strstr(log, want));
	assert_null(strstr(log, "SECRET"));
	free(log);
	dp_notify_free(n);
	dp_test_httpd_stop(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(event_json_is_exact),
		cmocka_unit_test(bad_events_are_rejected),
		cmocka_unit_test(bad_config_is_rejected),
		cmocka_unit_test(posts_to_every_webhook_of_a_recipe),
		cmocka_unit_test(retries_a_500_after_backoff),
		cmocka_unit_test(gives_up_after_max_attempts_and_on_4xx),
		cmocka_unit_test(hanging_and_dead_webhooks_never_block),
		cmocka_unit_test(flush_deadline_is_bounded),
		cmocka_unit_test(too_many_pending_is_counted),
		cmocka_unit_test(logs_hide_url_secrets),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
