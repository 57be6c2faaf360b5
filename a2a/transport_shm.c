/* a2a/transport_shm.c - the `shm` transport (processes on one node, the
 * CPU stand-in for NVLink) and the `loop` transport (rank threads in one
 * process, for tests).  Both use the same memory layout:
 *
 *   [hdr][rank 0 .. world-1 state][ring (0,0) .. ring (world-1,world-1)]
 *
 * ring (s,d) is a single-producer single-consumer byte ring written by rank
 * s and read by rank d (head/tail are free-running 64-bit counters).  Every
 * rank has a doorbell word: a writer bumps the reader's bell after adding
 * bytes, a reader bumps the writer's bell after freeing space, and a rank
 * with nothing to do sleeps on its own bell with futex(FUTEX_WAIT).  A
 * rank holds its process-shared robust mutex while open, so a peer that
 * dies is seen as EOWNERDEAD (the kernel releases robust locks at exit,
 * before the process is even reaped).
 *
 * The tcp transport reuses these rings between the ranks of a node
 * (dp_a2a_shm_open_polled): there the doorbell is a datagram to the
 * reader's abstract unix socket instead of a futex, so that a rank can
 * sleep in one poll() over its sockets and its rings. */
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "a2a/a2a_int.h"
#include "common/dp_banned.h"

#define SHM_MAGIC    0x53484d41u
#define SHM_RING_DEF (1u << 20)
#define SHM_RING_MIN 4096u
#define ST_NEVER     0
#define ST_OPEN	     1
#define ST_CLOSED    2

struct shm_hdr {
	_Atomic uint32_t magic;
	uint32_t world;
	uint64_t ring_bytes;
	char pad[48];
};

struct shm_rank {
	pthread_mutex_t alive;
	_Atomic int state;
	_Atomic uint32_t bell;
	char pad[64];
};

struct shm_ring {
	_Atomic uint64_t head; /* written by the reader */
	char pad1[56];
	_Atomic uint64_t tail; /* written by the writer */
	char pad2[56];
};

struct dp_a2a_loop {
	void *mem;
	size_t size;
	int world;
	size_t ring_bytes;
};

struct shm_ep {
	struct dp_a2a_stream s; /* first */
	void *mem;
	size_t size;
	int owns_map; /* shm: munmap on close */
	int unlink;   /* rank 0 of shm */
	char name[256];
	size_t ring_bytes;
	struct shm_rank *ranks;
	char *rings;
	uint32_t seen_bell;
	int bell_fd;		       /* polled doorbells: our socket, else -1 */
	struct sockaddr_un *bell_addr; /* per rank */
	socklen_t bell_len;
};

/* Abstract socket name of @rank's doorbell for segment @name. */
static socklen_t bell_name(struct sockaddr_un *a, const char *name, int rank)
{
	int n;

	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	n = snprintf(a->sun_path + 1, sizeof(a->sun_path) - 1, "dp-a2a-bell%s-%d", name, rank);
	if (n < 0 || (size_t)n >= sizeof(a->sun_path) - 1)
		return 0;
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

static size_t ring_stride(size_t ring_bytes)
{
	return sizeof(struct shm_ring) + ((ring_bytes + 63) & ~(size_t)63);
}

static size_t region_size(int world, size_t ring_bytes)
{
	return sizeof(struct shm_hdr) + (size_t)world * sizeof(struct shm_rank) +
	       (size_t)world * (size_t)world * ring_stride(ring_bytes);
}

static struct shm_ring *ring_at(struct shm_ep *e, int src, int dst)
{
	return (struct shm_ring *)(void *)(e->rings +
					   ((size_t)src * (size_t)e->s.ep.world + (size_t)dst) *
						   ring_stride(e->ring_bytes));
}

static char *ring_data(struct shm_ring *r)
{
	return (char *)(r + 1);
}

static void ring_bell(struct shm_ep *e, int rank)
{
	_Atomic uint32_t *b = &e->ranks[rank].bell;

	if (e->bell_fd >= 0) {
		/* a full bell queue already holds a wake-up: ignore EAGAIN */
		(void)sendto(e->bell_fd, "", 1, MSG_DONTWAIT | MSG_NOSIGNAL,
			     (const struct sockaddr *)&e->bell_addr[rank], e->bell_len);
		return;
	}
	atomic_fetch_add_explicit(b, 1, memory_order_release);
	(void)syscall(SYS_futex, (uint32_t *)b, FUTEX_WAKE, 1, NULL, NULL, 0);
}

static ssize_t shm_write_some(struct dp_a2a_stream *s, int peer, const void *buf, size_t n)
{
	struct shm_ep *e = (struct shm_ep *)s;
	struct shm_ring *r = ring_at(e, s->ep.rank, peer);
	uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
	uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
	size_t room = e->ring_bytes - (size_t)(tail - head), pos, first;

	if (atomic_load_explicit(&e->ranks[peer].state, memory_order_acquire) == ST_CLOSED)
		return -ECONNRESET;
	if (n > room)
		n = room;
	if (!n)
		return 0;
	pos = (size_t)(tail % e->ring_bytes);
	first = e->ring_bytes - pos < n ? e->ring_bytes - pos : n;
	memcpy(ring_data(r) + pos, buf, first);
	memcpy(ring_data(r), (const char *)buf + first, n - first);
	atomic_store_explicit(&r->tail, tail + n, memory_order_release);
	ring_bell(e, peer);
	return (ssize_t)n;
}

static ssize_t shm_read_some(struct dp_a2a_stream *s, int peer, void *buf, size_t n)
{
	struct shm_ep *e = (struct shm_ep *)s;
	struct shm_ring *r = ring_at(e, peer, s->ep.rank);
	uint64_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
	uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
	size_t avail = (size_t)(tail - head), pos, first;

	if (avail > e->ring_bytes)
		return -EPROTO; /* counters were scribbled on */
	if (n > avail)
		n = avail;
	if (!n)
		return 0;
	pos = (size_t)(head % e->ring_bytes);
	first = e->ring_bytes - pos < n ? e->ring_bytes - pos : n;
	memcpy(buf, ring_data(r) + pos, first);
	memcpy((char *)buf + first, ring_data(r), n - first);
	atomic_store_explicit(&r->head, head + n, memory_order_release);
	ring_bell(e, peer);
	return (ssize_t)n;
}

static void shm_wait(struct dp_a2a_stream *s, int ms)
{
	struct shm_ep *e = (struct shm_ep *)s;
	_Atomic uint32_t *b = &e->ranks[s->ep.rank].bell;
	uint32_t now = atomic_load_explicit(b, memory_order_acquire);
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	if (now == e->seen_bell)
		(void)syscall(SYS_futex, (uint32_t *)b, FUTEX_WAIT, now, &ts, NULL, 0);
	e->seen_bell = atomic_load_explicit(b, memory_order_acquire);
}

static int shm_peer_alive(struct dp_a2a_stream *s, int peer)
{
	struct shm_ep *e = (struct shm_ep *)s;
	struct shm_rank *r = &e->ranks[peer];
	int st = atomic_load_explicit(&r->state, memory_order_acquire), rc;

	if (st == ST_CLOSED)
		return -ECONNRESET;
	if (st != ST_OPEN || peer == s->ep.rank)
		return 0;
	rc = pthread_mutex_trylock(&r->alive);
	if (rc == EOWNERDEAD) {
		(void)pthread_mutex_consistent(&r->alive);
		(void)pthread_mutex_unlock(&r->alive);
		return -ECONNRESET;
	}
	if (rc == 0) { /* between open and state change, or closing: alive */
		(void)pthread_mutex_unlock(&r->alive);
	}
	return 0;
}

static const struct dp_a2a_stream_ops shm_stream_ops = {
	.write_some = shm_write_some,
	.read_some = shm_read_some,
	.wait = shm_wait,
	.peer_alive = shm_peer_alive,
};

static int attach(struct shm_ep *e, const struct dp_a2a_comm_cfg *cfg, struct dp_err *err)
{
	struct shm_hdr *h = e->mem;
	int world = cfg->nodes * cfg->ranks_per_node;
	struct shm_rank *me;
	pthread_mutexattr_t a;
	int rc;

	e->ranks = (struct shm_rank *)(void *)((char *)e->mem + sizeof(*h));
	e->rings = (char *)(e->ranks + world);
	if (atomic_load(&h->magic) == SHM_MAGIC &&
	    (h->world != (uint32_t)world || h->ring_bytes != e->ring_bytes))
		return dp_err_set(err, EINVAL, "a2a: shm: segment '%s' belongs to another job",
				  e->name);
	h->world = (uint32_t)world;
	h->ring_bytes = e->ring_bytes;
	atomic_store(&h->magic, SHM_MAGIC);
	me = &e->ranks[cfg->rank];
	if (pthread_mutexattr_init(&a))
		return dp_err_set(err, ENOMEM, "a2a: shm: cannot init mutex attributes");
	rc = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
	if (!rc)
		rc = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
	if (!rc)
		rc = pthread_mutex_init(&me->alive, &a);
	(void)pthread_mutexattr_destroy(&a);
	if (!rc)
		rc = pthread_mutex_lock(&me->alive);
	if (rc)
		return dp_err_set(err, rc, "a2a: shm: cannot set up the liveness lock: %s",
				  strerror(rc));
	atomic_store(&me->state, ST_OPEN);
	e->seen_bell = atomic_load(&me->bell);
	return 0;
}

static int shm_common_open(struct shm_ep *e, const struct dp_a2a_comm_cfg *cfg,
			   const struct dp_a2a_transport *tp, struct dp_err *err)
{
	e->s.ep.tp = tp;
	e->s.ep.rank = cfg->rank;
	e->s.ep.world = cfg->nodes * cfg->ranks_per_node;
	e->s.ep.rpn = cfg->ranks_per_node;
	e->s.ep.timeout_ms = cfg->timeout_ms;
	e->s.ops = &shm_stream_ops;
	e->s.what = tp->name;
	return dp_a2a_stream_init(&e->s, err);
}

/* Polled doorbells: bind our abstract socket, name everyone's. */
static int bells_open(struct shm_ep *e, int world, int rank, struct dp_err *err)
{
	e->bell_addr = calloc((size_t)world, sizeof(*e->bell_addr));
	if (!e->bell_addr)
		return dp_err_set(err, ENOMEM, "a2a: out of memory");
	for (int i = 0; i < world; i++) {
		e->bell_len = bell_name(&e->bell_addr[i], e->name, i);
		if (!e->bell_len)
			return dp_err_set(err, ENAMETOOLONG, "a2a: shm: name '%s' is too long",
					  e->name);
	}
	e->bell_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (e->bell_fd < 0)
		return dp_err_set(err, errno, "a2a: shm: socket: %s", strerror(errno));
	if (bind(e->bell_fd, (const struct sockaddr *)&e->bell_addr[rank], e->bell_len))
		return dp_err_set(err, errno, "a2a: shm: cannot bind the doorbell of '%s': %s",
				  e->name, strerror(errno));
	return 0;
}

static int shm_open_any(const struct dp_a2a_comm_cfg *cfg, int polled, struct dp_a2a_ep **out,
			struct dp_err *err)
{
	int world = cfg->nodes * cfg->ranks_per_node;
	struct shm_ep *e;
	struct stat st;
	int fd = -1, rc;

	if (!cfg->shm_name || cfg->shm_name[0] != '/' || strchr(cfg->shm_name + 1, '/'))
		return dp_err_set(err, EINVAL, "a2a: shm: segment name must look like '/name'");
	e = calloc(1, sizeof(*e));
	if (!e)
		return dp_err_set(err, ENOMEM, "a2a: out of memory");
	e->bell_fd = -1;
	(void)snprintf(e->name, sizeof(e->name), "%s", cfg->shm_name);
	e->ring_bytes = cfg->shm_ring_bytes ? cfg->shm_ring_bytes : SHM_RING_DEF;
	if (e->ring_bytes < SHM_RING_MIN)
		e->ring_bytes = SHM_RING_MIN;
	e->size = region_size(world, e->ring_bytes);
	rc = shm_common_open(e, cfg, &dp_a2a_shm, err);
	if (rc)
		goto err_free;
	if (polled) {
		rc = bells_open(e, world, cfg->rank, err);
		if (rc)
			goto err_stream;
	}
	fd = shm_open(e->name, O_CREAT | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = dp_err_set(err, errno, "a2a: shm: cannot open '%s': %s", e->name,
				strerror(errno));
		goto err_stream;
	}
	if (fstat(fd, &st) || (st.st_size && (size_t)st.st_size != e->size)) {
		rc = dp_err_set(err, EINVAL, "a2a: shm: segment '%s' has the wrong size", e->name);
		goto err_fd;
	}
	if (ftruncate(fd, (off_t)e->size)) {
		rc = dp_err_set(err, errno, "a2a: shm: cannot size '%s': %s", e->name,
				strerror(errno));
		goto err_fd;
	}
	e->mem = mmap(NULL, e->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (e->mem == MAP_FAILED) {
		e->mem = NULL;
		rc = dp_err_set(err, errno, "a2a: shm: cannot map '%s': %s", e->name,
				strerror(errno));
		goto err_fd;
	}
	e->owns_map = 1;
	e->unlink = cfg->rank == 0;
	(void)close(fd);
	fd = -1;
	rc = attach(e, cfg, err);
	if (rc)
		goto err_map;
	*out = &e->s.ep;
	return 0;
err_map:
	(void)munmap(e->mem, e->size);
err_fd:
	if (fd >= 0)
		(void)close(fd);
err_stream:
	dp_a2a_stream_release(&e->s);
err_free:
	if (e->bell_fd >= 0)
		(void)close(e->bell_fd);
	free(e->bell_addr);
	free(e);
	return rc;
}

static int shm_open_ep(const struct dp_a2a_comm_cfg *cfg, struct dp_a2a_ep **out,
		       struct dp_err *err)
{
	return shm_open_any(cfg, 0, out, err);
}

int dp_a2a_shm_open_polled(const struct dp_a2a_comm_cfg *cfg, struct dp_a2a_ep **out, int *bell_fd,
			   struct dp_err *err)
{
	int rc = shm_open_any(cfg, 1, out, err);

	if (!rc)
		*bell_fd = ((struct shm_ep *)dp_container_of_stream(*out))->bell_fd;
	return rc;
}

void dp_a2a_shm_drain_bell(struct dp_a2a_ep *ep)
{
	struct shm_ep *e = (struct shm_ep *)dp_container_of_stream(ep);
	char b[64];

	while (e->bell_fd >= 0 && recv(e->bell_fd, b, sizeof(b), MSG_DONTWAIT) > 0)
		;
}

static int loop_open_ep(const struct dp_a2a_comm_cfg *cfg, struct dp_a2a_ep **out,
			struct dp_err *err)
{
	int world = cfg->nodes * cfg->ranks_per_node;
	struct shm_ep *e;
	int rc;

	if (!cfg->loop || cfg->loop->world != world)
		return dp_err_set(err, EINVAL, "a2a: loop: needs a fabric made for %d ranks",
				  world);
	e = calloc(1, sizeof(*e));
	if (!e)
		return dp_err_set(err, ENOMEM, "a2a: out of memory");
	e->bell_fd = -1;
	e->mem = cfg->loop->mem;
	e->size = cfg->loop->size;
	e->ring_bytes = cfg->loop->ring_bytes;
	(void)snprintf(e->name, sizeof(e->name), "loop");
	rc = shm_common_open(e, cfg, &dp_a2a_loop_tp, err);
	if (!rc)
		rc = attach(e, cfg, err);
	if (rc) {
		dp_a2a_stream_release(&e->s);
		free(e);
		return rc;
	}
	*out = &e->s.ep;
	return 0;
}

static void shm_close_ep(struct dp_a2a_ep *ep)
{
	struct shm_ep *e;

	if (!ep)
		return;
	e = (struct shm_ep *)dp_container_of_stream(ep);
	if (e->ranks) {
		struct shm_rank *me = &e->ranks[ep->rank];

		atomic_store(&me->state, ST_CLOSED);
		(void)pthread_mutex_unlock(&me->alive);
		for (int i = 0; i < ep->world; i++) /* wake anyone waiting on us */
			ring_bell(e, i);
	}
	if (e->owns_map)
		(void)munmap(e->mem, e->size);
	if (e->unlink)
		(void)shm_unlink(e->name);
	if (e->bell_fd >= 0)
		(void)close(e->bell_fd);
	free(e->bell_addr);
	dp_a2a_stream_release(&e->s);
	free(e);
}

static int shm_probe(int *prio, struct dp_err *err)
{
	(void)err;
	*prio = 10;
	return 0;
}

/* Usable, but only by name: a negative priority keeps automatic picks away
 * (it needs a fabric made in this process). */
static int loop_probe(int *prio, struct dp_err *err)
{
	(void)err;
	*prio = -1;
	return 0;
}

int dp_a2a_loop_new(int world, size_t ring_bytes, struct dp_a2a_loop **out, struct dp_err *err)
{
	struct dp_a2a_loop *l;

	if (world < 1)
		return dp_err_set(err, EINVAL, "a2a: loop: world must be positive");
	l = calloc(1, sizeof(*l));
	if (!l)
		return dp_err_set(err, ENOMEM, "a2a: out of memory");
	l->world = world;
	l->ring_bytes = ring_bytes ? ring_bytes : SHM_RING_DEF;
	if (l->ring_bytes < SHM_RING_MIN)
		l->ring_bytes = SHM_RING_MIN;
	l->size = region_size(world, l->ring_bytes);
	l->mem = aligned_alloc(64, (l->size + 63) & ~(size_t)63);
	if (!l->mem) {
		free(l);
		return dp_err_set(err, ENOMEM, "a2a: out of memory");
	}
	memset(l->mem, 0, l->size);
	*out = l;
	return 0;
}

void dp_a2a_loop_free(struct dp_a2a_loop *l)
{
	if (!l)
		return;
	free(l->mem);
	free(l);
}

const struct dp_a2a_transport dp_a2a_shm = {
	.name = "shm",
	.probe = shm_probe,
	.open = shm_open_ep,
	.send = dp_a2a_stream_send,
	.send_take = dp_a2a_stream_send_take,
	.recv = dp_a2a_stream_recv,
	.recv_any = dp_a2a_stream_recv_any,
	.try_recv_any = dp_a2a_stream_try_recv_any,
	.flush = dp_a2a_stream_flush,
	.put = dp_a2a_no_put,
	.close = shm_close_ep,
};

const struct dp_a2a_transport dp_a2a_loop_tp = {
	.name = "loop",
	.probe = loop_probe,
	.open = loop_open_ep,
	.send = dp_a2a_stream_send,
	.send_take = dp_a2a_stream_send_take,
	.recv = dp_a2a_stream_recv,
	.recv_any = dp_a2a_stream_recv_any,
	.try_recv_any = dp_a2a_stream_try_recv_any,
	.flush = dp_a2a_stream_flush,
	.put = dp_a2a_no_put,
	.close = shm_close_ep,
};
