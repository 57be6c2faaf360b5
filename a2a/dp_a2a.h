/* a2a/dp_a2a.h - DeepSeek-V3 / DeepEP expert-parallel all-to-all.
 *
 * Three layers:
 *
 *  1. Routing (pure): gate scores [T][E] -> group-limited top-k experts and
 *     their weights, as DeepSeek-V3 does it: experts are split into G equal
 *     groups (one group per node in DeepSeek-V3); a group's score is the sum
 *     of its `group_topk` best expert scores; the `max_groups` best groups are
 *     kept and the top-k experts are taken among the kept groups only.
 *     Ties: a higher score wins; equal scores go to the lower index (group
 *     index for groups, expert index for experts).  The weights are the
 *     chosen scores normalised to sum 1 (in k order, float), unless
 *     `normalize` is 0, in which case they are the raw scores.
 *
 *  2. Communicator (dp_a2a_comm): one rank of nodes x ranks_per_node ranks,
 *     connected by a transport chosen from a table (shm, tcp, loop, verbs,
 *     cuda).  Rank r lives on node r / ranks_per_node with local index
 *     r % ranks_per_node; the E experts are placed contiguously,
 *     E / world per rank (expert e on rank e / (E / world)).
 *
 *  3. Plan, dispatch, combine: dp_a2a_plan_build() is collective; it
 *     exchanges the per-token layouts (counts and expert lists) first so
 *     every receiver knows how many tokens arrive and sizes its buffers.
 *     Dispatch and combine are split into issue/wait halves: issue starts
 *     a communication thread that moves the data, wait joins it.  Two
 *     algorithms share the same result layout:
 *       DP_A2A_NAIVE   every token goes straight to every rank holding one
 *                      of its experts (the reference);
 *       DP_A2A_TWO_HOP a token crosses nodes at most once per target node,
 *                      to the rank with the same local index there, which
 *                      forwards it inside the node; combine sums inside the
 *                      node first, then crosses once (DeepEP).  Both hops
 *                      are pipelined: data moves in chunks of whole tokens
 *                      (cfg.chunk_bytes) and a relay forwards (dispatch) or
 *                      sends back (combine) each chunk as soon as it is
 *                      complete, while later chunks are still crossing.
 *     Received tokens on a rank are ordered by (source rank, source token);
 *     each carries its local experts in k order ("slots").  Dispatch output
 *     is bit-identical between the algorithms.  Combine sums, in this fixed
 *     order: on each target rank over its slots in k order; two-hop then over
 *     the target ranks of a node in rank order, then over nodes in node
 *     order; naive over target ranks in rank order.  The two results differ
 *     only by float rounding (see docs/a2a.md for the bound the tests use).
 *
 * Threads: a comm and its plans are used by one thread at a time, and at
 * most one issue/wait pair is in flight per comm.  Memory passed to an
 * issue call is borrowed until the matching wait returns; wait returns once
 * this rank's part is done and its outgoing data has left this process
 * (transport flush).
 */
#ifndef DP_A2A_H
#define DP_A2A_H

#include <stddef.h>
#include <stdint.h>

#include "common/dp_err.h"

/* ---- routing ------------------------------------------------------------ */

struct dp_a2a_route_cfg {
	int experts;	/* E, > 0 */
	int groups;	/* G, divides E (DeepSeek-V3: 8) */
	int max_groups; /* groups a token may use (max_nodes_per_token); clamped to G */
	int topk;	/* K experts per token, 1..DP_A2A_MAX_TOPK, <= max_groups * E / G */
	int group_topk; /* scores summed per group (DeepSeek-V3: 2); 0 means 2; clamped */
	int normalize;	/* 1: weights = scores / sum of chosen scores */
};

#define DP_A2A_MAX_TOPK 16

/* Route @ntokens tokens: @scores is [ntokens][experts].  Writes
 * idx[ntokens][topk] (expert ids, best first) and w[ntokens][topk].
 * 0, or -EINVAL for a bad cfg (then nothing is written). */
int dp_a2a_route(const struct dp_a2a_route_cfg *cfg, const float *scores, int ntokens, int32_t *idx,
		 float *w, struct dp_err *err);

/* ---- transports and communicator ---------------------------------------- */

struct dp_a2a_comm;
struct dp_a2a_loop; /* in-process fabric for the "loop" transport */

/* Control-plane all-gather used by verbs/cuda to swap connection details:
 * @mine (len bytes) from every rank lands in @all[rank * len].  0 or -errno. */
typedef int (*dp_a2a_allgather_fn)(void *ctx, const void *mine, size_t len, void *all,
				   struct dp_err *err);

struct dp_a2a_comm_cfg {
	const char *transport; /* NULL: $DP_A2A_TRANSPORT, else the best probe() */
	int rank;
	int nodes;
	int ranks_per_node;
	int experts;	/* divisible by nodes * ranks_per_node */
	int hidden;	/* floats per token */
	int timeout_ms; /* bound on every blocking wait; 0: 30000 */
	/* two-hop pipelining: payload moves in chunks of this many bytes,
	 * rounded down to whole tokens (at least one token per chunk); a relay
	 * forwards each chunk as soon as it lands.  0: $DP_A2A_CHUNK_BYTES,
	 * else 128 KiB.  SIZE_MAX: one chunk per channel (no pipelining). */
	size_t chunk_bytes;
	/* tcp: addrs[world] "host:port"; listen_fd >= 0 is an already
	 * listening socket for this rank (taken over: closed by the comm).
	 * Set listen_fd to -1 otherwise (0 is a valid descriptor). */
	const char *const *addrs;
	int listen_fd;
	/* tcp: the job token (DP_A2A_TOKEN_LEN bytes, copied at open) or NULL.
	 * Set: every connection's hello carries it, and a rank refuses a
	 * connection whose hello has another token (or none), so a stray or
	 * foreign process cannot join the job's all-to-all.  Both ends of a
	 * job must agree on having one. */
	const uint8_t *token;
	/* tcp: > 0 paces this rank's bytes to other nodes to this many Mbit/s
	 * (a token bucket, like one NIC per rank), to make the inter-node
	 * fabric the bottleneck on a single machine; 0: unpaced */
	double tcp_inter_mbps;
	/* tcp: 1: the ranks of a node talk through shm rings (segment
	 * "<shm_name>-n<node>", shm_ring_bytes each) instead of sockets, as
	 * NVLink next to IB; needs shm_name.  0: sockets for every pair */
	int tcp_local_shm;
	/* shm: segment name ("/dp-a2a-x"); every rank of the job passes the
	 * same name; rank 0 unlinks it on close.  ring_bytes per pair, 0: 1 MiB */
	const char *shm_name;
	size_t shm_ring_bytes;
	/* loop: the in-process fabric every rank thread shares */
	struct dp_a2a_loop *loop;
	/* verbs, cuda */
	dp_a2a_allgather_fn allgather;
	void *allgather_ctx;
	const char *ib_device; /* NULL: the first */
	int ib_port;	       /* 0: 1 */
	int cuda_device;       /* -1: local index */
};

#define DP_A2A_TOKEN_LEN 32 /* the control plane's job token (DP_CTL_TOKEN_LEN) */

/* Initialise @cfg with defaults (listen_fd = -1, cuda_device = -1). */
void dp_a2a_comm_cfg_init(struct dp_a2a_comm_cfg *cfg);

/* Connect this rank (collective over the job).  *out set only on success.
 * Errors: -EINVAL bad shape, -ENODEV/-ENOSYS transport unavailable,
 * -ETIMEDOUT peers did not show up, -ECONNREFUSED, -ENOMEM. */
int dp_a2a_comm_open(const struct dp_a2a_comm_cfg *cfg, struct dp_a2a_comm **out,
		     struct dp_err *err);
void dp_a2a_comm_close(struct dp_a2a_comm *c); /* flushes pending sends; NULL-safe */
const char *dp_a2a_comm_transport(const struct dp_a2a_comm *c);

/* The in-process fabric: create once for @world ranks, give it to every
 * rank thread's cfg.loop, free after all comms are closed. */
int dp_a2a_loop_new(int world, size_t ring_bytes, struct dp_a2a_loop **out, struct dp_err *err);
void dp_a2a_loop_free(struct dp_a2a_loop *l);

/* Transport names compiled in, best first, NULL-terminated (static). */
const char *const *dp_a2a_transport_names(void);
/* Probe a transport by name: 0 usable (priority in *prio), -ENODEV not on
 * this host (message says why, e.g. "no RDMA device"), -ENOSYS not built,
 * -ENOENT unknown name. */
int dp_a2a_transport_probe(const char *name, int *prio, struct dp_err *err);

/* ---- plan, dispatch, combine --------------------------------------------- */

enum dp_a2a_algo {
	DP_A2A_NAIVE = 0,
	DP_A2A_TWO_HOP = 1,
};

/* One received token on a rank. */
struct dp_a2a_recv {
	int32_t src_rank;
	int32_t src_token;
	int32_t slot;			 /* first slot of this token in combine input */
	int32_t nslots;			 /* local experts of this token (>= 1) */
	int32_t expert[DP_A2A_MAX_TOPK]; /* global expert ids, k order, nslots used */
	float weight[DP_A2A_MAX_TOPK];	 /* gate weights of those experts */
};

/* Payload bytes this rank sent, split by whether they left the node.
 * Layout (metadata) bytes are counted apart. */
struct dp_a2a_stats {
	uint64_t dispatch_inter, dispatch_intra; /* sent by this rank, incl. forwarding */
	uint64_t combine_inter, combine_intra;
	uint64_t layout_inter, layout_intra;
	uint64_t token_bytes;
};

struct dp_a2a_plan;

/* Build the plan for this rank's @ntokens tokens routed to @idx/@w
 * ([ntokens][topk], expert -1 = unused slot).  Collective: every rank calls
 * it with the same algo and topk.  Copies what it keeps. */
int dp_a2a_plan_build(struct dp_a2a_comm *c, enum dp_a2a_algo algo, int ntokens, int topk,
		      const int32_t *idx, const float *w, struct dp_a2a_plan **out,
		      struct dp_err *err);
void dp_a2a_plan_free(struct dp_a2a_plan *p); /* NULL-safe */

int dp_a2a_plan_recv_count(const struct dp_a2a_plan *p); /* tokens received */
int dp_a2a_plan_slot_count(const struct dp_a2a_plan *p); /* (token, local expert) pairs */
/* Received tokens in order; lives as long as @p. */
const struct dp_a2a_recv *dp_a2a_plan_recv(const struct dp_a2a_plan *p);
/* Byte counters of the plan's exchanges so far. */
void dp_a2a_plan_stats(const struct dp_a2a_plan *p, struct dp_a2a_stats *out);

/* Dispatch @x [ntokens][hidden] into @recv_x [recv_count][hidden].  Both
 * borrowed until dispatch_wait returns.  -EBUSY if an op is in flight. */
int dp_a2a_dispatch_issue(struct dp_a2a_plan *p, const float *x, float *recv_x, struct dp_err *err);
int dp_a2a_dispatch_wait(struct dp_a2a_plan *p, struct dp_err *err);

/* Combine expert outputs @y [slot_count][hidden] (slot = recv[i].slot + j
 * for the j-th local expert of received token i) into @out [ntokens][hidden]:
 * out[t] = sum over t's experts of weight * y, zeros for unrouted tokens. */
int dp_a2a_combine_issue(struct dp_a2a_plan *p, const float *y, float *out, struct dp_err *err);
int dp_a2a_combine_wait(struct dp_a2a_plan *p, struct dp_err *err);

/* Plain all-to-all of contiguous slices (collective over the comm, no
 * plan): @send + soff[j] (slen[j] bytes) goes to rank j, and rank j's slice
 * for this rank lands at @recv + roff[j], which must be rlen[j] bytes long.
 * For rows already packed by owner (an expert-parallel executor's).
 * @on_device: @send and @recv are CUDA device memory of the comm's GPU,
 * moved by one NCCL group on the cuda transport (-EINVAL on any other
 * transport); the lengths are not compared first, so the caller must get
 * them right (NCCL may fail or wait for ever on a mismatch).  Else host
 * memory, one frame per peer, and a wrong length is -EPROTO naming the
 * ranks.  Blocks until this rank's part is done.  -EBUSY while a
 * dispatch or combine is in flight. */
int dp_a2a_alltoallv(struct dp_a2a_comm *c, const void *send, const size_t *soff,
		     const size_t *slen, void *recv, const size_t *roff, const size_t *rlen,
		     int on_device, struct dp_err *err);
/* 1 if the comm moves CUDA device memory (the cuda transport), else 0. */
int dp_a2a_comm_on_device(const struct dp_a2a_comm *c);

/* Formula counts for @ntokens tokens of rank @rank: unique (token, node
 * other than the rank's own) pairs, and unique (token, rank on another node)
 * pairs.  Times the token size, they are the bytes two-hop and naive
 * dispatch must send across nodes. */
void dp_a2a_count_pairs(int rank, int nodes, int ranks_per_node, int experts, int ntokens, int topk,
			const int32_t *idx, uint64_t *token_remote_nodes,
			uint64_t *token_remote_ranks);

#endif
