/* worker/pp_link_nccl_cuda.c - PP links over NCCL (worker/dp_pp_nccl.h).
 *
 * Why a progress thread and rounds.  A link is a byte stream that several
 * threads use at once (the executor's sender threads send while the main
 * thread receives), but an ncclComm must not be used from several threads,
 * and an ncclSend that the peer has not matched with an ncclRecv holds the
 * stream: two ranks sending to each other at the same time, each with its
 * receive queued behind its send, would wait for ever.  So one thread per
 * rank (the hub) owns the comm and its stream and moves the bytes of every
 * link in rounds, each round two NCCL groups over all the peers still open:
 *
 *   1. headers: to every peer {bytes I send now, my free inbox room, closed?}
 *      and from every peer the same (ncclSend + ncclRecv of 24 bytes each);
 *   2. payload: to every peer the announced bytes, from every peer its
 *      announced bytes (nothing posted for a direction with 0 bytes).
 *
 * Both ends of a pair post the same rounds in the same order (a pair leaves
 * the rounds after the round in which both said "closed", which both see at
 * once), so each send has its receive and a group never waits on a later
 * round: no deadlock, whatever the executor does.  An idle hub backs off up
 * to IDLE_MAX_US between rounds, or less when a send wakes it.
 *
 * Staging: the executor's buffers are ordinary (pageable) host memory; a
 * round copies up to CHUNK bytes per peer into a pinned host buffer, then
 * to a device buffer (NCCL moves device memory), and on the receiving side
 * from device to pinned to the link's inbox, on the hub's own stream.
 * Flow control: a sender never sends more than the room the receiver last
 * announced minus what it sent since, so an inbox holds at most INBOX_MAX.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cuda_runtime.h>
#include <nccl.h>

#include "common/dp_buf.h"
#include "worker/dp_pp_nccl.h"
#include "common/dp_banned.h"

#define ID_MAGIC     0x44504e49u	/* "DPNI": the unique id on the TCP links */
#define HDR_MAGIC    0x44504e48u	/* "DPNH": a round header */
#define CHUNK	     ((size_t)4 << 20)	/* most bytes per peer, direction and round */
#define INBOX_MAX    ((size_t)64 << 20) /* most unread bytes buffered per link */
#define IDLE_MAX_US  500
#define CLOSE_WAIT_S 30.0 /* after the last local close, for the peers' closes */
#define PEER_GONE_S  1.0  /* a round still stuck this long after a peer's socket closed */
#define F_CLOSED     1u

struct id_msg {
	uint32_t magic;
	uint32_t rank; /* the sender */
	ncclUniqueId id;
};

struct hdr {
	uint32_t magic;
	uint32_t flags; /* F_CLOSED */
	uint64_t bytes; /* payload of this round */
	uint64_t room;	/* free inbox room before this round's payload */
};

struct peer {
	int rank; /* in the comm */
	int fd;	  /* its TCP link's socket, watched for a dead peer; -1: none */
	int active, local_closed, remote_closed;
	/* the send in flight: borrowed from the sending thread, which waits */
	const char *sbuf;
	size_t slen, spos;
	int sbusy;
	size_t credit; /* bytes the peer can take now */
	/* received, not read yet: in.data[in_off .. in.len) */
	struct dp_buf in;
	size_t in_off;
	/* this round */
	size_t out_n, in_n;
	uint32_t sent_flags;
	/* staging buffers, CHUNK each */
	char *h_out, *h_in;
	void *d_out, *d_in;
};

struct hub {
	pthread_mutex_t mu;
	pthread_cond_t cv; /* any change: bytes moved, a send posted, closes, failure */
	pthread_t thr;
	int device;
	ncclComm_t comm;
	cudaStream_t stream;
	int npeers;
	struct peer *p;
	struct pollfd *pf; /* npeers: the sockets wait_stream() watches */
	struct hdr *h_hdr; /* pinned: npeers out, then npeers in */
	void *d_hdr;
	int running, aborted, refs;
	double close_deadline; /* set when refs reaches 0 */
	int rc;		       /* first failure, negative errno; 0: none */
	struct dp_err err;     /* its message */
};

struct nccl_link {
	struct dp_pp_link base; /* first: container_of by cast */
	struct hub *h;
	struct peer *p;
};

static double now_s(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static size_t min_sz(size_t a, size_t b)
{
	return a < b ? a : b;
}

/* ---- the hub thread -------------------------------------------------------------- */

/* Record the first failure (under h->mu); returns it. */
__attribute__((format(printf, 3, 4))) static int hub_fail_locked(struct hub *h, int code,
								 const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (!h->rc)
		h->rc = dp_err_vset(&h->err, code, fmt, ap);
	va_end(ap);
	pthread_cond_broadcast(&h->cv);
	return h->rc;
}

/* The same for a fixed message, taking h->mu. */
static int hub_fail(struct hub *h, int code, const char *what, const char *why)
{
	int rc;

	pthread_mutex_lock(&h->mu);
	rc = hub_fail_locked(h, code, "exec: nccl link: %s%s%s", what, why ? ": " : "",
			     why ? why : "");
	pthread_mutex_unlock(&h->mu);
	return rc;
}

static int cuda_fail(struct hub *h, const char *what, cudaError_t ce)
{
	return hub_fail(h, EIO, what, cudaGetErrorString(ce));
}

static int nccl_fail(struct hub *h, const char *what, ncclResult_t nr)
{
	return hub_fail(h, EIO, what, ncclGetErrorString(nr));
}

/* Wait for the stream, watching the active peers' sockets (a peer that
 * died closes them) and NCCL's own errors.  0 or a failure. */
static int wait_stream(struct hub *h)
{
	double gone_at = 0; /* when a closed socket was first seen */
	int spins = 0;

	for (;;) {
		cudaError_t ce = cudaStreamQuery(h->stream);
		ncclResult_t ar = ncclSuccess;
		nfds_t n = 0;
		int rc;

		if (ce == cudaSuccess)
			return 0;
		if (ce != cudaErrorNotReady)
			return cuda_fail(h, "stream", ce);
		if (++spins < 256)
			continue; /* most rounds end within microseconds */
		if (ncclCommGetAsyncError(h->comm, &ar) == ncclSuccess && ar != ncclSuccess &&
		    ar != ncclInProgress)
			return nccl_fail(h, "communicator", ar);
		/* active and fd are the hub thread's own: no lock */
		for (int i = 0; i < h->npeers; i++)
			if (h->p[i].active && h->p[i].fd >= 0)
				h->pf[n++] = (struct pollfd){ .fd = h->p[i].fd,
							      .events = POLLIN | POLLRDHUP };
		if (!gone_at && n && poll(h->pf, n, 0) > 0)
			for (nfds_t i = 0; i < n; i++)
				if (h->pf[i].revents & (POLLRDHUP | POLLHUP | POLLERR))
					gone_at = now_s();
		/* a peer whose part of our last round is done may leave before we
		 * see the stream finish: only a round that stays stuck is a loss */
		if (gone_at && now_s() - gone_at > PEER_GONE_S)
			return hub_fail(h, ECONNRESET, "a peer is gone (its TCP link closed)",
					NULL);
		pthread_mutex_lock(&h->mu);
		if (h->refs == 0 && now_s() > h->close_deadline)
			(void)hub_fail_locked(h, ETIMEDOUT,
					      "exec: nccl link: peers did not close within %.0f s",
					      CLOSE_WAIT_S);
		rc = h->rc;
		pthread_mutex_unlock(&h->mu);
		if (rc)
			return rc;
		(void)usleep(spins < 2048 ? 5 : 50);
	}
}

/* Post one NCCL group of sends and receives for the active peers: headers
 * (@hdr) or payload.  0 or a failure. */
static int post_group(struct hub *h, int hdr)
{
	const size_t hs = sizeof(struct hdr);
	char *dho = h->d_hdr, *dhi = dho + (size_t)h->npeers * hs;
	ncclResult_t nr = ncclGroupStart();

	for (int i = 0; i < h->npeers && nr == ncclSuccess; i++) {
		struct peer *p = &h->p[i];

		if (!p->active)
			continue;
		if (hdr) {
			nr = ncclSend(dho + (size_t)i * hs, hs, ncclUint8, p->rank, h->comm,
				      h->stream);
			if (nr == ncclSuccess)
				nr = ncclRecv(dhi + (size_t)i * hs, hs, ncclUint8, p->rank, h->comm,
					      h->stream);
			continue;
		}
		if (p->out_n)
			nr = ncclSend(p->d_out, p->out_n, ncclUint8, p->rank, h->comm, h->stream);
		if (nr == ncclSuccess && p->in_n)
			nr = ncclRecv(p->d_in, p->in_n, ncclUint8, p->rank, h->comm, h->stream);
	}
	if (nr != ncclSuccess) {
		(void)ncclGroupEnd();
		return nccl_fail(h, hdr ? "header round" : "payload round", nr);
	}
	nr = ncclGroupEnd();
	return nr == ncclSuccess ? 0 : nccl_fail(h, "group", nr);
}

/* Queue this round's payload copies: outgoing pinned -> device (@in 0),
 * or incoming device -> pinned (@in 1).  0 or a failure. */
static int copy_payload(struct hub *h, int in)
{
	cudaError_t ce = cudaSuccess;

	for (int i = 0; i < h->npeers && ce == cudaSuccess; i++) {
		struct peer *p = &h->p[i];
		size_t n = in ? p->in_n : p->out_n;

		if (p->active && n)
			ce = cudaMemcpyAsync(in ? (void *)p->h_in : p->d_out,
					     in ? p->d_in : (const void *)p->h_out, n,
					     in ? cudaMemcpyDeviceToHost : cudaMemcpyHostToDevice,
					     h->stream);
	}
	return ce == cudaSuccess ? 0 : cuda_fail(h, "payload copy", ce);
}

/* Append @n received bytes to @p's inbox (under h->mu), first dropping
 * what was read when that saves growing it or passing the cap (the unread
 * bytes stay within INBOX_MAX + CHUNK: a sender keeps to the announced
 * room).  0, -ENOMEM, or -E2BIG (a peer that ignored the room). */
static int inbox_add(struct peer *p, const char *src, size_t n)
{
	struct dp_buf *b = &p->in;

	if (p->in_off && (p->in_off == b->len || b->len + n >= b->alloc || b->len + n > b->cap)) {
		memmove(b->data, b->data + p->in_off, b->len - p->in_off);
		b->len -= p->in_off;
		b->data[b->len] = '\0'; /* dp_buf keeps a terminator */
		p->in_off = 0;
	}
	return dp_buf_add(b, src, n);
}

/* One round.  1: no peer left; 0: done (*moved: bytes or closes moved);
 * else a failure. */
static int round_once(struct hub *h, int *moved)
{
	const size_t hs = sizeof(struct hdr);
	struct hdr *ho = h->h_hdr, *hi = h->h_hdr + h->npeers;
	char *dhi = (char *)h->d_hdr + (size_t)h->npeers * hs;
	cudaError_t ce = cudaSuccess;
	int nact = 0, rc;

	pthread_mutex_lock(&h->mu);
	for (int i = 0; i < h->npeers; i++) {
		struct peer *p = &h->p[i];

		if (!p->active)
			continue;
		nact++;
		p->out_n = 0;
		if (p->sbuf && !p->remote_closed)
			p->out_n = min_sz(min_sz(p->slen - p->spos, CHUNK), p->credit);
		/* pageable -> pinned while the sender waits (it holds sbuf) */
		if (p->out_n)
			memcpy(p->h_out, p->sbuf + p->spos, p->out_n);
		p->sent_flags = p->local_closed ? F_CLOSED : 0;
		ho[i] = (struct hdr){ .magic = HDR_MAGIC,
				      .flags = p->sent_flags,
				      .bytes = p->out_n,
				      .room = INBOX_MAX -
					      min_sz(INBOX_MAX, p->in.len - p->in_off) };
	}
	pthread_mutex_unlock(&h->mu);
	if (!nact)
		return 1;

	/* 1. headers */
	ce = cudaMemcpyAsync(h->d_hdr, ho, (size_t)h->npeers * hs, cudaMemcpyHostToDevice,
			     h->stream);
	if (ce != cudaSuccess)
		return cuda_fail(h, "header copy", ce);
	if ((rc = post_group(h, 1)))
		return rc;
	ce = cudaMemcpyAsync(hi, dhi, (size_t)h->npeers * hs, cudaMemcpyDeviceToHost, h->stream);
	if (ce != cudaSuccess)
		return cuda_fail(h, "header copy", ce);
	if ((rc = wait_stream(h)))
		return rc;
	for (int i = 0; i < h->npeers; i++) {
		struct peer *p = &h->p[i];

		if (!p->active)
			continue;
		if (hi[i].magic != HDR_MAGIC || hi[i].bytes > CHUNK)
			return hub_fail(h, EPROTO, "a peer sent a bad round header", NULL);
		p->in_n = (size_t)hi[i].bytes;
	}

	/* 2. payload: pinned -> device, the group, device -> pinned */
	if ((rc = copy_payload(h, 0)) || (rc = post_group(h, 0)) || (rc = copy_payload(h, 1)))
		return rc;
	if ((rc = wait_stream(h)))
		return rc;

	pthread_mutex_lock(&h->mu);
	for (int i = 0; i < h->npeers && !rc; i++) {
		struct peer *p = &h->p[i];

		if (!p->active)
			continue;
		if (p->out_n || p->in_n || ((hi[i].flags & F_CLOSED) && !p->remote_closed))
			*moved = 1;
		p->spos += p->out_n;
		/* what it could take, less what is on its way in this round */
		p->credit = (size_t)hi[i].room - min_sz((size_t)hi[i].room, p->out_n);
		if (p->in_n && (rc = inbox_add(p, p->h_in, p->in_n)))
			rc = hub_fail_locked(
				h, rc == -E2BIG ? EPROTO : ENOMEM,
				"exec: nccl link: no room for %zu bytes from rank %d%s", p->in_n,
				p->rank, rc == -E2BIG ? " (more than the room it was given)" : "");
		if (hi[i].flags & F_CLOSED)
			p->remote_closed = 1;
		/* both said closed in this round: both ends drop the pair now */
		if ((p->sent_flags & F_CLOSED) && (hi[i].flags & F_CLOSED))
			p->active = 0;
	}
	pthread_cond_broadcast(&h->cv);
	pthread_mutex_unlock(&h->mu);
	return rc;
}

static void *hub_main(void *arg)
{
	struct hub *h = arg;
	long idle_us = 0;
	int rc = 0;

	if (cudaSetDevice(h->device) != cudaSuccess)
		rc = hub_fail(h, EIO, "cudaSetDevice", cudaGetErrorString(cudaGetLastError()));
	while (!rc) {
		int moved = 0;

		rc = round_once(h, &moved);
		if (rc)
			break;
		if (moved) {
			idle_us = 0;
			continue;
		}
		idle_us = idle_us ? (idle_us * 2 > IDLE_MAX_US ? IDLE_MAX_US : idle_us * 2) : 10;
		pthread_mutex_lock(&h->mu);
		{
			struct timespec ts;
			int want = 0;

			for (int i = 0; i < h->npeers; i++)
				want |= h->p[i].active && h->p[i].sbuf &&
					h->p[i].spos < h->p[i].slen && h->p[i].credit > 0;
			if (!want) {
				(void)clock_gettime(CLOCK_REALTIME, &ts);
				ts.tv_nsec += idle_us * 1000;
				if (ts.tv_nsec >= 1000000000L) {
					ts.tv_sec++;
					ts.tv_nsec -= 1000000000L;
				}
				(void)pthread_cond_timedwait(&h->cv, &h->mu, &ts);
			}
			if (h->refs == 0 && now_s() > h->close_deadline)
				rc = hub_fail_locked(
					h, ETIMEDOUT,
					"exec: nccl link: peers did not close within %.0f s",
					CLOSE_WAIT_S);
		}
		pthread_mutex_unlock(&h->mu);
	}
	if (rc < 0) {
		/* a round may be stuck in NCCL for a peer that is gone */
		(void)ncclCommAbort(h->comm);
		pthread_mutex_lock(&h->mu);
		h->aborted = 1;
		pthread_mutex_unlock(&h->mu);
	}
	pthread_mutex_lock(&h->mu);
	h->running = 0;
	pthread_cond_broadcast(&h->cv);
	pthread_mutex_unlock(&h->mu);
	return NULL;
}

/* ---- the link ops ------------------------------------------------------------------ */

/* Why @p cannot move bytes any more (under h->mu). */
static int link_error(struct hub *h, struct peer *p, int sending, struct dp_err *err)
{
	if (h->rc)
		return dp_err_set(err, -h->rc, "%s", h->err.msg);
	if (p->remote_closed)
		return sending ? dp_err_set(err, EPIPE,
					    "exec: nccl link to rank %d: closed by the peer",
					    p->rank)
			       : dp_err_set(err, ECONNRESET, "exec: link closed by the peer");
	return dp_err_set(err, EPIPE, "exec: nccl link to rank %d is closed", p->rank);
}

static int nl_send(struct dp_pp_link *l, const void *buf, size_t len, struct dp_err *err)
{
	struct nccl_link *nl = (struct nccl_link *)l;
	struct hub *h = nl->h;
	struct peer *p = nl->p;
	int rc = 0;

	if (!len)
		return 0;
	pthread_mutex_lock(&h->mu);
	while (p->sbusy && !h->rc && h->running)
		pthread_cond_wait(&h->cv, &h->mu);
	if (h->rc || !h->running || p->remote_closed || p->local_closed) {
		rc = link_error(h, p, 1, err);
		pthread_mutex_unlock(&h->mu);
		return rc;
	}
	p->sbusy = 1;
	p->sbuf = buf;
	p->slen = len;
	p->spos = 0;
	pthread_cond_broadcast(&h->cv); /* wake an idle hub */
	while (p->spos < p->slen && !h->rc && h->running && !p->remote_closed)
		pthread_cond_wait(&h->cv, &h->mu);
	if (p->spos < p->slen)
		rc = link_error(h, p, 1, err);
	p->sbuf = NULL;
	p->slen = p->spos = 0;
	p->sbusy = 0;
	pthread_cond_broadcast(&h->cv);
	pthread_mutex_unlock(&h->mu);
	return rc;
}

static int nl_recv(struct dp_pp_link *l, void *buf, size_t len, struct dp_err *err)
{
	struct nccl_link *nl = (struct nccl_link *)l;
	struct hub *h = nl->h;
	struct peer *p = nl->p;
	size_t got = 0;
	int rc = 0;

	/* take bytes as they come: a read larger than INBOX_MAX must drain it */
	pthread_mutex_lock(&h->mu);
	while (got < len) {
		size_t avail = p->in.len - p->in_off, n = min_sz(avail, len - got);

		if (n) {
			memcpy((char *)buf + got, p->in.data + p->in_off, n);
			p->in_off += n;
			got += n;
			pthread_cond_broadcast(&h->cv); /* room again */
			continue;
		}
		if (h->rc || !h->running || p->remote_closed) {
			rc = link_error(h, p, 0, err);
			break;
		}
		pthread_cond_wait(&h->cv, &h->mu);
	}
	pthread_mutex_unlock(&h->mu);
	return rc;
}

static void hub_free(struct hub *h)
{
	if (!h)
		return;
	for (int i = 0; i < h->npeers; i++) {
		struct peer *p = &h->p[i];

		dp_buf_release(&p->in);
		(void)cudaFreeHost(p->h_out);
		(void)cudaFreeHost(p->h_in);
		(void)cudaFree(p->d_out);
		(void)cudaFree(p->d_in);
	}
	(void)cudaFreeHost(h->h_hdr);
	(void)cudaFree(h->d_hdr);
	if (h->stream)
		(void)cudaStreamDestroy(h->stream);
	free(h->p);
	free(h->pf);
	pthread_cond_destroy(&h->cv);
	pthread_mutex_destroy(&h->mu);
	free(h);
}

static void nl_close(struct dp_pp_link *l)
{
	struct nccl_link *nl = (struct nccl_link *)l;
	struct hub *h;
	int last;

	if (!nl)
		return;
	h = nl->h;
	pthread_mutex_lock(&h->mu);
	nl->p->local_closed = 1;
	last = --h->refs == 0;
	if (last)
		h->close_deadline = now_s() + CLOSE_WAIT_S;
	pthread_cond_broadcast(&h->cv);
	pthread_mutex_unlock(&h->mu);
	free(nl);
	if (!last)
		return;
	/* the hub ends once every pair said closed both ways (or failed) */
	(void)pthread_join(h->thr, NULL);
	if (!h->aborted) {
		(void)ncclCommFinalize(h->comm);
		(void)ncclCommDestroy(h->comm);
	}
	hub_free(h);
}

static const struct dp_pp_link_ops nccl_ops = {
	.name = "nccl",
	.send = nl_send,
	.recv = nl_recv,
	.close = nl_close,
};

/* ---- open ------------------------------------------------------------------------- */

/* The unique id: made by rank 0; read from every linked lower rank (all
 * must agree), then handed to every linked higher rank. */
static int share_id(int n, int rank, struct dp_pp_link *const *tcp, ncclUniqueId *id,
		    struct dp_err *err)
{
	struct id_msg m = { 0 };
	int have = 0, rc;

	if (rank == 0) {
		ncclResult_t nr = ncclGetUniqueId(id);

		if (nr != ncclSuccess)
			return dp_err_set(err, EIO, "exec: ncclGetUniqueId failed: %s",
					  ncclGetErrorString(nr));
		have = 1;
	}
	for (int j = 0; j < rank; j++) {
		if (!tcp[j])
			continue;
		rc = tcp[j]->ops->recv(tcp[j], &m, sizeof(m), err);
		if (rc)
			return rc;
		if (m.magic != ID_MAGIC || m.rank != (uint32_t)j)
			return dp_err_set(err, EPROTO, "exec: rank %d sent a bad NCCL id message",
					  j);
		if (have && memcmp(id, &m.id, sizeof(*id)) != 0)
			return dp_err_set(err, EPROTO,
					  "exec: rank %d sent another NCCL id than a lower rank",
					  j);
		*id = m.id;
		have = 1;
	}
	if (!have)
		return dp_err_set(err, EINVAL,
				  "exec: rank %d has no linked lower rank to get the NCCL id from",
				  rank);
	m.magic = ID_MAGIC;
	m.rank = (uint32_t)rank;
	m.id = *id;
	for (int j = rank + 1; j < n; j++)
		if (tcp[j] && (rc = tcp[j]->ops->send(tcp[j], &m, sizeof(m), err)))
			return rc;
	return 0;
}

/* Stream, headers, staging buffers.  0 or -EIO/-ENOMEM. */
static int hub_buffers(struct hub *h, struct dp_err *err)
{
	size_t hb = 2 * (size_t)h->npeers * sizeof(struct hdr);
	cudaError_t ce = cudaStreamCreateWithFlags(&h->stream, cudaStreamNonBlocking);

	if (ce == cudaSuccess)
		ce = cudaMallocHost((void **)&h->h_hdr, hb);
	if (ce == cudaSuccess)
		ce = cudaMalloc(&h->d_hdr, hb);
	for (int i = 0; i < h->npeers && ce == cudaSuccess; i++) {
		struct peer *p = &h->p[i];

		ce = cudaMallocHost((void **)&p->h_out, CHUNK);
		if (ce == cudaSuccess)
			ce = cudaMallocHost((void **)&p->h_in, CHUNK);
		if (ce == cudaSuccess)
			ce = cudaMalloc(&p->d_out, CHUNK);
		if (ce == cudaSuccess)
			ce = cudaMalloc(&p->d_in, CHUNK);
	}
	if (ce != cudaSuccess)
		return dp_err_set(err, ce == cudaErrorMemoryAllocation ? ENOMEM : EIO,
				  "exec: nccl link buffers: %s", cudaGetErrorString(ce));
	return 0;
}

int dp_pp_nccl_open(int n, int rank, int device, struct dp_pp_link *const *tcp,
		    struct dp_pp_link **out, struct dp_err *err)
{
	struct nccl_link **links = NULL;
	struct hub *h = NULL;
	ncclUniqueId id;
	ncclResult_t nr;
	cudaError_t ce;
	int count = 0, rc, k = 0, comm_ok = 0;

	if (n < 1 || rank < 0 || rank >= n || device < 0)
		return dp_err_set(err, EINVAL, "exec: nccl links: bad rank %d of %d or device %d",
				  rank, n, device);
	for (int j = 0; j < n; j++)
		out[j] = NULL;
	ce = cudaGetDeviceCount(&count);
	if (ce != cudaSuccess || device >= count)
		return dp_err_set(err, ENODEV, "exec: nccl links: no CUDA device %d (%s)", device,
				  ce != cudaSuccess ? cudaGetErrorString(ce)
				  : count == 1	    ? "1 device"
						    : "fewer devices");
	ce = cudaSetDevice(device);
	if (ce != cudaSuccess)
		return dp_err_set(err, EIO, "exec: nccl links: cudaSetDevice(%d): %s", device,
				  cudaGetErrorString(ce));
	rc = share_id(n, rank, tcp, &id, err);
	if (rc)
		return rc;
	h = calloc(1, sizeof(*h));
	links = calloc((size_t)n, sizeof(struct nccl_link *));
	if (!h || !links) {
		free(h);
		free(links);
		return dp_err_set(err, ENOMEM, "exec: out of memory");
	}
	(void)pthread_mutex_init(&h->mu, NULL);
	(void)pthread_cond_init(&h->cv, NULL);
	h->device = device;
	for (int j = 0; j < n; j++)
		h->npeers += tcp[j] != NULL && j != rank;
	h->p = calloc((size_t)(h->npeers ? h->npeers : 1), sizeof(*h->p));
	h->pf = calloc((size_t)(h->npeers ? h->npeers : 1), sizeof(*h->pf));
	if (!h->p || !h->pf) {
		rc = dp_err_set(err, ENOMEM, "exec: out of memory");
		goto fail;
	}
	for (int j = 0; j < n; j++) {
		struct peer *p;

		if (!tcp[j] || j == rank)
			continue;
		p = &h->p[k++];
		p->rank = j;
		p->fd = dp_pp_link_fd_of(tcp[j]);
		p->active = 1;
		p->credit = CHUNK; /* until its first header says more */
		dp_buf_init(&p->in, INBOX_MAX + CHUNK);
	}
	/* collective over the n ranks */
	nr = ncclCommInitRank(&h->comm, n, id, rank);
	if (nr != ncclSuccess) {
		rc = dp_err_set(err, EIO, "exec: ncclCommInitRank (rank %d of %d, device %d): %s",
				rank, n, device, ncclGetErrorString(nr));
		goto fail;
	}
	comm_ok = 1;
	rc = hub_buffers(h, err);
	if (rc)
		goto fail;
	for (int i = 0; i < h->npeers; i++) {
		struct nccl_link *l = calloc(1, sizeof(*l));

		if (!l) {
			rc = dp_err_set(err, ENOMEM, "exec: out of memory");
			goto fail;
		}
		l->base.ops = &nccl_ops;
		l->h = h;
		l->p = &h->p[i];
		links[h->p[i].rank] = l;
	}
	h->running = 1;
	h->refs = h->npeers;
	if (pthread_create(&h->thr, NULL, hub_main, h) != 0) {
		h->running = 0;
		rc = dp_err_set(err, EAGAIN, "exec: cannot start the nccl link thread");
		goto fail;
	}
	if (h->npeers == 0) {
		/* nothing to talk to: no link will close the hub, so end it now */
		(void)pthread_join(h->thr, NULL);
		(void)ncclCommFinalize(h->comm);
		(void)ncclCommDestroy(h->comm);
		hub_free(h);
	}
	for (int j = 0; j < n; j++)
		out[j] = links[j] ? &links[j]->base : NULL;
	free(links);
	return 0;
fail:
	for (int j = 0; j < n; j++)
		free(links[j]);
	free(links);
	if (comm_ok)
		(void)ncclCommAbort(h->comm); /* the peers' rounds fail instead of waiting */
	hub_free(h);
	return rc;
}
