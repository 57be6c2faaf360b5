/* topo/import_text.c - importers for tool output: `nvidia-smi topo -m`/`-mp`,
 * `nvidia-smi nvlink -s`, `ibstat`, `ibstatus`, `ibv_devinfo [-v]` and
 * `lspci -nn`.  The layouts are the ones in the real files under
 * ../shared/topologies (docs/topology.md); anything else is a
 * "PATH:LINE: error: ..." rather than a guess. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/dp_util.h"
#include "topo/topo_int.h"
#include "common/dp_banned.h"

#define LINE_MAX_LEN 4096

struct lines {
	const char *p, *end;
	long no;
	char line[LINE_MAX_LEN];
};

static void lines_init(struct lines *l, const struct topo_src_ctx *ctx)
{
	l->p = ctx->buf;
	l->end = ctx->buf + ctx->len;
	l->no = 0;
}

/* Next line without ANSI escapes, CR and trailing blanks; 0 at the end. */
static int next_line(struct lines *l)
{
	size_t n = 0;

	if (l->p >= l->end)
		return 0;
	l->no++;
	while (l->p < l->end && *l->p != '\n') {
		char c = *l->p++;

		if (c == '\033' && l->p < l->end && *l->p == '[') {
			while (l->p < l->end && *l->p != '\n' && !isalpha((unsigned char)*l->p))
				l->p++;
			if (l->p < l->end && *l->p != '\n')
				l->p++;
			continue;
		}
		if (c == '\r' || c == '\0')
			continue;
		if (n < sizeof(l->line) - 1)
			l->line[n++] = c;
	}
	if (l->p < l->end)
		l->p++;
	while (n && isspace((unsigned char)l->line[n - 1]))
		n--;
	l->line[n] = '\0';
	return 1;
}

static const char *skip_ws(const char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	return s;
}

/* "key: value" with optional indentation; returns the value or NULL. */
static const char *kv(const char *line, const char *key)
{
	const char *s = skip_ws(line);
	size_t n = strlen(key);

	if (strncmp(s, key, n) != 0 || s[n] != ':')
		return NULL;
	return skip_ws(s + n + 1);
}

/* Quoted name after @prefix: "CA 'mlx5_0'" -> mlx5_0.  0 or -EINVAL. */
static int quoted(const char *s, char *out, size_t len)
{
	const char *a = strchr(s, '\''), *b = a ? strchr(a + 1, '\'') : NULL;

	if (!a || !b || b == a + 1 || (size_t)(b - a) > len)
		return -EINVAL;
	memcpy(out, a + 1, (size_t)(b - a - 1));
	out[b - a - 1] = '\0';
	return 0;
}

static int count_substr(const char *buf, size_t len, const char *needle)
{
	size_t n = strlen(needle);
	int c = 0;

	for (const char *p = buf; p && (size_t)(p - buf) + n <= len;) {
		p = memmem(p, len - (size_t)(p - buf), needle, n);
		if (p) {
			c++;
			p += n;
		}
	}
	return c;
}

static int starts_line(const char *buf, size_t len, const char *prefix)
{
	size_t n = strlen(prefix);

	for (size_t i = 0; i + n <= len; i++)
		if ((i == 0 || buf[i - 1] == '\n') && memcmp(buf + i, prefix, n) == 0)
			return 1;
	return 0;
}

static void mark_port_list(struct dp_topo *t, const char *src)
{
	t->port_list = 1;
	topo_strlcpy(t->port_list_src, src, sizeof(t->port_list_src));
	topo_add_source(t, src);
}

static struct topo_nic *ib_nic(struct dp_topo *t, struct lines *l, const char *name,
			       const char *path, struct dp_err *err)
{
	struct topo_nic *n = topo_nic_by_name(t, name);

	if (n) {
		topo_parse_err(err, path, l->no, "device '%s' listed twice", name);
		return NULL;
	}
	n = topo_nic_add(t, err);
	if (!n)
		return NULL;
	topo_strlcpy(n->pub.name, name, sizeof(n->pub.name));
	n->pub.rdma = 1;
	n->listed = 1;
	return n;
}

/* A device whose port state or link layer never came: the output was cut short. */
static int no_state(struct dp_topo *t, const struct lines *l, const char *path, struct dp_err *err)
{
	for (int i = 0; i < t->nnics; i++)
		if (t->nics[i].pub.state == DP_TOPO_STATE_UNKNOWN ||
		    t->nics[i].pub.link_layer == DP_TOPO_LL_UNKNOWN)
			return topo_parse_err(err, path, l->no + 1,
					      "truncated: no port state or link layer for '%s'",
					      t->nics[i].pub.name);
	return 0;
}

/* ---- ibstat --------------------------------------------------------------- */

static int load_ibstat(struct dp_topo *t, const struct topo_src_ctx *ctx, struct dp_err *err)
{
	struct topo_nic *n = NULL;
	struct lines l;
	int port = 0, first_port = 0;

	lines_init(&l, ctx);
	while (next_line(&l)) {
		const char *v;
		char name[DP_TOPO_NAME_LEN];

		if (!l.line[0])
			continue;
		if (strncmp(l.line, "CA '", 4) == 0) {
			if (quoted(l.line, name, sizeof(name)))
				return topo_parse_err(err, ctx->path, l.no, "bad CA line");
			n = ib_nic(t, &l, name, ctx->path, err);
			if (!n)
				return -EBADMSG;
			port = first_port = 0;
			continue;
		}
		if (!n)
			return topo_parse_err(err, ctx->path, l.no,
					      "expected \"CA '<name>'\", found \"%.40s\"", l.line);
		if ((v = kv(l.line, "CA type"))) {
			topo_strlcpy(n->pub.model, v, sizeof(n->pub.model));
		} else if (strncmp(skip_ws(l.line), "Port ", 5) == 0 &&
			   l.line[strlen(l.line) - 1] == ':') {
			long p = strtol(skip_ws(l.line) + 5, NULL, 10);

			if (p <= 0 || p > 255)
				return topo_parse_err(err, ctx->path, l.no, "bad port number");
			port = (int)p;
			if (!first_port) {
				first_port = port;
				n->pub.port = port;
			}
		} else if (port && port == first_port) {
			/* attributes of the first port describe the NIC */
			if ((v = kv(l.line, "State"))) {
				n->pub.state = topo_parse_state(v);
			} else if ((v = kv(l.line, "Rate"))) {
				if (topo_parse_rate(v, &n->pub.rate_gbps))
					return topo_parse_err(err, ctx->path, l.no,
							      "bad rate \"%s\"", v);
			} else if ((v = kv(l.line, "Link layer"))) {
				n->pub.link_layer = topo_parse_link_layer(v);
			}
		}
	}
	if (!t->nnics)
		return topo_parse_err(err, ctx->path, l.no, "no CA found");
	if (no_state(t, &l, ctx->path, err))
		return -EBADMSG;
	mark_port_list(t, "ibstat");
	return 0;
}

static int detect_ibstat(const char *buf, size_t len)
{
	return starts_line(buf, len, "CA '") ? 90 : 0;
}

/* ---- ibstatus ------------------------------------------------------------- */

static int load_ibstatus(struct dp_topo *t, const struct topo_src_ctx *ctx, struct dp_err *err)
{
	struct topo_nic *n = NULL;
	int skip = 0;
	struct lines l;

	lines_init(&l, ctx);
	while (next_line(&l)) {
		const char *v;
		char name[DP_TOPO_NAME_LEN];

		if (!l.line[0])
			continue;
		if (strncmp(l.line, "Infiniband device '", 19) == 0) {
			const char *pp = strstr(l.line, "' port ");

			if (quoted(l.line, name, sizeof(name)) || !pp)
				return topo_parse_err(err, ctx->path, l.no, "bad device line");
			/* one NIC per device; later ports of it are skipped */
			skip = topo_nic_by_name(t, name) != NULL;
			if (skip)
				continue;
			n = ib_nic(t, &l, name, ctx->path, err);
			if (!n)
				return -EBADMSG;
			n->pub.port = (int)strtol(pp + 7, NULL, 10);
			continue;
		}
		if (!n)
			return topo_parse_err(
				err, ctx->path, l.no,
				"expected \"Infiniband device '<name>' port N status:\"");
		if (skip)
			continue;
		if ((v = kv(l.line, "state"))) {
			n->pub.state = topo_parse_state(v);
		} else if ((v = kv(l.line, "rate"))) {
			if (topo_parse_rate(v, &n->pub.rate_gbps))
				return topo_parse_err(err, ctx->path, l.no, "bad rate \"%s\"", v);
		} else if ((v = kv(l.line, "link_layer"))) {
			n->pub.link_layer = topo_parse_link_layer(v);
		}
	}
	if (!t->nnics)
		return topo_parse_err(err, ctx->path, l.no, "no device found");
	if (no_state(t, &l, ctx->path, err))
		return -EBADMSG;
	mark_port_list(t, "ibstatus");
	return 0;
}

static int detect_ibstatus(const char *buf, size_t len)
{
	return starts_line(buf, len, "Infiniband device '") ? 90 : 0;
}

/* ---- ibv_devinfo ------------------------------------------------------------ */

static double ibv_speed(const char *v)
{
	char *end;
	double s = strtod(v, &end);

	return end != v && s > 0 && s < 10000 ? s : 0;
}

static int load_ibv_devinfo(struct dp_topo *t, const struct topo_src_ctx *ctx, struct dp_err *err)
{
	struct topo_nic *n = NULL;
	int port = 0, width = 0;
	double speed = 0;
	struct lines l;

	lines_init(&l, ctx);
	while (next_line(&l)) {
		const char *v;

		if (!l.line[0])
			continue;
		if ((v = kv(l.line, "hca_id"))) {
			if (n && width && speed > 0)
				n->pub.rate_gbps = width * speed;
			if (!*v)
				return topo_parse_err(err, ctx->path, l.no, "empty hca_id");
			n = ib_nic(t, &l, v, ctx->path, err);
			if (!n)
				return -EBADMSG;
			port = width = 0;
			speed = 0;
			continue;
		}
		if (!n)
			return topo_parse_err(err, ctx->path, l.no,
					      "expected \"hca_id:\", found \"%.40s\"", l.line);
		if ((v = kv(l.line, "vendor_part_id"))) {
			(void)snprintf(n->pub.model, sizeof(n->pub.model), "MT%s", v);
		} else if ((v = kv(l.line, "port"))) {
			long p = strtol(v, NULL, 10);

			if (p <= 0 || p > 255)
				return topo_parse_err(err, ctx->path, l.no, "bad port number");
			if (!port)
				n->pub.port = (int)p;
			port = port ? port : (int)p;
			if (p != port)
				port = -1; /* a later port: ignored */
		} else if (port > 0) {
			if ((v = kv(l.line, "state")))
				n->pub.state = topo_parse_state(v);
			else if ((v = kv(l.line, "link_layer")))
				n->pub.link_layer = topo_parse_link_layer(v);
			else if ((v = kv(l.line, "active_width")))
				width = (int)strtol(v, NULL, 10);
			else if ((v = kv(l.line, "active_speed")))
				speed = ibv_speed(v);
		}
	}
	if (n && width && speed > 0)
		n->pub.rate_gbps = width * speed;
	if (!t->nnics)
		return topo_parse_err(err, ctx->path, l.no, "no hca_id found");
	if (no_state(t, &l, ctx->path, err))
		return -EBADMSG;
	mark_port_list(t, "ibv_devinfo");
	return 0;
}

static int detect_ibv_devinfo(const char *buf, size_t len)
{
	return starts_line(buf, len, "hca_id:") ? 90 : 0;
}

/* ---- nvidia-smi nvlink -s -------------------------------------------------- */

static int load_smi_nvlink(struct dp_topo *t, const struct topo_src_ctx *ctx, struct dp_err *err)
{
	struct topo_gpu *g = NULL;
	struct lines l;

	lines_init(&l, ctx);
	while (next_line(&l)) {
		const char *s = skip_ws(l.line);

		if (!*s)
			continue;
		if (strncmp(s, "GPU ", 4) == 0) {
			char *end;
			long idx = strtol(s + 4, &end, 10);
			const char *u = strstr(s, " (UUID:");

			if (end == s + 4 || *end != ':' || idx != t->ngpus)
				return topo_parse_err(err, ctx->path, l.no,
						      "expected \"GPU %d: <name> (UUID: ...)\"",
						      t->ngpus);
			g = topo_gpu_add(t, err);
			if (!g)
				return -ENOMEM;
			end = (char *)skip_ws(end + 1);
			(void)snprintf(g->pub.model, sizeof(g->pub.model), "%.*s",
				       (int)(u && u > end ? u - end : (long)strlen(end)), end);
			continue;
		}
		if (strncmp(s, "Link ", 5) == 0) {
			const char *c = strchr(s, ':');
			char *end;
			double gbs;

			if (!g || !c)
				return topo_parse_err(err, ctx->path, l.no,
						      "\"Link N:\" line outside a GPU block");
			c = skip_ws(c + 1);
			gbs = strtod(c, &end);
			if (end == c) {
				continue; /* "<inactive>" */
			}
			if (gbs < 0 || gbs > 10000 || strncmp(skip_ws(end), "GB/s", 4) != 0)
				return topo_parse_err(err, ctx->path, l.no, "bad link speed \"%s\"",
						      c);
			if (gbs > 0) {
				g->pub.nvlinks++;
				g->pub.nvlink_gbps += gbs;
			}
			continue;
		}
		return topo_parse_err(err, ctx->path, l.no, "unexpected line \"%.40s\"", s);
	}
	if (!t->ngpus)
		return topo_parse_err(err, ctx->path, l.no, "no GPU found");
	topo_add_source(t, "nvidia-smi-nvlink");
	return 0;
}

static int detect_smi_nvlink(const char *buf, size_t len)
{
	return starts_line(buf, len, "GPU 0: ") && count_substr(buf, len, "Link 0: ") ? 90 : 0;
}

/* ---- nvidia-smi topo -m / -mp ---------------------------------------------- */

#define MAX_COLS 512

/* Split on blanks (tab- and space-aligned outputs both work). */
static int split(char *s, char **tok, int max)
{
	int n = 0;
	char *save = NULL;

	for (char *p = strtok_r(s, " \t", &save); p && n < max; p = strtok_r(NULL, " \t", &save))
		tok[n++] = p;
	return n;
}

static int cell_dist(const char *c, int *nv)
{
	static const struct {
		const char *s;
		enum dp_topo_dist d;
	} cells[] = {
		{ "PIX", DP_TOPO_DIST_PIX }, { "PXB", DP_TOPO_DIST_PXB },
		{ "PHB", DP_TOPO_DIST_PHB }, { "NODE", DP_TOPO_DIST_NODE },
		{ "SYS", DP_TOPO_DIST_SYS }, { "SOC", DP_TOPO_DIST_SYS },
		{ "PXN", DP_TOPO_DIST_PXB },
	};

	*nv = 0;
	if (strcmp(c, "X") == 0)
		return 0;
	if (strncmp(c, "NV", 2) == 0 && isdigit((unsigned char)c[2])) {
		char *end;
		long v = strtol(c + 2, &end, 10);

		if (*end || v <= 0 || v > 1024)
			return -1;
		*nv = (int)v;
		return 0;
	}
	for (size_t i = 0; i < DP_ARRAY_SIZE(cells); i++)
		if (strcmp(c, cells[i].s) == 0)
			return (int)cells[i].d;
	return -1;
}

static int is_dev_col(const char *s)
{
	return strcmp(s, "CPU") != 0 && strcmp(s, "NUMA") != 0 && strcmp(s, "GPU") != 0;
}

struct smi {
	char *cols[MAX_COLS];
	char colbuf[LINE_MAX_LEN];
	int ncols;
	int gpucol[MAX_COLS]; /* column -> GPU record index, -1 */
	int niccol[MAX_COLS]; /* column -> NIC record index, -1 */
	char seen[MAX_COLS];  /* the column's row was read */
};

static int smi_header(struct dp_topo *t, struct smi *m, struct lines *l, const char *path,
		      struct dp_err *err)
{
	char *tok[MAX_COLS];
	int n;

	topo_strlcpy(m->colbuf, l->line, sizeof(m->colbuf));
	n = split(m->colbuf, tok, MAX_COLS);
	m->ncols = 0;
	for (int i = 0; i < n && is_dev_col(tok[i]); i++) {
		m->cols[m->ncols] = tok[i];
		m->gpucol[m->ncols] = -1;
		m->niccol[m->ncols] = -1;
		if (strncmp(tok[i], "GPU", 3) == 0 && isdigit((unsigned char)tok[i][3])) {
			struct topo_gpu *g = topo_gpu_add(t, err);

			if (!g)
				return -ENOMEM;
			m->gpucol[m->ncols] = (int)(g - t->gpus);
		} else {
			struct topo_nic *nic = topo_nic_add(t, err);

			if (!nic)
				return -ENOMEM;
			/* old drivers name the columns mlx5_k; new ones NICn + legend */
			if (!(strncmp(tok[i], "NIC", 3) == 0 && isdigit((unsigned char)tok[i][3])))
				topo_strlcpy(nic->pub.name, tok[i], sizeof(nic->pub.name));
			m->niccol[m->ncols] = (int)(nic - t->nics);
		}
		m->ncols++;
	}
	if (!t->ngpus)
		return topo_parse_err(err, path, l->no, "no GPU column in the header");
	return 0;
}

static int smi_row(struct dp_topo *t, struct smi *m, struct lines *l, const char *path,
		   struct dp_err *err)
{
	char *tok[MAX_COLS + 8];
	int n, col = -1, nvmax = 0;
	struct topo_gpu *g = NULL;

	n = split(l->line, tok, MAX_COLS + 8);
	if (!n)
		return 0;
	for (int i = 0; i < m->ncols; i++)
		if (strcmp(tok[0], m->cols[i]) == 0)
			col = i;
	if (col < 0)
		return topo_parse_err(err, path, l->no, "row \"%s\" is not a column of the header",
				      tok[0]);
	if (n < m->ncols + 1)
		return topo_parse_err(err, path, l->no, "row %s: expected %d cells, found %d",
				      tok[0], m->ncols, n - 1);
	if (m->seen[col])
		return topo_parse_err(err, path, l->no, "row %s appears twice", tok[0]);
	m->seen[col] = 1;
	if (m->gpucol[col] >= 0)
		g = &t->gpus[m->gpucol[col]];
	for (int i = 0; i < m->ncols; i++) {
		int nv, d = cell_dist(tok[i + 1], &nv);

		if (d < 0)
			return topo_parse_err(err, path, l->no, "row %s: unknown cell \"%s\"",
					      tok[0], tok[i + 1]);
		if (!g)
			continue;
		if (nv > nvmax)
			nvmax = nv;
		if (m->niccol[i] >= 0 && d > 0) {
			int rc = topo_gpu_set_mdist(g, m->niccol[i], (enum dp_topo_dist)d, err);

			if (rc)
				return rc;
		}
	}
	if (!g)
		return 0;
	/* with NVSwitch every pair shows all of a GPU's links: take the largest */
	g->pub.nvlinks = nvmax;
	if (n > m->ncols + 1) {
		const char *cpus = tok[m->ncols + 1];
		long numa = -1;

		if (n > m->ncols + 2 && isdigit((unsigned char)tok[m->ncols + 2][0])) {
			char *end;

			numa = strtol(tok[m->ncols + 2], &end, 10);
			if (*end || numa >= TOPO_MAX_NUMA)
				numa = -1;
		}
		if (numa >= 0) {
			struct dp_topo_numa *nm = topo_numa_get(t, (int)numa, err);

			if (!nm)
				return -ENOMEM;
			g->pub.numa = (int)numa;
			if (!nm->cpus[0] && isdigit((unsigned char)cpus[0])) {
				topo_strlcpy(nm->cpus, cpus, sizeof(nm->cpus));
				nm->ncpus = topo_cpulist_count(cpus);
			}
		}
	}
	return 0;
}

/* Every column of the header must have had its row: else the file was cut. */
static int smi_complete(const struct smi *m, long line, const char *path, struct dp_err *err)
{
	for (int i = 0; i < m->ncols; i++)
		if (!m->seen[i])
			return topo_parse_err(err, path, line, "truncated matrix: no row for %s",
					      m->cols[i]);
	return 0;
}

static int load_smi_topo(struct dp_topo *t, const struct topo_src_ctx *ctx, struct dp_err *err)
{
	struct smi *m = calloc(1, sizeof(*m));
	int rc = 0, legend = 0, header = 0;
	struct lines l;

	if (!m)
		return dp_err_set(err, ENOMEM, "topo: out of memory");
	lines_init(&l, ctx);
	while (!rc && next_line(&l)) {
		const char *s = skip_ws(l.line);

		if (!*s)
			continue;
		if (strncmp(s, "Legend:", 7) == 0 || strncmp(s, "NIC Legend:", 11) == 0) {
			if (!legend && header)
				rc = smi_complete(m, l.no, ctx->path, err);
			legend = strncmp(s, "NIC", 3) == 0 ? 2 : 1;
			continue;
		}
		if (legend == 2) {
			/* "NIC3: mlx5_3" */
			char *end;
			long k;

			if (strncmp(s, "NIC", 3) != 0)
				continue;
			k = strtol(s + 3, &end, 10);
			if (end == s + 3 || *end != ':') {
				rc = topo_parse_err(err, ctx->path, l.no, "bad NIC legend line");
				break;
			}
			for (int i = 0, nic = 0; i < m->ncols; i++) {
				if (m->niccol[i] < 0)
					continue;
				if (nic++ == k)
					topo_strlcpy(t->nics[m->niccol[i]].pub.name,
						     skip_ws(end + 1), sizeof(t->nics[0].pub.name));
			}
			continue;
		}
		if (legend)
			continue;
		if (!header) {
			if (l.line[0] != ' ' && l.line[0] != '\t')
				rc = topo_parse_err(err, ctx->path, l.no,
						    "expected the GPU0 GPU1 ... header line");
			else
				rc = smi_header(t, m, &l, ctx->path, err);
			header = 1;
			continue;
		}
		rc = smi_row(t, m, &l, ctx->path, err);
	}
	if (!rc && !header)
		rc = topo_parse_err(err, ctx->path, l.no, "no matrix found");
	if (!rc && !legend)
		rc = smi_complete(m, l.no + 1, ctx->path, err);
	free(m);
	if (!rc)
		topo_add_source(t, "nvidia-smi-topo");
	return rc;
}

static int detect_smi_topo(const char *buf, size_t len)
{
	const char *nl = memchr(buf, '\n', len);
	size_t first = nl ? (size_t)(nl - buf) : len;

	if (!first || (buf[0] != '\t' && buf[0] != ' ' && buf[0] != '\033'))
		return 0;
	return memmem(buf, first, "GPU0", 4) ? 80 : 0;
}

/* ---- lspci -nn ------------------------------------------------------------- */

static int load_lspci(struct dp_topo *t, const struct topo_src_ctx *ctx, struct dp_err *err)
{
	struct lines l;

	lines_init(&l, ctx);
	while (next_line(&l)) {
		char bdf[DP_TOPO_PCI_LEN], *sp, *cl, *vd, desc[DP_TOPO_NAME_LEN * 2];
		unsigned int cls, vendor, dev;

		if (!l.line[0])
			continue;
		sp = strchr(l.line, ' ');
		if (!sp)
			return topo_parse_err(err, ctx->path, l.no,
					      "expected \"BUS:DEV.FN CLASS\"");
		*sp = '\0';
		if (topo_pci_norm(l.line, bdf))
			return topo_parse_err(err, ctx->path, l.no, "bad PCI address \"%s\"",
					      l.line);
		cl = strstr(sp + 1, "]: ");
		if (!cl || cl - (sp + 1) < 6 || cl[-5] != '[' || topo_hex4(cl - 4, &cls))
			return topo_parse_err(err, ctx->path, l.no,
					      "expected \"CLASS [cccc]: \" (lspci -nn)");
		vd = strrchr(cl, '[');
		if (!vd || topo_hex4(vd + 1, &vendor) || vd[5] != ':' || topo_hex4(vd + 6, &dev) ||
		    vd[10] != ']')
			return topo_parse_err(err, ctx->path, l.no,
					      "expected \"[vvvv:dddd]\" (lspci -nn)");
		/* "NVIDIA Corporation GA100 [A100 SXM4 80GB]" -> "A100 SXM4 80GB" */
		(void)snprintf(desc, sizeof(desc), "%.*s", (int)(vd - (cl + 3)), cl + 3);
		for (size_t n = strlen(desc); n && desc[n - 1] == ' ';)
			desc[--n] = '\0';
		if (desc[0] && desc[strlen(desc) - 1] == ']' && strrchr(desc, '[')) {
			char *b = strrchr(desc, '[');

			memmove(desc, b + 1, strlen(b + 1) + 1);
			desc[strlen(desc) - 1] = '\0';
		}
		if ((cls >> 8) == 0x03 && vendor == 0x10de) {
			struct topo_gpu *g = topo_gpu_add(t, err);

			if (!g)
				return -ENOMEM;
			topo_strlcpy(g->pub.pci, bdf, sizeof(g->pub.pci));
			topo_strlcpy(g->pub.model, desc, sizeof(g->pub.model));
			g->pub.pci_device = dev;
		} else if (cls == 0x0680 && vendor == 0x10de) {
			t->nvswitches++;
		} else if ((cls >> 8) == 0x02) {
			struct topo_nic *n = topo_nic_add(t, err);

			if (!n)
				return -ENOMEM;
			topo_strlcpy(n->pub.pci, bdf, sizeof(n->pub.pci));
			topo_strlcpy(n->pub.model, desc, sizeof(n->pub.model));
			if (cls == 0x0207) {
				n->pub.link_layer = DP_TOPO_LL_IB;
				n->pub.rdma = 1;
			} else if (cls == 0x0200) {
				n->pub.link_layer = DP_TOPO_LL_ETH;
			}
		}
	}
	if (!l.no)
		return topo_parse_err(err, ctx->path, 0, "empty file");
	topo_add_source(t, "lspci");
	return 0;
}

static int detect_lspci(const char *buf, size_t len)
{
	char first[64], bdf[DP_TOPO_PCI_LEN];
	size_t n = 0;

	while (n < len && n < sizeof(first) - 1 && buf[n] != ' ' && buf[n] != '\n') {
		first[n] = buf[n];
		n++;
	}
	first[n] = '\0';
	return n < len && buf[n] == ' ' && topo_pci_norm(first, bdf) == 0 ? 70 : 0;
}

const struct dp_topo_source topo_src_ibstat = {
	.name = "ibstat",
	.flags = TOPO_SRC_FILE,
	.detect = detect_ibstat,
	.probe = topo_src_no_probe,
	.load = load_ibstat,
};

const struct dp_topo_source topo_src_ibstatus = {
	.name = "ibstatus",
	.flags = TOPO_SRC_FILE,
	.detect = detect_ibstatus,
	.probe = topo_src_no_probe,
	.load = load_ibstatus,
};

const struct dp_topo_source topo_src_ibv_devinfo = {
	.name = "ibv_devinfo",
	.flags = TOPO_SRC_FILE,
	.detect = detect_ibv_devinfo,
	.probe = topo_src_no_probe,
	.load = load_ibv_devinfo,
};

const struct dp_topo_source topo_src_smi_nvlink = {
	.name = "nvidia-smi-nvlink",
	.flags = TOPO_SRC_FILE,
	.detect = detect_smi_nvlink,
	.probe = topo_src_no_probe,
	.load = load_smi_nvlink,
};

const struct dp_topo_source topo_src_smi_topo = {
	.name = "nvidia-smi-topo",
	.flags = TOPO_SRC_FILE,
	.detect = detect_smi_topo,
	.probe = topo_src_no_probe,
	.load = load_smi_topo,
};

const struct dp_topo_source topo_src_lspci = {
	.name = "lspci",
	.flags = TOPO_SRC_FILE,
	.detect = detect_lspci,
	.probe = topo_src_no_probe,
	.load = load_lspci,
};
