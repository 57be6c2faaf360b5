/* tests/unit/test_netns.c - the ssh fan-out across a real multi-node
 * cluster: network namespaces with their own sshd, joined by a bridge
 * (tests/netns/netns-cluster.sh).  Skipped where root, iproute2, sshd or
 * namespaces are missing. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "launcher/dp_ssh.h"
#include "tests/unit/dp_test.h"

#define NNODES 4

static int cluster_id;
static char state_dir[128];
static char nodes[NNODES][32];
static int up;

static int setup(void **state)
{
	char cmd[512];
	FILE *p;
	int rc;

	(void)state;
	cluster_id = 20 + getpid() % 200;
	(void)snprintf(cmd, sizeof(cmd), "%s/tests/netns/netns-cluster.sh up %d %d 2>&1", DP_SRCDIR,
		       cluster_id, NNODES);
	p = popen(cmd, "r");
	if (!p)
		return 0;
	while (fgets(state_dir, sizeof(state_dir), p))
		;
	rc = pclose(p);
	if (!WIFEXITED(rc) || WEXITSTATUS(rc) != 0)
		return 0; /* 77 = cannot build namespaces here: tests skip */
	state_dir[strcspn(state_dir, "\n")] = '\0';
	{
		char path[256];
		FILE *f;

		(void)snprintf(path, sizeof(path), "%s/nodes", state_dir);
		f = fopen(path, "r");
		if (!f)
			return -1;
		for (int i = 0; i < NNODES; i++)
			if (fscanf(f, "%31s", nodes[i]) != 1)
				return -1;
		(void)fclose(f);
	}
	up = 1;
	return 0;
}

static int teardown(void **state)
{
	char cmd[256];

	(void)state;
	(void)snprintf(cmd, sizeof(cmd), "%s/tests/netns/netns-cluster.sh down %d", DP_SRCDIR,
		       cluster_id);
	return system(cmd) == 0 ? 0 : -1;
}

struct got {
	char line[NNODES][128];
};

static void keep(void *arg, int job, int is_stderr, const char *line)
{
	struct got *g = arg;

	if (!is_stderr && job < NNODES)
		(void)snprintf(g->line[job], sizeof(g->line[job]), "%s", line);
}

static struct dp_ssh_opts cluster_opts(char *kh, size_t khlen, char *id, size_t idlen)
{
	struct dp_ssh_opts o = { 0 };

	(void)snprintf(kh, khlen, "%s/known_hosts", state_dir);
	(void)snprintf(id, idlen, "%s/id", state_dir);
	o.user = "root";
	o.port = 22;
	o.known_hosts = kh;
	o.identity = id;
	o.hostkey_policy = DP_SSH_HOSTKEY_STRICT;
	o.window = 2;
	o.connect_timeout_ms = 15000;
	return o;
}

static void each_node_is_its_own_host(void **state)
{
	char kh[256], id[256];
	struct dp_ssh_opts o;
	struct dp_ssh_job jobs[NNODES];
	struct got g;
	struct dp_err err = { 0 };

	(void)state;
	if (!up)
		skip();
	memset(&g, 0, sizeof(g));
	o = cluster_opts(kh, sizeof(kh), id, sizeof(id));
	for (int i = 0; i < NNODES; i++)
		jobs[i] = (struct dp_ssh_job){
			.host = nodes[i],
			.command = "ip -o -4 addr show dev eth0 | awk '{print $4}'",
		};
	assert_int_equal(dp_ssh_run(&o, jobs, NNODES, keep, &g, 30000, &err), 0);
	for (int i = 0; i < NNODES; i++) {
		char want[160];

		if (jobs[i].state != DP_SSH_DONE)
			fail_msg("node %s: %s", nodes[i], jobs[i].error);
		assert_int_equal(jobs[i].exit_status, 0);
		(void)snprintf(want, sizeof(want), "%s/24", nodes[i]);
		assert_string_equal(g.line[i], want);
	}
}

static void nodes_reach_each_other_over_the_bridge(void **state)
{
	char kh[256], id[256], cmd[NNODES][256];
	struct dp_ssh_opts o;
	struct dp_ssh_job jobs[NNODES];
	struct got g;
	struct dp_err err = { 0 };

	(void)state;
	if (!up)
		skip();
	memset(&g, 0, sizeof(g));
	o = cluster_opts(kh, sizeof(kh), id, sizeof(id));
	/* node i connects to node i+1's sshd port and reads its banner */
	for (int i = 0; i < NNODES; i++) {
		(void)snprintf(cmd[i], sizeof(cmd[i]),
			       "exec 3<>/dev/tcp/%s/22 && head -c 7 <&3; echo",
			       nodes[(i + 1) % NNODES]);
		jobs[i] = (struct dp_ssh_job){ .host = nodes[i], .command = cmd[i] };
	}
	assert_int_equal(dp_ssh_run(&o, jobs, NNODES, keep, &g, 30000, &err), 0);
	for (int i = 0; i < NNODES; i++) {
		if (jobs[i].state != DP_SSH_DONE)
			fail_msg("node %s: %s", nodes[i], jobs[i].error);
		assert_string_equal(g.line[i], "SSH-2.0");
	}
}

/* ---- `dpctl topo validate RECIPE` over the cluster (health) ------------------- */

/* A recipe for the cluster's nodes (plus @extra_host if not NULL). */
static char *cluster_recipe(const char *extra_host)
{
	char text[2048];

	(void)snprintf(text, sizeof(text),
		       "cluster:\n  hosts: [%s, %s, %s, %s%s%s]\n  launcher: ssh\n"
		       "  user: root\n  identity: %s/id\n  gpus: 1\n  connect_timeout_s: 3\n"
		       "model: {layers: 20, hidden: 32, heads: 4, experts: 4, top_k: 2}\n"
		       "parallel: {pp: %d, schedule: 1f1b}\n",
		       nodes[0], nodes[1], nodes[2], nodes[3], extra_host ? ", " : "",
		       extra_host ? extra_host : "", state_dir, extra_host ? 5 : 4);
	return dp_test_write_tmp(".yaml", text);
}

static void topo_validate_recipe_collects_every_node(void **state)
{
	const char *worker = getenv("DPWORKER");
	char kh[300], wrapper[600], *recipe, *wpath, unreach[64];
	struct dp_test_run r;

	(void)state;
	if (!up || !worker || access(worker, X_OK) != 0)
		skip();
	(void)snprintf(kh, sizeof(kh), "%s/known_hosts", state_dir);
	/* every node runs dpworker --discover: one line per node, all alike */
	recipe = cluster_recipe(NULL);
	r = dp_test_dpctl("topo", "validate", "--known-hosts", kh, "--worker", worker, recipe);
	if (r.rc != 0)
		fail_msg("rc %d\nout: %s\nerr: %s", r.rc, r.out, r.err);
	for (int i = 0; i < NNODES; i++) {
		char want[160];

		(void)snprintf(want, sizeof(want), "%-24s ok", nodes[i]);
		assert_non_null(strstr(r.out, want));
	}
	assert_non_null(strstr(r.out, "validate: 4 nodes, 0 failed"));
	dp_test_run_free(&r);

	/* node 3 sees two GPUs (a sysfs fixture): it differs from the others */
	(void)snprintf(
		wrapper, sizeof(wrapper),
		"#!/bin/sh\ncase \"$(ip -o -4 addr show dev eth0)\" in\n"
		"*\" %s/\"*) export DP_SYSFS_ROOT=%s/sysfs/twogpu ;;\nesac\nexec %s \"$@\"\n",
		nodes[2], FIXTURES, worker);
	wpath = dp_test_write_tmp(".sh", wrapper);
	assert_int_equal(chmod(wpath, 0755), 0);
	r = dp_test_dpctl("--json", "topo", "validate", "--known-hosts", kh, "--worker", wpath,
			  recipe);
	assert_int_equal(r.rc, 65);
	{
		json_error_t je;
		json_t *o = json_loads(r.out, 0, &je), *arr = json_object_get(o, "nodes");

		assert_non_null(o);
		assert_int_equal(json_array_size(arr), NNODES);
		assert_int_equal(json_integer_value(json_object_get(o, "failed")), 1);
		for (int i = 0; i < NNODES; i++) {
			json_t *n = json_array_get(arr, (size_t)i);

			assert_string_equal(json_string_value(json_object_get(n, "host")),
					    nodes[i]);
			assert_int_equal(json_is_true(json_object_get(n, "ok")), i != 2);
		}
		assert_non_null(
			strstr(json_string_value(json_object_get(json_array_get(arr, 2), "detail")),
			       "differs from the other nodes: 2 GPUs"));
		json_decref(o);
	}
	dp_test_run_free(&r);
	(void)unlink(wpath);
	free(wpath);
	(void)unlink(recipe);
	free(recipe);

	/* a host nobody answers for: named, exit 69 */
	(void)snprintf(unreach, sizeof(unreach), "10.254.%d.99", cluster_id);
	recipe = cluster_recipe(unreach);
	r = dp_test_dpctl("topo", "validate", "--known-hosts", kh, "--worker", worker, recipe);
	if (r.rc != 69)
		fail_msg("rc %d\nout: %s\nerr: %s", r.rc, r.out, r.err);
	assert_non_null(strstr(r.out, unreach));
	assert_non_null(strstr(r.out, "FAIL unreachable"));
	assert_non_null(strstr(r.out, "validate: 5 nodes, 1 failed"));
	dp_test_run_free(&r);
	(void)unlink(recipe);
	free(recipe);
}

/* dpworker processes left in the cluster's namespaces. */
static int workers_left(void)
{
	char cmd[256], line[64];
	int n = 0;
	FILE *p;

	(void)snprintf(cmd, sizeof(cmd),
		       "for i in 1 2 3 4; do ip netns pids dp%dn$i; done 2>/dev/null | "
		       "while read p; do cat /proc/$p/comm 2>/dev/null; done",
		       cluster_id);
	p = popen(cmd, "r");
	assert_non_null(p);
	while (fgets(line, sizeof(line), p))
		n += strncmp(line, "dpworker", 8) == 0;
	(void)pclose(p);
	return n;
}

static void launch_preflight_names_the_failing_node(void **state)
{
	const char *worker = getenv("DPWORKER");
	char kh[300], id[300], hosts[200], wrapper[600], *wpath;
	struct dp_test_run r;

	(void)state;
	if (!up || !worker || access(worker, X_OK) != 0)
		skip();
	(void)snprintf(kh, sizeof(kh), "%s/known_hosts", state_dir);
	(void)snprintf(id, sizeof(id), "%s/id", state_dir);
	(void)snprintf(hosts, sizeof(hosts), "%s,%s,%s,%s", nodes[0], nodes[1], nodes[2], nodes[3]);
	/* node 2 (the third) sees a two-GPU machine; 3 ranks per node do not fit */
	(void)snprintf(
		wrapper, sizeof(wrapper),
		"#!/bin/sh\ncase \"$(ip -o -4 addr show dev eth0)\" in\n"
		"*\" %s/\"*) export DP_SYSFS_ROOT=%s/sysfs/twogpu ;;\nesac\nexec %s \"$@\"\n",
		nodes[2], FIXTURES, worker);
	wpath = dp_test_write_tmp(".sh", wrapper);
	assert_int_equal(chmod(wpath, 0755), 0);
	r = dp_test_dpctl("launch", "--ssh", hosts, "--per-host", "3", "--known-hosts", kh,
			  "--ssh-identity", id, "--worker", wpath, "--fake-steps", "20",
			  "--fake-step-ms", "10", "--preflight", "gpus,clock,version", "--grace-s",
			  "2", "--rendezvous-s", "30");
	if (r.rc != 78)
		fail_msg("rc %d\nout: %s\nerr: %s", r.rc, r.out, r.err);
	{
		char want[200];

		(void)snprintf(
			want, sizeof(want),
			"  pre-flight failed: %s (rank 6): 2 GPUs, the plan puts 3 ranks here\n",
			nodes[2]);
		assert_non_null(strstr(r.err, want));
		assert_non_null(strstr(r.err, "pre-flight failed on 1 of 4 nodes"));
	}
	assert_null(strstr(r.out, "step 1/")); /* nothing trained */
	dp_test_run_free(&r);
	(void)unlink(wpath);
	free(wpath);
	/* every rank on every node is gone */
	assert_int_equal(workers_left(), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(each_node_is_its_own_host),
		cmocka_unit_test(nodes_reach_each_other_over_the_bridge),
		cmocka_unit_test(topo_validate_recipe_collects_every_node),
		cmocka_unit_test(launch_preflight_names_the_failing_node),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
