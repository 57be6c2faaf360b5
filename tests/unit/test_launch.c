/* tests/unit/test_launch.c - launch backends, the controller and
 * `dpctl launch`, with real processes on this machine (the local backend).
 *
 * Runs that need dpworker find it through $DPWORKER (exported by
 * `make check`) and skip without it; the rest use /bin/sh and friends.
 * Every run is bounded by short timeouts (a few seconds at most).
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "common/dp_buf.h"
#include "common/dp_log.h"
#include "launcher/ctl_launch.h"
#include "launcher/ctl_proto.h"
#include "launcher/dp_preflight.h"
#include "tests/unit/dp_test.h"
#include "worker/dp_worker.h"

#define MAXR 8

/* dp_cli_main() leaves its (memory) stderr installed as the log sink after it
 * returns; detach it so later library logging cannot write to a closed FILE. */
static struct dp_test_run dpctl_run(const char *const *argv)
{
	struct dp_test_run r = dp_test_dpctl_list(argv);

	dp_log_set_sink(NULL);
	return r;
}
#define DPCTL(...) dpctl_run((const char *const[]){ __VA_ARGS__, NULL })

/* A spec of @n ranks on localhost running @argv (the same for every rank,
 * except @special_rank which runs @special when not NULL). */
struct spec_buf {
	struct dp_launch_rank ranks[MAXR];
	struct dp_launch_spec spec;
};

static void make_spec(struct spec_buf *sb, int n, const char *const *argv, int special_rank,
		      const char *const *special)
{
	memset(sb, 0, sizeof(*sb));
	for (int i = 0; i < n; i++) {
		sb->ranks[i].rank = i;
		sb->ranks[i].host = "localhost";
		sb->ranks[i].local_index = i;
		sb->ranks[i].argv = i == special_rank && special ? special : argv;
	}
	sb->spec.ranks = sb->ranks;
	sb->spec.nranks = (size_t)n;
}

static const char *worker_or_skip(void)
{
	const char *w = getenv("DPWORKER");

	if (!w || !*w || access(w, X_OK) != 0)
		skip();
	return w;
}

static double mono(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Extra seconds to allow for starting 4 workers at once: a sanitizer build
 * of dpworker can take seconds just to load its libraries, so measure one
 * start and scale every rendezvous window and time bound by it. */
static double slack(void)
{
	static double cost = -1;

	if (cost < 0) {
		const char *w = getenv("DPWORKER");
		double t0 = mono();
		pid_t pid;

		if (!w || !*w)
			return 0;
		pid = fork();
		if (pid == 0) {
			int fd = open("/dev/null", O_WRONLY);

			(void)dup2(fd, 1);
			(void)execl(w, w, "--version", (char *)NULL);
			_exit(127);
		}
		assert_true(pid > 0);
		assert_int_equal(waitpid(pid, NULL, 0), pid);
		cost = mono() - t0;
	}
	return 4 * cost;
}

/* The private sshd of the ssh tests (see sshd_or_skip()). */
static struct {
	int tried, port;
	pid_t pid;
	char dir[64];
	char key[128], kh_good[128], kh_empty[128], kh_bad[128];
} sshd;

/* Processes other than us carrying DP_TEST_MARK=@mark in their environment,
 * plus our own unreaped children (zombies have no readable environment). */
static int leftovers(const char *mark)
{
	char needle[96];
	DIR *d = opendir("/proc");
	struct dirent *de;
	int n = 0;

	assert_non_null(d);
	(void)snprintf(needle, sizeof(needle), "DP_TEST_MARK=%s", mark);
	while ((de = readdir(d)) != NULL) {
		char path[300], buf[65536];
		long pid = strtol(de->d_name, NULL, 10);
		size_t got;
		FILE *f;

		if (pid <= 0 || pid == (long)getpid() || pid == (long)sshd.pid)
			continue;
		(void)snprintf(path, sizeof(path), "/proc/%ld/environ", pid);
		f = fopen(path, "rb");
		if (f) {
			got = fread(buf, 1, sizeof(buf) - 1, f);
			(void)fclose(f);
			for (size_t off = 0; off < got; off += strnlen(buf + off, got - off) + 1)
				if (strncmp(buf + off, needle, strlen(needle)) == 0) {
					print_message("leftover pid %ld\n", pid);
					n++;
				}
		}
		(void)snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
		f = fopen(path, "r");
		if (f) {
			long ppid = 0;
			char *rp;

			got = fread(buf, 1, sizeof(buf) - 1, f);
			(void)fclose(f);
			buf[got] = '\0';
			rp = strrchr(buf, ')');		   /* "pid (comm) S ppid ..." */
			if (rp && rp[1] && rp[2] && rp[3]) /* ") S ppid" */
				ppid = strtol(rp + 4, NULL, 10);
			if (ppid == (long)getpid()) {
				print_message("unreaped child pid %ld\n", pid);
				n++;
			}
		}
	}
	(void)closedir(d);
	return n;
}

static void set_mark(char *mark, size_t len)
{
	(void)snprintf(mark, len, "%ld-%ld", (long)getpid(), (long)time(NULL) ^ random());
	assert_int_equal(setenv("DP_TEST_MARK", mark, 1), 0);
}

/* ---- backend table and spec ------------------------------------------------- */

static void backend_table_contract(void **state)
{
	struct dp_err err = { 0 };

	(void)state;
	for (int i = 0; dp_launch_backends[i]; i++) {
		const struct dp_launch_backend *b = dp_launch_backends[i];

		assert_non_null(b->name);
		assert_non_null(b->probe);
		assert_non_null(b->open);
		assert_non_null(b->spawn);
		assert_non_null(b->pollfds);
		assert_non_null(b->dispatch);
		assert_non_null(b->signal);
		assert_non_null(b->running);
		assert_non_null(b->close);
		for (int j = 0; j < i; j++)
			assert_string_not_equal(b->name, dp_launch_backends[j]->name);
	}
	assert_ptr_equal(dp_launch_backend_pick("local", &err), &dp_launch_local);
	assert_null(dp_launch_backend_pick("carrier-pigeon", &err));
	assert_non_null(strstr(err.msg, "'carrier-pigeon'"));
	assert_int_equal(setenv("DP_LAUNCH", "carrier-pigeon", 1), 0);
	assert_null(dp_launch_backend_pick(NULL, &err));
	assert_int_equal(setenv("DP_LAUNCH", "local", 1), 0);
	assert_ptr_equal(dp_launch_backend_pick(NULL, &err), &dp_launch_local);
	assert_int_equal(unsetenv("DP_LAUNCH"), 0);
}

static void spec_check_names_the_problem(void **state)
{
	static const char *const argv[] = { "/bin/true", NULL };
	static const char *const empty[] = { NULL };
	struct dp_err err = { 0 };
	struct spec_buf sb;

	(void)state;
	make_spec(&sb, 3, argv, -1, NULL);
	assert_int_equal(dp_launch_spec_check(&sb.spec, &err), 0);
	sb.ranks[2].rank = 0;
	assert_int_equal(dp_launch_spec_check(&sb.spec, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "rank 0 appears twice"));
	sb.ranks[2].rank = 7;
	assert_int_equal(dp_launch_spec_check(&sb.spec, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "rank 7 is outside 0..2"));
	make_spec(&sb, 2, argv, 1, empty);
	assert_int_equal(dp_launch_spec_check(&sb.spec, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "rank 1 has no program"));
	sb.spec.nranks = 0;
	assert_int_equal(dp_launch_spec_check(&sb.spec, &err), -EINVAL);
}

/* ---- controller with plain programs ----------------------------------------- */

static void signal_exit_is_128_plus_signal(void **state)
{
	static const char *const ok[] = { "/bin/sleep", "5", NULL };
	static const char *const killed[] = { "/bin/sh", "-c", "echo bye; kill -9 $$", NULL };
	struct dp_ctl_cfg cfg = { .rendezvous_s = 5, .grace_s = 1 };
	struct dp_ctl_result res;
	struct dp_err err = { 0 };
	struct spec_buf sb;
	char mark[64];
	double t0 = mono();

	(void)state;
	set_mark(mark, sizeof(mark));
	make_spec(&sb, 3, ok, 1, killed);
	assert_int_equal(dp_ctl_run(&cfg, &sb.spec, &res, &err), 0);
	assert_int_equal(res.outcome, DP_CTL_RANK_SIGNAL);
	assert_int_equal(res.exit_code, 128 + 9);
	assert_int_equal(res.failed_rank, 1);
	assert_string_equal(res.failed_host, "localhost");
	assert_non_null(strstr(res.cause, "rank 1 on localhost"));
	assert_non_null(strstr(res.cause, "signal 9"));
	assert_int_equal(res.ntail, 1);
	assert_string_equal(res.tail[0], "bye");
	/* the sleeping ranks were stopped, not waited for */
	assert_true(mono() - t0 < 4);
	assert_int_equal(leftovers(mark), 0);
}

static void missing_program_fails_at_spawn(void **state)
{
	static const char *const ok[] = { "/bin/sleep", "5", NULL };
	static const char *const bad[] = { "/nonexistent/dpworker", NULL };
	struct dp_ctl_cfg cfg = { .grace_s = 1 };
	struct dp_ctl_result res;
	struct spec_buf sb;
	char mark[64];

	(void)state;
	set_mark(mark, sizeof(mark));
	make_spec(&sb, 3, ok, 2, bad);
	assert_int_equal(dp_ctl_run(&cfg, &sb.spec, &res, NULL), 0);
	assert_int_equal(res.outcome, DP_CTL_SPAWN_FAILED);
	assert_int_equal(res.failed_rank, 2);
	assert_int_equal(res.exit_code, EX_UNAVAILABLE);
	assert_non_null(strstr(res.cause, "cannot execute '/nonexistent/dpworker' for rank 2"));
	assert_int_equal(leftovers(mark), 0);
}

static void exit_zero_without_done_is_a_failure(void **state)
{
	static const char *const t[] = { "/bin/true", NULL };
	struct dp_ctl_cfg cfg = { .grace_s = 1 };
	struct dp_ctl_result res;
	struct spec_buf sb;

	(void)state;
	make_spec(&sb, 1, t, -1, NULL);
	assert_int_equal(dp_ctl_run(&cfg, &sb.spec, &res, NULL), 0);
	assert_int_equal(res.outcome, DP_CTL_RANK_NODONE);
	assert_int_equal(res.exit_code, EX_PROTOCOL);
}

static int count_hook(void *arg, const struct dp_ctl_result *r, int attempt)
{
	int *calls = arg;

	assert_int_equal(r->outcome, DP_CTL_RANK_EXIT);
	assert_int_equal(attempt, *calls + 1);
	(*calls)++;
	return 1;
}

static void restarts_are_bounded(void **state)
{
	static const char *const f[] = { "/bin/sh", "-c", "exit 7", NULL };
	struct dp_ctl_cfg cfg = { .grace_s = 1, .max_restarts = 2 };
	struct dp_ctl_result res;
	struct spec_buf sb;
	int calls = 0;

	(void)state;
	make_spec(&sb, 2, f, -1, NULL);
	cfg.restart_hook = count_hook;
	cfg.hook_arg = &calls;
	assert_int_equal(dp_ctl_run(&cfg, &sb.spec, &res, NULL), 0);
	assert_int_equal(calls, 2);
	assert_int_equal(res.attempts, 3);
	assert_int_equal(res.exit_code, 7);
	/* default policy: a second restart needs progress; exit 7 makes none */
	cfg.restart_hook = NULL;
	cfg.max_restarts = 5;
	assert_int_equal(dp_ctl_run(&cfg, &sb.spec, &res, NULL), 0);
	assert_int_equal(res.attempts, 2);
}

/* ---- spares: which failures swap a node ------------------------------------ */

static void node_failure_is_told_from_a_job_failure(void **state)
{
	static const struct {
		enum dp_ctl_outcome o;
		int code, node;
	} cases[] = {
		{ DP_CTL_SPAWN_FAILED, EX_UNAVAILABLE, 1 },
		{ DP_CTL_RENDEZVOUS, EX_UNAVAILABLE, 1 },
		{ DP_CTL_RANK_LOST, EX_IOERR, 1 },
		{ DP_CTL_RANK_HANG, DP_CTL_EXIT_HANG, 1 },
		{ DP_CTL_PREFLIGHT_FAILED, DP_CTL_EXIT_PREFLIGHT, 1 },
		{ DP_CTL_RANK_SIGNAL, 128 + SIGKILL, 1 },
		{ DP_CTL_RANK_SIGNAL, 128 + SIGBUS, 1 },
		{ DP_CTL_RANK_SIGNAL, 128 + SIGTERM, 1 },
		/* the program's own bug, on any node */
		{ DP_CTL_RANK_SIGNAL, 128 + SIGABRT, 0 },
		{ DP_CTL_RANK_SIGNAL, 128 + SIGSEGV, 0 },
		{ DP_CTL_RANK_SIGNAL, 128 + SIGFPE, 0 },
		{ DP_CTL_RANK_SIGNAL, 128 + SIGILL, 0 },
		/* exit codes, even ones that look like a signal's */
		{ DP_CTL_RANK_EXIT, 65, 0 },
		{ DP_CTL_RANK_EXIT, 70, 0 },
		{ DP_CTL_RANK_EXIT, 128 + SIGKILL, 0 },
		{ DP_CTL_RANK_NODONE, EX_PROTOCOL, 0 },
		{ DP_CTL_OK, 0, 0 },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct dp_ctl_result r = { .outcome = cases[i].o, .exit_code = cases[i].code };

		if (dp_ctl_node_failure(&r) != cases[i].node)
			fail_msg("%s with code %d: node failure %d, want %d",
				 dp_ctl_outcome_name(cases[i].o), cases[i].code,
				 dp_ctl_node_failure(&r), cases[i].node);
	}
}

static void count_replace(void *arg, const struct dp_ctl_event *ev)
{
	if (ev->type == DP_CTL_EV_REPLACE)
		(*(int *)arg)++;
}

/* Rank 1 on node n2 runs @failing on every attempt, rank 0 on n1 sleeps;
 * spares s1..s3 (the local backend runs them all here), up to 5 restarts.
 * Returns the REPLACE events seen. */
static int run_with_spares(const char *const *failing, struct dp_ctl_result *res)
{
	static const char *const sleeper[] = { "/bin/sleep", "5", NULL };
	static const char *const spares[] = { "s1", "s2", "s3" };
	struct dp_ctl_cfg cfg = { .rendezvous_s = 5, .grace_s = 1, .max_restarts = 5 };
	struct dp_err err = { 0 };
	struct spec_buf sb;
	int replaces = 0;
	char mark[64];

	set_mark(mark, sizeof(mark));
	make_spec(&sb, 2, sleeper, 1, failing);
	sb.ranks[0].host = "n1";
	sb.ranks[1].host = "n2";
	cfg.spares = spares;
	cfg.nspares = 3;
	cfg.on_event = count_replace;
	cfg.event_arg = &replaces;
	if (dp_ctl_run(&cfg, &sb.spec, res, &err) != 0)
		fail_msg("%s", err.msg);
	assert_int_equal(leftovers(mark), 0);
	return replaces;
}

/* A rank that exits 65 on every attempt (a bad recipe value, say) is the
 * job's failure: no spare is used, and the no-progress rule stops the loop
 * after the second attempt, still on n2. */
static void job_failure_keeps_the_spares(void **state)
{
	static const char *const bad[] = { "/bin/sh", "-c", "echo bad value; exit 65", NULL };
	static const char *const segv[] = { "/bin/sh", "-c", "kill -SEGV $$", NULL };
	struct dp_ctl_result res;

	(void)state;
	assert_int_equal(run_with_spares(bad, &res), 0);
	assert_int_equal(res.nreplaced, 0);
	assert_int_equal(res.attempts, 2);
	assert_int_equal(res.outcome, DP_CTL_RANK_EXIT);
	assert_int_equal(res.exit_code, 65);
	assert_string_equal(res.failed_host, "n2");
	if (!strstr(res.cause, "; not restarting: attempt 2 got no further than step 0"))
		fail_msg("%s", res.cause);
	/* a segfault is the program's too */
	assert_int_equal(run_with_spares(segv, &res), 0);
	assert_int_equal(res.nreplaced, 0);
	assert_int_equal(res.attempts, 2);
	assert_int_equal(res.outcome, DP_CTL_RANK_SIGNAL);
	assert_int_equal(res.exit_code, 128 + SIGSEGV);
	assert_string_equal(res.failed_host, "n2");
}

/* A rank killed (SIGKILL) on every node: n2 is swapped for s1, whose
 * attempt gets its restart regardless of progress; failing there too
 * without progress, the run stops rather than use s2. */
static void second_swap_without_progress_stops(void **state)
{
	static const char *const killed[] = { "/bin/sh", "-c", "kill -9 $$", NULL };
	struct dp_ctl_result res;

	(void)state;
	assert_int_equal(run_with_spares(killed, &res), 1);
	assert_int_equal(res.nreplaced, 1);
	assert_string_equal(res.replaced[0],
			    "restart 1: node n2 failed (rank-signal); replaced by spare s1");
	assert_int_equal(res.attempts, 2);
	assert_int_equal(res.outcome, DP_CTL_RANK_SIGNAL);
	assert_int_equal(res.exit_code, 128 + SIGKILL);
	assert_string_equal(res.failed_host, "s1");
	if (!strstr(res.cause, "; not restarting: attempt 2 made no progress after replacing 1 "
			       "node") ||
	    strstr(res.cause, "got no further"))
		fail_msg("%s", res.cause);
}

/* 10 nodes fail the pre-flight gate at once (every worker's clock is off):
 * all 10 go to spares in one restart, and the result keeps the first
 * DP_CTL_REPLACED_LINES lines and counts them all.  The second attempt
 * fails pre-flight too and the run stops. */
static void many_failing_nodes_all_go_to_spares(void **state)
{
	enum { N = 10, NSPARE = 12 };
	static const char *const env[] = { "DP_TEST_CLOCK_SKEW_S=-120", NULL };
	struct dp_preflight_plan pf = { .checks = DP_PF_CLOCK, .max_clock_s = 5 };
	struct dp_ctl_cfg cfg = {
		.rendezvous_s = 30, .grace_s = 1, .max_restarts = 1, .preflight = &pf
	};
	struct dp_launch_rank *ranks = calloc(N, sizeof(*ranks));
	struct dp_launch_spec spec = { .ranks = ranks, .nranks = N };
	const char *argv[] = { worker_or_skip(), "--fake-steps", "1", NULL }, *spares[NSPARE];
	char hosts[N][8], sp[NSPARE][8], mark[64];
	struct dp_ctl_result res;
	struct dp_err err = { 0 };
	int replaces = 0;

	(void)state;
	assert_non_null(ranks);
	set_mark(mark, sizeof(mark));
	for (int i = 0; i < N; i++) {
		(void)snprintf(hosts[i], sizeof(hosts[i]), "n%d", i + 1);
		ranks[i] = (struct dp_launch_rank){
			.rank = i, .host = hosts[i], .local_index = 0, .argv = argv, .env = env
		};
	}
	for (int i = 0; i < NSPARE; i++) {
		(void)snprintf(sp[i], sizeof(sp[i]), "s%d", i + 1);
		spares[i] = sp[i];
	}
	cfg.spares = spares;
	cfg.nspares = NSPARE;
	cfg.on_event = count_replace;
	cfg.event_arg = &replaces;
	if (dp_ctl_run(&cfg, &spec, &res, &err) != 0)
		fail_msg("%s", err.msg);
	free(ranks);
	assert_int_equal(leftovers(mark), 0);
	assert_int_equal(res.outcome, DP_CTL_PREFLIGHT_FAILED);
	assert_int_equal(res.attempts, 2);
	assert_int_equal(replaces, N);
	assert_int_equal(res.nreplaced_all, N);
	assert_int_equal(res.nreplaced, DP_CTL_REPLACED_LINES);
	assert_string_equal(res.replaced[0],
			    "restart 1: node n1 failed (pre-flight); replaced by spare s1");
	assert_int_equal(res.npf_bad, N);
	assert_int_equal(res.npf_lines, N);
	if (!strstr(res.cause, "pre-flight failed on 10 of 10 nodes: s1 (rank 0): "))
		fail_msg("%s", res.cause);
}

/* Which nodes a failed pre-flight swaps, at scale: 1024 nodes x 8 ranks,
 * 300 of them failing (one to all of their ranks, more than the 64 a
 * fixed list once held): each once, in the order of its first failing
 * rank; one more failing node than spares: none (-E2BIG). */
static void failed_nodes_are_picked_once_in_rank_order(void **state)
{
	enum { NODES = 1024, PER = 8, NRANKS = NODES * PER, NBAD = 300 };
	const char **host = calloc(NRANKS, sizeof(*host)), **out = calloc(NODES, sizeof(*out));
	char(*name)[8] = calloc(NODES, sizeof(*name));

	(void)state;
	assert_true(host && out && name);
	for (int h = 0; h < NODES; h++)
		(void)snprintf(name[h], sizeof(name[h]), "n%04d", h);
	/* node 3h+1 fails for h < NBAD, on ranks local (h % PER)..PER-1; the
	 * ranks of node n go round-robin (rank r on node r % NODES), so a
	 * node's ranks are not next to each other */
	for (int r = 0; r < NRANKS; r++) {
		int node = r % NODES, local = r / NODES;

		if (node % 3 == 1 && node / 3 < NBAD && local >= (node / 3) % PER)
			host[r] = name[node];
	}
	assert_int_equal(dp_ctl_failed_nodes(host, NRANKS, out, NODES), NBAD);
	for (int k = 0; k < NBAD; k++) /* each node once */
		for (int j = 0; j < k; j++)
			assert_true(strcmp(out[j], out[k]) != 0);
	/* the nodes failing from local 0 (h % PER == 0) have the lowest first
	 * failing ranks: node 1 (rank 1), node 25 (h 8, rank 25), ... */
	assert_string_equal(out[0], "n0001");
	assert_string_equal(out[1], "n0025");
	assert_string_equal(out[NBAD - 1], "n0886"); /* h 295: from local 7, rank 7 * 1024 + 886 */
	assert_int_equal(dp_ctl_failed_nodes(host, NRANKS, out, NBAD), NBAD);
	assert_int_equal(dp_ctl_failed_nodes(host, NRANKS, out, NBAD - 1), -E2BIG);
	/* none failing: none */
	memset(host, 0, NRANKS * sizeof(*host));
	assert_int_equal(dp_ctl_failed_nodes(host, NRANKS, out, 1), 0);
	free(host);
	free(out);
	free(name);
}

static void port_in_use_is_refused(void **state)
{
	static const char *const t[] = { "/bin/true", NULL };
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sin);
	struct dp_ctl_cfg cfg = { 0 };
	struct dp_ctl_result res;
	struct dp_err err = { 0 };
	struct spec_buf sb;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	(void)state;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(fd, 1), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
	cfg.port = ntohs(sin.sin_port);
	make_spec(&sb, 1, t, -1, NULL);
	assert_int_equal(dp_ctl_run(&cfg, &sb.spec, &res, &err), -EADDRINUSE);
	assert_non_null(strstr(err.msg, "in use"));
	(void)close(fd);
}

/* ---- controller with dpworker ------------------------------------------------ */

static void four_rank_run_completes(void **state)
{
	const char *w = worker_or_skip();
	const char *const argv[] = { w, "--fake-steps", "5", "--fake-step-ms", "10", NULL };
	struct dp_ctl_cfg cfg = { .rendezvous_s = 5 + slack(),
				  .heartbeat_s = 0.05,
				  .hang_timeout_s = 3 };
	struct dp_ctl_result res;
	struct dp_err err = { 0 };
	struct spec_buf sb;
	char *text = NULL, mark[64];
	size_t len = 0;

	(void)state;
	set_mark(mark, sizeof(mark));
	cfg.out = open_memstream(&text, &len);
	make_spec(&sb, 4, argv, -1, NULL);
	assert_int_equal(dp_ctl_run(&cfg, &sb.spec, &res, &err), 0);
	(void)fclose(cfg.out);
	assert_int_equal(res.outcome, DP_CTL_OK);
	assert_int_equal(res.exit_code, 0);
	assert_int_equal(res.failed_rank, -1);
	assert_true(res.ready_s >= 0 && res.ready_s < 5 + slack());
	assert_int_equal(res.max_step, 5); /* done is preceded by a final heartbeat */
	for (int r = 0; r < 4; r++) {
		char needle[64];

		(void)snprintf(needle, sizeof(needle), "[localhost:%d] step 5/5", r);
		assert_non_null(strstr(text, needle));
	}
	free(text);
	assert_int_equal(leftovers(mark), 0);
}

static void hanging_rank_is_detected(void **state)
{
	const char *w = worker_or_skip();
	const char *const argv[] = { w, "--fake-steps", "1000", "--fake-step-ms", "10", NULL };
	const char *const hang[] = { w,	   "--fake-steps",   "1000", "--fake-step-ms",
				     "10", "--fake-hang-at", "3",    NULL };
	struct dp_ctl_cfg cfg = { .rendezvous_s = 5 + slack(),
				  .heartbeat_s = 0.1,
				  .hang_timeout_s = 1,
				  .dump_wait_s = 0.5,
				  .grace_s = 1 };
	struct dp_ctl_result res;
	struct spec_buf sb;
	char *text = NULL, mark[64];
	size_t len = 0;
	double t0 = mono();

	(void)state;
	set_mark(mark, sizeof(mark));
	cfg.out = open_memstream(&text, &len);
	make_spec(&sb, 3, argv, 2, hang);
	assert_int_equal(dp_ctl_run(&cfg, &sb.spec, &res, NULL), 0);
	(void)fclose(cfg.out);
	assert_int_equal(res.outcome, DP_CTL_RANK_HANG);
	assert_int_equal(res.exit_code, DP_CTL_EXIT_HANG);
	assert_int_equal(res.failed_rank, 2);
	assert_non_null(strstr(res.cause, "rank 2 on localhost"));
	assert_non_null(strstr(res.cause, "hung"));
	/* detected within the timeout plus a heartbeat, dump wait and teardown */
	assert_true(mono() - t0 < 1 + 0.5 + 1 + 2 + slack());
	/* every rank was asked for its stacks before being stopped */
	assert_non_null(strstr(text, "[localhost:2] dpworker: stack dump"));
	assert_non_null(strstr(text, "[localhost:0] dpworker: stack dump"));
	free(text);
	assert_int_equal(leftovers(mark), 0);
}

static void absent_rank_fails_rendezvous(void **state)
{
	const char *w = worker_or_skip();
	const char *const argv[] = { w, "--fake-steps", "5", NULL };
	const char *const absent[] = { w, "--fake-steps", "5", "--fake-no-connect", NULL };
	struct dp_ctl_cfg cfg = { .rendezvous_s = 1 + slack(), .grace_s = 1 };
	struct dp_ctl_result res;
	struct spec_buf sb;
	char mark[64];
	double t0 = mono();

	(void)state;
	set_mark(mark, sizeof(mark));
	make_spec(&sb, 4, argv, 3, absent);
	assert_int_equal(dp_ctl_run(&cfg, &sb.spec, &res, NULL), 0);
	assert_int_equal(res.outcome, DP_CTL_RENDEZVOUS);
	assert_int_equal(res.exit_code, EX_UNAVAILABLE);
	assert_int_equal(res.failed_rank, 3);
	assert_non_null(strstr(res.cause, "1 of 4 ranks missing: 3 (localhost)"));
	assert_true(mono() - t0 < 3 + slack());
	assert_int_equal(leftovers(mark), 0);
}

/* A foreign client: bad token, then garbage, against a live run. */
struct intruder {
	int port;
	int refused_token, refused_garbage, refused_unknown, refused_oversized;
};

static int dial_loopback(int port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	double until = mono() + 3;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	while (mono() < until) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);

		if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0)
			return fd;
		(void)close(fd);
		(void)usleep(20000);
	}
	return -1;
}

/* Send @len bytes and report whether the controller then closed on us. */
static int closed_after(int port, const void *buf, size_t len)
{
	struct timeval tv = { 3, 0 };
	char c;
	int fd = dial_loopback(port), closed;

	if (fd < 0)
		return 0;
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (dp_ctl_write_all(fd, buf, len) != 0) {
		(void)close(fd);
		return 0;
	}
	closed = read(fd, &c, 1) == 0;
	(void)close(fd);
	return closed;
}

static void *intrude(void *arg)
{
	struct intruder *in = arg;
	struct dp_ctl_msg m;
	struct dp_buf b;

	memset(&m, 0, sizeof(m));
	m.type = DP_CTL_HELLO;
	m.u.hello.rank = 0;
	(void)snprintf(m.u.hello.host, sizeof(m.u.hello.host), "intruder");
	memset(m.u.hello.token, 0x5a, sizeof(m.u.hello.token));
	dp_buf_init(&b, 1 << 16);
	if (dp_ctl_encode(&m, &b, NULL) == 0)
		in->refused_token = closed_after(in->port, b.data, b.len);
	in->refused_garbage = closed_after(in->port, "GET / HTTP/1.0\r\n\r\n", 18);
	{
		static const unsigned char unknown[8] = {
			0xd9, 0xc7, DP_CTL_VERSION, 99, 0, 0, 0, 0
		};
		static const unsigned char huge[8] = { 0xd9, 0xc7, DP_CTL_VERSION, DP_CTL_HELLO,
						       0x7f, 0xff, 0xff,	   0xff };

		in->refused_unknown = closed_after(in->port, unknown, sizeof(unknown));
		in->refused_oversized = closed_after(in->port, huge, sizeof(huge));
	}
	dp_buf_release(&b);
	return NULL;
}

static int free_port(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
	port = ntohs(sin.sin_port);
	(void)close(fd);
	return port;
}

static void wrong_token_is_refused_and_run_unaffected(void **state)
{
	const char *w = worker_or_skip();
	const char *const argv[] = { w, "--fake-steps", "50", "--fake-step-ms", "20", NULL };
	struct dp_ctl_cfg cfg = { .rendezvous_s = 5 + slack(),
				  .heartbeat_s = 0.1,
				  .hang_timeout_s = 3 };
	struct intruder in = { 0 };
	struct dp_ctl_result res;
	struct dp_err err = { 0 };
	struct spec_buf sb;
	char *log = NULL;
	size_t len = 0;
	FILE *logf = open_memstream(&log, &len);
	pthread_t th;

	(void)state;
	dp_log_set_sink(logf);
	in.port = cfg.port = free_port();
	make_spec(&sb, 2, argv, -1, NULL);
	assert_int_equal(pthread_create(&th, NULL, intrude, &in), 0);
	assert_int_equal(dp_ctl_run(&cfg, &sb.spec, &res, &err), 0);
	assert_int_equal(pthread_join(th, NULL), 0);
	dp_log_set_sink(NULL);
	(void)fclose(logf);
	assert_int_equal(res.outcome, DP_CTL_OK);
	assert_true(in.refused_token);
	assert_true(in.refused_garbage);
	assert_true(in.refused_unknown);
	assert_true(in.refused_oversized);
	assert_true(res.refused >= 4);
	assert_non_null(strstr(log, "wrong job token"));
	assert_non_null(strstr(log, "bad frame magic"));
	assert_non_null(strstr(log, "unknown message type 99"));
	assert_non_null(strstr(log, "exceeds the"));
	free(log);
}

/* ---- dpctl launch -------------------------------------------------------------- */

static void dpctl_launch_failing_rank_sets_exit_code(void **state)
{
	struct dp_test_run r;
	char mark[64], rdv[32];

	(void)state;
	(void)worker_or_skip();
	set_mark(mark, sizeof(mark));
	(void)snprintf(rdv, sizeof(rdv), "%g", 5 + slack());
	r = DPCTL("launch", "--local", "4", "--fake-steps", "200", "--fake-step-ms", "10",
		  "--fake-fail", "2:3", "--fake-spawn-child", "--grace-s", "1", "--rendezvous-s",
		  rdv);
	assert_int_equal(r.rc, 3);
	assert_non_null(strstr(r.err, "root cause: rank 2 on localhost"));
	assert_non_null(strstr(r.err, "exited with status 3"));
	assert_non_null(strstr(r.err, "failing at step 3 with status 3"));
	assert_non_null(strstr(r.out, "[localhost:2] step 2/200"));
	dp_test_run_free(&r);
	/* no rank, and none of the children they left behind, survives */
	assert_int_equal(leftovers(mark), 0);
}

static void dpctl_launch_ok_and_json(void **state)
{
	struct dp_test_run r;

	(void)state;
	(void)worker_or_skip();
	r = DPCTL("--json", "launch", "--local", "2", "--fake-steps", "3", "--fake-step-ms", "5",
		  "--heartbeat-s", "0.05");
	assert_int_equal(r.rc, 0);
	/* the event stream ends with "done", which carries the summary */
	assert_non_null(strstr(r.out, "{\"event\":\"done\""));
	assert_non_null(strstr(r.out, "\"outcome\":\"ok\""));
	assert_non_null(strstr(r.out, "\"ranks\":2}\n"));
	dp_test_run_free(&r);
}

static void dpctl_launch_dry_run_and_usage(void **state)
{
	struct dp_test_run r;

	(void)state;
	r = DPCTL("launch", "--local", "2", "--fake-fail", "1:4:9", "--dry-run", "--worker",
		  "/opt/dp/dpworker");
	assert_int_equal(r.rc, 0);
	assert_non_null(strstr(r.out, "rank 0 on localhost (local 0): /opt/dp/dpworker "
				      "--fake-steps 20"));
	assert_non_null(strstr(r.out, "rank 1 on localhost (local 1): /opt/dp/dpworker "
				      "--fake-steps 20 --fake-step-ms 20 --fake-fail-at 4 "
				      "--fake-exit-code 9\n"));
	assert_null(strstr(r.out, "DP_JOB_TOKEN="));
	dp_test_run_free(&r);
	r = DPCTL("launch", "--local", "2", "--fake-hang", "5:1", "--dry-run");
	assert_int_equal(r.rc, EX_USAGE);
	assert_non_null(strstr(r.err, "outside 0..1"));
	dp_test_run_free(&r);
	r = DPCTL("launch", "--local", "0");
	assert_int_equal(r.rc, EX_USAGE);
	dp_test_run_free(&r);
	r = DPCTL("launch", "--local", "2", "--hang-timeout-s", "soon");
	assert_int_equal(r.rc, EX_USAGE);
	assert_non_null(strstr(r.err, "--hang-timeout-s"));
	dp_test_run_free(&r);
	r = DPCTL("launch", "recipe.yaml");
	assert_int_equal(r.rc, EX_NOINPUT); /* recipes are read, not refused */
	dp_test_run_free(&r);
}

/* ---- ssh backend against a private sshd on 127.0.0.1 -------------------------- */

static int run_quiet(const char *const *argv)
{
	int st = -1;
	pid_t pid = fork();

	if (pid == 0) {
		int fd = open("/dev/null", O_WRONLY);

		(void)dup2(fd, 1);
		(void)dup2(fd, 2);
		(void)execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &st, 0) != pid)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* "@dir/@name" in a static buffer (one use at a time). */
static const char *strcat_path(const char *dir, const char *name)
{
	static char buf[256];

	(void)snprintf(buf, sizeof(buf), "%s/%s", dir, name);
	return buf;
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_true(fputs(text, f) >= 0);
	assert_int_equal(fclose(f), 0);
}

/* "[127.0.0.1]:PORT <type> <base64>" from the first two fields of @pub. */
static void known_line(const char *pub, char *out, size_t len)
{
	char *text = dp_test_slurp(pub), *sp = strchr(text, ' ');

	assert_non_null(sp);
	sp = strchr(sp + 1, ' ');
	if (sp)
		*sp = '\0';
	(void)snprintf(out, len, "[127.0.0.1]:%d %s\n", sshd.port, text);
	free(text);
}

/* Start sshd once for all ssh tests; skip() if that is not possible here. */
static void sshd_or_skip(void)
{
	char path[160], cfg[1024], line[512], line2[512];
	const char *w = getenv("DPWORKER");

	if (!w || !*w || access("/usr/sbin/sshd", X_OK) != 0 ||
	    access("/usr/bin/ssh-keygen", X_OK) != 0)
		skip();
	if (sshd.tried) {
		if (sshd.pid <= 0)
			skip();
		return;
	}
	sshd.tried = 1;
	(void)snprintf(sshd.dir, sizeof(sshd.dir), "/tmp/dpsshd-XXXXXX");
	assert_non_null(mkdtemp(sshd.dir));
	for (int i = 0; i < 2; i++) {
		char kf[128];
		const char *argv[] = {
			"/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", kf, NULL
		};

		(void)snprintf(kf, sizeof(kf), "%s/%s", sshd.dir, i ? "userkey" : "hostkey");
		assert_int_equal(run_quiet(argv), 0);
	}
	(void)snprintf(sshd.key, sizeof(sshd.key), "%s/userkey", sshd.dir);
	sshd.port = free_port();
	(void)snprintf(cfg, sizeof(cfg),
		       "ListenAddress 127.0.0.1\nPort %d\nHostKey %s/hostkey\n"
		       "AuthorizedKeysFile %s/userkey.pub\nPidFile %s/sshd.pid\n"
		       "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
		       "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\n"
		       "StrictModes no\nUsePAM no\nLogLevel ERROR\n",
		       sshd.port, sshd.dir, sshd.dir, sshd.dir);
	(void)snprintf(path, sizeof(path), "%s/sshd_config", sshd.dir);
	write_file(path, cfg);
	known_line(strcat_path(sshd.dir, "hostkey.pub"), line, sizeof(line));
	known_line(strcat_path(sshd.dir, "userkey.pub"), line2, sizeof(line2));
	(void)snprintf(sshd.kh_good, sizeof(sshd.kh_good), "%s/known_hosts", sshd.dir);
	(void)snprintf(sshd.kh_bad, sizeof(sshd.kh_bad), "%s/known_hosts.bad", sshd.dir);
	(void)snprintf(sshd.kh_empty, sizeof(sshd.kh_empty), "%s/known_hosts.empty", sshd.dir);
	write_file(sshd.kh_good, line);
	write_file(sshd.kh_bad, line2); /* another key for the same host: "changed" */
	write_file(sshd.kh_empty, "");
	sshd.pid = fork();
	if (sshd.pid == 0) {
		int fd;

		(void)prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0); /* dies with the test */

		(void)snprintf(path, sizeof(path), "%s/sshd.log", sshd.dir);
		fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		(void)dup2(fd, 2);
		(void)snprintf(path, sizeof(path), "%s/sshd_config", sshd.dir);
		(void)execl("/usr/sbin/sshd", "/usr/sbin/sshd", "-D", "-e", "-f", path,
			    (char *)NULL);
		_exit(127);
	}
	{
		int fd = dial_loopback(sshd.port); /* up to 3 s */

		if (fd < 0) {
			(void)kill(sshd.pid, SIGKILL);
			(void)waitpid(sshd.pid, NULL, 0);
			sshd.pid = 0;
			skip();
		}
		(void)close(fd);
	}
}

static int sshd_teardown(void **state)
{
	(void)state;
	if (sshd.pid > 0) {
		(void)kill(sshd.pid, SIGTERM);
		(void)waitpid(sshd.pid, NULL, 0);
	}
	if (sshd.dir[0]) {
		const char *argv[] = { "/bin/rm", "-rf", sshd.dir, NULL };

		(void)run_quiet(argv);
	}
	return 0;
}

static void ssh_opts(struct dp_launch_opts *lo, const char *known_hosts)
{
	memset(lo, 0, sizeof(*lo));
	lo->ssh_port = sshd.port;
	lo->ssh_identity = sshd.key;
	lo->known_hosts = known_hosts;
	lo->no_agent = 1;
}

static void ssh_run_completes_and_failure_stops_all(void **state)
{
	const char *w;
	char mark[64], markenv[96];
	const char *const env[] = { markenv, NULL };
	struct dp_ctl_cfg cfg = { .backend = "ssh", .rendezvous_s = 10, .grace_s = 1 };
	struct dp_launch_opts lo;
	struct dp_ctl_result res;
	struct dp_err err = { 0 };
	struct spec_buf sb;
	char *text = NULL;
	size_t len = 0;

	(void)state;
	sshd_or_skip();
	w = getenv("DPWORKER");
	set_mark(mark, sizeof(mark));
	(void)snprintf(markenv, sizeof(markenv), "DP_TEST_MARK=%s", mark);
	ssh_opts(&lo, sshd.kh_good);
	cfg.launch = &lo;
	{
		const char *const argv[] = { w, "--fake-steps", "3", "--fake-step-ms", "10", NULL };

		make_spec(&sb, 2, argv, -1, NULL);
		for (int i = 0; i < 2; i++) {
			sb.ranks[i].host = "127.0.0.1";
			sb.ranks[i].env = env;
		}
		cfg.out = open_memstream(&text, &len);
		assert_int_equal(dp_ctl_run(&cfg, &sb.spec, &res, &err), 0);
		(void)fclose(cfg.out);
		cfg.out = NULL;
		if (res.outcome != DP_CTL_OK)
			fail_msg("ssh run failed: %s", res.cause);
		assert_non_null(strstr(text, "[127.0.0.1:1] step 3/3"));
		free(text);
	}
	{
		const char *const argv[] = { w,	   "--fake-steps",	 "500", "--fake-step-ms",
					     "10", "--fake-spawn-child", NULL };
		const char *const bad[] = { w,	  "--fake-steps",   "500", "--fake-step-ms",
					    "10", "--fake-fail-at", "3",   "--fake-spawn-child",
					    NULL };

		make_spec(&sb, 3, argv, 1, bad);
		for (int i = 0; i < 3; i++) {
			sb.ranks[i].host = "127.0.0.1";
			sb.ranks[i].env = env;
		}
		assert_int_equal(dp_ctl_run(&cfg, &sb.spec, &res, &err), 0);
		assert_int_equal(res.outcome, DP_CTL_RANK_EXIT);
		assert_int_equal(res.exit_code, 3);
		assert_int_equal(res.failed_rank, 1);
		assert_string_equal(res.failed_host, "127.0.0.1");
	}
	/* the remote wrappers stop their groups once the channels close */
	{
		double until = mono() + 5;

		/* remote orphans are re-parented to us here (the local backend made
		 * us a subreaper, and "remote" is this machine): reap them */
		do {
			while (waitpid(-1, NULL, WNOHANG) > 0)
				;
			if (!leftovers(mark))
				break;
			(void)usleep(50000);
		} while (mono() < until);
		assert_int_equal(leftovers(mark), 0);
	}
}

static void ssh_values_arrive_verbatim_token_not_in_argv(void **state)
{
	static const char value[] = "it's \"q\" $(echo pwned) `id` ; echo no && \\ *";
	static const char script[] = "printf '%s\\n' \"$1\"; printf 'toklen=%s\\n' "
				     "\"${#DP_JOB_TOKEN}\"; grep -c \"$DP_JOB_TOKEN\" "
				     "/proc/$PPID/cmdline; exit 3";
	const char *const argv[] = { "/bin/sh", "-c", script, "x", value, NULL };
	struct dp_ctl_cfg cfg = { .backend = "ssh", .rendezvous_s = 10, .grace_s = 1 };
	struct dp_launch_opts lo;
	struct dp_ctl_result res;
	struct spec_buf sb;

	(void)state;
	sshd_or_skip();
	ssh_opts(&lo, sshd.kh_good);
	cfg.launch = &lo;
	make_spec(&sb, 1, argv, -1, NULL);
	sb.ranks[0].host = "127.0.0.1";
	assert_int_equal(dp_ctl_run(&cfg, &sb.spec, &res, NULL), 0);
	assert_int_equal(res.exit_code, 3);
	assert_int_equal(res.ntail, 3);
	assert_string_equal(res.tail[0], value);
	assert_string_equal(res.tail[1], "toklen=64");
	assert_string_equal(res.tail[2], "0"); /* the wrapper's command line lacks it */
}

static void ssh_host_key_and_connect_failures_name_the_host(void **state)
{
	static const char *const argv[] = { "/bin/true", NULL };
	struct dp_ctl_cfg cfg = { .backend = "ssh", .rendezvous_s = 10, .grace_s = 1 };
	struct dp_launch_opts lo;
	struct dp_ctl_result res;
	struct spec_buf sb;
	char kh[160], *text;

	(void)state;
	sshd_or_skip();
	cfg.launch = &lo;
	make_spec(&sb, 2, argv, -1, NULL);
	sb.ranks[0].host = sb.ranks[1].host = "127.0.0.1";

	ssh_opts(&lo, sshd.kh_empty);
	assert_int_equal(dp_ctl_run(&cfg, &sb.spec, &res, NULL), 0);
	assert_int_equal(res.outcome, DP_CTL_SPAWN_FAILED);
	assert_non_null(strstr(res.cause, "host key of '127.0.0.1' is unknown"));

	ssh_opts(&lo, sshd.kh_bad);
	assert_int_equal(dp_ctl_run(&cfg, &sb.spec, &res, NULL), 0);
	assert_int_equal(res.outcome, DP_CTL_SPAWN_FAILED);
	assert_non_null(strstr(res.cause, "host key of '127.0.0.1' has CHANGED"));

	/* accept-new learns an unknown key ... */
	(void)snprintf(kh, sizeof(kh), "%s/known_hosts.new", sshd.dir);
	write_file(kh, "");
	ssh_opts(&lo, kh);
	lo.accept_new = 1;
	assert_int_equal(dp_ctl_run(&cfg, &sb.spec, &res, NULL), 0);
	assert_int_equal(res.outcome, DP_CTL_RANK_NODONE); /* /bin/true ran remotely */
	text = dp_test_slurp(kh);
	assert_non_null(strstr(text, "ssh-ed25519"));
	free(text);
	/* ... but never accepts a changed one */
	ssh_opts(&lo, sshd.kh_bad);
	lo.accept_new = 1;
	assert_int_equal(dp_ctl_run(&cfg, &sb.spec, &res, NULL), 0);
	assert_non_null(strstr(res.cause, "CHANGED"));

	/* nothing listening */
	ssh_opts(&lo, sshd.kh_good);
	lo.ssh_port = free_port();
	assert_int_equal(dp_ctl_run(&cfg, &sb.spec, &res, NULL), 0);
	assert_int_equal(res.outcome, DP_CTL_SPAWN_FAILED);
	assert_non_null(strstr(res.cause, "cannot connect to '127.0.0.1' port"));

	/* wrong identity */
	ssh_opts(&lo, sshd.kh_good);
	(void)snprintf(kh, sizeof(kh), "%s/hostkey", sshd.dir);
	lo.ssh_identity = kh;
	assert_int_equal(dp_ctl_run(&cfg, &sb.spec, &res, NULL), 0);
	assert_int_equal(res.outcome, DP_CTL_SPAWN_FAILED);
	assert_non_null(strstr(res.cause, "authentication as"));
}

static void dpctl_launch_over_ssh_names_the_failing_host(void **state)
{
	struct dp_test_run r;
	char port[16];

	(void)state;
	sshd_or_skip();
	(void)snprintf(port, sizeof(port), "%d", sshd.port);
	r = DPCTL("launch", "--ssh", "127.0.0.1", "--per-host", "3", "--ssh-port", port,
		  "--ssh-identity", sshd.key, "--known-hosts", sshd.kh_good, "--fake-steps", "300",
		  "--fake-step-ms", "10", "--fake-fail", "2:2:5", "--grace-s", "1",
		  "--rendezvous-s", "15", "--worker", getenv("DPWORKER"));
	assert_int_equal(r.rc, 5);
	assert_non_null(strstr(r.err, "root cause: rank 2 on 127.0.0.1"));
	assert_non_null(strstr(r.out, "[127.0.0.1:2] step 1/300"));
	dp_test_run_free(&r);
	/* an unknown host key refuses the launch, naming the host */
	r = DPCTL("launch", "--ssh", "127.0.0.1", "--ssh-port", port, "--ssh-identity", sshd.key,
		  "--known-hosts", sshd.kh_empty, "--worker", getenv("DPWORKER"));
	assert_int_equal(r.rc, EX_UNAVAILABLE);
	assert_non_null(strstr(r.err, "host key of '127.0.0.1' is unknown"));
	dp_test_run_free(&r);
}

/* ---- connection storms: a fake backend, clients from a thread ---------------
 *
 * The backend starts nothing: spawn() records DP_JOB_TOKEN and DP_CONTROLLER,
 * and a client thread plays every rank over its own socket to 127.0.0.1 (plus
 * idle sockets that never say hello).  A rank that has sent DONE is reported
 * as exited 0 by the next dispatch(). */

struct storm {
	int n;	   /* ranks */
	int nidle; /* connections that never say hello, opened first */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int spawned;
	char token[2 * DP_CTL_TOKEN_LEN + 1], ctl[64];
	_Atomic int *done; /* by rank: DONE sent */
	int *reported;	   /* by rank: exit reported */
	int nexited, killed;
	/* client side, checked after the run */
	int *fds, *idle;
	int connect_failed, retrans, idle_open;
};

static struct storm *storm_now; /* the backend's link to the test */

static int storm_probe(int *priority)
{
	*priority = 0;
	return -ENODEV; /* only ever given as dp_ctl_cfg.backend_ops */
}

static int storm_open(const struct dp_launch_opts *opts, struct dp_launch_session **out,
		      struct dp_err *err);

static int storm_spawn(struct dp_launch_session *s, const struct dp_launch_rank *r,
		       const char *const *env, struct dp_err *err)
{
	struct storm *st = storm_now;

	(void)s;
	(void)r;
	(void)err;
	pthread_mutex_lock(&st->lock);
	for (; *env; env++) {
		if (strncmp(*env, "DP_JOB_TOKEN=", 13) == 0)
			(void)snprintf(st->token, sizeof(st->token), "%s", *env + 13);
		else if (strncmp(*env, "DP_CONTROLLER=", 14) == 0)
			(void)snprintf(st->ctl, sizeof(st->ctl), "%s", *env + 14);
	}
	st->spawned++;
	pthread_cond_broadcast(&st->cond);
	pthread_mutex_unlock(&st->lock);
	return 0;
}

static int storm_pollfds(struct dp_launch_session *s, struct pollfd *fds, int max)
{
	(void)s;
	(void)fds;
	(void)max;
	return 0;
}

static int storm_dispatch(struct dp_launch_session *s, const struct pollfd *fds, int n,
			  const struct dp_launch_events *ev, void *arg)
{
	struct storm *st = storm_now;

	(void)s;
	(void)fds;
	(void)n;
	for (int i = 0; i < st->n; i++)
		if (!st->reported[i] && (st->done[i] || st->killed)) {
			st->reported[i] = 1;
			st->nexited++;
			ev->exited(arg, i, st->done[i] ? 0 : 128 + SIGKILL);
		}
	return 0;
}

static int storm_signal(struct dp_launch_session *s, int rank, int sig)
{
	(void)s;
	(void)rank;
	(void)sig;
	storm_now->killed = 1; /* a failed run: stop at once */
	return 0;
}

static int storm_running(struct dp_launch_session *s)
{
	(void)s;
	return storm_now->spawned - storm_now->nexited;
}

static void storm_close(struct dp_launch_session *s)
{
	free(s);
}

static const struct dp_launch_backend storm_backend = {
	.name = "storm",
	.probe = storm_probe,
	.open = storm_open,
	.spawn = storm_spawn,
	.pollfds = storm_pollfds,
	.dispatch = storm_dispatch,
	.signal = storm_signal,
	.running = storm_running,
	.close = storm_close,
};

static int storm_open(const struct dp_launch_opts *opts, struct dp_launch_session **out,
		      struct dp_err *err)
{
	struct dp_launch_session *s = calloc(1, sizeof(*s));

	(void)opts;
	if (!s)
		return dp_err_set(err, ENOMEM, "storm: out of memory");
	s->ops = &storm_backend;
	*out = s;
	return 0;
}

/* A non-blocking connect() to @sin: the fd (connecting), or -1. */
static int storm_dial(const struct sockaddr_in *sin)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd >= 0 && connect(fd, (const struct sockaddr *)sin, sizeof(*sin)) != 0 &&
	    errno != EINPROGRESS) {
		(void)close(fd);
		fd = -1;
	}
	return fd;
}

static int storm_send(int fd, const struct dp_ctl_msg *m)
{
	struct dp_buf b;
	int rc;

	dp_buf_init(&b, 1 << 16);
	rc = dp_ctl_encode(m, &b, NULL);
	if (rc == 0)
		rc = dp_ctl_write_all(fd, b.data, b.len);
	dp_buf_release(&b);
	return rc;
}

/* Read frames from blocking @fd until one of type @type: 0, or -1. */
static int storm_wait_for(int fd, struct dp_ctl_rx *rx, int type)
{
	struct dp_ctl_msg *m = malloc(sizeof(*m));
	int rc = -1;

	while (m) {
		int got = dp_ctl_rx_next(rx, m, NULL);

		if (got < 0)
			break;
		if (got == 1 && (int)m->type == type) {
			rc = 0;
			break;
		}
		if (got == 0 && dp_ctl_rx_fill(rx, fd) <= 0)
			break;
	}
	free(m);
	return rc;
}

static void *storm_clients(void *arg)
{
	struct storm *st = arg;
	struct sockaddr_in sin = { .sin_family = AF_INET };
	struct dp_ctl_msg *m = calloc(1, sizeof(*m));
	struct dp_ctl_rx *rx = malloc(sizeof(*rx));
	uint8_t token[DP_CTL_TOKEN_LEN];
	char *colon;

	pthread_mutex_lock(&st->lock);
	while (st->spawned < st->n)
		pthread_cond_wait(&st->cond, &st->lock);
	pthread_mutex_unlock(&st->lock);
	colon = strrchr(st->ctl, ':');
	if (!m || !rx || !colon || dp_ctl_token_from_hex(st->token, token, NULL) != 0) {
		st->connect_failed = st->n;
		goto out;
	}
	*colon = '\0';
	(void)inet_pton(AF_INET, st->ctl, &sin.sin_addr);
	sin.sin_port = htons((uint16_t)strtol(colon + 1, NULL, 10));
	/* the burst: every socket at once, idle ones first */
	for (int i = 0; i < st->nidle; i++)
		st->idle[i] = storm_dial(&sin);
	for (int i = 0; i < st->n; i++)
		st->fds[i] = storm_dial(&sin);
	/* each rank: wait for the connection, hello + ready, then start -> done */
	for (int i = 0; i < st->n; i++) {
		struct pollfd p = { .fd = st->fds[i], .events = POLLOUT };
		int soerr = 0;
		socklen_t sl = sizeof(soerr);

		if (st->fds[i] < 0 || poll(&p, 1, 60000) != 1 ||
		    getsockopt(st->fds[i], SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr) {
			st->connect_failed++;
			continue;
		}
		(void)fcntl(st->fds[i], F_SETFL, 0); /* blocking from here */
		memset(m, 0, sizeof(*m));
		m->type = DP_CTL_HELLO;
		m->u.hello.rank = (uint32_t)i;
		m->u.hello.pid = 1;
		memcpy(m->u.hello.token, token, sizeof(token));
		(void)snprintf(m->u.hello.host, sizeof(m->u.hello.host), "localhost");
		if (storm_send(st->fds[i], m) != 0) {
			st->connect_failed++;
			continue;
		}
		memset(m, 0, sizeof(*m));
		m->type = DP_CTL_READY;
		if (storm_send(st->fds[i], m) != 0)
			st->connect_failed++;
	}
	for (int i = 0; i < st->n; i++) {
		if (st->fds[i] < 0)
			continue;
		dp_ctl_rx_init(rx);
		if (storm_wait_for(st->fds[i], rx, DP_CTL_START) != 0)
			continue;
		memset(m, 0, sizeof(*m));
		m->type = DP_CTL_DONE;
		if (storm_send(st->fds[i], m) == 0)
			st->done[i] = 1;
	}
out:
	free(m);
	free(rx);
	return NULL;
}

/* Raise RLIMIT_NOFILE to @need: 0, or -1 when the hard limit is lower. */
static int storm_nofile(rlim_t need)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 ||
	    (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need))
		return -1;
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
		rl.rlim_cur = need;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			return -1;
	}
	return 0;
}

/* Run the controller over @n storm ranks and @nidle idle sockets. */
static void storm_run(struct storm *st, int n, int nidle, double hello_s, struct dp_ctl_result *res)
{
	struct dp_launch_rank *ranks = calloc((size_t)n, sizeof(*ranks));
	static const char *const argv[] = { "storm", NULL };
	struct dp_launch_spec spec = { .ranks = ranks, .nranks = (size_t)n };
	struct dp_ctl_cfg cfg = { .backend_ops = &storm_backend,
				  .rendezvous_s = 60,
				  .hello_timeout_s = hello_s,
				  .grace_s = 1 };
	struct dp_err err = { 0 };
	pthread_t th;

	assert_non_null(ranks);
	memset(st, 0, sizeof(*st));
	st->n = n;
	st->nidle = nidle;
	(void)pthread_mutex_init(&st->lock, NULL);
	(void)pthread_cond_init(&st->cond, NULL);
	st->done = calloc((size_t)n, sizeof(*st->done));
	st->reported = calloc((size_t)n, sizeof(*st->reported));
	st->fds = calloc((size_t)n, sizeof(*st->fds));
	st->idle = calloc((size_t)nidle + 1, sizeof(*st->idle));
	assert_true(st->done && st->reported && st->fds && st->idle);
	for (int i = 0; i < n; i++)
		ranks[i] = (struct dp_launch_rank){
			.rank = i, .host = "localhost", .local_index = i, .argv = argv
		};
	storm_now = st;
	assert_int_equal(pthread_create(&th, NULL, storm_clients, st), 0);
	assert_int_equal(dp_ctl_run(&cfg, &spec, res, &err), 0);
	/* a failed run may leave the clients waiting for START: unblock them */
	for (int i = 0; i < n; i++)
		if (st->fds[i] >= 0)
			(void)shutdown(st->fds[i], SHUT_RDWR);
	assert_int_equal(pthread_join(th, NULL), 0);
	free(ranks);
}

static void storm_free(struct storm *st)
{
	for (int i = 0; i < st->n; i++)
		if (st->fds[i] >= 0)
			(void)close(st->fds[i]);
	for (int i = 0; i < st->nidle; i++)
		if (st->idle[i] >= 0)
			(void)close(st->idle[i]);
	free(st->done);
	free(st->reported);
	free(st->fds);
	free(st->idle);
	(void)pthread_mutex_destroy(&st->lock);
	(void)pthread_cond_destroy(&st->cond);
}

/* 3000 ranks connecting at the same moment are all accepted and
 * authenticated, and none needed a retransmission: no SYN was dropped for a
 * full accept queue (the kernel would retry it after 1 s, 3 s, 7 s ...) and
 * no handshake ACK or hello was dropped either.  The check is per socket
 * (TCP_INFO), so other traffic on the machine cannot affect it, and it does
 * not depend on how fast the machine is. */
static void connection_storm_is_accepted_without_retries(void **state)
{
	enum { N = 3000 };
	struct storm st;
	struct dp_ctl_result res;

	(void)state;
	if (storm_nofile(2 * N + 512) != 0)
		skip();
	{
		char *v = NULL;
		size_t cap = 0;
		FILE *f = fopen("/proc/sys/net/core/somaxconn", "re");
		long max = f && getline(&v, &cap, f) > 0 ? strtol(v, NULL, 10) : 0;

		if (f)
			(void)fclose(f);
		free(v);
		if (max < N) /* the kernel would cap the backlog below the burst */
			skip();
	}
	storm_run(&st, N, 0, 0, &res);
	assert_int_equal(res.outcome, DP_CTL_OK);
	assert_int_equal(res.refused, 0);
	assert_int_equal(st.connect_failed, 0);
	for (int i = 0; i < N; i++) {
		struct tcp_info ti;
		socklen_t sl = sizeof(ti);

		assert_true(st.done[i]);
		assert_int_equal(getsockopt(st.fds[i], IPPROTO_TCP, TCP_INFO, &ti, &sl), 0);
		st.retrans += (int)ti.tcpi_total_retrans;
	}
	assert_int_equal(st.retrans, 0);
	storm_free(&st);
}

/* Sockets that connect and never say hello hold every unauthenticated slot
 * (256 for a one-rank job): they are closed at the hello deadline, counted
 * as refused, and the real rank behind them gets in and the run completes. */
static void idle_connections_time_out_and_the_rank_gets_in(void **state)
{
	enum { IDLE = 300 };
	struct storm st;
	struct dp_ctl_result res;
	char c;

	(void)state;
	if (storm_nofile(2 * IDLE + 512) != 0)
		skip();
	storm_run(&st, 1, IDLE, 0.3, &res);
	assert_int_equal(res.outcome, DP_CTL_OK);
	assert_int_equal(st.connect_failed, 0);
	assert_true(st.done[0]);
	/* the first 256 were accepted at once and timed out before the rank
	 * could be accepted; the rest were closed by then or at the end */
	assert_true(res.refused >= 256);
	assert_true(res.refused <= IDLE);
	for (int i = 0; i < IDLE; i++) {
		(void)fcntl(st.idle[i], F_SETFL, 0);
		assert_int_equal(read(st.idle[i], &c, 1), 0); /* closed by the controller */
	}
	storm_free(&st);
}

/* ---- the worker's dial: retried quickly until the controller listens -------- */

struct late_listener {
	int port;
	int fd; /* the accepted connection, -1 if none */
	uint32_t rank;
	int got_hello;
};

/* After 0.3 s, listen on @port, accept one connection and read its hello. */
static void *listen_late(void *arg)
{
	struct late_listener *l = arg;
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)l->port) };
	struct dp_ctl_rx *rx = malloc(sizeof(*rx));
	struct dp_ctl_msg *m = malloc(sizeof(*m));
	struct pollfd p = { .events = POLLIN };
	int one = 1;

	(void)usleep(300 * 1000);
	p.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	(void)setsockopt(p.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (rx && m && p.fd >= 0 && bind(p.fd, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
	    listen(p.fd, 4) == 0 && poll(&p, 1, 20000) == 1) {
		int got = 0;

		l->fd = accept4(p.fd, NULL, NULL, SOCK_CLOEXEC);
		dp_ctl_rx_init(rx);
		while (l->fd >= 0 && (got = dp_ctl_rx_next(rx, m, NULL)) == 0 &&
		       dp_ctl_rx_fill(rx, l->fd) > 0)
			;
		if (got == 1 && m->type == DP_CTL_HELLO) {
			l->got_hello = 1;
			l->rank = m->u.hello.rank;
		}
	}
	if (p.fd >= 0)
		(void)close(p.fd);
	free(rx);
	free(m);
	return NULL;
}

/* The controller is not listening yet (connection refused): the worker keeps
 * trying within its connect window and gets in once it is; with nobody
 * listening at all it gives up at the window, saying why. */
static void worker_dial_retries_until_the_controller_listens(void **state)
{
	struct late_listener l = { .fd = -1 };
	uint8_t token[DP_CTL_TOKEN_LEN] = { 1, 2, 3 };
	struct dp_ctl_client_cfg cc = { .rank = 7, .token = token, .connect_timeout_s = 20 };
	struct dp_ctl_client *c = NULL;
	struct dp_err err = { 0 };
	char addr[64];
	pthread_t th;

	(void)state;
	l.port = free_port();
	assert_true(l.port > 0);
	(void)snprintf(addr, sizeof(addr), "127.0.0.1:%d", l.port);
	cc.controller = addr;
	assert_int_equal(pthread_create(&th, NULL, listen_late, &l), 0);
	assert_int_equal(dp_ctl_client_open(&cc, &c, &err), 0);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_true(l.got_hello);
	assert_int_equal(l.rank, 7);
	dp_ctl_client_close(c);
	(void)close(l.fd);
	/* nobody listens: refused until the window ends */
	cc.connect_timeout_s = 0.3;
	assert_int_equal(dp_ctl_client_open(&cc, &c, &err), -ECONNREFUSED);
	assert_non_null(strstr(err.msg, "cannot connect to controller"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(backend_table_contract),
		cmocka_unit_test(spec_check_names_the_problem),
		cmocka_unit_test(signal_exit_is_128_plus_signal),
		cmocka_unit_test(missing_program_fails_at_spawn),
		cmocka_unit_test(exit_zero_without_done_is_a_failure),
		cmocka_unit_test(restarts_are_bounded),
		cmocka_unit_test(node_failure_is_told_from_a_job_failure),
		cmocka_unit_test(job_failure_keeps_the_spares),
		cmocka_unit_test(second_swap_without_progress_stops),
		cmocka_unit_test(many_failing_nodes_all_go_to_spares),
		cmocka_unit_test(failed_nodes_are_picked_once_in_rank_order),
		cmocka_unit_test(port_in_use_is_refused),
		cmocka_unit_test(four_rank_run_completes),
		cmocka_unit_test(hanging_rank_is_detected),
		cmocka_unit_test(absent_rank_fails_rendezvous),
		cmocka_unit_test(wrong_token_is_refused_and_run_unaffected),
		cmocka_unit_test(dpctl_launch_failing_rank_sets_exit_code),
		cmocka_unit_test(dpctl_launch_ok_and_json),
		cmocka_unit_test(dpctl_launch_dry_run_and_usage),
		cmocka_unit_test(ssh_run_completes_and_failure_stops_all),
		cmocka_unit_test(ssh_values_arrive_verbatim_token_not_in_argv),
		cmocka_unit_test(ssh_host_key_and_connect_failures_name_the_host),
		cmocka_unit_test(dpctl_launch_over_ssh_names_the_failing_host),
		cmocka_unit_test(connection_storm_is_accepted_without_retries),
		cmocka_unit_test(idle_connections_time_out_and_the_rank_gets_in),
		cmocka_unit_test(worker_dial_retries_until_the_controller_listens),
	};

	return cmocka_run_group_tests(tests, NULL, sshd_teardown);
}
