/* launcher/controller.c - the controller event loop behind dp_ctl_run().
 *
 * One thread, one poll() loop over: the listening socket, every worker
 * connection, and the descriptors of the launch backend.  The loop wakes at
 * least every 100 ms to check deadlines (rendezvous, hello, hang, grace).
 *
 * A run attempt goes SPAWN -> RENDEZVOUS (until every rank said ready) ->
 * RUNNING -> (success: every rank exited 0 after done) or, on the first
 * failure, [DUMPING ->] TEARDOWN.  Only the first failure is recorded as the
 * root cause: what happens to the other ranks while we stop them is the
 * cascade and is ignored.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "common/dp_buf.h"
#include "common/dp_log.h"
#include "common/dp_util.h"
#include "launcher/ctl_launch.h"
#include "launcher/ctl_proto.h"
#include "launcher/dp_preflight.h"
#include "launcher/dp_metrics.h"
#include "launcher/dp_notify.h"
#include "common/dp_banned.h"

/* Unauthenticated connections held at once: one per rank (a whole job
 * starting together), at least MIN_PENDING, at most half the open-file
 * limit; more wait in the listen backlog. */
#define MIN_PENDING	256
#define HELLO_TIMEOUT_S 5.0 /* default: an accepted connection must say hello by then */
#define MIN_BACKLOG	1024
#define EMFILE_PAUSE_S	0.05 /* out of descriptors: stop accepting this long */
#define LOST_GRACE_S	2.0  /* wait for an exit after a lost connection */
#define OUTBUF_CAP	(1 << 20)
#define TICK_MS		100
#define GIVEUP_S	5.0 /* after SIGKILL, give up on ranks that do not exit */

enum phase { PH_RENDEZVOUS, PH_RUNNING, PH_DUMPING, PH_TEARDOWN };

struct conn {
	int fd;
	int rank; /* -1 until a valid hello */
	double hello_deadline;
	char peer[64];
	struct dp_ctl_rx *rx;
	struct dp_buf out;
};

struct rank {
	const struct dp_launch_rank *spec;
	struct conn *conn;
	int hello, ready, done, exited;
	int done_status, exit_status;
	uint32_t pid;
	uint64_t step;
	int has_step;
	double last_progress, last_hb, lost_at;
	double nodone_at; /* exited 0, done not (yet) received */
	double step_at;	  /* when the step last advanced (step time for metrics) */
	char tail[DP_CTL_TAIL_LINES][256];
	int ntail, tail_pos;
	/* training runs: the PP endpoint and the ranks whose address it wants */
	struct dp_ctl_endpoint *ep; /* NULL until ENDPOINT */
	/* pre-flight and progress (health) */
	int pf_state;	/* PF_* */
	double pf_sent; /* CLOCK_REALTIME when the probe went out */
	char pf_why[256];
	double loss, tps; /* from the last heartbeat */
	/* its node (group_hosts()): the lowest rank on the same host, how
	 * many ranks it has; pf_listed on the lowest rank: in the pre-flight
	 * failure lines */
	int host_first, host_n, pf_listed;
};

enum { PF_NONE, PF_PROBED, PF_PASS, PF_FAIL };

struct ctl {
	const struct dp_ctl_cfg *cfg;
	const struct dp_launch_spec *spec;
	struct dp_ctl_result *res;
	const struct dp_launch_backend *be;
	struct dp_launch_session *sess;
	int lfd;
	char addr[128]; /* host:port the workers dial */
	uint8_t token[DP_CTL_TOKEN_LEN];
	struct rank *ranks; /* by rank id */
	struct conn **conns;
	size_t nconns, capconns;
	size_t npending, max_pending; /* connections without a hello yet, and the cap */
	double hello_s;		      /* hello deadline of a new connection */
	double accept_paused;	      /* EMFILE: do not accept before this time */
	enum phase phase;
	int failed;	   /* a root cause is recorded */
	int pending_rank;  /* reported done != 0, exit not seen yet; -1 if none */
	double pending_at; /* when it reported */
	int killed;	   /* SIGKILL sent */
	double t_spawn, rdv_deadline, dump_deadline, kill_deadline;
	/* cfg with defaults applied */
	double rendezvous_s, heartbeat_s, hang_s, grace_s, dump_s;
	/* events (health) */
	double t0;	     /* dp_ctl_run() start */
	int attempt;	     /* 1-based */
	uint64_t progress;   /* last step reported in a progress event */
	uint64_t first_step; /* lowest STEP frame step of this attempt (its resume point) */
	uint64_t resume_at;  /* the checkpoint step this attempt should resume from */
	unsigned pf_checks;  /* pre-flight checks of this run, 0: no gate */
	FILE *events;	     /* RUN_DIR/run.jsonl, or NULL */
	double t_run;	     /* when dp_ctl_run() started */
	/* spares: ranks is the caller's spec copied, so a host can be swapped */
	struct dp_launch_rank *rk;
	struct dp_launch_spec own;
	size_t next_spare; /* cfg->spares[next_spare] is the next one to use */
	int replaced_now;  /* this restart swapped in a spare (its line is last_replace) */
	char last_replace[512];
	size_t swapped; /* nodes swapped at the restarts in a row since the last progress */
};

static double now_s(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double wall_s(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Report an event; @ev has type and the event's own fields set. */
static void emit(struct ctl *c, struct dp_ctl_event *ev)
{
	if (!c->cfg->on_event)
		return;
	ev->t = now_s() - c->t0;
	ev->attempt = c->attempt;
	ev->nranks = c->spec->nranks;
	ev->total_steps = c->cfg->total_steps;
	c->cfg->on_event(c->cfg->event_arg, ev);
}

static void emit_rank(struct ctl *c, enum dp_ctl_event_type type, int rank, int ok, const char *msg)
{
	struct dp_ctl_event ev = { .type = type, .rank = rank, .ok = ok, .msg = msg };

	ev.host = rank >= 0 ? c->ranks[rank].spec->host : NULL;
	emit(c, &ev);
}

/* One line of RUN_DIR/run.jsonl: {"t":..,"time":..,"event":@name,"attempt":..}
 * plus @fields (text of more members without braces, "" for none). */
static void event(struct ctl *c, const char *name, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void event(struct ctl *c, const char *name, const char *fmt, ...)
{
	va_list ap;

	if (!c->events)
		return;
	(void)fprintf(c->events, "{\"t\":%.3f,\"time\":%.3f,\"event\":\"%s\",\"attempt\":%d",
		      now_s() - c->t_run, wall_s(), name, c->attempt - 1);
	va_start(ap, fmt);
	(void)vfprintf(c->events, fmt, ap);
	va_end(ap);
	(void)fputs("}\n", c->events);
	(void)fflush(c->events);
}

/* @s as a JSON string (quotes included) into @buf. */
static const char *json_str(const char *s, char *buf, size_t len)
{
	size_t k = 0;

	buf[k++] = '"';
	for (; *s && k + 8 < len; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\') {
			buf[k++] = '\\';
			buf[k++] = (char)ch;
		} else if (ch < 0x20) {
			k += (size_t)snprintf(buf + k, len - k, "\\u%04x", ch);
		} else {
			buf[k++] = (char)ch;
		}
	}
	buf[k++] = '"';
	buf[k] = '\0';
	return buf;
}

static void post(struct ctl *c, enum dp_notify_kind kind)
{
	struct dp_notify_event ev = { .kind = kind,
				      .run_id = c->cfg->run_id ? c->cfg->run_id : "run",
				      .recipe = c->cfg->recipe,
				      .step = c->res->max_step ? (long)c->res->max_step : -1,
				      .attempt = c->attempt - 1,
				      .rank = -1,
				      .exit_code = -1 };

	if (kind == DP_NOTIFY_FAILURE) {
		ev.rank = c->res->failed_rank;
		ev.exit_code = c->res->exit_code;
		ev.root_cause = c->res->cause;
	} else if (kind == DP_NOTIFY_COMPLETE) {
		ev.exit_code = 0;
	} else if (kind == DP_NOTIFY_RESTART && c->replaced_now) {
		ev.root_cause = c->last_replace;
	}
	if (c->cfg->notify)
		(void)dp_notify_post(c->cfg->notify, &ev, NULL); /* never fatal */
}

const char *dp_ctl_outcome_name(enum dp_ctl_outcome o)
{
	switch (o) {
	case DP_CTL_OK:
		return "ok";
	case DP_CTL_SPAWN_FAILED:
		return "spawn-failed";
	case DP_CTL_RENDEZVOUS:
		return "rendezvous";
	case DP_CTL_RANK_EXIT:
		return "rank-exit";
	case DP_CTL_RANK_SIGNAL:
		return "rank-signal";
	case DP_CTL_RANK_LOST:
		return "rank-lost";
	case DP_CTL_RANK_HANG:
		return "rank-hang";
	case DP_CTL_RANK_NODONE:
		return "rank-no-done";
	case DP_CTL_PREFLIGHT_FAILED:
		return "preflight";
	}
	return "unknown";
}

int dp_ctl_node_failure(const struct dp_ctl_result *r)
{
	switch (r->outcome) {
	case DP_CTL_SPAWN_FAILED:
	case DP_CTL_RENDEZVOUS:
	case DP_CTL_RANK_LOST:
	case DP_CTL_RANK_HANG:
	case DP_CTL_PREFLIGHT_FAILED:
		return 1;
	case DP_CTL_RANK_SIGNAL: {
		/* exit_code is 128 + the signal (ctl_launch.h, exited()) */
		int sig = r->exit_code - 128;

		return sig != SIGABRT && sig != SIGSEGV && sig != SIGFPE && sig != SIGILL;
	}
	case DP_CTL_OK:
	case DP_CTL_RANK_EXIT:
	case DP_CTL_RANK_NODONE:
		break;
	}
	return 0;
}

/* ---- output ----------------------------------------------------------------- */

static void remember(struct rank *r, const char *line)
{
	(void)snprintf(r->tail[r->tail_pos], sizeof(r->tail[0]), "%s", line);
	r->tail_pos = (r->tail_pos + 1) % DP_CTL_TAIL_LINES;
	if (r->ntail < DP_CTL_TAIL_LINES)
		r->ntail++;
}

static void print_line(struct ctl *c, int rank, int stream, const char *line)
{
	const char *fmt = c->cfg->line_fmt ? c->cfg->line_fmt : "[%h:%r] ";
	FILE *f = c->cfg->out;

	remember(&c->ranks[rank], line);
	if (c->cfg->on_line)
		c->cfg->on_line(c->cfg->event_arg, rank, c->ranks[rank].spec->host, stream, line);
	if (!f)
		return;
	for (const char *p = fmt; *p; p++) {
		if ((p[0] == '%' && p[1] == 'h') || strncmp(p, "{host}", 6) == 0) {
			(void)fputs(c->ranks[rank].spec->host, f);
			p += p[0] == '%' ? 1 : 5;
		} else if ((p[0] == '%' && p[1] == 'r') || strncmp(p, "{rank}", 6) == 0) {
			(void)fprintf(f, "%d", rank);
			p += p[0] == '%' ? 1 : 5;
		} else {
			(void)fputc(*p, f);
		}
	}
	(void)fprintf(f, "%s\n", line);
	(void)fflush(f);
}

/* ---- failure ---------------------------------------------------------------- */

static void fail(struct ctl *c, enum dp_ctl_outcome o, int rank, int code, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

/* Record the root cause, if none is recorded yet.  Later failures are the
 * cascade of this one and only logged. */
static void fail(struct ctl *c, enum dp_ctl_outcome o, int rank, int code, const char *fmt, ...)
{
	struct dp_ctl_result *res = c->res;
	va_list ap;

	/* while a rank that reported failure is exiting, others failing are its cascade */
	if (c->failed || (c->pending_rank >= 0 && rank != c->pending_rank)) {
		char buf[512];

		va_start(ap, fmt);
		(void)vsnprintf(buf, sizeof(buf), fmt, ap);
		va_end(ap);
		dp_log(DP_LOG_INFO, "ctl", "after the root cause: %s", buf);
		return;
	}
	c->failed = 1;
	res->outcome = o;
	res->exit_code = code;
	res->failed_rank = rank;
	va_start(ap, fmt);
	(void)vsnprintf(res->cause, sizeof(res->cause), fmt, ap);
	va_end(ap);
	res->ntail = 0;
	res->failed_host[0] = '\0';
	if (rank >= 0) {
		struct rank *r = &c->ranks[rank];

		(void)snprintf(res->failed_host, sizeof(res->failed_host), "%s", r->spec->host);
		for (int i = 0; i < r->ntail; i++) {
			int k = (r->tail_pos - r->ntail + i + DP_CTL_TAIL_LINES) %
				DP_CTL_TAIL_LINES;

			(void)snprintf(res->tail[i], sizeof(res->tail[i]), "%s", r->tail[k]);
		}
		res->ntail = r->ntail;
	}
	dp_log(DP_LOG_INFO, "ctl", "root cause: %s", res->cause);
	{
		struct dp_ctl_event ev = { .type = DP_CTL_EV_FAILURE,
					   .rank = rank,
					   .msg = res->cause };

		ev.host = rank >= 0 ? c->ranks[rank].spec->host : NULL;
		ev.res = res;
		emit(c, &ev);
		char cb[2200];

		event(c, "failure", ",\"outcome\":\"%s\",\"rank\":%d,\"exit_code\":%d,\"cause\":%s",
		      dp_ctl_outcome_name(o), rank, code, json_str(res->cause, cb, sizeof(cb)));
	}
}

static void step_note(const struct rank *r, char *buf, size_t len)
{
	if (r->has_step)
		(void)snprintf(buf, len, " after step %llu", (unsigned long long)r->step);
	else if (!r->ready)
		(void)snprintf(buf, len, " before rendezvous");
	else
		buf[0] = '\0';
}

/* " (pid N)" once the rank said hello, else "". */
static const char *pid_note(const struct rank *r, char *buf, size_t len)
{
	if (!r->pid)
		return "";
	(void)snprintf(buf, len, " (pid %u)", r->pid);
	return buf;
}

static void rank_failed_status(struct ctl *c, int rank, int status, const char *how)
{
	struct rank *r = &c->ranks[rank];
	char at[64], pid[32];

	step_note(r, at, sizeof(at));
	if (status > 128 && status < 128 + 65 && strcmp(how, "exited") == 0)
		fail(c, DP_CTL_RANK_SIGNAL, rank, status,
		     "rank %d on %s%s was killed by signal %d (%s)%s", rank, r->spec->host,
		     pid_note(r, pid, sizeof(pid)), status - 128, strsignal(status - 128), at);
	else
		fail(c, DP_CTL_RANK_EXIT, rank, status, "rank %d on %s%s %s with status %d%s", rank,
		     r->spec->host, pid_note(r, pid, sizeof(pid)), how, status, at);
}

/* ---- connections ------------------------------------------------------------ */

static void conn_close(struct ctl *c, size_t i, const char *why)
{
	struct conn *k = c->conns[i];

	if (k->rank >= 0) {
		struct rank *r = &c->ranks[k->rank];

		r->conn = NULL;
		if (!r->exited && !r->lost_at)
			r->lost_at = now_s();
		if (why)
			dp_log(c->phase == PH_TEARDOWN || c->failed ? DP_LOG_DEBUG : DP_LOG_WARN,
			       "ctl", "rank %d: closing connection: %s", k->rank, why);
	} else {
		c->npending--;
		if (why) {
			dp_log(DP_LOG_WARN, "ctl", "refused connection from %s: %s", k->peer, why);
			c->res->refused++;
		}
	}
	(void)close(k->fd);
	dp_buf_release(&k->out);
	free(k->rx);
	free(k);
	c->conns[i] = c->conns[--c->nconns];
}

static void conn_flush(struct conn *k)
{
	while (k->out.len) {
		ssize_t n = send(k->fd, k->out.data, k->out.len, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return; /* EAGAIN: poll for POLLOUT; errors show up on read */
		memmove(k->out.data, k->out.data + n, k->out.len - (size_t)n);
		k->out.len -= (size_t)n;
	}
}

static void conn_send(struct conn *k, const struct dp_ctl_msg *m)
{
	struct dp_err err = { 0 };

	if (dp_ctl_encode(m, &k->out, &err) != 0)
		dp_log(DP_LOG_WARN, "ctl", "%s", err.msg);
	conn_flush(k);
}

static void broadcast(struct ctl *c, const struct dp_ctl_msg *m)
{
	for (size_t i = 0; i < c->nconns; i++)
		if (c->conns[i]->rank >= 0)
			conn_send(c->conns[i], m);
}

/* Is the listening socket worth polling: room for another unauthenticated
 * connection, and descriptors (after EMFILE we wait a moment)? */
static int can_accept(const struct ctl *c)
{
	return c->npending < c->max_pending && now_s() >= c->accept_paused;
}

/* Accept until the backlog is empty (a start-up burst of thousands of
 * workers is drained in one go, before the kernel's accept queue can
 * overflow into SYN retries) or max_pending connections await their hello;
 * the rest wait in the listen backlog (backpressure, not refusal). */
static void do_accept(struct ctl *c)
{
	while (c->npending < c->max_pending) {
		struct sockaddr_storage ss = { 0 };
		socklen_t sl = sizeof(ss);
		struct conn *k;
		int fd = accept4(c->lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		int one = 1;

		if (fd < 0) {
			/* EAGAIN: drained.  Out of descriptors: the connection
			 * stays queued; pause rather than spin on a listening
			 * socket that stays readable */
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM) {
				dp_log(DP_LOG_WARN, "ctl", "accept: %s (%zu connections open)",
				       strerror(errno), c->nconns);
				c->accept_paused = now_s() + EMFILE_PAUSE_S;
				return;
			}
			if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
				continue;
			return;
		}
		if (c->phase == PH_TEARDOWN) {
			(void)close(fd);
			c->res->refused++;
			continue;
		}
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (c->nconns == c->capconns) {
			size_t ncap = c->capconns ? 2 * c->capconns : 16;
			struct conn **nc = realloc(c->conns, ncap * sizeof(struct conn *));

			if (!nc) {
				(void)close(fd);
				continue;
			}
			c->conns = nc;
			c->capconns = ncap;
		}
		k = calloc(1, sizeof(*k));
		if (k)
			k->rx = malloc(sizeof(*k->rx));
		if (!k || !k->rx) {
			free(k);
			(void)close(fd);
			continue;
		}
		k->fd = fd;
		k->rank = -1;
		k->hello_deadline = now_s() + c->hello_s;
		dp_ctl_rx_init(k->rx);
		dp_buf_init(&k->out, OUTBUF_CAP);
		if (ss.ss_family == AF_INET) {
			struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
			char ip[INET_ADDRSTRLEN] = "?";

			(void)inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
			(void)snprintf(k->peer, sizeof(k->peer), "%s:%u", ip, ntohs(sin->sin_port));
		} else {
			(void)snprintf(k->peer, sizeof(k->peer), "fd %d", fd);
		}
		c->conns[c->nconns++] = k;
		c->npending++;
	}
}

/* ENDPOINT: accepted once, before ready, naming ranks of this run. */
static const char *on_endpoint(struct ctl *c, int rank, const struct dp_ctl_endpoint *e, char *why,
			       size_t whylen)
{
	struct rank *r = &c->ranks[rank];

	if (r->ep || r->ready)
		return "endpoint sent twice or after ready";
	for (unsigned i = 0; i < e->nwant; i++)
		if (e->want[i] >= c->spec->nranks || e->want[i] == (uint32_t)rank) {
			(void)snprintf(why, whylen, "endpoint asks for rank %u (run has 0..%zu)",
				       e->want[i], c->spec->nranks - 1);
			return why;
		}
	r->ep = malloc(sizeof(*r->ep));
	if (!r->ep)
		return "out of memory";
	*r->ep = *e;
	dp_log(DP_LOG_INFO, "ctl", "rank %d accepts PP links on %s:%u", rank, e->addr, e->port);
	return NULL;
}

/* Before START: every rank that sent an endpoint gets the addresses it asked
 * for, DP_CTL_PEERS_MAX per frame.  0, or -1 with the run failed (a rank
 * asked for one that has no endpoint). */
static int send_peers(struct ctl *c)
{
	struct dp_ctl_msg *m = malloc(sizeof(*m));
	int rc = 0;

	if (!m) {
		fail(c, DP_CTL_RENDEZVOUS, -1, EX_OSERR, "controller out of memory");
		return -1;
	}
	for (size_t i = 0; i < c->spec->nranks && !rc; i++) {
		struct rank *r = &c->ranks[i];

		if (!r->ep || !r->conn)
			continue;
		memset(m, 0, sizeof(*m));
		m->type = DP_CTL_PEERS;
		for (unsigned k = 0; k < r->ep->nwant; k++) {
			const struct rank *p = &c->ranks[r->ep->want[k]];
			struct dp_ctl_peer *x = &m->u.peers.v[m->u.peers.n];

			if (!p->ep) {
				fail(c, DP_CTL_RENDEZVOUS, (int)i, EX_PROTOCOL,
				     "rank %zu needs the address of rank %u, which sent none", i,
				     r->ep->want[k]);
				rc = -1;
				break;
			}
			x->rank = r->ep->want[k];
			x->port = p->ep->port;
			(void)snprintf(x->addr, sizeof(x->addr), "%s", p->ep->addr);
			if (++m->u.peers.n == DP_CTL_PEERS_MAX || k + 1 == r->ep->nwant) {
				conn_send(r->conn, m);
				m->u.peers.n = 0;
			}
		}
	}
	free(m);
	return rc;
}

/* ---- pre-flight and progress (health) ----------------------------------------- */

static int cmp_rank_host(const void *a, const void *b, void *arg)
{
	const struct rank *rk = arg;
	int i = *(const int *)a, j = *(const int *)b;
	int d = strcmp(rk[i].spec->host, rk[j].spec->host);

	return d ? d : (i > j) - (i < j);
}

/* Fill every rank's host_first and host_n: one sort by host, not a scan of
 * all ranks per rank (quadratic: thousands of hosts x 8 ranks).  Without
 * memory for the sort, the scans. */
static void group_hosts(struct ctl *c)
{
	int n = (int)c->spec->nranks, *idx = malloc((size_t)n * sizeof(*idx));

	if (!idx) {
		for (int i = 0; i < n; i++) {
			struct rank *r = &c->ranks[i];

			r->host_first = -1;
			for (int j = 0; j < n; j++)
				if (strcmp(c->ranks[j].spec->host, r->spec->host) == 0) {
					r->host_n++;
					if (r->host_first < 0)
						r->host_first = j;
				}
		}
		return;
	}
	for (int i = 0; i < n; i++)
		idx[i] = i;
	qsort_r(idx, (size_t)n, sizeof(*idx), cmp_rank_host, c->ranks);
	for (int a = 0, b; a < n; a = b) {
		for (b = a + 1;
		     b < n && strcmp(c->ranks[idx[b]].spec->host, c->ranks[idx[a]].spec->host) == 0;
		     b++)
			;
		for (int k = a; k < b; k++) {
			c->ranks[idx[k]].host_first = idx[a]; /* sorted by rank within a host */
			c->ranks[idx[k]].host_n = b - a;
		}
	}
	free(idx);
}

static void on_preflight(struct ctl *c, int rank, const struct dp_ctl_preflight *pf)
{
	struct rank *r = &c->ranks[rank];
	int bad = dp_preflight_judge(c->cfg->preflight, r->host_n, pf, r->pf_sent, wall_s(),
				     r->pf_why, sizeof(r->pf_why));

	r->pf_state = bad ? PF_FAIL : PF_PASS;
	dp_log(DP_LOG_INFO, "ctl", "rank %d on %s: pre-flight %s%s%s", rank, r->spec->host,
	       bad ? "failed: " : "passed", !bad && r->pf_why[0] ? ": " : "", r->pf_why);
	emit_rank(c, DP_CTL_EV_PREFLIGHT, rank, !bad, r->pf_why);
}

/* Record the pre-flight failure as the root cause: one line per failing
 * node (its first failing rank), in rank order. */
static void fail_preflight(struct ctl *c)
{
	struct dp_ctl_result *res = c->res;
	size_t nhosts = 0;
	int first = -1;

	res->npf_lines = res->npf_bad = 0;
	for (size_t i = 0; i < c->spec->nranks; i++)
		c->ranks[i].pf_listed = 0;
	for (size_t i = 0; i < c->spec->nranks; i++) {
		const struct rank *r = &c->ranks[i];
		struct rank *node = &c->ranks[r->host_first];

		/* a node's ranks report alike: one line for its first failing rank */
		nhosts += (size_t)r->host_first == i;
		if (r->pf_state != PF_FAIL || node->pf_listed)
			continue;
		node->pf_listed = 1;
		if (first < 0)
			first = (int)i;
		if (res->npf_lines < DP_CTL_PF_LINES)
			(void)snprintf(res->pf_lines[res->npf_lines++], sizeof(res->pf_lines[0]),
				       "%s (rank %zu): %s", r->spec->host, i, r->pf_why);
		res->npf_bad++;
	}
	fail(c, DP_CTL_PREFLIGHT_FAILED, first, DP_CTL_EXIT_PREFLIGHT,
	     "pre-flight failed on %d of %zu node%s: %s", res->npf_bad, nhosts,
	     nhosts == 1 ? "" : "s", res->npf_lines ? res->pf_lines[0] : "?");
}

/* Progress: the step every rank has reached, mean loss, summed tokens/s. */
static void progress(struct ctl *c)
{
	struct dp_ctl_event ev = { .type = DP_CTL_EV_PROGRESS, .rank = -1 };
	uint64_t step = UINT64_MAX;
	double loss = 0, tps = 0;
	int nloss = 0, ntps = 0;

	for (size_t i = 0; i < c->spec->nranks; i++) {
		const struct rank *r = &c->ranks[i];

		if (!r->has_step)
			return;
		if (r->step < step)
			step = r->step;
		if (isfinite(r->loss))
			loss += r->loss, nloss++;
		if (isfinite(r->tps))
			tps += r->tps, ntps++;
	}
	if (step <= c->progress)
		return;
	c->progress = step;
	ev.step = step;
	ev.loss = nloss ? loss / nloss : NAN;
	ev.tokens_per_s = ntps ? tps : NAN;
	emit(c, &ev);
}

/* Handle one message; returns NULL if fine, else why the connection must close. */
static const char *on_msg(struct ctl *c, struct conn *k, const struct dp_ctl_msg *m, char *why,
			  size_t whylen)
{
	struct rank *r;

	if (k->rank < 0) {
		const struct dp_ctl_hello *h = &m->u.hello;

		if (m->type != DP_CTL_HELLO)
			return "first message is not hello";
		/* token first: nothing else about an unauthenticated peer matters */
		if (!dp_ctl_token_equal(h->token, c->token))
			return "wrong job token";
		if (h->rank >= c->spec->nranks) {
			(void)snprintf(why, whylen, "hello for rank %u outside 0..%zu", h->rank,
				       c->spec->nranks - 1);
			return why;
		}
		r = &c->ranks[h->rank];
		if (r->hello) {
			(void)snprintf(why, whylen, "rank %u already connected", h->rank);
			return why;
		}
		r->hello = 1;
		r->conn = k;
		r->pid = h->pid;
		r->last_hb = now_s();
		k->rank = (int)h->rank;
		c->npending--;
		dp_log(DP_LOG_INFO, "ctl", "rank %u connected from %s (host %s, pid %u, %s)",
		       h->rank, k->peer, h->host, h->pid, h->topo);
		if (c->pf_checks) {
			struct dp_ctl_msg probe = { .type = DP_CTL_PREFLIGHT_PROBE };

			r->pf_sent = wall_s();
			probe.u.probe_clock = r->pf_sent;
			r->pf_state = PF_PROBED;
			conn_send(k, &probe);
		}
		{
			char hb[300];

			event(c, "connected", ",\"rank\":%u,\"host\":%s,\"pid\":%u", h->rank,
			      json_str(r->spec->host, hb, sizeof(hb)), h->pid);
		}
		return NULL;
	}
	r = &c->ranks[k->rank];
	switch (m->type) {
	case DP_CTL_READY:
		r->ready = 1;
		emit_rank(c, DP_CTL_EV_READY, k->rank, 1, NULL);
		return NULL;
	case DP_CTL_PREFLIGHT:
		if (r->pf_state != PF_PROBED)
			return "pre-flight report that was not asked for";
		on_preflight(c, k->rank, &m->u.pf);
		return NULL;
	case DP_CTL_HEARTBEAT:
		r->loss = m->u.hb.loss;
		r->tps = m->u.hb.tokens_per_s;
		r->last_hb = now_s();
		if (!r->has_step || m->u.hb.step > r->step) {
			uint64_t prev = r->has_step ? r->step : 0;

			if (c->cfg->metrics) {
				struct dp_metrics_rank v = {
					.set = DP_METRICS_LOSS | DP_METRICS_TOKENS_PER_SECOND |
					       DP_METRICS_HEARTBEAT_LAG,
					.host = r->spec->host,
					.loss = m->u.hb.loss,
					.tokens_per_second = m->u.hb.tokens_per_s,
				};

				if (r->step_at > 0 && m->u.hb.step > prev) {
					v.set |= DP_METRICS_STEP_SECONDS;
					v.step_seconds = (r->last_hb - r->step_at) /
							 (double)(m->u.hb.step - prev);
				}
				(void)dp_metrics_set(c->cfg->metrics, k->rank, &v, NULL);
			}
			if (isfinite(m->u.hb.loss) && isfinite(m->u.hb.tokens_per_s))
				event(c, "step",
				      ",\"rank\":%d,\"step\":%llu,\"loss\":%.9g,"
				      "\"tokens_per_s\":%.9g",
				      k->rank, (unsigned long long)m->u.hb.step, m->u.hb.loss,
				      m->u.hb.tokens_per_s);
			else
				event(c, "step", ",\"rank\":%d,\"step\":%llu", k->rank,
				      (unsigned long long)m->u.hb.step);
			r->step_at = r->last_hb;
			r->last_progress = r->last_hb;
			r->step = m->u.hb.step;
			r->has_step = 1;
		}
		if (r->step > c->res->max_step)
			c->res->max_step = r->step;
		progress(c);
		return NULL;
	case DP_CTL_LOG:
		print_line(c, k->rank, m->u.log.stream, m->u.log.line);
		return NULL;
	case DP_CTL_ENDPOINT:
		return on_endpoint(c, k->rank, &m->u.ep, why, whylen);
	case DP_CTL_STEP:
		/* a finished training step is progress, whatever the heartbeat says */
		r->last_progress = now_s();
		if (m->u.step.step < c->first_step)
			c->first_step = m->u.step.step;
		if (!r->has_step || m->u.step.step + 1 > r->step) {
			r->step = m->u.step.step + 1;
			r->has_step = 1;
		}
		if (r->step > c->res->max_step)
			c->res->max_step = r->step;
		if (c->cfg->train && c->cfg->train->step)
			c->cfg->train->step(c->cfg->train_arg, k->rank, &m->u.step);
		return NULL;
	case DP_CTL_TIMELINE:
		if (c->cfg->train && c->cfg->train->timeline)
			c->cfg->train->timeline(c->cfg->train_arg, k->rank, r->spec->host,
						&m->u.tl);
		return NULL;
	case DP_CTL_DONE:
		r->done = 1;
		r->done_status = m->u.done_status;
		/* the root cause, but wait for its exit (and last output lines) */
		if (m->u.done_status != 0 && !c->failed && c->pending_rank < 0) {
			c->pending_rank = k->rank;
			c->pending_at = now_s();
		}
		return NULL;
	default:
		(void)snprintf(why, whylen, "unexpected '%s' message from a worker",
			       dp_ctl_type_name((int)m->type));
		return why;
	}
}

/* Read and handle what conn @i has; closes it on EOF or a bad frame. */
static void conn_read(struct ctl *c, size_t i)
{
	struct conn *k = c->conns[i];
	struct dp_ctl_msg *m = malloc(sizeof(*m));
	struct dp_err err = { 0 };
	char why[256];
	long n;
	int rc;

	if (!m)
		return;
	n = dp_ctl_rx_fill(k->rx, k->fd);
	if (n == -EAGAIN)
		goto out;
	if (n <= 0) {
		conn_close(c, i,
			   k->rank >= 0 && c->ranks[k->rank].done ? NULL
			   : n == 0				  ? "end of stream"
								  : "read error");
		goto out;
	}
	while ((rc = dp_ctl_rx_next(k->rx, m, &err)) == 1) {
		const char *bad = on_msg(c, k, m, why, sizeof(why));

		if (bad) {
			if (k->rank >= 0 && c->phase != PH_TEARDOWN)
				fail(c, DP_CTL_RANK_LOST, k->rank, EX_PROTOCOL,
				     "rank %d on %s broke the control protocol: %s", k->rank,
				     c->ranks[k->rank].spec->host, bad);
			conn_close(c, i, bad);
			goto out;
		}
	}
	if (rc < 0) {
		if (k->rank >= 0 && c->phase != PH_TEARDOWN)
			fail(c, DP_CTL_RANK_LOST, k->rank, EX_PROTOCOL,
			     "rank %d on %s broke the control protocol: %s", k->rank,
			     c->ranks[k->rank].spec->host, err.msg);
		conn_close(c, i, err.msg);
	}
out:
	free(m);
}

/* Exit code for a rank that could not be started. */
static int spawn_code(int e)
{
	return e == ENOENT || e == EACCES || e == ENOEXEC ? EX_UNAVAILABLE : EX_OSERR;
}

/* ---- backend events --------------------------------------------------------- */

static void ev_output(void *arg, int rank, int stream, const char *line)
{
	print_line(arg, rank, stream, line);
}

static void ev_exited(void *arg, int rank, int status)
{
	struct ctl *c = arg;
	struct rank *r = &c->ranks[rank];

	r->exited = 1;
	r->exit_status = status;
	dp_log(DP_LOG_INFO, "ctl", "rank %d exited with status %d", rank, status);
	if (c->phase == PH_TEARDOWN)
		return;
	if (status != 0)
		rank_failed_status(c, rank, status, "exited");
	else if (rank == c->pending_rank)
		rank_failed_status(c, rank, r->done_status, "reported done");
	else if (!r->done)
		r->nodone_at = now_s(); /* its done frame may still be on the way */
}

static void ev_spawn_failed(void *arg, int rank, int e, const char *msg)
{
	struct ctl *c = arg;

	if (c->phase == PH_TEARDOWN)
		return;
	fail(c, DP_CTL_SPAWN_FAILED, rank, spawn_code(e), "%s", msg);
}

static const struct dp_launch_events events = {
	.output = ev_output,
	.exited = ev_exited,
	.spawn_failed = ev_spawn_failed,
};

/* ---- setup ------------------------------------------------------------------ */

/* The kernel's cap on a listen backlog (net.core.somaxconn), or SOMAXCONN. */
static int somaxconn(void)
{
	FILE *f = fopen("/proc/sys/net/core/somaxconn", "re");
	char line[32];
	long v = 0;

	if (f) {
		if (fgets(line, sizeof(line), f))
			line[strcspn(line, "\n")] = '\0';
		else
			line[0] = '\0';
		(void)fclose(f);
		if (dp_parse_long(line, 1, INT_MAX, &v, "somaxconn", NULL) != 0)
			v = 0;
	}
	return v > 0 ? (int)v : SOMAXCONN;
}

/* Room in the accept queue for every rank connecting at once, as far as the
 * kernel allows (it silently caps the backlog at net.core.somaxconn). */
static int listen_backlog(const struct ctl *c)
{
	int max = somaxconn();
	size_t want = c->spec->nranks + 64;
	int backlog = want > (size_t)max ? max : (int)want;

	if (backlog < MIN_BACKLOG)
		backlog = MIN_BACKLOG;
	if (want > (size_t)max)
		dp_log(DP_LOG_INFO, "ctl",
		       "listen backlog %d (net.core.somaxconn) for %zu ranks: the controller "
		       "accepts as they arrive",
		       max, c->spec->nranks);
	return backlog;
}

/* One unauthenticated connection per rank, at least MIN_PENDING, at most
 * half the descriptors we may open (the other half: authenticated
 * connections and the backend's pipes; launch raises the limit first). */
static size_t max_pending(size_t nranks)
{
	struct rlimit rl;
	size_t n = nranks + 64;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    n > rl.rlim_cur / 2)
		n = rl.rlim_cur / 2;
	return n < MIN_PENDING ? MIN_PENDING : n;
}

static int listen_on(struct ctl *c, struct dp_err *err)
{
	const char *bind_addr = c->cfg->bind_addr ? c->cfg->bind_addr : "127.0.0.1";
	const char *dial = c->cfg->connect_addr ? c->cfg->connect_addr : bind_addr;
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sin);
	int one = 1, e;

	if (inet_pton(AF_INET, bind_addr, &sin.sin_addr) != 1)
		return dp_err_set(err, EINVAL, "ctl: '%s' is not an IPv4 address", bind_addr);
	if (c->cfg->port < 0 || c->cfg->port > 65535)
		return dp_err_set(err, EINVAL, "ctl: port %d is outside 0..65535", c->cfg->port);
	sin.sin_port = htons((uint16_t)c->cfg->port);
	c->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->lfd < 0) {
		e = errno;
		return dp_err_set(err, e, "ctl: cannot create a socket: %s", strerror(e));
	}
	(void)setsockopt(c->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(c->lfd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
		e = errno;
		return dp_err_set(err, e == EADDRINUSE ? EADDRINUSE : e,
				  "ctl: cannot listen on %s:%d: %s", bind_addr, c->cfg->port,
				  e == EADDRINUSE ? "the port is in use" : strerror(e));
	}
	if (listen(c->lfd, listen_backlog(c)) != 0 ||
	    getsockname(c->lfd, (struct sockaddr *)&sin, &sl) != 0) {
		e = errno;
		return dp_err_set(err, e, "ctl: cannot listen on %s: %s", bind_addr, strerror(e));
	}
	(void)snprintf(c->addr, sizeof(c->addr), "%s:%u", dial, ntohs(sin.sin_port));
	dp_log(DP_LOG_INFO, "ctl", "listening on %s:%u", bind_addr, ntohs(sin.sin_port));
	return 0;
}

static int spawn_all(struct ctl *c, int *bad, struct dp_err *err)
{
	char tokhex[2 * DP_CTL_TOKEN_LEN + 1], e_tok[128], e_ctl[160], e_rank[32], e_world[32],
		e_local[32], e_hb[48], e_rdv[48], e_pf[128], e_ck[4096];
	const char *extra[] = { e_tok, e_ctl, e_rank, e_world, e_local, e_hb,
				e_rdv, NULL,  NULL,   NULL,    NULL };
	int rc, n = 7;

	/* pre-flight: which checks to gather, where the checkpoints go */
	if (c->pf_checks) {
		const char *ck = c->cfg->preflight->checkpoint_dir;

		(void)snprintf(e_pf, sizeof(e_pf), "DP_PREFLIGHT=");
		(void)dp_preflight_format(c->pf_checks, e_pf + 13, sizeof(e_pf) - 13);
		extra[n++] = e_pf;
		if (ck &&
		    snprintf(e_ck, sizeof(e_ck), "DP_CHECKPOINT_DIR=%s", ck) < (int)sizeof(e_ck))
			extra[n++] = e_ck;
	}
	/* a restart continues from the last complete checkpoint (worker/dp_ckpt.h) */
	if (c->attempt > 1 && c->cfg->ckpt_dir && *c->cfg->ckpt_dir)
		extra[n++] = "DP_CKPT_RESUME=1";

	(void)dp_ctl_token_to_hex(c->token, tokhex, sizeof(tokhex));
	(void)snprintf(e_tok, sizeof(e_tok), "DP_JOB_TOKEN=%s", tokhex);
	(void)snprintf(e_ctl, sizeof(e_ctl), "DP_CONTROLLER=%s", c->addr);
	(void)snprintf(e_world, sizeof(e_world), "DP_WORLD_SIZE=%zu", c->spec->nranks);
	(void)snprintf(e_hb, sizeof(e_hb), "DP_HEARTBEAT_S=%g", c->heartbeat_s);
	/* how long a worker keeps dialling us (worker/ctl_client.c) */
	(void)snprintf(e_rdv, sizeof(e_rdv), "DP_RENDEZVOUS_S=%g", c->rendezvous_s);
	for (size_t i = 0; i < c->spec->nranks; i++) {
		const struct dp_launch_rank *r = &c->spec->ranks[i];

		(void)snprintf(e_rank, sizeof(e_rank), "DP_RANK=%d", r->rank);
		(void)snprintf(e_local, sizeof(e_local), "DP_LOCAL_RANK=%d", r->local_index);
		rc = c->be->spawn(c->sess, r, extra, err);
		if (rc) {
			*bad = r->rank;
			return rc;
		}
	}
	return 0;
}

/* ---- the loop --------------------------------------------------------------- */

static void start_teardown(struct ctl *c, const char *reason)
{
	struct dp_ctl_msg m = { .type = DP_CTL_STOP };

	(void)snprintf(m.u.reason, sizeof(m.u.reason), "%s", reason);
	broadcast(c, &m);
	(void)c->be->signal(c->sess, -1, SIGTERM);
	c->phase = PH_TEARDOWN;
	c->kill_deadline = now_s() + c->grace_s;
}

static void check_timers(struct ctl *c, double t)
{
	/* unauthenticated connections that never said hello */
	for (size_t i = 0; i < c->nconns;) {
		if (c->conns[i]->rank < 0 && t > c->conns[i]->hello_deadline)
			conn_close(c, i, "no hello in time");
		else
			i++;
	}
	/* a rank reported failure but its process has not exited */
	if (c->pending_rank >= 0 && !c->failed && t - c->pending_at > LOST_GRACE_S)
		rank_failed_status(c, c->pending_rank, c->ranks[c->pending_rank].done_status,
				   "reported done");
	/* exited 0 and the connection closed (or went quiet) without done */
	for (size_t i = 0; i < c->spec->nranks && c->phase != PH_TEARDOWN; i++) {
		struct rank *r = &c->ranks[i];
		char pid[32];

		if (!r->nodone_at || r->done || (r->conn && t - r->nodone_at < LOST_GRACE_S))
			continue;
		fail(c, DP_CTL_RANK_NODONE, (int)i, EX_PROTOCOL,
		     "rank %zu on %s%s exited with status 0 without reporting done", i,
		     r->spec->host, pid_note(r, pid, sizeof(pid)));
	}
	/* lost connections whose process did not exit */
	for (size_t i = 0; i < c->spec->nranks && c->phase != PH_TEARDOWN; i++) {
		struct rank *r = &c->ranks[i];
		char at[64];

		if (!r->lost_at || r->exited || r->done || t - r->lost_at < LOST_GRACE_S)
			continue;
		step_note(r, at, sizeof(at));
		fail(c, DP_CTL_RANK_LOST, (int)i, EX_IOERR,
		     "rank %zu on %s (pid %u) lost its control connection%s", i, r->spec->host,
		     r->pid, at);
	}
	if (c->phase == PH_RENDEZVOUS && !c->failed) {
		size_t nready = 0;

		size_t npf = 0, npf_bad = 0;

		for (size_t i = 0; i < c->spec->nranks; i++) {
			nready += c->ranks[i].ready;
			npf += c->ranks[i].pf_state >= PF_PASS;
			npf_bad += c->ranks[i].pf_state == PF_FAIL;
		}
		/* the gate: every report in and nothing failed, or stop here */
		if (c->pf_checks && npf_bad && (npf == c->spec->nranks || t > c->rdv_deadline)) {
			fail_preflight(c);
		} else if (nready == c->spec->nranks && (!c->pf_checks || npf == c->spec->nranks) &&
			   send_peers(c) == 0) {
			struct dp_ctl_msg m = { .type = DP_CTL_START };

			m.u.world_size = (uint32_t)c->spec->nranks;
			broadcast(c, &m);
			c->phase = PH_RUNNING;
			c->res->ready_s = t - c->t_spawn;
			for (size_t i = 0; i < c->spec->nranks; i++)
				c->ranks[i].last_progress = t;
			dp_log(DP_LOG_INFO, "ctl", "all %zu ranks ready after %.3f s: started",
			       c->spec->nranks, c->res->ready_s);
			emit_rank(c, DP_CTL_EV_RUNNING, -1, 1, NULL);
			event(c, "ready", ",\"ranks\":%zu,\"ready_s\":%.3f", c->spec->nranks,
			      c->res->ready_s);
		} else if (t > c->rdv_deadline) {
			char list[700];
			size_t off = 0, missing = 0;
			int first = -1;

			list[0] = '\0';
			for (size_t i = 0; i < c->spec->nranks; i++) {
				const struct rank *r = &c->ranks[i];
				int n;

				if (r->ready && (!c->pf_checks || r->pf_state >= PF_PASS))
					continue;
				if (first < 0)
					first = (int)i;
				missing++;
				if (off >= sizeof(list) - 32)
					continue;
				n = snprintf(list + off, sizeof(list) - off, "%s%zu (%s%s)",
					     off ? ", " : "", i, r->spec->host,
					     !r->hello	? ""
					     : r->ready ? ", no pre-flight report"
							: ", connected, not ready");
				if (n > 0)
					off += (size_t)n < sizeof(list) - off
						       ? (size_t)n
						       : sizeof(list) - off - 1;
			}
			fail(c, DP_CTL_RENDEZVOUS, first, EX_UNAVAILABLE,
			     "rendezvous failed after %g s: %zu of %zu ranks missing: %s%s",
			     c->rendezvous_s, missing, c->spec->nranks, list,
			     off >= sizeof(list) - 32 ? ", ..." : "");
		}
	}
	if (c->phase == PH_RUNNING && !c->failed) {
		for (size_t i = 0; i < c->spec->nranks; i++) {
			struct rank *r = &c->ranks[i];
			struct dp_ctl_msg m = { .type = DP_CTL_DUMP_STACKS };
			char at[64];

			if (r->done || r->exited || t - r->last_progress <= c->hang_s)
				continue;
			step_note(r, at, sizeof(at));
			fail(c, DP_CTL_RANK_HANG, (int)i, DP_CTL_EXIT_HANG,
			     "rank %zu on %s (pid %u) hung: no step progress for %.1f s "
			     "(last heartbeat %.1f s ago)%s",
			     i, r->spec->host, r->pid, t - r->last_progress, t - r->last_hb, at);
			/* every rank dumps its stacks into its log before we stop them */
			broadcast(c, &m);
			c->phase = PH_DUMPING;
			c->dump_deadline = t + c->dump_s;
			break;
		}
	}
	if (c->phase == PH_DUMPING && t > c->dump_deadline) {
		c->res->ntail = 0; /* refresh the tail with the dump lines */
		if (c->res->failed_rank >= 0) {
			struct rank *r = &c->ranks[c->res->failed_rank];

			for (int i = 0; i < r->ntail; i++)
				(void)snprintf(
					c->res->tail[i], sizeof(c->res->tail[i]), "%s",
					r->tail[(r->tail_pos - r->ntail + i + DP_CTL_TAIL_LINES) %
						DP_CTL_TAIL_LINES]);
			c->res->ntail = r->ntail;
		}
		start_teardown(c, c->res->cause);
	}
	if (c->failed && (c->phase == PH_RENDEZVOUS || c->phase == PH_RUNNING))
		start_teardown(c, c->res->cause);
	if (c->phase == PH_TEARDOWN && !c->killed && t > c->kill_deadline) {
		dp_log(DP_LOG_WARN, "ctl", "%d ranks still running after %g s: SIGKILL",
		       c->be->running(c->sess), c->grace_s);
		(void)c->be->signal(c->sess, -1, SIGKILL);
		c->killed = 1;
	}
}

/* Webhook transfers and metrics: never block the loop, never fail the run. */
static void report_tick(struct ctl *c, double t)
{
	if (c->cfg->notify)
		(void)dp_notify_step(c->cfg->notify, 0);
	if (!c->cfg->metrics)
		return;
	for (size_t i = 0; i < c->spec->nranks; i++) {
		const struct rank *r = &c->ranks[i];
		struct dp_metrics_rank v = { .set = DP_METRICS_HEARTBEAT_LAG,
					     .heartbeat_lag_seconds = t - r->last_hb };

		if (r->hello && !r->exited)
			(void)dp_metrics_set(c->cfg->metrics, (int)i, &v, NULL);
	}
	(void)dp_metrics_tick(c->cfg->metrics);
	(void)dp_metrics_step(c->cfg->metrics, 0);
}

static int all_exited_ok(const struct ctl *c)
{
	for (size_t i = 0; i < c->spec->nranks; i++)
		if (!c->ranks[i].exited || c->ranks[i].exit_status != 0 || !c->ranks[i].done)
			return 0;
	return 1;
}

static int run_once(struct ctl *c, struct dp_err *err)
{
	struct pollfd *fds = NULL;
	size_t nfds_cap = 0;
	int rc;

	c->phase = PH_RENDEZVOUS;
	c->failed = c->killed = 0;
	c->progress = 0;
	c->first_step = UINT64_MAX;
	c->pending_rank = -1;
	memset(c->ranks, 0, c->spec->nranks * sizeof(*c->ranks));
	for (size_t i = 0; i < c->spec->nranks; i++)
		c->ranks[c->spec->ranks[i].rank].spec = &c->spec->ranks[i];
	group_hosts(c);
	rc = dp_ctl_token_new(c->token, err);
	if (rc)
		return rc;
	{
		struct dp_launch_opts lo = { 0 };

		if (c->cfg->launch)
			lo = *c->cfg->launch;
		lo.grace_s = c->grace_s;

		rc = c->be->open(&lo, &c->sess, err);
		if (rc)
			return rc;
	}
	c->t_spawn = now_s();
	c->rdv_deadline = c->t_spawn + c->rendezvous_s;
	{
		struct dp_ctl_event ev = { .type = DP_CTL_EV_START, .rank = -1 };

		emit(c, &ev);
	}
	{
		struct dp_err serr = { 0 };
		int bad = -1;

		if (spawn_all(c, &bad, &serr) != 0)
			fail(c, DP_CTL_SPAWN_FAILED, bad, spawn_code(serr.code), "%s", serr.msg);
	}
	nfds_cap = 64 + 3 * c->spec->nranks;
	fds = calloc(nfds_cap, sizeof(*fds));
	if (!fds) {
		rc = dp_err_set(err, ENOMEM, "ctl: out of memory");
		goto out;
	}
	for (;;) {
		size_t want = 1 + c->nconns + 3 * c->spec->nranks + 8, nfd = 0, nbe, base;
		double t;
		int timeout = TICK_MS;

		if (c->phase == PH_TEARDOWN && c->be->running(c->sess) == 0)
			break;
		/* a rank that survives SIGKILL (remote host gone): give up on it;
		 * close() cleans up what it can */
		if (c->killed && now_s() > c->kill_deadline + GIVEUP_S) {
			dp_log(DP_LOG_ERROR, "ctl", "%d ranks did not exit after SIGKILL",
			       c->be->running(c->sess));
			break;
		}
		if (c->phase != PH_TEARDOWN && !c->failed && all_exited_ok(c))
			break;
		if (want > nfds_cap) {
			struct pollfd *nf;

			want *= 2;
			nf = realloc(fds, want * sizeof(*nf));

			if (!nf) {
				rc = dp_err_set(err, ENOMEM, "ctl: out of memory");
				goto out;
			}
			fds = nf;
			nfds_cap = want;
		}
		fds[nfd++] = (struct pollfd){ .fd = c->lfd, .events = can_accept(c) ? POLLIN : 0 };
		for (size_t i = 0; i < c->nconns; i++)
			fds[nfd++] = (struct pollfd){
				.fd = c->conns[i]->fd,
				.events = (short)(POLLIN | (c->conns[i]->out.len ? POLLOUT : 0))
			};
		base = nfd;
		nbe = (size_t)c->be->pollfds(c->sess, fds + nfd, (int)(nfds_cap - nfd));
		nfd += nbe;
		if (poll(fds, nfd, timeout) < 0 && errno != EINTR) {
			int e = errno;

			rc = dp_err_set(err, e, "ctl: poll failed: %s", strerror(e));
			goto out;
		}
		/* connections, newest last: walk backwards because closing swaps */
		{
			size_t nc = c->nconns;

			for (size_t i = nc; i-- > 0;) {
				short re = fds[1 + i].revents;

				if (i >= c->nconns)
					continue;
				if (re & POLLOUT)
					conn_flush(c->conns[i]);
				if (re & (POLLIN | POLLHUP | POLLERR))
					conn_read(c, i);
			}
		}
		if (fds[0].revents & POLLIN)
			do_accept(c);
		(void)c->be->dispatch(c->sess, fds + base, (int)nbe, &events, c);
		t = now_s();
		check_timers(c, t);
		report_tick(c, t);
	}
	rc = 0;
out:
	free(fds);
	for (size_t i = 0; i < c->spec->nranks; i++) {
		free(c->ranks[i].ep);
		c->ranks[i].ep = NULL;
	}
	while (c->nconns)
		conn_close(c, c->nconns - 1, NULL);
	c->be->close(c->sess);
	c->sess = NULL;
	return rc;
}

/* @s at the end of the string in @buf (cut to fit). */
static void append(char *buf, size_t size, const char *s)
{
	size_t len = strlen(buf);

	(void)snprintf(buf + len, size - len, "%s", s);
}

static double dflt(double v, double d)
{
	return v > 0 && isfinite(v) ? v : d;
}

/* After failed attempt @attempt (0-based): 1 if restarting would make no
 * progress, with the reason for the root-cause line ("; not restarting:
 * ...") in @why.  With periodic checkpoints a restart resumes from the last
 * complete one: a restart that failed again before writing a new one would
 * be resumed at the same step again (the first failure always gets its
 * restart).  Without them: an attempt that got no further (max step) than
 * the one before it. */
static int no_progress(struct ctl *c, int attempt, uint64_t prev_step, char *why, size_t len)
{
	const struct dp_ctl_result *res = c->res;
	uint64_t every = c->cfg->ckpt_every > 0 ? (uint64_t)c->cfg->ckpt_every : 0, next, at;

	/* where this attempt resumed: its first step, or (no step done) where it
	 * was to resume; and the checkpoint the next attempt would resume from
	 * (max_step may count a step whose checkpoint is incomplete, erring
	 * towards a restart) */
	at = c->first_step != UINT64_MAX ? c->first_step : c->resume_at;
	next = every ? res->max_step - res->max_step % every : 0;
	if (next < at)
		next = at;
	c->resume_at = next;
	if (attempt == 0)
		return 0;
	if (!c->cfg->ckpt_dir || !*c->cfg->ckpt_dir || !every) {
		if (res->max_step > prev_step)
			return 0;
		(void)snprintf(why, len,
			       "; not restarting: attempt %d got no further than step %llu",
			       attempt + 1, (unsigned long long)res->max_step);
		return 1;
	}
	if (next > at)
		return 0;
	(void)snprintf(why, len,
		       "; not restarting: attempt %d resumed at step %llu and failed before "
		       "the next checkpoint (every %llu steps), no progress",
		       attempt + 1, (unsigned long long)at, (unsigned long long)every);
	return 1;
}

/* Give every rank on @old (not a rank's own host string) to the next
 * spare, and report it.  @why is the failure in short. */
static void replace_host(struct ctl *c, const char *old, const char *why)
{
	struct dp_ctl_result *res = c->res;
	const char *spare = c->cfg->spares[c->next_spare++];
	char line[512], ob[300], sb[300], wb[700];
	struct dp_ctl_event ev = { .type = DP_CTL_EV_REPLACE, .rank = -1 };

	(void)snprintf(line, sizeof(line), "restart %d: node %s failed (%s); replaced by spare %s",
		       c->attempt, old, why, spare);
	dp_log(DP_LOG_WARN, "ctl", "%s", line);
	if (res->nreplaced < DP_CTL_REPLACED_LINES)
		(void)snprintf(res->replaced[res->nreplaced++], sizeof(res->replaced[0]), "%s",
			       line);
	res->nreplaced_all++;
	(void)snprintf(c->last_replace, sizeof(c->last_replace), "%s", line);
	c->replaced_now = 1;
	event(c, "replace", ",\"host\":%s,\"spare\":%s,\"reason\":%s",
	      json_str(old, ob, sizeof(ob)), json_str(spare, sb, sizeof(sb)),
	      json_str(why, wb, sizeof(wb)));
	ev.host = old;
	ev.spare = spare;
	ev.msg = line;
	emit(c, &ev);
	for (size_t i = 0; i < c->own.nranks; i++)
		if (strcmp(c->rk[i].host, old) == 0)
			c->rk[i].host = spare;
	c->swapped++;
}

struct failed_rank {
	const char *host;
	size_t rank;
};

static int cmp_failed(const void *a, const void *b)
{
	const struct failed_rank *x = a, *y = b;
	int d = strcmp(x->host, y->host);

	return d ? d : (x->rank > y->rank) - (x->rank < y->rank);
}

static int cmp_failed_rank(const void *a, const void *b)
{
	const struct failed_rank *x = a, *y = b;

	return (x->rank > y->rank) - (x->rank < y->rank);
}

int dp_ctl_failed_nodes(const char *const *host, size_t n, const char **out, size_t max)
{
	struct failed_rank *f = calloc(n ? n : 1, sizeof(*f));
	size_t nf = 0, k = 0;

	if (!f)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		if (host[i])
			f[nf++] = (struct failed_rank){ host[i], i };
	/* by host (then rank): keep each host's first failing rank ... */
	qsort(f, nf, sizeof(*f), cmp_failed);
	for (size_t i = 0; i < nf; i++)
		if (i == 0 || strcmp(f[i].host, f[k - 1].host) != 0)
			f[k++] = f[i];
	/* ... and put those back in rank order */
	qsort(f, k, sizeof(*f), cmp_failed_rank);
	if (k > max || k > INT_MAX) {
		free(f);
		return -E2BIG;
	}
	for (size_t i = 0; i < k; i++)
		out[i] = f[i].host;
	free(f);
	return (int)k;
}

/* After a failed attempt: swap the node(s) that caused it for spares.
 * Only a node failure swaps (dp_ctl_node_failure(): spawn-failed,
 * rendezvous, rank-lost, rank-hang, pre-flight, and rank-signal except the
 * program's own SIGABRT/SIGSEGV/SIGFPE/SIGILL); a rank's plain non-zero exit
 * is the job's failure, which a spare would only repeat: the normal restart
 * rules apply to it.  A swapped restart is not asked to make progress (the
 * new node gets its chance), but swaps in a row are: with @stuck (the
 * attempt that failed made no progress, no_progress()) after a swapped
 * restart, it stops the run with the reason added to the cause line
 * rather than use another spare.  Returns 1 if it swapped (the restart
 * then runs on the new nodes), -1 to stop, 0 if there is nothing to
 * replace or not spares enough. */
static int use_spares(struct ctl *c, int stuck)
{
	struct dp_ctl_result *res = c->res;
	size_t left = c->cfg->nspares - c->next_spare;
	char old[256];

	if (!left || !dp_ctl_node_failure(res))
		return 0;
	if (stuck && c->swapped) {
		char why[128];

		(void)snprintf(why, sizeof(why),
			       "; not restarting: attempt %d made no progress after replacing "
			       "%zu node%s",
			       c->attempt, c->swapped, c->swapped == 1 ? "" : "s");
		append(res->cause, sizeof(res->cause), why);
		return -1;
	}
	if (res->outcome == DP_CTL_PREFLIGHT_FAILED) {
		/* every failing node, or none: a partial swap fails pre-flight
		 * again.  There may be hundreds (a bad image on a rack). */
		const char **host = calloc(c->own.nranks, sizeof(*host));
		const char **bad = calloc(left, sizeof(*bad));
		int nbad = -ENOMEM;

		if (host && bad) {
			for (size_t i = 0; i < c->own.nranks; i++)
				if (c->ranks[i].pf_state == PF_FAIL)
					host[i] = c->ranks[i].spec->host;
			nbad = dp_ctl_failed_nodes(host, c->own.nranks, bad, left);
		}
		if (nbad == -ENOMEM)
			dp_log(DP_LOG_WARN, "ctl", "spares: out of memory, not replacing");
		for (int k = 0; k < nbad; k++) {
			(void)snprintf(old, sizeof(old), "%s", bad[k]);
			replace_host(c, old, "pre-flight");
		}
		free(host);
		free(bad);
		return nbad > 0;
	}
	if (res->failed_rank < 0 || !res->failed_host[0])
		return 0;
	(void)snprintf(old, sizeof(old), "%s", res->failed_host);
	replace_host(c, old, dp_ctl_outcome_name(res->outcome));
	return 1;
}

int dp_ctl_run(const struct dp_ctl_cfg *cfg, const struct dp_launch_spec *spec,
	       struct dp_ctl_result *res, struct dp_err *err)
{
	struct ctl c;
	uint64_t prev_step = 0;
	int rc, attempt;

	memset(res, 0, sizeof(*res));
	res->failed_rank = -1;
	res->ready_s = -1;
	rc = dp_launch_spec_check(spec, err);
	if (rc)
		return rc;
	memset(&c, 0, sizeof(c));
	c.cfg = cfg;
	c.rk = malloc(spec->nranks * sizeof(*c.rk));
	if (!c.rk)
		return dp_err_set(err, ENOMEM, "ctl: out of memory");
	memcpy(c.rk, spec->ranks, spec->nranks * sizeof(*c.rk));
	c.own.ranks = c.rk;
	c.own.nranks = spec->nranks;
	c.spec = &c.own;
	c.res = res;
	c.lfd = -1;
	c.rendezvous_s = dflt(cfg->rendezvous_s, 60);
	c.heartbeat_s = dflt(cfg->heartbeat_s, 1);
	c.hang_s = dflt(cfg->hang_timeout_s, 30);
	c.hello_s = dflt(cfg->hello_timeout_s, HELLO_TIMEOUT_S);
	c.max_pending = max_pending(spec->nranks);
	c.grace_s = cfg->grace_s > 0 ? cfg->grace_s : 5;
	c.dump_s = dflt(cfg->dump_wait_s, 1);
	c.t0 = now_s();
	c.pf_checks = cfg->preflight ? cfg->preflight->checks & DP_PF_ALL : 0;
	c.t_run = now_s();
	c.be = cfg->backend_ops ? cfg->backend_ops : dp_launch_backend_pick(cfg->backend, err);
	if (!c.be) {
		rc = -ENODEV;
		goto out;
	}
	if (cfg->run_dir) {
		char path[4096];

		(void)snprintf(path, sizeof(path), "%s/run.jsonl", cfg->run_dir);
		c.events = fopen(path, "ae");
		if (!c.events)
			dp_log(DP_LOG_WARN, "ctl", "cannot write '%s': %s", path, strerror(errno));
	}
	c.ranks = calloc(spec->nranks, sizeof(*c.ranks));
	if (!c.ranks) {
		rc = dp_err_set(err, ENOMEM, "ctl: out of memory");
		goto out;
	}
	rc = listen_on(&c, err);
	if (rc)
		goto out;
	for (attempt = 0;; attempt++) {
		double t0 = now_s();

		res->attempts = attempt + 1;
		c.attempt = attempt + 1;
		res->max_step = 0;
		if (attempt == 0) {
			char rb[1100];

			event(&c, "start", ",\"ranks\":%zu,\"backend\":\"%s\"%s%s", spec->nranks,
			      c.be->name, cfg->recipe ? ",\"recipe\":" : "",
			      cfg->recipe ? json_str(cfg->recipe, rb, sizeof(rb)) : "");
			post(&c, DP_NOTIFY_START);
		}
		rc = run_once(&c, err);
		res->run_s += now_s() - t0;
		if (!rc && c.failed)
			post(&c, DP_NOTIFY_FAILURE);
		else if (!rc) {
			event(&c, "complete", ",\"max_step\":%llu,\"run_s\":%.3f",
			      (unsigned long long)res->max_step, res->run_s);
			post(&c, DP_NOTIFY_COMPLETE);
		}
		res->resume_step = c.first_step == UINT64_MAX ? c.resume_at : c.first_step;
		if (rc || !c.failed)
			break;
		if (attempt >= cfg->max_restarts)
			break;
		{
			/* after a node failure, with a spare in, the next attempt
			 * runs on other nodes and gets its restart, unless a swap
			 * in a row made no progress either; without one, a node
			 * failing pre-flight fails it again, and a restart loop
			 * without progress stops.  no_progress() also sets where
			 * the next attempt resumes. */
			char why[300] = "";
			int stuck = no_progress(&c, attempt, prev_step, why, sizeof(why)), replaced;

			if (!stuck)
				c.swapped = 0;
			replaced = use_spares(&c, stuck);
			if (!replaced) {
				c.swapped = 0;
				if (res->outcome == DP_CTL_PREFLIGHT_FAILED)
					break;
				if (cfg->restart_hook)
					stuck = !cfg->restart_hook(cfg->hook_arg, res, attempt + 1);
				else if (stuck)
					append(res->cause, sizeof(res->cause), why);
			}
			if (replaced < 0 || (!replaced && stuck)) {
				dp_log(DP_LOG_WARN, "ctl", "not restarting after attempt %d",
				       attempt + 1);
				break;
			}
		}
		prev_step = res->max_step;
		dp_log(DP_LOG_WARN, "ctl", "restart %d of %d after: %s", attempt + 1,
		       cfg->max_restarts, res->cause);
		{
			struct dp_ctl_event ev = { .type = DP_CTL_EV_RESTART, .rank = -1 };

			ev.msg = res->cause;
			c.attempt = attempt + 2;
			emit(&c, &ev);
			if (cfg->train && cfg->train->restart)
				cfg->train->restart(cfg->train_arg, c.attempt);
		}
		{
			char cb[2200];

			event(&c, "restart", ",\"after\":%s", json_str(res->cause, cb, sizeof(cb)));
		}
		post(&c, DP_NOTIFY_RESTART);
		c.replaced_now = 0;
		res->outcome = DP_CTL_OK;
		res->exit_code = 0;
		res->failed_rank = -1;
		res->cause[0] = '\0';
		res->ready_s = -1;
	}
	if (!rc) {
		struct dp_ctl_event ev = { .type = DP_CTL_EV_DONE, .rank = -1, .res = res };

		emit(&c, &ev);
	}
out:
	if (c.events)
		(void)fclose(c.events);
	if (c.lfd >= 0)
		(void)close(c.lfd);
	free(c.conns);
	free(c.ranks);
	free(c.rk);
	return rc;
}
