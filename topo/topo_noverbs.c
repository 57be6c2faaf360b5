/* topo/topo_noverbs.c - the verbs source when dpctl is built without
 * libibverbs: it declines, so discovery uses sysfs alone. */
#include <errno.h>

#include "topo/topo_int.h"
#include "common/dp_banned.h"

static int probe_noverbs(const struct dp_topo_cfg *cfg)
{
	(void)cfg;
	return -ENOSYS;
}

static int load_noverbs(struct dp_topo *t, const struct topo_src_ctx *ctx, struct dp_err *err)
{
	(void)t;
	(void)ctx;
	return dp_err_set(err, ENOSYS, "dpctl was built without verbs");
}

const struct dp_topo_source topo_src_verbs = {
	.name = "verbs",
	.flags = TOPO_SRC_LIVE,
	.detect = topo_src_no_detect,
	.probe = probe_noverbs,
	.load = load_noverbs,
};
