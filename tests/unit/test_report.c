/* tests/unit/test_report.c - `dpctl report RUN_DIR`: the HTML page from the
 * run directory fixture (run.jsonl, metrics.prom, trace.json from
 * `dpctl schedule --format trace`), from a partial and an empty directory,
 * escaping of run text, and no external references; the controller's
 * timeline.svg shown inline, a tampered one not.  The page is rendered in
 * headless Chromium by tests/cli/test_report.sh.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "tests/unit/dp_test.h"

static const char RUN1[] = FIXTURES "/report/run1";

static void no_external_refs(const char *html)
{
	assert_null(strstr(html, "http://"));
	assert_null(strstr(html, "https://"));
	assert_null(strstr(html, "<script"));
	assert_null(strstr(html, "<link"));
	assert_null(strstr(html, " src="));
	assert_null(strstr(html, "url("));
}

static void full_run_dir(void **state)
{
	static const char *const ids[] = { "summary",	"timeline", "timeline-svg", "loss",
					   "loss-svg",	"bubble",   "bubble-svg",   "a2a",
					   "a2a-svg",	"health",   "health-table", "outcome",
					   "root-cause" };
	struct dp_test_run r;
	char want[64];

	(void)state;
	r = dp_test_dpctl("report", "-o", "-", RUN1);
	assert_int_equal(r.rc, 0);
	assert_true(strncmp(r.out, "<!DOCTYPE html>", 15) == 0);
	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
		(void)snprintf(want, sizeof(want), "id=\"%s\"", ids[i]);
		assert_non_null(strstr(r.out, want));
	}
	no_external_refs(r.out);
	/* summary from run.jsonl (a bad line is skipped) */
	assert_non_null(strstr(r.out, "id=\"outcome\">failed<"));
	assert_non_null(strstr(r.out, "exit 7: rank 1 on node2 (pid 101) exited with status 7 "
				      "&lt;script&gt;alert(1)&lt;/script&gt;"));
	assert_non_null(strstr(r.out, "host=node&lt;b&gt;1"));
	assert_non_null(strstr(r.out, "<td>3</td>")); /* last step */
	/* loss: mean over ranks per step; 3 steps, the last 2.5 */
	assert_non_null(strstr(r.out, "3 steps; last loss 2.5 "));
	assert_non_null(strstr(r.out, ">5</text>")); /* step 1: (4 + 6) / 2 on top */
	/* bubble and a2a from metrics.prom */
	assert_non_null(strstr(r.out, ">25.0%</text>"));
	assert_non_null(strstr(r.out, ">12.5%</text>"));
	assert_non_null(strstr(r.out, ">3.146e+06 bytes</text>"));
	/* timeline from trace.json: the lanes are named by thread_name */
	assert_non_null(strstr(r.out, ">rank 3</text>"));
	assert_non_null(strstr(r.out, "<title>F0 0 (1000.0 us)</title>"));
	dp_test_run_free(&r);
}

static void empty_and_partial_run_dirs(void **state)
{
	char dir[] = "/tmp/dp-report-XXXXXX", cmd[512], path[512], *html;
	struct dp_test_run r;

	(void)state;
	assert_non_null(mkdtemp(dir));
	r = dp_test_dpctl("report", "--output", "-", dir);
	assert_int_equal(r.rc, 0);
	assert_non_null(strstr(r.out, "no run.jsonl"));
	assert_non_null(strstr(r.out, "no trace.json"));
	assert_non_null(strstr(r.out, "no loss values"));
	assert_non_null(strstr(r.out, "no bubble data"));
	assert_non_null(strstr(r.out, "no all-to-all data"));
	assert_non_null(strstr(r.out, "id=\"health\""));
	no_external_refs(r.out);
	dp_test_run_free(&r);
	/* only trace.json: the bubble comes from its idle time */
	(void)snprintf(cmd, sizeof(cmd), "cp '%s/trace.json' '%s/'", RUN1, dir);
	assert_int_equal(system(cmd), 0);
	r = dp_test_dpctl("report", dir);
	assert_int_equal(r.rc, 0);
	(void)snprintf(path, sizeof(path), "%s/report.html\n", dir);
	assert_string_equal(r.out, path); /* the default output, its path printed */
	path[strlen(path) - 1] = '\0';
	html = dp_test_slurp(path);
	assert_non_null(strstr(html, "id=\"timeline-svg\""));
	assert_non_null(strstr(html, "from trace.json"));
	assert_non_null(strstr(html, "no run.jsonl"));
	free(html);
	dp_test_run_free(&r);
	(void)snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

/* @text as DIR/timeline.svg; the page `dpctl report -o - DIR` makes. */
static struct dp_test_run report_with_svg(const char *dir, const char *text)
{
	char path[512];
	FILE *f;

	(void)snprintf(path, sizeof(path), "%s/timeline.svg", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
	return dp_test_dpctl("report", "-o", "-", dir);
}

/* timeline.svg (the controller's measured timeline) is shown inline,
 * escaped and without its xmlns URL; one with anything else is not. */
static void measured_timeline_svg_inline(void **state)
{
	static const char head[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
				   "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"300\" "
				   "height=\"100\" viewBox=\"0 0 300 100\">\n";
	static const char *const bad[] = {
		"<g id=\"measured\"><script>alert(1)</script></g>",
		"<rect class=\"op\" onload=\"alert(1)\" x=\"1\"/>",
		"<rect class=\"op\" fill=\"url(https://example.com/x)\"/>",
		"<!-- a comment --><rect class=\"op\"/>",
	};
	char dir[] = "/tmp/dp-report-XXXXXX", text[1024], cmd[600];
	struct dp_test_run r;

	(void)state;
	assert_non_null(mkdtemp(dir));
	(void)snprintf(text, sizeof(text),
		       "%s<g id=\"measured\"><text x=\"6\" y=\"20\">rank 0 &lt;b&gt; &amp; "
		       "&quot;c&quot;</text>\n<rect class=\"op\" x=\"70\" y=\"6\" width=\"20\" "
		       "height=\"26\" fill=\"#f6b26b\"><title>F0 3: 1.000 ms</title></rect></g>\n"
		       "</svg>\n",
		       head);
	r = report_with_svg(dir, text);
	assert_int_equal(r.rc, 0);
	assert_non_null(strstr(r.out, "<div id=\"timeline-measured\">\n<svg width=\"100%\" "
				      "viewBox=\"0 0 300 100\">"));
	assert_non_null(strstr(r.out, ">rank 0 &lt;b&gt; &amp; &quot;c&quot;</text>"));
	assert_non_null(strstr(r.out, "<rect class=\"op\" x=\"70\" y=\"6\" width=\"20\" "
				      "height=\"26\" fill=\"#f6b26b\"><title>F0 3: 1.000 ms</title>"
				      "</rect>"));
	no_external_refs(r.out);
	dp_test_run_free(&r);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		(void)snprintf(text, sizeof(text), "%s%s</svg>\n", head, bad[i]);
		r = report_with_svg(dir, text);
		assert_int_equal(r.rc, 0);
		assert_null(strstr(r.out, "timeline-measured"));
		assert_non_null(strstr(r.out, "timeline.svg is not shown"));
		assert_null(strstr(r.out, "alert"));
		no_external_refs(r.out);
		dp_test_run_free(&r);
	}
	/* not XML at all */
	r = report_with_svg(dir, "<svg><rect></svg>");
	assert_int_equal(r.rc, 0);
	assert_non_null(strstr(r.out, "timeline.svg is not shown"));
	dp_test_run_free(&r);
	(void)snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

static void bad_arguments(void **state)
{
	struct dp_test_run r;

	(void)state;
	r = dp_test_dpctl("report", "/nonexistent/run");
	assert_int_equal(r.rc, EX_NOINPUT);
	assert_non_null(strstr(r.err, "is not a directory"));
	dp_test_run_free(&r);
	r = dp_test_dpctl("report");
	assert_int_equal(r.rc, EX_USAGE);
	dp_test_run_free(&r);
	r = dp_test_dpctl("report", "-o", "/nonexistent/dir/x.html", RUN1);
	assert_int_equal(r.rc, EX_CANTCREAT);
	dp_test_run_free(&r);
}

/* A training run: run.jsonl's per-rank "step" events carry loss shares
 * (here 0 on rank 0, the whole loss on rank 1), events.jsonl's "progress"
 * events the step loss; the curve uses the latter. */
static void training_loss_from_progress_events(void **state)
{
	char dir[] = "/tmp/dp-report-XXXXXX", path[512];
	struct dp_test_run r;
	FILE *f;

	(void)state;
	assert_non_null(mkdtemp(dir));
	(void)snprintf(path, sizeof(path), "%s/run.jsonl", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	(void)fputs("{\"t\":0,\"event\":\"start\",\"attempt\":0,\"ranks\":2}\n"
		    "{\"t\":1,\"event\":\"step\",\"attempt\":0,\"rank\":0,\"step\":1,"
		    "\"loss\":0}\n"
		    "{\"t\":1,\"event\":\"step\",\"attempt\":0,\"rank\":1,\"step\":1,"
		    "\"loss\":3.5}\n",
		    f);
	assert_int_equal(fclose(f), 0);
	(void)snprintf(path, sizeof(path), "%s/events.jsonl", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	(void)fputs("{\"event\":\"start\",\"t\":0,\"attempt\":1,\"ranks\":2}\n"
		    "{\"event\":\"progress\",\"t\":1,\"attempt\":1,\"step\":1,\"loss\":3.5}\n"
		    "{\"event\":\"progress\",\"t\":2,\"attempt\":1,\"step\":2,\"loss\":2.25}\n",
		    f);
	assert_int_equal(fclose(f), 0);
	r = dp_test_dpctl("report", "-o", "-", dir);
	assert_int_equal(r.rc, 0);
	if (!strstr(r.out, "2 steps; last loss 2.25 "))
		fail_msg("%s", r.out);
	dp_test_run_free(&r);
	(void)unlink(path);
	(void)snprintf(path, sizeof(path), "%s/run.jsonl", dir);
	(void)unlink(path);
	assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(full_run_dir),
		cmocka_unit_test(empty_and_partial_run_dirs),
		cmocka_unit_test(bad_arguments),
		cmocka_unit_test(measured_timeline_svg_inline),
		cmocka_unit_test(training_loss_from_progress_events),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
