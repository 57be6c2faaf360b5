/* tests/unit/test_exec.c - the pipeline executor against the single-process
 * reference trainer.  Each case forks pp ranks connected by socketpairs
 * (a full mesh), runs 3 steps of a schedule, and ships back over a pipe the
 * per-rank loss shares, the peak live activations, each chunk's flat
 * gradients after step 0 and parameters after the last step.
 *
 * Tolerances (docs/model.md, "Reduction order"):
 * - 1F1B, ZB1P and DualPipeV hold one copy of each stage and run its W calls
 *   in micro-batch order: gradients, parameters and losses bit-identical;
 * - DualPipe sums two copies' gradients (a regrouped sum): per element
 *   |g - gref| <= 1e-4 * max|gref of that tensor| + 1e-6; the step loss to
 *   1e-9 relative (losses at later steps too: they depend on the updated
 *   parameters, 1e-6 relative); parameters after 3 Adam steps to
 *   1e-3 * max|w of the tensor| + 1e-5 (Adam divides by sqrt(v), so rounding
 *   in a near-zero gradient may move an element by up to lr per step); and
 *   both copies of a stage bit-identical.
 * - EP (pp x ep ranks, EP groups on a2a shm or tcp): the replicated
 *   tensors' gradients are summed over the EP ranks and each expert sums
 *   rows of several ranks' micro-batches (regrouped sums): the DualPipe
 *   tolerances above, against a reference of micro * ep micro-batches;
 *   experts compared on their owner only (zero gradients elsewhere); the
 *   EP replicas bit-identical; overlap on and off bit-identical.
 * - DP (dp x pp x ep ranks, the replicas on micro-batches (d * ep + j) *
 *   micro ..): gradients summed over the replicas (regrouped again): the
 *   same tolerances against a reference of micro * ep * dp micro-batches,
 *   and every rank bit-identical (gradients and parameters) to the rank
 *   with the same pp and ep rank in replica 0.
 * Peak live activation contexts per rank: never above the simulator's
 * figure (in fact equal: both count, in program order, forwards whose
 * backward/W has not finished). */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "a2a/dp_eplb.h"
#include "sched/dp_sched.h"
#include "worker/dp_dev.h"
#include "worker/dp_exec.h"
#include "worker/dp_gpu.h"
#include "tests/unit/dp_test.h"

#define STEPS	  3
#define MAX_PP	  4
#define MAX_RANKS 8 /* dp x pp x ep */
#define MAX_CHUNK 2
#define MAX_LAYER 6  /* test_cfg's layers */
#define MAX_SLOTS 16 /* experts + redundant */

struct chunk_res {
	int stage;
	size_t n;
	float *g; /* after step 0 */
	float *w; /* after the last step */
};

struct rank_res {
	double loss[STEPS];
	int peak;
	int nch;
	long overlapped;
	long dev_exchanges; /* EP exchanges of device rows */
	long expert_rows;   /* rows through this rank's expert forwards */
	int slots;	    /* physical expert slots per layer (R) */
	int placed;	    /* an EPLB placement: p2l holds it */
	int32_t p2l[MAX_LAYER][MAX_SLOTS];
	long slot_rows[MAX_LAYER][MAX_SLOTS];
	/* rebalancing: the placement after dp_exec_new, and what
	 * dp_exec_rebalance_info() says after the last step */
	int32_t p2l0[MAX_LAYER][MAX_SLOTS];
	struct dp_exec_rebalance rb;
	float load[MAX_LAYER][4];
	int held[MAX_LAYER]; /* a layer of one of this rank's chunks */
	struct chunk_res ch[MAX_CHUNK];
};

/* One pipeline run: schedule, sizes, and with ep > 1 how the EP group
 * talks (shm or tcp, naive or two-hop over 2 "nodes") and the overlap. */
struct tcase {
	enum dp_sched_algo algo;
	int pp, ep, micro;
	int dp; /* 0 or 1: none */
	int overlap;
	int two_hop;	       /* tcp: two nodes x ep/2 ranks, two-hop */
	int spread;	       /* cuda: EP rank j on GPU j (NCCL wants a GPU per rank) */
	int redundant;	       /* EPLB placement: extra expert slots per layer */
	int rebalance;	       /* cfg.rebalance_every */
	const char *transport; /* ep > 1: "shm" or "tcp" */
	const char *backend;   /* model backend: NULL (cpu) or "emu" */
	const float *loads;    /* its [layers][experts] loads; NULL: uniform */
};

/* Non-uniform EPLB loads for test_cfg: expert l % 4 of layer l is busy,
 * so each layer replicates another expert. */
static const float skewed_loads[MAX_LAYER * 4] = {
	10, 1, 1, 1, 1, 10, 1, 1, 1, 1, 10, 1, 1, 1, 1, 10, 10, 1, 1, 1, 1, 2, 9, 1,
};

static void test_cfg(struct dp_model_cfg *m)
{
	dp_model_cfg_default(m);
	m->layers = 6;
	m->hidden = 12;
	m->ffn_hidden = 16;
	m->experts = 4;
	m->groups = 2;
	m->topk_groups = 2;
	m->top_k = 2;
	m->vocab = 13;
	m->seq_len = 6;
	m->seqs = 2;
	m->lr = 0.01f;
	m->seed = 3;
}

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int read_all(int fd, void *buf, size_t len)
{
	char *p = buf;

	while (len) {
		ssize_t n = read(fd, p, len);

		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* The child: run the steps, then write everything to @fd. */
static int rank_child(const struct dp_exec_cfg *cfg, struct dp_pp_link **links, int fd)
{
	struct dp_err err = { 0 };
	struct dp_exec *ex = NULL;
	struct dp_exec_times tm;
	struct rank_res r = { 0 };
	int rc = dp_exec_new(cfg, links, &ex, &err);

	if (rc)
		goto fail;
	r.nch = dp_exec_nchunks(ex);
	{
		const int32_t *p0 = dp_exec_placement(ex, &r.slots);

		for (int l = 0; p0 && l < cfg->model.layers && r.slots <= MAX_SLOTS; l++)
			memcpy(r.p2l0[l], p0 + (size_t)l * r.slots,
			       (size_t)r.slots * sizeof(int32_t));
	}
	for (int k = 0; k < STEPS; k++) {
		rc = dp_exec_step(ex, k, &r.loss[k], &err);
		if (rc)
			goto fail;
		if (dp_exec_peak_live(ex) > r.peak)
			r.peak = dp_exec_peak_live(ex);
		if (k == 0)
			for (int c = 0; c < r.nch; c++) {
				struct dp_model_flat f;

				dp_model_stage_flat(dp_exec_chunk(ex, c, &r.ch[c].stage), &f);
				r.ch[c].n = f.n;
				r.ch[c].g = malloc(f.n * sizeof(float));
				if (!r.ch[c].g)
					goto fail;
				memcpy(r.ch[c].g, f.g, f.n * sizeof(float));
			}
		dp_exec_optimizer_step(ex);
	}
	if (cfg->rebalance_every) {
		if (dp_exec_rebalance_info(ex, &r.rb, &err))
			goto fail;
		memcpy(r.load, r.rb.load, sizeof(r.load));
		r.rb.load = NULL;
		r.rb.rows = NULL;
	}
	for (int c = 0; c < r.nch; c++) {
		struct dp_model_stage *st = dp_exec_chunk(ex, c, NULL);

		for (int l = 0; l < dp_model_stage_count(st); l++)
			r.held[dp_model_stage_first(st) + l] = 1;
	}
	dp_exec_times(ex, &tm);
	r.overlapped = tm.n_overlapped;
	r.dev_exchanges = tm.n_dev_exchanges;
	r.expert_rows = tm.n_expert_rows;
	{
		const int32_t *p2l = dp_exec_placement(ex, &r.slots);

		r.placed = p2l != NULL;
		if (r.slots > MAX_SLOTS || cfg->model.layers > MAX_LAYER)
			goto fail;
		for (int l = 0; l < cfg->model.layers; l++) {
			if (p2l)
				memcpy(r.p2l[l], p2l + (size_t)l * r.slots,
				       (size_t)r.slots * sizeof(int32_t));
			if (dp_exec_slot_rows(ex, l, r.slot_rows[l]))
				goto fail;
		}
	}
	if (write_all(fd, &r, sizeof(r)))
		goto fail;
	for (int c = 0; c < r.nch; c++) {
		struct dp_model_flat f;

		dp_model_stage_flat(dp_exec_chunk(ex, c, NULL), &f);
		if (write_all(fd, r.ch[c].g, f.n * sizeof(float)) ||
		    write_all(fd, f.w, f.n * sizeof(float)))
			goto fail;
	}
	dp_exec_free(ex);
	return 0;
fail:
	(void)fprintf(stderr, "rank %d: %s\n", cfg->rank, err.msg);
	dp_exec_free(ex);
	return 1;
}

/* tcp: a listening socket on 127.0.0.1 per rank, made before the fork. */
static void make_listeners(int n, int *lfds, char (*addrs)[32])
{
	for (int i = 0; i < n; i++) {
		struct sockaddr_in a = { .sin_family = AF_INET };
		socklen_t al = sizeof(a);

		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		lfds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		assert_true(lfds[i] >= 0);
		assert_int_equal(bind(lfds[i], (struct sockaddr *)&a, sizeof(a)), 0);
		assert_int_equal(listen(lfds[i], 64), 0);
		assert_int_equal(getsockname(lfds[i], (struct sockaddr *)&a, &al), 0);
		(void)snprintf(addrs[i], sizeof(addrs[i]), "127.0.0.1:%d", ntohs(a.sin_port));
	}
}

/* Fork the dp x pp x ep ranks of @tc and collect their results. */
static void run_pipeline(const struct tcase *tc, struct rank_res *res)
{
	const int pp = tc->pp, ep = tc->ep > 1 ? tc->ep : 1, dp = tc->dp > 1 ? tc->dp : 1;
	const int n = dp * pp * ep, ngroups = dp * pp; /* EP groups */
	int sp[MAX_RANKS][MAX_RANKS], rfd[MAX_RANKS], lfd[MAX_RANKS];
	char addrs[MAX_RANKS][32], shm[MAX_RANKS][64];
	const char *ap[MAX_RANKS];
	pid_t pid[MAX_RANKS];

	assert_true(n <= MAX_RANKS && pp <= MAX_PP);
	for (int i = 0; i < n; i++) {
		lfd[i] = -1;
		ap[i] = addrs[i];
		for (int j = 0; j < n; j++)
			sp[i][j] = -1;
	}
	for (int r = 0; r < ngroups; r++)
		(void)snprintf(shm[r], sizeof(shm[r]), "/dp-exec-test-%d-%d", (int)getpid(), r);
	if (ep > 1 && tc->transport && strcmp(tc->transport, "tcp") == 0)
		make_listeners(n, lfd, addrs);
	for (int i = 0; i < n; i++)
		for (int j = i + 1; j < n; j++) {
			int fds[2];

			assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
			sp[i][j] = fds[0];
			sp[j][i] = fds[1];
		}
	(void)fflush(stdout);
	(void)fflush(stderr);
	for (int r = 0; r < n; r++) {
		int p[2];

		assert_int_equal(pipe(p), 0);
		pid[r] = fork();
		assert_true(pid[r] >= 0);
		if (pid[r] == 0) {
			struct dp_pp_link *links[MAX_RANKS] = { NULL };
			struct dp_exec_cfg cfg = { .algo = tc->algo,
						   .pp = pp,
						   .micro = tc->micro,
						   .rank = r,
						   .ep = ep,
						   .dp = dp,
						   .overlap = tc->overlap,
						   .backend = tc->backend,
						   .device = tc->spread ? r % ep : 0,
						   .redundant = tc->redundant,
						   .expert_load = tc->loads,
						   .rebalance_every = tc->rebalance };
			struct dp_a2a_comm_cfg cc;
			int code;

			(void)close(p[0]);
			for (int i = 0; i < r; i++)
				(void)close(rfd[i]);
			for (int i = 0; i < n; i++) {
				if (i != r && lfd[i] >= 0)
					(void)close(lfd[i]);
				for (int j = 0; j < n; j++) {
					if (sp[i][j] < 0)
						continue;
					if (i == r)
						(void)dp_pp_link_fd(sp[i][j], &links[j], NULL);
					else
						(void)close(sp[i][j]);
				}
			}
			test_cfg(&cfg.model);
			dp_a2a_comm_cfg_init(&cc);
			cc.transport = tc->transport;
			cc.timeout_ms = 20000;
			cc.shm_name = shm[r / ep];
			cc.shm_ring_bytes = 16384;
			cc.addrs = ap + (ptrdiff_t)(r / ep) * ep; /* this EP group's ranks */
			cc.listen_fd = lfd[r];
			if (tc->two_hop) {
				cc.nodes = 2;
				cc.ranks_per_node = ep / 2;
				cfg.ep_algo = DP_A2A_TWO_HOP;
			}
			cfg.ep_comm = &cc;
			code = rank_child(&cfg, links, p[1]);
			for (int i = 0; i < n; i++)
				dp_pp_link_close(links[i]);
			_exit(code);
		}
		(void)close(p[1]);
		rfd[r] = p[0];
	}
	for (int i = 0; i < n; i++) {
		if (lfd[i] >= 0)
			(void)close(lfd[i]);
		for (int j = 0; j < n; j++)
			if (sp[i][j] >= 0)
				(void)close(sp[i][j]);
	}
	for (int r = 0; r < n; r++) {
		struct rank_res *x = &res[r];
		int ok = read_all(rfd[r], x, sizeof(*x)) == 0, st = 0;

		for (int c = 0; ok && c < x->nch; c++) {
			x->ch[c].g = malloc(x->ch[c].n * sizeof(float));
			x->ch[c].w = malloc(x->ch[c].n * sizeof(float));
			ok = x->ch[c].g && x->ch[c].w &&
			     !read_all(rfd[r], x->ch[c].g, x->ch[c].n * sizeof(float)) &&
			     !read_all(rfd[r], x->ch[c].w, x->ch[c].n * sizeof(float));
		}
		if (!ok)
			x->nch = 0;
		(void)close(rfd[r]);
		if (!ok)
			for (int q = 0; q < n; q++)
				(void)kill(pid[q], SIGKILL);
		assert_int_equal(waitpid(pid[r], &st, 0), pid[r]);
		if (!ok) {
			for (int q = 0; q < ngroups; q++)
				(void)shm_unlink(shm[q]);
			fail_msg("rank %d of %s dp %d pp %d ep %d micro %d failed (status %d)", r,
				 dp_sched_algo_name(tc->algo), dp, pp, ep, tc->micro, st);
		}
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	for (int q = 0; q < ngroups; q++)
		(void)shm_unlink(shm[q]); /* rank 0 of each group did; in case */
}

static void free_res(struct rank_res *res, int n)
{
	for (int r = 0; r < n; r++)
		for (int c = 0; c < res[r].nch; c++) {
			free(res[r].ch[c].g);
			free(res[r].ch[c].w);
		}
}

/* Compare flat array @a with the stage's flat @b tensor by tensor; 0 tol
 * means bit-identical.  With @ep > 1, routed experts that EP rank @erank
 * does not own are not compared: with @zero_others they must be 0 (their
 * gradients), else they are skipped (stale values).  Returns the worst
 * |a-b| / max|b of the tensor|. */
static double compare_flat(struct dp_model_stage *st, const float *a, const float *b, double rel,
			   double abs_tol, const char *what, int ep, int erank, int zero_others)
{
	const struct dp_model_cfg *mc = dp_model_stage_cfg(st);
	size_t off = 0;
	double worst = 0;

	for (int i = 0; i < dp_model_stage_ntensors(st); i++) {
		struct dp_model_tensor t;
		double mx = 0;

		assert_int_equal(dp_model_stage_tensor(st, i, &t), 0);
		if (ep > 1 && t.expert >= 0 && dp_model_expert_owner(mc, ep, t.expert) != erank) {
			for (size_t k = 0; zero_others && k < t.n; k++)
				if (a[off + k] != 0.0f)
					fail_msg("%s: %s[%zu] = %g on a rank that does not own it",
						 what, t.name, k, a[off + k]);
			off += t.n;
			continue;
		}
		for (size_t k = 0; k < t.n; k++)
			mx = fmax(mx, fabs((double)b[off + k]));
		for (size_t k = 0; k < t.n; k++) {
			double d = fabs((double)a[off + k] - (double)b[off + k]);

			if (mx > 0)
				worst = fmax(worst, d / mx);
			if (rel == 0 && abs_tol == 0 ? a[off + k] != b[off + k]
						     : d > rel * mx + abs_tol)
				fail_msg("%s: %s[%zu] = %.9g, reference %.9g (max %.3g)", what,
					 t.name, k, a[off + k], b[off + k], mx);
		}
		off += t.n;
	}
	return worst;
}

/* Replicated tensors (all but the routed experts; with @experts, an EPLB
 * placement, all) of two chunks holding the same stage must be
 * bit-identical. */
static void same_replicas(struct dp_model_stage *st, const float *a, const float *b, int experts,
			  const char *what)
{
	size_t off = 0;

	for (int i = 0; i < dp_model_stage_ntensors(st); i++) {
		struct dp_model_tensor t;

		assert_int_equal(dp_model_stage_tensor(st, i, &t), 0);
		if ((experts || t.expert < 0) && memcmp(a + off, b + off, t.n * sizeof(float)) != 0)
			fail_msg("%s: replicas of %s differ", what, t.name);
		off += t.n;
	}
}

/* The EPLB placement was really used (replica 0's EP groups; @n ranks of
 * @ep per group): every rank of a group has the same one; a slot's rows
 * were computed by its EP rank only; every row of every layer was
 * computed once (steps x micro x ep micro-batches of T*K rows); and every
 * replica of an expert took rows, at most one row apart per forward (the
 * even split q % logcnt).  Without
 * a placement: slot = expert, E / ep per rank.  Returns the most rows one
 * rank ran in one layer.  ep 1 runs whole stages: no EP rows to count. */
static long check_placement(const struct tcase *tc, const struct rank_res *res, int n, int ep)
{
	struct dp_model_cfg mc;
	const int placed = ep > 1 && (tc->redundant || tc->loads);
	const int R = res[0].slots, nslot = R / ep;
	const long fwd = (long)STEPS * tc->micro * ep; /* forwards per layer and group */
	long most = 0;

	test_cfg(&mc);
	assert_int_equal(R, placed ? mc.experts + tc->redundant : mc.experts);
	if (ep == 1) {
		for (int r = 0; r < n; r++)
			assert_int_equal(res[r].expert_rows, 0);
		return 0;
	}
	for (int l = 0; l < mc.layers; l++) {
		long slot[MAX_SLOTS] = { 0 }, total = 0;

		for (int r = 0; r < n; r++) {
			long mine = 0;

			assert_int_equal(res[r].placed, placed);
			assert_int_equal(res[r].slots, R);
			/* rebalanced: the ranks that route layer l agree */
			if (placed)
				assert_memory_equal(res[r].p2l[l],
						    res[tc->rebalance ? r - r % ep : 0].p2l[l],
						    sizeof(res[0].p2l[l]));
			for (int q = 0; q < R; q++) {
				if (q / nslot != r % ep)
					assert_int_equal(res[r].slot_rows[l][q], 0);
				slot[q] += res[r].slot_rows[l][q];
				mine += res[r].slot_rows[l][q];
			}
			most = mine > most ? mine : most;
		}
		for (int q = 0; q < R; q++)
			total += slot[q];
		assert_int_equal(total, fwd * dp_model_cfg_tokens(&mc) * mc.top_k);
		for (int e = 0; placed && !tc->rebalance && e < mc.experts; e++) {
			long hi = -1, lo = -1;

			for (int q = 0; q < R; q++) {
				if (res[0].p2l[l][q] != e)
					continue;
				if (slot[q] == 0)
					fail_msg("layer %d expert %d: replica slot %d got no rows",
						 l, e, q);
				hi = hi < 0 || slot[q] > hi ? slot[q] : hi;
				lo = lo < 0 || slot[q] < lo ? slot[q] : lo;
			}
			if (hi - lo > fwd)
				fail_msg(
					"layer %d expert %d: replicas took %ld and %ld rows (split "
					"not even)",
					l, e, hi, lo);
		}
	}
	return most;
}

/* Rebalancing: every rank re-placed after steps k with (k + 1) % every
 * == 0; its placement is EPLB's on the loads it reports; those loads are
 * the same on every rank of its EP group, replica and DualPipe mirror, and
 * for the layers it holds they add up to every row the model routed in
 * the last window (all the step's micro-batches). */
static void check_rebalance(const struct tcase *tc, const struct rank_res *res, int n)
{
	const int ep = tc->ep, dp = tc->dp > 1 ? tc->dp : 1, every = tc->rebalance;
	struct dp_model_cfg mc;
	struct dp_eplb_cfg ec;
	long routed;

	test_cfg(&mc);
	routed = (long)every * tc->micro * ep * dp * dp_model_cfg_tokens(&mc) * mc.top_k;
	ec = (struct dp_eplb_cfg){ .layers = mc.layers,
				   .experts = mc.experts,
				   .replicas = mc.experts + tc->redundant,
				   .groups = mc.groups,
				   .nodes = tc->two_hop ? 2 : 1,
				   .gpus = ep };
	for (int r = 0; r < n; r++) {
		const int pr = r / ep % tc->pp, base = r / (tc->pp * ep) * tc->pp * ep;
		struct dp_eplb_plan *plan = NULL;

		assert_int_equal(res[r].rb.count, STEPS / every);
		assert_int_equal(res[r].rb.window_steps, STEPS % every);
		assert_int_equal(res[r].rb.step, STEPS / every * every);
		assert_int_equal(res[r].rb.window, every);
		assert_int_equal(dp_eplb_plan_build(&res[r].load[0][0], &ec, &plan, NULL), 0);
		for (int l = 0; l < mc.layers; l++)
			assert_memory_equal(dp_eplb_plan_phy2log(plan) + (size_t)l * ec.replicas,
					    res[r].p2l[l], (size_t)ec.replicas * sizeof(int32_t));
		dp_eplb_plan_free(plan);
		assert_memory_equal(res[r].load, res[r - r % ep].load, sizeof(res[r].load));
		assert_memory_equal(res[r].load, res[r % (tc->pp * ep)].load, sizeof(res[r].load));
		for (int l = 0; l < mc.layers; l++) {
			double sum = 0;

			if (!res[r].held[l])
				continue;
			for (int e = 0; e < mc.experts; e++)
				sum += res[r].load[l][e];
			assert_true(sum == (double)routed);
			if (tc->algo == DP_SCHED_DUALPIPE) {
				const int m = base + (tc->pp - 1 - pr) * ep + r % ep;

				assert_memory_equal(res[r].load[l], res[m].load[l],
						    sizeof(res[r].load[l]));
			}
		}
	}
}

static void check_tcase(const struct tcase *tc)
{
	const int pp = tc->pp, ep = tc->ep > 1 ? tc->ep : 1, dp = tc->dp > 1 ? tc->dp : 1;
	const int n = dp * pp * ep, micro = tc->micro;
	const enum dp_sched_algo algo = tc->algo;
	struct dp_sched_cfg sc = { .algo = algo, .pp = pp, .micro = micro };
	struct dp_sched_times tm = { .f = 1, .b = 2, .w = 1, .fb = 2.5 };
	struct rank_res res[MAX_RANKS];
	struct dp_model_cfg mc;
	struct dp_model_ref *ref = NULL;
	struct dp_sched *s = NULL;
	struct dp_sched_sim sim;
	struct dp_err err = { 0 };
	int dual = algo == DP_SCHED_DUALPIPE, nstages = algo == DP_SCHED_DUALPIPEV ? 2 * pp : pp;
	/* regrouped sums: DualPipe's two copies, EP (all-reduce over the
	 * group, expert rows from several ranks' micro-batches) and DP */
	int regroup = dual || ep > 1 || dp > 1;
	double g_rel = regroup ? 1e-4 : 0, g_abs = regroup ? 1e-6 : 0;
	double w_rel = regroup ? 1e-3 : 0, w_abs = regroup ? 1e-5 : 0;
	double worst_g = 0, worst_w = 0, loss;
	/* an EPLB placement: every rank holds every expert's current values */
	const int placed = ep > 1 && (tc->redundant || tc->loads), cep = placed ? 1 : ep;
	long most;
	char what[160];

	memset(res, 0, sizeof(res));
	run_pipeline(tc, res);
	most = check_placement(tc, res, pp * ep, ep);
	if (tc->rebalance)
		check_rebalance(tc, res, n);

	/* peak activations against the simulator (every EP rank of a stage,
	 * in every replica, runs the pp rank's op list) */
	assert_int_equal(dp_sched_build(&sc, &s, &err), 0);
	assert_int_equal(dp_sched_simulate(s, &tm, &sim, &err), 0);
	for (int r = 0; r < n; r++) {
		const int pr = r / ep % pp;

		if (res[r].peak > sim.ranks[pr].peak_activations)
			fail_msg("%s pp %d micro %d rank %d: peak %d > simulated %d",
				 dp_sched_algo_name(algo), pp, micro, r, res[r].peak,
				 sim.ranks[pr].peak_activations);
		assert_int_equal(res[r].peak, sim.ranks[pr].peak_activations);
	}
	if (dual)
		assert_int_equal(res[0].peak, pp + 1);
	dp_sched_sim_release(&sim);
	dp_sched_free(s);

	/* the reference: same model, micro-batches 0..micro*ep*dp-1 in order */
	test_cfg(&mc);
	mc.micro_batches = micro * ep * dp;
	assert_int_equal(dp_model_ref_new(&mc, nstages, &ref, &err), 0);
	assert_int_equal(dp_model_ref_grads(ref, 0, 0, &loss, &err), 0);
	for (int k = 0; k < STEPS; k++) {
		double sum = 0;

		if (k > 0)
			assert_int_equal(dp_model_ref_train_step(ref, k, &loss, &err), 0);
		for (int r = 0; r < n; r++)
			sum += res[r].loss[k];
		if (regroup ? fabs(sum - loss) > (k ? 1e-6 : 1e-9) * fabs(loss) : sum != loss)
			fail_msg("%s dp %d pp %d ep %d micro %d step %d: loss %.12g, reference "
				 "%.12g",
				 dp_sched_algo_name(algo), dp, pp, ep, micro, k, sum, loss);
		if (k == 0) {
			for (int r = 0; r < n; r++)
				for (int c = 0; c < res[r].nch; c++) {
					struct dp_model_stage *st =
						dp_model_ref_stage(ref, res[r].ch[c].stage);
					struct dp_model_flat f;

					dp_model_stage_flat(st, &f);
					assert_int_equal(f.n, res[r].ch[c].n);
					(void)snprintf(what, sizeof(what),
						       "%s dp %d pp %d ep %d rank %d grad",
						       dp_sched_algo_name(algo), dp, pp, ep, r);
					worst_g = fmax(worst_g,
						       compare_flat(st, res[r].ch[c].g, f.g, g_rel,
								    g_abs, what, cep, r % ep, 1));
				}
			for (int i = 0; i < nstages; i++)
				dp_model_stage_step(dp_model_ref_stage(ref, i));
		}
	}
	for (int r = 0; r < n; r++)
		for (int c = 0; c < res[r].nch; c++) {
			struct dp_model_stage *st = dp_model_ref_stage(ref, res[r].ch[c].stage);
			struct dp_model_flat f;

			dp_model_stage_flat(st, &f);
			(void)snprintf(what, sizeof(what), "%s dp %d pp %d ep %d rank %d params",
				       dp_sched_algo_name(algo), dp, pp, ep, r);
			worst_w = fmax(worst_w, compare_flat(st, res[r].ch[c].w, f.w, w_rel, w_abs,
							     what, cep, r % ep, 0));
			/* the EP replicas of the stage: bit-identical */
			if (r % ep) {
				(void)snprintf(what, sizeof(what), "%s pp %d ep %d rank %d",
					       dp_sched_algo_name(algo), pp, ep, r);
				same_replicas(st, res[r].ch[c].w, res[r - r % ep].ch[c].w, placed,
					      what);
				same_replicas(st, res[r].ch[c].g, res[r - r % ep].ch[c].g, placed,
					      what);
			}
			/* the DP replicas: the whole chunk bit-identical to replica 0 */
			if (r >= pp * ep) {
				const struct chunk_res *a = &res[r].ch[c],
						       *b = &res[r % (pp * ep)].ch[c];

				assert_int_equal(a->n, b->n);
				assert_memory_equal(a->g, b->g, a->n * sizeof(float));
				assert_memory_equal(a->w, b->w, a->n * sizeof(float));
			}
		}
	if (dual) /* both copies of stage s: rank s chunk 0, rank pp-1-s chunk 1 */
		for (int r = 0; r < n; r++) {
			const int base = r / (pp * ep) * pp * ep, pr = r / ep % pp;
			const struct chunk_res *a = &res[r].ch[0];
			const struct chunk_res *b = &res[base + (pp - 1 - pr) * ep + r % ep].ch[1];

			assert_int_equal(a->stage, b->stage);
			assert_memory_equal(a->w, b->w, a->n * sizeof(float));
		}
	for (int r = 0; r < n; r++)
		if (!tc->overlap || ep == 1)
			assert_int_equal(res[r].overlapped, 0);
	printf("# %-9s dp %d pp %d ep %d micro %2d%s%s: loss %.6f, worst grad diff %.2g, params "
	       "%.2g of max, peak rank 0 %d",
	       dp_sched_algo_name(algo), dp, pp, ep, micro, ep > 1 ? " " : "",
	       ep > 1 ? tc->transport : "", loss, worst_g, worst_w, res[0].peak);
	if (placed)
		printf(", +%d slots%s, busiest rank-layer %ld rows", tc->redundant,
		       tc->loads ? " skewed" : "", most);
	if (tc->rebalance)
		printf(", re-placed every %d step%s (last: busiest %ld -> %ld)", tc->rebalance,
		       tc->rebalance == 1 ? "" : "s", res[0].rb.busiest_before,
		       res[0].rb.busiest_after);
	printf("\n");
	dp_model_ref_free(ref);
	free_res(res, n);
}

static void check_case(enum dp_sched_algo algo, int pp, int micro)
{
	const struct tcase tc = { .algo = algo, .pp = pp, .ep = 1, .micro = micro };

	check_tcase(&tc);
}

static void dualpipe_matches_reference(void **state)
{
	(void)state;
	check_case(DP_SCHED_DUALPIPE, 2, 4);
	check_case(DP_SCHED_DUALPIPE, 2, 6);
	check_case(DP_SCHED_DUALPIPE, 4, 8);
	check_case(DP_SCHED_DUALPIPE, 4, 10);
}

static void dualpipev_matches_reference(void **state)
{
	(void)state;
	check_case(DP_SCHED_DUALPIPEV, 2, 4);
	check_case(DP_SCHED_DUALPIPEV, 2, 6);
	check_case(DP_SCHED_DUALPIPEV, 3, 6);
}

static void onef1b_and_zb1p_match_reference(void **state)
{
	(void)state;
	check_case(DP_SCHED_1F1B, 2, 4);
	check_case(DP_SCHED_1F1B, 4, 6);
	check_case(DP_SCHED_ZB1P, 2, 4);
	check_case(DP_SCHED_ZB1P, 4, 6);
}

/* A peer sending another step's tensor is caught by the header check, and
 * a peer that goes away is an error, not a hang. */
static void mismatched_message_is_an_error(void **state)
{
	struct dp_exec_cfg cfg = { .algo = DP_SCHED_1F1B, .pp = 2, .micro = 2, .rank = 1 };
	struct dp_pp_link *links[2] = { NULL }, *peer_links[2] = { NULL };
	struct dp_err err = { 0 };
	struct dp_exec *ex = NULL;
	int fds[2], st = 0;
	pid_t pid;

	(void)state;
	test_cfg(&cfg.model);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
	(void)fflush(stdout);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct dp_exec_cfg c0 = cfg;
		struct dp_exec *e0 = NULL;
		int rc;

		(void)close(fds[1]);
		c0.rank = 0;
		(void)dp_pp_link_fd(fds[0], &peer_links[1], NULL);
		rc = dp_exec_new(&c0, peer_links, &e0, NULL);
		if (!rc)
			rc = dp_exec_step(e0, 5, NULL, &err); /* the wrong step */
		dp_exec_free(e0);
		dp_pp_link_close(peer_links[1]);
		_exit(rc == -ECONNRESET || rc == -EPIPE ? 0 : 1);
	}
	(void)close(fds[0]);
	assert_int_equal(dp_pp_link_fd(fds[1], &links[0], NULL), 0);
	assert_int_equal(dp_exec_new(&cfg, links, &ex, &err), 0);
	assert_int_equal(dp_exec_step(ex, 0, NULL, &err), -EPROTO);
	assert_non_null(strstr(err.msg, "expected F0 0 (step 0) from rank 0, got F0 0 (step 5"));
	dp_exec_free(ex);
	dp_pp_link_close(links[0]);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

static void missing_link_is_rejected(void **state)
{
	struct dp_exec_cfg cfg = { .algo = DP_SCHED_DUALPIPE, .pp = 4, .micro = 8, .rank = 1 };
	struct dp_pp_link *links[4] = { NULL };
	struct dp_err err = { 0 };
	struct dp_exec *ex = NULL;

	(void)state;
	test_cfg(&cfg.model);
	assert_int_equal(dp_exec_new(&cfg, links, &ex, &err), -EINVAL);
	assert_null(ex);
	assert_non_null(strstr(err.msg, "needs a link to rank"));
	cfg.micro = 6; /* dualpipe needs micro >= 2 pp */
	assert_int_equal(dp_exec_new(&cfg, links, &ex, &err), -EINVAL);
}

/* Run `dpworker --train-local` with @args; first and last step loss. */
static void train_local_losses(char **args, int nargs, double *first, double *last)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&buf, &len);
	double l;
	int rc;

	assert_non_null(out);
	*first = *last = -1;
	rc = dp_worker_cmd_train(nargs, args, out, stderr);
	(void)fclose(out);
	assert_int_equal(rc, 0);
	for (char *p = buf; p && (p = strstr(p, "step ")); p++) {
		char *end = NULL, *q;

		(void)strtol(p + 5, &end, 10);
		if (!end || strncmp(end, " loss ", 6) != 0)
			continue;
		q = end + 6;
		l = strtod(q, &end);
		if (end == q)
			continue;
		if (*first < 0)
			*first = l;
		*last = l;
	}
	free(buf);
}

/* The run of @args lowers the loss from above 2 to under half of it;
 * *first gets the first loss. */
static void falls(char **args, int nargs, double *first)
{
	double last;

	train_local_losses(args, nargs, first, &last);
	assert_true(*first > 2.0);
	assert_true(last < *first / 2);
}

static void train_local_prints_a_falling_loss(void **state)
{
	char *args[] = { "dpworker", "--train-local", "--algo", "dualpipe", "--pp", "2", "--micro",
			 "4",	     "--steps",	      "12",	"--layers", "2" };
	char *ep_args[] = {
		"dpworker", "--train-local", "--algo", "dualpipe", "--pp", "2",	   "--micro",
		"4",	    "--steps",	     "12",     "--layers", "2",	   "--ep", "2"
	};
	double first;

	(void)state;
	falls(args, (int)(sizeof(args) / sizeof(args[0])), &first);
	falls(ep_args, (int)(sizeof(ep_args) / sizeof(ep_args[0])), &first);
}

/* --ep 2 --redundant 2 (an EPLB placement of 10 slots) trains the same
 * model: falling losses, the first one that of the contiguous run to the
 * printed digits; with --expert-loads too. */
static void train_local_redundant_experts(void **state)
{
	char path[] = "/tmp/dp-exec-loads-XXXXXX";
	/* the first 12 arguments: contiguous; 14: --redundant 2; all 16 */
	char *args[] = { "dpworker",	   "--train-local",
			 "--pp",	   "2",
			 "--micro",	   "4",
			 "--steps",	   "12",
			 "--layers",	   "2",
			 "--ep",	   "2",
			 "--redundant",	   "2",
			 "--expert-loads", path };
	const char *text = "{\"weight\": [[9, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 2, 7]]}";
	double f0, f1, f2;
	int fd;

	(void)state;
	falls(args, 12, &f0);
	falls(args, 14, &f1);
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	(void)close(fd);
	falls(args, 16, &f2);
	(void)unlink(path);
	assert_true(fabs(f1 - f0) < 1e-6 && fabs(f2 - f0) < 1e-6);
}

/* --rebalance-every 3 (with --redundant 2): falling losses, and every rank
 * says on stderr when it re-placed (caught in a file: the ranks are forked
 * children writing to fd 2); without a placement it is a usage error. */
static void train_local_rebalance_every(void **state)
{
	char *args[] = { "dpworker",
			 "--train-local",
			 "--pp",
			 "2",
			 "--micro",
			 "4",
			 "--steps",
			 "12",
			 "--layers",
			 "2",
			 "--ep",
			 "2",
			 "--redundant",
			 "2",
			 "--rebalance-every",
			 "3" };
	char *bad[] = { "dpworker", "--train-local", "--ep", "2", "--rebalance-every", "3" };
	char path[] = "/tmp/dp-exec-rebal-XXXXXX", text[16384], line[128];
	int fd = mkstemp(path), saved;
	double first;
	ssize_t n;

	(void)state;
	assert_true(fd >= 0);
	(void)fflush(stderr);
	saved = dup(2);
	assert_true(saved >= 0);
	assert_int_equal(dup2(fd, 2), 2);
	falls(args, (int)(sizeof(args) / sizeof(args[0])), &first);
	(void)fflush(stderr);
	assert_int_equal(dup2(saved, 2), 2);
	(void)close(saved);
	n = pread(fd, text, sizeof(text) - 1, 0);
	(void)close(fd);
	(void)unlink(path);
	assert_true(n > 0);
	text[n] = '\0';
	for (int r = 0; r < 4; r++)
		for (int k = 3; k <= 12; k += 3) {
			(void)snprintf(
				line, sizeof(line),
				"rank %d: step %d: EPLB re-placed from the last 3 steps' loads; "
				"busiest rank-layer ",
				r, k);
			if (!strstr(text, line))
				fail_msg("no '%s' in:\n%s", line, text);
		}
	{
		char *msg = NULL;
		size_t mlen = 0;
		FILE *m = open_memstream(&msg, &mlen);

		assert_non_null(m);
		assert_int_equal(
			dp_worker_cmd_train((int)(sizeof(bad) / sizeof(bad[0])), bad, m, m), 64);
		(void)fclose(m);
		assert_non_null(strstr(msg, "--rebalance-every 3 needs --ep 2 or more and "
					    "--redundant or --expert-loads"));
		free(msg);
	}
	print_message("rebalance: dpworker first loss %.6f; %.*s", first,
		      (int)strcspn(strstr(text, "rank 0: step 3"), "\n") + 1,
		      strstr(text, "rank 0: step 3"));
}

/* --backend emu prints the losses of the host model (to the printed 6
 * digits); an unknown backend is a usage error naming it. */
static void train_local_backend_option(void **state)
{
	/* the same run on each backend: only the last argument differs */
	char *args[] = { "dpworker",  "--train-local", "--algo=zb1p", "--pp=2", "--micro=4",
			 "--steps=3", "--layers=2",    "--backend",   "cpu" };
	const int nargs = (int)(sizeof(args) / sizeof(args[0]));
	char *bad[] = { "dpworker", "--train-local", "--backend", "tpu" };
	char *buf = NULL;
	size_t len = 0;
	double f0, l0, f1, l1;
	FILE *err;

	(void)state;
	train_local_losses(args, nargs, &f0, &l0);
	args[nargs - 1] = "emu";
	train_local_losses(args, nargs, &f1, &l1);
	assert_true(f0 > 0 && l0 < f0);
	assert_true(fabs(f0 - f1) <= 2e-6 && fabs(l0 - l1) <= 2e-6);
	err = open_memstream(&buf, &len);
	assert_non_null(err);
	assert_int_equal(dp_worker_cmd_train(4, bad, stdout, err), 64);
	(void)fclose(err);
	assert_non_null(strstr(buf, "unknown backend 'tpu'"));
	free(buf);
}

/* The EP fabric does not change a number: shm, and tcp with every EP rank
 * its own paced "node" (--ep-mbps), print the same losses. */
static void train_local_ep_fabrics_agree(void **state)
{
	char *shm[] = {
		"dpworker", "--train-local", "--algo", "dualpipe", "--pp", "2",	       "--ep",
		"2",	    "--micro",	     "4",      "--steps",  "3",	   "--layers", "2"
	};
	char *tcp[] = {
		"dpworker",  "--train-local", "--algo", "dualpipe", "--pp", "2",	"--ep",
		"2",	     "--micro",	      "4",	"--steps",  "3",    "--layers", "2",
		"--ep-mbps", "2000"
	};
	double f1, l1, f2, l2;

	(void)state;
	train_local_losses(shm, (int)(sizeof(shm) / sizeof(shm[0])), &f1, &l1);
	train_local_losses(tcp, (int)(sizeof(tcp) / sizeof(tcp[0])), &f2, &l2);
	assert_true(f1 > 2.0);
	assert_true(f1 == f2 && l1 == l2);
}

/* A free TCP port on 127.0.0.1 (bound to 0, then released). */
static int free_port(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	assert_true(fd >= 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	port = ntohs(sa.sin_port);
	(void)close(fd);
	return port;
}

/* Sum of "step k rank r loss-share x" values of step @k in @text. */
static double share_of_step(const char *text, long k)
{
	double sum = 0;

	for (const char *p = text; (p = strstr(p, "step ")); p++) {
		char *end = NULL;
		const char *q;

		if (strtol(p + 5, &end, 10) != k || !end || !(q = strstr(end, "loss-share ")))
			continue;
		sum += strtod(q + 11, NULL);
	}
	return sum;
}

/* `dpworker --train` with @args (their @rank_at-th entry is "0") as rank 0
 * here and rank 1 in a child; the step losses (the two ranks' printed
 * shares) against the reference trainer over @stages stages and
 * @micro_batches micro-batches, within @tol (they are printed with 6
 * decimals). */
static void check_tcp_pair(char **args, int nargs, int rank_at, int stages, int micro_batches,
			   double tol, const char *what)
{
	char *buf = NULL, other[4096];
	int p[2], st = 0, rc;
	struct dp_model_cfg mc;
	struct dp_model_ref *ref = NULL;
	struct dp_err err = { 0 };
	size_t len = 0, got = 0;
	FILE *out;
	pid_t pid;

	assert_int_equal(pipe(p), 0);
	(void)fflush(stdout);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		FILE *o;

		(void)close(p[0]);
		o = fdopen(p[1], "w");
		args[rank_at] = "1";
		_exit(o ? dp_worker_cmd_train(nargs, args, o, stderr) | (fclose(o) ? 1 : 0) : 1);
	}
	(void)close(p[1]);
	out = open_memstream(&buf, &len);
	assert_non_null(out);
	rc = dp_worker_cmd_train(nargs, args, out, stderr);
	(void)fclose(out);
	for (ssize_t n;
	     got < sizeof(other) - 1 && (n = read(p[0], other + got, sizeof(other) - 1 - got)) > 0;)
		got += (size_t)n;
	other[got] = '\0';
	(void)close(p[0]);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_int_equal(rc, 0);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);

	dp_model_cfg_default(&mc);
	mc.layers = 2;
	mc.micro_batches = micro_batches;
	assert_int_equal(dp_model_ref_new(&mc, stages, &ref, &err), 0);
	for (long k = 0; k < 3; k++) {
		double loss, sum = share_of_step(buf, k) + share_of_step(other, k);

		assert_int_equal(dp_model_ref_train_step(ref, k, &loss, &err), 0);
		if (fabs(sum - loss) > tol)
			fail_msg("step %ld: tcp %s run %.6f, reference %.6f", k, what, sum, loss);
	}
	dp_model_ref_free(ref);
	free(buf);
}

static void train_over_tcp_matches_reference(void **state)
{
	char peers[64];
	char *args[] = {
		"dpworker", "--train", "--algo",   "1f1b", "--pp",   "2", "--micro", "2",
		"--steps",  "3",       "--layers", "2",	   "--rank", "0", "--peers", peers
	};

	(void)state;
	(void)snprintf(peers, sizeof(peers), "127.0.0.1:%d,127.0.0.1:%d", free_port(), free_port());
	check_tcp_pair(args, (int)(sizeof(args) / sizeof(args[0])), 13, 2, 2, 2e-6, "pp");
}

/* `dpworker --train --dp 2`: two replicas of a one-stage pipeline over tcp,
 * the gradients summed over them; the reference runs their 2 x 2
 * micro-batches. */
static void train_over_tcp_with_dp_matches_reference(void **state)
{
	char peers[64];
	char *args[] = { "dpworker", "--train", "--algo",  "1f1b", "--pp",    "1",
			 "--dp",     "2",	"--micro", "2",	   "--steps", "3",
			 "--layers", "2",	"--rank",  "0",	   "--peers", peers };

	(void)state;
	(void)snprintf(peers, sizeof(peers), "127.0.0.1:%d,127.0.0.1:%d", free_port(), free_port());
	check_tcp_pair(args, (int)(sizeof(args) / sizeof(args[0])), 15, 1, 4, 3e-6, "dp");
}

/* Two free TCP ports p, p+1 on 127.0.0.1 (the --train EP convention). */
static int free_port_pair(void)
{
	for (int tries = 0; tries < 50; tries++) {
		struct sockaddr_in sa = { .sin_family = AF_INET };
		int p = free_port(), fd = socket(AF_INET, SOCK_STREAM, 0), ok;

		assert_true(fd >= 0);
		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		sa.sin_port = htons((uint16_t)(p + 1));
		ok = p < 65535 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
		(void)close(fd);
		if (ok)
			return p;
	}
	fail_msg("no two consecutive free ports");
	return -1;
}

/* `dpworker --train --ep 2`: one pipeline stage of two EP ranks over tcp
 * (PP links on the --peers ports, the all-to-all on port + 1). */
static void train_over_tcp_with_ep_matches_reference(void **state)
{
	char peers[64];
	char *args[] = { "dpworker", "--train", "--algo",  "1f1b", "--pp",    "1",
			 "--ep",     "2",	"--micro", "2",	   "--steps", "3",
			 "--layers", "2",	"--rank",  "0",	   "--peers", peers };
	int p0 = free_port_pair(), p1;

	(void)state;
	do
		p1 = free_port_pair();
	while (p1 >= p0 - 1 && p1 <= p0 + 1);
	(void)snprintf(peers, sizeof(peers), "127.0.0.1:%d,127.0.0.1:%d", p0, p1);
	/* micro 2 on each of the 2 EP ranks; regrouped sums */
	check_tcp_pair(args, (int)(sizeof(args) / sizeof(args[0])), 15, 1, 4, 3e-6, "ep");
}

/* dp x pp x ep ranks, EP groups on shm; with @redundant or @loads an EPLB
 * placement. */
static void check_placed(enum dp_sched_algo algo, int dp, int pp, int ep, int micro, int overlap,
			 int redundant, const float *loads)
{
	const struct tcase tc = { .algo = algo,
				  .pp = pp,
				  .ep = ep,
				  .dp = dp,
				  .micro = micro,
				  .overlap = overlap,
				  .transport = "shm",
				  .redundant = redundant,
				  .loads = loads };

	check_tcase(&tc);
}

static void check_layout(enum dp_sched_algo algo, int dp, int pp, int ep, int micro, int overlap)
{
	check_placed(algo, dp, pp, ep, micro, overlap, 0, NULL);
}

static void check_ep(enum dp_sched_algo algo, int pp, int ep, int micro, int overlap)
{
	check_layout(algo, 1, pp, ep, micro, overlap);
}

/* EP 2: each stage's experts split over 2 ranks, forked over shm. */
static void ep_dualpipe_matches_reference(void **state)
{
	(void)state;
	check_ep(DP_SCHED_DUALPIPE, 2, 2, 4, 0);
	check_ep(DP_SCHED_DUALPIPE, 2, 2, 6, 1);
	check_ep(DP_SCHED_DUALPIPE, 4, 2, 8, 1);
}

/* 1f1b pp 2 x ep 2, two "nodes" of one rank, two-hop over tcp */
static const struct tcase tcp_two_hop = {
	.algo = DP_SCHED_1F1B, .pp = 2, .ep = 2, .micro = 4, .transport = "tcp", .two_hop = 1
};

static void ep_1f1b_and_others_match_reference(void **state)
{
	(void)state;
	check_ep(DP_SCHED_1F1B, 2, 2, 4, 0);
	check_ep(DP_SCHED_1F1B, 4, 2, 6, 0);
	check_ep(DP_SCHED_ZB1P, 2, 2, 4, 0);
	check_ep(DP_SCHED_DUALPIPEV, 2, 2, 4, 1);
	check_tcase(&tcp_two_hop);
}

/* An EPLB placement (cfg.redundant slots, uniform or skewed loads): the
 * same training as the reference, every expert held and updated on every
 * EP rank bit-identically, and the rows really went to the replicas
 * (check_placement). */
static void check_eplb(enum dp_sched_algo algo, int pp, int ep, int micro, int overlap,
		       int redundant, const float *loads)
{
	check_placed(algo, 1, pp, ep, micro, overlap, redundant, loads);
}

static void eplb_matches_reference(void **state)
{
	struct tcase tcp = tcp_two_hop;

	(void)state;
	tcp.redundant = 2;
	tcp.loads = skewed_loads;
	check_eplb(DP_SCHED_DUALPIPE, 2, 2, 4, 1, 4, NULL);
	check_eplb(DP_SCHED_1F1B, 2, 2, 4, 0, 4, NULL);
	check_eplb(DP_SCHED_ZB1P, 2, 2, 4, 0, 2, skewed_loads);
	check_eplb(DP_SCHED_DUALPIPEV, 2, 2, 4, 1, 4, skewed_loads);
	check_eplb(DP_SCHED_DUALPIPE, 2, 4, 4, 1, 4, skewed_loads);
	/* loads alone: R = E, the experts permuted over the ranks */
	check_eplb(DP_SCHED_1F1B, 2, 2, 4, 0, 0, skewed_loads);
	check_tcase(&tcp); /* two "nodes" (hierarchical EPLB), two-hop over tcp */
}

/* Rebalancing (cfg.rebalance_every): the same training as the reference
 * while the placement changes between steps, EP and DP replicas
 * bit-identical, and each placement EPLB's on the summed routed rows
 * (check_rebalance). */
static void rebalance_matches_reference(void **state)
{
	/* algo, pp, ep, dp, overlap, redundant, skewed start, rebalance_every */
	static const int cases[][8] = {
		{ DP_SCHED_DUALPIPE, 2, 2, 1, 1, 2, 1, 1 },
		{ DP_SCHED_1F1B, 2, 2, 1, 0, 2, 1, 2 },
		{ DP_SCHED_1F1B, 2, 2, 2, 0, 2, 0, 1 },
		{ DP_SCHED_DUALPIPE, 2, 4, 1, 1, 4, 0, 2 },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const int *c = cases[i];
		const struct tcase tc = { .algo = (enum dp_sched_algo)c[0],
					  .pp = c[1],
					  .ep = c[2],
					  .dp = c[3],
					  .micro = 4,
					  .overlap = c[4],
					  .transport = "shm",
					  .redundant = c[5],
					  .loads = c[6] ? skewed_loads : NULL,
					  .rebalance = c[7] };

		check_tcase(&tc);
	}
}

/* A re-placement moves rows: from uniform loads (2 redundant slots), one
 * re-placement after all STEPS steps uses every row the run routed; they
 * are what the slots measured (each expert's slots summed over the EP
 * group), the placement changes, and the busiest rank-layer those rows
 * put on one EP rank goes down. */
static void rebalance_moves_rows(void **state)
{
	const struct tcase tc = { .algo = DP_SCHED_1F1B,
				  .pp = 1,
				  .ep = 2,
				  .micro = 4,
				  .transport = "shm",
				  .redundant = 2,
				  .rebalance = STEPS };
	struct rank_res res[MAX_RANKS];
	int changed = 0;

	(void)state;
	memset(res, 0, sizeof(res));
	run_pipeline(&tc, res);
	check_rebalance(&tc, res, 2);
	for (int l = 0; l < MAX_LAYER; l++) {
		for (int e = 0; e < 4; e++) {
			long rows = 0;

			for (int q = 0; q < 6; q++)
				if (res[0].p2l0[l][q] == e)
					rows += res[q / 3].slot_rows[l][q];
			assert_true(res[0].load[l][e] == (float)rows);
		}
		changed |= memcmp(res[0].p2l0[l], res[0].p2l[l], sizeof(res[0].p2l[l])) != 0;
	}
	assert_true(changed);
	assert_true(res[0].rb.busiest_after < res[0].rb.busiest_before);
	printf("# rebalance: after %d steps, busiest rank-layer %ld -> %ld rows\n", STEPS,
	       res[0].rb.busiest_before, res[0].rb.busiest_after);
	free_res(res, 2);
}

/* The placement moves rows: a contiguous run measures each expert's rows
 * per layer; with those as the EPLB loads and 2 redundant slots the
 * busiest rank-layer runs fewer expert rows (the same rows in all). */
static void eplb_moves_rows(void **state)
{
	struct tcase tc = {
		.algo = DP_SCHED_1F1B, .pp = 1, .ep = 2, .micro = 4, .transport = "shm"
	};
	struct rank_res a[MAX_RANKS], b[MAX_RANKS];
	float loads[MAX_LAYER * 4];
	long most_a, most_b;

	(void)state;
	memset(a, 0, sizeof(a));
	memset(b, 0, sizeof(b));
	run_pipeline(&tc, a);
	most_a = check_placement(&tc, a, 2, 2);
	for (int l = 0; l < MAX_LAYER; l++)
		for (int e = 0; e < 4; e++) /* slot = expert, on rank e / 2 */
			loads[l * 4 + e] = (float)a[e >> 1].slot_rows[l][e];
	tc.redundant = 2;
	tc.loads = loads;
	run_pipeline(&tc, b);
	most_b = check_placement(&tc, b, 2, 2);
	assert_int_equal(a[0].expert_rows + a[1].expert_rows, b[0].expert_rows + b[1].expert_rows);
	assert_true(most_b < most_a);
	printf("# eplb: expert rows per rank %ld + %ld contiguous, %ld + %ld placed; busiest "
	       "rank-layer %ld -> %ld\n",
	       a[0].expert_rows, a[1].expert_rows, b[0].expert_rows, b[1].expert_rows, most_a,
	       most_b);
	free_res(a, 2);
	free_res(b, 2);
}

/* The executor on a device backend (worker/dp_dev.h) against "cpu", same
 * schedule and links.  "emu": every rank's loss shares within 1e-6
 * relative, each chunk's gradients after step 0 within 1e-5 max|g| + 1e-6
 * per tensor and its values after the last step within 1e-4 max|w| + 1e-5
 * (Adam amplifies rounding in small gradients; docs/model.md, "Device
 * backend").  "cuda" (cuBLAS sums in its own order, and a near-tie may
 * route a token differently): the losses within 1e-3 relative only.  This
 * runs the device stage through the executor's component calls, the
 * DualPipe gradient exchange, the EP and the DP all-reduce (flat_commit). */
static void check_backend(const char *backend, double loss_rel, int params, int gpus)
{
	static const struct tcase cases[] = {
		{ .algo = DP_SCHED_DUALPIPE, .pp = 2, .micro = 4 },
		{ .algo = DP_SCHED_1F1B, .pp = 2, .micro = 4 },
		{ .algo = DP_SCHED_ZB1P, .pp = 2, .micro = 4 },
		{ .algo = DP_SCHED_DUALPIPE,
		  .pp = 2,
		  .ep = 2,
		  .micro = 4,
		  .overlap = 1,
		  .transport = "shm" },
		{ .algo = DP_SCHED_1F1B, .pp = 2, .dp = 2, .micro = 4 },
		/* two "nodes" over tcp (cuda: the cuda transport, NCCL) */
		{ .algo = DP_SCHED_DUALPIPEV,
		  .pp = 2,
		  .ep = 2,
		  .micro = 4,
		  .overlap = 1,
		  .two_hop = 1,
		  .transport = "tcp" },
		/* EPLB placements: device rows sent in destination order */
		{ .algo = DP_SCHED_DUALPIPE,
		  .pp = 2,
		  .ep = 2,
		  .micro = 4,
		  .overlap = 1,
		  .transport = "shm",
		  .redundant = 4,
		  .loads = skewed_loads },
		{ .algo = DP_SCHED_DUALPIPEV,
		  .pp = 2,
		  .ep = 2,
		  .micro = 4,
		  .overlap = 1,
		  .two_hop = 1,
		  .transport = "tcp",
		  .redundant = 2,
		  .loads = skewed_loads },
	};
	const size_t ncases = sizeof(cases) / sizeof(cases[0]);
	struct dp_model_cfg mc;
	double worst_g = 0, worst_w = 0, worst_l = 0;

	test_cfg(&mc);
	/* and the dualpipe EPLB case re-placed after every step */
	for (size_t i = 0; i <= ncases; i++) {
		struct tcase dev = cases[i < ncases ? i : ncases - 2], cpu;
		const int ep = dev.ep > 1 ? dev.ep : 1, n = (dev.dp > 1 ? dev.dp : 1) * dev.pp * ep;
		const int nstages = dev.algo == DP_SCHED_DUALPIPEV ? 2 * dev.pp : dev.pp;
		const int cep = dev.redundant || dev.loads ? 1 : ep; /* placed: all experts */
		struct rank_res a[MAX_RANKS], b[MAX_RANKS];
		char what[96];

		dev.rebalance = i == ncases;
		cpu = dev;
		memset(a, 0, sizeof(a));
		memset(b, 0, sizeof(b));
		dev.backend = backend;
		if (strcmp(backend, "cuda") == 0 && dev.transport &&
		    strcmp(dev.transport, "tcp") == 0) {
			/* the cuda a2a transport: one GPU per EP rank */
			if (gpus < ep) {
				print_message(
					"skip: %s ep %d over the cuda transport needs %d GPUs\n",
					dp_sched_algo_name(dev.algo), ep, ep);
				continue;
			}
			dev.spread = 1;
		}
		run_pipeline(&cpu, a);
		run_pipeline(&dev, b);
		if (ep > 1)
			(void)check_placement(&dev, b, dev.pp * ep, ep);
		for (int r = 0; r < n; r++) {
			assert_int_equal(a[r].nch, b[r].nch);
			/* a device stage keeps the EP rows on the device: emu
			 * always, cuda where the transport is cuda (tcp) */
			assert_int_equal(a[r].dev_exchanges, 0);
			if (ep > 1 &&
			    (strcmp(backend, "emu") == 0 || strcmp(dev.transport, "tcp") == 0))
				assert_true(b[r].dev_exchanges >= 4L * STEPS);
			else
				assert_int_equal(b[r].dev_exchanges, 0);
			for (int k = 0; k < STEPS; k++) {
				const double d = fabs(a[r].loss[k] - b[r].loss[k]);

				worst_l = fmax(worst_l, a[r].loss[k] > 0 ? d / a[r].loss[k] : d);
				if (!(d <= loss_rel * fabs(a[r].loss[k])))
					fail_msg("%s ep %d %s rank %d step %d: loss %.9g, cpu %.9g",
						 dp_sched_algo_name(dev.algo), ep, backend, r, k,
						 b[r].loss[k], a[r].loss[k]);
			}
			for (int c = 0; params && c < a[r].nch; c++) {
				struct dp_model_stage *st = NULL;

				assert_int_equal(dp_model_stage_new_split(
							 &mc, nstages, a[r].ch[c].stage, &st, NULL),
						 0);
				(void)snprintf(what, sizeof(what), "%s ep %d %s rank %d chunk %d",
					       dp_sched_algo_name(dev.algo), ep, backend, r, c);
				worst_g = fmax(worst_g,
					       compare_flat(st, b[r].ch[c].g, a[r].ch[c].g, 1e-5,
							    1e-6, what, cep, r % ep, 0));
				worst_w = fmax(worst_w,
					       compare_flat(st, b[r].ch[c].w, a[r].ch[c].w, 1e-4,
							    1e-5, what, cep, r % ep, 0));
				dp_model_stage_free(st);
			}
		}
		free_res(a, n);
		free_res(b, n);
	}
	print_message("%s vs cpu executor: worst loss %.3g relative, |dg|/max|g| %.3g, "
		      "|dw|/max|w| %.3g\n",
		      backend, worst_l, worst_g, worst_w);
}

static void emu_backend_matches_cpu(void **state)
{
	(void)state;
	check_backend("emu", 1e-6, 1, 1);
}

/* Skipped without a CUDA build or a GPU (the ranks would fail to start). */
static void cuda_backend_matches_cpu(void **state)
{
	struct dp_model_cfg mc;
	struct dp_model_stage *st = NULL;
	struct dp_err err = { 0 };
	int rc, gpus = 0;

	(void)state;
	test_cfg(&mc);
	rc = dp_model_stage_new_split_dev(&mc, 1, 0, "cuda", 0, &st, &err);
	dp_model_stage_free(st);
	if (rc == -ENOSYS || rc == -ENODEV) {
		print_message("skip: %s\n", err.msg);
		skip();
	}
	assert_int_equal(rc, 0);
	assert_int_equal(dp_gpu_count(&gpus, &err), 0);
	check_backend("cuda", 1e-3, 0, gpus);
}

/* The four-component overlap moves no number: overlapped and plain runs
 * give bit-identical losses, gradients and parameters, and the overlapped
 * run really computed while exchanges were in flight. */
static void ep_overlap_changes_no_number(void **state)
{
	struct tcase tc = {
		.algo = DP_SCHED_DUALPIPE, .pp = 2, .ep = 2, .micro = 6, .transport = "shm"
	};
	struct rank_res a[MAX_RANKS], b[MAX_RANKS];

	(void)state;
	memset(a, 0, sizeof(a));
	memset(b, 0, sizeof(b));
	run_pipeline(&tc, a);
	tc.overlap = 1;
	run_pipeline(&tc, b);
	for (int r = 0; r < 4; r++) {
		assert_int_equal(a[r].overlapped, 0);
		assert_true(b[r].overlapped > 0);
		assert_memory_equal(a[r].loss, b[r].loss, sizeof(a[r].loss));
		assert_int_equal(a[r].nch, b[r].nch);
		for (int c = 0; c < a[r].nch; c++) {
			assert_memory_equal(a[r].ch[c].g, b[r].ch[c].g,
					    a[r].ch[c].n * sizeof(float));
			assert_memory_equal(a[r].ch[c].w, b[r].ch[c].w,
					    a[r].ch[c].n * sizeof(float));
		}
	}
	printf("# overlap: rank 0 ran %ld compute steps during exchanges, same bits\n",
	       b[0].overlapped);
	free_res(a, 4);
	free_res(b, 4);
}

/* DP 2: two replicas of the pipeline on their own micro-batches, the
 * gradients summed over them; the same training as one process over all
 * the micro-batches, and the replicas stay bit-identical. */
static void dp_matches_reference(void **state)
{
	(void)state;
	check_layout(DP_SCHED_DUALPIPE, 2, 2, 1, 4, 0);
	check_layout(DP_SCHED_1F1B, 2, 2, 1, 4, 0);
	check_layout(DP_SCHED_ZB1P, 2, 2, 1, 4, 0);
	check_layout(DP_SCHED_DUALPIPEV, 2, 2, 1, 4, 0);
	/* three and seven replicas: the all-reduce's shards; with seven they
	 * are of unequal length (the test model's tensors are multiples of 12
	 * floats) */
	check_layout(DP_SCHED_1F1B, 3, 2, 1, 4, 0);
	check_layout(DP_SCHED_1F1B, 7, 1, 1, 2, 0);
}

static void dp_with_ep_matches_reference(void **state)
{
	(void)state;
	check_layout(DP_SCHED_DUALPIPE, 2, 2, 2, 4, 1);
	check_layout(DP_SCHED_1F1B, 2, 2, 2, 4, 0);
	/* an EP group of four: the EP all-reduce over four shards */
	check_layout(DP_SCHED_DUALPIPE, 1, 2, 4, 4, 1);
}

/* A replica needs its DP peers: rank 1 of dp 2 x pp 2 talks to rank 0
 * (pipeline) and rank 3 (the DP all-reduce), nothing else. */
static void dp_links_are_checked(void **state)
{
	struct dp_exec_cfg cfg = { .algo = DP_SCHED_1F1B, .pp = 2, .micro = 2, .rank = 1, .dp = 2 };
	struct dp_pp_link *links[4] = { NULL };
	struct dp_err err = { 0 };
	struct dp_exec *ex = NULL;
	int fds[2];

	(void)state;
	test_cfg(&cfg.model);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
	assert_int_equal(dp_pp_link_fd(fds[0], &links[0], NULL), 0);
	assert_int_equal(dp_exec_new(&cfg, links, &ex, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "rank 1 needs a link to rank 3"));
	cfg.rank = 4;
	assert_int_equal(dp_exec_new(&cfg, links, &ex, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "out of range for dp 2 x pp 2 x ep 1"));
	assert_null(ex);
	dp_pp_link_close(links[0]);
	(void)close(fds[1]);
}

static void ep_bad_config_is_rejected(void **state)
{
	struct dp_exec_cfg cfg = { .algo = DP_SCHED_1F1B, .pp = 2, .micro = 2, .rank = 1, .ep = 3 };
	struct dp_pp_link *links[6] = { NULL };
	struct dp_err err = { 0 };
	struct dp_exec *ex = NULL;

	(void)state;
	test_cfg(&cfg.model);
	/* 4 experts do not split over 3 ranks */
	assert_int_equal(dp_exec_new(&cfg, links, &ex, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "do not split over ep 3"));
	cfg.ep = 2;
	cfg.rank = 4; /* only 4 ranks */
	assert_int_equal(dp_exec_new(&cfg, links, &ex, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "out of range for pp 2 x ep 2"));
	cfg.rank = 1; /* needs links to its pipeline neighbour 3 */
	assert_int_equal(dp_exec_new(&cfg, links, &ex, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "needs a link to rank 3"));
	/* EPLB: 4 + 1 slots do not split over 2 ranks; replicas need EP */
	cfg.redundant = 1;
	assert_int_equal(dp_exec_new(&cfg, links, &ex, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "4 experts + 1 redundant = 5 expert slots do not split "
					"over ep 2"));
	cfg.redundant = -1;
	assert_int_equal(dp_exec_new(&cfg, links, &ex, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "redundant experts -1 out of range"));
	cfg.redundant = 2;
	cfg.ep = 1;
	cfg.rank = 0;
	assert_int_equal(dp_exec_new(&cfg, links, &ex, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "2 redundant experts need expert parallelism (ep > 1)"));
	/* a load that EPLB refuses: named with the placement */
	{
		float bad[6 * 4];

		for (int i = 0; i < 6 * 4; i++)
			bad[i] = 1;
		bad[5] = NAN;
		cfg.ep = 2;
		cfg.rank = 1;
		cfg.expert_load = bad;
		assert_int_equal(dp_exec_new(&cfg, links, &ex, &err), -EINVAL);
		assert_non_null(strstr(err.msg, "exec: expert placement (4 experts + 2 redundant "
						"on ep 2, 1 node): eplb: load of layer 1 expert 1 "
						"is not finite"));
	}
	assert_null(ex);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(dualpipe_matches_reference),
		cmocka_unit_test(dualpipev_matches_reference),
		cmocka_unit_test(onef1b_and_zb1p_match_reference),
		cmocka_unit_test(mismatched_message_is_an_error),
		cmocka_unit_test(missing_link_is_rejected),
		cmocka_unit_test(train_local_prints_a_falling_loss),
		cmocka_unit_test(train_local_redundant_experts),
		cmocka_unit_test(train_local_rebalance_every),
		cmocka_unit_test(train_over_tcp_matches_reference),
		cmocka_unit_test(ep_dualpipe_matches_reference),
		cmocka_unit_test(ep_1f1b_and_others_match_reference),
		cmocka_unit_test(eplb_matches_reference),
		cmocka_unit_test(eplb_moves_rows),
		cmocka_unit_test(rebalance_matches_reference),
		cmocka_unit_test(rebalance_moves_rows),
		cmocka_unit_test(ep_overlap_changes_no_number),
		cmocka_unit_test(emu_backend_matches_cpu),
		cmocka_unit_test(cuda_backend_matches_cpu),
		cmocka_unit_test(train_local_backend_option),
		cmocka_unit_test(ep_bad_config_is_rejected),
		cmocka_unit_test(train_over_tcp_with_ep_matches_reference),
		cmocka_unit_test(train_local_ep_fabrics_agree),
		cmocka_unit_test(dp_matches_reference),
		cmocka_unit_test(dp_with_ep_matches_reference),
		cmocka_unit_test(dp_links_are_checked),
		cmocka_unit_test(train_over_tcp_with_dp_matches_reference),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
