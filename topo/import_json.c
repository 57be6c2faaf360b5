/* topo/import_json.c - importer for our own JSON model: the output of
 * `dpworker --discover --json` / `dpctl topo discover --json`, one node per
 * file, so the controller can validate what it collected from every node.
 *
 * The JSON has no PCIe tree; each GPU's distance to the NICs of its "nics"
 * list is restored from "dist", so the pairing comes out as on the node. */
#include <errno.h>
#include <string.h>

#include <jansson.h>

#include "topo/topo_int.h"
#include "common/dp_banned.h"

static const char *jstr(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);

	return json_is_string(v) ? json_string_value(v) : "";
}

static int jint(json_t *o, const char *k, int dflt)
{
	json_t *v = json_object_get(o, k);

	if (!json_is_integer(v))
		return dflt;
	if (json_integer_value(v) < -1 || json_integer_value(v) > 1000000)
		return dflt;
	return (int)json_integer_value(v);
}

static enum dp_topo_dist dist_of(const char *s)
{
	for (int d = DP_TOPO_DIST_PIX; d < DP_TOPO_DIST_UNKNOWN; d++)
		if (strcmp(s, dp_topo_dist_name((enum dp_topo_dist)d)) == 0)
			return (enum dp_topo_dist)d;
	return DP_TOPO_DIST_UNKNOWN;
}

static int bad(struct dp_err *err, const char *path, const char *what)
{
	return topo_parse_err(err, path, 0, "%s", what);
}

static int load_nics(struct dp_topo *t, json_t *arr, const char *path, struct dp_err *err)
{
	size_t i;
	json_t *o;

	if (!json_is_array(arr))
		return bad(err, path, "\"nics\" is not an array");
	json_array_foreach(arr, i, o)
	{
		struct topo_nic *n;
		json_t *r;

		if (!json_is_object(o))
			return bad(err, path, "a NIC is not an object");
		n = topo_nic_add(t, err);
		if (!n)
			return -ENOMEM;
		if (strncmp(jstr(o, "name"), "nic", 3) != 0 || jstr(o, "name")[3] == '_')
			topo_strlcpy(n->pub.name, jstr(o, "name"), sizeof(n->pub.name));
		topo_strlcpy(n->pub.netdev, jstr(o, "netdev"), sizeof(n->pub.netdev));
		if (topo_pci_norm(jstr(o, "pci"), n->pub.pci))
			n->pub.pci[0] = '\0';
		topo_strlcpy(n->pub.model, jstr(o, "model"), sizeof(n->pub.model));
		n->pub.numa = jint(o, "numa", -1);
		n->pub.port = jint(o, "port", 1);
		n->pub.link_layer = topo_parse_link_layer(jstr(o, "link_layer"));
		n->pub.state = topo_parse_state(jstr(o, "state"));
		r = json_object_get(o, "rate_gbps");
		if (json_is_number(r) && json_number_value(r) > 0 && json_number_value(r) < 1e6)
			n->pub.rate_gbps = json_number_value(r);
		r = json_object_get(o, "rdma");
		n->pub.rdma = json_is_boolean(r) ? json_is_true(r) : -1;
		n->pub.bond = json_is_true(json_object_get(o, "bond"));
		/* the node listed its RDMA ports (sysfs, verbs) */
		n->listed = n->pub.rdma == 1;
	}
	return 0;
}

static int nic_by_label(struct dp_topo *t, const char *label)
{
	for (int i = 0; i < t->nnics; i++) {
		char l[DP_TOPO_NAME_LEN + 8];

		if (t->nics[i].pub.name[0])
			topo_strlcpy(l, t->nics[i].pub.name, sizeof(l));
		else
			(void)snprintf(l, sizeof(l), "nic@%s", t->nics[i].pub.pci);
		if (strcmp(l, label) == 0)
			return i;
	}
	return -1;
}

static int load_gpus(struct dp_topo *t, json_t *arr, const char *path, struct dp_err *err)
{
	size_t i;
	json_t *o;

	if (!json_is_array(arr))
		return bad(err, path, "\"gpus\" is not an array");
	json_array_foreach(arr, i, o)
	{
		enum dp_topo_dist d;
		struct topo_gpu *g;
		size_t k;
		json_t *x;
		int rc;

		if (!json_is_object(o))
			return bad(err, path, "a GPU is not an object");
		g = topo_gpu_add(t, err);
		if (!g)
			return -ENOMEM;
		if (topo_pci_norm(jstr(o, "pci"), g->pub.pci))
			g->pub.pci[0] = '\0';
		topo_strlcpy(g->pub.model, jstr(o, "model"), sizeof(g->pub.model));
		g->pub.numa = jint(o, "numa", -1);
		json_array_foreach(json_object_get(o, "nvlink_peers"), k, x)
		{
			char target[DP_TOPO_PCI_LEN];

			if (topo_pci_norm(jstr(x, "target"), target))
				target[0] = '\0';
			rc = topo_gpu_add_peer(g, target, jint(x, "count", 1),
					       json_is_true(json_object_get(x, "nvswitch")), err);
			if (rc)
				return rc;
		}
		if (!g->pub.npeers)
			g->pub.nvlinks = jint(o, "nvlinks", 0);
		d = dist_of(jstr(o, "dist"));
		json_array_foreach(json_object_get(o, "nics"), k, x)
		{
			int n = json_is_string(x) ? nic_by_label(t, json_string_value(x)) : -1;

			if (n >= 0 && d != DP_TOPO_DIST_UNKNOWN) {
				rc = topo_gpu_set_mdist(g, n, d, err);
				if (rc)
					return rc;
			}
		}
	}
	return 0;
}

static int load_json(struct dp_topo *t, const struct topo_src_ctx *ctx, struct dp_err *err)
{
	json_error_t je;
	json_t *root, *node, *arr;
	size_t i;
	int rc = 0;

	root = json_loadb(ctx->buf, ctx->len, JSON_REJECT_DUPLICATES, &je);
	if (!root)
		return topo_parse_err(err, ctx->path, je.line > 0 ? je.line : 1, "%s", je.text);
	node = root;
	arr = json_object_get(root, "nodes");
	if (arr) {
		if (!json_is_array(arr) || json_array_size(arr) != 1) {
			rc = bad(err, ctx->path, "\"nodes\" must hold exactly one node per file");
			goto out;
		}
		node = json_array_get(arr, 0);
	}
	if (!json_is_object(node)) {
		rc = bad(err, ctx->path, "expected a node object");
		goto out;
	}
	topo_strlcpy(t->hostname, jstr(node, "hostname"), sizeof(t->hostname));
	if (json_object_get(node, "nics"))
		rc = load_nics(t, json_object_get(node, "nics"), ctx->path, err);
	if (!rc && json_object_get(node, "gpus"))
		rc = load_gpus(t, json_object_get(node, "gpus"), ctx->path, err);
	json_array_foreach(json_object_get(node, "numa"), i, arr)
	{
		struct dp_topo_numa *m;

		if (rc)
			break;
		m = topo_numa_get(t, jint(arr, "id", 0) < 0 ? 0 : jint(arr, "id", 0), err);
		if (!m) {
			rc = -ENOMEM;
			break;
		}
		topo_strlcpy(m->cpus, jstr(arr, "cpus"), sizeof(m->cpus));
		m->ncpus = jint(arr, "ncpus", -1);
	}
	if (!rc) {
		t->nvswitches = jint(node, "nvswitches", 0);
		for (int n = 0; n < t->nnics; n++)
			if (t->nics[n].listed) {
				t->port_list = 1;
				topo_strlcpy(t->port_list_src, "the node",
					     sizeof(t->port_list_src));
			}
		topo_add_source(t, "dpctl-json");
	}
out:
	json_decref(root);
	return rc;
}

static int detect_json(const char *buf, size_t len)
{
	size_t i = 0;

	while (i < len && (buf[i] == ' ' || buf[i] == '\n' || buf[i] == '\t' || buf[i] == '\r'))
		i++;
	return i < len && buf[i] == '{' ? 80 : 0;
}

const struct dp_topo_source topo_src_json = {
	.name = "dpctl-json",
	.flags = TOPO_SRC_FILE,
	.detect = detect_json,
	.probe = topo_src_no_probe,
	.load = load_json,
};
