/* tests/unit/test_train_launch.c - `dpctl launch RECIPE` trains: the ranks
 * find each other through the controller, the step losses the controller
 * computes equal what `dpworker --train-local` prints for the same model,
 * trace.json and timeline.svg hold the ops of every rank, a rank killed mid-training takes
 * the whole run down, what the executor cannot run is refused naming the
 * recipe line, and the train report's arithmetic (tests of
 * launcher/dp_train_report.h with made-up frames).
 *
 * Runs need dpworker ($DPWORKER, exported by `make check`) and skip
 * without it; the kill test also needs $DPCTL.  Models are tiny and runs a
 * few steps, so each takes well under a second on an idle machine. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <libxml/parser.h>
#include <libxml/xpath.h>
#include <libxml/xpathInternals.h>

#include "common/dp_buf.h"
#include "common/dp_log.h"
#include "launcher/ctl_launch.h"
#include "launcher/ctl_proto.h"
#include "launcher/dp_train_report.h"
#include "tests/unit/dp_test.h"

/* The "train" event line of a `dpctl --json launch` event stream. */
static json_t *train_event(const char *out)
{
	const char *p = strstr(out, "{\"event\":\"train\"");
	json_t *o = p ? json_loads(p, JSON_DISABLE_EOF_CHECK, NULL) : NULL;

	if (!o)
		fail_msg("no train event in:\n%s", out);
	return o;
}

static const char *worker_or_skip(void)
{
	const char *w = getenv("DPWORKER");

	if (!w || !*w || access(w, X_OK) != 0)
		skip();
	return w;
}

static struct dp_test_run dpctl_run(const char *const *argv)
{
	struct dp_test_run r = dp_test_dpctl_list(argv);

	dp_log_set_sink(NULL);
	return r;
}
#define DPCTL(...) dpctl_run((const char *const[]){ __VA_ARGS__, NULL })

/* A local recipe of @dp x @pp x @ep ranks, 4 sequences per micro-batch (the
 * global batch is 4 x micro x dp x ep);
 * @extra is appended (more keys). */
static char *recipe_dp(int dp, int pp, int ep, const char *algo, int micro, int steps,
		       const char *extra)
{
	char text[1024];

	(void)snprintf(text, sizeof(text),
		       "cluster: {hosts: localhost, launcher: local, gpus: %d}\n"
		       "model: {layers: 4, hidden: 32, ffn_hidden: 64, experts: 8, "
		       "shared_experts: 1, top_k: 2, groups: 4, vocab: 32, seq_len: 16}\n"
		       "parallel: {pp: %d, ep: %d, dp: %d, schedule: %s, micro_batches: %d}\n"
		       "train: {steps: %d, batch: %d, lr: 0.003, seed: 3}\n"
		       "health: {heartbeat_s: 0.2, hang_timeout_s: 30, rendezvous_s: 30, "
		       "max_restarts: 0}\n%s",
		       dp * pp * ep, pp, ep, dp, algo, micro, steps, 4 * micro * dp * ep,
		       extra ? extra : "");
	return dp_test_write_tmp(".yaml", text);
}

static char *recipe(int pp, const char *algo, int micro, int steps, const char *extra)
{
	return recipe_dp(1, pp, 1, algo, micro, steps, extra);
}

static char *tmpdir(void)
{
	char *d = strdup("/tmp/dp-train-XXXXXX");

	assert_non_null(d);
	assert_non_null(mkdtemp(d));
	return d;
}

static void rm_rf(const char *dir)
{
	char cmd[512];

	(void)snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	(void)!system(cmd);
}

/* The DP_MODEL a dry run gives rank 0. */
static void dry_run_model(const char *path, char *model, size_t len)
{
	struct dp_test_run r = DPCTL("--json", "launch", "--dry-run", path);
	json_t *o, *env;

	assert_int_equal(r.rc, 0);
	o = json_loads(r.out, 0, NULL);
	assert_non_null(o);
	env = json_object_get(json_array_get(json_object_get(o, "ranks"), 0), "env");
	model[0] = '\0';
	for (size_t k = 0; k < json_array_size(env); k++) {
		const char *e = json_string_value(json_array_get(env, k));

		if (strncmp(e, "DP_MODEL=", 9) == 0)
			(void)snprintf(model, len, "%s", e);
	}
	assert_true(model[0]);
	json_decref(o);
	dp_test_run_free(&r);
}

/* `DP_MODEL=... dpworker --train-local ... EXTRA`: the printed loss of
 * each step. */
static int train_local_x(const char *model, const char *algo, int dp, int pp, int ep, int micro,
			 int steps, const char *extra, char lines[][32])
{
	char cmd[2048], line[256];
	int n = 0;
	FILE *p;

	(void)snprintf(cmd, sizeof(cmd),
		       "env '%s' '%s' --train-local --algo %s --dp %d --pp %d --ep %d --micro %d "
		       "--steps %d --seed 3 %s",
		       model, getenv("DPWORKER"), algo, dp, pp, ep, micro, steps, extra);
	p = popen(cmd, "r");
	assert_non_null(p);
	while (fgets(line, sizeof(line), p)) {
		char *loss = strstr(line, " loss ");

		if (strncmp(line, "step ", 5) == 0 && loss && n < steps) {
			loss[strcspn(loss, "\n")] = '\0';
			(void)snprintf(lines[n++], 32, "%s", loss + 6);
		}
	}
	assert_int_equal(pclose(p), 0);
	return n;
}

static int train_local(const char *model, const char *algo, int dp, int pp, int ep, int micro,
		       int steps, char lines[][32])
{
	return train_local_x(model, algo, dp, pp, ep, micro, steps, "", lines);
}

/* timeline.svg: parse @path (fails the test unless well-formed XML). */
static xmlDocPtr svg_load(const char *path)
{
	xmlDocPtr doc = xmlReadFile(path, NULL, XML_PARSE_NONET);

	if (!doc)
		fail_msg("%s is not well-formed XML", path);
	return doc;
}

/* The nodes matching XPath @expr (prefix s: the SVG namespace); caller
 * frees with xmlXPathFreeObject. */
static xmlXPathObjectPtr svg_eval(xmlDocPtr doc, const char *expr)
{
	xmlXPathContextPtr ctx = xmlXPathNewContext(doc);
	xmlXPathObjectPtr o;

	assert_non_null(ctx);
	assert_int_equal(
		xmlXPathRegisterNs(ctx, BAD_CAST "s", BAD_CAST "http://www.w3.org/2000/svg"), 0);
	o = xmlXPathEvalExpression(BAD_CAST expr, ctx);
	xmlXPathFreeContext(ctx);
	if (!o || o->type != XPATH_NODESET)
		fail_msg("xpath %s", expr);
	return o;
}

static int svg_count(xmlDocPtr doc, const char *expr)
{
	xmlXPathObjectPtr o = svg_eval(doc, expr);
	int n = o->nodesetval ? o->nodesetval->nodeNr : 0;

	xmlXPathFreeObject(o);
	return n;
}

/* Attribute @name of node @i of @expr as a number. */
static double svg_num(xmlDocPtr doc, const char *expr, int i, const char *name)
{
	xmlXPathObjectPtr o = svg_eval(doc, expr);
	xmlChar *v;
	double d;

	assert_true(o->nodesetval && i < o->nodesetval->nodeNr);
	v = xmlGetProp(o->nodesetval->nodeTab[i], BAD_CAST name);
	assert_non_null(v);
	d = strtod((const char *)v, NULL);
	xmlFree(v);
	xmlXPathFreeObject(o);
	return d;
}

/* Train through dpctl and compare every step loss with --train-local; check
 * trace.json has ops from every rank. */
/* The run @r succeeded, its train event has @n losses equal to @want (at
 * the 6 decimals --train-local prints) and falling; the event (caller
 * frees).  @what names the run in failures. */
static json_t *losses_match(const struct dp_test_run *r, char want[][32], size_t n,
			    const char *what)
{
	json_t *o, *losses;

	if (r->rc != 0)
		fail_msg("%s: rc %d\n%s\n%s", what, r->rc, r->err, r->out);
	o = train_event(r->out);
	losses = json_object_get(o, "losses");
	assert_int_equal(json_array_size(losses), n);
	for (size_t k = 0; k < n; k++) {
		char got[32];

		(void)snprintf(got, sizeof(got), "%.6f",
			       json_real_value(json_array_get(losses, k)));
		if (strcmp(got, want[k]) != 0)
			fail_msg("%s step %zu: dpctl loss %s, --train-local %s", what, k, got,
				 want[k]);
	}
	assert_true(json_real_value(json_array_get(losses, n - 1)) <
		    json_real_value(json_array_get(losses, 0)));
	return o;
}

static void trains_like_train_local_dp(const char *algo, int dp, int pp, int ep, int micro)
{
	enum { STEPS = 4 };
	char *path = recipe_dp(dp, pp, ep, algo, micro, STEPS, NULL), *dir = tmpdir();
	char model[512], want[STEPS][32], trace[600], svgpath[600], what[96];
	struct dp_test_run r;
	json_t *o, *t, *ev;
	xmlDocPtr doc;
	int seen[8] = { 0 }, n = dp * pp * ep;

	assert_true(n <= 8);
	dry_run_model(path, model, sizeof(model));
	assert_int_equal(train_local(model, algo, dp, pp, ep, micro, STEPS, want), STEPS);
	r = DPCTL("--json", "launch", "--run-dir", dir, path);
	(void)snprintf(what, sizeof(what), "%s dp %d pp %d ep %d", algo, dp, pp, ep);
	o = losses_match(&r, want, STEPS, what);
	(void)snprintf(trace, sizeof(trace), "%s/trace.json", dir);
	assert_string_equal(json_string_value(json_object_get(o, "trace")), trace);
	t = json_load_file(trace, 0, NULL);
	if (!t)
		fail_msg("%s is not valid JSON", trace);
	ev = json_object_get(t, "traceEvents");
	for (size_t i = 0; i < json_array_size(ev); i++) {
		json_t *e = json_array_get(ev, i);
		int tid = (int)json_integer_value(json_object_get(e, "tid"));

		if (strcmp(json_string_value(json_object_get(e, "ph")), "X") != 0)
			continue;
		assert_true(tid >= 0 && tid < n);
		assert_true(json_real_value(json_object_get(e, "dur")) >= 0);
		seen[tid]++;
	}
	for (int i = 0; i < n; i++)
		if (seen[i] < micro) /* at least one F per micro-batch of its chunks */
			fail_msg("%s dp %d pp %d ep %d: rank %d has %d ops in the trace", algo, dp,
				 pp, ep, i, seen[i]);
	/* timeline.svg: the same merged step, one measured lane per rank with
	 * its ops, and the simulated schedule (one lane per pp rank) under it */
	(void)snprintf(svgpath, sizeof(svgpath), "%s/timeline.svg", dir);
	assert_string_equal(json_string_value(json_object_get(o, "timeline_svg")), svgpath);
	doc = svg_load(svgpath);
	assert_int_equal(svg_count(doc, "//s:g[@id='measured']/s:rect[@class='idle']"), n);
	for (int i = 0; i < n; i++) {
		char xp[160];

		(void)snprintf(xp, sizeof(xp),
			       "//s:g[@id='measured']/s:rect[@class='op'][count("
			       "preceding-sibling::s:rect[@class='idle']) = %d]",
			       i + 1);
		if (svg_count(doc, xp) != seen[i])
			fail_msg("%s dp %d pp %d ep %d: rank %d has %d boxes, %d trace ops", algo,
				 dp, pp, ep, i, svg_count(doc, xp), seen[i]);
	}
	(void)snprintf(svgpath, sizeof(svgpath),
		       "//s:g[@id='measured']/s:text[starts-with(., "
		       "'rank %d (pp %d, ep %d')]",
		       n - 1, pp - 1, ep - 1);
	assert_int_equal(svg_count(doc, svgpath), 1);
	assert_int_equal(svg_count(doc, "//s:g[@id='simulated']/s:rect[@class='idle']"), pp);
	assert_int_equal(svg_count(doc, "//s:g[@class='axis']"), 2);
	xmlFreeDoc(doc);
	json_decref(t);
	json_decref(o);
	dp_test_run_free(&r);
	(void)unlink(path);
	free(path);
	rm_rf(dir);
	free(dir);
}

static void trains_like_train_local_ep(const char *algo, int pp, int ep, int micro)
{
	trains_like_train_local_dp(algo, 1, pp, ep, micro);
}

static void trains_like_train_local(const char *algo, int pp, int micro)
{
	trains_like_train_local_ep(algo, pp, 1, micro);
}

static void dualpipe_pp2_matches_train_local(void **state)
{
	(void)state;
	worker_or_skip();
	trains_like_train_local("dualpipe", 2, 4);
}

static void dualpipe_pp4_matches_train_local(void **state)
{
	(void)state;
	worker_or_skip();
	trains_like_train_local("dualpipe", 4, 8);
}

static void zb1p_pp4_matches_train_local(void **state)
{
	(void)state;
	worker_or_skip();
	trains_like_train_local("zb1p", 4, 4);
}

/* Expert parallelism through the controller: 4 ranks, the EP groups' a2a
 * on tcp between ports the ranks learnt from each other (--train-local
 * runs them on shm: the same numbers). */
static void dualpipe_pp2_ep2_matches_train_local(void **state)
{
	(void)state;
	worker_or_skip();
	trains_like_train_local_ep("dualpipe", 2, 2, 4);
}

static void onef1b_pp2_ep2_matches_train_local(void **state)
{
	(void)state;
	worker_or_skip();
	trains_like_train_local_ep("1f1b", 2, 2, 4);
}

/* Data parallelism through the controller: two replicas of a pp 2
 * pipeline; the controller's step loss (the shares of all 4 ranks) and
 * --train-local --dp 2 agree to the printed digit. */
static void dualpipe_dp2_pp2_matches_train_local(void **state)
{
	(void)state;
	worker_or_skip();
	trains_like_train_local_dp("dualpipe", 2, 2, 1, 4);
}

static void onef1b_dp2_pp2_matches_train_local(void **state)
{
	(void)state;
	worker_or_skip();
	trains_like_train_local_dp("1f1b", 2, 2, 1, 4);
}

/* dp 2 x pp 2 x ep 2: eight ranks, EP groups inside each replica. */
static void dualpipe_dp2_pp2_ep2_matches_train_local(void **state)
{
	(void)state;
	worker_or_skip();
	trains_like_train_local_dp("dualpipe", 2, 2, 2, 4);
}

static void human_output_has_summary(void **state)
{
	char *path, *dir;
	struct dp_test_run r;

	(void)state;
	worker_or_skip();
	path = recipe(2, "1f1b", 4, 3, NULL);
	dir = tmpdir();
	r = DPCTL("launch", "--run-dir", dir, path);
	if (r.rc != 0)
		fail_msg("rc %d\n%s\n%s", r.rc, r.err, r.out);
	assert_non_null(strstr(r.out, "step 0 loss "));
	assert_non_null(strstr(r.out, "training: 1f1b pp 2 micro 4, 3 steps in "));
	assert_non_null(strstr(r.out, "  rank 1: busy "));
	assert_non_null(strstr(r.out, "simulated"));
	assert_non_null(strstr(r.out, "trace: "));
	assert_non_null(strstr(r.out, "/timeline.svg\n"));
	/* the progress line (stderr, not a terminal) shows the step's loss --
	 * the sum of the ranks' shares -- not a per-rank figure */
	{
		const char *p = strstr(r.out, "step 2 loss ");
		char want[128];

		assert_non_null(p);
		(void)snprintf(want, sizeof(want), "progress: step 3/3 (100%%)  loss %.4g ",
			       strtod(p + strlen("step 2 loss "), NULL));
		if (!strstr(r.err, want))
			fail_msg("no '%s' in:\n%s", want, r.err);
	}
	dp_test_run_free(&r);
	(void)unlink(path);
	free(path);
	rm_rf(dir);
	free(dir);
}

/* `dpctl launch` of a recipe with @text is refused before anything starts
 * (exit 69), its error containing @want (FILE:LINE and the key). */
static void expect_refused(const char *text, const char *want)
{
	char *path = dp_test_write_tmp(".yaml", text);
	struct dp_test_run r = DPCTL("launch", path);

	assert_int_equal(r.rc, 69);
	if (!strstr(r.err, want))
		fail_msg("%s", r.err);
	dp_test_run_free(&r);
	(void)unlink(path);
	free(path);
}

static void unsupported_layout_names_the_line(void **state)
{
	(void)state;
	/* more ssh hosts, spares or ranks than one launch takes (the caps in
	 * launcher/cmd_launch.c; test_launch_recipe.c: 1024 hosts are fine) */
	expect_refused("cluster: {launcher: ssh, hosts: \"n[1-65537]\", gpus: 1}\n"
		       "model: {layers: 4, hidden: 32, experts: 8, shared_experts: 1,\n"
		       "        top_k: 2}\n"
		       "parallel: {pp: 1, dp: 65537, schedule: 1f1b}\n"
		       "train: {steps: 3}\n",
		       ":1: key 'cluster.hosts': 65537 hosts; this build launches at most 65536");
	expect_refused("cluster: {launcher: ssh, hosts: \"n[1-2]\", spares: \"s[1-65537]\",\n"
		       "          gpus: 1}\n"
		       "model: {layers: 4, hidden: 32, experts: 8, shared_experts: 1,\n"
		       "        top_k: 2}\n"
		       "parallel: {pp: 2, schedule: 1f1b}\n"
		       "train: {steps: 3}\n",
		       ":1: key 'cluster.spares': 65537 spares; this build takes at most 65536");
	expect_refused("cluster:\n"
		       "  launcher: slurm\n"
		       "  hosts: \"n[1-65536]\"\n"
		       "  gpus: 16\n"
		       "model: {layers: 4, hidden: 32, experts: 8, shared_experts: 1,\n"
		       "        top_k: 2}\n"
		       "parallel: {pp: 1, dp: 1048576, schedule: 1f1b}\n"
		       "train: {steps: 3}\n",
		       ":3: key 'cluster.hosts': 65536 hosts x 16 GPUs = 1048576 ranks; this "
		       "build launches at most 524288");
	/* more replicas than the peers one rank may ask the controller for */
	expect_refused("cluster: {hosts: localhost, gpus: 600}\n"
		       "model: {layers: 4, hidden: 32, experts: 8, shared_experts: 1,\n"
		       "        top_k: 2}\n"
		       "parallel:\n"
		       "  pp: 1\n"
		       "  dp: 600\n"
		       "  schedule: 1f1b\n"
		       "train: {steps: 3}\n",
		       ":6: key 'parallel.dp': pp 1 + ep 1 + dp 600");
	/* an EP group wider than the peers one rank may ask the controller for */
	expect_refused("cluster: {hosts: localhost, gpus: 600}\n"
		       "model: {layers: 4, hidden: 32, experts: 600, "
		       "shared_experts: 1, top_k: 2, groups: 4}\n"
		       "parallel:\n"
		       "  pp: 1\n"
		       "  ep: 600\n"
		       "  schedule: 1f1b\n",
		       ":5: key 'parallel.ep': pp 1 + ep 600");
	/* a model the CPU executor does not have */
	expect_refused("cluster: {hosts: localhost, gpus: 2}\n"
		       "model: {layers: 4, hidden: 32, experts: 8, shared_experts: 2,\n"
		       "        top_k: 2}\n"
		       "parallel: {pp: 2}\n",
		       ":2: key 'model.shared_experts': 2");
	/* train.backend cuda: tests/unit/test_gpucomm.c */
}

/* `dpctl launch --dry-run @path`: which of the NULL-terminated @want
 * entries (bit i for want[i]) rank @rank's environment holds; @model gets
 * its DP_MODEL entry. */
static int dry_run_env(const char *path, int rank, const char *const *want, char *model,
		       size_t msize)
{
	struct dp_test_run d = DPCTL("--json", "launch", "--dry-run", path);
	json_t *o, *env;
	int seen = 0;

	assert_int_equal(d.rc, 0);
	o = json_loads(d.out, 0, NULL);
	assert_non_null(o);
	env = json_object_get(json_array_get(json_object_get(o, "ranks"), (size_t)rank), "env");
	for (size_t k = 0; k < json_array_size(env); k++) {
		const char *e = json_string_value(json_array_get(env, k));

		if (strncmp(e, "DP_MODEL=", 9) == 0)
			(void)snprintf(model, msize, "%s", e);
		for (int i = 0; want[i]; i++)
			seen |= (strcmp(e, want[i]) == 0) << i;
	}
	json_decref(o);
	dp_test_run_free(&d);
	return seen;
}

/* A pp 2 x ep 2 dualpipe recipe (4 local GPUs) of @steps steps with
 * model.redundant_experts 2 and the model keys @keys (caller frees the
 * path). */
static char *eplb_recipe(const char *keys, int steps)
{
	char text[2048];

	(void)snprintf(text, sizeof(text),
		       "cluster: {hosts: localhost, launcher: local, gpus: 4}\n"
		       "model: {layers: 4, hidden: 32, ffn_hidden: 64, experts: 8, "
		       "shared_experts: 1, top_k: 2, groups: 4, vocab: 32, seq_len: 16,\n"
		       "        redundant_experts: 2, %s}\n"
		       "parallel: {pp: 2, ep: 2, schedule: dualpipe, micro_batches: 4}\n"
		       "train: {steps: %d, batch: 32, lr: 0.003, seed: 3}\n"
		       "health: {heartbeat_s: 0.2, hang_timeout_s: 30, rendezvous_s: 30, "
		       "max_restarts: 0}\n",
		       keys, steps);
	return dp_test_write_tmp(".yaml", text);
}

/* The log of rank @rank of the run in @dir holds every one of the
 * NULL-terminated @want lines. */
static void expect_in_log(const char *dir, int rank, const char *const *want)
{
	char log[600], *t;

	(void)snprintf(log, sizeof(log), "%s/logs/rank-%04d.log", dir, rank);
	t = dp_test_slurp(log);
	assert_non_null(t);
	for (int i = 0; want[i]; i++)
		if (!strstr(t, want[i]))
			fail_msg("no '%s' in %s:\n%s", want[i], log, t);
	free(t);
}

/* A recipe with model.redundant_experts and model.expert_loads trains with
 * that EPLB placement: the ranks get DP_REDUNDANT_EXPERTS, DP_EP_NODES and
 * DP_EXPERT_LOADS (the loads as JSON), and the losses are those of
 * `dpworker --train-local --redundant 2 --expert-loads FILE`; loads too
 * large for the environment are refused naming the key's line. */
static void recipe_with_redundant_experts_trains(void **state)
{
	enum { STEPS = 4 };
	const char *loads_text = "{\"weight\": [[9, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 2, "
				 "7],\n [1, 1, 3, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 1]]}\n";
	char *loads = dp_test_write_tmp(".json", loads_text), *path, *dir = tmpdir();
	char text[1024], model[512], extra[600], want[STEPS][32];
	const char *const vars[] = {
		"DP_REDUNDANT_EXPERTS=2", "DP_EP_NODES=1",
		"DP_EXPERT_LOADS={\"weight\":[[9,1,1,1,1,1,1,1],[1,1,1,1,1,1,2,"
		"7],[1,1,3,1,1,1,1,1],[1,1,1,1,1,1,1,1]]}",
		NULL
	};
	struct dp_test_run r;
	json_t *o;
	int seen;

	(void)state;
	(void)worker_or_skip();
	(void)snprintf(text, sizeof(text), "expert_loads: '%s'", loads);
	path = eplb_recipe(text, STEPS);
	seen = dry_run_env(path, 3, vars, model, sizeof(model));
	if (seen != 7)
		fail_msg("placement variables %d missing", seen);
	(void)snprintf(extra, sizeof(extra), "--redundant 2 --expert-loads '%s'", loads);
	assert_int_equal(train_local_x(model, "dualpipe", 1, 2, 2, 4, STEPS, extra, want), STEPS);
	r = DPCTL("--json", "launch", "--run-dir", dir, path);
	o = losses_match(&r, want, STEPS, "redundant_experts 2");
	/* the executor of EP rank 1 placed the experts by EPLB */
	expect_in_log(dir, 3,
		      (const char *const[]){ "rank 3: EPLB placement, 10 expert slots per layer (2 "
					     "redundant), recipe loads; this rank holds slots 5..9",
					     NULL });
	json_decref(o);
	dp_test_run_free(&r);
	(void)unlink(path);
	free(path);
	(void)unlink(loads);
	free(loads);
	rm_rf(dir);
	free(dir);
}

/* model.rebalance_every: the ranks get DP_EPLB_REBALANCE_EVERY with the
 * placement variables, re-place every 2 steps (each says so in its log)
 * and train with the losses of `dpworker --train-local --redundant 2
 * --rebalance-every 2`. */
static void recipe_with_rebalancing_trains(void **state)
{
	enum { STEPS = 4 };
	char *path, *dir = tmpdir();
	char model[512], want[STEPS][32];
	const char *const vars[] = { "DP_REDUNDANT_EXPERTS=2", "DP_EPLB_REBALANCE_EVERY=2", NULL };
	struct dp_test_run r;
	json_t *o;
	int seen;

	(void)state;
	(void)worker_or_skip();
	path = eplb_recipe("rebalance_every: 2", STEPS);
	seen = dry_run_env(path, 3, vars, model, sizeof(model));
	if (seen != 3)
		fail_msg("placement variables %d missing", seen);
	assert_int_equal(train_local_x(model, "dualpipe", 1, 2, 2, 4, STEPS,
				       "--redundant 2 --rebalance-every 2", want),
			 STEPS);
	r = DPCTL("--json", "launch", "--run-dir", dir, path);
	(void)unlink(path);
	free(path);
	o = losses_match(&r, want, STEPS, "rebalance_every 2");
	expect_in_log(
		dir, 3,
		(const char *const[]){ "rank 3: step 2: EPLB re-placed from the last 2 steps' "
				       "loads; busiest rank-layer ",
				       "rank 3: step 4: EPLB re-placed", NULL });
	json_decref(o);
	dp_test_run_free(&r);
	rm_rf(dir);
	free(dir);
}

static void oversized_placement_is_refused(void **state)
{
	/* 64 layers x 256 experts of "1," is more than 32 KiB of JSON */
	char *loads = malloc(64 * (256 * 2 + 4) + 32), *lpath, text[1024];
	size_t n = 0;

	(void)state;
	assert_non_null(loads);
	n += (size_t)sprintf(loads + n, "{\"weight\": [");
	for (int l = 0; l < 64; l++) {
		n += (size_t)sprintf(loads + n, "%s[", l ? "," : "");
		for (int e = 0; e < 256; e++)
			n += (size_t)sprintf(loads + n, "%s1", e ? "," : "");
		n += (size_t)sprintf(loads + n, "]");
	}
	(void)sprintf(loads + n, "]}");
	lpath = dp_test_write_tmp(".json", loads);
	(void)snprintf(text, sizeof(text),
		       "cluster: {hosts: localhost, gpus: 2}\n"
		       "model: {layers: 64, hidden: 32, experts: 256, shared_experts: 1,\n"
		       "        top_k: 2, groups: 4,\n"
		       "        expert_loads: '%s'}\n"
		       "parallel: {pp: 1, ep: 2, schedule: 1f1b}\n",
		       lpath);
	expect_refused(text, ":4: key 'model.expert_loads': the loads are 32908 bytes of "
			     "DP_EXPERT_LOADS, more than the 32768");
	(void)unlink(lpath);
	free(lpath);
	free(loads);
	/* more redundant slots than the executor places */
	expect_refused("cluster: {hosts: localhost, gpus: 2}\n"
		       "model: {layers: 4, hidden: 32, experts: 8, shared_experts: 1,\n"
		       "        top_k: 2, redundant_experts: 5000}\n"
		       "parallel: {pp: 1, ep: 2, schedule: 1f1b}\n",
		       ":3: key 'model.redundant_experts': 5000: the executor places at most "
		       "4096");
}

static double mono(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A rank SIGKILLed mid-training: the run fails with 137 naming that rank,
 * and the other ranks are stopped (their pids are gone when dpctl exits). */
static void killed_rank_tears_everything_down(void **state)
{
	const char *dpctl = getenv("DPCTL");
	char *path, *dir, buf[65536];
	size_t len = 0;
	pid_t child, pids[2] = { 0, 0 };
	int out[2], errp[2], st, killed = 0;
	double deadline;

	(void)state;
	worker_or_skip();
	if (!dpctl || access(dpctl, X_OK) != 0) {
		skip();
		return;
	}
	path = recipe(2, "dualpipe", 4, 100000, NULL);
	dir = tmpdir();
	assert_int_equal(pipe(out), 0);
	assert_int_equal(pipe(errp), 0);
	child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		(void)dup2(out[1], 1);
		(void)dup2(errp[1], 2);
		(void)execl(dpctl, dpctl, "launch", "--run-dir", dir, "--grace-s", "2", path,
			    (char *)NULL);
		_exit(127);
	}
	(void)close(out[1]);
	(void)close(errp[1]);
	deadline = mono() + 60;
	while (mono() < deadline) {
		struct pollfd p = { .fd = out[0], .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, 200) <= 0)
			continue;
		n = read(out[0], buf + len, sizeof(buf) - 1 - len);
		if (n <= 0)
			break;
		len += (size_t)n;
		buf[len] = '\0';
		for (int r = 0; r < 2; r++) {
			char needle[64], *at;

			(void)snprintf(needle, sizeof(needle), "[localhost:%d] rank %d: pid ", r,
				       r);
			at = strstr(buf, needle);
			if (at && !pids[r])
				pids[r] = (pid_t)strtol(at + strlen(needle), NULL, 10);
		}
		if (!killed && pids[1] > 0 && strstr(buf, "\nstep 0 loss ")) {
			assert_int_equal(kill(pids[1], SIGKILL), 0);
			killed = 1;
		}
		if (len > sizeof(buf) - 4096)
			len = 0; /* keep reading; what we need is already seen */
	}
	if (!killed)
		(void)kill(child, SIGKILL);
	assert_int_equal(waitpid(child, &st, 0), child);
	{
		ssize_t n = read(errp[0], buf, sizeof(buf) - 1);

		buf[n > 0 ? n : 0] = '\0';
	}
	(void)close(out[0]);
	(void)close(errp[0]);
	assert_true(killed);
	assert_true(WIFEXITED(st));
	if (WEXITSTATUS(st) != 137 || !strstr(buf, "rank 1 on localhost") ||
	    !strstr(buf, "killed by signal 9"))
		fail_msg("exit %d:\n%s", WEXITSTATUS(st), buf);
	/* rank 0 was stopped and reaped */
	assert_int_equal(kill(pids[0], 0), -1);
	assert_int_equal(errno, ESRCH);
	(void)unlink(path);
	free(path);
	rm_rf(dir);
	free(dir);
}

/* A training rank whose peer never offers an endpoint (here: a fake-mode
 * rank) fails the rendezvous naming both, instead of waiting forever. */
static void peer_without_endpoint_fails_rendezvous(void **state)
{
	const char *w = worker_or_skip();
	const char *const train_argv[] = { w, NULL };
	const char *const fake_argv[] = { w, "--fake-steps", "2", NULL };
	const char *const env[] = { "DP_SCHEDULE=1f1b",	  "DP_PP_SIZE=2", "DP_PP_RANK=0",
				    "DP_MICRO_BATCHES=2", "DP_STEPS=2",	  NULL };
	struct dp_launch_rank ranks[2] = {
		{ .rank = 0,
		  .host = "localhost",
		  .local_index = 0,
		  .argv = train_argv,
		  .env = env },
		{ .rank = 1, .host = "localhost", .local_index = 1, .argv = fake_argv },
	};
	struct dp_launch_spec spec = { .ranks = ranks, .nranks = 2 };
	struct dp_ctl_cfg cfg = {
		.backend = "local", .rendezvous_s = 30, .heartbeat_s = 0.2, .grace_s = 2
	};
	struct dp_ctl_result res;
	struct dp_err err = { 0 };

	(void)state;
	assert_int_equal(dp_ctl_run(&cfg, &spec, &res, &err), 0);
	assert_int_equal(res.outcome, DP_CTL_RENDEZVOUS);
	assert_int_equal(res.exit_code, 76);
	if (!strstr(res.cause, "rank 0 needs the address of rank 1, which sent none"))
		fail_msg("%s", res.cause);
}

/* ---- the train report ------------------------------------------------------------ */

static void report_sums_shares_in_rank_order(void **state)
{
	struct dp_train_report_cfg cfg = {
		.nranks = 3, .algo = DP_SCHED_1F1B, .pp = 3, .micro = 3
	};
	struct dp_train_report *tr = NULL;
	struct dp_ctl_step s = { .seconds = 0.5 };
	double a = 1.0, b = 1e-16, c = -1.0;

	(void)state;
	assert_int_equal(dp_train_report_new(&cfg, &tr, NULL), 0);
	/* step 1 arrives from rank 2 before step 0 is complete: both wait */
	s.step = 0, s.loss_share = c, s.tokens = 0;
	dp_train_report_step(tr, 2, &s);
	s.step = 1, s.loss_share = 5;
	dp_train_report_step(tr, 2, &s);
	s.step = 0, s.loss_share = b, s.tokens = 64;
	dp_train_report_step(tr, 1, &s);
	dp_train_report_step(tr, 1, &s); /* a duplicate is ignored */
	assert_int_equal(dp_train_report_nsteps(tr), 0);
	s.loss_share = a, s.tokens = 64;
	dp_train_report_step(tr, 0, &s);
	assert_int_equal(dp_train_report_nsteps(tr), 1);
	/* rank order (a + b) + c, not arrival order (c + b) + a */
	assert_true(dp_train_report_loss(tr, 0) == (0.0 + a + b) + c);
	assert_true(dp_train_report_loss(tr, 0) != (0.0 + c + b) + a);
	assert_true(isnan(dp_train_report_loss(tr, 1)));
	s.step = 1, s.loss_share = 0;
	dp_train_report_step(tr, 0, &s);
	dp_train_report_step(tr, 1, &s);
	assert_int_equal(dp_train_report_nsteps(tr), 2);
	assert_true(dp_train_report_loss(tr, 1) == 5.0);
	dp_train_report_free(tr);
}

/* Feed a 1f1b pp 2 micro 2 timeline (F = 1 ms, B = 2 ms, rank 1 starts
 * after rank 0's F0) of step 7 for the ranks in @mask, the first op @lead_ns
 * after the step start. */
static void feed_1f1b(struct dp_train_report *tr, unsigned mask, uint64_t lead_ns)
{
	static const struct {
		int rank, kind, micro;
		double start, end;
	} ops[] = {
		{ 0, DP_SCHED_OP_F, 0, 0, 1 }, { 0, DP_SCHED_OP_F, 1, 1, 2 },
		{ 0, DP_SCHED_OP_B, 0, 4, 6 }, { 0, DP_SCHED_OP_B, 1, 7, 9 },
		{ 1, DP_SCHED_OP_F, 0, 1, 2 }, { 1, DP_SCHED_OP_B, 0, 2, 4 },
		{ 1, DP_SCHED_OP_F, 1, 4, 5 }, { 1, DP_SCHED_OP_B, 1, 5, 7 },
	};
	struct dp_ctl_timeline *t = calloc(1, sizeof(*t));

	assert_non_null(t);
	for (int r = 0; r < 2; r++) {
		if (!(mask & (1u << r)))
			continue;
		memset(t, 0, sizeof(*t));
		t->step = 7;
		t->t0_ns = 1000000000;
		t->t1_ns = 1010000000;
		for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
			struct dp_ctl_tl_op *o;

			if (ops[i].rank != r)
				continue;
			o = &t->op[t->n++];
			o->kind = (uint8_t)ops[i].kind;
			o->micro = ops[i].micro;
			o->micro2 = -1;
			o->start_ns = t->t0_ns + lead_ns + (uint64_t)(ops[i].start * 1e6);
			o->end_ns = t->t0_ns + lead_ns + (uint64_t)(ops[i].end * 1e6);
		}
		dp_train_report_timeline(tr, r, "localhost", t);
	}
	free(t);
}

static void report_bubble_and_trace(void **state)
{
	struct dp_train_report_cfg cfg = {
		.nranks = 2, .algo = DP_SCHED_1F1B, .pp = 2, .micro = 2
	};
	struct dp_train_report *tr = NULL;
	struct dp_train_bubble b[2];
	struct dp_train_durations d;
	char *dir = tmpdir(), path[300];
	json_t *j;

	(void)state;
	assert_int_equal(dp_train_report_new(&cfg, &tr, NULL), 0);
	assert_int_equal(dp_train_report_bubbles(tr, b, &d, NULL), -ENODATA);
	feed_1f1b(tr, 3, 0);
	assert_int_equal(dp_train_report_bubbles(tr, b, &d, NULL), 0);
	assert_true(fabs(d.f - 1e-3) < 1e-9 && fabs(d.b - 2e-3) < 1e-9);
	/* both ranks busy 6 ms over a 9 ms span */
	assert_true(fabs(b[0].busy - 6e-3) < 1e-9 && fabs(b[1].busy - 6e-3) < 1e-9);
	assert_true(fabs(b[0].bubble - 3e-3) < 1e-9 && fabs(b[1].bubble - 3e-3) < 1e-9);
	/* 1F1B pp 2: the simulator's makespan for F 1, B 2 is 9 as measured */
	assert_true(fabs(b[0].predicted - 3e-3) < 1e-9);
	(void)snprintf(path, sizeof(path), "%s/trace.json", dir);
	assert_int_equal(dp_train_report_write_trace(tr, path, NULL), 0);
	j = json_load_file(path, 0, NULL);
	assert_non_null(j);
	/* 2 thread names + 1 process name + 8 ops */
	assert_int_equal(json_array_size(json_object_get(j, "traceEvents")), 11);
	json_decref(j);
	dp_train_report_free(tr);
	rm_rf(dir);
	free(dir);
}

/* timeline.svg from a made-up merged timeline: a lane per rank, a box per
 * op at its measured place (ms from the earliest op), the simulated lanes,
 * the axes; a failed run's partial timeline still draws; none is ENODATA. */
static void report_timeline_svg(void **state)
{
	struct dp_train_report_cfg cfg = {
		.nranks = 2, .algo = DP_SCHED_1F1B, .pp = 2, .micro = 2
	};
	/* rank 0's ops in ms from the earliest op */
	static const double start[] = { 0, 1, 4, 7 }, end[] = { 1, 2, 6, 9 };
	struct dp_train_report *tr = NULL;
	char *dir = tmpdir(), path[300];
	const char *r0 = "//s:g[@id='measured']/s:rect[@class='op'][count("
			 "preceding-sibling::s:rect[@class='idle']) = 1]";
	struct dp_err err = { 0 };
	struct dp_buf b;
	xmlDocPtr doc;
	double left, scale;

	(void)state;
	assert_int_equal(dp_train_report_new(&cfg, &tr, NULL), 0);
	(void)snprintf(path, sizeof(path), "%s/timeline.svg", dir);
	assert_int_equal(dp_train_report_write_svg(tr, path, &err), -ENODATA);
	assert_non_null(strstr(err.msg, "no timeline"));
	assert_int_equal(access(path, F_OK), -1);
	feed_1f1b(tr, 3, 500000); /* the first op 0.5 ms into the step */
	assert_int_equal(dp_train_report_write_svg(tr, path, NULL), 0);
	doc = svg_load(path);
	assert_int_equal(svg_count(doc, "//s:g[@id='measured']/s:rect[@class='idle']"), 2);
	assert_int_equal(svg_count(doc, "//s:g[@id='measured']/s:rect[@class='op']"), 8);
	assert_int_equal(svg_count(doc, r0), 4);
	assert_int_equal(svg_count(doc, "//s:g[@id='measured']/s:text[. = 'rank 0 (pp 0, ep 0)']"),
			 1);
	assert_int_equal(svg_count(doc, "//s:g[@id='measured']/s:text[. = 'rank 1 (pp 1, ep 0)']"),
			 1);
	/* the simulator's 1F1B for F 1, B 2: the same 9 ms, 4 ops per rank */
	assert_int_equal(svg_count(doc, "//s:g[@id='simulated']/s:rect[@class='idle']"), 2);
	assert_int_equal(svg_count(doc, "//s:g[@id='simulated']/s:rect[@class='op']"), 8);
	assert_int_equal(svg_count(doc, "//s:g[@class='axis']"), 2);
	assert_int_equal(svg_count(doc, "//s:g[@class='axis']/s:text[. = '0 ms']"), 2);
	/* the idle background spans the 9 ms */
	left = svg_num(doc, "//s:g[@id='measured']/s:rect[@class='idle']", 0, "x");
	scale = svg_num(doc, "//s:g[@id='measured']/s:rect[@class='idle']", 0, "width") / 9;
	assert_true(scale > 1);
	for (int i = 0; i < 4; i++) {
		assert_true(fabs(svg_num(doc, r0, i, "x") - (left + start[i] * scale)) < 0.02);
		assert_true(fabs(svg_num(doc, r0, i, "width") - (end[i] - start[i]) * scale) <
			    0.02);
	}
	xmlFreeDoc(doc);
	dp_train_report_free(tr);

	/* a failed run: only rank 1 sent its timeline */
	assert_int_equal(dp_train_report_new(&cfg, &tr, NULL), 0);
	feed_1f1b(tr, 2, 500000);
	dp_buf_init(&b, 1 << 20);
	assert_int_equal(dp_train_report_svg(tr, &b, NULL), 0);
	doc = xmlReadMemory(dp_buf_str(&b), (int)strlen(dp_buf_str(&b)), "t.svg", NULL,
			    XML_PARSE_NONET);
	assert_non_null(doc);
	assert_int_equal(svg_count(doc, "//s:g[@id='measured']/s:rect[@class='idle']"), 2);
	assert_int_equal(svg_count(doc, "//s:g[@id='measured']/s:rect[@class='op']"), 4);
	assert_int_equal(svg_count(doc, "//s:text[. = 'rank 0 (pp 0, ep 0): no timeline']"), 1);
	xmlFreeDoc(doc);
	dp_buf_release(&b);
	dp_train_report_free(tr);
	rm_rf(dir);
	free(dir);
}

/* dp 2 x pp 2: the step loss adds the shares of both replicas (rank order),
 * the tokens of both replicas count, rank 2 and 3 (replica 1) get the
 * simulated bubble of their pp ranks 0 and 1, and the summary names dp. */
static void report_dp_replicas(void **state)
{
	struct dp_train_report_cfg cfg = {
		.nranks = 4, .algo = DP_SCHED_1F1B, .pp = 2, .micro = 2, .dp = 2
	};
	struct dp_train_report *tr = NULL;
	struct dp_ctl_timeline *t = calloc(1, sizeof(*t));
	struct dp_ctl_step s = { .seconds = 0.5 };
	/* per rank: 1f1b rank 0 holds the embedding, rank 1 the head */
	static const double share[4] = { 0, 0.75, 0, 1.25 };
	static const uint64_t tokens[4] = { 64, 0, 64, 0 };
	struct dp_train_bubble b[4];
	struct dp_buf out;

	(void)state;
	assert_non_null(t);
	assert_int_equal(dp_train_report_new(&cfg, &tr, NULL), 0);
	for (int r = 3; r >= 0; r--) {
		s.step = 0;
		s.loss_share = share[r];
		s.tokens = tokens[r];
		dp_train_report_step(tr, r, &s);
		assert_int_equal(dp_train_report_nsteps(tr), r == 0);
	}
	assert_true(dp_train_report_loss(tr, 0) == ((0.0 + 0) + 0.75 + 0) + 1.25);
	assert_true(dp_train_report_tokens_per_s(tr) > 0);
	for (int r = 0; r < 4; r++) {
		memset(t, 0, sizeof(*t));
		t->step = 0;
		t->t0_ns = 1000000000;
		t->t1_ns = 1010000000;
		for (int m = 0; m < 2; m++) {
			/* pp rank 0 ops take 1 ms, pp rank 1 ops 2 ms */
			struct dp_ctl_tl_op *o = &t->op[t->n++];
			uint64_t ms = (uint64_t)(r % 2 + 1) * 1000000;

			o->kind = (uint8_t)DP_SCHED_OP_F;
			o->micro = m;
			o->micro2 = -1;
			o->start_ns = t->t0_ns + (uint64_t)(2 * m) * ms;
			o->end_ns = o->start_ns + ms;
		}
		dp_train_report_timeline(tr, r, "localhost", t);
	}
	assert_int_equal(dp_train_report_bubbles(tr, b, NULL, NULL), 0);
	assert_true(b[2].predicted == b[0].predicted);
	assert_true(b[3].predicted == b[1].predicted);
	assert_true(fabs(b[2].busy - b[0].busy) < 1e-12 && fabs(b[3].busy - 4e-3) < 1e-9);
	dp_buf_init(&out, 1 << 16);
	assert_int_equal(dp_train_report_summary(tr, &out, NULL), 0);
	if (!strstr(dp_buf_str(&out), "training: 1f1b dp 2 pp 2 micro 2, 1 steps in "))
		fail_msg("%s", dp_buf_str(&out));
	dp_buf_release(&out);
	dp_train_report_free(tr);
	free(t);
}

/* ---- restarts from checkpoints ------------------------------------------------- */

/* A dp @dp x pp 2 run of 6 steps with a checkpoint every 2 steps into
 * @ckdir and up to @restarts restarts, run directory @dir; @fail is
 * DP_TEST_FAIL_AT_STEP (NULL: none).  Returns the `dpctl --json launch` run. */
static struct dp_test_run ckpt_run_dp(int dp, const char *ckdir, const char *dir, int restarts,
				      const char *fail)
{
	char text[1024], failenv[96] = "", *path;
	struct dp_test_run r;

	if (fail)
		(void)snprintf(failenv, sizeof(failenv), "env: {DP_TEST_FAIL_AT_STEP: \"%s\"}\n",
			       fail);
	(void)snprintf(text, sizeof(text),
		       "cluster: {hosts: localhost, launcher: local, gpus: %d}\n"
		       "model: {layers: 4, hidden: 32, ffn_hidden: 64, experts: 8, "
		       "shared_experts: 1, top_k: 2, groups: 4, vocab: 32, seq_len: 16}\n"
		       "parallel: {pp: 2, dp: %d, schedule: dualpipe, micro_batches: 4}\n"
		       "train: {steps: 6, batch: %d, lr: 0.003, seed: 3, "
		       "checkpoint: {dir: '%s', every: 2}}\n"
		       "health: {heartbeat_s: 0.2, hang_timeout_s: 30, rendezvous_s: 30, "
		       "max_restarts: %d}\n%s",
		       2 * dp, dp, 16 * dp, ckdir, restarts, failenv);
	path = dp_test_write_tmp(".yaml", text);
	r = DPCTL("--json", "launch", "--run-dir", dir, "--grace-s", "2", path);
	(void)unlink(path);
	free(path);
	return r;
}

static struct dp_test_run ckpt_run(const char *ckdir, const char *dir, int restarts,
				   const char *fail)
{
	return ckpt_run_dp(1, ckdir, dir, restarts, fail);
}

/* The "done" event's result object of a --json event stream. */
static json_t *done_event(const char *out)
{
	const char *p = strstr(out, "{\"event\":\"done\"");
	json_t *o = p ? json_loads(p, JSON_DISABLE_EOF_CHECK, NULL) : NULL;

	if (!o)
		fail_msg("no done event in:\n%s", out);
	return o;
}

static json_int_t result_int(json_t *done, const char *key)
{
	json_t *v = json_object_get(done, key);

	if (!v)
		v = json_object_get(json_object_get(done, "result"), key);
	if (!json_is_integer(v))
		fail_msg("no integer '%s' in the done event", key);
	return json_integer_value(v);
}

/* The train events of @out_a (uninterrupted) and @out_b (restarted) both
 * carry @n step losses, equal bit for bit. */
static void expect_same_losses(const char *out_a, const char *out_b, size_t n)
{
	json_t *ta = train_event(out_a), *tb = train_event(out_b);
	json_t *la = json_object_get(ta, "losses"), *lb = json_object_get(tb, "losses");

	assert_int_equal(json_array_size(la), n);
	assert_int_equal(json_array_size(lb), n);
	for (size_t k = 0; k < n; k++) {
		double x = json_real_value(json_array_get(la, k)),
		       y = json_real_value(json_array_get(lb, k));

		if (!(x == y) || !isfinite(x))
			fail_msg("step %zu: uninterrupted %.9g, restarted %.9g", k, x, y);
	}
	json_decref(ta);
	json_decref(tb);
}

/* Rank @rank of a dp @dp run fails before step 4 of the first attempt: the
 * run restarts once, resumes from the step-4 checkpoint, and its per-step
 * losses equal those of an uninterrupted run bit for bit.  Both runs use
 * one checkpoint directory: the complete step-6 checkpoint the first run
 * leaves there must not be what the second run's restart resumes from. */
static void check_restart(int dp, int rank)
{
	char *ck = tmpdir(), *run = tmpdir(), log[600], fail[32], want[64], *text;
	struct dp_test_run a, b;
	json_t *done;

	(void)snprintf(fail, sizeof(fail), "4:%d", rank);
	a = ckpt_run_dp(dp, ck, run, 1, NULL);
	if (a.rc != 0)
		fail_msg("uninterrupted: rc %d\n%s\n%s", a.rc, a.err, a.out);
	b = ckpt_run_dp(dp, ck, run, 1, fail);
	if (b.rc != 0)
		fail_msg("restarted: rc %d\n%s\n%s", b.rc, b.err, b.out);
	done = done_event(b.out);
	assert_int_equal(result_int(done, "attempts"), 2);
	assert_int_equal(result_int(done, "resume_step"), 4);
	if (!strstr(b.out, "\"event\":\"restart\""))
		fail_msg("no restart event:\n%s", b.out);
	(void)snprintf(log, sizeof(log), "%s/logs/rank-%04d.log", run, rank);
	(void)snprintf(want, sizeof(want), "rank %d: resuming at step 4", rank);
	text = dp_test_slurp(log);
	if (!text || !strstr(text, want))
		fail_msg("rank %d did not resume at step 4:\n%s", rank, text ? text : "(no log)");
	free(text);
	expect_same_losses(a.out, b.out, 6);
	json_decref(done);
	dp_test_run_free(&a);
	dp_test_run_free(&b);
	rm_rf(ck);
	rm_rf(run);
	free(ck);
	free(run);
}

static void restart_resumes_from_checkpoint(void **state)
{
	(void)state;
	worker_or_skip();
	check_restart(1, 1);
}

/* dp 2 x pp 2: rank 3 (replica 1, which writes no checkpoint files) fails;
 * after the restart every replica loads replica 0's files and the losses
 * go on as if uninterrupted. */
static void restart_with_dp_resumes_from_replica_0(void **state)
{
	(void)state;
	worker_or_skip();
	check_restart(2, 3);
}

/* As above, but rank 1 also damages its file of the step-4 checkpoint before
 * failing: the restart detects it, falls back to step 2, runs steps 2 and 3
 * a second time, and the losses (the latest per step) still equal an
 * uninterrupted run's. */
static void restart_skips_corrupt_checkpoint(void **state)
{
	char *ck = tmpdir(), *run = tmpdir();
	struct dp_test_run a, b;
	json_t *done;

	(void)state;
	worker_or_skip();
	a = ckpt_run(ck, run, 1, NULL);
	if (a.rc != 0)
		fail_msg("uninterrupted: rc %d\n%s\n%s", a.rc, a.err, a.out);
	b = ckpt_run(ck, run, 1, "4:1:corrupt");
	if (b.rc != 0)
		fail_msg("restarted: rc %d\n%s\n%s", b.rc, b.err, b.out);
	done = done_event(b.out);
	assert_int_equal(result_int(done, "attempts"), 2);
	assert_int_equal(result_int(done, "resume_step"), 2);
	expect_same_losses(a.out, b.out, 6);
	json_decref(done);
	dp_test_run_free(&a);
	dp_test_run_free(&b);
	rm_rf(ck);
	rm_rf(run);
	free(ck);
	free(run);
}

/* A rank that fails at step 4 on every attempt: the first restart resumes at
 * step 4 and fails before a new checkpoint, so the controller stops there
 * (2 attempts of the 3 allowed), saying why. */
static void restart_without_progress_stops(void **state)
{
	char *ck = tmpdir(), *run = tmpdir();
	struct dp_test_run r;
	json_t *done;

	(void)state;
	worker_or_skip();
	r = ckpt_run(ck, run, 3, "4:1:always");
	assert_int_equal(r.rc, 70);
	done = done_event(r.out);
	assert_int_equal(result_int(done, "attempts"), 2);
	if (!strstr(r.err, "not restarting: attempt 2 resumed at step 4") &&
	    !strstr(r.out, "not restarting: attempt 2 resumed at step 4"))
		fail_msg("no no-progress cause:\n%s\n%s", r.out, r.err);
	json_decref(done);
	dp_test_run_free(&r);
	rm_rf(ck);
	rm_rf(run);
	free(ck);
	free(run);
}

/* The report keeps losses by step: a restart that resumes at step 1 and
 * reports it again replaces it, and a failed attempt's half-reported step
 * does not mix with the new attempt's shares. */
static void report_keeps_latest_loss_per_step(void **state)
{
	struct dp_train_report_cfg cfg = {
		.nranks = 2, .algo = DP_SCHED_1F1B, .pp = 2, .micro = 2
	};
	struct dp_train_report *tr = NULL;
	struct dp_ctl_step s = { .seconds = 0.1 };
	struct dp_buf b;

	(void)state;
	assert_int_equal(dp_train_report_new(&cfg, &tr, NULL), 0);
	for (int k = 0; k < 2; k++)
		for (int r = 0; r < 2; r++) {
			s.step = (uint64_t)k, s.loss_share = 1.0 + k;
			dp_train_report_step(tr, r, &s);
		}
	s.step = 2, s.loss_share = 100; /* rank 0 only: the attempt fails */
	dp_train_report_step(tr, 0, &s);
	dp_train_report_events.restart(tr, 2);
	for (int k = 1; k < 4; k++)
		for (int r = 0; r < 2; r++) {
			s.step = (uint64_t)k, s.loss_share = 0.25 * k;
			dp_train_report_step(tr, r, &s);
		}
	assert_int_equal(dp_train_report_nsteps(tr), 4);
	assert_true(dp_train_report_loss(tr, 0) == 2.0);
	assert_true(dp_train_report_loss(tr, 1) == 0.5);
	assert_true(dp_train_report_loss(tr, 2) == 1.0);
	assert_true(dp_train_report_loss(tr, 3) == 1.5);
	dp_buf_init(&b, 1 << 16);
	assert_int_equal(dp_train_report_summary(tr, &b, NULL), 0);
	if (!strstr(dp_buf_str(&b), "4 steps in ") ||
	    !strstr(dp_buf_str(&b), "loss 2.0000 -> 1.5000"))
		fail_msg("%s", dp_buf_str(&b));
	dp_buf_release(&b);
	dp_train_report_free(tr);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(report_sums_shares_in_rank_order),
		cmocka_unit_test(report_bubble_and_trace),
		cmocka_unit_test(report_timeline_svg),
		cmocka_unit_test(report_dp_replicas),
		cmocka_unit_test(unsupported_layout_names_the_line),
		cmocka_unit_test(recipe_with_redundant_experts_trains),
		cmocka_unit_test(recipe_with_rebalancing_trains),
		cmocka_unit_test(oversized_placement_is_refused),
		cmocka_unit_test(dualpipe_pp2_matches_train_local),
		cmocka_unit_test(dualpipe_pp4_matches_train_local),
		cmocka_unit_test(zb1p_pp4_matches_train_local),
		cmocka_unit_test(dualpipe_pp2_ep2_matches_train_local),
		cmocka_unit_test(onef1b_pp2_ep2_matches_train_local),
		cmocka_unit_test(dualpipe_dp2_pp2_matches_train_local),
		cmocka_unit_test(onef1b_dp2_pp2_matches_train_local),
		cmocka_unit_test(dualpipe_dp2_pp2_ep2_matches_train_local),
		cmocka_unit_test(human_output_has_summary),
		cmocka_unit_test(killed_rank_tears_everything_down),
		cmocka_unit_test(peer_without_endpoint_fails_rendezvous),
		cmocka_unit_test(report_keeps_latest_loss_per_step),
		cmocka_unit_test(restart_resumes_from_checkpoint),
		cmocka_unit_test(restart_with_dp_resumes_from_replica_0),
		cmocka_unit_test(restart_skips_corrupt_checkpoint),
		cmocka_unit_test(restart_without_progress_stops),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
