/* tests/unit/test_slurm.c - the Slurm helpers (launcher/dp_slurm.h) and the
 * slurm backend without a Slurm: shell quoting checked by running the
 * generated text through /bin/sh, the srun argv, srun's task-exit messages,
 * the sbatch script, `dpctl launch --submit` against a fake sbatch, and the
 * backend against a fake srun (a shell script that runs the tasks here).
 * The real thing runs in tests/cli/test_slurm_launch.sh.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#include "common/dp_buf.h"
#include "common/dp_log.h"
#include "launcher/ctl_launch.h"
#include "launcher/dp_slurm.h"
#include "tests/unit/dp_test.h"

#define NASTY "it's $(touch /tmp/dp-slurm-pwned) `id` ; \"q\" \\ \n&|*"

/* Run @script with /bin/sh, $T set to @t; stdout (caller frees) and status. */
static char *sh_run(const char *script, const char *t, int *status)
{
	char tmpl[] = "/tmp/dp-slurm-out-XXXXXX";
	int fd = mkstemp(tmpl), st;
	pid_t pid;
	char *out;

	assert_true(fd >= 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int dn = open("/dev/null", O_WRONLY);

		(void)dup2(fd, 1);
		if (dn >= 0)
			(void)dup2(dn, 2);
		if (t)
			(void)setenv("T", t, 1);
		execl("/bin/sh", "sh", "-c", script, (char *)NULL);
		_exit(127);
	}
	(void)close(fd);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	*status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	out = dp_test_slurp(tmpl);
	(void)unlink(tmpl);
	return out;
}

static void quote_round_trips_through_sh(void **state)
{
	const char *words[] = { "", "plain", "it's", "'", "''", NASTY, "$HOME", "a\tb" };
	(void)state;
	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
		struct dp_buf b;
		char *out;
		int st;

		dp_buf_init(&b, 4096);
		assert_int_equal(dp_buf_adds(&b, "printf '%s' "), 0);
		assert_int_equal(dp_slurm_shell_quote(&b, words[i]), 0);
		out = sh_run(dp_buf_str(&b), NULL, &st);
		assert_int_equal(st, 0);
		assert_string_equal(out, words[i]);
		free(out);
		dp_buf_release(&b);
	}
	assert_int_equal(access("/tmp/dp-slurm-pwned", F_OK), -1);
}

static void task_cmd_passes_env_and_argv_verbatim(void **state)
{
	const char *env[] = { "DP_RANK=3", "X=" NASTY, NULL };
	const char *argv[] = {
		"/bin/sh", "-c",  "printf '%s|%s|%s|%s' \"$DP_RANK\" \"$X\" \"$0\" \"$1\"",
		"zero",	   NASTY, NULL
	};
	struct dp_buf b;
	char *out, want[256];
	int st;

	(void)state;
	dp_buf_init(&b, 1 << 16);
	assert_int_equal(dp_slurm_task_cmd(NULL, env, argv, &b, NULL), 0);
	/* the wrapper's way: the command comes from the environment and is eval'd */
	out = sh_run("eval \"$T\"", dp_buf_str(&b), &st);
	assert_int_equal(st, 0);
	(void)snprintf(want, sizeof(want), "3|%s|zero|%s", NASTY, NASTY);
	assert_string_equal(out, want);
	free(out);
	assert_int_equal(access("/tmp/dp-slurm-pwned", F_OK), -1);
	dp_buf_release(&b);
}

static void task_cmd_checks_the_node(void **state)
{
	const char *argv[] = { "/bin/echo", "ran", NULL };
	struct dp_buf b;
	char *out, script[512];
	int st;

	(void)state;
	dp_buf_init(&b, 1 << 16);
	assert_int_equal(dp_slurm_task_cmd("node'1", NULL, argv, &b, NULL), 0);
	(void)snprintf(script, sizeof(script),
		       "SLURMD_NODENAME=\"node'1\" SLURM_PROCID=0; eval \"$T\"");
	out = sh_run(script, dp_buf_str(&b), &st);
	assert_int_equal(st, 0);
	assert_string_equal(out, "ran\n");
	free(out);
	out = sh_run("SLURMD_NODENAME=other SLURM_PROCID=5; eval \"$T\"", dp_buf_str(&b), &st);
	assert_int_equal(st, 70); /* the wrong node: refuses to run */
	assert_string_equal(out, "");
	free(out);
	dp_buf_release(&b);
}

static void task_cmd_refuses_bad_env(void **state)
{
	const char *argv[] = { "x", NULL };
	const char *bad1[] = { "NOEQUALS", NULL }, *bad2[] = { "1X=a", NULL },
		   *bad3[] = { "A B=c", NULL };
	struct dp_err err = { 0 };
	struct dp_buf b;

	(void)state;
	dp_buf_init(&b, 1 << 16);
	assert_int_equal(dp_slurm_task_cmd(NULL, bad1, argv, &b, &err), -EINVAL);
	assert_int_equal(dp_slurm_task_cmd(NULL, bad2, argv, &b, &err), -EINVAL);
	assert_int_equal(dp_slurm_task_cmd(NULL, bad3, argv, &b, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "is not NAME=value"));
	assert_int_equal(dp_slurm_task_cmd(NULL, NULL, (const char *[]){ NULL }, &b, NULL),
			 -EINVAL);
	dp_buf_release(&b);
}

static void srun_argv_has_one_word_per_option(void **state)
{
	struct dp_slurm_step st = { .nodes = 2,
				    .ntasks = 8,
				    .ntasks_per_node = 4,
				    .nodelist = "gpu[001-002]",
				    .cpu_bind = "cores",
				    .gpu_bind = "closest",
				    .gpus_per_task = 1,
				    .job_name = "a b;c" };
	const char *want[] = { "srun",
			       "--label",
			       "--kill-on-bad-exit=1",
			       "--nodes=2",
			       "--ntasks=8",
			       "--ntasks-per-node=4",
			       "--distribution=block",
			       "--nodelist=gpu[001-002]",
			       "--job-name=a b;c",
			       "--cpu-bind=cores",
			       "--gpus-per-task=1",
			       "--gpu-bind=closest",
			       "/bin/sh",
			       "-c",
			       DP_SLURM_WRAPPER,
			       NULL };
	char **v = NULL;
	size_t i;

	(void)state;
	assert_int_equal(dp_slurm_srun_argv(&st, &v, NULL), 0);
	for (i = 0; want[i]; i++) {
		assert_non_null(v[i]);
		assert_string_equal(v[i], want[i]);
	}
	assert_null(v[i]);
	dp_slurm_argv_free(v);

	/* minimal: no optional options */
	st = (struct dp_slurm_step){
		.nodes = 1, .ntasks = 1, .ntasks_per_node = 1, .srun = "/x/srun"
	};
	assert_int_equal(dp_slurm_srun_argv(&st, &v, NULL), 0);
	assert_string_equal(v[0], "/x/srun");
	assert_string_equal(v[7], "/bin/sh");
	dp_slurm_argv_free(v);

	v = NULL;
	st.cpu_bind = "cores\n--x";
	assert_int_equal(dp_slurm_srun_argv(&st, &v, NULL), -EINVAL);
	st.cpu_bind = NULL;
	st.ntasks = 0;
	assert_int_equal(dp_slurm_srun_argv(&st, &v, NULL), -EINVAL);
	assert_null(v);
}

static void wrapper_runs_the_task_of_its_procid(void **state)
{
	char script[1024], *out;
	int st;

	(void)state;
	(void)snprintf(script, sizeof(script),
		       "export SLURM_PROCID=1 SLURM_JOB_ID=9 SLURM_STEP_ID=0 "
		       "DP_SLURM_TASK_0='echo zero' DP_SLURM_TASK_1='echo one'; "
		       "exec /bin/sh -c \"$T\"");
	out = sh_run(script, DP_SLURM_WRAPPER, &st);
	assert_int_equal(st, 0);
	assert_string_equal(out, "one\n");
	free(out);
	out = sh_run("export SLURM_PROCID=2; exec /bin/sh -c \"$T\" 2>/dev/null", DP_SLURM_WRAPPER,
		     &st);
	assert_int_equal(st, 70); /* no command for this task */
	free(out);
}

static void parses_srun_task_exits(void **state)
{
	unsigned char t[8];
	int status = -1;

	(void)state;
	memset(t, 0, sizeof(t));
	assert_int_equal(
		dp_slurm_task_exit_parse("srun: error: dpn2: task 3: Exited with exit code 7", t, 8,
					 &status),
		1);
	assert_int_equal(status, 7);
	assert_int_equal(t[3], 1);
	assert_int_equal(t[2], 0);
	memset(t, 0, sizeof(t));
	assert_int_equal(
		dp_slurm_task_exit_parse("srun: error: n1: tasks 0-2,5: Killed", t, 8, &status), 4);
	assert_int_equal(status, 128 + 9);
	assert_true(t[0] && t[1] && t[2] && !t[3] && !t[4] && t[5]);
	memset(t, 0, sizeof(t));
	assert_int_equal(
		dp_slurm_task_exit_parse("srun: error: n1: tasks 6-9: Terminated", t, 8, &status),
		2); /* ids past ntasks are ignored */
	assert_int_equal(status, 128 + 15);
	status = -1;
	assert_int_equal(
		dp_slurm_task_exit_parse("srun: error: Unable to create step", t, 8, &status), 0);
	assert_int_equal(
		dp_slurm_task_exit_parse("0: srun: error: x: task 1: Killed", t, 8, &status), 0);
	assert_int_equal(dp_slurm_task_exit_parse(
				 "srun: error: x: task 1: Exited with exit code 1x", t, 8, &status),
			 0);
	assert_int_equal(dp_slurm_task_exit_parse("srun: error: x: task 1: Sleepy", t, 8, &status),
			 0);
	assert_int_equal(status, -1);
}

static void sbatch_script_runs_argv_verbatim(void **state)
{
	const char *argv[] = { "/bin/sh", "-c", "printf '%s|' \"$@\"", "sh", NASTY, "", NULL };
	struct dp_slurm_job job = { .job_name = "moe 16b; $(x)",
				    .nodes = 16,
				    .ntasks_per_node = 8,
				    .gpus_per_node = 8,
				    .time = "2-00:00:00",
				    .partition = "gpu",
				    .argv = argv };
	struct dp_buf b;
	char *out, want[256];
	int st;

	(void)state;
	dp_buf_init(&b, 1 << 16);
	assert_int_equal(dp_slurm_sbatch_script(&job, &b, NULL), 0);
	assert_non_null(strstr(dp_buf_str(&b), "#!/bin/sh\n"));
	assert_non_null(strstr(dp_buf_str(&b), "\n#SBATCH --job-name=moe_16b____x_\n"));
	assert_non_null(strstr(dp_buf_str(&b), "\n#SBATCH --nodes=16\n"));
	assert_non_null(strstr(dp_buf_str(&b), "\n#SBATCH --ntasks-per-node=8\n"));
	assert_non_null(strstr(dp_buf_str(&b), "\n#SBATCH --gpus-per-node=8\n"));
	assert_non_null(strstr(dp_buf_str(&b), "\n#SBATCH --time=2-00:00:00\n"));
	assert_non_null(strstr(dp_buf_str(&b), "\n#SBATCH --partition=gpu\n"));
	/* the script itself, run by sh: the words arrive unchanged */
	out = sh_run("eval \"$T\"", dp_buf_str(&b), &st);
	assert_int_equal(st, 0);
	(void)snprintf(want, sizeof(want), "%s||", NASTY);
	assert_string_equal(out, want);
	free(out);
	assert_int_equal(access("/tmp/dp-slurm-pwned", F_OK), -1);
	dp_buf_release(&b);

	/* #SBATCH values are not shell words: anything that could break the line is refused */
	dp_buf_init(&b, 1 << 16);
	job.time = "1:00\n#SBATCH --uid=0";
	assert_int_equal(dp_slurm_sbatch_script(&job, &b, NULL), -EINVAL);
	job.time = NULL;
	job.partition = "a b";
	assert_int_equal(dp_slurm_sbatch_script(&job, &b, NULL), -EINVAL);
	job.partition = NULL;
	job.gpus_per_node = 0;
	assert_int_equal(dp_slurm_sbatch_script(&job, &b, NULL), 0);
	assert_null(strstr(dp_buf_str(&b), "gpus-per-node"));
	assert_null(strstr(dp_buf_str(&b), "--time"));
	dp_buf_release(&b);
}

/* A fake sbatch: saves its stdin and argv next to itself, answers "4242;c1". */
static char *fake_sbatch(const char *dir, const char *answer, int code)
{
	char *path = malloc(512), script[1024];
	FILE *f;

	assert_non_null(path);
	(void)snprintf(path, 512, "%s/sbatch", dir);
	(void)snprintf(
		script, sizeof(script),
		"#!/bin/sh\ncat > '%s/script'\necho \"$@\" > '%s/args'\necho '%s'\nexit %d\n", dir,
		dir, answer, code);
	f = fopen(path, "w");
	assert_non_null(f);
	(void)fputs(script, f);
	(void)fclose(f);
	assert_int_equal(chmod(path, 0755), 0);
	return path;
}

static void submit_gives_the_script_to_sbatch(void **state)
{
	char dir[] = "/tmp/dp-slurm-sub-XXXXXX", jobid[32], p[600], *s;
	struct dp_err err = { 0 };
	char *sb;

	(void)state;
	assert_non_null(mkdtemp(dir));
	sb = fake_sbatch(dir, "sbatch: warning: x\n4242;c1", 0);
	assert_int_equal(dp_slurm_submit(sb, "#!/bin/sh\necho hi\n", jobid, sizeof(jobid), &err),
			 0);
	assert_string_equal(jobid, "4242");
	(void)snprintf(p, sizeof(p), "%s/script", dir);
	s = dp_test_slurp(p);
	assert_string_equal(s, "#!/bin/sh\necho hi\n");
	free(s);
	(void)snprintf(p, sizeof(p), "%s/args", dir);
	s = dp_test_slurp(p);
	assert_string_equal(s, "--parsable\n");
	free(s);
	free(sb);
	/* sbatch refusing the job: its message comes back */
	sb = fake_sbatch(dir, "sbatch: error: invalid partition", 1);
	assert_int_equal(dp_slurm_submit(sb, "x", jobid, sizeof(jobid), &err), -EIO);
	assert_non_null(strstr(err.msg, "invalid partition"));
	free(sb);
	sb = fake_sbatch(dir, "no id here", 0);
	assert_int_equal(dp_slurm_submit(sb, "x", jobid, sizeof(jobid), &err), -EPROTO);
	free(sb);
	assert_int_equal(dp_slurm_submit("/nonexistent/sbatch", "x", jobid, sizeof(jobid), &err),
			 -ENOENT);
	/* an sbatch that exits without reading a large script: EPIPE, not SIGPIPE */
	{
		size_t big = (size_t)4 << 20;
		char *script = malloc(big + 1);

		assert_non_null(script);
		memset(script, '#', big);
		script[big] = '\0';
		assert_int_equal(dp_slurm_submit("/bin/true", script, jobid, sizeof(jobid), &err),
				 -EPROTO);
		free(script);
	}
	(void)snprintf(p, sizeof(p), "rm -rf '%s'", dir);
	assert_int_equal(system(p), 0);
}

static void dpctl_launch_submit(void **state)
{
	char dir[] = "/tmp/dp-slurm-cli-XXXXXX", p[600], *s, *sb;
	const char *recipe = FIXTURES "/recipes/slurm-2node.yaml";
	struct dp_test_run r;

	(void)state;
	assert_non_null(mkdtemp(dir));
	(void)unsetenv("SLURM_JOB_ID");
	/* --dry-run prints the script; submit-only options are not passed on */
	r = dp_test_dpctl("launch", "--submit", "--dry-run", "--time", "01:00:00", "--fake-steps",
			  "5", "--heartbeat-s", "0.5", recipe);
	assert_int_equal(r.rc, 0);
	assert_non_null(strstr(r.out, "#SBATCH --nodes=2\n#SBATCH --ntasks-per-node=2\n"));
	assert_non_null(strstr(r.out, "#SBATCH --time=01:00:00\n"));
	assert_non_null(strstr(r.out, "' 'launch' '--fake-steps' '5' '--heartbeat-s' '0.5' '/"));
	assert_non_null(strstr(r.out, "/recipes/slurm-2node.yaml'\n"));
	assert_null(strstr(r.out, "'--submit'"));
	assert_null(strstr(r.out, "'--time'"));
	dp_test_run_free(&r);
	/* a bad --time is refused, not written */
	r = dp_test_dpctl("launch", "--submit", "--dry-run", "--time", "1 --uid=0", "--fake-steps",
			  "5", recipe);
	assert_int_equal(r.rc, EX_DATAERR);
	dp_test_run_free(&r);
	/* a real submit through the fake sbatch: the job id on stdout */
	sb = fake_sbatch(dir, "77", 0);
	(void)setenv("DP_SBATCH", sb, 1);
	r = dp_test_dpctl("launch", "--submit", "--fake-steps", "5", recipe);
	(void)unsetenv("DP_SBATCH");
	assert_int_equal(r.rc, 0);
	assert_string_equal(r.out, "77\n");
	(void)snprintf(p, sizeof(p), "%s/script", dir);
	s = dp_test_slurp(p);
	assert_non_null(strstr(s, "#SBATCH --nodes=2\n"));
	free(s);
	free(sb);
	dp_test_run_free(&r);
	/* outside an allocation without --submit: a clear refusal */
	r = dp_test_dpctl("launch", "--fake-steps", "5", recipe);
	assert_int_equal(r.rc, EX_UNAVAILABLE);
	assert_non_null(strstr(r.err, "use --submit"));
	dp_test_run_free(&r);
	/* --submit wants a slurm recipe */
	r = dp_test_dpctl("launch", "--submit", "--local", "2");
	assert_int_equal(r.rc, EX_USAGE);
	dp_test_run_free(&r);
	dp_log_set_sink(NULL);
	(void)snprintf(p, sizeof(p), "rm -rf '%s'", dir);
	assert_int_equal(system(p), 0);
}

/* A fake srun: runs every task here, labelled, with the environment the
 * wrapper expects (SLURM_PROCID, SLURMD_NODENAME from --nodelist). */
static const char fake_srun_text[] =
	"#!/bin/bash\n"
	"n=1; g=1; nl=localhost\n"
	"for a in \"$@\"; do case $a in --ntasks=*) n=${a#*=};; --ntasks-per-node=*) g=${a#*=};;"
	" --nodelist=*) nl=${a#*=};; esac; done\n"
	"[ -n \"$FAKE_SRUN_FAIL\" ] && { echo \"srun: error: $FAKE_SRUN_FAIL\" >&2; exit 1; }\n"
	"IFS=, read -r -a nodes <<<\"$nl\"\n"
	"[ -n \"$FAKE_SRUN_SWAP\" ] && nodes=(\"${nodes[1]}\" \"${nodes[0]}\")\n"
	"wrapper=${!#}\n"
	"for ((i = 0; i < n; i++)); do\n"
	"  ( set -o pipefail\n"
	"    export SLURM_PROCID=$i SLURM_JOB_ID=1 SLURM_STEP_ID=0 SLURMD_NODENAME=${nodes[$((i / g))]}\n"
	"    /bin/sh -c \"$wrapper\" 2>&1 | sed -u \"s/^/$i: /\" ) &\n"
	"  pids[$i]=$!\n"
	"done\n"
	"rc=0\n"
	"for ((i = 0; i < n; i++)); do\n"
	"  wait ${pids[$i]}; c=$?\n"
	"  [ $c -eq 0 ] || { echo \"srun: error: x: task $i: Exited with exit code $c\" >&2; rc=$c; }\n"
	"done\n"
	"exit $rc\n";

static void backend_runs_ranks_through_srun(void **state)
{
	char dir[] = "/tmp/dp-slurm-be-XXXXXX", srun[600], p[600];
	const char *worker = getenv("DPWORKER");
	const char *argv[] = { worker, "--fake-steps", "3", "--fake-step-ms", "10", NULL };
	struct dp_launch_rank *ranks;
	struct dp_launch_spec spec = { NULL, 4 };
	struct dp_launch_opts lo = { .srun = srun };
	struct dp_ctl_cfg cfg = { .backend = "slurm",
				  .launch = &lo,
				  .rendezvous_s = 10,
				  .heartbeat_s = 0.2,
				  .grace_s = 1 };
	const char *hosts[] = { "nodeA", "nodeB" };
	struct dp_ctl_result res;
	struct dp_err err = { 0 };
	FILE *f;

	(void)state;
	if (!worker || access(worker, X_OK) != 0 || access("/bin/bash", X_OK) != 0) {
		skip();
		return;
	}
	ranks = calloc(4, sizeof(*ranks));
	if (!ranks) {
		fail();
		return;
	}
	spec.ranks = ranks;
	assert_non_null(mkdtemp(dir));
	(void)snprintf(srun, sizeof(srun), "%s/srun", dir);
	f = fopen(srun, "w");
	assert_non_null(f);
	(void)fputs(fake_srun_text, f);
	(void)fclose(f);
	assert_int_equal(chmod(srun, 0755), 0);
	for (int i = 0; i < 4; i++)
		ranks[i] = (struct dp_launch_rank){
			.rank = i, .host = hosts[i / 2], .local_index = i % 2, .argv = argv
		};
	(void)setenv("SLURM_JOB_ID", "1", 1);
	assert_int_equal(dp_ctl_run(&cfg, &spec, &res, &err), 0);
	assert_int_equal(res.outcome, DP_CTL_OK);
	assert_int_equal(res.max_step, 3);

	/* srun cannot create the step: a spawn failure with srun's message */
	(void)setenv("FAKE_SRUN_FAIL", "Unable to create step for job 1: Invalid node name", 1);
	assert_int_equal(dp_ctl_run(&cfg, &spec, &res, &err), 0);
	(void)unsetenv("FAKE_SRUN_FAIL");
	assert_int_equal(res.outcome, DP_CTL_SPAWN_FAILED);
	assert_non_null(strstr(res.cause, "Invalid node name"));

	/* tasks placed on other nodes than the plan says refuse to run */
	(void)setenv("FAKE_SRUN_SWAP", "1", 1);
	assert_int_equal(dp_ctl_run(&cfg, &spec, &res, &err), 0);
	(void)unsetenv("FAKE_SRUN_SWAP");
	assert_int_equal(res.outcome, DP_CTL_RANK_EXIT);
	assert_int_equal(res.exit_code, 70);
	assert_true(res.ntail > 0);
	assert_non_null(strstr(res.tail[0], "the plan wants it on"));
	(void)unsetenv("SLURM_JOB_ID");
	dp_log_set_sink(NULL);
	(void)snprintf(p, sizeof(p), "rm -rf '%s'", dir);
	assert_int_equal(system(p), 0);
	free(ranks);
}

/* 2048 ranks (256 nodes x 8) whose task commands, all in srun's
 * environment, are more than an exec takes (ARG_MAX, a quarter of the
 * stack limit, set to 4 MiB here): a spawn failure that says so, before
 * anything is started (srun here would fail the test). */
static void too_many_task_commands_for_one_exec(void **state)
{
	enum { N = 2048 };
	static char big[1100];
	const char *argv[] = { "dpworker", NULL }, *env[] = { big, NULL };
	struct dp_launch_rank *ranks = calloc(N, sizeof(*ranks));
	char(*host)[8] = calloc(N / 8, sizeof(*host));
	struct dp_launch_spec spec = { ranks, N };
	struct dp_launch_opts lo = { .srun = "/bin/false" };
	struct dp_ctl_cfg cfg = { .backend = "slurm", .launch = &lo, .rendezvous_s = 10 };
	struct rlimit old, rl;
	struct dp_ctl_result res;
	struct dp_err err = { 0 };

	(void)state;
	assert_true(ranks && host);
	(void)snprintf(big, sizeof(big), "BIG=%01000d", 7);
	for (int i = 0; i < N; i++) {
		(void)snprintf(host[i / 8], sizeof(host[0]), "n%03d", i / 8);
		ranks[i] = (struct dp_launch_rank){ .rank = i,
						    .host = host[i / 8],
						    .local_index = i % 8,
						    .argv = argv,
						    .env = env };
	}
	assert_int_equal(getrlimit(RLIMIT_STACK, &old), 0);
	rl = old;
	rl.rlim_cur = (rlim_t)4 << 20;
	assert_int_equal(setrlimit(RLIMIT_STACK, &rl), 0);
	(void)setenv("SLURM_JOB_ID", "1", 1);
	assert_int_equal(dp_ctl_run(&cfg, &spec, &res, &err), 0);
	(void)unsetenv("SLURM_JOB_ID");
	assert_int_equal(setrlimit(RLIMIT_STACK, &old), 0);
	assert_int_equal(res.outcome, DP_CTL_SPAWN_FAILED);
	if (!strstr(res.cause, "slurm: the commands of 2048 tasks take ") ||
	    !strstr(res.cause, "more than the 1048576 an exec takes (ARG_MAX"))
		fail_msg("%s", res.cause);
	free(ranks);
	free(host);
}

static void probe_needs_an_allocation(void **state)
{
	int prio = -1;

	(void)state;
	(void)unsetenv("SLURM_JOB_ID");
	assert_int_equal(dp_launch_slurm.probe(&prio), -ENODEV);
	assert_ptr_equal(dp_launch_backend_pick(NULL, NULL), &dp_launch_local);
	(void)setenv("SLURM_JOB_ID", "12", 1);
	assert_int_equal(dp_launch_slurm.probe(&prio), 0);
	assert_ptr_equal(dp_launch_backend_pick(NULL, NULL), &dp_launch_slurm);
	(void)unsetenv("SLURM_JOB_ID");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(quote_round_trips_through_sh),
		cmocka_unit_test(task_cmd_passes_env_and_argv_verbatim),
		cmocka_unit_test(task_cmd_checks_the_node),
		cmocka_unit_test(task_cmd_refuses_bad_env),
		cmocka_unit_test(srun_argv_has_one_word_per_option),
		cmocka_unit_test(wrapper_runs_the_task_of_its_procid),
		cmocka_unit_test(parses_srun_task_exits),
		cmocka_unit_test(sbatch_script_runs_argv_verbatim),
		cmocka_unit_test(submit_gives_the_script_to_sbatch),
		cmocka_unit_test(dpctl_launch_submit),
		cmocka_unit_test(backend_runs_ranks_through_srun),
		cmocka_unit_test(too_many_task_commands_for_one_exec),
		cmocka_unit_test(probe_needs_an_allocation),
	};

	(void)unsetenv("DP_LAUNCH");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
