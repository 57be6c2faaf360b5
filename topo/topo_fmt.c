/* topo/topo_fmt.c - the readable table and the JSON model of a node. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "topo/topo_int.h"
#include "common/dp_banned.h"

static void rate_str(double gbps, char *out, size_t len)
{
	if (gbps <= 0)
		(void)snprintf(out, len, "-");
	else
		(void)snprintf(out, len, "%g", gbps);
}

int dp_topo_format_text(const struct dp_topo *t, struct dp_buf *b)
{
	int rc = 0;

	rc |= dp_buf_addf(b, "node %s  (sources: %s)\n", t->hostname[0] ? t->hostname : "-",
			  t->sources[0] ? t->sources : "-");
	rc |= dp_buf_addf(b, "%d GPU%s, %d NIC%s, %d NUMA node%s, %d NVSwitch%s\n", t->ngpus,
			  t->ngpus == 1 ? "" : "s", t->nnics, t->nnics == 1 ? "" : "s", t->nnuma,
			  t->nnuma == 1 ? "" : "s", t->nvswitches, t->nvswitches == 1 ? "" : "es");
	if (!t->ngpus) {
		rc |= dp_buf_adds(b, "no GPU found\n");
	} else {
		rc |= dp_buf_addf(b, "\n%-4s %-13s %-5s %-22s %-5s %-5s %-7s %s\n", "GPU", "PCI",
				  "NUMA", "NIC", "DIST", "HOPS", "NVLINK", "MODEL");
		for (int i = 0; i < t->ngpus; i++) {
			const struct dp_topo_gpu *g = &t->gpus[i].pub;
			char numa[16], hops[16], nv[16];

			(void)snprintf(numa, sizeof(numa), "%d", g->numa);
			(void)snprintf(hops, sizeof(hops), "%d", g->hops);
			(void)snprintf(nv, sizeof(nv), "%d%s", g->nvlinks,
				       g->nvswitch ? "(sw)" : "");
			rc |= dp_buf_addf(b, "%-4d %-13s %-5s %-22s %-5s %-5s %-7s %s\n", g->index,
					  g->pci[0] ? g->pci : "-", g->numa >= 0 ? numa : "-",
					  g->nic >= 0 ? t->nics[g->nic].label : "-",
					  g->nic >= 0 ? dp_topo_dist_name(g->dist) : "-",
					  g->hops >= 0 ? hops : "-", g->nvlinks ? nv : "-",
					  g->model[0] ? g->model : "-");
		}
	}
	{
		int rdma = 0;

		for (int i = 0; i < t->nnics; i++)
			rdma += t->nics[i].pub.rdma != 0;
		if (!rdma)
			rc |= dp_buf_adds(b, "no RDMA NIC (InfiniBand/RoCE) found\n");
	}
	if (t->nnics) {
		rc |= dp_buf_addf(b, "\n%-22s %-13s %-5s %-10s %-5s %-7s %-5s %s\n", "NIC", "PCI",
				  "NUMA", "LINK", "GB/S", "STATE", "GPUS", "NOTE");
		for (int i = 0; i < t->nnics; i++) {
			const struct dp_topo_nic *n = &t->nics[i].pub;
			char numa[16], rate[16], gpus[16];
			const char *note = n->usable				? ""
					   : n->bond				? "bond, not a rail"
					   : n->rdma == 0			? "no RDMA"
					   : t->port_list && !t->nics[i].listed ? "not an RDMA port"
										: "not usable";

			(void)snprintf(numa, sizeof(numa), "%d", n->numa);
			(void)snprintf(gpus, sizeof(gpus), "%d", n->ngpus);
			rate_str(n->rate_gbps, rate, sizeof(rate));
			rc |= dp_buf_addf(
				b, "%-22s %-13s %-5s %-10s %-5s %-7s %-5s %s\n", t->nics[i].label,
				n->pci[0] ? n->pci : "-", n->numa >= 0 ? numa : "-",
				n->link_layer ? dp_topo_link_layer_name(n->link_layer) : "-", rate,
				n->state ? dp_topo_state_name(n->state) : "-", gpus, note);
		}
	}
	if (t->nnuma) {
		rc |= dp_buf_addf(b, "\n%-5s %s\n", "NUMA", "CPUS");
		for (int i = 0; i < t->nnuma; i++)
			rc |= dp_buf_addf(b, "%-5d %s\n", t->numa[i].id,
					  t->numa[i].cpus[0] ? t->numa[i].cpus : "-");
	}
	if (t->nissues) {
		rc |= dp_buf_adds(b, "\n");
		for (int i = 0; i < t->nissues; i++)
			rc |= dp_buf_addf(b, "%s: %s\n",
					  t->issues[i].severity == DP_TOPO_WARN ? "warning"
										: "note",
					  t->issues[i].msg);
	}
	return rc ? -ENOMEM : 0;
}

/* json_object_set_new with NULL-safe values; returns non-zero on failure */
static int set(json_t *o, const char *k, json_t *v)
{
	return !v || json_object_set_new(o, k, v);
}

static json_t *str_or_null(const char *s)
{
	return s && *s ? json_string(s) : json_null();
}

static json_t *int_or_null(int v)
{
	return v >= 0 ? json_integer(v) : json_null();
}

static json_t *rate_json(double gbps)
{
	if (gbps <= 0)
		return json_null();
	if (gbps == (double)(long long)gbps)
		return json_integer((json_int_t)gbps);
	return json_real(gbps);
}

static json_t *gpu_json(const struct dp_topo *t, const struct dp_topo_gpu *g)
{
	json_t *o = json_object(), *peers = json_array(), *near = json_array();
	int rc = !o || !peers || !near;

	for (int p = 0; !rc && p < g->npeers; p++) {
		json_t *l = json_object();

		rc |= !l || set(l, "target", str_or_null(g->peers[p].target));
		rc |= set(l, "count", json_integer(g->peers[p].count));
		rc |= set(l, "nvswitch", json_boolean(g->peers[p].is_switch));
		rc |= json_array_append_new(peers, l);
	}
	for (int i = 0; !rc && i < g->nnear; i++)
		rc |= json_array_append_new(near, json_string(t->nics[g->near[i]].label));
	rc |= set(o, "index", json_integer(g->index));
	rc |= set(o, "pci", str_or_null(g->pci));
	rc |= set(o, "numa", int_or_null(g->numa));
	rc |= set(o, "model", str_or_null(g->model));
	rc |= set(o, "nvlinks", json_integer(g->nvlinks));
	rc |= set(o, "nvswitch", json_boolean(g->nvswitch));
	rc |= set(o, "nvlink_peers", peers);
	rc |= set(o, "nic", g->nic >= 0 ? json_string(t->nics[g->nic].label) : json_null());
	rc |= set(o, "nics", near);
	rc |= set(o, "dist", g->nic >= 0 ? json_string(dp_topo_dist_name(g->dist)) : json_null());
	rc |= set(o, "hops", int_or_null(g->hops));
	if (rc) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static json_t *nic_json(const struct dp_topo *t, int i)
{
	const struct dp_topo_nic *n = &t->nics[i].pub;
	json_t *o = json_object();
	int rc = !o;

	rc |= set(o, "name", json_string(t->nics[i].label));
	rc |= set(o, "netdev", str_or_null(n->netdev));
	rc |= set(o, "pci", str_or_null(n->pci));
	rc |= set(o, "numa", int_or_null(n->numa));
	rc |= set(o, "port", json_integer(n->port));
	rc |= set(o, "link_layer", str_or_null(dp_topo_link_layer_name(n->link_layer)));
	rc |= set(o, "rate_gbps", rate_json(n->rate_gbps));
	rc |= set(o, "state", str_or_null(dp_topo_state_name(n->state)));
	rc |= set(o, "model", str_or_null(n->model));
	rc |= set(o, "rdma", n->rdma < 0 ? json_null() : json_boolean(n->rdma));
	rc |= set(o, "bond", json_boolean(n->bond));
	rc |= set(o, "usable", json_boolean(n->usable));
	rc |= set(o, "gpus", json_integer(n->ngpus));
	if (rc) {
		json_decref(o);
		return NULL;
	}
	return o;
}

int dp_topo_format_json(const struct dp_topo *t, struct dp_buf *b)
{
	json_t *o = json_object(), *gpus = json_array(), *nics = json_array();
	json_t *numa = json_array(), *issues = json_array();
	char *s = NULL;
	int rc = !o || !gpus || !nics || !numa || !issues;

	for (int i = 0; !rc && i < t->ngpus; i++)
		rc |= json_array_append_new(gpus, gpu_json(t, &t->gpus[i].pub));
	for (int i = 0; !rc && i < t->nnics; i++)
		rc |= json_array_append_new(nics, nic_json(t, i));
	for (int i = 0; !rc && i < t->nnuma; i++) {
		json_t *m = json_object();

		rc |= !m || set(m, "id", json_integer(t->numa[i].id));
		rc |= set(m, "cpus", json_string(t->numa[i].cpus));
		rc |= set(m, "ncpus", int_or_null(t->numa[i].ncpus));
		rc |= json_array_append_new(numa, m);
	}
	for (int i = 0; !rc && i < t->nissues; i++) {
		json_t *m = json_object();

		rc |= !m ||
		      set(m, "severity",
			  json_string(t->issues[i].severity == DP_TOPO_WARN ? "warning" : "note"));
		rc |= set(m, "msg", json_string(t->issues[i].msg));
		rc |= json_array_append_new(issues, m);
	}
	rc |= set(o, "hostname", str_or_null(t->hostname));
	rc |= set(o, "sources", json_string(t->sources));
	rc |= set(o, "gpus", gpus);
	gpus = NULL;
	rc |= set(o, "nics", nics);
	nics = NULL;
	rc |= set(o, "numa", numa);
	numa = NULL;
	rc |= set(o, "nvswitches", json_integer(t->nvswitches));
	rc |= set(o, "issues", issues);
	issues = NULL;
	if (!rc) {
		s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
		rc = !s || dp_buf_adds(b, s);
	}
	free(s);
	json_decref(o);
	return rc ? -ENOMEM : 0;
}
