/* worker/pp_link.c - PP byte channels over stream sockets (socketpair, TCP)
 * and the TCP full mesh of `dpworker --train`. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "worker/dp_exec.h"

struct fd_link {
	struct dp_pp_link base; /* first: container_of by cast */
	int fd;
};

static int fd_send(struct dp_pp_link *l, const void *buf, size_t len, struct dp_err *err)
{
	struct fd_link *f = (struct fd_link *)l;
	const char *p = buf;

	while (len) {
		ssize_t n = send(f->fd, p, len, MSG_NOSIGNAL);

		if (n < 0) {
			int e = errno;

			if (e == EINTR)
				continue;
			return dp_err_set(err, e, "exec: link send failed: %s", strerror(e));
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int fd_recv(struct dp_pp_link *l, void *buf, size_t len, struct dp_err *err)
{
	struct fd_link *f = (struct fd_link *)l;
	char *p = buf;

	while (len) {
		ssize_t n = recv(f->fd, p, len, 0);

		if (n == 0)
			return dp_err_set(err, ECONNRESET, "exec: link closed by the peer");
		if (n < 0) {
			int e = errno;

			if (e == EINTR)
				continue;
			return dp_err_set(err, e, "exec: link receive failed: %s", strerror(e));
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static void fd_close(struct dp_pp_link *l)
{
	struct fd_link *f = (struct fd_link *)l;

	if (!f)
		return;
	(void)close(f->fd);
	free(f);
}

static const struct dp_pp_link_ops fd_ops = {
	.name = "fd",
	.send = fd_send,
	.recv = fd_recv,
	.close = fd_close,
};

int dp_pp_link_fd(int fd, struct dp_pp_link **out, struct dp_err *err)
{
	struct fd_link *f = calloc(1, sizeof(*f));

	if (!f) {
		(void)close(fd);
		(void)dp_err_set(err, ENOMEM, "exec: out of memory");
		return -ENOMEM;
	}
	f->base.ops = &fd_ops;
	f->fd = fd;
	*out = &f->base;
	return 0;
}

int dp_pp_link_fd_of(const struct dp_pp_link *l)
{
	return l && l->ops == &fd_ops ? ((const struct fd_link *)l)->fd : -1;
}

void dp_pp_link_close(struct dp_pp_link *l)
{
	if (l)
		l->ops->close(l);
}

/* ---- TCP mesh ------------------------------------------------------------ */

static long now_ms(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int tcp_listen(int port, struct dp_err *err)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int fd, one = 1;

	sa.sin_addr.s_addr = htonl(INADDR_ANY);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return dp_err_set(err, errno, "exec: socket failed: %s", strerror(errno));
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 64)) {
		int e = errno;

		(void)close(fd);
		return dp_err_set(err, e, "exec: cannot listen on port %d: %s", port, strerror(e));
	}
	return fd;
}

static int tcp_connect(const char *host, int port, long deadline, struct dp_err *err)
{
	struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM };
	struct addrinfo *ai = NULL;
	char sport[16];
	int rc;

	(void)snprintf(sport, sizeof(sport), "%d", port);
	rc = getaddrinfo(host, sport, &hints, &ai);
	if (rc)
		return dp_err_set(err, EHOSTUNREACH, "exec: cannot resolve '%s': %s", host,
				  gai_strerror(rc));
	for (;;) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

		if (fd < 0) {
			rc = dp_err_set(err, errno, "exec: socket failed: %s", strerror(errno));
			break;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
			freeaddrinfo(ai);
			return fd;
		}
		(void)close(fd);
		if (now_ms() > deadline) {
			rc = dp_err_set(err, ETIMEDOUT, "exec: cannot connect to %s:%d", host,
					port);
			break;
		}
		(void)usleep(50000);
	}
	freeaddrinfo(ai);
	return rc;
}

int dp_pp_link_tcp_mesh(int n, int rank, const char *const *hosts, const int *ports, int timeout_ms,
			struct dp_pp_link **links, struct dp_err *err)
{
	long deadline = now_ms() + timeout_ms;
	int lfd, rc = 0, one = 1;

	for (int i = 0; i < n; i++)
		links[i] = NULL;
	lfd = tcp_listen(ports[rank], err);
	if (lfd < 0)
		return lfd;
	for (int j = 0; j < rank && !rc; j++) {
		int32_t me = rank;
		int fd = tcp_connect(hosts[j], ports[j], deadline, err);

		if (fd < 0) {
			rc = fd;
			break;
		}
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		rc = dp_pp_link_fd(fd, &links[j], err);
		if (!rc)
			rc = links[j]->ops->send(links[j], &me, sizeof(me), err);
	}
	for (int got = 0; !rc && got < n - 1 - rank;) {
		struct pollfd p = { .fd = lfd, .events = POLLIN };
		struct dp_pp_link *l = NULL;
		int32_t who = -1;
		int fd, left = (int)(deadline - now_ms());

		if (left <= 0 || poll(&p, 1, left) <= 0) {
			rc = dp_err_set(err, ETIMEDOUT, "exec: rank %d: peers did not connect",
					rank);
			break;
		}
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		rc = dp_pp_link_fd(fd, &l, err);
		if (!rc)
			rc = l->ops->recv(l, &who, sizeof(who), err);
		if (!rc && (who <= rank || who >= n || links[who])) {
			rc = dp_err_set(err, EPROTO, "exec: unexpected peer rank %d", (int)who);
		}
		if (rc) {
			dp_pp_link_close(l);
			break;
		}
		links[who] = l;
		got++;
	}
	(void)close(lfd);
	if (rc) {
		for (int i = 0; i < n; i++) {
			dp_pp_link_close(links[i]);
			links[i] = NULL;
		}
	}
	return rc;
}
