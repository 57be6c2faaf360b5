/* launcher/dp_preflight.h - the pre-flight gate: checks every node passes
 * before a run may start (recipe health.preflight, docs/launch.md).
 *
 * Worker side (dpworker, worker/preflight.c): dp_preflight_gather() measures
 * the node -- topology through the topo module (the same discovery as
 * `dpworker --discover`), free disk at the checkpoint directory, the version
 * string -- into a struct dp_ctl_preflight; the control-plane client stamps
 * the clock and sends it when the controller probes (launcher/ctl_proto.h).
 *
 * Controller side (launcher/preflight.c): dp_preflight_judge() compares one
 * report with the plan (GPU/NIC counts, identical versions, free disk above
 * the threshold, clock offset bounded by the probe's round trip).  The same
 * judgement runs on topologies collected over ssh by `dpctl topo validate
 * RECIPE` (dp_preflight_summarize() turns a struct dp_topo into a report).
 *
 * Everything here is pure apart from gather() (which reads /sys and statvfs)
 * and safe to call from any thread on distinct objects.
 */
#ifndef DP_PREFLIGHT_H
#define DP_PREFLIGHT_H

#include <stddef.h>
#include <stdint.h>

#include "common/dp_err.h"
#include "launcher/ctl_proto.h"

struct dp_topo;

/* Checks, as bits.  Names (dp_preflight_parse): the recipe's own names. */
enum {
	DP_PF_GPUS = 1u << 0,	  /* "gpus": GPU count covers the ranks placed on the node */
	DP_PF_NICS = 1u << 1,	  /* "nics": usable RDMA NIC count matches cluster.nics */
	DP_PF_TOPOLOGY = 1u << 2, /* "topology": rails, ports, NVLink (topo validate) */
	DP_PF_DISK = 1u << 3,	  /* "disk": free space at the checkpoint dir */
	DP_PF_CLOCK = 1u << 4,	  /* "clock": offset to the controller's clock */
	DP_PF_VERSION = 1u << 5,  /* "version": dpworker version equals dpctl's */
};
#define DP_PF_ALL 0x3fu

#define DP_PF_DEFAULT_MIN_DISK_GB    1.0
#define DP_PF_DEFAULT_MAX_CLOCK_S    1.0
#define DP_PF_DEFAULT_CHECKPOINT_DIR "."

/* "gpus,disk,clock" -> bits.  "" and "none" are 0, "all" every check.
 * 0 or -EINVAL naming the unknown word. */
int dp_preflight_parse(const char *names, unsigned *out, struct dp_err *err);

/* Bits -> "gpus,disk" into @buf (size @len; "none" for 0).  0 or -E2BIG. */
int dp_preflight_format(unsigned checks, char *buf, size_t len);

/* The recipe's DP_RECIPE_PREFLIGHT_* bits -> DP_PF_* (ssh and ports are the
 * controller's own: they hold once every rank connected). */
unsigned dp_preflight_from_recipe(unsigned recipe_bits);

/* What the controller expects of every node. */
struct dp_preflight_plan {
	unsigned checks;	    /* DP_PF_* */
	int nics;		    /* usable RDMA NICs per node; 0: any */
	int need_gpu;		    /* a node without GPUs fails (cuda) rather than skips */
	double min_disk_gb;	    /* free GB needed at the checkpoint dir */
	double max_clock_s;	    /* |offset| allowed */
	const char *version;	    /* expected version; NULL: no check */
	const char *checkpoint_dir; /* passed to workers; NULL: "." */
};

/* Judge the report @r of a node holding @ranks ranks.  @t_sent/@t_recv are
 * the controller's CLOCK_REALTIME when it sent the probe and received the
 * report (the offset lies in [r->clock - t_recv, r->clock - t_sent]; give
 * t_sent = t_recv when unknown).  Returns 0 if the node passes, 1 if not,
 * with every failed check in @why ("2 GPUs, the plan puts 4 ranks here;
 * ...").  On a pass @why holds notes ("skipped: no GPU") or "". */
int dp_preflight_judge(const struct dp_preflight_plan *p, int ranks,
		       const struct dp_ctl_preflight *r, double t_sent, double t_recv, char *why,
		       size_t len);

/* Fill the topology part of @r (gpus, nics, topo) from @t for @checks. */
void dp_preflight_summarize(const struct dp_topo *t, unsigned checks, struct dp_ctl_preflight *r);

/* `dpctl topo validate RECIPE`: nodes collected over ssh, judged together. */
struct dp_preflight_node {
	const char *host;	    /* borrowed */
	const struct dp_topo *topo; /* NULL: not collected (see error); borrowed */
	const char *error;	    /* why topo is NULL */
	/* results */
	int ok;
	int gpus, nics; /* -1 if not collected */
	char why[512];	/* failure reasons, or notes ("skipped: no GPU") */
};

/* Judge @n nodes against @p (GPU/NIC/topology checks of p->checks; @ranks
 * ranks per node) and against each other: a node whose GPU count, GPU model
 * or usable NIC count differs from the most common one fails as
 * heterogeneous.  Fills the result fields; returns the number that failed. */
int dp_preflight_nodes_judge(const struct dp_preflight_plan *p, int ranks,
			     struct dp_preflight_node *nodes, int n);

/* Worker side: measure this node for @checks into *out (clock left 0: the
 * client stamps it when sending).  @ckpt_dir NULL: ".".  A check that cannot
 * be made is described in out->error; never fails otherwise.
 * Test knobs: $DP_TEST_VERSION replaces the version string and
 * $DP_TEST_CLOCK_SKEW_S is added to the clock by dp_preflight_stamp(). */
void dp_preflight_gather(unsigned checks, const char *ckpt_dir, struct dp_ctl_preflight *out);

/* Set r->clock to CLOCK_REALTIME now (plus the test skew). */
void dp_preflight_stamp(struct dp_ctl_preflight *r);

#endif
