/* a2a/a2a_int.h - private to a2a/: the transport table, endpoints and the
 * framed byte-stream engine shared by the loop, shm and tcp transports. */
#ifndef DP_A2A_INT_H
#define DP_A2A_INT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "a2a/dp_a2a.h"
#include "common/dp_err.h"
#include "common/dp_util.h"

/* Every message is a frame: this header, then len payload bytes. */
#define DP_A2A_FRAME_MAGIC 0x44504132u /* "DPA2" */
#define DP_A2A_FRAME_MAX   (1ull << 34)
#define DP_A2A_CHUNK_DEF   (128u << 10) /* default two-hop chunk, bytes */

struct dp_a2a_frame_hdr {
	uint32_t magic;
	uint32_t tag;
	uint64_t len;
};

struct dp_a2a_ep;

/* A transport backend.  Mandatory: name, probe, open, send, recv, close.
 * Optional ops point at dp_a2a_no_* stubs (-EOPNOTSUPP), never NULL. */
struct dp_a2a_transport {
	const char *name;
	/* 0 and *priority, or -ENODEV (not on this host) / -ENOSYS (not
	 * built); allocates nothing.  @err may say why. */
	int (*probe)(int *priority, struct dp_err *err);
	int (*open)(const struct dp_a2a_comm_cfg *cfg, struct dp_a2a_ep **out, struct dp_err *err);
	/* Queue one message for @peer (may be this rank); @buf is copied. */
	int (*send)(struct dp_a2a_ep *ep, int peer, uint32_t tag, const void *buf, size_t len,
		    struct dp_err *err);
	/* send, taking @buf (malloc'd, or NULL when @len is 0) instead of
	 * copying it: freed by the transport, also on error.  Transports that
	 * would copy anyway use dp_a2a_send_take_copy. */
	int (*send_take)(struct dp_a2a_ep *ep, int peer, uint32_t tag, void *buf, size_t len,
			 struct dp_err *err);
	/* Next message from @peer, which must carry @tag (-EPROTO otherwise).
	 * *buf is malloc'd (caller frees; NULL when len is 0). */
	int (*recv)(struct dp_a2a_ep *ep, int peer, uint32_t tag, void **buf, size_t *len,
		    struct dp_err *err);
	/* The next message from whichever of @peers[0..n-1] has one complete
	 * first (earlier entries win when several have), which must carry
	 * @tags[i] (-EPROTO otherwise); *which = its index i.  Bounded by the
	 * endpoint's timeout.  Transports that cannot wait on several peers use
	 * dp_a2a_recv_any_first (blocks on @peers[0]): callers must list peers
	 * so that waiting on the first one cannot deadlock. */
	int (*recv_any)(struct dp_a2a_ep *ep, const int *peers, const uint32_t *tags, int n,
			int *which, void **buf, size_t *len, struct dp_err *err);
	/* optional: recv_any that does not wait: one pass moving whatever the
	 * transport can move now, then the first complete message as recv_any
	 * would return it, or -EAGAIN (no error text) when none is in yet.
	 * Lets a rank handle arrivals between its own compute steps. */
	int (*try_recv_any)(struct dp_a2a_ep *ep, const int *peers, const uint32_t *tags, int n,
			    int *which, void **buf, size_t *len, struct dp_err *err);
	/* optional: wait until every queued send has left this rank */
	int (*flush)(struct dp_a2a_ep *ep, struct dp_err *err);
	/* optional: one-sided copy into @peer's registered window at @off */
	int (*put)(struct dp_a2a_ep *ep, int peer, size_t off, const void *src, size_t len,
		   struct dp_err *err);
	void (*close)(struct dp_a2a_ep *ep); /* NULL-safe */
};

/* The generic part of an endpoint; backends embed it first. */
struct dp_a2a_ep {
	const struct dp_a2a_transport *tp;
	int rank, world, rpn;
	int timeout_ms;
};

/* The communicator: an endpoint plus the job shape. */
struct dp_a2a_comm {
	struct dp_a2a_ep *ep;
	int rank, nodes, rpn, world;
	int experts, epr, hidden;
	int chunk_rows; /* two-hop pipelining: tokens per chunk, >= 1 */
	int busy;	/* an issue is in flight */
};

int dp_a2a_no_flush(struct dp_a2a_ep *ep, struct dp_err *err);
/* send_take as send + free. */
int dp_a2a_send_take_copy(struct dp_a2a_ep *ep, int peer, uint32_t tag, void *buf, size_t len,
			  struct dp_err *err);
/* recv_any for transports without a multi-peer wait: recv from @peers[0]. */
int dp_a2a_recv_any_first(struct dp_a2a_ep *ep, const int *peers, const uint32_t *tags, int n,
			  int *which, void **buf, size_t *len, struct dp_err *err);
int dp_a2a_no_try_recv_any(struct dp_a2a_ep *ep, const int *peers, const uint32_t *tags, int n,
			   int *which, void **buf, size_t *len, struct dp_err *err);
int dp_a2a_no_put(struct dp_a2a_ep *ep, int peer, size_t off, const void *src, size_t len,
		  struct dp_err *err);

extern const struct dp_a2a_transport dp_a2a_loop_tp, dp_a2a_shm, dp_a2a_tcp, dp_a2a_verbs,
	dp_a2a_cuda;

/* Every table (built and stub), NULL-terminated, for the contract test. */
const struct dp_a2a_transport *const *dp_a2a_transport_all(void);
/* Pick: @want, else $DP_A2A_TRANSPORT, else the highest probe priority. */
const struct dp_a2a_transport *dp_a2a_transport_pick(const char *want, struct dp_err *err);

/* ---- framed stream engine ------------------------------------------------
 * A backend that can move bytes per peer (tcp socket, shm ring) supplies
 * these; dp_a2a_stream_* turns them into send/recv of frames with queues on
 * both sides, so that all-to-all sends never deadlock on full buffers. */
struct dp_a2a_stream;

struct dp_a2a_stream_ops {
	/* >= 0 bytes written, or -errno (peer gone) */
	ssize_t (*write_some)(struct dp_a2a_stream *s, int peer, const void *buf, size_t n);
	/* > 0 bytes read, 0 nothing now, -ECONNRESET peer closed, -errno */
	ssize_t (*read_some)(struct dp_a2a_stream *s, int peer, void *buf, size_t n);
	/* sleep until something may have changed, at most @ms */
	void (*wait)(struct dp_a2a_stream *s, int ms);
	/* 0 alive or unknown, -ECONNRESET: the peer process is gone */
	int (*peer_alive)(struct dp_a2a_stream *s, int peer);
	/* Optional (NULL: the engine tries every peer, then wait()s).  Wait up
	 * to @ms for any peer to become readable, or writable if it has frames
	 * queued (dp_a2a_stream_wants_write); set ready[peer] to a mask of
	 * DP_A2A_READY_IN / _OUT; return the number of ready peers (0: none). */
	int (*poll)(struct dp_a2a_stream *s, int ms, unsigned char *ready);
	/* Optional (NULL: write_some on the first piece): gather write. */
	ssize_t (*writev_some)(struct dp_a2a_stream *s, int peer, const struct iovec *iov, int n);
};

#define DP_A2A_READY_IN	 1
#define DP_A2A_READY_OUT 2

struct dp_a2a_squeue; /* private to stream.c */

struct dp_a2a_stream {
	struct dp_a2a_ep ep; /* first */
	const struct dp_a2a_stream_ops *ops;
	const char *what;	 /* "tcp", "shm" for messages */
	struct dp_a2a_squeue *q; /* per-peer state */
};

#define dp_container_of_stream(e) dp_container_of(e, struct dp_a2a_stream, ep)

/* Non-zero if frames for @peer are waiting to be written. */
int dp_a2a_stream_wants_write(const struct dp_a2a_stream *s, int peer);

int dp_a2a_stream_init(struct dp_a2a_stream *s, struct dp_err *err);
void dp_a2a_stream_release(struct dp_a2a_stream *s);
int dp_a2a_stream_send(struct dp_a2a_ep *ep, int peer, uint32_t tag, const void *buf, size_t len,
		       struct dp_err *err);
int dp_a2a_stream_send_take(struct dp_a2a_ep *ep, int peer, uint32_t tag, void *buf, size_t len,
			    struct dp_err *err);
int dp_a2a_stream_recv(struct dp_a2a_ep *ep, int peer, uint32_t tag, void **buf, size_t *len,
		       struct dp_err *err);
int dp_a2a_stream_recv_any(struct dp_a2a_ep *ep, const int *peers, const uint32_t *tags, int n,
			   int *which, void **buf, size_t *len, struct dp_err *err);
int dp_a2a_stream_try_recv_any(struct dp_a2a_ep *ep, const int *peers, const uint32_t *tags, int n,
			       int *which, void **buf, size_t *len, struct dp_err *err);
int dp_a2a_stream_flush(struct dp_a2a_ep *ep, struct dp_err *err);

/* The shm rings among the ranks of one node for the tcp transport: a shm
 * endpoint for @cfg (nodes 1, rank = local index) whose doorbells are
 * datagrams on *bell_fd (owned by the endpoint; poll it for POLLIN, then
 * dp_a2a_shm_drain_bell and try every ring).  Use its raw stream ops
 * (write_some / read_some / peer_alive), not its queues. */
int dp_a2a_shm_open_polled(const struct dp_a2a_comm_cfg *cfg, struct dp_a2a_ep **out, int *bell_fd,
			   struct dp_err *err);
void dp_a2a_shm_drain_bell(struct dp_a2a_ep *ep);

/* Monotonic milliseconds, microseconds. */
int64_t dp_a2a_now_ms(void);
int64_t dp_a2a_now_us(void);

/* Kernels (a2a_kernels.cu with CUDA; -ENOSYS without).  Device pointers. */
int dp_a2a_cuda_pack(const float *x, const int32_t *rows, int n, int hidden, float *out,
		     void *stream);
int dp_a2a_cuda_unpack(const float *in, const int32_t *rows, int n, int hidden, float *x,
		       void *stream);
int dp_a2a_cuda_combine(const float *y, const float *w, const int32_t *slot_off, int ntok,
			int hidden, float *out, void *stream);

/* cuda: one NCCL group of sends and receives of device buffers with every
 * rank (lengths in bytes, 0 = none); returns when all are done.  -ENOSYS
 * without CUDA, -EINVAL if @ep is not a cuda endpoint. */
int dp_a2a_cuda_exchange(struct dp_a2a_ep *ep, const void *const *sendbuf, const size_t *sendlen,
			 void *const *recvbuf, const size_t *recvlen, struct dp_err *err);

#endif
