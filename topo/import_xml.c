/* topo/import_xml.c - importers for NCCL topology XML (NCCL_TOPO_FILE /
 * NCCL_TOPO_DUMP_FILE) and hwloc 2.x XML, both read with libxml2.
 *
 * NCCL publishes no schema; the element and attribute meanings follow its
 * src/graph/xml.cc and topo.cc (docs/topology.md lists what we read).  The
 * parser never loads DTDs or the network and does not expand entities. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

#include "common/dp_util.h"
#include "topo/topo_int.h"
#include "common/dp_banned.h"

struct xctx {
	struct dp_topo *t;
	const char *path;
	struct dp_err *err;
};

static const char *attr(xmlNode *n, const char *name)
{
	/* xmlHasProp returns the attribute node, whose text child holds the value
	 * and stays owned by the document: no copy to free */
	xmlAttr *a = xmlHasProp(n, (const xmlChar *)name);

	if (!a || !a->children || a->children->type != XML_TEXT_NODE)
		return a ? "" : NULL;
	return (const char *)a->children->content;
}

static int is_elem(xmlNode *n, const char *name)
{
	return n->type == XML_ELEMENT_NODE && strcmp((const char *)n->name, name) == 0;
}

static int attr_long(struct xctx *x, xmlNode *n, const char *name, long lo, long hi, long *out)
{
	const char *v = attr(n, name);
	char *end;
	long l;

	if (!v)
		return 1; /* absent */
	errno = 0;
	l = strtol(v, &end, 0);
	if (end == v || *end || errno || l < lo || l > hi)
		return topo_parse_err(x->err, x->path, xmlGetLineNo(n), "<%s>: bad %s \"%s\"",
				      (const char *)n->name, name, v);
	*out = l;
	return 0;
}

static int attr_hex(struct xctx *x, xmlNode *n, const char *name, unsigned long *out)
{
	const char *v = attr(n, name);

	if (!v)
		return 1;
	if (topo_parse_hex(v, out))
		return topo_parse_err(x->err, x->path, xmlGetLineNo(n), "<%s>: bad %s \"%s\"",
				      (const char *)n->name, name, v);
	return 0;
}

static int attr_pci(struct xctx *x, xmlNode *n, const char *name, char out[DP_TOPO_PCI_LEN])
{
	const char *v = attr(n, name);

	if (!v)
		return topo_parse_err(x->err, x->path, xmlGetLineNo(n),
				      "<%s>: missing attribute %s", (const char *)n->name, name);
	if (topo_pci_norm(v, out))
		return topo_parse_err(x->err, x->path, xmlGetLineNo(n),
				      "<%s>: bad PCI bus id \"%s\"", (const char *)n->name, v);
	return 0;
}

/* ---- NCCL ---------------------------------------------------------------- */

static int nccl_gpu(struct xctx *x, xmlNode *pci, int pcin, const char *busid, unsigned long dev)
{
	struct topo_gpu *g = topo_gpu_add(x->t, x->err);
	const char *m;
	int rc;

	if (!g)
		return -ENOMEM;
	topo_strlcpy(g->pub.pci, busid, sizeof(g->pub.pci));
	g->pcin = pcin;
	g->pub.pci_device = (unsigned int)dev;
	m = topo_gpu_model(dev);
	if (m)
		topo_strlcpy(g->pub.model, m, sizeof(g->pub.model));
	for (xmlNode *c = pci->children; c; c = c->next) {
		if (!is_elem(c, "gpu"))
			continue;
		if (!g->pub.model[0] && attr(c, "sm"))
			(void)snprintf(g->pub.model, sizeof(g->pub.model), "sm%s", attr(c, "sm"));
		for (xmlNode *l = c->children; l; l = l->next) {
			char target[DP_TOPO_PCI_LEN];
			unsigned long tclass = 0;
			long count = 1;

			if (!is_elem(l, "nvlink"))
				continue;
			rc = attr_pci(x, l, "target", target);
			if (!rc)
				rc = attr_long(x, l, "count", 0, 1024, &count) < 0 ? -EBADMSG : 0;
			if (!rc)
				rc = attr_hex(x, l, "tclass", &tclass) < 0 ? -EBADMSG : 0;
			if (rc)
				return rc;
			/* NVML's "not visible in this VM" sentinel also means an NVSwitch */
			rc = topo_gpu_add_peer(
				g, target, (int)count,
				tclass == 0x068000 || strcmp(target, "ffff:ff:ff.0") == 0, x->err);
			if (rc)
				return rc;
		}
	}
	return 0;
}

static int nccl_nic(struct xctx *x, xmlNode *pci, int pcin, const char *busid, unsigned long cls,
		    unsigned long vendor, unsigned long dev)
{
	char model[DP_TOPO_NAME_LEN] = "";

	enum dp_topo_link_layer ll = DP_TOPO_LL_UNKNOWN;
	int nets = 0;

	if ((cls >> 8) == 0x0207)
		ll = DP_TOPO_LL_IB;
	else if ((cls >> 8) == 0x0200 && vendor == 0x15b3)
		ll = DP_TOPO_LL_ETH; /* a Mellanox/NVIDIA port in Ethernet mode: RoCE */
	if (vendor == 0x1d0f)
		topo_strlcpy(model, "EFA", sizeof(model));
	else if (vendor && dev)
		(void)snprintf(model, sizeof(model), "%04lx:%04lx", vendor & 0xffff, dev & 0xffff);
	for (xmlNode *c = pci->children; c; c = c->next) {
		if (!is_elem(c, "nic"))
			continue;
		for (xmlNode *net = c->children; net; net = net->next) {
			struct topo_nic *n;
			long speed = 0, port = 1;

			if (!is_elem(net, "net"))
				continue;
			if (attr_long(x, net, "speed", 0, 100000000, &speed) < 0 ||
			    attr_long(x, net, "port", 0, 255, &port) < 0)
				return -EBADMSG;
			n = topo_nic_add(x->t, x->err);
			if (!n)
				return -ENOMEM;
			topo_strlcpy(n->pub.name, attr(net, "name"), sizeof(n->pub.name));
			topo_strlcpy(n->pub.pci, busid, sizeof(n->pub.pci));
			n->pcin = pcin;
			n->pub.rate_gbps = (double)speed / 1000.0;
			n->pub.port = (int)port;
			n->pub.link_layer = ll;
			n->pub.rdma = 1;
			topo_strlcpy(n->pub.model, model, sizeof(n->pub.model));
			nets++;
		}
	}
	if (!nets) {
		struct topo_nic *n = topo_nic_add(x->t, x->err);

		if (!n)
			return -ENOMEM;
		topo_strlcpy(n->pub.pci, busid, sizeof(n->pub.pci));
		n->pcin = pcin;
		n->pub.link_layer = ll;
		n->pub.rdma = 1; /* NCCL topology files list the network devices NCCL uses */
		topo_strlcpy(n->pub.model, model, sizeof(n->pub.model));
	}
	return 0;
}

static int has_child(xmlNode *n, const char *name)
{
	for (xmlNode *c = n->children; c; c = c->next)
		if (is_elem(c, name))
			return 1;
	return 0;
}

static int nccl_kind(xmlNode *pci, int has_cls, unsigned long cls)
{
	if (has_cls != 0) {
		/* no class: what the element holds (aws p5: class-less leaves are
		 * the EFA NICs) */
		if (has_child(pci, "gpu"))
			return TOPO_PCI_GPU;
		return has_child(pci, "nic") || !has_child(pci, "pci") ? TOPO_PCI_NIC
								       : TOPO_PCI_BRIDGE;
	}
	if ((cls >> 16) == 0x03)
		return TOPO_PCI_GPU;
	if (cls == 0x068000)
		return TOPO_PCI_NVSWITCH;
	if ((cls >> 16) == 0x02)
		return TOPO_PCI_NIC;
	return TOPO_PCI_BRIDGE;
}

static int nccl_pci(struct xctx *x, xmlNode *pci, int parent, int numa, int depth)
{
	char busid[DP_TOPO_PCI_LEN];
	unsigned long cls = 0, vendor = 0, dev = 0;
	int has_cls, kind, pcin, rc;

	if (depth > 64)
		return topo_parse_err(x->err, x->path, xmlGetLineNo(pci), "PCI tree too deep");
	rc = attr_pci(x, pci, "busid", busid);
	if (rc)
		return rc;
	has_cls = attr_hex(x, pci, "class", &cls);
	if (has_cls < 0 || attr_hex(x, pci, "vendor", &vendor) < 0 ||
	    attr_hex(x, pci, "device", &dev) < 0)
		return -EBADMSG;
	kind = nccl_kind(pci, has_cls, cls);
	if (topo_pci_find(x->t, busid) >= 0)
		return topo_parse_err(x->err, x->path, xmlGetLineNo(pci),
				      "<pci>: duplicate bus id %s", busid);
	pcin = topo_pci_get(x->t, busid, parent, kind, x->err);
	if (pcin < 0)
		return pcin;
	x->t->pci[pcin].numa = parent < 0 ? numa : -1;
	if (kind == TOPO_PCI_GPU)
		rc = nccl_gpu(x, pci, pcin, busid, dev);
	else if (kind == TOPO_PCI_NIC)
		rc = nccl_nic(x, pci, pcin, busid, has_cls ? 0 : cls, vendor, dev);
	else if (kind == TOPO_PCI_NVSWITCH)
		x->t->nvswitches++;
	if (rc)
		return rc;
	for (xmlNode *c = pci->children; c; c = c->next) {
		if (!is_elem(c, "pci"))
			continue;
		rc = nccl_pci(x, c, pcin, numa, depth + 1);
		if (rc)
			return rc;
	}
	return 0;
}

static int nccl_cpu(struct xctx *x, xmlNode *cpu)
{
	const char *aff = attr(cpu, "affinity");
	long numa = -1;
	int rc;

	if (attr_long(x, cpu, "numaid", -1, TOPO_MAX_NUMA - 1, &numa) < 0)
		return -EBADMSG;
	if (numa >= 0) {
		struct dp_topo_numa *m = topo_numa_get(x->t, (int)numa, x->err);

		if (!m)
			return -ENOMEM;
		if (aff && topo_cpumask_to_list(aff, m->cpus, sizeof(m->cpus), &m->ncpus))
			return topo_parse_err(x->err, x->path, xmlGetLineNo(cpu),
					      "<cpu>: bad affinity mask \"%s\"", aff);
	}
	for (xmlNode *c = cpu->children; c; c = c->next) {
		if (!is_elem(c, "pci"))
			continue;
		rc = nccl_pci(x, c, -1, (int)numa, 0);
		if (rc)
			return rc;
	}
	return 0;
}

/* Distinct NVSwitches the GPUs link to (the XML has no NVSwitch <pci>). */
static void count_switch_targets(struct dp_topo *t)
{
	char seen[64][DP_TOPO_PCI_LEN];
	int n = 0;

	for (int g = 0; g < t->ngpus; g++) {
		for (int p = 0; p < t->gpus[g].pub.npeers; p++) {
			const struct dp_topo_nvlink *l = &t->gpus[g].pub.peers[p];
			int dup = 0;

			if (!l->is_switch || strcmp(l->target, "ffff:ff:ff.0") == 0)
				continue;
			for (int i = 0; i < n; i++)
				dup |= strcmp(seen[i], l->target) == 0;
			if (!dup && n < 64)
				topo_strlcpy(seen[n++], l->target, DP_TOPO_PCI_LEN);
		}
	}
	if (n > t->nvswitches)
		t->nvswitches = n;
}

static int load_nccl(struct xctx *x, xmlNode *root)
{
	int rc;

	if (!is_elem(root, "system"))
		return topo_parse_err(x->err, x->path, xmlGetLineNo(root),
				      "expected <system> as the root element, found <%s>",
				      (const char *)root->name);
	for (xmlNode *c = root->children; c; c = c->next) {
		if (!is_elem(c, "cpu"))
			continue;
		rc = nccl_cpu(x, c);
		if (rc)
			return rc;
	}
	count_switch_targets(x->t);
	return 0;
}

/* ---- hwloc --------------------------------------------------------------- */

struct gpmap {
	char key[32];		     /* "OSDev:802", "PCIDev:449" */
	char busid[DP_TOPO_PCI_LEN]; /* PCI device it belongs to */
	int is_switch;
};

struct hctx {
	struct xctx x;
	struct gpmap *map;
	int nmap, amap;
};

static int map_add(struct hctx *h, const char *type, const char *gp, const char *busid, int sw)
{
	struct gpmap *m;

	if (!gp || !*busid)
		return 0;
	if (h->nmap == h->amap) {
		int n = h->amap ? h->amap * 2 : 32;

		if (n > TOPO_MAX_PCI)
			return dp_err_set(h->x.err, E2BIG, "topo: too many hwloc objects");
		m = realloc(h->map, (size_t)n * sizeof(*m));
		if (!m)
			return dp_err_set(h->x.err, ENOMEM, "topo: out of memory");
		h->map = m;
		h->amap = n;
	}
	m = &h->map[h->nmap++];
	(void)snprintf(m->key, sizeof(m->key), "%s:%s", type, gp);
	topo_strlcpy(m->busid, busid, sizeof(m->busid));
	m->is_switch = sw;
	return 0;
}

static const struct gpmap *map_find(const struct hctx *h, const char *key)
{
	for (int i = 0; i < h->nmap; i++)
		if (strcmp(h->map[i].key, key) == 0)
			return &h->map[i];
	return NULL;
}

/* The one NUMA node of a nodeset "0x00000002", else -1. */
static int nodeset_single(const char *ns)
{
	char list[64];
	int n = 0;

	if (!ns || topo_cpumask_to_list(ns, list, sizeof(list), &n) || n != 1)
		return -1;
	return (int)strtol(list, NULL, 10);
}

static const char *info(xmlNode *obj, const char *name)
{
	for (xmlNode *c = obj->children; c; c = c->next) {
		const char *n;

		if (!is_elem(c, "info"))
			continue;
		n = attr(c, "name");
		if (n && strcmp(n, name) == 0)
			return attr(c, "value");
	}
	return NULL;
}

static int hwloc_pcidev(struct hctx *h, xmlNode *obj, int parent, int numa)
{
	const char *type = attr(obj, "pci_type"), *sub = attr(obj, "subtype");
	char busid[DP_TOPO_PCI_LEN];
	unsigned int cls = 0, vendor = 0, dev = 0;
	int kind = TOPO_PCI_OTHER, pcin, rc;

	rc = attr_pci(&h->x, obj, "pci_busid", busid);
	if (rc)
		return rc;
	if (type && (topo_hex4(type, &cls) || strncmp(type + 4, " [", 2) != 0 ||
		     topo_hex4(type + 6, &vendor) || type[10] != ':' || topo_hex4(type + 11, &dev)))
		return topo_parse_err(h->x.err, h->x.path, xmlGetLineNo(obj),
				      "<object type=\"PCIDev\">: bad pci_type \"%s\"", type);
	if ((sub && strcmp(sub, "NVSwitch") == 0) || (cls == 0x0680 && vendor == 0x10de))
		kind = TOPO_PCI_NVSWITCH;
	else if ((cls >> 8) == 0x03 && vendor == 0x10de)
		kind = TOPO_PCI_GPU;
	else if ((cls >> 8) == 0x02)
		kind = TOPO_PCI_NIC;
	pcin = topo_pci_get(h->x.t, busid, parent, kind, h->x.err);
	if (pcin < 0)
		return pcin;
	h->x.t->pci[pcin].numa = numa;
	rc = map_add(h, "PCIDev", attr(obj, "gp_index"), busid, kind == TOPO_PCI_NVSWITCH);
	if (rc)
		return rc;
	if (kind == TOPO_PCI_NVSWITCH) {
		h->x.t->nvswitches++;
	} else if (kind == TOPO_PCI_GPU) {
		struct topo_gpu *g = topo_gpu_add(h->x.t, h->x.err);

		if (!g)
			return -ENOMEM;
		topo_strlcpy(g->pub.pci, busid, sizeof(g->pub.pci));
		g->pcin = pcin;
		g->pub.numa = numa;
		g->pub.pci_device = dev;
		for (xmlNode *c = obj->children; c; c = c->next) {
			const char *m;

			if (!is_elem(c, "object"))
				continue;
			m = info(c, "GPUModel");
			if (m && !g->pub.model[0])
				topo_strlcpy(g->pub.model, m, sizeof(g->pub.model));
			rc = map_add(h, "OSDev", attr(c, "gp_index"), busid, 0);
			if (rc)
				return rc;
		}
	} else if (kind == TOPO_PCI_NIC) {
		struct topo_nic *n = topo_nic_add(h->x.t, h->x.err);

		if (!n)
			return -ENOMEM;
		topo_strlcpy(n->pub.pci, busid, sizeof(n->pub.pci));
		n->pcin = pcin;
		n->pub.numa = numa;
		n->pub.link_layer = (cls == 0x0207) ? DP_TOPO_LL_IB : DP_TOPO_LL_UNKNOWN;
		for (xmlNode *c = obj->children; c; c = c->next) {
			const char *os = is_elem(c, "object") ? attr(c, "osdev_type") : NULL;
			const char *name = os ? attr(c, "name") : NULL;

			if (!name)
				continue;
			if (strcmp(os, "3") == 0) { /* OpenFabrics */
				const char *st = info(c, "Port1State");

				topo_strlcpy(n->pub.name, name, sizeof(n->pub.name));
				n->pub.rdma = 1;
				if (st)
					n->pub.state = topo_parse_state(st);
			} else if (strcmp(os, "2") == 0) { /* network */
				topo_strlcpy(n->pub.netdev, name, sizeof(n->pub.netdev));
			}
		}
		if (n->pub.rdma < 0 && n->pub.netdev[0])
			n->pub.rdma = 0;
	}
	return 0;
}

static int hwloc_obj(struct hctx *h, xmlNode *obj, int parent, int numa, int depth)
{
	const char *type = attr(obj, "type");
	int pcin = parent, rc = 0;

	if (depth > 256)
		return topo_parse_err(h->x.err, h->x.path, xmlGetLineNo(obj),
				      "object tree too deep");
	if (!type)
		return topo_parse_err(h->x.err, h->x.path, xmlGetLineNo(obj),
				      "<object> without type");
	if (attr(obj, "nodeset") && nodeset_single(attr(obj, "nodeset")) >= 0)
		numa = nodeset_single(attr(obj, "nodeset"));
	if (strcmp(type, "NUMANode") == 0) {
		long id = -1;
		struct dp_topo_numa *m;
		const char *cs = attr(obj, "cpuset");

		if (attr_long(&h->x, obj, "os_index", 0, TOPO_MAX_NUMA - 1, &id))
			return topo_parse_err(h->x.err, h->x.path, xmlGetLineNo(obj),
					      "NUMANode without a valid os_index");
		m = topo_numa_get(h->x.t, (int)id, h->x.err);
		if (!m)
			return -ENOMEM;
		if (cs && topo_cpumask_to_list(cs, m->cpus, sizeof(m->cpus), &m->ncpus))
			return topo_parse_err(h->x.err, h->x.path, xmlGetLineNo(obj),
					      "bad cpuset \"%s\"", cs);
	} else if (strcmp(type, "Bridge") == 0) {
		const char *b = attr(obj, "pci_busid");
		char busid[DP_TOPO_PCI_LEN] = "";

		if (b && topo_pci_norm(b, busid))
			return topo_parse_err(h->x.err, h->x.path, xmlGetLineNo(obj),
					      "<object type=\"Bridge\">: bad pci_busid \"%s\"", b);
		pcin = topo_pci_get(h->x.t, busid, parent,
				    b ? TOPO_PCI_BRIDGE : TOPO_PCI_HOSTBRIDGE, h->x.err);
		if (pcin < 0)
			return pcin;
		h->x.t->pci[pcin].numa = numa;
	} else if (strcmp(type, "PCIDev") == 0) {
		rc = hwloc_pcidev(h, obj, parent, numa);
		if (rc)
			return rc;
		return 0; /* its children are OS devices, handled there */
	}
	for (xmlNode *c = obj->children; c; c = c->next) {
		if (!is_elem(c, "object"))
			continue;
		rc = hwloc_obj(h, c, pcin, numa, depth + 1);
		if (rc)
			return rc;
	}
	return 0;
}

/* Append the whitespace-separated tokens of every <@elem> child to @out. */
static int tokens(struct hctx *h, xmlNode *d, const char *elem, char ***out, int *n)
{
	int alloc = 0;

	*out = NULL;
	*n = 0;
	for (xmlNode *c = d->children; c; c = c->next) {
		xmlChar *txt;
		char *save = NULL;

		if (!is_elem(c, elem))
			continue;
		txt = xmlNodeGetContent(c);
		if (!txt)
			continue;
		for (char *s = strtok_r((char *)txt, " \t\n", &save); s;
		     s = strtok_r(NULL, " \t\n", &save)) {
			if (*n == alloc) {
				char **p;

				alloc = alloc ? alloc * 2 : 64;
				if (alloc > 4 * TOPO_MAX_PCI) {
					xmlFree(txt);
					return topo_parse_err(h->x.err, h->x.path, xmlGetLineNo(c),
							      "too many distance values");
				}
				p = realloc(*out, (size_t)alloc * sizeof(*p));
				if (!p) {
					xmlFree(txt);
					return dp_err_set(h->x.err, ENOMEM, "topo: out of memory");
				}
				*out = p;
			}
			(*out)[(*n)++] = strdup(s);
			if (!(*out)[*n - 1]) {
				xmlFree(txt);
				return dp_err_set(h->x.err, ENOMEM, "topo: out of memory");
			}
		}
		xmlFree(txt);
	}
	return 0;
}

static void free_tokens(char **v, int n)
{
	for (int i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* NVLinkBandwidth (MB/s per direction between objects): links to NVSwitches
 * and GPUs.  A link count is bandwidth / 25000 (NVLink 2-4 lanes). */
static int hwloc_nvlink(struct hctx *h, xmlNode *d)
{
	char **idx = NULL, **val = NULL;
	long nb = 0;
	int nidx = 0, nval = 0, rc;

	rc = attr_long(&h->x, d, "nbobjs", 1, 4096, &nb);
	if (rc)
		return rc < 0 ? rc
			      : topo_parse_err(h->x.err, h->x.path, xmlGetLineNo(d),
					       "distances without nbobjs");
	rc = tokens(h, d, "indexes", &idx, &nidx);
	if (!rc)
		rc = tokens(h, d, "u64values", &val, &nval);
	if (rc)
		goto out;
	if (nidx != nb || (long)nval != nb * nb) {
		rc = topo_parse_err(h->x.err, h->x.path, xmlGetLineNo(d),
				    "distances: %d indexes and %d values for %ld objects", nidx,
				    nval, nb);
		goto out;
	}
	for (long i = 0; i < nb; i++) {
		const struct gpmap *from = map_find(h, idx[i]);
		struct topo_gpu *g;

		if (!from || from->is_switch)
			continue;
		g = topo_gpu_by_pci(h->x.t, from->busid);
		if (!g)
			continue;
		for (long j = 0; j < nb; j++) {
			const struct gpmap *to = map_find(h, idx[j]);
			char *end;
			unsigned long long bw;
			int links;

			errno = 0;
			bw = strtoull(val[i * nb + j], &end, 10);
			if (*end || errno) {
				rc = topo_parse_err(h->x.err, h->x.path, xmlGetLineNo(d),
						    "distances: bad value \"%s\"", val[i * nb + j]);
				goto out;
			}
			if (i == j || !bw || !to || bw > 100000000ULL)
				continue;
			links = (int)((bw + 12500) / 25000);
			rc = topo_gpu_add_peer(g, to->busid, links ? links : 1, to->is_switch,
					       h->x.err);
			if (rc)
				goto out;
			g->pub.nvlink_gbps += (double)bw / 1000.0;
		}
	}
out:
	free_tokens(idx, nidx);
	free_tokens(val, nval);
	return rc;
}

static int load_hwloc(struct xctx *x, xmlNode *root)
{
	struct hctx h = { .x = *x };
	int rc = 0;

	if (!is_elem(root, "topology"))
		return topo_parse_err(x->err, x->path, xmlGetLineNo(root),
				      "expected <topology> as the root element, found <%s>",
				      (const char *)root->name);
	for (xmlNode *c = root->children; c && !rc; c = c->next)
		if (is_elem(c, "object"))
			rc = hwloc_obj(&h, c, -1, -1, 0);
	for (xmlNode *c = root->children; c && !rc; c = c->next) {
		const char *name = attr(c, "name");

		if ((is_elem(c, "distances2hetero") || is_elem(c, "distances2")) && name &&
		    strcmp(name, "NVLinkBandwidth") == 0)
			rc = hwloc_nvlink(&h, c);
	}
	free(h.map);
	return rc;
}

/* ---- shared -------------------------------------------------------------- */

static int load_xml(struct dp_topo *t, const struct topo_src_ctx *ctx, struct dp_err *err,
		    int hwloc)
{
	struct xctx x = { .t = t, .path = ctx->path, .err = err };
	xmlParserCtxtPtr pc;
	xmlDocPtr doc;
	xmlNode *root;
	int rc;

	if (ctx->len > TOPO_MAX_FILE)
		return topo_parse_err(err, ctx->path, 0, "file too large");
	pc = xmlNewParserCtxt();
	if (!pc)
		return dp_err_set(err, ENOMEM, "topo: out of memory");
	doc = xmlCtxtReadMemory(pc, ctx->buf, (int)ctx->len, ctx->path, NULL,
				XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING |
					XML_PARSE_BIG_LINES | XML_PARSE_NOCDATA);
	if (!doc) {
		const xmlError *e = xmlCtxtGetLastError(pc);
		char msg[256] = "not well-formed XML";
		size_t len;

		if (e && e->message) {
			topo_strlcpy(msg, e->message, sizeof(msg));
			len = strlen(msg);
			while (len && (msg[len - 1] == '\n' || msg[len - 1] == ' '))
				msg[--len] = '\0';
		}
		rc = topo_parse_err(err, ctx->path, e && e->line > 0 ? e->line : 1, "%s", msg);
		xmlFreeParserCtxt(pc);
		return rc;
	}
	root = xmlDocGetRootElement(doc);
	if (!root)
		rc = topo_parse_err(err, ctx->path, 1, "empty XML document");
	else
		rc = hwloc ? load_hwloc(&x, root) : load_nccl(&x, root);
	xmlFreeDoc(doc);
	xmlFreeParserCtxt(pc);
	if (!rc)
		topo_add_source(t, hwloc ? "hwloc-xml" : "nccl-xml");
	return rc;
}

static int load_nccl_xml(struct dp_topo *t, const struct topo_src_ctx *ctx, struct dp_err *err)
{
	return load_xml(t, ctx, err, 0);
}

static int load_hwloc_xml(struct dp_topo *t, const struct topo_src_ctx *ctx, struct dp_err *err)
{
	return load_xml(t, ctx, err, 1);
}

/* The name of the first element, skipping the prolog and comments. */
static int root_is(const char *buf, size_t len, const char *name)
{
	size_t nl = strlen(name);

	for (size_t i = 0; i < len; i++) {
		if (buf[i] != '<')
			continue;
		if (i + 1 < len && (buf[i + 1] == '?' || buf[i + 1] == '!')) {
			const char *endtag = buf[i + 1] == '!' && i + 3 < len &&
							     buf[i + 2] == '-' && buf[i + 3] == '-'
						     ? "-->"
						     : ">";
			const char *e = memmem(buf + i, len - i, endtag, strlen(endtag));

			if (!e)
				return 0;
			i = (size_t)(e - buf);
			continue;
		}
		return i + 1 + nl <= len && memcmp(buf + i + 1, name, nl) == 0 &&
		       (i + 1 + nl == len || !isalnum((unsigned char)buf[i + 1 + nl]));
	}
	return 0;
}

static int detect_nccl(const char *buf, size_t len)
{
	return root_is(buf, len, "system") ? 100 : 0;
}

static int detect_hwloc(const char *buf, size_t len)
{
	return root_is(buf, len, "topology") ? 100 : 0;
}

const struct dp_topo_source topo_src_nccl_xml = {
	.name = "nccl-xml",
	.flags = TOPO_SRC_FILE,
	.detect = detect_nccl,
	.probe = topo_src_no_probe,
	.load = load_nccl_xml,
};

const struct dp_topo_source topo_src_hwloc_xml = {
	.name = "hwloc-xml",
	.flags = TOPO_SRC_FILE,
	.detect = detect_hwloc,
	.probe = topo_src_no_probe,
	.load = load_hwloc_xml,
};
