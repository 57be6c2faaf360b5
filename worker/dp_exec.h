/* worker/dp_exec.h - the pipeline executor of one rank (DP x PP x EP, model
 * chunks on the cpu, emu or cuda backend: cfg.backend): runs this rank's op
 * list of a schedule from sched/ (F, B, I, W, F&B and the RF/SF/RB/SB/WAIT
 * comm tokens) on its model chunks for one training step.
 * docs/executor.md has the data flow and the correctness argument.
 *
 * Ranks: dp x pp x ep, global rank = (dp_rank * pp + pp_rank) * ep + ep_rank
 * (launcher/dp_plan.h's order).  The ep ranks of a pipeline stage (an "EP
 * group") run the same op list on different micro-batches (data parallel
 * for attention, as DeepSeek-V3), and so do the dp replicas of the whole
 * pp x ep pipeline: micro-batch m of the schedule on EP rank j of replica d
 * is global micro-batch (d * ep + j) * micro + m of a step of micro * ep *
 * dp micro-batches; the loss is the mean over all their tokens.  The
 * routed experts of each layer are split over the group (expert e on EP rank
 * dp_model_expert_owner(), E / ep each; or with cfg.redundant /
 * cfg.expert_load, an EPLB placement of E + redundant physical slots,
 * busy experts replicated, each replica taking an even share of its
 * expert's rows; with cfg.rebalance_every re-placed every so many steps
 * from the rows the model routed); the MoE block sends each token's
 * rows to the owner of its expert and back through a2a/ (dispatch/combine),
 * on one communication thread per rank; on a device backend (emu, or cuda
 * over the cuda a2a transport, which a "tcp" ep_comm becomes) the rows stay
 * in device memory and move by dp_a2a_alltoallv (docs/executor.md, "Device
 * rows").  Gradients of everything but the
 * routed experts (with an EPLB placement: of everything) are summed over
 * the group (EP rank order) after the step,
 * then every gradient over the dp replicas (replica order).
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
 * Threads: an executor is used by one thread (plus its own sender threads
 * and, with ep > 1, its communication thread).
 */
#ifndef DP_EXEC_H
#define DP_EXEC_H

#include <stddef.h>
#include <stdint.h>

#include "a2a/dp_a2a.h"
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
/* The socket of a link made by dp_pp_link_fd(), still owned by the link
 * (to watch it, e.g. for a closed peer); -1 for another kind of link. */
int dp_pp_link_fd_of(const struct dp_pp_link *l);

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
	int pp;			   /* pipeline ranks */
	int micro;		   /* micro-batches per step and EP rank (the schedule's micro) */
	int rank;		   /* 0..dp*pp*ep-1 = (dp_rank * pp + pp_rank) * ep + ep_rank */
	struct dp_model_cfg model; /* micro_batches is overwritten with micro * ep * dp */
	/* expert parallelism; ep 0 or 1: none (every rank holds all experts) */
	int ep; /* EP ranks per stage; divides model.experts */
	/* data parallelism; dp 0 or 1: none.  dp replicas of the whole pp x ep
	 * pipeline, each on its own micro-batches, gradients summed over them */
	int dp;
	/* ep > 1: how to reach the other ranks of this rank's EP group (borrowed
	 * for dp_exec_new).  transport, nodes, ranks_per_node (nodes *
	 * ranks_per_node == ep; both 0: one node), shm_name / addrs (ep entries,
	 * the group's ranks in EP order) / listen_fd / loop, timeout_ms are used;
	 * rank, experts and hidden are set by the executor.  Initialise it with
	 * dp_a2a_comm_cfg_init(). */
	const struct dp_a2a_comm_cfg *ep_comm;
	enum dp_a2a_algo ep_algo; /* DP_A2A_NAIVE (0) or DP_A2A_TWO_HOP */
	/* ep > 1, F&B ops: the four-component overlap (the backward chunk's
	 * dispatch/combine on the communication thread while the forward chunk
	 * computes, and the other way round).  Same numbers either way. */
	int overlap;
	/* model backend: NULL or "cpu" (model_cpu.c), "emu" (device code on the
	 * host emulator) or "cuda" (GPU @device); see worker/dp_dev.h */
	const char *backend;
	int device;
	/* ep > 1: an EPLB placement of the routed experts (a2a/dp_eplb.h,
	 * docs/executor.md "Expert placement").  @redundant extra physical
	 * expert slots per MoE layer, R = experts + redundant slots in all
	 * (a multiple of ep), EP rank j holding slots [j R/ep, (j+1) R/ep);
	 * @expert_load [layers][experts] the loads EPLB balances (borrowed
	 * for dp_exec_new; NULL: uniform).  Both 0/NULL: the contiguous
	 * placement (expert e on dp_model_expert_owner()). */
	int redundant;
	const float *expert_load;
	/* with an EPLB placement: re-place the experts after every
	 * @rebalance_every completed steps (steps whose number + 1 is a
	 * multiple of it) from the rows the model routed to each (layer,
	 * logical expert) in those steps, summed over every rank that holds
	 * the layer (docs/executor.md, "Rebalancing").  0: never (the
	 * placement of dp_exec_new stays); > 0 without a placement: -EINVAL. */
	int rebalance_every;
};

struct dp_exec; /* opaque: dp_exec_new() creates, dp_exec_free() frees */

/* Build the schedule (with comm tokens) and this rank's chunks: with r the
 * pp rank, DualPipe stage r (leg 0) and pp-1-r (leg 1) of pp stages, two
 * copies with the same init; DualPipeV stages r and 2pp-1-r of 2pp;
 * 1F1B/ZB1P stage r of pp.  @links has dp*pp*ep entries, indexed by global
 * rank (borrowed, must outlive the executor): in this rank's replica the
 * neighbours r-1 and r+1 with the same ep rank, for DualPipe pp-1-r
 * (gradient exchange), and with ep > 1 every other rank of the EP group
 * (gradient all-reduce); with dp > 1 the rank with the same pp and ep rank
 * in every other replica (DP all-reduce).  With
 * ep > 1 this also opens the a2a communicator of the EP group, which is
 * collective: every rank of the group must call dp_exec_new.
 * 0, -EINVAL (bad config, missing link), -ENOMEM, or the a2a open error. */
int dp_exec_new(const struct dp_exec_cfg *cfg, struct dp_pp_link *const *links,
		struct dp_exec **out, struct dp_err *err);
void dp_exec_free(struct dp_exec *ex); /* NULL is a no-op; joins the sender threads */

/* One step: zero the gradients, run the ops of this rank for step @step
 * (data from dp_model_batch), then for DualPipe sum each stage's gradients
 * over its two copies (leg 0 copy + leg 1 copy, exchanged with rank
 * pp-1-r) into both copies, then with ep > 1 sum the gradients of every
 * tensor but the routed experts over the EP group (EP rank 0 + 1 + ..., the
 * same bits on every rank), then with dp > 1 sum every gradient over the
 * replicas (dp rank 0 + 1 + ..., the same bits on every replica, which so
 * stay bit-identical).  *loss (may be NULL) gets the sum of the loss
 * shares computed on this rank (0 if it holds no head); summing it over the
 * ranks gives the step loss.  0 or -errno with @err (-EPROTO: a peer sent
 * something else than the schedule says; -EPIPE/-ECONNRESET: link lost). */
int dp_exec_step(struct dp_exec *ex, long step, double *loss, struct dp_err *err);
/* Adam on every chunk (after dp_exec_step).  With ep > 1 and the contiguous
 * placement the routed experts this rank does not own keep zero gradients
 * (their values here are stale; their owner holds the real ones); with an
 * EPLB placement every EP rank has every expert's summed gradient, so all
 * replicas stay bit-identical. */
void dp_exec_optimizer_step(struct dp_exec *ex);

/* Coordinates of this rank: pp rank (0..pp-1), ep rank (0..ep-1), ep (>= 1). */
void dp_exec_coords(const struct dp_exec *ex, int *pp_rank, int *ep_rank, int *ep);
/* Its replica: dp rank (0..dp-1) and dp (>= 1).  Either may be NULL. */
void dp_exec_dp_coords(const struct dp_exec *ex, int *dp_rank, int *dp);
/* Does this rank hold the current values of routed expert @e: always with
 * ep 1 or an EPLB placement (every EP rank gets every expert's summed
 * gradient), else only on its owner dp_model_expert_owner(). */
int dp_exec_owns_expert(const struct dp_exec *ex, int e);
/* The EPLB placement in use: *slots gets R (physical slots per layer) and
 * the result is phy2log [layers][R] (the logical expert of each slot; owned
 * by @ex); NULL with *slots = experts for the contiguous placement. */
const int32_t *dp_exec_placement(const struct dp_exec *ex, int *slots);
/* Rows this rank ran through expert forwards since dp_exec_new, per
 * physical slot of model layer @layer (R entries into @rows; slots of other
 * EP ranks and layers outside this rank's chunks stay 0).  -EINVAL for a
 * layer out of range.  With the contiguous placement slot = expert. */
int dp_exec_slot_rows(const struct dp_exec *ex, int layer, long *rows);

/* Rebalancing (cfg.rebalance_every > 0): what the latest re-placement did,
 * and the state a checkpoint keeps.  busiest_before/after: the most rows
 * the window's loads put on one EP rank in one layer of this rank's chunks
 * (each expert's rows split evenly over its replicas, as the routing does)
 * with the old and the new placement. */
struct dp_exec_rebalance {
	long count;  /* re-placements since dp_exec_new (or the restored state) */
	long step;   /* the first step the latest one applies to; -1: none yet */
	long window; /* steps whose loads the latest one used */
	long busiest_before, busiest_after;
	long window_steps; /* steps counted in the current (partial) window */
	/* [layers][experts], owned by the executor, valid until its next
	 * step or restore: the loads that built the current placement (this
	 * rank's layers: routed rows; the others: the loads of dp_exec_new),
	 * and the rows routed in the current window, summed over the ranks
	 * holding each layer (0 for layers this rank does not hold) */
	const float *load;
	const int64_t *rows;
};
/* 0, or -EINVAL (with @err) when the executor does not rebalance. */
int dp_exec_rebalance_info(const struct dp_exec *ex, struct dp_exec_rebalance *out,
			   struct dp_err *err);
/* After dp_exec_step(@step): 1 with the log line "step S+1: EPLB
 * re-placed from the last N steps' loads; busiest rank-layer B -> A rows"
 * in @buf (@size bytes, truncated to fit) if that step ended with a
 * re-placement, else 0. */
int dp_exec_rebalance_note(const struct dp_exec *ex, long step, char *buf, size_t size);
/* Resume: make @load ([layers][experts], finite) the loads of the current
 * placement (rebuilt from them, as the run that saved them did), @rows the
 * current window's counts, @window_steps its steps and @count the
 * re-placements so far.  Call between steps, on every rank, with what
 * dp_exec_rebalance_info() gave that rank's counterpart.  0, -EINVAL (not
 * rebalancing, bad values) or an EPLB error; on failure the placement is
 * unchanged. */
int dp_exec_rebalance_restore(struct dp_exec *ex, const float *load, const int64_t *rows,
			      long window_steps, long count, struct dp_err *err);

/* Wall time spent in compute ops since dp_exec_new: F, full B, I, W and
 * F&B (count and seconds each), for the overlap benchmark; and how many
 * compute steps ran while the other task's EP exchange was in flight
 * (0 without overlap). */
struct dp_exec_times {
	long n_f, n_b, n_i, n_w, n_fb;
	double f, b, i, w, fb;
	long n_overlapped;
	/* EP exchanges whose rows stayed in device memory (a device backend:
	 * emu, or cuda over the cuda transport) */
	long n_dev_exchanges;
	/* rows this rank ran through routed expert forwards (ep > 1) */
	long n_expert_rows;
};
void dp_exec_times(const struct dp_exec *ex, struct dp_exec_times *out);

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
