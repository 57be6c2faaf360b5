/* launcher/ctl_proto.c - encoder/decoder of the control-plane frames.
 *
 * The decoder is written for hostile input (it is fuzzed by
 * tests/fuzz/fuzz_ctl_proto.c): every read is bounds-checked against the
 * declared payload length, which itself is checked before anything else.
 */
#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "launcher/ctl_proto.h"
#include "common/dp_banned.h"
#include "common/dp_util.h"

const char *dp_ctl_type_name(int type)
{
	switch (type) {
	case DP_CTL_HELLO:
		return "hello";
	case DP_CTL_READY:
		return "ready";
	case DP_CTL_HEARTBEAT:
		return "heartbeat";
	case DP_CTL_LOG:
		return "log";
	case DP_CTL_DONE:
		return "done";
	case DP_CTL_ENDPOINT:
		return "endpoint";
	case DP_CTL_STEP:
		return "step";
	case DP_CTL_TIMELINE:
		return "timeline";
	case DP_CTL_PEERS:
		return "peers";
	case DP_CTL_START:
		return "start";
	case DP_CTL_STOP:
		return "stop";
	case DP_CTL_DUMP_STACKS:
		return "dump-stacks";
	case DP_CTL_PREFLIGHT:
		return "preflight";
	case DP_CTL_PREFLIGHT_PROBE:
		return "preflight-probe";
	default:
		return "unknown";
	}
}

/* ---- writer ---------------------------------------------------------------- */

struct wr {
	unsigned char *p;
	size_t len, cap;
	int bad; /* set once something did not fit or was invalid */
};

static void put_bytes(struct wr *w, const void *src, size_t n)
{
	if (w->bad || n > w->cap - w->len) {
		w->bad = 1;
		return;
	}
	memcpy(w->p + w->len, src, n);
	w->len += n;
}

static void put_u8(struct wr *w, uint8_t v)
{
	put_bytes(w, &v, 1);
}

static void put_u16(struct wr *w, uint16_t v)
{
	unsigned char b[2] = { (unsigned char)(v >> 8), (unsigned char)v };

	put_bytes(w, b, 2);
}

static void put_u32(struct wr *w, uint32_t v)
{
	unsigned char b[4] = { (unsigned char)(v >> 24), (unsigned char)(v >> 16),
			       (unsigned char)(v >> 8), (unsigned char)v };

	put_bytes(w, b, 4);
}

static void put_u64(struct wr *w, uint64_t v)
{
	put_u32(w, (uint32_t)(v >> 32));
	put_u32(w, (uint32_t)v);
}

static void put_f64(struct wr *w, double d)
{
	uint64_t v;

	memcpy(&v, &d, sizeof(v));
	put_u64(w, v);
}

/* A string field of capacity @cap (including the NUL the struct keeps). */
static void put_str(struct wr *w, const char *s, size_t cap)
{
	size_t n = strnlen(s, cap);

	if (n >= cap) {
		w->bad = 1;
		return;
	}
	put_u16(w, (uint16_t)n);
	put_bytes(w, s, n);
}

static void encode_endpoint(struct wr *w, const struct dp_ctl_endpoint *e)
{
	if (!e->port || !e->addr[0] || e->nwant > DP_CTL_WANT_MAX) {
		w->bad = 1;
		return;
	}
	put_str(w, e->addr, sizeof(e->addr));
	put_u16(w, e->port);
	put_u16(w, e->nwant);
	for (unsigned i = 0; i < e->nwant; i++)
		put_u32(w, e->want[i]);
}

static void encode_timeline(struct wr *w, const struct dp_ctl_timeline *t)
{
	if (t->n > DP_CTL_TL_MAX || t->t1_ns < t->t0_ns) {
		w->bad = 1;
		return;
	}
	put_u64(w, t->step);
	put_u64(w, t->t0_ns);
	put_u64(w, t->t1_ns);
	put_u16(w, t->n);
	for (unsigned i = 0; i < t->n; i++) {
		const struct dp_ctl_tl_op *o = &t->op[i];

		if (o->kind > DP_CTL_TL_KIND_MAX || o->end_ns < o->start_ns)
			w->bad = 1;
		put_u8(w, o->kind);
		put_u8(w, o->leg);
		put_u8(w, o->leg2);
		put_u32(w, (uint32_t)o->micro);
		put_u32(w, (uint32_t)o->micro2);
		put_u64(w, o->start_ns);
		put_u64(w, o->end_ns);
	}
}

int dp_ctl_encode(const struct dp_ctl_msg *m, struct dp_buf *out, struct dp_err *err)
{
	unsigned char frame[DP_CTL_HDR_LEN + DP_CTL_MAX_PAYLOAD];
	struct wr w = { frame + DP_CTL_HDR_LEN, 0, DP_CTL_MAX_PAYLOAD, 0 };
	struct wr h = { frame, 0, DP_CTL_HDR_LEN, 0 };
	int rc;

	switch (m->type) {
	case DP_CTL_HELLO:
		put_u32(&w, m->u.hello.rank);
		put_u32(&w, m->u.hello.pid);
		put_bytes(&w, m->u.hello.token, DP_CTL_TOKEN_LEN);
		put_str(&w, m->u.hello.host, sizeof(m->u.hello.host));
		put_str(&w, m->u.hello.topo, sizeof(m->u.hello.topo));
		break;
	case DP_CTL_READY:
	case DP_CTL_DUMP_STACKS:
		break;
	case DP_CTL_HEARTBEAT:
		put_u64(&w, m->u.hb.step);
		put_f64(&w, m->u.hb.loss);
		put_f64(&w, m->u.hb.tokens_per_s);
		put_u64(&w, m->u.hb.mem_bytes);
		break;
	case DP_CTL_LOG:
		if (m->u.log.stream != 1 && m->u.log.stream != 2)
			w.bad = 1;
		put_u8(&w, m->u.log.stream);
		put_str(&w, m->u.log.line, sizeof(m->u.log.line));
		break;
	case DP_CTL_DONE:
		put_u32(&w, (uint32_t)m->u.done_status);
		break;
	case DP_CTL_START:
		put_u32(&w, m->u.world_size);
		break;
	case DP_CTL_STOP:
		put_str(&w, m->u.reason, sizeof(m->u.reason));
		break;
	case DP_CTL_ENDPOINT:
		encode_endpoint(&w, &m->u.ep);
		break;
	case DP_CTL_PEERS:
		if (m->u.peers.n == 0 || m->u.peers.n > DP_CTL_PEERS_MAX) {
			w.bad = 1;
			break;
		}
		put_u16(&w, m->u.peers.n);
		for (unsigned i = 0; i < m->u.peers.n; i++) {
			const struct dp_ctl_peer *p = &m->u.peers.v[i];

			if (!p->port || !p->addr[0])
				w.bad = 1;
			put_u32(&w, p->rank);
			put_str(&w, p->addr, sizeof(p->addr));
			put_u16(&w, p->port);
		}
		break;
	case DP_CTL_STEP:
		if (isinf(m->u.step.loss_share) || !isfinite(m->u.step.seconds) ||
		    m->u.step.seconds < 0)
			w.bad = 1;
		put_u64(&w, m->u.step.step);
		put_f64(&w, m->u.step.loss_share);
		put_u64(&w, m->u.step.tokens);
		put_f64(&w, m->u.step.seconds);
		put_u32(&w, m->u.step.peak_live);
		put_u64(&w, m->u.step.mem_bytes);
		break;
	case DP_CTL_TIMELINE:
		encode_timeline(&w, &m->u.tl);
		break;
	/* ---- pre-flight ---- */
	case DP_CTL_PREFLIGHT:
		if (!isfinite(m->u.pf.clock))
			w.bad = 1;
		put_u32(&w, m->u.pf.checks);
		put_u32(&w, (uint32_t)m->u.pf.gpus);
		put_u32(&w, (uint32_t)m->u.pf.nics);
		put_u64(&w, m->u.pf.disk_free);
		put_f64(&w, m->u.pf.clock);
		put_str(&w, m->u.pf.version, sizeof(m->u.pf.version));
		put_str(&w, m->u.pf.disk_path, sizeof(m->u.pf.disk_path));
		put_str(&w, m->u.pf.topo, sizeof(m->u.pf.topo));
		put_str(&w, m->u.pf.error, sizeof(m->u.pf.error));
		break;
	case DP_CTL_PREFLIGHT_PROBE:
		if (!isfinite(m->u.probe_clock))
			w.bad = 1;
		put_f64(&w, m->u.probe_clock);
		break;
	default:
		return dp_err_set(err, EINVAL, "ctl: cannot encode unknown message type %d",
				  (int)m->type);
	}
	if (w.bad)
		return dp_err_set(err, EINVAL, "ctl: invalid or overlong field in '%s' message",
				  dp_ctl_type_name((int)m->type));
	put_u16(&h, DP_CTL_MAGIC);
	put_u8(&h, DP_CTL_VERSION);
	put_u8(&h, (uint8_t)m->type);
	put_u32(&h, (uint32_t)w.len);
	rc = dp_buf_add(out, frame, DP_CTL_HDR_LEN + w.len);
	if (rc)
		return dp_err_set(err, -rc, "ctl: cannot queue '%s' message: %s",
				  dp_ctl_type_name((int)m->type), strerror(-rc));
	return 0;
}

/* ---- reader ---------------------------------------------------------------- */

struct rd {
	const unsigned char *p;
	size_t len, off;
	const char *fail; /* first field that failed, NULL if none */
};

static int get_bytes(struct rd *r, void *dst, size_t n, const char *what)
{
	if (r->fail)
		return -1;
	if (n > r->len - r->off) {
		r->fail = what;
		return -1;
	}
	memcpy(dst, r->p + r->off, n);
	r->off += n;
	return 0;
}

static uint8_t get_u8(struct rd *r, const char *what)
{
	uint8_t v = 0;

	(void)get_bytes(r, &v, 1, what);
	return v;
}

static uint16_t get_u16(struct rd *r, const char *what)
{
	unsigned char b[2] = { 0 };

	(void)get_bytes(r, b, 2, what);
	return (uint16_t)((b[0] << 8) | b[1]);
}

static uint32_t get_u32(struct rd *r, const char *what)
{
	unsigned char b[4] = { 0 };

	(void)get_bytes(r, b, 4, what);
	return ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) | b[3];
}

static uint64_t get_u64(struct rd *r, const char *what)
{
	uint64_t hi = get_u32(r, what);

	return (hi << 32) | get_u32(r, what);
}

static double get_f64(struct rd *r, const char *what)
{
	uint64_t v = get_u64(r, what);
	double d;

	memcpy(&d, &v, sizeof(d));
	return d;
}

static void get_str(struct rd *r, char *dst, size_t cap, const char *what)
{
	uint16_t n = get_u16(r, what);

	if (r->fail)
		return;
	if ((size_t)n >= cap) {
		r->fail = what;
		return;
	}
	if (get_bytes(r, dst, n, what))
		return;
	dst[n] = '\0';
	if (memchr(dst, '\0', n))
		r->fail = what;
}

static void get_finite(struct rd *r, double *dst, const char *what)
{
	double d = get_f64(r, what);

	/* NaN is allowed ("not known"), infinities are not */
	if (!r->fail && isinf(d))
		r->fail = what;
	*dst = d;
}

static void decode_endpoint(struct rd *r, struct dp_ctl_endpoint *e)
{
	get_str(r, e->addr, sizeof(e->addr), "address");
	if (!r->fail && !e->addr[0])
		r->fail = "address";
	e->port = get_u16(r, "port");
	if (!r->fail && !e->port)
		r->fail = "port";
	e->nwant = get_u16(r, "peer count");
	if (!r->fail && e->nwant > DP_CTL_WANT_MAX)
		r->fail = "peer count";
	for (unsigned i = 0; !r->fail && i < e->nwant; i++)
		e->want[i] = get_u32(r, "peer rank");
}

static void decode_peers(struct rd *r, struct dp_ctl_peers *p)
{
	p->n = get_u16(r, "peer count");
	if (!r->fail && (p->n == 0 || p->n > DP_CTL_PEERS_MAX))
		r->fail = "peer count";
	for (unsigned i = 0; !r->fail && i < p->n; i++) {
		struct dp_ctl_peer *x = &p->v[i];

		x->rank = get_u32(r, "peer rank");
		get_str(r, x->addr, sizeof(x->addr), "peer address");
		if (!r->fail && !x->addr[0])
			r->fail = "peer address";
		x->port = get_u16(r, "peer port");
		if (!r->fail && !x->port)
			r->fail = "peer port";
	}
}

static void decode_timeline(struct rd *r, struct dp_ctl_timeline *t)
{
	t->step = get_u64(r, "step");
	t->t0_ns = get_u64(r, "start");
	t->t1_ns = get_u64(r, "end");
	if (!r->fail && t->t1_ns < t->t0_ns)
		r->fail = "end";
	t->n = get_u16(r, "op count");
	if (!r->fail && t->n > DP_CTL_TL_MAX)
		r->fail = "op count";
	for (unsigned i = 0; !r->fail && i < t->n; i++) {
		struct dp_ctl_tl_op *o = &t->op[i];

		o->kind = get_u8(r, "op kind");
		if (!r->fail && o->kind > DP_CTL_TL_KIND_MAX)
			r->fail = "op kind";
		o->leg = get_u8(r, "op leg");
		o->leg2 = get_u8(r, "op leg");
		o->micro = (int32_t)get_u32(r, "op micro-batch");
		o->micro2 = (int32_t)get_u32(r, "op micro-batch");
		o->start_ns = get_u64(r, "op start");
		o->end_ns = get_u64(r, "op end");
		if (!r->fail && o->end_ns < o->start_ns)
			r->fail = "op end";
	}
}

/* A wall-clock time: NaN and infinities are both refused. */
static void get_clock(struct rd *r, double *dst, const char *what)
{
	double d = get_f64(r, what);

	if (!r->fail && !isfinite(d))
		r->fail = what;
	*dst = d;
}

long dp_ctl_decode(const void *buf, size_t len, struct dp_ctl_msg *m, struct dp_err *err)
{
	const unsigned char *b = buf;
	struct dp_ctl_msg tmp;
	struct rd r;
	uint32_t plen;
	unsigned type;

	if (len >= 2 && ((b[0] << 8) | b[1]) != DP_CTL_MAGIC)
		return dp_err_set(err, EPROTO, "ctl: bad frame magic 0x%02x%02x", b[0], b[1]);
	if (len >= 3 && b[2] != DP_CTL_VERSION)
		return dp_err_set(err, EPROTO, "ctl: unsupported protocol version %u (want %d)",
				  b[2], DP_CTL_VERSION);
	if (len < DP_CTL_HDR_LEN)
		return 0;
	type = b[3];
	plen = ((uint32_t)b[4] << 24) | ((uint32_t)b[5] << 16) | ((uint32_t)b[6] << 8) | b[7];
	if (plen > DP_CTL_MAX_PAYLOAD)
		return dp_err_set(err, EMSGSIZE, "ctl: frame of %u bytes exceeds the %d byte limit",
				  (unsigned)plen, DP_CTL_MAX_PAYLOAD);
	if (strcmp(dp_ctl_type_name((int)type), "unknown") == 0)
		return dp_err_set(err, ENOMSG, "ctl: unknown message type %u", type);
	if (len - DP_CTL_HDR_LEN < plen)
		return 0;

	memset(&tmp, 0, sizeof(tmp));
	tmp.type = (enum dp_ctl_type)type;
	r.p = b + DP_CTL_HDR_LEN;
	r.len = plen;
	r.off = 0;
	r.fail = NULL;
	switch (tmp.type) {
	case DP_CTL_HELLO:
		tmp.u.hello.rank = get_u32(&r, "rank");
		tmp.u.hello.pid = get_u32(&r, "pid");
		(void)get_bytes(&r, tmp.u.hello.token, DP_CTL_TOKEN_LEN, "token");
		get_str(&r, tmp.u.hello.host, sizeof(tmp.u.hello.host), "host");
		get_str(&r, tmp.u.hello.topo, sizeof(tmp.u.hello.topo), "topology");
		break;
	case DP_CTL_READY:
	case DP_CTL_DUMP_STACKS:
		break;
	case DP_CTL_HEARTBEAT:
		tmp.u.hb.step = get_u64(&r, "step");
		get_finite(&r, &tmp.u.hb.loss, "loss");
		get_finite(&r, &tmp.u.hb.tokens_per_s, "tokens/s");
		tmp.u.hb.mem_bytes = get_u64(&r, "memory");
		break;
	case DP_CTL_LOG:
		tmp.u.log.stream = get_u8(&r, "stream");
		if (!r.fail && tmp.u.log.stream != 1 && tmp.u.log.stream != 2)
			r.fail = "stream";
		get_str(&r, tmp.u.log.line, sizeof(tmp.u.log.line), "line");
		break;
	case DP_CTL_DONE:
		tmp.u.done_status = (int32_t)get_u32(&r, "status");
		if (!r.fail && (tmp.u.done_status < 0 || tmp.u.done_status > 255))
			r.fail = "status";
		break;
	case DP_CTL_START:
		tmp.u.world_size = get_u32(&r, "world size");
		break;
	case DP_CTL_STOP:
		get_str(&r, tmp.u.reason, sizeof(tmp.u.reason), "reason");
		break;
	case DP_CTL_ENDPOINT:
		decode_endpoint(&r, &tmp.u.ep);
		break;
	case DP_CTL_PEERS:
		decode_peers(&r, &tmp.u.peers);
		break;
	case DP_CTL_STEP:
		tmp.u.step.step = get_u64(&r, "step");
		get_finite(&r, &tmp.u.step.loss_share, "loss");
		tmp.u.step.tokens = get_u64(&r, "tokens");
		tmp.u.step.seconds = get_f64(&r, "seconds");
		if (!r.fail && !(tmp.u.step.seconds >= 0 && isfinite(tmp.u.step.seconds)))
			r.fail = "seconds";
		tmp.u.step.peak_live = get_u32(&r, "peak activations");
		tmp.u.step.mem_bytes = get_u64(&r, "memory");
		break;
	case DP_CTL_TIMELINE:
		decode_timeline(&r, &tmp.u.tl);
		break;
	/* ---- pre-flight ---- */
	case DP_CTL_PREFLIGHT:
		tmp.u.pf.checks = get_u32(&r, "checks");
		tmp.u.pf.gpus = (int32_t)get_u32(&r, "gpus");
		tmp.u.pf.nics = (int32_t)get_u32(&r, "nics");
		if (!r.fail && (tmp.u.pf.gpus < -1 || tmp.u.pf.nics < -1))
			r.fail = tmp.u.pf.gpus < -1 ? "gpus" : "nics";
		tmp.u.pf.disk_free = get_u64(&r, "disk free");
		get_clock(&r, &tmp.u.pf.clock, "clock");
		get_str(&r, tmp.u.pf.version, sizeof(tmp.u.pf.version), "version");
		get_str(&r, tmp.u.pf.disk_path, sizeof(tmp.u.pf.disk_path), "disk path");
		get_str(&r, tmp.u.pf.topo, sizeof(tmp.u.pf.topo), "topology");
		get_str(&r, tmp.u.pf.error, sizeof(tmp.u.pf.error), "error");
		break;
	case DP_CTL_PREFLIGHT_PROBE:
		get_clock(&r, &tmp.u.probe_clock, "clock");
		break;
	}
	if (r.fail)
		return dp_err_set(err, EBADMSG, "ctl: garbled '%s' message: bad field '%s'",
				  dp_ctl_type_name((int)type), r.fail);
	if (r.off != r.len)
		return dp_err_set(err, EBADMSG, "ctl: garbled '%s' message: %zu trailing bytes",
				  dp_ctl_type_name((int)type), r.len - r.off);
	*m = tmp;
	return (long)(DP_CTL_HDR_LEN + plen);
}

/* ---- stream reassembly ------------------------------------------------------ */

void dp_ctl_rx_init(struct dp_ctl_rx *rx)
{
	rx->len = 0;
}

long dp_ctl_rx_fill(struct dp_ctl_rx *rx, int fd)
{
	ssize_t n;

	if (rx->len == sizeof(rx->buf))
		return -ENOBUFS; /* cannot happen: a full buffer always holds a frame */
	do
		n = read(fd, rx->buf + rx->len, sizeof(rx->buf) - rx->len);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	rx->len += (size_t)n;
	return (long)n;
}

int dp_ctl_rx_next(struct dp_ctl_rx *rx, struct dp_ctl_msg *m, struct dp_err *err)
{
	long n = dp_ctl_decode(rx->buf, rx->len, m, err);

	if (n <= 0)
		return (int)n;
	memmove(rx->buf, rx->buf + n, rx->len - (size_t)n);
	rx->len -= (size_t)n;
	return 1;
}

/* ---- token ------------------------------------------------------------------ */

int dp_ctl_token_new(uint8_t token[DP_CTL_TOKEN_LEN], struct dp_err *err)
{
	size_t got = 0;

	while (got < DP_CTL_TOKEN_LEN) {
		ssize_t n = getrandom(token + got, DP_CTL_TOKEN_LEN - got, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = errno;

			return dp_err_set(err, e, "ctl: getrandom failed: %s", strerror(e));
		}
		got += (size_t)n;
	}
	return 0;
}

int dp_ctl_token_to_hex(const uint8_t token[DP_CTL_TOKEN_LEN], char *hex, size_t hexlen)
{
	static const char digits[] = "0123456789abcdef";

	if (hexlen < (size_t)2 * DP_CTL_TOKEN_LEN + 1)
		return -ENOSPC;
	for (size_t i = 0; i < DP_CTL_TOKEN_LEN; i++) {
		hex[2 * i] = digits[token[i] >> 4];
		hex[2 * i + 1] = digits[token[i] & 15];
	}
	hex[(size_t)2 * DP_CTL_TOKEN_LEN] = '\0';
	return 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int dp_ctl_token_from_hex(const char *hex, uint8_t token[DP_CTL_TOKEN_LEN], struct dp_err *err)
{
	uint8_t tmp[DP_CTL_TOKEN_LEN];

	if (!hex || strlen(hex) != (size_t)2 * DP_CTL_TOKEN_LEN)
		return dp_err_set(err, EINVAL, "ctl: job token must be %d hex digits",
				  2 * DP_CTL_TOKEN_LEN);
	for (size_t i = 0; i < DP_CTL_TOKEN_LEN; i++) {
		int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return dp_err_set(err, EINVAL, "ctl: job token is not hexadecimal");
		tmp[i] = (uint8_t)(hi << 4 | lo);
	}
	memcpy(token, tmp, sizeof(tmp));
	return 0;
}

int dp_ctl_token_equal(const uint8_t a[DP_CTL_TOKEN_LEN], const uint8_t b[DP_CTL_TOKEN_LEN])
{
	return dp_mem_equal_ct(a, b, DP_CTL_TOKEN_LEN);
}

int dp_ctl_write_all(int fd, const void *buf, size_t len)
{
	const unsigned char *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}
