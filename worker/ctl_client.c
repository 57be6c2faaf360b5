/* worker/ctl_client.c - the worker end of the control plane.
 *
 * The socket is blocking; writes are serialised by a mutex (the heartbeat
 * thread and the main thread both send).  The client thread poll()s the
 * socket with the heartbeat interval as timeout, so a heartbeat goes out at
 * least every heartbeat_s and commands are handled as they arrive.  A
 * self-pipe wakes the thread for close().
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "launcher/ctl_proto.h"
#include "launcher/dp_preflight.h"
#include "worker/dp_worker.h"
#include "common/dp_banned.h"

struct dp_ctl_client {
	int fd;
	int wake[2];
	double hb_s;
	pthread_t thread;
	int thread_started;
	pthread_mutex_t wlock; /* serialises writes on fd */
	pthread_mutex_t lock;  /* guards the fields below */
	pthread_cond_t cond;
	int started, stopped, lost, quit;
	struct dp_ctl_heartbeat hb;
	void (*on_dump)(void *arg);
	void *arg;
	struct dp_ctl_rx rx;
	struct dp_ctl_peer *peers; /* from PEERS frames, guarded by lock */
	size_t npeers, cappeers;
	struct dp_ctl_preflight pf; /* pre-flight report, answered on a probe */
};

static double now_s(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int send_msg(struct dp_ctl_client *c, const struct dp_ctl_msg *m, struct dp_err *err)
{
	struct dp_buf b;
	int rc;

	dp_buf_init(&b, DP_CTL_HDR_LEN + DP_CTL_MAX_PAYLOAD);
	rc = dp_ctl_encode(m, &b, err);
	if (rc == 0) {
		(void)pthread_mutex_lock(&c->wlock);
		rc = dp_ctl_write_all(c->fd, b.data, b.len);
		(void)pthread_mutex_unlock(&c->wlock);
		if (rc)
			(void)dp_err_set(err, -rc, "ctl: cannot send '%s' to the controller: %s",
					 dp_ctl_type_name((int)m->type), strerror(-rc));
	}
	dp_buf_release(&b);
	return rc;
}

static void set_flag(struct dp_ctl_client *c, int *flag)
{
	(void)pthread_mutex_lock(&c->lock);
	*flag = 1;
	(void)pthread_cond_broadcast(&c->cond);
	(void)pthread_mutex_unlock(&c->lock);
}

static int add_peers(struct dp_ctl_client *c, const struct dp_ctl_peers *p)
{
	int rc = 0;

	(void)pthread_mutex_lock(&c->lock);
	if (c->npeers + p->n > c->cappeers) {
		size_t cap = c->cappeers ? 2 * c->cappeers : 64;
		struct dp_ctl_peer *v;

		while (cap < c->npeers + p->n)
			cap *= 2;
		v = realloc(c->peers, cap * sizeof(*v));
		if (!v) {
			rc = -ENOMEM;
			goto out;
		}
		c->peers = v;
		c->cappeers = cap;
	}
	memcpy(c->peers + c->npeers, p->v, p->n * sizeof(*p->v));
	c->npeers += p->n;
out:
	(void)pthread_mutex_unlock(&c->lock);
	return rc;
}

/* Pre-flight: stamp the clock as late as possible, then send the report. */
static void answer_probe(struct dp_ctl_client *c)
{
	struct dp_ctl_msg *m = calloc(1, sizeof(*m));

	if (!m)
		return;
	m->type = DP_CTL_PREFLIGHT;
	m->u.pf = c->pf;
	dp_preflight_stamp(&m->u.pf);
	if (send_msg(c, m, NULL) != 0)
		set_flag(c, &c->lost);
	free(m);
}

static void *client_thread(void *arg)
{
	struct dp_ctl_client *c = arg;
	struct dp_ctl_msg *m = malloc(sizeof(*m));
	double next_hb = now_s() + c->hb_s;

	if (!m) {
		set_flag(c, &c->lost);
		return NULL;
	}
	for (;;) {
		struct pollfd pf[2] = { { .fd = c->fd, .events = POLLIN },
					{ .fd = c->wake[0], .events = POLLIN } };
		double t = now_s();
		int timeout = t >= next_hb ? 0 : (int)((next_hb - t) * 1000) + 1;
		int rc, quit;

		(void)pthread_mutex_lock(&c->lock);
		quit = c->quit;
		(void)pthread_mutex_unlock(&c->lock);
		if (quit)
			break;
		if (poll(pf, 2, timeout) < 0 && errno != EINTR)
			break;
		if (pf[1].revents)
			continue; /* re-check quit */
		if (now_s() >= next_hb) {
			struct dp_ctl_msg hb = { .type = DP_CTL_HEARTBEAT };

			(void)pthread_mutex_lock(&c->lock);
			hb.u.hb = c->hb;
			(void)pthread_mutex_unlock(&c->lock);
			if (send_msg(c, &hb, NULL) != 0) {
				set_flag(c, &c->lost);
				break;
			}
			next_hb = now_s() + c->hb_s;
		}
		if (!(pf[0].revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		if (dp_ctl_rx_fill(&c->rx, c->fd) <= 0) {
			set_flag(c, &c->lost);
			break;
		}
		while ((rc = dp_ctl_rx_next(&c->rx, m, NULL)) == 1) {
			if (m->type == DP_CTL_PEERS) {
				if (add_peers(c, &m->u.peers) != 0) {
					set_flag(c, &c->lost);
					rc = -ENOMEM;
					break;
				}
			} else if (m->type == DP_CTL_START)
				set_flag(c, &c->started);
			else if (m->type == DP_CTL_STOP)
				set_flag(c, &c->stopped);
			else if (m->type == DP_CTL_DUMP_STACKS && c->on_dump)
				c->on_dump(c->arg);
			else if (m->type == DP_CTL_PREFLIGHT_PROBE)
				answer_probe(c);
		}
		if (rc < 0) {
			set_flag(c, &c->lost);
			break;
		}
	}
	free(m);
	return NULL;
}

/* A pseudo-random number in [0, 1) for retry jitter: ranks that start
 * together should not retry together (seeded from the pid and the clock). */
static double jitter(void)
{
	static _Thread_local unsigned seed;

	if (!seed)
		seed = (unsigned)getpid() ^ (unsigned)(now_s() * 1e6);
	return (double)(rand_r(&seed) % 10000) / 10000.0;
}

/* One connection attempt to @p: a non-blocking connect() that may take up
 * to 0.25 s on the first attempt, longer (to 2 s) on later ones, never past
 * @deadline.  The fd (blocking again, TCP_NODELAY), or -1 with *@e set. */
static int try_connect(const struct addrinfo *p, double deadline, unsigned attempt, int *e)
{
	double window = attempt < 3 ? 0.25 * (double)(1u << attempt) : 2.0;
	int fd =
		socket(p->ai_family, p->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, p->ai_protocol);
	int one = 1, soerr = 0;
	socklen_t sl = sizeof(soerr);

	if (fd < 0) {
		*e = errno;
		return -1;
	}
	if (connect(fd, p->ai_addr, p->ai_addrlen) != 0) {
		struct pollfd pfd = { .fd = fd, .events = POLLOUT };
		double left = deadline - now_s();
		int rc;

		if (errno != EINPROGRESS) {
			*e = errno;
			(void)close(fd);
			return -1;
		}
		if (left > window)
			left = window;
		do
			rc = poll(&pfd, 1, left > 0 ? (int)(left * 1000) + 1 : 0);
		while (rc < 0 && errno == EINTR);
		if (rc <= 0) {
			*e = rc == 0 ? ETIMEDOUT : errno;
			(void)close(fd);
			return -1;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr != 0) {
			*e = soerr ? soerr : errno;
			(void)close(fd);
			return -1;
		}
	}
	(void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

static int dial(const char *hostport, double timeout_s, struct dp_err *err)
{
	char host[256];
	const char *colon = strrchr(hostport, ':');
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai = NULL;
	double deadline = now_s() + timeout_s;
	int rc, e = 0;

	if (!colon || colon == hostport || (size_t)(colon - hostport) >= sizeof(host) || !colon[1])
		return dp_err_set(err, EINVAL, "ctl: controller address '%s' is not HOST:PORT",
				  hostport);
	(void)snprintf(host, sizeof(host), "%.*s", (int)(colon - hostport), hostport);
	rc = getaddrinfo(host, colon + 1, &hints, &ai);
	if (rc)
		return dp_err_set(err, EHOSTUNREACH, "ctl: cannot resolve controller '%s': %s",
				  hostport, gai_strerror(rc));
	/* The controller listens before it starts anyone, but at start-up it
	 * may be busy accepting thousands of ranks (a full accept queue drops
	 * our SYN, and the kernel would retry it only after 1, 3, 7 s), and a
	 * relay or a slow network may delay it.  So each attempt is a
	 * non-blocking connect() given a short window, and the next one follows
	 * after a short jittered pause (10 ms, doubling to 1 s, each a random
	 * 50..100 % of that), both bounded by the deadline. */
	for (unsigned attempt = 0;; attempt++) {
		double wait = attempt < 7 ? 0.01 * (double)(1u << attempt) : 1.0;

		for (struct addrinfo *p = ai; p; p = p->ai_next) {
			int fd = try_connect(p, deadline, attempt, &e);

			if (fd >= 0) {
				freeaddrinfo(ai);
				return fd;
			}
		}
		if (now_s() + 0.001 > deadline)
			break;
		wait *= 0.5 + 0.5 * jitter();
		if (now_s() + wait > deadline)
			wait = deadline - now_s();
		if (wait > 0)
			(void)usleep((useconds_t)(wait * 1e6));
	}
	freeaddrinfo(ai);
	return dp_err_set(err, e ? e : ETIMEDOUT, "ctl: cannot connect to controller '%s': %s",
			  hostport, strerror(e ? e : ETIMEDOUT));
}

int dp_ctl_client_open(const struct dp_ctl_client_cfg *cfg, struct dp_ctl_client **out,
		       struct dp_err *err)
{
	struct dp_ctl_client *c = calloc(1, sizeof(*c));
	struct dp_ctl_msg *hello = calloc(1, sizeof(*hello));
	int rc;

	if (!c || !hello) {
		rc = dp_err_set(err, ENOMEM, "ctl: out of memory");
		goto err_free;
	}
	c->fd = -1;
	c->wake[0] = c->wake[1] = -1;
	c->hb_s = cfg->heartbeat_s > 0 ? cfg->heartbeat_s : 1;
	c->hb.loss = NAN;
	c->hb.tokens_per_s = NAN;
	c->on_dump = cfg->on_dump_stacks;
	if (cfg->preflight) {
		c->pf = *cfg->preflight;
	} else {
		c->pf.gpus = c->pf.nics = -1;
		(void)snprintf(c->pf.error, sizeof(c->pf.error), "the worker gathered no report");
	}
	c->arg = cfg->arg;
	dp_ctl_rx_init(&c->rx);
	(void)pthread_mutex_init(&c->wlock, NULL);
	(void)pthread_mutex_init(&c->lock, NULL);
	(void)pthread_cond_init(&c->cond, NULL);
	if (pipe2(c->wake, O_CLOEXEC) != 0) {
		int e = errno;

		rc = dp_err_set(err, e, "ctl: cannot create a pipe: %s", strerror(e));
		goto err_close;
	}
	rc = dial(cfg->controller, cfg->connect_timeout_s > 0 ? cfg->connect_timeout_s : 10, err);
	if (rc < 0)
		goto err_close;
	c->fd = rc;
	hello->type = DP_CTL_HELLO;
	hello->u.hello.rank = cfg->rank;
	hello->u.hello.pid = (uint32_t)getpid();
	memcpy(hello->u.hello.token, cfg->token, DP_CTL_TOKEN_LEN);
	if (cfg->host)
		(void)snprintf(hello->u.hello.host, sizeof(hello->u.hello.host), "%s", cfg->host);
	else if (gethostname(hello->u.hello.host, sizeof(hello->u.hello.host) - 1) != 0)
		(void)snprintf(hello->u.hello.host, sizeof(hello->u.hello.host), "?");
	(void)snprintf(hello->u.hello.topo, sizeof(hello->u.hello.topo), "%s",
		       cfg->topo ? cfg->topo : "");
	rc = send_msg(c, hello, err);
	if (rc)
		goto err_close;
	rc = pthread_create(&c->thread, NULL, client_thread, c);
	if (rc) {
		rc = dp_err_set(err, rc, "ctl: cannot start the client thread: %s", strerror(rc));
		goto err_close;
	}
	c->thread_started = 1;
	free(hello);
	*out = c;
	return 0;
err_close:
	dp_ctl_client_close(c);
	c = NULL;
err_free:
	free(hello);
	free(c);
	return rc;
}

int dp_ctl_client_ready(struct dp_ctl_client *c, struct dp_err *err)
{
	struct dp_ctl_msg m = { .type = DP_CTL_READY };

	return send_msg(c, &m, err);
}

int dp_ctl_client_wait_start(struct dp_ctl_client *c, double timeout_s, struct dp_err *err)
{
	struct timespec until;
	int rc = 0;

	(void)clock_gettime(CLOCK_REALTIME, &until);
	if (timeout_s > 0) {
		until.tv_sec += (time_t)timeout_s;
		until.tv_nsec += (long)((timeout_s - (double)(time_t)timeout_s) * 1e9);
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
	}
	(void)pthread_mutex_lock(&c->lock);
	while (!c->started && !c->stopped && !c->lost && rc == 0) {
		if (timeout_s > 0)
			rc = pthread_cond_timedwait(&c->cond, &c->lock, &until);
		else
			rc = pthread_cond_wait(&c->cond, &c->lock);
	}
	if (c->started)
		rc = 0;
	else if (c->stopped || c->lost)
		rc = dp_err_set(err, ECANCELED, "ctl: %s before the run started",
				c->stopped ? "the controller said stop"
					   : "controller connection lost");
	else
		rc = dp_err_set(err, ETIMEDOUT, "ctl: no start from the controller in %g s",
				timeout_s);
	(void)pthread_mutex_unlock(&c->lock);
	return rc;
}

void dp_ctl_client_progress(struct dp_ctl_client *c, uint64_t step, double loss,
			    double tokens_per_s, uint64_t mem_bytes)
{
	(void)pthread_mutex_lock(&c->lock);
	c->hb.step = step;
	c->hb.loss = loss;
	c->hb.tokens_per_s = tokens_per_s;
	c->hb.mem_bytes = mem_bytes;
	(void)pthread_mutex_unlock(&c->lock);
}

int dp_ctl_client_log(struct dp_ctl_client *c, int stream, const char *line)
{
	struct dp_ctl_msg *m = calloc(1, sizeof(*m));
	int rc;

	if (!m)
		return -ENOMEM;
	m->type = DP_CTL_LOG;
	m->u.log.stream = (uint8_t)(stream == 2 ? 2 : 1);
	(void)snprintf(m->u.log.line, sizeof(m->u.log.line), "%s", line);
	rc = send_msg(c, m, NULL);
	free(m);
	return rc;
}

int dp_ctl_client_stopped(struct dp_ctl_client *c)
{
	int s;

	(void)pthread_mutex_lock(&c->lock);
	s = c->stopped || c->lost;
	(void)pthread_mutex_unlock(&c->lock);
	return s;
}

int dp_ctl_client_done(struct dp_ctl_client *c, int status, struct dp_err *err)
{
	struct dp_ctl_msg m = { .type = DP_CTL_HEARTBEAT };
	int rc;

	/* a last heartbeat first, so the controller sees the final step */
	(void)pthread_mutex_lock(&c->lock);
	m.u.hb = c->hb;
	(void)pthread_mutex_unlock(&c->lock);
	rc = send_msg(c, &m, err);
	if (rc)
		return rc;
	memset(&m, 0, sizeof(m));
	m.type = DP_CTL_DONE;
	m.u.done_status = status < 0 || status > 255 ? 255 : status;
	return send_msg(c, &m, err);
}

int dp_ctl_client_endpoint(struct dp_ctl_client *c, const char *addr, int port,
			   const uint32_t *want, size_t n, struct dp_err *err)
{
	struct dp_ctl_msg *m;
	int rc;

	if (n > DP_CTL_WANT_MAX || port < 1 || port > 65535 || !addr || !*addr ||
	    strlen(addr) >= DP_CTL_ADDR_MAX)
		return dp_err_set(err, EINVAL, "ctl: bad endpoint %s:%d (%zu peers)",
				  addr ? addr : "?", port, n);
	m = calloc(1, sizeof(*m));
	if (!m)
		return dp_err_set(err, ENOMEM, "ctl: out of memory");
	m->type = DP_CTL_ENDPOINT;
	(void)snprintf(m->u.ep.addr, sizeof(m->u.ep.addr), "%s", addr);
	m->u.ep.port = (uint16_t)port;
	m->u.ep.nwant = (uint16_t)n;
	if (n)
		memcpy(m->u.ep.want, want, n * sizeof(*want));
	rc = send_msg(c, m, err);
	free(m);
	return rc;
}

int dp_ctl_client_peer(struct dp_ctl_client *c, uint32_t rank, char *addr, size_t len, int *port)
{
	int rc = -ENOENT;

	(void)pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < c->npeers; i++)
		if (c->peers[i].rank == rank) {
			(void)snprintf(addr, len, "%s", c->peers[i].addr);
			*port = c->peers[i].port;
			rc = 0;
			break;
		}
	(void)pthread_mutex_unlock(&c->lock);
	return rc;
}

int dp_ctl_client_step(struct dp_ctl_client *c, const struct dp_ctl_step *s, struct dp_err *err)
{
	struct dp_ctl_msg m = { .type = DP_CTL_STEP };

	m.u.step = *s;
	return send_msg(c, &m, err);
}

int dp_ctl_client_timeline(struct dp_ctl_client *c, const struct dp_ctl_timeline *t,
			   struct dp_err *err)
{
	struct dp_ctl_msg *m = malloc(sizeof(*m));
	int rc;

	if (!m)
		return dp_err_set(err, ENOMEM, "ctl: out of memory");
	m->type = DP_CTL_TIMELINE;
	m->u.tl = *t;
	rc = send_msg(c, m, err);
	free(m);
	return rc;
}

int dp_ctl_client_local_addr(struct dp_ctl_client *c, char *addr, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int rc;

	if (getsockname(c->fd, (struct sockaddr *)&ss, &sl) != 0)
		return -errno;
	rc = getnameinfo((struct sockaddr *)&ss, sl, addr, (socklen_t)len, NULL, 0, NI_NUMERICHOST);
	return rc ? -EINVAL : 0;
}

void dp_ctl_client_close(struct dp_ctl_client *c)
{
	if (!c)
		return;
	if (c->thread_started) {
		set_flag(c, &c->quit);
		(void)!write(c->wake[1], "q", 1);
		(void)pthread_join(c->thread, NULL);
	}
	if (c->fd >= 0)
		(void)close(c->fd);
	for (int i = 0; i < 2; i++)
		if (c->wake[i] >= 0)
			(void)close(c->wake[i]);
	(void)pthread_mutex_destroy(&c->wlock);
	(void)pthread_mutex_destroy(&c->lock);
	(void)pthread_cond_destroy(&c->cond);
	free(c->peers);
	free(c);
}
