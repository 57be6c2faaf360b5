/* topo/topo_verbs.c - RDMA port attributes from libibverbs (state, width x
 * speed, link layer), filling what sysfs left unknown.  Built only with
 * WITH_VERBS; topo_noverbs.c declines otherwise. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <infiniband/verbs.h>

#include "topo/topo_int.h"
#include "common/dp_banned.h"

static double width_lanes(uint8_t w)
{
	switch (w) {
	case 1:
		return 1;
	case 2:
		return 4;
	case 4:
		return 8;
	case 8:
		return 12;
	case 16:
		return 2;
	default:
		return 0;
	}
}

static double lane_gbps(uint8_t s)
{
	switch (s) {
	case 1:
		return 2.5;
	case 2:
		return 5;
	case 4:
	case 8:
		return 10;
	case 16:
		return 14;
	case 32:
		return 25;
	case 64:
		return 50;
	case 128:
		return 100;
	default:
		return 0;
	}
}

static int load_verbs(struct dp_topo *t, const struct topo_src_ctx *ctx, struct dp_err *err)
{
	struct ibv_device **list;
	int num = 0, rc = 0;

	(void)ctx;
	list = ibv_get_device_list(&num);
	if (!list)
		return -ENODEV;
	for (int i = 0; i < num && !rc; i++) {
		const char *name = ibv_get_device_name(list[i]);
		struct ibv_context *c;
		struct ibv_port_attr pa;
		struct topo_nic *n;

		if (!name)
			continue;
		c = ibv_open_device(list[i]);
		if (!c)
			continue;
		memset(&pa, 0, sizeof(pa));
		if (ibv_query_port(c, 1, &pa) == 0) {
			n = topo_nic_by_name(t, name);
			if (!n) {
				n = topo_nic_add(t, err);
				if (!n)
					rc = -ENOMEM;
				else
					topo_strlcpy(n->pub.name, name, sizeof(n->pub.name));
			}
			if (n) {
				n->pub.rdma = 1;
				n->listed = 1;
				if (!n->pub.state)
					n->pub.state =
						pa.state == IBV_PORT_ACTIVE ? DP_TOPO_STATE_ACTIVE
						: pa.state == IBV_PORT_DOWN ? DP_TOPO_STATE_DOWN
									    : DP_TOPO_STATE_INIT;
				if (!n->pub.link_layer)
					n->pub.link_layer = pa.link_layer == IBV_LINK_LAYER_ETHERNET
								    ? DP_TOPO_LL_ETH
								    : DP_TOPO_LL_IB;
				if (!n->pub.rate_gbps)
					n->pub.rate_gbps = width_lanes(pa.active_width) *
							   lane_gbps(pa.active_speed);
			}
		}
		ibv_close_device(c);
	}
	ibv_free_device_list(list);
	if (!rc && num > 0)
		topo_add_source(t, "verbs");
	return rc ? rc : (num > 0 ? 0 : -ENODEV);
}

static int probe_verbs(const struct dp_topo_cfg *cfg)
{
	const char *root = cfg && cfg->sysfs_root ? cfg->sysfs_root : getenv("DP_SYSFS_ROOT");

	/* fixture roots describe another machine */
	return root && *root && strcmp(root, "/") != 0 ? -ENODEV : 0;
}

const struct dp_topo_source topo_src_verbs = {
	.name = "verbs",
	.flags = TOPO_SRC_LIVE,
	.detect = topo_src_no_detect,
	.probe = probe_verbs,
	.load = load_verbs,
};
