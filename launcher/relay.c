/* launcher/relay.c - one inner node of the ssh relay tree (`dpworker --relay`).
 *
 * The parent (the controller's ssh backend, or a relay above) runs this over
 * ssh and writes one JSON line to its stdin: the ssh settings, the job
 * token, the identity and known_hosts text, and the ranks of the subtree.
 * None of it is on a command line, and the key never touches the disk (the
 * known_hosts text goes to a private temporary file, removed at the end,
 * since libssh2 reads known hosts from files).  The ranks are started with
 * the same ssh backend and the same width, so the subtree fans out again
 * below us.  Events go back up stdout as lines (see ctl_launch.h); TERM/KILL
 * lines from above are passed down; end of stdin stops the whole subtree.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/dp_buf.h"
#include "common/dp_util.h"
#include "launcher/ctl_launch.h"
#include "common/dp_banned.h"

#define MAX_INPUT   ((size_t)1 << 30)
#define MAX_FDS	    4096
#define RELAY_CHUNK 65536

struct relay {
	FILE *out;
	int nfail; /* F lines sent */
};

static double now_s(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void ev_output(void *arg, int rank, int stream, const char *line)
{
	struct relay *r = arg;

	(void)fprintf(r->out, "O %d %d %s\n", rank, stream, line);
}

static void ev_exited(void *arg, int rank, int status)
{
	struct relay *r = arg;

	(void)fprintf(r->out, "X %d %d\n", rank, status);
}

static void ev_spawn_failed(void *arg, int rank, int e, const char *msg)
{
	struct relay *r = arg;

	r->nfail++;
	(void)fprintf(r->out, "F %d %d %s\n", rank, e, msg);
}

static const struct dp_launch_events events = {
	.output = ev_output,
	.exited = ev_exited,
	.spawn_failed = ev_spawn_failed,
};

/* The first line of @fd, read in chunks: a first-level relay of a big
 * cluster gets megabytes (every rank's spec and the whole known_hosts), and
 * a read() per byte cost seconds there.  Whatever follows the newline in
 * the last chunk (TERM/KILL lines sent early) goes to @rest, where
 * read_commands() finds it.  NULL (or "") at end of input before any byte;
 * NULL past MAX_INPUT or on ENOMEM.  Caller frees. */
static char *read_header(int fd, struct dp_buf *rest)
{
	struct dp_buf b;
	char chunk[RELAY_CHUNK];
	size_t scanned = 0;

	dp_buf_init(&b, MAX_INPUT);
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));
		char *nl;

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (dp_buf_add(&b, chunk, (size_t)n))
			goto fail;
		explicit_bzero(chunk, (size_t)n); /* it may hold the key */
		nl = memchr(b.data + scanned, '\n', b.len - scanned);
		if (nl) {
			size_t after = b.len - (size_t)(nl + 1 - b.data);

			if (after && dp_buf_add(rest, nl + 1, after))
				goto fail;
			b.len -= after + 1;
			b.data[b.len] = '\0';
			break;
		}
		scanned = b.len;
	}
	return dp_buf_detach(&b, NULL);
fail:
	if (b.data)
		explicit_bzero(b.data, b.len);
	dp_buf_release(&b);
	return NULL;
}

/* A NULL-terminated copy of a JSON array of strings (the strings stay in
 * the JSON); NULL on ENOMEM or a non-string. */
static const char **strv(json_t *a, const char *add)
{
	size_t n = json_array_size(a);
	const char **v = calloc(n + 2, sizeof(*v));

	for (size_t i = 0; v && i < n; i++) {
		v[i] = json_string_value(json_array_get(a, i));
		if (!v[i]) {
			free((void *)v);
			return NULL;
		}
	}
	if (v && add)
		v[n] = add;
	return v;
}

/* Handle the input lines that follow the header; returns 1 at end of input. */
static int read_commands(int fd, struct dp_buf *pend, struct dp_launch_session *s)
{
	char chunk[4096];
	ssize_t n;

	while ((n = read(fd, chunk, sizeof(chunk))) > 0)
		if (dp_buf_add(pend, chunk, (size_t)n))
			return 1; /* a flood of commands: treat as a broken parent */
	for (char *nl; pend->len && (nl = memchr(pend->data, '\n', pend->len)) != NULL;) {
		char *end;
		long rank;

		*nl = '\0';
		if (strncmp(pend->data, "TERM ", 5) == 0 || strncmp(pend->data, "KILL ", 5) == 0) {
			rank = strtol(pend->data + 5, &end, 10);
			if (end != pend->data + 5)
				(void)s->ops->signal(s, (int)rank,
						     pend->data[0] == 'K' ? SIGKILL : SIGTERM);
		}
		pend->len -= (size_t)(nl + 1 - pend->data);
		memmove(pend->data, nl + 1, pend->len);
	}
	return n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR);
}

int dp_launch_relay_main(int in_fd, FILE *out, FILE *log)
{
	struct relay rl = { .out = out };
	struct dp_launch_opts o = { 0 };
	struct dp_launch_session *s = NULL;
	struct dp_launch_rank *ranks = NULL;
	const char ***extra = NULL;
	char *line, khpath[] = "/tmp/dprelay-kh-XXXXXX", *tokenv = NULL;
	json_t *root = NULL, *jr;
	json_error_t je;
	struct dp_err err = { 0 };
	struct dp_buf pend;
	struct pollfd *fds = NULL;
	size_t n = 0, need;
	long have;
	int code = 70, khfd = -1, stopping = 0, eof = 0;
	double stop_at = 0, grace;

	dp_buf_init(&pend, (size_t)1 << 20);
	line = read_header(in_fd, &pend);
	root = line ? json_loads(line, 0, &je) : NULL;
	if (line)
		explicit_bzero(line, strlen(line)); /* it held the key and the token */
	free(line);
	jr = json_object_get(root, "ranks");
	if (!root || !json_is_array(jr) || !json_string_value(json_object_get(root, "token"))) {
		(void)fprintf(log, "dpworker: relay: bad input from the parent\n");
		code = 65;
		goto out;
	}
	n = json_array_size(jr);
	o.ssh_port = (int)json_integer_value(json_object_get(root, "port"));
	o.ssh_user = json_string_value(json_object_get(root, "user"));
	o.accept_new = json_is_true(json_object_get(root, "accept_new"));
	o.grace_s = json_number_value(json_object_get(root, "grace_s"));
	o.max_handshakes = (int)json_integer_value(json_object_get(root, "max_handshakes"));
	o.relay_width = (int)json_integer_value(json_object_get(root, "width"));
	o.ssh_identity_pem = json_string_value(json_object_get(root, "identity"));
	grace = o.grace_s > 0 ? o.grace_s : 5;
	if (json_string_value(json_object_get(root, "known_hosts"))) {
		const char *kh = json_string_value(json_object_get(root, "known_hosts"));
		size_t len = strlen(kh);

		khfd = mkstemp(khpath); /* mode 0600 */
		if (khfd < 0 || write(khfd, kh, len) != (ssize_t)len) {
			(void)fprintf(log, "dpworker: relay: cannot write '%s': %s\n", khpath,
				      strerror(errno));
			goto out;
		}
		o.known_hosts = khpath;
	} else {
		o.known_hosts = "/dev/null";
	}
	if (asprintf(&tokenv, "DP_JOB_TOKEN=%s",
		     json_string_value(json_object_get(root, "token"))) < 0) {
		tokenv = NULL;
		goto out;
	}
	ranks = calloc(n ? n : 1, sizeof(*ranks));
	extra = calloc(n ? n : 1, sizeof(*extra));
	fds = calloc(MAX_FDS + 1, sizeof(*fds));
	if (!ranks || !extra || !fds)
		goto out;
	/* an ssh socket per host below us (up to MAX_FDS): past the usual 1024 */
	need = 64 + (n < MAX_FDS ? n : MAX_FDS);
	have = dp_nofile_raise(need);
	if (have < 0 || (size_t)have < need)
		(void)fprintf(log, "dpworker: relay: cannot raise the open-file limit to %zu\n",
			      need);
	if (dp_launch_ssh.open(&o, &s, &err)) {
		(void)fprintf(log, "dpworker: relay: %s\n", err.msg);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		json_t *x = json_array_get(jr, i);

		ranks[i].rank = (int)json_integer_value(json_object_get(x, "rank"));
		ranks[i].host = json_string_value(json_object_get(x, "host"));
		ranks[i].local_index = (int)json_integer_value(json_object_get(x, "local"));
		ranks[i].argv = strv(json_object_get(x, "argv"), NULL);
		ranks[i].env = strv(json_object_get(x, "env"), NULL);
		extra[i] = strv(json_object_get(x, "extra"), tokenv);
		if (!ranks[i].host || !ranks[i].argv || !ranks[i].argv[0] || !ranks[i].env ||
		    !extra[i]) {
			(void)fprintf(log, "dpworker: relay: bad rank %zu from the parent\n", i);
			code = 65;
			goto out;
		}
		if (s->ops->spawn(s, &ranks[i], extra[i], &err))
			ev_spawn_failed(&rl, ranks[i].rank, err.code, err.msg);
	}
	(void)fcntl(in_fd, F_SETFL, fcntl(in_fd, F_GETFL) | O_NONBLOCK);
	for (;;) {
		int k = s->ops->pollfds(s, fds, MAX_FDS), nready;

		if (!eof)
			fds[k++] = (struct pollfd){ .fd = in_fd, .events = POLLIN };
		nready = poll(fds, (nfds_t)k, 50);
		(void)s->ops->dispatch(s, fds, nready > 0 ? k : 0, &events, &rl);
		(void)fflush(out);
		if (!eof && read_commands(in_fd, &pend, s)) {
			/* the parent is gone or closed our input: stop the subtree */
			eof = 1;
			if (!stopping) {
				stopping = 1;
				stop_at = now_s();
				(void)s->ops->signal(s, -1, SIGTERM);
			}
		}
		if (s->ops->running(s) == 0)
			break;
		if (stopping == 1 && now_s() - stop_at > grace) {
			stopping = 2;
			(void)s->ops->signal(s, -1, SIGKILL);
		} else if (stopping == 2 && now_s() - stop_at > grace + 5) {
			break; /* a host that never answers: give up, close() cleans up */
		}
	}
	code = 0;
out:
	if (s)
		s->ops->close(s); /* EOF on every channel below: no orphan survives */
	(void)fflush(out);
	for (size_t i = 0; ranks && i < n; i++) {
		free((void *)ranks[i].argv);
		free((void *)ranks[i].env);
		if (extra)
			free((void *)extra[i]);
	}
	free(ranks);
	free((void *)extra);
	free(fds);
	if (tokenv) {
		explicit_bzero(tokenv, strlen(tokenv));
		free(tokenv);
	}
	if (khfd >= 0) {
		(void)close(khfd);
		(void)unlink(khpath);
	}
	dp_buf_release(&pend);
	json_decref(root);
	return code;
}
