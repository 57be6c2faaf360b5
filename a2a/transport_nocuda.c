/* a2a/transport_nocuda.c - the `cuda` transport and kernels when dpctl is built
 * without CUDA: every entry point says so with -ENOSYS. */
#include <errno.h>

#include "a2a/a2a_int.h"
#include "common/dp_banned.h"

static int nc_probe(int *prio, struct dp_err *err) /* NOLINT(readability-non-const-parameter) */
{
	(void)prio;
	return dp_err_set(err, ENOSYS, "a2a: cuda: dpctl was built without CUDA");
}

static int nc_open(const struct dp_a2a_comm_cfg *cfg, struct dp_a2a_ep **out, struct dp_err *err)
{
	(void)cfg;
	(void)out;
	return dp_err_set(err, ENOSYS, "a2a: cuda: dpctl was built without CUDA");
}

static int nc_send(struct dp_a2a_ep *ep, int peer, uint32_t tag, const void *buf, size_t len,
		   struct dp_err *err)
{
	(void)ep;
	(void)peer;
	(void)tag;
	(void)buf;
	(void)len;
	return dp_err_set(err, ENOSYS, "a2a: cuda: dpctl was built without CUDA");
}

static int nc_recv(struct dp_a2a_ep *ep, int peer, uint32_t tag, void **buf,
		   size_t *len, /* NOLINT(readability-non-const-parameter) */
		   struct dp_err *err)
{
	(void)ep;
	(void)peer;
	(void)tag;
	(void)buf;
	(void)len;
	return dp_err_set(err, ENOSYS, "a2a: cuda: dpctl was built without CUDA");
}

static void nc_close(struct dp_a2a_ep *ep)
{
	(void)ep;
}

const struct dp_a2a_transport dp_a2a_cuda = {
	.name = "cuda",
	.probe = nc_probe,
	.open = nc_open,
	.send = nc_send,
	.send_take = dp_a2a_send_take_copy,
	.recv = nc_recv,
	.recv_any = dp_a2a_recv_any_first,
	.try_recv_any = dp_a2a_no_try_recv_any,
	.flush = dp_a2a_no_flush,
	.put = dp_a2a_no_put,
	.close = nc_close,
};

int dp_a2a_cuda_pack(const float *x, const int32_t *rows, int n, int hidden,
		     float *out, /* NOLINT(readability-non-const-parameter) */
		     void *stream)
{
	(void)x;
	(void)rows;
	(void)n;
	(void)hidden;
	(void)out;
	(void)stream;
	return -ENOSYS;
}

int dp_a2a_cuda_unpack(const float *in, const int32_t *rows, int n, int hidden,
		       float *x, /* NOLINT(readability-non-const-parameter) */
		       void *stream)
{
	(void)in;
	(void)rows;
	(void)n;
	(void)hidden;
	(void)x;
	(void)stream;
	return -ENOSYS;
}

int dp_a2a_cuda_combine(const float *y, const float *w, const int32_t *slot_off, int ntok,
			int hidden, float *out, /* NOLINT(readability-non-const-parameter) */
			void *stream)
{
	(void)y;
	(void)w;
	(void)slot_off;
	(void)ntok;
	(void)hidden;
	(void)out;
	(void)stream;
	return -ENOSYS;
}

int dp_a2a_cuda_exchange(struct dp_a2a_ep *ep, const void *const *sendbuf, const size_t *sendlen,
			 void *const *recvbuf, const size_t *recvlen, struct dp_err *err)
{
	(void)ep;
	(void)sendbuf;
	(void)sendlen;
	(void)recvbuf;
	(void)recvlen;
	return dp_err_set(err, ENOSYS, "a2a: cuda: dpctl was built without CUDA");
}
