/* launcher/cmd_launch.c - `dpctl launch`.
 *
 * `dpctl launch RECIPE` trains: every rank gets its layout and the model in
 * its environment (DP_PP_RANK, DP_SCHEDULE, DP_MODEL, ...), the controller
 * hands the ranks each other's PP addresses, and the run's STEP and
 * TIMELINE frames feed a train report (launcher/dp_train_report.h): the
 * step losses as they complete, and at the end a summary and the merged
 * Chrome trace in the run directory.  What the executor cannot run yet
 * (ep > 1, dp > 1, ...) is refused up front naming the recipe key and line.
 * --local N / --ssh HOSTS (and --fake-steps with a recipe) run dpworker's
 * --fake-* test mode, so the launch path can be tested on its own.
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
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <yaml.h>

#include "common/dp_log.h"
#include "common/dp_util.h"
#include "launcher/cli_int.h"
#include "launcher/ctl_launch.h"
#include "launcher/dp_launcher.h"
#include "launcher/dp_metrics.h"
#include "launcher/dp_notify.h"
#include "launcher/dp_plan.h"
#include "launcher/dp_train_report.h"
#include "launcher/ctl_proto.h"
#include "launcher/dp_preflight.h"
#include "launcher/dp_progress.h"
#include "launcher/dp_slurm.h"
#include "worker/dp_gpu.h"
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
	/* pre-flight and run output (health) */
	OPT_PREFLIGHT,
	OPT_MIN_DISK,
	OPT_MAX_CLOCK,
	OPT_RUN_DIR,
	OPT_PREFIX,
	OPT_PROGRESS_S,
	OPT_SUBMIT,
	OPT_TIME,
	OPT_PARTITION,
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
	{ "preflight", required_argument, NULL, OPT_PREFLIGHT },
	{ "min-free-disk-gb", required_argument, NULL, OPT_MIN_DISK },
	{ "max-clock-offset-s", required_argument, NULL, OPT_MAX_CLOCK },
	{ "run-dir", required_argument, NULL, OPT_RUN_DIR },
	{ "prefix", required_argument, NULL, OPT_PREFIX },
	{ "progress-s", required_argument, NULL, OPT_PROGRESS_S },
	{ "submit", no_argument, NULL, OPT_SUBMIT },
	{ "time", required_argument, NULL, OPT_TIME },
	{ "partition", required_argument, NULL, OPT_PARTITION },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

#define MAX_LOCAL 1024 /* --local N: ranks on this machine */
#define MAX_ARGS  24
/* Hosts, and spares, one launch takes (cluster.hosts, cluster.spares,
 * --ssh).  The lists live on the heap; the caps only stop a runaway
 * hostlist ("n[1-1000000]") from allocating per-rank state for millions of
 * ranks (a few KiB each, here and in the controller). */
#define MAX_HOSTS 65536
#define MAX_RANKS 524288 /* MAX_HOSTS x 8 ranks per host */

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
	/* ssh: recipe cluster.spares; the array is ours (freed by
	 * cmd_launch), the names are borrowed from the recipe */
	const char **spares;
	size_t nspares;
};

/* One rank's argv as build_args() makes it (scratch, copied into a strtab). */
struct rank_args {
	const char *argv[MAX_ARGS];
	char num[6][24];
};

/* ---- per-rank argv and environment, shared ----------------------------------
 *
 * At 524288 ranks a fixed struct dp_plan_env per rank (about 6 KiB, mostly
 * the DP_CKPT_DIR buffer) would cost 3 GiB, though most of it is the same for
 * every rank.  So each rank's vectors go through a strtab: every distinct
 * string is stored once, and so is every distinct vector of them (all ranks
 * of a --fake run share one argv), sized to what it holds.  The storage is an
 * arena freed at once by strtab_release(); the pointers it hands out live
 * until then. */

struct strtab_item {
	uint64_t hash;
	size_t len;
	_Alignas(max_align_t) unsigned char data[];
};

struct strtab_block {
	struct strtab_block *next;
	_Alignas(max_align_t) unsigned char mem[];
};

struct strtab {
	struct strtab_block *blocks; /* newest first */
	size_t used, size;	     /* of the newest block's mem */
	struct strtab_item **set;    /* open addressing; cap a power of two */
	size_t cap, n;
};

#define STRTAB_BLOCK ((size_t)1 << 20)

static void strtab_release(struct strtab *t)
{
	while (t->blocks) {
		struct strtab_block *b = t->blocks;

		t->blocks = b->next;
		free(b);
	}
	free(t->set);
	memset(t, 0, sizeof(*t));
}

static void *strtab_alloc(struct strtab *t, size_t len)
{
	const size_t a = _Alignof(max_align_t);

	len = (len + a - 1) / a * a;
	if (!t->blocks || t->size - t->used < len) {
		size_t size = len > STRTAB_BLOCK ? len : STRTAB_BLOCK;
		struct strtab_block *b = malloc(sizeof(*b) + size);

		if (!b)
			return NULL;
		b->next = t->blocks;
		t->blocks = b;
		t->used = 0;
		t->size = size;
	}
	t->used += len;
	return t->blocks->mem + t->used - len;
}

static int strtab_grow(struct strtab *t)
{
	size_t ncap = t->cap ? 2 * t->cap : 1024;
	struct strtab_item **ns = calloc(ncap, sizeof(struct strtab_item *));

	if (!ns)
		return -ENOMEM;
	for (size_t i = 0; i < t->cap; i++) {
		size_t j;

		if (!t->set[i])
			continue;
		for (j = t->set[i]->hash & (ncap - 1); ns[j]; j = (j + 1) & (ncap - 1))
			;
		ns[j] = t->set[i];
	}
	free(t->set);
	t->set = ns;
	t->cap = ncap;
	return 0;
}

/* The stored copy of @len bytes at @data (the same pointer for equal bytes),
 * or NULL on ENOMEM. */
static const void *strtab_intern(struct strtab *t, const void *data, size_t len)
{
	const unsigned char *p = data;
	uint64_t h = 14695981039346656037ull; /* FNV-1a */
	struct strtab_item *it;
	size_t j;

	for (size_t i = 0; i < len; i++)
		h = (h ^ p[i]) * 1099511628211ull;
	if (2 * (t->n + 1) > t->cap && strtab_grow(t) != 0)
		return NULL;
	for (j = h & (t->cap - 1); t->set[j]; j = (j + 1) & (t->cap - 1)) {
		it = t->set[j];
		if (it->hash == h && it->len == len && memcmp(it->data, data, len) == 0)
			return it->data;
	}
	it = strtab_alloc(t, sizeof(*it) + len);
	if (!it)
		return NULL;
	it->hash = h;
	it->len = len;
	memcpy(it->data, data, len);
	t->set[j] = it;
	t->n++;
	return it->data;
}

/* @v (NULL-terminated, at most @max strings) with its strings and itself
 * stored once; NULL on ENOMEM. */
static const char *const *strtab_vec(struct strtab *t, const char *const *v, size_t max)
{
	const char *tmp[DP_PLAN_ENV_MAX + MAX_ARGS + 1] = { 0 };
	size_t n = 0;

	for (; n < max && n + 1 < sizeof(tmp) / sizeof(tmp[0]) && v[n]; n++) {
		tmp[n] = strtab_intern(t, v[n], strlen(v[n]) + 1);
		if (!tmp[n])
			return NULL;
	}
	tmp[n] = NULL;
	return strtab_intern(t, tmp, (n + 1) * sizeof(tmp[0]));
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

/* Split --ssh "a,b,c" into *@hosts, names pointing into *@buf (a copy of
 * @list).  Both are the caller's to free, also on failure.  Returns the
 * count, -EINVAL for an empty name, -E2BIG past MAX_HOSTS, or -ENOMEM. */
static int split_hosts(const char *list, char **buf, const char ***hosts)
{
	size_t n = 1;
	int k = 0;

	for (const char *p = list; *p; p++)
		n += *p == ',';
	if (n > MAX_HOSTS)
		return -E2BIG;
	*buf = strdup(list);
	*hosts = calloc(n, sizeof(**hosts));
	if (!*buf || !*hosts)
		return -ENOMEM;
	for (char *p = *buf, *comma; p; p = comma ? comma + 1 : NULL) {
		comma = strchr(p, ',');
		if (comma)
			*comma = '\0';
		if (!*p)
			return -EINVAL;
		(*hosts)[k++] = p;
	}
	return k;
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

/* The controller holds a connection per rank and an ssh socket per host (a
 * local run: a pidfd and two pipes per rank): past about 1000 ranks the
 * usual soft limit of 1024 descriptors runs out.  Raise it toward the hard
 * limit, and warn when even that is short. */
static void raise_nofile(struct dp_cli *cli, size_t need)
{
	long have = dp_nofile_raise(need);

	if (have < 0 || (size_t)have < need)
		(void)fprintf(cli->err,
			      "dpctl: warning: launch: this run needs about %zu open files; "
			      "cannot raise the limit that far (ulimit -n)\n",
			      need);
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
	if (dp_parse_long(buf, 0, MAX_RANKS - 1, a, opt, &err) ||
	    dp_parse_long(p1, 1, 1000000000, b, opt, &err) ||
	    (p2 && dp_parse_long(p2, 1, 255, c, opt, &err)))
		return dp_cli_usage_error(cli, "launch ", "%s", err.msg);
	return 0;
}

/* @nhosts: the hosts the ranks are on (0: this machine). */
static int print_dry_run(struct dp_cli *cli, const struct dp_launch_spec *spec,
			 const struct launch_opts *lo, int nhosts)
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
		json_t *sp = json_array();
		json_t *top;

		for (size_t i = 0; sp && i < lo->nspares; i++)
			(void)json_array_append_new(sp, json_string(lo->spares[i]));
		top = json_pack("{s:o, s:[s,s,s,s,s,s,s], s:o, s:i}", "ranks", arr, "env",
				"DP_JOB_TOKEN", "DP_CONTROLLER", "DP_RANK", "DP_WORLD_SIZE",
				"DP_LOCAL_RANK", "DP_HEARTBEAT_S", "DP_RENDEZVOUS_S", "spares", sp,
				"hosts", nhosts ? nhosts : 1);

		(void)json_dumpf(top, cli->out, JSON_INDENT(2));
		(void)fputc('\n', cli->out);
		json_decref(top);
	} else {
		(void)fputs("environment of every rank: DP_JOB_TOKEN (a fresh secret per run), "
			    "DP_CONTROLLER, DP_RANK, DP_WORLD_SIZE, DP_LOCAL_RANK, DP_HEARTBEAT_S, "
			    "DP_RENDEZVOUS_S\n",
			    cli->out);
		(void)fprintf(cli->out, "%zu rank%s on %d host%s\n", spec->nranks,
			      spec->nranks == 1 ? "" : "s", nhosts ? nhosts : 1,
			      nhosts > 1 ? "s" : "");
		if (lo->nspares) {
			(void)fputs("spares (replace a failed node on a restart):", cli->out);
			for (size_t i = 0; i < lo->nspares; i++)
				(void)fprintf(cli->out, " %s", lo->spares[i]);
			(void)fputc('\n', cli->out);
		}
	}
	return EX_OK;
}

/* @train (a training run's "train" object, taken over; NULL if none) is
 * the last line of the --json event stream. */
static int report(struct dp_cli *cli, const struct dp_launch_spec *spec,
		  const struct dp_ctl_result *res, json_t *train)
{
	/* with --json the event stream (ending in "done") is the report; a
	 * training run adds one "train" event after it */
	(void)spec;
	if (cli->json && train) {
		json_t *ev = json_pack("{s:s}", "event", "train");

		if (ev && json_object_update(ev, train) == 0) {
			(void)json_dumpf(ev, cli->out, JSON_COMPACT | JSON_PRESERVE_ORDER);
			(void)fputc('\n', cli->out);
			(void)fflush(cli->out);
		}
		json_decref(ev);
	}
	json_decref(train);
	if (res->outcome == DP_CTL_OK) {
		if (!cli->quiet && !cli->json)
			(void)fprintf(
				cli->err,
				"dpctl: launch: %zu ranks done in %.2f s (all ready after %.3f s)\n",
				spec->nranks, res->run_s, res->ready_s);
		return EX_OK;
	}
	(void)dp_cli_error(cli, res->exit_code, "root cause: %s", res->cause);
	/* pre-flight: one line per failing node */
	for (int i = 0; i < res->npf_lines; i++)
		(void)fprintf(cli->err, "  pre-flight failed: %s\n", res->pf_lines[i]);
	if (res->npf_bad > res->npf_lines)
		(void)fprintf(cli->err, "  ... and %d more nodes\n", res->npf_bad - res->npf_lines);
	if (res->ntail) {
		(void)fprintf(cli->err, "  last output of rank %d on %s:\n", res->failed_rank,
			      res->failed_host);
		for (int i = 0; i < res->ntail; i++)
			(void)fprintf(cli->err, "    %s\n", res->tail[i]);
	}
	return res->exit_code ? res->exit_code : EX_SOFTWARE;
}

/* Line (1-based) of the dotted mapping key @dotted ("parallel.ep") in the
 * YAML file @path, or 0 if it is not there (a default) or cannot be read. */
static unsigned key_line(const char *path, const char *dotted)
{
	enum { DEPTH = 8 };
	char keys[DEPTH][64];
	int is_map[DEPTH], want_key[DEPTH], depth = -1, done = 0;
	unsigned line = 0;
	yaml_parser_t p;
	yaml_event_t ev;
	FILE *f = fopen(path, "r");

	if (!f)
		return 0;
	if (!yaml_parser_initialize(&p)) {
		(void)fclose(f);
		return 0;
	}
	yaml_parser_set_input_file(&p, f);
	while (!done && yaml_parser_parse(&p, &ev)) {
		switch (ev.type) {
		case YAML_MAPPING_START_EVENT:
		case YAML_SEQUENCE_START_EVENT:
			if (++depth >= DEPTH) {
				done = 1;
				break;
			}
			is_map[depth] = ev.type == YAML_MAPPING_START_EVENT;
			want_key[depth] = 1;
			break;
		case YAML_MAPPING_END_EVENT:
		case YAML_SEQUENCE_END_EVENT:
			if (--depth >= 0 && is_map[depth])
				want_key[depth] = 1;
			break;
		case YAML_SCALAR_EVENT:
			if (depth < 0 || !is_map[depth])
				break;
			if (want_key[depth]) {
				char full[DEPTH * 64] = "";
				size_t off = 0;

				(void)snprintf(keys[depth], sizeof(keys[depth]), "%s",
					       (const char *)ev.data.scalar.value);
				for (int i = 0; i <= depth && off < sizeof(full); i++) {
					int n = snprintf(full + off, sizeof(full) - off, "%s%s",
							 i ? "." : "", is_map[i] ? keys[i] : "");

					off += n > 0 ? (size_t)n : 0;
				}
				if (strcmp(full, dotted) == 0) {
					line = (unsigned)ev.start_mark.line + 1;
					done = 1;
				}
				want_key[depth] = 0;
			} else {
				want_key[depth] = 1;
			}
			break;
		case YAML_STREAM_END_EVENT:
			done = 1;
			break;
		default:
			break;
		}
		yaml_event_delete(&ev);
	}
	yaml_parser_delete(&p);
	(void)fclose(f);
	return line;
}

/* A recipe key the executor cannot run as it is: FILE:LINE: key 'k': why. */
static int refuse_key(struct dp_cli *cli, const struct dp_recipe *r, const char *key,
		      const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int refuse_key(struct dp_cli *cli, const struct dp_recipe *r, const char *key,
		      const char *fmt, ...)
{
	unsigned line = key_line(r->path, key);
	char why[512], where[PATH_MAX + 32];
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (line)
		(void)snprintf(where, sizeof(where), "%s:%u", r->path, line);
	else
		(void)snprintf(where, sizeof(where), "%s", r->path);
	return dp_cli_error(cli, EX_UNAVAILABLE, "%s: key '%s': %s", where, key, why);
}

static enum dp_sched_algo recipe_algo(const struct dp_recipe *r)
{
	switch (r->parallel.schedule) {
	case DP_RECIPE_SCHED_DUALPIPEV:
		return DP_SCHED_DUALPIPEV;
	case DP_RECIPE_SCHED_1F1B:
		return DP_SCHED_1F1B;
	case DP_RECIPE_SCHED_ZB1P:
		return DP_SCHED_ZB1P;
	default:
		return DP_SCHED_DUALPIPE;
	}
}

/* What the CPU pipeline executor can train (worker/train_ctl.c): dp x pp x ep,
 * its model's shape, a schedule the algorithm accepts.  EX_OK or the code. */
static int check_trainable(struct dp_cli *cli, const struct dp_recipe *r)
{
	struct dp_sched_cfg sc = { .pp = r->parallel.pp, .micro = r->parallel.micro_batches };
	struct dp_err e = { 0 };
	int nstages;

	/* ep > 1 trains: the recipe check already wants experts % ep == 0, the
	 * executor needs it too (E / ep routed experts per EP rank) */
	if (r->model.experts % r->parallel.ep != 0)
		return refuse_key(cli, r, "parallel.ep",
				  "ep %d: the %d routed experts do not split over the EP ranks",
				  r->parallel.ep, r->model.experts);
	if ((long)r->parallel.micro_batches * r->parallel.ep > (1L << 20))
		return refuse_key(cli, r, "parallel.ep",
				  "ep %d x %d micro-batches is more than the executor's %ld",
				  r->parallel.ep, r->parallel.micro_batches, 1L << 20);
	if ((long)r->parallel.pp * r->parallel.ep > 4096)
		return refuse_key(cli, r, "parallel.ep",
				  "pp %d x ep %d is more than the executor's 4096 ranks",
				  r->parallel.pp, r->parallel.ep);
	if (r->parallel.pp - 1 + r->parallel.ep - 1 > DP_CTL_WANT_MAX)
		return refuse_key(cli, r, "parallel.ep",
				  "pp %d + ep %d: a rank would need more than %d peers",
				  r->parallel.pp, r->parallel.ep, DP_CTL_WANT_MAX);
	/* dp replicas: a step has micro * ep * dp micro-batches, and a rank
	 * links to its dp - 1 replicas as well (docs/executor.md) */
	if ((long)r->parallel.micro_batches * r->parallel.ep * r->parallel.dp > (1L << 20))
		return refuse_key(
			cli, r, "parallel.dp",
			"dp %d x ep %d x %d micro-batches is more than the executor's %ld",
			r->parallel.dp, r->parallel.ep, r->parallel.micro_batches, 1L << 20);
	if ((long)r->parallel.dp * r->parallel.pp * r->parallel.ep > 4096)
		return refuse_key(cli, r, "parallel.dp",
				  "dp %d x pp %d x ep %d is more than the executor's 4096 ranks",
				  r->parallel.dp, r->parallel.pp, r->parallel.ep);
	if ((long)r->parallel.pp - 1 + r->parallel.ep - 1 + r->parallel.dp - 1 > DP_CTL_WANT_MAX)
		return refuse_key(cli, r, "parallel.dp",
				  "pp %d + ep %d + dp %d: a rank would need more than %d peers",
				  r->parallel.pp, r->parallel.ep, r->parallel.dp, DP_CTL_WANT_MAX);
	/* train.batch is the global batch: each rank's micro-batch holds
	 * batch / (micro * dp * ep) sequences, and the model takes at most
	 * 2^20 tokens in one (worker/model_cpu.c) */
	if (dp_plan_seqs_per_micro(r) > (1L << 20) / r->model.seq_len) /* no overflow */
		return refuse_key(cli, r, "train.batch",
				  "%ld: %ld sequences of %d tokens per micro-batch (batch / "
				  "(micro_batches %d x dp %d x ep %d)) is more than the model's "
				  "%ld tokens",
				  r->train.batch, dp_plan_seqs_per_micro(r), r->model.seq_len,
				  r->parallel.micro_batches, r->parallel.dp, r->parallel.ep,
				  1L << 20);
	/* cuda with CUDA built: the pre-flight gate then wants a GPU on every node */
	if (r->train.backend == DP_RECIPE_BACKEND_CUDA && !dp_gpu_built())
		return refuse_key(cli, r, "train.backend",
				  "'cuda': dpctl was built without CUDA (rebuild with "
				  "WITH_CUDA=yes)");
	if (r->model.shared_experts != 1)
		return refuse_key(cli, r, "model.shared_experts",
				  "%d: the CPU model has exactly one shared expert",
				  r->model.shared_experts);
	if (r->model.dense_layers != 0)
		return refuse_key(cli, r, "model.dense_layers",
				  "%d: the CPU model has MoE layers only (0)",
				  r->model.dense_layers);
	/* an EPLB placement (dp_plan_places_experts): the executor takes up to
	 * 4096 redundant slots, and the ranks get the loads in DP_EXPERT_LOADS
	 * (launcher/plan_recipe.c) */
	if (dp_plan_places_experts(r) && r->model.redundant_experts > 4096)
		return refuse_key(cli, r, "model.redundant_experts",
				  "%d: the executor places at most 4096 redundant expert slots",
				  r->model.redundant_experts);
	if (dp_plan_places_experts(r) && r->model.expert_load && !r->model.expert_loads_env)
		return refuse_key(cli, r, "model.expert_loads",
				  "the loads are %zu bytes of DP_EXPERT_LOADS, more than the %d "
				  "the training ranks take through their environment (fewer "
				  "layers or experts, or no loads: uniform)",
				  r->model.expert_loads_bytes, DP_RECIPE_LOADS_ENV_MAX);
	sc.algo = recipe_algo(r);
	if (dp_sched_check(&sc, &e))
		return refuse_key(cli, r, "parallel.micro_batches", "%s", e.msg);
	nstages = sc.algo == DP_SCHED_DUALPIPEV ? 2 * r->parallel.pp : r->parallel.pp;
	if (nstages > r->model.layers + 1)
		return refuse_key(cli, r, "model.layers",
				  "%d layers cannot fill %d pipeline stages (need %d or more)",
				  r->model.layers, nstages, nstages - 1);
	return EX_OK;
}

/* ---- a training run ------------------------------------------------------------ */

struct train_run {
	struct dp_cli *cli;
	struct dp_train_report *tr;
	long steps, every;
	FILE *out;
	char run_dir[PATH_MAX];
	char trace[PATH_MAX + 16], svg[PATH_MAX + 16];
	int trace_ok, svg_ok;
	/* progress: the controller's heartbeat-based progress events carry
	 * per-rank loss shares, so a training run reports each completed step
	 * (exact loss, step tokens/s) from the train report instead */
	struct dp_progress *prog;
	double t0;   /* CLOCK_MONOTONIC of the controller's t = 0 */
	int attempt; /* of the last event */
	size_t nranks;
	uint64_t total;
};

static double mono_now(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void train_event(void *arg, const struct dp_ctl_event *ev)
{
	struct train_run *t = arg;

	t->t0 = mono_now() - ev->t;
	t->attempt = ev->attempt;
	if (ev->nranks)
		t->nranks = ev->nranks;
	if (ev->type != DP_CTL_EV_PROGRESS)
		dp_progress_event(t->prog, ev);
}

static void train_line(void *arg, int rank, const char *host, int stream, const char *line)
{
	struct train_run *t = arg;

	dp_progress_line(t->prog, rank, host, stream, line);
}

/* Step losses as they complete: the first, every steps/20th, the last. */
static void on_step(void *arg, uint64_t step, double loss, uint64_t tokens, double seconds)
{
	struct train_run *t = arg;

	if (t->prog) {
		struct dp_ctl_event ev = { .type = DP_CTL_EV_PROGRESS,
					   .t = mono_now() - t->t0,
					   .attempt = t->attempt,
					   .nranks = t->nranks,
					   .rank = -1,
					   .step = step + 1,
					   .total_steps = t->total,
					   .loss = loss,
					   .tokens_per_s =
						   seconds > 0 ? (double)tokens / seconds : NAN };

		dp_progress_event(t->prog, &ev);
	}
	if (!t->out || t->cli->quiet)
		return;
	if (step == 0 || (long)step + 1 == t->steps || (long)step % t->every == 0) {
		(void)fprintf(t->out, "step %llu loss %.6f (%.0f tokens/s)\n",
			      (unsigned long long)step, loss,
			      seconds > 0 ? (double)tokens / seconds : 0.0);
		(void)fflush(t->out);
	}
}

static int mkdir_p(const char *path)
{
	char buf[PATH_MAX];

	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0755) != 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, 0755) != 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* --run-dir, or $TMPDIR/dpctl-runs/<recipe>-<UTC time>-<pid>. */
static int make_run_dir(struct dp_cli *cli, const struct dp_recipe *r, const char *given,
			struct train_run *t)
{
	const char *tmp = getenv("TMPDIR"), *base = strrchr(r->path, '/');
	char stem[64], stamp[32];
	time_t now = time(NULL);
	struct tm tm;
	int rc;

	if (given) {
		(void)snprintf(t->run_dir, sizeof(t->run_dir), "%s", given);
	} else {
		(void)snprintf(stem, sizeof(stem), "%s", base ? base + 1 : r->path);
		stem[strcspn(stem, ".")] = '\0';
		(void)gmtime_r(&now, &tm);
		(void)strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", &tm);
		(void)snprintf(t->run_dir, sizeof(t->run_dir), "%s/dpctl-runs/%s-%s-%ld",
			       tmp && *tmp ? tmp : "/tmp", stem, stamp, (long)getpid());
	}
	rc = mkdir_p(t->run_dir);
	if (rc)
		return dp_cli_error(cli, EX_CANTCREAT,
				    "launch: cannot create run directory '%s': %s", t->run_dir,
				    strerror(-rc));
	(void)snprintf(t->trace, sizeof(t->trace), "%s/trace.json", t->run_dir);
	(void)snprintf(t->svg, sizeof(t->svg), "%s/timeline.svg", t->run_dir);
	return EX_OK;
}

/* After the run: summary (human, or the "train" object of --json), trace
 * and timeline.svg (the latter also from a failed run's partial timeline). */
static json_t *train_finish(struct train_run *t)
{
	struct dp_err e = { 0 };
	size_t n = dp_train_report_nsteps(t->tr);
	json_t *o = NULL;

	t->trace_ok = dp_train_report_write_trace(t->tr, t->trace, &e) == 0;
	if (!t->trace_ok)
		dp_log(DP_LOG_WARN, "launch", "no trace: %s", e.msg);
	t->svg_ok = dp_train_report_write_svg(t->tr, t->svg, &e) == 0;
	if (!t->svg_ok)
		dp_log(DP_LOG_WARN, "launch", "no timeline.svg: %s", e.msg);
	if (t->cli->json) {
		json_t *losses = json_array();

		for (size_t i = 0; i < n; i++)
			(void)json_array_append_new(losses,
						    json_real(dp_train_report_loss(t->tr, i)));
		o = json_pack("{s:I, s:o, s:f, s:f, s:s, s:s?, s:s?}", "steps", (json_int_t)n,
			      "losses", losses, "tokens_per_s", dp_train_report_tokens_per_s(t->tr),
			      "wall_s", dp_train_report_wall_s(t->tr), "run_dir", t->run_dir,
			      "trace", t->trace_ok ? t->trace : NULL, "timeline_svg",
			      t->svg_ok ? t->svg : NULL);
	} else if (!t->cli->quiet) {
		struct dp_buf b;

		dp_buf_init(&b, 1 << 20);
		if (dp_train_report_summary(t->tr, &b, &e) == 0)
			(void)fputs(dp_buf_str(&b), t->cli->out);
		dp_buf_release(&b);
		if (t->trace_ok)
			(void)fprintf(t->cli->out, "trace: %s\n", t->trace);
		if (t->svg_ok)
			(void)fprintf(t->cli->out, "timeline: %s\n", t->svg);
	}
	return o;
}

/* launcher: slurm.  With --submit nothing about the allocation is needed
 * yet; otherwise the nodes are the first hosts-count nodes of
 * $SLURM_JOB_NODELIST (the recipe's host names only give the count). */
static int slurm_setup(struct dp_cli *cli, const struct dp_recipe *r, struct launch_opts *o,
		       const char ***hosts, int *nhosts, long *per_host,
		       struct dp_launch_opts *lopts)
{
	size_t n = dp_hostlist_count(r->cluster.hosts), have;
	const char *job = getenv("SLURM_JOB_ID"), *nl = getenv("SLURM_JOB_NODELIST");
	const struct dp_hostlist *use = r->cluster.hosts;
	struct dp_err e = { 0 };

	o->slurm = 1;
	*per_host = r->cluster.gpus;
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
	*hosts = calloc(n, sizeof(**hosts));
	if (!*hosts)
		return dp_cli_error(cli, EX_OSERR, "launch: out of memory");
	for (size_t i = 0; i < n; i++)
		(*hosts)[i] = dp_hostlist_get(use, i);
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
			const char ***hosts, int *nhosts, long *per_host,
			struct dp_launch_opts *lopts, struct dp_ctl_cfg *cfg,
			struct dp_preflight_plan *pf)
{
	struct dp_recipe *r;
	struct dp_err e = { 0 };
	size_t n, nspares;
	int code = dp_cli_load_recipe(cli, path, recipe);

	if (code)
		return code;
	r = *recipe;
	/* the caps, before any per-rank work */
	n = dp_hostlist_count(r->cluster.hosts);
	nspares = r->cluster.spares ? dp_hostlist_count(r->cluster.spares) : 0;
	if (n > MAX_HOSTS)
		return refuse_key(cli, r, "cluster.hosts",
				  "%zu hosts; this build launches at most %d", n, MAX_HOSTS);
	if (nspares > MAX_HOSTS)
		return refuse_key(cli, r, "cluster.spares",
				  "%zu spares; this build takes at most %d", nspares, MAX_HOSTS);
	if (n * (size_t)r->cluster.gpus > MAX_RANKS)
		return refuse_key(cli, r, "cluster.hosts",
				  "%zu hosts x %d GPUs = %zu ranks; this build launches at most %d",
				  n, r->cluster.gpus, n * (size_t)r->cluster.gpus, MAX_RANKS);
	if (dp_plan_from_recipe(r, plan, &e))
		return dp_cli_error(cli, EX_DATAERR, "%s", e.msg);
	*renv = dp_plan_recipe_env(r, &e);
	if (!*renv)
		return dp_cli_error(cli, EX_OSERR, "launch: out of memory");
	switch (r->cluster.launcher) {
	case DP_RECIPE_LAUNCH_LOCAL:
		o->nlocal = r->cluster.gpus; /* recipe check: local has exactly one host */
		break;
	case DP_RECIPE_LAUNCH_SSH:
		*hosts = calloc(n, sizeof(**hosts));
		o->spares = calloc(nspares ? nspares : 1, sizeof(*o->spares));
		if (!*hosts || !o->spares)
			return dp_cli_error(cli, EX_OSERR, "launch: out of memory");
		for (size_t i = 0; i < n; i++)
			(*hosts)[i] = dp_hostlist_get(r->cluster.hosts, i);
		*nhosts = (int)n;
		*per_host = r->cluster.gpus;
		if (!lopts->ssh_identity)
			lopts->ssh_identity = r->cluster.identity;
		lopts->ssh_user = r->cluster.user;
		lopts->ssh_port = r->cluster.port;
		lopts->relay_width = r->cluster.relay_width; /* 0: flat (or $DP_SSH_RELAY_WIDTH) */
		o->nspares = nspares;
		for (size_t i = 0; i < o->nspares; i++)
			o->spares[i] = dp_hostlist_get(r->cluster.spares, i);
		cfg->spares = o->spares;
		cfg->nspares = o->nspares;
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
	cfg->ckpt_dir = r->train.checkpoint_dir;
	cfg->ckpt_every = r->train.checkpoint_every;
	pf->checks = dp_preflight_from_recipe(r->health.preflight);
	if (pf->min_disk_gb < 0)
		pf->min_disk_gb = r->health.min_free_disk_gb;
	if (pf->max_clock_s < 0)
		pf->max_clock_s = r->health.max_clock_offset_s;
	pf->nics = r->cluster.nics;
	pf->need_gpu = r->train.backend == DP_RECIPE_BACKEND_CUDA;
	pf->checkpoint_dir = r->train.checkpoint_dir;
	cfg->total_steps = (uint64_t)r->train.steps;
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
	struct strtab strs = { 0 }; /* every rank's argv and env */
	struct dp_launch_spec spec;
	struct dp_err err = { 0 };
	char wbuf[PATH_MAX], bindbuf[64];
	/* --ssh: the list (borrowed argv) and our copy of it, split; or the
	 * recipe's hosts (names borrowed from the recipe).  The arrays are ours. */
	const char *ssh_list = NULL, **hosts = NULL;
	char *hostbuf = NULL;
	struct dp_launch_opts lopts = { 0 };
	struct dp_recipe *recipe = NULL;
	struct dp_plan *plan = NULL;
	char **renv = NULL;
	const char *run_dir = NULL;
	struct train_run trun = { 0 };
	long port = 0, restarts = -1, per_host = 1, ssh_port = 0, nranks;
	int c, rc, li = -1, nhosts = 0, training = 0;
	/* pre-flight and run output (health) */
	struct dp_preflight_plan pf = { .min_disk_gb = -1,
					.max_clock_s = -1,
					.version = DP_VERSION };
	struct dp_progress_cfg pcfg = { 0 };
	struct dp_progress *prog = NULL;
	unsigned cli_checks = 0;
	int pf_given = 0;
	char prefix[256];

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
		case OPT_FAKE_CHILD:
			o.spawn_child = 1;
			continue;
		case OPT_BIND:
			cfg.bind_addr = optarg;
			continue;
		case OPT_WORKER:
			o.worker = optarg;
			continue;
		case OPT_PREFLIGHT:
			if (dp_preflight_parse(optarg, &cli_checks, &err) != 0)
				return dp_cli_usage_error(cli, "launch ", "--preflight: %s",
							  err.msg);
			pf_given = 1;
			continue;
		case OPT_MIN_DISK:
			d = &pf.min_disk_gb;
			break;
		case OPT_MAX_CLOCK:
			d = &pf.max_clock_s;
			break;
		case OPT_PROGRESS_S:
			d = &pcfg.interval_s;
			break;
		case OPT_RUN_DIR:
			run_dir = optarg;
			continue;
		case OPT_PREFIX:
			/* the prefix and the line are separated by one space */
			if (snprintf(prefix, sizeof(prefix), "%s%s", optarg,
				     *optarg && optarg[strlen(optarg) - 1] != ' ' ? " " : "") >=
			    (int)sizeof(prefix))
				return dp_cli_usage_error(cli, "launch ", "--prefix is too long");
			cfg.line_fmt = prefix;
			continue;
		case OPT_SSH:
			ssh_list = optarg; /* split below: nothing to free on an early return */
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
			l = &o.absent_rank, lo = 0, hi = MAX_RANKS - 1;
			break;
		default:
			return dp_cli_bad_option(cli, "launch", argc, argv);
		}
		(void)snprintf(name, sizeof(name), "--%s", li >= 0 ? opts[li].name : "?");
		if (d && dp_parse_double(optarg, d == &pf.min_disk_gb ? 0 : 0.001,
					 d == &pf.min_disk_gb ? 1e9 : 86400, d, name, &err) != 0)
			return dp_cli_usage_error(cli, "launch ", "%s", err.msg);
		if (l && dp_parse_long(optarg, lo, hi, l, name, &err) != 0)
			return dp_cli_usage_error(cli, "launch ", "%s", err.msg);
	}
	if (ssh_list) {
		nhosts = split_hosts(ssh_list, &hostbuf, &hosts);
		if (nhosts == -ENOMEM) {
			rc = dp_cli_error(cli, EX_OSERR, "launch: out of memory");
			goto out;
		}
		if (nhosts <= 0) {
			rc = dp_cli_usage_error(cli, "launch ",
						"--ssh: '%.200s%s' is not a list of 1 to %d hosts "
						"separated by commas",
						ssh_list, strlen(ssh_list) > 200 ? "..." : "",
						MAX_HOSTS);
			goto out;
		}
	}
	if (optind < argc) {
		if (optind + 1 < argc) {
			rc = dp_cli_usage_error(cli, "launch ", "expected one RECIPE, got '%s' too",
						argv[optind + 1]);
			goto out;
		}
		if (o.nlocal > 0 || nhosts > 0) {
			rc = dp_cli_usage_error(cli, "launch ",
						"give a RECIPE or --local/--ssh, not both");
			goto out;
		}
		o.recipe_mode = 1;
		rc = recipe_setup(cli, argv[optind], &o, &recipe, &plan, &renv, &hosts, &nhosts,
				  &per_host, &lopts, &cfg, &pf);
		if (rc)
			goto out;
		/* --dry-run shows any plan; a real run must be trainable */
		if (!o.fake_given && !o.dry_run) {
			rc = check_trainable(cli, recipe);
			if (rc)
				goto out;
			training = 1;
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
	if (nranks > MAX_RANKS) {
		rc = dp_cli_usage_error(cli, "launch ", "%ld ranks is more than %d", nranks,
					MAX_RANKS);
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
		o.worker = dp_plan_worker_path(wbuf, sizeof(wbuf));

	ranks = calloc((size_t)nranks, sizeof(*ranks));
	if (!ranks) {
		rc = dp_cli_error(cli, EX_OSERR, "launch: out of memory");
		goto out;
	}
	for (long i = 0; i < nranks; i++) {
		struct rank_args ra = { 0 };

		build_args(&o, i, &ra);
		ranks[i].rank = (int)i;
		ranks[i].host = nhosts ? hosts[i / per_host] : "localhost";
		ranks[i].local_index = (int)(nhosts ? i % per_host : i);
		ranks[i].argv = strtab_vec(&strs, ra.argv, MAX_ARGS);
		if (plan) {
			struct dp_plan_env env = { 0 }; /* filled by dp_plan_env_build */

			dp_plan_env_build(recipe, renv, &plan->ranks[i], &env);
			ranks[i].env = strtab_vec(&strs, env.v, DP_PLAN_ENV_MAX);
			if (!ranks[i].env)
				ranks[i].argv = NULL;
		}
		if (!ranks[i].argv) {
			rc = dp_cli_error(cli, EX_OSERR, "launch: out of memory");
			goto out;
		}
	}
	spec.ranks = ranks;
	spec.nranks = (size_t)nranks;
	if (o.dry_run) {
		rc = dp_launch_spec_check(&spec, &err)
			     ? dp_cli_error(cli, EX_SOFTWARE, "%s", err.msg)
			     : print_dry_run(cli, &spec, &o, nhosts);
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
	raise_nofile(cli, 64 + (size_t)nranks * (nhosts ? 1 : 4) + (size_t)nhosts);
	cfg.out = cli->json ? cli->err : cli->out;
	if (training) {
		struct dp_train_report_cfg tc = { .nranks = (int)nranks,
						  .algo = recipe_algo(recipe),
						  .pp = recipe->parallel.pp,
						  .dp = recipe->parallel.dp,
						  .micro = recipe->parallel.micro_batches,
						  .on_step = on_step,
						  .arg = &trun };

		rc = make_run_dir(cli, recipe, run_dir, &trun);
		if (rc)
			goto out;
		if (dp_train_report_new(&tc, &trun.tr, &err)) {
			rc = dp_cli_error(cli, EX_OSERR, "%s", err.msg);
			goto out;
		}
		trun.cli = cli;
		trun.out = cfg.out;
		trun.steps = recipe->train.steps;
		trun.every = recipe->train.steps >= 20 ? recipe->train.steps / 20 : 1;
		cfg.train = &dp_train_report_events;
		cfg.train_arg = trun.tr;
	}
	/* pre-flight gate and run output; --preflight wins over the recipe */
	if (pf_given)
		pf.checks = cli_checks;
	if (pf.min_disk_gb < 0)
		pf.min_disk_gb = DP_PF_DEFAULT_MIN_DISK_GB;
	if (pf.max_clock_s < 0)
		pf.max_clock_s = DP_PF_DEFAULT_MAX_CLOCK_S;
	if (pf.checks)
		cfg.preflight = &pf;
	if (o.fake_given || !o.recipe_mode)
		cfg.total_steps = (uint64_t)o.fake_steps;
	else if (recipe)
		cfg.total_steps = (uint64_t)recipe->train.steps;
	/* logs and events go to the run dir: the given one, or a training
	 * run's (always made) */
	pcfg.run_dir = training ? trun.run_dir : run_dir;
	pcfg.json = cli->json ? cli->out : NULL;
	pcfg.status = cli->json || cli->quiet ? NULL : cli->err;
	pcfg.tty = pcfg.status && isatty(fileno(cli->err));
	pcfg.color = pcfg.tty && cli->color && !getenv("NO_COLOR");
	if (dp_progress_new(&pcfg, &prog, &err) != 0) {
		rc = dp_cli_error(cli, dp_cli_exit_code(-err.code), "%s", err.msg);
		goto out;
	}
	cfg.on_event = dp_progress_event;
	cfg.on_line = dp_progress_line;
	cfg.event_arg = prog;
	if (training) {
		trun.prog = prog;
		trun.total = cfg.total_steps;
		cfg.on_event = train_event;
		cfg.on_line = train_line;
		cfg.event_arg = &trun;
	}
	/* the controller's run record (run.jsonl), metrics.prom and webhooks */
	cfg.run_dir = pcfg.run_dir;
	{
		struct dp_notify *notify = NULL;
		struct dp_metrics *metrics = NULL;
		char run_id[256];

		reporting_setup(cli, recipe, &cfg, run_id, sizeof(run_id), &notify, &metrics);
		rc = dp_ctl_run(&cfg, &spec, &res, &err);
		reporting_finish(cli, notify, metrics);
	}
	dp_progress_free(prog);
	if (rc < 0)
		rc = dp_cli_error(cli, dp_cli_exit_code(rc), "%s", err.msg);
	else
		rc = report(cli, &spec, &res, training ? train_finish(&trun) : NULL);
out:
	dp_train_report_free(trun.tr);
	free(ranks);
	strtab_release(&strs);
	dp_plan_strv_free(renv);
	dp_plan_free(plan);
	dp_recipe_free(recipe);
	dp_hostlist_free(o.alloc);
	free(o.spares);
	free(hosts);
	free(hostbuf);
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
		"rank's status (128+N for signal N, 124 for a hang, 69 for a failed rendezvous,\n"
		"78 when a node fails the pre-flight gate: then nothing has started training).\n"
		"With a RECIPE, hosts, ranks per host, ssh settings and health timeouts come\n"
		"from the recipe (options given here win) and every rank gets its layout in\n"
		"its environment (DP_PP_RANK, DP_EP_RANK, DP_DP_RANK, DP_STAGES, ...) plus the\n"
		"recipe's env section; --dry-run prints each rank's argv and environment.\n"
		"A RECIPE run trains: step losses as they complete, then a summary (loss\n"
		"first -> last, tokens/s, measured vs simulated bubble per rank) and the\n"
		"merged op timeline in RUN-DIR/trace.json (Chrome trace) and\n"
		"RUN-DIR/timeline.svg (measured lanes over the simulated schedule).\n"
		"One launch takes up to 65536 hosts (cluster.hosts, --ssh), as many spares,\n"
		"and 524288 ranks (--local: 1024).\n"
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
		"  --dry-run             print what would be started (every rank, then the\n"
		"                        rank and host count), start nothing\n"
		"\n"
		"Pre-flight gate and output:\n"
		"  --preflight CHECKS    checks every node passes before the run starts: a comma\n"
		"                        list of gpus, nics, topology, disk, clock, version, or\n"
		"                        all or none (default: the recipe's health.preflight;\n"
		"                        none without a recipe)\n"
		"  --min-free-disk-gb GB 'disk': free GB needed at the checkpoint dir (1)\n"
		"  --max-clock-offset-s S  'clock': largest clock offset accepted (1)\n"
		"  --run-dir DIR         write DIR/logs/rank-NNNN.log (each rank's output),\n"
		"                        DIR/events.jsonl (the --json events), DIR/run.jsonl\n"
		"                        and metrics.prom (for dpctl report) and, training,\n"
		"                        DIR/trace.json and DIR/timeline.svg (a training\n"
		"                        run always has a run directory:\n"
		"                        $TMPDIR/dpctl-runs/RECIPE-TIME-PID, TMPDIR=/tmp)\n"
		"  --prefix TEMPLATE     prefix of rank lines; {host} and {rank} are replaced\n"
		"                        ('[{host}:{rank}]')\n"
		"  --progress-s S        not on a terminal: a progress line every 10% of the\n"
		"                        steps and at least every S seconds (10)\n"
		"  --submit              (launcher: slurm) submit a batch job that runs this\n"
		"                        launch inside the allocation; prints the job id\n"
		"                        (--dry-run: print the batch script)\n"
		"  --time T              batch job time limit for --submit (sbatch --time)\n"
		"  --partition P         batch job partition for --submit\n"
		"  -h, --help            print this help\n"
		"\n"
		"Test aids (dpworker's fake mode; no training happens, also with a RECIPE):\n"
		"  --fake-steps N        steps each rank runs (20)\n"
		"  --fake-step-ms MS     duration of one step (20)\n"
		"  --fake-fail R:K[:C]   rank R exits with status C (3) at step K\n"
		"  --fake-hang R:K       rank R stops making progress at step K\n"
		"  --fake-absent R       rank R never connects\n"
		"  --fake-spawn-child    every rank leaves a sleeping child behind\n",
};
