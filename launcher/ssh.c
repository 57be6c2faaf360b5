/* launcher/ssh.c - ssh fan-out with libssh2 (see dp_ssh.h).
 *
 * Each host is a small state machine advanced until libssh2 says EAGAIN;
 * one poll() then waits on every socket in the direction libssh2 is blocked
 * on (libssh2_session_block_directions).  libssh2 calls are all
 * non-blocking; only getaddrinfo() and the local agent socket may block.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libssh2.h>

#include "common/dp_buf.h"
#include "common/dp_log.h"
#include "launcher/dp_ssh.h"

#define LINE_CAP (1u << 20) /* a longer output line is cut */

struct host {
	struct dp_ssh_job *job;
	int idx;
	int sock;
	LIBSSH2_SESSION *s;
	LIBSSH2_CHANNEL *ch;
	LIBSSH2_AGENT *agent;
	struct libssh2_agent_publickey *ident;
	int auth_step; /* 0 start, 1 agent identities, 2 identity files, 3 done */
	int key_idx;   /* next identity file to try */
	int closing;   /* 1 close sent, 2 wait_closed done */
	size_t stdin_off;
	int stdin_eof; /* caller asked to close stdin */
	int eof_sent;
	long long deadline;
	struct dp_buf line[2];
};

struct dp_ssh_fanout {
	struct dp_ssh_opts o;
	char *user;
	char *known_hosts;
	char *keys[4];
	int nkeys;
	struct host *h;
	int n;
	int next; /* next queued job to admit */
	dp_ssh_line_cb cb;
	void *cb_arg;
	struct pollfd *pfd;
	int *pfd_host;
};

static pthread_once_t ssh_once = PTHREAD_ONCE_INIT;
static int ssh_init_rc;

static void ssh_global_init(void)
{
	ssh_init_rc = libssh2_init(0);
}

static long long now_ms(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int dp_shell_quote(char *dst, size_t size, const char *arg)
{
	size_t len = strlen(dst);

	if (len + 3 > size)
		return -E2BIG;
	dst[len++] = '\'';
	for (const char *p = arg; *p; p++) {
		if (*p == '\'') {
			if (len + 4 >= size)
				return -E2BIG;
			memcpy(dst + len, "'\\''", 4);
			len += 4;
		} else {
			if (len + 1 >= size)
				return -E2BIG;
			dst[len++] = *p;
		}
	}
	if (len + 2 > size)
		return -E2BIG;
	dst[len++] = '\'';
	dst[len] = '\0';
	return 0;
}

static const char *state_name(enum dp_ssh_state st)
{
	static const char *const names[] = { "queued", "connect", "handshake", "auth",
					     "exec",   "running", "done",      "failed" };

	return names[st];
}

static void emit_lines(struct dp_ssh_fanout *f, struct host *h, int is_err, int flush)
{
	struct dp_buf *b = &h->line[is_err];
	char *start = b->data, *nl;

	if (!start)
		return;
	while ((nl = memchr(start, '\n', b->len - (size_t)(start - b->data)))) {
		*nl = '\0';
		if (f->cb)
			f->cb(f->cb_arg, h->idx, is_err, start);
		start = nl + 1;
	}
	if (flush && start < b->data + b->len) {
		if (f->cb)
			f->cb(f->cb_arg, h->idx, is_err, start);
		start = b->data + b->len;
	}
	{
		size_t rest = b->len - (size_t)(start - b->data);

		memmove(b->data, start, rest);
		b->len = rest;
		b->data[rest] = '\0';
	}
}

static void teardown(struct host *h)
{
	if (h->ch) {
		libssh2_channel_free(h->ch);
		h->ch = NULL;
	}
	if (h->agent) {
		libssh2_agent_disconnect(h->agent);
		libssh2_agent_free(h->agent);
		h->agent = NULL;
	}
	if (h->s) {
		libssh2_session_set_blocking(h->s, 0);
		libssh2_session_disconnect(h->s, "dpctl: done");
		libssh2_session_free(h->s);
		h->s = NULL;
	}
	if (h->sock >= 0) {
		(void)close(h->sock);
		h->sock = -1;
	}
}

static int fail(struct host *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct host *h, const char *fmt, ...)
{
	char msg[200];
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	(void)snprintf(h->job->error, sizeof(h->job->error), "%s: %s", h->job->host, msg);
	dp_log(DP_LOG_INFO, "ssh", "%s", h->job->error);
	h->job->state = DP_SSH_FAILED;
	teardown(h);
	return -1;
}

static const char *ssh_errmsg(struct host *h)
{
	char *msg = NULL;

	if (!h->s)
		return "no session";
	libssh2_session_last_error(h->s, &msg, NULL, 0);
	return msg ? msg : "unknown libssh2 error";
}

static int start_connect(struct dp_ssh_fanout *f, struct host *h)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC };
	struct addrinfo *ai = NULL;
	char port[16];
	int rc;

	(void)snprintf(port, sizeof(port), "%d", f->o.port);
	rc = getaddrinfo(h->job->host, port, &hints, &ai);
	if (rc)
		return fail(h, "cannot resolve: %s", gai_strerror(rc));
	h->sock = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (h->sock < 0) {
		freeaddrinfo(ai);
		return fail(h, "socket: %s", strerror(errno));
	}
	rc = connect(h->sock, ai->ai_addr, ai->ai_addrlen);
	freeaddrinfo(ai);
	if (rc && errno != EINPROGRESS)
		return fail(h, "connect to port %d: %s", f->o.port, strerror(errno));
	h->deadline = now_ms() + f->o.connect_timeout_ms;
	h->job->state = DP_SSH_CONNECTING;
	return 0;
}

static int keytype_bits(int type)
{
	switch (type) {
	case LIBSSH2_HOSTKEY_TYPE_RSA:
		return LIBSSH2_KNOWNHOST_KEY_SSHRSA;
	case LIBSSH2_HOSTKEY_TYPE_DSS:
		return LIBSSH2_KNOWNHOST_KEY_SSHDSS;
	case LIBSSH2_HOSTKEY_TYPE_ECDSA_256:
		return LIBSSH2_KNOWNHOST_KEY_ECDSA_256;
	case LIBSSH2_HOSTKEY_TYPE_ECDSA_384:
		return LIBSSH2_KNOWNHOST_KEY_ECDSA_384;
	case LIBSSH2_HOSTKEY_TYPE_ECDSA_521:
		return LIBSSH2_KNOWNHOST_KEY_ECDSA_521;
	case LIBSSH2_HOSTKEY_TYPE_ED25519:
		return LIBSSH2_KNOWNHOST_KEY_ED25519;
	default:
		return LIBSSH2_KNOWNHOST_KEY_UNKNOWN;
	}
}

int dp_ssh_verify_hostkey(LIBSSH2_SESSION *s, const char *host, int port, const char *known_hosts,
			  enum dp_ssh_hostkey_policy policy, char *msg, size_t len)
{
	LIBSSH2_KNOWNHOSTS *kh;
	const char *key;
	size_t klen = 0;
	int type = 0, mask, rc;
	char name[300];

	if (policy == DP_SSH_HOSTKEY_OFF)
		return 0;
	key = libssh2_session_hostkey(s, &klen, &type);
	kh = key ? libssh2_knownhost_init(s) : NULL;
	if (!kh) {
		(void)snprintf(msg, len, "host key of '%s': none received", host);
		return -EIO;
	}
	/* a missing file is an empty one */
	(void)libssh2_knownhost_readfile(kh, known_hosts, LIBSSH2_KNOWNHOST_FILE_OPENSSH);
	mask = LIBSSH2_KNOWNHOST_TYPE_PLAIN | LIBSSH2_KNOWNHOST_KEYENC_RAW | keytype_bits(type);
	rc = libssh2_knownhost_checkp(kh, host, port, key, klen, mask, NULL);
	if (rc == LIBSSH2_KNOWNHOST_CHECK_MATCH) {
		rc = 0;
	} else if (rc == LIBSSH2_KNOWNHOST_CHECK_MISMATCH) {
		(void)snprintf(msg, len,
			       "host key of '%s' has CHANGED (not the one in '%s'): refused", host,
			       known_hosts);
		rc = -EACCES;
	} else if (rc != LIBSSH2_KNOWNHOST_CHECK_NOTFOUND) {
		(void)snprintf(msg, len, "host key of '%s': cannot check it against '%s'", host,
			       known_hosts);
		rc = -EIO;
	} else if (policy != DP_SSH_HOSTKEY_ACCEPT_NEW) {
		(void)snprintf(
			msg, len,
			"host key of '%s' is unknown (not in '%s'; known_hosts policy strict): refused",
			host, known_hosts);
		rc = -EACCES;
	} else {
		if (port == 22)
			(void)snprintf(name, sizeof(name), "%s", host);
		else
			(void)snprintf(name, sizeof(name), "[%s]:%d", host, port);
		rc = libssh2_knownhost_addc(kh, name, NULL, key, klen, NULL, 0, mask, NULL);
		if (rc == 0)
			rc = libssh2_knownhost_writefile(kh, known_hosts,
							 LIBSSH2_KNOWNHOST_FILE_OPENSSH);
		if (rc) {
			(void)snprintf(msg, len, "host key of '%s': cannot record it in '%s'", host,
				       known_hosts);
			rc = -EIO;
		} else {
			dp_log(DP_LOG_WARN, "ssh",
			       "added the host key of '%s' to '%s' (accept-new)", host,
			       known_hosts);
		}
	}
	libssh2_knownhost_free(kh);
	return rc;
}

static int check_hostkey(struct dp_ssh_fanout *f, struct host *h)
{
	char msg[200];

	if (dp_ssh_verify_hostkey(h->s, h->job->host, f->o.port, f->known_hosts,
				  f->o.hostkey_policy, msg, sizeof(msg)))
		return fail(h, "%s", msg);
	return 0;
}

/* 1 = authenticated, 0 = EAGAIN, -1 = failed (job marked). */
static int do_auth(struct dp_ssh_fanout *f, struct host *h)
{
	int rc;

	if (h->auth_step == 0) {
		h->auth_step = 2;
		if (f->o.use_agent && getenv("SSH_AUTH_SOCK")) {
			h->agent = libssh2_agent_init(h->s);
			if (h->agent && libssh2_agent_connect(h->agent) == 0 &&
			    libssh2_agent_list_identities(h->agent) == 0) {
				h->auth_step = 1;
				h->ident = NULL;
				if (libssh2_agent_get_identity(h->agent, &h->ident, NULL) != 0)
					h->auth_step = 2;
			}
		}
	}
	while (h->auth_step == 1) {
		rc = libssh2_agent_userauth(h->agent, f->user, h->ident);
		if (rc == LIBSSH2_ERROR_EAGAIN)
			return 0;
		if (rc == 0)
			return 1;
		if (libssh2_agent_get_identity(h->agent, &h->ident, h->ident) != 0)
			h->auth_step = 2;
	}
	while (h->key_idx < f->nkeys) {
		rc = libssh2_userauth_publickey_fromfile_ex(
			h->s, f->user, (unsigned)strlen(f->user), NULL, f->keys[h->key_idx], NULL);
		if (rc == LIBSSH2_ERROR_EAGAIN)
			return 0;
		if (rc == 0)
			return 1;
		h->key_idx++;
	}
	return fail(h, "authentication failed for user '%s' (tried %s%s%s)", f->user,
		    h->agent ? "the agent, " : "", f->nkeys ? "identity " : "no identity file",
		    f->nkeys ? f->keys[0] : "");
}

static int pump_running(struct dp_ssh_fanout *f, struct host *h)
{
	char buf[16384];
	ssize_t n;

	/* stdin first: the worker waits for its token */
	while (h->job->stdin_data && h->stdin_off < h->job->stdin_len) {
		n = libssh2_channel_write(h->ch, h->job->stdin_data + h->stdin_off,
					  h->job->stdin_len - h->stdin_off);
		if (n == LIBSSH2_ERROR_EAGAIN)
			break;
		if (n < 0)
			return fail(h, "writing stdin: %s", ssh_errmsg(h));
		h->stdin_off += (size_t)n;
	}
	if (h->stdin_eof && !h->eof_sent &&
	    (!h->job->stdin_data || h->stdin_off >= h->job->stdin_len)) {
		int rc = libssh2_channel_send_eof(h->ch);

		/* on an error other than EAGAIN the remote side is already gone */
		if (rc != LIBSSH2_ERROR_EAGAIN)
			h->eof_sent = 1;
	}
	for (int s = 0; s < 2; s++) {
		for (;;) {
			n = libssh2_channel_read_ex(h->ch, s, buf, sizeof(buf));
			if (n == LIBSSH2_ERROR_EAGAIN || n == 0)
				break;
			if (n < 0)
				return fail(h, "reading output: %s", ssh_errmsg(h));
			if (dp_buf_add(&h->line[s], buf, (size_t)n) == -E2BIG) {
				emit_lines(f, h, s, 1); /* over-long line: cut */
				(void)dp_buf_add(&h->line[s], buf, (size_t)n);
			}
			emit_lines(f, h, s, 0);
		}
	}
	if (!libssh2_channel_eof(h->ch))
		return 0;
	if (h->closing == 0) {
		int rc = libssh2_channel_close(h->ch);

		if (rc == LIBSSH2_ERROR_EAGAIN)
			return 0;
		h->closing = 1;
	}
	if (h->closing == 1) {
		int rc = libssh2_channel_wait_closed(h->ch);

		if (rc == LIBSSH2_ERROR_EAGAIN)
			return 0;
		h->closing = 2;
	}
	emit_lines(f, h, 0, 1);
	emit_lines(f, h, 1, 1);
	{
		char *sig = NULL;
		size_t siglen = 0;

		h->job->exit_status = libssh2_channel_get_exit_status(h->ch);
		if (libssh2_channel_get_exit_signal(h->ch, &sig, &siglen, NULL, NULL, NULL, NULL) ==
			    0 &&
		    sig) {
			int num = 0;

			for (int i = 1; i < NSIG; i++) {
				const char *nm = sigabbrev_np(i);

				if (nm && strcmp(nm, sig) == 0)
					num = i;
			}
			h->job->exit_status = 128 + (num ? num : SIGKILL);
			libssh2_free(h->s, sig);
		}
	}
	h->job->state = DP_SSH_DONE;
	teardown(h);
	return 0;
}

static int advance_once(struct dp_ssh_fanout *f, struct host *h);

/* Advance @h until it must wait.  Returns 0; failures are recorded in the job. */
static int advance(struct dp_ssh_fanout *f, struct host *h)
{
	enum dp_ssh_state before = h->job->state;
	int rc = advance_once(f, h);

	if (h->job->state != before)
		dp_log(DP_LOG_DEBUG, "ssh", "%s: %s -> %s", h->job->host, state_name(before),
		       state_name(h->job->state));
	return rc;
}

static int advance_once(struct dp_ssh_fanout *f, struct host *h)
{
	int rc;

	for (;;) {
		struct dp_ssh_job *j = h->job;

		if (j->state < DP_SSH_RUNNING && j->state > DP_SSH_QUEUED && now_ms() > h->deadline)
			return fail(h, "timed out after %d ms in %s", f->o.connect_timeout_ms,
				    state_name(j->state));
		switch (j->state) {
		case DP_SSH_CONNECTING: {
			struct pollfd p = { .fd = h->sock, .events = POLLOUT };
			int soerr = 0;
			socklen_t sl = sizeof(soerr);

			if (poll(&p, 1, 0) <= 0)
				return 0;
			if (getsockopt(h->sock, SOL_SOCKET, SO_ERROR, &soerr, &sl) || soerr)
				return fail(h, "connect to port %d: %s", f->o.port,
					    strerror(soerr ? soerr : errno));
			h->s = libssh2_session_init();
			if (!h->s)
				return fail(h, "out of memory");
			libssh2_session_set_blocking(h->s, 0);
			j->state = DP_SSH_HANDSHAKE;
			break;
		}
		case DP_SSH_HANDSHAKE:
			rc = libssh2_session_handshake(h->s, h->sock);
			if (rc == LIBSSH2_ERROR_EAGAIN)
				return 0;
			if (rc)
				return fail(h, "ssh handshake: %s", ssh_errmsg(h));
			if (check_hostkey(f, h))
				return 0;
			j->state = DP_SSH_AUTH;
			break;
		case DP_SSH_AUTH:
			rc = do_auth(f, h);
			if (rc <= 0)
				return 0;
			j->state = DP_SSH_EXEC;
			break;
		case DP_SSH_EXEC:
			if (!h->ch) {
				h->ch = libssh2_channel_open_session(h->s);
				if (!h->ch) {
					if (libssh2_session_last_errno(h->s) ==
					    LIBSSH2_ERROR_EAGAIN)
						return 0;
					return fail(h, "cannot open a channel: %s", ssh_errmsg(h));
				}
			}
			rc = libssh2_channel_exec(h->ch, j->command);
			if (rc == LIBSSH2_ERROR_EAGAIN)
				return 0;
			if (rc)
				return fail(h, "cannot run the command: %s", ssh_errmsg(h));
			j->state = DP_SSH_RUNNING;
			break;
		case DP_SSH_RUNNING:
			return pump_running(f, h);
		default:
			return 0;
		}
	}
}

static int in_handshake(const struct host *h)
{
	return h->job->state >= DP_SSH_CONNECTING && h->job->state <= DP_SSH_EXEC;
}

static int find_keys(struct dp_ssh_fanout *f, struct dp_err *err)
{
	static const char *const defaults[] = { "id_ed25519", "id_ecdsa", "id_rsa" };
	const char *home = getenv("HOME");
	char path[4096];

	if (f->o.identity) {
		f->keys[f->nkeys] = strdup(f->o.identity);
		if (!f->keys[f->nkeys])
			return dp_err_set(err, ENOMEM, "ssh: out of memory");
		f->nkeys++;
		return 0;
	}
	for (size_t i = 0; home && i < sizeof(defaults) / sizeof(defaults[0]); i++) {
		(void)snprintf(path, sizeof(path), "%s/.ssh/%s", home, defaults[i]);
		if (access(path, R_OK) != 0)
			continue;
		f->keys[f->nkeys] = strdup(path);
		if (!f->keys[f->nkeys])
			return dp_err_set(err, ENOMEM, "ssh: out of memory");
		f->nkeys++;
	}
	return 0;
}

int dp_ssh_fanout_new(const struct dp_ssh_opts *opts, struct dp_ssh_job *jobs, int njobs,
		      dp_ssh_line_cb cb, void *cb_arg, struct dp_ssh_fanout **out,
		      struct dp_err *err)
{
	struct dp_ssh_fanout *f;
	const char *user, *home = getenv("HOME");
	char kh[4096];
	int rc;

	if (njobs < 0 || (njobs > 0 && !jobs))
		return dp_err_set(err, EINVAL, "ssh: bad job list");
	(void)pthread_once(&ssh_once, ssh_global_init);
	if (ssh_init_rc)
		return dp_err_set(err, EIO, "ssh: libssh2_init failed (%d)", ssh_init_rc);
	f = calloc(1, sizeof(*f));
	if (!f)
		return dp_err_set(err, ENOMEM, "ssh: out of memory");
	f->o = *opts;
	if (f->o.port <= 0)
		f->o.port = 22;
	if (f->o.window <= 0)
		f->o.window = 32;
	if (f->o.connect_timeout_ms <= 0)
		f->o.connect_timeout_ms = 20000;
	user = opts->user ? opts->user : getenv("USER");
	if (!user)
		user = "root";
	(void)snprintf(kh, sizeof(kh), "%s/.ssh/known_hosts", home ? home : "");
	f->user = strdup(user);
	f->known_hosts = strdup(opts->known_hosts ? opts->known_hosts : kh);
	f->h = calloc((size_t)njobs + 1, sizeof(*f->h));
	f->pfd = calloc((size_t)njobs + 1, sizeof(*f->pfd));
	f->pfd_host = calloc((size_t)njobs + 1, sizeof(*f->pfd_host));
	if (!f->user || !f->known_hosts || !f->h || !f->pfd || !f->pfd_host) {
		rc = dp_err_set(err, ENOMEM, "ssh: out of memory");
		goto err_free;
	}
	rc = find_keys(f, err);
	if (rc)
		goto err_free;
	f->n = njobs;
	f->cb = cb;
	f->cb_arg = cb_arg;
	for (int i = 0; i < njobs; i++) {
		f->h[i].job = &jobs[i];
		f->h[i].idx = i;
		f->h[i].sock = -1;
		dp_buf_init(&f->h[i].line[0], LINE_CAP);
		dp_buf_init(&f->h[i].line[1], LINE_CAP);
		jobs[i].state = DP_SSH_QUEUED;
		jobs[i].exit_status = -1;
		jobs[i].error[0] = '\0';
	}
	*out = f;
	return 0;
err_free:
	dp_ssh_fanout_free(f);
	return rc;
}

int dp_ssh_fanout_step(struct dp_ssh_fanout *f, int timeout_ms, struct dp_err *err)
{
	int busy = 0, np = 0, again = 0;

	for (int i = 0; i < f->n; i++)
		busy += in_handshake(&f->h[i]);
	while (f->next < f->n && busy < f->o.window) {
		struct host *h = &f->h[f->next++];

		if (start_connect(f, h) == 0)
			busy++;
	}
	for (int i = 0; i < f->n; i++) {
		struct host *h = &f->h[i];
		short ev = 0;

		if (h->job->state <= DP_SSH_QUEUED || h->job->state >= DP_SSH_DONE)
			continue;
		(void)advance(f, h);
		if (h->job->state >= DP_SSH_DONE) {
			again = 1; /* a window slot may have opened */
			continue;
		}
		if (h->job->state == DP_SSH_CONNECTING) {
			ev = POLLOUT;
		} else {
			int dirs = libssh2_session_block_directions(h->s);

			if (dirs & LIBSSH2_SESSION_BLOCK_INBOUND)
				ev |= POLLIN;
			if (dirs & LIBSSH2_SESSION_BLOCK_OUTBOUND)
				ev |= POLLOUT;
			if (h->job->state == DP_SSH_RUNNING)
				ev |= POLLIN;
			if (!ev)
				again = 1;
		}
		f->pfd[np].fd = h->sock;
		f->pfd[np].events = ev;
		f->pfd[np].revents = 0;
		f->pfd_host[np] = i;
		np++;
	}
	if (np == 0 && !again)
		return 0;
	if (again)
		timeout_ms = 0;
	if (timeout_ms > 200)
		timeout_ms = 200; /* deadlines are checked between polls */
	if (poll(f->pfd, (nfds_t)np, timeout_ms) < 0 && errno != EINTR)
		return dp_err_set(err, errno, "ssh: poll: %s", strerror(errno));
	for (int k = 0; k < np; k++)
		(void)advance(f, &f->h[f->pfd_host[k]]);
	return 0;
}

int dp_ssh_fanout_done(const struct dp_ssh_fanout *f)
{
	for (int i = 0; i < f->n; i++)
		if (f->h[i].job->state < DP_SSH_DONE)
			return 0;
	return 1;
}

void dp_ssh_fanout_close_stdin(struct dp_ssh_fanout *f)
{
	for (int i = 0; i < f->n; i++)
		f->h[i].stdin_eof = 1;
}

void dp_ssh_fanout_free(struct dp_ssh_fanout *f)
{
	if (!f)
		return;
	for (int i = 0; f->h && i < f->n; i++) {
		struct host *h = &f->h[i];

		if (!h->job)
			continue;
		if (h->job->state < DP_SSH_DONE) {
			(void)snprintf(h->job->error, sizeof(h->job->error),
				       "%s: disconnected (%s)", h->job->host,
				       state_name(h->job->state));
			h->job->state = DP_SSH_FAILED;
		}
		teardown(h);
		dp_buf_release(&h->line[0]);
		dp_buf_release(&h->line[1]);
	}
	for (int i = 0; i < f->nkeys; i++)
		free(f->keys[i]);
	free(f->h);
	free(f->pfd);
	free(f->pfd_host);
	free(f->user);
	free(f->known_hosts);
	free(f);
}

int dp_ssh_run(const struct dp_ssh_opts *opts, struct dp_ssh_job *jobs, int njobs,
	       dp_ssh_line_cb cb, void *cb_arg, int timeout_ms, struct dp_err *err)
{
	struct dp_ssh_fanout *f = NULL;
	long long end = now_ms() + timeout_ms;
	int rc;

	rc = dp_ssh_fanout_new(opts, jobs, njobs, cb, cb_arg, &f, err);
	if (rc || !f)
		return rc ? rc : -EIO;
	while (!dp_ssh_fanout_done(f)) {
		if (timeout_ms > 0 && now_ms() > end) {
			rc = dp_err_set(err, ETIMEDOUT, "ssh: not all hosts finished within %d ms",
					timeout_ms);
			break;
		}
		rc = dp_ssh_fanout_step(f, 100, err);
		if (rc)
			break;
	}
	dp_ssh_fanout_free(f);
	return rc;
}
