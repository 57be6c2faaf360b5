/* launcher/dp_fetch.h - recipes given as URLs: fetch with libcurl, then parse.
 *
 * Supported schemes: file://, https:// and http://.  https verifies the
 * server's certificate and host name against the system CA store (libcurl's
 * defaults, never turned off); http is allowed (a private mirror, a test
 * server on 127.0.0.1) but logs a warning, since anyone on the path can
 * change the recipe.  Redirects are followed (at most 5) but never from
 * https to http.  Every fetch has a size cap and a timeout.
 */
#ifndef DP_FETCH_H
#define DP_FETCH_H

#include <stddef.h>

#include "common/dp_err.h"
#include "launcher/dp_launcher.h"

#define DP_FETCH_MAX_BYTES  (4u << 20) /* default size cap: 4 MiB */
#define DP_FETCH_TIMEOUT_MS 30000      /* default timeout for the whole transfer */

/* Non-zero if @s looks like a URL ("scheme://..."), not a file name. */
int dp_fetch_is_url(const char *s);

/* Fetch @url into memory.  @max_bytes 0: DP_FETCH_MAX_BYTES; @timeout_ms 0:
 * DP_FETCH_TIMEOUT_MS.  0 with *data (NUL-terminated, caller frees) and *len
 * set, or with @err naming the URL:
 *   -EINVAL     not a file://, http:// or https:// URL
 *   -ENOENT     file:// file missing, or HTTP 404/410
 *   -E2BIG      larger than the cap
 *   -ETIMEDOUT  the timeout passed
 *   -ECONNREFUSED, -EHOSTUNREACH  server down, unknown host
 *   -EPROTO     TLS failure (certificate not trusted, wrong host name)
 *   -EIO        any other HTTP error status or transfer failure
 *   -ENOMEM */
int dp_fetch_url(const char *url, size_t max_bytes, long timeout_ms, char **data, size_t *len,
		 struct dp_err *err);

/* dp_recipe_load() for a URL: fetch (default cap and timeout), then
 * dp_recipe_load_mem() with the URL as the file name in diagnostics.
 * Errors as dp_fetch_url() and dp_recipe_load(). */
int dp_recipe_load_url(const char *url, struct dp_recipe **out, struct dp_recipe_diags *diags,
		       struct dp_err *err);

/* dp_recipe_load_url() if @path_or_url is a URL, else dp_recipe_load(). */
int dp_recipe_load_any(const char *path_or_url, struct dp_recipe **out,
		       struct dp_recipe_diags *diags, struct dp_err *err);

#endif
