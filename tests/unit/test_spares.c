/* tests/unit/test_spares.c - spare nodes (recipe cluster.spares): the
 * recipe checks, plan and dry-run output, a restart that swaps a failed
 * namespace node for a spare, and the failures that swap none or stop after
 * one swap (tests/netns/netns-cluster.sh; skipped where root, iproute2,
 * sshd or namespaces are missing). */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/dp_hostlist.h"
#include "launcher/dp_launcher.h"
#include "launcher/dp_notify.h"
#include "tests/unit/dp_test.h"

#define MODEL                                                                                      \
	"model: {layers: 4, hidden: 32, ffn_hidden: 64, experts: 8, shared_experts: 1, "           \
	"top_k: 2, groups: 4, vocab: 32, seq_len: 16}\n"                                           \
	"parallel: {pp: 2, schedule: dualpipe, micro_batches: 4}\n"

/* Load @text; 0 and *out, or the first diagnostic formatted into @first. */
static int load(const char *text, struct dp_recipe **out, char *first, size_t len)
{
	struct dp_recipe_diags d;
	int rc;

	dp_recipe_diags_init(&d);
	rc = dp_recipe_load_mem("r.yaml", text, strlen(text), out, &d, NULL);
	first[0] = '\0';
	if (rc && d.n) {
		char *s = dp_recipe_diag_format(&d.v[0]);

		(void)snprintf(first, len, "%s", s ? s : "");
		free(s);
	}
	dp_recipe_diags_release(&d);
	return rc;
}

static void spares_parse_as_a_hostlist(void **state)
{
	struct dp_recipe *r = NULL;
	char first[512];

	(void)state;
	assert_int_equal(load("cluster: {hosts: 'n[1-2]', launcher: ssh, spares: 's[1-2]'}\n" MODEL,
			      &r, first, sizeof(first)),
			 0);
	assert_non_null(r->cluster.spares);
	assert_int_equal(dp_hostlist_count(r->cluster.spares), 2);
	assert_string_equal(dp_hostlist_get(r->cluster.spares, 1), "s2");
	dp_recipe_free(r);
	/* a list, as cluster.hosts takes */
	assert_int_equal(
		load("cluster:\n  hosts: 'n[1-2]'\n  launcher: ssh\n  spares: [x, 'y[3-4]']\n" MODEL,
		     &r, first, sizeof(first)),
		0);
	assert_int_equal(dp_hostlist_count(r->cluster.spares), 3);
	assert_string_equal(dp_hostlist_get(r->cluster.spares, 2), "y4");
	dp_recipe_free(r);
	/* default: none */
	assert_int_equal(
		load("cluster: {hosts: 'n[1-2]', launcher: ssh}\n" MODEL, &r, first, sizeof(first)),
		0);
	assert_null(r->cluster.spares);
	dp_recipe_free(r);
}

static void spare_that_is_a_host_is_refused(void **state)
{
	struct dp_recipe *r = NULL;
	char first[512];

	(void)state;
	assert_int_equal(
		load("cluster:\n  hosts: 'n[1-2]'\n  launcher: ssh\n  spares: 'n[2-3]'\n" MODEL, &r,
		     first, sizeof(first)),
		-EINVAL);
	assert_string_equal(first,
			    "r.yaml:4:11: error: key 'cluster.spares': spare 'n2' is also in "
			    "cluster.hosts");
	/* a spare listed twice */
	assert_int_equal(load("cluster:\n  hosts: n1\n  launcher: ssh\n  spares: [s1, s1]\n" MODEL,
			      &r, first, sizeof(first)),
			 -EINVAL);
	if (!strstr(first, "r.yaml:4:11:") || !strstr(first, "'s1' is listed more than once"))
		fail_msg("%s", first);
}

static void spares_need_the_ssh_launcher(void **state)
{
	struct dp_recipe *r = NULL;
	char first[512];

	(void)state;
	assert_int_equal(load("cluster:\n  hosts: localhost\n  spares: other\n" MODEL, &r, first,
			      sizeof(first)),
			 -EINVAL);
	if (!strstr(first, "r.yaml:3:11: error: key 'cluster.spares': spares need launcher "
			   "'ssh', got 'local'"))
		fail_msg("%s", first);
	assert_int_equal(
		load("cluster:\n  hosts: 'n[1-2]'\n  launcher: slurm\n  spares: s1\n" MODEL, &r,
		     first, sizeof(first)),
		-EINVAL);
	if (!strstr(first, "key 'cluster.spares': spares need launcher 'ssh', got 'slurm'"))
		fail_msg("%s", first);
}

static void plan_and_dry_run_show_the_spares(void **state)
{
	char *path = dp_test_write_tmp(".yaml", "cluster:\n  hosts: 'n[1-2]'\n  launcher: ssh\n"
						"  spares: 's[1-2]'\n" MODEL
						"train: {steps: 2, batch: 16}\n");
	struct dp_test_run r;
	json_t *o;

	(void)state;
	r = dp_test_dpctl("plan", path);
	if (r.rc != 0 || !strstr(r.out, "# spares (replace a failed node on a restart, in "
					"order): s1 s2\n"))
		fail_msg("rc %d: %s\n%s", r.rc, r.err, r.out);
	dp_test_run_free(&r);
	r = dp_test_dpctl("plan", "--json", path);
	o = json_loads(r.out, 0, NULL);
	if (!o)
		fail_msg("%s", r.out);
	assert_int_equal(json_array_size(json_object_get(o, "spares")), 2);
	assert_string_equal(json_string_value(json_array_get(json_object_get(o, "spares"), 0)),
			    "s1");
	json_decref(o);
	dp_test_run_free(&r);
	r = dp_test_dpctl("launch", "--dry-run", path);
	if (r.rc != 0 || !strstr(r.out, "spares (replace a failed node on a restart): s1 s2\n"))
		fail_msg("rc %d: %s\n%s", r.rc, r.err, r.out);
	dp_test_run_free(&r);
	(void)unlink(path);
	free(path);
}

/* The restart webhook carries the replacement line. */
static void restart_webhook_names_the_spare(void **state)
{
	struct dp_notify_event ev = { .kind = DP_NOTIFY_RESTART,
				      .run_id = "r1",
				      .step = -1,
				      .attempt = 1,
				      .rank = -1,
				      .exit_code = -1,
				      .root_cause = "restart 1: node n2 failed (rank-signal); "
						    "replaced by spare s1",
				      .time = 1 };
	char *s = dp_notify_event_json(&ev, NULL);
	json_t *o;

	(void)state;
	assert_non_null(s);
	o = json_loads(s, 0, NULL);
	assert_non_null(o);
	assert_string_equal(json_string_value(json_object_get(o, "root_cause")), ev.root_cause);
	assert_string_equal(json_string_value(json_object_get(o, "text")),
			    "dpctl run r1 restarting (restart 1): restart 1: node n2 failed "
			    "(rank-signal); replaced by spare s1");
	json_decref(o);
	free(s);
}

/* ---- a restart on a spare, across namespace nodes ---------------------------- */

static json_t *event_obj(const char *out, const char *name)
{
	char key[64];
	const char *p;
	json_t *o;

	(void)snprintf(key, sizeof(key), "{\"event\":\"%s\"", name);
	p = strstr(out, key);
	o = p ? json_loads(p, JSON_DISABLE_EOF_CHECK, NULL) : NULL;
	if (!o)
		fail_msg("no %s event in:\n%s", name, out);
	return o;
}

static int nid;		 /* cluster id: subnet 10.254.ID.0/24 */
static char nst[256];	 /* its state directory */
static int nup;		 /* 1: the cluster is up */
static char node[5][32]; /* node[i]: the address of node i (1..4) */

static int cluster_up(void **state)
{
	const char *w = getenv("DPWORKER");

	(void)state;
	nid = 20 + (getpid() + 13) % 200;
	for (int i = 1; i <= 4; i++)
		(void)snprintf(node[i], sizeof(node[i]), "10.254.%d.%d", nid, i);
	/* without it (no root / namespaces / sshd here) the cluster tests skip */
	nup = w && access(w, X_OK) == 0 && dp_test_netns_up(nid, 4, nst, sizeof(nst)) == 0;
	return 0;
}

static int cluster_down(void **state)
{
	(void)state;
	if (nup)
		dp_test_netns_down(nid);
	return 0;
}

/* `dpctl --json launch` of nodes 1-2 with node 3 as the spare (and node 4
 * the second with @two), pp 2, one rank per node; @more: the recipe's other
 * lines; @fake: --fake-steps 3 instead of training; @run: --run-dir or
 * NULL.  Then waits until no dpworker is left on any node (fails the test
 * if one stays). */
static struct dp_test_run spare_launch(const char *more, int fake, const char *run, int two)
{
	char text[1400], kh[300], *path;
	struct dp_test_run r;
	int left = -1;

	(void)snprintf(kh, sizeof(kh), "%s/known_hosts", nst);
	(void)snprintf(text, sizeof(text),
		       "cluster:\n  hosts: 10.254.%d.[1-2]\n  spares: [%s%s%s]\n  launcher: ssh\n"
		       "  user: root\n  identity: %s/id\n  gpus: 1\n" MODEL "%s",
		       nid, node[3], two ? ", " : "", two ? node[4] : "", nst, more);
	path = dp_test_write_tmp(".yaml", text);
	if (fake)
		r = dp_test_dpctl("--json", "launch", "--known-hosts", kh, "--fake-steps", "3",
				  "--fake-step-ms", "5", "--grace-s", "2", path);
	else
		r = dp_test_dpctl("--json", "launch", "--known-hosts", kh, "--run-dir", run,
				  "--grace-s", "2", path);
	(void)unlink(path);
	free(path);
	for (int i = 0; i < 100 && (left = dp_test_netns_dpworkers(nid, 4)) != 0; i++)
		(void)usleep(100 * 1000);
	if (left != 0)
		fail_msg("%d dpworker processes left on the nodes", left);
	return r;
}

/* @r succeeded in 2 attempts, node 2 replaced by node 3 once, for @why:
 * the replace event, the done event's list and the stderr log line. */
static void check_replaced(const struct dp_test_run *r, const char *why)
{
	char want[200];
	const char *first;
	json_t *rep, *done;

	if (r->rc != 0)
		fail_msg("rc %d\n%s\n%s", r->rc, r->err, r->out);
	(void)snprintf(want, sizeof(want), "restart 1: node %s failed (%s); replaced by spare %s",
		       node[2], why, node[3]);
	rep = event_obj(r->out, "replace");
	assert_string_equal(json_string_value(json_object_get(rep, "host")), node[2]);
	assert_string_equal(json_string_value(json_object_get(rep, "spare")), node[3]);
	assert_string_equal(json_string_value(json_object_get(rep, "msg")), want);
	first = strstr(r->out, "\"event\":\"replace\"");
	if (strstr(first + 1, "\"event\":\"replace\""))
		fail_msg("more than one replacement:\n%s", r->out);
	done = event_obj(r->out, "done");
	assert_int_equal(json_integer_value(json_object_get(done, "attempts")), 2);
	assert_int_equal(json_array_size(json_object_get(done, "replaced")), 1);
	assert_string_equal(json_string_value(json_array_get(json_object_get(done, "replaced"), 0)),
			    want);
	if (!strstr(r->err, want)) /* the log line on stderr */
		fail_msg("no '%s' in:\n%s", want, r->err);
	json_decref(rep);
	json_decref(done);
}

/* 2 hosts + 1 spare, pp 2 with a checkpoint every 2 steps: rank 1 on node 2
 * is killed (SIGKILL, a node failure) before step 4 on every attempt on
 * that node (DP_TEST_FAIL_ONLY_ON).  The run restarts once with node 3 in
 * node 2's place, resumes from the step-4 checkpoint, and its losses equal
 * those of an uninterrupted run. */
static void failed_node_is_replaced_by_a_spare(void **state)
{
	char ck[] = "/tmp/dp-spares-XXXXXX", run[] = "/tmp/dp-spares-run-XXXXXX", more[600],
	     want[160], cmd[200];
	struct dp_test_run a, b;
	json_t *ta, *tb, *done;

	(void)state;
	if (!nup)
		skip();
	assert_non_null(mkdtemp(ck));
	assert_non_null(mkdtemp(run));
	for (int k = 0; k < 2; k++) {
		(void)snprintf(more, sizeof(more),
			       "train: {steps: 6, batch: 16, lr: 0.003, seed: 3, "
			       "checkpoint: {dir: '%s', every: 2}}\n"
			       "health: {heartbeat_s: 0.2, hang_timeout_s: 20, rendezvous_s: 30, "
			       "max_restarts: 2}\n%s%s%s",
			       ck,
			       k ? "env: {DP_TEST_FAIL_AT_STEP: '4:1:kill', "
				   "DP_TEST_FAIL_ONLY_ON: '"
				 : "",
			       k ? node[2] : "", k ? "'}\n" : "");
		if (k)
			b = spare_launch(more, 0, run, 0);
		else
			a = spare_launch(more, 0, run, 0);
	}
	(void)snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s'", ck, run);
	(void)!system(cmd);
	if (a.rc != 0)
		fail_msg("uninterrupted: rc %d\n%s\n%s", a.rc, a.err, a.out);
	check_replaced(&b, "rank-signal");
	done = event_obj(b.out, "done");
	assert_int_equal(json_integer_value(json_object_get(done, "resume_step")), 4);
	json_decref(done);
	/* rank 1 ran on the spare in the second attempt */
	(void)snprintf(want, sizeof(want), "[%s:1] rank 1: resuming at step 4", node[3]);
	if (!strstr(b.err, want))
		fail_msg("no '%s' in:\n%s", want, b.err);
	ta = event_obj(a.out, "train");
	tb = event_obj(b.out, "train");
	assert_int_equal(json_array_size(json_object_get(ta, "losses")), 6);
	assert_int_equal(json_array_size(json_object_get(tb, "losses")), 6);
	for (size_t k = 0; k < 6; k++) {
		double x = json_real_value(json_array_get(json_object_get(ta, "losses"), k)),
		       y = json_real_value(json_array_get(json_object_get(tb, "losses"), k));

		if (!(x == y) || !isfinite(x))
			fail_msg("step %zu: uninterrupted %.9g, with a spare %.9g", k, x, y);
	}
	json_decref(ta);
	json_decref(tb);
	dp_test_run_free(&a);
	dp_test_run_free(&b);
}

/* Node 2's clock is 120 s off (DP_TEST_CLOCK_SKEW_S there only): the
 * pre-flight gate fails on it, and the restart, which pre-flight alone
 * would not get, runs with the spare. */
static void node_failing_preflight_is_replaced(void **state)
{
	char more[400];
	struct dp_test_run r;

	(void)state;
	if (!nup)
		skip();
	(void)snprintf(more, sizeof(more),
		       "health: {heartbeat_s: 0.2, hang_timeout_s: 20, rendezvous_s: 30, "
		       "max_restarts: 1, preflight: [clock], max_clock_offset_s: 5}\n"
		       "env: {DP_TEST_CLOCK_SKEW_S: '-120', DP_TEST_FAIL_ONLY_ON: '%s'}\n",
		       node[2]);
	r = spare_launch(more, 1, NULL, 0);
	check_replaced(&r, "pre-flight");
	dp_test_run_free(&r);
}

/* `dpctl launch` of a 6-step training run without checkpoints, up to 3
 * restarts, with @fail as DP_TEST_FAIL_AT_STEP (on every node), nodes 3 and
 * 4 the spares. */
static struct dp_test_run spare_train(const char *fail)
{
	char run[] = "/tmp/dp-spares-run-XXXXXX", more[400], cmd[100];
	struct dp_test_run r;

	assert_non_null(mkdtemp(run));
	(void)snprintf(more, sizeof(more),
		       "train: {steps: 6, batch: 16, lr: 0.003, seed: 3}\n"
		       "health: {heartbeat_s: 0.2, hang_timeout_s: 20, rendezvous_s: 30, "
		       "max_restarts: 3}\n"
		       "env: {DP_TEST_FAIL_AT_STEP: '%s'}\n",
		       fail);
	r = spare_launch(more, 0, run, 1);
	(void)snprintf(cmd, sizeof(cmd), "rm -rf '%s'", run);
	(void)!system(cmd);
	return r;
}

/* @r stopped after 2 attempts with exit code @rc and @want in the done
 * event's cause; a rank ran on the first spare (node 3) only with
 * @on_spare, never on the second (node 4). */
static void check_stop(const struct dp_test_run *r, int rc, const char *want, int on_spare)
{
	char tag[48];
	json_t *done;

	if (r->rc != rc)
		fail_msg("rc %d, want %d\n%s\n%s", r->rc, rc, r->err, r->out);
	done = event_obj(r->out, "done");
	assert_int_equal(json_integer_value(json_object_get(done, "attempts")), 2);
	if (!strstr(json_string_value(json_object_get(done, "cause")), want))
		fail_msg("no '%s' in the cause: %s", want,
			 json_string_value(json_object_get(done, "cause")));
	(void)snprintf(tag, sizeof(tag), "[%s:", node[3]);
	if (!on_spare && strstr(r->err, tag))
		fail_msg("a rank ran on the spare:\n%s", r->err);
	if (on_spare && !strstr(r->err, tag))
		fail_msg("no rank ran on the spare:\n%s", r->err);
	(void)snprintf(tag, sizeof(tag), "[%s:", node[4]);
	if (strstr(r->err, tag))
		fail_msg("a rank ran on the second spare:\n%s", r->err);
	json_decref(done);
}

/* Rank 1 exits 70 before step 2 on every attempt, on any node (a job
 * failure, like a bad recipe value): the spare is never used, and the
 * second attempt, which gets no further, is the last. */
static void exit_code_keeps_the_spare(void **state)
{
	struct dp_test_run r;
	json_t *done;

	(void)state;
	if (!nup)
		skip();
	r = spare_train("2:1:always");
	check_stop(&r, 70, "; not restarting: attempt 2 got no further than step ", 0);
	if (strstr(r.out, "\"event\":\"replace\""))
		fail_msg("a replacement:\n%s", r.out);
	done = event_obj(r.out, "done");
	assert_int_equal(json_array_size(json_object_get(done, "replaced")), 0);
	assert_string_equal(json_string_value(json_object_get(done, "outcome")), "rank-exit");
	json_decref(done);
	dp_test_run_free(&r);
}

/* Rank 1 is killed (SIGKILL) before step 2 on every node: node 2 is
 * replaced once, the spare fails the same way without progress, and the
 * run stops there, the second spare unused. */
static void kill_everywhere_uses_one_spare(void **state)
{
	struct dp_test_run r;
	char want[200];
	json_t *done;

	(void)state;
	if (!nup)
		skip();
	r = spare_train("2:1:kill");
	check_stop(&r, 128 + SIGKILL,
		   "; not restarting: attempt 2 made no progress after "
		   "replacing 1 node",
		   1);
	(void)snprintf(want, sizeof(want),
		       "restart 1: node %s failed (rank-signal); replaced by spare %s", node[2],
		       node[3]);
	done = event_obj(r.out, "done");
	assert_int_equal(json_array_size(json_object_get(done, "replaced")), 1);
	assert_string_equal(json_string_value(json_array_get(json_object_get(done, "replaced"), 0)),
			    want);
	assert_string_equal(json_string_value(json_object_get(done, "outcome")), "rank-signal");
	json_decref(done);
	dp_test_run_free(&r);
}

/* Node 2 unreachable (its sshd stopped; run last): the spawn fails there
 * and the restart runs on the spare. */
static void unreachable_node_is_replaced(void **state)
{
	char pidf[300], want[100], *pid;
	struct dp_test_run r;

	(void)state;
	if (!nup)
		skip();
	(void)snprintf(pidf, sizeof(pidf), "%s/sshd-2.pid", nst);
	pid = dp_test_slurp(pidf);
	assert_int_equal(kill((pid_t)strtol(pid, NULL, 10), SIGTERM), 0);
	free(pid);
	(void)usleep(300 * 1000);
	r = spare_launch("health: {heartbeat_s: 0.2, hang_timeout_s: 20, rendezvous_s: 30, "
			 "max_restarts: 1}\n",
			 1, NULL, 0);
	check_replaced(&r, "spawn-failed");
	(void)snprintf(want, sizeof(want), "[%s:1] step 3/3", node[3]);
	if (!strstr(r.err, want))
		fail_msg("no '%s' in:\n%s", want, r.err);
	dp_test_run_free(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(spares_parse_as_a_hostlist),
		cmocka_unit_test(spare_that_is_a_host_is_refused),
		cmocka_unit_test(spares_need_the_ssh_launcher),
		cmocka_unit_test(plan_and_dry_run_show_the_spares),
		cmocka_unit_test(restart_webhook_names_the_spare),
		cmocka_unit_test(failed_node_is_replaced_by_a_spare),
		cmocka_unit_test(node_failing_preflight_is_replaced),
		cmocka_unit_test(exit_code_keeps_the_spare),
		cmocka_unit_test(kill_everywhere_uses_one_spare),
		cmocka_unit_test(unreachable_node_is_replaced), /* last: stops node 2's sshd */
	};

	return cmocka_run_group_tests(tests, cluster_up, cluster_down);
}
