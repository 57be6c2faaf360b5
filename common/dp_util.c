/* common/dp_util.c - checked parsing and string helpers. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "common/dp_util.h"

int dp_parse_long(const char *s, long lo, long hi, long *out, const char *what, struct dp_err *err)
{
	char *end = NULL;
	long v;

	if (!s || !*s)
		return dp_err_set(err, EINVAL, "%s: empty value, expected an integer", what);
	errno = 0;
	v = strtol(s, &end, 10);
	if (end == s || *end != '\0')
		return dp_err_set(err, EINVAL, "%s: '%s' is not an integer", what, s);
	if (errno == ERANGE || v < lo || v > hi)
		return dp_err_set(err, ERANGE, "%s: %s is out of range [%ld, %ld]", what, s, lo,
				  hi);
	*out = v;
	return 0;
}

int dp_parse_double(const char *s, double lo, double hi, double *out, const char *what,
		    struct dp_err *err)
{
	char *end = NULL;
	double v;

	if (!s || !*s)
		return dp_err_set(err, EINVAL, "%s: empty value, expected a number", what);
	errno = 0;
	v = strtod(s, &end);
	if (end == s || *end != '\0')
		return dp_err_set(err, EINVAL, "%s: '%s' is not a number", what, s);
	if (errno == ERANGE || !isfinite(v) || v < lo || v > hi)
		return dp_err_set(err, ERANGE, "%s: %s is out of range [%g, %g]", what, s, lo, hi);
	*out = v;
	return 0;
}

char *dp_strdup(const char *s, struct dp_err *err)
{
	char *d = strdup(s ? s : "");

	if (!d)
		dp_err_set(err, ENOMEM, "out of memory");
	return d;
}

int dp_str_endswith(const char *s, const char *suffix)
{
	size_t ls = strlen(s), lx = strlen(suffix);

	return ls >= lx && memcmp(s + ls - lx, suffix, lx) == 0;
}

int dp_mem_equal_ct(const void *a, const void *b, size_t n)
{
	const unsigned char *x = a, *y = b;
	volatile unsigned char diff = 0;

	/* no early exit: every byte is looked at whatever the first mismatch */
	for (size_t i = 0; i < n; i++)
		diff |= (unsigned char)(x[i] ^ y[i]);
	return diff == 0;
}

long dp_nofile_raise(size_t need)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return -errno;
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
		rl.rlim_cur =
			rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need ? need : rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			return -errno;
	}
	return rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > LONG_MAX ? LONG_MAX
								      : (long)rl.rlim_cur;
}
