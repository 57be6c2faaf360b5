/* tests/unit/test_health.c - the pre-flight gate (launcher/dp_preflight.h),
 * the run output (launcher/dp_progress.h) and both through `dpctl launch`
 * with real dpworker processes on this machine (the local backend).
 *
 * Launch runs need dpworker ($DPWORKER, exported by `make check`) and skip
 * without it.  Every run is bounded by short timeouts.
 */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "common/dp_log.h"
#include "launcher/ctl_launch.h"
#include "launcher/dp_preflight.h"
#include "launcher/dp_progress.h"
#include "topo/dp_topo.h"
#include "tests/unit/dp_test.h"

/* dp_cli_main() leaves its (memory) stderr as the log sink: detach it. */
static struct dp_test_run dpctl_run(const char *const *argv)
{
	struct dp_test_run r = dp_test_dpctl_list(argv);

	dp_log_set_sink(NULL);
	return r;
}
#define DPCTL(...) dpctl_run((const char *const[]){ __VA_ARGS__, NULL })

static const char *worker_or_skip(void)
{
	const char *w = getenv("DPWORKER");

	if (!w || !*w || access(w, X_OK) != 0)
		skip();
	return w;
}

/* Processes carrying DP_TEST_MARK=@mark in their environment (our ranks). */
static int leftovers(const char *mark)
{
	char needle[96];
	DIR *d = opendir("/proc");
	struct dirent *de;
	int n = 0;

	assert_non_null(d);
	(void)snprintf(needle, sizeof(needle), "DP_TEST_MARK=%s", mark);
	while ((de = readdir(d)) != NULL) {
		char path[300], buf[65536];
		long pid = strtol(de->d_name, NULL, 10);
		size_t got;
		FILE *f;

		if (pid <= 0 || pid == (long)getpid())
			continue;
		(void)snprintf(path, sizeof(path), "/proc/%ld/environ", pid);
		f = fopen(path, "rb");
		if (!f)
			continue;
		got = fread(buf, 1, sizeof(buf) - 1, f);
		(void)fclose(f);
		for (size_t off = 0; off < got; off += strnlen(buf + off, got - off) + 1)
			if (strncmp(buf + off, needle, strlen(needle)) == 0) {
				print_message("leftover pid %ld\n", pid);
				n++;
			}
	}
	(void)closedir(d);
	return n;
}

static void set_mark(char *mark, size_t len)
{
	(void)snprintf(mark, len, "health-%ld-%ld", (long)getpid(), (long)time(NULL) ^ random());
	assert_int_equal(setenv("DP_TEST_MARK", mark, 1), 0);
}

/* ---- names ------------------------------------------------------------------- */

static void check_names_parse_and_format(void **state)
{
	struct dp_err err = { 0 };
	unsigned b = 0;
	char buf[128];

	(void)state;
	assert_int_equal(dp_preflight_parse("gpus,disk,version", &b, &err), 0);
	assert_int_equal(b, DP_PF_GPUS | DP_PF_DISK | DP_PF_VERSION);
	assert_int_equal(dp_preflight_format(b, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "gpus,disk,version");
	assert_int_equal(dp_preflight_parse("all", &b, &err), 0);
	assert_int_equal(b, DP_PF_ALL);
	assert_int_equal(dp_preflight_format(b, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "gpus,nics,topology,disk,clock,version");
	assert_int_equal(dp_preflight_parse("none", &b, &err), 0);
	assert_int_equal(b, 0);
	assert_int_equal(dp_preflight_format(0, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "none");
	b = 7;
	assert_int_equal(dp_preflight_parse("gpus,ram", &b, &err), -EINVAL);
	assert_int_equal(b, 7); /* untouched on error */
	assert_non_null(strstr(err.msg, "'ram'"));
	assert_int_equal(dp_preflight_format(DP_PF_ALL, buf, 8), -E2BIG);
}

/* ---- judging ------------------------------------------------------------------ */

static struct dp_ctl_preflight good_report(void)
{
	struct dp_ctl_preflight r;

	memset(&r, 0, sizeof(r));
	r.checks = DP_PF_ALL;
	r.gpus = 8;
	r.nics = 8;
	r.disk_free = 500ULL * 1000 * 1000 * 1000;
	r.clock = 1000.0;
	(void)snprintf(r.version, sizeof(r.version), "1.2.3");
	(void)snprintf(r.disk_path, sizeof(r.disk_path), "/ckpt");
	return r;
}

static const struct dp_preflight_plan plan_all = {
	.checks = DP_PF_ALL,
	.nics = 8,
	.need_gpu = 1,
	.min_disk_gb = 100,
	.max_clock_s = 0.5,
	.version = "1.2.3",
};

static void judge_passes_a_good_node_and_names_each_failure(void **state)
{
	struct dp_ctl_preflight r = good_report();
	char why[512];

	(void)state;
	assert_int_equal(dp_preflight_judge(&plan_all, 8, &r, 999.9, 1000.1, why, sizeof(why)), 0);
	assert_string_equal(why, "");

	r.gpus = 4;
	assert_int_equal(dp_preflight_judge(&plan_all, 8, &r, 1000, 1000, why, sizeof(why)), 1);
	assert_string_equal(why, "4 GPUs, the plan puts 8 ranks here");
	r = good_report();
	r.nics = 7;
	r.disk_free = 20ULL * 1000 * 1000 * 1000;
	assert_int_equal(dp_preflight_judge(&plan_all, 8, &r, 1000, 1000, why, sizeof(why)), 1);
	assert_string_equal(why, "7 usable RDMA NICs, the recipe says 8; "
				 "20.0 GB free at /ckpt, need 100 GB");
	r = good_report();
	(void)snprintf(r.version, sizeof(r.version), "1.2.4");
	(void)snprintf(r.topo, sizeof(r.topo), "rail: GPU3 has no NIC on its switch");
	assert_int_equal(dp_preflight_judge(&plan_all, 8, &r, 1000, 1000, why, sizeof(why)), 1);
	assert_string_equal(why, "topology: rail: GPU3 has no NIC on its switch; "
				 "version '1.2.4', dpctl is '1.2.3'");
	r = good_report();
	(void)snprintf(r.error, sizeof(r.error), "topo: cannot open '/sys'");
	assert_int_equal(dp_preflight_judge(&plan_all, 8, &r, 1000, 1000, why, sizeof(why)), 1);
	assert_non_null(strstr(why, "could not check: topo: cannot open '/sys'"));
}

static void judge_bounds_the_clock_by_the_round_trip(void **state)
{
	struct dp_ctl_preflight r = good_report();
	char why[256];

	(void)state;
	/* the worker stamps its clock between probe and receipt: with a 2 s
	 * round trip, 999.0 means an offset in [-1, +1], which may be within
	 * +-0.5: it passes */
	r.clock = 999.0;
	assert_int_equal(dp_preflight_judge(&plan_all, 8, &r, 998.0, 1000.0, why, sizeof(why)), 0);
	/* the same reading with a 0.1 s round trip: at least 0.9 s behind */
	assert_int_equal(dp_preflight_judge(&plan_all, 8, &r, 999.9, 1000.0, why, sizeof(why)), 1);
	assert_string_equal(why, "clock off by -0.900 s (limit 0.5 s)");
	/* ahead */
	r.clock = 1000.8;
	assert_int_equal(dp_preflight_judge(&plan_all, 8, &r, 999.0, 1000.0, why, sizeof(why)), 1);
	assert_string_equal(why, "clock off by +0.800 s (limit 0.5 s)");
	/* behind */
	r.clock = 998.0;
	assert_int_equal(dp_preflight_judge(&plan_all, 8, &r, 999.9, 1000.0, why, sizeof(why)), 1);
	assert_string_equal(why, "clock off by -1.900 s (limit 0.5 s)");
}

static void judge_skips_gpu_checks_without_gpus_unless_cuda(void **state)
{
	struct dp_preflight_plan p = plan_all;
	struct dp_ctl_preflight r = good_report();
	char why[256];

	(void)state;
	r.gpus = 0;
	r.nics = 0;
	p.nics = 0;
	p.need_gpu = 0;
	assert_int_equal(dp_preflight_judge(&p, 4, &r, 1000, 1000, why, sizeof(why)), 0);
	assert_string_equal(why, "skipped: no GPU");
	p.need_gpu = 1;
	assert_int_equal(dp_preflight_judge(&p, 4, &r, 1000, 1000, why, sizeof(why)), 1);
	assert_string_equal(why, "no GPU found; the recipe trains on cuda");
	/* unchecked things are not judged */
	p.checks = DP_PF_VERSION;
	r.disk_free = 0;
	assert_int_equal(dp_preflight_judge(&p, 4, &r, 0, 0, why, sizeof(why)), 0);
}

static void summary_and_gather_measure_this_node(void **state)
{
	struct dp_topo_cfg cfg = { .sysfs_root = FIXTURES "/sysfs/twogpu" };
	struct dp_ctl_preflight r;
	struct dp_topo *t = NULL;
	struct dp_err err = { 0 };
	char dir[128];

	(void)state;
	assert_int_equal(dp_topo_discover(&cfg, &t, &err), 0);
	memset(&r, 0, sizeof(r));
	dp_preflight_summarize(t, DP_PF_ALL, &r);
	assert_int_equal(r.gpus, dp_topo_gpu_count(t));
	assert_int_equal(r.gpus, 2);
	assert_true(r.nics >= 1);
	dp_topo_free(t);

	/* disk: a checkpoint dir that does not exist yet is measured at its parent */
	(void)snprintf(dir, sizeof(dir), "/tmp/dp-health-%ld/not/yet", (long)getpid());
	assert_int_equal(setenv("DP_TEST_VERSION", "7.7.7", 1), 0);
	dp_preflight_gather(DP_PF_DISK | DP_PF_VERSION, dir, &r);
	assert_int_equal(unsetenv("DP_TEST_VERSION"), 0);
	assert_string_equal(r.error, "");
	assert_string_equal(r.disk_path, "/tmp");
	assert_true(r.disk_free > 0);
	assert_int_equal(r.gpus, -1); /* not asked */
	assert_string_equal(r.version, "7.7.7");
	assert_int_equal(setenv("DP_TEST_CLOCK_SKEW_S", "-30", 1), 0);
	dp_preflight_stamp(&r);
	assert_int_equal(unsetenv("DP_TEST_CLOCK_SKEW_S"), 0);
	assert_true(fabs(r.clock + 30 - (double)time(NULL)) < 5);
}

/* ---- topo validate RECIPE: canned discovery output ------------------------------ */

static void nodes_judge_flags_the_odd_node(void **state)
{
	char *json = dp_test_slurp(FIXTURES "/../fuzz/seeds/twogpu-node.json");
	struct dp_topo *a = NULL, *b = NULL, *c = NULL;
	struct dp_preflight_plan p = { .checks = DP_PF_GPUS | DP_PF_NICS | DP_PF_TOPOLOGY };
	struct dp_preflight_node x[3];
	struct dp_err err = { 0 };
	char *cut;

	(void)state;
	assert_int_equal(dp_topo_import_mem("a", "dpctl-json", json, strlen(json), &a, &err), 0);
	assert_int_equal(dp_topo_import_mem("b", "dpctl-json", json, strlen(json), &b, &err), 0);
	/* node c: the same machine with its second GPU gone */
	cut = strstr(json, ",{\"index\":1,");
	assert_non_null(cut);
	{
		char *end = strstr(cut, "}],\"nics\"");

		assert_non_null(end);
		memmove(cut, end + 1, strlen(end + 1) + 1);
	}
	assert_int_equal(dp_topo_import_mem("c", "dpctl-json", json, strlen(json), &c, &err), 0);
	assert_int_equal(dp_topo_gpu_count(c), 1);
	memset(x, 0, sizeof(x));
	x[0] = (struct dp_preflight_node){ .host = "n1", .topo = a };
	x[1] = (struct dp_preflight_node){ .host = "n2", .topo = c };
	x[2] = (struct dp_preflight_node){ .host = "n3", .topo = b };
	assert_int_equal(dp_preflight_nodes_judge(&p, 2, x, 3), 1);
	assert_true(x[0].ok);
	assert_true(x[2].ok);
	assert_false(x[1].ok);
	assert_int_equal(x[0].gpus, 2);
	assert_int_equal(x[1].gpus, 1);
	assert_non_null(strstr(x[1].why, "1 GPU, the plan puts 2 ranks here"));
	assert_non_null(strstr(x[1].why, "differs from the other nodes: 1 GPU"));
	assert_non_null(strstr(x[1].why, "(n1 has 2 GPUs"));

	/* against the recipe: 8 NICs wanted; an unreachable node is named */
	p.nics = 8;
	x[1] = (struct dp_preflight_node){ .host = "n2", .error = "unreachable: n2: refused" };
	assert_int_equal(dp_preflight_nodes_judge(&p, 2, x, 3), 3);
	assert_string_equal(x[1].why, "unreachable: n2: refused");
	assert_non_null(strstr(x[0].why, "usable RDMA NICs, the recipe says 8"));
	dp_topo_free(a);
	dp_topo_free(b);
	dp_topo_free(c);
	free(json);
}

/* ---- progress output ------------------------------------------------------------ */

static void plain_progress_lines_every_tenth_and_json_events(void **state)
{
	struct dp_progress_cfg cfg = { .interval_s = 1000 };
	struct dp_progress *p = NULL;
	struct dp_err err = { 0 };
	char *text = NULL, *js = NULL;
	size_t len = 0, jlen = 0;
	int lines = 0;

	(void)state;
	cfg.status = open_memstream(&text, &len);
	cfg.json = open_memstream(&js, &jlen);
	assert_int_equal(dp_progress_new(&cfg, &p, &err), 0);
	{
		struct dp_ctl_event ev = { .type = DP_CTL_EV_START, .rank = -1, .nranks = 2 };

		dp_progress_event(p, &ev);
		for (uint64_t s = 1; s <= 40; s++) {
			struct dp_ctl_event pe = { .type = DP_CTL_EV_PROGRESS,
						   .rank = -1,
						   .t = (double)s,
						   .step = s,
						   .total_steps = 40,
						   .loss = 1.0 / (double)s,
						   .tokens_per_s = NAN };

			dp_progress_event(p, &pe);
		}
	}
	dp_progress_free(p);
	(void)fclose(cfg.status);
	(void)fclose(cfg.json);
	/* one line per 10%: steps 1 (0%), 4, 8, ..., 40 */
	for (char *l = text; (l = strstr(l, "progress: step ")) != NULL; l++)
		lines++;
	assert_int_equal(lines, 11);
	assert_non_null(strstr(text, "progress: step 4/40 (10%)"));
	assert_non_null(strstr(text, "progress: step 40/40 (100%)"));
	assert_null(strstr(text, "step 5/40"));
	assert_null(strchr(text, '\r'));
	assert_non_null(strstr(js, "\"event\":\"progress\",\"t\":40.0"));
	assert_non_null(strstr(js, "\"tokens_per_s\":null"));
	free(text);
	free(js);
}

static void tty_progress_is_one_rewritten_line(void **state)
{
	struct dp_progress_cfg cfg = { .tty = 1 };
	struct dp_progress *p = NULL;
	struct dp_err err = { 0 };
	char *text = NULL;
	size_t len = 0;

	(void)state;
	cfg.status = open_memstream(&text, &len);
	assert_int_equal(dp_progress_new(&cfg, &p, &err), 0);
	for (uint64_t s = 1; s <= 3; s++) {
		struct dp_ctl_event pe = { .type = DP_CTL_EV_PROGRESS,
					   .rank = -1,
					   .t = (double)s,
					   .step = s,
					   .total_steps = 10,
					   .loss = 2.5,
					   .tokens_per_s = 1000 };

		dp_progress_event(p, &pe);
	}
	dp_progress_line(p, 0, "h", 1, "a rank line"); /* erases the live line */
	dp_progress_free(p);
	(void)fclose(cfg.status);
	assert_null(strchr(text, '\n'));
	assert_null(strchr(text, '\033')); /* no color asked */
	assert_non_null(strstr(text, "\rstep 3/10 (30%)  loss 2.5  1000 tokens/s  eta 0:07"));
	assert_int_equal(text[len - 1], '\r'); /* erased at the end */
	free(text);
}

/* ---- dpctl launch ------------------------------------------------------------------ */

static void preflight_disk_failure_stops_before_training(void **state)
{
	struct dp_test_run r;
	char mark[64];

	(void)state;
	(void)worker_or_skip();
	set_mark(mark, sizeof(mark));
	r = DPCTL("launch", "--local", "3", "--fake-steps", "50", "--fake-step-ms", "10",
		  "--preflight", "disk,version", "--min-free-disk-gb", "1000000000", "--grace-s",
		  "1", "--rendezvous-s", "20");
	assert_int_equal(r.rc, DP_CTL_EXIT_PREFLIGHT);
	assert_non_null(strstr(r.err, "root cause: pre-flight failed on 1 of 1 node: localhost"));
	assert_non_null(strstr(r.err, "  pre-flight failed: localhost (rank 0): "));
	assert_non_null(strstr(r.err, "GB free at ., need 1e+09 GB"));
	assert_null(strstr(r.out, "step 1/")); /* nothing trained */
	assert_null(strstr(r.err, "progress: "));
	dp_test_run_free(&r);
	assert_int_equal(leftovers(mark), 0);
}

static void preflight_gpu_count_from_a_fake_topology(void **state)
{
	struct dp_test_run r;
	char mark[64];

	(void)state;
	(void)worker_or_skip();
	set_mark(mark, sizeof(mark));
	/* the workers see the two-GPU sysfs fixture; the plan puts 4 ranks here */
	assert_int_equal(setenv("DP_SYSFS_ROOT", FIXTURES "/sysfs/twogpu", 1), 0);
	r = DPCTL("launch", "--local", "4", "--fake-steps", "50", "--fake-step-ms", "10",
		  "--preflight", "gpus", "--grace-s", "1", "--rendezvous-s", "20");
	assert_int_equal(unsetenv("DP_SYSFS_ROOT"), 0);
	assert_int_equal(r.rc, DP_CTL_EXIT_PREFLIGHT);
	assert_non_null(strstr(r.err, "localhost (rank 0): 2 GPUs, the plan puts 4 ranks here"));
	assert_null(strstr(r.out, "step 1/"));
	dp_test_run_free(&r);
	assert_int_equal(leftovers(mark), 0);

	/* two ranks fit on two GPUs: the gate opens */
	assert_int_equal(setenv("DP_SYSFS_ROOT", FIXTURES "/sysfs/twogpu", 1), 0);
	r = DPCTL("launch", "--local", "2", "--fake-steps", "2", "--fake-step-ms", "5",
		  "--preflight", "gpus,clock,version", "--heartbeat-s", "0.05");
	assert_int_equal(unsetenv("DP_SYSFS_ROOT"), 0);
	assert_int_equal(r.rc, 0);
	assert_non_null(strstr(r.out, "[localhost:1] step 2/2"));
	dp_test_run_free(&r);
}

static void preflight_clock_skew_is_caught(void **state)
{
	struct dp_test_run r;

	(void)state;
	(void)worker_or_skip();
	assert_int_equal(setenv("DP_TEST_CLOCK_SKEW_S", "-120", 1), 0);
	r = DPCTL("launch", "--local", "2", "--fake-steps", "5", "--preflight", "clock",
		  "--max-clock-offset-s", "5", "--grace-s", "1");
	assert_int_equal(unsetenv("DP_TEST_CLOCK_SKEW_S"), 0);
	assert_int_equal(r.rc, DP_CTL_EXIT_PREFLIGHT);
	/* 120 s behind, less the time the probe took */
	if (!strstr(r.err, "clock off by -119.") && !strstr(r.err, "clock off by -120.0"))
		fail_msg("%s", r.err);
	assert_non_null(strstr(r.err, " s (limit 5 s)"));
	dp_test_run_free(&r);
}

/* Lines of @text starting with @prefix, counted. */
static int count_prefixed(const char *text, const char *prefix)
{
	int n = 0;

	for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
		n += strncmp(l, prefix, strlen(prefix)) == 0;
	return n;
}

static void run_dir_keeps_rank_logs_and_events(void **state)
{
	char dir[128], path[256], *log, *ev;
	struct dp_test_run r;
	int nstart = 0, ndone = 0;

	(void)state;
	(void)worker_or_skip();
	(void)snprintf(dir, sizeof(dir), "/tmp/dp-health-run-%ld-%ld", (long)getpid(),
		       (long)random());
	r = DPCTL("launch", "--local", "2", "--fake-steps", "4", "--fake-step-ms", "5",
		  "--heartbeat-s", "0.05", "--run-dir", dir, "--prefix", "<{rank}@{host}>",
		  "--progress-s", "1000");
	assert_int_equal(r.rc, 0);
	/* the template; the line follows after one space */
	assert_non_null(strstr(r.out, "<1@localhost> step 4/4 loss 2.0000\n"));
	/* non-TTY progress: plain lines, the last at 100% */
	assert_true(count_prefixed(r.err, "progress: step ") >= 1);
	assert_non_null(strstr(r.err, "progress: step 4/4 (100%)"));
	dp_test_run_free(&r);
	for (int k = 0; k < 2; k++) {
		(void)snprintf(path, sizeof(path), "%s/logs/rank-%04d.log", dir, k);
		log = dp_test_slurp(path);
		/* as received: no prefix, every step in order */
		assert_string_equal(log, "step 1/4 loss 5.0000\nstep 2/4 loss 3.3333\n"
					 "step 3/4 loss 2.5000\nstep 4/4 loss 2.0000\n");
		free(log);
		(void)unlink(path);
	}
	(void)snprintf(path, sizeof(path), "%s/events.jsonl", dir);
	ev = dp_test_slurp(path);
	for (char *l = ev, *nl; l && *l; l = nl ? nl + 1 : NULL) {
		json_error_t je;
		json_t *o;
		const char *type;

		nl = strchr(l, '\n');
		assert_non_null(nl);
		*nl = '\0';
		o = json_loads(l, 0, &je);
		if (!o)
			fail_msg("events.jsonl: '%s': %s", l, je.text);
		type = json_string_value(json_object_get(o, "event"));
		assert_non_null(type);
		nstart += strcmp(type, "start") == 0;
		ndone += strcmp(type, "done") == 0;
		json_decref(o);
	}
	assert_int_equal(nstart, 1);
	assert_int_equal(ndone, 1);
	free(ev);
	(void)unlink(path);
	/* beside it the controller's record for dpctl report */
	(void)snprintf(path, sizeof(path), "%s/run.jsonl", dir);
	assert_int_equal(access(path, R_OK), 0);
	(void)unlink(path);
	(void)snprintf(path, sizeof(path), "%s/metrics.prom", dir);
	(void)unlink(path);
	(void)snprintf(path, sizeof(path), "%s/logs", dir);
	assert_int_equal(rmdir(path), 0);
	assert_int_equal(rmdir(dir), 0);
}

/* Parse every stdout line as a JSON object; returns a JSON array of them. */
static json_t *events_of(const char *out)
{
	json_t *arr = json_array();
	char *copy = strdup(out);

	assert_non_null(copy);
	for (char *l = copy, *nl; l && *l; l = nl ? nl + 1 : NULL) {
		json_error_t je;
		json_t *o;

		nl = strchr(l, '\n');
		if (nl)
			*nl = '\0';
		o = json_loads(l, 0, &je);
		if (!o)
			fail_msg("not one JSON object per line: '%s': %s", l, je.text);
		assert_int_equal(json_array_append_new(arr, o), 0);
	}
	free(copy);
	return arr;
}

static const char *ev_type(json_t *arr, size_t i)
{
	return json_string_value(json_object_get(json_array_get(arr, i), "event"));
}

static void json_stream_has_the_events_in_order(void **state)
{
	struct dp_test_run r;
	json_t *arr;
	size_t n, i_running = 0, nready = 0, npf = 0;
	long last_step = 0;

	(void)state;
	(void)worker_or_skip();
	r = DPCTL("--json", "launch", "--local", "3", "--fake-steps", "6", "--fake-step-ms", "10",
		  "--heartbeat-s", "0.02", "--preflight", "version,clock");
	assert_int_equal(r.rc, 0);
	arr = events_of(r.out);
	n = json_array_size(arr);
	assert_true(n >= 6);
	assert_string_equal(ev_type(arr, 0), "start");
	assert_int_equal(json_integer_value(json_object_get(json_array_get(arr, 0), "ranks")), 3);
	for (size_t i = 1; i < n; i++) {
		const char *t = ev_type(arr, i);
		json_t *o = json_array_get(arr, i);

		if (strcmp(t, "rank-ready") == 0) {
			assert_int_equal(i_running, 0); /* all before running */
			nready++;
		} else if (strcmp(t, "preflight") == 0) {
			assert_int_equal(i_running, 0);
			assert_true(json_is_true(json_object_get(o, "ok")));
			npf++;
		} else if (strcmp(t, "running") == 0) {
			i_running = i;
		} else if (strcmp(t, "progress") == 0) {
			long s = (long)json_integer_value(json_object_get(o, "step"));

			assert_true(i_running > 0);
			assert_true(s > last_step);
			last_step = s;
			assert_int_equal(json_integer_value(json_object_get(o, "total")), 6);
			assert_true(json_is_real(json_object_get(o, "loss")));
		} else {
			assert_string_equal(t, "done");
			assert_int_equal(i, n - 1);
		}
	}
	assert_int_equal(nready, 3);
	assert_int_equal(npf, 3);
	assert_true(i_running > 0);
	assert_int_equal(last_step, 6);
	{
		json_t *done = json_array_get(arr, n - 1);

		assert_string_equal(json_string_value(json_object_get(done, "outcome")), "ok");
		assert_int_equal(json_integer_value(json_object_get(done, "max_step")), 6);
	}
	json_decref(arr);
	dp_test_run_free(&r);
}

static void json_stream_reports_failure_and_restart(void **state)
{
	struct dp_test_run r;
	json_t *arr;
	const char *want[] = { "start", "failure", "restart", "start", "failure", "done" };
	size_t k = 0, n;

	(void)state;
	(void)worker_or_skip();
	r = DPCTL("--json", "launch", "--local", "2", "--fake-steps", "50", "--fake-step-ms", "10",
		  "--fake-fail", "1:3:7", "--max-restarts", "1", "--grace-s", "1", "--heartbeat-s",
		  "0.05");
	assert_int_equal(r.rc, 7);
	arr = events_of(r.out);
	n = json_array_size(arr);
	/* the lifecycle events, in this order (others in between) */
	for (size_t i = 0; i < n && k < 6; i++)
		if (strcmp(ev_type(arr, i), want[k]) == 0)
			k++;
	assert_int_equal(k, 6);
	{
		json_t *last = json_array_get(arr, n - 1);

		assert_string_equal(json_string_value(json_object_get(last, "outcome")),
				    "rank-exit");
		assert_int_equal(json_integer_value(json_object_get(last, "exit_code")), 7);
		assert_int_equal(json_integer_value(json_object_get(last, "attempts")), 2);
		assert_non_null(strstr(json_string_value(json_object_get(last, "cause")),
				       "rank 1 on localhost"));
	}
	for (size_t i = 0; i < n; i++) {
		json_t *o = json_array_get(arr, i);

		if (strcmp(ev_type(arr, i), "failure") == 0) {
			assert_int_equal(json_integer_value(json_object_get(o, "rank")), 1);
			assert_string_equal(json_string_value(json_object_get(o, "host")),
					    "localhost");
		}
	}
	json_decref(arr);
	dp_test_run_free(&r);
}

static void launch_options_are_checked(void **state)
{
	struct dp_test_run r;

	(void)state;
	r = DPCTL("launch", "--local", "2", "--preflight", "gpus,ram");
	assert_int_equal(r.rc, EX_USAGE);
	assert_non_null(strstr(r.err, "'ram'"));
	dp_test_run_free(&r);
	r = DPCTL("launch", "--local", "2", "--min-free-disk-gb", "-1");
	assert_int_equal(r.rc, EX_USAGE);
	dp_test_run_free(&r);
	r = DPCTL("launch", "--local", "2", "--run-dir", "/proc/no/such/dir", "--fake-steps", "1");
	assert_int_not_equal(r.rc, 0);
	assert_non_null(strstr(r.err, "cannot create"));
	dp_test_run_free(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(check_names_parse_and_format),
		cmocka_unit_test(judge_passes_a_good_node_and_names_each_failure),
		cmocka_unit_test(judge_bounds_the_clock_by_the_round_trip),
		cmocka_unit_test(judge_skips_gpu_checks_without_gpus_unless_cuda),
		cmocka_unit_test(summary_and_gather_measure_this_node),
		cmocka_unit_test(nodes_judge_flags_the_odd_node),
		cmocka_unit_test(plain_progress_lines_every_tenth_and_json_events),
		cmocka_unit_test(tty_progress_is_one_rewritten_line),
		cmocka_unit_test(preflight_disk_failure_stops_before_training),
		cmocka_unit_test(preflight_gpu_count_from_a_fake_topology),
		cmocka_unit_test(preflight_clock_skew_is_caught),
		cmocka_unit_test(run_dir_keeps_rank_logs_and_events),
		cmocka_unit_test(json_stream_has_the_events_in_order),
		cmocka_unit_test(json_stream_reports_failure_and_restart),
		cmocka_unit_test(launch_options_are_checked),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
