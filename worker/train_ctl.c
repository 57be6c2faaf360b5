/* worker/train_ctl.c - one training rank started by `dpctl launch RECIPE`:
 * the layout and the model come from the environment (DP_PP_RANK,
 * DP_PP_SIZE, DP_SCHEDULE, DP_MICRO_BATCHES, DP_STEPS, DP_SEED, DP_MODEL,
 * DP_REDUNDANT_EXPERTS, DP_EXPERT_LOADS, ...), the PP peers from the
 * controller.
 *
 * Start-up: listen for PP links on an ephemeral port of every interface,
 * join the control plane (hello), report the endpoint -- the local address
 * of the control connection, which is the one that routes towards the
 * controller and so towards the other nodes -- with the global ranks this
 * rank needs, say ready, and wait for start (the PEERS frames come just
 * before it).  Then the TCP mesh over the dp x pp x ep ranks (global rank
 * = (dp_rank * pp + pp_rank) * ep + ep_rank, launcher/dp_plan.h's order,
 * which is also the executor's): in one DP replica a link between two ranks
 * of the same PP stage (an EP group, for the gradient all-reduce) or the
 * same EP rank (the pipeline proper), and between replicas a link between
 * the ranks of the same pp and ep rank (the DP gradient all-reduce); dial
 * every lower peer, accept
 * every higher one; each dialler first sends a 40-byte hello (magic, its
 * rank, the job token), so a stray connection to the port is refused, not
 * trained on.
 *
 * With ep > 1 each rank also listens on a second ephemeral port for the EP
 * group's a2a tcp transport (the listening socket goes to the a2a comm as
 * listen_fd) and tells its EP peers that port over the fresh, authenticated
 * PP links (an 8-byte EP hello); the host is the peer's PP address from
 * PEERS.  So the control protocol carries one port per rank, as before.
 *
 * Training: dp_exec_step + Adam per step, a STEP frame after each (loss
 * share, tokens embedded here, wall time, peak activations, peak RSS), the
 * heartbeat updated with the same, and the op timeline of the last step in
 * TIMELINE frames before done.  The controller asking to stop ends the loop
 * between steps; a peer dying ends it inside a step (-ECONNRESET/-EPIPE),
 * so a failed rank never leaves the others hanging on a socket.
 *
 * Checkpoints (DP_CKPT_DIR, DP_CKPT_EVERY): saved after a step's update and
 * before its STEP frame.  DP_CKPT_RESUME=1, which the controller sets on a
 * restart only, resumes from the newest complete one; a fresh start retires
 * the complete ones an earlier run left, so a restart never resumes from a
 * step this run did not write.  docs/executor.md, "Under the controller".
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "a2a/dp_eplb.h"
#include "common/dp_log.h"
#include "common/dp_util.h"
#include "launcher/ctl_proto.h"
#include "worker/dp_ckpt.h"
#include "worker/dp_exec.h"
#include "worker/dp_gpu.h"
#include "worker/dp_pp_nccl.h"
#include "worker/dp_worker.h"
#include "common/dp_banned.h"

_Static_assert(DP_A2A_TOKEN_LEN == DP_CTL_TOKEN_LEN, "the a2a hello carries the job token");

#define LINK_MAGIC	 0x4450504cu /* "DPPL" */
#define EP_MAGIC	 0x44504541u /* "DPEA" */
#define MESH_TIMEOUT_S	 60.0
#define HELLO_TIMEOUT_MS 5000
#define PEER_LOSS_WAIT_S 3.0 /* < the controller's 5 s default grace */

struct link_hello {
	uint32_t magic;
	uint32_t rank; /* the dialler's global rank, (dp_rank * pp + pp_rank) * ep + ep_rank */
	uint8_t token[DP_CTL_TOKEN_LEN];
};

/* Sent on every EP-group link after the mesh: where this rank's a2a listens. */
struct ep_hello {
	uint32_t magic;
	uint32_t port;
};

static double now_s(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- configuration from the environment --------------------------------------- */

static int env_long(const char *name, long lo, long hi, long dflt, long *v, struct dp_err *err)
{
	const char *s = getenv(name);

	if (!s || !*s) {
		if (dflt < lo)
			return dp_err_set(err, EINVAL, "train: %s is not set", name);
		*v = dflt;
		return 0;
	}
	return dp_parse_long(s, lo, hi, v, name, err);
}

int dp_worker_model_parse(const char *spec, struct dp_model_cfg *cfg, struct dp_err *err)
{
	static const struct {
		const char *key;
		size_t off;
		long lo, hi;
	} keys[] = {
#define K(k, f, lo, hi) { k, offsetof(struct dp_model_cfg, f), lo, hi }
		K("layers", layers, 1, 4096),	    K("hidden", hidden, 1, 1 << 16),
		K("ffn", ffn_hidden, 1, 1 << 16),   K("experts", experts, 1, 4096),
		K("shared", shared_experts, 0, 64), K("top_k", top_k, 1, 4096),
		K("groups", groups, 1, 4096),	    K("topk_groups", topk_groups, 1, 4096),
		K("vocab", vocab, 2, 1 << 20),	    K("seq_len", seq_len, 1, 1 << 20),
		K("seqs", seqs, 1, 1 << 20),
#undef K
	};
	struct dp_model_cfg c = *cfg;
	char *copy = strdup(spec), *save = NULL;
	int rc = 0;

	if (!copy)
		return dp_err_set(err, ENOMEM, "train: out of memory");
	for (char *kv = strtok_r(copy, ",", &save); kv && !rc; kv = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(kv, '=');
		size_t i;

		if (!eq) {
			rc = dp_err_set(err, EINVAL, "train: DP_MODEL item '%s' is not KEY=VALUE",
					kv);
			break;
		}
		*eq++ = '\0';
		if (strcmp(kv, "lr") == 0) {
			double d;

			rc = dp_parse_double(eq, 1e-12, 10, &d, "DP_MODEL lr", err);
			c.lr = (float)d;
			continue;
		}
		for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
			if (strcmp(kv, keys[i].key) == 0)
				break;
		if (i == sizeof(keys) / sizeof(keys[0])) {
			rc = dp_err_set(err, EINVAL, "train: DP_MODEL has an unknown key '%s'", kv);
			break;
		}
		{
			long v;

			rc = dp_parse_long(eq, keys[i].lo, keys[i].hi, &v, keys[i].key, err);
			if (!rc)
				*(int *)((char *)&c + keys[i].off) = (int)v;
		}
	}
	free(copy);
	if (rc)
		return rc;
	*cfg = c;
	return 0;
}

struct layout {
	struct dp_exec_cfg cfg;
	long steps, ep, dp, ep_rank, dp_rank;
	int nccl;      /* DP_PP_TRANSPORT=nccl */
	float *loads;  /* DP_EXPERT_LOADS (owned): cfg.expert_load */
	long ep_nodes; /* DP_EP_NODES: nodes an EP group spans (EPLB's nodes) */
};

/* DP_BACKEND (cpu, cuda; emu: a test knob, the device code on the host
 * emulator), DP_DEVICE (the GPU index on this node, launcher/plan_recipe.c)
 * and DP_PP_TRANSPORT (tcp, nccl: cuda only). */
static int read_backend(struct layout *l, struct dp_err *err)
{
	const char *b = getenv("DP_BACKEND"), *t = getenv("DP_PP_TRANSPORT");
	long dev = 0;
	int rc;

	if (b && *b && strcmp(b, "cpu") != 0 && strcmp(b, "cuda") != 0 && strcmp(b, "emu") != 0)
		return dp_err_set(
			err, EINVAL,
			"train: DP_BACKEND '%s' is not one of cpu, cuda (emu: tests only)", b);
	if (t && *t && strcmp(t, "tcp") != 0 && strcmp(t, "nccl") != 0)
		return dp_err_set(err, EINVAL,
				  "train: DP_PP_TRANSPORT '%s' is not one of tcp, nccl", t);
	if ((rc = env_long("DP_DEVICE", 0, 1023, 0, &dev, err)))
		return rc;
	l->cfg.backend = b && *b ? b : "cpu";
	l->cfg.device = (int)dev;
	l->nccl = t && strcmp(t, "nccl") == 0;
	if (l->nccl && strcmp(l->cfg.backend, "cuda") != 0)
		return dp_err_set(err, EINVAL,
				  "train: DP_PP_TRANSPORT=nccl needs DP_BACKEND=cuda, not '%s'",
				  l->cfg.backend);
	return 0;
}

/* DP_BACKEND=cuda: is DP_DEVICE there?  Asked after start, so that on a
 * GPU-less node the controller's pre-flight gate (need_gpu) reports it
 * first, for the node, rather than each rank. */
static int check_device(const struct layout *l, struct dp_err *err)
{
	int count = 0;

	if (strcmp(l->cfg.backend, "cuda") != 0)
		return 0;
	if (dp_gpu_count(&count, err))
		return dp_err_prefix(err, "train: DP_BACKEND=cuda");
	if (l->cfg.device >= count)
		return dp_err_set(err, ENODEV, "train: DP_DEVICE %d: this node has %d GPU%s",
				  l->cfg.device, count, count == 1 ? "" : "s");
	return 0;
}

/* The expert placement (launcher/plan_recipe.c sets these from the
 * recipe's model.redundant_experts and model.expert_loads):
 * DP_REDUNDANT_EXPERTS extra slots, DP_EP_NODES the nodes of an EP group
 * (the a2a comm's shape, which the placement takes as EPLB's nodes, as
 * `dpctl plan` does), DP_EXPERT_LOADS the loads as JSON {"weight":
 * [[...], ...]}, one row per layer of DP_MODEL, DP_EPLB_REBALANCE_EVERY
 * the steps between re-placements (model.rebalance_every; 0 or unset:
 * never).  The last thing read_layout does: l->loads is the only
 * allocation. */
static int read_placement(struct layout *l, struct dp_err *err)
{
	const char *text = getenv("DP_EXPERT_LOADS");
	long red = 0, every = 0;
	int rows = 0, cols = 0, rc;

	if ((rc = env_long("DP_REDUNDANT_EXPERTS", 0, 4096, 0, &red, err)) ||
	    (rc = env_long("DP_EPLB_REBALANCE_EVERY", 0, 1000000000L, 0, &every, err)) ||
	    (rc = env_long("DP_EP_NODES", 1, l->ep, 1, &l->ep_nodes, err)))
		return rc;
	if (l->ep % l->ep_nodes)
		return dp_err_set(err, EINVAL, "train: DP_EP_NODES %ld does not divide ep %ld",
				  l->ep_nodes, l->ep);
	l->cfg.redundant = (int)red;
	l->cfg.rebalance_every = (int)every;
	if (!text || !*text)
		return 0;
	if (dp_eplb_loads_parse(text, "DP_EXPERT_LOADS", &l->loads, &rows, &cols, err))
		return dp_err_prefix(err, "train");
	if (rows != l->cfg.model.layers || cols != l->cfg.model.experts) {
		free(l->loads);
		l->loads = NULL;
		return dp_err_set(err, EINVAL,
				  "train: DP_EXPERT_LOADS has %d x %d loads, the model %d layers "
				  "x %d experts",
				  rows, cols, l->cfg.model.layers, l->cfg.model.experts);
	}
	l->cfg.expert_load = l->loads;
	return 0;
}

static int read_layout(struct layout *l, struct dp_err *err)
{
	const char *algo = getenv("DP_SCHEDULE"), *model = getenv("DP_MODEL");
	long pp = 1, rank = 0, micro = 1, seed = 0;
	int rc;

	memset(l, 0, sizeof(*l));
	dp_model_cfg_default(&l->cfg.model);
	if ((rc = env_long("DP_PP_SIZE", 1, 64, -1, &pp, err)) ||
	    (rc = env_long("DP_PP_RANK", 0, pp - 1, -1, &rank, err)) ||
	    (rc = env_long("DP_EP_SIZE", 1, 4096, 1, &l->ep, err)) ||
	    (rc = env_long("DP_DP_SIZE", 1, 4096, 1, &l->dp, err)) ||
	    (rc = env_long("DP_EP_RANK", 0, l->ep - 1, 0, &l->ep_rank, err)) ||
	    (rc = env_long("DP_DP_RANK", 0, l->dp - 1, 0, &l->dp_rank, err)) ||
	    (rc = env_long("DP_MICRO_BATCHES", 1, 4096, -1, &micro, err)) ||
	    (rc = env_long("DP_STEPS", 1, 100000000, -1, &l->steps, err)) ||
	    (rc = env_long("DP_SEED", 0, 0x7fffffffL, 1, &seed, err)))
		return rc;
	if (l->dp * pp * l->ep > 4096)
		return dp_err_set(err, EINVAL,
				  "train: dp %ld x pp %ld x ep %ld is more than 4096 ranks", l->dp,
				  pp, l->ep);
	if (pp - 1 + l->ep - 1 + l->dp - 1 > DP_CTL_WANT_MAX) /* peers one ENDPOINT may ask for */
		return dp_err_set(err, EINVAL,
				  "train: pp %ld + ep %ld + dp %ld - 3 peers is more than %d", pp,
				  l->ep, l->dp, DP_CTL_WANT_MAX);
	if (!algo)
		return dp_err_set(err, EINVAL, "train: DP_SCHEDULE is not set");
	if ((rc = dp_sched_algo_parse(algo, &l->cfg.algo, err)))
		return rc;
	if (model && (rc = dp_worker_model_parse(model, &l->cfg.model, err)))
		return rc;
	l->cfg.pp = (int)pp;
	l->cfg.ep = (int)l->ep;
	l->cfg.dp = (int)l->dp;
	l->cfg.rank = (int)((l->dp_rank * pp + rank) * l->ep + l->ep_rank);
	l->cfg.micro = (int)micro;
	l->cfg.model.seed = (uint64_t)seed;
	if ((rc = read_backend(l, err)))
		return rc;
	return read_placement(l, err);
}

/* Ranks of the run: dp x pp x ep. */
static int nranks(const struct layout *l)
{
	return (int)l->dp * l->cfg.pp * (int)l->ep;
}

/* Do ranks @i and @j share a link?  In one replica: same EP rank (PP
 * neighbours and the DualPipe mirror) or same PP stage (the EP group);
 * across replicas: same pp and ep rank (the DP all-reduce).  Symmetric,
 * so both ends agree on who dials whom. */
static int linked(const struct layout *l, int i, int j)
{
	int ep = (int)l->ep, per = l->cfg.pp * ep; /* ranks per replica */

	if (i == j)
		return 0;
	if (i / per != j / per)
		return i % per == j % per;
	return i % ep == j % ep || i / ep == j / ep;
}

/* ---- the PP mesh ----------------------------------------------------------------- */

static int listen_any(const char *what, int *port, struct dp_err *err)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), e;

	if (fd < 0)
		return dp_err_set(err, errno, "train: socket failed: %s", strerror(errno));
	sa.sin_addr.s_addr = htonl(INADDR_ANY);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 256) ||
	    getsockname(fd, (struct sockaddr *)&sa, &sl)) {
		e = errno;
		(void)close(fd);
		return dp_err_set(err, e, "train: cannot listen for %s: %s", what, strerror(e));
	}
	*port = ntohs(sa.sin_port);
	return fd;
}

static void set_rcvtimeo(int fd, int ms)
{
	struct timeval tv = { ms / 1000, (long)(ms % 1000) * 1000 };

	(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

static int dial(const char *host, int port, double deadline, struct dp_err *err)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai = NULL;
	char sport[16];
	int rc, e = 0;

	(void)snprintf(sport, sizeof(sport), "%d", port);
	rc = getaddrinfo(host, sport, &hints, &ai);
	if (rc)
		return dp_err_set(err, EHOSTUNREACH, "train: cannot resolve peer '%s': %s", host,
				  gai_strerror(rc));
	for (;;) {
		int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

		if (fd < 0) {
			e = errno;
			break;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
			freeaddrinfo(ai);
			return fd;
		}
		e = errno;
		(void)close(fd);
		if (now_s() > deadline)
			break;
		(void)usleep(50000);
	}
	freeaddrinfo(ai);
	return dp_err_set(err, e ? e : ETIMEDOUT, "train: cannot connect to peer %s:%d: %s", host,
			  port, strerror(e ? e : ETIMEDOUT));
}

static int read_full(int fd, void *buf, size_t len)
{
	char *p = buf;

	while (len) {
		ssize_t n = recv(fd, p, len, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Links to every linked() rank of this pipeline: dial the lower ones, accept
 * the higher ones on @lfd.  links[i] (pp x ep entries) get the links. */
static int build_mesh(const struct layout *l, struct dp_ctl_client *cc, int lfd,
		      const uint8_t *token, struct dp_pp_link **links, struct dp_err *err)
{
	int n = nranks(l), me = l->cfg.rank, one = 1, rc = 0, higher = 0;
	double deadline = now_s() + MESH_TIMEOUT_S;

	for (int j = me + 1; j < n; j++)
		higher += linked(l, me, j);
	for (int j = 0; j < me && !rc; j++) {
		struct link_hello h = { .magic = LINK_MAGIC, .rank = (uint32_t)me };
		char addr[DP_CTL_ADDR_MAX];
		int port, fd;

		if (!linked(l, me, j))
			continue;
		memcpy(h.token, token, DP_CTL_TOKEN_LEN);
		if (dp_ctl_client_peer(cc, (uint32_t)j, addr, sizeof(addr), &port))
			return dp_err_set(err, EPROTO, "train: no address for peer rank %d", j);
		fd = dial(addr, port, deadline, err);
		if (fd < 0)
			return fd;
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		rc = dp_pp_link_fd(fd, &links[j], err);
		if (!rc)
			rc = links[j]->ops->send(links[j], &h, sizeof(h), err);
	}
	for (int got = 0; !rc && got < higher;) {
		struct pollfd p = { .fd = lfd, .events = POLLIN };
		struct link_hello h;
		int fd, left = (int)((deadline - now_s()) * 1000);

		if (dp_ctl_client_stopped(cc))
			return dp_err_set(err, ECANCELED, "train: stopped while connecting peers");
		if (left <= 0)
			return dp_err_set(err, ETIMEDOUT,
					  "train: PP peers did not connect within %.0f s",
					  MESH_TIMEOUT_S);
		if (poll(&p, 1, left < 200 ? left : 200) <= 0)
			continue;
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		set_rcvtimeo(fd, HELLO_TIMEOUT_MS);
		if (read_full(fd, &h, sizeof(h)) || h.magic != LINK_MAGIC ||
		    !dp_ctl_token_equal(h.token, token) || h.rank <= (uint32_t)me ||
		    h.rank >= (uint32_t)n || !linked(l, me, (int)h.rank) || links[h.rank]) {
			/* not one of ours (or a duplicate): refuse it, keep waiting */
			(void)close(fd);
			continue;
		}
		set_rcvtimeo(fd, 0);
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		rc = dp_pp_link_fd(fd, &links[h.rank], err);
		got++;
	}
	return rc;
}

/* ep > 1: tell the EP group where this rank's a2a listens (@port) and
 * learn theirs: addrs[j] (ep entries, EP order) gets "host:port" of EP rank
 * j, the host being the address PEERS gave for it (@self for this rank).
 * Every rank sends first, then reads: 8 bytes never block a socket. */
static int ep_exchange(const struct layout *l, struct dp_ctl_client *cc, struct dp_pp_link **links,
		       const char *self, int port, char (*addrs)[DP_CTL_ADDR_MAX + 8],
		       struct dp_err *err)
{
	int ep = (int)l->ep, me = l->cfg.rank, g0 = me / ep * ep, rc = 0;
	struct ep_hello h = { EP_MAGIC, (uint32_t)port };

	for (int j = g0; j < g0 + ep && !rc; j++)
		if (j != me)
			rc = links[j]->ops->send(links[j], &h, sizeof(h), err);
	for (int j = g0; j < g0 + ep && !rc; j++) {
		struct ep_hello in = { 0 };
		char host[DP_CTL_ADDR_MAX];
		int pport, len;

		if (j == me) {
			len = snprintf(addrs[j - g0], sizeof(addrs[0]), "%s:%d", self, port);
		} else {
			rc = links[j]->ops->recv(links[j], &in, sizeof(in), err);
			if (rc)
				break;
			if (in.magic != EP_MAGIC || in.port == 0 || in.port > 65535)
				return dp_err_set(err, EPROTO, "train: rank %d sent a bad EP hello",
						  j);
			if (dp_ctl_client_peer(cc, (uint32_t)j, host, sizeof(host), &pport))
				return dp_err_set(err, EPROTO,
						  "train: no address for EP peer rank %d", j);
			len = snprintf(addrs[j - g0], sizeof(addrs[0]), "%s:%u", host, in.port);
		}
		if (len < 0 || (size_t)len >= sizeof(addrs[0]))
			return dp_err_set(err, ENAMETOOLONG, "train: EP address too long");
	}
	return rc;
}

/* ---- the run ----------------------------------------------------------------------- */

static uint64_t peak_rss(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) != 0)
		return 0;
	return (uint64_t)ru.ru_maxrss * 1024u;
}

static uint64_t to_ns(double s)
{
	return s > 0 ? (uint64_t)llround(s * 1e9) : 0;
}

/* TIMELINE frames of the last step. */
static int send_timeline(struct dp_ctl_client *cc, const struct dp_exec *ex, long step,
			 struct dp_err *err)
{
	struct dp_ctl_timeline *t = calloc(1, sizeof(*t));
	const struct dp_exec_op_time *v;
	double t0, t1;
	size_t n, i = 0;
	int rc = 0;

	if (!t)
		return dp_err_set(err, ENOMEM, "train: out of memory");
	v = dp_exec_timeline(ex, &n, &t0, &t1);
	t->step = (uint64_t)step;
	t->t0_ns = to_ns(t0);
	t->t1_ns = to_ns(t1);
	do {
		t->n = 0;
		for (; i < n && t->n < DP_CTL_TL_MAX; i++) {
			struct dp_ctl_tl_op *o = &t->op[t->n++];

			o->kind = v[i].op.kind;
			o->leg = v[i].op.leg;
			o->leg2 = v[i].op.leg2;
			o->micro = v[i].op.micro;
			o->micro2 = v[i].op.micro2;
			o->start_ns = to_ns(v[i].start);
			o->end_ns = to_ns(v[i].end);
			if (o->end_ns < o->start_ns)
				o->end_ns = o->start_ns;
		}
		rc = dp_ctl_client_timeline(cc, t, err);
	} while (!rc && i < n);
	free(t);
	return rc;
}

/* Tokens this rank embeds per step: the micro-batches of its embedding chunks. */
static uint64_t embedded_tokens(struct dp_exec *ex, const struct dp_model_cfg *m)
{
	uint64_t per =
		(uint64_t)dp_sched_leg_micro(dp_exec_sched(ex)) * (uint64_t)dp_model_cfg_tokens(m);
	uint64_t n = 0;

	for (int i = 0; i < dp_exec_nchunks(ex); i++)
		if (dp_model_stage_has_embed(dp_exec_chunk(ex, i, NULL)))
			n += per;
	return n;
}

/* ---- checkpoints and the test fault ------------------------------------------- */

/* A fresh start (not resuming) owns the checkpoint directory: rank 0 retires
 * every complete checkpoint of this configuration left there by an earlier
 * run (manifest.json -> manifest.json.old), so that a restart of this run
 * can never resume from a step this run did not write.  Rank files stay. */
static void ckpt_retire_stale(const char *dir, const struct dp_exec_cfg *xc)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d)) != NULL) {
		char sdir[4096], from[4200], to[4200];
		long step;

		if (strncmp(de->d_name, "step-", 5) != 0 ||
		    dp_parse_long(de->d_name + 5, 0, LONG_MAX, &step, "step", NULL) != 0 ||
		    dp_ckpt_check(dir, step, xc, NULL) != 0 ||
		    dp_ckpt_step_path(dir, step, sdir, sizeof(sdir), NULL) != 0)
			continue;
		(void)snprintf(from, sizeof(from), "%s/manifest.json", sdir);
		(void)snprintf(to, sizeof(to), "%s/manifest.json.old", sdir);
		if (rename(from, to) == 0)
			dp_log(DP_LOG_INFO, "ckpt", "fresh start: retired %s of an earlier run",
			       sdir);
	}
	(void)closedir(d);
}

/* Flip one byte in the middle of this rank's file of checkpoint @step. */
static void test_corrupt(const char *dir, long step, int rank)
{
	char sdir[4096], path[4200];
	unsigned char b;
	off_t mid;
	int fd;

	if (dp_ckpt_step_path(dir, step, sdir, sizeof(sdir), NULL) != 0)
		return;
	(void)snprintf(path, sizeof(path), "%s/rank-%04d.bin", sdir, rank);
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return;
	mid = lseek(fd, 0, SEEK_END) / 2;
	if (pread(fd, &b, 1, mid) == 1) {
		b ^= 0x5a;
		(void)!pwrite(fd, &b, 1, mid);
	}
	(void)close(fd);
}

/* DP_TEST_FAIL_AT_STEP=K:RANK[:always|:kill|:corrupt] (tests only): global
 * rank RANK fails (exit 70) before step K of the first attempt
 * (DP_CKPT_RESUME unset), or of every attempt with ":always"; after the
 * checkpoint of step K is complete when one is due, so that the resume point
 * is certain.  ":kill" is ":always" with the rank killing itself with
 * SIGKILL instead (as the OOM killer would: a node failure to the
 * controller, where an exit code is the job's).  With ":corrupt" it first
 * damages its file of that checkpoint (with dp > 1 the one it loads,
 * replica 0's), so a restart must fall back to the one before.  1: fail
 * now. */
static int test_fail_now(const struct dp_ckpt_cfg *ck, const struct dp_exec_cfg *xc, uint32_t rank,
			 long k, long total)
{
	const char *s = getenv("DP_TEST_FAIL_AT_STEP");
	char buf[64], *colon, *always;
	long at, who;

	if (!s || !*s || snprintf(buf, sizeof(buf), "%s", s) >= (int)sizeof(buf) ||
	    !(colon = strchr(buf, ':')))
		return 0;
	*colon = '\0';
	always = strchr(colon + 1, ':');
	if (always)
		*always++ = '\0';
	if ((ck->resume &&
	     !(always && (strcmp(always, "always") == 0 || strcmp(always, "kill") == 0))) ||
	    dp_parse_long(buf, 0, LONG_MAX, &at, "step", NULL) ||
	    dp_parse_long(colon + 1, 0, LONG_MAX, &who, "rank", NULL) || at != k ||
	    (uint32_t)who != rank)
		return 0;
	if (ck->dir && *ck->dir && k > 0 && ((ck->every > 0 && k % ck->every == 0) || k == total)) {
		double until = now_s() + 20.0;

		while (dp_ckpt_check(ck->dir, k, xc, NULL) != 0 && now_s() < until)
			(void)usleep(10000);
		if (always && strcmp(always, "corrupt") == 0)
			/* the file it would load: replica 0's of its pp and ep rank */
			test_corrupt(ck->dir, k, xc->rank % (xc->pp * (xc->ep > 1 ? xc->ep : 1)));
	}
	if (always && strcmp(always, "kill") == 0)
		(void)raise(SIGKILL);
	return 1;
}

static int train(const struct layout *l, struct dp_ctl_client *cc, struct dp_pp_link **links,
		 FILE *out, struct dp_err *err)
{
	struct dp_exec *ex = NULL;
	struct dp_exec_cfg cfg = l->cfg;
	struct dp_ckpt_cfg ck = { .every = -1, .keep = -1 };
	uint64_t tokens, step_tokens;
	int rc = dp_ckpt_cfg_env(&ck, err);
	long k, start = 0;

	if (rc)
		return rc;
	rc = dp_exec_new(&cfg, links, &ex, err);
	if (rc)
		return rc;
	{
		int slots = 0, er = 0, ep = 1;

		dp_exec_coords(ex, NULL, &er, &ep);
		if (dp_exec_placement(ex, &slots))
			(void)fprintf(out,
				      "rank %d: EPLB placement, %d expert slots per layer (%d "
				      "redundant), %s loads; this rank holds slots %d..%d\n",
				      cfg.rank, slots, cfg.redundant,
				      cfg.expert_load ? "recipe" : "uniform", er * slots / ep,
				      (er + 1) * slots / ep - 1);
	}
	/* every rank scans the same directory and so picks the same step */
	if (ck.resume)
		rc = dp_ckpt_resume(&ck, &cfg, ex, &start, err);
	else if (ck.dir && *ck.dir && cfg.rank == 0)
		ckpt_retire_stale(ck.dir, &cfg);
	if (rc) {
		dp_exec_free(ex);
		return rc;
	}
	if (ck.resume) {
		/* the heartbeat says where we are before the first step ends */
		dp_ctl_client_progress(cc, (uint64_t)start, NAN, NAN, peak_rss());
		(void)fprintf(out, "rank %d: resuming at step %ld\n", cfg.rank, start);
		(void)fflush(out);
	}
	tokens = embedded_tokens(ex, &cfg.model);
	step_tokens = (uint64_t)cfg.micro * (uint64_t)dp_model_cfg_tokens(&cfg.model);
	for (k = start; k < l->steps; k++) {
		struct dp_ctl_step s = { .step = (uint64_t)k, .tokens = tokens };
		double t0 = now_s(), loss = 0;

		if (dp_ctl_client_stopped(cc)) {
			rc = dp_err_set(err, ECANCELED,
					"train: stopped by the controller at step %ld", k);
			break;
		}
		if (test_fail_now(&ck, &cfg, (uint32_t)cfg.rank, k, l->steps)) {
			rc = dp_err_set(err, EIO,
					"train: DP_TEST_FAIL_AT_STEP: failing at step %ld", k);
			break;
		}
		rc = dp_exec_step(ex, k, &loss, err);
		if (rc)
			break;
		{
			char line[256];

			if (dp_exec_rebalance_note(ex, k, line, sizeof(line))) {
				(void)fprintf(out, "rank %d: %s\n", cfg.rank, line);
				(void)fflush(out);
			}
		}
		dp_exec_optimizer_step(ex);
		/* the checkpoint before the STEP frame: a step reported is saved */
		rc = dp_ckpt_maybe_save(&ck, &cfg, ex, k + 1, l->steps, err);
		if (rc < 0)
			break;
		s.loss_share = loss;
		s.seconds = now_s() - t0;
		s.peak_live = (uint32_t)dp_exec_peak_live(ex);
		s.mem_bytes = peak_rss();
		dp_ctl_client_progress(cc, (uint64_t)k + 1, loss,
				       s.seconds > 0 ? (double)step_tokens / s.seconds : NAN,
				       s.mem_bytes);
		rc = dp_ctl_client_step(cc, &s, err);
		if (rc)
			break;
	}
	if (!rc && k > start)
		rc = send_timeline(cc, ex, k - 1, err);
	if (!rc) {
		(void)fprintf(out, "rank %d: %ld steps done, peak %d activations, %.1f MiB\n",
			      cfg.rank, k, dp_exec_peak_live(ex), (double)peak_rss() / 1048576.0);
		(void)fflush(out);
	}
	dp_exec_free(ex);
	return rc;
}

int dp_worker_train_ctl(const struct dp_ctl_client_cfg *ccfg, FILE *out, FILE *err)
{
	struct dp_ctl_client *cc = NULL;
	struct dp_pp_link **links = NULL, **nccl = NULL;
	uint32_t *want = NULL;
	struct layout l;
	struct dp_err e = { 0 };
	struct dp_a2a_comm_cfg a2a;
	char addr[DP_CTL_ADDR_MAX], (*ep_addr)[DP_CTL_ADDR_MAX + 8] = NULL;
	const char **ep_ap = NULL;
	int lfd = -1, port = 0, a2a_lfd = -1, a2a_port = 0, status = EX_SOFTWARE, rc;
	size_t nwant = 0;

	rc = read_layout(&l, &e);
	if (rc) {
		(void)fprintf(err, "dpworker: error: rank %u: %s\n", ccfg->rank, e.msg);
		return rc == -EOPNOTSUPP ? EX_UNAVAILABLE : EX_CONFIG;
	}
	links = calloc((size_t)nranks(&l), sizeof(struct dp_pp_link *));
	want = calloc((size_t)nranks(&l), sizeof(*want));
	ep_addr = calloc((size_t)l.ep, sizeof(*ep_addr));
	ep_ap = calloc((size_t)l.ep, sizeof(*ep_ap));
	if (!links || !want || !ep_addr || !ep_ap) {
		(void)fprintf(err, "dpworker: error: out of memory\n");
		status = EX_OSERR;
		goto out;
	}
	for (int j = 0; j < nranks(&l); j++)
		if (linked(&l, l.cfg.rank, j))
			want[nwant++] = (uint32_t)j;
	lfd = listen_any("PP links", &port, &e);
	if (lfd >= 0 && l.ep > 1 &&
	    (a2a_lfd = listen_any("the EP all-to-all", &a2a_port, &e)) < 0) {
		(void)close(lfd);
		lfd = -1;
	}
	if (lfd < 0 || dp_ctl_client_open(ccfg, &cc, &e) != 0 ||
	    dp_ctl_client_local_addr(cc, addr, sizeof(addr)) != 0 ||
	    dp_ctl_client_endpoint(cc, addr, port, want, nwant, &e) != 0 ||
	    dp_ctl_client_ready(cc, &e) != 0 || dp_ctl_client_wait_start(cc, 0, &e) != 0) {
		(void)fprintf(err, "dpworker: error: rank %u: %s\n", ccfg->rank,
			      e.msg[0] ? e.msg : "cannot read the control connection's address");
		status = EX_UNAVAILABLE;
		goto out;
	}
	(void)fprintf(out,
		      "rank %u: pid %ld, %s dp %ld/%ld pp %d/%d ep %ld/%ld micro %d, %ld steps, PP "
		      "links on %s:%d\n",
		      ccfg->rank, (long)getpid(), dp_sched_algo_name(l.cfg.algo), l.dp_rank, l.dp,
		      l.cfg.rank / (int)(l.ep > 0 ? l.ep : 1) % l.cfg.pp, l.cfg.pp, l.ep_rank, l.ep,
		      l.cfg.micro, l.steps, addr, port);
	(void)fflush(out);
	rc = check_device(&l, &e);
	if (!rc)
		rc = build_mesh(&l, cc, lfd, ccfg->token, links, &e);
	(void)close(lfd);
	lfd = -1;
	if (!rc && l.ep > 1) {
		/* the EP group's a2a on tcp; the comm takes a2a_lfd over */
		rc = ep_exchange(&l, cc, links, addr, a2a_port, ep_addr, &e);
		dp_a2a_comm_cfg_init(&a2a);
		a2a.transport = "tcp";
		a2a.token = ccfg->token; /* the a2a hello is token-checked too */
		for (long j = 0; j < l.ep; j++)
			ep_ap[j] = ep_addr[j];
		a2a.addrs = ep_ap;
		a2a.nodes = (int)l.ep_nodes;
		a2a.ranks_per_node = (int)(l.ep / l.ep_nodes);
		if (!rc) {
			a2a.listen_fd = a2a_lfd;
			a2a_lfd = -1;
		}
		l.cfg.ep_comm = &a2a;
	}
	if (!rc && l.nccl) {
		/* PP traffic over NCCL; the TCP mesh carried the id and now
		 * only tells a dead peer (closed after the NCCL links) */
		nccl = calloc((size_t)nranks(&l), sizeof(struct dp_pp_link *));
		rc = nccl ? dp_pp_nccl_open(nranks(&l), l.cfg.rank, l.cfg.device, links, nccl, &e)
			  : dp_err_set(&e, ENOMEM, "train: out of memory");
	}
	if (!rc)
		rc = train(&l, cc, nccl ? nccl : links, out, &e);
	if (rc == -ECONNRESET || rc == -EPIPE) {
		/* a peer is gone: most likely it failed and we are its cascade.
		 * Give the controller a moment to see that root cause and stop us
		 * before we report a failure of our own that could be taken for it. */
		double until = now_s() + PEER_LOSS_WAIT_S;

		while (!dp_ctl_client_stopped(cc) && now_s() < until)
			(void)usleep(20000);
	}
	if (rc) {
		(void)fprintf(err, "dpworker: error: rank %u: %s\n", ccfg->rank, e.msg);
		status = rc == -ECANCELED || dp_ctl_client_stopped(cc) ? EX_TEMPFAIL : EX_SOFTWARE;
	} else {
		status = EX_OK;
	}
	(void)fflush(out);
	(void)fflush(err);
	(void)dp_ctl_client_done(cc, status, NULL);
out:
	dp_ctl_client_close(cc);
	for (int j = 0; nccl && j < nranks(&l); j++)
		dp_pp_link_close(nccl[j]);
	free(nccl);
	for (int j = 0; links && j < nranks(&l); j++)
		dp_pp_link_close(links[j]);
	free(links);
	free(want);
	free(ep_addr);
	free(ep_ap);
	free(l.loads);
	if (lfd >= 0)
		(void)close(lfd);
	if (a2a_lfd >= 0)
		(void)close(a2a_lfd);
	return status;
}
