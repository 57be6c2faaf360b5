/* tests/unit/test_launch_recipe.c - `dpctl launch RECIPE`: the run a recipe
 * describes (hosts, ranks per host, layout environment, health timeouts),
 * locally and over ssh across a cluster of network namespaces. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "tests/unit/dp_test.h"

/* The "train" event line of a `dpctl --json launch` event stream. */
static json_t *train_event(const char *out)
{
	const char *p = strstr(out, "{\"event\":\"train\"");
	json_t *o = p ? json_loads(p, JSON_DISABLE_EOF_CHECK, NULL) : NULL;

	if (!o)
		fail_msg("no train event in:\n%s", out);
	return o;
}

static char *recipe_path(const char *name)
{
	static char path[512];

	(void)snprintf(path, sizeof(path), "%s/recipes/%s.yaml", DP_SRCDIR, name);
	return path;
}

static void dry_run_shows_layout_environment(void **state)
{
	struct dp_test_run r =
		dp_test_dpctl("--json", "launch", "--dry-run", recipe_path("local-demo"));
	json_t *o, *ranks;
	json_error_t je;

	(void)state;
	assert_int_equal(r.rc, 0);
	o = json_loads(r.out, 0, &je);
	if (!o)
		fail_msg("bad JSON: %s\n%s", je.text, r.out);
	ranks = json_object_get(o, "ranks");
	assert_int_equal(json_array_size(ranks), 8);
	for (size_t i = 0; i < 8; i++) {
		json_t *x = json_array_get(ranks, i), *env = json_object_get(x, "env");
		char want[32];
		int found = 0, omp = 0;

		/* a recipe run passes no test-mode flags: the layout is in the environment */
		assert_int_equal(json_array_size(json_object_get(x, "argv")), 1);
		/* pp 4 x ep 2: rank i is pp rank i / 2 */
		(void)snprintf(want, sizeof(want), "DP_STAGES=%zu,%zu", i / 2, 3 - i / 2);
		for (size_t k = 0; k < json_array_size(env); k++) {
			const char *e = json_string_value(json_array_get(env, k));

			found += strcmp(e, want) == 0;
			omp += strcmp(e, "OMP_NUM_THREADS=1") == 0; /* the recipe's env section */
		}
		assert_int_equal(found, 1);
		assert_int_equal(omp, 1);
	}
	json_decref(o);
	dp_test_run_free(&r);
}

static void runs_a_local_recipe(void **state)
{
	struct dp_test_run r;

	(void)state;
	if (!getenv("DPWORKER"))
		skip();
	r = dp_test_dpctl("launch", "--fake-steps", "3", "--fake-step-ms", "5",
			  recipe_path("local-demo"));
	if (r.rc != 0)
		fail_msg("rc %d: %s", r.rc, r.err);
	assert_non_null(strstr(r.out, "[localhost:3] step 3/3"));
	assert_non_null(strstr(r.err, "8 ranks done"));
	dp_test_run_free(&r);
}

/* `dpctl launch` of recipe @text is refused before anything starts (exit
 * 69) with @want (the key and its line) on stderr. */
static void expect_refused(const char *text, const char *want)
{
	char *bad = dp_test_write_tmp(".yaml", text);
	struct dp_test_run r = dp_test_dpctl("launch", bad);

	assert_int_equal(r.rc, 69);
	if (!strstr(r.err, want))
		fail_msg("no '%s' in: %s", want, r.err);
	dp_test_run_free(&r);
	(void)unlink(bad);
	free(bad);
}

static void refuses_what_it_cannot_run(void **state)
{
	struct dp_test_run r;
	char *bad;

	(void)state;
	/* a layout the executor cannot run (more micro-batches per step over
	 * the dp replicas than it takes): the key and its line */
	expect_refused("cluster: {hosts: localhost, gpus: 2}\n"
		       "model: {layers: 4, hidden: 32, experts: 8, top_k: 2,\n"
		       "        shared_experts: 1}\n"
		       "parallel:\n  pp: 1\n  schedule: 1f1b\n  dp: 2\n"
		       "  micro_batches: 1048576\n",
		       ":7: key 'parallel.dp': dp 2 x ep 1 x 1048576 micro-batches");
	/* a global batch whose micro-batches hold more tokens than the model
	 * takes: 2^19 sequences over ep 2 x 2 micro-batches are 2^17 of 16
	 * tokens each */
	expect_refused("cluster: {hosts: localhost, gpus: 2}\n"
		       "model: {layers: 4, hidden: 32, experts: 8, top_k: 2,\n"
		       "        shared_experts: 1, seq_len: 16}\n"
		       "parallel: {pp: 1, ep: 2, schedule: 1f1b, micro_batches: 2}\n"
		       "train:\n  batch: 524288\n",
		       ":6: key 'train.batch': 524288: 131072 sequences of 16 tokens per "
		       "micro-batch (batch / (micro_batches 2 x dp 1 x ep 2)) is more than "
		       "the model's 1048576 tokens");
	/* slurm outside an allocation: refused, pointing at --submit (test_slurm.c) */
	(void)unsetenv("SLURM_JOB_ID");
	r = dp_test_dpctl("launch", "--fake-steps", "3", recipe_path("slurm"));
	assert_int_equal(r.rc, 69);
	assert_non_null(strstr(r.err, "not a Slurm allocation"));
	dp_test_run_free(&r);
	r = dp_test_dpctl("launch", "--local", "2", recipe_path("local-demo"));
	assert_int_equal(r.rc, 64);
	dp_test_run_free(&r);
	bad = dp_test_write_tmp(".yaml",
				"cluster: {hosts: localhost, gpus: 2}\nmodel: {layers: 2}\n");
	r = dp_test_dpctl("launch", "--dry-run", bad);
	assert_int_equal(r.rc, 65);
	assert_non_null(strstr(r.err, ":2:"));
	dp_test_run_free(&r);
	(void)unlink(bad);
	free(bad);
}

/* A recipe of 1024 ssh hosts x 8 GPUs and 300 spares (past the old fixed
 * 256-host lists): --dry-run plans every rank on its host, in order, and
 * `dpctl plan` agrees.  Nothing is started. */
static void dry_run_of_1024_hosts(void **state)
{
	char *path = dp_test_write_tmp(
		".yaml",
		"cluster:\n"
		"  launcher: ssh\n"
		"  hosts: node[0001-1024]\n"
		"  spares: spare[001-300]\n"
		"  gpus: 8\n"
		"  user: root\n"
		"model: {layers: 64, hidden: 32, experts: 64, shared_experts: 1, top_k: 2}\n"
		"parallel: {pp: 16, ep: 64, dp: 8, schedule: 1f1b}\n"
		"train: {steps: 3}\n");
	struct dp_test_run r = dp_test_dpctl("launch", "--dry-run", path);
	json_t *o, *ranks, *spares, *x;

	(void)state;
	if (r.rc != 0 || !strstr(r.out, "\n8192 ranks on 1024 hosts\n") ||
	    !strstr(r.out, "\nrank 2048 on node0257 (local 0): ") ||
	    !strstr(r.out, "\nrank 8191 on node1024 (local 7): ") ||
	    !strstr(r.out, "spares (replace a failed node on a restart): spare001 spare002 ") ||
	    !strstr(r.out, " spare299 spare300\n"))
		fail_msg("rc %d: %s\n%.2000s", r.rc, r.err, r.out);
	dp_test_run_free(&r);

	r = dp_test_dpctl("--json", "launch", "--dry-run", path);
	assert_int_equal(r.rc, 0);
	o = json_loads(r.out, 0, NULL);
	assert_non_null(o);
	assert_int_equal(json_integer_value(json_object_get(o, "hosts")), 1024);
	ranks = json_object_get(o, "ranks");
	assert_int_equal(json_array_size(ranks), 8192);
	for (size_t i = 0; i < 8192; i += 1021) {
		char want[16];

		x = json_array_get(ranks, i);
		(void)snprintf(want, sizeof(want), "node%04zu", i / 8 + 1);
		assert_int_equal(json_integer_value(json_object_get(x, "rank")), (json_int_t)i);
		assert_string_equal(json_string_value(json_object_get(x, "host")), want);
		assert_int_equal(json_integer_value(json_object_get(x, "local_index")), i % 8);
	}
	spares = json_object_get(o, "spares");
	assert_int_equal(json_array_size(spares), 300);
	assert_string_equal(json_string_value(json_array_get(spares, 299)), "spare300");
	json_decref(o);
	dp_test_run_free(&r);

	r = dp_test_dpctl("plan", path);
	if (r.rc != 0 || !strstr(r.out, ": 8192 ranks = pp 16 x ep 64 x dp 8 on 1024 nodes x 8,"))
		fail_msg("rc %d: %s\n%.500s", r.rc, r.err, r.out);
	dp_test_run_free(&r);
	(void)unlink(path);
	free(path);
}

/* "h1,h2,...,hN" (caller frees). */
static char *host_list(int n)
{
	size_t cap = (size_t)n * 8 + 1, len = 0;
	char *s = malloc(cap);

	assert_non_null(s);
	for (int i = 1; i <= n; i++)
		len += (size_t)snprintf(s + len, cap - len, "%sh%d", i > 1 ? "," : "", i);
	assert_true(len < cap);
	return s;
}

/* --ssh takes thousands of hosts (a heap list, no 4 KiB copy) and refuses
 * one past the cap, naming the flag. */
static void ssh_flag_takes_many_hosts(void **state)
{
	char *list = host_list(4096);
	struct dp_test_run r =
		dp_test_dpctl("launch", "--dry-run", "--fake-steps", "1", "--ssh", list);

	(void)state;
	if (r.rc != 0 || !strstr(r.out, "\n4096 ranks on 4096 hosts\n") ||
	    !strstr(r.out, "\nrank 4095 on h4096 (local 0): "))
		fail_msg("rc %d: %s\n%.500s", r.rc, r.err, r.out);
	dp_test_run_free(&r);
	free(list);

	list = host_list(65537);
	r = dp_test_dpctl("launch", "--dry-run", "--fake-steps", "1", "--ssh", list);
	assert_int_equal(r.rc, 64);
	if (!strstr(r.err, "--ssh: 'h1,h2,") ||
	    !strstr(r.err, "...' is not a list of 1 to 65536 hosts"))
		fail_msg("%s", r.err);
	dp_test_run_free(&r);
	free(list);
}

/* Two namespace nodes with an sshd each; the recipe names them. */
static void runs_across_namespace_nodes_over_ssh(void **state)
{
	char cmd[512], st[256] = "", recipe[1024], kh[300], id[300];
	struct dp_test_run r, ssh_train, ssh_ep;
	json_t *o;
	char *path;
	FILE *p;
	int id_num = 20 + (getpid() + 7) % 200, rc;

	(void)state;
	if (!getenv("DPWORKER"))
		skip();
	(void)snprintf(cmd, sizeof(cmd), "%s/tests/netns/netns-cluster.sh up %d 2 2>/dev/null",
		       DP_SRCDIR, id_num);
	p = popen(cmd, "r");
	assert_non_null(p);
	while (fgets(st, sizeof(st), p))
		;
	rc = pclose(p);
	if (!WIFEXITED(rc) || WEXITSTATUS(rc) != 0)
		skip(); /* no root / namespaces / sshd here */
	st[strcspn(st, "\n")] = '\0';
	(void)snprintf(kh, sizeof(kh), "%s/known_hosts", st);
	(void)snprintf(id, sizeof(id), "%s/id", st);
	(void)snprintf(recipe, sizeof(recipe),
		       "cluster:\n  hosts: 10.254.%d.[1-2]\n  launcher: ssh\n  user: root\n"
		       "  identity: %s\n  gpus: 2\n"
		       "model: {layers: 4, hidden: 32, experts: 4, top_k: 2}\n"
		       "parallel: {pp: 4, schedule: dualpipe, micro_batches: 8}\n"
		       "health: {heartbeat_s: 0.2, hang_timeout_s: 20, rendezvous_s: 30}\n",
		       id_num, id);
	path = dp_test_write_tmp(".yaml", recipe);
	r = dp_test_dpctl("launch", "--known-hosts", kh, "--fake-steps", "3", "--fake-step-ms", "5",
			  path);
	/* and a training run on the same nodes: PP links between namespaces */
	{
		char train[1200], *tpath;

		(void)snprintf(train, sizeof(train),
			       "cluster:\n  hosts: 10.254.%d.[1-2]\n  launcher: ssh\n  user: root\n"
			       "  identity: %s\n  gpus: 2\n"
			       "model: {layers: 4, hidden: 32, experts: 8, shared_experts: 1, "
			       "top_k: 2, groups: 4, vocab: 32, seq_len: 16}\n"
			       "parallel: {pp: 4, schedule: dualpipe, micro_batches: 8}\n"
			       "train: {steps: 3, batch: 16}\n"
			       "health: {heartbeat_s: 0.2, hang_timeout_s: 20, rendezvous_s: 30}\n",
			       id_num, id);
		tpath = dp_test_write_tmp(".yaml", train);
		ssh_train = dp_test_dpctl("--json", "launch", "--known-hosts", kh, "--run-dir", st,
					  tpath);
		(void)unlink(tpath);
		free(tpath);
		/* pp 2 x ep 2: each EP group on one node (a2a over tcp inside it),
		 * the PP links between the nodes */
		(void)snprintf(train, sizeof(train),
			       "cluster:\n  hosts: 10.254.%d.[1-2]\n  launcher: ssh\n  user: root\n"
			       "  identity: %s\n  gpus: 2\n"
			       "model: {layers: 4, hidden: 32, experts: 8, shared_experts: 1, "
			       "top_k: 2, groups: 4, vocab: 32, seq_len: 16}\n"
			       "parallel: {pp: 2, ep: 2, schedule: dualpipe, micro_batches: 4}\n"
			       "train: {steps: 3, batch: 32}\n"
			       "health: {heartbeat_s: 0.2, hang_timeout_s: 20, rendezvous_s: 30}\n",
			       id_num, id);
		tpath = dp_test_write_tmp(".yaml", train);
		ssh_ep = dp_test_dpctl("--json", "launch", "--known-hosts", kh, "--run-dir", st,
				       tpath);
		(void)unlink(tpath);
		free(tpath);
	}
	(void)snprintf(cmd, sizeof(cmd), "%s/tests/netns/netns-cluster.sh down %d", DP_SRCDIR,
		       id_num);
	(void)system(cmd);
	if (r.rc != 0)
		fail_msg("rc %d: %s\n%s", r.rc, r.err, r.out);
	/* two ranks on each node, each named by its node */
	for (int n = 1; n <= 2; n++)
		for (int k = 0; k < 2; k++) {
			char want[64];

			(void)snprintf(want, sizeof(want), "[10.254.%d.%d:%d] step 3/3", id_num, n,
				       (n - 1) * 2 + k);
			if (!strstr(r.out, want))
				fail_msg("missing '%s' in:\n%s", want, r.out);
		}
	dp_test_run_free(&r);
	/* the ranks found each other across the nodes and trained 3 steps */
	if (ssh_train.rc != 0)
		fail_msg("training over ssh: rc %d: %s\n%s", ssh_train.rc, ssh_train.err,
			 ssh_train.out);
	o = train_event(ssh_train.out);
	assert_int_equal(json_array_size(json_object_get(o, "losses")), 3);
	json_decref(o);
	dp_test_run_free(&ssh_train);
	if (ssh_ep.rc != 0)
		fail_msg("pp 2 x ep 2 over ssh: rc %d: %s\n%s", ssh_ep.rc, ssh_ep.err, ssh_ep.out);
	o = train_event(ssh_ep.out);
	assert_int_equal(json_array_size(json_object_get(o, "losses")), 3);
	/* the loss falls */
	assert_true(json_real_value(json_array_get(json_object_get(o, "losses"), 2)) <
		    json_real_value(json_array_get(json_object_get(o, "losses"), 0)));
	json_decref(o);
	dp_test_run_free(&ssh_ep);
	(void)unlink(path);
	free(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(dry_run_shows_layout_environment),
		cmocka_unit_test(runs_a_local_recipe),
		cmocka_unit_test(refuses_what_it_cannot_run),
		cmocka_unit_test(dry_run_of_1024_hosts),
		cmocka_unit_test(ssh_flag_takes_many_hosts),
		cmocka_unit_test(runs_across_namespace_nodes_over_ssh),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
