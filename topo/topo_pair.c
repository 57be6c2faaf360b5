/* topo/topo_pair.c - PCIe distance and the GPU -> nearest RDMA NIC pairing.
 *
 * Pairing is by PCIe distance only, never by name: real machines number their
 * NICs in reverse (IBM gx3d), skip names (mlx5_2/3 absent), put storage or
 * Ethernet NICs beside GPU0 (Dell XE9680) or share one NIC between two GPUs
 * (AWS p4d).  docs/topology.md states the rule; every tie is reported. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/dp_util.h"
#include "topo/topo_int.h"
#include "common/dp_banned.h"

#define MAX_DEPTH 64
#define MAX_CAND  64

static int ancestors(const struct dp_topo *t, int n, int *chain)
{
	int len = 0;

	while (n >= 0 && len < MAX_DEPTH) {
		chain[len++] = n;
		n = t->pci[n].parent;
	}
	return len;
}

static int tree_numa(const struct dp_topo *t, const int *chain, int len)
{
	for (int i = 0; i < len; i++)
		if (t->pci[chain[i]].numa >= 0)
			return t->pci[chain[i]].numa;
	return -1;
}

enum dp_topo_dist dp_topo_distance(const struct dp_topo *t, int g, int n, int *hops)
{
	int ca[MAX_DEPTH], cb[MAX_DEPTH];
	const struct topo_gpu *gp;
	const struct topo_nic *np;
	int la, lb, na, nb;

	if (hops)
		*hops = -1;
	if (g < 0 || g >= t->ngpus || n < 0 || n >= t->nnics)
		return DP_TOPO_DIST_UNKNOWN;
	gp = &t->gpus[g];
	np = &t->nics[n];
	if (n < gp->mdist_len && gp->mdist[n] != DP_TOPO_DIST_UNKNOWN)
		return (enum dp_topo_dist)gp->mdist[n];
	if (gp->pcin < 0 || np->pcin < 0)
		return DP_TOPO_DIST_UNKNOWN;
	la = ancestors(t, gp->pcin, ca);
	lb = ancestors(t, np->pcin, cb);
	for (int a = 0; a < la; a++) {
		for (int b = 0; b < lb; b++) {
			if (ca[a] != cb[b])
				continue;
			if (hops)
				*hops = a + b;
			if (t->pci[ca[a]].kind == TOPO_PCI_HOSTBRIDGE)
				return DP_TOPO_DIST_PHB;
			/* a switch is an upstream port over downstream ports: reaching
			 * the common bridge through at most a downstream port each is
			 * one switch */
			return a <= 2 && b <= 2 ? DP_TOPO_DIST_PIX : DP_TOPO_DIST_PXB;
		}
	}
	na = gp->pub.numa >= 0 ? gp->pub.numa : tree_numa(t, ca, la);
	nb = np->pub.numa >= 0 ? np->pub.numa : tree_numa(t, cb, lb);
	if (na >= 0 && nb >= 0) {
		if (hops)
			*hops = la + lb + (na == nb ? 0 : 1);
		return na == nb ? DP_TOPO_DIST_NODE : DP_TOPO_DIST_SYS;
	}
	return DP_TOPO_DIST_UNKNOWN;
}

static int nic_order(const struct dp_topo *t, int a, int b)
{
	const struct dp_topo_nic *x = &t->nics[a].pub, *y = &t->nics[b].pub;
	int c = topo_pci_cmp(x->pci, y->pci);

	if (c)
		return c;
	/* no bus ids: natural order of names so mlx5_2 < mlx5_10 */
	c = strverscmp(x->name, y->name);
	return c ? c : a - b;
}

static void sort_nics(const struct dp_topo *t, int *v, int n)
{
	for (int i = 1; i < n; i++)
		for (int j = i; j > 0 && nic_order(t, v[j - 1], v[j]) > 0; j--) {
			int x = v[j];

			v[j] = v[j - 1];
			v[j - 1] = x;
		}
}

static void mark_usable(struct dp_topo *t)
{
	for (int i = 0; i < t->nnics; i++) {
		struct dp_topo_nic *n = &t->nics[i].pub;
		const char *l = t->nics[i].label;

		n->usable = 0;
		n->ngpus = 0;
		if (n->bond) {
			if (t->ngpus)
				topo_issue(
					t, DP_TOPO_INFO,
					"%s is a bonded device (host/storage); not used as a rail",
					l);
		} else if (n->rdma == 0) {
			if (t->ngpus)
				topo_issue(t, DP_TOPO_INFO, "%s is not an RDMA device; not used",
					   l);
		} else if (t->port_list && !t->nics[i].listed) {
			topo_issue(t, DP_TOPO_INFO,
				   "%s is not among the RDMA ports listed by %s; not used", l,
				   t->port_list_src);
		} else if (n->state != DP_TOPO_STATE_UNKNOWN && n->state != DP_TOPO_STATE_ACTIVE) {
			topo_issue(t, DP_TOPO_WARN, "%s port %d is %s; not used", l, n->port,
				   dp_topo_state_name(n->state));
		} else {
			n->usable = 1;
		}
	}
}

/* Nearest usable NICs of GPU @g into @cand (sorted); returns the count. */
static int nearest(struct dp_topo *t, int g, int *cand, enum dp_topo_dist *bd, int *bh)
{
	enum dp_topo_dist best = DP_TOPO_DIST_UNKNOWN;
	int besth = -1, nc = 0, has_ib = 0, has_eth = 0;
	double maxrate = 0;

	for (int n = 0; n < t->nnics; n++) {
		int h;
		enum dp_topo_dist d;

		if (!t->nics[n].pub.usable)
			continue;
		d = dp_topo_distance(t, g, n, &h);
		if (d == DP_TOPO_DIST_UNKNOWN)
			continue;
		if (d < best || (d == best && h >= 0 && (besth < 0 || h < besth))) {
			best = d;
			besth = h;
		}
	}
	*bd = best;
	*bh = besth;
	if (best == DP_TOPO_DIST_UNKNOWN)
		return 0;
	for (int n = 0; n < t->nnics && nc < MAX_CAND; n++) {
		int h;

		if (!t->nics[n].pub.usable || dp_topo_distance(t, g, n, &h) != best)
			continue;
		if (besth >= 0 && h >= 0 && h != besth)
			continue;
		cand[nc++] = n;
		if (t->nics[n].pub.rate_gbps > maxrate)
			maxrate = t->nics[n].pub.rate_gbps;
		has_ib |= t->nics[n].pub.link_layer == DP_TOPO_LL_IB;
		has_eth |= t->nics[n].pub.link_layer == DP_TOPO_LL_ETH;
	}
	/* an InfiniBand rail beats an Ethernet port beside the same GPU, and a
	 * faster port beats a slower one: those are storage/host NICs */
	for (int i = 0; i < nc;) {
		const struct dp_topo_nic *n = &t->nics[cand[i]].pub;
		const char *why = NULL;

		if (has_ib && n->link_layer == DP_TOPO_LL_ETH)
			why = "Ethernet NIC beside an InfiniBand rail";
		else if (maxrate > 0 && n->rate_gbps > 0 && n->rate_gbps < maxrate)
			why = "slower NIC at the same distance";
		if (why) {
			topo_issue(t, DP_TOPO_INFO, "GPU%d: %s %s (%g Gb/s) ignored", g, why,
				   t->nics[cand[i]].label, n->rate_gbps);
			memmove(&cand[i], &cand[i + 1], (size_t)(nc - i - 1) * sizeof(*cand));
			nc--;
			continue;
		}
		i++;
	}
	sort_nics(t, cand, nc);
	return nc;
}

static void name_list(const struct dp_topo *t, const int *v, int n, char *out, size_t len)
{
	size_t pos = 0;

	out[0] = '\0';
	for (int i = 0; i < n && pos < len; i++) {
		int w = snprintf(out + pos, len - pos, "%s%s", i ? ", " : "", t->nics[v[i]].label);

		if (w < 0)
			break;
		pos += (size_t)w;
	}
}

static void assign_group(struct dp_topo *t, const int *members, int k, const int *set, int m)
{
	char names[200];

	name_list(t, set, m, names, sizeof(names));
	for (int j = 0; j < k; j++) {
		struct dp_topo_gpu *g = &t->gpus[members[j]].pub;
		int lo = j * m / k, hi = (j + 1) * m / k;

		if (hi <= lo)
			hi = lo + 1;
		g->nic = set[lo];
		g->nnear = 0;
		for (int x = lo; x < hi && g->nnear < DP_TOPO_MAX_NEAR; x++)
			g->near[g->nnear++] = set[x];
		g->dist = dp_topo_distance(t, members[j], g->nic, &g->hops);
		t->nics[g->nic].pub.ngpus++;
	}
	if (k == 1 && m > 1)
		topo_issue(t, DP_TOPO_WARN, "GPU%d: %d NICs at equal distance (%s); using %s",
			   members[0], m, names, t->nics[set[0]].label);
	else if (m < k)
		topo_issue(t, DP_TOPO_WARN,
			   "%d GPUs (GPU%d..GPU%d) share %d NIC%s (%s): %d GPUs per NIC", k,
			   members[0], members[k - 1], m, m > 1 ? "s" : "", names, (k + m - 1) / m);
	else if (k > 1)
		topo_issue(
			t, DP_TOPO_INFO,
			"GPU%d..GPU%d and %d NICs (%s) are equally close: paired in PCI bus order",
			members[0], members[k - 1], m, names);
}

int topo_pair(struct dp_topo *t, struct dp_err *err)
{
	int *cand = NULL, *ncand = NULL, *members = NULL;
	enum dp_topo_dist bd;
	int bh, unpaired = 0, rc = 0;
	char *done = NULL;

	t->nissues = t->nsrc_issues;
	mark_usable(t);
	for (int g = 0; g < t->ngpus; g++) {
		t->gpus[g].pub.nic = -1;
		t->gpus[g].pub.nnear = 0;
		t->gpus[g].pub.dist = DP_TOPO_DIST_UNKNOWN;
		t->gpus[g].pub.hops = -1;
	}
	if (!t->ngpus)
		return 0;
	cand = calloc((size_t)t->ngpus * MAX_CAND, sizeof(*cand));
	ncand = calloc((size_t)t->ngpus, sizeof(*ncand));
	members = calloc((size_t)t->ngpus, sizeof(*members));
	done = calloc((size_t)t->ngpus, 1);
	if (!cand || !ncand || !members || !done) {
		rc = dp_err_set(err, ENOMEM, "topo: out of memory");
		goto out;
	}
	for (int g = 0; g < t->ngpus; g++) {
		ncand[g] = nearest(t, g, &cand[(size_t)g * MAX_CAND], &bd, &bh);
		if (!ncand[g])
			unpaired++;
	}
	/* GPUs with the same nearest set (one PCIe switch) are paired together */
	for (int g = 0; g < t->ngpus; g++) {
		int k = 0;

		if (done[g] || !ncand[g])
			continue;
		for (int h = g; h < t->ngpus; h++) {
			if (done[h] || ncand[h] != ncand[g] ||
			    memcmp(&cand[(size_t)h * MAX_CAND], &cand[(size_t)g * MAX_CAND],
				   (size_t)ncand[g] * sizeof(*cand)) != 0)
				continue;
			done[h] = 1;
			members[k++] = h;
		}
		assign_group(t, members, k, &cand[(size_t)g * MAX_CAND], ncand[g]);
	}
	for (int g = 0; g < t->ngpus; g++) {
		const struct dp_topo_gpu *gp = &t->gpus[g].pub;

		if (gp->nic >= 0 && gp->dist >= DP_TOPO_DIST_NODE)
			topo_issue(t, DP_TOPO_WARN,
				   "GPU%d: nearest RDMA NIC %s is only at %s distance (no NIC on "
				   "its PCIe switch)",
				   g, t->nics[gp->nic].label, dp_topo_dist_name(gp->dist));
	}
	if (unpaired) {
		int usable = 0;

		for (int n = 0; n < t->nnics; n++)
			usable += t->nics[n].pub.usable;
		if (usable)
			topo_issue(t, DP_TOPO_WARN,
				   "%d GPU%s not paired: no PCIe path information to the NICs",
				   unpaired, unpaired > 1 ? "s" : "");
		else
			topo_issue(t, DP_TOPO_WARN, "%d GPU%s not paired: no usable RDMA NIC",
				   unpaired, unpaired > 1 ? "s" : "");
	}
out:
	free(done);
	free(members);
	free(ncand);
	free(cand);
	return rc;
}
