/* worker/dp_exec.h - the pipeline executor of one rank (CPU backend, PP only):
 * runs this rank's op list of a schedule from sched/ (F, B, I, W, F&B and the
 * RF/SF/RB/SB/WAIT comm tokens) on its model chunks for one training step.
 * docs/executor.md has the data flow and the correctness argument.
 *
 *   struct dp_exec_cfg cfg = { .algo = DP_SCHED_DUALPIPE, .pp = 4, .micro = 8, .rank = r };
 *   dp_model_cfg_default(&cfg.model);
 *   dp_exec_new(&cfg, links, &ex, &err);          links[peer]: borrowed, NULL = none
 *   for (k = 0; k < steps; k++) {
 *           dp_exec_step(ex, k, &loss, &err);     grads summed over DualPipe copies
 *           dp_exec_optimizer_step(ex);
 *   }
 *   dp_exec_free(ex);
 *
 * Links: one byte channel per peer rank (struct dp_pp_link, over a socket:
 * a socketpair in tests, TCP between hosts).  Every tensor travels with a
 * header (kind F/B/G, leg, micro-batch, step, size) and the receiver checks
 * it against the token it posted: a mismatch is -EPROTO, never a silent mixup.
 * Sends are asynchronous: each link has a sender thread with a FIFO, so
 * compute goes on while tensors leave.
 *
 * Threads: an executor is used by one thread (plus its own sender threads).
 */
#ifndef DP_EXEC_H
#define DP_EXEC_H

#include <stddef.h>

#include "common/dp_err.h"
#include "sched/dp_sched.h"
#include "worker/dp_model.h"

/* ---- links ----------------------------------------------------------- */

struct dp_pp_link;

/* A byte channel to one peer: send/recv move exactly @len bytes or fail. */
struct dp_pp_link_ops {
	const char *name;
	int (*send)(struct dp_pp_link *l, const void *buf, size_t len, struct dp_err *err);
	int (*recv)(struct dp_pp_link *l, void *buf, size_t len, struct dp_err *err);
	void (*close)(struct dp_pp_link *l); /* NULL-safe; frees @l */
};

struct dp_pp_link {
	const struct dp_pp_link_ops *ops;
};

/* A link over a connected stream socket @fd (socketpair or TCP); the link
 * owns @fd from now on (closed by close, also on failure).  0 or -ENOMEM. */
int dp_pp_link_fd(int fd, struct dp_pp_link **out, struct dp_err *err);
void dp_pp_link_close(struct dp_pp_link *l); /* NULL is a no-op */

/* Full mesh of @n ranks over TCP for `dpworker --train`: @hosts[i]/@ports[i]
 * is rank i's listening address; this rank (@rank) listens on its port,
 * connects to every lower rank and accepts every higher one (each connector
 * first sends its rank as 4 bytes).  @links gets n entries (links[rank] =
 * NULL); caller closes them.  Gives up after @timeout_ms: -ETIMEDOUT. */
int dp_pp_link_tcp_mesh(int n, int rank, const char *const *hosts, const int *ports, int timeout_ms,
			struct dp_pp_link **links, struct dp_err *err);

/* ---- executor -------------------------------------------------------- */

struct dp_exec_cfg {
	enum dp_sched_algo algo;
	int pp;	   /* pipeline ranks */
	int micro; /* micro-batches per step (sched meaning; = model.micro_batches) */
	int rank;  /* this rank, 0..pp-1 */
	struct dp_model_cfg model; /* micro_batches is overwritten with @micro */
};

struct dp_exec; /* opaque: dp_exec_new() creates, dp_exec_free() frees */

/* Build the schedule (with comm tokens) and this rank's chunks: DualPipe
 * stage r (leg 0) and pp-1-r (leg 1) of pp stages, two copies with the
 * same init; DualPipeV stages r and 2pp-1-r of 2pp; 1F1B/ZB1P stage r of
 * pp.  @links has pp entries (borrowed, must outlive the executor): the
 * neighbours r-1 and r+1, and for DualPipe pp-1-r (gradient exchange).
 * 0, -EINVAL (bad config, missing link) or -ENOMEM with @err. */
int dp_exec_new(const struct dp_exec_cfg *cfg, struct dp_pp_link *const *links,
		struct dp_exec **out, struct dp_err *err);
void dp_exec_free(struct dp_exec *ex); /* NULL is a no-op; joins the sender threads */

/* One step: zero the gradients, run the ops of this rank for step @step
 * (data from dp_model_batch), then for DualPipe sum each stage's gradients
 * over its two copies (leg 0 copy + leg 1 copy, exchanged with rank
 * pp-1-r) into both copies.  *loss (may be NULL) gets the sum of the loss
 * shares computed on this rank (0 if it holds no head); summing it over the
 * ranks gives the step loss.  0 or -errno with @err (-EPROTO: a peer sent
 * something else than the schedule says; -EPIPE/-ECONNRESET: link lost). */
int dp_exec_step(struct dp_exec *ex, long step, double *loss, struct dp_err *err);
/* Adam on every chunk (after dp_exec_step). */
void dp_exec_optimizer_step(struct dp_exec *ex);

/* Chunks of this rank (1 or 2), in leg order; the stage index of chunk @i
 * in the model cut used by the algorithm (pp stages, DualPipeV 2pp). */
int dp_exec_nchunks(const struct dp_exec *ex);
struct dp_model_stage *dp_exec_chunk(struct dp_exec *ex, int i, int *stage);
/* Stages of the model cut: pp, or 2pp for DualPipeV. */
int dp_exec_nstages(const struct dp_exec *ex);
/* Most activation contexts (micro-batches between F and the end of their
 * B or W) live at once on this rank during the last step. */
int dp_exec_peak_live(const struct dp_exec *ex);
/* The schedule being run (owned by @ex). */
const struct dp_sched *dp_exec_sched(const struct dp_exec *ex);

/* Timeline of the last dp_exec_step(): one entry per compute op (F, B, I,
 * W, FB) in program order, times in seconds of CLOCK_MONOTONIC; @t0 and @t1
 * (may be NULL) get the step's start and end (after the gradient sum).
 * The array lives until the next step or dp_exec_free(); *n = 0 before
 * the first step. */
struct dp_exec_op_time {
	struct dp_sched_op op;
	double start, end;
};
const struct dp_exec_op_time *dp_exec_timeline(const struct dp_exec *ex, size_t *n, double *t0,
					       double *t1);

/* ---- local run ------------------------------------------------------- */

/* `dpworker --train-local --algo A --pp N --micro M [--steps S] [--seed S]`
 * and `dpworker --train --algo A --pp N --micro M --rank R --peers h:p,...`:
 * see docs/executor.md. */
int dp_worker_cmd_train(int argc, char **argv, FILE *out, FILE *err);

#endif
