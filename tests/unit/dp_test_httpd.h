/* tests/unit/dp_test_httpd.h - a tiny HTTP/1.1 server on 127.0.0.1 for tests.
 *
 * It runs in a thread, serves one connection at a time (Connection: close),
 * records every request (method, path, Content-Type, body) and answers
 * from a script: the i-th request gets script[i] (the last entry repeats).
 * A status of 0 means "hang": read the request, never answer, keep the
 * connection open until the server stops (to test client timeouts).
 */
#ifndef DP_TEST_HTTPD_H
#define DP_TEST_HTTPD_H

#include <stddef.h>

struct dp_test_httpd;

struct dp_test_httpd_resp {
	int status;	  /* 200, 500, ...; 0: hang */
	const char *body; /* response body, NULL: empty; borrowed until stop */
	size_t body_len;  /* 0: strlen(body) */
};

struct dp_test_httpd_req {
	char method[16];
	char path[2048];
	char content_type[256];
	char *body; /* NUL-terminated */
	size_t body_len;
};

/* Start on an ephemeral port; fails the test on error.  @script is copied. */
struct dp_test_httpd *dp_test_httpd_start(const struct dp_test_httpd_resp *script, size_t n);
/* "http://127.0.0.1:PORT" */
const char *dp_test_httpd_url(const struct dp_test_httpd *h);
/* Wait until at least @n requests were recorded or @timeout_ms passed; returns the count. */
size_t dp_test_httpd_wait(struct dp_test_httpd *h, size_t n, long timeout_ms);
/* Request @i (0-based); valid until stop.  Fails the test if there is none. */
const struct dp_test_httpd_req *dp_test_httpd_req(struct dp_test_httpd *h, size_t i);
/* Stop the thread, close every connection, free everything.  NULL-safe. */
void dp_test_httpd_stop(struct dp_test_httpd *h);

#endif
