/* a2a/transport_verbs.c - the `verbs` transport: RDMA over InfiniBand or
 * RoCE with libibverbs.
 *
 * One RC queue pair per peer.  Each rank registers, per peer, a receive
 * ring of NSLOT slots of SLOT bytes and a send staging ring of the same
 * size.  Bytes of the frame stream (stream.c) go in chunks of at most SLOT
 * bytes by RDMA WRITE WITH IMMEDIATE into the peer's receive ring at slot
 * (sequence % NSLOT); the immediate carries the chunk length.  The receiver
 * gets a completion per chunk (a posted receive is consumed; it is
 * re-posted at once), reads the slot, and hands slots back in batches with
 * a zero-length write-with-immediate whose immediate has CREDIT_FLAG set.
 * A sender never has more than NSLOT chunks unacknowledged, so slots are
 * never overwritten before they are read.  Connection details (LID, GID,
 * QP number, PSN, ring address and rkey) are swapped through the
 * allgather callback of the control plane. */
#include <arpa/inet.h>
#include <errno.h>
#include <infiniband/verbs.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "a2a/a2a_int.h"
#include "common/dp_banned.h"

#define NSLOT	    64
#define SLOT	    65536u
#define CREDIT_FLAG 0x80000000u
#define RING_BYTES  ((size_t)NSLOT * (size_t)SLOT)
#define RQ_DEPTH    (2 * NSLOT + 4)

struct conn_info {
	uint64_t ring_addr; /* my receive ring for this peer */
	uint32_t rkey;
	uint32_t qpn;
	uint32_t psn;
	uint16_t lid;
	uint8_t gid[16];
	uint8_t pad[2];
};

struct vpeer {
	struct ibv_qp *qp;
	char *rx, *tx; /* NSLOT * SLOT each */
	struct ibv_mr *rx_mr, *tx_mr;
	struct conn_info remote;
	uint64_t tx_seq;	/* chunks sent */
	int credits;		/* chunks we may still send */
	uint64_t rx_seq;	/* chunks consumed */
	uint32_t rx_len[NSLOT]; /* lengths of received, unread chunks (ring order) */
	uint64_t rx_got;	/* chunks received */
	uint32_t rx_off;	/* read offset in the current chunk */
	int to_return;		/* consumed, not yet credited back */
	int err;
};

struct verbs_ep {
	struct dp_a2a_stream s; /* first */
	struct ibv_context *ctx;
	struct ibv_pd *pd;
	struct ibv_cq *cq;
	struct vpeer *p;
	int port;
	struct ibv_port_attr pattr;
	union ibv_gid gid;
};

static int post_recv(struct vpeer *v)
{
	struct ibv_recv_wr wr = { 0 }, *bad = NULL;

	wr.wr_id = 0;
	wr.sg_list = NULL;
	wr.num_sge = 0;
	return ibv_post_recv(v->qp, &wr, &bad);
}

static int post_write(struct verbs_ep *e, int peer, const void *src, uint32_t len, uint32_t imm,
		      uint64_t slot)
{
	struct vpeer *v = &e->p[peer];
	struct ibv_sge sge = { 0 };
	struct ibv_send_wr wr = { 0 }, *bad = NULL;

	wr.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
	wr.send_flags = IBV_SEND_SIGNALED;
	wr.imm_data = htonl(imm);
	wr.wr.rdma.rkey = v->remote.rkey;
	wr.wr.rdma.remote_addr = v->remote.ring_addr + slot * SLOT;
	if (len) {
		sge.addr = (uintptr_t)src;
		sge.length = len;
		sge.lkey = v->tx_mr->lkey;
		wr.sg_list = &sge;
		wr.num_sge = 1;
	}
	return ibv_post_send(v->qp, &wr, &bad);
}

static int peer_of_qp(struct verbs_ep *e, uint32_t qpn)
{
	for (int i = 0; i < e->s.ep.world; i++)
		if (e->p[i].qp && e->p[i].qp->qp_num == qpn)
			return i;
	return -1;
}

/* Drain the completion queue.  Returns completions seen. */
static int poll_cq(struct verbs_ep *e)
{
	struct ibv_wc wc[16];
	int n, total = 0;

	while ((n = ibv_poll_cq(e->cq, 16, wc)) > 0) {
		for (int i = 0; i < n; i++) {
			int peer = peer_of_qp(e, wc[i].qp_num);
			struct vpeer *v;
			uint32_t imm;

			if (peer < 0)
				continue;
			v = &e->p[peer];
			if (wc[i].status != IBV_WC_SUCCESS) {
				v->err = -EIO;
				continue;
			}
			if (wc[i].opcode != IBV_WC_RECV_RDMA_WITH_IMM)
				continue; /* our own write finished */
			imm = ntohl(wc[i].imm_data);
			if (post_recv(v))
				v->err = -EIO;
			if (imm & CREDIT_FLAG) {
				v->credits += (int)(imm & ~CREDIT_FLAG);
			} else if (v->rx_got - v->rx_seq < NSLOT && imm <= SLOT) {
				v->rx_len[v->rx_got % NSLOT] = imm;
				v->rx_got++;
			} else {
				v->err = -EPROTO;
			}
		}
		total += n;
	}
	return total;
}

static ssize_t v_write_some(struct dp_a2a_stream *s, int peer, const void *buf, size_t n)
{
	struct verbs_ep *e = (struct verbs_ep *)s;
	struct vpeer *v = &e->p[peer];
	uint64_t slot;
	uint32_t len;

	(void)poll_cq(e);
	if (v->err)
		return v->err;
	if (v->credits <= 0 || !n)
		return 0;
	slot = v->tx_seq % NSLOT;
	len = n > SLOT ? SLOT : (uint32_t)n;
	memcpy(v->tx + slot * SLOT, buf, len);
	if (post_write(e, peer, v->tx + slot * SLOT, len, len, slot))
		return -EIO;
	v->tx_seq++;
	v->credits--;
	return (ssize_t)len;
}

static ssize_t v_read_some(struct dp_a2a_stream *s, int peer, void *buf, size_t n)
{
	struct verbs_ep *e = (struct verbs_ep *)s;
	struct vpeer *v = &e->p[peer];
	size_t done = 0;

	(void)poll_cq(e);
	if (v->err)
		return v->err;
	while (done < n && v->rx_seq < v->rx_got) {
		uint64_t slot = v->rx_seq % NSLOT;
		uint32_t len = v->rx_len[slot], k = len - v->rx_off;

		if (k > n - done)
			k = (uint32_t)(n - done);
		memcpy((char *)buf + done, v->rx + slot * SLOT + v->rx_off, k);
		done += k;
		v->rx_off += k;
		if (v->rx_off == len) {
			v->rx_off = 0;
			v->rx_seq++;
			v->to_return++;
		}
	}
	if (v->to_return >= NSLOT / 4 || (v->to_return && v->rx_seq == v->rx_got)) {
		if (post_write(e, peer, NULL, 0, CREDIT_FLAG | (uint32_t)v->to_return, 0) == 0)
			v->to_return = 0;
	}
	return (ssize_t)done;
}

static void v_wait(struct dp_a2a_stream *s, int ms)
{
	struct verbs_ep *e = (struct verbs_ep *)s;
	int64_t end = dp_a2a_now_ms() + ms;

	while (dp_a2a_now_ms() < end) {
		struct timespec ts = { 0, 20000 };

		if (poll_cq(e) > 0)
			return;
		(void)nanosleep(&ts, NULL);
	}
}

static int v_peer_alive(struct dp_a2a_stream *s, int peer)
{
	struct verbs_ep *e = (struct verbs_ep *)s;

	return e->p[peer].err;
}

static const struct dp_a2a_stream_ops verbs_stream_ops = {
	.write_some = v_write_some,
	.read_some = v_read_some,
	.wait = v_wait,
	.peer_alive = v_peer_alive,
};

static int verbs_probe(int *prio, struct dp_err *err)
{
	int n = 0;
	struct ibv_device **l = ibv_get_device_list(&n);

	if (l)
		ibv_free_device_list(l);
	if (!l || n <= 0)
		return dp_err_set(err, ENODEV, "a2a: verbs: no RDMA device");
	*prio = 40;
	return 0;
}

static void verbs_close_ep(struct dp_a2a_ep *ep)
{
	struct verbs_ep *e;

	if (!ep)
		return;
	e = (struct verbs_ep *)dp_container_of_stream(ep);
	for (int i = 0; e->p && i < ep->world; i++) {
		struct vpeer *v = &e->p[i];

		if (v->qp)
			(void)ibv_destroy_qp(v->qp);
		if (v->rx_mr)
			(void)ibv_dereg_mr(v->rx_mr);
		if (v->tx_mr)
			(void)ibv_dereg_mr(v->tx_mr);
		free(v->rx);
		free(v->tx);
	}
	free(e->p);
	if (e->cq)
		(void)ibv_destroy_cq(e->cq);
	if (e->pd)
		(void)ibv_dealloc_pd(e->pd);
	if (e->ctx)
		(void)ibv_close_device(e->ctx);
	dp_a2a_stream_release(&e->s);
	free(e);
}

static int open_device(struct verbs_ep *e, const char *want, struct dp_err *err)
{
	int n = 0, rc = 0;
	struct ibv_device **l = ibv_get_device_list(&n);
	struct ibv_device *dev = NULL;

	if (!l || n <= 0) {
		if (l)
			ibv_free_device_list(l);
		return dp_err_set(err, ENODEV, "a2a: verbs: no RDMA device");
	}
	for (int i = 0; i < n && !dev; i++)
		if (!want || strcmp(ibv_get_device_name(l[i]), want) == 0)
			dev = l[i];
	if (!dev)
		rc = dp_err_set(err, ENODEV, "a2a: verbs: no RDMA device named '%s'", want);
	else if (!(e->ctx = ibv_open_device(dev)))
		rc = dp_err_set(err, ENODEV, "a2a: verbs: cannot open '%s'",
				ibv_get_device_name(dev));
	ibv_free_device_list(l);
	return rc;
}

static int setup_peer(struct verbs_ep *e, struct vpeer *v, struct conn_info *mine,
		      struct dp_err *err)
{
	struct ibv_qp_init_attr qa = { 0 };
	struct ibv_qp_attr a = { 0 };
	int acc = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE;

	v->rx = aligned_alloc(4096, RING_BYTES);
	v->tx = aligned_alloc(4096, RING_BYTES);
	if (!v->rx || !v->tx)
		return dp_err_set(err, ENOMEM, "a2a: out of memory");
	v->rx_mr = ibv_reg_mr(e->pd, v->rx, RING_BYTES, acc);
	v->tx_mr = ibv_reg_mr(e->pd, v->tx, RING_BYTES, IBV_ACCESS_LOCAL_WRITE);
	if (!v->rx_mr || !v->tx_mr)
		return dp_err_set(err, errno ? errno : ENOMEM,
				  "a2a: verbs: cannot register memory: %s", strerror(errno));
	qa.send_cq = e->cq;
	qa.recv_cq = e->cq;
	qa.qp_type = IBV_QPT_RC;
	qa.cap.max_send_wr = 2 * NSLOT + 4;
	qa.cap.max_recv_wr = RQ_DEPTH;
	qa.cap.max_send_sge = 1;
	qa.cap.max_recv_sge = 1;
	v->qp = ibv_create_qp(e->pd, &qa);
	if (!v->qp)
		return dp_err_set(err, errno ? errno : EIO, "a2a: verbs: cannot create a QP: %s",
				  strerror(errno));
	a.qp_state = IBV_QPS_INIT;
	a.pkey_index = 0;
	a.port_num = (uint8_t)e->port;
	a.qp_access_flags = (unsigned)acc;
	if (ibv_modify_qp(v->qp, &a,
			  IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS))
		return dp_err_set(err, EIO, "a2a: verbs: QP to INIT failed");
	for (int i = 0; i < RQ_DEPTH; i++)
		if (post_recv(v))
			return dp_err_set(err, EIO, "a2a: verbs: cannot post receives");
	mine->ring_addr = (uintptr_t)v->rx;
	mine->rkey = v->rx_mr->rkey;
	mine->qpn = v->qp->qp_num;
	mine->psn = (uint32_t)(lrand48() & 0xffffff);
	mine->lid = e->pattr.lid;
	memcpy(mine->gid, e->gid.raw, 16);
	v->credits = NSLOT;
	return 0;
}

static int connect_peer(struct verbs_ep *e, struct vpeer *v, uint32_t my_psn, struct dp_err *err)
{
	struct ibv_qp_attr a = { 0 };

	a.qp_state = IBV_QPS_RTR;
	a.path_mtu = e->pattr.active_mtu;
	a.dest_qp_num = v->remote.qpn;
	a.rq_psn = v->remote.psn;
	a.max_dest_rd_atomic = 1;
	a.min_rnr_timer = 12;
	a.ah_attr.dlid = v->remote.lid;
	a.ah_attr.port_num = (uint8_t)e->port;
	if (e->pattr.link_layer == IBV_LINK_LAYER_ETHERNET) { /* RoCE: route by GID */
		a.ah_attr.is_global = 1;
		memcpy(a.ah_attr.grh.dgid.raw, v->remote.gid, 16);
		a.ah_attr.grh.sgid_index = 0;
		a.ah_attr.grh.hop_limit = 1;
	}
	if (ibv_modify_qp(v->qp, &a,
			  IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
				  IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER))
		return dp_err_set(err, EIO, "a2a: verbs: QP to RTR failed");
	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_RTS;
	a.timeout = 14;
	a.retry_cnt = 7;
	a.rnr_retry = 7;
	a.sq_psn = my_psn;
	a.max_rd_atomic = 1;
	if (ibv_modify_qp(v->qp, &a,
			  IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
				  IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC))
		return dp_err_set(err, EIO, "a2a: verbs: QP to RTS failed");
	return 0;
}

static int verbs_open_ep(const struct dp_a2a_comm_cfg *cfg, struct dp_a2a_ep **out,
			 struct dp_err *err)
{
	int world = cfg->nodes * cfg->ranks_per_node, me = cfg->rank, rc;
	struct conn_info *mine = NULL, *all = NULL;
	struct verbs_ep *e;

	if (!cfg->allgather)
		return dp_err_set(err, EINVAL, "a2a: verbs: needs the control plane's allgather");
	e = calloc(1, sizeof(*e));
	if (!e)
		return dp_err_set(err, ENOMEM, "a2a: out of memory");
	e->s.ep.tp = &dp_a2a_verbs;
	e->s.ep.rank = me;
	e->s.ep.world = world;
	e->s.ep.rpn = cfg->ranks_per_node;
	e->s.ep.timeout_ms = cfg->timeout_ms;
	e->s.ops = &verbs_stream_ops;
	e->s.what = "verbs";
	e->port = cfg->ib_port > 0 ? cfg->ib_port : 1;
	e->p = calloc((size_t)world, sizeof(*e->p));
	mine = calloc((size_t)world, sizeof(*mine));
	all = calloc((size_t)world * (size_t)world, sizeof(*all));
	if (!e->p || !mine || !all) {
		rc = dp_err_set(err, ENOMEM, "a2a: out of memory");
		goto fail;
	}
	rc = dp_a2a_stream_init(&e->s, err);
	if (!rc)
		rc = open_device(e, cfg->ib_device, err);
	if (rc)
		goto fail;
	e->pd = ibv_alloc_pd(e->ctx);
	e->cq = e->pd ? ibv_create_cq(e->ctx, world * (4 * NSLOT + 8), NULL, NULL, 0) : NULL;
	if (!e->pd || !e->cq || ibv_query_port(e->ctx, (uint8_t)e->port, &e->pattr) ||
	    ibv_query_gid(e->ctx, (uint8_t)e->port, 0, &e->gid)) {
		rc = dp_err_set(err, EIO, "a2a: verbs: cannot set up PD/CQ on port %d", e->port);
		goto fail;
	}
	for (int j = 0; j < world; j++) {
		if (j == me)
			continue;
		rc = setup_peer(e, &e->p[j], &mine[j], err);
		if (rc)
			goto fail;
	}
	rc = cfg->allgather(cfg->allgather_ctx, mine, (size_t)world * sizeof(*mine), all, err);
	if (rc)
		goto fail;
	for (int j = 0; j < world; j++) {
		if (j == me)
			continue;
		e->p[j].remote = all[(size_t)j * (size_t)world + (size_t)me];
		rc = connect_peer(e, &e->p[j], mine[j].psn, err);
		if (rc)
			goto fail;
	}
	free(mine);
	free(all);
	*out = &e->s.ep;
	return 0;
fail:
	free(mine);
	free(all);
	verbs_close_ep(&e->s.ep);
	return rc;
}

const struct dp_a2a_transport dp_a2a_verbs = {
	.name = "verbs",
	.probe = verbs_probe,
	.open = verbs_open_ep,
	.send = dp_a2a_stream_send,
	.send_take = dp_a2a_stream_send_take,
	.recv = dp_a2a_stream_recv,
	.recv_any = dp_a2a_stream_recv_any,
	.try_recv_any = dp_a2a_stream_try_recv_any,
	.flush = dp_a2a_stream_flush,
	.put = dp_a2a_no_put,
	.close = verbs_close_ep,
};
