/* launcher/preflight.c - judging pre-flight reports against the plan.
 *
 * The clock check is bounded, not estimated: the worker stamps its clock
 * between the controller's probe and the controller's receipt of the report,
 * so its offset lies in [clock - t_recv, clock - t_sent].  A node fails only
 * when that whole interval is outside +-max_clock_s, so a slow network never
 * fails a correct clock (it only widens the interval).
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "launcher/dp_launcher.h"
#include "launcher/dp_preflight.h"
#include "topo/dp_topo.h"
#include "common/dp_banned.h"

static const char *const names[] = { "gpus", "nics", "topology", "disk", "clock", "version" };

#define NNAMES (sizeof(names) / sizeof(names[0]))

int dp_preflight_parse(const char *s, unsigned *out, struct dp_err *err)
{
	unsigned bits = 0;

	if (!s || strcmp(s, "none") == 0 || !*s) {
		*out = 0;
		return 0;
	}
	if (strcmp(s, "all") == 0) {
		*out = DP_PF_ALL;
		return 0;
	}
	for (const char *p = s; *p;) {
		size_t n = strcspn(p, ","), i;

		for (i = 0; i < NNAMES; i++)
			if (strlen(names[i]) == n && strncmp(p, names[i], n) == 0)
				break;
		if (i == NNAMES)
			return dp_err_set(err, EINVAL,
					  "preflight: unknown check '%.*s' (gpus, nics, topology, "
					  "disk, clock, version, all, none)",
					  (int)n, p);
		bits |= 1u << i;
		p += n;
		if (*p == ',')
			p++;
	}
	*out = bits;
	return 0;
}

int dp_preflight_format(unsigned checks, char *buf, size_t len)
{
	size_t off = 0;

	if (!len)
		return -E2BIG;
	buf[0] = '\0';
	if (!(checks & DP_PF_ALL)) {
		int n = snprintf(buf, len, "none");

		return n < 0 || (size_t)n >= len ? -E2BIG : 0;
	}
	for (size_t i = 0; i < NNAMES; i++) {
		int n;

		if (!(checks & (1u << i)))
			continue;
		n = snprintf(buf + off, len - off, "%s%s", off ? "," : "", names[i]);
		if (n < 0 || (size_t)n >= len - off)
			return -E2BIG;
		off += (size_t)n;
	}
	return 0;
}

unsigned dp_preflight_from_recipe(unsigned recipe_bits)
{
	unsigned b = 0;

	b |= recipe_bits & DP_RECIPE_PREFLIGHT_GPUS ? DP_PF_GPUS : 0;
	b |= recipe_bits & DP_RECIPE_PREFLIGHT_NICS ? DP_PF_NICS : 0;
	b |= recipe_bits & DP_RECIPE_PREFLIGHT_TOPOLOGY ? DP_PF_TOPOLOGY : 0;
	b |= recipe_bits & DP_RECIPE_PREFLIGHT_DISK ? DP_PF_DISK : 0;
	b |= recipe_bits & DP_RECIPE_PREFLIGHT_CLOCK ? DP_PF_CLOCK : 0;
	b |= recipe_bits & DP_RECIPE_PREFLIGHT_VERSION ? DP_PF_VERSION : 0;
	return b;
}

struct out {
	char *buf;
	size_t len, off;
};

static void say(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void say(struct out *o, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (o->off + 1 >= o->len)
		return;
	if (o->off) {
		n = snprintf(o->buf + o->off, o->len - o->off, "; ");
		o->off += n > 0 ? (size_t)n : 0;
		if (o->off >= o->len) {
			o->off = o->len - 1;
			return;
		}
	}
	va_start(ap, fmt);
	n = vsnprintf(o->buf + o->off, o->len - o->off, fmt, ap);
	va_end(ap);
	if (n > 0)
		o->off += (size_t)n < o->len - o->off ? (size_t)n : o->len - o->off - 1;
}

int dp_preflight_judge(const struct dp_preflight_plan *p, int ranks,
		       const struct dp_ctl_preflight *r, double t_sent, double t_recv, char *why,
		       size_t len)
{
	struct out bad = { why, len, 0 };
	char notes[256];
	struct out note = { notes, sizeof(notes), 0 };
	unsigned c = p->checks;

	if (len)
		why[0] = '\0';
	notes[0] = '\0';
	if (r->error[0])
		say(&bad, "could not check: %s", r->error);
	if ((c & (DP_PF_GPUS | DP_PF_NICS | DP_PF_TOPOLOGY)) && r->gpus == 0) {
		if (p->need_gpu && (c & DP_PF_GPUS))
			say(&bad, "no GPU found; the recipe trains on cuda");
		else
			say(&note, "skipped: no GPU");
	} else if ((c & DP_PF_GPUS) && r->gpus > 0 && r->gpus < ranks) {
		say(&bad, "%d GPU%s, the plan puts %d ranks here", r->gpus, r->gpus == 1 ? "" : "s",
		    ranks);
	}
	if ((c & DP_PF_NICS) && p->nics > 0 && r->nics >= 0 && r->nics != p->nics)
		say(&bad, "%d usable RDMA NIC%s, the recipe says %d", r->nics,
		    r->nics == 1 ? "" : "s", p->nics);
	if ((c & DP_PF_TOPOLOGY) && r->topo[0])
		say(&bad, "topology: %s", r->topo);
	if ((c & DP_PF_DISK) && (r->checks & DP_PF_DISK)) {
		double gb = (double)r->disk_free / 1e9;

		if (gb < p->min_disk_gb)
			say(&bad, "%.1f GB free at %s, need %g GB", gb, r->disk_path,
			    p->min_disk_gb);
	}
	if (c & DP_PF_CLOCK) {
		double lo = r->clock - t_recv, hi = r->clock - t_sent;

		if (lo > p->max_clock_s || hi < -p->max_clock_s)
			say(&bad, "clock off by %+.3f s (limit %g s)", lo > 0 ? lo : hi,
			    p->max_clock_s);
	}
	if ((c & DP_PF_VERSION) && p->version && strcmp(r->version, p->version) != 0)
		say(&bad, "version '%s', dpctl is '%s'", r->version, p->version);
	if (bad.off)
		return 1;
	if (len)
		(void)snprintf(why, len, "%s", notes);
	return 0;
}

void dp_preflight_summarize(const struct dp_topo *t, unsigned checks, struct dp_ctl_preflight *r)
{
	int nics = 0;

	r->gpus = dp_topo_gpu_count(t);
	for (int i = 0; i < dp_topo_nic_count(t); i++) {
		const struct dp_topo_nic *n = dp_topo_nic(t, i);

		nics += n && n->usable;
	}
	r->nics = nics;
	r->topo[0] = '\0';
	if ((checks & DP_PF_TOPOLOGY) && r->gpus > 0) {
		const struct dp_topo *one[1] = { t };
		struct dp_topo_report rep = { 0 };

		if (dp_topo_validate(one, 1, &rep, NULL) != 0) {
			(void)snprintf(r->topo, sizeof(r->topo), "validation ran out of memory");
			return;
		}
		for (int i = 0; i < rep.nchecks; i++) {
			if (rep.checks[i].status != DP_TOPO_FAIL)
				continue;
			(void)snprintf(r->topo, sizeof(r->topo), "%.31s: %.200s",
				       rep.checks[i].name, rep.checks[i].detail);
			break;
		}
		dp_topo_report_release(&rep);
	}
}

/* ---- topo validate RECIPE ---------------------------------------------------- */

struct sig {
	int gpus, nics;
	char model[DP_TOPO_NAME_LEN];
};

static void node_sig(const struct dp_preflight_node *x, struct sig *s)
{
	const struct dp_topo_gpu *g = x->topo ? dp_topo_gpu(x->topo, 0) : NULL;

	s->gpus = x->gpus;
	s->nics = x->nics;
	(void)snprintf(s->model, sizeof(s->model), "%s", g ? g->model : "");
}

static int sig_equal(const struct sig *a, const struct sig *b)
{
	return a->gpus == b->gpus && a->nics == b->nics && strcmp(a->model, b->model) == 0;
}

int dp_preflight_nodes_judge(const struct dp_preflight_plan *p, int ranks,
			     struct dp_preflight_node *nodes, int n)
{
	int nbad = 0, ref = -1, refcount = 0;

	for (int i = 0; i < n; i++) {
		struct dp_preflight_node *x = &nodes[i];
		struct dp_ctl_preflight r;

		memset(&r, 0, sizeof(r));
		x->gpus = x->nics = -1;
		if (!x->topo) {
			(void)snprintf(x->why, sizeof(x->why), "%s",
				       x->error ? x->error : "no topology");
			x->ok = 0;
			continue;
		}
		dp_preflight_summarize(x->topo, p->checks, &r);
		x->gpus = r.gpus;
		x->nics = r.nics;
		x->ok = !dp_preflight_judge(p, ranks, &r, 0, 0, x->why, sizeof(x->why));
	}
	/* the most common signature is the reference (ties: the first node) */
	for (int i = 0; i < n; i++) {
		struct sig a, b;
		int count = 0;

		if (!nodes[i].topo)
			continue;
		node_sig(&nodes[i], &a);
		for (int j = 0; j < n; j++) {
			if (!nodes[j].topo)
				continue;
			node_sig(&nodes[j], &b);
			count += sig_equal(&a, &b);
		}
		if (count > refcount)
			ref = i, refcount = count;
	}
	for (int i = 0; i < n; i++) {
		struct dp_preflight_node *x = &nodes[i];
		struct sig a, b;
		struct out o = { x->why, sizeof(x->why), 0 };

		if (ref >= 0 && x->topo) {
			node_sig(x, &a);
			node_sig(&nodes[ref], &b);
			if (!sig_equal(&a, &b)) {
				if (x->ok)
					x->why[0] = '\0';
				o.off = strlen(x->why);
				say(&o,
				    "differs from the other nodes: %d GPU%s %s, %d NIC%s (%s has %d "
				    "GPU%s %s, %d NIC%s)",
				    a.gpus, a.gpus == 1 ? "" : "s", a.model[0] ? a.model : "-",
				    a.nics, a.nics == 1 ? "" : "s", nodes[ref].host, b.gpus,
				    b.gpus == 1 ? "" : "s", b.model[0] ? b.model : "-", b.nics,
				    b.nics == 1 ? "" : "s");
				x->ok = 0;
			}
		}
		nbad += !x->ok;
	}
	return nbad;
}
