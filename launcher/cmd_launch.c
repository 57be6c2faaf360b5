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
#include <jansson.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/dp_util.h"
#include "launcher/cli_int.h"
#include "launcher/ctl_launch.h"
#include "launcher/dp_launcher.h"
#include "launcher/dp_plan.h"
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
};

/* Per-rank argv and environment storage.  The environment of a recipe rank
 * comes from dp_plan_env_build(), which `dpctl plan` shows too. */
struct rank_args {
	const char *argv[MAX_ARGS];
	char num[6][24];
	struct dp_plan_env env;
};

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
	*renv = dp_plan_recipe_env(r, &e);
	if (!*renv)
		return dp_cli_error(cli, EX_OSERR, "launch: out of memory");
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
		lopts->relay_width = r->cluster.relay_width; /* 0: flat (or $DP_SSH_RELAY_WIDTH) */
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
		return dp_cli_error(cli, EX_UNAVAILABLE,
				    "%s: the slurm launcher is not available in this build yet",
				    r->path);
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
		o.worker = dp_plan_worker_path(wbuf, sizeof(wbuf));

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
			dp_plan_env_build(recipe, renv, &plan->ranks[i], &args[i].env);
			ranks[i].env = args[i].env.v;
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
	cfg.backend = nhosts ? "ssh" : "local";
	if (nhosts) {
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
	rc = dp_ctl_run(&cfg, &spec, &res, &err);
	if (rc < 0)
		rc = dp_cli_error(cli, dp_cli_exit_code(rc), "%s", err.msg);
	else
		rc = report(cli, &spec, &res);
out:
	free(ranks);
	free(args);
	dp_plan_strv_free(renv);
	dp_plan_free(plan);
	dp_recipe_free(recipe);
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
