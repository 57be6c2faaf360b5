/* tests/unit/test_hostlist.c - Slurm host lists: expand, compress, errors,
 * round trips, a 100k-host compress, `dpctl hostlist`, and a differential
 * test against Slurm's own `scontrol show hostnames|hostlistsorted` (skipped
 * when scontrol is not installed).
 *
 * Expected strings in the tables were taken from scontrol (Slurm 22.05,
 * Debian 12 slurm-client) on the same input.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/dp_buf.h"
#include "common/dp_hostlist.h"
#include "tests/unit/dp_test.h"

/* ---- helpers ---- */

/* Hosts of @hl joined by @sep (caller frees). */
static char *join(const struct dp_hostlist *hl, const char *sep)
{
	struct dp_buf b;
	char *s;

	dp_buf_init(&b, SIZE_MAX / 2);
	for (size_t i = 0; i < dp_hostlist_count(hl); i++) {
		if (i)
			assert_int_equal(dp_buf_adds(&b, sep), 0);
		assert_int_equal(dp_buf_adds(&b, dp_hostlist_get(hl, i)), 0);
	}
	s = dp_buf_detach(&b, NULL);
	dp_buf_release(&b);
	return s ? s : strdup("");
}

static char *expand_join(const char *expr, const char *sep)
{
	struct dp_err err = { 0 };
	struct dp_hostlist *hl = NULL;
	char *s;

	if (dp_hostlist_expand(expr, &hl, &err) != 0)
		fail_msg("expand '%s': %s", expr, err.msg);
	s = join(hl, sep);
	dp_hostlist_free(hl);
	return s;
}

static char *compress_expr(const char *expr)
{
	struct dp_err err = { 0 };
	struct dp_hostlist *hl = NULL;
	char *s;

	if (dp_hostlist_expand(expr, &hl, &err) != 0)
		fail_msg("expand '%s': %s", expr, err.msg);
	s = dp_hostlist_compress(hl, &err);
	assert_non_null(s);
	dp_hostlist_free(hl);
	return s;
}

static uint64_t rng_state;

static uint64_t rnd(void)
{
	/* xorshift64*: deterministic, so a failure reproduces */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 2685821657736338717ULL;
}

static unsigned rnd_below(unsigned n)
{
	return (unsigned)(rnd() % n);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* ---- expansion ---- */

static const struct {
	const char *expr, *hosts;
} expand_cases[] = {
	{ "node[01-03,7],gpu-a[1-2]", "node01 node02 node03 node7 gpu-a1 gpu-a2" },
	{ "rack[1-2]-n[1-2]", "rack1-n1 rack1-n2 rack2-n1 rack2-n2" },
	{ "r[1-2]n[1-2]", "r1n1 r1n2 r2n1 r2n2" },
	{ "n[1-2][3-4]", "n13 n14 n23 n24" },
	/* Slurm: last group innermost, then the others from the right */
	{ "a[1-2]b[1-2]c[1-2]", "a1b1c1 a1b1c2 a2b1c1 a2b1c2 a1b2c1 a1b2c2 a2b2c1 a2b2c2" },
	{ "node[08-10]", "node08 node09 node10" },
	{ "n[009-11]", "n009 n010 n011" },
	{ "n[01-2]", "n01 n02" },
	{ "n[1-02]", "n1 n2" },
	{ "n[9-11]", "n9 n10 n11" },
	{ "n[00]", "n00" },
	{ "n[0-0]", "n0" },
	{ "n[1-3,2]", "n1 n2 n3 n2" },
	{ "n3,n1,n3", "n3 n1 n3" },
	{ "[1-3]", "1 2 3" },
	{ "a b\tc", "a b c" },
	{ " a ,  b ", "a b" },
	{ "n1x,login,a1.b,n[1-2]", "n1x login a1.b n1 n2" },
	{ "x-[1-2].y[5]", "x-1.y5 x-2.y5" },
	{ "n[18446744073709551614-18446744073709551615]",
	  "n18446744073709551614 n18446744073709551615" },
	{ "n[0000000000000000000000001-2]",
	  "n0000000000000000000000001 n0000000000000000000000002" },
};

static void expand_matches_slurm(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(expand_cases) / sizeof(expand_cases[0]); i++) {
		char *got = expand_join(expand_cases[i].expr, " ");

		if (strcmp(got, expand_cases[i].hosts) != 0)
			fail_msg("expand '%s': got '%s', want '%s'", expand_cases[i].expr, got,
				 expand_cases[i].hosts);
		free(got);
	}
}

static const struct {
	const char *expr;
	int rc;
	const char *msg;
} expand_errors[] = {
	{ "node[5-3]", -EINVAL, "hostlist: reversed range '5-3' at column 6 in 'node[5-3]'" },
	{ "node[1-2", -EINVAL, "hostlist: unclosed '[' at column 5 in 'node[1-2'" },
	{ "a[1-2,b", -EINVAL, "hostlist: unclosed '[' at column 2 in 'a[1-2,b'" },
	{ "node1]", -EINVAL, "hostlist: unexpected ']' at column 6 in 'node1]'" },
	{ "a[1-2]]", -EINVAL, "hostlist: unexpected ']' at column 7 in 'a[1-2]]'" },
	{ "a[[1]]", -EINVAL, "hostlist: nested '[' at column 3 in 'a[[1]]'" },
	{ "a[]", -EINVAL, "hostlist: empty range at column 3 in 'a[]'" },
	{ "a[1,,2]", -EINVAL, "hostlist: empty range at column 5 in 'a[1,,2]'" },
	{ "a[1,]", -EINVAL, "hostlist: empty range at column 5 in 'a[1,]'" },
	{ "a[x]", -EINVAL, "hostlist: invalid range 'x' at column 3 in 'a[x]'" },
	{ "a[1-]", -EINVAL, "hostlist: invalid range '1-' at column 3 in 'a[1-]'" },
	{ "a[-1]", -EINVAL, "hostlist: invalid range '-1' at column 3 in 'a[-1]'" },
	{ "a[1-2-3]", -EINVAL, "hostlist: invalid range '1-2-3' at column 3 in 'a[1-2-3]'" },
	{ "a[ 1]", -EINVAL, "hostlist: invalid range ' 1' at column 3 in 'a[ 1]'" },
	{ "a[99999999999999999999]", -EINVAL,
	  "hostlist: number too large in range '99999999999999999999' at column 3 in "
	  "'a[99999999999999999999]'" },
	{ "a[1-2]c", -EINVAL, "hostlist: unexpected text 'c' after ']' at column 7 in 'a[1-2]c'" },
	{ "a,,b", -EINVAL, "hostlist: empty host name at column 3 in 'a,,b'" },
	{ "a, ,b", -EINVAL, "hostlist: empty host name at column 4 in 'a, ,b'" },
	{ ",a", -EINVAL, "hostlist: empty host name at column 1 in ',a'" },
	{ "a,", -EINVAL, "hostlist: empty host name at column 3 in 'a,'" },
	{ "", -EINVAL, "hostlist: empty host list" },
	{ " \t", -EINVAL, "hostlist: empty host list" },
	{ "a\001b", -EINVAL, "hostlist: invalid character 0x01 at column 2 in 'a\001b'" },
	{ "n[1-1048577]", -E2BIG,
	  "hostlist: more than 1048576 hosts at column 1 in 'n[1-1048577]'" },
	{ "n[1-1024][1-1025]", -E2BIG,
	  "hostlist: more than 1048576 hosts at column 1 in 'n[1-1024][1-1025]'" },
	{ "a,n[0-18446744073709551615]", -E2BIG,
	  "hostlist: more than 1048576 hosts at column 3 in 'a,n[0-18446744073709551615]'" },
};

static void expand_errors_name_text_and_column(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(expand_errors) / sizeof(expand_errors[0]); i++) {
		struct dp_err err = { 0 };
		struct dp_hostlist *hl = (struct dp_hostlist *)&err; /* must stay untouched */
		int rc = dp_hostlist_expand(expand_errors[i].expr, &hl, &err);

		if (rc != expand_errors[i].rc)
			fail_msg("expand '%s': rc %d, want %d", expand_errors[i].expr, rc,
				 expand_errors[i].rc);
		assert_string_equal(err.msg, expand_errors[i].msg);
		assert_ptr_equal(hl, (struct dp_hostlist *)&err);
	}
}

static void expand_limits_are_exact(void **state)
{
	struct dp_err err = { 0 };
	struct dp_hostlist *hl = NULL;
	char name[300];

	(void)state;
	/* exactly DP_HOSTLIST_MAX hosts is fine, one more is not */
	assert_int_equal(dp_hostlist_expand("n[1-1048576]", &hl, &err), 0);
	assert_int_equal(dp_hostlist_count(hl), DP_HOSTLIST_MAX);
	assert_string_equal(dp_hostlist_get(hl, 0), "n1");
	assert_string_equal(dp_hostlist_get(hl, DP_HOSTLIST_MAX - 1), "n1048576");
	assert_null(dp_hostlist_get(hl, DP_HOSTLIST_MAX));
	dp_hostlist_free(hl);
	assert_int_equal(dp_hostlist_expand("a,n[1-1048576]", &hl, &err), -E2BIG);

	/* host names: 255 characters at most, plain or built */
	memset(name, 'x', 255);
	name[255] = '\0';
	assert_int_equal(dp_hostlist_expand(name, &hl, &err), 0);
	dp_hostlist_free(hl);
	name[255] = 'y';
	name[256] = '\0';
	assert_int_equal(dp_hostlist_expand(name, &hl, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "host name longer than 255 characters at column 1"));
	(void)snprintf(name, sizeof(name), "%0250d[99995-100000]", 0);
	assert_int_equal(dp_hostlist_expand(name, &hl, &err), -EINVAL); /* 250 + 6 digits */
	assert_non_null(strstr(err.msg, "host name longer than 255 characters at column 1"));
	(void)snprintf(name, sizeof(name), "%0250d[99995-99999]", 0);
	assert_int_equal(dp_hostlist_expand(name, &hl, &err), 0);
	assert_int_equal(dp_hostlist_count(hl), 5);
	assert_int_equal(strlen(dp_hostlist_get(hl, 4)), 255);
	dp_hostlist_free(hl);
}

/* ---- building lists by hand ---- */

static void push_validates_names(void **state)
{
	struct dp_err err = { 0 };
	struct dp_hostlist *hl = dp_hostlist_new();
	char long_name[300];

	(void)state;
	assert_non_null(hl);
	assert_int_equal(dp_hostlist_count(hl), 0);
	assert_int_equal(dp_hostlist_push(hl, "node7", &err), 0);
	assert_int_equal(dp_hostlist_push(hl, "n1x", &err), 0);
	assert_int_equal(dp_hostlist_push(hl, "", &err), -EINVAL);
	assert_string_equal(err.msg, "hostlist: empty host name");
	assert_int_equal(dp_hostlist_push(hl, "a,b", &err), -EINVAL);
	assert_string_equal(err.msg, "hostlist: invalid character 0x2c in host name 'a,b'");
	assert_int_equal(dp_hostlist_push(hl, "a b", &err), -EINVAL);
	assert_int_equal(dp_hostlist_push(hl, "a[1]", &err), -EINVAL);
	assert_string_equal(err.msg, "hostlist: invalid character 0x5b in host name 'a[1]'");
	assert_int_equal(dp_hostlist_push(hl, "a]", &err), -EINVAL);
	assert_int_equal(dp_hostlist_push(hl, "a\n", &err), -EINVAL);
	memset(long_name, 'z', 256);
	long_name[256] = '\0';
	assert_int_equal(dp_hostlist_push(hl, long_name, &err), -EINVAL);
	assert_int_equal(dp_hostlist_count(hl), 2);
	assert_string_equal(dp_hostlist_get(hl, 1), "n1x");
	assert_null(dp_hostlist_get(hl, 2));
	assert_null(dp_hostlist_get(NULL, 0));
	assert_int_equal(dp_hostlist_count(NULL), 0);
	dp_hostlist_free(hl);
	dp_hostlist_free(NULL);
}

static void pointers_stay_valid_while_pushing(void **state)
{
	struct dp_err err = { 0 };
	struct dp_hostlist *hl = dp_hostlist_new();
	const char *first;
	char name[32];

	(void)state;
	assert_int_equal(dp_hostlist_push(hl, "first", &err), 0);
	first = dp_hostlist_get(hl, 0);
	for (int i = 0; i < 20000; i++) { /* several storage blocks */
		(void)snprintf(name, sizeof(name), "host-%d", i);
		assert_int_equal(dp_hostlist_push(hl, name, &err), 0);
	}
	assert_ptr_equal(dp_hostlist_get(hl, 0), first);
	assert_string_equal(first, "first");
	assert_string_equal(dp_hostlist_get(hl, 20000), "host-19999");
	dp_hostlist_free(hl);
}

/* ---- compression ---- */

static const struct {
	const char *in, *out;
} compress_cases[] = {
	{ "n3,n1,n2,n1", "n[1-3]" },
	{ "node[01-03,7],gpu-a[1-2]", "gpu-a[1-2],node[7,01-03]" },
	{ "n9,n10", "n[9-10]" },
	{ "n10,n9", "n[9-10]" },
	{ "n8,n9,n10,n11", "n[8-11]" },
	{ "n08,n09,n10", "n[08-10]" },
	{ "n10,n9,n09,n08,n8", "n[8-9,08-10]" },
	{ "gpu7,gpu10,gpu08,gpu09", "gpu[7,08-10]" },
	{ "n099,n100,n1000", "n[099-100,1000]" },
	{ "node001,node002,node003,node099,node100,node101,node1000",
	  "node[001-003,099-101,1000]" },
	{ "n9,n010", "n[9,010]" },
	{ "n1,n01", "n[1,01]" },
	{ "n0,n00,n000", "n[0,00,000]" },
	{ "x00,x01,x1,x2", "x[1-2,00-01]" },
	{ "r2,r10,r1,r01", "r[1-2,01,10]" },
	{ "n010,n011,n12", "n[12,010-011]" },
	{ "n10,n100,n010", "n[10,010,100]" },
	{ "n5,n03,n4", "n[4-5,03]" },
	{ "n10,n2,n1", "n[1-2,10]" },
	{ "n,n1,n0", "n,n[0-1]" },
	{ "n1x,n2x,n3x", "n1x,n2x,n3x" },
	{ "a01x,a1x,a001x,a2x", "a001x,a01x,a1x,a2x" },
	{ "1,2,3", "[1-3]" },
	{ "a1,a2b,a3", "a[1,3],a2b" },
	{ "n1,n2,n3,m1", "m1,n[1-3]" },
	{ "z,a,m,a", "a,m,z" },
	{ "a.b,a,a-b,a_b,A", "A,a,a-b,a.b,a_b" },
	{ "rack10-n1,rack2-n1,rack1-n1", "rack1-n1,rack2-n1,rack10-n1" },
	{ "rack[1-2]-n[1-2]", "rack1-n[1-2],rack2-n[1-2]" },
	{ "n-1,n-2", "n-[1-2]" },
	{ "n5", "n5" },
	{ "n[1-3],n[2-5],n7", "n[1-5,7]" },
	{ "n4294967295,n4294967296", "n[4294967295-4294967296]" },
	{ "n18446744073709551615,n18446744073709551614",
	  "n[18446744073709551614-18446744073709551615]" },
	/* a number past 2^64-1 is no number: the whole name is the prefix */
	{ "n18446744073709551616,n18446744073709551615",
	  "n18446744073709551615,n18446744073709551616" },
};

static void compress_matches_slurm(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(compress_cases) / sizeof(compress_cases[0]); i++) {
		char *got = compress_expr(compress_cases[i].in);

		if (strcmp(got, compress_cases[i].out) != 0)
			fail_msg("compress '%s': got '%s', want '%s'", compress_cases[i].in, got,
				 compress_cases[i].out);
		free(got);
	}
}

static void compress_of_empty_list_is_empty(void **state)
{
	struct dp_hostlist *hl = dp_hostlist_new();
	char *s = dp_hostlist_compress(hl, NULL);

	(void)state;
	assert_string_equal(s, "");
	free(s);
	dp_hostlist_free(hl);
}

/* Random names from a few prefixes, padded and unpadded numbers and plain
 * names; @n of them, duplicates likely. */
static struct dp_hostlist *random_hosts(size_t n)
{
	static const char *const prefixes[] = { "n",	    "node", "gpu-a", "rack1-n",
						"rack10-n", "",	    "a01b",  "n." };
	static const char *const plain[] = { "login", "n", "n1x", "a1.b", "node" };
	struct dp_hostlist *hl = dp_hostlist_new();
	struct dp_err err = { 0 };
	char name[64];

	assert_non_null(hl);
	for (size_t i = 0; i < n; i++) {
		if (rnd_below(20) == 0) {
			assert_int_equal(dp_hostlist_push(hl, plain[rnd_below(5)], &err), 0);
			continue;
		}
		(void)snprintf(name, sizeof(name), "%s%0*u", prefixes[rnd_below(8)],
			       (int)rnd_below(5),
			       rnd_below(4) ? rnd_below(40) : 95 + rnd_below(10));
		assert_int_equal(dp_hostlist_push(hl, name, &err), 0);
	}
	return hl;
}

/* Sorted, de-duplicated copy of the names in @hl (caller frees the array). */
static const char **sorted_unique(const struct dp_hostlist *hl, size_t *n)
{
	size_t c = dp_hostlist_count(hl), k = 0;
	const char **v = malloc((c ? c : 1) * sizeof(*v));

	assert_non_null(v);
	for (size_t i = 0; i < c; i++)
		v[i] = dp_hostlist_get(hl, i);
	qsort(v, c, sizeof(*v), cmp_str);
	for (size_t i = 0; i < c; i++)
		if (k == 0 || strcmp(v[k - 1], v[i]) != 0)
			v[k++] = v[i];
	*n = k;
	return v;
}

static void round_trip_random_lists(void **state)
{
	(void)state;
	rng_state = 0x9e3779b97f4a7c15ULL;
	for (int round = 0; round < 200; round++) {
		struct dp_err err = { 0 };
		struct dp_hostlist *in = random_hosts(1 + rnd_below(300)), *back = NULL,
				   *shuffled = dp_hostlist_new();
		char *c1 = dp_hostlist_compress(in, &err), *c2, *c3;
		size_t nu, nb;
		const char **u = sorted_unique(in, &nu), **b;

		assert_non_null(c1);
		/* expand(compress(x)) holds exactly the distinct names of x */
		assert_int_equal(dp_hostlist_expand(c1, &back, &err), 0);
		assert_int_equal(dp_hostlist_count(back), nu);
		b = sorted_unique(back, &nb);
		assert_int_equal(nb, nu);
		for (size_t i = 0; i < nu; i++)
			assert_string_equal(b[i], u[i]);
		/* compress is idempotent on its own expansion */
		c2 = dp_hostlist_compress(back, &err);
		assert_string_equal(c2, c1);
		/* ...and independent of input order */
		for (size_t i = dp_hostlist_count(in); i > 0; i--)
			assert_int_equal(
				dp_hostlist_push(shuffled,
						 dp_hostlist_get(in, rnd_below((unsigned)i)), &err),
				0);
		for (size_t i = 0; i < dp_hostlist_count(in); i++)
			assert_int_equal(dp_hostlist_push(shuffled, dp_hostlist_get(in, i), &err),
					 0);
		c3 = dp_hostlist_compress(shuffled, &err);
		assert_string_equal(c3, c1);
		free(c3);
		free(c2);
		free(b);
		free(u);
		free(c1);
		dp_hostlist_free(shuffled);
		dp_hostlist_free(back);
		dp_hostlist_free(in);
	}
}

/* 100k distinct hosts in random order: the sort must be O(n log n) (a
 * quadratic merge would take minutes here, which the runner would notice),
 * and the result is one range per prefix. */
static void compress_100k_hosts(void **state)
{
	enum { N = 100000 };
	struct dp_err err = { 0 };
	struct dp_hostlist *hl = dp_hostlist_new();
	unsigned *perm = malloc(N * sizeof(*perm));
	struct dp_buf want;
	char name[32], *s;

	(void)state;
	assert_non_null(perm);
	for (unsigned i = 0; i < N; i++)
		perm[i] = i;
	rng_state = 12345;
	for (unsigned i = N - 1; i > 0; i--) {
		unsigned j = rnd_below(i + 1), t = perm[i];

		perm[i] = perm[j];
		perm[j] = t;
	}
	for (unsigned i = 0; i < N; i++) {
		/* half padded "node%05u", half unpadded "gpu%u", every 1000th skipped */
		if (perm[i] % 1000 == 999)
			continue;
		if (perm[i] % 2)
			(void)snprintf(name, sizeof(name), "node%05u", perm[i] / 2);
		else
			(void)snprintf(name, sizeof(name), "gpu%u", perm[i] / 2);
		assert_int_equal(dp_hostlist_push(hl, name, &err), 0);
	}
	s = dp_hostlist_compress(hl, &err);
	assert_non_null(s);
	/* perm % 1000 == 999 drops node n (perm 2n+1) for n % 500 == 499 */
	dp_buf_init(&want, SIZE_MAX / 2);
	assert_int_equal(dp_buf_adds(&want, "gpu[0-49999],node["), 0);
	for (unsigned k = 0; k < 100; k++)
		assert_int_equal(
			dp_buf_addf(&want, "%s%05u-%05u", k ? "," : "", k * 500, k * 500 + 498), 0);
	assert_int_equal(dp_buf_adds(&want, "]"), 0);
	assert_string_equal(s, dp_buf_str(&want));
	dp_buf_release(&want);
	free(s);
	free(perm);
	dp_hostlist_free(hl);
}

/* ---- dpctl hostlist ---- */

static void cli_expand_and_compress(void **state)
{
	struct dp_test_run r;

	(void)state;
	r = dp_test_dpctl("hostlist", "expand", "node[01-03,7],gpu-a[1-2]");
	assert_int_equal(r.rc, 0);
	assert_string_equal(r.out, "node01\nnode02\nnode03\nnode7\ngpu-a1\ngpu-a2\n");
	assert_string_equal(r.err, "");
	dp_test_run_free(&r);

	r = dp_test_dpctl("hostlist", "expand", "--sep", ",", "n[1-2]", "m[3-4]");
	assert_int_equal(r.rc, 0);
	assert_string_equal(r.out, "n1,n2,m3,m4\n");
	dp_test_run_free(&r);

	r = dp_test_dpctl("--json", "hostlist", "expand", "n[1-2]", "x");
	assert_int_equal(r.rc, 0);
	assert_string_equal(r.out, "[\"n1\",\"n2\",\"x\"]\n");
	dp_test_run_free(&r);

	r = dp_test_dpctl("hostlist", "compress", "n3", "n1", "n2,n2", "gpu[08-10]", "gpu7");
	assert_int_equal(r.rc, 0);
	assert_string_equal(r.out, "gpu[7,08-10],n[1-3]\n");
	dp_test_run_free(&r);

	r = dp_test_dpctl("hostlist", "compress", "--json", "a[1-3]", "a4");
	assert_int_equal(r.rc, 0);
	assert_string_equal(r.out, "\"a[1-4]\"\n");
	dp_test_run_free(&r);
}

static void cli_errors(void **state)
{
	struct dp_test_run r;

	(void)state;
	r = dp_test_dpctl("hostlist", "expand", "ok", "node[5-3]");
	assert_int_equal(r.rc, 65);
	assert_string_equal(r.out, "");
	assert_string_equal(
		r.err, "dpctl: error: hostlist: reversed range '5-3' at column 6 in 'node[5-3]'\n");
	dp_test_run_free(&r);

	r = dp_test_dpctl("hostlist", "compress", "a,,b");
	assert_int_equal(r.rc, 65);
	assert_string_equal(r.err,
			    "dpctl: error: hostlist: empty host name at column 3 in 'a,,b'\n");
	dp_test_run_free(&r);

	r = dp_test_dpctl("hostlist", NULL);
	assert_int_equal(r.rc, 64);
	assert_string_equal(r.err, "dpctl: error: missing subcommand: expand or compress\n"
				   "Try 'dpctl hostlist --help'.\n");
	dp_test_run_free(&r);

	r = dp_test_dpctl("hostlist", "squash", "a");
	assert_int_equal(r.rc, 64);
	assert_non_null(strstr(r.err, "unknown subcommand 'squash'"));
	dp_test_run_free(&r);

	r = dp_test_dpctl("hostlist", "expand");
	assert_int_equal(r.rc, 64);
	assert_non_null(strstr(r.err, "expand: missing HOSTLIST"));
	dp_test_run_free(&r);

	r = dp_test_dpctl("hostlist", "compress", "--sep", ",", "a");
	assert_int_equal(r.rc, 64);
	assert_non_null(strstr(r.err, "--sep applies to expand only"));
	dp_test_run_free(&r);

	r = dp_test_dpctl("hostlist", "--bogus", "expand", "a");
	assert_int_equal(r.rc, 64);
	dp_test_run_free(&r);

	r = dp_test_dpctl("hostlist", "--help");
	assert_int_equal(r.rc, 0);
	assert_non_null(strstr(r.out, "usage: dpctl hostlist expand"));
	dp_test_run_free(&r);
}

/* ---- differential test against Slurm's scontrol ---- */

static char *slurm_conf;

/* Output of `scontrol show WHAT 'ARG'`, trailing newline removed (caller
 * frees); NULL if it could not run. */
static char *scontrol(const char *what, const char *arg)
{
	struct dp_buf cmd, out;
	char chunk[4096];
	size_t n;
	FILE *f;
	char *s;

	dp_buf_init(&cmd, SIZE_MAX / 2);
	dp_buf_init(&out, SIZE_MAX / 2);
	assert_int_equal(dp_buf_addf(&cmd, "scontrol show %s '%s' 2>&1", what, arg), 0);
	f = popen(dp_buf_str(&cmd), "r");
	dp_buf_release(&cmd);
	if (!f)
		return NULL;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		assert_int_equal(dp_buf_add(&out, chunk, n), 0);
	(void)pclose(f);
	while (out.len && out.data[out.len - 1] == '\n')
		out.data[--out.len] = '\0';
	s = strdup(dp_buf_str(&out));
	dp_buf_release(&out);
	return s;
}

static int find_scontrol(void)
{
	const char *path = getenv("PATH");
	char *copy, *save = NULL;
	int found = 0;

	if (!path)
		return 0;
	copy = strdup(path);
	for (char *d = strtok_r(copy, ":", &save); d && !found; d = strtok_r(NULL, ":", &save)) {
		char p[4096];

		(void)snprintf(p, sizeof(p), "%s/scontrol", d);
		found = access(p, X_OK) == 0;
	}
	free(copy);
	return found;
}

/* scontrol needs a slurm.conf but no slurmctld for these two commands. */
static int slurm_setup(void **state)
{
	(void)state;
	if (!find_scontrol())
		return 0;
	slurm_conf = dp_test_write_tmp(".conf", "ClusterName=dptest\nSlurmctldHost=localhost\n");
	if (setenv("SLURM_CONF", slurm_conf, 1) != 0)
		return -1;
	return 0;
}

static int slurm_teardown(void **state)
{
	(void)state;
	if (slurm_conf) {
		(void)unlink(slurm_conf);
		free(slurm_conf);
		slurm_conf = NULL;
		(void)unsetenv("SLURM_CONF");
	}
	return 0;
}

/* 1 if scontrol is installed and answers; else says why on stderr. */
static int scontrol_works(void)
{
	char *probe;
	int ok;

	if (!slurm_conf) {
		(void)fprintf(stderr, "# scontrol not found (apt-get install slurm-client)\n");
		return 0;
	}
	probe = scontrol("hostnames", "n[1-2]");
	ok = probe && strcmp(probe, "n1\nn2") == 0;
	if (!ok)
		(void)fprintf(stderr, "# scontrol does not work here: %s\n", probe ? probe : "?");
	free(probe);
	return ok;
}

/* A random well-formed expression: up to 8 items, each a plain name or
 * literal text with 1-3 bracket groups of padded/unpadded numbers and ranges. */
static void random_expr(struct dp_buf *b)
{
	static const char *const heads[] = { "n", "node", "r", "gpu-a", "", "rack-" };
	static const char *const mids[] = { "-n", "n", ".", "", "_x" };
	static const char *const plain[] = { "login", "n1x", "a1.b", "n7", "x" };
	static const unsigned bases[] = { 0, 1, 5, 8, 9, 10, 98, 99, 100, 999 };
	unsigned items = 1 + rnd_below(8);

	for (unsigned it = 0; it < items; it++) {
		unsigned ng = 1 + rnd_below(3);

		if (it)
			assert_int_equal(dp_buf_adds(b, ","), 0);
		if (rnd_below(5) == 0) {
			assert_int_equal(dp_buf_adds(b, plain[rnd_below(5)]), 0);
			continue;
		}
		assert_int_equal(dp_buf_adds(b, heads[rnd_below(6)]), 0);
		for (unsigned g = 0; g < ng; g++) {
			unsigned nr = 1 + rnd_below(3);

			if (g)
				assert_int_equal(dp_buf_adds(b, mids[rnd_below(5)]), 0);
			assert_int_equal(dp_buf_adds(b, "["), 0);
			for (unsigned k = 0; k < nr; k++) {
				unsigned lo = bases[rnd_below(10)] + rnd_below(4);
				int w = rnd_below(2) ? 0 : 2 + (int)rnd_below(3);

				assert_int_equal(dp_buf_addf(b, "%s%0*u", k ? "," : "", w, lo), 0);
				if (rnd_below(2))
					assert_int_equal(dp_buf_addf(b, "-%u", lo + rnd_below(6)),
							 0);
			}
			assert_int_equal(dp_buf_adds(b, "]"), 0);
		}
	}
}

static void expand_agrees_with_scontrol(void **state)
{
	(void)state;
	if (!scontrol_works()) {
		skip();
		return;
	}
	rng_state = 424242;
	for (int c = 0; c < 12; c++) {
		struct dp_buf e;
		char *want, *got;

		dp_buf_init(&e, SIZE_MAX / 2);
		random_expr(&e);
		want = scontrol("hostnames", dp_buf_str(&e));
		assert_non_null(want);
		got = expand_join(dp_buf_str(&e), "\n");
		if (strcmp(got, want) != 0)
			fail_msg("expand '%s':\n dpctl:    %s\n scontrol: %s", dp_buf_str(&e), got,
				 want);
		free(got);
		free(want);
		dp_buf_release(&e);
	}
}

/* Slurm's hostlistsorted keeps duplicates and merges neighbours while it
 * parses, so give it each distinct host once, in descending order (nothing
 * merges early); see docs/dpctl/hostlist.md. */
static void compress_agrees_with_scontrol(void **state)
{
	(void)state;
	if (!scontrol_works()) {
		skip();
		return;
	}
	rng_state = 777;
	for (int c = 0; c < 12; c++) {
		struct dp_err err = { 0 };
		struct dp_hostlist *in = random_hosts(1 + rnd_below(600)), *sorted = NULL;
		char *got = dp_hostlist_compress(in, &err), *want, *rev;
		struct dp_buf b;

		assert_non_null(got);
		assert_int_equal(dp_hostlist_expand(got, &sorted, &err), 0);
		dp_buf_init(&b, SIZE_MAX / 2);
		for (size_t i = dp_hostlist_count(sorted); i > 0; i--)
			assert_int_equal(dp_buf_addf(&b, "%s%s", dp_hostlist_get(sorted, i - 1),
						     i > 1 ? "," : ""),
					 0);
		rev = dp_buf_detach(&b, NULL);
		want = scontrol("hostlistsorted", rev);
		assert_non_null(want);
		if (strcmp(got, want) != 0)
			fail_msg("compress '%s':\n dpctl:    %s\n scontrol: %s", rev, got, want);
		free(want);
		free(rev);
		free(got);
		dp_buf_release(&b);
		dp_hostlist_free(sorted);
		dp_hostlist_free(in);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(expand_matches_slurm),
		cmocka_unit_test(expand_errors_name_text_and_column),
		cmocka_unit_test(expand_limits_are_exact),
		cmocka_unit_test(push_validates_names),
		cmocka_unit_test(pointers_stay_valid_while_pushing),
		cmocka_unit_test(compress_matches_slurm),
		cmocka_unit_test(compress_of_empty_list_is_empty),
		cmocka_unit_test(round_trip_random_lists),
		cmocka_unit_test(compress_100k_hosts),
		cmocka_unit_test(cli_expand_and_compress),
		cmocka_unit_test(cli_errors),
		cmocka_unit_test(expand_agrees_with_scontrol),
		cmocka_unit_test(compress_agrees_with_scontrol),
	};

	return cmocka_run_group_tests(tests, slurm_setup, slurm_teardown);
}
