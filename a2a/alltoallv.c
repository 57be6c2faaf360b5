/* a2a/alltoallv.c - the plain all-to-all of contiguous per-rank slices
 * (dp_a2a_alltoallv), the exchange an expert-parallel executor uses when
 * its rows are already packed by owner: host memory travels as one frame
 * per peer over the comm's transport; CUDA device memory goes through the
 * cuda transport's NCCL group (dp_a2a_cuda_exchange), never through the
 * host. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "a2a/a2a_int.h"
#include "common/dp_banned.h"

#define TAG_V 0x401

static int host_alltoallv(struct dp_a2a_comm *c, const char *send, const size_t *soff,
			  const size_t *slen, char *recv, const size_t *roff, const size_t *rlen,
			  struct dp_err *err)
{
	struct dp_a2a_ep *ep = c->ep;
	int rc;

	/* sends are queued by the transport, so sending to every peer before
	 * receiving from any cannot deadlock */
	for (int j = 0; j < c->world; j++) {
		if (j == c->rank)
			continue;
		rc = ep->tp->send(ep, j, TAG_V, send + soff[j], slen[j], err);
		if (rc)
			return rc;
	}
	if (slen[c->rank] != rlen[c->rank])
		return dp_err_set(err, EINVAL,
				  "a2a: alltoallv: rank %d sends itself %zu bytes but expects %zu",
				  c->rank, slen[c->rank], rlen[c->rank]);
	if (slen[c->rank])
		memmove(recv + roff[c->rank], send + soff[c->rank], slen[c->rank]);
	for (int j = 0; j < c->world; j++) {
		void *b = NULL;
		size_t n = 0;

		if (j == c->rank)
			continue;
		rc = ep->tp->recv(ep, j, TAG_V, &b, &n, err);
		if (rc)
			return rc;
		if (n != rlen[j]) {
			free(b);
			return dp_err_set(
				err, EPROTO,
				"a2a: alltoallv: rank %d sent %zu bytes, rank %d expected %zu", j,
				n, c->rank, rlen[j]);
		}
		if (n)
			memcpy(recv + roff[j], b, n);
		free(b);
	}
	return ep->tp->flush(ep, err);
}

static int dev_alltoallv(struct dp_a2a_comm *c, const char *send, const size_t *soff,
			 const size_t *slen, char *recv, const size_t *roff, const size_t *rlen,
			 struct dp_err *err)
{
	const void **sb = calloc((size_t)c->world, sizeof(*sb));
	void **rb = calloc((size_t)c->world, sizeof(*rb));
	int rc;

	if (!sb || !rb) {
		rc = dp_err_set(err, ENOMEM, "a2a: out of memory");
		goto out;
	}
	for (int j = 0; j < c->world; j++) {
		sb[j] = send + soff[j];
		rb[j] = recv + roff[j];
	}
	rc = dp_a2a_cuda_exchange(c->ep, sb, slen, rb, rlen, err);
out:
	free(sb);
	free(rb);
	return rc;
}

int dp_a2a_alltoallv(struct dp_a2a_comm *c, const void *send, const size_t *soff,
		     const size_t *slen, void *recv, const size_t *roff, const size_t *rlen,
		     int on_device, struct dp_err *err)
{
	int rc;

	if (c->busy)
		return dp_err_set(err, EBUSY, "a2a: an exchange is already in flight");
	if (on_device && c->ep->tp != &dp_a2a_cuda)
		return dp_err_set(
			err, EINVAL,
			"a2a: alltoallv: device memory needs the cuda transport, not '%s'",
			c->ep->tp->name);
	c->busy = 1;
	rc = on_device ? dev_alltoallv(c, send, soff, slen, recv, roff, rlen, err)
		       : host_alltoallv(c, send, soff, slen, recv, roff, rlen, err);
	c->busy = 0;
	return rc;
}

int dp_a2a_comm_on_device(const struct dp_a2a_comm *c)
{
	return c->ep->tp == &dp_a2a_cuda;
}
