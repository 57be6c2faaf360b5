/* launcher/cmd_launch.c - `dpctl launch`.
 *
 * For now the run is given by --local N (N ranks of dpworker on this
 * machine, in its --fake-* test mode) so the whole path -- spawn, control
 * plane, rendezvous, heartbeats, failure handling, teardown -- runs end to
 * end.  The recipe-driven form will build the same struct dp_launch_spec
 * from a plan and reuse everything below build_spec().
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <jansson.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <limits.h>
#include <sys/stat.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/dp_util.h"
#include "launcher/cli_int.h"
#include "launcher/ctl_launch.h"
#include "launcher/dp_launcher.h"
#include "launcher/dp_metrics.h"
#include "launcher/dp_notify.h"
#include "launcher/dp_plan.h"
#include "launcher/dp_slurm.h"
#include "common/dp_banned.h"

enum {
	OPT_DRY_RUN = 256,
	OPT_LOCAL,
	OPT_RENDEZVOUS,
	OPT_HEARTBEAT,
	OPT_HANG,
	OPT_GRACE,
	OPT_RESTARTS,
	OPT_BIND,
	OPT_PORT,
	OPT_WORKER,
	OPT_FAKE_STEPS,
	OPT_FAKE_STEP_MS,
	OPT_FAKE_FAIL,
	OPT_FAKE_HANG,
	OPT_FAKE_ABSENT,
	OPT_FAKE_CHILD,
	OPT_SSH,
	OPT_PER_HOST,
	OPT_SSH_PORT,
	OPT_SSH_IDENTITY,
	OPT_KNOWN_HOSTS,
	OPT_ACCEPT_NEW,
	OPT_SUBMIT,
	OPT_TIME,
	OPT_PARTITION,
	OPT_RUN_DIR,
};

static const struct option opts[] = {
	{ "local", required_argument, NULL, OPT_LOCAL },
	{ "ssh", required_argument, NULL, OPT_SSH },
	{ "per-host", required_argument, NULL, OPT_PER_HOST },
	{ "ssh-port", required_argument, NULL, OPT_SSH_PORT },
	{ "ssh-identity", required_argument, NULL, OPT_SSH_IDENTITY },
	{ "known-hosts", required_argument, NULL, OPT_KNOWN_HOSTS },
	{ "accept-new-host-keys", no_argument, NULL, OPT_ACCEPT_NEW },
	{ "rendezvous-s", required_argument, NULL, OPT_RENDEZVOUS },
	{ "heartbeat-s", required_argument, NULL, OPT_HEARTBEAT },
	{ "hang-timeout-s", required_argument, NULL, OPT_HANG },
	{ "grace-s", required_argument, NULL, OPT_GRACE },
	{ "max-restarts", required_argument, NULL, OPT_RESTARTS },
	{ "bind", required_argument, NULL, OPT_BIND },
	{ "port", required_argument, NULL, OPT_PORT },
	{ "worker", required_argument, NULL, OPT_WORKER },
	{ "fake-steps", required_argument, NULL, OPT_FAKE_STEPS },
	{ "fake-step-ms", required_argument, NULL, OPT_FAKE_STEP_MS },
	{ "fake-fail", required_argument, NULL, OPT_FAKE_FAIL },
	{ "fake-hang", required_argument, NULL, OPT_FAKE_HANG },
	{ "fake-absent", required_argument, NULL, OPT_FAKE_ABSENT },
	{ "fake-spawn-child", no_argument, NULL, OPT_FAKE_CHILD },
	{ "dry-run", no_argument, NULL, OPT_DRY_RUN },
	{ "submit", no_argument, NULL, OPT_SUBMIT },
	{ "time", required_argument, NULL, OPT_TIME },
	{ "partition", required_argument, NULL, OPT_PARTITION },
	{ "run-dir", required_argument, NULL, OPT_RUN_DIR },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

#define MAX_LOCAL 1024
#define MAX_ARGS  24
#define MAX_HOSTS 256

struct launch_opts {
	long nlocal;
	int fake_given;	 /* --fake-steps was given */
	int recipe_mode; /* the run comes from a recipe */
	const char *worker;
	long fake_steps, fake_step_ms;
	long fail_rank, fail_step, fail_code;
	long hang_rank, hang_step;
	long absent_rank;
	int spawn_child;
	int dry_run;
	/* slurm */
	int slurm;		      /* the recipe says launcher: slurm */
	int submit;		      /* --submit */
	const char *time, *partition; /* --time, --partition for the batch job */
	struct dp_hostlist *alloc;    /* the allocation's nodes ($SLURM_JOB_NODELIST) */
};

#define MAX_ENV 64

/* Per-rank argv and environment storage. */
struct rank_args {
	const char *argv[MAX_ARGS];
	char num[6][24];
	const char *env[MAX_ENV + 1];
	char layout[12][48];
};

/* The environment a rank of a recipe run gets: its place in the layout, then
 * the recipe's env section.  Strings point into @ra or @r. */
static void build_env(const struct dp_recipe *r, char *const *renv, const struct dp_plan_rank *x,
		      struct rank_args *ra)
{
	int k = 0, n = 0;

#define LAYOUT(...)                                                                                \
	((void)snprintf(ra->layout[n], sizeof(ra->layout[n]), __VA_ARGS__),                        \
	 ra->env[k++] = ra->layout[n++])
	LAYOUT("DP_PP_RANK=%d", x->pp);
	LAYOUT("DP_EP_RANK=%d", x->ep);
	LAYOUT("DP_DP_RANK=%d", x->dp);
	if (x->nstages == 2)
		LAYOUT("DP_STAGES=%d,%d", x->stage[0], x->stage[1]);
	else
		LAYOUT("DP_STAGES=%d", x->stage[0]);
	LAYOUT("DP_PP_SIZE=%d", r->parallel.pp);
	LAYOUT("DP_EP_SIZE=%d", r->parallel.ep);
	LAYOUT("DP_DP_SIZE=%d", r->parallel.dp);
	LAYOUT("DP_SCHEDULE=%s", dp_recipe_schedule_name(r->parallel.schedule));
	LAYOUT("DP_MICRO_BATCHES=%d", r->parallel.micro_batches);
	LAYOUT("DP_STEPS=%ld", r->train.steps);
	LAYOUT("DP_SEED=%ld", r->train.seed);
#undef LAYOUT
	for (size_t i = 0; i < r->n_env && k < MAX_ENV; i++)
		ra->env[k++] = renv[i];
	ra->env[k] = NULL;
}

static const char *find_worker(char *buf, size_t len)
{
	const char *env = getenv("DPWORKER");
	ssize_t n;
	char *slash;

	if (env && *env)
		return env;
	/* next to dpctl itself */
	n = readlink("/proc/self/exe", buf, len - 1);
	if (n > 0) {
		buf[n] = '\0';
		slash = strrchr(buf, '/');
		if (slash && (size_t)(slash - buf) + sizeof("/dpworker") <= len) {
			(void)snprintf(slash, len - (size_t)(slash - buf), "/dpworker");
			if (access(buf, X_OK) == 0)
				return buf;
		}
	}
	return "dpworker"; /* from PATH */
}

static void build_args(const struct launch_opts *o, long rank, struct rank_args *ra)
{
	int k = 0;

	ra->argv[k++] = o->worker;
	if (o->recipe_mode && !o->fake_given) {
		ra->argv[k] = NULL; /* a recipe run: the layout travels in the environment */
		return;
	}
	(void)snprintf(ra->num[0], sizeof(ra->num[0]), "%ld", o->fake_steps);
	(void)snprintf(ra->num[1], sizeof(ra->num[1]), "%ld", o->fake_step_ms);
	ra->argv[k++] = "--fake-steps";
	ra->argv[k++] = ra->num[0];
	ra->argv[k++] = "--fake-step-ms";
	ra->argv[k++] = ra->num[1];
	if (rank == o->fail_rank) {
		(void)snprintf(ra->num[2], sizeof(ra->num[2]), "%ld", o->fail_step);
		(void)snprintf(ra->num[3], sizeof(ra->num[3]), "%ld", o->fail_code);
		ra->argv[k++] = "--fake-fail-at";
		ra->argv[k++] = ra->num[2];
		ra->argv[k++] = "--fake-exit-code";
		ra->argv[k++] = ra->num[3];
	}
	if (rank == o->hang_rank) {
		(void)snprintf(ra->num[4], sizeof(ra->num[4]), "%ld", o->hang_step);
		ra->argv[k++] = "--fake-hang-at";
		ra->argv[k++] = ra->num[4];
	}
	if (rank == o->absent_rank)
		ra->argv[k++] = "--fake-no-connect";
	if (o->spawn_child)
		ra->argv[k++] = "--fake-spawn-child";
	ra->argv[k] = NULL;
}

/* Split "a,b,c" (a copy in @buf) into @hosts; returns the count or -1. */
static int split_hosts(char *buf, const char **hosts, int max)
{
	int n = 0;

	for (char *p = buf, *comma; p && *p; p = comma ? comma + 1 : NULL) {
		comma = strchr(p, ',');
		if (comma)
			*comma = '\0';
		if (!*p || n == max)
			return -1;
		hosts[n++] = p;
	}
	return n;
}

/* The local IPv4 address that routes to @host (a connected UDP socket sends
 * nothing), so remote workers can reach the controller.  0 or -errno. */
static int route_addr(const char *host, char *buf, size_t len)
{
	struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_DGRAM }, *ai;
	struct sockaddr_in sin;
	socklen_t sl = sizeof(sin);
	int fd, rc = -EHOSTUNREACH;

	if (getaddrinfo(host, "22", &hints, &ai) != 0)
		return -EHOSTUNREACH;
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sin, &sl) == 0 &&
	    inet_ntop(AF_INET, &sin.sin_addr, buf, (socklen_t)len))
		rc = 0;
	if (fd >= 0)
		(void)close(fd);
	freeaddrinfo(ai);
	return rc;
}

/* "R:S" or "R:S:C" into up to three numbers. */
static int parse_triple(struct dp_cli *cli, const char *opt, const char *s, long *a, long *b,
			long *c)
{
	char buf[64], *p1, *p2 = NULL;
	struct dp_err err = { 0 };

	(void)snprintf(buf, sizeof(buf), "%s", s);
	p1 = strchr(buf, ':');
	if (!p1)
		return dp_cli_usage_error(cli, "launch ", "%s: '%s' is not RANK:STEP", opt, s);
	*p1++ = '\0';
	if (c)
		p2 = strchr(p1, ':');
	if (p2)
		*p2++ = '\0';
	if (dp_parse_long(buf, 0, MAX_LOCAL - 1, a, opt, &err) ||
	    dp_parse_long(p1, 1, 1000000000, b, opt, &err) ||
	    (p2 && dp_parse_long(p2, 1, 255, c, opt, &err)))
		return dp_cli_usage_error(cli, "launch ", "%s", err.msg);
	return 0;
}

static int print_dry_run(struct dp_cli *cli, const struct dp_launch_spec *spec)
{
	json_t *arr = cli->json ? json_array() : NULL;

	for (size_t i = 0; i < spec->nranks; i++) {
		const struct dp_launch_rank *r = &spec->ranks[i];

		if (arr) {
			json_t *o = json_object(), *av = json_array();

			for (const char *const *a = r->argv; *a; a++)
				(void)json_array_append_new(av, json_string(*a));
			(void)json_object_set_new(o, "rank", json_integer(r->rank));
			(void)json_object_set_new(o, "host", json_string(r->host));
			(void)json_object_set_new(o, "local_index", json_integer(r->local_index));
			(void)json_object_set_new(o, "argv", av);
			if (r->env) {
				json_t *ev = json_array();

				for (const char *const *e = r->env; *e; e++)
					(void)json_array_append_new(ev, json_string(*e));
				(void)json_object_set_new(o, "env", ev);
			}
			(void)json_array_append_new(arr, o);
			continue;
		}
		(void)fprintf(cli->out, "rank %d on %s (local %d):", r->rank, r->host,
			      r->local_index);
		for (const char *const *a = r->argv; *a; a++)
			(void)fprintf(cli->out, " %s", *a);
		(void)fputc('\n', cli->out);
		if (r->env) {
			(void)fputs("    env:", cli->out);
			for (const char *const *e = r->env; *e; e++)
				(void)fprintf(cli->out, " %s", *e);
			(void)fputc('\n', cli->out);
		}
	}
	if (arr) {
		json_t *top = json_pack("{s:o, s:[s,s,s,s,s,s]}", "ranks", arr, "env",
					"DP_JOB_TOKEN", "DP_CONTROLLER", "DP_RANK", "DP_WORLD_SIZE",
					"DP_LOCAL_RANK", "DP_HEARTBEAT_S");

		(void)json_dumpf(top, cli->out, JSON_INDENT(2));
		(void)fputc('\n', cli->out);
		json_decref(top);
	} else {
		(void)fputs(
			"environment of every rank: DP_JOB_TOKEN (a fresh secret per run), "
			"DP_CONTROLLER, DP_RANK, DP_WORLD_SIZE, DP_LOCAL_RANK, DP_HEARTBEAT_S\n",
			cli->out);
	}
	return EX_OK;
}

static int report(struct dp_cli *cli, const struct dp_launch_spec *spec,
		  const struct dp_ctl_result *res)
{
	if (cli->json) {
		json_t *o =
			json_pack("{s:s, s:i, s:i, s:i, s:f, s:f, s:I, s:i}", "outcome",
				  dp_ctl_outcome_name(res->outcome), "exit_code", res->exit_code,
				  "ranks", (int)spec->nranks, "attempts", res->attempts, "ready_s",
				  res->ready_s, "run_s", res->run_s, "max_step",
				  (json_int_t)res->max_step, "refused", res->refused);

		if (o && res->outcome != DP_CTL_OK) {
			json_t *tail = json_array();

			for (int i = 0; i < res->ntail; i++)
				(void)json_array_append_new(tail, json_string(res->tail[i]));
			(void)json_object_set_new(o, "cause", json_string(res->cause));
			(void)json_object_set_new(o, "rank", json_integer(res->failed_rank));
			(void)json_object_set_new(o, "host", json_string(res->failed_host));
			(void)json_object_set_new(o, "tail", tail);
		}
		(void)json_dumpf(o, cli->out, JSON_INDENT(2));
		(void)fputc('\n', cli->out);
		json_decref(o);
	}
	if (res->outcome == DP_CTL_OK) {
		if (!cli->quiet && !cli->json)
			(void)fprintf(
				cli->err,
				"dpctl: launch: %zu ranks done in %.2f s (all ready after %.3f s)\n",
				spec->nranks, res->run_s, res->ready_s);
		return EX_OK;
	}
	(void)dp_cli_error(cli, res->exit_code, "root cause: %s", res->cause);
	if (res->ntail) {
		(void)fprintf(cli->err, "  last output of rank %d on %s:\n", res->failed_rank,
			      res->failed_host);
		for (int i = 0; i < res->ntail; i++)
			(void)fprintf(cli->err, "    %s\n", res->tail[i]);
	}
	return res->exit_code ? res->exit_code : EX_SOFTWARE;
}

/* launcher: slurm.  With --submit nothing about the allocation is needed
 * yet; otherwise the nodes are the first hosts-count nodes of
 * $SLURM_JOB_NODELIST (the recipe's host names only give the count). */
static int slurm_setup(struct dp_cli *cli, const struct dp_recipe *r, struct launch_opts *o,
		       const char **hosts, int *nhosts, long *per_host,
		       struct dp_launch_opts *lopts)
{
	size_t n = dp_hostlist_count(r->cluster.hosts), have;
	const char *job = getenv("SLURM_JOB_ID"), *nl = getenv("SLURM_JOB_NODELIST");
	const struct dp_hostlist *use = r->cluster.hosts;
	struct dp_err e = { 0 };

	o->slurm = 1;
	*per_host = r->cluster.gpus;
	if (n > MAX_HOSTS)
		return dp_cli_error(cli, EX_UNAVAILABLE,
				    "launch: %zu hosts; this build launches at most %d", n,
				    MAX_HOSTS);
	if (r->train.backend == DP_RECIPE_BACKEND_CUDA) {
		/* one GPU per task, the one closest to the task's CPUs */
		lopts->slurm_gpus_per_task = 1;
		lopts->slurm_gpu_bind = "closest";
	}
	if (!o->submit && job && *job) {
		if (!nl || !*nl)
			return dp_cli_error(cli, EX_UNAVAILABLE,
					    "launch: SLURM_JOB_ID is set but SLURM_JOB_NODELIST "
					    "is not");
		if (dp_hostlist_expand(nl, &o->alloc, &e))
			return dp_cli_error(cli, EX_DATAERR, "launch: SLURM_JOB_NODELIST: %s",
					    e.msg);
		have = dp_hostlist_count(o->alloc);
		if (have < n)
			return dp_cli_error(
				cli, EX_UNAVAILABLE,
				"launch: %s wants %zu nodes; the allocation has %zu (%s)", r->path,
				n, have, nl);
		use = o->alloc;
	} else if (!o->submit && !o->dry_run) {
		return dp_cli_error(cli, EX_UNAVAILABLE,
				    "launch: %s uses the slurm launcher but this is not a Slurm "
				    "allocation (SLURM_JOB_ID is not set); use --submit, or run "
				    "inside salloc/sbatch",
				    r->path);
	}
	for (size_t i = 0; i < n; i++)
		hosts[i] = dp_hostlist_get(use, i);
	*nhosts = (int)n;
	return EX_OK;
}

/* The address workers on other nodes dial: the source address of the
 * default route (a connected UDP socket to a TEST-NET-1 address: nothing is
 * sent, no DNS lookup -- node names may not resolve quickly everywhere),
 * else the first non-loopback IPv4 address. */
static int slurm_bind_addr(char *buf, size_t len)
{
	struct sockaddr_in dst = { .sin_family = AF_INET, .sin_port = htons(9) }, me;
	socklen_t sl = sizeof(me);
	struct ifaddrs *ifa, *i;
	int rc = -EHOSTUNREACH, fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	(void)inet_pton(AF_INET, "192.0.2.1", &dst.sin_addr);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&dst, sizeof(dst)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&me, &sl) == 0 &&
	    inet_ntop(AF_INET, &me.sin_addr, buf, (socklen_t)len))
		rc = 0;
	if (fd >= 0)
		(void)close(fd);
	if (rc == 0)
		return 0;
	if (getifaddrs(&ifa) != 0)
		return -errno;
	for (i = ifa; i && rc; i = i->ifa_next) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)(void *)i->ifa_addr;

		if (!sin || sin->sin_family != AF_INET || !(i->ifa_flags & IFF_UP) ||
		    (i->ifa_flags & IFF_LOOPBACK))
			continue;
		if (inet_ntop(AF_INET, &sin->sin_addr, buf, (socklen_t)len))
			rc = 0;
	}
	freeifaddrs(ifa);
	return rc;
}

/* Does option @arg (a "--name" or "--name=value" word) take the next word? */
static int takes_next(const char *arg, int *skip)
{
	static const char *const ours[] = { "submit", "time", "partition", "dry-run", NULL };
	const char *name = arg + 2, *eq = strchr(name, '=');
	size_t l = eq ? (size_t)(eq - name) : strlen(name);

	*skip = 0;
	for (int i = 0; ours[i]; i++)
		if (strlen(ours[i]) == l && strncmp(ours[i], name, l) == 0)
			*skip = 1;
	for (const struct option *op = opts; op->name; op++)
		if (strlen(op->name) == l && strncmp(op->name, name, l) == 0)
			return op->has_arg == required_argument && !eq;
	return 0;
}

/* --submit: write the batch script that runs this same launch inside the
 * allocation, then print it (--dry-run) or give it to sbatch. */
static int slurm_submit(struct dp_cli *cli, const struct dp_recipe *r, const struct launch_opts *o,
			int argc, char **argv, int recipe_idx)
{
	const char **av = calloc((size_t)argc + 4, sizeof(*av));
	char self[PATH_MAX], rpath[PATH_MAX], jobid[64];
	const char *dpctl = getenv("DPCTL");
	struct dp_slurm_job job = { 0 };
	struct dp_err e = { 0 };
	struct dp_buf script;
	int k = 0, rc;
	ssize_t n;

	dp_buf_init(&script, 1 << 20);
	if (!av) {
		rc = dp_cli_error(cli, EX_OSERR, "launch: out of memory");
		goto out;
	}
	if (!dpctl || !*dpctl) {
		n = readlink("/proc/self/exe", self, sizeof(self) - 1);
		if (n <= 0) {
			rc = dp_cli_error(cli, EX_OSERR, "launch: cannot find dpctl itself");
			goto out;
		}
		self[n] = '\0';
		dpctl = self;
	}
	av[k++] = dpctl;
	av[k++] = "launch";
	/* the same options, minus the ones that only concern submitting */
	for (int i = 1; i < recipe_idx; i++) {
		int skip = 0, next = 0;

		if (strncmp(argv[i], "--", 2) == 0)
			next = takes_next(argv[i], &skip);
		if (skip) {
			i += next;
			continue;
		}
		av[k++] = argv[i];
		if (next && i + 1 < recipe_idx)
			av[k++] = argv[++i];
	}
	if (strstr(argv[recipe_idx], "://") || !realpath(argv[recipe_idx], rpath))
		av[k++] = argv[recipe_idx];
	else
		av[k++] = rpath;
	av[k] = NULL;
	job.job_name = r->model.name;
	job.nodes = (int)dp_hostlist_count(r->cluster.hosts);
	job.ntasks_per_node = r->cluster.gpus;
	job.gpus_per_node = r->train.backend == DP_RECIPE_BACKEND_CUDA ? r->cluster.gpus : 0;
	job.time = o->time;
	job.partition = o->partition;
	job.argv = av;
	if (dp_slurm_sbatch_script(&job, &script, &e)) {
		rc = dp_cli_error(cli, EX_DATAERR, "%s", e.msg);
		goto out;
	}
	if (o->dry_run) {
		(void)fputs(dp_buf_str(&script), cli->out);
		rc = EX_OK;
		goto out;
	}
	if (dp_slurm_submit(getenv("DP_SBATCH"), dp_buf_str(&script), jobid, sizeof(jobid), &e)) {
		rc = dp_cli_error(cli, e.code == ENOENT ? EX_UNAVAILABLE : EX_SOFTWARE, "%s",
				  e.msg);
		goto out;
	}
	if (cli->json)
		(void)fprintf(cli->out, "{\"job_id\": \"%s\"}\n", jobid);
	else
		(void)fprintf(cli->out, "%s\n", jobid);
	if (!cli->quiet && !cli->json)
		(void)fprintf(cli->err, "dpctl: launch: submitted batch job %s\n", jobid);
	rc = EX_OK;
out:
	dp_buf_release(&script);
	free(av);
	return rc;
}

/* Fill the run from a recipe: hosts, ranks per host, ssh options, health
 * timeouts (options given on the command line win), the layout and the
 * recipe's environment as "NAME=value" strings.  Returns an exit code. */
static int recipe_setup(struct dp_cli *cli, const char *path, struct launch_opts *o,
			struct dp_recipe **recipe, struct dp_plan **plan, char ***renv,
			const char **hosts, int *nhosts, long *per_host,
			struct dp_launch_opts *lopts, struct dp_ctl_cfg *cfg)
{
	struct dp_recipe *r;
	struct dp_err e = { 0 };
	size_t n;
	int code = dp_cli_load_recipe(cli, path, recipe);

	if (code)
		return code;
	r = *recipe;
	if (dp_plan_from_recipe(r, plan, &e))
		return dp_cli_error(cli, EX_DATAERR, "%s", e.msg);
	*renv = calloc(r->n_env + 1, sizeof(char *));
	if (!*renv)
		return dp_cli_error(cli, EX_OSERR, "launch: out of memory");
	for (size_t i = 0; i < r->n_env; i++) {
		size_t len = strlen(r->env[i].name) + strlen(r->env[i].value) + 2;

		(*renv)[i] = malloc(len);
		if (!(*renv)[i])
			return dp_cli_error(cli, EX_OSERR, "launch: out of memory");
		(void)snprintf((*renv)[i], len, "%s=%s", r->env[i].name, r->env[i].value);
	}
	n = dp_hostlist_count(r->cluster.hosts);
	switch (r->cluster.launcher) {
	case DP_RECIPE_LAUNCH_LOCAL:
		o->nlocal = r->cluster.gpus; /* recipe check: local has exactly one host */
		break;
	case DP_RECIPE_LAUNCH_SSH:
		if (n > MAX_HOSTS)
			return dp_cli_error(
				cli, EX_UNAVAILABLE,
				"launch: %zu hosts; this build launches at most %d over ssh", n,
				MAX_HOSTS);
		for (size_t i = 0; i < n; i++)
			hosts[i] = dp_hostlist_get(r->cluster.hosts, i);
		*nhosts = (int)n;
		*per_host = r->cluster.gpus;
		if (!lopts->ssh_identity)
			lopts->ssh_identity = r->cluster.identity;
		lopts->ssh_user = r->cluster.user;
		lopts->ssh_port = r->cluster.port;
		if (r->cluster.known_hosts == DP_RECIPE_KH_ACCEPT_NEW)
			lopts->accept_new = 1;
		else if (r->cluster.known_hosts == DP_RECIPE_KH_OFF)
			return dp_cli_error(
				cli, EX_UNAVAILABLE,
				"%s: cluster.known_hosts 'off' is refused by the ssh launcher; "
				"use accept-new",
				r->path);
		break;
	default:
		code = slurm_setup(cli, r, o, hosts, nhosts, per_host, lopts);
		if (code)
			return code;
		break;
	}
	if (cfg->rendezvous_s <= 0)
		cfg->rendezvous_s = r->health.rendezvous_s;
	if (cfg->heartbeat_s <= 0)
		cfg->heartbeat_s = r->health.heartbeat_s;
	if (cfg->hang_timeout_s <= 0)
		cfg->hang_timeout_s = r->health.hang_timeout_s;
	cfg->max_restarts = r->health.max_restarts;
	return EX_OK;
}

/* --run-dir, notify.webhooks, metrics.*: the run id, the directory, the
 * notifier and the metrics object for the controller.  Failures here are
 * warnings: reporting never stops a run. */
static void reporting_setup(struct dp_cli *cli, const struct dp_recipe *r, struct dp_ctl_cfg *cfg,
			    char *run_id, size_t idlen, struct dp_notify **n, struct dp_metrics **m)
{
	struct dp_err e = { 0 };
	time_t now = time(NULL);
	struct tm tm;

	if (cfg->run_dir) {
		const char *base = strrchr(cfg->run_dir, '/');

		(void)snprintf(run_id, idlen, "%s", base && base[1] ? base + 1 : cfg->run_dir);
		if (mkdir(cfg->run_dir, 0755) != 0 && errno != EEXIST)
			(void)fprintf(cli->err, "dpctl: warning: cannot create '%s': %s\n",
				      cfg->run_dir, strerror(errno));
	} else {
		(void)gmtime_r(&now, &tm);
		(void)snprintf(run_id, idlen, "%s-%04d%02d%02dT%02d%02d%02dZ-%ld",
			       r && r->model.name ? "run" : "local", tm.tm_year + 1900,
			       tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
			       (long)getpid());
	}
	cfg->run_id = run_id;
	cfg->recipe = r ? r->path : NULL;
	if (r && r->notify.n_webhooks) {
		struct dp_notify_cfg nc = { .urls = (const char *const *)r->notify.webhooks,
					    .n_urls = r->notify.n_webhooks };

		if (dp_notify_new(&nc, n, &e))
			(void)fprintf(cli->err, "dpctl: warning: %s\n", e.msg);
		cfg->notify = *n;
	}
	if (cfg->run_dir || (r && r->metrics.push_url)) {
		struct dp_metrics_cfg mc = { .run_id = run_id,
					     .run_dir = cfg->run_dir,
					     .push_url = r ? r->metrics.push_url : NULL,
					     .interval_s = r ? r->metrics.interval_s : 0 };

		if (dp_metrics_new(&mc, m, &e))
			(void)fprintf(cli->err, "dpctl: warning: %s\n", e.msg);
		cfg->metrics = *m;
	}
}

/* After the run: the last webhooks and the final metrics, bounded. */
static void reporting_finish(struct dp_cli *cli, struct dp_notify *n, struct dp_metrics *m)
{
	struct dp_err e = { 0 };

	/* what is still pending after 3 s is dropped (and logged) by dp_notify_free() */
	if (n)
		(void)dp_notify_flush(n, 3000);
	if (m && dp_metrics_flush(m, 5000, &e) != 0)
		(void)fprintf(cli->err, "dpctl: warning: %s\n", e.msg);
	dp_notify_free(n);
	dp_metrics_free(m);
}

static int cmd_launch(struct dp_cli *cli, int argc, char **argv)
{
	struct launch_opts o = { .nlocal = 0,
				 .fake_steps = 20,
				 .fake_step_ms = 20,
				 .fail_rank = -1,
				 .fail_code = 3,
				 .hang_rank = -1,
				 .absent_rank = -1 };
	struct dp_ctl_cfg cfg = { 0 };
	struct dp_ctl_result res;
	struct dp_launch_rank *ranks = NULL;
	struct rank_args *args = NULL;
	struct dp_launch_spec spec;
	struct dp_err err = { 0 };
	char wbuf[PATH_MAX], hostbuf[4096], bindbuf[64];
	const char *hosts[MAX_HOSTS];
	struct dp_launch_opts lopts = { 0 };
	struct dp_recipe *recipe = NULL;
	struct dp_plan *plan = NULL;
	char **renv = NULL;
	long port = 0, restarts = -1, per_host = 1, ssh_port = 0, nranks;
	int c, rc, li = -1, nhosts = 0;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+h", opts, &li)) != -1) {
		double *d = NULL;
		long *l = NULL, lo = 0, hi = 0;
		char name[40];

		switch (c) {
		case 'h':
			return dp_cli_help(cli, &dp_cmd_launch);
		case OPT_DRY_RUN:
			o.dry_run = 1;
			continue;
		case OPT_SUBMIT:
			o.submit = 1;
			continue;
		case OPT_TIME:
			o.time = optarg;
			continue;
		case OPT_PARTITION:
			o.partition = optarg;
			continue;
		case OPT_RUN_DIR:
			cfg.run_dir = optarg;
			continue;
		case OPT_FAKE_CHILD:
			o.spawn_child = 1;
			continue;
		case OPT_BIND:
			cfg.bind_addr = optarg;
			continue;
		case OPT_WORKER:
			o.worker = optarg;
			continue;
		case OPT_SSH:
			(void)snprintf(hostbuf, sizeof(hostbuf), "%s", optarg);
			nhosts = split_hosts(hostbuf, hosts, MAX_HOSTS);
			if (nhosts <= 0 || strlen(optarg) >= sizeof(hostbuf))
				return dp_cli_usage_error(cli, "launch ",
							  "--ssh: '%s' is not a list of 1 to %d "
							  "hosts separated by commas",
							  optarg, MAX_HOSTS);
			continue;
		case OPT_SSH_IDENTITY:
			lopts.ssh_identity = optarg;
			continue;
		case OPT_KNOWN_HOSTS:
			lopts.known_hosts = optarg;
			continue;
		case OPT_ACCEPT_NEW:
			lopts.accept_new = 1;
			continue;
		case OPT_PER_HOST:
			l = &per_host, lo = 1, hi = MAX_LOCAL;
			break;
		case OPT_SSH_PORT:
			l = &ssh_port, lo = 1, hi = 65535;
			break;
		case OPT_FAKE_FAIL:
			if (parse_triple(cli, "--fake-fail", optarg, &o.fail_rank, &o.fail_step,
					 &o.fail_code))
				return EX_USAGE;
			continue;
		case OPT_FAKE_HANG:
			if (parse_triple(cli, "--fake-hang", optarg, &o.hang_rank, &o.hang_step,
					 NULL))
				return EX_USAGE;
			continue;
		case OPT_RENDEZVOUS:
			d = &cfg.rendezvous_s;
			break;
		case OPT_HEARTBEAT:
			d = &cfg.heartbeat_s;
			break;
		case OPT_HANG:
			d = &cfg.hang_timeout_s;
			break;
		case OPT_GRACE:
			d = &cfg.grace_s;
			break;
		case OPT_LOCAL:
			l = &o.nlocal, lo = 1, hi = MAX_LOCAL;
			break;
		case OPT_RESTARTS:
			l = &restarts, lo = 0, hi = 100;
			break;
		case OPT_PORT:
			l = &port, lo = 0, hi = 65535;
			break;
		case OPT_FAKE_STEPS:
			o.fake_given = 1;
			l = &o.fake_steps, lo = 0, hi = 1000000000;
			break;
		case OPT_FAKE_STEP_MS:
			l = &o.fake_step_ms, lo = 0, hi = 3600000;
			break;
		case OPT_FAKE_ABSENT:
			l = &o.absent_rank, lo = 0, hi = MAX_LOCAL - 1;
			break;
		default:
			return dp_cli_bad_option(cli, "launch", argc, argv);
		}
		(void)snprintf(name, sizeof(name), "--%s", li >= 0 ? opts[li].name : "?");
		if (d && dp_parse_double(optarg, 0.001, 86400, d, name, &err) != 0)
			return dp_cli_usage_error(cli, "launch ", "%s", err.msg);
		if (l && dp_parse_long(optarg, lo, hi, l, name, &err) != 0)
			return dp_cli_usage_error(cli, "launch ", "%s", err.msg);
	}
	if (optind < argc) {
		if (optind + 1 < argc)
			return dp_cli_usage_error(cli, "launch ",
						  "expected one RECIPE, got '%s' too",
						  argv[optind + 1]);
		if (o.nlocal > 0 || nhosts > 0)
			return dp_cli_usage_error(cli, "launch ",
						  "give a RECIPE or --local/--ssh, not both");
		o.recipe_mode = 1;
		rc = recipe_setup(cli, argv[optind], &o, &recipe, &plan, &renv, hosts, &nhosts,
				  &per_host, &lopts, &cfg);
		if (rc)
			goto out;
		if (!o.fake_given && !o.dry_run) {
			rc = dp_cli_error(
				cli, EX_UNAVAILABLE,
				"launch: dpworker cannot train from a recipe yet (the executor is "
				"not wired to the control plane); --dry-run shows the run, "
				"--fake-steps N exercises the launch path");
			goto out;
		}
		if (o.submit && !o.slurm) {
			rc = dp_cli_usage_error(cli, "launch ",
						"--submit needs a recipe with launcher: slurm");
			goto out;
		}
		if (o.submit) {
			rc = slurm_submit(cli, recipe, &o, argc, argv, optind);
			goto out;
		}
	} else if (o.submit) {
		rc = dp_cli_usage_error(cli, "launch ", "--submit needs a RECIPE");
		goto out;
	}
	if ((o.nlocal > 0) == (nhosts > 0)) {
		rc = dp_cli_usage_error(cli, "launch ",
					"say where to run: --local N or --ssh HOSTS (one of them)");
		goto out;
	}
	nranks = o.nlocal > 0 ? o.nlocal : nhosts * per_host;
	if (nranks > MAX_LOCAL) {
		rc = dp_cli_usage_error(cli, "launch ", "%ld ranks is more than %d", nranks,
					MAX_LOCAL);
		goto out;
	}
	if (o.fail_rank >= nranks || o.hang_rank >= nranks || o.absent_rank >= nranks) {
		rc = dp_cli_usage_error(cli, "launch ", "a --fake-* rank is outside 0..%ld",
					nranks - 1);
		goto out;
	}
	cfg.port = (int)port;
	if (restarts >= 0)
		cfg.max_restarts = (int)restarts;
	if (!o.worker)
		o.worker = find_worker(wbuf, sizeof(wbuf));

	ranks = calloc((size_t)nranks, sizeof(*ranks));
	args = calloc((size_t)nranks, sizeof(*args));
	if (!ranks || !args) {
		rc = dp_cli_error(cli, EX_OSERR, "launch: out of memory");
		goto out;
	}
	for (long i = 0; i < nranks; i++) {
		build_args(&o, i, &args[i]);
		ranks[i].rank = (int)i;
		ranks[i].host = nhosts ? hosts[i / per_host] : "localhost";
		ranks[i].local_index = (int)(nhosts ? i % per_host : i);
		ranks[i].argv = args[i].argv;
		if (plan) {
			build_env(recipe, renv, &plan->ranks[i], &args[i]);
			ranks[i].env = args[i].env;
		}
	}
	spec.ranks = ranks;
	spec.nranks = (size_t)nranks;
	if (o.dry_run) {
		rc = dp_launch_spec_check(&spec, &err)
			     ? dp_cli_error(cli, EX_SOFTWARE, "%s", err.msg)
			     : print_dry_run(cli, &spec);
		goto out;
	}
	cfg.backend = o.slurm ? "slurm" : nhosts ? "ssh" : "local";
	if (o.slurm) {
		cfg.launch = &lopts;
		if (!cfg.bind_addr) {
			if (slurm_bind_addr(bindbuf, sizeof(bindbuf)) != 0) {
				rc = dp_cli_error(cli, EX_UNAVAILABLE,
						  "launch: no address for the workers to reach "
						  "this node; say --bind ADDR");
				goto out;
			}
			cfg.bind_addr = bindbuf;
		}
	} else if (nhosts) {
		if (ssh_port)
			lopts.ssh_port = (int)ssh_port;
		else if (!lopts.ssh_port)
			lopts.ssh_port = 22;
		cfg.launch = &lopts;
		if (!cfg.bind_addr) {
			if (route_addr(hosts[0], bindbuf, sizeof(bindbuf)) != 0) {
				rc = dp_cli_error(cli, EX_UNAVAILABLE,
						  "launch: no route to '%s'; say --bind ADDR",
						  hosts[0]);
				goto out;
			}
			cfg.bind_addr = bindbuf;
		}
	}
	cfg.out = cli->json ? cli->err : cli->out;
	{
		struct dp_notify *notify = NULL;
		struct dp_metrics *metrics = NULL;
		char run_id[256];

		reporting_setup(cli, recipe, &cfg, run_id, sizeof(run_id), &notify, &metrics);
		rc = dp_ctl_run(&cfg, &spec, &res, &err);
		reporting_finish(cli, notify, metrics);
	}
	if (rc < 0)
		rc = dp_cli_error(cli, dp_cli_exit_code(rc), "%s", err.msg);
	else
		rc = report(cli, &spec, &res);
out:
	free(ranks);
	free(args);
	for (size_t i = 0; renv && recipe && i < recipe->n_env; i++)
		free(renv[i]);
	free(renv);
	dp_plan_free(plan);
	dp_recipe_free(recipe);
	dp_hostlist_free(o.alloc);
	return rc;
}

const struct dp_cli_cmd dp_cmd_launch = {
	.name = "launch",
	.fn = cmd_launch,
	.opts = opts,
	.summary = "launch a training run from a recipe",
	.usage =
		"usage: dpctl launch [options] --local N | --ssh HOSTS\n"
		"       dpctl launch [options] RECIPE\n"
		"\n"
		"Start dpworker ranks, hold the rendezvous, watch heartbeats, and on the first\n"
		"failure stop every rank and report the root cause.  Exits with the failing\n"
		"rank's status (128+N for signal N, 124 for a hang, 69 for a failed rendezvous).\n"
		"With a RECIPE, hosts, ranks per host, ssh settings and health timeouts come\n"
		"from the recipe (options given here win) and every rank gets its layout in\n"
		"its environment (DP_PP_RANK, DP_EP_RANK, DP_DP_RANK, DP_STAGES, ...) plus the\n"
		"recipe's env section; --dry-run prints each rank's argv and environment.\n"
		"\n"
		"Options:\n"
		"  --local N             run N ranks on this machine (the local backend)\n"
		"  --ssh HOSTS           run on these hosts (comma-separated) over ssh\n"
		"  --per-host N          ranks per host with --ssh (1)\n"
		"  --ssh-port P          ssh port (22)\n"
		"  --ssh-identity FILE   private key (default: ssh-agent, then ~/.ssh/id_*)\n"
		"  --known-hosts FILE    host keys to trust (~/.ssh/known_hosts)\n"
		"  --accept-new-host-keys  add unknown host keys (a changed key is refused)\n"
		"  --rendezvous-s S      fail if not every rank is ready after S seconds (60)\n"
		"  --heartbeat-s S       seconds between worker heartbeats (1)\n"
		"  --hang-timeout-s S    a rank without step progress for S seconds is hung (30)\n"
		"  --grace-s S           SIGTERM to SIGKILL grace period when stopping (5)\n"
		"  --max-restarts N      restart the whole run up to N times after a failure (0)\n"
		"  --bind ADDR           IPv4 address the controller listens on (127.0.0.1;\n"
		"                        with --ssh: the address that routes to the first host)\n"
		"  --port P              controller port, 0 = any free port (0)\n"
		"  --worker PATH         dpworker binary (default: $DPWORKER, next to dpctl, PATH)\n"
		"  --dry-run             print what would be started, start nothing\n"
		"  --submit              (launcher: slurm) submit a batch job that runs this\n"
		"                        launch inside the allocation; prints the job id\n"
		"                        (--dry-run: print the batch script)\n"
		"  --time T              batch job time limit for --submit (sbatch --time)\n"
		"  --partition P         batch job partition for --submit\n"
		"  --run-dir DIR         write events.jsonl and metrics.prom there (for\n"
		"                        dpctl report); created if missing\n"
		"  -h, --help            print this help\n"
		"\n"
		"Test aids (dpworker's fake mode; no training happens):\n"
		"  --fake-steps N        steps each rank runs (20)\n"
		"  --fake-step-ms MS     duration of one step (20)\n"
		"  --fake-fail R:K[:C]   rank R exits with status C (3) at step K\n"
		"  --fake-hang R:K       rank R stops making progress at step K\n"
		"  --fake-absent R       rank R never connects\n"
		"  --fake-spawn-child    every rank leaves a sleeping child behind\n",
};
