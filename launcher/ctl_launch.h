/* launcher/ctl_launch.h - starting ranks and running the control plane.
 *
 * Three layers:
 *
 *  1. A launch spec: a plain list of ranks (id, host, argv, env, local
 *     index).  It says nothing about recipes; a recipe -> plan -> spec step
 *     produces it (later), and `dpctl launch --local N` builds one by hand.
 *
 *  2. Launch backends (`local` now; `ssh` and `slurm` later): a const table of
 *     operations per backend, picked by name, $DP_LAUNCH, or probe priority.
 *     A backend starts processes and reports their output lines and exit
 *     statuses through callbacks from dispatch(), which the controller calls
 *     from its single poll() loop with the descriptors the backend asked for.
 *
 *  3. The controller, dp_ctl_run(): listens on TCP, starts every rank through
 *     the backend with a fresh job token in its environment, authenticates the
 *     workers (launcher/ctl_proto.h), holds the rendezvous, watches
 *     heartbeats, and on the first failure stops every rank and reports that
 *     failure as the root cause.
 *
 * Nothing here is thread-safe; one controller runs in one thread.
 */
#ifndef DP_CTL_LAUNCH_H
#define DP_CTL_LAUNCH_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/dp_err.h"

/* ---- 1. launch spec --------------------------------------------------------- */

struct dp_launch_rank {
	int rank;		 /* 0..nranks-1, each exactly once */
	const char *host;	 /* where it runs; "localhost" for the local backend */
	int local_index;	 /* index among the ranks on the same host */
	const char *const *argv; /* NULL-terminated; argv[0] is the program (path or name) */
	const char *const *env;	 /* extra "NAME=value" entries, NULL-terminated; may be NULL */
};

struct dp_launch_spec {
	const struct dp_launch_rank *ranks; /* borrowed */
	size_t nranks;
};

/* Check a spec: ranks 0..n-1 each once, argv and host set.  0 or -EINVAL. */
int dp_launch_spec_check(const struct dp_launch_spec *spec, struct dp_err *err);

/* ---- 2. backends ------------------------------------------------------------ */

/* What dispatch() reports.  @rank is the spec rank id.  @status of exited()
 * is the exit code, or 128 + the signal number for a signal. */
struct dp_launch_events {
	void (*output)(void *arg, int rank, int stream, const char *line); /* stream 1/2 */
	void (*exited)(void *arg, int rank, int status);
	/* A rank could not be started after spawn() returned (remote backends:
	 * connect, host key or auth failure); @msg names the host and the reason. */
	void (*spawn_failed)(void *arg, int rank, int err, const char *msg);
};

/* Generic part of a backend session; each backend embeds it first. */
struct dp_launch_session {
	const struct dp_launch_backend *ops;
};

struct dp_launch_opts {
	double grace_s; /* SIGTERM -> SIGKILL wait when stopping */
	/* ssh backend; all optional, borrowed for the session's life */
	int ssh_port;		  /* 0: 22 */
	const char *ssh_user;	  /* NULL: the current user */
	const char *ssh_identity; /* private key; NULL: ~/.ssh/id_ed25519, id_ecdsa, id_rsa */
	const char *known_hosts;  /* NULL: ~/.ssh/known_hosts */
	int accept_new;		  /* add unknown host keys (a changed key is still refused) */
	int no_agent;		  /* do not try ssh-agent */
	int max_handshakes;	  /* sessions connecting/authenticating at once; 0: 32 */
	/* ssh relay tree (docs/launch.md): with more hosts than this, the
	 * controller connects to relay_width first-level hosts only, and each
	 * runs `WORKER --relay` to start its share of the rest the same way.
	 * 0: $DP_SSH_RELAY_WIDTH, else flat (one session per host). */
	int relay_width;
	const char *ssh_identity_pem; /* private key text (a relay's, from stdin); NULL: none */
	/* slurm backend; all optional, borrowed for the session's life */
	const char *srun;	    /* srun program; NULL: "srun" from PATH */
	const char *slurm_cpu_bind; /* srun --cpu-bind; NULL: not given */
	const char *slurm_gpu_bind; /* srun --gpu-bind; NULL: not given */
	int slurm_gpus_per_task;    /* > 0: srun --gpus-per-task */
};

/* The relay end of the ssh relay tree: `dpworker --relay` calls it.  Reads
 * one JSON line from @in_fd (the hosts and ranks of its subtree, the job
 * token, the ssh identity and known_hosts text: none of it on a command
 * line), starts them with the ssh backend, and writes what happens to @out
 * as lines "O RANK STREAM TEXT", "X RANK STATUS", "F RANK ERRNO MESSAGE".
 * Further input lines "TERM RANK" / "KILL RANK" (RANK -1: all) signal ranks;
 * end of input stops the subtree (SIGTERM, SIGKILL after the grace period).
 * Returns 0 when every rank is done, else an exit code (messages on @log). */
int dp_launch_relay_main(int in_fd, FILE *out, FILE *log);

struct dp_launch_backend {
	const char *name;
	/* 0 with *priority set, or -ENODEV: cannot work here.  Allocates nothing. */
	int (*probe)(int *priority);
	int (*open)(const struct dp_launch_opts *opts, struct dp_launch_session **out,
		    struct dp_err *err);
	/* Start rank @r with @env_extra ("NAME=value", NULL-terminated) added to its
	 * environment.  The job token travels there, never in argv. */
	int (*spawn)(struct dp_launch_session *s, const struct dp_launch_rank *r,
		     const char *const *env_extra, struct dp_err *err);
	/* Fill at most @max entries of @fds with what to poll; returns how many. */
	int (*pollfds)(struct dp_launch_session *s, struct pollfd *fds, int max);
	/* Handle @fds (as filled by pollfds() and returned by poll(); n may be 0 for
	 * a periodic call) and report output lines and exits through @ev. */
	int (*dispatch)(struct dp_launch_session *s, const struct pollfd *fds, int n,
			const struct dp_launch_events *ev, void *arg);
	/* Send @sig to rank @rank (-1: every rank) and everything it started. */
	int (*signal)(struct dp_launch_session *s, int rank, int sig);
	/* Ranks started and not yet reported as exited. */
	int (*running)(struct dp_launch_session *s);
	/* Kill whatever is left (SIGKILL), reap everything, free.  NULL-safe. */
	void (*close)(struct dp_launch_session *s);
};

extern const struct dp_launch_backend dp_launch_local, dp_launch_ssh, dp_launch_slurm;

/* The compiled-in backends, NULL-terminated, best first. */
extern const struct dp_launch_backend *const dp_launch_backends[];

/* Pick a backend: @want if given, else $DP_LAUNCH, else the highest probe()
 * priority.  NULL with @err set if none matches or works here. */
const struct dp_launch_backend *dp_launch_backend_pick(const char *want, struct dp_err *err);

/* ---- 3. controller ---------------------------------------------------------- */

enum dp_ctl_outcome {
	DP_CTL_OK = 0,
	DP_CTL_SPAWN_FAILED, /* a rank could not be started */
	DP_CTL_RENDEZVOUS,   /* ranks missing when rendezvous_s ran out */
	DP_CTL_RANK_EXIT,    /* a rank exited (or reported done) with a non-zero status */
	DP_CTL_RANK_SIGNAL,  /* a rank was killed by a signal */
	DP_CTL_RANK_LOST,    /* connection lost (or protocol violation) without an exit */
	DP_CTL_RANK_HANG,    /* no heartbeat progress for hang_timeout_s */
	DP_CTL_RANK_NODONE,  /* exited 0 without reporting done */

	/* a node failed the pre-flight gate; nothing started */
	DP_CTL_PREFLIGHT_FAILED,
};

#define DP_CTL_EXIT_HANG 124 /* exit code for a hang, as timeout(1) */

/* exit code when a node fails the pre-flight gate (EX_CONFIG) */
#define DP_CTL_EXIT_PREFLIGHT 78

struct dp_ctl_result;
struct dp_ctl_step;
struct dp_ctl_timeline;

/* What a training run reports, called from the controller loop (optional). */
struct dp_ctl_train_events {
	/* A rank's STEP frame (launcher/ctl_proto.h). */
	void (*step)(void *arg, int rank, const struct dp_ctl_step *s);
	/* A rank's TIMELINE frame; @host is where the rank runs (spec host). */
	void (*timeline)(void *arg, int rank, const char *host, const struct dp_ctl_timeline *t);
	/* A restart attempt @attempt (2-based) is about to start: frames of the
	 * failed attempt that no step completed will never complete.  NULL: none. */
	void (*restart)(void *arg, int attempt);
};
struct dp_preflight_plan;

/* ---- run events (progress, --json stream, events.jsonl) ----
 * Reported through dp_ctl_cfg.on_event from the controller's thread; every
 * pointer lives for the call only. */
enum dp_ctl_event_type {
	DP_CTL_EV_START,     /* an attempt starts: nranks, attempt */
	DP_CTL_EV_PREFLIGHT, /* one rank's node report judged: rank, host, ok, msg */
	DP_CTL_EV_READY,     /* rank said ready: rank, host */
	DP_CTL_EV_RUNNING,   /* every rank ready, START sent */
	DP_CTL_EV_PROGRESS,  /* the slowest rank's step advanced: step, loss, tokens_per_s */
	DP_CTL_EV_FAILURE,   /* the root cause: rank, host, msg, res */
	DP_CTL_EV_RESTART,   /* a new attempt follows: attempt, msg (the cause) */
	DP_CTL_EV_REPLACE,   /* before RESTART: host (failed node) replaced by spare, msg why */
	DP_CTL_EV_DONE,	     /* the run is over: res */
};

struct dp_ctl_event {
	enum dp_ctl_event_type type;
	double t;    /* seconds since dp_ctl_run() started */
	int attempt; /* 1-based */
	size_t nranks;
	int rank;			 /* -1 if not about one rank */
	const char *host;		 /* NULL if not about one rank */
	int ok;				 /* PREFLIGHT: passed */
	uint64_t step, total_steps;	 /* PROGRESS; total 0 if unknown */
	double loss, tokens_per_s;	 /* PROGRESS: mean loss, summed tokens/s (NaN unknown) */
	const char *msg;		 /* PREFLIGHT reason/notes, FAILURE/RESTART cause */
	const char *spare;		 /* REPLACE: the node taking over host's ranks */
	const struct dp_ctl_result *res; /* FAILURE, DONE */
};
/* ---- end of run events ---- */

struct dp_ctl_cfg {
	const char *backend;			     /* NULL: dp_launch_backend_pick(NULL) */
	const struct dp_launch_backend *backend_ops; /* tests: wins over backend */
	const struct dp_launch_opts *launch;	     /* backend options; NULL: defaults */
	const char *bind_addr;			     /* NULL: "127.0.0.1" */
	const char *connect_addr;		     /* what workers dial; NULL: bind_addr */
	int port;				     /* 0: any free port */
	double rendezvous_s;			     /* 0: 60 */
	double heartbeat_s;			     /* 0: 1; passed to workers as DP_HEARTBEAT_S */
	double hang_timeout_s;			     /* 0: 30 */
	double grace_s;				     /* SIGTERM -> SIGKILL; 0: 5 */
	double dump_wait_s;			     /* after dump-stacks, before stopping; 0: 1 */
	/* An accepted connection that has not sent a valid hello by then is
	 * closed (it holds one of the unauthenticated slots: one per rank, at
	 * least 256, at most half of RLIMIT_NOFILE).  0: 5 */
	double hello_timeout_s;
	int max_restarts; /* whole-run restarts after a failure; 0: none */
	/* Spare hosts (recipe cluster.spares), used in order: before a restart
	 * after a node failure (dp_ctl_node_failure()), the node that caused it
	 * (the failed rank's host, the host ssh could not reach, every host
	 * failing pre-flight) is swapped for the next spare, which takes all
	 * its ranks (same rank ids and local indexes, so the layout and
	 * checkpoints stay valid).  A replaced node is not used again in the
	 * run.  A job failure (a rank's own non-zero exit) swaps nothing.  A
	 * replacement gets its restart (restart_hook and the no-progress rule
	 * are not asked), unless the attempt that failed was itself one after
	 * a swap and made no progress: then the run stops ("not restarting:
	 * attempt N made no progress after replacing K nodes").  max_restarts
	 * still bounds the attempts.  Borrowed; NULL/0: none. */
	const char *const *spares;
	size_t nspares;
	/* The run's checkpoints (recipe train.checkpoint): with a directory, the
	 * ranks of a restart attempt get DP_CKPT_RESUME=1 and continue from the
	 * last complete checkpoint.  NULL: none.  Borrowed. */
	const char *ckpt_dir;
	long ckpt_every; /* steps between checkpoints; 0: only after the last */
	/* Called after a failed attempt when restarts remain: non-zero to restart.
	 * NULL: with ckpt_dir and ckpt_every, restart unless this attempt was a
	 * restart that failed before a new checkpoint (it would resume at the
	 * same step again); otherwise restart only if the attempt got further
	 * (max step) than the one before it.  So a restart loop that makes no
	 * progress stops, and says why in the cause line. */
	int (*restart_hook)(void *arg, const struct dp_ctl_result *r, int attempt);
	void *hook_arg;
	const struct dp_ctl_train_events *train; /* NULL: ignored */
	void *train_arg;
	FILE *out;	      /* rank output as "[host:rank] line"; NULL: discarded */
	const char *line_fmt; /* prefix template, "%h" host, "%r" rank; NULL: "[%h:%r] " */
	/* ---- pre-flight, events (health); line_fmt also takes {host}, {rank} ---- */
	const struct dp_preflight_plan *preflight; /* NULL or no checks: no gate */
	uint64_t total_steps;			   /* for progress events; 0 unknown */
	void (*on_event)(void *arg, const struct dp_ctl_event *ev); /* NULL: none */
	/* every rank output line as received (stream 1/2), before printing */
	void (*on_line)(void *arg, int rank, const char *host, int stream, const char *line);
	void *event_arg;
	/* Run reporting; all optional and borrowed.  With run_dir the controller
	 * appends one JSON object per line to RUN_DIR/events.jsonl (start,
	 * connected, ready, step, failure, restart, complete; docs/launch.md).
	 * notify gets start/failure/restart/complete posts, metrics the ranks'
	 * step time, tokens/s, loss and heartbeat lag; both are driven from the
	 * loop (the caller flushes and frees them after dp_ctl_run()). */
	const char *run_dir;
	const char *run_id; /* webhook/metrics run id; NULL: "run" */
	const char *recipe; /* recipe path or URL for webhook payloads; NULL: none */
	struct dp_notify *notify;
	struct dp_metrics *metrics;
};

#define DP_CTL_TAIL_LINES 5

struct dp_ctl_result {
	enum dp_ctl_outcome outcome;
	int exit_code;			   /* 0, the failing rank's code, 128+sig, 124 hang, 69 */
	int failed_rank;		   /* -1 if none */
	char failed_host[256];		   /* "" if none */
	char cause[1024];		   /* one root-cause line, "" on success */
	char tail[DP_CTL_TAIL_LINES][256]; /* last output lines of the failed rank */
	int ntail;
	int attempts;	      /* runs started (1 + restarts) */
	int refused;	      /* connections refused: bad token, bad frames, duplicates */
	uint64_t max_step;    /* highest step any rank reported (last attempt) */
	uint64_t resume_step; /* first step of the last attempt (> 0: resumed from a checkpoint) */
	double ready_s;	      /* seconds from first spawn to all ranks ready, -1 if never */
	double run_s;	      /* seconds from first spawn to the end */

	/* pre-flight failures, one line per failing node: "HOST (rank R): reason" */
#define DP_CTL_PF_LINES 16
	char pf_lines[DP_CTL_PF_LINES][384];
	int npf_lines; /* lines kept */
	int npf_bad;   /* failing nodes (may exceed npf_lines) */

	/* spare replacements, in order: "restart N: node X failed (why); replaced by spare Y" */
#define DP_CTL_REPLACED_LINES 8
	char replaced[DP_CTL_REPLACED_LINES][512];
	int nreplaced;	   /* lines kept (the first DP_CTL_REPLACED_LINES) */
	int nreplaced_all; /* replacements in all (more than nreplaced: lines were dropped) */
};

/* Run @spec to completion.  Returns 0 when the controller did its job -- the
 * run's outcome, success or not, is in *res -- or a negative errno if it could
 * not run at all (bad spec, no backend, port in use), with @err set. */
int dp_ctl_run(const struct dp_ctl_cfg *cfg, const struct dp_launch_spec *spec,
	       struct dp_ctl_result *res, struct dp_err *err);

/* Name of an outcome ("rank-exit"). */
const char *dp_ctl_outcome_name(enum dp_ctl_outcome o);

/* 1 if the root cause in @r is the node's, so that a spare should take its
 * ranks; 0 if it is the job's, which would follow the ranks to any node.
 * Node failures: a rank that could not be started (spawn-failed), did not
 * rendezvous, lost its connection (rank-lost), hung (rank-hang), or was
 * killed by a signal other than SIGABRT, SIGSEGV, SIGFPE or SIGILL
 * (rank-signal: SIGKILL from the OOM killer or a dying node, SIGBUS from a
 * memory error, ...), and a failed pre-flight gate.  Job failures: a rank
 * that exited or reported done with a non-zero code (rank-exit: a bad
 * recipe value, an error the program reported), exited 0 without done
 * (rank-no-done), or raised one of those four signals (abort, a bad
 * pointer, a division by zero, a trap: the program's own bug). */
int dp_ctl_node_failure(const struct dp_ctl_result *r);

/* The nodes a failed pre-flight gate swaps: @host[i] is the host of rank i
 * if that rank failed, NULL if it passed (i < @n).  Writes each failing
 * host once, in the order of its first failing rank, to @out (room for
 * @max; the names are @host's).  Returns how many, or -E2BIG when more
 * than @max hosts failed (fewer spares than failing nodes: no swap, a
 * partial one fails again), or -ENOMEM.  O(n log n): thousands of nodes. */
int dp_ctl_failed_nodes(const char *const *host, size_t n, const char **out, size_t max);

#endif
