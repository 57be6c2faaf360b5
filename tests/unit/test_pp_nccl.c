/* tests/unit/test_pp_nccl.c - PP links over NCCL (worker/dp_pp_nccl.h),
 * ranks as threads of this process joined by socketpairs.
 *
 * Every case runs on a fake CUDA + NCCL (linked with -Wl,--wrap, see
 * test_pp_nccl.ldflags): device memory is host memory, a stream is a FIFO
 * of copies and NCCL groups run by cudaStreamQuery, and an ncclSend blocks
 * its stream until the peer's matching ncclRecv (same size, checked) has
 * taken it -- as with real NCCL, an unmatched send holds the stream, so a
 * round protocol that could deadlock on GPUs deadlocks here too (bounded:
 * alarm()).  The cases that need no fault injection also run on real GPUs
 * (one per rank; skipped with fewer than two or without CUDA).
 *
 *   - bytes: 9 MiB both ways at once, read back in other cuts;
 *   - flow control: 80 MiB to a receiver that starts late (its inbox holds
 *     64 MiB), read in cuts and then in one read larger than the inbox;
 *   - training: 3 DualPipe steps over NCCL links give the losses of the
 *     same run over the socketpairs, as doubles;
 *   - a peer closing: recv -ECONNRESET, send -EPIPE;
 *   - a peer dying (fake only): its socket closes, the hub aborts, recv
 *     fails instead of hanging;
 *   - the unique id relayed along a line of 3 ranks (fake checks every
 *     rank joined with rank 0's id) and a message passed down the line;
 *   - bad id message -> -EPROTO; no linked lower rank -> -EINVAL. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "worker/dp_exec.h"
#include "worker/dp_gpu.h"
#include "worker/dp_pp_nccl.h"
#include "worker/dp_worker.h"
#include "tests/unit/dp_test.h"

#ifdef DP_HAVE_CUDA
#include "tests/unit/dp_test_cuda.h"

/* ---- the fake --------------------------------------------------------------------- */

enum { OP_COPY, OP_SEND, OP_RECV };

struct fop {
	int kind, from, to;
	void *dst;
	const void *src;
	size_t n;
	int done;
};

struct fgroup {
	struct fstream *s;
	struct fop op[64];
	int nop, launched;
	struct fgroup *next;
};

struct fstream {
	struct fgroup *head, *tail;
	int err;
};

/* a posted send: a copy of its bytes; op is NULL once its stream is gone */
struct fmsg {
	char *data;
	size_t n;
	struct fop *op;
	struct fstream *s;
	struct fmsg *next;
};

struct fcomm {
	int rank, n;
};

#define FMAX 8
static pthread_mutex_t fmu = PTHREAD_MUTEX_INITIALIZER;
static struct fmsg *chan[FMAX][FMAX]; /* chan[from][to], FIFO */
static __thread struct fgroup *cur_group;
static __thread int group_depth;
static ncclUniqueId world_id;
static int fake = 1; /* 0: the real libraries */

#define REAL(name, ...)                                                                            \
	do {                                                                                       \
		if (!fake)                                                                         \
			return __real_##name(__VA_ARGS__);                                         \
	} while (0)

cudaError_t __wrap_cudaGetDeviceCount(int *n)
{
	REAL(cudaGetDeviceCount, n);
	*n = FMAX;
	return cudaSuccess;
}

cudaError_t __wrap_cudaSetDevice(int d)
{
	REAL(cudaSetDevice, d);
	return cudaSuccess;
}

cudaError_t __wrap_cudaGetLastError(void)
{
	if (!fake)
		return __real_cudaGetLastError();
	return cudaSuccess;
}

const char *__wrap_cudaGetErrorString(cudaError_t e)
{
	REAL(cudaGetErrorString, e);
	return "fake cuda error";
}

const char *__wrap_ncclGetErrorString(ncclResult_t r)
{
	REAL(ncclGetErrorString, r);
	return "fake nccl error";
}

cudaError_t __wrap_cudaMalloc(void **p, size_t n)
{
	REAL(cudaMalloc, p, n);
	*p = malloc(n);
	return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t __wrap_cudaMallocHost(void **p, size_t n)
{
	REAL(cudaMallocHost, p, n);
	*p = malloc(n);
	return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t __wrap_cudaFree(void *p)
{
	REAL(cudaFree, p);
	free(p);
	return cudaSuccess;
}

cudaError_t __wrap_cudaFreeHost(void *p)
{
	REAL(cudaFreeHost, p);
	free(p);
	return cudaSuccess;
}

cudaError_t __wrap_cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int f)
{
	struct fstream *fs;

	REAL(cudaStreamCreateWithFlags, s, f);
	fs = calloc(1, sizeof(*fs));
	*s = (cudaStream_t)(void *)fs;
	return fs ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t __wrap_cudaStreamDestroy(cudaStream_t s)
{
	struct fstream *fs = (struct fstream *)(void *)s;

	REAL(cudaStreamDestroy, s);
	pthread_mutex_lock(&fmu);
	for (int i = 0; i < FMAX; i++)
		for (int j = 0; j < FMAX; j++)
			for (struct fmsg *m = chan[i][j]; m; m = m->next)
				if (m->s == fs)
					m->op = NULL;
	while (fs->head) {
		struct fgroup *g = fs->head;

		fs->head = g->next;
		free(g);
	}
	pthread_mutex_unlock(&fmu);
	free(fs);
	return cudaSuccess;
}

/* Queue @g on its stream (under fmu). */
static void enqueue(struct fgroup *g)
{
	if (g->s->tail)
		g->s->tail->next = g;
	else
		g->s->head = g;
	g->s->tail = g;
}

/* Run what can run on @s (under fmu): groups in order; a group's sends
 * post their bytes when it starts and are done when the peer takes them. */
static void progress(struct fstream *s)
{
	while (s->head && !s->err) {
		struct fgroup *g = s->head;
		int all = 1;

		if (!g->launched) {
			g->launched = 1;
			for (int i = 0; i < g->nop; i++) {
				struct fop *o = &g->op[i];
				struct fmsg *m, **pp;

				if (o->kind != OP_SEND)
					continue;
				m = calloc(1, sizeof(*m));
				assert_non_null(m);
				m->data = malloc(o->n ? o->n : 1);
				assert_non_null(m->data);
				memcpy(m->data, o->src, o->n);
				m->n = o->n;
				m->op = o;
				m->s = s;
				for (pp = &chan[o->from][o->to]; *pp; pp = &(*pp)->next)
					;
				*pp = m;
			}
		}
		for (int i = 0; i < g->nop; i++) {
			struct fop *o = &g->op[i];
			struct fmsg *m = chan[o->from][o->to];

			if (o->kind == OP_COPY && !o->done) {
				memcpy(o->dst, o->src, o->n);
				o->done = 1;
			} else if (o->kind == OP_RECV && !o->done && m) {
				if (m->n != o->n) {
					(void)fprintf(stderr,
						      "fake nccl: recv %zu from %d, sent %zu\n",
						      o->n, o->from, m->n);
					s->err = 1;
					return;
				}
				memcpy(o->dst, m->data, o->n);
				if (m->op)
					m->op->done = 1;
				chan[o->from][o->to] = m->next;
				free(m->data);
				free(m);
				o->done = 1;
			}
			all &= o->done;
		}
		if (!all)
			return;
		s->head = g->next;
		if (!s->head)
			s->tail = NULL;
		free(g);
	}
}

cudaError_t __wrap_cudaStreamQuery(cudaStream_t s)
{
	struct fstream *fs = (struct fstream *)(void *)s;
	cudaError_t ce;

	REAL(cudaStreamQuery, s);
	pthread_mutex_lock(&fmu);
	progress(fs);
	ce = fs->err ? cudaErrorUnknown : fs->head ? cudaErrorNotReady : cudaSuccess;
	pthread_mutex_unlock(&fmu);
	return ce;
}

/* Add an op to the open group, or queue it as a group of its own. */
static void add_op(struct fstream *s, struct fop o)
{
	struct fgroup *g = group_depth ? cur_group : calloc(1, sizeof(*g));

	assert_non_null(g);
	assert_true(g->nop < 64);
	assert_true(!g->s || g->s == s); /* one stream per group here */
	g->s = s;
	g->op[g->nop++] = o;
	if (!group_depth) {
		pthread_mutex_lock(&fmu);
		enqueue(g);
		pthread_mutex_unlock(&fmu);
	}
}

cudaError_t __wrap_cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind k,
				   cudaStream_t s)
{
	REAL(cudaMemcpyAsync, dst, src, n, k, s);
	add_op((struct fstream *)(void *)s,
	       (struct fop){ .kind = OP_COPY, .dst = dst, .src = src, .n = n });
	return cudaSuccess;
}

ncclResult_t __wrap_ncclGroupStart(void)
{
	REAL(ncclGroupStart);
	if (group_depth++ == 0) {
		cur_group = calloc(1, sizeof(*cur_group));
		assert_non_null(cur_group);
	}
	return ncclSuccess;
}

ncclResult_t __wrap_ncclGroupEnd(void)
{
	REAL(ncclGroupEnd);
	if (--group_depth == 0) {
		pthread_mutex_lock(&fmu);
		if (cur_group->nop)
			enqueue(cur_group);
		else
			free(cur_group);
		pthread_mutex_unlock(&fmu);
		cur_group = NULL;
	}
	return ncclSuccess;
}

/* A send (@dst NULL) or receive of @n bytes with @peer, queued on @s. */
static void p2p(const void *src, void *dst, size_t n, ncclDataType_t t, int peer, ncclComm_t c,
		cudaStream_t s)
{
	const struct fcomm *fc = (const struct fcomm *)(void *)c;
	struct fop o = { .kind = dst ? OP_RECV : OP_SEND, .src = src, .dst = dst, .n = n };

	assert_int_equal(t, ncclUint8);
	assert_true(peer >= 0 && peer < fc->n && peer != fc->rank);
	o.from = dst ? peer : fc->rank;
	o.to = dst ? fc->rank : peer;
	add_op((struct fstream *)(void *)s, o);
}

ncclResult_t __wrap_ncclSend(const void *b, size_t n, ncclDataType_t t, int peer, ncclComm_t c,
			     cudaStream_t s)
{
	REAL(ncclSend, b, n, t, peer, c, s);
	p2p(b, NULL, n, t, peer, c, s);
	return ncclSuccess;
}

ncclResult_t __wrap_ncclRecv(void *b, size_t n, ncclDataType_t t, int peer, ncclComm_t c,
			     cudaStream_t s)
{
	REAL(ncclRecv, b, n, t, peer, c, s);
	p2p(NULL, b, n, t, peer, c, s);
	return ncclSuccess;
}

ncclResult_t __wrap_ncclGetUniqueId(ncclUniqueId *id)
{
	REAL(ncclGetUniqueId, id);
	for (size_t i = 0; i < sizeof(id->internal); i++)
		id->internal[i] = (char)(rand() & 0xff);
	pthread_mutex_lock(&fmu);
	world_id = *id;
	pthread_mutex_unlock(&fmu);
	return ncclSuccess;
}

ncclResult_t __wrap_ncclCommInitRank(ncclComm_t *c, int n, ncclUniqueId id, int rank)
{
	struct fcomm *fc;
	int same;

	REAL(ncclCommInitRank, c, n, id, rank);
	pthread_mutex_lock(&fmu);
	same = memcmp(&id, &world_id, sizeof(id)) == 0;
	pthread_mutex_unlock(&fmu);
	if (!same || n > FMAX)
		return ncclInvalidArgument; /* not rank 0's id */
	fc = calloc(1, sizeof(*fc));
	if (!fc)
		return ncclSystemError;
	fc->rank = rank;
	fc->n = n;
	*c = (ncclComm_t)(void *)fc;
	return ncclSuccess;
}

ncclResult_t __wrap_ncclCommFinalize(ncclComm_t c)
{
	REAL(ncclCommFinalize, c);
	return ncclSuccess;
}

ncclResult_t __wrap_ncclCommDestroy(ncclComm_t c)
{
	REAL(ncclCommDestroy, c);
	free((void *)c);
	return ncclSuccess;
}

ncclResult_t __wrap_ncclCommAbort(ncclComm_t c)
{
	REAL(ncclCommAbort, c);
	free((void *)c);
	return ncclSuccess;
}

ncclResult_t __wrap_ncclCommGetAsyncError(ncclComm_t c, ncclResult_t *r)
{
	REAL(ncclCommGetAsyncError, c, r);
	*r = ncclSuccess;
	return ncclSuccess;
}

/* Nothing left in flight between the tests. */
static void fake_reset(void)
{
	pthread_mutex_lock(&fmu);
	for (int i = 0; i < FMAX; i++)
		for (int j = 0; j < FMAX; j++) {
			while (chan[i][j]) {
				struct fmsg *m = chan[i][j];

				chan[i][j] = m->next;
				free(m->data);
				free(m);
			}
		}
	pthread_mutex_unlock(&fmu);
}

/* ---- ranks as threads ------------------------------------------------------------- */

#define STEPS 3

struct rank {
	int rank, n;
	struct dp_pp_link *tcp[FMAX], *nl[FMAX];
	int (*body)(struct rank *r, struct dp_err *err);
	int nccl; /* open NCCL links before the body */
	int rc;
	struct dp_err err;
	double loss[STEPS];
};

static void *rank_main(void *arg)
{
	struct rank *r = arg;
	int rc = 0;

	if (r->nccl)
		rc = dp_pp_nccl_open(r->n, r->rank, r->rank, r->tcp, r->nl, &r->err);
	if (!rc)
		rc = r->body(r, &r->err);
	for (int j = 0; j < r->n; j++)
		dp_pp_link_close(r->nl[j]);
	for (int j = 0; j < r->n; j++)
		dp_pp_link_close(r->tcp[j]);
	r->rc = rc;
	return NULL;
}

/* Run @n ranks, linked where @linked[i][j]; every rank runs @body.  The
 * ranks in the bit mask @nccl first open NCCL links over the socket ones. */
static void run_ranks(struct rank *rk, int n, const int (*linked)[FMAX], unsigned nccl,
		      int (*body)(struct rank *, struct dp_err *))
{
	pthread_t t[FMAX];

	memset(rk, 0, sizeof(*rk) * (size_t)n);
	for (int i = 0; i < n; i++) {
		rk[i].rank = i;
		rk[i].n = n;
		rk[i].nccl = (int)((nccl >> i) & 1u);
		rk[i].body = body;
	}
	for (int i = 0; i < n; i++)
		for (int j = i + 1; j < n; j++) {
			int fds[2];

			if (!linked[i][j])
				continue;
			assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds),
					 0);
			assert_int_equal(dp_pp_link_fd(fds[0], &rk[i].tcp[j], NULL), 0);
			assert_int_equal(dp_pp_link_fd(fds[1], &rk[j].tcp[i], NULL), 0);
		}
	(void)alarm(120); /* a deadlock ends the binary (a failure), not the run */
	for (int i = 0; i < n; i++)
		assert_int_equal(pthread_create(&t[i], NULL, rank_main, &rk[i]), 0);
	for (int i = 0; i < n; i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
	(void)alarm(0);
	fake_reset();
}

static const int pair[FMAX][FMAX] = { { 0, 1 }, { 1, 0 } };

/* ---- bodies ----------------------------------------------------------------------- */

/* 9 MiB each way at once (more than a round's chunk), read in other cuts. */
static int body_bytes(struct rank *r, struct dp_err *err)
{
	struct dp_pp_link *l = r->nl[1 - r->rank];
	size_t big = (size_t)9 << 20, cut = 1000003;
	unsigned char *a = malloc(big), *b = malloc(big);
	int rc;

	if (!a || !b) {
		free(a);
		free(b);
		return dp_err_set(err, ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < big; i++)
		a[i] = (unsigned char)(i * 7 + (size_t)r->rank);
	/* both send first: a send must not wait for the peer to read */
	rc = l->ops->send(l, a, big, err);
	for (size_t off = 0; !rc && off < big; off += cut)
		rc = l->ops->recv(l, b + off, big - off < cut ? big - off : cut, err);
	for (size_t i = 0; !rc && i < big; i++)
		if (b[i] != (unsigned char)(i * 7 + (size_t)(1 - r->rank)))
			rc = dp_err_set(err, EPROTO, "byte %zu differs", i);
	/* and small ones, several before the first read */
	for (int k = 0; !rc && k < 3; k++)
		rc = l->ops->send(l, &k, sizeof(k), err);
	for (int k = 0; !rc && k < 3; k++) {
		int v = -1;

		rc = l->ops->recv(l, &v, sizeof(v), err);
		if (!rc && v != k)
			rc = dp_err_set(err, EPROTO, "got %d, want %d", v, k);
	}
	free(a);
	free(b);
	return rc;
}

/* 80 MiB one way, more than the receiver's inbox, while the receiver
 * starts late and reads in small cuts: the sender must wait for room, and
 * a read larger than the inbox must drain it as it fills. */
static int body_flow(struct rank *r, struct dp_err *err)
{
	struct dp_pp_link *l = r->nl[1 - r->rank];
	size_t big = (size_t)80 << 20, cut = (size_t)3 << 20;
	unsigned char *a = malloc(big);
	int rc = 0;

	if (!a)
		return dp_err_set(err, ENOMEM, "out of memory");
	if (r->rank == 0) {
		for (size_t i = 0; i < big; i++)
			a[i] = (unsigned char)(i % 251);
		rc = l->ops->send(l, a, big, err);
	} else {
		(void)usleep(1000000);		   /* long enough for 64 MiB to pile up */
		rc = l->ops->recv(l, a, cut, err); /* a few cuts, then the rest at once */
		for (size_t off = cut; !rc && off < 4 * cut; off += cut)
			rc = l->ops->recv(l, a + off, cut, err);
		if (!rc)
			rc = l->ops->recv(l, a + 4 * cut, big - 4 * cut, err);
		for (size_t i = 0; !rc && i < big; i++)
			if (a[i] != (unsigned char)(i % 251))
				rc = dp_err_set(err, EPROTO, "byte %zu differs", i);
	}
	free(a);
	return rc;
}

static int body_train(struct rank *r, struct dp_err *err)
{
	struct dp_exec_cfg c;
	struct dp_exec *ex = NULL;
	int rc;

	memset(&c, 0, sizeof(c));
	c.algo = DP_SCHED_DUALPIPE;
	c.pp = 2;
	c.micro = 4;
	c.rank = r->rank;
	dp_model_cfg_default(&c.model);
	c.model.seed = 3;
	rc = dp_worker_model_parse("layers=4,hidden=12,ffn=16,experts=4,groups=2,topk_groups=2,"
				   "top_k=2,vocab=13,seq_len=6,seqs=2,lr=0.01",
				   &c.model, err);
	if (!rc)
		rc = dp_exec_new(&c, r->nccl ? r->nl : r->tcp, &ex, err);
	for (int k = 0; !rc && k < STEPS; k++) {
		rc = dp_exec_step(ex, k, &r->loss[k], err);
		if (!rc)
			dp_exec_optimizer_step(ex);
	}
	dp_exec_free(ex);
	return rc;
}

/* Rank 1 closes at once; rank 0 then finds the link closed both ways. */
static int body_close(struct rank *r, struct dp_err *err)
{
	struct dp_pp_link *l = r->nl[1 - r->rank];
	char c = 'x';
	int rc;

	if (r->rank == 1) {
		dp_pp_link_close(l);
		r->nl[0] = NULL;
		return 0;
	}
	rc = l->ops->recv(l, &c, 1, err);
	if (rc != -ECONNRESET || !strstr(err->msg, "closed by the peer"))
		return dp_err_set(err, EPROTO, "recv after the peer closed: %d %s", rc, err->msg);
	rc = l->ops->send(l, &c, 1, err);
	if (rc != -EPIPE)
		return dp_err_set(err, EPROTO, "send after the peer closed: %d %s", rc, err->msg);
	return 0;
}

/* Rank 1 "dies" after the id: it never joins NCCL and its socket closes. */
static int body_dead(struct rank *r, struct dp_err *err)
{
	struct dp_pp_link *l;
	char buf[512], c;
	int rc;

	if (r->rank == 1) {
		l = r->tcp[0];
		/* the id message, whatever its size: read until rank 0 is in */
		(void)l->ops->recv(l, buf, sizeof(ncclUniqueId) + 8, err);
		dp_pp_link_close(l);
		r->tcp[0] = NULL;
		return 0;
	}
	l = r->nl[1];
	rc = l->ops->recv(l, &c, 1, err);
	if (rc != -ECONNRESET || !strstr(err->msg, "a peer is gone"))
		return dp_err_set(err, EPROTO, "recv from a dead peer: %d %s", rc, err->msg);
	return 0;
}

/* A line 0 - 1 - 2: a message goes down it. */
static int body_line(struct rank *r, struct dp_err *err)
{
	char msg[6] = "hello";
	int rc = 0;

	if (r->rank > 0)
		rc = r->nl[r->rank - 1]->ops->recv(r->nl[r->rank - 1], msg, sizeof(msg), err);
	if (!rc && r->rank + 1 < r->n)
		rc = r->nl[r->rank + 1]->ops->send(r->nl[r->rank + 1], msg, sizeof(msg), err);
	if (!rc && strcmp(msg, "hello") != 0)
		rc = dp_err_set(err, EPROTO, "got '%.6s'", msg);
	return rc;
}

static void expect_ok(const struct rank *rk, int n)
{
	int bad = 0;

	for (int i = 0; i < n; i++)
		if (rk[i].rc) {
			print_error("rank %d: %d %s\n", i, rk[i].rc, rk[i].err.msg);
			bad = 1;
		}
	assert_false(bad);
}

/* ---- cases ------------------------------------------------------------------------ */

static int real_gpus(void)
{
	int n = 0;

	if (!dp_gpu_built())
		return 0;
	fake = 0;
	if (__real_cudaGetDeviceCount(&n) != cudaSuccess)
		n = 0;
	fake = 1;
	return n;
}

/* Run the case @fn on the fake, then on real GPUs when there are two. */
static void both(void (*fn)(void))
{
	fake = 1;
	fn();
	if (real_gpus() < 2)
		return; /* the fake run was the test */
	fake = 0;
	fn();
	fake = 1;
}

static void case_bytes(void)
{
	struct rank rk[2];

	run_ranks(rk, 2, pair, ~0u, body_bytes);
	expect_ok(rk, 2);
}

static void case_flow(void)
{
	struct rank rk[2];

	run_ranks(rk, 2, pair, ~0u, body_flow);
	expect_ok(rk, 2);
}

static void case_train(void)
{
	struct rank tcp[2], nccl[2];

	run_ranks(tcp, 2, pair, 0, body_train);
	expect_ok(tcp, 2);
	run_ranks(nccl, 2, pair, ~0u, body_train);
	expect_ok(nccl, 2);
	for (int k = 0; k < STEPS; k++)
		assert_true(tcp[0].loss[k] + tcp[1].loss[k] == nccl[0].loss[k] + nccl[1].loss[k]);
	assert_true(tcp[0].loss[STEPS - 1] + tcp[1].loss[STEPS - 1] <
		    tcp[0].loss[0] + tcp[1].loss[0]);
}

static void case_close(void)
{
	struct rank rk[2];

	run_ranks(rk, 2, pair, ~0u, body_close);
	expect_ok(rk, 2);
}

static void bytes_both_ways(void **state)
{
	(void)state;
	both(case_bytes);
}

static void sender_waits_for_room(void **state)
{
	(void)state;
	both(case_flow);
}

static void training_matches_socketpairs(void **state)
{
	(void)state;
	both(case_train);
}

static void peer_close_ends_the_stream(void **state)
{
	(void)state;
	both(case_close);
}

static void dead_peer_aborts(void **state)
{
	struct rank rk[2];

	(void)state;
	fake = 1;
	/* rank 1 takes no part in NCCL: only rank 0 opens */
	run_ranks(rk, 2, pair, 1u, body_dead);
	expect_ok(rk, 2);
}

static void id_travels_down_a_line(void **state)
{
	static const int line[FMAX][FMAX] = { { 0, 1, 0 }, { 1, 0, 1 }, { 0, 1, 0 } };
	struct rank rk[3];

	(void)state;
	fake = 1;
	run_ranks(rk, 3, line, ~0u, body_line);
	expect_ok(rk, 3);
}

static void bad_id_and_no_lower_rank(void **state)
{
	struct dp_pp_link *tcp[3] = { NULL, NULL, NULL }, *out[3];
	struct dp_err err = { 0 };
	char junk[256];
	int fds[2];

	(void)state;
	fake = 1;
	/* rank 2 of 3 linked to nobody below it */
	assert_int_equal(dp_pp_nccl_open(3, 2, 0, tcp, out, &err), -EINVAL);
	assert_string_equal(err.msg,
			    "exec: rank 2 has no linked lower rank to get the NCCL id from");
	/* rank 1 gets junk instead of rank 0's id */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
	memset(junk, 0x5a, sizeof(junk));
	assert_int_equal(write(fds[0], junk, sizeof(junk)), (ssize_t)sizeof(junk));
	assert_int_equal(dp_pp_link_fd(fds[1], &tcp[0], NULL), 0);
	assert_int_equal(dp_pp_nccl_open(2, 1, 1, tcp, out, &err), -EPROTO);
	assert_string_equal(err.msg, "exec: rank 0 sent a bad NCCL id message");
	assert_null(out[0]);
	dp_pp_link_close(tcp[0]);
	(void)close(fds[0]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(bytes_both_ways),
		cmocka_unit_test(sender_waits_for_room),
		cmocka_unit_test(training_matches_socketpairs),
		cmocka_unit_test(peer_close_ends_the_stream),
		cmocka_unit_test(dead_peer_aborts),
		cmocka_unit_test(id_travels_down_a_line),
		cmocka_unit_test(bad_id_and_no_lower_rank),
	};

	(void)signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}

#else /* !DP_HAVE_CUDA */

static void needs_cuda(void **state)
{
	(void)state;
	skip(); /* built without CUDA: test_gpucomm checks the -ENOSYS stub */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(needs_cuda),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
#endif
