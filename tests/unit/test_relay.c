/* tests/unit/test_relay.c - the ssh relay tree (launcher/relay.c) on a
 * 6-node namespace cluster (tests/netns/netns-cluster.sh) with width 2: the
 * controller connects to 2 nodes, each of which runs `dpworker --relay` for
 * 2 more.  Skipped without root/namespaces/sshd, or when $DPWORKER is not
 * set (make check sets it).  The relay's input handling runs in-process,
 * without the cluster: read() is wrapped (test_relay.ldflags) to count the
 * calls on the input. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/dp_buf.h"
#include "launcher/ctl_launch.h"
#include "tests/unit/dp_test.h"

static int read_fd = -1; /* the relay input under test */
static int read_calls;

ssize_t __real_read(int fd, void *buf, size_t len);
ssize_t __wrap_read(int fd, void *buf, size_t len);
ssize_t __wrap_read(int fd, void *buf, size_t len)
{
	if (fd == read_fd)
		read_calls++;
	return __real_read(fd, buf, len);
}

#define NNODES 6

static int cluster_id;
static char state_dir[128];
static char hosts[NNODES * 20];
static int up;

static int setup(void **state)
{
	char cmd[512];
	FILE *p;
	int rc;

	(void)state;
	if (!getenv("DPWORKER"))
		return 0;
	cluster_id = 20 + (getpid() + 101) % 200;
	(void)snprintf(cmd, sizeof(cmd), "%s/tests/netns/netns-cluster.sh up %d %d 2>/dev/null",
		       DP_SRCDIR, cluster_id, NNODES);
	p = popen(cmd, "r");
	if (!p)
		return 0;
	while (fgets(state_dir, sizeof(state_dir), p))
		;
	rc = pclose(p);
	if (!WIFEXITED(rc) || WEXITSTATUS(rc) != 0)
		return 0; /* 77: no namespaces here, the tests skip */
	state_dir[strcspn(state_dir, "\n")] = '\0';
	for (int i = 1; i <= NNODES; i++) {
		size_t len = strlen(hosts);

		(void)snprintf(hosts + len, sizeof(hosts) - len, "%s10.254.%d.%d", i > 1 ? "," : "",
			       cluster_id, i);
	}
	(void)setenv("DP_LOG", "launch:info", 1);
	up = 1;
	return 0;
}

static int teardown(void **state)
{
	char cmd[512];

	(void)state;
	if (!up)
		return 0;
	(void)snprintf(cmd, sizeof(cmd), "%s/tests/netns/netns-cluster.sh down %d", DP_SRCDIR,
		       cluster_id);
	(void)system(cmd);
	return 0;
}

/* --ssh runs get the width from the environment (recipe runs from
 * cluster.relay_width); the relays get it through their input. */
static struct dp_test_run launch(const char *steps, const char *fail)
{
	char id[300], kh[300];

	(void)setenv("DP_SSH_RELAY_WIDTH", "2", 1);

	(void)snprintf(id, sizeof(id), "%s/id", state_dir);
	(void)snprintf(kh, sizeof(kh), "%s/known_hosts", state_dir);
	if (fail)
		return dp_test_dpctl("launch", "--ssh", hosts, "--per-host", "2", "--ssh-identity",
				     id, "--known-hosts", kh, "--worker", getenv("DPWORKER"),
				     "--fake-steps", steps, "--fake-step-ms", "20", "--fake-fail",
				     fail, "--grace-s", "2");
	return dp_test_dpctl("launch", "--ssh", hosts, "--per-host", "2", "--ssh-identity", id,
			     "--known-hosts", kh, "--worker", getenv("DPWORKER"), "--fake-steps",
			     steps, "--fake-step-ms", "5");
}

/* dpworker processes (relays included) left in the cluster's namespaces. */
static int leftovers(void)
{
	return dp_test_netns_dpworkers(cluster_id, NNODES);
}

static void wait_no_leftovers(void)
{
	for (int i = 0; i < 100 && leftovers(); i++)
		(void)usleep(100 * 1000);
	assert_int_equal(leftovers(), 0);
}

/* "rank R" of the first "ssh: rank R started on HOST" line in @err, where
 * @tail is " started on HOST\n"; "" if there is none. */
static const char *first_start(const char *err, const char *tail)
{
	static char who[32];
	const char *p = strstr(err, tail), *b;

	who[0] = '\0';
	if (!p)
		return who;
	for (b = p; b > err && b[-1] != '\n'; b--)
		;
	b = strstr(b, "rank ");
	if (b && b < p)
		(void)snprintf(who, sizeof(who), "%.*s", (int)(p - b), b);
	return who;
}

static void two_relays_start_twelve_ranks(void **state)
{
	struct dp_test_run r;
	char want[128], text[1024], kh[300], *recipe;

	(void)state;
	if (!up)
		skip();
	/* from a recipe: cluster.relay_width */
	(void)unsetenv("DP_SSH_RELAY_WIDTH");
	(void)snprintf(text, sizeof(text),
		       "cluster:\n  hosts: 10.254.%d.[1-%d]\n  launcher: ssh\n  user: root\n"
		       "  identity: %s/id\n  gpus: 2\n  relay_width: 2\n"
		       "model: {layers: 4, hidden: 32, experts: 4, top_k: 2}\n"
		       "parallel: {pp: 4, dp: 3, schedule: 1f1b}\n"
		       "health: {heartbeat_s: 0.2, hang_timeout_s: 20, rendezvous_s: 30}\n",
		       cluster_id, NNODES, state_dir);
	recipe = dp_test_write_tmp(".yaml", text);
	(void)snprintf(kh, sizeof(kh), "%s/known_hosts", state_dir);
	(void)setenv("DP_LOG", "launch:info,ssh:debug", 1); /* "rank R started on HOST" */
	r = dp_test_dpctl("launch", "--known-hosts", kh, "--fake-steps", "3", "--fake-step-ms", "5",
			  recipe);
	(void)setenv("DP_LOG", "launch:info", 1);
	(void)unlink(recipe);
	free(recipe);
	if (r.rc != 0)
		fail_msg("rc %d: %s\n%s", r.rc, r.err, r.out);
	/* the subtree waits for its relay: a relay host starts it first */
	for (int n = 1; n <= 4; n += 3) {
		(void)snprintf(want, sizeof(want), " started on 10.254.%d.%d\n", cluster_id, n);
		assert_string_equal(first_start(r.err, want), "rank -1");
	}
	/* hosts 1-3 and 4-6 are the two subtrees: 1 and 4 relay for the others */
	(void)snprintf(want, sizeof(want), "relay on 10.254.%d.1 starts 4 ranks on 2 hosts",
		       cluster_id);
	assert_non_null(strstr(r.err, want));
	(void)snprintf(want, sizeof(want), "relay on 10.254.%d.4 starts 4 ranks on 2 hosts",
		       cluster_id);
	assert_non_null(strstr(r.err, want));
	for (int n = 1; n <= NNODES; n++)
		for (int k = 0; k < 2; k++) {
			(void)snprintf(want, sizeof(want), "[10.254.%d.%d:%d] step 3/3", cluster_id,
				       n, (n - 1) * 2 + k);
			if (!strstr(r.out, want))
				fail_msg("missing '%s' in:\n%s", want, r.out);
		}
	assert_non_null(strstr(r.err, "12 ranks done"));
	dp_test_run_free(&r);
	wait_no_leftovers();
}

/* A rank on a relayed node fails: its exit code comes back up the tree, the
 * root cause names it and its host, and every rank everywhere is stopped. */
static void failure_behind_a_relay_stops_everything(void **state)
{
	struct dp_test_run r;
	char want[128];

	(void)state;
	if (!up)
		skip();
	r = launch("500", "9:5:7");
	assert_int_equal(r.rc, 7);
	(void)snprintf(want, sizeof(want), "rank 9 on 10.254.%d.5", cluster_id);
	if (!strstr(r.err, "root cause: ") || !strstr(r.err, want))
		fail_msg("no root cause naming '%s': %s", want, r.err);
	dp_test_run_free(&r);
	wait_no_leftovers();
}

/* A rank behind a relay stops making progress: the hang is found, and the
 * stop (TERM, then KILL) goes down the tree to every rank and to the
 * children they left behind. */
static void hang_behind_a_relay_stops_everything(void **state)
{
	char id[300], kh[300], want[128];
	struct dp_test_run r;

	(void)state;
	if (!up)
		skip();
	(void)setenv("DP_SSH_RELAY_WIDTH", "2", 1);
	(void)snprintf(id, sizeof(id), "%s/id", state_dir);
	(void)snprintf(kh, sizeof(kh), "%s/known_hosts", state_dir);
	r = dp_test_dpctl("launch", "--ssh", hosts, "--per-host", "2", "--ssh-identity", id,
			  "--known-hosts", kh, "--worker", getenv("DPWORKER"), "--fake-steps",
			  "100000", "--fake-step-ms", "20", "--fake-hang", "9:3",
			  "--fake-spawn-child", "--heartbeat-s", "0.2", "--hang-timeout-s", "3",
			  "--grace-s", "1");
	assert_int_equal(r.rc, 124);
	(void)snprintf(want, sizeof(want), "rank 9 on 10.254.%d.5", cluster_id);
	if (!strstr(r.err, "root cause: ") || !strstr(r.err, want))
		fail_msg("no root cause naming '%s': %s", want, r.err);
	dp_test_run_free(&r);
	wait_no_leftovers();
}

/* A relayed node whose sshd is down: the launch fails naming that node. */
static void unreachable_node_behind_a_relay_is_named(void **state)
{
	char pidf[300], want[128];
	struct dp_test_run r;
	char *pid;

	(void)state;
	if (!up)
		skip();
	(void)snprintf(pidf, sizeof(pidf), "%s/sshd-5.pid", state_dir);
	pid = dp_test_slurp(pidf);
	assert_int_equal(kill((pid_t)strtol(pid, NULL, 10), SIGTERM), 0);
	free(pid);
	(void)usleep(300 * 1000);
	r = launch("500", NULL);
	assert_int_not_equal(r.rc, 0);
	(void)snprintf(want, sizeof(want), "root cause: ssh: cannot connect to '10.254.%d.5'",
		       cluster_id);
	if (!strstr(r.err, want))
		fail_msg("want '%s' in: %s", want, r.err);
	dp_test_run_free(&r);
	wait_no_leftovers();
}

/* A first-level relay of a big cluster gets megabytes of input (every
 * rank's spec, the whole known_hosts): it must read it in chunks, not a
 * read() per byte (that took seconds), and still see the rank that comes
 * after a megabyte of known_hosts and the command line after the header.
 * Rank 7's host refuses ssh (port 1), so the relay reports it failed. */
static void big_relay_input_is_read_in_chunks(void **state)
{
	struct dp_buf in;
	char path[] = "/tmp/dp-relay-in-XXXXXX", *text;
	FILE *out = tmpfile(), *log = tmpfile();
	int fd, rc;
	long len;

	(void)state;
	assert_non_null(out);
	assert_non_null(log);
	dp_buf_init(&in, (size_t)4 << 20);
	assert_int_equal(dp_buf_adds(&in, "{\"width\":0,\"port\":1,\"user\":\"root\","
					  "\"grace_s\":1,\"known_hosts\":\""),
			 0);
	for (int i = 0; i < 8192; i++) /* 1 MiB */
		assert_int_equal(dp_buf_addf(&in, "# host %05d %-100s\\n", i, "key"), 0);
	assert_int_equal(dp_buf_adds(&in, "\",\"token\":\"abcd\",\"ranks\":[{\"rank\":7,"
					  "\"host\":\"127.0.0.1\",\"local\":0,\"argv\":[\"true\"],"
					  "\"env\":[],\"extra\":[]}]}\nTERM -1\n"),
			 0);
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, in.data, in.len), (ssize_t)in.len);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	read_fd = fd;
	read_calls = 0;
	rc = dp_launch_relay_main(fd, out, log);
	read_fd = -1;
	(void)close(fd);
	(void)unlink(path);
	dp_buf_release(&in);
	assert_int_equal(rc, 0);
	assert_true(read_calls > 0);
	assert_true(read_calls < 100); /* 1 MiB in 64 KiB chunks; it was a million */
	len = ftell(out);
	assert_true(len > 0);
	text = calloc(1, (size_t)len + 1);
	assert_non_null(text);
	rewind(out);
	assert_int_equal(fread(text, 1, (size_t)len, out), (size_t)len);
	if (!strstr(text, "F 7 ") || !strstr(text, "'127.0.0.1' port 1"))
		fail_msg("relay output: %s", text);
	free(text);
	(void)fclose(out);
	(void)fclose(log);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(two_relays_start_twelve_ranks),
		cmocka_unit_test(failure_behind_a_relay_stops_everything),
		cmocka_unit_test(hang_behind_a_relay_stops_everything),
		cmocka_unit_test(unreachable_node_behind_a_relay_is_named),
		cmocka_unit_test(big_relay_input_is_read_in_chunks),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
