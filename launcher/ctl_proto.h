/* launcher/ctl_proto.h - the dpctl control-plane protocol between the
 * controller (dpctl) and the workers (dpworker).
 *
 * Wire format: every message is one frame
 *
 *   offset 0  u16  magic 0xD9C7 (big-endian)
 *          2  u8   protocol version (DP_CTL_VERSION)
 *          3  u8   message type (enum dp_ctl_type)
 *          4  u32  payload length in bytes (big-endian), at most DP_CTL_MAX_PAYLOAD
 *          8  ...  payload
 *
 * Payload fields are written in a fixed order per type: integers big-endian,
 * doubles as their IEEE-754 bits in a u64, strings as a u16 length followed by
 * that many bytes (no NUL inside, at most the field's capacity - 1).  A
 * payload must be consumed exactly: trailing bytes make the frame garbled.
 *
 * Worker -> controller: HELLO (first frame, carries the job token), READY,
 * HEARTBEAT, LOG, DONE; a training worker also sends ENDPOINT (its PP listen
 * address and the ranks it needs to reach) before READY, STEP after every
 * training step and TIMELINE (op start/end times of its last step) before
 * DONE.  Controller -> worker: PEERS (the addresses a rank asked for, in as
 * many frames as needed, before START), START, STOP, DUMP_STACKS.
 *
 * Pre-flight (only when the run has health.preflight checks): the controller
 * answers a HELLO with PREFLIGHT_PROBE, the worker replies PREFLIGHT with
 * its node report (launcher/dp_preflight.h); START is only sent once every
 * report passed.
 *
 * Versions: 1 had hello..dump-stacks; 2 added endpoint, step, timeline,
 * peers, preflight and preflight-probe.  Both ends refuse a frame of another version (one build
 * runs both ends of a job), so a mixed installation fails at hello with a clear reason.
 *
 * The decoder never trusts the peer: any bad frame yields a negative errno
 * and a reason, and the connection must then be closed (there is no resync).
 * Functions here are pure (no global state) and thread-safe on distinct
 * objects.
 */
#ifndef DP_CTL_PROTO_H
#define DP_CTL_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "common/dp_buf.h"
#include "common/dp_err.h"

#define DP_CTL_MAGIC	   0xD9C7u
#define DP_CTL_VERSION	   2
#define DP_CTL_HDR_LEN	   8
#define DP_CTL_MAX_PAYLOAD 8192
#define DP_CTL_TOKEN_LEN   32 /* raw bytes; hex in DP_JOB_TOKEN */
#define DP_CTL_HOST_MAX	   256
#define DP_CTL_TOPO_MAX	   1024
#define DP_CTL_LINE_MAX	   4096
#define DP_CTL_REASON_MAX  256
#define DP_CTL_ADDR_MAX	   64  /* a numeric IPv4/IPv6 address or a host name */
#define DP_CTL_WANT_MAX	   512 /* ranks one ENDPOINT may ask for */
#define DP_CTL_PEERS_MAX   100 /* peers in one PEERS frame (100 * 71 bytes fit) */
#define DP_CTL_TL_MAX	   200 /* ops in one TIMELINE frame (200 * 27 bytes fit) */

enum dp_ctl_type {
	DP_CTL_HELLO = 1,
	DP_CTL_READY = 2,
	DP_CTL_HEARTBEAT = 3,
	DP_CTL_LOG = 4,
	DP_CTL_DONE = 5,
	DP_CTL_ENDPOINT = 6, /* v2 */
	DP_CTL_STEP = 7,     /* v2 */
	DP_CTL_TIMELINE = 8, /* v2 */
	DP_CTL_START = 16,
	DP_CTL_STOP = 17,
	DP_CTL_DUMP_STACKS = 18,
	DP_CTL_PEERS = 19, /* v2 */
	/* ---- pre-flight gate (health.preflight) ---- */
	DP_CTL_PREFLIGHT = 32,	     /* worker -> controller: struct dp_ctl_preflight */
	DP_CTL_PREFLIGHT_PROBE = 33, /* controller -> worker: send your report now */
				     /* ---- end of pre-flight ---- */
};

struct dp_ctl_hello {
	uint32_t rank;
	uint32_t pid;
	uint8_t token[DP_CTL_TOKEN_LEN];
	char host[DP_CTL_HOST_MAX];
	char topo[DP_CTL_TOPO_MAX]; /* free-form topology summary, e.g. "gpus=8 nics=8" */
};

struct dp_ctl_heartbeat {
	uint64_t step;
	double loss;
	double tokens_per_s;
	uint64_t mem_bytes;
};

/* ENDPOINT: where this rank accepts PP links, and which ranks it will dial
 * or accept (the controller answers with exactly those in PEERS). */
struct dp_ctl_endpoint {
	char addr[DP_CTL_ADDR_MAX]; /* non-empty */
	uint16_t port;		    /* 1..65535 */
	uint16_t nwant;		    /* 0..DP_CTL_WANT_MAX */
	uint32_t want[DP_CTL_WANT_MAX];
};

/* One entry of PEERS. */
struct dp_ctl_peer {
	uint32_t rank;
	uint16_t port; /* 1..65535 */
	char addr[DP_CTL_ADDR_MAX];
};

struct dp_ctl_peers {
	uint16_t n; /* 1..DP_CTL_PEERS_MAX */
	struct dp_ctl_peer v[DP_CTL_PEERS_MAX];
};

/* STEP: what one rank did in training step @step (0-based).  Summing
 * loss_share over all ranks gives the step loss (only ranks holding a head
 * stage have a non-zero share); summing tokens gives the tokens trained
 * (only ranks holding an embedding stage count them). */
struct dp_ctl_step {
	uint64_t step;
	double loss_share; /* NaN allowed (diverged), not infinite */
	uint64_t tokens;
	double seconds;	    /* wall time of the step on this rank, finite, >= 0 */
	uint32_t peak_live; /* most activation contexts alive at once */
	uint64_t mem_bytes; /* peak resident memory */
};

/* One compute op of a TIMELINE: times in ns of CLOCK_MONOTONIC on the
 * rank's host, end >= start. */
#define DP_CTL_TL_KIND_MAX 4 /* kinds are enum dp_sched_kind F..FB (0..4) */
struct dp_ctl_tl_op {
	uint8_t kind; /* enum dp_sched_kind: F, B, I, W or FB (0..DP_CTL_TL_KIND_MAX) */
	uint8_t leg, leg2;
	int32_t micro, micro2;
	uint64_t start_ns, end_ns;
};

/* TIMELINE: the compute ops of one step of one rank (a step with more ops
 * than DP_CTL_TL_MAX comes in several frames with the same header). */
struct dp_ctl_timeline {
	uint64_t step;
	uint64_t t0_ns, t1_ns; /* the step's start and end on this rank, t1 >= t0 */
	uint16_t n;	       /* 0..DP_CTL_TL_MAX */
	struct dp_ctl_tl_op op[DP_CTL_TL_MAX];
};

struct dp_ctl_log {
	uint8_t stream; /* 1 = stdout, 2 = stderr */
	char line[DP_CTL_LINE_MAX];
};

/* ---- pre-flight gate (health.preflight) ------------------------------------
 * A worker's node report.  Payload order: checks u32, gpus i32, nics i32,
 * disk_free u64, clock f64 (finite), then the strings version, disk_path,
 * topo, error. */
#define DP_CTL_VERSION_MAX 64
#define DP_CTL_PF_STR_MAX  256

struct dp_ctl_preflight {
	uint32_t checks;		   /* DP_PF_* bits the worker gathered */
	int32_t gpus;			   /* GPUs seen, -1 if not gathered */
	int32_t nics;			   /* usable RDMA NICs seen, -1 if not gathered */
	uint64_t disk_free;		   /* bytes free at disk_path (unprivileged user) */
	double clock;			   /* CLOCK_REALTIME seconds when the report was sent */
	char version[DP_CTL_VERSION_MAX];  /* dpworker version string */
	char disk_path[DP_CTL_PF_STR_MAX]; /* where free space was measured */
	char topo[DP_CTL_PF_STR_MAX];	   /* first topology problem, "" if none */
	char error[DP_CTL_PF_STR_MAX];	   /* what could not be gathered, "" if all */
};
/* ---- end of pre-flight ---- */

/* One decoded message.  Only the member matching @type is meaningful. */
struct dp_ctl_msg {
	enum dp_ctl_type type;
	union {
		struct dp_ctl_hello hello;
		struct dp_ctl_heartbeat hb;
		struct dp_ctl_log log;
		struct dp_ctl_endpoint ep;
		struct dp_ctl_peers peers;
		struct dp_ctl_step step;
		struct dp_ctl_timeline tl;
		int32_t done_status;		/* DONE: exit status, 128+sig for a signal */
		uint32_t world_size;		/* START */
		char reason[DP_CTL_REASON_MAX]; /* STOP: why the controller stops the run */
		struct dp_ctl_preflight pf;	/* PREFLIGHT */
		double probe_clock; /* PREFLIGHT_PROBE: controller CLOCK_REALTIME (finite) */
	} u;
};

/* Name of a message type ("hello"), or "unknown". */
const char *dp_ctl_type_name(int type);

/* Append the frame for @m to @out.  0, -EINVAL (unknown type, string too long
 * or containing a NUL-free violation), or -ENOMEM/-E2BIG from the buffer; on
 * error @out is unchanged. */
int dp_ctl_encode(const struct dp_ctl_msg *m, struct dp_buf *out, struct dp_err *err);

/* Decode one frame from the start of @buf (@len bytes available).
 *   > 0      a whole frame was decoded into *m; the value is its size in bytes
 *   0        not enough bytes yet (only possible while the header looks valid)
 *   -EPROTO  bad magic or unsupported version
 *   -EMSGSIZE payload length above DP_CTL_MAX_PAYLOAD
 *   -ENOMSG  unknown message type
 *   -EBADMSG garbled payload (short field, overlong string, trailing bytes,
 *            NUL in a string, non-finite number where one is not allowed)
 * On error @err holds the reason; *m is written only on success. */
long dp_ctl_decode(const void *buf, size_t len, struct dp_ctl_msg *m, struct dp_err *err);

/* Receive-side reassembly for a stream socket.  Caller-embedded; one per
 * connection; holds at most one maximal frame. */
struct dp_ctl_rx {
	size_t len;
	unsigned char buf[DP_CTL_HDR_LEN + DP_CTL_MAX_PAYLOAD];
};

void dp_ctl_rx_init(struct dp_ctl_rx *rx);

/* read() once from @fd into @rx.  Returns bytes read (> 0), 0 on end of
 * stream, -EAGAIN if nothing is available, or -errno. */
long dp_ctl_rx_fill(struct dp_ctl_rx *rx, int fd);

/* Take the next whole message out of @rx: 1 with *m set, 0 if more bytes are
 * needed, or a negative errno from dp_ctl_decode() (close the connection). */
int dp_ctl_rx_next(struct dp_ctl_rx *rx, struct dp_ctl_msg *m, struct dp_err *err);

/* Fill @token with DP_CTL_TOKEN_LEN random bytes from getrandom(2). */
int dp_ctl_token_new(uint8_t token[DP_CTL_TOKEN_LEN], struct dp_err *err);

/* Hex form (2*DP_CTL_TOKEN_LEN chars + NUL) into @hex of @hexlen bytes. */
int dp_ctl_token_to_hex(const uint8_t token[DP_CTL_TOKEN_LEN], char *hex, size_t hexlen);

/* Parse exactly 2*DP_CTL_TOKEN_LEN hex digits.  0 or -EINVAL. */
int dp_ctl_token_from_hex(const char *hex, uint8_t token[DP_CTL_TOKEN_LEN], struct dp_err *err);

/* Compare two tokens in time independent of their contents: 1 if equal. */
int dp_ctl_token_equal(const uint8_t a[DP_CTL_TOKEN_LEN], const uint8_t b[DP_CTL_TOKEN_LEN]);

/* Write all of @len bytes of @buf to blocking @fd (retrying EINTR and short
 * writes).  0 or -errno. */
int dp_ctl_write_all(int fd, const void *buf, size_t len);

#endif
