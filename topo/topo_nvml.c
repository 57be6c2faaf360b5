/* topo/topo_nvml.c - GPU names and NVLink peers from NVML, loaded with
 * dlopen("libnvidia-ml.so.1") so one dpctl binary runs on GPU and CPU-only
 * nodes (STYLE caveat "CUDA at build time vs run time").  A missing library
 * or driver declines with -ENODEV: discovery records "nvml(skipped)".
 *
 * Only the few NVML entry points below are used; their types are declared
 * here with the ABI of nvml.h (the header is not needed to build). */
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "topo/topo_int.h"
#include "common/dp_banned.h"

typedef int nvml_ret;		   /* nvmlReturn_t, NVML_SUCCESS = 0 */
typedef struct nvml_dev *nvml_dev; /* nvmlDevice_t */
struct nvml_pci {		   /* nvmlPciInfo_t (v3) */
	char bus_id_legacy[16];
	unsigned int domain, bus, device, pci_device_id, pci_subsystem_id;
	char bus_id[32];
};

#define NVML_MAX_LINKS 18

struct nvml {
	void *lib;
	nvml_ret (*init)(void);
	nvml_ret (*shutdown)(void);
	nvml_ret (*count)(unsigned int *);
	nvml_ret (*handle)(unsigned int, nvml_dev *);
	nvml_ret (*pci)(nvml_dev, struct nvml_pci *);
	nvml_ret (*name)(nvml_dev, char *, unsigned int);
	nvml_ret (*link_state)(nvml_dev, unsigned int, int *);
	nvml_ret (*remote_pci)(nvml_dev, unsigned int, struct nvml_pci *);
};

static int sym(struct nvml *n, void **fp, const char *name)
{
	*fp = dlsym(n->lib, name);
	return *fp ? 0 : -ENODEV;
}

static int nvml_open(struct nvml *n)
{
	int rc = 0;

	memset(n, 0, sizeof(*n));
	n->lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
	if (!n->lib)
		return -ENODEV;
	rc |= sym(n, (void **)&n->init, "nvmlInit_v2");
	rc |= sym(n, (void **)&n->shutdown, "nvmlShutdown");
	rc |= sym(n, (void **)&n->count, "nvmlDeviceGetCount_v2");
	rc |= sym(n, (void **)&n->handle, "nvmlDeviceGetHandleByIndex_v2");
	rc |= sym(n, (void **)&n->pci, "nvmlDeviceGetPciInfo_v3");
	rc |= sym(n, (void **)&n->name, "nvmlDeviceGetName");
	rc |= sym(n, (void **)&n->link_state, "nvmlDeviceGetNvLinkState");
	rc |= sym(n, (void **)&n->remote_pci, "nvmlDeviceGetNvLinkRemotePciInfo_v2");
	if (rc || n->init() != 0) {
		dlclose(n->lib);
		n->lib = NULL;
		return -ENODEV;
	}
	return 0;
}

static int load_gpu(struct dp_topo *t, struct nvml *n, unsigned int i, struct dp_err *err)
{
	char busid[DP_TOPO_PCI_LEN], name[96];
	struct nvml_pci pci;
	struct topo_gpu *g;
	nvml_dev dev;

	if (n->handle(i, &dev) != 0 || n->pci(dev, &pci) != 0)
		return 0;
	pci.bus_id[sizeof(pci.bus_id) - 1] = '\0';
	if (topo_pci_norm(pci.bus_id, busid))
		return 0;
	g = topo_gpu_by_pci(t, busid);
	if (!g) {
		g = topo_gpu_add(t, err);
		if (!g)
			return -ENOMEM;
		topo_strlcpy(g->pub.pci, busid, sizeof(g->pub.pci));
	}
	if (n->name(dev, name, sizeof(name)) == 0) {
		name[sizeof(name) - 1] = '\0';
		topo_strlcpy(g->pub.model, name, sizeof(g->pub.model));
	}
	for (unsigned int l = 0; l < NVML_MAX_LINKS; l++) {
		char target[DP_TOPO_PCI_LEN];
		struct nvml_pci rp;
		int active = 0, rc;

		if (n->link_state(dev, l, &active) != 0 || !active)
			continue;
		if (n->remote_pci(dev, l, &rp) != 0)
			continue;
		rp.bus_id[sizeof(rp.bus_id) - 1] = '\0';
		if (topo_pci_norm(rp.bus_id, target))
			continue;
		/* a remote that is not a GPU of this node is an NVSwitch */
		rc = topo_gpu_add_peer(g, target, 1, 0, err);
		if (rc)
			return rc;
	}
	return 0;
}

static int load_nvml(struct dp_topo *t, const struct topo_src_ctx *ctx, struct dp_err *err)
{
	unsigned int count = 0;
	struct nvml n;
	int rc;

	(void)ctx;
	rc = nvml_open(&n);
	if (rc)
		return rc;
	if (n.count(&count) != 0)
		count = 0;
	for (unsigned int i = 0; i < count && i < TOPO_MAX_GPUS; i++) {
		rc = load_gpu(t, &n, i, err);
		if (rc)
			break;
	}
	for (int g = 0; !rc && g < t->ngpus; g++)
		for (int p = 0; p < t->gpus[g].pub.npeers; p++)
			t->gpus[g].pub.peers[p].is_switch =
				topo_gpu_by_pci(t, t->gpus[g].pub.peers[p].target) == NULL;
	n.shutdown();
	dlclose(n.lib);
	if (!rc)
		topo_add_source(t, "nvml");
	return rc;
}

/* Fixture roots describe another machine: never mix in this host's GPUs. */
static int probe_nvml(const struct dp_topo_cfg *cfg)
{
	const char *root = cfg && cfg->sysfs_root ? cfg->sysfs_root : getenv("DP_SYSFS_ROOT");

	return root && *root && strcmp(root, "/") != 0 ? -ENODEV : 0;
}

const struct dp_topo_source topo_src_nvml = {
	.name = "nvml",
	.flags = TOPO_SRC_LIVE,
	.detect = topo_src_no_detect,
	.probe = probe_nvml,
	.load = load_nvml,
};
