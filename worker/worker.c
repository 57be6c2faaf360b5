/* worker/worker.c - dpworker option parsing and dispatch.
 *
 * Started by `dpctl launch`: the controller address, rank and job token come
 * from the environment (DP_CONTROLLER, DP_RANK, DP_JOB_TOKEN, DP_HEARTBEAT_S,
 * DP_RENDEZVOUS_S: how long to keep trying to connect) or from
 * --controller/--rank.  The token is only ever read from the
 * environment (never argv, where ps would show it) and removed from it at
 * once so that nothing the worker starts inherits it.
 *
 * A recipe run (DP_SCHEDULE in the environment, set by `dpctl launch
 * RECIPE`) trains: worker/train_ctl.c.  The --fake-* test mode runs N timed
 * steps with heartbeats instead, optionally failing or hanging at a given
 * step, so launcher tests can exercise every failure path.
 */
#include <errno.h>
#include <execinfo.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "common/dp_buf.h"
#include "common/dp_util.h"
#include "launcher/ctl_proto.h"
#include "launcher/dp_preflight.h"
#include "topo/dp_topo.h"
#include "worker/dp_exec.h"
#include "worker/dp_model.h"
#include "worker/dp_worker.h"
#include "common/dp_banned.h"

#ifndef DP_VERSION
#define DP_VERSION "0.0.0-dev"
#endif

static const char usage[] =
	"usage: dpworker [options]\n"
	"\n"
	"One rank of a dpctl run.  Normally started by 'dpctl launch', not by hand.\n"
	"The job token is read from DP_JOB_TOKEN (never from the command line).\n"
	"Started for a recipe (DP_SCHEDULE, DP_PP_RANK, DP_MODEL, ... in the environment)\n"
	"it trains its pipeline rank; see docs/executor.md.\n"
	"\n"
	"Options:\n"
	"  --controller HOST:PORT  controller to connect to (default: $DP_CONTROLLER)\n"
	"  --rank N                this worker's rank (default: $DP_RANK)\n"
	"  --heartbeat-s S         seconds between heartbeats (default: $DP_HEARTBEAT_S or 1)\n"
	"  --discover              print this node's topology (as 'dpctl topo discover') and exit\n"
	"  --json                  with --discover: print JSON ({\"nodes\":[...]})\n"
	"  --train-reference ...   train the model in one process (see docs/model.md)\n"
	"  --train-local ...       train with a pipeline schedule, ranks forked here\n"
	"  --train ... --peers L   run one pipeline rank over TCP (see docs/executor.md)\n"
	"      --ckpt-dir DIR      with --train-local/--train: checkpoints in DIR ($DP_CKPT_DIR)\n"
	"      --ckpt-every N      a checkpoint every N steps ($DP_CKPT_EVERY)\n"
	"      --resume            continue from the newest complete checkpoint\n"
	"                          (dpworker --train-local --help lists all options)\n"
	"  -V, --version           print the version\n"
	"  -h, --help              print this help\n"
	"\n"
	"Test aids (a fake run used by the launcher tests; no training happens):\n"
	"  --fake-steps N          run N fake steps, then report done\n"
	"  --fake-step-ms MS       duration of one fake step (default 20)\n"
	"  --fake-fail-at K        exit at step K with --fake-exit-code (default 3)\n"
	"  --fake-exit-code C      the exit status for --fake-fail-at\n"
	"  --fake-hang-at K        stop making progress at step K (heartbeats go on)\n"
	"  --fake-no-connect       never connect to the controller (sleep until killed)\n"
	"  --fake-spawn-child      leave a sleeping child process behind (orphan tests)\n";

enum {
	OPT_CONTROLLER = 256,
	OPT_RANK,
	OPT_HEARTBEAT,
	OPT_FAKE_STEPS,
	OPT_FAKE_STEP_MS,
	OPT_FAKE_FAIL_AT,
	OPT_FAKE_EXIT_CODE,
	OPT_FAKE_HANG_AT,
	OPT_FAKE_NO_CONNECT,
	OPT_FAKE_SPAWN_CHILD,
	OPT_DISCOVER,
	OPT_JSON,
};

static const struct option opts[] = {
	{ "controller", required_argument, NULL, OPT_CONTROLLER },
	{ "rank", required_argument, NULL, OPT_RANK },
	{ "heartbeat-s", required_argument, NULL, OPT_HEARTBEAT },
	{ "fake-steps", required_argument, NULL, OPT_FAKE_STEPS },
	{ "fake-step-ms", required_argument, NULL, OPT_FAKE_STEP_MS },
	{ "fake-fail-at", required_argument, NULL, OPT_FAKE_FAIL_AT },
	{ "fake-exit-code", required_argument, NULL, OPT_FAKE_EXIT_CODE },
	{ "fake-hang-at", required_argument, NULL, OPT_FAKE_HANG_AT },
	{ "fake-no-connect", no_argument, NULL, OPT_FAKE_NO_CONNECT },
	{ "fake-spawn-child", no_argument, NULL, OPT_FAKE_SPAWN_CHILD },
	{ "discover", no_argument, NULL, OPT_DISCOVER },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "version", no_argument, NULL, 'V' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

struct wopts {
	const char *controller;
	long rank;
	double heartbeat_s;
	double connect_s; /* $DP_RENDEZVOUS_S: how long to keep dialling; 0: 10 */
	long fake_steps, fake_step_ms, fail_at, exit_code, hang_at;
	int no_connect, spawn_child;
};

/* ---- stack dumps ---------------------------------------------------------------- */

static pthread_t main_thread;

static void dump_handler(int sig)
{
	static const char hdr[] = "dpworker: stack dump of the main thread:\n";
	void *frames[64];
	int n, saved = errno;

	(void)sig;
	(void)!write(2, hdr, sizeof(hdr) - 1);
	n = backtrace(frames, 64);
	backtrace_symbols_fd(frames, n, 2);
	errno = saved;
}

/* Client thread: the controller asked for stacks; the main thread dumps its own. */
static void on_dump_stacks(void *arg)
{
	(void)arg;
	(void)pthread_kill(main_thread, SIGUSR1);
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* ---- the fake run --------------------------------------------------------------- */

/* The token (taken out of the environment at once) and the stack-dump handler. */
static int join_setup(uint8_t token[DP_CTL_TOKEN_LEN], FILE *err)
{
	const char *hex = getenv("DP_JOB_TOKEN");
	struct dp_err e = { 0 };

	if (dp_ctl_token_from_hex(hex, token, &e) != 0) {
		(void)fprintf(err, "dpworker: error: DP_JOB_TOKEN: %s\n", e.msg);
		return EX_CONFIG;
	}
	(void)unsetenv("DP_JOB_TOKEN");
	return 0;
}

static void install_dump_handler(void)
{
	/* backtrace() loads libgcc on first use: do it now, not in a handler */
	void *warm[2];
	struct sigaction sa = { .sa_handler = dump_handler };

	(void)backtrace(warm, 2);
	main_thread = pthread_self();
	(void)sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	(void)sigaction(SIGUSR1, &sa, NULL);
}

/* Pre-flight: the controller lists the checks in DP_PREFLIGHT; gather this
 * node's report into @pf and point @cc at it.  0 or EX_CONFIG. */
static int preflight_setup(struct dp_ctl_client_cfg *cc, struct dp_ctl_preflight *pf, FILE *err)
{
	const char *pfl = getenv("DP_PREFLIGHT");
	unsigned checks = 0;
	struct dp_err e = { 0 };

	if (!pfl)
		return 0;
	if (dp_preflight_parse(pfl, &checks, &e) != 0) {
		(void)fprintf(err, "dpworker: error: DP_PREFLIGHT: %s\n", e.msg);
		return EX_CONFIG;
	}
	dp_preflight_gather(checks, getenv("DP_CHECKPOINT_DIR"), pf);
	cc->preflight = pf;
	return 0;
}

/* What both kinds of run do before joining: the stack-dump handler, and
 * @cc filled from @o (@topo, @token and @pf must outlive it).  0 or an
 * exit code. */
static int client_setup(const struct wopts *o, const uint8_t *token, char *topo, size_t topolen,
			struct dp_ctl_client_cfg *cc, struct dp_ctl_preflight *pf, FILE *err)
{
	install_dump_handler();
	(void)snprintf(topo, topolen, "cpus=%ld", sysconf(_SC_NPROCESSORS_ONLN));
	cc->controller = o->controller;
	cc->rank = (uint32_t)o->rank;
	cc->token = token;
	cc->topo = topo;
	cc->heartbeat_s = o->heartbeat_s;
	cc->connect_timeout_s = o->connect_s;
	cc->on_dump_stacks = on_dump_stacks;
	return preflight_setup(cc, pf, err);
}

/* A recipe run: train this rank under the controller. */
static int train_run(const struct wopts *o, FILE *out, FILE *err)
{
	uint8_t token[DP_CTL_TOKEN_LEN];
	struct dp_ctl_client_cfg cc = { 0 };
	struct dp_ctl_preflight pf;
	char topo[64];
	int rc = join_setup(token, err);

	if (rc)
		return rc;
	rc = client_setup(o, token, topo, sizeof(topo), &cc, &pf, err);
	if (rc)
		return rc;
	return dp_worker_train_ctl(&cc, out, err);
}

static int fake_run(const struct wopts *o, FILE *out, FILE *err)
{
	uint8_t token[DP_CTL_TOKEN_LEN];
	struct dp_ctl_client_cfg cc = { 0 };
	struct dp_ctl_client *c = NULL;
	struct dp_ctl_preflight pf;
	struct dp_err e = { 0 };
	char topo[64];
	int status = join_setup(token, err);
	long step;

	if (status)
		return status;
	if (o->no_connect) {
		(void)fprintf(out, "rank %ld: test mode: not connecting\n", o->rank);
		(void)fflush(out);
		for (;;)
			sleep_ms(1000); /* until the controller kills us */
	}
	status = client_setup(o, token, topo, sizeof(topo), &cc, &pf, err);
	if (status)
		return status;
	if (dp_ctl_client_open(&cc, &c, &e) != 0 || dp_ctl_client_ready(c, &e) != 0 ||
	    dp_ctl_client_wait_start(c, 0, &e) != 0) {
		(void)fprintf(err, "dpworker: error: rank %ld: %s\n", o->rank, e.msg);
		dp_ctl_client_close(c);
		return EX_UNAVAILABLE;
	}
	if (o->spawn_child && fork() == 0) {
		sleep_ms(60000L); /* a leftover that teardown must kill */
		_exit(0);
	}
	for (step = 1; step <= o->fake_steps; step++) {
		if (dp_ctl_client_stopped(c)) {
			(void)fprintf(out, "rank %ld: stopped by the controller\n", o->rank);
			status = EX_TEMPFAIL;
			break;
		}
		sleep_ms(o->fake_step_ms);
		if (step == o->hang_at) {
			(void)fprintf(out, "rank %ld: test mode: hanging at step %ld\n", o->rank,
				      step);
			(void)fflush(out);
			for (;;)
				sleep_ms(1000);
		}
		if (step == o->fail_at) {
			(void)fprintf(out,
				      "rank %ld: test mode: failing at step %ld with status %ld\n",
				      o->rank, step, o->exit_code);
			status = (int)o->exit_code;
			break;
		}
		dp_ctl_client_progress(c, (uint64_t)step, 10.0 / (double)(step + 1),
				       1000.0 * 1000.0 / (double)(o->fake_step_ms + 1), 0);
		(void)fprintf(out, "step %ld/%ld loss %.4f\n", step, o->fake_steps,
			      10.0 / (double)(step + 1));
		(void)fflush(out);
	}
	(void)fflush(out);
	(void)dp_ctl_client_done(c, status, NULL);
	dp_ctl_client_close(c);
	return status;
}

static int parse_num(const char *s, long lo, long hi, long *v, const char *what, FILE *err)
{
	struct dp_err e = { 0 };

	if (dp_parse_long(s, lo, hi, v, what, &e) == 0)
		return 0;
	(void)fprintf(err, "dpworker: error: %s\n", e.msg);
	return -1;
}

/* --discover: the controller collects every node's topology over ssh. */
static int discover(int json, FILE *out, FILE *err)
{
	struct dp_err e = { 0 };
	struct dp_topo *t = NULL;
	struct dp_buf b;
	int rc;

	rc = dp_topo_discover(NULL, &t, &e);
	if (rc) {
		(void)fprintf(err, "dpworker: error: %s\n", e.msg);
		return EX_UNAVAILABLE;
	}
	dp_buf_init(&b, 64u << 20);
	if (json) {
		rc = dp_buf_adds(&b, "{\"nodes\":[");
		rc |= dp_topo_format_json(t, &b);
		rc |= dp_buf_adds(&b, "]}\n");
	} else {
		rc = dp_topo_format_text(t, &b);
	}
	if (!rc)
		(void)fputs(dp_buf_str(&b), out);
	dp_buf_release(&b);
	dp_topo_free(t);
	if (rc) {
		(void)fputs("dpworker: error: topology output too large\n", err);
		return EX_SOFTWARE;
	}
	return EX_OK;
}

int dp_worker_main(int argc, char **argv, FILE *out, FILE *err)
{
	struct wopts o = { .rank = -1, .fake_steps = -1, .fake_step_ms = 20, .exit_code = 3 };
	const char *env;
	struct dp_err e = { 0 };
	int c, want_discover = 0, json = 0;

	if (argc > 1 && strcmp(argv[1], "--train-reference") == 0)
		return dp_worker_cmd_reference(argc, argv, out, err);
	if (argc > 1 && (strcmp(argv[1], "--train-local") == 0 || strcmp(argv[1], "--train") == 0))
		return dp_worker_cmd_train(argc, argv, out, err);
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "Vh", opts, NULL)) != -1) {
		switch (c) {
		case OPT_CONTROLLER:
			o.controller = optarg;
			break;
		case OPT_RANK:
			if (parse_num(optarg, 0, INT32_MAX, &o.rank, "--rank", err))
				return EX_USAGE;
			break;
		case OPT_HEARTBEAT:
			if (dp_parse_double(optarg, 0.001, 3600, &o.heartbeat_s, "--heartbeat-s",
					    &e) != 0) {
				(void)fprintf(err, "dpworker: error: %s\n", e.msg);
				return EX_USAGE;
			}
			break;
		case OPT_FAKE_STEPS:
			if (parse_num(optarg, 0, 1000000000, &o.fake_steps, "--fake-steps", err))
				return EX_USAGE;
			break;
		case OPT_FAKE_STEP_MS:
			if (parse_num(optarg, 0, 3600000, &o.fake_step_ms, "--fake-step-ms", err))
				return EX_USAGE;
			break;
		case OPT_FAKE_FAIL_AT:
			if (parse_num(optarg, 1, 1000000000, &o.fail_at, "--fake-fail-at", err))
				return EX_USAGE;
			break;
		case OPT_FAKE_EXIT_CODE:
			if (parse_num(optarg, 1, 255, &o.exit_code, "--fake-exit-code", err))
				return EX_USAGE;
			break;
		case OPT_FAKE_HANG_AT:
			if (parse_num(optarg, 1, 1000000000, &o.hang_at, "--fake-hang-at", err))
				return EX_USAGE;
			break;
		case OPT_FAKE_NO_CONNECT:
			o.no_connect = 1;
			break;
		case OPT_FAKE_SPAWN_CHILD:
			o.spawn_child = 1;
			break;
		case OPT_DISCOVER:
			want_discover = 1;
			break;
		case OPT_JSON:
			json = 1;
			break;
		case 'V':
			(void)fprintf(out, "dpworker %s\n", DP_VERSION);
			return EX_OK;
		case 'h':
			(void)fputs(usage, out);
			return EX_OK;
		default:
			(void)fprintf(err,
				      "dpworker: error: option '%s' is unknown or needs a value\n",
				      argv[optind - 1]);
			return EX_USAGE;
		}
	}
	if (optind < argc) {
		(void)fprintf(err, "dpworker: error: unexpected argument '%s'\n", argv[optind]);
		return EX_USAGE;
	}
	if (want_discover)
		return discover(json, out, err);
	if (!o.controller)
		o.controller = getenv("DP_CONTROLLER");
	if (o.rank < 0 && (env = getenv("DP_RANK")) != NULL &&
	    parse_num(env, 0, INT32_MAX, &o.rank, "DP_RANK", err))
		return EX_USAGE;
	if (o.heartbeat_s <= 0 && (env = getenv("DP_HEARTBEAT_S")) != NULL &&
	    dp_parse_double(env, 0.001, 3600, &o.heartbeat_s, "DP_HEARTBEAT_S", &e) != 0) {
		(void)fprintf(err, "dpworker: error: %s\n", e.msg);
		return EX_USAGE;
	}
	if ((env = getenv("DP_RENDEZVOUS_S")) != NULL &&
	    dp_parse_double(env, 0.001, 1e6, &o.connect_s, "DP_RENDEZVOUS_S", &e) != 0) {
		(void)fprintf(err, "dpworker: error: %s\n", e.msg);
		return EX_USAGE;
	}
	if (!o.controller || o.rank < 0) {
		(void)fputs(
			"dpworker: error: nothing to do; dpworker is started by 'dpctl launch'\n",
			err);
		return EX_USAGE;
	}
	if (o.fake_steps < 0 && !o.no_connect) {
		if (getenv("DP_SCHEDULE"))
			return train_run(&o, out, err);
		(void)fputs("dpworker: error: nothing to run: no recipe layout in the environment "
			    "(DP_SCHEDULE, set by 'dpctl launch RECIPE') and no --fake-steps\n",
			    err);
		return EX_USAGE;
	}
	return fake_run(&o, out, err);
}
