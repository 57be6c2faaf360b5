/* a2a/dp_eplb.h - expert-parallel load balancing (DeepSeek EPLB), exactly.
 *
 * Given per-layer loads of E logical experts, place R physical expert slots
 * on P GPUs in N nodes so that the busiest GPU carries as little as possible.
 * This reproduces DeepSeek's public eplb.py `rebalance_experts()` bit for bit
 * under the project's tie rule (docs: ../shared/docs/EPLB.md):
 *
 *   - policy: hierarchical when groups % nodes == 0 (pack groups to nodes,
 *     replicate inside each node, pack replicas to the node's GPUs); else
 *     global, which is the same algorithm with groups = nodes = 1;
 *   - arithmetic in float32 like upstream: loads are floats, load/count is a
 *     float division, bin loads are float running sums in item order; group
 *     loads are the exact sum rounded to double, then to float;
 *   - every descending sort breaks ties by ascending item index (upstream
 *     with stable=True); argmax and argmin ties go to the lowest index.
 *
 * Layout: physical slot p lives on GPU p / (R/P); GPU g is on node g / (P/N).
 *
 *   struct dp_eplb_cfg cfg = { .layers = 61, .experts = 256, .replicas = 288,
 *                              .groups = 8, .nodes = 4, .gpus = 32 };
 *   struct dp_eplb_plan *plan;
 *   if (dp_eplb_plan_build(loads, &cfg, &plan, &err) == 0) {
 *           const int32_t *p2l = dp_eplb_plan_phy2log(plan);   // [L][R]
 *           ...
 *           dp_eplb_plan_free(plan);
 *   }
 *
 * Pure computation: no I/O, no global state; distinct plans may be built and
 * read from different threads at once.
 */
#ifndef DP_EPLB_H
#define DP_EPLB_H

#include <stdint.h>

#include "common/dp_err.h"

/* The problem shape.  All fields must be >= 1. */
struct dp_eplb_cfg {
	int layers;   /* L: MoE layers (rows of the load matrix) */
	int experts;  /* E: logical experts per layer */
	int replicas; /* R: physical expert slots per layer (>= E, multiple of gpus) */
	int groups;   /* G: expert groups; group g = experts [g*E/G, (g+1)*E/G) */
	int nodes;    /* N: nodes (NVLink domains) */
	int gpus;     /* P: GPUs in all; each node has P/N */
};

/* Non-zero if @cfg selects the hierarchical policy (groups % nodes == 0).
 * @cfg must have groups and nodes >= 1. */
int dp_eplb_cfg_hierarchical(const struct dp_eplb_cfg *cfg);

/* Check @cfg against the preconditions of the policy it selects, in
 * upstream's assert order:
 *   hierarchical: experts % groups == 0, gpus % nodes == 0,
 *                 replicas % gpus == 0, replicas >= experts;
 *   global:       replicas % gpus == 0, replicas >= experts.
 * Returns 0, or -EINVAL with @err naming the rule, e.g.
 *   "eplb: hierarchical policy needs experts % groups == 0 (experts 12, groups 5)"
 * A field < 1 gives "eplb: <field> must be at least 1 (got N)"; a shape too
 * large to allocate gives -E2BIG. */
int dp_eplb_cfg_check(const struct dp_eplb_cfg *cfg, struct dp_err *err);

/* The low-level form (EPLB.md section 8).  @weight is [L][E] row-major,
 * borrowed.  Fills caller-allocated @phy2log [L][R] (logical expert of each
 * slot), @phyrank [L][R] (its replica rank) and @logcnt [L][E] (replica
 * count of each expert).  Returns 0, -EINVAL (bad @cfg, or a NaN or infinite
 * load: "eplb: load of layer 0 expert 3 is not finite"), or -ENOMEM; the
 * outputs are unspecified on failure.  Negative loads are accepted, as
 * upstream does. */
int dp_eplb_rebalance(const float *weight, const struct dp_eplb_cfg *cfg, int32_t *phy2log,
		      int32_t *phyrank, int32_t *logcnt, struct dp_err *err);

/* A full plan: the arrays above, log2phy, and the balance figures. */
struct dp_eplb_plan; /* opaque: dp_eplb_plan_build() creates, dp_eplb_plan_free() frees */

/* Build a plan for @weight ([L][E], borrowed) and @cfg (copied).  0 with *out
 * set (caller frees with dp_eplb_plan_free), or an error as for
 * dp_eplb_rebalance(); *out is set only on success. */
int dp_eplb_plan_build(const float *weight, const struct dp_eplb_cfg *cfg,
		       struct dp_eplb_plan **out, struct dp_err *err);
void dp_eplb_plan_free(struct dp_eplb_plan *plan); /* NULL is a no-op */

/* The shape the plan was built for. */
const struct dp_eplb_cfg *dp_eplb_plan_cfg(const struct dp_eplb_plan *plan);
/* Non-zero if the hierarchical policy ran. */
int dp_eplb_plan_hierarchical(const struct dp_eplb_plan *plan);

/* Arrays owned by the plan, valid until dp_eplb_plan_free(), row-major:
 *   phy2log [L][R], phyrank [L][R], logcnt [L][E],
 *   log2phy [L][E][X] with X = dp_eplb_plan_width(): the slots of expert e
 *   by replica rank, padded with -1.  X is the maximum of logcnt over all
 *   layers and experts, as upstream. */
const int32_t *dp_eplb_plan_phy2log(const struct dp_eplb_plan *plan);
const int32_t *dp_eplb_plan_phyrank(const struct dp_eplb_plan *plan);
const int32_t *dp_eplb_plan_logcnt(const struct dp_eplb_plan *plan);
const int32_t *dp_eplb_plan_log2phy(const struct dp_eplb_plan *plan);
int dp_eplb_plan_width(const struct dp_eplb_plan *plan);

/* Balance of one layer: max GPU load / mean GPU load, computed in double
 * (EPLB.md section 5).  "after": GPU g carries w[e] / logcnt[e] for each slot
 * of expert e it holds.  "before": the no-replication baseline, expert e on
 * GPU floor(e*P/E) with its whole load.  The mean is sum(w) / P for both.
 * A layer whose total load is not positive has no ratio: NaN is returned. */
double dp_eplb_plan_balance_before(const struct dp_eplb_plan *plan, int layer);
double dp_eplb_plan_balance_after(const struct dp_eplb_plan *plan, int layer);
/* The same with nodes in place of GPUs (node n = GPUs [n*P/N, (n+1)*P/N)). */
double dp_eplb_plan_node_balance_after(const struct dp_eplb_plan *plan, int layer);

/* Over all layers that have a ratio: the maximum (the slowest layer, which
 * `dpctl eplb` reports) and the mean.  Return 0, or -ENODATA if no layer has
 * a ratio (every total load is zero); outputs written only on success.  Any
 * output pointer may be NULL. */
int dp_eplb_plan_balance_max(const struct dp_eplb_plan *plan, double *before, double *after);
int dp_eplb_plan_balance_mean(const struct dp_eplb_plan *plan, double *before, double *after);

/* Read a load matrix from the JSON file @path: {"weight": [[load, ...], ...]},
 * one row per layer, all rows the same length, every load a finite number
 * >= 0 that fits in a float (integers are converted like torch's
 * int64 -> float32, reals like double -> float32).  Other keys are ignored.
 * 0 with *weight ([L][E], caller frees), *layers and *experts set; or
 *   -ENOENT/-EACCES/...: cannot open (message names the file and errno text),
 *   -EBADMSG: not JSON (message gives jansson's line and column),
 *   -EINVAL:  wrong shape or value (message names the layer and expert).
 * Outputs are written only on success. */
int dp_eplb_loads_read(const char *path, float **weight, int *layers, int *experts,
		       struct dp_err *err);
/* The same from the JSON text @text (NUL-terminated); @name stands for
 * the file in messages (e.g. an environment variable's name). */
int dp_eplb_loads_parse(const char *text, const char *name, float **weight, int *layers,
			int *experts, struct dp_err *err);
/* The compact text {"weight":[[...],...]} of @weight ([layers][experts],
 * each load printed with %.9g, which reads back as the same float) into
 * *out (caller frees).  0 or -ENOMEM. */
int dp_eplb_loads_format(const float *weight, int layers, int experts, char **out,
			 struct dp_err *err);

#endif
