/* worker/preflight.c - what a worker measures for the pre-flight gate
 * (launcher/dp_preflight.h).  Gathered once before connecting; the clock is
 * stamped by the control-plane client when the controller probes, so the
 * controller can bound the offset by the probe's round trip.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>

#include "common/dp_util.h"
#include "launcher/dp_preflight.h"
#include "topo/dp_topo.h"
#include "common/dp_banned.h"

#ifndef DP_VERSION
#define DP_VERSION "0.0.0-dev"
#endif

/* statvfs the directory, or its nearest existing ancestor (a checkpoint dir
 * that the run will create). */
static int free_bytes(const char *dir, char *where, size_t len, uint64_t *out)
{
	char path[PATH_MAX];
	struct statvfs sv;

	(void)snprintf(path, sizeof(path), "%s", dir && *dir ? dir : ".");
	for (;;) {
		char *slash;

		if (statvfs(path, &sv) == 0) {
			if (snprintf(where, len, "%s", path) >= (int)len)
				where[len - 1] = '\0';
			*out = (uint64_t)sv.f_bavail * (uint64_t)sv.f_frsize;
			return 0;
		}
		if (errno != ENOENT)
			return -errno;
		slash = strrchr(path, '/');
		if (!slash) {
			(void)snprintf(path, sizeof(path), ".");
			continue;
		}
		if (slash == path)
			slash[1] = '\0';
		else
			*slash = '\0';
	}
}

void dp_preflight_gather(unsigned checks, const char *ckpt_dir, struct dp_ctl_preflight *out)
{
	const char *v = getenv("DP_TEST_VERSION");

	memset(out, 0, sizeof(*out));
	out->checks = checks & DP_PF_ALL;
	out->gpus = -1;
	out->nics = -1;
	(void)snprintf(out->version, sizeof(out->version), "%s", v && *v ? v : DP_VERSION);
	if (checks & (DP_PF_GPUS | DP_PF_NICS | DP_PF_TOPOLOGY)) {
		struct dp_topo *t = NULL;
		struct dp_err e = { 0 };

		if (dp_topo_discover(NULL, &t, &e) == 0) {
			dp_preflight_summarize(t, checks, out);
			dp_topo_free(t);
		} else {
			(void)snprintf(out->error, sizeof(out->error), "%.255s", e.msg);
		}
	}
	if (checks & DP_PF_DISK) {
		int rc = free_bytes(ckpt_dir, out->disk_path, sizeof(out->disk_path),
				    &out->disk_free);

		if (rc)
			(void)snprintf(out->error, sizeof(out->error),
				       "preflight: cannot measure free space at '%s': %s",
				       ckpt_dir ? ckpt_dir : ".", strerror(-rc));
	}
}

void dp_preflight_stamp(struct dp_ctl_preflight *r)
{
	const char *skew = getenv("DP_TEST_CLOCK_SKEW_S");
	struct timespec ts;
	double s = 0;

	(void)clock_gettime(CLOCK_REALTIME, &ts);
	if (skew && dp_parse_double(skew, -1e6, 1e6, &s, "DP_TEST_CLOCK_SKEW_S", NULL) != 0)
		s = 0;
	r->clock = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9 + s;
}
