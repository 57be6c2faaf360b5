/* launcher/ctl_backend.c - the table of launch backends, picking one, and
 * checking a launch spec. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "launcher/ctl_launch.h"
#include "common/dp_banned.h"

/* Best first by probe priority (slurm only probes inside an allocation). */
const struct dp_launch_backend *const dp_launch_backends[] = {
	&dp_launch_slurm,
	&dp_launch_local,
	&dp_launch_ssh,
	NULL,
};

const struct dp_launch_backend *dp_launch_backend_pick(const char *want, struct dp_err *err)
{
	const struct dp_launch_backend *best = NULL;
	int best_prio = -1;

	if (!want || !*want)
		want = getenv("DP_LAUNCH");
	if (want && !*want)
		want = NULL;
	for (int i = 0; dp_launch_backends[i]; i++) {
		const struct dp_launch_backend *b = dp_launch_backends[i];
		int prio = 0;

		if (want && strcmp(want, b->name) != 0)
			continue;
		if (b->probe(&prio) != 0)
			continue;
		if (prio > best_prio) {
			best = b;
			best_prio = prio;
		}
	}
	if (!best)
		(void)dp_err_set(err, ENODEV, "launch: no usable launch backend%s%s%s",
				 want ? " named '" : "", want ? want : "", want ? "'" : "");
	return best;
}

int dp_launch_spec_check(const struct dp_launch_spec *spec, struct dp_err *err)
{
	unsigned char *seen;
	int rc = 0;

	if (!spec || spec->nranks == 0)
		return dp_err_set(err, EINVAL, "launch: the launch spec has no ranks");
	if (spec->nranks > 1000000)
		return dp_err_set(err, EINVAL, "launch: %zu ranks is too many", spec->nranks);
	seen = calloc(spec->nranks, 1);
	if (!seen)
		return dp_err_set(err, ENOMEM, "launch: out of memory");
	for (size_t i = 0; i < spec->nranks && !rc; i++) {
		const struct dp_launch_rank *r = &spec->ranks[i];

		if (r->rank < 0 || (size_t)r->rank >= spec->nranks)
			rc = dp_err_set(err, EINVAL, "launch: rank %d is outside 0..%zu", r->rank,
					spec->nranks - 1);
		else if (seen[r->rank]++)
			rc = dp_err_set(err, EINVAL, "launch: rank %d appears twice", r->rank);
		else if (!r->argv || !r->argv[0] || !r->argv[0][0])
			rc = dp_err_set(err, EINVAL, "launch: rank %d has no program", r->rank);
		else if (!r->host || !r->host[0])
			rc = dp_err_set(err, EINVAL, "launch: rank %d has no host", r->rank);
	}
	free(seen);
	return rc;
}
