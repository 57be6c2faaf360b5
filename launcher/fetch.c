/* launcher/fetch.c - fetch a recipe (or any small text) from a URL with
 * libcurl, and the libcurl helpers shared with notify.c and metrics.c. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "common/dp_buf.h"
#include "common/dp_log.h"
#include "launcher/curl_int.h"
#include "launcher/dp_fetch.h"
#include "common/dp_banned.h"

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;

static void curl_init_once(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int dp_curl_init(struct dp_err *err)
{
	(void)pthread_once(&curl_once, curl_init_once);
	if (curl_init_rc != CURLE_OK)
		return dp_err_set(err, EIO, "curl: cannot initialise libcurl: %s",
				  curl_easy_strerror(curl_init_rc));
	return 0;
}

int dp_curl_errno(CURLcode c)
{
	switch (c) {
	case CURLE_OK:
		return 0;
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_COULDNT_CONNECT:
		return -ECONNREFUSED;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return -EHOSTUNREACH;
	case CURLE_FILE_COULDNT_READ_FILE:
		return -ENOENT;
	case CURLE_FILESIZE_EXCEEDED:
		return -E2BIG;
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CACERT_BADFILE:
		return -EPROTO;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	default:
		return -EIO;
	}
}

size_t dp_curl_discard(const char *ptr, size_t size, size_t nmemb, void *user)
{
	(void)ptr;
	(void)user;
	return size * nmemb;
}

long long dp_curl_now_ms(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int dp_fetch_is_url(const char *s)
{
	size_t n = strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-");

	return n > 0 && strncmp(s + n, "://", 3) == 0;
}

struct sink {
	struct dp_buf buf;
	int over; /* the cap was hit */
};

static size_t collect(char *ptr, size_t size, size_t nmemb, void *user)
{
	struct sink *s = user;
	int rc = dp_buf_add(&s->buf, ptr, size * nmemb);

	if (rc == -E2BIG)
		s->over = 1;
	return rc ? 0 : size * nmemb; /* short count: curl aborts with CURLE_WRITE_ERROR */
}

int dp_fetch_url(const char *url, size_t max_bytes, long timeout_ms, char **data, size_t *len,
		 struct dp_err *err)
{
	struct sink s = { .over = 0 };
	char errbuf[CURL_ERROR_SIZE] = "";
	int is_https = strncmp(url, "https://", 8) == 0;
	int is_http = strncmp(url, "http://", 7) == 0;
	int is_file = strncmp(url, "file://", 7) == 0;
	long status = 0;
	CURLcode res;
	CURL *e;
	int rc, ok = 1;

	if (!is_https && !is_http && !is_file)
		return dp_err_set(
			err, EINVAL,
			"fetch: '%s': only file://, https:// and http:// URLs are supported", url);
	if (is_file && url[7] != '/')
		return dp_err_set(
			err, EINVAL,
			"fetch: '%s': a file:// URL needs an absolute path (file:///path)", url);
	if (is_http)
		dp_log(DP_LOG_WARN, "fetch",
		       "'%s' is fetched over plain http: the recipe is not protected in transit",
		       url);
	max_bytes = max_bytes ? max_bytes : DP_FETCH_MAX_BYTES;
	timeout_ms = timeout_ms > 0 ? timeout_ms : DP_FETCH_TIMEOUT_MS;
	rc = dp_curl_init(err);
	if (rc)
		return rc;
	e = curl_easy_init();
	if (!e)
		return dp_err_set(err, ENOMEM, "fetch: out of memory");
	dp_buf_init(&s.buf, max_bytes);
	ok &= curl_easy_setopt(e, CURLOPT_URL, url) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "file,http,https") == CURLE_OK;
	/* a redirect may never leave TLS once there, nor reach file:// */
	ok &= curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, is_https ? "https" : "http,https") ==
	      CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_MAXREDIRS, 5L) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)max_bytes) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_USERAGENT, "dpctl/" DP_VERSION) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, collect) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_WRITEDATA, &s) == CURLE_OK;
	ok &= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf) == CURLE_OK;
	if (!ok) {
		rc = dp_err_set(err, ENOMEM, "fetch: out of memory");
		goto out;
	}
	res = curl_easy_perform(e);
	(void)curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
	if (s.over || res == CURLE_FILESIZE_EXCEEDED) {
		rc = dp_err_set(err, E2BIG, "fetch: '%s' is larger than %zu bytes", url, max_bytes);
		goto out;
	}
	if (res != CURLE_OK) {
		rc = dp_curl_errno(res);
		rc = dp_err_set(err, -rc, "fetch: cannot fetch '%s': %s", url,
				errbuf[0] ? errbuf : curl_easy_strerror(res));
		goto out;
	}
	if (!is_file && (status < 200 || status > 299)) {
		rc = dp_err_set(err, status == 404 || status == 410 ? ENOENT : EIO,
				"fetch: cannot fetch '%s': HTTP %ld", url, status);
		goto out;
	}
	*data = dp_buf_detach(&s.buf, len);
	if (!*data) {
		*data = strdup("");
		if (!*data) {
			rc = dp_err_set(err, ENOMEM, "fetch: out of memory");
			goto out;
		}
		*len = 0;
	}
	rc = 0;
out:
	dp_buf_release(&s.buf);
	curl_easy_cleanup(e);
	return rc;
}

int dp_recipe_load_url(const char *url, struct dp_recipe **out, struct dp_recipe_diags *diags,
		       struct dp_err *err)
{
	char *text = NULL;
	size_t len = 0;
	int rc;

	rc = dp_fetch_url(url, 0, 0, &text, &len, err);
	if (rc || !text)
		return rc ? rc : dp_err_set(err, EIO, "fetch: '%s': no data", url);
	if (memchr(text, '\0', len)) {
		rc = dp_err_set(err, EINVAL, "recipe: '%s' is not a text file (NUL byte)", url);
		goto out;
	}
	rc = dp_recipe_load_mem(url, text, len, out, diags, err);
out:
	free(text);
	return rc;
}

int dp_recipe_load_any(const char *path_or_url, struct dp_recipe **out,
		       struct dp_recipe_diags *diags, struct dp_err *err)
{
	if (dp_fetch_is_url(path_or_url))
		return dp_recipe_load_url(path_or_url, out, diags, err);
	return dp_recipe_load(path_or_url, out, diags, err);
}
