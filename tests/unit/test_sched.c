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
	check_golden(DP_SCHED_DUALPIPEV, 4, 10, 1, DP_SCHED_FMT_OPS,
		     "dualpipev-pp4-m10-comm.ops");
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
		char algo[32], comm[16], fmtname[16];
		unsigned long long want;
		int pp, micro;
		enum dp_sched_algo a;
		enum dp_sched_fmt fm;
		struct dp_sched *s;
		char *got;

		if (line[0] == '#')
			continue;
		assert_int_equal(sscanf(line, "%31s %d %d %15s %15s %llx", algo, &pp, &micro, comm,
					fmtname, &want),
				 6);
		assert_int_equal(dp_sched_algo_parse(algo, &a, NULL), 0);
		assert_int_equal(dp_sched_fmt_parse(fmtname, &fm, NULL), 0);
		s = build(a, pp, micro, strcmp(comm, "comm") == 0);
		got = format(s, fm, -1);
		if (fnv1a(got) != want)
			fail_msg("%s pp=%d micro=%d %s %s differs from upstream", algo, pp, micro,
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
				struct dp_sched *s = build(v ? DP_SCHED_DUALPIPEV : DP_SCHED_DUALPIPE,
							   pp, micro, 0);
				int n = v ? pp : pp / 2, C = v ? micro : micro / 2;

				for (int r = 0; r < pp; r++) {
					int k = v ? r : (r < pp - 1 - r ? r : pp - 1 - r);
					int o = n - k - 1, inner = k == n - 1;
					int cnt[DP_SCHED_OP_WAIT + 1];

					count_ops(s, r, cnt);
					assert_int_equal(cnt[DP_SCHED_OP_F], 3 * o + 2 * (k + 1) + inner);
					assert_int_equal(cnt[DP_SCHED_OP_B], o + k + 1 + inner);
					assert_int_equal(cnt[DP_SCHED_OP_I], 2 * n - k - 1);
					assert_int_equal(cnt[DP_SCHED_OP_W], 2 * n - k - 1);
					assert_int_equal(cnt[DP_SCHED_OP_FB],
							 2 * (C - 2 * n + k + 1) - inner + o);
					/* every leg: C forwards and C backwards */
					assert_int_equal(cnt[DP_SCHED_OP_F] + cnt[DP_SCHED_OP_FB], 2 * C);
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
			const struct dp_sched_op *is[64];
			size_t ni = 0;

			for (size_t i = 0; i < n; i++) {
				if (ops[i].kind == DP_SCHED_OP_I) {
					assert_true(ni < 64);
					is[ni++] = &ops[i];
				} else if (ops[i].kind == DP_SCHED_OP_W) {
					assert_true(head < ni);
					assert_int_equal(ops[i].leg, is[head]->leg);
					assert_int_equal(ops[i].micro, is[head]->micro);
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
		{ DP_SCHED_DUALPIPE, 3, 6, "sched: dualpipe needs an even pp (num_ranks % 2 == 0): pp=3" },
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
		struct dp_sched_cfg cfg = { .algo = bad[i].algo, .pp = bad[i].pp,
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
							 dp_sched_algo_name(algos[a]), pp, micro, comm,
							 err.msg);
					dp_sched_free(s);
				}
			}
		}
	}
}

enum edit { EDIT_SWAP, EDIT_DROP, EDIT_DUP };

/* Copy @s into a new schedule, editing rank @rank: swap ops @i and @j, drop
 * op @i, or duplicate op @i. */
static struct dp_sched *edited(const struct dp_sched *s, int rank, enum edit e, size_t i,
			       size_t j)
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

/* Append the canonical ops of one rank ("F0 0 | SF0 0 1 | WAIT") to @s. */
static void parse_rank(struct dp_sched *s, int rank, const char *text)
{
	static const char *const kinds[] = { "F", "B", "I", "W", "RF", "SF", "RB", "SB" };
	static const int kind_ids[] = { DP_SCHED_OP_F,	DP_SCHED_OP_B,	DP_SCHED_OP_I,
					DP_SCHED_OP_W,	DP_SCHED_OP_RF, DP_SCHED_OP_SF,
					DP_SCHED_OP_RB, DP_SCHED_OP_SB };
	char *copy = strdup(text), *save = NULL;

	assert_non_null(copy);
	for (char *tok = strtok_r(copy, "|", &save); tok; tok = strtok_r(NULL, "|", &save)) {
		struct dp_sched_op op = { .micro = -1, .micro2 = -1, .peer = -1 };
		char name[8];
		int leg, a, b, n;

		while (*tok == ' ')
			tok++;
		if (strncmp(tok, "WAIT", 4) == 0) {
			op.kind = DP_SCHED_OP_WAIT;
		} else if (sscanf(tok, "F%dB%d %d %d", &leg, &a, &b, &n) == 4) {
			op = (struct dp_sched_op){ .kind = DP_SCHED_OP_FB, .leg = (unsigned char)leg,
						   .leg2 = (unsigned char)a, .micro = b,
						   .micro2 = n, .peer = -1 };
		} else {
			n = sscanf(tok, "%2[A-Z]%d %d %d", name, &leg, &a, &b);
			assert_true(n >= 3);
			for (size_t k = 0; k < 8; k++)
				if (strcmp(name, kinds[k]) == 0)
					op.kind = (unsigned char)kind_ids[k];
			op.leg = (unsigned char)leg;
			op.micro = a;
			if (n == 4)
				op.peer = b;
		}
		assert_int_equal(dp_sched_append(s, rank, &op, NULL), 0);
	}
	free(copy);
}

static void verifier_finds_comm_deadlock(void **state)
{
	struct dp_sched_cfg cfg = { .algo = DP_SCHED_1F1B, .pp = 2, .micro = 2, .comm = 1 };
	struct dp_sched *s = NULL;

	(void)state;
	/* the good order, as generated, passes */
	assert_int_equal(dp_sched_new(&cfg, &s, NULL), 0);
	parse_rank(s, 0, "F0 0 | SF0 0 1 | WAIT | F0 1 | SF0 1 1 | RB0 0 1 | WAIT | B0 0 | "
			 "RB0 1 1 | WAIT | B0 1");
	parse_rank(s, 1, "RF0 0 0 | WAIT | F0 0 | B0 0 | SB0 0 0 | RF0 1 0 | WAIT | F0 1 | "
			 "B0 1 | SB0 1 0 | WAIT");
	assert_int_equal(dp_sched_verify(s, NULL), 0);
	dp_sched_free(s);
	/* rank 0 waits for the gradient of micro 0 before sending micro 1's input,
	 * rank 1 waits for micro 1's input before sending that gradient */
	assert_int_equal(dp_sched_new(&cfg, &s, NULL), 0);
	parse_rank(s, 0, "F0 0 | SF0 0 1 | WAIT | RB0 0 1 | WAIT | F0 1 | SF0 1 1 | B0 0 | "
			 "RB0 1 1 | WAIT | B0 1");
	parse_rank(s, 1, "RF0 0 0 | WAIT | F0 0 | RF0 1 0 | WAIT | B0 0 | SB0 0 0 | F0 1 | "
			 "B0 1 | SB0 1 0 | WAIT");
	expect_rejected(s, "rank 0 op #4 'WAIT': deadlock");
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
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
