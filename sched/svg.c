/* sched/svg.c - timelines of compute ops as SVG, in the spirit of the
 * DualPipe README figure: one row (lane) per rank, time on x, one cell per
 * compute op coloured by kind (darker shade: leg 1) and labelled with its
 * micro-batch, idle time left as grey background so bubbles show, and a
 * legend.
 *
 * dp_sched_chart_svg() draws any such chart (groups of lanes, an optional
 * time axis); the simulated schedule of `dpctl schedule --svg` is one group
 * without axis, and the measured timeline of a training run
 * (launcher/train_report.c, RUN_DIR/timeline.svg) is a measured group and a
 * simulated group on one millisecond axis.  The schedule's output is pinned
 * byte for byte by its tests, so a chart with no group ids, group titles or
 * unit must keep drawing exactly what sched_fmt_svg() always drew. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched/sched_int.h"

#define LEFT	64.0 /* default room for "rank N" */
#define TOP	36.0
#define ROW_H	26.0
#define ROW_GAP 6.0
#define RIGHT	16.0
#define TITLE_H 18.0 /* a group title line */
#define AXIS_H	26.0 /* a time axis with its labels */

struct style {
	const char *fill[2]; /* leg 0, leg 1 */
	const char *label;
};

static const struct style styles[] = {
	[DP_SCHED_OP_F] = { { "#f6b26b", "#e69138" }, "F forward" },
	[DP_SCHED_OP_B] = { { "#6fa8dc", "#3d85c6" }, "B backward" },
	[DP_SCHED_OP_I] = { { "#b4a7d6", "#8e7cc3" }, "I backward for input" },
	[DP_SCHED_OP_W] = { { "#93c47d", "#6aa84f" }, "W weight grad" },
	[DP_SCHED_OP_FB] = { { "#e06666", "#cc0000" }, "F&amp;B overlapped" },
};

/* @s as XML character data (also fit for attribute values). */
static int add_escaped(struct dp_buf *b, const char *s)
{
	int rc = 0;

	for (; *s && !rc; s++) {
		switch (*s) {
		case '&':
			rc = dp_buf_adds(b, "&amp;");
			break;
		case '<':
			rc = dp_buf_adds(b, "&lt;");
			break;
		case '>':
			rc = dp_buf_adds(b, "&gt;");
			break;
		case '"':
			rc = dp_buf_adds(b, "&quot;");
			break;
		case '\'':
			rc = dp_buf_adds(b, "&apos;");
			break;
		default:
			/* control characters are not allowed in XML 1.0 */
			rc = dp_buf_add(b, (unsigned char)*s < 0x20 ? "?" : s, 1);
		}
	}
	return rc;
}

/* A line of text: <text ATTRS>escaped @s</text>. */
static int text(struct dp_buf *b, const char *attrs, const char *s)
{
	int rc = dp_buf_addf(b, "<text %s>", attrs);

	if (!rc)
		rc = add_escaped(b, s);
	return rc ? rc : dp_buf_adds(b, "</text>\n");
}

static int cell(struct dp_buf *b, const struct dp_sched_chart *c,
		const struct dp_sched_chart_box *bx, double x0, double y, double scale)
{
	const struct dp_sched_op *op = &bx->op;
	double x = x0 + bx->start * scale, w = (bx->end - bx->start) * scale;
	char label[32], dur[48] = "";
	int rc;

	if (op->kind == DP_SCHED_OP_FB)
		(void)snprintf(label, sizeof(label), "%d|%d", op->micro, op->micro2);
	else
		(void)snprintf(label, sizeof(label), "%d", op->micro);
	if (c->unit)
		(void)snprintf(dur, sizeof(dur), ": %.3f ", bx->end - bx->start);
	rc = dp_buf_addf(b,
			 "<rect class=\"op\" x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" "
			 "fill=\"%s\" stroke=\"#333\" stroke-width=\"0.5\"><title>%s%d %d%s",
			 x, y, w, ROW_H, styles[op->kind].fill[op->leg & 1],
			 sched_kind_name(op->kind), op->leg, op->micro, dur);
	if (!rc && c->unit)
		rc = add_escaped(b, c->unit);
	if (!rc)
		rc = dp_buf_adds(b, "</title></rect>\n");
	if (rc || w < 7.0 * (double)strlen(label))
		return rc;
	return dp_buf_addf(b,
			   "<text x=\"%.2f\" y=\"%.2f\" font-size=\"11\" text-anchor=\"middle\">"
			   "%s</text>\n",
			   x + w / 2, y + ROW_H / 2 + 4, label);
}

/* A tick every 1, 2 or 5 x 10^k units, about ten over @span. */
static double tick_step(double span)
{
	double raw = span / 10, mag = pow(10, floor(log10(raw))), norm = raw / mag;

	if (norm <= 1)
		return mag;
	if (norm <= 2)
		return 2 * mag;
	if (norm <= 5)
		return 5 * mag;
	return 10 * mag;
}

static int axis(struct dp_buf *b, const struct dp_sched_chart *c, double left, double y,
		double span, double scale)
{
	double step = tick_step(span);
	int rc;

	rc = dp_buf_addf(b,
			 "<g class=\"axis\" stroke=\"#333\" stroke-width=\"0.5\">\n"
			 "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\"/>\n",
			 left, y + 4, left + span * scale, y + 4);
	for (long k = 0; !rc && (double)k * step <= span * (1 + 1e-9); k++) {
		double x = left + (double)k * step * scale;

		rc = dp_buf_addf(b,
				 "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\"/>\n"
				 "<text x=\"%.2f\" y=\"%.2f\" font-size=\"10\" stroke=\"none\" "
				 "text-anchor=\"%s\">%g",
				 x, y + 4, x, y + 8, x, y + 19, k ? "middle" : "start",
				 (double)k * step);
		if (!rc && k == 0) {
			rc = dp_buf_adds(b, " ");
			if (!rc)
				rc = add_escaped(b, c->unit);
		}
		if (!rc)
			rc = dp_buf_adds(b, "</text>\n");
	}
	return rc ? rc : dp_buf_adds(b, "</g>\n");
}

static int lanes(struct dp_buf *b, const struct dp_sched_chart *c,
		 const struct dp_sched_chart_group *g, double left, double *y, double span,
		 double scale)
{
	int rc = 0;

	if (g->id) {
		rc = dp_buf_adds(b, "<g id=\"");
		if (!rc)
			rc = add_escaped(b, g->id);
		if (!rc)
			rc = dp_buf_adds(b, "\">\n");
	}
	if (!rc && g->title) {
		char at[64];

		(void)snprintf(at, sizeof(at),
			       "x=\"6\" y=\"%.2f\" font-size=\"12\" "
			       "font-weight=\"bold\"",
			       *y + 12);
		rc = text(b, at, g->title);
		*y += TITLE_H;
	}
	for (int r = 0; r < g->nlanes && !rc; r++) {
		const struct dp_sched_chart_lane *l = &g->lane[r];
		char at[64];

		(void)snprintf(at, sizeof(at), "x=\"6\" y=\"%.2f\" font-size=\"12\"",
			       *y + ROW_H / 2 + 4);
		rc = text(b, at, l->label ? l->label : "");
		if (!rc)
			rc = dp_buf_addf(b,
					 "<rect class=\"idle\" x=\"%.2f\" y=\"%.2f\" "
					 "width=\"%.2f\" height=\"%.2f\" fill=\"#e8e8e8\"/>\n",
					 left, *y, span * scale, ROW_H);
		for (size_t i = 0; i < l->nbox && !rc; i++)
			if (l->box[i].op.kind <= DP_SCHED_OP_FB)
				rc = cell(b, c, &l->box[i], left, *y, scale);
		*y += ROW_H + ROW_GAP;
	}
	if (!rc && c->unit) {
		rc = axis(b, c, left, *y, span, scale);
		*y += AXIS_H;
	}
	if (!rc && g->id)
		rc = dp_buf_adds(b, "</g>\n");
	return rc;
}

/* The chart height for the layout of lanes(). */
static double chart_height(const struct dp_sched_chart *c)
{
	double y = TOP;

	for (int i = 0; i < c->ngroups; i++) {
		y += c->group[i].title ? TITLE_H : 0;
		y += c->group[i].nlanes * (ROW_H + ROW_GAP);
		y += c->unit ? AXIS_H : 0;
	}
	return y + 14 + 30;
}

int dp_sched_chart_svg(const struct dp_sched_chart *c, struct dp_buf *out, struct dp_err *err)
{
	double span = c->span > 0 ? c->span : 1;
	double scale = c->scale > 0 ? c->scale : fmin(24.0, fmax(1.0, 1600.0 / span));
	double left = c->label_w > 0 ? c->label_w : LEFT;
	double width = left + span * scale + RIGHT;
	double height = chart_height(c), y = TOP, legend_y = height - 30;
	char at[32];
	int rc;

	rc = dp_buf_addf(out,
			 "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
			 "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
			 "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\">\n"
			 "<rect width=\"100%%\" height=\"100%%\" fill=\"#ffffff\"/>\n",
			 ceil(width), ceil(height), ceil(width), ceil(height));
	(void)snprintf(at, sizeof(at), "x=\"%.0f\" y=\"22\" font-size=\"14\"", left);
	if (!rc)
		rc = text(out, at, c->title ? c->title : "");
	for (int i = 0; i < c->ngroups && !rc; i++)
		rc = lanes(out, c, &c->group[i], left, &y, span, scale);
	for (int k = 0; k <= DP_SCHED_OP_FB && !rc; k++) {
		double x = left + k * 150.0;

		rc = dp_buf_addf(
			out,
			"<rect x=\"%.0f\" y=\"%.0f\" width=\"14\" height=\"14\" fill=\"%s\" "
			"stroke=\"#333\" stroke-width=\"0.5\"/>\n"
			"<text x=\"%.0f\" y=\"%.0f\" font-size=\"12\">%s</text>\n",
			x, legend_y, styles[k].fill[0], x + 18, legend_y + 12, styles[k].label);
	}
	if (!rc)
		rc = dp_buf_addf(out,
				 "<rect x=\"%.0f\" y=\"%.0f\" width=\"14\" height=\"14\" "
				 "fill=\"#e8e8e8\"/>\n<text x=\"%.0f\" y=\"%.0f\" font-size=\"12\">"
				 "idle (bubble); darker shade: leg 1</text>\n</svg>\n",
				 left + 5 * 150.0, legend_y, left + 5 * 150.0 + 18, legend_y + 12);
	if (rc)
		return dp_err_set(err, -rc, "sched: svg output: %s",
				  rc == -E2BIG ? "too large" : "out of memory");
	return 0;
}

int sched_fmt_svg(const struct dp_sched *s, const struct dp_sched_sim *sim, int rank,
		  struct dp_buf *out, struct dp_err *err)
{
	int lo = rank >= 0 ? rank : 0, hi = rank >= 0 ? rank + 1 : s->cfg.pp;
	struct dp_sched_chart_lane *lane = calloc((size_t)(hi - lo), sizeof(*lane));
	struct dp_sched_chart_group g = { .lane = lane, .nlanes = hi - lo };
	struct dp_sched_chart c = { .span = sim->makespan, .group = &g, .ngroups = 1 };
	char title[160], (*label)[24] = calloc((size_t)(hi - lo), sizeof(*label));
	int rc = 0;

	if (!lane || !label) {
		rc = dp_err_set(err, ENOMEM, "sched: svg output: out of memory");
		goto out;
	}
	(void)snprintf(title, sizeof(title), "%s pp=%d micro=%d: makespan %g, max bubble %g",
		       dp_sched_algo_name(s->cfg.algo), s->cfg.pp, s->cfg.micro, sim->makespan,
		       sim->bubble_max);
	c.title = title;
	for (int r = lo; r < hi && !rc; r++) {
		const struct dp_sched_rank_stats *rs = &sim->ranks[r];
		struct dp_sched_chart_box *bx = calloc(rs->nslots ? rs->nslots : 1, sizeof(*bx));

		if (!bx) {
			rc = dp_err_set(err, ENOMEM, "sched: svg output: out of memory");
			break;
		}
		for (size_t i = 0; i < rs->nslots; i++)
			bx[i] = (struct dp_sched_chart_box){ .op = *rs->slots[i].op,
							     .start = rs->slots[i].start,
							     .end = rs->slots[i].end };
		(void)snprintf(label[r - lo], sizeof(label[0]), "rank %d", r);
		lane[r - lo] = (struct dp_sched_chart_lane){ .label = label[r - lo],
							     .box = bx,
							     .nbox = rs->nslots };
	}
	if (!rc)
		rc = dp_sched_chart_svg(&c, out, err);
out:
	for (int r = 0; lane && r < hi - lo; r++)
		free((void *)lane[r].box);
	free(lane);
	free(label);
	return rc;
}
