/* launcher/dp_plan.h - the PP/EP/DP layout of a run: which node and local GPU
 * every global rank gets, its (dp, pp, ep) coordinates, the pipeline stages
 * it holds (DualPipe pairing), and how many inter-node links each PP edge and
 * each EP group uses.
 *
 * Rank order: ep is the fastest-moving coordinate, then pp, then dp:
 *     rank = (dp * PP + pp) * EP + ep,   node = rank / G,   local = rank % G
 * (G = GPUs per node).  So an EP group is a run of EP consecutive GPUs: whole
 * nodes when EP is a multiple of G (the two-hop all-to-all then finds the
 * same local index on every node of the group), or a slice of one node when
 * EP divides G, in which case consecutive PP stages share a node and their
 * edge stays on NVLink.  Any other EP is rejected.
 *
 * dp_plan_build() is pure computation: no I/O, no topology.  The recipe
 * helpers below (expert placement, worker environment, node checks) live in
 * launcher/plan_recipe.c.
 */
#ifndef DP_PLAN_H
#define DP_PLAN_H

#include <stddef.h>

#include "common/dp_err.h"

enum dp_plan_pairing {
	DP_PLAN_SINGLE = 0,   /* 1f1b, zb1p: rank r holds stage r */
	DP_PLAN_DUALPIPE = 1, /* rank r holds stages r and PP-1-r */
	DP_PLAN_DUALPIPEV = 2 /* rank r holds stages r and 2*PP-1-r */
};

struct dp_plan_cfg {
	int nodes;	   /* >= 1 */
	int gpus_per_node; /* >= 1 */
	int pp, ep, dp;	   /* >= 1 each; pp * ep * dp == nodes * gpus_per_node */
	enum dp_plan_pairing pairing;
};

struct dp_plan_rank {
	int rank;  /* global rank */
	int node;  /* node index (into the host list) */
	int local; /* GPU index on the node */
	int dp, pp, ep;
	int nstages;  /* 1 or 2 */
	int stage[2]; /* pipeline stages held; stage[0] is leg 0 (DualPipe: stage pp) */
};

struct dp_plan {
	struct dp_plan_cfg cfg;
	int nranks;
	struct dp_plan_rank *ranks; /* nranks entries, by global rank */
	int nstages;		    /* pipeline stages: PP, or 2*PP for DualPipeV */
	int *pp_edge_links;	    /* pp-1 entries: GPU pairs (r, r+1) on different nodes */
	int ep_group_nodes;	    /* nodes one EP group spans */
	int ep_group_links;	    /* inter-node rail links one EP group uses (two-hop) */
};

/* Build the layout.  0 and *out (free with dp_plan_free), or -EINVAL with
 * @err saying which rule failed (divisibility, EP not aligned to nodes,
 * DualPipe with odd PP). */
int dp_plan_build(const struct dp_plan_cfg *cfg, struct dp_plan **out, struct dp_err *err);
void dp_plan_free(struct dp_plan *p); /* NULL-safe */

struct dp_recipe;
/* The layout of a loaded recipe (hosts x cluster.gpus, parallel.*).  Errors
 * as dp_plan_build(), prefixed with the recipe's path. */
int dp_plan_from_recipe(const struct dp_recipe *r, struct dp_plan **out, struct dp_err *err);

/* The global rank at coordinates (dp, pp, ep); -1 if out of range. */
int dp_plan_rank_of(const struct dp_plan *p, int dp, int pp, int ep);

/* ---- recipe runs (launcher/plan_recipe.c) ------------------------------------
 *
 * What `dpctl plan` shows and `dpctl launch` starts come from the same
 * functions below, so the two cannot diverge. */

/* Expert placement (EPLB, a2a/dp_eplb.h) for a recipe that sets
 * model.redundant_experts or model.expert_loads.  One EP group is placed:
 * layers = layers - dense_layers (MoE layers), experts = model.experts,
 * replicas = experts + redundant_experts, groups = model.groups, nodes = the
 * nodes one EP group spans (p->ep_group_nodes), gpus = parallel.ep; EP rank e
 * hosts physical slots [e*R/EP, (e+1)*R/EP).  The policy follows EPLB
 * (hierarchical when groups % nodes == 0, else global).  Loads are the
 * recipe's expert_load matrix, or all 1 when it has none (uniform).
 * 0 with *out set (caller frees with dp_eplb_plan_free), or with *out = NULL
 * when the recipe asks for no placement; -EINVAL/-ENOMEM as
 * dp_eplb_plan_build(). */
struct dp_eplb_plan;
int dp_plan_experts(const struct dp_recipe *r, const struct dp_plan *p, struct dp_eplb_plan **out,
		    struct dp_err *err);
/* Does training place the experts by EPLB: parallel.ep > 1 and
 * redundant_experts or expert_loads set?  (With ep 1 one rank holds every
 * expert: the keys only shape `dpctl plan`'s EPLB report.) */
int dp_plan_places_experts(const struct dp_recipe *r);

/* ---- worker argv and environment -------------------------------------------
 *
 * A recipe rank runs `WORKER` with no arguments; its place in the layout and
 * the recipe's env section travel in the environment:
 *   DP_PP_RANK DP_EP_RANK DP_DP_RANK DP_STAGES DP_PP_SIZE DP_EP_SIZE DP_DP_SIZE
 *   DP_SCHEDULE DP_MICRO_BATCHES DP_STEPS DP_SEED, with train.backend cuda
 *   also DP_BACKEND=cuda DP_DEVICE (the rank's GPU index on its node; 0 under
 *   Slurm, which binds one GPU per task) DP_PP_TRANSPORT (tcp or nccl), with
 *   an EPLB placement (dp_plan_places_experts) DP_REDUNDANT_EXPERTS,
 *   DP_EP_NODES and with model.rebalance_every DP_EPLB_REBALANCE_EVERY,
 *   then DP_MODEL, with expert loads DP_EXPERT_LOADS, the
 *   checkpoint variables, then env: in file order.
 * The controller adds DP_JOB_TOKEN, DP_CONTROLLER, DP_RANK, DP_WORLD_SIZE,
 * DP_LOCAL_RANK, DP_HEARTBEAT_S and DP_RENDEZVOUS_S at spawn time
 * (launcher/controller.c). */

#define DP_PLAN_ENV_MAX 64 /* entries in one rank's environment (more are dropped) */

/* One rank's environment (caller-embedded; no release needed). */
struct dp_plan_env {
	const char *v[DP_PLAN_ENV_MAX + 1]; /* "NAME=value", NULL-terminated */
	char layout[20][48];		    /* storage for the layout entries */
	char model[384];		    /* DP_MODEL=... (worker/train_ctl.c reads it) */
	char ckpt_dir[4096 + 16];	    /* DP_CKPT_DIR=... */
	char ckpt_every[48];		    /* DP_CKPT_EVERY=... */
	char ckpt_keep[48];		    /* DP_CKPT_KEEP=... */
};

/* Sequences in one micro-batch of recipe @r: train.batch is the global
 * batch, so batch / (micro_batches * dp * ep) (every DP replica and EP rank
 * runs micro_batches micro-batches of its own); 0 for a batch smaller than
 * that product (the recipe check refuses one that does not divide). */
long dp_plan_seqs_per_micro(const struct dp_recipe *r);

/* The recipe's env section as "NAME=value" strings, NULL-terminated.
 * Caller frees with dp_plan_strv_free(); NULL and @err on ENOMEM. */
char **dp_plan_recipe_env(const struct dp_recipe *r, struct dp_err *err);
void dp_plan_strv_free(char **v); /* NULL-safe */

/* Fill @out for rank @x of recipe @r; @renv is dp_plan_recipe_env(r) (its
 * strings are borrowed: keep it alive while @out is used). */
void dp_plan_env_build(const struct dp_recipe *r, char *const *renv, const struct dp_plan_rank *x,
		       struct dp_plan_env *out);

/* The worker binary launch runs: $DPWORKER if set, else dpworker next to
 * this executable, else "dpworker" (from PATH).  May return @buf. */
const char *dp_plan_worker_path(char *buf, size_t len);

/* ---- node checks -------------------------------------------------------------*/

struct dp_topo;
/* Check that @n nodes (topologies, borrowed) are alike: the same GPU count,
 * RDMA NIC count (usable NICs) and GPU model (where both files name it),
 * since ranks are laid out by
 * local GPU index and the two-hop all-to-all needs the same index on every
 * node.  @names[i] names node i in messages.  0, or -EINVAL with @err naming
 * every node that differs from node 0 and what differs, e.g.
 *   "plan: nodes differ from 'a' (8 GPUs NVIDIA H100, 8 RDMA NICs):
 *    'b' has 4 GPUs, GPU model 'NVIDIA A100'" */
int dp_plan_nodes_check(const struct dp_topo *const *nodes, const char *const *names, int n,
			struct dp_err *err);

#endif
