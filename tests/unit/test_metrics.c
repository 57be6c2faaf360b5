/* tests/unit/test_metrics.c - Prometheus exposition text (exact), label
 * escaping, number formatting, the atomic metrics.prom, and pushes to a
 * dp_test_httpd Pushgateway stand-in on 127.0.0.1 (PUT, path, body, errors). */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "launcher/dp_metrics.h"
#include "tests/unit/dp_test.h"
#include "tests/unit/dp_test_httpd.h"

static struct dp_metrics *metrics(const char *run_id, const char *dir, const char *url,
				  double interval_s, long timeout_ms)
{
	struct dp_metrics_cfg cfg = { .run_id = run_id,
				      .run_dir = dir,
				      .push_url = url,
				      .interval_s = interval_s,
				      .timeout_ms = timeout_ms };
	struct dp_err err = { 0 };
	struct dp_metrics *m = NULL;

	if (dp_metrics_new(&cfg, &m, &err))
		fail_msg("dp_metrics_new: %s", err.msg);
	return m;
}

static void set(struct dp_metrics *m, int rank, struct dp_metrics_rank v)
{
	struct dp_err err = { 0 };

	if (dp_metrics_set(m, rank, &v, &err))
		fail_msg("dp_metrics_set: %s", err.msg);
}

static char *render(const struct dp_metrics *m)
{
	struct dp_buf b;

	dp_buf_init(&b, 1 << 20);
	assert_int_equal(dp_metrics_render(m, &b), 0);
	if (b.len == 0)
		return strdup("");
	return dp_buf_detach(&b, NULL);
}

static const char two_ranks[] =
	"# HELP dpctl_step_seconds Duration of the last training step in seconds.\n"
	"# TYPE dpctl_step_seconds gauge\n"
	"dpctl_step_seconds{rank=\"0\",host=\"node01\"} 1.25\n"
	"dpctl_step_seconds{rank=\"1\",host=\"we\\\"ird\\\\host\\nname\"} 1.5\n"
	"# HELP dpctl_tokens_per_second Training throughput over the last step in tokens per second.\n"
	"# TYPE dpctl_tokens_per_second gauge\n"
	"dpctl_tokens_per_second{rank=\"0\",host=\"node01\"} 52428.8\n"
	"# HELP dpctl_loss Training loss at the last step.\n"
	"# TYPE dpctl_loss gauge\n"
	"dpctl_loss{rank=\"1\",host=\"we\\\"ird\\\\host\\nname\"} 2.302585092994046\n"
	"# HELP dpctl_bubble_ratio Fraction of the last step the rank's pipeline stage was idle (0 to 1).\n"
	"# TYPE dpctl_bubble_ratio gauge\n"
	"dpctl_bubble_ratio{rank=\"0\",host=\"node01\"} 0.1\n"
	"dpctl_bubble_ratio{rank=\"1\",host=\"we\\\"ird\\\\host\\nname\"} 0.125\n"
	"# HELP dpctl_a2a_bytes_total All-to-all bytes sent by the rank since the run started.\n"
	"# TYPE dpctl_a2a_bytes_total counter\n"
	"dpctl_a2a_bytes_total{rank=\"0\",host=\"node01\"} 9007199254740992\n"
	"# HELP dpctl_heartbeat_lag_seconds Seconds since the controller last heard the rank's heartbeat.\n"
	"# TYPE dpctl_heartbeat_lag_seconds gauge\n"
	"dpctl_heartbeat_lag_seconds{rank=\"0\",host=\"node01\"} 0\n"
	"dpctl_heartbeat_lag_seconds{rank=\"1\",host=\"we\\\"ird\\\\host\\nname\"} 3e-05\n";

static void fill_two_ranks(struct dp_metrics *m)
{
	/* rank 1 first: the text is ordered by rank, not by arrival */
	set(m, 1,
	    (struct dp_metrics_rank){ .set = DP_METRICS_STEP_SECONDS | DP_METRICS_LOSS,
				      .host = "we\"ird\\host\nname",
				      .step_seconds = 9,
				      .loss = log(10.0) });
	set(m, 1,
	    (struct dp_metrics_rank){ .set = DP_METRICS_STEP_SECONDS | DP_METRICS_BUBBLE_RATIO |
					     DP_METRICS_HEARTBEAT_LAG,
				      .step_seconds = 1.5,
				      .bubble_ratio = 0.125,
				      .heartbeat_lag_seconds = 3e-5,
				      .loss = 99 /* not in .set: ignored */ });
	set(m, 0,
	    (struct dp_metrics_rank){ .set = DP_METRICS_STEP_SECONDS |
					     DP_METRICS_TOKENS_PER_SECOND |
					     DP_METRICS_BUBBLE_RATIO | DP_METRICS_A2A_BYTES |
					     DP_METRICS_HEARTBEAT_LAG,
				      .host = "node01",
				      .step_seconds = 1.25,
				      .tokens_per_second = 65536 / 1.25,
				      .bubble_ratio = 0.1,
				      .a2a_bytes_total = 9007199254740993.0,
				      .heartbeat_lag_seconds = 0 });
}

static void exposition_text_is_exact(void **state)
{
	struct dp_metrics *m = metrics("r1", NULL, NULL, 0, 0);
	char *text;

	(void)state;
	text = render(m);
	assert_string_equal(text, ""); /* nothing set: no families at all */
	free(text);
	fill_two_ranks(m);
	text = render(m);
	/* 2^53 + 1 is not a double: it prints as the nearest one, 2^53 */
	assert_string_equal(text, two_ranks);
	free(text);
	set(m, 0, (struct dp_metrics_rank){ .set = DP_METRICS_A2A_BYTES, .a2a_bytes_total = 4096 });
	text = render(m);
	assert_non_null(strstr(text, "dpctl_a2a_bytes_total{rank=\"0\",host=\"node01\"} 4096\n"));
	free(text);
	dp_metrics_free(m);
}

static void special_values_and_sparse_ranks(void **state)
{
	struct dp_metrics *m = metrics("r1", NULL, NULL, 0, 0);
	char *text;

	(void)state;
	set(m, 3, (struct dp_metrics_rank){ .set = DP_METRICS_LOSS, .loss = NAN });
	set(m, 1, (struct dp_metrics_rank){ .set = DP_METRICS_LOSS, .loss = INFINITY });
	set(m, 2, (struct dp_metrics_rank){ .set = DP_METRICS_LOSS, .loss = -1e21 });
	set(m, 7, (struct dp_metrics_rank){ .set = DP_METRICS_STEP_SECONDS, .step_seconds = 0.3 });
	text = render(m);
	assert_string_equal(
		text, "# HELP dpctl_step_seconds Duration of the last training step in seconds.\n"
		      "# TYPE dpctl_step_seconds gauge\n"
		      "dpctl_step_seconds{rank=\"7\"} 0.3\n"
		      "# HELP dpctl_loss Training loss at the last step.\n"
		      "# TYPE dpctl_loss gauge\n"
		      "dpctl_loss{rank=\"1\"} +Inf\n"
		      "dpctl_loss{rank=\"2\"} -1e+21\n"
		      "dpctl_loss{rank=\"3\"} NaN\n");
	free(text);
	{
		struct dp_err err = { 0 };
		struct dp_metrics_rank v = { .set = DP_METRICS_LOSS };

		assert_int_equal(dp_metrics_set(m, -1, &v, &err), -EINVAL);
		assert_string_equal(err.msg, "metrics: negative rank -1");
	}
	dp_metrics_free(m);
}

static void bad_config_is_rejected(void **state)
{
	struct dp_metrics_cfg cfg = { .run_id = NULL };
	struct dp_err err = { 0 };
	struct dp_metrics *m = NULL;

	(void)state;
	assert_int_equal(dp_metrics_new(&cfg, &m, &err), -EINVAL);
	assert_string_equal(err.msg, "metrics: no run id");
	cfg.run_id = "r";
	cfg.push_url = "ftp://gw:9091";
	assert_int_equal(dp_metrics_new(&cfg, &m, &err), -EINVAL);
	assert_string_equal(err.msg,
			    "metrics: push URL 'ftp://gw:9091' is not http:// or https://");
	cfg.push_url = NULL;
	cfg.interval_s = -1;
	assert_int_equal(dp_metrics_new(&cfg, &m, &err), -EINVAL);
	assert_null(m);
	dp_metrics_free(NULL);
}

/* Names in @dir other than "." and ".."; returns how many, the first in @first. */
static int dir_entries(const char *dir, char *first, size_t size)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d))) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		if (n++ == 0)
			(void)snprintf(first, size, "%s", e->d_name);
	}
	(void)closedir(d);
	return n;
}

static void file_is_written_atomically(void **state)
{
	char dir[] = "/tmp/dpctl-metrics-XXXXXX", path[512], name[256], *text;
	struct dp_err err = { 0 };
	struct dp_metrics *m, *bad;
	struct stat st;

	(void)state;
	assert_non_null(mkdtemp(dir));
	m = metrics("r1", dir, NULL, 0, 0);
	fill_two_ranks(m);
	assert_int_equal(dp_metrics_write(m, &err), 0);
	(void)snprintf(path, sizeof(path), "%s/metrics.prom", dir);
	text = dp_test_slurp(path);
	assert_non_null(strstr(
		text,
		"dpctl_loss{rank=\"1\",host=\"we\\\"ird\\\\host\\nname\"} 2.302585092994046\n"));
	free(text);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0644);
	/* an update replaces the file; no temporary file is left behind */
	set(m, 1, (struct dp_metrics_rank){ .set = DP_METRICS_LOSS, .loss = 1.5 });
	assert_int_equal(dp_metrics_write(m, &err), 0);
	text = dp_test_slurp(path);
	assert_non_null(
		strstr(text, "dpctl_loss{rank=\"1\",host=\"we\\\"ird\\\\host\\nname\"} 1.5\n"));
	free(text);
	assert_int_equal(dir_entries(dir, name, sizeof(name)), 1);
	assert_string_equal(name, "metrics.prom");
	/* dp_metrics_flush() without a push_url only writes */
	assert_int_equal(dp_metrics_flush(m, 100, &err), 0);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(rmdir(dir), 0);

	/* the directory is gone: ENOENT naming it, nothing else */
	assert_int_equal(dp_metrics_write(m, &err), -ENOENT);
	assert_non_null(strstr(err.msg, dir));
	assert_int_equal(dp_metrics_flush(m, 100, &err), -ENOENT);
	dp_metrics_free(m);
	/* no run_dir: writing is a no-op */
	bad = metrics("r1", NULL, NULL, 0, 0);
	assert_int_equal(dp_metrics_write(bad, &err), 0);
	dp_metrics_free(bad);
}

static void pushes_with_put_to_the_run_group(void **state)
{
	static const struct dp_test_httpd_resp ok[] = { { .status = 200 } };
	struct dp_test_httpd *h = dp_test_httpd_start(ok, 1);
	struct dp_err err = { 0 };
	char base[128];
	struct dp_metrics *m;
	char *text;

	(void)state;
	(void)snprintf(base, sizeof(base), "%s/", dp_test_httpd_url(h)); /* trailing '/' dropped */
	m = metrics("run-1.a_b", NULL, base, 0, 3000);
	fill_two_ranks(m);
	assert_int_equal(dp_metrics_last_push(m), 1);
	assert_int_equal(dp_metrics_flush(m, 5000, &err), 0);
	assert_int_equal(dp_metrics_last_push(m), 0);
	assert_int_equal(dp_test_httpd_wait(h, 1, 1000), 1);
	assert_string_equal(dp_test_httpd_req(h, 0)->method, "PUT");
	assert_string_equal(dp_test_httpd_req(h, 0)->path, "/metrics/job/dpctl/run/run-1.a_b");
	assert_string_equal(dp_test_httpd_req(h, 0)->content_type, "text/plain; version=0.0.4");
	text = render(m);
	assert_string_equal(dp_test_httpd_req(h, 0)->body, text);
	assert_non_null(strstr(text, "# TYPE dpctl_a2a_bytes_total counter\n"));
	free(text);
	dp_metrics_free(m);

	/* a run id that is not URL-safe goes base64url, Pushgateway style */
	m = metrics("a/b c", NULL, dp_test_httpd_url(h), 0, 3000);
	assert_string_equal(strstr(dp_metrics_push_target(m), "/metrics"),
			    "/metrics/job/dpctl/run@base64/YS9iIGM=");
	dp_metrics_free(m);
	/* a push_url that already names the job keeps it */
	(void)snprintf(base, sizeof(base), "%s/metrics/job/deepseek-v3", dp_test_httpd_url(h));
	m = metrics("x", NULL, base, 0, 3000);
	set(m, 0, (struct dp_metrics_rank){ .set = DP_METRICS_LOSS, .loss = 2 });
	assert_int_equal(dp_metrics_push(m, &err), 0);
	assert_int_equal(dp_metrics_push(m, &err), -EBUSY);
	while (dp_metrics_step(m, 100))
		;
	assert_int_equal(dp_test_httpd_wait(h, 2, 1000), 2);
	assert_string_equal(dp_test_httpd_req(h, 1)->path, "/metrics/job/deepseek-v3/run/x");
	assert_string_equal(dp_test_httpd_req(h, 1)->body,
			    "# HELP dpctl_loss Training loss at the last step.\n"
			    "# TYPE dpctl_loss gauge\n"
			    "dpctl_loss{rank=\"0\"} 2\n");
	dp_metrics_free(m);
	dp_test_httpd_stop(h);
}

static long long now_ms(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Errors are reported, bounded in time, and never fatal. */
static void push_errors_are_reported(void **state)
{
	static const struct dp_test_httpd_resp fail[] = { { .status = 500 } };
	static const struct dp_test_httpd_resp hang[] = { { .status = 0 } };
	struct dp_test_httpd *h = dp_test_httpd_start(fail, 1),
			     *slow = dp_test_httpd_start(hang, 1);
	struct dp_err err = { 0 };
	struct dp_metrics *m;
	long long t0;

	(void)state;
	m = metrics("r", NULL, dp_test_httpd_url(h), 0, 2000);
	assert_int_equal(dp_metrics_flush(m, 3000, &err), -EIO);
	assert_int_equal(dp_metrics_last_push(m), -EIO);
	dp_metrics_free(m);

	/* curl's own timeout */
	m = metrics("r", NULL, dp_test_httpd_url(slow), 0, 400);
	t0 = now_ms();
	assert_int_equal(dp_metrics_push(m, &err), 0);
	assert_true(now_ms() - t0 < 300); /* starting a push does not wait */
	assert_int_equal(dp_metrics_flush(m, 3000, &err), -ETIMEDOUT);
	assert_true(now_ms() - t0 < 2000);
	dp_metrics_free(m);
	/* the flush deadline, shorter than curl's timeout */
	m = metrics("r", NULL, dp_test_httpd_url(slow), 0, 10000);
	t0 = now_ms();
	assert_int_equal(dp_metrics_flush(m, 150, &err), -ETIMEDOUT);
	assert_non_null(strstr(err.msg, "did not finish in 150 ms"));
	assert_true(now_ms() - t0 < 1000);
	dp_metrics_free(m);
	dp_test_httpd_stop(h);
	dp_test_httpd_stop(slow);
}

static void tick_follows_the_interval(void **state)
{
	static const struct dp_test_httpd_resp ok[] = { { .status = 202 } };
	struct dp_test_httpd *h = dp_test_httpd_start(ok, 1);
	char dir[] = "/tmp/dpctl-metrics-XXXXXX", path[512];
	struct dp_metrics *m;
	struct timespec ts = { .tv_nsec = 250 * 1000000L };

	(void)state;
	assert_non_null(mkdtemp(dir));
	m = metrics("r", dir, dp_test_httpd_url(h), 0.2, 3000);
	set(m, 0, (struct dp_metrics_rank){ .set = DP_METRICS_STEP_SECONDS, .step_seconds = 1 });
	assert_int_equal(dp_metrics_tick(m), 1);
	assert_int_equal(dp_metrics_tick(m), 0);
	while (dp_metrics_step(m, 100))
		;
	(void)nanosleep(&ts, NULL);
	assert_int_equal(dp_metrics_tick(m), 1);
	while (dp_metrics_step(m, 100))
		;
	assert_int_equal(dp_test_httpd_wait(h, 2, 1000), 2);
	assert_int_equal(dp_metrics_last_push(m), 0);
	(void)snprintf(path, sizeof(path), "%s/metrics.prom", dir);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(rmdir(dir), 0);
	dp_metrics_free(m);
	dp_test_httpd_stop(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(exposition_text_is_exact),
		cmocka_unit_test(special_values_and_sparse_ranks),
		cmocka_unit_test(bad_config_is_rejected),
		cmocka_unit_test(file_is_written_atomically),
		cmocka_unit_test(pushes_with_put_to_the_run_group),
		cmocka_unit_test(push_errors_are_reported),
		cmocka_unit_test(tick_follows_the_interval),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
