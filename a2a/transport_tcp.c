/* a2a/transport_tcp.c - the `tcp` transport: the inter-node stand-in for
 * InfiniBand, usable on plain Ethernet clusters, over loopback and inside
 * network namespaces.  One non-blocking TCP connection per pair of ranks
 * (rank i connects to every j < i and accepts every j > i), a hello that
 * names the connecting rank, then length-prefixed frames (a2a_int.h) driven
 * by the stream engine in stream.c.
 *
 * The hello is { magic, rank, world, has_token, token[32] }; the accepting
 * rank answers one word: HELLO_OK, or HELLO_BAD_TOKEN before it closes the
 * connection.  With a job token configured (cfg.token), a hello with another
 * token or none is refused: the acceptor keeps waiting for the real peer
 * (a stray connection must not end the job) and names the refused peer in
 * its timeout error; the dialler reports the refusal at once.  Tokens are
 * compared in constant time (dp_mem_equal_ct, as the PP links do).
 *
 * With cfg.tcp_local_shm the ranks of a node skip the sockets between them
 * and use shm rings instead (dp_a2a_shm_open_polled, segment
 * "<shm_name>-n<node>"), the CPU stand-in for NVLink next to tcp's IB: one
 * poll() covers the sockets and the rings' doorbell socket.
 *
 * Sockets: TCP_NODELAY (frames are written whole by gather writes, so
 * Nagle only delays the tail); SO_SNDBUF / SO_RCVBUF to other nodes from
 * $DP_A2A_TCP_SNDBUF / $DP_A2A_TCP_RCVBUF when set (bytes), else the
 * kernel's autotuning.  Congestion control to other nodes: cubic, or
 * $DP_A2A_TCP_CC ("system": the host's default).  An all-to-all runs
 * (nodes - 1) x ranks_per_node flows through each node link at once; BBR
 * (a common default) probes past a shallow bottleneck queue with that many
 * flows: on the test cluster it had ~13% of the packets dropped at the
 * links, retransmitted ~30x more segments than cubic and hit retransmission
 * timeouts (docs/benchmarks.md). */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "a2a/a2a_int.h"
#include "common/dp_banned.h"

#define HELLO_MAGIC	0x44505443u /* "DPTC" */
#define DEF_CC		"cubic"	    /* congestion control to other nodes */
#define HELLO_OK	0x4f4b4f4bu /* the acceptor's answer: "OKOK" */
#define HELLO_BAD_TOKEN 0x4241444bu /* "BADK": wrong or missing job token */

struct hello {
	uint32_t magic;
	uint32_t rank;
	uint32_t world;
	uint32_t has_token;
	uint8_t token[DP_A2A_TOKEN_LEN];
};

struct tcp_ep {
	struct dp_a2a_stream s; /* first */
	int *fds;
	int lfd;
	struct pollfd *pfd;
	int *map;		 /* pfd index -> peer */
	struct dp_a2a_ep *local; /* shm rings to this node's ranks, or NULL */
	struct dp_a2a_stream *ls;
	int has_token;
	uint8_t token[DP_A2A_TOKEN_LEN];
	int bell_fd;
	double bytes_per_us; /* inter-node pacing, 0: off */
	double tokens;	     /* bytes we may send to other nodes now */
	double burst;	     /* bucket size: 64 KiB or 2 ms worth */
	int64_t refill_us;
};

static int64_t now_us(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int remote(const struct tcp_ep *e, int peer)
{
	return peer / e->s.ep.rpn != e->s.ep.rank / e->s.ep.rpn;
}

/* Through the shm rings? */
static int on_ring(const struct tcp_ep *e, int peer)
{
	return e->local && !remote(e, peer);
}

/* Bytes we may write to @peer now (SIZE_MAX when unpaced). */
static size_t pace_allow(struct tcp_ep *e, int peer)
{
	int64_t now;

	if (e->bytes_per_us <= 0 || !remote(e, peer))
		return (size_t)-1;
	now = now_us();
	e->tokens += (double)(now - e->refill_us) * e->bytes_per_us;
	if (e->tokens > e->burst)
		e->tokens = e->burst;
	e->refill_us = now;
	return e->tokens < 1 ? 0 : (size_t)e->tokens;
}

static ssize_t tcp_write_some(struct dp_a2a_stream *s, int peer, const void *buf, size_t n)
{
	struct tcp_ep *e = (struct tcp_ep *)s;
	size_t allow;
	ssize_t w;

	if (on_ring(e, peer))
		return e->ls->ops->write_some(e->ls, peer % s->ep.rpn, buf, n);
	allow = pace_allow(e, peer);
	if (n > allow)
		n = allow;
	if (!n)
		return 0;
	w = send(e->fds[peer], buf, n, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (w >= 0) {
		if (e->bytes_per_us > 0 && remote(e, peer))
			e->tokens -= (double)w;
		return w;
	}
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
		return 0;
	return errno == EPIPE ? -ECONNRESET : -errno;
}

static ssize_t tcp_read_some(struct dp_a2a_stream *s, int peer, void *buf, size_t n)
{
	struct tcp_ep *e = (struct tcp_ep *)s;
	ssize_t r;

	if (on_ring(e, peer))
		return e->ls->ops->read_some(e->ls, peer % s->ep.rpn, buf, n);
	r = recv(e->fds[peer], buf, n, MSG_DONTWAIT);

	if (r > 0)
		return r;
	if (r == 0)
		return -ECONNRESET;
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
		return 0;
	return -errno;
}

/* Fill e->pfd for every connected peer; map[k] = peer of pfd[k]. */
static nfds_t build_pfd(struct tcp_ep *e, int *ms)
{
	struct dp_a2a_stream *s = &e->s;
	nfds_t n = 0;

	for (int i = 0; i < s->ep.world; i++) {
		if (e->fds[i] < 0)
			continue;
		e->pfd[n].fd = e->fds[i];
		e->pfd[n].events = POLLIN;
		if (dp_a2a_stream_wants_write(s, i)) {
			if (pace_allow(e, i))
				e->pfd[n].events |= POLLOUT;
			else if (*ms > 1)
				*ms = 1; /* paced: come back when tokens refill */
		}
		e->pfd[n].revents = 0;
		e->map[n] = i;
		n++;
	}
	if (e->bell_fd >= 0) {
		e->pfd[n].fd = e->bell_fd;
		e->pfd[n].events = POLLIN;
		e->pfd[n].revents = 0;
		e->map[n] = -1;
		n++;
	}
	return n;
}

static void tcp_wait(struct dp_a2a_stream *s, int ms)
{
	struct tcp_ep *e = (struct tcp_ep *)s;
	nfds_t n = build_pfd(e, &ms);

	(void)poll(e->pfd, n, ms);
}

static int tcp_poll(struct dp_a2a_stream *s, int ms, unsigned char *ready)
{
	struct tcp_ep *e = (struct tcp_ep *)s;
	nfds_t n = build_pfd(e, &ms);
	int got = poll(e->pfd, n, ms), cnt = 0;

	memset(ready, 0, (size_t)s->ep.world);
	if (e->local) {
		/* a doorbell only says "some ring moved": try them all (cheap) */
		if (got > 0 && (e->pfd[n - 1].revents & POLLIN))
			dp_a2a_shm_drain_bell(e->local);
		for (int i = 0; i < s->ep.world; i++)
			if (on_ring(e, i) && i != s->ep.rank) {
				ready[i] = DP_A2A_READY_IN |
					   (dp_a2a_stream_wants_write(s, i) ? DP_A2A_READY_OUT : 0);
				cnt++;
			}
	}
	for (nfds_t k = 0; got > 0 && k < n; k++) {
		short r = e->pfd[k].revents;
		unsigned char m = 0;

		if (e->map[k] < 0)
			continue;
		if (r & (POLLIN | POLLHUP | POLLERR | POLLNVAL))
			m |= DP_A2A_READY_IN; /* the read finds EOF or the error */
		if (r & POLLOUT)
			m |= DP_A2A_READY_OUT;
		ready[e->map[k]] = m;
		cnt += m != 0;
	}
	return cnt;
}

static ssize_t tcp_writev_some(struct dp_a2a_stream *s, int peer, const struct iovec *iov, int n)
{
	struct tcp_ep *e = (struct tcp_ep *)s;
	size_t allow = pace_allow(e, peer), total = 0;
	struct msghdr mh = { 0 };
	struct iovec cut[64];
	int k = 0;
	ssize_t w;

	if (on_ring(e, peer)) {
		ssize_t done = 0;

		for (; k < n; k++) {
			w = e->ls->ops->write_some(e->ls, peer % s->ep.rpn, iov[k].iov_base,
						   iov[k].iov_len);
			if (w < 0)
				return done ? done : w;
			done += w;
			if ((size_t)w < iov[k].iov_len)
				break;
		}
		return done;
	}
	/* cut the gather list at the pacing allowance */
	for (; k < n && k < (int)DP_ARRAY_SIZE(cut) && total < allow; k++) {
		cut[k] = iov[k];
		if (cut[k].iov_len > allow - total)
			cut[k].iov_len = allow - total;
		total += cut[k].iov_len;
	}
	if (!total)
		return 0;
	mh.msg_iov = cut;
	mh.msg_iovlen = (size_t)k;
	w = sendmsg(e->fds[peer], &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (w >= 0) {
		if (e->bytes_per_us > 0 && remote(e, peer))
			e->tokens -= (double)w;
		return w;
	}
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
		return 0;
	return errno == EPIPE ? -ECONNRESET : -errno;
}

static int tcp_peer_alive(struct dp_a2a_stream *s, int peer)
{
	struct tcp_ep *e = (struct tcp_ep *)s;

	if (on_ring(e, peer))
		return e->ls->ops->peer_alive(e->ls, peer % s->ep.rpn);
	return 0; /* a dead peer shows up as EOF on its socket */
}

static const struct dp_a2a_stream_ops tcp_stream_ops = {
	.write_some = tcp_write_some,
	.read_some = tcp_read_some,
	.wait = tcp_wait,
	.peer_alive = tcp_peer_alive,
	.poll = tcp_poll,
	.writev_some = tcp_writev_some,
};

/* Split "host:port" (the last colon; "[v6]:port" allowed) and resolve. */
static int resolve(const char *addr, int passive, struct addrinfo **res, struct dp_err *err)
{
	struct addrinfo hints = { 0 };
	char host[256];
	const char *colon = strrchr(addr, ':');
	size_t hl;
	int rc;

	if (!colon || colon == addr || !colon[1])
		return dp_err_set(err, EINVAL, "a2a: tcp: address '%s' is not host:port", addr);
	hl = (size_t)(colon - addr);
	if (addr[0] == '[' && hl >= 2 && addr[hl - 1] == ']') {
		addr++;
		hl -= 2;
	}
	if (hl >= sizeof(host))
		return dp_err_set(err, EINVAL, "a2a: tcp: host name in '%s' is too long", addr);
	memcpy(host, addr, hl);
	host[hl] = '\0';
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = passive ? AI_PASSIVE : 0;
	rc = getaddrinfo(host, colon + 1, &hints, res);
	if (!rc && !*res)
		rc = EAI_NONAME;
	if (rc)
		return dp_err_set(err, EHOSTUNREACH, "a2a: tcp: cannot resolve '%s': %s", addr,
				  gai_strerror(rc));
	return 0;
}

/* Socket buffer size from @env (bytes), or 0: leave it to the kernel. */
static int env_bytes(const char *env)
{
	const char *v = getenv(env);
	char *end = NULL;
	long b;

	if (!v || !*v)
		return 0;
	b = strtol(v, &end, 10);
	return end && *end == '\0' && b > 0 && b <= (1L << 30) ? (int)b : 0;
}

static void tune(int fd, int remote_peer)
{
	int one = 1, snd = env_bytes("DP_A2A_TCP_SNDBUF"), rcv = env_bytes("DP_A2A_TCP_RCVBUF");

	const char *cc = getenv("DP_A2A_TCP_CC");

	if (!cc || !*cc)
		cc = DEF_CC;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* not built into this kernel (or "system"): the system's default */
	if (remote_peer && strcmp(cc, "system") != 0)
		(void)setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, cc, (socklen_t)strlen(cc));
	if (remote_peer && snd)
		(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &snd, sizeof(snd));
	if (remote_peer && rcv)
		(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
}

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	return fl < 0 ? -errno : (fcntl(fd, F_SETFL, fl | O_NONBLOCK) ? -errno : 0);
}

/* Blocking-with-deadline full read or write on a fresh socket. */
static int io_full(int fd, void *buf, size_t n, int writing, int64_t deadline)
{
	size_t done = 0;

	while (done < n) {
		struct pollfd p = { fd, writing ? POLLOUT : POLLIN, 0 };
		int64_t left = deadline - dp_a2a_now_ms();
		ssize_t r;

		if (left <= 0)
			return -ETIMEDOUT;
		if (poll(&p, 1, (int)left) <= 0)
			continue;
		r = writing ? send(fd, (char *)buf + done, n - done, MSG_NOSIGNAL | MSG_DONTWAIT)
			    : recv(fd, (char *)buf + done, n - done, MSG_DONTWAIT);
		if (r == 0 && !writing)
			return -ECONNRESET;
		if (r < 0 && errno != EAGAIN && errno != EINTR)
			return -errno;
		if (r > 0)
			done += (size_t)r;
	}
	return 0;
}

static int listen_on(const char *addr, int *out, struct dp_err *err)
{
	struct addrinfo *res = NULL;
	int fd, one = 1, rc;

	rc = resolve(addr, 1, &res, err);
	if (rc || !res)
		return rc ? rc : -EHOSTUNREACH;
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		rc = dp_err_set(err, errno, "a2a: tcp: socket: %s", strerror(errno));
		goto out;
	}
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, res->ai_addr, res->ai_addrlen) || listen(fd, 128)) {
		rc = dp_err_set(err, errno, "a2a: tcp: cannot listen on '%s': %s", addr,
				strerror(errno));
		(void)close(fd);
		goto out;
	}
	*out = fd;
out:
	freeaddrinfo(res);
	return rc;
}

static int connect_to(const char *addr, int64_t deadline, int *out, struct dp_err *err)
{
	struct addrinfo *res = NULL;
	int rc;

	rc = resolve(addr, 0, &res, err);
	if (rc || !res)
		return rc ? rc : -EHOSTUNREACH;
	for (;;) {
		int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		struct timespec ts = { 0, 20 * 1000000L };

		if (fd < 0) {
			rc = dp_err_set(err, errno, "a2a: tcp: socket: %s", strerror(errno));
			break;
		}
		if (connect(fd, res->ai_addr, res->ai_addrlen) == 0) {
			*out = fd;
			rc = 0;
			break;
		}
		rc = errno;
		(void)close(fd);
		if (rc != ECONNREFUSED && rc != ENOENT && rc != ETIMEDOUT && rc != EAGAIN) {
			rc = dp_err_set(err, rc, "a2a: tcp: cannot connect to '%s': %s", addr,
					strerror(rc));
			break;
		}
		if (dp_a2a_now_ms() >= deadline) {
			rc = dp_err_set(err, ETIMEDOUT, "a2a: tcp: cannot connect to '%s': %s",
					addr, strerror(rc));
			break;
		}
		(void)nanosleep(&ts, NULL); /* the peer is not listening yet */
	}
	freeaddrinfo(res);
	return rc;
}

/* "host:port" of the far end of @fd, for messages. */
static void peer_name(int fd, char *buf, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[128], port[16];

	if (getpeername(fd, (struct sockaddr *)&ss, &sl) ||
	    getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), port, sizeof(port),
			NI_NUMERICHOST | NI_NUMERICSERV)) {
		(void)snprintf(buf, len, "an unknown address");
		return;
	}
	(void)snprintf(buf, len, "%s:%s", host, port);
}

/* Does @in carry our job token (or, without one, no token either)? */
static int token_ok(const struct tcp_ep *e, const struct hello *in)
{
	if (!e->has_token)
		return in->has_token == 0;
	return in->has_token == 1 && dp_mem_equal_ct(in->token, e->token, DP_A2A_TOKEN_LEN);
}

/* Dial rank @j, say hello, read its answer. */
static int dial(struct tcp_ep *e, const struct dp_a2a_comm_cfg *cfg, int j, int64_t deadline,
		struct dp_err *err)
{
	struct hello h = { HELLO_MAGIC,
			   (uint32_t)cfg->rank,
			   (uint32_t)e->s.ep.world,
			   (uint32_t)e->has_token,
			   { 0 } };
	uint32_t ans = 0;
	int rc;

	if (e->has_token)
		memcpy(h.token, e->token, sizeof(h.token));
	rc = connect_to(cfg->addrs[j], deadline, &e->fds[j], err);
	if (rc)
		return rc;
	tune(e->fds[j], j / e->s.ep.rpn != cfg->rank / e->s.ep.rpn);
	rc = io_full(e->fds[j], &h, sizeof(h), 1, deadline);
	if (!rc)
		rc = io_full(e->fds[j], &ans, sizeof(ans), 0, deadline);
	if (!rc && ans == HELLO_BAD_TOKEN)
		return dp_err_set(err, EACCES,
				  "a2a: tcp: rank %d at '%s' refused rank %d: wrong job token", j,
				  cfg->addrs[j], cfg->rank);
	if (rc == -ECONNRESET || (!rc && ans != HELLO_OK))
		return dp_err_set(err, EPROTO,
				  "a2a: tcp: rank %d at '%s' did not accept the hello of rank %d",
				  j, cfg->addrs[j], cfg->rank);
	if (rc)
		return dp_err_set(err, -rc, "a2a: tcp: hello to rank %d at '%s': %s", j,
				  cfg->addrs[j], strerror(-rc));
	return 0;
}

static int wire_up(struct tcp_ep *e, const struct dp_a2a_comm_cfg *cfg, struct dp_err *err)
{
	int world = e->s.ep.world, me = cfg->rank;
	int64_t deadline = dp_a2a_now_ms() + cfg->timeout_ms;
	char refused[200] = "";
	int rc, expect = 0;

	for (int j = 0; j < me; j++) {
		if (on_ring(e, j))
			continue;
		rc = dial(e, cfg, j, deadline, err);
		if (rc)
			return rc;
	}
	for (int j = me + 1; j < world; j++)
		expect += !on_ring(e, j);
	for (int n = 0; n < expect; n++) {
		struct pollfd p = { e->lfd, POLLIN, 0 };
		int64_t left = deadline - dp_a2a_now_ms();
		struct hello in = { 0 };
		uint32_t ans = HELLO_OK;
		char who[160];
		int fd;

		if (left <= 0 || poll(&p, 1, (int)left) <= 0)
			return dp_err_set(
				err, ETIMEDOUT,
				"a2a: tcp: rank %d: only %d of %d peers connected in %d ms%s%s", me,
				n, expect, cfg->timeout_ms, refused[0] ? "; " : "", refused);
		fd = accept4(e->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			n--;
			continue;
		}
		rc = io_full(fd, &in, sizeof(in), 0, deadline);
		if (!rc && in.magic == HELLO_MAGIC && !token_ok(e, &in)) {
			/* not of this job: refuse it and wait for the real peer */
			peer_name(fd, who, sizeof(who));
			(void)snprintf(refused, sizeof(refused),
				       "refused %s (says rank %u): %s job token", who, in.rank,
				       in.has_token ? "wrong" : "no");
			ans = HELLO_BAD_TOKEN;
			(void)io_full(fd, &ans, sizeof(ans), 1, deadline);
			(void)close(fd);
			n--;
			continue;
		}
		if (rc || in.magic != HELLO_MAGIC || in.world != (uint32_t)world ||
		    in.rank <= (uint32_t)me || in.rank >= (uint32_t)world || e->fds[in.rank] >= 0 ||
		    on_ring(e, (int)in.rank)) {
			peer_name(fd, who, sizeof(who));
			(void)close(fd);
			return dp_err_set(err, EPROTO, "a2a: tcp: rank %d: bad hello from %s", me,
					  who);
		}
		rc = io_full(fd, &ans, sizeof(ans), 1, deadline);
		if (rc) {
			(void)close(fd);
			return dp_err_set(err, -rc, "a2a: tcp: rank %d: answering rank %u: %s", me,
					  in.rank, strerror(-rc));
		}
		tune(fd, (int)in.rank / e->s.ep.rpn != me / e->s.ep.rpn);
		e->fds[in.rank] = fd;
	}
	for (int j = 0; j < world; j++)
		if (e->fds[j] >= 0 && set_nonblock(e->fds[j]))
			return dp_err_set(err, errno, "a2a: tcp: fcntl: %s", strerror(errno));
	return 0;
}

/* This node's shm rings (tcp_local_shm). */
static int open_rings(struct tcp_ep *e, const struct dp_a2a_comm_cfg *cfg, struct dp_err *err)
{
	struct dp_a2a_comm_cfg lc = *cfg;
	char name[200];
	int n;

	if (!cfg->shm_name || cfg->shm_name[0] != '/')
		return dp_err_set(err, EINVAL, "a2a: tcp: tcp_local_shm needs a shm_name");
	n = snprintf(name, sizeof(name), "%s-n%d", cfg->shm_name, cfg->rank / cfg->ranks_per_node);
	if (n < 0 || (size_t)n >= sizeof(name))
		return dp_err_set(err, ENAMETOOLONG, "a2a: tcp: shm name '%s' is too long",
				  cfg->shm_name);
	lc.shm_name = name;
	lc.nodes = 1;
	lc.rank = cfg->rank % cfg->ranks_per_node;
	n = dp_a2a_shm_open_polled(&lc, &e->local, &e->bell_fd, err);
	if (n)
		return n;
	e->local->tp = &dp_a2a_shm;
	e->ls = dp_container_of_stream(e->local);
	return 0;
}

static void tcp_close_ep(struct dp_a2a_ep *ep)
{
	struct tcp_ep *e;

	if (!ep)
		return;
	e = (struct tcp_ep *)dp_container_of_stream(ep);
	for (int i = 0; e->fds && i < ep->world; i++)
		if (e->fds[i] >= 0)
			(void)close(e->fds[i]);
	if (e->lfd >= 0)
		(void)close(e->lfd);
	if (e->local)
		e->local->tp->close(e->local);
	explicit_bzero(e->token, sizeof(e->token));
	free(e->fds);
	free(e->pfd);
	free(e->map);
	dp_a2a_stream_release(&e->s);
	free(e);
}

static int tcp_open_ep(const struct dp_a2a_comm_cfg *cfg, struct dp_a2a_ep **out,
		       struct dp_err *err)
{
	int world = cfg->nodes * cfg->ranks_per_node;
	struct tcp_ep *e;
	int rc;

	if (!cfg->addrs)
		return dp_err_set(err, EINVAL, "a2a: tcp: needs one host:port per rank");
	e = calloc(1, sizeof(*e));
	if (!e)
		return dp_err_set(err, ENOMEM, "a2a: out of memory");
	e->lfd = cfg->listen_fd;
	e->s.ep.tp = &dp_a2a_tcp;
	e->s.ep.rank = cfg->rank;
	e->s.ep.world = world;
	e->s.ep.rpn = cfg->ranks_per_node;
	e->s.ep.timeout_ms = cfg->timeout_ms;
	e->s.ops = &tcp_stream_ops;
	e->s.what = "tcp";
	if (cfg->token) {
		e->has_token = 1;
		memcpy(e->token, cfg->token, sizeof(e->token));
	}
	e->bytes_per_us = cfg->tcp_inter_mbps > 0 ? cfg->tcp_inter_mbps / 8 : 0;
	e->burst = e->bytes_per_us * 2000 > 65536 ? e->bytes_per_us * 2000 : 65536;
	e->refill_us = now_us();
	e->fds = malloc((size_t)world * sizeof(*e->fds));
	for (int i = 0; e->fds && i < world; i++)
		e->fds[i] = -1;
	e->bell_fd = -1;
	e->pfd = calloc((size_t)world + 1, sizeof(*e->pfd));
	e->map = calloc((size_t)world + 1, sizeof(*e->map));
	if (!e->fds || !e->pfd || !e->map) {
		rc = dp_err_set(err, ENOMEM, "a2a: out of memory");
		goto fail;
	}
	rc = dp_a2a_stream_init(&e->s, err);
	if (rc)
		goto fail;
	if (cfg->tcp_local_shm && cfg->ranks_per_node > 1) {
		rc = open_rings(e, cfg, err);
		if (rc)
			goto fail;
	}
	if (e->lfd < 0 && cfg->rank < world - 1) {
		rc = listen_on(cfg->addrs[cfg->rank], &e->lfd, err);
		if (rc)
			goto fail;
	}
	rc = wire_up(e, cfg, err);
	if (rc)
		goto fail;
	*out = &e->s.ep;
	return 0;
fail:
	tcp_close_ep(&e->s.ep);
	return rc;
}

static int tcp_probe(int *prio, struct dp_err *err)
{
	(void)err;
	*prio = 20;
	return 0;
}

const struct dp_a2a_transport dp_a2a_tcp = {
	.name = "tcp",
	.probe = tcp_probe,
	.open = tcp_open_ep,
	.send = dp_a2a_stream_send,
	.send_take = dp_a2a_stream_send_take,
	.recv = dp_a2a_stream_recv,
	.recv_any = dp_a2a_stream_recv_any,
	.try_recv_any = dp_a2a_stream_try_recv_any,
	.flush = dp_a2a_stream_flush,
	.put = dp_a2a_no_put,
	.close = tcp_close_ep,
};
