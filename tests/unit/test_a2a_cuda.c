/* tests/unit/test_a2a_cuda.c - the `cuda` a2a transport and
 * dp_a2a_alltoallv(on_device = 1) on a fake CUDA + NCCL, ranks as threads
 * of this process whose inner tcp endpoints listen on 127.0.0.1.
 *
 * The fake (linked with -Wl,--wrap, see test_a2a_cuda.ldflags) keeps its
 * own state, unlike test_pp_nccl's stream-FIFO fake, because the transport
 * needs other things of it: "device memory" is malloc'd host memory kept
 * in a table, so a device pointer can be told from a host one (ncclSend /
 * ncclRecv refuse host memory with ncclInvalidArgument, as a real GPU
 * would fault); IPC handles carry the window's pointer and open only
 * while the allocation lives; ncclCommInitRank takes only an id
 * ncclGetUniqueId made and, as NCCL's, returns once all ranks joined; the sends and receives of a
 * group are matched with the peers' ones per (sender, receiver) pair in
 * order, and ncclGroupEnd blocks until all of its own are done -- a
 * receive whose size differs from the matching send fails both sides'
 * ncclGroupEnd with ncclInvalidUsage, and a group still unmatched after
 * FAKE_TIMEOUT_MS fails with ncclSystemError (real NCCL would hang).
 *
 *   - 3 ranks on 1 node and 2x2 ranks on 2 nodes: two alltoallv calls
 *     with uneven slices (an empty one too) and gaps between them, every
 *     float checked, and every NCCL send/receive the fake saw checked for
 *     its peer, byte count and device pointer; the node peers' windows
 *     were opened by IPC, and everything is closed and freed at the end;
 *   - a sender's slen differing from its receiver's rlen is an error on
 *     both ranks (the third rank's exchange is unharmed), not a hang;
 *   - host memory with on_device = 1 is an error;
 *   - dp_a2a_comm_on_device() is 1 on cuda and 0 on loop.
 * Built without CUDA, the one case is that the cuda transport says so. */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "a2a/dp_a2a.h"
#include "common/dp_util.h"
#include "tests/unit/dp_test.h"

#ifdef DP_HAVE_CUDA
#include "tests/unit/dp_test_cuda.h"

/* ---- the fake --------------------------------------------------------------------- */

#define FMAX		8     /* ranks */
#define NALLOC		64    /* live device allocations */
#define NLOG		512   /* NCCL ops remembered */
#define NOPS		32    /* ops in one group */
#define FAKE_TIMEOUT_MS 10000 /* a rendezvous nobody completes fails after this */

enum { OP_SEND, OP_RECV };

struct fop {
	int kind, peer;
	void *buf;
	size_t n;
	int done, err;
};

struct fworld {
	ncclUniqueId id;
	int n, used, joined;
	struct fmsg *chan[FMAX][FMAX]; /* posted sends, chan[from][to], FIFO */
};

struct fcomm {
	struct fworld *w;
	int rank, dev;
};

/* a posted send; its op belongs to the sender's group, which waits in
 * ncclGroupEnd until a receive has taken it */
struct fmsg {
	struct fop *op;
	struct fmsg *next;
};

/* what ncclSend / ncclRecv were given */
struct flog {
	int rank, kind, peer, dev;
	const void *buf;
	size_t n;
};

struct fstream {
	int syncs;
};

static pthread_mutex_t fmu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t fcv = PTHREAD_COND_INITIALIZER;
static struct {
	void *p;
	size_t n;
	int owner; /* fake_me of the allocating thread */
} dmem[NALLOC];
static struct fworld worlds[4];
static ncclUniqueId ids[16];
static int nids;
static struct flog oplog[NLOG];
static int nlog;
static struct {
	void *p;
	int opener, owner;
} maps[NALLOC];			  /* IPC mappings open now */
static int opened[FMAX][FMAX];	  /* opened[opener][owner]: IPC windows open now */
static int ipc_pairs[FMAX][FMAX]; /* the same, counting every open */
static int nstreams, ncomms, mismatches, timeouts, fake_bad;
static char fake_why[256]; /* the first thing the fake refused */
static char mismatch[128]; /* the last send and receive sizes that differed */

static __thread int fake_me = -1; /* the rank this thread plays */
static __thread int cur_dev = -1;
static __thread struct {
	int depth, nop, err;
	struct fcomm *comm;
	struct fop op[NOPS];
} grp;

/* Note the first misuse (under fmu); the test checks fake_bad. */
static void refuse(const char *what)
{
	if (!fake_bad++)
		(void)snprintf(fake_why, sizeof(fake_why), "rank %d: %s", fake_me, what);
}

/* The allocation holding [p, p + n), or -1 (under fmu). */
static int dev_find(const void *p, size_t n)
{
	for (int i = 0; i < NALLOC; i++) {
		const char *b = dmem[i].p, *q = p;

		if (b && q >= b && q <= b + dmem[i].n && n <= dmem[i].n - (size_t)(q - b))
			return i;
	}
	return -1;
}

/* Now + FAKE_TIMEOUT_MS, for pthread_cond_timedwait. */
static struct timespec deadline(void)
{
	struct timespec dl;

	(void)clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += FAKE_TIMEOUT_MS / 1000;
	dl.tv_nsec += (long)(FAKE_TIMEOUT_MS % 1000) * 1000000L;
	if (dl.tv_nsec >= 1000000000L) {
		dl.tv_sec++;
		dl.tv_nsec -= 1000000000L;
	}
	return dl;
}

static int is_dev(const void *p, size_t n)
{
	int i;

	pthread_mutex_lock(&fmu);
	i = dev_find(p, n);
	pthread_mutex_unlock(&fmu);
	return i >= 0;
}

cudaError_t __wrap_cudaGetDeviceCount(int *n)
{
	*n = FMAX;
	return cudaSuccess;
}

cudaError_t __wrap_cudaSetDevice(int d)
{
	if (d < 0 || d >= FMAX)
		return cudaErrorInvalidDevice;
	cur_dev = d;
	return cudaSuccess;
}

const char *__wrap_cudaGetErrorString(cudaError_t e)
{
	return e == cudaErrorInvalidValue ? "invalid argument" : "fake cuda error";
}

cudaError_t __wrap_cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int f)
{
	struct fstream *fs = calloc(1, sizeof(*fs));

	if (!fs)
		return cudaErrorMemoryAllocation;
	pthread_mutex_lock(&fmu);
	if (f != cudaStreamNonBlocking)
		refuse("a blocking stream");
	nstreams++;
	pthread_mutex_unlock(&fmu);
	*s = (cudaStream_t)(void *)fs;
	return cudaSuccess;
}

/* *n += d, under fmu */
static void count(int *n, int d)
{
	pthread_mutex_lock(&fmu);
	*n += d;
	pthread_mutex_unlock(&fmu);
}

cudaError_t __wrap_cudaStreamDestroy(cudaStream_t s)
{
	count(&nstreams, -1);
	free((void *)s);
	return cudaSuccess;
}

/* Groups complete in ncclGroupEnd, so there is never anything to wait for. */
cudaError_t __wrap_cudaStreamSynchronize(cudaStream_t s)
{
	struct fstream *fs = (struct fstream *)(void *)s;

	if (!fs)
		return cudaErrorInvalidResourceHandle;
	fs->syncs++;
	return cudaSuccess;
}

cudaError_t __wrap_cudaMalloc(void **p, size_t n)
{
	void *m = malloc(n ? n : 1);
	cudaError_t ce = cudaErrorMemoryAllocation;

	if (!m)
		return ce;
	pthread_mutex_lock(&fmu);
	for (int i = 0; i < NALLOC; i++)
		if (!dmem[i].p) {
			dmem[i].p = m;
			dmem[i].n = n;
			dmem[i].owner = fake_me;
			ce = cudaSuccess;
			break;
		}
	pthread_mutex_unlock(&fmu);
	if (ce != cudaSuccess)
		free(m);
	else
		*p = m;
	return ce;
}

cudaError_t __wrap_cudaFree(void *p)
{
	cudaError_t ce = cudaErrorInvalidValue;

	pthread_mutex_lock(&fmu);
	for (int i = 0; p && i < NALLOC; i++)
		if (dmem[i].p == p) {
			dmem[i].p = NULL;
			ce = cudaSuccess;
		}
	if (ce != cudaSuccess && p)
		refuse("cudaFree of memory cudaMalloc did not give");
	pthread_mutex_unlock(&fmu);
	if (ce == cudaSuccess)
		free(p);
	return p ? ce : cudaSuccess;
}

cudaError_t __wrap_cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind k,
				   cudaStream_t s)
{
	(void)k;
	(void)s;
	memcpy(dst, src, n);
	return cudaSuccess;
}

cudaError_t __wrap_cudaIpcGetMemHandle(cudaIpcMemHandle_t *h, void *p)
{
	if (!is_dev(p, 1))
		return cudaErrorInvalidValue;
	memset(h, 0, sizeof(*h));
	memcpy(h->reserved, &p, sizeof(p));
	return cudaSuccess;
}

/* Opening needs the allocation alive; the mapping then outlives it (as
 * CUDA's: closing it later leaves the exporter unaffected). */
cudaError_t __wrap_cudaIpcOpenMemHandle(void **p, cudaIpcMemHandle_t h, unsigned int f)
{
	cudaError_t ce = cudaErrorInvalidValue;
	void *q;
	int i;

	(void)f;
	memcpy(&q, h.reserved, sizeof(q));
	pthread_mutex_lock(&fmu);
	i = dev_find(q, 1);
	if (i < 0 || dmem[i].p != q || dmem[i].owner == fake_me || fake_me < 0 ||
	    dmem[i].owner < 0) {
		refuse("opened an IPC handle that is no other rank's live allocation");
		pthread_mutex_unlock(&fmu);
		return ce;
	}
	for (int k = 0; k < NALLOC; k++)
		if (!maps[k].p) {
			maps[k].p = q;
			maps[k].opener = fake_me;
			maps[k].owner = dmem[i].owner;
			opened[fake_me][dmem[i].owner]++;
			ipc_pairs[fake_me][dmem[i].owner]++;
			ce = cudaSuccess;
			break;
		}
	pthread_mutex_unlock(&fmu);
	if (ce == cudaSuccess)
		*p = q;
	return ce;
}

cudaError_t __wrap_cudaIpcCloseMemHandle(void *p)
{
	cudaError_t ce = cudaErrorInvalidValue;

	pthread_mutex_lock(&fmu);
	for (int k = 0; k < NALLOC && ce != cudaSuccess; k++)
		if (maps[k].p == p && maps[k].opener == fake_me) {
			opened[fake_me][maps[k].owner]--;
			maps[k].p = NULL;
			ce = cudaSuccess;
		}
	if (ce != cudaSuccess)
		refuse("closed an IPC window it had not opened");
	pthread_mutex_unlock(&fmu);
	return ce;
}

ncclResult_t __wrap_ncclGetUniqueId(ncclUniqueId *id)
{
	for (size_t i = 0; i < sizeof(id->internal); i++)
		id->internal[i] = (char)(rand() & 0xff);
	pthread_mutex_lock(&fmu);
	if (nids < (int)DP_ARRAY_SIZE(ids))
		ids[nids++] = *id;
	pthread_mutex_unlock(&fmu);
	return ncclSuccess;
}

/* Collective, as NCCL's: returns once all @n ranks have joined with the
 * same id (one that ncclGetUniqueId made). */
ncclResult_t __wrap_ncclCommInitRank(ncclComm_t *c, int n, ncclUniqueId id, int rank)
{
	struct timespec dl = deadline();
	struct fworld *w = NULL;
	struct fcomm *fc;
	int known = 0;

	fc = calloc(1, sizeof(*fc));
	if (!fc)
		return ncclSystemError;
	pthread_mutex_lock(&fmu);
	for (int i = 0; i < nids; i++)
		known |= memcmp(&ids[i], &id, sizeof(id)) == 0;
	for (size_t i = 0; known && !w && i < DP_ARRAY_SIZE(worlds); i++)
		if (worlds[i].used && memcmp(&worlds[i].id, &id, sizeof(id)) == 0)
			w = &worlds[i];
	for (size_t i = 0; known && !w && i < DP_ARRAY_SIZE(worlds); i++)
		if (!worlds[i].used) {
			w = &worlds[i];
			w->used = 1;
			w->id = id;
			w->n = n;
		}
	if (!known || !w || w->n != n || rank < 0 || rank >= n || n > FMAX) {
		refuse("ncclCommInitRank with an id no ncclGetUniqueId made, or a bad rank");
		pthread_mutex_unlock(&fmu);
		free(fc);
		return ncclInvalidArgument;
	}
	w->joined++;
	pthread_cond_broadcast(&fcv);
	while (w->joined < n)
		if (pthread_cond_timedwait(&fcv, &fmu, &dl) == ETIMEDOUT && w->joined < n) {
			timeouts++;
			pthread_mutex_unlock(&fmu);
			free(fc);
			return ncclSystemError;
		}
	ncomms++;
	pthread_mutex_unlock(&fmu);
	fc->w = w;
	fc->rank = rank;
	fc->dev = cur_dev;
	*c = (ncclComm_t)(void *)fc;
	return ncclSuccess;
}

ncclResult_t __wrap_ncclCommDestroy(ncclComm_t c)
{
	count(&ncomms, -1);
	free((void *)c);
	return ncclSuccess;
}

/* NCCL's own texts */
const char *__wrap_ncclGetErrorString(ncclResult_t r)
{
	switch (r) {
	case ncclSuccess:
		return "no error";
	case ncclInvalidArgument:
		return "invalid argument (run with NCCL_DEBUG=WARN for details)";
	case ncclInvalidUsage:
		return "invalid usage (run with NCCL_DEBUG=WARN for details)";
	case ncclSystemError:
		return "unhandled system error (run with NCCL_DEBUG=INFO for details)";
	default:
		return "fake nccl error";
	}
}

ncclResult_t __wrap_ncclGroupStart(void)
{
	if (grp.depth++ == 0) {
		grp.nop = 0;
		grp.err = 0;
		grp.comm = NULL;
	}
	return ncclSuccess;
}

/* Queue a send or receive in the open group, after NCCL's checks. */
static ncclResult_t p2p(int kind, void *b, size_t n, ncclDataType_t t, int peer, ncclComm_t c,
			cudaStream_t s)
{
	struct fcomm *fc = (struct fcomm *)(void *)c;
	int dev = is_dev(b, n);
	ncclResult_t r = ncclSuccess;

	if (!fc || !s || t != ncclChar || peer < 0 || peer >= fc->w->n || !dev)
		r = ncclInvalidArgument; /* a host pointer too: a GPU would fault */
	else if (!grp.depth || (grp.comm && grp.comm != fc) || grp.nop == NOPS ||
		 cur_dev != fc->dev)
		r = ncclInvalidUsage; /* one group per comm here, on its device */
	pthread_mutex_lock(&fmu);
	if (nlog < NLOG)
		oplog[nlog++] = (struct flog){ .rank = fc ? fc->rank : -1,
					       .kind = kind,
					       .peer = peer,
					       .dev = dev,
					       .buf = b,
					       .n = n };
	pthread_mutex_unlock(&fmu);
	if (r != ncclSuccess) {
		grp.err = r;
		return r;
	}
	grp.comm = fc;
	grp.op[grp.nop++] = (struct fop){ .kind = kind, .peer = peer, .buf = b, .n = n };
	return ncclSuccess;
}

ncclResult_t __wrap_ncclSend(const void *b, size_t n, ncclDataType_t t, int peer, ncclComm_t c,
			     cudaStream_t s)
{
	return p2p(OP_SEND, (void *)b, n, t, peer, c, s);
}

ncclResult_t __wrap_ncclRecv(void *b, size_t n, ncclDataType_t t, int peer, ncclComm_t c,
			     cudaStream_t s)
{
	return p2p(OP_RECV, b, n, t, peer, c, s);
}

/* Match this group's receives with posted sends (under fmu); 1 when all of
 * the group's ops are done. */
static int match(struct fworld *w, int me)
{
	int all = 1;

	for (int i = 0; i < grp.nop; i++) {
		struct fop *o = &grp.op[i];
		struct fmsg *m = w->chan[o->peer][me];

		if (o->kind == OP_RECV && !o->done && m) {
			w->chan[o->peer][me] = m->next;
			if (m->op->n != o->n) {
				mismatches++;
				(void)snprintf(mismatch, sizeof(mismatch),
					       "rank %d sent %zu bytes, rank %d received %zu",
					       o->peer, m->op->n, me, o->n);
				m->op->err = o->err = 1;
			} else {
				memcpy(o->buf, m->op->buf, o->n);
			}
			m->op->done = o->done = 1;
			free(m);
			pthread_cond_broadcast(&fcv);
		}
		all &= o->done;
	}
	return all;
}

/* Take this group's sends nobody received off the channels (under fmu). */
static void withdraw(struct fworld *w, int me)
{
	for (int i = 0; i < grp.nop; i++) {
		struct fop *o = &grp.op[i];

		for (struct fmsg **pp = &w->chan[me][o->peer]; o->kind == OP_SEND && *pp;) {
			struct fmsg *m = *pp;

			if (m->op != o) {
				pp = &m->next;
				continue;
			}
			*pp = m->next;
			free(m);
		}
		if (!o->done)
			o->done = o->err = 1;
	}
}

ncclResult_t __wrap_ncclGroupEnd(void)
{
	struct timespec dl = deadline();
	struct fworld *w;
	int me, err = 0;

	if (grp.depth <= 0)
		return ncclInvalidUsage;
	if (--grp.depth)
		return ncclSuccess;
	if (grp.err || !grp.comm)
		return grp.err ? (ncclResult_t)grp.err : ncclSuccess;
	w = grp.comm->w;
	me = grp.comm->rank;
	pthread_mutex_lock(&fmu);
	for (int i = 0; i < grp.nop; i++) {
		struct fmsg *m, **pp;

		if (grp.op[i].kind != OP_SEND)
			continue;
		m = calloc(1, sizeof(*m));
		if (!m) {
			grp.op[i].done = grp.op[i].err = 1;
			continue;
		}
		m->op = &grp.op[i];
		for (pp = &w->chan[me][grp.op[i].peer]; *pp; pp = &(*pp)->next)
			;
		*pp = m;
	}
	pthread_cond_broadcast(&fcv);
	while (!match(w, me)) {
		if (pthread_cond_timedwait(&fcv, &fmu, &dl) == ETIMEDOUT && !match(w, me)) {
			timeouts++;
			withdraw(w, me);
			err = ncclSystemError;
			break;
		}
	}
	for (int i = 0; i < grp.nop && !err; i++)
		if (grp.op[i].err)
			err = ncclInvalidUsage;
	pthread_mutex_unlock(&fmu);
	grp.comm = NULL;
	return (ncclResult_t)err;
}

/* Nothing left between the tests. */
static void fake_reset(void)
{
	pthread_mutex_lock(&fmu);
	for (size_t k = 0; k < DP_ARRAY_SIZE(worlds); k++) {
		for (int i = 0; i < FMAX; i++)
			for (int j = 0; j < FMAX; j++)
				while (worlds[k].chan[i][j]) {
					struct fmsg *m = worlds[k].chan[i][j];

					worlds[k].chan[i][j] = m->next;
					free(m);
				}
		worlds[k].used = worlds[k].joined = 0;
	}
	nids = nlog = mismatches = timeouts = fake_bad = 0;
	memset(opened, 0, sizeof(opened));
	memset(ipc_pairs, 0, sizeof(ipc_pairs));
	fake_why[0] = mismatch[0] = '\0';
	pthread_mutex_unlock(&fmu);
}

/* ---- ranks as threads ------------------------------------------------------------- */

enum body { B_TWICE, B_MISMATCH, B_HOST };

struct rk {
	const char **addrs;
	size_t checked; /* floats received and found right */
	const void *send, *recv;
	size_t soff[FMAX], slen[FMAX], roff[FMAX], rlen[FMAX];
	int rank, nodes, rpn;
	int lfd;
	enum body body;
	int rc, on_dev, bad;
	struct dp_err err;
};

/* floats rank @i sends rank @j: uneven, with empty slices */
static size_t cnt(int i, int j)
{
	return (size_t)((2 * i + 3 * j + 1) % 5) * 3;
}

static float val(int from, int to, size_t k, int call)
{
	return (float)(from * 10000 + to * 1000 + (int)k) + 0.5f * (float)call;
}

#define GAP_S (-7.0f)
#define GAP_R (-1.0f)

/* Offsets (bytes) with one float of gap before every slice; the total in
 * floats, with a trailing gap. */
static size_t layout(int world, int me, int sending, size_t *off, size_t *len)
{
	size_t at = 0;

	for (int j = 0; j < world; j++) {
		size_t n = sending ? cnt(me, j) : cnt(j, me);

		at++;
		off[j] = at * sizeof(float);
		len[j] = n * sizeof(float);
		at += n;
	}
	return at + 1;
}

static void *dev_alloc(size_t floats)
{
	void *p = NULL;

	return cudaMalloc(&p, floats * sizeof(float)) == cudaSuccess ? p : NULL;
}

/* One call, then every received float and gap checked. */
static int one_call(struct rk *r, struct dp_a2a_comm *c, int world, float *sb, size_t ns, float *rb,
		    size_t nr, int call)
{
	int rc;

	for (size_t i = 0; i < ns; i++)
		sb[i] = GAP_S;
	for (size_t i = 0; i < nr; i++)
		rb[i] = GAP_R;
	for (int j = 0; j < world; j++)
		for (size_t k = 0; k < r->slen[j] / sizeof(float); k++)
			sb[r->soff[j] / sizeof(float) + k] = val(r->rank, j, k, call);
	rc = dp_a2a_alltoallv(c, sb, r->soff, r->slen, rb, r->roff, r->rlen, 1, &r->err);
	if (rc)
		return rc;
	for (size_t i = 0; i < nr; i++) {
		float want = GAP_R;

		for (int j = 0; j < world; j++) {
			size_t at = r->roff[j] / sizeof(float);

			if (i >= at && i < at + r->rlen[j] / sizeof(float))
				want = val(j, r->rank, i - at, call);
		}
		if (rb[i] == want && want != GAP_R)
			r->checked++;
		else if (rb[i] != want)
			r->bad++;
	}
	return 0;
}

static int body(struct rk *r, struct dp_a2a_comm *c)
{
	int world = r->nodes * r->rpn, rc = 0;
	size_t ns = layout(world, r->rank, 1, r->soff, r->slen);
	size_t nr = layout(world, r->rank, 0, r->roff, r->rlen);
	float *sb, *rb;

	if (r->body == B_MISMATCH && r->rank == 0)
		r->slen[2] += sizeof(float); /* into the trailing gap */
	if (r->body == B_HOST) {
		sb = calloc(ns, sizeof(float));
		rb = calloc(nr, sizeof(float));
	} else {
		sb = dev_alloc(ns);
		rb = dev_alloc(nr);
	}
	r->send = sb;
	r->recv = rb;
	for (int call = 0; sb && rb && !rc && call < (r->body == B_TWICE ? 2 : 1); call++)
		rc = one_call(r, c, world, sb, ns, rb, nr, call);
	if (!sb || !rb)
		rc = -ENOMEM;
	if (r->body == B_HOST) {
		free(sb);
		free(rb);
	} else {
		(void)cudaFree(sb);
		(void)cudaFree(rb);
	}
	return rc;
}

static void *rank_main(void *arg)
{
	struct rk *r = arg;
	struct dp_a2a_comm_cfg cfg;
	struct dp_a2a_comm *c = NULL;

	fake_me = r->rank;
	dp_a2a_comm_cfg_init(&cfg);
	cfg.transport = "cuda";
	cfg.rank = r->rank;
	cfg.nodes = r->nodes;
	cfg.ranks_per_node = r->rpn;
	cfg.experts = r->nodes * r->rpn;
	cfg.hidden = 1;
	cfg.timeout_ms = 10000;
	cfg.addrs = r->addrs;
	cfg.listen_fd = r->lfd;
	cfg.shm_ring_bytes = 4096; /* the device window */
	r->rc = dp_a2a_comm_open(&cfg, &c, &r->err);
	if (r->rc) {
		(void)close(r->lfd);
		return NULL;
	}
	r->on_dev = dp_a2a_comm_on_device(c);
	r->rc = body(r, c);
	dp_a2a_comm_close(c);
	return NULL;
}

/* @nodes x @rpn ranks as threads, listeners on 127.0.0.1 made first. */
static void run_ranks(struct rk *rk, int nodes, int rpn, enum body b)
{
	int world = nodes * rpn;
	const char *addrs[FMAX];
	pthread_t th[FMAX];

	assert_true(world <= FMAX);
	fake_reset();
	for (int i = 0; i < world; i++) {
		struct sockaddr_in a = { .sin_family = AF_INET };
		socklen_t al = sizeof(a);
		char *s = malloc(32);

		assert_non_null(s);
		memset(&rk[i], 0, sizeof(rk[i]));
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		rk[i].lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		assert_true(rk[i].lfd >= 0);
		assert_int_equal(bind(rk[i].lfd, (struct sockaddr *)&a, sizeof(a)), 0);
		assert_int_equal(listen(rk[i].lfd, 16), 0);
		assert_int_equal(getsockname(rk[i].lfd, (struct sockaddr *)&a, &al), 0);
		(void)snprintf(s, 32, "127.0.0.1:%d", ntohs(a.sin_port));
		addrs[i] = s;
	}
	for (int i = 0; i < world; i++) {
		rk[i].rank = i;
		rk[i].nodes = nodes;
		rk[i].rpn = rpn;
		rk[i].addrs = addrs;
		rk[i].body = b;
		assert_int_equal(pthread_create(&th[i], NULL, rank_main, &rk[i]), 0);
	}
	for (int i = 0; i < world; i++)
		assert_int_equal(pthread_join(th[i], NULL), 0);
	for (int i = 0; i < world; i++)
		free((void *)addrs[i]);
	/* closed: comms, streams, windows, buffers */
	assert_string_equal(fake_why, "");
	assert_int_equal(fake_bad, 0);
	assert_int_equal(ncomms, 0);
	assert_int_equal(nstreams, 0);
	for (int i = 0; i < NALLOC; i++)
		assert_null(dmem[i].p);
	for (int i = 0; i < world; i++)
		for (int j = 0; j < world; j++)
			assert_int_equal(opened[i][j], 0);
}

/* The ops rank @me gave NCCL, in order, from oplog[*at]: per call, for
 * every peer with bytes, a send of exactly slen[j] bytes from send +
 * soff[j], then a receive of rlen[j] bytes into recv + roff[j], all of
 * them fake device memory; nothing for the empty slices. */
static void expect_ops(const struct rk *r, int world, int calls)
{
	int at = 0;

	for (int call = 0; call < calls; call++)
		for (int j = 0; j < world; j++) {
			for (int kind = OP_SEND; kind <= OP_RECV; kind++) {
				size_t n = kind == OP_SEND ? r->slen[j] : r->rlen[j];
				const char *b = kind == OP_SEND ? r->send : r->recv;
				size_t off = kind == OP_SEND ? r->soff[j] : r->roff[j];

				if (!n)
					continue;
				while (at < nlog && oplog[at].rank != r->rank)
					at++;
				assert_true(at < nlog);
				assert_int_equal(oplog[at].kind, kind);
				assert_int_equal(oplog[at].peer, j);
				assert_int_equal(oplog[at].n, n);
				assert_ptr_equal(oplog[at].buf, b + off);
				assert_int_equal(oplog[at].dev, 1);
				at++;
			}
		}
	while (at < nlog && oplog[at].rank != r->rank)
		at++;
	assert_int_equal(at, nlog); /* nothing more */
}

static void twice(int nodes, int rpn)
{
	int world = nodes * rpn;
	struct rk rk[FMAX];

	run_ranks(rk, nodes, rpn, B_TWICE);
	assert_int_equal(cnt(2, 0), 0); /* an empty slice: no NCCL op for it */
	for (int i = 0; i < world; i++) {
		size_t got = 0;

		if (rk[i].rc)
			print_message("rank %d: %s\n", i, rk[i].err.msg);
		assert_int_equal(rk[i].rc, 0);
		assert_int_equal(rk[i].bad, 0);
		for (int j = 0; j < world; j++)
			got += cnt(j, i);
		assert_int_equal(rk[i].checked, 2 * got);
		expect_ops(&rk[i], world, 2);
		/* each node peer's window opened once, no other node's */
		for (int j = 0; j < world; j++)
			assert_int_equal(ipc_pairs[i][j], j != i && j / rpn == i / rpn);
	}
	assert_int_equal(mismatches, 0);
	assert_int_equal(timeouts, 0);
}

static void three_ranks_one_node(void **state)
{
	(void)state;
	twice(1, 3);
}

static void two_nodes_of_two(void **state)
{
	(void)state;
	twice(2, 2);
}

static void length_mismatch_fails_both_ends(void **state)
{
	struct rk rk[3];

	(void)state;
	run_ranks(rk, 1, 3, B_MISMATCH);
	for (int i = 0; i < 3; i += 2) {
		assert_int_equal(rk[i].rc, -EIO);
		assert_string_equal(
			rk[i].err.msg,
			"a2a: cuda: NCCL exchange failed: invalid usage (run with NCCL_DEBUG=WARN for details)");
	}
	/* rank 1 traded with both and got everything */
	assert_int_equal(rk[1].rc, 0);
	assert_int_equal(rk[1].bad, 0);
	assert_int_equal(rk[1].checked, cnt(0, 1) + cnt(1, 1) + cnt(2, 1));
	assert_int_equal(mismatches, 1);
	assert_string_equal(mismatch, "rank 0 sent 28 bytes, rank 2 received 24");
	assert_int_equal(timeouts, 0); /* found, not waited out */
}

static void host_memory_is_refused(void **state)
{
	struct rk rk[2];

	(void)state;
	run_ranks(rk, 1, 2, B_HOST);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(rk[i].rc, -EIO);
		assert_string_equal(
			rk[i].err.msg,
			"a2a: cuda: NCCL exchange failed: invalid argument (run with NCCL_DEBUG=WARN for details)");
		assert_false(is_dev(rk[i].send, 4));
	}
	assert_int_equal(timeouts, 0);
}

static void on_device_only_on_cuda(void **state)
{
	struct dp_a2a_comm_cfg cfg;
	struct dp_a2a_loop *loop = NULL;
	struct dp_a2a_comm *c = NULL;
	struct rk rk[2];

	(void)state;
	run_ranks(rk, 1, 2, B_TWICE);
	assert_int_equal(rk[0].on_dev, 1);
	assert_int_equal(rk[1].on_dev, 1);
	assert_int_equal(dp_a2a_loop_new(1, 4096, &loop, NULL), 0);
	dp_a2a_comm_cfg_init(&cfg);
	cfg.transport = "loop";
	cfg.nodes = cfg.ranks_per_node = cfg.experts = cfg.hidden = 1;
	cfg.loop = loop;
	assert_int_equal(dp_a2a_comm_open(&cfg, &c, NULL), 0);
	assert_int_equal(dp_a2a_comm_on_device(c), 0);
	dp_a2a_comm_close(c);
	dp_a2a_loop_free(loop);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(three_ranks_one_node),
		cmocka_unit_test(two_nodes_of_two),
		cmocka_unit_test(length_mismatch_fails_both_ends),
		cmocka_unit_test(host_memory_is_refused),
		cmocka_unit_test(on_device_only_on_cuda),
	};

	(void)signal(SIGPIPE, SIG_IGN);
	(void)alarm(120); /* never outlive a broken fake */
	return cmocka_run_group_tests(tests, NULL, NULL);
}

#else /* !DP_HAVE_CUDA */

/* Built without CUDA: a comm on the cuda transport is refused by its stub. */
static void cuda_is_not_built(void **state)
{
	struct dp_a2a_comm_cfg cfg;
	struct dp_a2a_comm *c = NULL;
	struct dp_err err = { 0 };

	(void)state;
	dp_a2a_comm_cfg_init(&cfg);
	cfg.transport = "cuda";
	cfg.nodes = cfg.ranks_per_node = cfg.experts = cfg.hidden = 1;
	assert_int_equal(dp_a2a_comm_open(&cfg, &c, &err), -ENOSYS);
	assert_string_equal(err.msg, "a2a: cuda: dpctl was built without CUDA");
	assert_null(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(cuda_is_not_built),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
#endif
