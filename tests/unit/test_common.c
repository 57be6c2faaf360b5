/* tests/unit/test_common.c - dp_err, dp_buf, number parsing, logging. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "common/dp_buf.h"
#include "common/dp_err.h"
#include "common/dp_log.h"
#include "common/dp_util.h"
#include "tests/unit/dp_test.h"

static void err_set_returns_negative_code_and_formats(void **state)
{
	struct dp_err err = { 0 };

	(void)state;
	assert_int_equal(dp_err_set(&err, ENOENT, "topo: cannot open '%s'", "x"), -ENOENT);
	assert_int_equal(err.code, ENOENT);
	assert_string_equal(err.msg, "topo: cannot open 'x'");
	assert_int_equal(dp_err_prefix(&err, "plan"), -ENOENT);
	assert_string_equal(err.msg, "plan: topo: cannot open 'x'");
	/* a zero code must never read as success */
	assert_int_equal(dp_err_set(NULL, 0, "x"), -EIO);
	dp_err_clear(&err);
	assert_int_equal(err.code, 0);
	assert_string_equal(err.msg, "");
}

static void buf_grows_and_respects_cap(void **state)
{
	struct dp_buf b;
	char *p;
	size_t len;

	(void)state;
	dp_buf_init(&b, 16);
	assert_string_equal(dp_buf_str(&b), "");
	assert_int_equal(dp_buf_addf(&b, "%d-%s", 42, "abc"), 0);
	assert_string_equal(dp_buf_str(&b), "42-abc");
	assert_int_equal(dp_buf_adds(&b, "0123456789"), 0); /* exactly 16 */
	assert_int_equal(b.len, 16);
	assert_int_equal(dp_buf_adds(&b, "x"), -E2BIG);
	assert_string_equal(dp_buf_str(&b), "42-abc0123456789"); /* unchanged */
	p = dp_buf_detach(&b, &len);
	assert_int_equal(len, 16);
	assert_string_equal(p, "42-abc0123456789");
	assert_int_equal(b.len, 0);
	free(p);
	dp_buf_release(&b);
	dp_buf_release(NULL);
}

static void parse_long_checks_range_and_junk(void **state)
{
	struct dp_err err = { 0 };
	long v = -1;

	(void)state;
	assert_int_equal(dp_parse_long("17", 0, 100, &v, "--pp", &err), 0);
	assert_int_equal(v, 17);
	v = -1;
	assert_int_equal(dp_parse_long("17x", 0, 100, &v, "--pp", &err), -EINVAL);
	assert_string_equal(err.msg, "--pp: '17x' is not an integer");
	assert_int_equal(v, -1); /* out-param untouched on failure */
	assert_int_equal(dp_parse_long("101", 0, 100, &v, "--pp", &err), -ERANGE);
	assert_string_equal(err.msg, "--pp: 101 is out of range [0, 100]");
	assert_int_equal(dp_parse_long("", 0, 100, &v, "--pp", &err), -EINVAL);
	assert_int_equal(dp_parse_long("99999999999999999999", 0, 100, &v, "--pp", &err), -ERANGE);
}

static void parse_double_rejects_nan(void **state)
{
	struct dp_err err = { 0 };
	double d = 0;

	(void)state;
	assert_int_equal(dp_parse_double("1.5", 0, 10, &d, "--F", &err), 0);
	assert_true(d == 1.5);
	assert_int_equal(dp_parse_double("nan", 0, 10, &d, "--F", &err), -ERANGE);
	assert_int_equal(dp_parse_double("1e", 0, 10, &d, "--F", &err), -EINVAL);
}

static void log_filters_by_module(void **state)
{
	struct dp_err err = { 0 };
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	(void)state;
	assert_non_null(f);
	dp_log_set_sink(f);
	assert_int_equal(dp_log_configure("warn,topo:debug", &err), 0);
	dp_log(DP_LOG_DEBUG, "topo", "seen %d", 1);
	dp_log(DP_LOG_DEBUG, "sched", "hidden");
	dp_log(DP_LOG_WARN, "sched", "seen %d", 2);
	assert_int_equal(dp_log_configure("loud", &err), -EINVAL);
	assert_string_equal(err.msg, "log: unknown level 'loud' (error, warn, info, debug)");
	assert_true(dp_log_enabled(DP_LOG_DEBUG, "topo")); /* old spec kept */
	dp_log_set_sink(NULL);
	(void)fclose(f);
	assert_string_equal(text, "dpctl: debug: topo: seen 1\ndpctl: warn: sched: seen 2\n");
	free(text);
	assert_int_equal(dp_log_configure("warn", &err), 0);
}

/* Equal, and unequal at the first, a middle and the last byte; n 0. */
static void mem_equal_ct_compares_every_byte(void **state)
{
	unsigned char a[32], b[32];

	(void)state;
	for (int i = 0; i < 32; i++)
		a[i] = b[i] = (unsigned char)(i * 37 + 1);
	assert_int_equal(dp_mem_equal_ct(a, b, sizeof(a)), 1);
	assert_int_equal(dp_mem_equal_ct(a, b, 0), 1);
	for (int i = 0; i < 32; i += 15) {
		b[i] ^= 0x80;
		assert_int_equal(dp_mem_equal_ct(a, b, sizeof(a)), 0);
		assert_int_equal(dp_mem_equal_ct(a, b, (size_t)i), 1); /* before the change */
		b[i] ^= 0x80;
	}
}

/* The open-file limit goes up to what is needed, only as far as the hard
 * limit, and never down. */
static void nofile_raise_stops_at_the_hard_limit(void **state)
{
	struct rlimit old, rl;

	(void)state;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	if (old.rlim_max != RLIM_INFINITY && old.rlim_max < 512)
		skip();
	rl = old;
	rl.rlim_cur = 256;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
	assert_int_equal(dp_nofile_raise(300), 300);
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
	assert_int_equal(rl.rlim_cur, 300);
	assert_int_equal(dp_nofile_raise(100), 300); /* not lowered */
	if (old.rlim_max != RLIM_INFINITY && old.rlim_max < (rlim_t)1 << 30)
		assert_int_equal(dp_nofile_raise((size_t)old.rlim_max + 1), (long)old.rlim_max);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(err_set_returns_negative_code_and_formats),
		cmocka_unit_test(buf_grows_and_respects_cap),
		cmocka_unit_test(parse_long_checks_range_and_junk),
		cmocka_unit_test(parse_double_rejects_nan),
		cmocka_unit_test(mem_equal_ct_compares_every_byte),
		cmocka_unit_test(log_filters_by_module),
		cmocka_unit_test(nofile_raise_stops_at_the_hard_limit),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
