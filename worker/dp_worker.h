/* worker/dp_worker.h - dpworker: one rank of a run (control-plane client and
 * executor).  The entry point is a library function so tests can drive it. */
#ifndef DP_WORKER_H
#define DP_WORKER_H

#include <stdint.h>
#include <stdio.h>

#include "common/dp_err.h"
#include "worker/dp_model.h"
#include "launcher/ctl_proto.h"

/* Run dpworker with @argc/@argv; data on @out, diagnostics on @err.
 * Returns a sysexits.h code (or the exit status a test mode asks for);
 * never exits. */
int dp_worker_main(int argc, char **argv, FILE *out, FILE *err);

/* ---- control-plane client (worker/ctl_client.c) ------------------------------
 *
 * Connects to the controller, says hello (with the job token), and runs one
 * background thread that sends a heartbeat every heartbeat_s and receives
 * controller commands.  All functions may be called from any thread.
 */
struct dp_ctl_client; /* opaque: dp_ctl_client_open() creates, _close() frees */

struct dp_ctl_client_cfg {
	const char *controller; /* "HOST:PORT"; borrowed for the call */
	uint32_t rank;
	const uint8_t *token; /* DP_CTL_TOKEN_LEN bytes; copied */
	const char *host;     /* reported in hello; NULL: gethostname() */
	const char *topo;     /* topology summary; NULL: "" */
	double heartbeat_s;   /* <= 0: 1 */
	/* How long to keep trying to connect: short non-blocking attempts
	 * with jittered pauses from 10 ms (a controller busy accepting a
	 * burst is not waited out in the kernel's SYN backoff).  dpworker
	 * takes it from $DP_RENDEZVOUS_S.  <= 0: 10 */
	double connect_timeout_s;
	/* Called from the client thread when the controller asks for stack dumps. */
	void (*on_dump_stacks)(void *arg);
	void *arg;
	/* pre-flight: the node report sent (clock stamped) when the controller
	 * probes; copied.  NULL: a probe is answered with an empty report. */
	const struct dp_ctl_preflight *preflight;
};

/* Connect and send hello.  0, or -errno (-ECONNREFUSED, -ETIMEDOUT, ...). */
int dp_ctl_client_open(const struct dp_ctl_client_cfg *cfg, struct dp_ctl_client **out,
		       struct dp_err *err);

int dp_ctl_client_ready(struct dp_ctl_client *c, struct dp_err *err);

/* Wait for START.  0 once started; -ECANCELED if the controller said stop or
 * the connection was lost; -ETIMEDOUT after @timeout_s (<= 0: forever). */
int dp_ctl_client_wait_start(struct dp_ctl_client *c, double timeout_s, struct dp_err *err);

/* Record progress for the next heartbeat. */
void dp_ctl_client_progress(struct dp_ctl_client *c, uint64_t step, double loss,
			    double tokens_per_s, uint64_t mem_bytes);

/* Send a log line (stream 1 or 2). */
int dp_ctl_client_log(struct dp_ctl_client *c, int stream, const char *line);

/* Non-zero once the controller said stop or the connection is gone. */
int dp_ctl_client_stopped(struct dp_ctl_client *c);

/* Report the exit status. */
int dp_ctl_client_done(struct dp_ctl_client *c, int status, struct dp_err *err);

/* ---- training runs (protocol v2) ----
 * A training worker sends its PP endpoint before ready, reports each step,
 * and its last step's op timeline before done. */

/* Send ENDPOINT: @addr:@port accepts this rank's PP links; @want (n ranks,
 * borrowed) are the ranks whose addresses it needs.  0 or -errno. */
int dp_ctl_client_endpoint(struct dp_ctl_client *c, const char *addr, int port,
			   const uint32_t *want, size_t n, struct dp_err *err);

/* After dp_ctl_client_wait_start(): the address the controller gave for
 * @rank (one this rank asked for).  0 with @addr (@len bytes) and *port set,
 * or -ENOENT. */
int dp_ctl_client_peer(struct dp_ctl_client *c, uint32_t rank, char *addr, size_t len, int *port);

/* Send STEP (see launcher/ctl_proto.h struct dp_ctl_step).  0 or -errno. */
struct dp_ctl_step;
int dp_ctl_client_step(struct dp_ctl_client *c, const struct dp_ctl_step *s, struct dp_err *err);

/* Send a TIMELINE frame (at most DP_CTL_TL_MAX ops; split longer steps).
 * 0 or -errno. */
struct dp_ctl_timeline;
int dp_ctl_client_timeline(struct dp_ctl_client *c, const struct dp_ctl_timeline *t,
			   struct dp_err *err);

/* The local address of the control connection: the one that reaches the
 * controller, so the one to offer peers.  0 with @addr (@len bytes), -errno. */
int dp_ctl_client_local_addr(struct dp_ctl_client *c, char *addr, size_t len);

/* Stop the thread, close the connection, free.  NULL-safe. */
void dp_ctl_client_close(struct dp_ctl_client *c);

/* ---- a training rank under the controller (worker/train_ctl.c) ----------------
 *
 * The rank of a `dpctl launch RECIPE` run: layout and model from the
 * environment (DP_PP_SIZE, DP_PP_RANK, DP_EP_SIZE, DP_DP_SIZE, DP_SCHEDULE,
 * DP_MICRO_BATCHES, DP_STEPS, DP_SEED, DP_MODEL), PP peers through the
 * controller, then the pipeline executor for DP_STEPS steps (docs/executor.md).
 * @cfg says how to reach the controller (its token is also the PP links'
 * shared secret).  Returns a sysexits.h code.
 */
int dp_worker_train_ctl(const struct dp_ctl_client_cfg *cfg, FILE *out, FILE *err);

/* Apply DP_MODEL-style "key=value,..." to @cfg (keys: layers hidden ffn
 * experts shared top_k groups topk_groups vocab seq_len seqs lr).  @cfg is
 * changed only on success; -EINVAL with @err naming the item otherwise. */
int dp_worker_model_parse(const char *spec, struct dp_model_cfg *cfg, struct dp_err *err);

#endif
