/* tests/unit/test_netns.c - the ssh fan-out across a real multi-node
 * cluster: network namespaces with their own sshd, joined by a bridge
 * (tests/netns/netns-cluster.sh).  Skipped where root, iproute2, sshd or
 * namespaces are missing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(each_node_is_its_own_host),
		cmocka_unit_test(nodes_reach_each_other_over_the_bridge),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
