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
 * Pure computation: no I/O, no topology (bindings are added by the caller).
 */
#ifndef DP_PLAN_H
#define DP_PLAN_H

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

#endif
