/* common/dp_util.h - small helpers: array size, container_of, checked number
 * parsing (instead of atoi) and string duplication that reports ENOMEM. */
#ifndef DP_UTIL_H
#define DP_UTIL_H

#include <stddef.h>

#include "common/dp_err.h"

#define DP_ARRAY_SIZE(a)		   (sizeof(a) / sizeof((a)[0]))
#define dp_container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* Parse all of @s as a base-10 integer in [lo, hi].  0 and *out set, or
 * -EINVAL (not a number, trailing junk) / -ERANGE with @err naming @what. */
int dp_parse_long(const char *s, long lo, long hi, long *out, const char *what, struct dp_err *err);

/* Parse all of @s as a finite double in [lo, hi]; errors as above. */
int dp_parse_double(const char *s, double lo, double hi, double *out, const char *what,
		    struct dp_err *err);

/* strdup() that fills @err on ENOMEM.  Caller frees; NULL on failure. */
char *dp_strdup(const char *s, struct dp_err *err);

/* 1 if the @n bytes at @a and @b are equal, else 0, in a time that does
 * not depend on where they differ (secrets: job tokens). */
int dp_mem_equal_ct(const void *a, const void *b, size_t n);

/* Non-zero if @s ends with @suffix. */
int dp_str_endswith(const char *s, const char *suffix);

/* Raise this process's soft open-file limit (RLIMIT_NOFILE) to @need, or
 * as far toward it as the hard limit allows; never lowers it.  Returns the
 * soft limit now (>= @need: enough), or -errno.  For the launcher's
 * controller and relays: a socket per rank and host, thousands of them,
 * where the usual soft limit is 1024. */
long dp_nofile_raise(size_t need);

#endif
