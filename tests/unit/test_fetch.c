/* tests/unit/test_fetch.c - recipes given as URLs: file://, http:// from a
 * dp_test_httpd server on 127.0.0.1, the size cap, the timeout, refused
 * schemes, https refusing a self-signed certificate (openssl s_server on
 * 127.0.0.1, skipped without openssl), and `dpctl recipe check URL`. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "launcher/dp_fetch.h"
#include "tests/unit/dp_test.h"
#include "tests/unit/dp_test_httpd.h"

#define DEMO DP_SRCDIR "/recipes/local-demo.yaml"
#define ODD  FIXTURES "/recipes/dualpipe-odd.yaml"

static const char demo_path[] = DEMO, demo_url[] = "file://" DEMO, odd_url[] = "file://" ODD;

static long long now_ms(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void urls_are_told_from_files(void **state)
{
	(void)state;
	assert_true(dp_fetch_is_url("https://x/y.yaml"));
	assert_true(dp_fetch_is_url("file:///tmp/x.yaml"));
	assert_true(dp_fetch_is_url("git+ssh://x"));
	assert_false(dp_fetch_is_url("recipes/x.yaml"));
	assert_false(dp_fetch_is_url("./odd://name.yaml"));
	assert_false(dp_fetch_is_url("://x"));
}

static void file_urls_are_read_and_capped(void **state)
{
	struct dp_err err = { 0 };
	char *data = NULL, *want;
	size_t len = 0;

	(void)state;
	assert_int_equal(dp_fetch_url("file://" DEMO, 0, 0, &data, &len, &err), 0);
	want = dp_test_slurp(DEMO);
	assert_int_equal(len, strlen(want));
	assert_string_equal(data, want);
	free(data);
	/* the cap is exact: len bytes pass, len - 1 do not */
	data = NULL;
	assert_int_equal(dp_fetch_url("file://" DEMO, strlen(want), 0, &data, &len, &err), 0);
	free(data);
	data = NULL;
	assert_int_equal(dp_fetch_url("file://" DEMO, strlen(want) - 1, 0, &data, &len, &err),
			 -E2BIG);
	assert_null(data);
	free(want);
	assert_int_equal(dp_fetch_url("file://" DEMO ".nosuch", 0, 0, &data, &len, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "fetch: cannot fetch 'file://" DEMO ".nosuch': "));
	assert_int_equal(dp_fetch_url("ftp://127.0.0.1/x.yaml", 0, 0, &data, &len, &err), -EINVAL);
	assert_string_equal(err.msg, "fetch: 'ftp://127.0.0.1/x.yaml': only file://, https:// "
				     "and http:// URLs are supported");
	assert_int_equal(dp_fetch_url("file://recipes/x.yaml", 0, 0, &data, &len, &err), -EINVAL);
	assert_string_equal(err.msg, "fetch: 'file://recipes/x.yaml': a file:// URL needs an "
				     "absolute path (file:///path)");
	assert_null(data);
}

static void http_fetch_status_cap_and_timeout(void **state)
{
	static char big[(4u << 20) + 1];
	struct dp_test_httpd_resp script[] = {
		{ .status = 200, .body = "hello: world\n" },
		{ .status = 404, .body = "no" },
		{ .status = 500 },
		{ .status = 200, .body = big, .body_len = sizeof(big) },
	};
	struct dp_test_httpd *h, *slow;
	static const struct dp_test_httpd_resp hang[] = { { .status = 0 } };
	struct dp_err err = { 0 };
	char url[256], *data = NULL;
	size_t len = 0;
	long long t0;

	(void)state;
	memset(big, 'x', sizeof(big));
	h = dp_test_httpd_start(script, sizeof(script) / sizeof(script[0]));
	(void)snprintf(url, sizeof(url), "%s/r/demo.yaml?v=2", dp_test_httpd_url(h));
	assert_int_equal(dp_fetch_url(url, 0, 0, &data, &len, &err), 0);
	assert_string_equal(data, "hello: world\n");
	assert_int_equal(len, 13);
	free(data);
	data = NULL;
	assert_string_equal(dp_test_httpd_req(h, 0)->method, "GET");
	assert_string_equal(dp_test_httpd_req(h, 0)->path, "/r/demo.yaml?v=2");
	assert_int_equal(dp_fetch_url(url, 0, 0, &data, &len, &err), -ENOENT);
	assert_string_equal(strstr(err.msg, "': "), "': HTTP 404");
	assert_int_equal(dp_fetch_url(url, 0, 0, &data, &len, &err), -EIO);
	assert_string_equal(strstr(err.msg, "': "), "': HTTP 500");
	/* 4 MiB + 1 byte: over the default cap */
	assert_int_equal(dp_fetch_url(url, 0, 0, &data, &len, &err), -E2BIG);
	assert_string_equal(strstr(err.msg, "' is"), "' is larger than 4194304 bytes");
	assert_null(data);
	dp_test_httpd_stop(h);

	slow = dp_test_httpd_start(hang, 1);
	t0 = now_ms();
	assert_int_equal(dp_fetch_url(dp_test_httpd_url(slow), 0, 200, &data, &len, &err),
			 -ETIMEDOUT);
	assert_true(now_ms() - t0 >= 200);
	assert_true(now_ms() - t0 < 2000);
	dp_test_httpd_stop(slow);
}

static void recipe_check_takes_urls(void **state)
{
	struct dp_test_httpd_resp script[2] = { { .status = 200 }, { .status = 404 } };
	struct dp_test_httpd *h;
	struct dp_test_run r;
	char url[256], want[512], *demo = dp_test_slurp(DEMO);

	(void)state;
	r = dp_test_dpctl("recipe", "check", demo_url);
	assert_int_equal(r.rc, EX_OK);
	assert_string_equal(r.out, "file://" DEMO ": ok\n");
	dp_test_run_free(&r);

	/* diagnostics name the URL */
	r = dp_test_dpctl("recipe", "check", odd_url);
	assert_int_equal(r.rc, EX_DATAERR);
	assert_true(strncmp(r.err, "file://" ODD ":", strlen("file://" ODD ":")) == 0);
	assert_non_null(strstr(r.err, ": error: key 'parallel."));
	dp_test_run_free(&r);

	script[0].body = demo;
	h = dp_test_httpd_start(script, 2);
	(void)snprintf(url, sizeof(url), "%s/demo.yaml", dp_test_httpd_url(h));
	r = dp_test_dpctl("recipe", "check", url, demo_path);
	assert_int_equal(r.rc, EX_OK);
	(void)snprintf(want, sizeof(want), "%s: ok\n%s: ok\n", url, DEMO);
	assert_string_equal(r.out, want);
	/* plain http is allowed but warned about */
	(void)snprintf(want, sizeof(want),
		       "dpctl: warn: fetch: '%s' is fetched over plain http: the recipe is not "
		       "protected in transit\n",
		       url);
	assert_string_equal(r.err, want);
	dp_test_run_free(&r);
	r = dp_test_dpctl("recipe", "check", url);
	assert_int_equal(r.rc, EX_NOINPUT);
	(void)snprintf(want, sizeof(want), "dpctl: error: fetch: cannot fetch '%s': HTTP 404\n",
		       url);
	assert_non_null(strstr(r.err, want));
	dp_test_run_free(&r);
	dp_test_httpd_stop(h);
	free(demo);

	r = dp_test_dpctl("-q", "recipe", "check", "gopher://127.0.0.1/x");
	assert_int_equal(r.rc, EX_DATAERR);
	dp_test_run_free(&r);
}

/* A port nothing listens on right now (bind to 0, read it, close). */
static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	int s = socket(AF_INET, SOCK_STREAM, 0), port;

	assert_true(s >= 0);
	assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(s, (struct sockaddr *)&a, &alen), 0);
	port = ntohs(a.sin_port);
	(void)close(s);
	return port;
}

static int can_connect(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
				 .sin_port = htons((uint16_t)port) };
	int s = socket(AF_INET, SOCK_STREAM, 0), ok;

	ok = s >= 0 && connect(s, (struct sockaddr *)&a, sizeof(a)) == 0;
	if (s >= 0)
		(void)close(s);
	return ok;
}

/* https to a server with a self-signed certificate for "localhost" fails
 * verification: TLS is verified, never silently accepted. */
static void https_refuses_an_untrusted_certificate(void **state)
{
	char dir[] = "/tmp/dpctl-tls-XXXXXX", cmd[1024], url[128], portstr[16];
	char key[256], crt[256];
	struct dp_err err = { 0 };
	char *data = NULL;
	size_t len = 0;
	pid_t pid;
	int port, rc, status;

	(void)state;
	if (system("command -v openssl >/dev/null 2>&1") != 0)
		skip();
	assert_non_null(mkdtemp(dir));
	(void)snprintf(key, sizeof(key), "%s/key.pem", dir);
	(void)snprintf(crt, sizeof(crt), "%s/crt.pem", dir);
	(void)snprintf(cmd, sizeof(cmd),
		       "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
		       "-keyout %s -out %s -subj /CN=localhost -days 1 >/dev/null 2>&1",
		       key, crt);
	assert_int_equal(system(cmd), 0);
	port = free_port();
	(void)snprintf(portstr, sizeof(portstr), "%d", port);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);

		(void)dup2(null, 0);
		(void)dup2(null, 1);
		(void)dup2(null, 2);
		execlp("openssl", "openssl", "s_server", "-quiet", "-www", "-accept", portstr,
		       "-cert", crt, "-key", key, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 100 && !can_connect(port); i++) {
		struct timespec ts = { .tv_nsec = 20 * 1000000L };

		(void)nanosleep(&ts, NULL);
	}
	(void)snprintf(url, sizeof(url), "https://localhost:%d/recipe.yaml", port);
	rc = dp_fetch_url(url, 0, 3000, &data, &len, &err);
	(void)kill(pid, SIGTERM);
	(void)waitpid(pid, &status, 0);
	(void)unlink(key);
	(void)unlink(crt);
	(void)rmdir(dir);
	assert_int_equal(rc, -EPROTO);
	assert_null(data);
	assert_non_null(strstr(err.msg, "fetch: cannot fetch 'https://localhost:"));
	if (!strstr(err.msg, "certificate"))
		fail_msg("%s", err.msg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(urls_are_told_from_files),
		cmocka_unit_test(file_urls_are_read_and_capped),
		cmocka_unit_test(http_fetch_status_cap_and_timeout),
		cmocka_unit_test(recipe_check_takes_urls),
		cmocka_unit_test(https_refuses_an_untrusted_certificate),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
