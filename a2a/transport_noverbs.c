/* a2a/transport_noverbs.c - the `verbs` transport when dpctl is built
 * without libibverbs: every entry point says so with -ENOSYS. */
#include <errno.h>

#include "a2a/a2a_int.h"
#include "common/dp_banned.h"

static int nv_probe(int *prio, struct dp_err *err) /* NOLINT(readability-non-const-parameter) */
{
	(void)prio;
	return dp_err_set(err, ENOSYS, "a2a: verbs: dpctl was built without verbs");
}

static int nv_open(const struct dp_a2a_comm_cfg *cfg, struct dp_a2a_ep **out, struct dp_err *err)
{
	(void)cfg;
	(void)out;
	return dp_err_set(err, ENOSYS, "a2a: verbs: dpctl was built without verbs");
}

static int nv_send(struct dp_a2a_ep *ep, int peer, uint32_t tag, const void *buf, size_t len,
		   struct dp_err *err)
{
	(void)ep;
	(void)peer;
	(void)tag;
	(void)buf;
	(void)len;
	return dp_err_set(err, ENOSYS, "a2a: verbs: dpctl was built without verbs");
}

static int nv_recv(struct dp_a2a_ep *ep, int peer, uint32_t tag, void **buf,
		   size_t *len, /* NOLINT(readability-non-const-parameter) */
		   struct dp_err *err)
{
	(void)ep;
	(void)peer;
	(void)tag;
	(void)buf;
	(void)len;
	return dp_err_set(err, ENOSYS, "a2a: verbs: dpctl was built without verbs");
}

static void nv_close(struct dp_a2a_ep *ep)
{
	(void)ep;
}

const struct dp_a2a_transport dp_a2a_verbs = {
	.name = "verbs",
	.probe = nv_probe,
	.open = nv_open,
	.send = nv_send,
	.send_take = dp_a2a_send_take_copy,
	.recv = nv_recv,
	.recv_any = dp_a2a_recv_any_first,
	.try_recv_any = dp_a2a_no_try_recv_any,
	.flush = dp_a2a_no_flush,
	.put = dp_a2a_no_put,
	.close = nv_close,
};
