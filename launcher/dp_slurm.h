/* launcher/dp_slurm.h - Slurm helpers behind the `slurm` launch backend and
 * `dpctl launch --submit`: shell quoting, the srun command line, the
 * per-task command, srun's task-exit messages, and the sbatch script.
 *
 * The backend itself (dp_launch_slurm, launcher/launch_slurm.c) runs one
 * srun per run attempt with one task per rank:
 *
 *   srun --label --kill-on-bad-exit=1 --nodes=N --ntasks=R
 *        --ntasks-per-node=G --distribution=block --nodelist=HOSTS
 *        [--cpu-bind=..] [--gpus-per-task=..] [--gpu-bind=..]
 *        /bin/sh -c DP_SLURM_WRAPPER
 *
 * The wrapper looks up $DP_SLURM_TASK_<SLURM_PROCID> (set in srun's
 * environment, which srun exports to every task) and evaluates it: a check
 * that the task landed on the node the plan wants, then
 * `exec env NAME=value... argv...`, every word single-quoted.  The job token
 * is only in srun's environment, never in any argv.
 *
 * Pure functions except dp_slurm_submit() (runs sbatch).  Thread-safe.
 */
#ifndef DP_SLURM_H
#define DP_SLURM_H

#include <stddef.h>

#include "common/dp_buf.h"
#include "common/dp_err.h"

/* The /bin/sh -c script every srun task runs (see above). */
extern const char DP_SLURM_WRAPPER[];

/* Append @s to @b as one single-quoted shell word ('it'\''s').  0, or
 * -ENOMEM / -E2BIG from @b. */
int dp_slurm_shell_quote(struct dp_buf *b, const char *s);

struct dp_slurm_step {
	int nodes;	      /* >= 1 */
	int ntasks;	      /* >= 1 */
	int ntasks_per_node;  /* >= 1 */
	const char *nodelist; /* Slurm host list for --nodelist; NULL: none */
	const char *cpu_bind; /* --cpu-bind value; NULL: not given */
	const char *gpu_bind; /* --gpu-bind value; NULL: not given */
	int gpus_per_task;    /* > 0: --gpus-per-task */
	const char *job_name; /* --job-name; NULL: not given */
	const char *srun;     /* program; NULL: "srun" */
};

/* Build srun's argv (NULL-terminated).  Option values are single argv
 * words, never parsed by a shell; a value holding a control character is
 * refused (-EINVAL), as are counts < 1.  *out is set only on success; free
 * with dp_slurm_argv_free(). */
int dp_slurm_srun_argv(const struct dp_slurm_step *st, char ***out, struct dp_err *err);
void dp_slurm_argv_free(char **argv); /* NULL-safe */

/* The command a task evaluates: when @host is not NULL,
 *   [ "$SLURMD_NODENAME" = 'host' ] || { echo '...' >&2; exit 70; };
 * then `exec env 'NAME=value'... 'argv0' 'argv1'...`.  @env may be NULL;
 * every @env entry must be NAME=value with a valid NAME (-EINVAL).
 * Appends to @out: 0, -EINVAL, -ENOMEM, -E2BIG. */
int dp_slurm_task_cmd(const char *host, const char *const *env, const char *const *argv,
		      struct dp_buf *out, struct dp_err *err);

/* Parse one of srun's task-exit messages:
 *   "srun: error: NODE: task 3: Exited with exit code 7"
 *   "srun: error: NODE: tasks 0-2,5: Killed"
 * Marks every task id < @ntasks of the list in @tasks (1 byte each) and
 * sets *status (the exit code, or 128 + the signal number whose strsignal()
 * text ends the line).  Returns the number of tasks marked, 0 if @line is
 * not such a message (nothing written). */
int dp_slurm_task_exit_parse(const char *line, unsigned char *tasks, size_t ntasks, int *status);

struct dp_slurm_job {
	const char *job_name;	 /* any text; characters outside [A-Za-z0-9._-] become '_' */
	int nodes;		 /* >= 1 */
	int ntasks_per_node;	 /* >= 1 */
	int gpus_per_node;	 /* > 0: --gpus-per-node */
	const char *time;	 /* --time; NULL: the partition's default */
	const char *partition;	 /* --partition; NULL: the default */
	const char *output;	 /* --output; NULL: Slurm's default slurm-%j.out */
	const char *const *argv; /* the command run in the allocation; NULL-terminated */
};

/* Write the batch script for @job to @out: "#!/bin/sh", #SBATCH lines, then
 * `exec 'argv0' 'argv1' ...`.  #SBATCH values holding white space, a
 * control character or a quote are refused (-EINVAL): sbatch reads those
 * lines itself, so quoting would not protect them. */
int dp_slurm_sbatch_script(const struct dp_slurm_job *job, struct dp_buf *out, struct dp_err *err);

/* Submit @script with `sbatch --parsable` (@sbatch: program, NULL: "sbatch"),
 * the script on its stdin.  0 and the job id in @jobid, or -errno with @err
 * holding sbatch's message.  Blocks until sbatch exits. */
int dp_slurm_submit(const char *sbatch, const char *script, char *jobid, size_t len,
		    struct dp_err *err);

#endif
