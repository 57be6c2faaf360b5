/* tests/unit/test_recipe.c - recipes: the shipped ones load with the values
 * they say, defaults, every kind of broken recipe reported with its exact
 * message (all errors, in file order), and `dpctl recipe check` exit codes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include <jansson.h>

#include "launcher/dp_launcher.h"
#include "launcher/dp_plan.h"
#include "tests/unit/dp_test.h"

#define RECIPES DP_SRCDIR "/recipes"
#define BAD	FIXTURES "/recipes"

static const char demo_path[] = RECIPES "/local-demo.yaml";
static const char slurm_path[] = RECIPES "/slurm.yaml";
static const char odd_path[] = BAD "/dualpipe-odd.yaml";
static const char enum_path[] = BAD "/bad-enum.yaml";
static const char nosuch_path[] = BAD "/no-such.yaml";
static const char world_path[] = BAD "/world-mismatch.yaml";

static struct dp_recipe *load_ok(const char *path)
{
	struct dp_recipe_diags d;
	struct dp_recipe *r = NULL;
	struct dp_err err = { 0 };
	int rc;

	dp_recipe_diags_init(&d);
	rc = dp_recipe_load(path, &r, &d, &err);
	if (rc != 0)
		fail_msg("%s: rc %d: %s", path, rc, err.msg);
	assert_int_equal(d.n, 0);
	dp_recipe_diags_release(&d);
	return r;
}

/* All diagnostics of @path as "LINE:COL: error: ..." lines (the file name
 * stripped, so expectations stay short); caller frees. */
static char *diag_text(const char *path, int *rc_out)
{
	struct dp_recipe_diags d;
	struct dp_recipe *r = NULL;
	struct dp_err err = { 0 };
	size_t plen = strlen(path), len = 0;
	char *text = calloc(1, 1), *grown;

	assert_non_null(text);
	dp_recipe_diags_init(&d);
	*rc_out = dp_recipe_load(path, &r, &d, &err);
	assert_null(r);
	for (size_t i = 0; i < d.n; i++) {
		char *line = dp_recipe_diag_format(&d.v[i]);
		size_t ll;

		assert_non_null(line);
		assert_memory_equal(line, path, plen);
		assert_true(line[plen] == ':');
		ll = strlen(line + plen + 1);
		grown = realloc(text, len + ll + 2);
		assert_non_null(grown);
		text = grown;
		memcpy(text + len, line + plen + 1, ll);
		len += ll;
		text[len++] = '\n';
		text[len] = '\0';
		free(line);
	}
	/* err holds the first diagnostic */
	if (d.n > 0) {
		char *first = dp_recipe_diag_format(&d.v[0]);

		assert_non_null(strstr(err.msg, first));
		free(first);
	}
	dp_recipe_diags_release(&d);
	return text;
}

static void expect_diags(const char *name, const char *expected)
{
	char path[512];
	char *got;
	int rc;

	(void)snprintf(path, sizeof(path), "%s/%s", BAD, name);
	got = diag_text(path, &rc);
	assert_int_equal(rc, -EINVAL);
	if (strcmp(got, expected) != 0)
		fail_msg("%s:\n--- expected\n%s--- got\n%s", name, expected, got);
	free(got);
}

/* ---- shipped recipes ------------------------------------------------------ */

static void local_demo_loads(void **state)
{
	struct dp_recipe *r = load_ok(RECIPES "/local-demo.yaml");

	(void)state;
	assert_int_equal(dp_hostlist_count(r->cluster.hosts), 1);
	assert_string_equal(dp_hostlist_get(r->cluster.hosts, 0), "localhost");
	assert_int_equal(r->cluster.launcher, DP_RECIPE_LAUNCH_LOCAL);
	assert_int_equal(dp_recipe_world_size(r), 8);
	assert_int_equal(r->parallel.pp, 4);
	assert_int_equal(r->parallel.ep, 2);
	assert_int_equal(r->parallel.schedule, DP_RECIPE_SCHED_DUALPIPE);
	assert_int_equal(r->parallel.micro_batches, 8);
	/* the global batch: ep 2 x 8 micro-batches x 4 sequences */
	assert_int_equal(r->train.batch, 64);
	assert_int_equal(dp_plan_seqs_per_micro(r), 4);
	assert_int_equal(r->train.backend, DP_RECIPE_BACKEND_CPU);
	assert_true(r->train.lr > 0.00099 && r->train.lr < 0.00101);
	assert_string_equal(r->train.checkpoint_dir, "/tmp/dpctl-demo/ckpt");
	assert_int_equal(r->train.checkpoint_every, 25);
	assert_int_equal(r->train.checkpoint_keep, 3);
	assert_int_equal(r->health.max_restarts, 1); /* restarts resume from a checkpoint */
	assert_int_equal(r->health.preflight, DP_RECIPE_PREFLIGHT_PORTS);
	/* max_nodes_per_token defaults to min(groups, nodes) = 1 */
	assert_int_equal(r->model.max_nodes_per_token, 1);
	assert_int_equal(r->n_env, 1);
	assert_string_equal(r->env[0].name, "OMP_NUM_THREADS");
	assert_string_equal(r->env[0].value, "1");
	dp_recipe_free(r);
}

static void deepseek_v3_loads(void **state)
{
	struct dp_recipe *r = load_ok(RECIPES "/deepseek-v3.yaml");

	(void)state;
	assert_int_equal(dp_hostlist_count(r->cluster.hosts), 256);
	assert_string_equal(dp_hostlist_get(r->cluster.hosts, 0), "node001");
	assert_string_equal(dp_hostlist_get(r->cluster.hosts, 255), "node256");
	assert_int_equal(dp_recipe_world_size(r), 2048);
	assert_int_equal(r->parallel.pp * r->parallel.ep * r->parallel.dp, 2048);
	assert_int_equal(r->parallel.pp, 16);
	assert_int_equal(r->parallel.ep, 64);
	/* the paper's global batch, 3 sequences per micro-batch of 40 */
	assert_int_equal(r->parallel.micro_batches, 40);
	assert_int_equal(r->train.batch, 15360);
	assert_int_equal(dp_plan_seqs_per_micro(r), 3);
	assert_int_equal(r->model.layers, 61);
	assert_int_equal(r->model.hidden, 7168);
	assert_int_equal(r->model.experts, 256);
	assert_int_equal(r->model.shared_experts, 1);
	assert_int_equal(r->model.top_k, 8);
	assert_int_equal(r->model.groups, 8);
	assert_int_equal(r->model.max_nodes_per_token, 4);
	assert_int_equal(r->cluster.known_hosts, DP_RECIPE_KH_STRICT);
	assert_int_equal(r->health.preflight, 0x3f);
	assert_null(r->notify.webhooks);
	dp_recipe_free(r);
}

static void other_recipes_load(void **state)
{
	struct dp_recipe *r;

	(void)state;
	r = load_ok(RECIPES "/netns-cluster.yaml");
	assert_int_equal(r->cluster.launcher, DP_RECIPE_LAUNCH_SSH);
	assert_int_equal(r->cluster.known_hosts, DP_RECIPE_KH_ACCEPT_NEW);
	assert_int_equal(dp_hostlist_count(r->cluster.hosts), 4);
	assert_string_equal(dp_hostlist_get(r->cluster.hosts, 3), "10.77.0.4");
	assert_int_equal(r->health.preflight, DP_RECIPE_PREFLIGHT_SSH | DP_RECIPE_PREFLIGHT_PORTS |
						      DP_RECIPE_PREFLIGHT_CLOCK);
	dp_recipe_free(r);
	r = load_ok(RECIPES "/slurm.yaml");
	assert_int_equal(r->cluster.launcher, DP_RECIPE_LAUNCH_SLURM);
	assert_int_equal(r->parallel.schedule, DP_RECIPE_SCHED_DUALPIPEV);
	assert_int_equal(r->notify.n_webhooks, 1);
	assert_string_equal(r->notify.webhooks[0], "https://hooks.example.org/dpctl/moe-16b");
	assert_string_equal(r->metrics.push_url,
			    "http://pushgateway.example.org:9091/metrics/job/dpctl");
	assert_true(r->metrics.interval_s == 30);
	dp_recipe_free(r);
}

static void every_shipped_recipe_passes_check(void **state)
{
	static const char *const names[] = { "local-demo", "netns-cluster", "slurm",
					     "deepseek-v3" };

	(void)state;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		char path[512], want[600];
		struct dp_test_run r;

		(void)snprintf(path, sizeof(path), "%s/%s.yaml", RECIPES, names[i]);
		(void)snprintf(want, sizeof(want), "%s: ok\n", path);
		r = dp_test_dpctl("recipe", "check", path);
		assert_int_equal(r.rc, EX_OK);
		assert_string_equal(r.out, want);
		assert_string_equal(r.err, "");
		dp_test_run_free(&r);
	}
}

static const char minimal[] = "cluster: {hosts: localhost, gpus: 2}\n"
			      "model: {layers: 4, hidden: 32, experts: 4, top_k: 1}\n"
			      "parallel: {pp: 2}\n";

static void defaults_fill_every_optional_key(void **state)
{
	struct dp_recipe *r = NULL;
	struct dp_err err = { 0 };

	(void)state;
	assert_int_equal(dp_recipe_load_mem("mem.yaml", minimal, strlen(minimal), &r, NULL, &err),
			 0);
	assert_string_equal(r->path, "mem.yaml");
	assert_int_equal(r->cluster.launcher, DP_RECIPE_LAUNCH_LOCAL);
	assert_null(r->cluster.user);
	assert_int_equal(r->cluster.port, 22);
	assert_null(r->cluster.identity);
	assert_int_equal(r->cluster.known_hosts, DP_RECIPE_KH_STRICT);
	assert_int_equal(r->cluster.nics, 0);
	assert_true(r->cluster.connect_timeout_s == 10);
	assert_string_equal(r->model.name, "moe");
	assert_int_equal(r->model.dense_layers, 0);
	assert_int_equal(r->model.heads, 8);
	assert_int_equal(r->model.ffn_hidden, 4 * 32);
	assert_int_equal(r->model.shared_experts, 0);
	assert_int_equal(r->model.groups, 1);
	assert_int_equal(r->model.max_nodes_per_token, 1);
	assert_int_equal(r->model.vocab, 32000);
	assert_int_equal(r->model.seq_len, 2048);
	assert_int_equal(r->parallel.ep, 1);
	assert_int_equal(r->parallel.dp, 1);
	assert_int_equal(r->parallel.schedule, DP_RECIPE_SCHED_DUALPIPE);
	assert_int_equal(r->parallel.micro_batches, 4);
	assert_int_equal(r->train.steps, 100);
	assert_int_equal(r->train.batch, 4);
	assert_true(r->train.lr == 3e-4);
	assert_int_equal(r->train.seed, 42);
	assert_int_equal(r->train.backend, DP_RECIPE_BACKEND_CPU);
	assert_null(r->train.checkpoint_dir);
	assert_int_equal(r->train.checkpoint_every, 0);
	assert_int_equal(r->train.checkpoint_keep, 0); /* keep all */
	assert_true(r->health.heartbeat_s == 5);
	assert_true(r->health.hang_timeout_s == 120);
	assert_true(r->health.rendezvous_s == 60);
	assert_int_equal(r->health.max_restarts, 3);
	assert_int_equal(r->health.preflight, DP_RECIPE_PREFLIGHT_SSH | DP_RECIPE_PREFLIGHT_GPUS |
						      DP_RECIPE_PREFLIGHT_PORTS);
	assert_true(r->health.min_free_disk_gb == 1);
	assert_true(r->health.max_clock_offset_s == 1);
	assert_int_equal(r->n_env, 0);
	assert_int_equal(r->notify.n_webhooks, 0);
	assert_null(r->metrics.push_url);
	assert_true(r->metrics.interval_s == 10);
	dp_recipe_free(r);
}

static void enum_names_round_trip(void **state)
{
	(void)state;
	assert_string_equal(dp_recipe_launcher_name(DP_RECIPE_LAUNCH_SLURM), "slurm");
	assert_string_equal(dp_recipe_known_hosts_name(DP_RECIPE_KH_ACCEPT_NEW), "accept-new");
	assert_string_equal(dp_recipe_schedule_name(DP_RECIPE_SCHED_ZB1P), "zb1p");
	assert_string_equal(dp_recipe_backend_name(DP_RECIPE_BACKEND_CUDA), "cuda");
	assert_string_equal(dp_recipe_schedule_name((enum dp_recipe_schedule)99), "?");
	assert_string_equal(dp_recipe_preflight_name(DP_RECIPE_PREFLIGHT_CLOCK), "clock");
	assert_null(dp_recipe_preflight_name(3));
}

static void aliases_and_hosts_list(void **state)
{
	static const char text[] = "cluster:\n"
				   "  hosts: [a1, 'b[1-2]', c]\n"
				   "  launcher: ssh\n"
				   "model: &m {layers: 4, hidden: 32, experts: 4, top_k: 1}\n"
				   "parallel: {pp: 4, schedule: 1f1b, micro_batches: 1}\n"
				   "env: {X: *m}\n";
	static const char ok_text[] = "cluster: {hosts: [a1, 'b[1-2]', c], launcher: ssh}\n"
				      "model: {layers: &n 4, hidden: 32, experts: *n, top_k: 1}\n"
				      "parallel: {pp: 4, schedule: zb1p, micro_batches: 1}\n";
	struct dp_recipe_diags d;
	struct dp_recipe *r = NULL;
	struct dp_err err = { 0 };

	(void)state;
	dp_recipe_diags_init(&d);
	assert_int_equal(dp_recipe_load_mem("a.yaml", text, strlen(text), &r, &d, &err), -EINVAL);
	assert_int_equal(d.n, 1);
	assert_string_equal(err.msg,
			    "a.yaml:6:10: error: key 'env.X': expected a string, got a map");
	dp_recipe_diags_release(&d);
	assert_int_equal(dp_recipe_load_mem("b.yaml", ok_text, strlen(ok_text), &r, NULL, &err), 0);
	assert_int_equal(dp_hostlist_count(r->cluster.hosts), 4);
	assert_string_equal(dp_hostlist_get(r->cluster.hosts, 2), "b2");
	assert_int_equal(r->model.experts, 4);
	assert_int_equal(r->parallel.schedule, DP_RECIPE_SCHED_ZB1P);
	dp_recipe_free(r);
}

/* ---- broken recipes: exact messages, all of them, in file order ----------- */

static void unknown_keys_suggest(void **state)
{
	(void)state;
	expect_diags("unknown-key.yaml",
		     "3:3: error: key 'cluster.gpu': unknown key (did you mean 'gpus'?)\n"
		     "9:3: error: key 'model.frobnicate': unknown key (known keys: name, layers, "
		     "dense_layers, hidden, heads, ffn_hidden, experts, shared_experts, top_k, "
		     "groups, max_nodes_per_token, vocab, seq_len, redundant_experts, "
		     "expert_loads, rebalance_every)\n"
		     "11:7: error: key 'parallel.pp': pp*ep*dp = 4*1*1 = 4 but the cluster has 1 "
		     "GPU (1 host x 1 per node)\n");
}

static void wrong_types(void **state)
{
	(void)state;
	expect_diags("wrong-types.yaml",
		     "3:9: error: key 'cluster.gpus': expected an integer, got 'four'\n"
		     "4:9: error: key 'cluster.port': expected an integer, got a list\n"
		     "6:11: error: key 'model.layers': expected an integer, got the string '8'\n"
		     "8:12: error: key 'model.experts': expected an integer, got '8.5'\n"
		     "10:11: error: key 'parallel': expected a map, got a list\n"
		     "12:7: error: key 'train.lr': expected a number, got 'fast'\n"
		     "13:15: error: key 'train.checkpoint': expected a map, got '/tmp/ckpt'\n");
}

static void out_of_range(void **state)
{
	(void)state;
	expect_diags("out-of-range.yaml",
		     "4:9: error: key 'cluster.port': must be between 1 and 65535, got 70000\n"
		     "6:11: error: key 'model.layers': must be between 1 and 4096, got 0\n"
		     "14:7: error: key 'train.lr': must be greater than 0 and at most 10, got 100\n"
		     "15:10: error: key 'train.steps': must be at least 1, got "
		     "99999999999999999999999\n");
}

static void bad_enums_list_allowed_values(void **state)
{
	(void)state;
	expect_diags(
		"bad-enum.yaml",
		"3:13: error: key 'cluster.launcher': 'mpirun' is not one of local, ssh, slurm\n"
		"4:16: error: key 'cluster.known_hosts': 'yes' is not one of strict, accept-new, "
		"off\n"
		"13:13: error: key 'parallel.schedule': 'dualpipe2' is not one of dualpipe, "
		"dualpipev, 1f1b, zb1p\n"
		"15:12: error: key 'train.backend': 'rocm' is not one of cpu, cuda\n"
		"17:26: error: key 'health.preflight[2]': 'network' is not one of ssh, gpus, nics, "
		"ports, disk, clock, topology, version\n"
		"17:35: error: key 'health.preflight[3]': check 'ssh' is listed more than once\n");
}

static void missing_required_marks_enclosing_map(void **state)
{
	(void)state;
	expect_diags("missing-required.yaml",
		     "1:1: error: key 'parallel': missing required key\n"
		     "2:3: error: key 'cluster.hosts': missing required key\n"
		     "4:3: error: key 'model.hidden': missing required key\n"
		     "4:3: error: key 'model.top_k': missing required key\n");
	expect_diags("empty.yaml", "1:1: error: key 'cluster': missing required key\n"
				   "1:1: error: key 'model': missing required key\n"
				   "1:1: error: key 'parallel': missing required key\n");
}

static void duplicate_keys(void **state)
{
	(void)state;
	expect_diags("duplicate-key.yaml",
		     "9:3: error: key 'model.layers': duplicate key (first given at line 5, column "
		     "3)\n"
		     "14:3: error: key 'env.A': duplicate key\n");
}

static void yaml_syntax_errors(void **state)
{
	(void)state;
	expect_diags("syntax-error.yaml", "6:10: error: key 'model': invalid YAML: mapping values "
					  "are not allowed in this context\n");
	expect_diags("syntax-unclosed.yaml",
		     "3:6: error: key 'cluster.hosts[1]': invalid YAML: did not find expected ',' "
		     "or ']' (while parsing a flow sequence at line 2, column 10)\n");
	expect_diags("two-docs.yaml", "3:1: error: a recipe is one YAML document, found a second "
				      "one\n");
	expect_diags("not-a-map.yaml", "1:1: error: a recipe is a map of sections (cluster, model, "
				       "parallel, ...), got a list\n");
}

static void world_size_mismatch(void **state)
{
	(void)state;
	expect_diags("world-mismatch.yaml",
		     "13:7: error: key 'parallel.dp': pp*ep*dp = 4*2*2 = 16 but the cluster has 8 "
		     "GPUs (4 hosts x 2 per node)\n");
}

static void dualpipe_rules(void **state)
{
	(void)state;
	expect_diags(
		"dualpipe-odd.yaml",
		"10:7: error: key 'parallel.pp': schedule 'dualpipe' needs an even pp, got 3\n"
		"12:18: error: key 'parallel.micro_batches': schedule 'dualpipe' needs an even "
		"micro_batches >= 2*pp = 6, got 5\n");
	expect_diags("dualpipev-micro.yaml",
		     "12:18: error: key 'parallel.micro_batches': schedule 'dualpipev' needs "
		     "micro_batches >= 2*pp = 8, got 6\n");
}

static void expert_layout_rules(void **state)
{
	(void)state;
	expect_diags(
		"experts.yaml",
		"9:10: error: key 'model.top_k': 8 is more than the 6 routed experts\n"
		"10:11: error: key 'model.groups': model.experts = 6 is not divisible by 4 "
		"groups\n"
		"11:24: error: key 'model.max_nodes_per_token': 3 is more than the 2 nodes of "
		"the cluster\n"
		"14:7: error: key 'parallel.ep': model.experts = 6 is not divisible by ep = 4\n");
}

static void host_errors(void **state)
{
	(void)state;
	expect_diags("hosts-list.yaml",
		     "5:7: error: key 'cluster.hosts[2]': expected a hostlist string, got a map\n");
	expect_diags("local-many.yaml", "2:10: error: key 'cluster.hosts': launcher 'local' runs "
					"on one host, got 2 hosts\n");
	/* the hostlist module's own message, placed at the value */
	expect_diags("bad-hostlist.yaml",
		     "2:10: error: key 'cluster.hosts': hostlist: unclosed '[' "
		     "at column 5 in 'node[1-4'\n");
}

static void other_consistency_rules(void **state)
{
	(void)state;
	expect_diags(
		"misc.yaml",
		"6:17: error: key 'model.dense_layers': must be less than model.layers = 8, "
		"got 8\n"
		"8:10: error: key 'model.heads': model.hidden = 100 is not divisible by 8 heads\n"
		"14:10: error: key 'train.batch': 20 is not a multiple of micro_batches 8 x dp 1 x "
		"ep 1 = 8; use 16 or 24\n"
		"16:12: error: key 'train.checkpoint.every': needs train.checkpoint.dir\n"
		"17:11: error: key 'train.checkpoint.keep': needs train.checkpoint.dir\n"
		"20:19: error: key 'health.hang_timeout_s': 5 must be greater than "
		"health.heartbeat_s = 10\n"
		"22:3: error: key 'env.1BAD': not a valid environment variable name\n"
		"23:9: error: key 'env.GOOD': expected a string, got a list\n"
		"25:14: error: key 'notify.webhooks[0]': 'ftp://example.org/x' is not an "
		"http:// or https:// URL\n"
		"27:13: error: key 'metrics.push_url': 'example.org' is not an http:// or "
		"https:// URL\n");
}

/* `dpctl recipe check @path` fails (exit 65) with exactly "@path:@msg\n". */
static void expect_check_error(const char *path, const char *msg)
{
	struct dp_test_run r = dp_test_dpctl("recipe", "check", path);
	size_t plen = strlen(path);

	assert_int_equal(r.rc, EX_DATAERR);
	if (strncmp(r.err, path, plen) != 0 || r.err[plen] != ':' ||
	    strcmp(r.err + plen + 1, msg) != 0)
		fail_msg("want '%s:%s', got '%s'", path, msg, r.err);
	dp_test_run_free(&r);
}

/* train.batch is the global batch: a multiple of micro_batches x dp x ep,
 * else an error at the key with the nearest valid batches. */
static void batch_counts_every_ep_rank(void **state)
{
	static const char small[] = "cluster: {hosts: localhost, gpus: 8}\n"
				    "model: {layers: 4, hidden: 32, experts: 4, top_k: 1}\n"
				    "parallel: {pp: 2, ep: 2, dp: 2, micro_batches: 4}\n"
				    "train: {batch: 8}\n";
	char *p;

	(void)state;
	/* DeepSeek-V3's 15360 over 32 micro-batches x dp 2 x ep 64: both
	 * neighbours named, at FILE:LINE:COL of the value */
	expect_check_error(BAD "/batch-global.yaml",
			   "8:10: error: key 'train.batch': 15360 is not a multiple of "
			   "micro_batches 32 x dp 2 x ep 64 = 4096; use 12288 or 16384\n");
	/* below one sequence per micro-batch: only the multiple above; the old
	 * rule (a multiple of micro_batches x dp = 8) no longer passes */
	p = dp_test_write_tmp(".yaml", small);
	expect_check_error(p, "4:16: error: key 'train.batch': 8 is not a multiple of "
			      "micro_batches 4 x dp 2 x ep 2 = 16; use 16\n");
	(void)unlink(p);
	free(p);
}

/* With no train.batch, one sequence per micro-batch on every DP replica and
 * EP rank: micro_batches x dp x ep. */
static void default_batch_counts_every_ep_rank(void **state)
{
	static const char text[] = "cluster: {hosts: localhost, gpus: 12}\n"
				   "model: {layers: 4, hidden: 32, experts: 4, top_k: 1}\n"
				   "parallel: {pp: 2, ep: 2, dp: 3, micro_batches: 6}\n";
	struct dp_recipe *r = NULL;
	struct dp_err err = { 0 };

	(void)state;
	assert_int_equal(dp_recipe_load_mem("mem.yaml", text, strlen(text), &r, NULL, &err), 0);
	assert_int_equal(r->train.batch, 6 * 3 * 2);
	dp_recipe_free(r);
}

/* An error about a key that was not given points at its section. */
static void defaulted_key_points_at_section(void **state)
{
	static const char text[] = "cluster: {hosts: localhost, gpus: 8}\n"
				   "model: {layers: 4, hidden: 32, experts: 4, top_k: 1}\n"
				   "parallel:\n"
				   "  pp: 2\n"
				   "  ep: 2\n"
				   "health:\n"
				   "  heartbeat_s: 200\n";
	struct dp_recipe_diags d;
	struct dp_recipe *r = NULL;
	char *s;

	(void)state;
	dp_recipe_diags_init(&d);
	assert_int_equal(dp_recipe_load_mem("m.yaml", text, strlen(text), &r, &d, NULL), -EINVAL);
	assert_int_equal(d.n, 2);
	s = dp_recipe_diag_format(&d.v[0]);
	assert_string_equal(s, "m.yaml:5:7: error: key 'parallel.ep': pp*ep*dp = 2*2*1 = 4 but "
			       "the cluster has 8 GPUs (1 host x 8 per node)");
	free(s);
	s = dp_recipe_diag_format(&d.v[1]);
	assert_string_equal(s, "m.yaml:7:3: error: key 'health.hang_timeout_s': 120 must be "
			       "greater than health.heartbeat_s = 200 (not set: the default "
			       "applies)");
	free(s);
	dp_recipe_diags_release(&d);
}

static void diags_accumulate_across_loads(void **state)
{
	struct dp_recipe_diags d;
	struct dp_recipe *r = NULL;

	(void)state;
	dp_recipe_diags_init(&d);
	assert_int_equal(dp_recipe_load(BAD "/dualpipe-odd.yaml", &r, &d, NULL), -EINVAL);
	assert_int_equal(dp_recipe_load(BAD "/world-mismatch.yaml", &r, &d, NULL), -EINVAL);
	assert_null(r);
	assert_int_equal(d.n, 3);
	assert_string_equal(d.v[2].key, "parallel.dp");
	assert_non_null(strstr(d.v[2].file, "world-mismatch.yaml"));
	assert_int_equal(d.v[2].line, 13);
	assert_int_equal(d.v[2].col, 7);
	dp_recipe_diags_release(&d);
	dp_recipe_diags_release(NULL);
}

static void unreadable_files(void **state)
{
	struct dp_recipe *r = NULL;
	struct dp_err err = { 0 };

	(void)state;
	assert_int_equal(dp_recipe_load(BAD "/no-such.yaml", &r, NULL, &err), -ENOENT);
	assert_string_equal(err.msg, "recipe: cannot open '" BAD
				     "/no-such.yaml': No such file or directory");
	assert_int_equal(dp_recipe_load(BAD, &r, NULL, &err), -EISDIR);
	assert_null(r);
}

/* Text that is not a sane recipe gets one precise error, never a crash. */
static void hostile_input(void **state)
{
	static const struct {
		const char *text;
		const char *want;
	} cases[] = {
		{ "cluster:\n  hosts: \xff\xfe\n",
		  "h.yaml:2:10: error: invalid YAML: invalid leading UTF-8 octet" },
		{ "cluster:\n\thosts: a\n",
		  "h.yaml:2:1: error: key 'cluster': invalid YAML: found character that cannot "
		  "start any token (YAML cannot indent with tabs)" },
		{ "a: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]"
		  "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n",
		  "h.yaml:1:67: error: YAML nested deeper than 64 levels" },
		{ "env: {X: *nope}\n", "h.yaml:1:10: error: key 'env.X': unknown alias '*nope'" },
		{ "? [a, b]\n: 1\n", "h.yaml:1:3: error: keys must be strings, got a list" },
	};
	struct dp_recipe *r = NULL;
	struct dp_err err = { 0 };
	char *big;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct dp_recipe_diags d;
		int found = 0;

		dp_recipe_diags_init(&d);
		assert_int_equal(dp_recipe_load_mem("h.yaml", cases[i].text, strlen(cases[i].text),
						    &r, &d, &err),
				 -EINVAL);
		for (size_t j = 0; j < d.n; j++) {
			char *line = dp_recipe_diag_format(&d.v[j]);

			found |= strcmp(line, cases[i].want) == 0;
			free(line);
		}
		if (!found)
			fail_msg("case %zu: want '%s', first of %zu is '%s'", i, cases[i].want, d.n,
				 err.msg);
		dp_recipe_diags_release(&d);
	}
	/* an embedded NUL is reported, not silently cut */
	{
		static const char nul[] = "cluster: {hosts: \"a\\0b\"}\n";
		struct dp_recipe_diags d;

		dp_recipe_diags_init(&d);
		assert_int_equal(dp_recipe_load_mem("h.yaml", nul, strlen(nul), &r, &d, &err),
				 -EINVAL);
		assert_int_equal(d.n, 3); /* and model, parallel missing */
		assert_string_equal(d.v[2].key, "cluster.hosts");
		assert_string_equal(d.v[2].msg, "value contains a NUL character");
		dp_recipe_diags_release(&d);
	}
	/* a runaway file is refused before parsing */
	big = malloc((16u << 20) + 2);
	assert_non_null(big);
	memset(big, '#', (16u << 20) + 1);
	big[(16u << 20) + 1] = '\0';
	assert_int_equal(dp_recipe_load_mem("big.yaml", big, (16u << 20) + 1, &r, NULL, &err),
			 -EINVAL);
	assert_string_equal(
		err.msg, "big.yaml:1:1: error: file is larger than the 16 MiB a recipe may have");
	free(big);
	assert_null(r);
}

/* ---- dpctl recipe check ---------------------------------------------------- */

static void check_exit_codes(void **state)
{
	struct dp_test_run r;
	char want[1024];

	(void)state;
	r = dp_test_dpctl("recipe", "check", odd_path);
	assert_int_equal(r.rc, EX_DATAERR);
	assert_string_equal(r.out, "");
	(void)snprintf(want, sizeof(want),
		       "%s:10:7: error: key 'parallel.pp': schedule 'dualpipe' needs an even pp, "
		       "got 3\n"
		       "%s:12:18: error: key 'parallel.micro_batches': schedule 'dualpipe' needs "
		       "an even micro_batches >= 2*pp = 6, got 5\n",
		       BAD "/dualpipe-odd.yaml", BAD "/dualpipe-odd.yaml");
	assert_string_equal(r.err, want);
	dp_test_run_free(&r);

	/* a good and a bad file: the good one is still reported ok */
	r = dp_test_dpctl("recipe", "check", demo_path, enum_path);
	assert_int_equal(r.rc, EX_DATAERR);
	assert_string_equal(r.out, RECIPES "/local-demo.yaml: ok\n");
	dp_test_run_free(&r);

	/* a missing file outranks bad data */
	r = dp_test_dpctl("recipe", "check", enum_path, nosuch_path, slurm_path);
	assert_int_equal(r.rc, EX_NOINPUT);
	assert_non_null(strstr(r.err, "dpctl: error: recipe: cannot open '" BAD
				      "/no-such.yaml': No such file or directory\n"));
	assert_string_equal(r.out, RECIPES "/slurm.yaml: ok\n");
	dp_test_run_free(&r);

	/* -q drops the ok lines, not the errors */
	r = dp_test_dpctl("-q", "recipe", "check", demo_path, odd_path);
	assert_int_equal(r.rc, EX_DATAERR);
	assert_string_equal(r.out, "");
	assert_non_null(strstr(r.err, "needs an even pp, got 3"));
	dp_test_run_free(&r);

	r = dp_test_dpctl("recipe", "check");
	assert_int_equal(r.rc, EX_USAGE);
	dp_test_run_free(&r);
	r = dp_test_dpctl("recipe", "lint", slurm_path);
	assert_int_equal(r.rc, EX_USAGE);
	assert_non_null(strstr(r.err, "unknown subcommand 'lint'"));
	dp_test_run_free(&r);
	r = dp_test_dpctl("recipe");
	assert_int_equal(r.rc, EX_USAGE);
	dp_test_run_free(&r);
}

static void check_json_summary(void **state)
{
	struct dp_test_run r;
	json_error_t je;
	json_t *o, *files, *errs;

	(void)state;
	r = dp_test_dpctl("recipe", "check", "--json", demo_path, world_path);
	assert_int_equal(r.rc, EX_DATAERR);
	/* diagnostics still go to stderr */
	assert_non_null(strstr(r.err, "world-mismatch.yaml:13:7: error: key 'parallel.dp'"));
	o = json_loads(r.out, 0, &je);
	assert_non_null(o);
	assert_int_equal(json_integer_value(json_object_get(o, "ok")), 1);
	assert_int_equal(json_integer_value(json_object_get(o, "failed")), 1);
	files = json_object_get(o, "files");
	assert_int_equal(json_array_size(files), 2);
	assert_true(json_is_true(json_object_get(json_array_get(files, 0), "ok")));
	assert_true(json_is_false(json_object_get(json_array_get(files, 1), "ok")));
	errs = json_object_get(json_array_get(files, 1), "errors");
	assert_int_equal(json_array_size(errs), 1);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(errs, 0), "line")), 13);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(errs, 0), "col")), 7);
	assert_string_equal(json_string_value(json_object_get(json_array_get(errs, 0), "key")),
			    "parallel.dp");
	json_decref(o);
	dp_test_run_free(&r);

	/* the global --json works too */
	r = dp_test_dpctl("--json", "recipe", "check", slurm_path);
	assert_int_equal(r.rc, EX_OK);
	o = json_loads(r.out, 0, &je);
	assert_non_null(o);
	assert_int_equal(json_integer_value(json_object_get(o, "failed")), 0);
	json_decref(o);
	dp_test_run_free(&r);
}

static void check_reads_a_written_file(void **state)
{
	char *path = dp_test_write_tmp(".yaml", minimal);
	struct dp_test_run r;

	(void)state;
	r = dp_test_dpctl("recipe", "check", path);
	assert_int_equal(r.rc, EX_OK);
	dp_test_run_free(&r);
	(void)unlink(path);
	free(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(local_demo_loads),
		cmocka_unit_test(deepseek_v3_loads),
		cmocka_unit_test(other_recipes_load),
		cmocka_unit_test(every_shipped_recipe_passes_check),
		cmocka_unit_test(defaults_fill_every_optional_key),
		cmocka_unit_test(enum_names_round_trip),
		cmocka_unit_test(aliases_and_hosts_list),
		cmocka_unit_test(unknown_keys_suggest),
		cmocka_unit_test(wrong_types),
		cmocka_unit_test(out_of_range),
		cmocka_unit_test(bad_enums_list_allowed_values),
		cmocka_unit_test(missing_required_marks_enclosing_map),
		cmocka_unit_test(duplicate_keys),
		cmocka_unit_test(yaml_syntax_errors),
		cmocka_unit_test(world_size_mismatch),
		cmocka_unit_test(dualpipe_rules),
		cmocka_unit_test(expert_layout_rules),
		cmocka_unit_test(host_errors),
		cmocka_unit_test(other_consistency_rules),
		cmocka_unit_test(batch_counts_every_ep_rank),
		cmocka_unit_test(default_batch_counts_every_ep_rank),
		cmocka_unit_test(defaulted_key_points_at_section),
		cmocka_unit_test(diags_accumulate_across_loads),
		cmocka_unit_test(unreadable_files),
		cmocka_unit_test(hostile_input),
		cmocka_unit_test(check_exit_codes),
		cmocka_unit_test(check_json_summary),
		cmocka_unit_test(check_reads_a_written_file),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
