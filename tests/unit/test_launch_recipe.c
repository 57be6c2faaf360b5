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
	assert_int_equal(json_array_size(ranks), 4);
	for (size_t i = 0; i < 4; i++) {
		json_t *x = json_array_get(ranks, i), *env = json_object_get(x, "env");
		char want[32];
		int found = 0, omp = 0;

		/* a recipe run passes no test-mode flags: the layout is in the environment */
		assert_int_equal(json_array_size(json_object_get(x, "argv")), 1);
		(void)snprintf(want, sizeof(want), "DP_STAGES=%zu,%zu", i, 3 - i);
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
	assert_non_null(strstr(r.err, "4 ranks done"));
	dp_test_run_free(&r);
}

static void refuses_what_it_cannot_run(void **state)
{
	struct dp_test_run r;
	char *bad;

	(void)state;
	r = dp_test_dpctl("launch", recipe_path("local-demo"));
	assert_int_equal(r.rc, 69);
	assert_non_null(strstr(r.err, "dpworker cannot train from a recipe yet"));
	dp_test_run_free(&r);
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

/* Two namespace nodes with an sshd each; the recipe names them. */
static void runs_across_namespace_nodes_over_ssh(void **state)
{
	char cmd[512], st[256] = "", recipe[1024], kh[300], id[300];
	struct dp_test_run r;
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
	(void)unlink(path);
	free(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(dry_run_shows_layout_environment),
		cmocka_unit_test(runs_a_local_recipe),
		cmocka_unit_test(refuses_what_it_cannot_run),
		cmocka_unit_test(runs_across_namespace_nodes_over_ssh),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
