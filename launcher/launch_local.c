/* launcher/launch_local.c - the `local` launch backend: fork/exec on this
 * machine.
 *
 * Each rank gets its own process group (so a signal reaches everything it
 * started), PR_SET_PDEATHSIG(SIGKILL) (so a dead controller leaves no
 * worker), stdin from /dev/null and its stdout/stderr on pipes read here line
 * by line.  open() makes the calling process a child subreaper, so processes
 * a rank left behind are re-parented to us and can be reaped by group in
 * close() -- no orphan and no zombie survives a run.  Exit errors of execve()
 * come back over a close-on-exec pipe, so a missing binary is reported at
 * spawn time rather than as a mysterious exit 127.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/dp_log.h"
#include "common/dp_util.h"
#include "launcher/ctl_launch.h"
#include "common/dp_banned.h"

extern char **environ;

#define LINE_MAX_LOCAL 4096

struct stream {
	int fd; /* -1 once closed */
	size_t len;
	char buf[LINE_MAX_LOCAL];
};

struct proc {
	int rank;
	pid_t pid; /* also the process group id */
	int pidfd; /* -1 if pidfd_open is unavailable */
	int reaped;
	struct stream io[2]; /* stdout, stderr */
};

struct local_session {
	struct dp_launch_session base; /* first */
	struct dp_launch_opts opts;
	struct proc *procs;
	size_t n, cap;
};

static int local_probe(int *priority)
{
	*priority = 10; /* always works; ssh/slurm win when their probe says so */
	return 0;
}

static int local_open(const struct dp_launch_opts *opts, struct dp_launch_session **out,
		      struct dp_err *err)
{
	struct local_session *ls = calloc(1, sizeof(*ls));

	if (!ls)
		return dp_err_set(err, ENOMEM, "launch: out of memory");
	ls->base.ops = &dp_launch_local;
	if (opts)
		ls->opts = *opts;
	/* orphans of our ranks come back to us, to be killed and reaped */
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0)
		dp_log(DP_LOG_WARN, "launch", "cannot become a child subreaper: %s",
		       strerror(errno));
	*out = &ls->base;
	return 0;
}

static int name_len(const char *kv)
{
	const char *eq = strchr(kv, '=');

	return eq ? (int)(eq - kv) : (int)strlen(kv);
}

/* Does @kv's name appear in @list (NULL-terminated, may be NULL)? */
static int overridden(const char *kv, const char *const *list)
{
	int n = name_len(kv);

	for (; list && *list; list++)
		if (name_len(*list) == n && strncmp(*list, kv, (size_t)n) == 0)
			return 1;
	return 0;
}

/* environ + @a + @b, later lists winning.  Caller frees the array only. */
static char **build_env(const char *const *a, const char *const *b)
{
	size_t n = 0, k = 0;
	char **env;

	for (char **e = environ; e && *e; e++)
		n++;
	for (const char *const *e = a; e && *e; e++)
		n++;
	for (const char *const *e = b; e && *e; e++)
		n++;
	env = calloc(n + 1, sizeof(*env));
	if (!env)
		return NULL;
	for (char **e = environ; e && *e; e++)
		if (!overridden(*e, a) && !overridden(*e, b))
			env[k++] = *e;
	for (const char *const *e = a; e && *e; e++)
		if (!overridden(*e, b))
			env[k++] = (char *)*e;
	for (const char *const *e = b; e && *e; e++)
		env[k++] = (char *)*e;
	env[k] = NULL;
	return env;
}

static void set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl >= 0)
		(void)fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* Only async-signal-safe calls between fork() and exec. */
static void __attribute__((noreturn)) child(const struct dp_launch_rank *r, char **envp, int outw,
					    int errw, int failw, int devnull, pid_t parent)
{
	sigset_t all;
	int e;

	(void)setpgid(0, 0);
	(void)prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	if (getppid() != parent) /* the controller died before prctl */
		_exit(127);
	(void)signal(SIGPIPE, SIG_DFL); /* dpctl ignores it; exec would keep that */
	(void)sigemptyset(&all);
	(void)sigprocmask(SIG_SETMASK, &all, NULL);
	if (dup2(devnull, 0) < 0 || dup2(outw, 1) < 0 || dup2(errw, 2) < 0)
		goto fail;
	if (strchr(r->argv[0], '/'))
		(void)execve(r->argv[0], (char *const *)r->argv, envp);
	else
		(void)execvpe(r->argv[0], (char *const *)r->argv, envp);
fail:
	e = errno;
	(void)!write(failw, &e, sizeof(e));
	_exit(127);
}

static int local_spawn(struct dp_launch_session *s, const struct dp_launch_rank *r,
		       const char *const *env_extra, struct dp_err *err)
{
	struct local_session *ls = dp_container_of(s, struct local_session, base);
	int outp[2] = { -1, -1 }, errp[2] = { -1, -1 }, failp[2] = { -1, -1 }, devnull = -1;
	pid_t parent = getpid(), pid;
	struct proc *p;
	char **envp = NULL;
	int rc, e = 0;
	ssize_t got;

	if (ls->n == ls->cap) {
		size_t ncap = ls->cap ? 2 * ls->cap : 16;
		struct proc *np = realloc(ls->procs, ncap * sizeof(*np));

		if (!np)
			return dp_err_set(err, ENOMEM, "launch: out of memory");
		ls->procs = np;
		ls->cap = ncap;
	}
	envp = build_env(r->env, env_extra);
	if (!envp)
		return dp_err_set(err, ENOMEM, "launch: out of memory");
	if (pipe2(outp, O_CLOEXEC) || pipe2(errp, O_CLOEXEC) || pipe2(failp, O_CLOEXEC)) {
		e = errno;
		rc = dp_err_set(err, e, "launch: cannot create pipes for rank %d: %s", r->rank,
				strerror(e));
		goto out;
	}
	devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (devnull < 0) {
		e = errno;
		rc = dp_err_set(err, e, "launch: cannot open /dev/null: %s", strerror(e));
		goto out;
	}
	pid = fork();
	if (pid < 0) {
		e = errno;
		rc = dp_err_set(err, e, "launch: cannot fork rank %d: %s", r->rank, strerror(e));
		goto out;
	}
	if (pid == 0)
		child(r, envp, outp[1], errp[1], failp[1], devnull, parent);
	(void)setpgid(pid, pid); /* also here: no window where a signal misses it */
	(void)close(failp[1]);
	failp[1] = -1;
	do
		got = read(failp[0], &e, sizeof(e));
	while (got < 0 && errno == EINTR);
	if (got == (ssize_t)sizeof(e)) {
		(void)waitpid(pid, NULL, 0);
		rc = dp_err_set(err, e, "launch: cannot execute '%s' for rank %d: %s", r->argv[0],
				r->rank, strerror(e));
		goto out;
	}
	p = &ls->procs[ls->n++];
	memset(p, 0, sizeof(*p));
	p->rank = r->rank;
	p->pid = pid;
	p->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	p->io[0].fd = outp[0];
	p->io[1].fd = errp[0];
	outp[0] = errp[0] = -1;
	set_nonblock(p->io[0].fd);
	set_nonblock(p->io[1].fd);
	dp_log(DP_LOG_DEBUG, "launch", "rank %d started as pid %d", r->rank, (int)pid);
	rc = 0;
out:
	for (int i = 0; i < 2; i++) {
		if (outp[i] >= 0)
			(void)close(outp[i]);
		if (errp[i] >= 0)
			(void)close(errp[i]);
		if (failp[i] >= 0)
			(void)close(failp[i]);
	}
	if (devnull >= 0)
		(void)close(devnull);
	free(envp);
	return rc;
}

static int local_pollfds(struct dp_launch_session *s, struct pollfd *fds, int max)
{
	struct local_session *ls = dp_container_of(s, struct local_session, base);
	int k = 0;

	for (size_t i = 0; i < ls->n && k < max; i++) {
		struct proc *p = &ls->procs[i];

		for (int j = 0; j < 2 && k < max; j++)
			if (p->io[j].fd >= 0)
				fds[k++] = (struct pollfd){ .fd = p->io[j].fd, .events = POLLIN };
		if (!p->reaped && p->pidfd >= 0 && k < max)
			fds[k++] = (struct pollfd){ .fd = p->pidfd, .events = POLLIN };
	}
	return k;
}

static void emit(struct proc *p, int j, const struct dp_launch_events *ev, void *arg)
{
	struct stream *st = &p->io[j];

	st->buf[st->len] = '\0';
	if (ev && ev->output)
		ev->output(arg, p->rank, j + 1, st->buf);
	st->len = 0;
}

/* Read what is there; split into lines (long ones are cut at the buffer size). */
static void drain(struct proc *p, int j, const struct dp_launch_events *ev, void *arg)
{
	struct stream *st = &p->io[j];
	char chunk[4096];

	while (st->fd >= 0) {
		ssize_t n = read(st->fd, chunk, sizeof(chunk));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0) {
			if (st->len)
				emit(p, j, ev, arg);
			(void)close(st->fd);
			st->fd = -1;
			return;
		}
		for (ssize_t i = 0; i < n; i++) {
			if (chunk[i] == '\n') {
				emit(p, j, ev, arg);
				continue;
			}
			st->buf[st->len++] = chunk[i];
			if (st->len == sizeof(st->buf) - 1)
				emit(p, j, ev, arg);
		}
	}
}

static int status_code(int st)
{
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	if (WIFSIGNALED(st))
		return 128 + WTERMSIG(st);
	return 255;
}

static int local_dispatch(struct dp_launch_session *s, const struct pollfd *fds, int n,
			  const struct dp_launch_events *ev, void *arg)
{
	struct local_session *ls = dp_container_of(s, struct local_session, base);

	(void)fds;
	(void)n;
	/* Everything is non-blocking, so simply look at every rank: output first,
	 * so a rank's last lines are in before its exit is reported. */
	for (size_t i = 0; i < ls->n; i++) {
		struct proc *p = &ls->procs[i];
		int st;
		pid_t w;

		drain(p, 0, ev, arg);
		drain(p, 1, ev, arg);
		if (p->reaped)
			continue;
		do
			w = waitpid(p->pid, &st, WNOHANG);
		while (w < 0 && errno == EINTR);
		if (w == 0)
			continue;
		p->reaped = 1;
		if (p->pidfd >= 0) {
			(void)close(p->pidfd);
			p->pidfd = -1;
		}
		if (w < 0) /* someone else reaped it: status unknown */
			st = 255 << 8;
		drain(p, 0, ev, arg);
		drain(p, 1, ev, arg);
		if (ev && ev->exited)
			ev->exited(arg, p->rank, status_code(st));
	}
	return 0;
}

/* Is anything left in process group @pgid?  (Zombies count.) */
static int group_alive(pid_t pgid)
{
	return kill(-pgid, 0) == 0 || errno == EPERM;
}

static int local_signal(struct dp_launch_session *s, int rank, int sig)
{
	struct local_session *ls = dp_container_of(s, struct local_session, base);

	for (size_t i = 0; i < ls->n; i++) {
		struct proc *p = &ls->procs[i];

		if (rank >= 0 && p->rank != rank)
			continue;
		if (kill(-p->pid, sig) != 0 && errno != ESRCH)
			dp_log(DP_LOG_WARN, "launch", "cannot signal rank %d (pgid %d): %s",
			       p->rank, (int)p->pid, strerror(errno));
	}
	return 0;
}

static int local_running(struct dp_launch_session *s)
{
	struct local_session *ls = dp_container_of(s, struct local_session, base);
	int k = 0;

	for (size_t i = 0; i < ls->n; i++)
		k += !ls->procs[i].reaped;
	return k;
}

static void local_close(struct dp_launch_session *s)
{
	struct local_session *ls;
	struct timespec t0, now, nap = { 0, 2000000L };

	if (!s)
		return;
	ls = dp_container_of(s, struct local_session, base);
	(void)clock_gettime(CLOCK_MONOTONIC, &t0);
	/* SIGKILL every group and reap by group until each is empty (members
	 * re-parented to us as subreaper are reaped here too); bounded at 5 s. */
	for (;;) {
		int left = 0;

		for (size_t i = 0; i < ls->n; i++) {
			struct proc *p = &ls->procs[i];
			int st;

			if (!group_alive(p->pid))
				continue;
			(void)kill(-p->pid, SIGKILL);
			while (waitpid(-p->pid, &st, WNOHANG) > 0)
				;
			if (!p->reaped && waitpid(p->pid, &st, WNOHANG) != 0)
				p->reaped = 1;
			left += group_alive(p->pid);
		}
		(void)clock_gettime(CLOCK_MONOTONIC, &now);
		if (!left || now.tv_sec - t0.tv_sec > 5)
			break;
		(void)nanosleep(&nap, NULL);
	}
	for (size_t i = 0; i < ls->n; i++) {
		struct proc *p = &ls->procs[i];

		if (!group_alive(p->pid))
			continue;
		dp_log(DP_LOG_ERROR, "launch", "rank %d (pgid %d) could not be reaped", p->rank,
		       (int)p->pid);
	}
	for (size_t i = 0; i < ls->n; i++) {
		struct proc *p = &ls->procs[i];

		for (int j = 0; j < 2; j++)
			if (p->io[j].fd >= 0)
				(void)close(p->io[j].fd);
		if (p->pidfd >= 0)
			(void)close(p->pidfd);
	}
	free(ls->procs);
	free(ls);
}

const struct dp_launch_backend dp_launch_local = {
	.name = "local",
	.probe = local_probe,
	.open = local_open,
	.spawn = local_spawn,
	.pollfds = local_pollfds,
	.dispatch = local_dispatch,
	.signal = local_signal,
	.running = local_running,
	.close = local_close,
};
