/* common/dp_err.c - error message buffer helpers. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/dp_err.h"

int dp_err_vset(struct dp_err *err, int code, const char *fmt, va_list ap)
{
	if (code <= 0)
		code = EIO; /* a failure must never look like success */
	if (err) {
		err->code = code;
		(void)vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	}
	return -code;
}

int dp_err_set(struct dp_err *err, int code, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = dp_err_vset(err, code, fmt, ap);
	va_end(ap);
	return rc;
}

int dp_err_prefix(struct dp_err *err, const char *fmt, ...)
{
	char both[2 * DP_ERR_MSG_MAX + 2];
	size_t n;
	va_list ap;
	int len;

	if (!err)
		return -EIO;
	va_start(ap, fmt);
	len = vsnprintf(both, DP_ERR_MSG_MAX, fmt, ap);
	va_end(ap);
	n = len < 0 ? 0 : strlen(both);
	(void)snprintf(both + n, sizeof(both) - n, ": %s", err->msg);
	/* keep the head and as much of the old message as fits */
	n = strlen(both);
	if (n >= sizeof(err->msg))
		n = sizeof(err->msg) - 1;
	memcpy(err->msg, both, n);
	err->msg[n] = '\0';
	return -(err->code ? err->code : EIO);
}

void dp_err_clear(struct dp_err *err)
{
	if (!err)
		return;
	err->code = 0;
	err->msg[0] = '\0';
}
