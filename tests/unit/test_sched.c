/* tests/unit/test_sched.c - pipeline schedules: DualPipe/DualPipeV against
 * upstream-derived goldens, the identities of ../shared/docs/DUALPIPE.md, the
 * verifier, the simulator, the charts and the dpctl schedule/simulate CLI. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include <jansson.h>
#include <libxml/parser.h>
#include <libxml/tree.h>

#include "common/dp_util.h"
#include "sched/dp_sched.h"
#include "tests/unit/dp_test.h"

/* ---- helpers ------------------------------------------------------------ */

static struct dp_sched *build(enum dp_sched_algo algo, int pp, int micro, int comm)
{
	struct dp_sched_cfg cfg = { .algo = algo, .pp = pp, .micro = micro, .comm = comm };
	struct dp_sched *s = NULL;
	struct dp_err err = { 0 };

	if (dp_sched_build(&cfg, &s, &err))
		fail_msg("build %s pp=%d micro=%d: %s", dp_sched_algo_name(algo), pp, micro,
			 err.msg);
	return s;
}

static char *format(const struct dp_sched *s, enum dp_sched_fmt fmt, int rank)
{
	struct dp_err err = { 0 };
	struct dp_buf b;

	dp_buf_init(&b, (size_t)1 << 28);
	if (dp_sched_format(s, fmt, rank, NULL, &b, &err))
		fail_msg("format: %s", err.msg);
	return dp_buf_detach(&b, NULL);
}

static uint64_t fnv1a(const char *p)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (; *p; p++) {
		h ^= (unsigned char)*p;
		h *= 0x100000001b3ULL;
	}
	return h;
}

static void count_ops(const struct dp_sched *s, int rank, int cnt[DP_SCHED_OP_WAIT + 1])
{
	size_t n;
	const struct dp_sched_op *ops = dp_sched_ops(s, rank, &n);

	memset(cnt, 0, sizeof(int) * (DP_SCHED_OP_WAIT + 1));
	for (size_t i = 0; i < n; i++)
		cnt[ops[i].kind]++;
}

/* ---- golden outputs ------------------------------------------------------ */

static void check_golden(enum dp_sched_algo algo, int pp, int micro, int comm,
			 enum dp_sched_fmt fmt, const char *file)
{
	struct dp_sched *s = build(algo, pp, micro, comm);
	char path[512];
	char *want, *got;

	(void)snprintf(path, sizeof(path), "%s/sched/%s", FIXTURES, file);
	want = dp_test_slurp(path);
	got = format(s, fmt, -1);
	assert_string_equal(got, want);
	free(got);
	free(want);
	dp_sched_free(s);
}

static void readme_examples_match_golden(void **state)
{
	(void)state;
	check_golden(DP_SCHED_DUALPIPE, 8, 20, 0, DP_SCHED_FMT_OPS, "dualpipe-pp8-m20.ops");
	check_golden(DP_SCHED_DUALPIPE, 8, 20, 1, DP_SCHED_FMT_OPS, "dualpipe-pp8-m20-comm.ops");
	check_golden(DP_SCHED_DUALPIPE, 8, 20, 0, DP_SCHED_FMT_LONG, "dualpipe-pp8-m20.long");
	check_golden(DP_SCHED_DUALPIPEV, 4, 10, 0, DP_SCHED_FMT_OPS, "dualpipev-pp4-m10.ops");
	check_golden(DP_SCHED_DUALPIPEV, 4, 10, 1, DP_SCHED_FMT_OPS, "dualpipev-pp4-m10-comm.ops");
	check_golden(DP_SCHED_DUALPIPEV, 4, 10, 1, DP_SCHED_FMT_LONG,
		     "dualpipev-pp4-m10-comm.long");
	check_golden(DP_SCHED_DUALPIPEV, 3, 7, 1, DP_SCHED_FMT_OPS, "dualpipev-pp3-m7-comm.ops");
}

/* Every line of oracle-fnv1a.txt: the hash of upstream's order (see the
 * fixture README) must equal the hash of our output. */
static void matches_upstream_oracle_hashes(void **state)
{
	char path[512], line[256];
	FILE *f;
	int n = 0;

	(void)state;
	(void)snprintf(path, sizeof(path), "%s/sched/oracle-fnv1a.txt", FIXTURES);
	f = fopen(path, "r");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		char algo[32], comm[16], fmtname[16], spp[16], smicro[16], shash[24], *end;
		unsigned long long want;
		long pp, micro;
		enum dp_sched_algo a;
		enum dp_sched_fmt fm;
		struct dp_sched *s;
		char *got;

		if (line[0] == '#')
			continue;
		assert_int_equal(sscanf(line, "%31s %15s %15s %15s %15s %23s", algo, spp, smicro,
					comm, fmtname, shash),
				 6);
		assert_int_equal(dp_parse_long(spp, 1, 64, &pp, "pp", NULL), 0);
		assert_int_equal(dp_parse_long(smicro, 1, 1000, &micro, "micro", NULL), 0);
		want = strtoull(shash, &end, 16);
		assert_true(*end == '\0' && end != shash);
		assert_int_equal(dp_sched_algo_parse(algo, &a, NULL), 0);
		assert_int_equal(dp_sched_fmt_parse(fmtname, &fm, NULL), 0);
		s = build(a, (int)pp, (int)micro, strcmp(comm, "comm") == 0);
		got = format(s, fm, -1);
		if (fnv1a(got) != want)
			fail_msg("%s pp=%ld micro=%ld %s %s differs from upstream", algo, pp, micro,
				 comm, fmtname);
		free(got);
		dp_sched_free(s);
		n++;
	}
	(void)fclose(f);
	assert_true(n >= 1000);
}

/* ---- identities from DUALPIPE.md ------------------------------------------ */

static void op_counts_follow_the_formulas(void **state)
{
	(void)state;
	for (int v = 0; v < 2; v++) {
		for (int pp = v ? 1 : 2; pp <= 24; pp += v ? 1 : 2) {
			for (int extra = 0; extra <= 6; extra += 2) {
				int micro = 2 * pp + extra + (v && extra == 2);
				struct dp_sched *s = build(
					v ? DP_SCHED_DUALPIPEV : DP_SCHED_DUALPIPE, pp, micro, 0);
				int n = v ? pp : pp / 2, C = v ? micro : micro / 2;

				for (int r = 0; r < pp; r++) {
					int k = v ? r : (r < pp - 1 - r ? r : pp - 1 - r);
					int o = n - k - 1, inner = k == n - 1;
					int cnt[DP_SCHED_OP_WAIT + 1];

					count_ops(s, r, cnt);
					assert_int_equal(cnt[DP_SCHED_OP_F],
							 3 * o + 2 * (k + 1) + inner);
					assert_int_equal(cnt[DP_SCHED_OP_B], o + k + 1 + inner);
					assert_int_equal(cnt[DP_SCHED_OP_I], 2 * n - k - 1);
					assert_int_equal(cnt[DP_SCHED_OP_W], 2 * n - k - 1);
					assert_int_equal(cnt[DP_SCHED_OP_FB],
							 2 * (C - 2 * n + k + 1) - inner + o);
					/* every leg: C forwards and C backwards */
					assert_int_equal(cnt[DP_SCHED_OP_F] + cnt[DP_SCHED_OP_FB],
							 2 * C);
					assert_int_equal(cnt[DP_SCHED_OP_B] + cnt[DP_SCHED_OP_I] +
								 cnt[DP_SCHED_OP_FB],
							 2 * C);
				}
				dp_sched_free(s);
			}
		}
	}
}

static void mirror_ranks_swap_legs(void **state)
{
	(void)state;
	for (int pp = 2; pp <= 16; pp += 2) {
		for (int comm = 0; comm < 2; comm++) {
			struct dp_sched *s = build(DP_SCHED_DUALPIPE, pp, 2 * pp + 4, comm);

			for (int r = 0; r < pp; r++) {
				size_t n1, n2;
				const struct dp_sched_op *a = dp_sched_ops(s, r, &n1);
				const struct dp_sched_op *b = dp_sched_ops(s, pp - 1 - r, &n2);

				assert_int_equal(n1, n2);
				for (size_t i = 0; i < n1; i++) {
					assert_int_equal(a[i].kind, b[i].kind);
					assert_int_equal(a[i].step, b[i].step);
					assert_int_equal(a[i].micro, b[i].micro);
					assert_int_equal(a[i].micro2, b[i].micro2);
					if (a[i].kind == DP_SCHED_OP_WAIT)
						continue;
					assert_int_equal(a[i].leg, 1 - b[i].leg);
					if (a[i].kind == DP_SCHED_OP_FB)
						assert_int_equal(a[i].leg2, 1 - b[i].leg2);
					if (a[i].peer >= 0)
						assert_int_equal(a[i].peer, pp - 1 - b[i].peer);
				}
			}
			dp_sched_free(s);
		}
	}
}

static void dualpipe_half_is_dualpipev(void **state)
{
	(void)state;
	for (int pp = 2; pp <= 20; pp += 2) {
		for (int micro = 2 * pp; micro <= 2 * pp + 12; micro += 4) {
			struct dp_sched *d = build(DP_SCHED_DUALPIPE, pp, micro, 0);
			struct dp_sched *v = build(DP_SCHED_DUALPIPEV, pp / 2, micro / 2, 0);

			for (int r = 0; r < pp / 2; r++) {
				size_t n1, n2;
				const struct dp_sched_op *a = dp_sched_ops(d, r, &n1);
				const struct dp_sched_op *b = dp_sched_ops(v, r, &n2);

				assert_int_equal(n1, n2);
				assert_memory_equal(a, b, n1 * sizeof(*a));
			}
			dp_sched_free(d);
			dp_sched_free(v);
		}
	}
}

static void w_queue_is_fifo_and_empty(void **state)
{
	(void)state;
	for (int pp = 1; pp <= 12; pp++) {
		struct dp_sched *s = build(DP_SCHED_DUALPIPEV, pp, 2 * pp + 3, 0);

		for (int r = 0; r < pp; r++) {
			size_t n, head = 0;
			const struct dp_sched_op *ops = dp_sched_ops(s, r, &n);
			int qleg[64] = { 0 }, qmicro[64] = { 0 };
			size_t ni = 0;

			for (size_t i = 0; i < n; i++) {
				if (ops[i].kind == DP_SCHED_OP_I) {
					assert_true(ni < 64);
					qleg[ni] = ops[i].leg;
					qmicro[ni++] = ops[i].micro;
				} else if (ops[i].kind == DP_SCHED_OP_W) {
					assert_true(head < ni);
					assert_int_equal(ops[i].leg, qleg[head]);
					assert_int_equal(ops[i].micro, qmicro[head]);
					head++;
				}
			}
			assert_int_equal(head, ni);
		}
		dp_sched_free(s);
	}
}

static void rejects_upstream_invalid_configs(void **state)
{
	static const struct {
		enum dp_sched_algo algo;
		int pp, micro;
		const char *msg;
	} bad[] = {
		{ DP_SCHED_DUALPIPE, 4, 6,
		  "sched: dualpipe needs micro >= 2*pp (num_chunks >= num_ranks * 2): micro=6, pp=4" },
		{ DP_SCHED_DUALPIPE, 4, 9,
		  "sched: dualpipe needs an even micro (num_chunks % 2 == 0): micro=9" },
		{ DP_SCHED_DUALPIPE, 3, 6,
		  "sched: dualpipe needs an even pp (num_ranks % 2 == 0): pp=3" },
		{ DP_SCHED_DUALPIPE, 6, 10,
		  "sched: dualpipe needs micro >= 2*pp (num_chunks >= num_ranks * 2): micro=10, pp=6" },
		{ DP_SCHED_DUALPIPEV, 4, 7,
		  "sched: dualpipev needs micro >= 2*pp (num_chunks >= num_ranks * 2): micro=7, pp=4" },
		{ DP_SCHED_DUALPIPEV, 3, 5,
		  "sched: dualpipev needs micro >= 2*pp (num_chunks >= num_ranks * 2): micro=5, pp=3" },
		{ DP_SCHED_1F1B, 0, 5, "sched: pp must be in [1, 4096]: pp=0" },
		{ DP_SCHED_ZB1P, 4, 0,
		  "sched: zb1p needs micro > 0 (num_chunks > 0), at most 1048576: micro=0" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct dp_sched_cfg cfg = { .algo = bad[i].algo,
					    .pp = bad[i].pp,
					    .micro = bad[i].micro };
		struct dp_sched *s = NULL;
		struct dp_err err = { 0 };

		assert_int_equal(dp_sched_build(&cfg, &s, &err), -EINVAL);
		assert_null(s);
		assert_string_equal(err.msg, bad[i].msg);
	}
}

/* ---- verifier -------------------------------------------------------------- */

static void verifier_accepts_all_algorithms(void **state)
{
	static const enum dp_sched_algo algos[] = { DP_SCHED_DUALPIPE, DP_SCHED_DUALPIPEV,
						    DP_SCHED_1F1B, DP_SCHED_ZB1P };

	(void)state;
	for (size_t a = 0; a < 4; a++) {
		for (int pp = 1; pp <= 16; pp++) {
			if (algos[a] == DP_SCHED_DUALPIPE && pp % 2)
				continue;
			for (int extra = -3; extra <= 7; extra += 2) {
				int micro = (algos[a] <= DP_SCHED_DUALPIPEV ? 2 * pp : pp) + extra;

				if (algos[a] == DP_SCHED_DUALPIPE)
					micro += micro % 2;
				if (micro < 1 || (algos[a] <= DP_SCHED_DUALPIPEV && micro < 2 * pp))
					continue;
				for (int comm = 0; comm < 2; comm++) {
					struct dp_sched *s = build(algos[a], pp, micro, comm);
					struct dp_err err = { 0 };

					if (dp_sched_verify(s, &err))
						fail_msg("%s pp=%d micro=%d comm=%d: %s",
							 dp_sched_algo_name(algos[a]), pp, micro,
							 comm, err.msg);
					dp_sched_free(s);
				}
			}
		}
	}
}

enum edit { EDIT_SWAP, EDIT_DROP, EDIT_DUP };

/* Copy @s into a new schedule, editing rank @rank: swap ops @i and @j, drop
 * op @i, or duplicate op @i. */
static struct dp_sched *edited(const struct dp_sched *s, int rank, enum edit e, size_t i, size_t j)
{
	struct dp_sched *t = NULL;

	assert_int_equal(dp_sched_new(dp_sched_config(s), &t, NULL), 0);
	for (int r = 0; r < dp_sched_config(s)->pp; r++) {
		size_t n;
		const struct dp_sched_op *ops = dp_sched_ops(s, r, &n);

		for (size_t k = 0; k < n; k++) {
			size_t src = k;

			if (r == rank && e == EDIT_DROP && k == i)
				continue;
			if (r == rank && e == EDIT_SWAP && (k == i || k == j))
				src = k == i ? j : i;
			assert_int_equal(dp_sched_append(t, r, &ops[src], NULL), 0);
			if (r == rank && e == EDIT_DUP && k == i)
				assert_int_equal(dp_sched_append(t, r, &ops[src], NULL), 0);
		}
	}
	return t;
}

static size_t find_op(const struct dp_sched *s, int rank, int kind, size_t from)
{
	size_t n;
	const struct dp_sched_op *ops = dp_sched_ops(s, rank, &n);

	for (size_t i = from; i < n; i++)
		if (ops[i].kind == kind)
			return i;
	fail_msg("no op of kind %d on rank %d", kind, rank);
	return 0;
}

static size_t last_op(const struct dp_sched *s, int rank, int kind)
{
	size_t n;
	const struct dp_sched_op *ops = dp_sched_ops(s, rank, &n);

	while (n-- > 0)
		if (ops[n].kind == kind)
			return n;
	fail_msg("no op of kind %d on rank %d", kind, rank);
	return 0;
}

static void expect_rejected(struct dp_sched *t, const char *needle)
{
	struct dp_err err = { 0 };

	assert_int_equal(dp_sched_verify(t, &err), -EPROTO);
	if (!strstr(err.msg, needle))
		fail_msg("'%s' does not contain '%s'", err.msg, needle);
	dp_sched_free(t);
}

static void verifier_rejects_broken_schedules(void **state)
{
	struct dp_sched *s = build(DP_SCHED_DUALPIPE, 8, 20, 0);
	struct dp_sched *c = build(DP_SCHED_DUALPIPE, 8, 20, 1);
	struct dp_sched *z = build(DP_SCHED_ZB1P, 4, 8, 0);
	size_t w, i1, i2;

	(void)state;
	/* drop a W */
	w = last_op(s, 2, DP_SCHED_OP_W);
	expect_rejected(edited(s, 2, EDIT_DROP, w, 0), "has no W");
	/* two W's swapped: FIFO order broken */
	w = find_op(s, 1, DP_SCHED_OP_W, 0);
	i1 = find_op(s, 1, DP_SCHED_OP_W, w + 1);
	i2 = find_op(s, 1, DP_SCHED_OP_W, i1 + 1);
	expect_rejected(edited(s, 1, EDIT_SWAP, i1, i2), "FIFO");
	/* a backward moved before its forward */
	expect_rejected(edited(z, 3, EDIT_SWAP, 0, 1), "backward before its forward");
	/* a duplicated forward */
	expect_rejected(edited(s, 0, EDIT_DUP, 0, 0), "second forward");
	/* a dropped forward (rank 5's first op, F1 0: its backward is orphaned) */
	expect_rejected(edited(s, 5, EDIT_DROP, 0, 0), "'F0B1 4 0': backward before its forward");
	/* 1F1B rank 0: B0 moved before F2 (F0 F1 B0 F3 F2): rank 1 needs F2
	 * before it can run B0, which rank 0 needs first: a dependency cycle */
	{
		struct dp_sched *o = build(DP_SCHED_1F1B, 4, 8, 0);

		expect_rejected(edited(o, 0, EDIT_SWAP, 2, 4), "never gets its input");
		dp_sched_free(o);
	}
	/* comm: a receive dropped -> the sender's message has no partner */
	i1 = find_op(c, 1, DP_SCHED_OP_RF, 0);
	expect_rejected(edited(c, 1, EDIT_DROP, i1, 0), "forward input not received");
	/* comm: two receives of different legs swapped -> mismatched kinds */
	i1 = find_op(c, 3, DP_SCHED_OP_RF, 0);
	i2 = find_op(c, 3, DP_SCHED_OP_RB, 0);
	expect_rejected(edited(c, 3, EDIT_SWAP, i1, i2), "is matched with 'SF0 0 3' on rank 2");
	/* comm: a WAIT dropped before a forward -> input used before committed */
	i1 = find_op(c, 4, DP_SCHED_OP_WAIT, 0);
	expect_rejected(edited(c, 4, EDIT_DROP, i1, 0), "before use");
	dp_sched_free(s);
	dp_sched_free(c);
	dp_sched_free(z);
}

/* Next number of @*p (after spaces); advances *p. */
static int next_num(const char **p)
{
	char *end;
	long v = strtol(*p, &end, 10);

	assert_true(end != *p);
	*p = end;
	return (int)v;
}

/* Append the canonical ops of one rank ("F0 0 | SF0 0 1 | WAIT") to @s
 * (no overlapped ops needed here). */
static void parse_rank(struct dp_sched *s, int rank, const char *text)
{
	static const char *const kinds[] = { "F", "B", "I", "W", "FB", "RF", "SF", "RB", "SB" };
	const char *p = text;

	while (*p) {
		struct dp_sched_op op = { .micro = -1, .micro2 = -1, .peer = -1 };
		char name[4] = { 0 };
		size_t n = 0;

		while (*p == ' ' || *p == '|')
			p++;
		if (strncmp(p, "WAIT", 4) == 0) {
			op.kind = DP_SCHED_OP_WAIT;
			p += 4;
		} else {
			while (*p >= 'A' && *p <= 'Z' && n < 3)
				name[n++] = *p++;
			op.kind = 255;
			for (size_t k = 0; k < 9; k++)
				if (strcmp(name, kinds[k]) == 0)
					op.kind = (unsigned char)k;
			assert_true(op.kind != 255 && op.kind != DP_SCHED_OP_FB);
			op.leg = (unsigned char)next_num(&p);
			op.micro = next_num(&p);
			if (op.kind >= DP_SCHED_OP_RF)
				op.peer = next_num(&p);
		}
		assert_int_equal(dp_sched_append(s, rank, &op, NULL), 0);
		while (*p == ' ')
			p++;
	}
}

static void verifier_finds_comm_deadlock(void **state)
{
	struct dp_sched_cfg cfg = { .algo = DP_SCHED_1F1B, .pp = 2, .micro = 2, .comm = 1 };
	struct dp_sched *s = NULL;

	(void)state;
	/* the good order, as generated, passes */
	assert_int_equal(dp_sched_new(&cfg, &s, NULL), 0);
	parse_rank(s, 0,
		   "F0 0 | SF0 0 1 | WAIT | F0 1 | SF0 1 1 | RB0 0 1 | WAIT | B0 0 | "
		   "RB0 1 1 | WAIT | B0 1");
	parse_rank(s, 1,
		   "RF0 0 0 | WAIT | F0 0 | B0 0 | SB0 0 0 | RF0 1 0 | WAIT | F0 1 | "
		   "B0 1 | SB0 1 0 | WAIT");
	assert_int_equal(dp_sched_verify(s, NULL), 0);
	dp_sched_free(s);
	/* rank 0 waits for the gradient of micro 0 before sending micro 1's input,
	 * rank 1 waits for micro 1's input before sending that gradient */
	assert_int_equal(dp_sched_new(&cfg, &s, NULL), 0);
	parse_rank(s, 0,
		   "F0 0 | SF0 0 1 | WAIT | RB0 0 1 | WAIT | F0 1 | SF0 1 1 | B0 0 | "
		   "RB0 1 1 | WAIT | B0 1");
	parse_rank(s, 1,
		   "RF0 0 0 | WAIT | F0 0 | RF0 1 0 | WAIT | B0 0 | SB0 0 0 | F0 1 | "
		   "B0 1 | SB0 1 0 | WAIT");
	expect_rejected(s, "rank 0 op #4 'WAIT': deadlock");
}

/* ---- simulator ----------------------------------------------------------- */

static struct dp_sched_sim simulate(const struct dp_sched *s, double f, double b, double w,
				    double fb)
{
	struct dp_sched_times t = { .f = f, .b = b, .w = w, .fb = fb };
	struct dp_sched_sim sim;
	struct dp_err err = { 0 };

	if (dp_sched_simulate(s, &t, &sim, &err))
		fail_msg("simulate: %s", err.msg);
	return sim;
}

static int peak_max(const struct dp_sched_sim *sim)
{
	int m = 0;

	for (int r = 0; r < sim->nranks; r++)
		if (sim->ranks[r].peak_activations > m)
			m = sim->ranks[r].peak_activations;
	return m;
}

/* In the README's regime (F = B - W = W, any F&B in [2, 3]) the simulated
 * max bubble equals the README formula for all four schedules, PP counting
 * stages (DualPipeV on PP/2 ranks), and the peak activations are PP, PP,
 * PP+1, PP+1 (on the first rank). */
static void simulation_reproduces_readme_table(void **state)
{
	static const double fbs[] = { 2.0, 2.25, 2.5, 3.0 };

	(void)state;
	for (int pp = 2; pp <= 16; pp += 2) {
		for (int micro = 2 * pp; micro <= 4 * pp + 4; micro += pp + 2) {
			for (size_t f = 0; f < 4; f++) {
				struct dp_sched *s[4] = {
					build(DP_SCHED_1F1B, pp, micro, 0),
					build(DP_SCHED_ZB1P, pp, micro, 0),
					build(DP_SCHED_DUALPIPE, pp, micro, 0),
					build(DP_SCHED_DUALPIPEV, pp / 2, micro, 0),
				};
				const double want[4] = {
					(pp - 1) * 3.0,
					(pp - 1) * 1.0,
					(pp / 2.0 - 1) * (fbs[f] - 1),
					(pp / 2.0 - 1) * (fbs[f] - 1),
				};
				const int peak[4] = { pp, pp, pp + 1, pp + 1 };

				for (int a = 0; a < 4; a++) {
					struct dp_sched_sim sim = simulate(s[a], 1, 2, 1, fbs[f]);

					if (fabs(sim.bubble_max - want[a]) > 1e-9 ||
					    fabs(sim.formula_bubble - want[a]) > 1e-9)
						fail_msg("algo %d pp=%d micro=%d fb=%g: bubble %g, "
							 "formula %g, want %g",
							 a, pp, micro, fbs[f], sim.bubble_max,
							 sim.formula_bubble, want[a]);
					assert_int_equal(sim.ranks[0].peak_activations, peak[a]);
					assert_int_equal(peak_max(&sim), peak[a]);
					dp_sched_sim_release(&sim);
					dp_sched_free(s[a]);
				}
			}
		}
	}
}

static void simulation_timeline_is_consistent(void **state)
{
	struct dp_sched *s = build(DP_SCHED_1F1B, 6, 15, 1);
	struct dp_sched_sim sim = simulate(s, 1.5, 2.5, 1, 3);

	(void)state;
	/* 1F1B: (micro + pp - 1)(F + B) */
	assert_true(fabs(sim.makespan - (15 + 6 - 1) * 4.0) < 1e-9);
	for (int r = 0; r < sim.nranks; r++) {
		const struct dp_sched_rank_stats *rs = &sim.ranks[r];
		double busy = 0;

		assert_int_equal(rs->nslots, 30); /* comm tokens are not timed */
		for (size_t i = 0; i < rs->nslots; i++) {
			assert_true(rs->slots[i].end >= rs->slots[i].start);
			if (i)
				assert_true(rs->slots[i].start >= rs->slots[i - 1].end);
			busy += rs->slots[i].end - rs->slots[i].start;
		}
		assert_true(fabs(busy - rs->busy) < 1e-9);
		assert_true(fabs(rs->bubble - (sim.makespan - busy)) < 1e-9);
		assert_int_equal(rs->peak_activations, 6 - r);
	}
	dp_sched_sim_release(&sim);
	dp_sched_sim_release(&sim); /* zeroed: a second release is harmless */
	dp_sched_free(s);
}

static void simulation_rejects_bad_times(void **state)
{
	struct dp_sched *s = build(DP_SCHED_ZB1P, 4, 8, 0);
	struct dp_sched_times t = { .f = 1, .b = 1, .w = 2, .fb = 2 };
	struct dp_sched_sim sim;
	struct dp_err err = { 0 };

	(void)state;
	assert_int_equal(dp_sched_simulate(s, &t, &sim, &err), -EINVAL);
	assert_string_equal(err.msg, "sched: W (2) must not exceed B (1): I takes B - W");
	t = (struct dp_sched_times){ .f = -1, .b = 2, .w = 1, .fb = 2 };
	assert_int_equal(dp_sched_simulate(s, &t, &sim, &err), -EINVAL);
	assert_string_equal(err.msg, "sched: duration F must be >= 0: -1");
	dp_sched_free(s);
}

/* ---- charts and traces ------------------------------------------------------- */

static void svg_renders_to_png(void **state)
{
	struct dp_sched *s;
	char *svg, *path, cmd[512], png[] = "/tmp/dptest-sched-XXXXXX";
	unsigned char sig[8];
	FILE *f;
	long size;
	int fd;

	(void)state;
	if (system("command -v rsvg-convert >/dev/null 2>&1") != 0)
		skip(); /* librsvg2-bin is in contrib/install-deps.sh */
	s = build(DP_SCHED_DUALPIPE, 8, 20, 0);
	svg = format(s, DP_SCHED_FMT_SVG, -1);
	assert_non_null(strstr(svg, "<svg xmlns=\"http://www.w3.org/2000/svg\""));
	assert_non_null(strstr(svg, "F&amp;B overlapped"));
	assert_non_null(strstr(svg, "idle (bubble)"));
	assert_non_null(strstr(svg, ">rank 7</text>"));
	assert_non_null(strstr(svg, "fill=\"#e8e8e8\""));
	path = dp_test_write_tmp(".svg", svg);
	fd = mkstemp(png);
	assert_true(fd >= 0);
	(void)close(fd);
	(void)snprintf(cmd, sizeof(cmd), "rsvg-convert -o '%s' '%s'", png, path);
	assert_int_equal(system(cmd), 0);
	f = fopen(png, "rb");
	assert_non_null(f);
	assert_int_equal(fread(sig, 1, 8, f), 8);
	assert_memory_equal(sig, "\x89PNG\r\n\x1a\n", 8);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	size = ftell(f);
	(void)fclose(f);
	assert_true(size > 20000); /* a real chart, not an empty canvas */
	(void)unlink(png);
	(void)unlink(path);
	free(path);
	free(svg);
	dp_sched_free(s);
}

/* The chart writer behind --format svg, with what the measured timeline
 * uses on top: a group id and title, a time axis, labels needing escapes. */
static void chart_svg_groups_axis_escaping(void **state)
{
	static const struct dp_sched_chart_box box[] = {
		{ .op = { .kind = DP_SCHED_OP_F, .micro = 3, .micro2 = -1 }, .start = 1, .end = 3 },
		{ .op = { .kind = DP_SCHED_OP_FB, .leg = 1, .micro = 4, .micro2 = 2 },
		  .start = 4,
		  .end = 9.5 },
		{ .op = { .kind = DP_SCHED_OP_RF, .micro = 0 },
		  .start = 0,
		  .end = 1 }, /* not drawn */
	};
	const struct dp_sched_chart_lane lane[] = {
		{ .label = "rank 0 <a & \"b\">", .box = box, .nbox = 3 },
		{ .label = NULL },
	};
	const struct dp_sched_chart_group g = {
		.id = "measured", .title = "step 'x' & y", .lane = lane, .nlanes = 2
	};
	const struct dp_sched_chart c = { .title = "t<1>",
					  .unit = "ms",
					  .span = 10,
					  .scale = 20,
					  .label_w = 100,
					  .group = &g,
					  .ngroups = 1 };
	struct dp_buf b;
	xmlDocPtr doc;
	xmlNodePtr n, grp = NULL;
	int idle = 0, ops = 0, axes = 0, ticks = 0, texts = 0;
	double x[2] = { 0 }, w[2] = { 0 };
	const char *svg;

	(void)state;
	dp_buf_init(&b, 1 << 20);
	assert_int_equal(dp_sched_chart_svg(&c, &b, NULL), 0);
	svg = dp_buf_str(&b);
	assert_non_null(strstr(svg, ">rank 0 &lt;a &amp; &quot;b&quot;&gt;</text>"));
	assert_non_null(strstr(svg, ">step &apos;x&apos; &amp; y</text>"));
	assert_non_null(strstr(svg, ">t&lt;1&gt;</text>"));
	assert_non_null(strstr(svg, "<title>FB1 4: 5.500 ms</title>"));
	assert_non_null(strstr(svg, ">4|2</text>"));
	doc = xmlReadMemory(svg, (int)strlen(svg), "chart.svg", NULL, XML_PARSE_NONET);
	if (!doc)
		fail_msg("not well-formed XML:\n%s", svg);
	for (n = xmlDocGetRootElement(doc)->children; n; n = n->next)
		if (n->type == XML_ELEMENT_NODE && xmlStrcmp(n->name, BAD_CAST "g") == 0)
			grp = n;
	assert_non_null(grp);
	for (n = grp ? grp->children : NULL; n; n = n->next) {
		xmlChar *cls, *v;

		if (n->type != XML_ELEMENT_NODE)
			continue;
		cls = xmlGetProp(n, BAD_CAST "class");
		if (xmlStrcmp(n->name, BAD_CAST "text") == 0) {
			xmlChar *t = xmlNodeGetContent(n);

			texts += xmlStrcmp(t, BAD_CAST "rank 0 <a & \"b\">") == 0;
			xmlFree(t);
		} else if (cls && xmlStrcmp(cls, BAD_CAST "idle") == 0) {
			idle++;
		} else if (cls && xmlStrcmp(cls, BAD_CAST "op") == 0 && ops < 2) {
			v = xmlGetProp(n, BAD_CAST "x");
			x[ops] = strtod((const char *)v, NULL);
			xmlFree(v);
			v = xmlGetProp(n, BAD_CAST "width");
			w[ops++] = strtod((const char *)v, NULL);
			xmlFree(v);
		} else if (cls && xmlStrcmp(cls, BAD_CAST "op") == 0) {
			ops++;
		} else if (cls && xmlStrcmp(cls, BAD_CAST "axis") == 0) {
			axes++;
			for (xmlNodePtr t = n->children; t; t = t->next)
				ticks += t->type == XML_ELEMENT_NODE &&
					 xmlStrcmp(t->name, BAD_CAST "text") == 0;
		}
		xmlFree(cls);
	}
	assert_int_equal(idle, 2);
	assert_int_equal(ops, 2); /* the RF is not a compute op */
	assert_int_equal(texts, 1);
	assert_int_equal(axes, 1);
	assert_int_equal(ticks, 11); /* 0, 1, ..., 10 ms */
	/* x = label_w + start * scale, width = (end - start) * scale */
	assert_true(fabs(x[0] - 120) < 0.01 && fabs(w[0] - 40) < 0.01);
	assert_true(fabs(x[1] - 180) < 0.01 && fabs(w[1] - 110) < 0.01);
	xmlFreeDoc(doc);
	dp_buf_release(&b);
}

static void trace_is_chrome_json_of_the_timeline(void **state)
{
	struct dp_sched *s = build(DP_SCHED_DUALPIPEV, 4, 10, 0);
	char *text = format(s, DP_SCHED_FMT_TRACE, -1);
	json_error_t jerr;
	json_t *root = json_loads(text, 0, &jerr), *events, *ev;
	size_t i, nx = 0, want = 0;
	int found = 0;

	(void)state;
	assert_non_null(root);
	events = json_object_get(root, "traceEvents");
	assert_true(json_is_array(events));
	for (int r = 0; r < 4; r++) {
		size_t n;
		const struct dp_sched_op *ops = dp_sched_ops(s, r, &n);

		want += n; /* no comm tokens in this schedule */
		(void)ops;
	}
	json_array_foreach(events, i, ev)
	{
		const char *ph = json_string_value(json_object_get(ev, "ph"));
		const char *name = json_string_value(json_object_get(ev, "name"));

		assert_non_null(ph);
		if (strcmp(ph, "X") != 0)
			continue;
		nx++;
		assert_true(json_is_number(json_object_get(ev, "ts")));
		assert_true(json_is_number(json_object_get(ev, "dur")));
		/* rank 0 starts with F0 0..5: F0 2 runs from 2 to 3 time units */
		if (json_integer_value(json_object_get(ev, "tid")) == 0 &&
		    strcmp(name, "F0 2") == 0) {
			assert_true(fabs(json_number_value(json_object_get(ev, "ts")) - 2000) <
				    1e-6);
			assert_true(fabs(json_number_value(json_object_get(ev, "dur")) - 1000) <
				    1e-6);
			found = 1;
		}
	}
	assert_int_equal(nx, want);
	assert_true(found);
	json_decref(root);
	free(text);
	dp_sched_free(s);
}

/* ---- CLI ----------------------------------------------------------------- */

static void cli_schedule_prints_golden_and_one_rank(void **state)
{
	struct dp_test_run r = dp_test_dpctl("schedule", "--algo", "dualpipe", "--pp", "8",
					     "--micro", "20", "--comm");
	char *want = dp_test_slurp(FIXTURES "/sched/dualpipe-pp8-m20-comm.ops");
	const char *line3, *line4;

	(void)state;
	assert_int_equal(r.rc, EX_OK);
	assert_string_equal(r.out, want);
	assert_string_equal(r.err, "");
	dp_test_run_free(&r);
	r = dp_test_dpctl("schedule", "--algo", "dualpipe", "--pp", "8", "--micro", "20", "--comm",
			  "--rank", "3");
	assert_int_equal(r.rc, EX_OK);
	line3 = strstr(want, "rank 3:");
	line4 = strstr(want, "rank 4:");
	assert_non_null(line3);
	assert_non_null(line4);
	assert_int_equal(strlen(r.out), (size_t)(line4 - line3));
	assert_memory_equal(r.out, line3, strlen(r.out));
	dp_test_run_free(&r);
	free(want);
	/* the global --json picks the json format */
	r = dp_test_dpctl("--json", "schedule", "--algo", "1f1b", "--pp", "2", "--micro", "1");
	assert_int_equal(r.rc, EX_OK);
	assert_string_equal(r.out,
			    "{\"algo\":\"1f1b\",\"pp\":2,\"micro\":1,\"comm\":false,\"ranks\":["
			    "{\"rank\":0,\"ops\":[{\"op\":\"F\",\"step\":1,\"leg\":0,\"micro\":0},"
			    "{\"op\":\"B\",\"step\":3,\"leg\":0,\"micro\":0}]},"
			    "{\"rank\":1,\"ops\":[{\"op\":\"F\",\"step\":2,\"leg\":0,\"micro\":0},"
			    "{\"op\":\"B\",\"step\":2,\"leg\":0,\"micro\":0}]}]}\n");
	dp_test_run_free(&r);
}

static void expect_cli(const char *const *argv, int rc, const char *err)
{
	struct dp_test_run r = dp_test_dpctl_list(argv);

	if (r.rc != rc || strcmp(r.err, err) != 0)
		fail_msg("%s %s: rc %d, err '%s'; want rc %d, err '%s'", argv[0], argv[1], r.rc,
			 r.err, rc, err);
	assert_string_equal(r.out, "");
	dp_test_run_free(&r);
}

#define ARGS(...) ((const char *const[]){ __VA_ARGS__, NULL })

static void cli_errors_have_exit_codes_and_messages(void **state)
{
	(void)state;
	expect_cli(ARGS("schedule", "--pp", "4"), EX_USAGE,
		   "dpctl: error: --algo, --pp and --micro are required\n"
		   "Try 'dpctl schedule --help'.\n");
	expect_cli(ARGS("schedule", "--algo", "gpipe", "--pp", "4", "--micro", "8"), EX_USAGE,
		   "dpctl: error: --algo: sched: unknown algorithm 'gpipe' (expected dualpipe, "
		   "dualpipev, 1f1b or zb1p)\nTry 'dpctl schedule --help'.\n");
	expect_cli(ARGS("schedule", "--algo", "1f1b", "--pp", "four", "--micro", "8"), EX_USAGE,
		   "dpctl: error: --pp: 'four' is not an integer\nTry 'dpctl schedule --help'.\n");
	expect_cli(ARGS("schedule", "--algo", "1f1b", "--pp", "0", "--micro", "8"), EX_USAGE,
		   "dpctl: error: --pp: 0 is out of range [1, 4096]\n"
		   "Try 'dpctl schedule --help'.\n");
	expect_cli(
		ARGS("schedule", "--algo", "1f1b", "--pp", "4", "--micro", "8", "--rank", "4"),
		EX_USAGE,
		"dpctl: error: --rank: 4 is out of range [0, 4)\nTry 'dpctl schedule --help'.\n");
	expect_cli(
		ARGS("schedule", "--algo", "1f1b", "--pp", "4", "--micro", "8", "--format", "png"),
		EX_USAGE,
		"dpctl: error: --format: sched: unknown format 'png' (expected ops, long, json, "
		"svg or trace)\nTry 'dpctl schedule --help'.\n");
	expect_cli(
		ARGS("schedule", "--algo", "dualpipe", "--pp", "4", "--micro", "6"), EX_DATAERR,
		"dpctl: error: sched: dualpipe needs micro >= 2*pp (num_chunks >= num_ranks * 2): "
		"micro=6, pp=4\n");
	expect_cli(ARGS("schedule", "--algo", "dualpipe", "--pp", "3", "--micro", "6"), EX_DATAERR,
		   "dpctl: error: sched: dualpipe needs an even pp (num_ranks % 2 == 0): pp=3\n");
	expect_cli(ARGS("schedule", "--algo", "dualpipev", "--pp", "4", "--micro", "7"), EX_DATAERR,
		   "dpctl: error: sched: dualpipev needs micro >= 2*pp (num_chunks >= num_ranks * "
		   "2): micro=7, pp=4\n");
	expect_cli(ARGS("simulate", "--algo", "zb1p", "--pp", "4", "--micro", "8", "--B", "1",
			"--W", "2"),
		   EX_DATAERR,
		   "dpctl: error: simulate: --W (2) must not exceed --B (1): I takes B - W\n");
	expect_cli(
		ARGS("simulate", "--algo", "zb1p", "--pp", "4", "--micro", "8", "--F", "-1"),
		EX_USAGE,
		"dpctl: error: --F: -1 is out of range [0, 1e+09]\nTry 'dpctl simulate --help'.\n");
	expect_cli(ARGS("simulate", "--algo", "zb1p", "--pp", "4", "--micro", "8", "--FB", "x"),
		   EX_USAGE,
		   "dpctl: error: --FB: 'x' is not a number\nTry 'dpctl simulate --help'.\n");
	expect_cli(ARGS("simulate", "--pp", "4", "--micro", "8"), EX_USAGE,
		   "dpctl: error: --pp, --micro and --algo (or --compare) are required\n"
		   "Try 'dpctl simulate --help'.\n");
	expect_cli(ARGS("simulate", "--algo", "dualpipe", "--pp", "4", "--micro", "9"), EX_DATAERR,
		   "dpctl: error: sched: dualpipe needs an even micro (num_chunks % 2 == 0): "
		   "micro=9\n");
}

static void cli_simulate_json_has_the_issue_shape(void **state)
{
	static const char *const algos[] = { "1f1b", "zb1p", "dualpipe" };
	static const double bubbles[] = { 21, 7, 4.5 };
	static const int peaks[] = { 8, 8, 9 };

	(void)state;
	for (int a = 0; a < 3; a++) {
		struct dp_test_run r =
			dp_test_dpctl("simulate", "--algo", algos[a], "--pp", "8", "--micro", "20",
				      "--F", "1", "--B", "2", "--W", "1", "--FB", "2.5", "--json");
		json_error_t jerr;
		json_t *o = json_loads(r.out, 0, &jerr), *ranks, *rk;
		const char *key;
		json_t *val;
		size_t i;
		int nkeys = 0, pmax = 0;
		double bmax = 0;

		assert_int_equal(r.rc, EX_OK);
		assert_non_null(o);
		json_object_foreach(o, key, val)
		{
			(void)val;
			assert_non_null(strstr(" algo pp micro makespan bubble_max ranks ", key));
			nkeys++;
		}
		assert_int_equal(nkeys, 6);
		assert_string_equal(json_string_value(json_object_get(o, "algo")), algos[a]);
		assert_int_equal(json_integer_value(json_object_get(o, "pp")), 8);
		assert_int_equal(json_integer_value(json_object_get(o, "micro")), 20);
		assert_true(fabs(json_number_value(json_object_get(o, "bubble_max")) - bubbles[a]) <
			    1e-9);
		ranks = json_object_get(o, "ranks");
		assert_int_equal(json_array_size(ranks), 8);
		json_array_foreach(ranks, i, rk)
		{
			int p = (int)json_integer_value(json_object_get(rk, "peak_activations"));
			double b = json_number_value(json_object_get(rk, "bubble"));

			assert_int_equal(json_integer_value(json_object_get(rk, "rank")), (int)i);
			assert_int_equal(json_object_size(rk), 3);
			pmax = p > pmax ? p : pmax;
			bmax = b > bmax ? b : bmax;
		}
		assert_int_equal(pmax, peaks[a]);
		assert_true(fabs(bmax - bubbles[a]) < 1e-9);
		json_decref(o);
		dp_test_run_free(&r);
	}
}

static void cli_simulate_compare_prints_the_table(void **state)
{
	struct dp_test_run r = dp_test_dpctl("simulate", "--compare", "--pp", "8", "--micro", "20");

	(void)state;
	assert_int_equal(r.rc, EX_OK);
	assert_non_null(
		strstr(r.out, "\n1f1b           8        81         21             21        8\n"));
	assert_non_null(
		strstr(r.out, "\nzb1p           8        67          7              7        8\n"));
	assert_non_null(
		strstr(r.out, "\ndualpipe       8        59        4.5            4.5        9\n"));
	assert_non_null(
		strstr(r.out, "\ndualpipev      4       109        4.5            4.5        9\n"));
	dp_test_run_free(&r);
	/* text output of one algorithm names the README formula */
	r = dp_test_dpctl("simulate", "--algo", "dualpipev", "--pp", "4", "--micro", "10");
	assert_int_equal(r.rc, EX_OK);
	assert_non_null(strstr(r.out, "bubble max  4.5 (README (PP/2-1)(F&B+B-3W) = 4.5)\n"));
	dp_test_run_free(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(readme_examples_match_golden),
		cmocka_unit_test(matches_upstream_oracle_hashes),
		cmocka_unit_test(op_counts_follow_the_formulas),
		cmocka_unit_test(mirror_ranks_swap_legs),
		cmocka_unit_test(dualpipe_half_is_dualpipev),
		cmocka_unit_test(w_queue_is_fifo_and_empty),
		cmocka_unit_test(rejects_upstream_invalid_configs),
		cmocka_unit_test(verifier_accepts_all_algorithms),
		cmocka_unit_test(verifier_rejects_broken_schedules),
		cmocka_unit_test(verifier_finds_comm_deadlock),
		cmocka_unit_test(simulation_reproduces_readme_table),
		cmocka_unit_test(simulation_timeline_is_consistent),
		cmocka_unit_test(simulation_rejects_bad_times),
		cmocka_unit_test(svg_renders_to_png),
		cmocka_unit_test(chart_svg_groups_axis_escaping),
		cmocka_unit_test(trace_is_chrome_json_of_the_timeline),
		cmocka_unit_test(cli_schedule_prints_golden_and_one_rank),
		cmocka_unit_test(cli_errors_have_exit_codes_and_messages),
		cmocka_unit_test(cli_simulate_json_has_the_issue_shape),
		cmocka_unit_test(cli_simulate_compare_prints_the_table),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
