/* topo/dp_topo.h - node topology: GPUs, NICs, NUMA nodes, the PCIe tree, and
 * the GPU -> nearest RDMA NIC pairing.
 *
 * One struct dp_topo describes one node.  It is built by live discovery
 * (dp_topo_discover: the sysfs source, enriched by NVML and verbs when they
 * are available) or by importing files (dp_topo_import: NCCL topology XML,
 * hwloc XML, `nvidia-smi topo -m`/`-mp`, `nvidia-smi nvlink -s`, `ibstat`,
 * `ibstatus`, `ibv_devinfo`, `lspci -nn`, our own JSON, a /sys tree or a
 * copy of /sys/class/infiniband).  Several sources about one node are merged with
 * dp_topo_merge() (e.g. `nvidia-smi topo -mp` for the PCIe paths plus
 * `ibv_devinfo` for which NICs are RDMA ports).
 *
 * Pairing rule (docs/topology.md): every GPU gets the usable RDMA NIC at the
 * smallest PCIe distance (PIX < PXB < PHB < NODE < SYS), never by name.  Ties
 * are broken by port state, then rate, then PCI bus order inside groups of
 * GPUs sharing the same nearest set; every tie, shared NIC, skipped bond or
 * Ethernet-only NIC is reported as an issue (dp_topo_issue_*).
 *
 * Device records are plain structs owned by the dp_topo: the returned const
 * pointers live until dp_topo_free() or the next dp_topo_merge() into it.
 * A dp_topo is not thread-safe; distinct objects may be used concurrently.
 */
#ifndef DP_TOPO_H
#define DP_TOPO_H

#include <stddef.h>

#include "common/dp_buf.h"
#include "common/dp_err.h"

struct dp_topo; /* opaque: dp_topo_discover/dp_topo_import create, dp_topo_free frees */

#define DP_TOPO_PCI_LEN	 16 /* "dddd:bb:dd.f" + NUL */
#define DP_TOPO_NAME_LEN 64

enum dp_topo_link_layer {
	DP_TOPO_LL_UNKNOWN = 0,
	DP_TOPO_LL_IB,
	DP_TOPO_LL_ETH, /* Ethernet: RoCE when the NIC is an RDMA device */
};

enum dp_topo_state {
	DP_TOPO_STATE_UNKNOWN = 0,
	DP_TOPO_STATE_DOWN,
	DP_TOPO_STATE_INIT,
	DP_TOPO_STATE_ARMED,
	DP_TOPO_STATE_ACTIVE,
};

/* PCIe distance classes, as nvidia-smi prints them; smaller is closer. */
enum dp_topo_dist {
	DP_TOPO_DIST_PIX = 1, /* at most one PCIe switch between them */
	DP_TOPO_DIST_PXB,     /* several switches, not through the host bridge */
	DP_TOPO_DIST_PHB,     /* through a PCIe host bridge */
	DP_TOPO_DIST_NODE,    /* between host bridges of one NUMA node */
	DP_TOPO_DIST_SYS,     /* across NUMA nodes */
	DP_TOPO_DIST_UNKNOWN, /* no PCI information */
};

#define DP_TOPO_MAX_NEAR 8

struct dp_topo_nvlink {
	char target[DP_TOPO_PCI_LEN]; /* remote PCI bus id, "" if unknown */
	int count;		      /* links to that target */
	int is_switch;		      /* the target is an NVSwitch */
};

struct dp_topo_gpu {
	int index;		   /* PCI bus order (what NVML and nvidia-smi use) */
	char pci[DP_TOPO_PCI_LEN]; /* "" if the source has no bus id */
	int numa;		   /* -1 if unknown */
	char model[DP_TOPO_NAME_LEN];
	unsigned int pci_device; /* PCI device id (0x2330), 0 if unknown */
	int nvlinks;		 /* total NVLink count, 0 if none/unknown */
	double nvlink_gbps;	 /* GB/s per direction summed over links, 0 if unknown */
	int nvswitch;		 /* 1 if links go to NVSwitches */
	int npeers;
	struct dp_topo_nvlink *peers;
	/* pairing result */
	int nic;		    /* index into the NIC list, -1 if none */
	enum dp_topo_dist dist;	    /* distance to that NIC */
	int hops;		    /* PCIe links between them, -1 if unknown */
	int nnear;		    /* NICs at the same (smallest) distance, rate and state */
	int near[DP_TOPO_MAX_NEAR]; /* their indices, nic first */
};

struct dp_topo_nic {
	char name[DP_TOPO_NAME_LEN];   /* RDMA device (mlx5_0) or netdev; "" if unknown */
	char netdev[DP_TOPO_NAME_LEN]; /* "" if unknown */
	char pci[DP_TOPO_PCI_LEN];
	int numa;
	int port;
	enum dp_topo_link_layer link_layer;
	enum dp_topo_state state;
	double rate_gbps;	      /* 0 if unknown */
	char model[DP_TOPO_NAME_LEN]; /* hca_type / part id / PCI ids */
	int rdma;		      /* 1 RDMA device, 0 plain netdev, -1 unknown */
	int bond;		      /* a bonded (LAG) device */
	int usable;		      /* candidate for pairing (see docs/topology.md) */
	int ngpus;		      /* GPUs paired with it */
};

struct dp_topo_numa {
	int id;
	char cpus[256]; /* cpulist "0-47,96-143", "" if unknown; truncated lists end in "..." */
	int ncpus;	/* -1 if unknown */
};

enum dp_topo_severity {
	DP_TOPO_INFO = 0,
	DP_TOPO_WARN,
};

struct dp_topo_issue {
	enum dp_topo_severity severity;
	char msg[256];
};

/* ---- building ---------------------------------------------------------- */

struct dp_topo_cfg {
	const char *sysfs_root; /* NULL: $DP_SYSFS_ROOT, else "/"; borrowed for the call */
	const char *sources;	/* NULL: all; else comma list of live sources ("sysfs,nvml") */
};

/* Discover this machine: sysfs (mandatory), then nvml and verbs when present
 * (absent libraries are skipped, recorded in dp_topo_sources()).  0, or
 * -errno with @err filled; *out set only on success. */
int dp_topo_discover(const struct dp_topo_cfg *cfg, struct dp_topo **out, struct dp_err *err);

/* Import one file (or a /sys or /sys/class/infiniband directory) whose format
 * is detected from its content.  Parse errors are -EBADMSG with @err holding
 * "PATH:LINE: error: what"; unreadable input -ENOENT/-EACCES; unknown format
 * -EPROTONOSUPPORT.  *out set only on success. */
int dp_topo_import(const char *path, struct dp_topo **out, struct dp_err *err);

/* Same on a memory buffer (@path only names it in messages); @format NULL
 * detects it, else one of dp_topo_format_name().  Used by the fuzzers. */
int dp_topo_import_mem(const char *path, const char *format, const char *buf, size_t len,
		       struct dp_topo **out, struct dp_err *err);

/* Merge @src into @dst (both borrowed; @src unchanged): GPUs are matched by
 * PCI bus id (else by index), NICs by name (else bus id); attributes missing
 * in @dst are taken from @src; pairing is recomputed.  If @src lists RDMA
 * ports (ibstat, ibv_devinfo, ...), NICs of @dst it does not list are marked
 * non-RDMA.  0 or -ENOMEM/-E2BIG. */
int dp_topo_merge(struct dp_topo *dst, const struct dp_topo *src, struct dp_err *err);

void dp_topo_free(struct dp_topo *t); /* NULL is a no-op */

/* Name of the n-th importer format ("sysfs", "sysfs-infiniband", "nccl-xml",
 * "hwloc-xml", "nvidia-smi-topo", "nvidia-smi-nvlink", "ibstat", "ibstatus",
 * "ibv_devinfo", "lspci", "dpctl-json"), NULL past the end. */
const char *dp_topo_format_name(int n);

/* ---- reading ----------------------------------------------------------- */

const char *dp_topo_hostname(const struct dp_topo *t); /* "" if unknown */
void dp_topo_set_hostname(struct dp_topo *t, const char *name);
/* Sources that contributed, comma separated ("nccl-xml", "sysfs,nvml(skipped)") */
const char *dp_topo_sources(const struct dp_topo *t);
int dp_topo_gpu_count(const struct dp_topo *t);
int dp_topo_nic_count(const struct dp_topo *t);
int dp_topo_numa_count(const struct dp_topo *t);
int dp_topo_nvswitch_count(const struct dp_topo *t);
int dp_topo_issue_count(const struct dp_topo *t);
/* NULL when @i is out of range. */
const struct dp_topo_gpu *dp_topo_gpu(const struct dp_topo *t, int i);
const struct dp_topo_nic *dp_topo_nic(const struct dp_topo *t, int i);
const struct dp_topo_numa *dp_topo_numa(const struct dp_topo *t, int i);
const struct dp_topo_issue *dp_topo_issue(const struct dp_topo *t, int i);
/* Index of the NIC named @name, -1 if none. */
int dp_topo_nic_find(const struct dp_topo *t, const char *name);
/* PCIe distance between GPU @g and NIC @n; *hops = links, -1 if unknown. */
enum dp_topo_dist dp_topo_distance(const struct dp_topo *t, int g, int n, int *hops);

const char *dp_topo_dist_name(enum dp_topo_dist d);		/* "PIX" ... "?" */
const char *dp_topo_link_layer_name(enum dp_topo_link_layer l); /* "InfiniBand", "Ethernet", "" */
const char *dp_topo_state_name(enum dp_topo_state s);		/* "ACTIVE", "DOWN", "" */
/* Label for NIC @n: its name, else "nic@<pci>", else "nic<n>". */
const char *dp_topo_nic_label(const struct dp_topo *t, int n);

/* ---- output ------------------------------------------------------------ */

/* Append the readable table (GPU -> NUMA, nearest NIC, distance, hops,
 * NVLink count; then the NICs and issues) to @b.  0 or -ENOMEM/-E2BIG. */
int dp_topo_format_text(const struct dp_topo *t, struct dp_buf *b);

/* Append the JSON object of one node ({"hostname":..,"gpus":[..],"nics":[..],..})
 * to @b, compact, without newline.  0 or -ENOMEM/-E2BIG. */
int dp_topo_format_json(const struct dp_topo *t, struct dp_buf *b);

/* ---- validation -------------------------------------------------------- */

enum dp_topo_check_status {
	DP_TOPO_PASS = 0,
	DP_TOPO_CHECK_WARN,
	DP_TOPO_FAIL,
	DP_TOPO_SKIP,
};

struct dp_topo_check {
	char name[32]; /* "rail", "ports", ... */
	char node[64]; /* node it is about, "" for cross-node checks */
	enum dp_topo_check_status status;
	char detail[256]; /* what was found (names the device) */
	char fix[256];	  /* what to do, "" when it passed */
};

struct dp_topo_report {
	struct dp_topo_check *checks;
	int nchecks;
	int nfail, nwarn;
};

/* Run every check over @n nodes (borrowed).  Fills @r (caller releases with
 * dp_topo_report_release).  0 or -ENOMEM; check failures are not errors. */
int dp_topo_validate(const struct dp_topo *const *nodes, int n, struct dp_topo_report *r,
		     struct dp_err *err);
void dp_topo_report_release(struct dp_topo_report *r); /* NULL-safe */
const char *
dp_topo_check_status_name(enum dp_topo_check_status s); /* "pass" "warn" "fail" "skip" */

#endif
