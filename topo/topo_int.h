/* topo/topo_int.h - private: the node object, the PCI tree, the source table
 * and the builder helpers the sources share. */
#ifndef DP_TOPO_INT_H
#define DP_TOPO_INT_H

#include <stddef.h>

#include "common/dp_buf.h"
#include "common/dp_err.h"
#include "topo/dp_topo.h"

/* Hard limits: real nodes are far below, and they bound what a hostile or
 * corrupt input file can make us allocate. */
#define TOPO_MAX_GPUS	1024
#define TOPO_MAX_NICS	1024
#define TOPO_MAX_PCI	65536
#define TOPO_MAX_NUMA	1024
#define TOPO_MAX_PEERS	64
#define TOPO_MAX_ISSUES 256
#define TOPO_MAX_FILE	(16 << 20)
#define TOPO_MAX_CPUS	8192

enum topo_pci_kind {
	TOPO_PCI_OTHER = 0,
	TOPO_PCI_BRIDGE,
	TOPO_PCI_HOSTBRIDGE, /* a root complex (pciDDDD:BB in sysfs) */
	TOPO_PCI_GPU,
	TOPO_PCI_NIC,
	TOPO_PCI_NVSWITCH,
};

struct topo_pci {
	char busid[DP_TOPO_PCI_LEN];
	int parent; /* index into dp_topo.pci, -1 for a top-level device */
	int numa;
	int kind;
};

struct topo_gpu {
	struct dp_topo_gpu pub;
	int pcin;	      /* PCI tree node, -1 if none */
	unsigned char *mdist; /* distance to NIC i from a matrix source, mdist_len entries */
	int mdist_len;
};

struct topo_nic {
	struct dp_topo_nic pub;
	int pcin;
	int listed; /* named by a source that lists every RDMA port */
	char label[DP_TOPO_NAME_LEN + 8];
};

struct dp_topo {
	char hostname[64];
	char sources[256];
	struct topo_pci *pci;
	int npci, apci;
	struct topo_gpu *gpus;
	int ngpus, agpus;
	struct topo_nic *nics;
	int nnics, anics;
	struct dp_topo_numa *numa;
	int nnuma, anuma;
	struct dp_topo_issue *issues;
	int nissues, aissues;
	int nsrc_issues; /* issues from the sources, kept when pairing reruns */
	int finished;
	int nvswitches;
	int port_list; /* some source listed all RDMA ports */
	char port_list_src[32];
};

/* ---- sources ------------------------------------------------------------ */

struct topo_src_ctx {
	const char *path; /* for messages */
	const char *buf;  /* file content (NUL-terminated), NULL for live/dir sources */
	size_t len;
	int dirfd; /* directory sources: the directory, else -1 */
	const struct dp_topo_cfg *cfg;
};

#define TOPO_SRC_FILE 1u /* imports a file's content */
#define TOPO_SRC_DIR  2u /* imports a directory (dirfd) */
#define TOPO_SRC_LIVE 4u /* part of live discovery */

struct dp_topo_source {
	const char *name;
	unsigned int flags;
	/* files: a score > 0 if @buf looks like this format, else 0 */
	int (*detect)(const char *buf, size_t len);
	/* live: 0 if usable on this host, -ENODEV/-ENOSYS to decline (allocates nothing) */
	int (*probe)(const struct dp_topo_cfg *cfg);
	/* add what the source knows to @t; mandatory */
	int (*load)(struct dp_topo *t, const struct topo_src_ctx *ctx, struct dp_err *err);
};

/* Default optional ops: never mine / not here. */
int topo_src_no_detect(const char *buf, size_t len);
int topo_src_no_probe(const struct dp_topo_cfg *cfg);

extern const struct dp_topo_source topo_src_sysfs, topo_src_ibclass, topo_src_nvml, topo_src_verbs,
	topo_src_nccl_xml, topo_src_hwloc_xml, topo_src_smi_topo, topo_src_smi_nvlink,
	topo_src_ibstat, topo_src_ibstatus, topo_src_ibv_devinfo, topo_src_lspci, topo_src_json;

/* All sources, NULL-terminated (for the contract test and the CLI). */
const struct dp_topo_source *const *topo_source_table(void);

/* ---- builders (topo.c) -------------------------------------------------- */

struct dp_topo *topo_new(void);
/* Find the PCI node with @busid or add one; index or -ENOMEM/-E2BIG. */
int topo_pci_get(struct dp_topo *t, const char *busid, int parent, int kind, struct dp_err *err);
int topo_pci_find(const struct dp_topo *t, const char *busid);
/* New GPU/NIC/NUMA record (zeroed with numa = -1 etc.); NULL + err on limit. */
struct topo_gpu *topo_gpu_add(struct dp_topo *t, struct dp_err *err);
struct topo_nic *topo_nic_add(struct dp_topo *t, struct dp_err *err);
struct dp_topo_numa *topo_numa_get(struct dp_topo *t, int id, struct dp_err *err);
struct topo_gpu *topo_gpu_by_pci(struct dp_topo *t, const char *pci);
struct topo_nic *topo_nic_by_name(struct dp_topo *t, const char *name);
struct topo_nic *topo_nic_by_pci(struct dp_topo *t, const char *pci);
int topo_gpu_add_peer(struct topo_gpu *g, const char *target, int count, int is_switch,
		      struct dp_err *err);
int topo_gpu_set_mdist(struct topo_gpu *g, int nic, enum dp_topo_dist d, struct dp_err *err);
void topo_add_source(struct dp_topo *t, const char *name);
void topo_issue(struct dp_topo *t, enum dp_topo_severity sev, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Sort GPUs by bus id and number them, fill NUMA from the tree, count
 * NVLinks, and compute the pairing.  0 or -ENOMEM. */
int topo_finish(struct dp_topo *t, struct dp_err *err);

/* topo_pair.c */
int topo_pair(struct dp_topo *t, struct dp_err *err);

/* ---- helpers shared by the parsers (topo_util.c) ------------------------ */

/* "PATH:LINE: error: MSG" as -EBADMSG. */
int topo_parse_err(struct dp_err *err, const char *path, long line, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Normalise a PCI bus id ("0000:A4:00.0", "00000000:a4:00.0", "a4:00.0") to
 * "dddd:bb:dd.f" lower case.  0 or -EINVAL. */
int topo_pci_norm(const char *in, char out[DP_TOPO_PCI_LEN]);
/* Compare two bus ids for sorting. */
int topo_pci_cmp(const char *a, const char *b);
/* Copy with truncation into a fixed array. */
void topo_strlcpy(char *dst, const char *src, size_t size);
/* A Linux cpumask ("ffff,00000000") to a cpulist ("32-47").  0, or -EINVAL. */
int topo_cpumask_to_list(const char *mask, char *out, size_t outlen, int *ncpus);
/* Count the CPUs of a cpulist ("0-3,8"); -EINVAL if malformed. */
int topo_cpulist_count(const char *list);
/* Parse a rate "400", "200 Gb/sec (4X HDR)", "400 Gb/s" -> Gb/s; -EINVAL. */
int topo_parse_rate(const char *s, double *gbps);
/* Parse "4: ACTIVE", "Active", "PORT_ACTIVE (4)", "DOWN" -> state. */
enum dp_topo_state topo_parse_state(const char *s);
enum dp_topo_link_layer topo_parse_link_layer(const char *s);
/* Parse an unsigned hex number "0x10de" / "10de"; -EINVAL. */
int topo_parse_hex(const char *s, unsigned long *out);
/* Exactly 4 hex digits at @s ("10de"); 0 or -EINVAL. */
int topo_hex4(const char *s, unsigned int *out);
/* A model name for a well-known NVIDIA PCI device id, NULL if unknown. */
const char *topo_gpu_model(unsigned long dev);
/* Name looks like a bonded RDMA device (mlx5_bond_0). */
int topo_name_is_bond(const char *name);

#endif
