/* common/dp_err.h - error reporting: negative errno plus a message buffer.
 *
 * Every fallible library call returns 0 or a negative errno and takes an
 * optional last argument `struct dp_err *err` (NULL allowed).  On failure the
 * callee fills err->msg with one line: a module prefix, lower case, what
 * failed first, names quoted, no full stop, e.g.
 *   "recipe: cannot open 'x.yaml': No such file or directory"
 * The struct is caller-owned (usually on the stack); nothing to release.
 */
#ifndef DP_ERR_H
#define DP_ERR_H

#include <stdarg.h>
#include <stddef.h>

#define DP_ERR_MSG_MAX 1024

struct dp_err {
	int code;		  /* positive errno of the last failure, 0 if none */
	char msg[DP_ERR_MSG_MAX]; /* NUL-terminated message, truncated if too long */
};

/* Record @code (a positive errno) and a printf-style message in @err (if not
 * NULL).  Returns -code so callers can write `return dp_err_set(err, ...)`. */
int dp_err_set(struct dp_err *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int dp_err_vset(struct dp_err *err, int code, const char *fmt, va_list ap)
	__attribute__((format(printf, 3, 0)));

/* Prepend "@prefix: " context to an existing message (if err is not NULL and
 * holds one).  Returns -err->code (or -EIO if err is NULL). */
int dp_err_prefix(struct dp_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Reset @err to "no error". NULL is a no-op. */
void dp_err_clear(struct dp_err *err);

#endif
