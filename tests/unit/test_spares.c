/* tests/unit/test_spares.c - spare nodes (recipe cluster.spares): the
 * recipe checks, plan and dry-run output, and a restart that swaps a failed
 * namespace node for a spare (tests/netns/netns-cluster.sh; skipped where
 * root, iproute2, sshd or namespaces are missing). */
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
				      .root_cause = "restart 1: node n2 failed (rank-exit); "
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
			    "(rank-exit); replaced by spare s1");
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

/* 2 hosts + 1 spare, pp 2 with a checkpoint every 2 steps: rank 1 on node 2
 * fails before step 4 on every attempt on that node
 * (DP_TEST_FAIL_ONLY_ON).  The run restarts once with node 3 in node 2's
 * place, resumes from the step-4 checkpoint, and its losses equal those of
 * an uninterrupted run. */
static void failed_node_is_replaced_by_a_spare(void **state)
{
	char cmd[600], st[256] = "", text[1400], kh[300], ck[] = "/tmp/dp-spares-XXXXXX",
		       run[] = "/tmp/dp-spares-run-XXXXXX", want[160], node2[32], node3[32],
		       env[160];
	struct dp_test_run a = { 0 }, b = { 0 }, c = { 0 };
	json_t *ta = NULL, *tb = NULL, *done = NULL, *rep = NULL;
	int id = 20 + (getpid() + 13) % 200, left = -1, left2 = -1;
	const char *w = getenv("DPWORKER");
	char *path;

	(void)state;
	if (!w || access(w, X_OK) != 0)
		skip();
	if (dp_test_netns_up(id, 3, st, sizeof(st)) != 0)
		skip(); /* no root / namespaces / sshd here */
	assert_non_null(mkdtemp(ck));
	assert_non_null(mkdtemp(run));
	(void)snprintf(kh, sizeof(kh), "%s/known_hosts", st);
	(void)snprintf(node2, sizeof(node2), "10.254.%d.2", id);
	(void)snprintf(node3, sizeof(node3), "10.254.%d.3", id);
	(void)snprintf(env, sizeof(env),
		       "env: {DP_TEST_FAIL_AT_STEP: '4:1:always', DP_TEST_FAIL_ONLY_ON: '%s'}\n",
		       node2);
	for (int k = 0; k < 2; k++) {
		(void)snprintf(text, sizeof(text),
			       "cluster:\n  hosts: 10.254.%d.[1-2]\n  spares: 10.254.%d.3\n"
			       "  launcher: ssh\n  user: root\n  identity: %s/id\n  gpus: 1\n" MODEL
			       "train: {steps: 6, batch: 16, lr: 0.003, seed: 3, "
			       "checkpoint: {dir: '%s', every: 2}}\n"
			       "health: {heartbeat_s: 0.2, hang_timeout_s: 20, rendezvous_s: 30, "
			       "max_restarts: 2}\n%s",
			       id, id, st, ck, k ? env : "");
		path = dp_test_write_tmp(".yaml", text);
		if (k)
			b = dp_test_dpctl("--json", "launch", "--known-hosts", kh, "--run-dir", run,
					  "--grace-s", "2", path);
		else
			a = dp_test_dpctl("--json", "launch", "--known-hosts", kh, "--run-dir", run,
					  "--grace-s", "2", path);
		(void)unlink(path);
		free(path);
	}
	for (int i = 0; i < 100 && (left = dp_test_netns_dpworkers(id, 3)) != 0; i++)
		(void)usleep(100 * 1000);
	/* node 2 unreachable (its sshd stopped): the spawn fails there and the
	 * restart runs on the spare */
	{
		char pidf[300], *pid;

		(void)snprintf(pidf, sizeof(pidf), "%s/sshd-2.pid", st);
		pid = dp_test_slurp(pidf);
		(void)kill((pid_t)strtol(pid, NULL, 10), SIGTERM);
		free(pid);
		(void)usleep(300 * 1000);
		(void)snprintf(text, sizeof(text),
			       "cluster:\n  hosts: 10.254.%d.[1-2]\n  spares: 10.254.%d.3\n"
			       "  launcher: ssh\n  user: root\n  identity: %s/id\n  gpus: 1\n" MODEL
			       "health: {heartbeat_s: 0.2, hang_timeout_s: 20, rendezvous_s: 30, "
			       "max_restarts: 1}\n",
			       id, id, st);
		path = dp_test_write_tmp(".yaml", text);
		c = dp_test_dpctl("--json", "launch", "--known-hosts", kh, "--fake-steps", "3",
				  "--fake-step-ms", "5", path);
		(void)unlink(path);
		free(path);
		for (int i = 0; i < 100 && (left2 = dp_test_netns_dpworkers(id, 3)) != 0; i++)
			(void)usleep(100 * 1000);
	}
	dp_test_netns_down(id);
	(void)snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s'", ck, run);
	(void)!system(cmd);
	if (a.rc != 0)
		fail_msg("uninterrupted: rc %d\n%s\n%s", a.rc, a.err, a.out);
	if (b.rc != 0)
		fail_msg("with a spare: rc %d\n%s\n%s", b.rc, b.err, b.out);
	assert_int_equal(left, 0);
	/* one restart, on the spare, from the step-4 checkpoint */
	done = event_obj(b.out, "done");
	assert_int_equal(json_integer_value(json_object_get(done, "attempts")), 2);
	assert_int_equal(json_integer_value(json_object_get(done, "resume_step")), 4);
	rep = event_obj(b.out, "replace");
	assert_string_equal(json_string_value(json_object_get(rep, "host")), node2);
	assert_string_equal(json_string_value(json_object_get(rep, "spare")), node3);
	(void)snprintf(want, sizeof(want),
		       "restart 1: node %s failed (rank-exit); replaced by spare %s", node2, node3);
	assert_string_equal(json_string_value(json_object_get(rep, "msg")), want);
	assert_int_equal(json_array_size(json_object_get(done, "replaced")), 1);
	assert_string_equal(json_string_value(json_array_get(json_object_get(done, "replaced"), 0)),
			    want);
	if (!strstr(b.err, want)) /* the human output (stderr with --json) */
		fail_msg("no '%s' in:\n%s", want, b.err);
	if (strstr(strstr(b.out, "\"event\":\"replace\"") + 1, "\"event\":\"replace\""))
		fail_msg("more than one replacement:\n%s", b.out);
	/* rank 1 ran on the spare in the second attempt */
	(void)snprintf(want, sizeof(want), "[%s:1] rank 1: resuming at step 4", node3);
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
	json_decref(done);
	json_decref(rep);
	/* the unreachable node */
	if (c.rc != 0)
		fail_msg("node 2 unreachable: rc %d\n%s\n%s", c.rc, c.err, c.out);
	assert_int_equal(left2, 0);
	(void)snprintf(want, sizeof(want),
		       "restart 1: node %s failed (spawn-failed); replaced by spare %s", node2,
		       node3);
	rep = event_obj(c.out, "replace");
	assert_string_equal(json_string_value(json_object_get(rep, "msg")), want);
	done = event_obj(c.out, "done");
	assert_int_equal(json_integer_value(json_object_get(done, "attempts")), 2);
	(void)snprintf(want, sizeof(want), "[%s:1] step 3/3", node3);
	if (!strstr(c.err, want))
		fail_msg("no '%s' in:\n%s", want, c.err);
	json_decref(rep);
	json_decref(done);
	dp_test_run_free(&a);
	dp_test_run_free(&b);
	dp_test_run_free(&c);
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
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
