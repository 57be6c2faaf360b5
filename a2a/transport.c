/* a2a/transport.c - the transport table, how one is picked, and the
 * communicator built on the chosen one. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "a2a/a2a_int.h"
#include "common/dp_log.h"
#include "common/dp_banned.h"

/* Best first; the build drops what it cannot compile.  "loop" needs an
 * in-process fabric, so its probe() gives a negative priority: only a name
 * picks it. */
static const struct dp_a2a_transport *const transports[] = {
#ifdef DP_HAVE_VERBS
	&dp_a2a_verbs,
#endif
#ifdef DP_HAVE_CUDA
	&dp_a2a_cuda,
#endif
	&dp_a2a_tcp,   &dp_a2a_shm, &dp_a2a_loop_tp, NULL,
};

/* Built without: the stubs answer a request by name with -ENOSYS. */
static const struct dp_a2a_transport *const absent[] = {
#ifndef DP_HAVE_VERBS
	&dp_a2a_verbs,
#endif
#ifndef DP_HAVE_CUDA
	&dp_a2a_cuda,
#endif
	NULL,
};

static const struct dp_a2a_transport *const every[] = {
	&dp_a2a_verbs, &dp_a2a_cuda, &dp_a2a_tcp, &dp_a2a_shm, &dp_a2a_loop_tp, NULL,
};

static const char *names[DP_ARRAY_SIZE(transports)];

int dp_a2a_no_flush(struct dp_a2a_ep *ep, struct dp_err *err)
{
	(void)ep;
	(void)err;
	return -EOPNOTSUPP;
}

int dp_a2a_send_take_copy(struct dp_a2a_ep *ep, int peer, uint32_t tag, void *buf, size_t len,
			  struct dp_err *err)
{
	int rc = ep->tp->send(ep, peer, tag, buf, len, err);

	free(buf);
	return rc;
}

int dp_a2a_recv_any_first(struct dp_a2a_ep *ep, const int *peers, const uint32_t *tags, int n,
			  int *which, void **buf, size_t *len, struct dp_err *err)
{
	int rc;

	if (n < 1)
		return dp_err_set(err, EINVAL, "a2a: recv from no peer");
	rc = ep->tp->recv(ep, peers[0], tags[0], buf, len, err);
	if (!rc)
		*which = 0;
	return rc;
}

/* the table fixes the signature: out-params a stub never writes */
int dp_a2a_no_try_recv_any(struct dp_a2a_ep *ep, const int *peers, const uint32_t *tags, int n,
			   int *which,		    /* NOLINT(readability-non-const-parameter) */
			   void **buf, size_t *len, /* NOLINT(readability-non-const-parameter) */
			   struct dp_err *err)
{
	(void)ep;
	(void)peers;
	(void)tags;
	(void)n;
	(void)which;
	(void)buf;
	(void)len;
	(void)err;
	return -EOPNOTSUPP;
}

int dp_a2a_no_put(struct dp_a2a_ep *ep, int peer, size_t off, const void *src, size_t len,
		  struct dp_err *err)
{
	(void)ep;
	(void)peer;
	(void)off;
	(void)src;
	(void)len;
	return dp_err_set(err, EOPNOTSUPP, "a2a: transport has no one-sided put");
}

const struct dp_a2a_transport *const *dp_a2a_transport_all(void)
{
	return every;
}

const char *const *dp_a2a_transport_names(void)
{
	for (size_t i = 0; transports[i]; i++)
		names[i] = transports[i]->name;
	return names;
}

static const struct dp_a2a_transport *find(const struct dp_a2a_transport *const *list,
					   const char *name)
{
	for (size_t i = 0; list[i]; i++)
		if (strcmp(list[i]->name, name) == 0)
			return list[i];
	return NULL;
}

int dp_a2a_transport_probe(const char *name, int *prio, struct dp_err *err)
{
	const struct dp_a2a_transport *t = find(transports, name);
	int p = 0, rc;

	if (!t) {
		t = find(absent, name);
		if (t)
			return t->probe(&p, err);
		return dp_err_set(err, ENOENT, "a2a: unknown transport '%s'", name);
	}
	rc = t->probe(&p, err);
	if (rc == 0 && prio)
		*prio = p;
	return rc;
}

const struct dp_a2a_transport *dp_a2a_transport_pick(const char *want, struct dp_err *err)
{
	const struct dp_a2a_transport *best = NULL;
	int best_prio = -1;

	if (!want || !*want)
		want = getenv("DP_A2A_TRANSPORT");
	if (want && *want) {
		const struct dp_a2a_transport *t = find(transports, want);
		int p;

		if (!t)
			t = find(absent, want);
		if (!t) {
			(void)dp_err_set(err, ENOENT, "a2a: no usable transport named '%s'", want);
			return NULL;
		}
		if (t->probe(&p, err))
			return NULL;
		return t;
	}
	for (size_t i = 0; transports[i]; i++) {
		int p = 0;

		if (transports[i]->probe(&p, NULL) == 0 && p >= 0 && p > best_prio) {
			best = transports[i];
			best_prio = p;
		}
	}
	if (!best)
		(void)dp_err_set(err, ENODEV, "a2a: no usable transport");
	return best;
}

void dp_a2a_comm_cfg_init(struct dp_a2a_comm_cfg *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->listen_fd = -1;
	cfg->cuda_device = -1;
}

/* Tokens per pipelining chunk: cfg > $DP_A2A_CHUNK_BYTES > 128 KiB. */
static int chunk_rows(const struct dp_a2a_comm_cfg *c)
{
	size_t bytes = c->chunk_bytes, tb = (size_t)c->hidden * sizeof(float), rows;
	const char *env = getenv("DP_A2A_CHUNK_BYTES");

	if (!bytes && env && *env) {
		char *end = NULL;
		unsigned long long v = strtoull(env, &end, 10);

		if (end && *end == '\0' && v > 0)
			bytes = (size_t)v;
	}
	if (!bytes)
		bytes = DP_A2A_CHUNK_DEF;
	rows = bytes / tb;
	if (rows < 1)
		rows = 1;
	return rows > INT32_MAX ? INT32_MAX : (int)rows;
}

int dp_a2a_comm_open(const struct dp_a2a_comm_cfg *cfg, struct dp_a2a_comm **out,
		     struct dp_err *err)
{
	const struct dp_a2a_transport *t;
	struct dp_a2a_comm_cfg c = *cfg;
	struct dp_a2a_comm *comm;
	struct dp_a2a_ep *ep = NULL;
	int world, rc;

	if (c.nodes < 1 || c.ranks_per_node < 1 || c.hidden < 1 || c.experts < 1)
		return dp_err_set(
			err, EINVAL,
			"a2a: nodes, ranks_per_node, experts and hidden must be positive");
	world = c.nodes * c.ranks_per_node;
	if (c.experts % world)
		return dp_err_set(err, EINVAL, "a2a: %d experts do not divide over %d ranks",
				  c.experts, world);
	if (c.rank < 0 || c.rank >= world)
		return dp_err_set(err, EINVAL, "a2a: rank %d outside 0..%d", c.rank, world - 1);
	if (c.timeout_ms <= 0)
		c.timeout_ms = 30000;
	t = dp_a2a_transport_pick(c.transport, err);
	if (!t)
		return err && err->code ? -err->code : -ENODEV;
	comm = calloc(1, sizeof(*comm));
	if (!comm)
		return dp_err_set(err, ENOMEM, "a2a: out of memory");
	rc = t->open(&c, &ep, err);
	if (rc) {
		free(comm);
		return rc;
	}
	ep->tp = t;
	ep->rank = c.rank;
	ep->world = world;
	ep->rpn = c.ranks_per_node;
	ep->timeout_ms = c.timeout_ms;
	comm->ep = ep;
	comm->rank = c.rank;
	comm->nodes = c.nodes;
	comm->rpn = c.ranks_per_node;
	comm->world = world;
	comm->experts = c.experts;
	comm->epr = c.experts / world;
	comm->hidden = c.hidden;
	comm->chunk_rows = chunk_rows(&c);
	dp_log(DP_LOG_DEBUG, "a2a", "rank %d/%d open on '%s'", c.rank, world, t->name);
	*out = comm;
	return 0;
}

void dp_a2a_comm_close(struct dp_a2a_comm *c)
{
	if (!c)
		return;
	if (c->ep) {
		(void)c->ep->tp->flush(c->ep, NULL);
		c->ep->tp->close(c->ep);
	}
	free(c);
}

const char *dp_a2a_comm_transport(const struct dp_a2a_comm *c)
{
	return c->ep->tp->name;
}
