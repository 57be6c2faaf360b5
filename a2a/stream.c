/* a2a/stream.c - frames over per-peer byte streams (tcp sockets, shm rings).
 *
 * Sends are queued (copied) and pushed out by progress(); every progress()
 * also drains every incoming stream into per-peer message lists.  So a rank
 * that blocks in recv() or flush() keeps accepting what others send it, and
 * an all-to-all with messages larger than the socket or ring buffers cannot
 * deadlock.  A frame whose header has a bad magic or an absurd length marks
 * that peer broken (-EPROTO); EOF marks it closed (-ECONNRESET once its
 * queued messages are consumed).
 *
 * A backend with a poll() op (tcp) is driven by readiness: one poll over
 * every peer, then reads and writes only on the peers it named, so a rank
 * waiting for data costs no syscalls per idle peer.  A backend with
 * writev_some() gets every queued frame of a peer (headers and payloads) in
 * one gather write. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "a2a/a2a_int.h"
#include "common/dp_banned.h"

struct msg {
	struct msg *next;
	struct dp_a2a_frame_hdr hdr;
	char *data;
	size_t off; /* bytes of hdr + data already moved */
};

struct peerq {
	struct msg *out_head, *out_tail; /* to send */
	struct msg *in_head, *in_tail;	 /* complete, not yet received */
	struct msg *cur;		 /* being read */
	int err;			 /* negative errno once broken/closed */
};

struct dp_a2a_squeue {
	struct peerq *p;
	unsigned char *ready; /* poll() result per peer */
};

#define IOV_MAX_FRAMES 32 /* frames per gather write */

int64_t dp_a2a_now_ms(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t dp_a2a_now_us(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int dp_a2a_stream_wants_write(const struct dp_a2a_stream *s, int peer)
{
	return s->q->p[peer].out_head != NULL;
}

static void free_list(struct msg *m)
{
	while (m) {
		struct msg *n = m->next;

		free(m->data);
		free(m);
		m = n;
	}
}

int dp_a2a_stream_init(struct dp_a2a_stream *s, struct dp_err *err)
{
	s->q = calloc(1, sizeof(*s->q));
	if (!s->q)
		return dp_err_set(err, ENOMEM, "a2a: out of memory");
	s->q->p = calloc((size_t)s->ep.world, sizeof(*s->q->p));
	s->q->ready = calloc((size_t)s->ep.world, 1);
	if (!s->q->p || !s->q->ready) {
		free(s->q->p);
		free(s->q->ready);
		free(s->q);
		s->q = NULL;
		return dp_err_set(err, ENOMEM, "a2a: out of memory");
	}
	return 0;
}

void dp_a2a_stream_release(struct dp_a2a_stream *s)
{
	if (!s || !s->q)
		return;
	for (int i = 0; i < s->ep.world; i++) {
		free_list(s->q->p[i].out_head);
		free_list(s->q->p[i].in_head);
		free_list(s->q->p[i].cur);
	}
	free(s->q->p);
	free(s->q->ready);
	free(s->q);
	s->q = NULL;
}

static void push(struct msg **head, struct msg **tail, struct msg *m)
{
	m->next = NULL;
	if (*tail)
		(*tail)->next = m;
	else
		*head = m;
	*tail = m;
}

/* Drop the frames the last write finished; @w bytes went out. */
static void advance_out(struct peerq *q, size_t w)
{
	while (q->out_head && w) {
		struct msg *m = q->out_head;
		size_t total = sizeof(m->hdr) + m->hdr.len, n = total - m->off;

		if (w < n) {
			m->off += w;
			return;
		}
		w -= n;
		q->out_head = m->next;
		if (!q->out_head)
			q->out_tail = NULL;
		free(m->data);
		free(m);
	}
}

/* The unsent pieces of @q's first frames, at most @max iovecs. */
static int gather_out(struct peerq *q, struct iovec *iov, int max)
{
	int n = 0;

	for (struct msg *m = q->out_head; m && n < max; m = m->next) {
		size_t hl = sizeof(m->hdr);

		if (m->off < hl) {
			iov[n].iov_base = (char *)&m->hdr + m->off;
			iov[n++].iov_len = hl - m->off;
			if (m->hdr.len && n < max) {
				iov[n].iov_base = m->data;
				iov[n++].iov_len = m->hdr.len;
			}
		} else {
			iov[n].iov_base = m->data + (m->off - hl);
			iov[n++].iov_len = hl + m->hdr.len - m->off;
		}
	}
	return n;
}

/* Push out what the peer's stream takes now.  Bytes moved, or -errno. */
static ssize_t pump_out(struct dp_a2a_stream *s, int peer)
{
	struct peerq *q = &s->q->p[peer];
	struct iovec iov[2 * IOV_MAX_FRAMES];
	ssize_t moved = 0;

	while (q->out_head) {
		int n = gather_out(q, iov, s->ops->writev_some ? (int)DP_ARRAY_SIZE(iov) : 1);
		ssize_t w = s->ops->writev_some
				    ? s->ops->writev_some(s, peer, iov, n)
				    : s->ops->write_some(s, peer, iov[0].iov_base, iov[0].iov_len);

		if (w < 0)
			return w;
		if (w == 0)
			break;
		advance_out(q, (size_t)w);
		moved += w;
	}
	return moved;
}

/* Read what the peer's stream has now.  Bytes moved, or -errno. */
static ssize_t pump_in(struct dp_a2a_stream *s, int peer)
{
	struct peerq *q = &s->q->p[peer];
	ssize_t moved = 0;

	for (;;) {
		struct msg *m = q->cur;
		size_t hl = sizeof(m->hdr);
		char *dst;
		size_t n;
		ssize_t r;

		if (!m) {
			m = calloc(1, sizeof(*m));
			if (!m)
				return -ENOMEM;
			q->cur = m;
		}
		if (m->off < hl) {
			dst = (char *)&m->hdr + m->off;
			n = hl - m->off;
		} else {
			dst = m->data + (m->off - hl);
			n = hl + m->hdr.len - m->off;
		}
		r = n ? s->ops->read_some(s, peer, dst, n) : 0;
		if (r < 0)
			return r;
		m->off += (size_t)r;
		moved += r;
		if (m->off == hl && !m->data && m->hdr.len) {
			if (m->hdr.magic != DP_A2A_FRAME_MAGIC || m->hdr.len > DP_A2A_FRAME_MAX)
				return -EPROTO;
			m->data = malloc(m->hdr.len);
			if (!m->data)
				return -ENOMEM;
			continue;
		}
		if (m->off >= hl && m->hdr.magic != DP_A2A_FRAME_MAGIC)
			return -EPROTO;
		if (m->off == hl + m->hdr.len) {
			q->cur = NULL;
			push(&q->in_head, &q->in_tail, m);
			continue;
		}
		if (r == 0)
			break;
	}
	return moved;
}

/* Move bytes on one peer; errors stick to the peer. */
static ssize_t pump(struct dp_a2a_stream *s, int i, int out, int in)
{
	struct peerq *q = &s->q->p[i];
	ssize_t r = 0, total = 0;

	if (i == s->ep.rank || q->err)
		return 0;
	if (out)
		r = pump_out(s, i);
	if (r >= 0) {
		total += r;
		r = in ? pump_in(s, i) : 0;
	}
	if (r < 0) {
		q->err = (int)r;
		return total;
	}
	return total + r;
}

/* One pass over every peer; returns bytes moved (errors stick to peers). */
static ssize_t progress_all(struct dp_a2a_stream *s)
{
	ssize_t total = 0;

	for (int i = 0; i < s->ep.world; i++)
		total += pump(s, i, 1, 1);
	return total;
}

/* Wait up to @ms for something to move, and move it.  Bytes moved. */
static ssize_t progress(struct dp_a2a_stream *s, int ms)
{
	ssize_t total;
	int n;

	if (!s->ops->poll) {
		total = progress_all(s);
		if (total == 0 && ms > 0) {
			s->ops->wait(s, ms);
			total = progress_all(s);
		}
		return total;
	}
	total = 0;
	n = s->ops->poll(s, ms, s->q->ready);
	for (int i = 0; n > 0 && i < s->ep.world; i++) {
		unsigned char r = s->q->ready[i];

		if (r)
			total +=
				pump(s, i, (r & DP_A2A_READY_OUT) != 0, (r & DP_A2A_READY_IN) != 0);
	}
	return total;
}

static int peer_error(struct dp_a2a_stream *s, int peer, int e, struct dp_err *err)
{
	if (e == -EPROTO)
		return dp_err_set(err, EPROTO, "a2a: %s: garbled frame from rank %d", s->what,
				  peer);
	if (e == -ECONNRESET || e == -EPIPE)
		return dp_err_set(err, ECONNRESET, "a2a: %s: rank %d closed the connection or died",
				  s->what, peer);
	return dp_err_set(err, -e, "a2a: %s: rank %d: %s", s->what, peer, strerror(-e));
}

/* Queue @data (owned from here on, freed on error) for @peer. */
static int queue(struct dp_a2a_ep *ep, int peer, uint32_t tag, void *data, size_t len,
		 struct dp_err *err)
{
	struct dp_a2a_stream *s = dp_container_of_stream(ep);
	struct peerq *q;
	struct msg *m;

	if (peer < 0 || peer >= ep->world) {
		free(data);
		return dp_err_set(err, EINVAL, "a2a: bad peer %d", peer);
	}
	q = &s->q->p[peer];
	if (q->err && peer != ep->rank) {
		free(data);
		return peer_error(s, peer, q->err, err);
	}
	m = calloc(1, sizeof(*m));
	if (!m) {
		free(data);
		return dp_err_set(err, ENOMEM, "a2a: out of memory");
	}
	m->hdr.magic = DP_A2A_FRAME_MAGIC;
	m->hdr.tag = tag;
	m->hdr.len = len;
	m->data = len ? data : NULL;
	if (!len)
		free(data);
	if (peer == ep->rank) {
		m->off = sizeof(m->hdr) + len;
		push(&q->in_head, &q->in_tail, m);
		return 0;
	}
	push(&q->out_head, &q->out_tail, m);
	(void)pump(s, peer, 1, 0); /* start moving bytes now */
	return 0;
}

int dp_a2a_stream_send(struct dp_a2a_ep *ep, int peer, uint32_t tag, const void *buf, size_t len,
		       struct dp_err *err)
{
	void *copy = NULL;

	if (len) {
		copy = malloc(len);
		if (!copy)
			return dp_err_set(err, ENOMEM, "a2a: out of memory");
		memcpy(copy, buf, len);
	}
	return queue(ep, peer, tag, copy, len, err);
}

int dp_a2a_stream_send_take(struct dp_a2a_ep *ep, int peer, uint32_t tag, void *buf, size_t len,
			    struct dp_err *err)
{
	return queue(ep, peer, tag, buf, len, err);
}

/* Take the first complete message of @q; -EPROTO if it is not @tag. */
static int take(struct dp_a2a_stream *s, int peer, uint32_t tag, void **buf, size_t *len,
		struct dp_err *err)
{
	struct peerq *q = &s->q->p[peer];
	struct msg *m = q->in_head;
	int rc;

	q->in_head = m->next;
	if (!q->in_head)
		q->in_tail = NULL;
	if (m->hdr.tag != tag) {
		rc = dp_err_set(err, EPROTO, "a2a: %s: rank %d sent message 0x%x, expected 0x%x",
				s->what, peer, m->hdr.tag, tag);
		free(m->data);
		free(m);
		return rc;
	}
	*buf = m->data;
	*len = m->hdr.len;
	free(m);
	return 0;
}

/* Take the first complete message among @peers: 1 with *rc = take()'s
 * result, or 0 when none is in. */
static int take_first(struct dp_a2a_stream *s, const int *peers, const uint32_t *tags, int n,
		      int *which, void **buf, size_t *len, int *rc, struct dp_err *err)
{
	for (int i = 0; i < n; i++)
		if (s->q->p[peers[i]].in_head) {
			*rc = take(s, peers[i], tags[i], buf, len, err);
			if (!*rc)
				*which = i;
			return 1;
		}
	return 0;
}

int dp_a2a_stream_recv_any(struct dp_a2a_ep *ep, const int *peers, const uint32_t *tags, int n,
			   int *which, void **buf, size_t *len, struct dp_err *err)
{
	struct dp_a2a_stream *s = dp_container_of_stream(ep);
	int64_t deadline = dp_a2a_now_ms() + ep->timeout_ms;

	for (int i = 0; i < n; i++)
		if (peers[i] < 0 || peers[i] >= ep->world)
			return dp_err_set(err, EINVAL, "a2a: bad peer %d", peers[i]);
	if (n < 1)
		return dp_err_set(err, EINVAL, "a2a: recv from no peer");
	for (int idle = 0;;) {
		int64_t left = 0;
		int rc = 0;

		if (take_first(s, peers, tags, n, which, buf, len, &rc, err))
			return rc;
		for (int i = 0; i < n; i++)
			if (s->q->p[peers[i]].err)
				return peer_error(s, peers[i], s->q->p[peers[i]].err, err);
		/* only when a pass moved nothing: a peer may close right after
		 * its last message, which is still to be read */
		if (idle) {
			for (int i = 0; i < n; i++) {
				rc = s->ops->peer_alive(s, peers[i]);
				if (rc)
					return peer_error(s, peers[i], rc, err);
			}
			left = deadline - dp_a2a_now_ms();
			if (left <= 0)
				return dp_err_set(
					err, ETIMEDOUT,
					"a2a: %s: timed out after %d ms waiting for rank %d",
					s->what, ep->timeout_ms, peers[0]);
		}
		idle = progress(s, idle ? (left < 50 ? (int)left : 50) : 0) == 0;
	}
}

int dp_a2a_stream_try_recv_any(struct dp_a2a_ep *ep, const int *peers, const uint32_t *tags, int n,
			       int *which, void **buf, size_t *len, struct dp_err *err)
{
	struct dp_a2a_stream *s = dp_container_of_stream(ep);
	int rc = 0;

	if (n < 1)
		return dp_err_set(err, EINVAL, "a2a: recv from no peer");
	for (int i = 0; i < n; i++)
		if (peers[i] < 0 || peers[i] >= ep->world)
			return dp_err_set(err, EINVAL, "a2a: bad peer %d", peers[i]);
	if (take_first(s, peers, tags, n, which, buf, len, &rc, err))
		return rc;
	(void)progress(s, 0);
	if (take_first(s, peers, tags, n, which, buf, len, &rc, err))
		return rc;
	for (int i = 0; i < n; i++)
		if (s->q->p[peers[i]].err)
			return peer_error(s, peers[i], s->q->p[peers[i]].err, err);
	return -EAGAIN;
}

int dp_a2a_stream_recv(struct dp_a2a_ep *ep, int peer, uint32_t tag, void **buf, size_t *len,
		       struct dp_err *err)
{
	int which = 0;

	return dp_a2a_stream_recv_any(ep, &peer, &tag, 1, &which, buf, len, err);
}

int dp_a2a_stream_flush(struct dp_a2a_ep *ep, struct dp_err *err)
{
	struct dp_a2a_stream *s = dp_container_of_stream(ep);
	int64_t deadline = dp_a2a_now_ms() + ep->timeout_ms;

	for (;;) {
		int pending = -1;
		int64_t left;

		(void)progress(s, 0);
		for (int i = 0; i < ep->world; i++) {
			struct peerq *q = &s->q->p[i];

			if (q->out_head && q->err)
				return peer_error(s, i, q->err, err);
			if (q->out_head)
				pending = i;
		}
		if (pending < 0)
			return 0;
		left = deadline - dp_a2a_now_ms();
		if (left <= 0)
			return dp_err_set(err, ETIMEDOUT,
					  "a2a: %s: timed out after %d ms sending to rank %d",
					  s->what, ep->timeout_ms, pending);
		(void)progress(s, left < 50 ? (int)left : 50);
	}
}
