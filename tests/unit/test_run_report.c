/* tests/unit/test_run_report.c - what a run reports while it runs: webhooks
 * (start, failure with the root cause, restart, completion) and metrics
 * (metrics.prom in the run dir, a push) from `dpctl launch` with a recipe,
 * against the local HTTP test server; run.jsonl in the run dir; and a
 * failing webhook that must not stop the run.  Needs $DPWORKER (exported by
 * `make check`); skips without it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "common/dp_log.h"
#include "tests/unit/dp_test.h"
#include "tests/unit/dp_test_httpd.h"

static char *recipe_with(const char *webhook, const char *push_url, int restarts)
{
	char text[2048];

	(void)snprintf(
		text, sizeof(text),
		"cluster: {hosts: localhost, launcher: local, gpus: 2}\n"
		"model: {name: tiny, layers: 2, hidden: 32, heads: 4, experts: 2, top_k: 1}\n"
		"parallel: {pp: 2, schedule: 1f1b, micro_batches: 2}\n"
		"health: {heartbeat_s: 0.05, rendezvous_s: 20, hang_timeout_s: 20,"
		" max_restarts: %d, preflight: []}\n"
		"notify: {webhooks: [\"%s\"]}\n"
		"%s%s%s",
		restarts, webhook, push_url ? "metrics: {push_url: \"" : "",
		push_url ? push_url : "", push_url ? "\", interval_s: 0.1}\n" : "");
	return dp_test_write_tmp(".yaml", text);
}

static int have_worker(void)
{
	const char *w = getenv("DPWORKER");

	return w && access(w, X_OK) == 0;
}

static struct dp_test_run launch(const char *const *argv)
{
	struct dp_test_run r = dp_test_dpctl_list(argv);

	dp_log_set_sink(NULL);
	return r;
}
#define LAUNCH(...) launch((const char *const[]){ "launch", __VA_ARGS__, NULL })

/* The request whose body holds "event":"@kind", or NULL. */
static const struct dp_test_httpd_req *find_event(struct dp_test_httpd *h, size_t n,
						  const char *kind)
{
	char want[64];

	(void)snprintf(want, sizeof(want), "\"event\":\"%s\"", kind);
	for (size_t i = 0; i < n; i++) {
		const struct dp_test_httpd_req *q = dp_test_httpd_req(h, i);

		if (strcmp(q->method, "POST") == 0 && strstr(q->body, want))
			return q;
	}
	return NULL;
}

static void success_posts_start_and_complete_and_writes_metrics(void **state)
{
	static const struct dp_test_httpd_resp ok[] = { { 200, "ok", 0 } };
	struct dp_test_httpd *h;
	char hook[256], dir[] = "/tmp/dp-report-XXXXXX", path[512], *recipe, *s;
	const struct dp_test_httpd_req *q, *last_put = NULL;
	struct dp_test_run r;
	size_t n;
	int puts = 0;

	(void)state;
	if (!have_worker())
		skip();
	h = dp_test_httpd_start(ok, 1);
	(void)snprintf(hook, sizeof(hook), "%s/hook/secret", dp_test_httpd_url(h));
	recipe = recipe_with(hook, dp_test_httpd_url(h), 0);
	assert_non_null(mkdtemp(dir));
	r = LAUNCH("--fake-steps", "8", "--fake-step-ms", "30", "--run-dir", dir, recipe);
	assert_int_equal(r.rc, 0);
	n = dp_test_httpd_wait(h, 3, 5000);
	q = find_event(h, n, "start");
	assert_non_null(q);
	assert_string_equal(q->path, "/hook/secret");
	assert_string_equal(q->content_type, "application/json");
	assert_non_null(strstr(q->body, "\"attempt\":0"));
	q = find_event(h, n, "complete");
	assert_non_null(q);
	assert_non_null(strstr(q->body, "\"exit_code\":0"));
	assert_null(find_event(h, n, "failure"));
	n = dp_test_httpd_wait(h, 100, 300);
	for (size_t i = 0; i < n; i++) {
		q = dp_test_httpd_req(h, i);
		if (strcmp(q->method, "PUT") == 0) {
			puts++;
			assert_non_null(strstr(q->path, "/metrics/job/dpctl/run/"));
			last_put = q;
		}
	}
	assert_true(puts >= 1);
	assert_non_null(last_put);
	if (last_put) { /* the final push has every rank's loss */
		assert_non_null(
			strstr(last_put->body, "dpctl_loss{rank=\"0\",host=\"localhost\"}"));
		assert_non_null(
			strstr(last_put->body, "dpctl_loss{rank=\"1\",host=\"localhost\"}"));
	}
	(void)snprintf(path, sizeof(path), "%s/metrics.prom", dir);
	s = dp_test_slurp(path);
	assert_non_null(strstr(s, "# TYPE dpctl_loss gauge\n"));
	assert_non_null(strstr(s, "dpctl_tokens_per_second{rank=\"1\",host=\"localhost\"}"));
	assert_non_null(strstr(s, "dpctl_step_seconds{rank=\"0\""));
	free(s);
	(void)snprintf(path, sizeof(path), "%s/run.jsonl", dir);
	s = dp_test_slurp(path);
	assert_non_null(strstr(s, "\"event\":\"start\",\"attempt\":0,\"ranks\":2"));
	assert_non_null(strstr(s, "\"event\":\"ready\""));
	assert_non_null(strstr(s, "\"event\":\"step\",\"attempt\":0,\"rank\":1,\"step\":8,"));
	assert_non_null(strstr(s, "\"event\":\"complete\""));
	free(s);
	dp_test_run_free(&r);
	dp_test_httpd_stop(h);
	(void)unlink(recipe);
	free(recipe);
	(void)snprintf(path, sizeof(path), "rm -rf '%s'", dir);
	assert_int_equal(system(path), 0);
}

static void failure_posts_the_root_cause_and_restarts(void **state)
{
	static const struct dp_test_httpd_resp ok[] = { { 200, NULL, 0 } };
	struct dp_test_httpd *h;
	char hook[256], *recipe;
	const struct dp_test_httpd_req *q;
	struct dp_test_run r;
	size_t n;

	(void)state;
	if (!have_worker())
		skip();
	h = dp_test_httpd_start(ok, 1);
	(void)snprintf(hook, sizeof(hook), "%s/hook", dp_test_httpd_url(h));
	recipe = recipe_with(hook, NULL, 1);
	r = LAUNCH("--fake-steps", "50", "--fake-fail", "1:3:9", recipe);
	assert_int_equal(r.rc, 9);
	n = dp_test_httpd_wait(h, 5, 5000);
	q = find_event(h, n, "failure");
	assert_non_null(q);
	assert_non_null(strstr(q->body, "\"rank\":1"));
	assert_non_null(strstr(q->body, "\"exit_code\":9"));
	assert_non_null(strstr(q->body, "\"root_cause\":\"rank 1 on localhost"));
	q = find_event(h, n, "restart");
	assert_non_null(q);
	assert_non_null(strstr(q->body, "\"attempt\":1"));
	assert_null(find_event(h, n, "complete"));
	dp_test_run_free(&r);
	dp_test_httpd_stop(h);
	(void)unlink(recipe);
	free(recipe);
}

static void failing_webhook_never_stops_the_run(void **state)
{
	static const struct dp_test_httpd_resp bad[] = { { 500, "down", 0 } };
	struct dp_test_httpd *h;
	char hook[256], *recipe;
	struct dp_test_run r;

	(void)state;
	if (!have_worker())
		skip();
	h = dp_test_httpd_start(bad, 1);
	(void)snprintf(hook, sizeof(hook), "%s/hook", dp_test_httpd_url(h));
	recipe = recipe_with(hook, NULL, 0);
	r = LAUNCH("--fake-steps", "5", recipe);
	assert_int_equal(r.rc, 0);
	assert_true(dp_test_httpd_wait(h, 2, 5000) >= 2); /* it did try, and retried */
	dp_test_run_free(&r);
	dp_test_httpd_stop(h);
	(void)unlink(recipe);
	free(recipe);
	/* nothing listening at all */
	recipe = recipe_with("http://127.0.0.1:1/hook", NULL, 0);
	r = LAUNCH("--fake-steps", "5", recipe);
	assert_int_equal(r.rc, 0);
	dp_test_run_free(&r);
	(void)unlink(recipe);
	free(recipe);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(success_posts_start_and_complete_and_writes_metrics),
		cmocka_unit_test(failure_posts_the_root_cause_and_restarts),
		cmocka_unit_test(failing_webhook_never_stops_the_run),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
