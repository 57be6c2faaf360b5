/* tests/unit/dp_test_httpd.c - a tiny threaded HTTP server on 127.0.0.1. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tests/unit/dp_test.h"
#include "tests/unit/dp_test_httpd.h"

#define MAX_REQS 64
#define MAX_HUNG 16

struct dp_test_httpd {
	int lfd, stop_pipe[2];
	pthread_t thr;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct dp_test_httpd_resp *script;
	size_t n_script;
	struct dp_test_httpd_req reqs[MAX_REQS];
	size_t n_reqs;
	int hung[MAX_HUNG];
	size_t n_hung;
	char url[64];
};

/* Wait (at most 2 s) for data on @fd; 0 if none came or the server is stopping. */
static int wait_readable(struct dp_test_httpd *h, int fd)
{
	struct pollfd p[2] = { { .fd = fd, .events = POLLIN },
			       { .fd = h->stop_pipe[0], .events = POLLIN } };
	int rc = poll(p, 2, 2000);

	return rc > 0 && (p[0].revents & (POLLIN | POLLHUP)) && !(p[1].revents & POLLIN);
}

static void send_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w <= 0)
			return;
		p += w;
		n -= (size_t)w;
	}
}

static void serve(struct dp_test_httpd *h, int fd)
{
	struct dp_test_httpd_req rq = { .body = NULL };
	struct dp_test_httpd_resp resp;
	char *buf = NULL, *e;
	size_t len = 0, alloc = 0, clen = 0, hlen = 0;
	const char *p;
	char head[256];

	for (;;) {
		ssize_t r;

		if (alloc - len < 4096) {
			char *nb = realloc(buf, alloc + 65536);

			if (!nb)
				goto out;
			buf = nb;
			alloc += 65536;
		}
		if (hlen && len >= hlen + clen)
			break;
		if (!wait_readable(h, fd))
			goto out;
		r = recv(fd, buf + len, alloc - len - 1, 0);
		if (r <= 0)
			goto out;
		len += (size_t)r;
		buf[len] = '\0';
		if (!hlen && (e = strstr(buf, "\r\n\r\n"))) {
			hlen = (size_t)(e - buf) + 4;
			for (p = strchr(buf, '\n'); p && p < e; p = strchr(p + 1, '\n')) {
				if (strncasecmp(p + 1, "Content-Length:", 15) == 0)
					clen = strtoul(p + 16, NULL, 10);
				else if (strncasecmp(p + 1, "Content-Type:", 13) == 0)
					(void)sscanf(p + 14, " %255[^\r\n]", rq.content_type);
				else if (strncasecmp(p + 1, "Expect: 100-continue", 20) == 0)
					send_all(fd, "HTTP/1.1 100 Continue\r\n\r\n", 25);
			}
		}
	}
	(void)sscanf(buf, "%15s %2047s", rq.method, rq.path);
	rq.body = malloc(clen + 1);
	if (!rq.body)
		goto out;
	memcpy(rq.body, buf + hlen, clen);
	rq.body[clen] = '\0';
	rq.body_len = clen;
	pthread_mutex_lock(&h->mu);
	if (h->n_reqs < MAX_REQS) {
		resp = h->script[h->n_reqs < h->n_script ? h->n_reqs : h->n_script - 1];
		h->reqs[h->n_reqs++] = rq;
		rq.body = NULL;
	} else {
		resp = (struct dp_test_httpd_resp){ .status = 503 };
	}
	pthread_cond_broadcast(&h->cv);
	pthread_mutex_unlock(&h->mu);
	free(rq.body);
	if (resp.status == 0 && h->n_hung < MAX_HUNG) {
		h->hung[h->n_hung++] = fd;
		free(buf);
		return;
	}
	{
		size_t blen = resp.body ? (resp.body_len ? resp.body_len : strlen(resp.body)) : 0;
		int n = snprintf(
			head, sizeof(head),
			"HTTP/1.1 %d Test\r\nContent-Length: %zu\r\nContent-Type: text/plain\r\n"
			"Connection: close\r\n\r\n",
			resp.status, blen);

		send_all(fd, head, (size_t)n);
		if (blen)
			send_all(fd, resp.body, blen);
	}
out:
	free(buf);
	(void)close(fd);
}

static void *run(void *arg)
{
	struct dp_test_httpd *h = arg;

	for (;;) {
		struct pollfd p[2] = { { .fd = h->lfd, .events = POLLIN },
				       { .fd = h->stop_pipe[0], .events = POLLIN } };
		int fd;

		if (poll(p, 2, -1) < 0 && errno != EINTR)
			break;
		if (p[1].revents & POLLIN)
			break;
		if (!(p[0].revents & POLLIN))
			continue;
		fd = accept(h->lfd, NULL, NULL);
		if (fd >= 0)
			serve(h, fd);
	}
	return NULL;
}

struct dp_test_httpd *dp_test_httpd_start(const struct dp_test_httpd_resp *script, size_t n)
{
	struct dp_test_httpd *h = calloc(1, sizeof(*h));
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);

	assert_non_null(h);
	assert_true(n > 0);
	h->script = calloc(n ? n : 1, sizeof(*script));
	assert_non_null(h->script);
	memcpy(h->script, script, n * sizeof(*script));
	h->n_script = n;
	h->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(h->lfd >= 0);
	assert_int_equal(bind(h->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(h->lfd, 16), 0);
	assert_int_equal(getsockname(h->lfd, (struct sockaddr *)&a, &alen), 0);
	(void)snprintf(h->url, sizeof(h->url), "http://127.0.0.1:%u", ntohs(a.sin_port));
	assert_int_equal(pipe(h->stop_pipe), 0);
	assert_int_equal(pthread_mutex_init(&h->mu, NULL), 0);
	assert_int_equal(pthread_cond_init(&h->cv, NULL), 0);
	assert_int_equal(pthread_create(&h->thr, NULL, run, h), 0);
	return h;
}

const char *dp_test_httpd_url(const struct dp_test_httpd *h)
{
	return h->url;
}

size_t dp_test_httpd_wait(struct dp_test_httpd *h, size_t n, long timeout_ms)
{
	struct timespec end;
	size_t got;

	(void)clock_gettime(CLOCK_REALTIME, &end);
	end.tv_sec += timeout_ms / 1000;
	end.tv_nsec += (timeout_ms % 1000) * 1000000L;
	if (end.tv_nsec >= 1000000000L) {
		end.tv_sec++;
		end.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&h->mu);
	while (h->n_reqs < n)
		if (pthread_cond_timedwait(&h->cv, &h->mu, &end) == ETIMEDOUT)
			break;
	got = h->n_reqs;
	pthread_mutex_unlock(&h->mu);
	return got;
}

const struct dp_test_httpd_req *dp_test_httpd_req(struct dp_test_httpd *h, size_t i)
{
	const struct dp_test_httpd_req *r = NULL;

	pthread_mutex_lock(&h->mu);
	if (i < h->n_reqs)
		r = &h->reqs[i];
	pthread_mutex_unlock(&h->mu);
	if (!r)
		fail_msg("test httpd: no request %zu", i);
	return r;
}

void dp_test_httpd_stop(struct dp_test_httpd *h)
{
	if (!h)
		return;
	(void)!write(h->stop_pipe[1], "x", 1);
	(void)pthread_join(h->thr, NULL);
	for (size_t i = 0; i < h->n_hung; i++)
		(void)close(h->hung[i]);
	for (size_t i = 0; i < h->n_reqs; i++)
		free(h->reqs[i].body);
	(void)close(h->lfd);
	(void)close(h->stop_pipe[0]);
	(void)close(h->stop_pipe[1]);
	(void)pthread_mutex_destroy(&h->mu);
	(void)pthread_cond_destroy(&h->cv);
	free(h->script);
	free(h);
}
