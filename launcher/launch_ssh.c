/* launcher/launch_ssh.c - the `ssh` launch backend (libssh2, non-blocking).
 *
 * One SSH session per host, one exec channel per rank, all driven by the
 * controller's poll loop through pollfds()/dispatch(); nothing here blocks
 * except DNS lookups and the bounded cleanup in close().  At most
 * max_handshakes sessions are between TCP connect and authenticated at once
 * (sshd's MaxStartups defaults to 10:30:100).
 *
 * Host keys are checked with libssh2's knownhost API: an unknown key is
 * refused unless accept_new, a changed key always.  Auth: ssh-agent (if
 * $SSH_AUTH_SOCK and not no_agent), then identity files.
 *
 * The remote command is a small sh wrapper followed by single-quoted words
 * ("env", NAME=value..., argv...), so no value is ever interpreted by the
 * remote shell.  The job token is not among them: the wrapper reads it from
 * the channel's stdin, starts the worker in a new session (own process
 * group) with the token in its environment, and keeps reading stdin: a TERM
 * or KILL line signals the group, end of input (channel closed, controller
 * gone) stops it (SIGTERM, then SIGKILL after the grace period), and when
 * the worker exits whatever it left in its group is killed, and so is the
 * relay (the wrapper ignores SIGTERM and sends it to its own group).  The exit status
 * is the worker's, 128+N for a signal, as with the local backend.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libssh2.h>
#include <netdb.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/dp_buf.h"
#include "common/dp_log.h"
#include "common/dp_util.h"
#include "launcher/ctl_launch.h"
#include "launcher/dp_ssh.h"
#include "common/dp_banned.h"

#define SSH_LINE_MAX 4096
#define CMD_MAX	     ((size_t)256 * 1024)

/* H_RELAYED: a relay of the tree starts this host's ranks (never connected here) */
enum hstate { H_WAIT, H_CONNECT, H_HANDSHAKE, H_AGENT, H_KEYFILE, H_READY, H_FAILED, H_RELAYED };
/* C_RELAYED: handed to the relay channel c->via, which reports for it */
enum cstate { C_WAIT, C_OPEN, C_EXEC, C_RUN, C_CLOSE, C_DONE, C_RELAYED };

struct host {
	char *name;
	int fd;
	LIBSSH2_SESSION *s;
	LIBSSH2_AGENT *agent;
	struct libssh2_agent_publickey *ident;
	enum hstate st;
	int key_idx;
};

struct lines {
	size_t len;
	char buf[SSH_LINE_MAX];
};

struct chan {
	int rank;
	struct host *h;
	LIBSSH2_CHANNEL *ch;
	enum cstate st;
	char *cmd;	  /* remote command (caller frees) */
	struct dp_buf in; /* bytes still to write to the remote stdin: token, TERM/KILL */
	int eof_sent;
	struct lines io[2];
	/* relay tree (relay_width > 0) */
	int relay;	   /* a relay channel (rank -1): runs `WORKER --relay` for sub[] */
	struct chan **sub; /* relay: the ranks it starts */
	size_t nsub;
	struct chan *via;  /* a delegated rank: its relay channel */
	json_t *spec;	   /* rank, host, local, argv, env, extra (no token) */
	char errline[256]; /* relay: its last stderr line, for the failure message */
	char *token;	   /* the job token, for a relay's input */
};

struct ssh_session {
	struct dp_launch_session base; /* first */
	struct dp_launch_opts o;
	char user[256];
	char known_hosts[1024];
	char keys[3][1024];
	int nkeys;
	struct host **hosts;
	size_t nhosts;
	struct chan **chans;
	size_t nchans;
	const struct dp_launch_events *ev; /* valid during dispatch() */
	void *arg;
	int tree_built; /* the relay tree is decided at the first dispatch() */
};

static int ssh_probe(int *priority)
{
	*priority = 5; /* never preferred over local by probing: ask for it by name */
	return 0;
}

static int ssh_open(const struct dp_launch_opts *opts, struct dp_launch_session **out,
		    struct dp_err *err)
{
	struct ssh_session *ss = calloc(1, sizeof(*ss));
	const char *home = getenv("HOME");
	struct passwd *pw = getpwuid(getuid());

	if (!ss)
		return dp_err_set(err, ENOMEM, "ssh: out of memory");
	if (libssh2_init(0) != 0) {
		free(ss);
		return dp_err_set(err, EIO, "ssh: libssh2_init failed");
	}
	ss->base.ops = &dp_launch_ssh;
	if (opts)
		ss->o = *opts;
	if (ss->o.ssh_port <= 0)
		ss->o.ssh_port = 22;
	if (ss->o.max_handshakes <= 0)
		ss->o.max_handshakes = 32;
	if (ss->o.relay_width <= 0 && getenv("DP_SSH_RELAY_WIDTH")) {
		long w = 0;

		if (dp_parse_long(getenv("DP_SSH_RELAY_WIDTH"), 0, 4096, &w, "DP_SSH_RELAY_WIDTH",
				  NULL) == 0)
			ss->o.relay_width = (int)w;
	}
	if (!home && pw)
		home = pw->pw_dir;
	if (!home)
		home = "/";
	(void)snprintf(ss->user, sizeof(ss->user), "%s",
		       ss->o.ssh_user ? ss->o.ssh_user
		       : pw	      ? pw->pw_name
				      : "root");
	(void)snprintf(ss->known_hosts, sizeof(ss->known_hosts), "%s",
		       ss->o.known_hosts ? ss->o.known_hosts : "");
	if (!ss->o.known_hosts)
		(void)snprintf(ss->known_hosts, sizeof(ss->known_hosts), "%s/.ssh/known_hosts",
			       home);
	if (ss->o.ssh_identity) {
		(void)snprintf(ss->keys[0], sizeof(ss->keys[0]), "%s", ss->o.ssh_identity);
		ss->nkeys = 1;
	} else {
		static const char *const names[] = { "id_ed25519", "id_ecdsa", "id_rsa" };

		for (size_t i = 0; i < DP_ARRAY_SIZE(names); i++) {
			(void)snprintf(ss->keys[ss->nkeys], sizeof(ss->keys[0]), "%s/.ssh/%s", home,
				       names[i]);
			if (access(ss->keys[ss->nkeys], R_OK) == 0)
				ss->nkeys++;
		}
	}
	*out = &ss->base;
	return 0;
}

/* ---- command building ---------------------------------------------------------- */

/* Append @w single-quoted: every byte literal, ' as '\''. */
static int add_quoted(struct dp_buf *b, const char *w)
{
	int rc = dp_buf_add(b, " '", 2);

	for (const char *p = w; !rc && *p; p++)
		rc = *p == '\'' ? dp_buf_add(b, "'\\''", 4) : dp_buf_add(b, p, 1);
	return rc ? rc : dp_buf_add(b, "'", 1);
}

/* What a relay needs to start rank @r itself (kept only with relay_width). */
static int make_spec(const struct dp_launch_rank *r, const char *const *extra, const char *token,
		     struct chan *c, struct dp_err *err)
{
	json_t *argv = json_array(), *env = json_array(), *ex = json_array();

	for (const char *const *a = r->argv; argv && *a; a++)
		(void)json_array_append_new(argv, json_string(*a));
	for (const char *const *e = r->env; env && e && *e; e++)
		(void)json_array_append_new(env, json_string(*e));
	for (const char *const *e = extra; ex && e && *e; e++)
		if (strncmp(*e, "DP_JOB_TOKEN=", 13) != 0)
			(void)json_array_append_new(ex, json_string(*e));
	c->spec = json_pack("{s:i, s:s, s:i, s:o, s:o, s:o}", "rank", r->rank, "host", r->host,
			    "local", r->local_index, "argv", argv, "env", env, "extra", ex);
	c->token = strdup(token ? token : "");
	if (!c->spec || !c->token)
		return dp_err_set(err, ENOMEM, "ssh: out of memory");
	return 0;
}

static int build_cmd(const struct ssh_session *ss, const struct dp_launch_rank *r,
		     const char *const *extra, struct chan *c, struct dp_err *err)
{
	struct dp_buf b;
	const char *token = NULL;
	char script[1024];
	int rc;

	(void)snprintf(
		script, sizeof(script),
		"IFS= read -r t || exit 255; DP_JOB_TOKEN=$t; export DP_JOB_TOKEN; t=; "
		"exec 3<&0; setsid \"$@\" </dev/null & p=$!; "
		"(while IFS= read -r c <&3; do case $c in TERM) kill -TERM -$p;; "
		"KILL) kill -KILL -$p;; esac; done; kill -TERM -$p; sleep %g; kill -KILL -$p) "
		">/dev/null 2>&1 & w=$!; "
		"wait $p; s=$?; kill -KILL -$p 2>/dev/null; trap '' TERM; kill -TERM 0 2>/dev/null; "
		"exit $s",
		ss->o.grace_s > 0 ? ss->o.grace_s : 5);
	dp_buf_init(&b, CMD_MAX);
	rc = dp_buf_adds(&b, "sh -c");
	rc = rc ? rc : add_quoted(&b, script);
	rc = rc ? rc : add_quoted(&b, "dpworker-ssh");
	rc = rc ? rc : add_quoted(&b, "env");
	for (const char *const *e = r->env; !rc && e && *e; e++)
		rc = add_quoted(&b, *e);
	for (const char *const *e = extra; !rc && e && *e; e++) {
		if (strncmp(*e, "DP_JOB_TOKEN=", 13) == 0)
			token = *e + 13; /* stdin, never the command line */
		else
			rc = add_quoted(&b, *e);
	}
	for (const char *const *a = r->argv; !rc && *a; a++)
		rc = add_quoted(&b, *a);
	rc = rc ? rc : dp_buf_addf(&c->in, "%s\n", token ? token : "");
	if (rc) {
		dp_buf_release(&b);
		return dp_err_set(err, -rc, "ssh: command for rank %d is too long", r->rank);
	}
	c->cmd = dp_buf_detach(&b, NULL);
	if (ss->o.relay_width > 0)
		return make_spec(r, extra, token, c, err);
	return 0;
}

static int ssh_spawn(struct dp_launch_session *s, const struct dp_launch_rank *r,
		     const char *const *env_extra, struct dp_err *err)
{
	struct ssh_session *ss = dp_container_of(s, struct ssh_session, base);
	struct host *h = NULL;
	struct chan *c;
	void *p;
	int rc;

	/* newest first: ranks come in rank order, a host's ranks together, so
	 * with thousands of hosts this is one compare, not a scan */
	for (size_t i = ss->nhosts; i > 0 && !h; i--)
		if (strcmp(ss->hosts[i - 1]->name, r->host) == 0)
			h = ss->hosts[i - 1];
	if (!h) {
		p = realloc(ss->hosts, (ss->nhosts + 1) * sizeof(struct host *));
		if (!p)
			return dp_err_set(err, ENOMEM, "ssh: out of memory");
		ss->hosts = p;
		h = calloc(1, sizeof(*h));
		if (!h || !(h->name = strdup(r->host))) {
			free(h);
			return dp_err_set(err, ENOMEM, "ssh: out of memory");
		}
		h->fd = -1;
		ss->hosts[ss->nhosts++] = h;
	}
	p = realloc(ss->chans, (ss->nchans + 1) * sizeof(struct chan *));
	if (!p)
		return dp_err_set(err, ENOMEM, "ssh: out of memory");
	ss->chans = p;
	c = calloc(1, sizeof(*c));
	if (!c)
		return dp_err_set(err, ENOMEM, "ssh: out of memory");
	c->rank = r->rank;
	c->h = h;
	dp_buf_init(&c->in, 4096);
	rc = build_cmd(ss, r, env_extra, c, err);
	if (rc) {
		dp_buf_release(&c->in);
		free(c->cmd);
		json_decref(c->spec);
		free(c->token);
		free(c);
		return rc;
	}
	ss->chans[ss->nchans++] = c;
	return 0;
}

/* ---- host state machine ----------------------------------------------------------- */

static void host_fail(struct ssh_session *ss, struct host *h, int e, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* @c cannot start: its rank fails, or for a relay channel every rank it
 * carries, naming the relay host and the rank's own host. */
static void chan_fail(struct ssh_session *ss, struct chan *c, int e, const char *msg)
{
	c->st = C_DONE;
	if (!c->relay) {
		if (ss->ev && ss->ev->spawn_failed)
			ss->ev->spawn_failed(ss->arg, c->rank, e, msg);
		return;
	}
	for (size_t i = 0; i < c->nsub; i++) {
		struct chan *x = c->sub[i];
		char m[700];

		if (x->st == C_DONE)
			continue;
		x->st = C_DONE;
		(void)snprintf(m, sizeof(m), "%s (the relay for rank %d on '%s')", msg, x->rank,
			       x->h->name);
		if (ss->ev && ss->ev->spawn_failed)
			ss->ev->spawn_failed(ss->arg, x->rank, e, m);
	}
}

/* Every rank of @h that has not started fails with the reason. */
static void host_fail(struct ssh_session *ss, struct host *h, int e, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	h->st = H_FAILED;
	dp_log(DP_LOG_WARN, "launch", "%s", msg);
	for (size_t i = 0; i < ss->nchans; i++) {
		struct chan *c = ss->chans[i];

		if (c->h != h || c->st == C_DONE)
			continue;
		chan_fail(ss, c, e, msg);
	}
}

static void host_connect(struct ssh_session *ss, struct host *h)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai;
	char port[16];
	int rc;

	(void)snprintf(port, sizeof(port), "%d", ss->o.ssh_port);
	rc = getaddrinfo(h->name, port, &hints, &ai);
	if (rc) {
		host_fail(ss, h, EHOSTUNREACH, "ssh: cannot resolve host '%s': %s", h->name,
			  gai_strerror(rc));
		return;
	}
	h->fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
		       ai->ai_protocol);
	if (h->fd < 0 ||
	    (connect(h->fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS)) {
		int e = errno;

		freeaddrinfo(ai);
		host_fail(ss, h, e, "ssh: cannot connect to '%s' port %d: %s", h->name,
			  ss->o.ssh_port, strerror(e));
		return;
	}
	freeaddrinfo(ai);
	h->st = H_CONNECT;
}

/* 0 if the host key is acceptable; otherwise the host has failed. */
static int check_hostkey(struct ssh_session *ss, struct host *h)
{
	char msg[400];
	int rc = dp_ssh_verify_hostkey(h->s, h->name, ss->o.ssh_port, ss->known_hosts,
				       ss->o.accept_new ? DP_SSH_HOSTKEY_ACCEPT_NEW
							: DP_SSH_HOSTKEY_STRICT,
				       msg, sizeof(msg));

	if (rc) {
		host_fail(ss, h, -rc, "ssh: %s", msg);
		return -1;
	}
	return 0;
}

/* Advance @h as far as it goes without blocking. */
static void host_step(struct ssh_session *ss, struct host *h)
{
	int rc;

	for (;;) {
		switch (h->st) {
		case H_CONNECT: {
			struct pollfd pf = { .fd = h->fd, .events = POLLOUT };
			int soerr = 0;
			socklen_t sl = sizeof(soerr);

			if (poll(&pf, 1, 0) <= 0)
				return;
			(void)getsockopt(h->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
			if (soerr) {
				host_fail(ss, h, soerr, "ssh: cannot connect to '%s' port %d: %s",
					  h->name, ss->o.ssh_port, strerror(soerr));
				return;
			}
			h->s = libssh2_session_init();
			if (!h->s) {
				host_fail(ss, h, ENOMEM, "ssh: out of memory");
				return;
			}
			libssh2_session_set_blocking(h->s, 0);
			h->st = H_HANDSHAKE;
			break;
		}
		case H_HANDSHAKE:
			rc = libssh2_session_handshake(h->s, h->fd);
			if (rc == LIBSSH2_ERROR_EAGAIN)
				return;
			if (rc) {
				host_fail(ss, h, ECONNREFUSED,
					  "ssh: handshake with '%s' failed (%d)", h->name, rc);
				return;
			}
			if (check_hostkey(ss, h))
				return;
			h->st = H_KEYFILE;
			if (!ss->o.no_agent && getenv("SSH_AUTH_SOCK")) {
				h->agent = libssh2_agent_init(h->s);
				if (h->agent && libssh2_agent_connect(h->agent) == 0 &&
				    libssh2_agent_list_identities(h->agent) == 0 &&
				    libssh2_agent_get_identity(h->agent, &h->ident, NULL) == 0)
					h->st = H_AGENT;
			}
			break;
		case H_AGENT:
			rc = libssh2_agent_userauth(h->agent, ss->user, h->ident);
			if (rc == LIBSSH2_ERROR_EAGAIN)
				return;
			if (rc == 0) {
				h->st = H_READY;
				break;
			}
			if (libssh2_agent_get_identity(h->agent, &h->ident, h->ident) != 0)
				h->st = H_KEYFILE; /* agent exhausted: identity files */
			break;
		case H_KEYFILE: {
			/* a key given as text (a relay's) comes before the key files */
			int pem = ss->o.ssh_identity_pem != NULL, k = h->key_idx - pem;

			if (k >= ss->nkeys) {
				host_fail(ss, h, EACCES,
					  "ssh: authentication as '%s' on '%s' failed", ss->user,
					  h->name);
				return;
			}
			if (pem && k < 0)
				rc = libssh2_userauth_publickey_frommemory(
					h->s, ss->user, strlen(ss->user), NULL, 0,
					ss->o.ssh_identity_pem, strlen(ss->o.ssh_identity_pem),
					NULL);
			else
				rc = libssh2_userauth_publickey_fromfile_ex(
					h->s, ss->user, (unsigned)strlen(ss->user), NULL,
					ss->keys[k], NULL);
			if (rc == LIBSSH2_ERROR_EAGAIN)
				return;
			if (rc == 0)
				h->st = H_READY;
			else
				h->key_idx++;
			break;
		}
		default:
			return;
		}
	}
}

/* ---- channels ------------------------------------------------------------------------ */

static struct chan *relay_sub(const struct chan *c, long rank)
{
	for (size_t i = 0; i < c->nsub; i++)
		if (c->sub[i]->rank == rank)
			return c->sub[i];
	return NULL;
}

/* One line from a relay: "O RANK STREAM TEXT", "X RANK STATUS" or "F RANK
 * ERRNO MESSAGE" on stdout (dp_launch_relay_main), anything on stderr is
 * the relay's own log. */
static void relay_line(struct ssh_session *ss, struct chan *c, int j, const char *line)
{
	const struct dp_launch_events *ev = ss->ev;
	char *end;
	long rank, a;
	struct chan *x;

	if (j == 1 || !strchr("OXF", line[0]) || line[1] != ' ') {
		dp_log(DP_LOG_INFO, "launch", "relay on %s: %s", c->h->name, line);
		if (j == 1)
			(void)snprintf(c->errline, sizeof(c->errline), "%s", line);
		return;
	}
	rank = strtol(line + 2, &end, 10);
	x = *end == ' ' ? relay_sub(c, rank) : NULL;
	if (!x || x->st == C_DONE) {
		dp_log(DP_LOG_WARN, "launch", "relay on %s: unexpected line '%.80s'", c->h->name,
		       line);
		return;
	}
	a = strtol(end + 1, &end, 10);
	if (line[0] == 'O') {
		if (ev && ev->output)
			ev->output(ss->arg, x->rank, a == 2 ? 2 : 1, *end == ' ' ? end + 1 : "");
	} else if (line[0] == 'X') {
		x->st = C_DONE;
		if (ev && ev->exited)
			ev->exited(ss->arg, x->rank, (int)a);
	} else {
		x->st = C_DONE;
		if (ev && ev->spawn_failed)
			ev->spawn_failed(ss->arg, x->rank, a > 0 ? (int)a : EIO,
					 *end == ' ' ? end + 1
						     : "ssh: the relay could not start it");
	}
}

static void emit(struct ssh_session *ss, struct chan *c, int j)
{
	struct lines *l = &c->io[j];

	l->buf[l->len] = '\0';
	if (c->relay)
		relay_line(ss, c, j, l->buf);
	else if (ss->ev && ss->ev->output)
		ss->ev->output(ss->arg, c->rank, j + 1, l->buf);
	l->len = 0;
}

static void read_lines(struct ssh_session *ss, struct chan *c)
{
	char chunk[4096];

	for (int j = 0; j < 2; j++) {
		for (;;) {
			ssize_t n = libssh2_channel_read_ex(c->ch, j, chunk, sizeof(chunk));

			if (n <= 0)
				break;
			for (ssize_t i = 0; i < n; i++) {
				struct lines *l = &c->io[j];

				if (chunk[i] == '\n') {
					emit(ss, c, j);
					continue;
				}
				l->buf[l->len++] = chunk[i];
				if (l->len == sizeof(l->buf) - 1)
					emit(ss, c, j);
			}
		}
	}
}

static int signal_number(const char *name)
{
	static const struct {
		const char *n;
		int s;
	} map[] = { { "HUP", SIGHUP },	 { "INT", SIGINT },   { "QUIT", SIGQUIT },
		    { "ILL", SIGILL },	 { "ABRT", SIGABRT }, { "FPE", SIGFPE },
		    { "KILL", SIGKILL }, { "SEGV", SIGSEGV }, { "PIPE", SIGPIPE },
		    { "ALRM", SIGALRM }, { "TERM", SIGTERM }, { "USR1", SIGUSR1 },
		    { "USR2", SIGUSR2 }, { "BUS", SIGBUS } };

	for (size_t i = 0; name && i < DP_ARRAY_SIZE(map); i++)
		if (strcmp(name, map[i].n) == 0)
			return map[i].s;
	return SIGKILL;
}

static void finish(struct ssh_session *ss, struct chan *c)
{
	char *sig = NULL;
	int status = libssh2_channel_get_exit_status(c->ch);

	if (libssh2_channel_get_exit_signal(c->ch, &sig, NULL, NULL, NULL, NULL, NULL) == 0 &&
	    sig) {
		status = 128 + signal_number(sig);
		libssh2_free(c->h->s, sig);
	}
	for (int j = 0; j < 2; j++)
		if (c->io[j].len)
			emit(ss, c, j);
	(void)libssh2_channel_free(c->ch);
	c->ch = NULL;
	if (c->relay) {
		char msg[512];

		/* ranks it never reported on are lost with it */
		(void)snprintf(msg, sizeof(msg), "ssh: the relay on '%s' ended (status %d)%s%.200s",
			       c->h->name, status, c->errline[0] ? ": " : "", c->errline);
		chan_fail(ss, c, EPIPE, msg);
		return;
	}
	c->st = C_DONE;
	if (ss->ev && ss->ev->exited)
		ss->ev->exited(ss->arg, c->rank, status);
}

static void chan_step(struct ssh_session *ss, struct chan *c)
{
	LIBSSH2_SESSION *s = c->h->s;
	int rc;

	for (;;) {
		switch (c->st) {
		case C_WAIT:
			if (c->h->st != H_READY)
				return;
			c->st = C_OPEN;
			break;
		case C_OPEN:
			c->ch = libssh2_channel_open_session(s);
			if (!c->ch) {
				if (libssh2_session_last_errno(s) == LIBSSH2_ERROR_EAGAIN)
					return;
				host_fail(ss, c->h, EIO, "ssh: cannot open a channel on '%s'",
					  c->h->name);
				return;
			}
			c->st = C_EXEC;
			break;
		case C_EXEC:
			rc = libssh2_channel_exec(c->ch, c->cmd);
			if (rc == LIBSSH2_ERROR_EAGAIN)
				return;
			if (rc) {
				(void)libssh2_channel_free(c->ch);
				c->ch = NULL;
				chan_fail(ss, c, EIO, "ssh: remote exec refused");
				return;
			}
			dp_log(DP_LOG_DEBUG, "ssh", "rank %d started on %s", c->rank, c->h->name);
			c->st = C_RUN;
			break;
		case C_RUN:
			while (c->in.len) {
				ssize_t n = libssh2_channel_write(c->ch, c->in.data, c->in.len);

				if (n <= 0)
					break;
				memmove(c->in.data, c->in.data + n, c->in.len - (size_t)n);
				c->in.len -= (size_t)n;
			}
			read_lines(ss, c);
			if (!libssh2_channel_eof(c->ch))
				return;
			c->st = C_CLOSE;
			break;
		case C_CLOSE:
			read_lines(ss, c);
			rc = libssh2_channel_close(c->ch);
			if (rc == LIBSSH2_ERROR_EAGAIN)
				return;
			rc = libssh2_channel_wait_closed(c->ch);
			if (rc == LIBSSH2_ERROR_EAGAIN)
				return;
			finish(ss, c);
			return;
		default:
			return;
		}
	}
}

/* ---- relay tree ------------------------------------------------------------------------ */

/* A small file's text (caller frees), or NULL. */
static char *read_text(const char *path, size_t cap)
{
	struct dp_buf b;
	char chunk[4096];
	size_t n;
	FILE *f = fopen(path, "rb");

	if (!f)
		return NULL;
	dp_buf_init(&b, cap);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		if (dp_buf_add(&b, chunk, n)) {
			dp_buf_release(&b);
			(void)fclose(f);
			return NULL;
		}
	(void)fclose(f);
	if (!b.len) {
		dp_buf_release(&b);
		return NULL;
	}
	return dp_buf_detach(&b, NULL);
}

/* Hosts [lo, hi) become one subtree: a relay channel on hosts[lo] starts the
 * ranks of hosts[lo+1 .. hi) (recursively, with the same width), and the
 * ranks of hosts[lo] itself stay on their own channels as before. */
static int make_relay(struct ssh_session *ss, size_t lo, size_t hi)
{
	struct host *head = ss->hosts[lo];
	struct chan *r = calloc(1, sizeof(*r));
	json_t *ranks = json_array(), *o = NULL;
	struct dp_buf cmd;
	char *ident = NULL, *kh = NULL, *line = NULL;
	const char *worker = NULL;
	size_t at;
	void *p;
	int rc = -ENOMEM;

	if (!r || !ranks)
		goto out;
	r->rank = -1;
	r->relay = 1;
	r->h = head;
	dp_buf_init(&r->in, (size_t)1 << 30);
	for (size_t i = 0; i < ss->nchans; i++) {
		struct chan *c = ss->chans[i];
		int inside = 0;

		for (size_t k = lo + 1; k < hi && !inside; k++)
			inside = c->h == ss->hosts[k];
		if (!inside || c->st != C_WAIT || c->relay)
			continue;
		p = realloc(r->sub, (r->nsub + 1) * sizeof(struct chan *));
		if (!p)
			goto out;
		r->sub = p;
		if (json_array_append(ranks, c->spec))
			goto out;
		r->sub[r->nsub++] = c;
		if (!worker)
			worker = json_string_value(
				json_array_get(json_object_get(c->spec, "argv"), 0));
	}
	if (!r->nsub) {
		rc = 0;
		goto out;
	}
	for (int k = 0; !ss->o.ssh_identity_pem && !ident && k < ss->nkeys; k++)
		ident = read_text(ss->keys[k], 1 << 20);
	kh = read_text(ss->known_hosts, 64u << 20);
	o = json_pack("{s:i, s:i, s:s, s:b, s:f, s:i, s:s?, s:s?, s:s, s:O}", "width",
		      ss->o.relay_width, "port", ss->o.ssh_port, "user", ss->user, "accept_new",
		      ss->o.accept_new, "grace_s", ss->o.grace_s, "max_handshakes",
		      ss->o.max_handshakes, "identity",
		      ss->o.ssh_identity_pem ? ss->o.ssh_identity_pem : ident, "known_hosts", kh,
		      "token", r->sub[0]->token, "ranks", ranks);
	line = o ? json_dumps(o, JSON_COMPACT) : NULL;
	dp_buf_init(&cmd, CMD_MAX);
	if (!line || dp_buf_adds(&r->in, line) || dp_buf_adds(&r->in, "\n") ||
	    add_quoted(&cmd, worker ? worker : "dpworker") || add_quoted(&cmd, "--relay")) {
		dp_buf_release(&cmd);
		goto out;
	}
	r->cmd = dp_buf_detach(&cmd, NULL);
	p = realloc(ss->chans, (ss->nchans + 1) * sizeof(struct chan *));
	if (!p)
		goto out;
	ss->chans = p;
	/* before the head's own ranks: channels on one session open and exec
	 * in the order they are stepped, and the whole subtree waits for this
	 * one (40 to 90 ms later behind one rank on a loaded host) */
	at = ss->nchans;
	for (size_t i = 0; i < ss->nchans && at == ss->nchans; i++)
		if (ss->chans[i]->h == head)
			at = i;
	memmove(ss->chans + at + 1, ss->chans + at, (ss->nchans - at) * sizeof(struct chan *));
	ss->chans[at] = r;
	ss->nchans++;
	for (size_t i = 0; i < r->nsub; i++) {
		r->sub[i]->st = C_RELAYED;
		r->sub[i]->via = r;
	}
	for (size_t k = lo + 1; k < hi; k++)
		ss->hosts[k]->st = H_RELAYED;
	dp_log(DP_LOG_INFO, "launch", "relay on %s starts %zu ranks on %zu hosts", head->name,
	       r->nsub, hi - lo - 1);
	r = NULL;
	rc = 0;
out:
	if (r) {
		dp_buf_release(&r->in);
		free(r->cmd);
		free(r->sub);
		free(r);
	}
	free(line);
	json_decref(o);
	json_decref(ranks);
	if (ident) {
		explicit_bzero(ident, strlen(ident));
		free(ident);
	}
	free(kh);
	return rc;
}

/* With more hosts than relay_width, split them into relay_width contiguous
 * groups; each group's first host runs a relay for the others.  On ENOMEM
 * the remaining groups simply stay flat. */
static void build_tree(struct ssh_session *ss)
{
	size_t n = ss->nhosts, k = ss->o.relay_width > 0 ? (size_t)ss->o.relay_width : 0;

	ss->tree_built = 1;
	if (k == 0 || n <= k)
		return;
	for (size_t g = 0; g < k; g++) {
		size_t lo = g * n / k, hi = (g + 1) * n / k;

		if (hi - lo >= 2 && make_relay(ss, lo, hi) != 0) {
			dp_log(DP_LOG_WARN, "launch", "relay tree: out of memory, going flat");
			return;
		}
	}
}

/* ---- ops ----------------------------------------------------------------------------- */

static int ssh_pollfds(struct dp_launch_session *s, struct pollfd *fds, int max)
{
	struct ssh_session *ss = dp_container_of(s, struct ssh_session, base);
	int k = 0;

	for (size_t i = 0; i < ss->nhosts && k < max; i++) {
		struct host *h = ss->hosts[i];
		short ev = POLLIN;

		if (h->fd < 0 || h->st == H_FAILED)
			continue;
		if (h->st == H_CONNECT)
			ev = POLLOUT;
		else if (h->s &&
			 (libssh2_session_block_directions(h->s) & LIBSSH2_SESSION_BLOCK_OUTBOUND))
			ev |= POLLOUT;
		fds[k++] = (struct pollfd){ .fd = h->fd, .events = ev };
	}
	return k;
}

static int ssh_dispatch(struct dp_launch_session *s, const struct pollfd *fds, int n,
			const struct dp_launch_events *ev, void *arg)
{
	struct ssh_session *ss = dp_container_of(s, struct ssh_session, base);
	int busy = 0;

	(void)fds;
	(void)n;
	ss->ev = ev;
	ss->arg = arg;
	if (!ss->tree_built)
		build_tree(ss);
	for (size_t i = 0; i < ss->nhosts; i++) {
		enum hstate st = ss->hosts[i]->st;

		busy += st == H_CONNECT || st == H_HANDSHAKE || st == H_AGENT || st == H_KEYFILE;
	}
	/* the handshake window */
	for (size_t i = 0; i < ss->nhosts && busy < ss->o.max_handshakes; i++) {
		struct host *h = ss->hosts[i];
		int pending = 0;

		for (size_t j = 0; j < ss->nchans; j++)
			pending += ss->chans[j]->h == h && ss->chans[j]->st != C_DONE;
		if (h->st != H_WAIT || !pending)
			continue;
		host_connect(ss, h);
		busy += h->st == H_CONNECT;
	}
	for (size_t i = 0; i < ss->nhosts; i++)
		host_step(ss, ss->hosts[i]);
	for (size_t i = 0; i < ss->nchans; i++)
		if (ss->chans[i]->h->st == H_READY)
			chan_step(ss, ss->chans[i]);
	ss->ev = NULL;
	return 0;
}

static int ssh_signal(struct dp_launch_session *s, int rank, int sig)
{
	struct ssh_session *ss = dp_container_of(s, struct ssh_session, base);

	for (size_t i = 0; i < ss->nchans; i++) {
		struct chan *c = ss->chans[i];

		if (c->relay) {
			if (rank >= 0 || c->st == C_DONE)
				continue;
			if (c->st == C_RUN || c->st == C_CLOSE || c->st == C_WAIT ||
			    c->st == C_OPEN || c->st == C_EXEC)
				/* after the relay's input line, whenever it starts */
				(void)dp_buf_adds(&c->in,
						  sig == SIGKILL ? "KILL -1\n" : "TERM -1\n");
			continue;
		}
		if (rank >= 0 && c->rank != rank)
			continue;
		if (c->st == C_RELAYED) {
			if (rank >= 0)
				(void)dp_buf_addf(&c->via->in, "%s %d\n",
						  sig == SIGKILL ? "KILL" : "TERM", c->rank);
			continue;
		}
		if (c->st == C_RUN || c->st == C_CLOSE) {
			(void)dp_buf_adds(&c->in, sig == SIGKILL ? "KILL\n" : "TERM\n");
			continue;
		}
		if (c->st == C_DONE)
			continue;
		/* not started yet: it never will be */
		if (c->ch)
			(void)libssh2_channel_free(c->ch);
		c->ch = NULL;
		c->st = C_DONE;
	}
	return 0;
}

static int ssh_running(struct dp_launch_session *s)
{
	struct ssh_session *ss = dp_container_of(s, struct ssh_session, base);
	int k = 0;

	for (size_t i = 0; i < ss->nchans; i++)
		k += !ss->chans[i]->relay && ss->chans[i]->st != C_DONE;
	return k;
}

static void ssh_close(struct dp_launch_session *s)
{
	struct ssh_session *ss;

	if (!s)
		return;
	ss = dp_container_of(s, struct ssh_session, base);
	/* bounded blocking cleanup: EOF on stdin stops the remote wrapper's group */
	for (size_t i = 0; i < ss->nhosts; i++)
		if (ss->hosts[i]->s) {
			libssh2_session_set_timeout(ss->hosts[i]->s, 2000);
			libssh2_session_set_blocking(ss->hosts[i]->s, 1);
		}
	for (size_t i = 0; i < ss->nchans; i++) {
		struct chan *c = ss->chans[i];

		if (c->ch) {
			(void)libssh2_channel_send_eof(c->ch);
			(void)libssh2_channel_close(c->ch);
			(void)libssh2_channel_free(c->ch);
		}
		dp_buf_release(&c->in);
		free(c->cmd);
		json_decref(c->spec);
		free(c->token);
		free(c->sub);
		free(c);
	}
	for (size_t i = 0; i < ss->nhosts; i++) {
		struct host *h = ss->hosts[i];

		if (h->agent) {
			(void)libssh2_agent_disconnect(h->agent);
			libssh2_agent_free(h->agent);
		}
		if (h->s) {
			(void)libssh2_session_disconnect(h->s, "dpctl: done");
			(void)libssh2_session_free(h->s);
		}
		if (h->fd >= 0)
			(void)close(h->fd);
		free(h->name);
		free(h);
	}
	free(ss->chans);
	free(ss->hosts);
	free(ss);
}

const struct dp_launch_backend dp_launch_ssh = {
	.name = "ssh",
	.probe = ssh_probe,
	.open = ssh_open,
	.spawn = ssh_spawn,
	.pollfds = ssh_pollfds,
	.dispatch = ssh_dispatch,
	.signal = ssh_signal,
	.running = ssh_running,
	.close = ssh_close,
};
