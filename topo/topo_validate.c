/* topo/topo_validate.c - checks a training run relies on: every GPU has an
 * RDMA NIC on its own PCIe switch and NUMA node (rail alignment), the rails
 * are ACTIVE and alike, NVLink is uniform, and the nodes are homogeneous so
 * that the same local GPU index exists everywhere (two-hop all-to-all). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "topo/topo_int.h"
#include "common/dp_banned.h"

#define MAX_CHECKS 4096

static int add(struct dp_topo_report *r, const char *name, const struct dp_topo *t, int node,
	       enum dp_topo_check_status st, const char *fix, const char *fmt, ...)
	__attribute__((format(printf, 7, 8)));

static int add(struct dp_topo_report *r, const char *name, const struct dp_topo *t, int node,
	       enum dp_topo_check_status st, const char *fix, const char *fmt, ...)
{
	struct dp_topo_check *c;
	va_list ap;

	if (r->nchecks >= MAX_CHECKS)
		return 0;
	/* capacity doubles at every power of two */
	if (!(r->nchecks & (r->nchecks - 1))) {
		size_t n = r->nchecks ? (size_t)r->nchecks * 2 : 1;
		struct dp_topo_check *p = realloc(r->checks, n * sizeof(*p));

		if (!p)
			return -ENOMEM;
		r->checks = p;
	}
	c = &r->checks[r->nchecks++];
	memset(c, 0, sizeof(*c));
	topo_strlcpy(c->name, name, sizeof(c->name));
	if (t && t->hostname[0])
		topo_strlcpy(c->node, t->hostname, sizeof(c->node));
	else if (node >= 0)
		(void)snprintf(c->node, sizeof(c->node), "node%d", node);
	c->status = st;
	va_start(ap, fmt);
	(void)vsnprintf(c->detail, sizeof(c->detail), fmt, ap);
	va_end(ap);
	if (st == DP_TOPO_FAIL || st == DP_TOPO_CHECK_WARN)
		topo_strlcpy(c->fix, fix, sizeof(c->fix));
	if (st == DP_TOPO_FAIL)
		r->nfail++;
	else if (st == DP_TOPO_CHECK_WARN)
		r->nwarn++;
	return 0;
}

static int usable_nics(const struct dp_topo *t)
{
	int n = 0;

	for (int i = 0; i < t->nnics; i++)
		n += t->nics[i].pub.usable;
	return n;
}

static int check_node(struct dp_topo_report *r, const struct dp_topo *t, int k)
{
	int rc = 0, bad = 0, nv_min = -1, nv_max = -1, shared = 0;
	const struct dp_topo_nic *first = NULL;

	if (!t->ngpus)
		return add(r, "gpus", t, k, DP_TOPO_FAIL,
			   "check the NVIDIA driver (nvidia-smi), or pass a file that lists GPUs",
			   "no GPU found");
	rc |= add(r, "gpus", t, k, DP_TOPO_PASS, "", "%d GPUs%s%s", t->ngpus,
		  t->gpus[0].pub.model[0] ? " " : "", t->gpus[0].pub.model);
	if (!usable_nics(t))
		return rc | add(r, "rdma-nics", t, k, DP_TOPO_FAIL,
				"install/enable the RDMA NICs (ibstat should list them ACTIVE)",
				"no usable RDMA NIC (%d NICs seen)", t->nnics);
	rc |= add(r, "rdma-nics", t, k, DP_TOPO_PASS, "", "%d usable RDMA NICs", usable_nics(t));
	for (int g = 0; g < t->ngpus; g++) {
		const struct dp_topo_gpu *gp = &t->gpus[g].pub;
		const struct dp_topo_nic *n = gp->nic >= 0 ? &t->nics[gp->nic].pub : NULL;

		if (!n) {
			rc |= add(
				r, "rail", t, k, DP_TOPO_CHECK_WARN,
				"give a source with PCI paths (nvidia-smi topo -m, NCCL XML, /sys)",
				"GPU%d: no NIC pairing (no PCIe path information)", g);
			bad++;
			continue;
		}
		if (gp->dist > DP_TOPO_DIST_PXB) {
			rc |= add(
				r, "rail", t, k,
				gp->dist == DP_TOPO_DIST_SYS ? DP_TOPO_FAIL : DP_TOPO_CHECK_WARN,
				"put an RDMA NIC on the GPU's PCIe switch, or accept cross-switch "
				"traffic (NCCL_NET_GDR_LEVEL)",
				"GPU%d: nearest RDMA NIC %s is at %s distance", g,
				t->nics[gp->nic].label, dp_topo_dist_name(gp->dist));
			bad++;
		}
		if (gp->numa >= 0 && n->numa >= 0 && gp->numa != n->numa) {
			rc |= add(r, "numa", t, k, DP_TOPO_FAIL, "use a NIC on the GPU's NUMA node",
				  "GPU%d (NUMA %d) uses %s on NUMA %d", g, gp->numa,
				  t->nics[gp->nic].label, n->numa);
			bad++;
		}
		if (n->state != DP_TOPO_STATE_ACTIVE) {
			rc |= add(r, "ports", t, k,
				  n->state == DP_TOPO_STATE_UNKNOWN ? DP_TOPO_CHECK_WARN
								    : DP_TOPO_FAIL,
				  "check the cable/switch port and the subnet manager (ibstat)",
				  "%s (rail of GPU%d) port state is %s", t->nics[gp->nic].label, g,
				  n->state ? dp_topo_state_name(n->state) : "unknown");
			bad++;
		}
		if (n->ngpus > 1 && gp->nic >= 0 && gp->near[0] == gp->nic)
			shared++;
		if (!first) {
			first = n;
		} else if ((first->rate_gbps > 0 && n->rate_gbps > 0 &&
			    first->rate_gbps != n->rate_gbps) ||
			   (first->link_layer && n->link_layer &&
			    first->link_layer != n->link_layer)) {
			rc |= add(r, "rails", t, k, DP_TOPO_FAIL,
				  "use identical NICs for every rail",
				  "GPU%d rail %s is %g Gb/s %s, GPU0's is %g Gb/s %s", g,
				  t->nics[gp->nic].label, n->rate_gbps,
				  dp_topo_link_layer_name(n->link_layer), first->rate_gbps,
				  dp_topo_link_layer_name(first->link_layer));
			bad++;
		}
		if (nv_min < 0 || gp->nvlinks < nv_min)
			nv_min = gp->nvlinks;
		if (gp->nvlinks > nv_max)
			nv_max = gp->nvlinks;
	}
	if (shared)
		rc |= add(r, "nic-shared", t, k, DP_TOPO_CHECK_WARN,
			  "expect half the per-GPU network bandwidth, or add NICs",
			  "%d GPUs share a NIC with another GPU", shared);
	if (!bad)
		rc |= add(r, "rail", t, k, DP_TOPO_PASS, "",
			  "every GPU has an ACTIVE RDMA NIC on its PCIe switch and NUMA node");
	if (nv_max <= 0)
		rc |= add(r, "nvlink", t, k, DP_TOPO_SKIP, "", "no NVLink information");
	else if (nv_min != nv_max)
		rc |= add(r, "nvlink", t, k, DP_TOPO_FAIL,
			  "check NVLink health (nvidia-smi nvlink -s) and fabric manager",
			  "NVLink counts differ between GPUs (%d..%d)", nv_min, nv_max);
	else
		rc |= add(r, "nvlink", t, k, DP_TOPO_PASS, "", "%d NVLinks per GPU%s", nv_max,
			  t->nvswitches ? " via NVSwitch" : "");
	return rc;
}

int dp_topo_validate(const struct dp_topo *const *nodes, int n, struct dp_topo_report *r,
		     struct dp_err *err)
{
	int rc = 0;

	memset(r, 0, sizeof(*r));
	for (int i = 0; i < n && !rc; i++)
		rc = check_node(r, nodes[i], i);
	if (!rc && n > 1) {
		const struct dp_topo *a = nodes[0];
		int diff = 0;

		for (int i = 1; i < n && !rc; i++) {
			const struct dp_topo *b = nodes[i];

			if (b->ngpus != a->ngpus || usable_nics(b) != usable_nics(a) ||
			    (a->ngpus && b->ngpus &&
			     strcmp(a->gpus[0].pub.model, b->gpus[0].pub.model) != 0)) {
				rc = add(r, "homogeneity", b, i, DP_TOPO_FAIL,
					 "use nodes of one type: the two-hop all-to-all needs the "
					 "same local GPU index on every node",
					 "%d GPUs (%s), %d RDMA NICs; the first node has %d GPUs "
					 "(%s), %d RDMA NICs",
					 b->ngpus, b->ngpus ? b->gpus[0].pub.model : "-",
					 usable_nics(b), a->ngpus,
					 a->ngpus ? a->gpus[0].pub.model : "-", usable_nics(a));
				diff++;
			}
		}
		if (!rc && !diff)
			rc = add(r, "homogeneity", NULL, -1, DP_TOPO_PASS, "",
				 "%d nodes alike: %d GPUs, %d RDMA NICs each", n, a->ngpus,
				 usable_nics(a));
	}
	if (rc) {
		dp_topo_report_release(r);
		return dp_err_set(err, ENOMEM, "topo: out of memory");
	}
	return 0;
}

void dp_topo_report_release(struct dp_topo_report *r)
{
	if (!r)
		return;
	free(r->checks);
	memset(r, 0, sizeof(*r));
}

const char *dp_topo_check_status_name(enum dp_topo_check_status s)
{
	static const char *const names[] = { "pass", "warn", "fail", "skip" };

	return (unsigned)s < 4 ? names[s] : "?";
}
