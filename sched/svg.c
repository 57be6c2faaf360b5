/* sched/svg.c - a schedule as an SVG timeline, in the spirit of the DualPipe
 * README figure: one row per rank, time on x, one cell per compute op
 * coloured by kind (darker shade: leg 1) and labelled with its micro-batch,
 * idle time left as grey background so bubbles show, and a legend. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "sched/sched_int.h"

#define LEFT	64.0 /* room for "rank N" */
#define TOP	36.0
#define ROW_H	26.0
#define ROW_GAP 6.0
#define RIGHT	16.0

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

static int cell(struct dp_buf *b, const struct dp_sched_slot *sl, double x0, double y, double scale)
{
	const struct dp_sched_op *op = sl->op;
	double x = x0 + sl->start * scale, w = (sl->end - sl->start) * scale;
	char label[32];
	int rc;

	if (op->kind == DP_SCHED_OP_FB)
		(void)snprintf(label, sizeof(label), "%d|%d", op->micro, op->micro2);
	else
		(void)snprintf(label, sizeof(label), "%d", op->micro);
	rc = dp_buf_addf(b,
			 "<rect class=\"op\" x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" "
			 "fill=\"%s\" stroke=\"#333\" stroke-width=\"0.5\"><title>%s%d %d</title>"
			 "</rect>\n",
			 x, y, w, ROW_H, styles[op->kind].fill[op->leg & 1],
			 sched_kind_name(op->kind), op->leg, op->micro);
	if (rc || w < 7.0 * (double)strlen(label))
		return rc;
	return dp_buf_addf(b,
			   "<text x=\"%.2f\" y=\"%.2f\" font-size=\"11\" text-anchor=\"middle\">"
			   "%s</text>\n",
			   x + w / 2, y + ROW_H / 2 + 4, label);
}

int sched_fmt_svg(const struct dp_sched *s, const struct dp_sched_sim *sim, int rank,
		  struct dp_buf *out, struct dp_err *err)
{
	int lo = rank >= 0 ? rank : 0, hi = rank >= 0 ? rank + 1 : s->cfg.pp;
	double span = sim->makespan > 0 ? sim->makespan : 1;
	double scale = fmin(24.0, fmax(1.0, 1600.0 / span));
	double width = LEFT + span * scale + RIGHT;
	double rows_h = (hi - lo) * (ROW_H + ROW_GAP);
	double legend_y = TOP + rows_h + 14;
	double height = legend_y + 30;
	int rc;

	rc = dp_buf_addf(out,
			 "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
			 "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
			 "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\">\n"
			 "<rect width=\"100%%\" height=\"100%%\" fill=\"#ffffff\"/>\n"
			 "<text x=\"%.0f\" y=\"22\" font-size=\"14\">%s pp=%d micro=%d: makespan "
			 "%g, max bubble %g</text>\n",
			 ceil(width), ceil(height), ceil(width), ceil(height), LEFT,
			 dp_sched_algo_name(s->cfg.algo), s->cfg.pp, s->cfg.micro, sim->makespan,
			 sim->bubble_max);
	for (int r = lo; r < hi && !rc; r++) {
		const struct dp_sched_rank_stats *rs = &sim->ranks[r];
		double y = TOP + (r - lo) * (ROW_H + ROW_GAP);

		rc = dp_buf_addf(out,
				 "<text x=\"6\" y=\"%.2f\" font-size=\"12\">rank %d</text>\n"
				 "<rect class=\"idle\" x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" "
				 "height=\"%.2f\" fill=\"#e8e8e8\"/>\n",
				 y + ROW_H / 2 + 4, r, LEFT, y, span * scale, ROW_H);
		for (size_t i = 0; i < rs->nslots && !rc; i++)
			rc = cell(out, &rs->slots[i], LEFT, y, scale);
	}
	for (int k = 0; k <= DP_SCHED_OP_FB && !rc; k++) {
		double x = LEFT + k * 150.0;

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
				 LEFT + 5 * 150.0, legend_y, LEFT + 5 * 150.0 + 18, legend_y + 12);
	if (rc)
		return dp_err_set(err, -rc, "sched: svg output: %s",
				  rc == -E2BIG ? "too large" : "out of memory");
	return 0;
}
