/* a2a/transport_cuda.c - the `cuda` transport: GPU ranks.
 *
 * Pieces:
 *  - a dedicated non-blocking CUDA stream per endpoint for every copy;
 *  - a device window (cudaMalloc) per rank, exported with cudaIpcGetMemHandle
 *    and opened by the other ranks of the same node (cudaIpcOpenMemHandle):
 *    put() copies straight into a node peer's window over NVLink/PCIe;
 *  - an NCCL communicator over the whole job, the inter-node data path
 *    when verbs is absent (dp_a2a_cuda_exchange(): one NCCL group of sends and
 *    receives of device buffers);
 *  - messages (send/recv: layouts, control, and host-resident payloads)
 *    travel over an inner `tcp` endpoint, which also carries the
 *    all-gather of the NCCL id and the IPC handles when the control plane
 *    gives no allgather callback.
 * Kernels for pack/unpack/combine are in a2a_kernels.cu. */
#include <cuda_runtime.h>
#include <errno.h>
#include <nccl.h>
#include <stdlib.h>
#include <string.h>

#include "a2a/a2a_int.h"
#include "common/dp_banned.h"

#define WIN_DEF (64u << 20)

struct conn {
	ncclUniqueId id; /* meaningful from rank 0 */
	cudaIpcMemHandle_t win;
	uint64_t win_bytes;
};

struct cuda_ep {
	struct dp_a2a_ep ep; /* first */
	struct dp_a2a_ep *ctl;
	int dev;
	cudaStream_t stream;
	ncclComm_t nccl;
	void *win;
	size_t win_bytes;
	void **peer_win; /* same node only, else NULL */
	size_t *peer_bytes;
};

static struct cuda_ep *cuda_of(struct dp_a2a_ep *ep)
{
	return dp_container_of(ep, struct cuda_ep, ep);
}

static int cuda_probe(int *prio, struct dp_err *err)
{
	int n = 0;

	if (cudaGetDeviceCount(&n) != cudaSuccess || n <= 0)
		return dp_err_set(err, ENODEV, "a2a: cuda: no CUDA device");
	*prio = 30;
	return 0;
}

/* All-gather over the inner tcp endpoint: send ours to everyone, read all. */
static int ctl_allgather(void *ctx, const void *mine, size_t len, void *all, struct dp_err *err)
{
	struct dp_a2a_ep *ctl = ctx;
	int rc;

	for (int j = 0; j < ctl->world; j++) {
		rc = ctl->tp->send(ctl, j, 0x901, mine, len, err);
		if (rc)
			return rc;
	}
	for (int j = 0; j < ctl->world; j++) {
		void *b = NULL;
		size_t n = 0;

		rc = ctl->tp->recv(ctl, j, 0x901, &b, &n, err);
		if (rc)
			return rc;
		if (n != len) {
			free(b);
			return dp_err_set(err, EPROTO, "a2a: cuda: bad all-gather from rank %d", j);
		}
		memcpy((char *)all + (size_t)j * len, b, len);
		free(b);
	}
	return 0;
}

static int cuda_fail(struct dp_err *err, const char *what, cudaError_t e)
{
	return dp_err_set(err, EIO, "a2a: cuda: %s: %s", what, cudaGetErrorString(e));
}

static void cuda_close_ep(struct dp_a2a_ep *ep)
{
	struct cuda_ep *e;

	if (!ep)
		return;
	e = cuda_of(ep);
	for (int j = 0; e->peer_win && j < ep->world; j++)
		if (e->peer_win[j])
			(void)cudaIpcCloseMemHandle(e->peer_win[j]);
	if (e->nccl)
		(void)ncclCommDestroy(e->nccl);
	if (e->win)
		(void)cudaFree(e->win);
	if (e->stream)
		(void)cudaStreamDestroy(e->stream);
	if (e->ctl)
		e->ctl->tp->close(e->ctl);
	free(e->peer_win);
	free(e->peer_bytes);
	free(e);
}

static int cuda_open_ep(const struct dp_a2a_comm_cfg *cfg, struct dp_a2a_ep **out,
			struct dp_err *err)
{
	int world = cfg->nodes * cfg->ranks_per_node, me = cfg->rank, rpn = cfg->ranks_per_node;
	struct conn mine, *all = NULL;
	struct cuda_ep *e;
	cudaError_t ce;
	int rc;

	e = calloc(1, sizeof(*e));
	if (!e)
		return dp_err_set(err, ENOMEM, "a2a: out of memory");
	e->ep.tp = &dp_a2a_cuda;
	e->ep.rank = me;
	e->ep.world = world;
	e->ep.rpn = rpn;
	e->ep.timeout_ms = cfg->timeout_ms;
	e->dev = cfg->cuda_device >= 0 ? cfg->cuda_device : me % rpn;
	e->win_bytes = cfg->shm_ring_bytes ? cfg->shm_ring_bytes : WIN_DEF;
	e->peer_win = calloc((size_t)world, sizeof(*e->peer_win));
	e->peer_bytes = calloc((size_t)world, sizeof(*e->peer_bytes));
	all = calloc((size_t)world, sizeof(*all));
	if (!e->peer_win || !e->peer_bytes || !all) {
		rc = dp_err_set(err, ENOMEM, "a2a: out of memory");
		goto fail;
	}
	rc = dp_a2a_tcp.open(cfg, &e->ctl, err);
	if (rc)
		goto fail;
	if ((ce = cudaSetDevice(e->dev)) != cudaSuccess ||
	    (ce = cudaStreamCreateWithFlags(&e->stream, cudaStreamNonBlocking)) != cudaSuccess ||
	    (ce = cudaMalloc(&e->win, e->win_bytes)) != cudaSuccess) {
		rc = cuda_fail(err, "cannot set up the device", ce);
		goto fail;
	}
	memset(&mine, 0, sizeof(mine));
	if (me == 0 && ncclGetUniqueId(&mine.id) != ncclSuccess) {
		rc = dp_err_set(err, EIO, "a2a: cuda: ncclGetUniqueId failed");
		goto fail;
	}
	if ((ce = cudaIpcGetMemHandle(&mine.win, e->win)) != cudaSuccess) {
		rc = cuda_fail(err, "cannot export the window", ce);
		goto fail;
	}
	mine.win_bytes = e->win_bytes;
	rc = cfg->allgather ? cfg->allgather(cfg->allgather_ctx, &mine, sizeof(mine), all, err)
			    : ctl_allgather(e->ctl, &mine, sizeof(mine), all, err);
	if (rc)
		goto fail;
	/* map the node peers' windows before ncclCommInitRank: it returns only
	 * once every rank has joined, so no rank can go on (and free its window
	 * on an early close) while a peer still has to open it */
	for (int j = 0; j < world; j++) {
		if (j == me || j / rpn != me / rpn)
			continue;
		ce = cudaIpcOpenMemHandle(&e->peer_win[j], all[j].win,
					  cudaIpcMemLazyEnablePeerAccess);
		if (ce != cudaSuccess) {
			e->peer_win[j] = NULL;
			rc = cuda_fail(err, "cannot open a node peer's window", ce);
			goto fail;
		}
		e->peer_bytes[j] = all[j].win_bytes;
	}
	if (ncclCommInitRank(&e->nccl, world, all[0].id, me) != ncclSuccess) {
		e->nccl = NULL;
		rc = dp_err_set(err, EIO, "a2a: cuda: ncclCommInitRank failed");
		goto fail;
	}
	free(all);
	*out = &e->ep;
	return 0;
fail:
	free(all);
	cuda_close_ep(&e->ep);
	return rc;
}

static int cuda_send(struct dp_a2a_ep *ep, int peer, uint32_t tag, const void *buf, size_t len,
		     struct dp_err *err)
{
	struct cuda_ep *e = cuda_of(ep);

	return e->ctl->tp->send(e->ctl, peer, tag, buf, len, err);
}

static int cuda_send_take(struct dp_a2a_ep *ep, int peer, uint32_t tag, void *buf, size_t len,
			  struct dp_err *err)
{
	struct cuda_ep *e = cuda_of(ep);

	return e->ctl->tp->send_take(e->ctl, peer, tag, buf, len, err);
}

static int cuda_recv(struct dp_a2a_ep *ep, int peer, uint32_t tag, void **buf, size_t *len,
		     struct dp_err *err)
{
	struct cuda_ep *e = cuda_of(ep);

	return e->ctl->tp->recv(e->ctl, peer, tag, buf, len, err);
}

static int cuda_recv_any(struct dp_a2a_ep *ep, const int *peers, const uint32_t *tags, int n,
			 int *which, void **buf, size_t *len, struct dp_err *err)
{
	struct cuda_ep *e = cuda_of(ep);

	return e->ctl->tp->recv_any(e->ctl, peers, tags, n, which, buf, len, err);
}

static int cuda_flush(struct dp_a2a_ep *ep, struct dp_err *err)
{
	struct cuda_ep *e = cuda_of(ep);
	cudaError_t ce = cudaStreamSynchronize(e->stream);

	if (ce != cudaSuccess)
		return cuda_fail(err, "stream", ce);
	return e->ctl->tp->flush(e->ctl, err);
}

/* Copy @len bytes (host or device) into @peer's window at @off, on the
 * dedicated stream; returns when the copy is done. */
static int cuda_put(struct dp_a2a_ep *ep, int peer, size_t off, const void *src, size_t len,
		    struct dp_err *err)
{
	struct cuda_ep *e = cuda_of(ep);
	void *dst;
	cudaError_t ce;

	if (peer == ep->rank)
		dst = e->win;
	else if (peer >= 0 && peer < ep->world && e->peer_win[peer])
		dst = e->peer_win[peer];
	else
		return dp_err_set(err, EXDEV, "a2a: cuda: rank %d is not on this node", peer);
	if (off > (peer == ep->rank ? e->win_bytes : e->peer_bytes[peer]) ||
	    len > (peer == ep->rank ? e->win_bytes : e->peer_bytes[peer]) - off)
		return dp_err_set(err, ERANGE, "a2a: cuda: put past the end of rank %d's window",
				  peer);
	ce = cudaMemcpyAsync((char *)dst + off, src, len, cudaMemcpyDefault, e->stream);
	if (ce == cudaSuccess)
		ce = cudaStreamSynchronize(e->stream);
	return ce == cudaSuccess ? 0 : cuda_fail(err, "put", ce);
}

const struct dp_a2a_transport dp_a2a_cuda = {
	.name = "cuda",
	.probe = cuda_probe,
	.open = cuda_open_ep,
	.send = cuda_send,
	.send_take = cuda_send_take,
	.recv = cuda_recv,
	.recv_any = cuda_recv_any,
	.try_recv_any = dp_a2a_no_try_recv_any,
	.flush = cuda_flush,
	.put = cuda_put,
	.close = cuda_close_ep,
};

int dp_a2a_cuda_exchange(struct dp_a2a_ep *ep, const void *const *sendbuf, const size_t *sendlen,
			 void *const *recvbuf, const size_t *recvlen, struct dp_err *err)
{
	struct cuda_ep *e;
	ncclResult_t nr = ncclSuccess, gr;
	cudaError_t ce;

	if (!ep || ep->tp != &dp_a2a_cuda)
		return dp_err_set(err, EINVAL, "a2a: cuda: exchange needs a cuda endpoint");
	e = cuda_of(ep);
	/* the caller's thread (an executor's communication thread) may not
	 * have this endpoint's device current */
	ce = cudaSetDevice(e->dev);
	if (ce != cudaSuccess)
		return cuda_fail(err, "exchange", ce);
	(void)ncclGroupStart();
	for (int j = 0; j < ep->world && nr == ncclSuccess; j++) {
		if (sendlen[j])
			nr = ncclSend(sendbuf[j], sendlen[j], ncclChar, j, e->nccl, e->stream);
		if (nr == ncclSuccess && recvlen[j])
			nr = ncclRecv(recvbuf[j], recvlen[j], ncclChar, j, e->nccl, e->stream);
	}
	/* the group is closed also after a failed send/recv; a failure found
	 * only at its end (mismatched sizes, a peer gone) is in gr */
	gr = ncclGroupEnd();
	if (nr == ncclSuccess)
		nr = gr;
	if (nr != ncclSuccess)
		return dp_err_set(err, EIO, "a2a: cuda: NCCL exchange failed: %s",
				  ncclGetErrorString(nr));
	ce = cudaStreamSynchronize(e->stream);
	return ce == cudaSuccess ? 0 : cuda_fail(err, "exchange", ce);
}
