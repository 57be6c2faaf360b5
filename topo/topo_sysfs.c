/* topo/topo_sysfs.c - live discovery from /sys (and /proc for the host name),
 * and import of a /sys/class/infiniband copy.
 *
 * Every read is an openat()/readlinkat() relative to one root directory fd
 * (DP_SYSFS_ROOT or the cfg, like rdma-core's SYSFS_PATH or hwloc's
 * HWLOC_FSROOT), so tests run on fixture trees of real machines.  Symlinks
 * in sysfs are relative ("../../../devices/pci0000:00/..."), so they resolve
 * inside the root.  Files may lack the trailing newline (gpud snapshots). */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/dp_util.h"
#include "topo/topo_int.h"
#include "common/dp_banned.h"

/* Read a small attribute file into @buf without the trailing newline;
 * 0 or -errno. */
static int read_attr(int dirfd, const char *path, char *buf, size_t len)
{
	ssize_t n;
	int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -EIO;
	buf[n] = '\0';
	while (n > 0 && isspace((unsigned char)buf[n - 1]))
		buf[--n] = '\0';
	return 0;
}

static int read_link(int dirfd, const char *path, char *buf, size_t len)
{
	ssize_t n = readlinkat(dirfd, path, buf, len - 1);

	if (n < 0)
		return -errno;
	buf[n] = '\0';
	return 0;
}

/* Iterate a directory under @dirfd; the DIR owns its own fd. */
static DIR *open_dir(int dirfd, const char *path)
{
	int fd = openat(dirfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d;

	if (fd < 0)
		return NULL;
	d = fdopendir(fd);
	if (!d)
		close(fd);
	return d;
}

struct names {
	char **v;
	int n;
};

static int name_cmp(const void *a, const void *b)
{
	return strverscmp(*(char *const *)a, *(char *const *)b);
}

static void names_free(struct names *l)
{
	for (int i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

/* The entries of @path under @dirfd (no dot files), in natural order so
 * output does not depend on the file system's readdir order.  0 (an empty
 * list if the directory is missing) or -ENOMEM. */
static int list_dir(int dirfd, const char *path, struct names *l)
{
	DIR *d = open_dir(dirfd, path);
	struct dirent *e;
	int alloc = 0;

	l->v = NULL;
	l->n = 0;
	if (!d)
		return 0;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		if (l->n == alloc) {
			char **p;

			alloc = alloc ? alloc * 2 : 32;
			p = alloc > TOPO_MAX_PCI ? NULL : realloc(l->v, (size_t)alloc * sizeof(*p));
			if (!p)
				goto nomem;
			l->v = p;
		}
		l->v[l->n] = strdup(e->d_name);
		if (!l->v[l->n])
			goto nomem;
		l->n++;
	}
	closedir(d);
	if (l->n)
		qsort(l->v, (size_t)l->n, sizeof(*l->v), name_cmp);
	return 0;
nomem:
	closedir(d);
	names_free(l);
	return -ENOMEM;
}

static int is_bdf(const char *s)
{
	char out[DP_TOPO_PCI_LEN];

	return strlen(s) == 12 && topo_pci_norm(s, out) == 0;
}

/* The last PCI function named in a sysfs path ("../devices/pci0000:00/
 * 0000:00:03.0/virtio0/net/eth0" -> 0000:00:03.0). */
static int last_bdf(const char *path, char out[DP_TOPO_PCI_LEN])
{
	char copy[1024], *save = NULL;
	int found = 0;

	topo_strlcpy(copy, path, sizeof(copy));
	for (char *c = strtok_r(copy, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		if (is_bdf(c)) {
			topo_strlcpy(out, c, DP_TOPO_PCI_LEN);
			found = 1;
		}
	}
	return found ? 0 : -ENOENT;
}

/* Build the PCI ancestry of @bdf from its sys/bus/pci/devices link: host
 * bridge "pciDDDD:BB", then every bridge down to the device. */
static int pci_chain(struct dp_topo *t, int root, const char *bdf, int kind, struct dp_err *err)
{
	char link[1024], rel[128], *save = NULL;
	int parent = -1, n;

	(void)snprintf(rel, sizeof(rel), "sys/bus/pci/devices/%s", bdf);
	if (read_link(root, rel, link, sizeof(link)) == 0) {
		for (char *c = strtok_r(link, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
			char norm[DP_TOPO_PCI_LEN];

			if (strncmp(c, "pci", 3) == 0 && strlen(c) < DP_TOPO_PCI_LEN) {
				n = topo_pci_get(t, c, -1, TOPO_PCI_HOSTBRIDGE, err);
				if (n < 0)
					return n;
				parent = n;
			} else if (is_bdf(c) && topo_pci_norm(c, norm) == 0 &&
				   strcmp(norm, bdf) != 0) {
				n = topo_pci_find(t, norm);
				if (n < 0)
					n = topo_pci_get(t, norm, parent, TOPO_PCI_BRIDGE, err);
				if (n < 0)
					return n;
				parent = n;
			}
		}
	}
	n = topo_pci_find(t, bdf);
	if (n >= 0) {
		t->pci[n].kind = kind;
		return n;
	}
	return topo_pci_get(t, bdf, parent, kind, err);
}

static int scan_numa(struct dp_topo *t, int root, struct dp_err *err)
{
	struct names l;

	/* no directory: no NUMA information (containers, non-NUMA kernels) */
	if (list_dir(root, "sys/devices/system/node", &l))
		return dp_err_set(err, ENOMEM, "topo: out of memory");
	for (int i = 0; i < l.n; i++) {
		const char *name = l.v[i];
		char path[300], *end;
		struct dp_topo_numa *m;
		long id;

		if (strncmp(name, "node", 4) != 0 || !isdigit((unsigned char)name[4]))
			continue;
		id = strtol(name + 4, &end, 10);
		if (*end || id < 0 || id >= TOPO_MAX_NUMA)
			continue;
		m = topo_numa_get(t, (int)id, err);
		if (!m) {
			names_free(&l);
			return -ENOMEM;
		}
		(void)snprintf(path, sizeof(path), "sys/devices/system/node/%s/cpulist", name);
		if (read_attr(root, path, m->cpus, sizeof(m->cpus)) == 0)
			m->ncpus = topo_cpulist_count(m->cpus);
	}
	names_free(&l);
	return 0;
}

static int scan_pci(struct dp_topo *t, int root, struct dp_err *err)
{
	struct names l;
	int rc = 0;

	if (list_dir(root, "sys/bus/pci/devices", &l))
		return dp_err_set(err, ENOMEM, "topo: out of memory");
	for (int i = 0; !rc && i < l.n; i++) {
		const char *name = l.v[i];
		char path[300], val[64], bdf[DP_TOPO_PCI_LEN];
		unsigned long cls = 0, vendor = 0, dev = 0;
		int kind, n;
		long numa = -1;

		if (!is_bdf(name) || topo_pci_norm(name, bdf))
			continue;
		(void)snprintf(path, sizeof(path), "sys/bus/pci/devices/%s/class", name);
		if (read_attr(root, path, val, sizeof(val)) || topo_parse_hex(val, &cls))
			continue;
		(void)snprintf(path, sizeof(path), "sys/bus/pci/devices/%s/vendor", name);
		if (read_attr(root, path, val, sizeof(val)) || topo_parse_hex(val, &vendor))
			continue;
		(void)snprintf(path, sizeof(path), "sys/bus/pci/devices/%s/device", name);
		if (read_attr(root, path, val, sizeof(val)) == 0)
			(void)topo_parse_hex(val, &dev);
		if (vendor == 0x10de && ((cls >> 8) == 0x0302 || (cls >> 8) == 0x0300))
			kind = TOPO_PCI_GPU;
		else if (vendor == 0x10de && (cls >> 8) == 0x0680)
			kind = TOPO_PCI_NVSWITCH;
		else if ((cls >> 16) == 0x02)
			kind = TOPO_PCI_NIC;
		else
			continue;
		(void)snprintf(path, sizeof(path), "sys/bus/pci/devices/%s/numa_node", name);
		if (read_attr(root, path, val, sizeof(val)) == 0)
			numa = strtol(val, NULL, 10);
		n = pci_chain(t, root, bdf, kind, err);
		if (n < 0) {
			rc = n;
			break;
		}
		t->pci[n].numa = numa >= 0 && numa < TOPO_MAX_NUMA ? (int)numa : -1;
		if (kind == TOPO_PCI_NVSWITCH) {
			t->nvswitches++;
		} else if (kind == TOPO_PCI_GPU) {
			struct topo_gpu *g = topo_gpu_add(t, err);

			if (!g) {
				rc = -ENOMEM;
				break;
			}
			topo_strlcpy(g->pub.pci, bdf, sizeof(g->pub.pci));
			g->pcin = n;
			g->pub.numa = t->pci[n].numa;
			g->pub.pci_device = (unsigned int)dev;
			if (topo_gpu_model(dev))
				topo_strlcpy(g->pub.model, topo_gpu_model(dev),
					     sizeof(g->pub.model));
			else
				(void)snprintf(g->pub.model, sizeof(g->pub.model), "10de:%04lx",
					       dev & 0xffff);
		} else {
			struct topo_nic *nic = topo_nic_add(t, err);

			if (!nic) {
				rc = -ENOMEM;
				break;
			}
			topo_strlcpy(nic->pub.pci, bdf, sizeof(nic->pub.pci));
			nic->pcin = n;
			nic->pub.numa = t->pci[n].numa;
			(void)snprintf(nic->pub.model, sizeof(nic->pub.model), "%04lx:%04lx",
				       vendor, dev);
			if ((cls >> 8) == 0x0207)
				nic->pub.link_layer = DP_TOPO_LL_IB;
		}
	}
	names_free(&l);
	return rc;
}

/* The PCI function of class entry @dir/@name: the class entry itself is a
 * symlink into the device tree on a real system; copies keep "device". */
static int class_bdf(int dirfd, const char *name, char out[DP_TOPO_PCI_LEN])
{
	char link[1024], path[300];

	if (read_link(dirfd, name, link, sizeof(link)) == 0 && last_bdf(link, out) == 0)
		return 0;
	(void)snprintf(path, sizeof(path), "%s/device", name);
	if (read_link(dirfd, path, link, sizeof(link)) == 0 && last_bdf(link, out) == 0)
		return 0;
	return -ENOENT;
}

/* Lowest-numbered port of RDMA device @name: its attributes describe the NIC. */
static int first_port(int dirfd, const char *name)
{
	char path[300];
	struct dirent *e;
	int best = -1;
	DIR *d;

	(void)snprintf(path, sizeof(path), "%s/ports", name);
	d = open_dir(dirfd, path);
	if (!d)
		return -1;
	while ((e = readdir(d))) {
		char *end;
		long p = strtol(e->d_name, &end, 10);

		if (end != e->d_name && !*end && p > 0 && p < 256 && (best < 0 || p < best))
			best = (int)p;
	}
	closedir(d);
	return best; /* the minimum: independent of readdir order */
}

/* Scan a /sys/class/infiniband directory (@dirfd).  With @root >= 0 the
 * devices are tied to the PCI NICs found before, by bus id. */
static int scan_ib(struct dp_topo *t, int dirfd, int root, const char *path, struct dp_err *err)
{
	struct names l;
	int rc = 0;

	(void)path;
	if (list_dir(dirfd, ".", &l))
		return dp_err_set(err, ENOMEM, "topo: out of memory");
	for (int i = 0; i < l.n; i++) {
		const char *name = l.v[i];
		char p[300], val[128], bdf[DP_TOPO_PCI_LEN] = "";
		struct topo_nic *n = NULL;
		int port;

		port = first_port(dirfd, name);
		if (port < 0)
			continue; /* not an RDMA device directory */
		if (class_bdf(dirfd, name, bdf) == 0)
			n = topo_nic_by_pci(t, bdf);
		if (n && n->pub.name[0])
			n = NULL; /* a second device on one function (multi-port) */
		if (!n) {
			n = topo_nic_add(t, err);
			if (!n) {
				rc = -ENOMEM;
				break;
			}
			topo_strlcpy(n->pub.pci, bdf, sizeof(n->pub.pci));
			if (root >= 0 && bdf[0]) {
				int pn = topo_pci_find(t, bdf);

				n->pcin = pn;
				if (pn >= 0)
					n->pub.numa = t->pci[pn].numa;
			}
		}
		topo_strlcpy(n->pub.name, name, sizeof(n->pub.name));
		n->pub.rdma = 1;
		n->listed = 1;
		n->pub.port = port;
		(void)snprintf(p, sizeof(p), "%s/hca_type", name);
		if (read_attr(dirfd, p, val, sizeof(val)) == 0)
			topo_strlcpy(n->pub.model, val, sizeof(n->pub.model));
		(void)snprintf(p, sizeof(p), "%s/ports/%d/state", name, port);
		if (read_attr(dirfd, p, val, sizeof(val)) == 0)
			n->pub.state = topo_parse_state(val);
		(void)snprintf(p, sizeof(p), "%s/ports/%d/rate", name, port);
		if (read_attr(dirfd, p, val, sizeof(val)) == 0)
			(void)topo_parse_rate(val, &n->pub.rate_gbps);
		(void)snprintf(p, sizeof(p), "%s/ports/%d/link_layer", name, port);
		if (read_attr(dirfd, p, val, sizeof(val)) == 0)
			n->pub.link_layer = topo_parse_link_layer(val);
	}
	names_free(&l);
	if (!rc && t->nnics) {
		t->port_list = 1;
		topo_strlcpy(t->port_list_src, "sysfs", sizeof(t->port_list_src));
	}
	return rc;
}

/* Network interfaces: name the PCI NICs' netdevs; RDMA-less ones are plain
 * Ethernet NICs (still reported, never paired). */
static int scan_net(struct dp_topo *t, int root, struct dp_err *err)
{
	struct names l;
	int rc = 0;

	if (list_dir(root, "sys/class/net", &l))
		return dp_err_set(err, ENOMEM, "topo: out of memory");
	for (int i = 0; i < l.n; i++) {
		const char *name = l.v[i];
		char rel[300], bdf[DP_TOPO_PCI_LEN], val[64];
		struct topo_nic *n;
		int dfd;

		if (strcmp(name, "lo") == 0)
			continue;
		(void)snprintf(rel, sizeof(rel), "sys/class/net");
		dfd = openat(root, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0)
			continue;
		rc = class_bdf(dfd, name, bdf);
		close(dfd);
		if (rc) {
			rc = 0;
			continue; /* virtual interface */
		}
		n = topo_nic_by_pci(t, bdf);
		if (!n)
			continue; /* not a network-class function (e.g. IPoIB child) */
		if (!n->pub.netdev[0])
			topo_strlcpy(n->pub.netdev, name, sizeof(n->pub.netdev));
		if (n->pub.name[0])
			continue;
		/* no RDMA device on this function */
		topo_strlcpy(n->pub.name, name, sizeof(n->pub.name));
		n->pub.rdma = 0;
		n->pub.link_layer = DP_TOPO_LL_ETH;
		(void)snprintf(rel, sizeof(rel), "sys/class/net/%s/operstate", name);
		if (read_attr(root, rel, val, sizeof(val)) == 0)
			n->pub.state = strcmp(val, "up") == 0	  ? DP_TOPO_STATE_ACTIVE
				       : strcmp(val, "down") == 0 ? DP_TOPO_STATE_DOWN
								  : DP_TOPO_STATE_UNKNOWN;
		(void)snprintf(rel, sizeof(rel), "sys/class/net/%s/speed", name);
		if (read_attr(root, rel, val, sizeof(val)) == 0 && strtol(val, NULL, 10) > 0)
			n->pub.rate_gbps = (double)strtol(val, NULL, 10) / 1000.0;
	}
	names_free(&l);
	return rc;
}

static int load_sysfs(struct dp_topo *t, const struct topo_src_ctx *ctx, struct dp_err *err)
{
	int root = ctx->dirfd, rc, ibfd;
	char host[64];

	rc = scan_numa(t, root, err);
	if (!rc)
		rc = scan_pci(t, root, err);
	if (rc)
		return rc;
	ibfd = openat(root, "sys/class/infiniband", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (ibfd >= 0) {
		rc = scan_ib(t, ibfd, root, ctx->path, err);
		close(ibfd);
		if (rc)
			return rc;
	}
	rc = scan_net(t, root, err);
	if (rc)
		return rc;
	if (read_attr(root, "proc/sys/kernel/hostname", host, sizeof(host)) == 0)
		topo_strlcpy(t->hostname, host, sizeof(t->hostname));
	if (!t->nnuma && !t->npci && ibfd < 0)
		topo_issue(t, DP_TOPO_WARN, "no /sys information under '%s'", ctx->path);
	topo_add_source(t, "sysfs");
	return 0;
}

static int load_ibclass(struct dp_topo *t, const struct topo_src_ctx *ctx, struct dp_err *err)
{
	int rc = scan_ib(t, ctx->dirfd, -1, ctx->path, err);

	if (rc)
		return rc;
	if (!t->nnics)
		return dp_err_set(err, EPROTONOSUPPORT,
				  "topo: '%s': not a /sys tree nor a /sys/class/infiniband copy",
				  ctx->path);
	topo_add_source(t, "sysfs-infiniband");
	return 0;
}

static int probe_sysfs(const struct dp_topo_cfg *cfg)
{
	(void)cfg;
	return 0;
}

const struct dp_topo_source topo_src_sysfs = {
	.name = "sysfs",
	.flags = TOPO_SRC_LIVE | TOPO_SRC_DIR,
	.detect = topo_src_no_detect,
	.probe = probe_sysfs,
	.load = load_sysfs,
};

const struct dp_topo_source topo_src_ibclass = {
	.name = "sysfs-infiniband",
	.flags = TOPO_SRC_DIR,
	.detect = topo_src_no_detect,
	.probe = topo_src_no_probe,
	.load = load_ibclass,
};
