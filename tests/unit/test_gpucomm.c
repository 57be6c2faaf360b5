/* tests/unit/test_gpucomm.c - the CUDA backend from recipe to rank, and PP
 * links over NCCL (issue 8):
 *   - a cuda recipe gives each rank DP_BACKEND=cuda, DP_DEVICE=<its GPU on
 *     its node> and DP_PP_TRANSPORT (plan --json / --show-env);
 *   - train.pp_transport is checked at its key (FILE:LINE:COL);
 *   - dpworker refuses a bad DP_BACKEND / DP_PP_TRANSPORT naming the variable;
 *   - `dpctl launch` of a cuda recipe: without CUDA built it is refused at
 *     train.backend; with CUDA built, a GPU-less node stops it at pre-flight
 *     (exit 78) before anything trains;
 *   - dp_pp_nccl_open: -ENOSYS without CUDA, -ENODEV without a device (the
 *     links themselves: tests/unit/test_pp_nccl.c).
 *
 * Launch tests need dpworker ($DPWORKER, exported by `make check`) and skip
 * without it.  Everything is bounded: tiny models, a few steps. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "common/dp_log.h"
#include "worker/dp_exec.h"
#include "worker/dp_gpu.h"
#include "worker/dp_pp_nccl.h"
#include "tests/unit/dp_test.h"

static struct dp_test_run dpctl_run(const char *const *argv)
{
	struct dp_test_run r = dp_test_dpctl_list(argv);

	dp_log_set_sink(NULL);
	return r;
}
#define DPCTL(...) dpctl_run((const char *const[]){ __VA_ARGS__, NULL })

static void worker_or_skip(void)
{
	const char *w = getenv("DPWORKER");

	if (!w || !*w || access(w, X_OK) != 0)
		skip();
}

/* The environment entry NAME=... of a plan --json rank, or NULL. */
static const char *env_of(json_t *rank, const char *name)
{
	json_t *env = json_object_get(rank, "env");
	size_t n = strlen(name);

	for (size_t k = 0; k < json_array_size(env); k++) {
		const char *e = json_string_value(json_array_get(env, k));

		if (e && strncmp(e, name, n) == 0 && e[n] == '=')
			return e + n + 1;
	}
	return NULL;
}

/* ---- recipe -> environment ------------------------------------------------ */

/* `dpctl plan --json PATH`, checked to have @n ranks (caller decrefs). */
static json_t *plan_json(const char *path, size_t n)
{
	struct dp_test_run r = DPCTL("plan", "--json", path);
	json_t *o;

	assert_int_equal(r.rc, 0);
	o = json_loads(r.out, 0, NULL);
	assert_non_null(o);
	assert_int_equal(json_array_size(json_object_get(o, "ranks")), n);
	dp_test_run_free(&r);
	return o;
}

static void plan_env_carries_backend_and_device(void **state)
{
	char *path = dp_test_write_tmp(
		".yaml", "cluster: {hosts: \"h[1-2]\", launcher: ssh, known_hosts: accept-new,\n"
			 "          gpus: 4}\n"
			 "model: {layers: 8, hidden: 64, experts: 8, top_k: 2}\n"
			 "parallel: {pp: 4, ep: 2, schedule: dualpipe}\n"
			 "train: {steps: 2, backend: cuda, pp_transport: nccl}\n");
	json_t *o = plan_json(path, 8), *ranks = json_object_get(o, "ranks");
	struct dp_test_run r;

	(void)state;
	for (size_t i = 0; i < 8; i++) {
		json_t *x = json_array_get(ranks, i);
		char want[16];

		/* the GPU the plan gives the rank on its node, 0..3 on each host */
		(void)snprintf(want, sizeof(want), "%lld",
			       (long long)json_integer_value(json_object_get(x, "gpu")));
		assert_int_equal(json_integer_value(json_object_get(x, "gpu")),
				 (json_int_t)(i % 4));
		assert_non_null(env_of(x, "DP_BACKEND"));
		assert_string_equal(env_of(x, "DP_BACKEND"), "cuda");
		assert_non_null(env_of(x, "DP_DEVICE"));
		assert_string_equal(env_of(x, "DP_DEVICE"), want);
		assert_string_equal(env_of(x, "DP_PP_TRANSPORT"), "nccl");
	}
	json_decref(o);
	r = DPCTL("plan", "--show-env", path);
	assert_int_equal(r.rc, 0);
	assert_non_null(strstr(r.out, " DP_BACKEND=cuda DP_DEVICE=3 DP_PP_TRANSPORT=nccl "));
	dp_test_run_free(&r);
	(void)unlink(path);
	free(path);
}

static void plan_env_slurm_and_cpu(void **state)
{
	/* Slurm binds one GPU per task: every task's GPU is its device 0 */
	char *slurm = dp_test_write_tmp(".yaml",
					"cluster: {hosts: \"n[1-2]\", launcher: slurm, gpus: 2}\n"
					"model: {layers: 4, hidden: 64, experts: 4, top_k: 2}\n"
					"parallel: {pp: 4}\n"
					"train: {backend: cuda}\n");
	/* the cpu backend adds nothing: the worker's default */
	char *cpu =
		dp_test_write_tmp(".yaml", "cluster: {hosts: localhost, gpus: 2}\n"
					   "model: {layers: 4, hidden: 64, experts: 4, top_k: 2}\n"
					   "parallel: {pp: 2}\n");
	json_t *o = plan_json(slurm, 4), *ranks = json_object_get(o, "ranks");

	(void)state;
	for (size_t i = 0; i < 4; i++) {
		assert_string_equal(env_of(json_array_get(ranks, i), "DP_DEVICE"), "0");
		assert_string_equal(env_of(json_array_get(ranks, i), "DP_PP_TRANSPORT"), "tcp");
	}
	json_decref(o);
	o = plan_json(cpu, 2);
	ranks = json_object_get(o, "ranks");
	assert_null(env_of(json_array_get(ranks, 1), "DP_BACKEND"));
	assert_null(env_of(json_array_get(ranks, 1), "DP_DEVICE"));
	assert_non_null(env_of(json_array_get(ranks, 1), "DP_PP_RANK"));
	json_decref(o);
	(void)unlink(slurm);
	(void)unlink(cpu);
	free(slurm);
	free(cpu);
}

/* `dpctl recipe check` of @text fails (65) with @want on stderr. */
static void expect_recipe_error(const char *text, const char *want)
{
	char *path = dp_test_write_tmp(".yaml", text);
	struct dp_test_run r = DPCTL("recipe", "check", path);

	assert_int_equal(r.rc, 65);
	if (!strstr(r.err, want) || strncmp(r.err, path, strlen(path)) != 0)
		fail_msg("want '%s' after '%s' in:\n%s", want, path, r.err);
	dp_test_run_free(&r);
	(void)unlink(path);
	free(path);
}

static void recipe_checks_pp_transport(void **state)
{
	static const char head[] = "cluster: {hosts: localhost, gpus: 2}\n"
				   "model: {layers: 4, hidden: 64, experts: 4, top_k: 2}\n"
				   "parallel: {pp: 2}\n";
	char text[512], *path;
	struct dp_test_run r;

	(void)state;
	/* nccl moves GPU memory: not with the cpu backend, given or default */
	(void)snprintf(text, sizeof(text), "%strain:\n  backend: cpu\n  pp_transport: nccl\n",
		       head);
	expect_recipe_error(text, ":6:17: error: key 'train.pp_transport': 'nccl' needs "
				  "train.backend 'cuda', got 'cpu'");
	(void)snprintf(text, sizeof(text), "%strain:\n  steps: 3\n  pp_transport: nccl\n", head);
	expect_recipe_error(text, ":6:17: error: key 'train.pp_transport': 'nccl' needs "
				  "train.backend 'cuda', got 'cpu'");
	(void)snprintf(text, sizeof(text), "%strain: {pp_transport: udp}\n", head);
	expect_recipe_error(text, ":4:23: error: key 'train.pp_transport': 'udp' is not one of "
				  "tcp, nccl");
	/* and the good ones pass */
	(void)snprintf(text, sizeof(text), "%strain: {backend: cuda, pp_transport: nccl}\n", head);
	path = dp_test_write_tmp(".yaml", text);
	r = DPCTL("recipe", "check", path);
	assert_int_equal(r.rc, 0);
	dp_test_run_free(&r);
	(void)unlink(path);
	free(path);
}

/* ---- the worker's environment ---------------------------------------------- */

/* Launch a 2-rank cpu recipe whose env: section sets @env; it fails (78,
 * a configuration error of the rank) and the rank's error says @want. */
static void expect_worker_refuses(const char *env, const char *want)
{
	static const char base[] = "cluster: {hosts: localhost, gpus: 2}\n"
				   "model: {layers: 4, hidden: 32, experts: 8, shared_experts: 1,\n"
				   "        top_k: 2, vocab: 32, seq_len: 16}\n"
				   "parallel: {pp: 2}\n"
				   "train: {steps: 2}\n"
				   "health: {max_restarts: 0, rendezvous_s: 20}\n";
	char text[1024], *path;
	struct dp_test_run r;

	(void)snprintf(text, sizeof(text), "%senv:\n%s", base, env);
	path = dp_test_write_tmp(".yaml", text);
	r = DPCTL("launch", path);
	assert_int_equal(r.rc, 78);
	if (!strstr(r.err, want))
		fail_msg("no '%s' in:\n%s", want, r.err);
	assert_null(strstr(r.out, "step 0 loss"));
	dp_test_run_free(&r);
	(void)unlink(path);
	free(path);
}

static void worker_refuses_bad_backend_env(void **state)
{
	(void)state;
	worker_or_skip();
	expect_worker_refuses(
		"  DP_BACKEND: bogus\n",
		"train: DP_BACKEND 'bogus' is not one of cpu, cuda (emu: tests only)");
	expect_worker_refuses("  DP_PP_TRANSPORT: rdma\n",
			      "train: DP_PP_TRANSPORT 'rdma' is not one of tcp, nccl");
	expect_worker_refuses("  DP_PP_TRANSPORT: nccl\n",
			      "train: DP_PP_TRANSPORT=nccl needs DP_BACKEND=cuda, not 'cpu'");
	expect_worker_refuses("  DP_BACKEND: emu\n  DP_DEVICE: \"-1\"\n", "DP_DEVICE");
}

/* ---- launch of a cuda recipe ------------------------------------------------ */

/* Fork-safe GPU count: CUDA must not be initialised in the test process
 * before the rank children fork, so ask in a throwaway child. */
static int gpus_in_child(void)
{
	pid_t pid = fork();
	int st = 0, n = 0;

	if (pid == 0)
		_exit(dp_gpu_count(&n, NULL) == 0 ? (n > 100 ? 100 : n) : 0);
	if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
		return 0;
	return WEXITSTATUS(st);
}

static void cuda_launch_needs_cuda_and_a_gpu(void **state)
{
	char *path = dp_test_write_tmp(".yaml", "cluster: {hosts: localhost, gpus: 2}\n"
						"model: {layers: 4, hidden: 32, experts: 8, "
						"shared_experts: 1, top_k: 2}\n"
						"parallel: {pp: 2}\n"
						"train:\n"
						"  steps: 3\n"
						"  backend: cuda\n"
						"health: {max_restarts: 0, rendezvous_s: 20}\n");
	struct dp_test_run r;

	(void)state;
	worker_or_skip();
	if (!dp_gpu_built()) {
		/* refused up front, at the key, before any rank starts */
		r = DPCTL("launch", path);
		assert_int_equal(r.rc, 69);
		if (!strstr(r.err, ":6: key 'train.backend': 'cuda': dpctl was built without CUDA "
				   "(rebuild with WITH_CUDA=yes)"))
			fail_msg("%s", r.err);
	} else {
		if (gpus_in_child() > 0) {
			(void)unlink(path);
			free(path);
			skip(); /* the GPU-less case is what this tests */
			return;
		}
		/* with CUDA built, the pre-flight gate stops a GPU-less node */
		r = DPCTL("launch", path);
		assert_int_equal(r.rc, 78);
		if (!strstr(r.err, "pre-flight failed") ||
		    !strstr(r.err, "localhost (rank 0): no GPU found; the recipe trains on cuda"))
			fail_msg("%s", r.err);
		/* nothing trained: no rank got past start-up, no step reported */
		assert_null(strstr(r.out, "step 0 loss"));
		assert_null(strstr(r.out, "rank 0: pid"));
		assert_null(strstr(r.out, "rank 1: pid"));
	}
	dp_test_run_free(&r);
	(void)unlink(path);
	free(path);
}

/* ---- NCCL links -------------------------------------------------------------- */

static void nccl_open_fails_cleanly_here(void **state)
{
	struct dp_pp_link *tcp[2] = { NULL, NULL }, *out[2] = { (void *)1, (void *)1 };
	struct dp_err err = { 0 };
	int fds[2], rc;

	(void)state;
	if (dp_gpu_built() && gpus_in_child() > 0) {
		skip(); /* with GPUs: tests/unit/test_pp_nccl.c */
		return;
	}
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
	assert_int_equal(dp_pp_link_fd(fds[0], &tcp[1], &err), 0);
	rc = dp_pp_nccl_open(2, 0, 0, tcp, out, &err);
	if (!dp_gpu_built()) {
		assert_int_equal(rc, -ENOSYS);
		assert_string_equal(err.msg, "exec: nccl links: dpctl was built without CUDA "
					     "(rebuild with WITH_CUDA=yes)");
	} else {
		assert_int_equal(rc, -ENODEV);
		assert_non_null(strstr(err.msg, "exec: nccl links: no CUDA device 0"));
		assert_null(out[0]);
		assert_null(out[1]);
	}
	dp_pp_link_close(tcp[1]);
	(void)close(fds[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(plan_env_carries_backend_and_device),
		cmocka_unit_test(plan_env_slurm_and_cpu),
		cmocka_unit_test(recipe_checks_pp_transport),
		cmocka_unit_test(worker_refuses_bad_backend_env),
		cmocka_unit_test(cuda_launch_needs_cuda_and_a_gpu),
		cmocka_unit_test(nccl_open_fails_cleanly_here),
	};

	(void)signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
