/* launcher/launch_slurm.c - the `slurm` launch backend (srun inside an
 * allocation) and the Slurm helpers of launcher/dp_slurm.h.
 *
 * spawn() only collects ranks; when it has DP_WORLD_SIZE of them it starts
 * one srun for the whole attempt (Slurm places a step's tasks itself, and
 * one step per rank would cost a slurmctld round trip each).  Task i
 * (SLURM_PROCID) is the rank whose host is node i / G of the step and whose
 * local index is i % G (block distribution, G tasks per node): exactly the
 * plan's rank order.  The task command checks it landed on that node, so a
 * Slurm that places tasks differently fails loudly instead of mixing ranks.
 *
 * srun runs with --label, so each output line starts with "N: " and is
 * given to its rank; srun's own "srun: error: NODE: task N: Exited with
 * exit code C" lines give per-rank exit statuses (before srun itself exits,
 * so the root cause carries the failing rank's code); when srun exits, every
 * rank not reported yet gets srun's status.  --kill-on-bad-exit=1 makes
 * Slurm stop the step when one task fails.
 *
 * Teardown: SIGTERM to srun makes it cancel the step (srun's own
 * behaviour); SIGKILL kills srun's process group and `scancel`s the step
 * (its id comes from task 0 on stderr), so nothing is left on the nodes.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/dp_buf.h"
#include "common/dp_log.h"
#include "common/dp_util.h"
#include "launcher/ctl_launch.h"
#include "launcher/dp_slurm.h"
#include "common/dp_banned.h"

extern char **environ;

#define SLURM_LINE_MAX 4096
#define STEP_TAG       "dpctl-slurm-step "
#define TOKEN_NAME     "DP_JOB_TOKEN"

const char DP_SLURM_WRAPPER[] =
	"[ \"$SLURM_PROCID\" != 0 ] || echo \"" STEP_TAG "$SLURM_JOB_ID.$SLURM_STEP_ID\" >&2; "
	"t=$(printenv \"DP_SLURM_TASK_$SLURM_PROCID\") || "
	"{ echo \"dpctl: no task command for task $SLURM_PROCID\" >&2; exit 70; }; eval \"$t\"";

/* ---- quoting and command lines ---------------------------------------------- */

int dp_slurm_shell_quote(struct dp_buf *b, const char *s)
{
	int rc = dp_buf_adds(b, "'");

	for (const char *p = s; !rc && *p; p++)
		rc = *p == '\'' ? dp_buf_adds(b, "'\\''") : dp_buf_add(b, p, 1);
	return rc ? rc : dp_buf_adds(b, "'");
}

static int has_ctl(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return 1;
	return 0;
}

void dp_slurm_argv_free(char **argv)
{
	for (char **a = argv; a && *a; a++)
		free(*a);
	free(argv);
}

int dp_slurm_srun_argv(const struct dp_slurm_step *st, char ***out, struct dp_err *err)
{
	char **v;
	int n = 0, rc = 0;

	if (st->nodes < 1 || st->ntasks < 1 || st->ntasks_per_node < 1)
		return dp_err_set(err, EINVAL,
				  "slurm: nodes, tasks and tasks per node must be >= 1");
	{
		const char *vals[] = { st->nodelist, st->cpu_bind, st->gpu_bind, st->job_name,
				       st->srun };

		for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++)
			if (vals[i] && (has_ctl(vals[i]) || !vals[i][0]))
				return dp_err_set(err, EINVAL,
						  "slurm: empty value or control character in an "
						  "srun option");
	}
	v = calloc(20, sizeof(*v));
	if (!v)
		return dp_err_set(err, ENOMEM, "slurm: out of memory");
#define ADD(...)                                                                                   \
	do {                                                                                       \
		struct dp_buf b_;                                                                  \
		dp_buf_init(&b_, 1 << 20);                                                         \
		if (!rc)                                                                           \
			rc = dp_buf_addf(&b_, __VA_ARGS__);                                        \
		if (!rc)                                                                           \
			v[n++] = dp_buf_detach(&b_, NULL);                                         \
		dp_buf_release(&b_);                                                               \
	} while (0)
	ADD("%s", st->srun ? st->srun : "srun");
	ADD("--label");
	ADD("--kill-on-bad-exit=1");
	ADD("--nodes=%d", st->nodes);
	ADD("--ntasks=%d", st->ntasks);
	ADD("--ntasks-per-node=%d", st->ntasks_per_node);
	ADD("--distribution=block");
	if (st->nodelist)
		ADD("--nodelist=%s", st->nodelist);
	if (st->job_name)
		ADD("--job-name=%s", st->job_name);
	if (st->cpu_bind)
		ADD("--cpu-bind=%s", st->cpu_bind);
	if (st->gpus_per_task > 0)
		ADD("--gpus-per-task=%d", st->gpus_per_task);
	if (st->gpu_bind)
		ADD("--gpu-bind=%s", st->gpu_bind);
	ADD("/bin/sh");
	ADD("-c");
	ADD("%s", DP_SLURM_WRAPPER);
#undef ADD
	for (int i = 0; i < n && !rc; i++)
		if (!v[i])
			rc = -ENOMEM;
	if (rc) {
		dp_slurm_argv_free(v);
		return dp_err_set(err, -rc, "slurm: out of memory");
	}
	*out = v;
	return 0;
}

static int valid_env(const char *kv)
{
	const char *p = kv;

	if (!(isalpha((unsigned char)*p) || *p == '_'))
		return 0;
	while (isalnum((unsigned char)*p) || *p == '_')
		p++;
	return *p == '=';
}

int dp_slurm_task_cmd(const char *host, const char *const *env, const char *const *argv,
		      struct dp_buf *out, struct dp_err *err)
{
	int rc = 0;

	if (!argv || !argv[0])
		return dp_err_set(err, EINVAL, "slurm: a task without a program");
	for (const char *const *e = env; e && *e; e++)
		if (!valid_env(*e))
			return dp_err_set(err, EINVAL, "slurm: '%s' is not NAME=value", *e);
	if (host) {
		rc = dp_buf_adds(out, "[ \"$SLURMD_NODENAME\" = ");
		if (!rc)
			rc = dp_slurm_shell_quote(out, host);
		if (!rc)
			rc = dp_buf_adds(out, " ] || { echo \"dpctl: task $SLURM_PROCID runs on "
					      "$SLURMD_NODENAME, the plan wants it on \"");
		if (!rc)
			rc = dp_slurm_shell_quote(out, host);
		if (!rc)
			rc = dp_buf_adds(out, " >&2; exit 70; }; ");
	}
	if (!rc)
		rc = dp_buf_adds(out, "exec env");
	for (const char *const *e = env; !rc && e && *e; e++) {
		rc = dp_buf_adds(out, " ");
		if (!rc)
			rc = dp_slurm_shell_quote(out, *e);
	}
	for (const char *const *a = argv; !rc && *a; a++) {
		rc = dp_buf_adds(out, " ");
		if (!rc)
			rc = dp_slurm_shell_quote(out, *a);
	}
	if (rc)
		return dp_err_set(err, -rc, "slurm: task command too long");
	return 0;
}

/* "0-2,5" (srun's task list) into @tasks; count, or -1 on a syntax error. */
static int mark_tasks(const char *s, const char *end, unsigned char *tasks, size_t ntasks)
{
	int marked = 0;

	while (s < end) {
		char *q;
		long lo = strtol(s, &q, 10), hi;

		if (q == s || lo < 0)
			return -1;
		hi = lo;
		s = q;
		if (*s == '-') {
			s++;
			hi = strtol(s, &q, 10);
			if (q == s || hi < lo)
				return -1;
			s = q;
		}
		for (long t = lo; t <= hi && t < (long)ntasks; t++, marked++)
			tasks[t] = 1;
		if (s < end && *s != ',')
			return -1;
		if (s < end)
			s++;
	}
	return marked;
}

int dp_slurm_task_exit_parse(const char *line, unsigned char *tasks, size_t ntasks, int *status)
{
	static const char pre[] = "srun: error: ";
	const char *p, *list, *colon, *what;
	unsigned char *tmp;
	int st = -1, n;

	if (strncmp(line, pre, sizeof(pre) - 1) != 0)
		return 0;
	p = strstr(line + sizeof(pre) - 1, ": task");
	if (!p)
		return 0;
	list = p + strlen(": task");
	if (*list == 's')
		list++;
	if (*list++ != ' ')
		return 0;
	colon = strstr(list, ": ");
	if (!colon)
		return 0;
	what = colon + 2;
	if (strncmp(what, "Exited with exit code ", 22) == 0) {
		char *e;
		long c = strtol(what + 22, &e, 10);

		if (e == what + 22 || *e || c < 0 || c > 255)
			return 0;
		st = (int)c;
	} else {
		for (int sig = 1; sig < 65 && st < 0; sig++) {
			const char *name = strsignal(sig);

			if (name && strcmp(name, what) == 0)
				st = 128 + sig;
		}
		if (st < 0)
			return 0;
	}
	tmp = calloc(ntasks ? ntasks : 1, 1);
	if (!tmp)
		return 0;
	n = mark_tasks(list, colon, tmp, ntasks);
	if (n > 0) {
		for (size_t i = 0; i < ntasks; i++)
			tasks[i] |= tmp[i];
		*status = st;
	}
	free(tmp);
	return n > 0 ? n : 0;
}

/* ---- sbatch ------------------------------------------------------------------ */

static int sbatch_value_ok(const char *s)
{
	if (!s || !*s)
		return 0;
	for (; *s; s++)
		if ((unsigned char)*s <= 0x20 || *s == 0x7f || *s == '"' || *s == '\'' ||
		    *s == '\\')
			return 0;
	return 1;
}

int dp_slurm_sbatch_script(const struct dp_slurm_job *job, struct dp_buf *out, struct dp_err *err)
{
	char name[64];
	size_t k = 0;
	int rc;

	if (job->nodes < 1 || job->ntasks_per_node < 1 || job->gpus_per_node < 0)
		return dp_err_set(err, EINVAL, "slurm: nodes and tasks per node must be >= 1");
	if (!job->argv || !job->argv[0])
		return dp_err_set(err, EINVAL, "slurm: the batch job has no command");
	{
		const char *what[] = { "time", "partition", "output" };
		const char *vals[] = { job->time, job->partition, job->output };

		for (int i = 0; i < 3; i++)
			if (vals[i] && !sbatch_value_ok(vals[i]))
				return dp_err_set(err, EINVAL,
						  "slurm: %s '%s' holds white space, a quote or a "
						  "control character",
						  what[i], vals[i]);
	}
	for (const char *p = job->job_name ? job->job_name : "dpctl"; *p && k < sizeof(name) - 1;
	     p++)
		name[k++] = isalnum((unsigned char)*p) || *p == '.' || *p == '_' || *p == '-' ? *p
											      : '_';
	name[k] = '\0';
	rc = dp_buf_addf(out,
			 "#!/bin/sh\n"
			 "# written by dpctl launch --submit\n"
			 "#SBATCH --job-name=%s\n"
			 "#SBATCH --nodes=%d\n"
			 "#SBATCH --ntasks-per-node=%d\n",
			 k ? name : "dpctl", job->nodes, job->ntasks_per_node);
	if (!rc && job->gpus_per_node > 0)
		rc = dp_buf_addf(out, "#SBATCH --gpus-per-node=%d\n", job->gpus_per_node);
	if (!rc && job->time)
		rc = dp_buf_addf(out, "#SBATCH --time=%s\n", job->time);
	if (!rc && job->partition)
		rc = dp_buf_addf(out, "#SBATCH --partition=%s\n", job->partition);
	if (!rc && job->output)
		rc = dp_buf_addf(out, "#SBATCH --output=%s\n", job->output);
	if (!rc)
		rc = dp_buf_adds(out, "exec");
	for (const char *const *a = job->argv; !rc && *a; a++) {
		rc = dp_buf_adds(out, " ");
		if (!rc)
			rc = dp_slurm_shell_quote(out, *a);
	}
	if (!rc)
		rc = dp_buf_adds(out, "\n");
	if (rc)
		return dp_err_set(err, -rc, "slurm: batch script too long");
	return 0;
}

/* Read all of @fd into @b (bounded by its cap). */
static void read_all(int fd, struct dp_buf *b)
{
	char chunk[1024];

	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		(void)dp_buf_add(b, chunk, (size_t)n);
	}
}

int dp_slurm_submit(const char *sbatch, const char *script, char *jobid, size_t len,
		    struct dp_err *err)
{
	int in[2] = { -1, -1 }, outp[2] = { -1, -1 }, e, st = 0, rc;
	struct dp_buf ob;
	const char *prog = sbatch ? sbatch : "sbatch";
	pid_t pid;
	size_t slen = strlen(script), off = 0;
	char *semi;

	dp_buf_init(&ob, (size_t)64 * 1024);
	/* stdin is a socket pair so a failed write is EPIPE, never SIGPIPE (MSG_NOSIGNAL) */
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in) || pipe2(outp, O_CLOEXEC)) {
		e = errno;
		rc = dp_err_set(err, e, "slurm: cannot create pipes: %s", strerror(e));
		goto out;
	}
	pid = fork();
	if (pid < 0) {
		e = errno;
		rc = dp_err_set(err, e, "slurm: cannot fork: %s", strerror(e));
		goto out;
	}
	if (pid == 0) {
		const char *argv[] = { prog, "--parsable", NULL };

		(void)signal(SIGPIPE, SIG_DFL);
		if (dup2(in[0], 0) < 0 || dup2(outp[1], 1) < 0 || dup2(outp[1], 2) < 0)
			_exit(127);
		(void)execvp(prog, (char *const *)argv);
		(void)dprintf(1, "cannot execute '%s': %s\n", prog, strerror(errno));
		_exit(127);
	}
	(void)close(in[0]);
	(void)close(outp[1]);
	in[0] = outp[1] = -1;
	while (off < slen) {
		ssize_t n = send(in[1], script + off, slen - off, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		off += (size_t)n;
	}
	(void)close(in[1]);
	in[1] = -1;
	read_all(outp[0], &ob);
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	{
		char *s = ob.data ? ob.data : (char *)"";
		size_t l = strlen(s);

		while (l && (s[l - 1] == '\n' || s[l - 1] == '\r'))
			s[--l] = '\0';
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			rc = dp_err_set(err, WIFEXITED(st) && WEXITSTATUS(st) == 127 ? ENOENT : EIO,
					"slurm: sbatch failed: %s", l ? s : "no message");
			goto out;
		}
		/* --parsable: "jobid" or "jobid;cluster"; the last line (warnings come first) */
		if (strrchr(s, '\n'))
			s = strrchr(s, '\n') + 1;
		semi = strchr(s, ';');
		if (semi)
			*semi = '\0';
		if (!*s || strspn(s, "0123456789") != strlen(s) || strlen(s) >= len) {
			rc = dp_err_set(err, EPROTO, "slurm: sbatch printed no job id: '%s'", s);
			goto out;
		}
		(void)snprintf(jobid, len, "%s", s);
	}
	rc = 0;
out:
	for (int i = 0; i < 2; i++) {
		if (in[i] >= 0)
			(void)close(in[i]);
		if (outp[i] >= 0)
			(void)close(outp[i]);
	}
	dp_buf_release(&ob);
	return rc;
}

/* ---- the backend --------------------------------------------------------------- */

struct lines {
	int fd; /* -1 once closed */
	size_t len;
	char buf[SLURM_LINE_MAX];
};

struct srank {
	int rank;
	char *host;
	int local;
	char *cmd;	 /* the task command (caller frees) */
	int task;	 /* SLURM_PROCID */
	int exited;	 /* reported to the controller */
	int srun_status; /* from srun's message; -1 if none */
};

struct slurm_session {
	struct dp_launch_session base; /* first */
	struct dp_launch_opts o;
	struct srank *ranks;
	size_t n, cap;
	long world;
	char *token_kv; /* "DP_JOB_TOKEN=..." */
	int *task_rank; /* task id -> index into ranks */
	pid_t pid;	/* srun; 0 before it starts; also its process group */
	int reaped;
	int srun_status;
	int started_tasks; /* saw the step line */
	char step[64];	   /* "JOB.STEP" from task 0 */
	char last_error[256];
	struct lines io[2];
	int spawn_failed_reported;
};

static int slurm_probe(int *priority)
{
	const char *job = getenv("SLURM_JOB_ID");

	if (!job || !*job)
		return -ENODEV;
	*priority = 20; /* inside an allocation srun is what the site wants */
	return 0;
}

static int slurm_open(const struct dp_launch_opts *opts, struct dp_launch_session **out,
		      struct dp_err *err)
{
	struct slurm_session *ss = calloc(1, sizeof(*ss));

	if (!ss)
		return dp_err_set(err, ENOMEM, "slurm: out of memory");
	ss->base.ops = &dp_launch_slurm;
	if (opts)
		ss->o = *opts;
	ss->io[0].fd = ss->io[1].fd = -1;
	ss->srun_status = -1;
	*out = &ss->base;
	return 0;
}

static const char *env_value(const char *const *env, const char *name)
{
	size_t n = strlen(name);

	for (; env && *env; env++)
		if (strncmp(*env, name, n) == 0 && (*env)[n] == '=')
			return *env + n + 1;
	return NULL;
}

/* environ + @adds (NAME=value, replacing same names).  Caller frees the array. */
static char **srun_env(char *const *adds, size_t nadd)
{
	size_t n = 0, k = 0;
	char **env;

	for (char **e = environ; e && *e; e++)
		n++;
	env = calloc(n + nadd + 1, sizeof(*env));
	if (!env)
		return NULL;
	for (char **e = environ; e && *e; e++) {
		const char *eq = strchr(*e, '=');
		size_t l = eq ? (size_t)(eq - *e) : strlen(*e);
		int dup = 0;

		for (size_t i = 0; i < nadd && !dup; i++)
			dup = strncmp(adds[i], *e, l) == 0 && adds[i][l] == '=';
		/* stale task commands of an outer dpctl must not leak in */
		if (!dup && strncmp(*e, "DP_SLURM_TASK_", 14) != 0)
			env[k++] = *e;
	}
	for (size_t i = 0; i < nadd; i++)
		env[k++] = adds[i];
	env[k] = NULL;
	return env;
}

static void set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl >= 0)
		(void)fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* Index of @host in @nodes (@nn of them), or @nn.  @hint (the previous
 * rank's) first: ranks come node by node, so with thousands of nodes this
 * is usually one compare, not a scan. */
static int find_node(const char **nodes, int nn, const char *host, int hint)
{
	if (hint >= 0 && hint < nn && strcmp(nodes[hint], host) == 0)
		return hint;
	for (int k = 0; k < nn; k++)
		if (strcmp(nodes[k], host) == 0)
			return k;
	return nn;
}

/* Order the ranks into tasks and build every task command.  0 or -errno. */
static int plan_tasks(struct slurm_session *ss, char **nodelist_out, int *nnodes, int *per_node,
		      struct dp_err *err)
{
	const char **nodes = calloc(ss->n, sizeof(*nodes));
	int *count = calloc(ss->n, sizeof(*count));
	int nn = 0, g = 0, rc = 0, k = -1;
	struct dp_buf nl;

	dp_buf_init(&nl, 1 << 20);
	if (!nodes || !count) {
		rc = dp_err_set(err, ENOMEM, "slurm: out of memory");
		goto out;
	}
	/* nodes in order of their lowest rank: the plan's node order */
	for (size_t i = 0; i < ss->n; i++) {
		k = find_node(nodes, nn, ss->ranks[i].host, k);
		if (k == nn)
			nodes[nn++] = ss->ranks[i].host;
		count[k]++;
		if (count[k] > g)
			g = count[k];
	}
	ss->task_rank = calloc(ss->n, sizeof(int));
	if (!ss->task_rank) {
		rc = dp_err_set(err, ENOMEM, "slurm: out of memory");
		goto out;
	}
	for (size_t i = 0; i < ss->n; i++)
		ss->task_rank[i] = -1;
	for (size_t i = 0; i < ss->n && !rc; i++) {
		struct srank *r = &ss->ranks[i];

		k = find_node(nodes, nn, r->host, k);
		if (k == nn || count[k] != g || r->local < 0 || r->local >= g) {
			rc = dp_err_set(err, EINVAL,
					"slurm: srun runs the same number of tasks on every node; "
					"'%s' has %d ranks, another %d",
					r->host, count[k], g);
			break;
		}
		r->task = k * g + r->local;
		if (ss->task_rank[r->task] >= 0)
			rc = dp_err_set(err, EINVAL, "slurm: two ranks with local index %d on '%s'",
					r->local, r->host);
		else
			ss->task_rank[r->task] = (int)i;
	}
	for (int j = 0; j < nn && !rc; j++)
		rc = dp_buf_addf(&nl, "%s%s", j ? "," : "", nodes[j]) ? -ENOMEM : 0;
	if (rc == -ENOMEM)
		rc = dp_err_set(err, ENOMEM, "slurm: out of memory");
	if (!rc) {
		*nodelist_out = dp_buf_detach(&nl, NULL);
		*nnodes = nn;
		*per_node = g;
	}
out:
	dp_buf_release(&nl);
	free(nodes);
	free(count);
	return rc;
}

static int start_srun(struct slurm_session *ss, struct dp_err *err)
{
	struct dp_slurm_step st = { 0 };
	char **argv = NULL, **env = NULL, **adds = NULL, *nodelist = NULL;
	int outp[2] = { -1, -1 }, errp[2] = { -1, -1 }, devnull = -1, rc, e;
	pid_t pid, parent = getpid();
	size_t nadd = 0;

	rc = plan_tasks(ss, &nodelist, &st.nodes, &st.ntasks_per_node, err);
	if (rc)
		goto out;
	st.ntasks = (int)ss->n;
	st.nodelist = nodelist;
	st.cpu_bind = ss->o.slurm_cpu_bind;
	st.gpu_bind = ss->o.slurm_gpu_bind;
	st.gpus_per_task = ss->o.slurm_gpus_per_task;
	st.srun = ss->o.srun;
	st.job_name = "dpworker";
	rc = dp_slurm_srun_argv(&st, &argv, err);
	if (rc)
		goto out;
	adds = calloc(ss->n + 2, sizeof(*adds));
	if (!adds) {
		rc = dp_err_set(err, ENOMEM, "slurm: out of memory");
		goto out;
	}
	if (ss->token_kv)
		adds[nadd++] = ss->token_kv;
	for (size_t t = 0; t < ss->n; t++) {
		struct dp_buf b;

		dp_buf_init(&b,
			    (size_t)128 * 1024); /* one environment string: under MAX_ARG_STRLEN */
		if (dp_buf_addf(&b, "DP_SLURM_TASK_%zu=%s", t, ss->ranks[ss->task_rank[t]].cmd)) {
			dp_buf_release(&b);
			rc = dp_err_set(err, E2BIG, "slurm: the command of task %zu is too long",
					t);
			goto out;
		}
		adds[nadd++] = dp_buf_detach(&b, NULL);
	}
	env = srun_env(adds, nadd);
	if (!env) {
		rc = dp_err_set(err, ENOMEM, "slurm: out of memory");
		goto out;
	}
	{
		/* every task's command rides in srun's environment: an exec
		 * takes ARG_MAX bytes of it and the arguments (a few thousand
		 * ranks), so say so here rather than have execve() fail */
		long max = sysconf(_SC_ARG_MAX);
		size_t total = strlen(argv[0]) + 1 + sizeof(*argv);

		for (char **v = env; *v; v++)
			total += strlen(*v) + 1 + sizeof(*v);
		for (char **v = argv + 1; *v; v++)
			total += strlen(*v) + 1 + sizeof(*v);
		if (max > 0 && total > (size_t)max) {
			rc = dp_err_set(err, E2BIG,
					"slurm: the commands of %zu tasks take %zu bytes of srun's "
					"environment, more than the %ld an exec takes (ARG_MAX: "
					"ulimit -s / 4)",
					ss->n, total, max);
			goto out;
		}
	}
	if (pipe2(outp, O_CLOEXEC) || pipe2(errp, O_CLOEXEC)) {
		e = errno;
		rc = dp_err_set(err, e, "slurm: cannot create pipes: %s", strerror(e));
		goto out;
	}
	devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (devnull < 0) {
		e = errno;
		rc = dp_err_set(err, e, "slurm: cannot open /dev/null: %s", strerror(e));
		goto out;
	}
	pid = fork();
	if (pid < 0) {
		e = errno;
		rc = dp_err_set(err, e, "slurm: cannot fork srun: %s", strerror(e));
		goto out;
	}
	if (pid == 0) {
		sigset_t none;

		(void)setpgid(0, 0);
		(void)prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0); /* srun then cancels the step */
		if (getppid() != parent)
			_exit(127);
		(void)signal(SIGPIPE, SIG_DFL);
		(void)sigemptyset(&none);
		(void)sigprocmask(SIG_SETMASK, &none, NULL);
		if (dup2(devnull, 0) < 0 || dup2(outp[1], 1) < 0 || dup2(errp[1], 2) < 0)
			_exit(127);
		(void)execvpe(argv[0], argv, env);
		(void)dprintf(2, "srun: error: cannot execute '%s': %s\n", argv[0],
			      strerror(errno));
		_exit(127);
	}
	(void)setpgid(pid, pid);
	ss->pid = pid;
	ss->io[0].fd = outp[0];
	ss->io[1].fd = errp[0];
	outp[0] = errp[0] = -1;
	set_nonblock(ss->io[0].fd);
	set_nonblock(ss->io[1].fd);
	dp_log(DP_LOG_INFO, "slurm", "srun (pid %d): %zu tasks on %d nodes (%s)", (int)pid, ss->n,
	       st.nodes, nodelist);
	rc = 0;
out:
	for (int i = 0; i < 2; i++) {
		if (outp[i] >= 0)
			(void)close(outp[i]);
		if (errp[i] >= 0)
			(void)close(errp[i]);
	}
	if (devnull >= 0)
		(void)close(devnull);
	for (size_t i = ss->token_kv ? 1 : 0; adds && i < nadd; i++)
		free(adds[i]);
	free(adds);
	free(env);
	free(nodelist);
	dp_slurm_argv_free(argv);
	return rc;
}

static int slurm_spawn(struct dp_launch_session *s, const struct dp_launch_rank *r,
		       const char *const *env_extra, struct dp_err *err)
{
	struct slurm_session *ss = dp_container_of(s, struct slurm_session, base);
	const char *world = env_value(env_extra, "DP_WORLD_SIZE");
	const char *tok = env_value(env_extra, TOKEN_NAME);
	const char **env = NULL;
	struct srank *x;
	struct dp_buf cmd;
	size_t ne = 0, k = 0;
	int rc;

	if (ss->pid)
		return dp_err_set(err, EBUSY, "slurm: srun already started for this attempt");
	if (!world || dp_parse_long(world, 1, 1000000, &ss->world, "DP_WORLD_SIZE", err))
		return dp_err_set(err, EINVAL, "slurm: spawn needs DP_WORLD_SIZE");
	if (ss->n == ss->cap) {
		size_t ncap = ss->cap ? 2 * ss->cap : 16;
		struct srank *nr = realloc(ss->ranks, ncap * sizeof(*nr));

		if (!nr)
			return dp_err_set(err, ENOMEM, "slurm: out of memory");
		ss->ranks = nr;
		ss->cap = ncap;
	}
	if (tok && !ss->token_kv) {
		size_t l = strlen(TOKEN_NAME) + strlen(tok) + 2;

		ss->token_kv = malloc(l);
		if (!ss->token_kv)
			return dp_err_set(err, ENOMEM, "slurm: out of memory");
		(void)snprintf(ss->token_kv, l, "%s=%s", TOKEN_NAME, tok);
	}
	/* the rank's environment, minus the token (that one goes in srun's) */
	for (const char *const *e = r->env; e && *e; e++)
		ne++;
	for (const char *const *e = env_extra; e && *e; e++)
		ne++;
	env = calloc(ne + 1, sizeof(*env));
	if (!env)
		return dp_err_set(err, ENOMEM, "slurm: out of memory");
	for (const char *const *e = r->env; e && *e; e++)
		env[k++] = *e;
	for (const char *const *e = env_extra; e && *e; e++)
		if (strncmp(*e, TOKEN_NAME "=", sizeof(TOKEN_NAME)) != 0)
			env[k++] = *e;
	dp_buf_init(&cmd, (size_t)128 * 1024);
	rc = dp_slurm_task_cmd(r->host, env, r->argv, &cmd, err);
	free(env);
	if (rc) {
		dp_buf_release(&cmd);
		return rc;
	}
	x = &ss->ranks[ss->n];
	memset(x, 0, sizeof(*x));
	x->rank = r->rank;
	x->local = r->local_index;
	x->srun_status = -1;
	x->host = strdup(r->host);
	x->cmd = dp_buf_detach(&cmd, NULL);
	dp_buf_release(&cmd);
	if (!x->host || !x->cmd) {
		free(x->host);
		free(x->cmd);
		return dp_err_set(err, ENOMEM, "slurm: out of memory");
	}
	ss->n++;
	if ((long)ss->n < ss->world)
		return 0;
	return start_srun(ss, err);
}

static int slurm_pollfds(struct dp_launch_session *s, struct pollfd *fds, int max)
{
	struct slurm_session *ss = dp_container_of(s, struct slurm_session, base);
	int k = 0;

	for (int j = 0; j < 2 && k < max; j++)
		if (ss->io[j].fd >= 0)
			fds[k++] = (struct pollfd){ .fd = ss->io[j].fd, .events = POLLIN };
	return k;
}

static void report_exit(struct slurm_session *ss, size_t idx, int status,
			const struct dp_launch_events *ev, void *arg)
{
	struct srank *r = &ss->ranks[idx];

	if (r->exited)
		return;
	r->exited = 1;
	if (ev && ev->exited)
		ev->exited(arg, r->rank, status);
}

static void drain(struct slurm_session *ss, int j, const struct dp_launch_events *ev, void *arg);

/* One complete line from srun: a labelled task line, or srun's own. */
static void on_line(struct slurm_session *ss, int j, char *line, const struct dp_launch_events *ev,
		    void *arg)
{
	const char *p = line;
	char *end;
	long task;

	while (*p == ' ')
		p++;
	task = strtol(p, &end, 10);
	if (end != p && end[0] == ':' && end[1] == ' ' && task >= 0 && task < (long)ss->n) {
		const char *text = end + 2;
		int idx = ss->task_rank[task];

		if (task == 0 && strncmp(text, STEP_TAG, strlen(STEP_TAG)) == 0) {
			(void)snprintf(ss->step, sizeof(ss->step), "%s", text + strlen(STEP_TAG));
			ss->started_tasks = 1;
			dp_log(DP_LOG_DEBUG, "slurm", "job step %s", ss->step);
			return;
		}
		ss->started_tasks = 1;
		if (ev && ev->output)
			ev->output(arg, ss->ranks[idx].rank, j + 1, text);
		return;
	}
	{
		unsigned char *mark = calloc(ss->n, 1);
		int status = 0;

		if (mark && dp_slurm_task_exit_parse(line, mark, ss->n, &status) > 0) {
			/* srun forwarded the tasks' output before it saw them exit: read
			 * it first, so the root cause carries the rank's last lines */
			if (j == 1)
				drain(ss, 0, ev, arg);
			for (size_t t = 0; t < ss->n; t++)
				if (mark[t])
					report_exit(ss, (size_t)ss->task_rank[t], status, ev, arg);
			ss->started_tasks = 1;
		} else if (strncmp(line, "srun: error: ", 13) == 0) {
			(void)snprintf(ss->last_error, sizeof(ss->last_error), "%s", line + 13);
		}
		free(mark);
	}
	dp_log(DP_LOG_INFO, "slurm", "%s", line);
}

static void drain(struct slurm_session *ss, int j, const struct dp_launch_events *ev, void *arg)
{
	struct lines *st = &ss->io[j];
	char chunk[4096];

	while (st->fd >= 0) {
		ssize_t n = read(st->fd, chunk, sizeof(chunk));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0) {
			if (st->len) {
				st->buf[st->len] = '\0';
				on_line(ss, j, st->buf, ev, arg);
				st->len = 0;
			}
			(void)close(st->fd);
			st->fd = -1;
			return;
		}
		for (ssize_t i = 0; i < n; i++) {
			if (chunk[i] != '\n')
				st->buf[st->len++] = chunk[i];
			if (chunk[i] == '\n' || st->len == sizeof(st->buf) - 1) {
				st->buf[st->len] = '\0';
				on_line(ss, j, st->buf, ev, arg);
				st->len = 0;
			}
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

static int slurm_dispatch(struct dp_launch_session *s, const struct pollfd *fds, int n,
			  const struct dp_launch_events *ev, void *arg)
{
	struct slurm_session *ss = dp_container_of(s, struct slurm_session, base);
	int st, code;
	pid_t w;

	(void)fds;
	(void)n;
	if (!ss->pid || ss->reaped)
		return 0;
	drain(ss, 0, ev, arg);
	drain(ss, 1, ev, arg);
	do
		w = waitpid(ss->pid, &st, WNOHANG);
	while (w < 0 && errno == EINTR);
	if (w == 0)
		return 0;
	ss->reaped = 1;
	if (w < 0)
		st = 255 << 8;
	/* srun is dead, so what it wrote is in the pipes: read it (non-blocking, in
	 * case something it started still holds a write end) */
	drain(ss, 0, ev, arg);
	drain(ss, 1, ev, arg);
	code = status_code(st);
	ss->srun_status = code;
	dp_log(DP_LOG_INFO, "slurm", "srun exited with status %d", code);
	if (code != 0 && !ss->started_tasks && !ss->spawn_failed_reported && ev &&
	    ev->spawn_failed && ss->n) {
		char msg[512];

		(void)snprintf(msg, sizeof(msg), "slurm: srun could not start the tasks: %s",
			       ss->last_error[0] ? ss->last_error : "no message");
		ss->spawn_failed_reported = 1;
		ev->spawn_failed(arg, ss->ranks[0].rank, code == 127 ? ENOENT : EAGAIN, msg);
	}
	for (size_t i = 0; i < ss->n; i++)
		report_exit(ss, i, code, ev, arg);
	return 0;
}

static void scancel_step(struct slurm_session *ss)
{
	pid_t pid;
	int st;

	if (!ss->step[0])
		return;
	pid = fork();
	if (pid == 0) {
		const char *argv[] = { "scancel", "--quiet", "--signal=KILL", ss->step, NULL };
		int fd = open("/dev/null", O_RDWR | O_CLOEXEC);

		if (fd >= 0) {
			(void)dup2(fd, 0);
			(void)dup2(fd, 1);
			(void)dup2(fd, 2);
		}
		(void)execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	if (pid > 0)
		while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
			;
}

static int slurm_signal(struct dp_launch_session *s, int rank, int sig)
{
	struct slurm_session *ss = dp_container_of(s, struct slurm_session, base);

	if (!ss->pid || ss->reaped)
		return 0;
	if (rank >= 0 && sig != SIGTERM && sig != SIGKILL)
		return -EOPNOTSUPP; /* a step's tasks are signalled together */
	if (sig == SIGKILL) {
		(void)kill(-ss->pid, SIGKILL);
		scancel_step(ss);
		return 0;
	}
	/* srun forwards most signals to every task; SIGTERM makes it cancel the step */
	if (kill(ss->pid, sig) != 0 && errno != ESRCH)
		dp_log(DP_LOG_WARN, "slurm", "cannot signal srun (pid %d): %s", (int)ss->pid,
		       strerror(errno));
	return 0;
}

static int slurm_running(struct dp_launch_session *s)
{
	struct slurm_session *ss = dp_container_of(s, struct slurm_session, base);
	int k = 0;

	for (size_t i = 0; i < ss->n; i++)
		k += !ss->ranks[i].exited;
	/* ranks collected but srun never started: nothing runs */
	return ss->pid ? k : 0;
}

static void slurm_close(struct dp_launch_session *s)
{
	struct slurm_session *ss;

	if (!s)
		return;
	ss = dp_container_of(s, struct slurm_session, base);
	if (ss->pid && !ss->reaped) {
		struct timespec nap = { 0, 10000000L };
		int st;

		(void)kill(ss->pid, SIGTERM);
		for (int i = 0; i < 300 && waitpid(ss->pid, &st, WNOHANG) == 0; i++)
			(void)nanosleep(&nap, NULL);
		if (kill(ss->pid, 0) == 0) {
			(void)kill(-ss->pid, SIGKILL);
			scancel_step(ss);
			(void)waitpid(ss->pid, &st, 0);
		}
	}
	if (ss->pid)
		(void)kill(-ss->pid, SIGKILL); /* anything srun left in its group */
	for (int j = 0; j < 2; j++)
		if (ss->io[j].fd >= 0)
			(void)close(ss->io[j].fd);
	for (size_t i = 0; i < ss->n; i++) {
		free(ss->ranks[i].host);
		free(ss->ranks[i].cmd);
	}
	free(ss->ranks);
	free(ss->task_rank);
	free(ss->token_kv);
	free(ss);
}

const struct dp_launch_backend dp_launch_slurm = {
	.name = "slurm",
	.probe = slurm_probe,
	.open = slurm_open,
	.spawn = slurm_spawn,
	.pollfds = slurm_pollfds,
	.dispatch = slurm_dispatch,
	.signal = slurm_signal,
	.running = slurm_running,
	.close = slurm_close,
};
