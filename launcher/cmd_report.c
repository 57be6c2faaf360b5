/* launcher/cmd_report.c - `dpctl report RUN_DIR`: one self-contained HTML
 * page about a run, from what its run directory holds:
 *
 *   run.jsonl  (the controller: start, connected, ready, step, failure,
 *                  restart, complete)   -> summary, loss curve, health events
 *   metrics.prom  (Prometheus text)     -> per-rank bubble and a2a bytes
 *   trace.json    (Chrome trace, optional) -> schedule timeline; bubble and
 *                  a2a bytes when metrics.prom lacks them
 *   timeline.svg  (the controller's measured vs simulated timeline,
 *                  optional) -> inline under the schedule timeline, parsed
 *                  (libxml2), checked against the few elements and
 *                  attributes the controller writes and written out again
 *                  escaped, so a tampered file cannot inject anything
 *
 * Every part is optional: a missing source gives a "no data" note in its
 * section, never an error.  The page has inline CSS and inline SVG only (no
 * script, no external URL), and every text from the run is HTML-escaped.
 * Section ids (summary, timeline, loss, bubble, a2a, health) are stable:
 * tests and users can link to them.
 */
#include <errno.h>
#include <jansson.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "launcher/cli_int.h"
#include "common/dp_banned.h"

#define MAX_FILE   (256L << 20) /* inputs larger than this are skipped */
#define MAX_RECTS  20000	/* timeline rectangles drawn at most */
#define MAX_LANES  512
#define MAX_POINTS 4000
#define MAX_HEALTH 500
#define CHART_W	   900
#define CHART_H	   260

static const struct option opts[] = {
	{ "output", required_argument, NULL, 'o' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* ---- small helpers --------------------------------------------------------------- */

static void esc(FILE *f, const char *s)
{
	for (; s && *s; s++) {
		switch (*s) {
		case '<':
			(void)fputs("&lt;", f);
			break;
		case '>':
			(void)fputs("&gt;", f);
			break;
		case '&':
			(void)fputs("&amp;", f);
			break;
		case '"':
			(void)fputs("&quot;", f);
			break;
		case '\'':
			(void)fputs("&#39;", f);
			break;
		default:
			(void)fputc(*s, f);
		}
	}
}

/* A fill colour for a trace event name: F/B/W of a pipeline schedule get
 * fixed ones, anything else one of a small palette by hash. */
static const char *colour(const char *name)
{
	static const char *const pal[] = { "#8e6cc2", "#d4a017", "#3aa6a6", "#c2577a", "#6b8e23" };
	unsigned h = 5381;

	if (!name || !*name)
		return "#999";
	if (strstr(name, "a2a") || strstr(name, "dispatch") || strstr(name, "combine"))
		return "#8e6cc2";
	if ((name[0] == 'F' || name[0] == 'f') && (name[1] == 'B' || name[1] == 'b'))
		return "#3aa6a6"; /* forward and backward overlapped (DualPipe) */
	switch (name[0]) {
	case 'F':
	case 'f':
		return "#4a7fd4";
	case 'B':
	case 'b':
		return "#4caf50";
	case 'W':
	case 'w':
		return "#f0953a";
	default:
		break;
	}
	for (const char *p = name; *p; p++)
		h = h * 33 + (unsigned char)*p;
	return pal[h % (sizeof(pal) / sizeof(pal[0]))];
}

static json_t *load_json(const char *path)
{
	struct stat st;
	json_error_t je;

	if (stat(path, &st) != 0 || st.st_size > MAX_FILE)
		return NULL;
	return json_load_file(path, 0, &je);
}

/* ---- the data -------------------------------------------------------------------- */

struct lane {
	long pid, tid;
	char name[96];
	double busy_us;
	double a2a_bytes;
};

struct point {
	double step, loss;
};

struct rank_val {
	int rank;
	double v;
};

struct report {
	/* run.jsonl */
	int have_events;
	char outcome[32];
	char cause[1024];
	int ranks, attempts, exit_code;
	double run_s;
	long long max_step;
	int loss_exact; /* the loss points are step losses (events.jsonl) */
	char backend[32];
	json_t *health; /* array of the non-step events */
	struct point *loss;
	size_t nloss;
	/* metrics.prom */
	struct rank_val bubble[MAX_LANES], a2a[MAX_LANES];
	int nbubble, na2a;
	/* trace.json */
	json_t *trace; /* the event array (borrowed from trace_root) */
	json_t *trace_root;
	struct lane lanes[MAX_LANES];
	int nlanes;
	double t0, t1; /* trace span, microseconds */
};

static int lane_of(struct report *r, long pid, long tid)
{
	for (int i = 0; i < r->nlanes; i++)
		if (r->lanes[i].pid == pid && r->lanes[i].tid == tid)
			return i;
	if (r->nlanes == MAX_LANES)
		return -1;
	r->lanes[r->nlanes] = (struct lane){ .pid = pid, .tid = tid };
	(void)snprintf(r->lanes[r->nlanes].name, sizeof(r->lanes[0].name), "pid %ld / tid %ld", pid,
		       tid);
	return r->nlanes++;
}

static long num(json_t *o, const char *k, long dflt)
{
	json_t *v = json_object_get(o, k);

	return json_is_integer(v) ? (long)json_integer_value(v)
	       : json_is_real(v)  ? (long)json_real_value(v)
				  : dflt;
}

static double dnum(json_t *o, const char *k, double dflt)
{
	json_t *v = json_object_get(o, k);

	return json_is_number(v) ? json_number_value(v) : dflt;
}

static void load_trace(struct report *r, const char *dir)
{
	char path[4096];
	size_t i;
	json_t *ev;

	(void)snprintf(path, sizeof(path), "%s/trace.json", dir);
	r->trace_root = load_json(path);
	if (!r->trace_root)
		return;
	r->trace = json_is_array(r->trace_root) ? r->trace_root
						: json_object_get(r->trace_root, "traceEvents");
	if (!json_is_array(r->trace)) {
		r->trace = NULL;
		return;
	}
	r->t0 = INFINITY;
	r->t1 = -INFINITY;
	json_array_foreach(r->trace, i, ev)
	{
		const char *ph = json_string_value(json_object_get(ev, "ph"));
		const char *name = json_string_value(json_object_get(ev, "name"));
		int l;

		if (!ph || !(strcmp(ph, "X") == 0 ||
			     (strcmp(ph, "M") == 0 && name && strcmp(name, "thread_name") == 0)))
			continue;
		l = lane_of(r, num(ev, "pid", 0), num(ev, "tid", 0));
		if (l < 0)
			continue;
		if (strcmp(ph, "M") == 0 && name && strcmp(name, "thread_name") == 0) {
			const char *tn = json_string_value(
				json_object_get(json_object_get(ev, "args"), "name"));

			if (tn)
				(void)snprintf(r->lanes[l].name, sizeof(r->lanes[l].name), "%s",
					       tn);
			continue;
		}
		if (strcmp(ph, "X") == 0) {
			double ts = dnum(ev, "ts", NAN), dur = dnum(ev, "dur", 0);
			const char *cat = json_string_value(json_object_get(ev, "cat"));

			if (!isfinite(ts) || !isfinite(dur) || dur < 0)
				continue;
			r->t0 = fmin(r->t0, ts);
			r->t1 = fmax(r->t1, ts + dur);
			r->lanes[l].busy_us += dur;
			if ((name && strstr(name, "a2a")) || (cat && strstr(cat, "a2a")))
				r->lanes[l].a2a_bytes +=
					dnum(json_object_get(ev, "args"), "bytes", 0);
		}
	}
	if (!(r->t1 > r->t0))
		r->t0 = r->t1 = 0;
}

static void load_events(struct report *r, const char *dir)
{
	char path[4096], *line = NULL;
	size_t cap = 0;
	FILE *f;

	(void)snprintf(path, sizeof(path), "%s/run.jsonl", dir);
	f = fopen(path, "re");
	if (!f)
		return;
	r->have_events = 1;
	r->health = json_array();
	while (getline(&line, &cap, f) > 0) {
		json_error_t je;
		json_t *o = json_loads(line, 0, &je);
		const char *ev = o ? json_string_value(json_object_get(o, "event")) : NULL;

		if (!ev) {
			json_decref(o);
			continue;
		}
		if (num(o, "attempt", 0) + 1 > r->attempts)
			r->attempts = (int)num(o, "attempt", 0) + 1;
		if (strcmp(ev, "step") == 0) {
			double loss = dnum(o, "loss", NAN);
			long long step = num(o, "step", -1);

			if (step > r->max_step)
				r->max_step = step;
			if (isfinite(loss) && r->nloss < (size_t)MAX_POINTS * 8) {
				struct point *np = realloc(r->loss, (r->nloss + 1) * sizeof(*np));

				if (np) {
					r->loss = np;
					r->loss[r->nloss++] = (struct point){ (double)step, loss };
				}
			}
			json_decref(o);
			continue;
		}
		if (strcmp(ev, "start") == 0) {
			r->ranks = (int)num(o, "ranks", 0);
			(void)snprintf(r->backend, sizeof(r->backend), "%s",
				       json_string_value(json_object_get(o, "backend"))
					       ? json_string_value(json_object_get(o, "backend"))
					       : "?");
			(void)snprintf(r->outcome, sizeof(r->outcome), "running or interrupted");
		} else if (strcmp(ev, "failure") == 0) {
			(void)snprintf(r->outcome, sizeof(r->outcome), "failed");
			(void)snprintf(r->cause, sizeof(r->cause), "%s",
				       json_string_value(json_object_get(o, "cause"))
					       ? json_string_value(json_object_get(o, "cause"))
					       : "");
			r->exit_code = (int)num(o, "exit_code", 0);
		} else if (strcmp(ev, "restart") == 0) {
			(void)snprintf(r->outcome, sizeof(r->outcome), "restarted");
		} else if (strcmp(ev, "complete") == 0) {
			(void)snprintf(r->outcome, sizeof(r->outcome), "succeeded");
			r->run_s = dnum(o, "run_s", 0);
			r->exit_code = 0;
			r->cause[0] = '\0';
		}
		if (json_array_size(r->health) < MAX_HEALTH)
			(void)json_array_append(r->health, o);
		json_decref(o);
	}
	free(line);
	(void)fclose(f);
}

/* A training run's events.jsonl (the --json stream) has one "progress"
 * event per finished step with the step's loss (the sum of the ranks'
 * shares); run.jsonl's per-rank "step" events carry each rank's heartbeat
 * value, which in a training run is only that rank's share.  So where
 * events.jsonl has step losses, the loss curve uses them instead. */
static void load_step_losses(struct report *r, const char *dir)
{
	char path[4096], *line = NULL;
	size_t cap = 0, n = 0;
	struct point *v = NULL;
	FILE *f;

	(void)snprintf(path, sizeof(path), "%s/events.jsonl", dir);
	f = fopen(path, "re");
	if (!f)
		return;
	while (getline(&line, &cap, f) > 0 && n < (size_t)MAX_POINTS * 8) {
		json_t *o = json_loads(line, 0, NULL);
		const char *ev = o ? json_string_value(json_object_get(o, "event")) : NULL;
		double loss = o ? dnum(o, "loss", NAN) : NAN;

		if (ev && strcmp(ev, "progress") == 0 && isfinite(loss)) {
			struct point *np = realloc(v, (n + 1) * sizeof(*np));

			if (np) {
				v = np;
				v[n++] = (struct point){ (double)num(o, "step", 0) - 1, loss };
			}
		}
		json_decref(o);
	}
	free(line);
	(void)fclose(f);
	if (n) {
		free(r->loss);
		r->loss = v;
		r->nloss = n;
		r->loss_exact = 1;
		if ((long long)v[n - 1].step + 1 > r->max_step)
			r->max_step = (long long)v[n - 1].step + 1;
	} else {
		free(v);
	}
}

/* rank="N" out of a label set; -1 if none. */
static int rank_label(const char *labels)
{
	const char *p = strstr(labels, "rank=\"");
	char *end;
	long v;

	if (!p)
		return -1;
	v = strtol(p + 6, &end, 10);
	return end != p + 6 && *end == '"' && v >= 0 && v < 1000000 ? (int)v : -1;
}

static void load_metrics(struct report *r, const char *dir)
{
	char path[4096], *line = NULL;
	size_t cap = 0;
	FILE *f;

	(void)snprintf(path, sizeof(path), "%s/metrics.prom", dir);
	f = fopen(path, "re");
	if (!f)
		return;
	while (getline(&line, &cap, f) > 0) {
		struct rank_val *arr = NULL;
		int *n = NULL, rank;
		char *brace, *close, *end;
		double v;

		if (strncmp(line, "dpctl_bubble_ratio{", 19) == 0)
			arr = r->bubble, n = &r->nbubble;
		else if (strncmp(line, "dpctl_a2a_bytes_total{", 22) == 0)
			arr = r->a2a, n = &r->na2a;
		else
			continue;
		brace = strchr(line, '{');
		close = strchr(brace, '}');
		if (!close)
			continue;
		*close = '\0';
		rank = rank_label(brace);
		v = strtod(close + 1, &end);
		if (rank < 0 || end == close + 1 || !isfinite(v) || *n >= MAX_LANES)
			continue;
		arr[(*n)++] = (struct rank_val){ rank, v };
	}
	free(line);
	(void)fclose(f);
}

/* ---- the page --------------------------------------------------------------------- */

static const char css[] =
	"body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:960px;color:#222;"
	"background:#fff}h1{font-size:22px;margin:0 0 12px}h2{font-size:17px;margin:28px 0 8px;"
	"border-bottom:1px solid #ddd;padding-bottom:4px}.none{color:#888;font-style:italic}"
	"table{border-collapse:collapse;width:100%}td,th{border:1px solid #ddd;padding:3px 6px;"
	"text-align:left;vertical-align:top;font-size:13px}th{background:#f3f3f3}"
	".ok{color:#2e7d32;font-weight:600}.bad{color:#c62828;font-weight:600}"
	"svg{background:#fafafa;border:1px solid #e3e3e3}svg text{font:11px sans-serif;fill:#333}"
	".legend span{display:inline-block;margin-right:12px}.legend i{display:inline-block;"
	"width:10px;height:10px;margin-right:4px}";

static void section(FILE *f, const char *id, const char *title)
{
	(void)fprintf(f, "<section id=\"%s\">\n<h2>%s</h2>\n", id, title);
}

static void none(FILE *f, const char *what)
{
	(void)fputs("<p class=\"none\">", f);
	esc(f, what);
	(void)fputs("</p>\n", f);
}

static void summary(FILE *f, const struct report *r, const char *dir)
{
	const char *base = strrchr(dir, '/');

	section(f, "summary", "Summary");
	(void)fputs("<table>\n<tr><th>run</th><td>", f);
	esc(f, base && base[1] ? base + 1 : dir);
	(void)fputs("</td></tr>\n", f);
	if (!r->have_events) {
		(void)fputs("</table>\n", f);
		none(f, "no run.jsonl in this run directory (run with dpctl launch --run-dir)");
		(void)fputs("</section>\n", f);
		return;
	}
	(void)fprintf(f, "<tr><th>outcome</th><td class=\"%s\" id=\"outcome\">",
		      strcmp(r->outcome, "succeeded") == 0 ? "ok" : "bad");
	esc(f, r->outcome[0] ? r->outcome : "unknown");
	(void)fprintf(f, "</td></tr>\n<tr><th>ranks</th><td>%d (backend ", r->ranks);
	esc(f, r->backend);
	(void)fprintf(f,
		      ")</td></tr>\n<tr><th>attempts</th><td>%d</td></tr>\n"
		      "<tr><th>last step</th><td>%lld</td></tr>\n",
		      r->attempts, r->max_step);
	if (r->run_s > 0)
		(void)fprintf(f, "<tr><th>run time</th><td>%.2f s</td></tr>\n", r->run_s);
	if (r->cause[0]) {
		(void)fprintf(
			f, "<tr><th>root cause</th><td id=\"root-cause\">exit %d: ", r->exit_code);
		esc(f, r->cause);
		(void)fputs("</td></tr>\n", f);
	}
	(void)fputs("</table>\n</section>\n", f);
}

#define MAX_SVG (16L << 20) /* a larger timeline.svg is not shown */

/* Is the tree under @n (siblings included) only what the controller's
 * timeline.svg holds: the elements below, attributes without a namespace,
 * event handlers, links or styles, values without "(" (no url(...)), and
 * text?  Anything else (script, foreignObject, comments, entities, CDATA)
 * and the file is not shown. */
static int svg_safe(xmlNodePtr n, int depth)
{
	static const char *const elems[] = { "svg", "g", "rect", "text", "title", "line", NULL };

	for (; n; n = n->next) {
		int ok = 0;

		if (n->type == XML_TEXT_NODE)
			continue;
		if (n->type != XML_ELEMENT_NODE || depth > 8)
			return 0;
		for (int i = 0; elems[i]; i++)
			ok |= xmlStrcmp(n->name, BAD_CAST elems[i]) == 0;
		for (xmlAttrPtr a = n->properties; ok && a; a = a->next) {
			xmlChar *v = xmlNodeListGetString(n->doc, a->children, 1);

			ok = !a->ns && xmlStrncasecmp(a->name, BAD_CAST "on", 2) != 0 &&
			     !xmlStrcasestr(a->name, BAD_CAST "href") &&
			     xmlStrcasecmp(a->name, BAD_CAST "style") != 0 &&
			     !xmlStrchr(v ? v : BAD_CAST "", '(');
			xmlFree(v);
		}
		if (!ok || !svg_safe(n->children, depth + 1))
			return 0;
	}
	return 1;
}

/* Write the checked tree as HTML-embedded SVG, every name, value and text
 * escaped (the xmlns declaration is dropped: inline SVG needs none; the
 * text nodes keep the file's line breaks). */
static void svg_write(FILE *f, xmlNodePtr n, int root)
{
	for (; n; n = n->next) {
		if (n->type == XML_TEXT_NODE) {
			esc(f, (const char *)n->content);
			continue;
		}
		(void)fputc('<', f);
		esc(f, (const char *)n->name);
		if (root) /* as wide as the page, the height from the viewBox */
			(void)fputs(" width=\"100%\"", f);
		for (xmlAttrPtr a = n->properties; a; a = a->next) {
			xmlChar *v;

			if (root && (xmlStrcmp(a->name, BAD_CAST "width") == 0 ||
				     xmlStrcmp(a->name, BAD_CAST "height") == 0))
				continue;
			v = xmlNodeListGetString(n->doc, a->children, 1);
			(void)fputc(' ', f);
			esc(f, (const char *)a->name);
			(void)fputs("=\"", f);
			esc(f, (const char *)v);
			(void)fputc('"', f);
			xmlFree(v);
		}
		(void)fputc('>', f);
		svg_write(f, n->children, 0);
		(void)fputs("</", f);
		esc(f, (const char *)n->name);
		(void)fputc('>', f);
	}
}

/* RUN_DIR/timeline.svg (the controller's measured vs simulated timeline),
 * if any, inline after a safety check. */
static void measured_svg(FILE *f, const char *dir)
{
	char path[4096];
	struct stat st;
	xmlDocPtr doc;
	xmlNodePtr root;

	(void)snprintf(path, sizeof(path), "%s/timeline.svg", dir);
	if (stat(path, &st) != 0)
		return;
	(void)fputs("<h3>Measured vs simulated (timeline.svg)</h3>\n", f);
	doc = S_ISREG(st.st_mode) && st.st_size <= MAX_SVG
		      ? xmlReadFile(path, NULL,
				    XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING)
		      : NULL;
	root = doc ? xmlDocGetRootElement(doc) : NULL;
	if (!root || doc->intSubset || xmlStrcmp(root->name, BAD_CAST "svg") != 0 ||
	    !svg_safe(root, 0))
		none(f, "timeline.svg is not shown: not the SVG the controller writes");
	else {
		(void)fputs("<div id=\"timeline-measured\">\n", f);
		svg_write(f, root, 1);
		(void)fputs("</div>\n", f);
	}
	xmlFreeDoc(doc);
}

static void timeline(FILE *f, const struct report *r, const char *dir)
{
	const int left = 150, lane_h = 18, w = CHART_W - left - 10;
	double span = r->t1 - r->t0;
	int h = r->nlanes * lane_h + 30, drawn = 0;
	size_t i;
	json_t *ev;

	section(f, "timeline", "Schedule timeline");
	if (!r->trace || r->nlanes == 0 || !(span > 0)) {
		none(f, "no trace.json in this run directory: no schedule timeline");
		measured_svg(f, dir);
		(void)fputs("</section>\n", f);
		return;
	}
	(void)fprintf(f, "<svg id=\"timeline-svg\" width=\"%d\" height=\"%d\" role=\"img\">\n",
		      CHART_W, h);
	for (int l = 0; l < r->nlanes; l++) {
		(void)fprintf(f, "<text x=\"4\" y=\"%d\">", 10 + l * lane_h + 12);
		esc(f, r->lanes[l].name);
		(void)fputs("</text>\n", f);
	}
	json_array_foreach(r->trace, i, ev)
	{
		const char *ph = json_string_value(json_object_get(ev, "ph"));
		const char *name = json_string_value(json_object_get(ev, "name"));
		const char *cat = json_string_value(json_object_get(ev, "cat"));
		double ts = dnum(ev, "ts", NAN), dur = dnum(ev, "dur", 0);
		int l = -1;

		if (!ph || strcmp(ph, "X") != 0 || !isfinite(ts) || !isfinite(dur) || dur < 0)
			continue;
		if (drawn >= MAX_RECTS)
			break;
		for (int k = 0; k < r->nlanes; k++)
			if (r->lanes[k].pid == num(ev, "pid", 0) &&
			    r->lanes[k].tid == num(ev, "tid", 0))
				l = k;
		if (l < 0)
			continue;
		(void)fprintf(f,
			      "<rect x=\"%.2f\" y=\"%d\" width=\"%.2f\" height=\"%d\" "
			      "fill=\"%s\"><title>",
			      left + (ts - r->t0) / span * w, 10 + l * lane_h,
			      fmax(dur / span * w, 0.5), lane_h - 4, colour(cat ? cat : name));
		esc(f, name ? name : "?");
		(void)fprintf(f, " (%.1f us)</title></rect>\n", dur);
		drawn++;
	}
	(void)fprintf(f,
		      "<text x=\"%d\" y=\"%d\">0</text><text x=\"%d\" y=\"%d\" "
		      "text-anchor=\"end\">%.3f ms</text>\n</svg>\n",
		      left, h - 4, CHART_W - 10, h - 4, span / 1000.0);
	(void)fputs("<p class=\"legend\"><span><i style=\"background:#4a7fd4\"></i>forward</span>"
		    "<span><i style=\"background:#4caf50\"></i>backward</span>"
		    "<span><i style=\"background:#3aa6a6\"></i>forward+backward</span>"
		    "<span><i style=\"background:#f0953a\"></i>weight grad</span>"
		    "<span><i style=\"background:#8e6cc2\"></i>all-to-all</span></p>\n",
		    f);
	measured_svg(f, dir);
	(void)fputs("</section>\n", f);
}

static int cmp_point(const void *a, const void *b)
{
	const struct point *x = a, *y = b;

	return (x->step > y->step) - (x->step < y->step);
}

static void loss_curve(FILE *f, struct report *r)
{
	struct point *avg;
	size_t n = 0;
	double xmin, xmax, ymin = INFINITY, ymax = -INFINITY;
	const int l = 60, b = 30, w = CHART_W - l - 10, h = CHART_H - b - 10;

	section(f, "loss", "Loss curve");
	if (r->nloss == 0) {
		none(f, "no loss values in run.jsonl");
		(void)fputs("</section>\n", f);
		return;
	}
	/* mean over the ranks that reported each step */
	qsort(r->loss, r->nloss, sizeof(*r->loss), cmp_point);
	avg = calloc(r->nloss, sizeof(*avg));
	if (!avg) {
		(void)fputs("</section>\n", f);
		return;
	}
	for (size_t i = 0; i < r->nloss;) {
		size_t j = i;
		double sum = 0;

		while (j < r->nloss && r->loss[j].step == r->loss[i].step)
			sum += r->loss[j++].loss;
		avg[n++] = (struct point){ r->loss[i].step, sum / (double)(j - i) };
		i = j;
	}
	xmin = avg[0].step;
	xmax = avg[n - 1].step;
	for (size_t i = 0; i < n; i++) {
		ymin = fmin(ymin, avg[i].loss);
		ymax = fmax(ymax, avg[i].loss);
	}
	if (xmax <= xmin)
		xmax = xmin + 1;
	if (ymax <= ymin)
		ymax = ymin + 1;
	(void)fprintf(f, "<svg id=\"loss-svg\" width=\"%d\" height=\"%d\" role=\"img\">\n", CHART_W,
		      CHART_H);
	(void)fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#999\"/>\n", l,
		      10 + h, l + w, 10 + h);
	(void)fprintf(f, "<line x1=\"%d\" y1=\"10\" x2=\"%d\" y2=\"%d\" stroke=\"#999\"/>\n", l, l,
		      10 + h);
	(void)fputs("<polyline fill=\"none\" stroke=\"#c62828\" stroke-width=\"2\" points=\"", f);
	for (size_t i = 0; i<n; i += n> MAX_POINTS ? n / MAX_POINTS : 1)
		(void)fprintf(f, "%.1f,%.1f ", l + (avg[i].step - xmin) / (xmax - xmin) * w,
			      10 + h - (avg[i].loss - ymin) / (ymax - ymin) * h);
	(void)fputs("\"/>\n", f);
	(void)fprintf(f,
		      "<text x=\"%d\" y=\"18\" text-anchor=\"end\">%.4g</text>"
		      "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%.4g</text>"
		      "<text x=\"%d\" y=\"%d\">step %.0f</text>"
		      "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">step %.0f</text>\n</svg>\n",
		      l - 4, ymax, l - 4, 10 + h, ymin, l, CHART_H - 6, xmin, l + w, CHART_H - 6,
		      xmax);
	(void)fprintf(f, "<p>%zu steps; last loss %.6g (%s)</p>\n", n, avg[n - 1].loss,
		      r->loss_exact ? "the step loss" : "mean over the ranks reporting it");
	free(avg);
	(void)fputs("</section>\n", f);
}

/* Horizontal bars, one per entry; @fmt prints a value. */
static void bars(FILE *f, const char *id, const char *const *labels, const double *v, int n,
		 double vmax, const char *unit, int percent)
{
	const int left = 150, bar_h = 16, w = CHART_W - left - 110;
	int h = n * (bar_h + 4) + 10;

	if (!(vmax > 0))
		vmax = 1;
	(void)fprintf(f, "<svg id=\"%s\" width=\"%d\" height=\"%d\" role=\"img\">\n", id, CHART_W,
		      h);
	for (int i = 0; i < n; i++) {
		int y = 5 + i * (bar_h + 4);

		(void)fprintf(f, "<text x=\"4\" y=\"%d\">", y + 12);
		esc(f, labels[i]);
		(void)fprintf(f,
			      "</text><rect x=\"%d\" y=\"%d\" width=\"%.1f\" height=\"%d\" "
			      "fill=\"%s\"/>",
			      left, y, fmax(v[i] / vmax * w, 0), bar_h,
			      percent ? "#f0953a" : "#8e6cc2");
		if (percent)
			(void)fprintf(f, "<text x=\"%.1f\" y=\"%d\">%.1f%%</text>\n",
				      left + fmax(v[i] / vmax * w, 0) + 4, y + 12, v[i] * 100);
		else
			(void)fprintf(f, "<text x=\"%.1f\" y=\"%d\">%.4g %s</text>\n",
				      left + fmax(v[i] / vmax * w, 0) + 4, y + 12, v[i], unit);
	}
	(void)fputs("</svg>\n", f);
}

static void per_rank(FILE *f, const struct report *r, int bubble)
{
	const struct rank_val *src = bubble ? r->bubble : r->a2a;
	int n = bubble ? r->nbubble : r->na2a, k = 0;
	const char *labels[MAX_LANES];
	char names[MAX_LANES][32];
	double v[MAX_LANES], vmax = 0;
	const char *from = "metrics.prom";

	section(f, bubble ? "bubble" : "a2a",
		bubble ? "Pipeline bubble per rank" : "All-to-all traffic per rank");
	for (int i = 0; i < n; i++) {
		(void)snprintf(names[k], sizeof(names[k]), "rank %d", src[i].rank);
		labels[k] = names[k];
		v[k] = src[i].v;
		vmax = fmax(vmax, v[k]);
		k++;
	}
	if (k == 0 && r->trace && r->t1 > r->t0) {
		from = "trace.json";
		for (int i = 0; i < r->nlanes; i++) {
			double x = bubble ? 1.0 - r->lanes[i].busy_us / (r->t1 - r->t0)
					  : r->lanes[i].a2a_bytes;

			if (!bubble && x <= 0)
				continue;
			labels[k] = r->lanes[i].name;
			v[k] = bubble ? fmin(fmax(x, 0), 1) : x;
			vmax = fmax(vmax, v[k]);
			k++;
		}
	}
	if (k == 0) {
		none(f, bubble ? "no bubble data (metrics.prom dpctl_bubble_ratio or trace.json)"
			       : "no all-to-all data (metrics.prom dpctl_a2a_bytes_total or "
				 "trace.json a2a events with args.bytes)");
		(void)fputs("</section>\n", f);
		return;
	}
	bars(f, bubble ? "bubble-svg" : "a2a-svg", labels, v, k, bubble ? 1.0 : vmax, "bytes",
	     bubble);
	(void)fprintf(f, "<p class=\"none\">from %s</p>\n</section>\n", from);
}

static void health(FILE *f, const struct report *r)
{
	size_t i;
	json_t *o;

	section(f, "health", "Health events");
	if (!r->health || json_array_size(r->health) == 0) {
		none(f, "no health events (run.jsonl)");
		(void)fputs("</section>\n", f);
		return;
	}
	(void)fputs("<table id=\"health-table\">\n<tr><th>t (s)</th><th>attempt</th>"
		    "<th>event</th><th>details</th></tr>\n",
		    f);
	json_array_foreach(r->health, i, o)
	{
		const char *ev = json_string_value(json_object_get(o, "event"));
		const char *k;
		json_t *v;
		int first = 1;

		(void)fprintf(f, "<tr class=\"ev-%s\"><td>%.3f</td><td>%ld</td><td>",
			      ev && strcmp(ev, "failure") == 0 ? "failure" : "info",
			      dnum(o, "t", 0), num(o, "attempt", 0));
		esc(f, ev);
		(void)fputs("</td><td>", f);
		json_object_foreach(o, k, v)
		{
			char *txt;

			if (strcmp(k, "t") == 0 || strcmp(k, "time") == 0 ||
			    strcmp(k, "event") == 0 || strcmp(k, "attempt") == 0)
				continue;
			txt = json_is_string(v) ? strdup(json_string_value(v))
						: json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT |
									JSON_REAL_PRECISION(6));
			if (!first)
				(void)fputs(", ", f);
			first = 0;
			esc(f, k);
			(void)fputs("=", f);
			esc(f, txt);
			free(txt);
		}
		(void)fputs("</td></tr>\n", f);
	}
	(void)fputs("</table>\n</section>\n", f);
}

static void page(FILE *f, struct report *r, const char *dir)
{
	(void)fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
		    "<title>dpctl report: ",
		    f);
	esc(f, dir);
	(void)fprintf(f,
		      "</title>\n<style>%s</style>\n</head>\n<body>\n<h1>dpctl run report</h1>\n",
		      css);
	summary(f, r, dir);
	timeline(f, r, dir);
	loss_curve(f, r);
	per_rank(f, r, 1);
	per_rank(f, r, 0);
	health(f, r);
	(void)fputs("</body>\n</html>\n", f);
}

static int cmd_report(struct dp_cli *cli, int argc, char **argv)
{
	const char *out = NULL, *dir;
	char path[4096], tmp[4200];
	struct report *r;
	struct stat st;
	FILE *f;
	int c, rc;

	while ((c = getopt_long(argc, argv, "+ho:", opts, NULL)) != -1) {
		if (c == 'h')
			return dp_cli_help(cli, &dp_cmd_report);
		if (c == 'o')
			out = optarg;
		else
			return dp_cli_bad_option(cli, "report", argc, argv);
	}
	if (optind + 1 != argc)
		return dp_cli_usage_error(cli, "report ", "expected one RUN_DIR");
	dir = argv[optind];
	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
		return dp_cli_error(cli, EX_NOINPUT, "report: '%s' is not a directory", dir);
	r = calloc(1, sizeof(*r));
	if (!r)
		return dp_cli_error(cli, EX_OSERR, "report: out of memory");
	load_events(r, dir);
	load_step_losses(r, dir);
	load_metrics(r, dir);
	load_trace(r, dir);
	if (out && strcmp(out, "-") == 0) {
		page(cli->out, r, dir);
		rc = EX_OK;
		goto done;
	}
	if (!out) {
		(void)snprintf(path, sizeof(path), "%s/report.html", dir);
		out = path;
	}
	(void)snprintf(tmp, sizeof(tmp), "%s.tmp", out);
	f = fopen(tmp, "we");
	if (!f) {
		rc = dp_cli_error(cli, EX_CANTCREAT, "report: cannot write '%s': %s", tmp,
				  strerror(errno));
		goto done;
	}
	page(f, r, dir);
	if (fclose(f) != 0 || rename(tmp, out) != 0) {
		rc = dp_cli_error(cli, EX_IOERR, "report: cannot write '%s': %s", out,
				  strerror(errno));
		(void)unlink(tmp);
		goto done;
	}
	(void)fprintf(cli->out, "%s\n", out);
	rc = EX_OK;
done:
	json_decref(r->health);
	json_decref(r->trace_root);
	free(r->loss);
	free(r);
	return rc;
}

const struct dp_cli_cmd dp_cmd_report = {
	.name = "report",
	.fn = cmd_report,
	.opts = opts,
	.summary = "write a self-contained HTML report of a run directory",
	.usage = "usage: dpctl report [-o FILE] RUN_DIR\n"
		 "\n"
		 "Write one self-contained HTML page (inline CSS and SVG, no scripts, no\n"
		 "external URLs) about the run in RUN_DIR (dpctl launch --run-dir): summary\n"
		 "and root cause, schedule timeline (trace.json; the measured vs simulated\n"
		 "timeline.svg under it), loss curve, pipeline bubble\n"
		 "and all-to-all bytes per rank (metrics.prom, else trace.json), and the\n"
		 "health events (run.jsonl).  Missing inputs leave a note, not an error.\n"
		 "Prints the path written.\n"
		 "\n"
		 "Options:\n"
		 "  -o, --output FILE     write here (default RUN_DIR/report.html; - for stdout)\n"
		 "  -h, --help            print this help\n",
};
