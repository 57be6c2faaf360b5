/* topo/topo_source.c - the source table, format detection, file import and
 * live discovery. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/dp_log.h"
#include "topo/topo_int.h"
#include "common/dp_banned.h"

/* Best first inside each kind; the build drops what it cannot compile (verbs
 * has a stub that declines with -ENOSYS instead, so it is always listed). */
static const struct dp_topo_source *const sources[] = {
	&topo_src_sysfs,       &topo_src_nvml,
	&topo_src_verbs,       &topo_src_ibclass,
	&topo_src_nccl_xml,    &topo_src_hwloc_xml,
	&topo_src_smi_topo,    &topo_src_smi_nvlink,
	&topo_src_ibstat,      &topo_src_ibstatus,
	&topo_src_ibv_devinfo, &topo_src_lspci,
	&topo_src_json,	       NULL,
};

const struct dp_topo_source *const *topo_source_table(void)
{
	return sources;
}

int topo_src_no_detect(const char *buf, size_t len)
{
	(void)buf;
	(void)len;
	return -EOPNOTSUPP;
}

int topo_src_no_probe(const struct dp_topo_cfg *cfg)
{
	(void)cfg;
	return -EOPNOTSUPP;
}

const char *dp_topo_format_name(int n)
{
	int k = 0;

	for (int i = 0; sources[i]; i++) {
		if (!(sources[i]->flags & (TOPO_SRC_FILE | TOPO_SRC_DIR)))
			continue;
		if (k++ == n)
			return sources[i]->name;
	}
	return NULL;
}

static const struct dp_topo_source *find_source(const char *name)
{
	for (int i = 0; sources[i]; i++)
		if (strcmp(sources[i]->name, name) == 0)
			return sources[i];
	return NULL;
}

int dp_topo_import_mem(const char *path, const char *format, const char *buf, size_t len,
		       struct dp_topo **out, struct dp_err *err)
{
	const struct dp_topo_source *src = NULL;
	struct topo_src_ctx ctx = { .path = path, .len = len, .dirfd = -1 };
	struct dp_topo *t;
	char *copy;
	int rc, best = 0;

	if (len > TOPO_MAX_FILE)
		return topo_parse_err(err, path, 0, "file too large (more than %d bytes)",
				      TOPO_MAX_FILE);
	if (format) {
		src = find_source(format);
		if (!src || !(src->flags & TOPO_SRC_FILE))
			return dp_err_set(err, EINVAL, "topo: unknown format '%s'", format);
	} else {
		for (int i = 0; sources[i]; i++) {
			int s;

			if (!(sources[i]->flags & TOPO_SRC_FILE))
				continue;
			s = sources[i]->detect(buf, len);
			if (s > best) {
				best = s;
				src = sources[i];
			}
		}
		if (!src)
			return dp_err_set(err, EPROTONOSUPPORT,
					  "topo: '%s': unknown topology format (expected NCCL or "
					  "hwloc XML, nvidia-smi topo/nvlink, ibstat, ibstatus, "
					  "ibv_devinfo or lspci output)",
					  path);
	}
	/* the text parsers want a terminated string */
	copy = malloc(len + 1);
	if (!copy)
		return dp_err_set(err, ENOMEM, "topo: out of memory");
	if (len)
		memcpy(copy, buf, len);
	copy[len] = '\0';
	ctx.buf = copy;
	t = topo_new();
	if (!t) {
		free(copy);
		return dp_err_set(err, ENOMEM, "topo: out of memory");
	}
	rc = src->load(t, &ctx, err);
	if (!rc)
		rc = topo_finish(t, err);
	free(copy);
	if (rc) {
		dp_topo_free(t);
		return rc;
	}
	*out = t;
	return 0;
}

static int read_file(const char *path, char **out, size_t *outlen, struct dp_err *err)
{
	size_t len = 0, alloc = 0;
	char *buf = NULL;
	int fd, rc = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;

		return dp_err_set(err, e, "topo: cannot open '%s': %s", path, strerror(e));
	}
	for (;;) {
		ssize_t n;

		if (len == alloc) {
			char *p;

			if (alloc > TOPO_MAX_FILE) {
				rc = topo_parse_err(err, path, 0,
						    "file too large (more than %d bytes)",
						    TOPO_MAX_FILE);
				goto fail;
			}
			alloc = alloc ? alloc * 2 : 65536;
			p = realloc(buf, alloc + 1);
			if (!p) {
				rc = dp_err_set(err, ENOMEM, "topo: out of memory");
				goto fail;
			}
			buf = p;
		}
		n = read(fd, buf + len, alloc - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = errno;

			rc = dp_err_set(err, e, "topo: cannot read '%s': %s", path, strerror(e));
			goto fail;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	if (!buf) {
		buf = malloc(1);
		if (!buf)
			return dp_err_set(err, ENOMEM, "topo: out of memory");
	}
	buf[len] = '\0';
	*out = buf;
	*outlen = len;
	return 0;
fail:
	close(fd);
	free(buf);
	return rc;
}

static int import_dir(const char *path, int dirfd, struct dp_topo **out, struct dp_err *err)
{
	struct topo_src_ctx ctx = { .path = path, .dirfd = dirfd };
	const struct dp_topo_source *src = &topo_src_ibclass;
	struct dp_topo *t;
	struct stat st;
	int rc;

	/* a /sys copy (has sys/) or a /sys/class/infiniband copy */
	if (fstatat(dirfd, "sys", &st, 0) == 0 && S_ISDIR(st.st_mode))
		src = &topo_src_sysfs;
	t = topo_new();
	if (!t)
		return dp_err_set(err, ENOMEM, "topo: out of memory");
	rc = src->load(t, &ctx, err);
	if (!rc)
		rc = topo_finish(t, err);
	if (rc) {
		dp_topo_free(t);
		return rc;
	}
	*out = t;
	return 0;
}

int dp_topo_import(const char *path, struct dp_topo **out, struct dp_err *err)
{
	struct stat st;
	char *buf = NULL;
	size_t len = 0;
	int rc;

	if (stat(path, &st) != 0) {
		int e = errno;

		return dp_err_set(err, e, "topo: cannot open '%s': %s", path, strerror(e));
	}
	if (S_ISDIR(st.st_mode)) {
		int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

		if (fd < 0) {
			int e = errno;

			return dp_err_set(err, e, "topo: cannot open '%s': %s", path, strerror(e));
		}
		rc = import_dir(path, fd, out, err);
		close(fd);
		return rc;
	}
	rc = read_file(path, &buf, &len, err);
	if (rc)
		return rc;
	rc = dp_topo_import_mem(path, NULL, buf, len, out, err);
	free(buf);
	return rc;
}

static int wanted(const struct dp_topo_cfg *cfg, const char *name)
{
	const char *list = cfg ? cfg->sources : NULL;
	size_t n = strlen(name);

	if (!list || !*list)
		return 1;
	for (const char *p = list; p && *p;) {
		const char *e = strchr(p, ',');
		size_t l = e ? (size_t)(e - p) : strlen(p);

		if (l == n && strncmp(p, name, n) == 0)
			return 1;
		p = e ? e + 1 : NULL;
	}
	return 0;
}

int dp_topo_discover(const struct dp_topo_cfg *cfg, struct dp_topo **out, struct dp_err *err)
{
	const char *root = cfg && cfg->sysfs_root ? cfg->sysfs_root : getenv("DP_SYSFS_ROOT");
	struct topo_src_ctx ctx = { .cfg = cfg, .dirfd = -1 };
	struct dp_topo *t;
	int rc = 0;

	if (!root || !*root)
		root = "/";
	ctx.path = root;
	t = topo_new();
	if (!t)
		return dp_err_set(err, ENOMEM, "topo: out of memory");
	ctx.dirfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (ctx.dirfd < 0) {
		int e = errno;

		rc = dp_err_set(err, e, "topo: cannot open root '%s': %s", root, strerror(e));
		goto err_free;
	}
	for (int i = 0; sources[i]; i++) {
		const struct dp_topo_source *s = sources[i];
		char skipped[64];

		if (!(s->flags & TOPO_SRC_LIVE) || !wanted(cfg, s->name))
			continue;
		rc = s->probe(cfg);
		if (!rc)
			rc = s->load(t, &ctx, err);
		if (rc && s != &topo_src_sysfs &&
		    (rc == -ENODEV || rc == -ENOSYS || rc == -EOPNOTSUPP || rc == -ENOENT)) {
			/* an optional library or device that is not here */
			dp_log(DP_LOG_DEBUG, "topo", "source %s skipped: %s", s->name,
			       err && err->msg[0] ? err->msg : strerror(-rc));
			(void)snprintf(skipped, sizeof(skipped), "%s(skipped)", s->name);
			topo_add_source(t, skipped);
			dp_err_clear(err);
			continue;
		}
		if (rc)
			goto err_close;
		dp_log(DP_LOG_DEBUG, "topo", "source %s: %d GPUs, %d NICs so far", s->name,
		       t->ngpus, t->nnics);
	}
	rc = topo_finish(t, err);
	if (rc)
		goto err_close;
	close(ctx.dirfd);
	*out = t;
	return 0;
err_close:
	close(ctx.dirfd);
err_free:
	dp_topo_free(t);
	return rc;
}
