/* launcher/train_report.c - step losses, throughput, merged timeline and
 * bubble of a training run, from the ranks' STEP and TIMELINE frames.
 *
 * Step loss: a rank's share for step k waits in a small ring of pending
 * steps until every rank has sent k, then the shares are added in rank order
 * starting from 0.0 -- exactly the sum `dpworker --train-local` prints, so
 * the two agree bit for bit.  Ranks of one pipeline are never more than a
 * step or two apart (every step ends with PP or gradient traffic between
 * them), so a ring of RING steps is plenty; a step pushed out of the ring
 * unfinished is counted as dropped, never mixed with another.
 *
 * Restarts: a restarted run resumes at its last checkpoint k and reports
 * steps k, k+1, ... again.  Losses are kept by step number, the latest value
 * of a step winning (a resumed run recomputes it bit for bit anyway), and a
 * restart empties the ring: shares of the failed attempt never mix with the
 * new attempt's.
 *
 * Data parallelism: every rank of every replica sends its share (each
 * replica's shares are of its own micro-batches, normalised by the tokens
 * of the whole step) and its embedded tokens, so the sum over all ranks is
 * the step loss and the token count covers every replica.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "launcher/ctl_proto.h"
#include "launcher/dp_train_report.h"
#include "common/dp_banned.h"

#define RING 16

struct pending {
	int used;
	uint64_t step;
	int count;
	double *share; /* [nranks] */
	unsigned char *seen;
	uint64_t tokens;
	double seconds; /* slowest rank */
};

struct rank_tl {
	int have;
	uint64_t step, t0, t1;
	char host[DP_CTL_HOST_MAX];
	struct dp_ctl_tl_op *op;
	size_t n, cap;
};

struct dp_train_report {
	struct dp_train_report_cfg cfg;
	struct pending ring[RING];
	double *loss; /* [cap] by step number, NaN: not complete */
	uint64_t tokens;
	size_t nsteps, cap; /* nsteps: 1 + the highest complete step */
	size_t ncomplete;   /* steps completed, repeats after a restart included */
	size_t dropped;
	double t_start, t_end; /* controller clock */
	struct rank_tl *tl;    /* [nranks] */
};

/* Ranks per pipeline stage of one replica (the EP size). */
static int ep_of(const struct dp_train_report_cfg *c)
{
	int per = c->pp * (c->dp > 1 ? c->dp : 1);

	return per > 0 && c->nranks % per == 0 ? c->nranks / per : 0;
}

static double now_s(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int dp_train_report_new(const struct dp_train_report_cfg *cfg, struct dp_train_report **out,
			struct dp_err *err)
{
	struct dp_train_report *tr;

	if (cfg->nranks < 1)
		return dp_err_set(err, EINVAL, "report: %d ranks", cfg->nranks);
	tr = calloc(1, sizeof(*tr));
	if (!tr)
		return dp_err_set(err, ENOMEM, "report: out of memory");
	tr->cfg = *cfg;
	tr->tl = calloc((size_t)cfg->nranks, sizeof(*tr->tl));
	if (!tr->tl)
		goto nomem;
	for (int i = 0; i < RING; i++) {
		tr->ring[i].share = calloc((size_t)cfg->nranks, sizeof(double));
		tr->ring[i].seen = calloc((size_t)cfg->nranks, 1);
		if (!tr->ring[i].share || !tr->ring[i].seen)
			goto nomem;
	}
	*out = tr;
	return 0;
nomem:
	dp_train_report_free(tr);
	return dp_err_set(err, ENOMEM, "report: out of memory");
}

void dp_train_report_free(struct dp_train_report *tr)
{
	if (!tr)
		return;
	for (int i = 0; i < RING; i++) {
		free(tr->ring[i].share);
		free(tr->ring[i].seen);
	}
	for (int i = 0; tr->tl && i < tr->cfg.nranks; i++)
		free(tr->tl[i].op);
	free(tr->tl);
	free(tr->loss);
	free(tr);
}

static void complete(struct dp_train_report *tr, struct pending *p)
{
	double loss = 0;

	for (int r = 0; r < tr->cfg.nranks; r++)
		loss += p->share[r];
	if (p->step >= tr->cap) {
		size_t cap = tr->cap ? tr->cap : 256;
		double *v;

		while (cap <= p->step && cap < ((size_t)1 << 40))
			cap *= 2;
		v = p->step < cap ? realloc(tr->loss, cap * sizeof(*v)) : NULL;
		if (!v) {
			tr->dropped++;
			p->used = 0;
			return;
		}
		for (size_t i = tr->cap; i < cap; i++)
			v[i] = NAN;
		tr->loss = v;
		tr->cap = cap;
	}
	tr->loss[p->step] = loss;
	if (p->step >= tr->nsteps)
		tr->nsteps = (size_t)p->step + 1;
	tr->tokens += p->tokens;
	tr->t_end = now_s();
	if (++tr->ncomplete == 1)
		tr->t_start = tr->t_end - p->seconds;
	p->used = 0;
	if (tr->cfg.on_step)
		tr->cfg.on_step(tr->cfg.arg, p->step, loss, p->tokens, p->seconds);
}

void dp_train_report_step(struct dp_train_report *tr, int rank, const struct dp_ctl_step *s)
{
	struct pending *p = &tr->ring[s->step % RING];

	if (rank < 0 || rank >= tr->cfg.nranks)
		return;
	if (p->used && p->step != s->step) {
		if (p->step > s->step)
			return; /* a step long gone */
		tr->dropped++;
		p->used = 0;
	}
	if (!p->used) {
		p->used = 1;
		p->step = s->step;
		p->count = 0;
		p->tokens = 0;
		p->seconds = 0;
		memset(p->seen, 0, (size_t)tr->cfg.nranks);
		memset(p->share, 0, (size_t)tr->cfg.nranks * sizeof(double));
	}
	if (p->seen[rank])
		return;
	p->seen[rank] = 1;
	p->share[rank] = s->loss_share;
	p->tokens += s->tokens;
	if (s->seconds > p->seconds)
		p->seconds = s->seconds;
	if (++p->count == tr->cfg.nranks)
		complete(tr, p);
}

void dp_train_report_restart(struct dp_train_report *tr)
{
	for (int i = 0; i < RING; i++)
		tr->ring[i].used = 0;
}

void dp_train_report_timeline(struct dp_train_report *tr, int rank, const char *host,
			      const struct dp_ctl_timeline *t)
{
	struct rank_tl *x;

	if (rank < 0 || rank >= tr->cfg.nranks)
		return;
	x = &tr->tl[rank];
	if (!x->have || x->step != t->step) {
		x->have = 1;
		x->step = t->step;
		x->n = 0;
	}
	x->t0 = t->t0_ns;
	x->t1 = t->t1_ns;
	(void)snprintf(x->host, sizeof(x->host), "%s", host ? host : "?");
	if (x->n + t->n > x->cap) {
		size_t cap = x->cap ? 2 * x->cap : 64;
		struct dp_ctl_tl_op *v;

		while (cap < x->n + t->n)
			cap *= 2;
		v = realloc(x->op, cap * sizeof(*v));
		if (!v)
			return;
		x->op = v;
		x->cap = cap;
	}
	memcpy(x->op + x->n, t->op, t->n * sizeof(*t->op));
	x->n += t->n;
}

static void ev_step(void *arg, int rank, const struct dp_ctl_step *s)
{
	dp_train_report_step(arg, rank, s);
}

static void ev_timeline(void *arg, int rank, const char *host, const struct dp_ctl_timeline *t)
{
	dp_train_report_timeline(arg, rank, host, t);
}

static void ev_restart(void *arg, int attempt)
{
	(void)attempt;
	dp_train_report_restart(arg);
}

const struct dp_ctl_train_events dp_train_report_events = {
	.step = ev_step,
	.timeline = ev_timeline,
	.restart = ev_restart,
};

size_t dp_train_report_nsteps(const struct dp_train_report *tr)
{
	return tr->nsteps;
}

double dp_train_report_loss(const struct dp_train_report *tr, size_t i)
{
	return i < tr->nsteps ? tr->loss[i] : NAN;
}

double dp_train_report_wall_s(const struct dp_train_report *tr)
{
	return tr->nsteps ? tr->t_end - tr->t_start : 0;
}

double dp_train_report_tokens_per_s(const struct dp_train_report *tr)
{
	double w = dp_train_report_wall_s(tr);

	return w > 0 ? (double)tr->tokens / w : 0;
}

/* ---- timeline ------------------------------------------------------------------ */

static int all_timelines(const struct dp_train_report *tr)
{
	for (int r = 0; r < tr->cfg.nranks; r++)
		if (!tr->tl[r].have)
			return 0;
	return 1;
}

/* One clock for all ranks when they all run on one host. */
static int shared_clock(const struct dp_train_report *tr)
{
	for (int r = 1; r < tr->cfg.nranks; r++)
		if (strcmp(tr->tl[r].host, tr->tl[0].host) != 0)
			return 0;
	return 1;
}

/* The time origin of rank @r's events (ns). */
static uint64_t origin(const struct dp_train_report *tr, int r)
{
	uint64_t o = tr->tl[r].t0;

	if (!shared_clock(tr))
		return o;
	for (int i = 0; i < tr->cfg.nranks; i++)
		if (tr->tl[i].t0 < o)
			o = tr->tl[i].t0;
	return o;
}

/* The measured mean durations (seconds) over every op received: b is the
 * full backward, or I + W where the schedule splits it; fb defaults to
 * f + b where no F&B ran. */
static void mean_times(const struct dp_train_report *tr, struct dp_sched_times *t)
{
	double sum[DP_SCHED_OP_FB + 1] = { 0 };
	long cnt[DP_SCHED_OP_FB + 1] = { 0 };

	for (int r = 0; r < tr->cfg.nranks; r++)
		for (size_t i = 0; tr->tl[r].have && i < tr->tl[r].n; i++) {
			const struct dp_ctl_tl_op *o = &tr->tl[r].op[i];

			sum[o->kind] += (double)(o->end_ns - o->start_ns) * 1e-9;
			cnt[o->kind]++;
		}
	t->f = cnt[DP_SCHED_OP_F] ? sum[DP_SCHED_OP_F] / (double)cnt[DP_SCHED_OP_F] : 0;
	t->w = cnt[DP_SCHED_OP_W] ? sum[DP_SCHED_OP_W] / (double)cnt[DP_SCHED_OP_W] : 0;
	if (cnt[DP_SCHED_OP_B])
		t->b = sum[DP_SCHED_OP_B] / (double)cnt[DP_SCHED_OP_B];
	else
		t->b = (cnt[DP_SCHED_OP_I] ? sum[DP_SCHED_OP_I] / (double)cnt[DP_SCHED_OP_I] : 0) +
		       t->w;
	if (t->b < t->w)
		t->b = t->w;
	t->fb = cnt[DP_SCHED_OP_FB] ? sum[DP_SCHED_OP_FB] / (double)cnt[DP_SCHED_OP_FB]
				    : t->f + t->b;
}

/* The run's schedule simulated for durations @t: 0 with *s and *sim
 * (caller frees both), or -errno with @err. */
static int predict(const struct dp_train_report *tr, const struct dp_sched_times *t,
		   struct dp_sched **s, struct dp_sched_sim *sim, struct dp_err *err)
{
	struct dp_sched_cfg sc = { .algo = tr->cfg.algo, .pp = tr->cfg.pp, .micro = tr->cfg.micro };
	int rc = dp_sched_build(&sc, s, err);

	if (rc)
		return rc;
	rc = dp_sched_simulate(*s, t, sim, err);
	if (rc) {
		dp_sched_free(*s);
		*s = NULL;
	}
	return rc;
}

int dp_train_report_bubbles(const struct dp_train_report *tr, struct dp_train_bubble *per_rank,
			    struct dp_train_durations *d, struct dp_err *err)
{
	double span = 0;
	struct dp_sched_times t;
	struct dp_sched_sim sim;
	struct dp_sched *s = NULL;
	int rc, ep;

	/* dp x pp x ep ranks (rank = (dp_rank * pp + pp_rank) * ep + ep_rank):
	 * the ep ranks of a stage in every replica run the same op list, so
	 * each is set against its pp rank */
	if (!all_timelines(tr) || tr->cfg.pp < 1 || ep_of(&tr->cfg) < 1)
		return dp_err_set(err, ENODATA, "report: no timeline from every pipeline rank");
	for (int r = 0; r < tr->cfg.nranks; r++) {
		const struct rank_tl *x = &tr->tl[r];
		uint64_t o = origin(tr, r);
		double busy = 0, end = 0;

		for (size_t i = 0; i < x->n; i++) {
			busy += (double)(x->op[i].end_ns - x->op[i].start_ns) * 1e-9;
			if ((double)(x->op[i].end_ns - o) * 1e-9 > end)
				end = (double)(x->op[i].end_ns - o) * 1e-9;
		}
		per_rank[r].busy = busy;
		if (end > span)
			span = end;
	}
	for (int r = 0; r < tr->cfg.nranks; r++)
		per_rank[r].bubble = span - per_rank[r].busy;
	mean_times(tr, &t);
	if (d)
		*d = (struct dp_train_durations){ .f = t.f, .b = t.b, .w = t.w, .fb = t.fb };
	rc = predict(tr, &t, &s, &sim, err);
	if (rc)
		return rc;
	ep = ep_of(&tr->cfg);
	for (int r = 0; r < tr->cfg.nranks && r / ep % tr->cfg.pp < sim.nranks; r++)
		per_rank[r].predicted = sim.makespan - sim.ranks[r / ep % tr->cfg.pp].busy;
	dp_sched_sim_release(&sim);
	dp_sched_free(s);
	return 0;
}

static json_t *trace_json(const struct dp_train_report *tr)
{
	json_t *root, *ev = json_array();
	char pname[96];
	int shared = shared_clock(tr);

	(void)snprintf(pname, sizeof(pname), "dpctl run: %s pp=%d micro=%d (measured)",
		       dp_sched_algo_name(tr->cfg.algo), tr->cfg.pp, tr->cfg.micro);
	root = json_pack("{s:o, s:s, s:{s:s, s:I}}", "traceEvents", ev ? ev : json_array(),
			 "displayTimeUnit", "ms", "otherData", "clock",
			 shared ? "shared (one host)" : "per rank (step start = 0)", "step",
			 (json_int_t)tr->tl[0].step);
	if (!root || !ev)
		goto fail;
	if (json_array_append_new(ev, json_pack("{s:s, s:s, s:i, s:{s:s}}", "name", "process_name",
						"ph", "M", "pid", 0, "args", "name", pname)))
		goto fail;
	for (int r = 0; r < tr->cfg.nranks; r++) {
		const struct rank_tl *x = &tr->tl[r];
		uint64_t o = origin(tr, r);
		char tname[DP_CTL_HOST_MAX + 32];

		(void)snprintf(tname, sizeof(tname), "rank %d (%s)", r, x->host);
		if (json_array_append_new(ev, json_pack("{s:s, s:s, s:i, s:i, s:{s:s}}", "name",
							"thread_name", "ph", "M", "pid", 0, "tid",
							r, "args", "name", tname)))
			goto fail;
		for (size_t i = 0; i < x->n; i++) {
			const struct dp_ctl_tl_op *p = &x->op[i];
			struct dp_sched_op op = { .kind = p->kind,
						  .leg = p->leg,
						  .leg2 = p->leg2,
						  .micro = p->micro,
						  .micro2 = p->micro2,
						  .peer = -1 };
			static const char *const cat[] = { "F", "B", "I", "W", "FB" };
			char name[64];

			(void)dp_sched_op_str(&op, name, sizeof(name));
			if (json_array_append_new(
				    ev,
				    json_pack("{s:s, s:s, s:s, s:f, s:f, s:i, s:i, s:{s:i, s:i}}",
					      "name", name, "cat", cat[p->kind], "ph", "X", "ts",
					      (double)(p->start_ns - o) / 1e3, "dur",
					      (double)(p->end_ns - p->start_ns) / 1e3, "pid", 0,
					      "tid", r, "args", "leg", p->leg, "micro", p->micro)))
				goto fail;
		}
	}
	return root;
fail:
	json_decref(root);
	return NULL;
}

int dp_train_report_write_trace(const struct dp_train_report *tr, const char *path,
				struct dp_err *err)
{
	json_t *root;
	char tmp[4096];
	int rc = 0;

	if (!all_timelines(tr))
		return dp_err_set(err, ENODATA, "report: no timeline from every rank");
	root = trace_json(tr);
	if (!root)
		return dp_err_set(err, ENOMEM, "report: out of memory");
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
		json_decref(root);
		return dp_err_set(err, ENAMETOOLONG, "report: path '%s' is too long", path);
	}
	if (json_dump_file(root, tmp, JSON_COMPACT) != 0 || rename(tmp, path) != 0) {
		int e = errno ? errno : EIO;

		(void)unlink(tmp);
		rc = dp_err_set(err, e, "report: cannot write '%s': %s", path, strerror(e));
	}
	json_decref(root);
	return rc;
}

/* ---- timeline.svg --------------------------------------------------------------- */

#define SVG_CAP ((size_t)64 << 20)

/* "rank R (pp P, ep E[, dp D])"; plain "rank R" if the layout does not
 * divide (a report made with a wrong nranks). */
static void lane_label(const struct dp_train_report *tr, int r, char *buf, size_t len)
{
	int ep = ep_of(&tr->cfg), pp = tr->cfg.pp;

	if (ep < 1 || pp < 1)
		(void)snprintf(buf, len, "rank %d", r);
	else if (tr->cfg.dp > 1)
		(void)snprintf(buf, len, "rank %d (pp %d, ep %d, dp %d)", r, r / ep % pp, r % ep,
			       r / ep / pp);
	else
		(void)snprintf(buf, len, "rank %d (pp %d, ep %d)", r, r / ep % pp, r % ep);
}

/* @data to @path through a temporary file and rename(). */
static int write_file(const char *path, const char *data, size_t len, struct dp_err *err)
{
	char tmp[4096];
	FILE *f;
	int e = 0;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return dp_err_set(err, ENAMETOOLONG, "report: path '%s' is too long", path);
	errno = 0; /* a short write or close below gives its own errno, or EIO */
	f = fopen(tmp, "w");
	if (!f || fwrite(data, 1, len, f) != len)
		e = errno ? errno : EIO;
	if (f && fclose(f) != 0 && !e)
		e = errno ? errno : EIO;
	if (!e && rename(tmp, path) != 0)
		e = errno;
	if (e) {
		(void)unlink(tmp);
		return dp_err_set(err, e, "report: cannot write '%s': %s", path, strerror(e));
	}
	return 0;
}

/* Everything the chart borrows, freed together: lane[i].box is allocated
 * here (const for the chart only). */
struct svg_parts {
	struct dp_sched_chart_lane *lane; /* [nranks + pp]: measured, then simulated */
	char (*label)[96];		  /* [nranks + pp] */
};

static void svg_parts_release(struct svg_parts *p, size_t n)
{
	for (size_t i = 0; p->lane && i < n; i++)
		free((void *)p->lane[i].box);
	free(p->lane);
	free(p->label);
}

/* The measured lanes: the ops of every rank's recorded step in ms from the
 * earliest op of any rank.  Ranks of one host share CLOCK_MONOTONIC, so
 * their ops are placed on it; with several hosts each rank's ops are
 * placed from its own step start (t0), which is as close as the clocks
 * allow.  *span gets the end of the last op. */
static int measured_lanes(const struct dp_train_report *tr, struct svg_parts *p, double *span)
{
	int n = tr->cfg.nranks, first = -1, shared = 1;
	uint64_t o_min = UINT64_MAX;
	double base = INFINITY;

	for (int r = 0; r < n; r++) {
		if (!tr->tl[r].have)
			continue;
		if (first < 0)
			first = r;
		else if (strcmp(tr->tl[r].host, tr->tl[first].host) != 0)
			shared = 0;
		if (tr->tl[r].t0 < o_min)
			o_min = tr->tl[r].t0;
	}
	if (first < 0)
		return -ENODATA;
	for (int r = 0; r < n; r++) {
		const struct rank_tl *x = &tr->tl[r];
		uint64_t o = shared ? o_min : x->t0;

		for (size_t i = 0; x->have && i < x->n; i++)
			if ((double)(int64_t)(x->op[i].start_ns - o) * 1e-6 < base)
				base = (double)(int64_t)(x->op[i].start_ns - o) * 1e-6;
	}
	if (!isfinite(base))
		base = 0;
	*span = 0;
	for (int r = 0; r < n; r++) {
		const struct rank_tl *x = &tr->tl[r];
		uint64_t o = shared ? o_min : x->t0;
		struct dp_sched_chart_box *box;
		size_t len;

		lane_label(tr, r, p->label[r], sizeof(p->label[r]));
		len = strlen(p->label[r]);
		if (!x->have)
			(void)snprintf(p->label[r] + len, sizeof(p->label[r]) - len,
				       ": no timeline");
		else if (x->step != tr->tl[first].step)
			(void)snprintf(p->label[r] + len, sizeof(p->label[r]) - len, " step %llu",
				       (unsigned long long)x->step);
		p->lane[r].label = p->label[r];
		if (!x->have || !x->n)
			continue;
		box = calloc(x->n, sizeof(*box));
		if (!box)
			return -ENOMEM;
		p->lane[r].box = box;
		for (size_t i = 0; i < x->n; i++) {
			const struct dp_ctl_tl_op *q = &x->op[i];
			struct dp_sched_chart_box *b = &box[i];

			b->op = (struct dp_sched_op){ .kind = q->kind,
						      .leg = q->leg,
						      .leg2 = q->leg2,
						      .micro = q->micro,
						      .micro2 = q->micro2,
						      .peer = -1 };
			b->start = (double)(int64_t)(q->start_ns - o) * 1e-6 - base;
			b->end = b->start + (double)(q->end_ns - q->start_ns) * 1e-6;
			if (b->end > *span)
				*span = b->end;
		}
		p->lane[r].nbox = x->n;
	}
	return 0;
}

/* The simulated lanes (one per pp rank, from p->lane[nranks]) for the
 * measured mean durations; 0 with *nlanes = 0 when it cannot be simulated. */
static int simulated_lanes(const struct dp_train_report *tr, struct svg_parts *p,
			   struct dp_sched_times *t, double *makespan, int *nlanes)
{
	struct dp_sched *s = NULL;
	struct dp_sched_sim sim;
	int rc = 0;

	*nlanes = 0;
	mean_times(tr, t);
	if (tr->cfg.pp < 1 || t->f <= 0 || predict(tr, t, &s, &sim, NULL) != 0)
		return 0;
	for (int k = 0; k < sim.nranks && k < tr->cfg.pp && !rc; k++) {
		const struct dp_sched_rank_stats *rs = &sim.ranks[k];
		int i = tr->cfg.nranks + k;
		struct dp_sched_chart_box *box;

		(void)snprintf(p->label[i], sizeof(p->label[i]), "pp %d simulated", k);
		p->lane[i].label = p->label[i];
		box = calloc(rs->nslots ? rs->nslots : 1, sizeof(*box));
		if (!box) {
			rc = -ENOMEM;
			break;
		}
		p->lane[i].box = box;
		for (size_t j = 0; j < rs->nslots; j++)
			box[j] = (struct dp_sched_chart_box){ .op = *rs->slots[j].op,
							      .start = rs->slots[j].start * 1e3,
							      .end = rs->slots[j].end * 1e3 };
		p->lane[i].nbox = rs->nslots;
		*nlanes = k + 1;
	}
	*makespan = sim.makespan * 1e3;
	dp_sched_sim_release(&sim);
	dp_sched_free(s);
	return rc;
}

int dp_train_report_svg(const struct dp_train_report *tr, struct dp_buf *out, struct dp_err *err)
{
	int n = tr->cfg.nranks, pp = tr->cfg.pp > 0 ? tr->cfg.pp : 0, nsim = 0,
	    ep = ep_of(&tr->cfg);
	size_t nl = (size_t)n + (size_t)pp;
	struct svg_parts p = { .lane = calloc(nl, sizeof(*p.lane)),
			       .label = calloc(nl, sizeof(*p.label)) };
	char title[192], mtitle[160], stitle[192];
	struct dp_sched_chart_group g[2] = {
		{ .id = "measured", .title = mtitle, .lane = p.lane, .nlanes = n },
		{ .id = "simulated", .title = stitle, .lane = p.lane ? p.lane + n : NULL },
	};
	struct dp_sched_chart c = { .title = title, .unit = "ms", .group = g, .ngroups = 1 };
	struct dp_sched_times t = { 0 };
	double span = 0, makespan = 0;
	size_t maxlab = 0;
	int rc, first = 0;

	if (!p.lane || !p.label) {
		rc = dp_err_set(err, ENOMEM, "report: out of memory");
		goto out;
	}
	rc = measured_lanes(tr, &p, &span);
	if (rc == 0)
		rc = simulated_lanes(tr, &p, &t, &makespan, &nsim);
	if (rc == -ENODATA) {
		rc = dp_err_set(err, ENODATA, "report: no timeline from any rank");
		goto out;
	}
	if (rc) {
		rc = dp_err_set(err, -rc, "report: out of memory");
		goto out;
	}
	while (!tr->tl[first].have)
		first++;
	(void)snprintf(title, sizeof(title),
		       "dpctl run: %s pp %d%s%.0d%s%.0d micro %d, step %llu: "
		       "measured vs simulated (ms)",
		       dp_sched_algo_name(tr->cfg.algo), tr->cfg.pp, ep > 1 ? " ep " : "",
		       ep > 1 ? ep : 0, tr->cfg.dp > 1 ? " dp " : "",
		       tr->cfg.dp > 1 ? tr->cfg.dp : 0, tr->cfg.micro,
		       (unsigned long long)tr->tl[first].step);
	(void)snprintf(mtitle, sizeof(mtitle),
		       "measured: the last step every rank recorded, from its earliest op");
	(void)snprintf(stitle, sizeof(stitle),
		       "simulated for the measured mean F %.2f, B %.2f, W %.2f, F&B %.2f ms: "
		       "makespan %.2f ms",
		       t.f * 1e3, t.b * 1e3, t.w * 1e3, t.fb * 1e3, makespan);
	g[1].nlanes = nsim;
	if (nsim)
		c.ngroups = 2;
	c.span = span > makespan ? span : makespan;
	if (c.span <= 0)
		c.span = 1;
	c.scale = 1600.0 / c.span;
	for (int i = 0; i < n + nsim; i++)
		if (strlen(p.label[i]) > maxlab)
			maxlab = strlen(p.label[i]);
	/* 12 px sans-serif: about 6.6 px a character */
	c.label_w = fmax(64.0, 12.0 + 6.6 * (double)maxlab);
	rc = dp_sched_chart_svg(&c, out, err);
out:
	svg_parts_release(&p, nl);
	return rc;
}

int dp_train_report_write_svg(const struct dp_train_report *tr, const char *path,
			      struct dp_err *err)
{
	struct dp_buf b;
	int rc;

	dp_buf_init(&b, SVG_CAP);
	rc = dp_train_report_svg(tr, &b, err);
	if (!rc)
		rc = write_file(path, dp_buf_str(&b), strlen(dp_buf_str(&b)), err);
	dp_buf_release(&b);
	return rc;
}

int dp_train_report_summary(const struct dp_train_report *tr, struct dp_buf *out,
			    struct dp_err *err)
{
	struct dp_train_bubble *b = NULL;
	struct dp_train_durations d = { 0 };
	struct dp_err be = { 0 };
	int rc;

	size_t first = 0;

	while (first < tr->nsteps && isnan(tr->loss[first]))
		first++;
	if (!tr->nsteps)
		rc = dp_buf_addf(out, "training: no step completed\n");
	else
		rc = dp_buf_addf(out,
				 "training: %s %s%.0d%spp %d%s%.0d micro %d, %zu steps in %.2f s: "
				 "loss %.4f -> %.4f, %.0f tokens/s\n",
				 dp_sched_algo_name(tr->cfg.algo), tr->cfg.dp > 1 ? "dp " : "",
				 tr->cfg.dp > 1 ? tr->cfg.dp : 0, tr->cfg.dp > 1 ? " " : "",
				 tr->cfg.pp, ep_of(&tr->cfg) > 1 ? " ep " : "",
				 ep_of(&tr->cfg) > 1 ? ep_of(&tr->cfg) : 0, tr->cfg.micro,
				 tr->nsteps, dp_train_report_wall_s(tr), tr->loss[first],
				 tr->loss[tr->nsteps - 1], dp_train_report_tokens_per_s(tr));
	if (!rc && tr->dropped)
		rc = dp_buf_addf(out, "training: %zu steps not reported by every rank\n",
				 tr->dropped);
	b = calloc((size_t)tr->cfg.nranks, sizeof(*b));
	if (!b)
		return dp_err_set(err, ENOMEM, "report: out of memory");
	if (!rc && dp_train_report_bubbles(tr, b, &d, &be) == 0) {
		rc = dp_buf_addf(out,
				 "bubble of step %llu per rank, measured vs simulated for the "
				 "measured F %.2f, B %.2f, W %.2f, F&B %.2f ms:\n",
				 (unsigned long long)tr->tl[0].step, d.f * 1e3, d.b * 1e3,
				 d.w * 1e3, d.fb * 1e3);
		for (int r = 0; !rc && r < tr->cfg.nranks; r++)
			rc = dp_buf_addf(out,
					 "  rank %d: busy %.2f ms, bubble %.2f ms measured, %.2f "
					 "ms simulated\n",
					 r, b[r].busy * 1e3, b[r].bubble * 1e3,
					 b[r].predicted * 1e3);
	} else if (!rc) {
		rc = dp_buf_addf(out, "bubble: not available (%s)\n", be.msg);
	}
	free(b);
	if (rc)
		return dp_err_set(err, -rc, "report: summary too large");
	return 0;
}
