/* topo/topo.c - the node object: building, merging, getters and names. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/dp_util.h"
#include "topo/topo_int.h"
#include "common/dp_banned.h"

struct dp_topo *topo_new(void)
{
	return calloc(1, sizeof(struct dp_topo));
}

void dp_topo_free(struct dp_topo *t)
{
	if (!t)
		return;
	for (int i = 0; i < t->ngpus; i++) {
		free(t->gpus[i].pub.peers);
		free(t->gpus[i].mdist);
	}
	free(t->gpus);
	free(t->nics);
	free(t->numa);
	free(t->pci);
	free(t->issues);
	free(t);
}

/* Grow an array of @elem-sized items to hold one more; 0 or -ENOMEM/-E2BIG. */
static int grow(void **arr, int *alloc, int used, size_t elem, int max)
{
	void *p;
	int n;

	if (used < *alloc && *arr)
		return 0;
	if (used >= max)
		return -E2BIG;
	n = *alloc ? *alloc * 2 : 8;
	if (n > max)
		n = max;
	p = realloc(*arr, (size_t)n * elem);
	if (!p)
		return -ENOMEM;
	memset((char *)p + (size_t)*alloc * elem, 0, (size_t)(n - *alloc) * elem);
	*arr = p;
	*alloc = n;
	return 0;
}

static int grow_err(int rc, const char *what, int max, struct dp_err *err)
{
	if (rc == -E2BIG)
		return dp_err_set(err, E2BIG, "topo: more than %d %s", max, what);
	return dp_err_set(err, ENOMEM, "topo: out of memory");
}

int topo_pci_find(const struct dp_topo *t, const char *busid)
{
	for (int i = 0; i < t->npci; i++)
		if (strcmp(t->pci[i].busid, busid) == 0)
			return i;
	return -1;
}

int topo_pci_get(struct dp_topo *t, const char *busid, int parent, int kind, struct dp_err *err)
{
	int i = busid && *busid ? topo_pci_find(t, busid) : -1;
	int rc;

	if (i >= 0) {
		if (kind != TOPO_PCI_OTHER)
			t->pci[i].kind = kind;
		return i;
	}
	rc = grow((void **)&t->pci, &t->apci, t->npci, sizeof(*t->pci), TOPO_MAX_PCI);
	if (rc)
		return grow_err(rc, "PCI devices", TOPO_MAX_PCI, err);
	i = t->npci++;
	topo_strlcpy(t->pci[i].busid, busid ? busid : "", sizeof(t->pci[i].busid));
	t->pci[i].parent = parent;
	t->pci[i].numa = -1;
	t->pci[i].kind = kind;
	return i;
}

struct topo_gpu *topo_gpu_add(struct dp_topo *t, struct dp_err *err)
{
	struct topo_gpu *g;
	int rc = grow((void **)&t->gpus, &t->agpus, t->ngpus, sizeof(*t->gpus), TOPO_MAX_GPUS);

	if (rc) {
		grow_err(rc, "GPUs", TOPO_MAX_GPUS, err);
		return NULL;
	}
	g = &t->gpus[t->ngpus];
	memset(g, 0, sizeof(*g));
	g->pub.index = t->ngpus++;
	g->pub.numa = -1;
	g->pub.nic = -1;
	g->pub.hops = -1;
	g->pub.dist = DP_TOPO_DIST_UNKNOWN;
	g->pcin = -1;
	return g;
}

struct topo_nic *topo_nic_add(struct dp_topo *t, struct dp_err *err)
{
	struct topo_nic *n;
	int rc = grow((void **)&t->nics, &t->anics, t->nnics, sizeof(*t->nics), TOPO_MAX_NICS);

	if (rc) {
		grow_err(rc, "NICs", TOPO_MAX_NICS, err);
		return NULL;
	}
	n = &t->nics[t->nnics++];
	memset(n, 0, sizeof(*n));
	n->pub.numa = -1;
	n->pub.rdma = -1;
	n->pub.port = 1;
	n->pcin = -1;
	return n;
}

struct dp_topo_numa *topo_numa_get(struct dp_topo *t, int id, struct dp_err *err)
{
	struct dp_topo_numa *m;
	int rc;

	for (int i = 0; i < t->nnuma; i++)
		if (t->numa[i].id == id)
			return &t->numa[i];
	rc = grow((void **)&t->numa, &t->anuma, t->nnuma, sizeof(*t->numa), TOPO_MAX_NUMA);
	if (rc) {
		grow_err(rc, "NUMA nodes", TOPO_MAX_NUMA, err);
		return NULL;
	}
	m = &t->numa[t->nnuma++];
	memset(m, 0, sizeof(*m));
	m->id = id;
	m->ncpus = -1;
	return m;
}

struct topo_gpu *topo_gpu_by_pci(struct dp_topo *t, const char *pci)
{
	for (int i = 0; i < t->ngpus; i++)
		if (*pci && strcmp(t->gpus[i].pub.pci, pci) == 0)
			return &t->gpus[i];
	return NULL;
}

struct topo_nic *topo_nic_by_name(struct dp_topo *t, const char *name)
{
	for (int i = 0; i < t->nnics; i++)
		if (*name && strcmp(t->nics[i].pub.name, name) == 0)
			return &t->nics[i];
	return NULL;
}

struct topo_nic *topo_nic_by_pci(struct dp_topo *t, const char *pci)
{
	for (int i = 0; i < t->nnics; i++)
		if (*pci && strcmp(t->nics[i].pub.pci, pci) == 0)
			return &t->nics[i];
	return NULL;
}

int topo_gpu_add_peer(struct topo_gpu *g, const char *target, int count, int is_switch,
		      struct dp_err *err)
{
	struct dp_topo_nvlink *p;

	for (int i = 0; i < g->pub.npeers; i++) {
		p = &g->pub.peers[i];
		if (*target && strcmp(p->target, target) == 0) {
			p->count += count;
			return 0;
		}
	}
	if (g->pub.npeers >= TOPO_MAX_PEERS)
		return dp_err_set(err, E2BIG, "topo: more than %d NVLink peers", TOPO_MAX_PEERS);
	p = realloc(g->pub.peers, (size_t)(g->pub.npeers + 1) * sizeof(*p));
	if (!p)
		return dp_err_set(err, ENOMEM, "topo: out of memory");
	g->pub.peers = p;
	p = &g->pub.peers[g->pub.npeers++];
	memset(p, 0, sizeof(*p));
	topo_strlcpy(p->target, target, sizeof(p->target));
	p->count = count;
	p->is_switch = is_switch;
	return 0;
}

int topo_gpu_set_mdist(struct topo_gpu *g, int nic, enum dp_topo_dist d, struct dp_err *err)
{
	if (nic < 0 || nic >= TOPO_MAX_NICS)
		return dp_err_set(err, E2BIG, "topo: NIC index %d out of range", nic);
	if (nic >= g->mdist_len) {
		unsigned char *m = realloc(g->mdist, (size_t)nic + 1);

		if (!m)
			return dp_err_set(err, ENOMEM, "topo: out of memory");
		memset(m + g->mdist_len, DP_TOPO_DIST_UNKNOWN, (size_t)(nic + 1 - g->mdist_len));
		g->mdist = m;
		g->mdist_len = nic + 1;
	}
	g->mdist[nic] = (unsigned char)d;
	return 0;
}

void topo_add_source(struct dp_topo *t, const char *name)
{
	size_t len = strlen(t->sources);

	if (strstr(t->sources, name))
		return;
	(void)snprintf(t->sources + len, sizeof(t->sources) - len, "%s%s", len ? "," : "", name);
}

void topo_issue(struct dp_topo *t, enum dp_topo_severity sev, const char *fmt, ...)
{
	struct dp_topo_issue *is;
	va_list ap;

	if (grow((void **)&t->issues, &t->aissues, t->nissues, sizeof(*t->issues), TOPO_MAX_ISSUES))
		return; /* issues are advisory: dropping one past the cap is fine */
	is = &t->issues[t->nissues++];
	is->severity = sev;
	va_start(ap, fmt);
	(void)vsnprintf(is->msg, sizeof(is->msg), fmt, ap);
	va_end(ap);
}

static int gpu_cmp(const void *a, const void *b)
{
	const struct topo_gpu *x = a, *y = b;
	int c = topo_pci_cmp(x->pub.pci, y->pub.pci);

	return c ? c : x->pub.index - y->pub.index;
}

static int pci_numa(const struct dp_topo *t, int n)
{
	for (int depth = 0; n >= 0 && depth < TOPO_MAX_PCI; depth++) {
		if (t->pci[n].numa >= 0)
			return t->pci[n].numa;
		n = t->pci[n].parent;
	}
	return -1;
}

int topo_finish(struct dp_topo *t, struct dp_err *err)
{
	int all_pci = 1;

	for (int i = 0; i < t->ngpus; i++)
		if (!t->gpus[i].pub.pci[0])
			all_pci = 0;
	/* GPU index = PCI bus order (NVML/nvidia-smi); keep source order otherwise */
	if (all_pci && t->ngpus > 1) {
		qsort(t->gpus, (size_t)t->ngpus, sizeof(*t->gpus), gpu_cmp);
		for (int i = 0; i < t->ngpus; i++)
			t->gpus[i].pub.index = i;
	}
	for (int i = 0; i < t->ngpus; i++) {
		struct dp_topo_gpu *g = &t->gpus[i].pub;
		int links = 0, sw = 0;

		if (g->numa < 0 && t->gpus[i].pcin >= 0)
			g->numa = pci_numa(t, t->gpus[i].pcin);
		for (int p = 0; p < g->npeers; p++) {
			links += g->peers[p].count;
			sw |= g->peers[p].is_switch;
		}
		if (g->npeers) {
			g->nvlinks = links;
			g->nvswitch = sw;
		}
	}
	for (int i = 0; i < t->nnics; i++) {
		struct dp_topo_nic *n = &t->nics[i].pub;

		if (n->numa < 0 && t->nics[i].pcin >= 0)
			n->numa = pci_numa(t, t->nics[i].pcin);
		if (topo_name_is_bond(n->name))
			n->bond = 1;
		if (n->name[0])
			topo_strlcpy(t->nics[i].label, n->name, sizeof(t->nics[i].label));
		else if (n->pci[0])
			(void)snprintf(t->nics[i].label, sizeof(t->nics[i].label), "nic@%s",
				       n->pci);
		else
			(void)snprintf(t->nics[i].label, sizeof(t->nics[i].label), "nic%d", i);
	}
	if (!t->finished) {
		t->finished = 1;
		t->nsrc_issues = t->nissues;
	}
	return topo_pair(t, err);
}

/* ---- merge ----------------------------------------------------------------- */

static void take_str(char *dst, const char *src, size_t size)
{
	if (!*dst && *src)
		topo_strlcpy(dst, src, size);
}

/* Copy the PCI ancestry of src node @n into @dst; returns the dst index. */
static int copy_pci(struct dp_topo *dst, const struct dp_topo *src, int n, int depth,
		    struct dp_err *err)
{
	int parent = -1, i;

	if (n < 0 || depth > 64)
		return -1;
	if (src->pci[n].parent >= 0) {
		parent = copy_pci(dst, src, src->pci[n].parent, depth + 1, err);
		if (parent < -1)
			return parent;
	}
	i = src->pci[n].busid[0] ? topo_pci_find(dst, src->pci[n].busid) : -1;
	if (i >= 0)
		return i;
	i = topo_pci_get(dst, src->pci[n].busid, parent, src->pci[n].kind, err);
	if (i >= 0)
		dst->pci[i].numa = src->pci[n].numa;
	return i < 0 ? i - 1 : i; /* errors are < -1 so -1 keeps meaning "none" */
}

static int merge_gpu(struct dp_topo *dst, const struct dp_topo *src, int gi, const int *nicmap,
		     struct dp_err *err)
{
	const struct topo_gpu *sg = &src->gpus[gi];
	struct topo_gpu *g = NULL;
	int rc;

	if (sg->pub.pci[0])
		g = topo_gpu_by_pci(dst, sg->pub.pci);
	if (!g && sg->pub.index < dst->ngpus &&
	    (!sg->pub.pci[0] || !dst->gpus[0].pub.pci[0] || !dst->gpus[sg->pub.index].pub.pci[0]))
		g = &dst->gpus[sg->pub.index];
	if (!g) {
		g = topo_gpu_add(dst, err);
		if (!g)
			return -ENOMEM;
	}
	take_str(g->pub.pci, sg->pub.pci, sizeof(g->pub.pci));
	take_str(g->pub.model, sg->pub.model, sizeof(g->pub.model));
	if (g->pub.numa < 0)
		g->pub.numa = sg->pub.numa;
	if (!g->pub.pci_device)
		g->pub.pci_device = sg->pub.pci_device;
	if (g->pcin < 0 && sg->pcin >= 0) {
		rc = copy_pci(dst, src, sg->pcin, 0, err);
		if (rc < -1)
			return rc + 1;
		g->pcin = rc;
	}
	if (!g->pub.npeers) {
		for (int p = 0; p < sg->pub.npeers; p++) {
			rc = topo_gpu_add_peer(g, sg->pub.peers[p].target, sg->pub.peers[p].count,
					       sg->pub.peers[p].is_switch, err);
			if (rc)
				return rc;
		}
		if (!sg->pub.npeers && sg->pub.nvlinks && !g->pub.nvlinks)
			g->pub.nvlinks = sg->pub.nvlinks;
	}
	if (!g->pub.nvlink_gbps)
		g->pub.nvlink_gbps = sg->pub.nvlink_gbps;
	for (int n = 0; n < sg->mdist_len && n < src->nnics; n++) {
		if (sg->mdist[n] == DP_TOPO_DIST_UNKNOWN)
			continue;
		if (nicmap[n] < g->mdist_len && g->mdist[nicmap[n]] != DP_TOPO_DIST_UNKNOWN)
			continue;
		rc = topo_gpu_set_mdist(g, nicmap[n], (enum dp_topo_dist)sg->mdist[n], err);
		if (rc)
			return rc;
	}
	return 0;
}

static int merge_nic(struct dp_topo *dst, const struct dp_topo *src, int ni, int *nicmap,
		     struct dp_err *err)
{
	const struct topo_nic *sn = &src->nics[ni];
	struct topo_nic *n = NULL;
	int rc;

	if (sn->pub.name[0])
		n = topo_nic_by_name(dst, sn->pub.name);
	if (!n && sn->pub.pci[0])
		n = topo_nic_by_pci(dst, sn->pub.pci);
	if (!n) {
		n = topo_nic_add(dst, err);
		if (!n)
			return -ENOMEM;
	}
	nicmap[ni] = (int)(n - dst->nics);
	take_str(n->pub.name, sn->pub.name, sizeof(n->pub.name));
	take_str(n->pub.netdev, sn->pub.netdev, sizeof(n->pub.netdev));
	take_str(n->pub.pci, sn->pub.pci, sizeof(n->pub.pci));
	take_str(n->pub.model, sn->pub.model, sizeof(n->pub.model));
	if (n->pub.numa < 0)
		n->pub.numa = sn->pub.numa;
	if (!n->pub.link_layer)
		n->pub.link_layer = sn->pub.link_layer;
	if (!n->pub.state)
		n->pub.state = sn->pub.state;
	if (!n->pub.rate_gbps)
		n->pub.rate_gbps = sn->pub.rate_gbps;
	if (n->pub.rdma < 0 || sn->pub.rdma == 1)
		n->pub.rdma = sn->pub.rdma;
	n->pub.bond |= sn->pub.bond;
	n->listed |= sn->listed;
	if (n->pcin < 0 && sn->pcin >= 0) {
		rc = copy_pci(dst, src, sn->pcin, 0, err);
		if (rc < -1)
			return rc + 1;
		n->pcin = rc;
	}
	return 0;
}

int dp_topo_merge(struct dp_topo *dst, const struct dp_topo *src, struct dp_err *err)
{
	int *nicmap = NULL;
	int rc = 0;

	if (src->nnics) {
		nicmap = calloc((size_t)src->nnics, sizeof(*nicmap));
		if (!nicmap)
			return dp_err_set(err, ENOMEM, "topo: out of memory");
	}
	for (int i = 0; i < src->nnics && !rc; i++)
		rc = merge_nic(dst, src, i, nicmap, err);
	for (int i = 0; i < src->ngpus && !rc; i++)
		rc = merge_gpu(dst, src, i, nicmap, err);
	for (int i = 0; i < src->nnuma && !rc; i++) {
		struct dp_topo_numa *m = topo_numa_get(dst, src->numa[i].id, err);

		if (!m) {
			rc = -ENOMEM;
			break;
		}
		if (!m->cpus[0]) {
			memcpy(m->cpus, src->numa[i].cpus, sizeof(m->cpus));
			m->ncpus = src->numa[i].ncpus;
		}
	}
	free(nicmap);
	if (rc)
		return rc;
	if (src->nvswitches > dst->nvswitches)
		dst->nvswitches = src->nvswitches;
	if (src->port_list && !dst->port_list) {
		dst->port_list = 1;
		topo_strlcpy(dst->port_list_src, src->port_list_src, sizeof(dst->port_list_src));
	}
	take_str(dst->hostname, src->hostname, sizeof(dst->hostname));
	{
		char list[sizeof(src->sources)];
		char *save = NULL;

		topo_strlcpy(list, src->sources, sizeof(list));
		for (char *s = strtok_r(list, ",", &save); s; s = strtok_r(NULL, ",", &save))
			topo_add_source(dst, s);
	}
	return topo_finish(dst, err);
}

/* ---- getters ------------------------------------------------------------ */

const char *dp_topo_hostname(const struct dp_topo *t)
{
	return t->hostname;
}

void dp_topo_set_hostname(struct dp_topo *t, const char *name)
{
	topo_strlcpy(t->hostname, name, sizeof(t->hostname));
}

const char *dp_topo_sources(const struct dp_topo *t)
{
	return t->sources;
}

int dp_topo_gpu_count(const struct dp_topo *t)
{
	return t->ngpus;
}

int dp_topo_nic_count(const struct dp_topo *t)
{
	return t->nnics;
}

int dp_topo_numa_count(const struct dp_topo *t)
{
	return t->nnuma;
}

int dp_topo_nvswitch_count(const struct dp_topo *t)
{
	return t->nvswitches;
}

int dp_topo_issue_count(const struct dp_topo *t)
{
	return t->nissues;
}

const struct dp_topo_gpu *dp_topo_gpu(const struct dp_topo *t, int i)
{
	return i >= 0 && i < t->ngpus ? &t->gpus[i].pub : NULL;
}

const struct dp_topo_nic *dp_topo_nic(const struct dp_topo *t, int i)
{
	return i >= 0 && i < t->nnics ? &t->nics[i].pub : NULL;
}

const struct dp_topo_numa *dp_topo_numa(const struct dp_topo *t, int i)
{
	return i >= 0 && i < t->nnuma ? &t->numa[i] : NULL;
}

const struct dp_topo_issue *dp_topo_issue(const struct dp_topo *t, int i)
{
	return i >= 0 && i < t->nissues ? &t->issues[i] : NULL;
}

int dp_topo_nic_find(const struct dp_topo *t, const char *name)
{
	for (int i = 0; i < t->nnics; i++)
		if (strcmp(t->nics[i].pub.name, name) == 0)
			return i;
	return -1;
}

const char *dp_topo_nic_label(const struct dp_topo *t, int n)
{
	return n >= 0 && n < t->nnics ? t->nics[n].label : "-";
}

const char *dp_topo_dist_name(enum dp_topo_dist d)
{
	static const char *const names[] = { "LOC", "PIX", "PXB", "PHB", "NODE", "SYS", "?" };

	return (unsigned)d < DP_ARRAY_SIZE(names) ? names[d] : "?";
}

const char *dp_topo_link_layer_name(enum dp_topo_link_layer l)
{
	return l == DP_TOPO_LL_IB ? "InfiniBand" : l == DP_TOPO_LL_ETH ? "Ethernet" : "";
}

const char *dp_topo_state_name(enum dp_topo_state s)
{
	static const char *const names[] = { "", "DOWN", "INIT", "ARMED", "ACTIVE" };

	return (unsigned)s < DP_ARRAY_SIZE(names) ? names[s] : "";
}
