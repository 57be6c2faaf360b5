/* launcher/curl_int.h - libcurl helpers shared by notify.c, metrics.c and fetch.c. */
#ifndef DP_CURL_INT_H
#define DP_CURL_INT_H

#include <stddef.h>

#include <curl/curl.h>

#include "common/dp_err.h"

/* curl_global_init() once per process (thread-safe).  0, or -EIO with @err set. */
int dp_curl_init(struct dp_err *err);

/* A negative errno for a failed transfer: -ETIMEDOUT, -ECONNREFUSED,
 * -EHOSTUNREACH, -ENOENT (file:// not found), -E2BIG (size cap), -EPROTO
 * (TLS), -ENOMEM, else -EIO. */
int dp_curl_errno(CURLcode c);

/* A write callback that discards the response body (curl's default would
 * print it on stdout). */
size_t dp_curl_discard(const char *ptr, size_t size, size_t nmemb, void *user);

/* Milliseconds on the monotonic clock. */
long long dp_curl_now_ms(void);

#endif
