/* launcher/cmd_bench.c - `dpctl bench a2a`: naive versus two-hop expert
 * all-to-all between forked local ranks over tcp (or shm), DeepSeek-V3-like
 * routing, optional pacing of inter-node bytes to make that fabric the
 * bottleneck.  Prints per algorithm: dispatch and combine time, algorithm
 * bandwidth, bytes crossing nodes; then the ratios. */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "a2a/dp_a2a.h"
#include "common/dp_util.h"
#include "launcher/cli_int.h"
#include "common/dp_banned.h"

enum {
	O_NODES = 256,
	O_RPN,
	O_TOKENS,
	O_HIDDEN,
	O_EXPERTS,
	O_GROUPS,
	O_MAXN,
	O_TOPK,
	O_ITERS,
	O_TP,
	O_MBPS,
	O_JSON,
	O_NODE,
	O_PEERS,
	O_COUNTS,
	O_INTRA,
	O_CHUNK
};

static const struct option opts[] = {
	{ "nodes", required_argument, NULL, O_NODES },
	{ "ranks-per-node", required_argument, NULL, O_RPN },
	{ "tokens", required_argument, NULL, O_TOKENS },
	{ "hidden", required_argument, NULL, O_HIDDEN },
	{ "experts", required_argument, NULL, O_EXPERTS },
	{ "groups", required_argument, NULL, O_GROUPS },
	{ "max-nodes", required_argument, NULL, O_MAXN },
	{ "topk", required_argument, NULL, O_TOPK },
	{ "iters", required_argument, NULL, O_ITERS },
	{ "transport", required_argument, NULL, O_TP },
	{ "inter-mbps", required_argument, NULL, O_MBPS },
	{ "json", no_argument, NULL, O_JSON },
	{ "node", required_argument, NULL, O_NODE },
	{ "peers", required_argument, NULL, O_PEERS },
	{ "counts", required_argument, NULL, O_COUNTS },
	{ "intra-node", required_argument, NULL, O_INTRA },
	{ "chunk-bytes", required_argument, NULL, O_CHUNK },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

struct bcfg {
	long nodes, rpn, tokens, hidden, experts, groups, maxn, topk, iters;
	double mbps;
	const char *tp;
	long node;	    /* -1: every node here; else only this node's ranks */
	const char *peers;  /* "host:port,..." one per rank, or NULL: loopback */
	const char *counts; /* file for the per-pair token counts, or NULL */
	int intra_shm;	    /* tcp: shm rings between the ranks of a node */
	long chunk;	    /* two-hop chunk bytes, 0: the library default */
};

#define MAX_ITERS 50

struct bres {
	int rc;
	char msg[DP_ERR_MSG_MAX];
	double disp_ms[2][MAX_ITERS], comb_ms[2][MAX_ITERS];
	double cpu_ms[2]; /* this rank's CPU time in dispatch + combine, all iterations */
	struct dp_a2a_stats st[2];
	uint64_t pairs_node, pairs_rank;
};

static uint32_t lcg(uint32_t *s)
{
	*s = *s * 1664525u + 1013904223u;
	return *s >> 8;
}

/* CPU time of this process (user + system), ms. */
static double cpu_now_ms(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru))
		return 0;
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

static double now_ms(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* A collective with no tokens: every rank hears from every rank. */
static int barrier(struct dp_a2a_comm *c, struct dp_err *err)
{
	struct dp_a2a_plan *p = NULL;
	int rc = dp_a2a_plan_build(c, DP_A2A_NAIVE, 0, 1, NULL, NULL, &p, err);

	dp_a2a_plan_free(p);
	return rc;
}

/* Rank @rank's gate scores, routing and tokens, the same in every process
 * (the seed depends only on the rank).  @x may be NULL. */
static int gen_route(const struct bcfg *b, int rank, int32_t *idx, float *w, float *x,
		     struct dp_err *err)
{
	struct dp_a2a_route_cfg rc_cfg = {
		(int)b->experts, (int)b->groups, (int)b->maxn, (int)b->topk, 2, 1
	};
	size_t T = (size_t)b->tokens, H = (size_t)b->hidden;
	float *scores = malloc(T * (size_t)b->experts * sizeof(float) + 1);
	uint32_t seed = 12345u + (uint32_t)rank * 7919u;
	int rc;

	if (!scores)
		return dp_err_set(err, ENOMEM, "bench: out of memory");
	for (size_t i = 0; i < T * (size_t)b->experts; i++)
		scores[i] = (float)(lcg(&seed) % 100000) / 100000.0f;
	for (size_t i = 0; x && i < T * H; i++)
		x[i] = (float)(lcg(&seed) % 1000) / 1000.0f;
	rc = dp_a2a_route(&rc_cfg, scores, (int)T, idx, w, err);
	free(scores);
	return rc;
}

/* Write the token counts an all-to-all that sends every token once to every
 * rank holding one of its experts (naive, MPI_Alltoallv) moves: a header,
 * then one line per source rank with the count for every destination rank.
 * tests/bench/mpi_a2a.c reads it. */
static int write_counts(const struct bcfg *b, const char *path, struct dp_err *err)
{
	int world = (int)(b->nodes * b->rpn), per = (int)b->experts / world, rc = 0;
	size_t T = (size_t)b->tokens, K = (size_t)b->topk;
	int32_t *idx = calloc(T * K + 1, sizeof(int32_t));
	float *w = malloc(T * K * sizeof(float) + 1);
	uint64_t *row = calloc((size_t)world, sizeof(uint64_t));
	FILE *f = fopen(path, "w");

	if (!idx || !w || !row || !f) {
		rc = dp_err_set(err, f ? ENOMEM : errno, "bench: %s: %s", path,
				f ? "out of memory" : strerror(errno));
		goto out;
	}
	(void)fprintf(f,
		      "dp-a2a-counts 1\nworld %d nodes %ld ranks_per_node %ld token_bytes %llu\n",
		      world, b->nodes, b->rpn, (unsigned long long)b->hidden * sizeof(float));
	for (int r = 0; r < world && !rc; r++) {
		rc = gen_route(b, r, idx, w, NULL, err);
		memset(row, 0, (size_t)world * sizeof(uint64_t));
		for (size_t t = 0; t < T && !rc; t++)
			for (size_t k = 0; k < K; k++) {
				int32_t e = idx[t * K + k];
				size_t j = 0;

				while (j < k && (e < 0 || idx[t * K + j] / per != e / per))
					j++;
				if (e >= 0 && j == k) /* first expert of this token on that rank */
					row[e / per]++;
			}
		for (int j = 0; j < world && !rc; j++)
			(void)fprintf(f, "%llu%c", (unsigned long long)row[j],
				      j + 1 < world ? ' ' : '\n');
	}
out:
	if (f && fclose(f) && !rc)
		rc = dp_err_set(err, errno, "bench: %s: %s", path, strerror(errno));
	free(idx);
	free(w);
	free(row);
	return rc;
}

/* The load on each node's link, both directions, for the whole job (every
 * rank's routing is reproducible here): bytes a node's ranks send to other
 * nodes and receive from them, two-hop (unique (token, remote node)) and
 * naive (unique (token, remote rank)).  *busy[a] = the largest of those
 * per-node figures, i.e. the bytes the busiest link must carry one way;
 * the phase cannot end before that link has moved them.  Combine reverses
 * every transfer, so the same figure bounds it. */
static int link_load(const struct bcfg *b, uint64_t busy[2], int *busy_node, struct dp_err *err)
{
	int world = (int)(b->nodes * b->rpn), per = (int)b->experts / world, rc = 0;
	size_t T = (size_t)b->tokens, K = (size_t)b->topk, N = (size_t)b->nodes;
	uint64_t tb = (uint64_t)b->hidden * sizeof(float);
	int32_t *idx = calloc(T * K + 1, sizeof(int32_t));
	float *w = malloc(T * K * sizeof(float) + 1);
	uint64_t *io = calloc((size_t)4 * N, sizeof(uint64_t)); /* [algo][out, in][node] */
	unsigned char *seen = calloc((size_t)world, 1);

	if (!idx || !w || !io || !seen) {
		rc = dp_err_set(err, ENOMEM, "bench: out of memory");
		goto out;
	}
	for (int r = 0; r < world && !rc; r++) {
		int rn = r / (int)b->rpn;

		rc = gen_route(b, r, idx, w, NULL, err);
		for (size_t t = 0; t < T && !rc; t++) {
			memset(seen, 0, (size_t)world);
			for (size_t k = 0; k < K; k++) {
				int32_t e = idx[t * K + k];
				int dr, dn;

				if (e < 0)
					continue;
				dr = e / per;
				dn = dr / (int)b->rpn;
				if (dn == rn)
					continue;
				/* seen: 1 rank counted (naive), 2 its node counted (two-hop) */
				for (int a = 0; a < 2; a++) {
					int first = 1;

					if (a == 1) {
						for (int q = dn * (int)b->rpn;
						     q < (dn + 1) * (int)b->rpn; q++)
							if (seen[q] & 2)
								first = 0;
					} else if (seen[dr] & 1) {
						first = 0;
					}
					if (!first)
						continue;
					io[(size_t)a * 2 * N + (size_t)rn] += tb;
					io[(size_t)a * 2 * N + N + (size_t)dn] += tb;
				}
				seen[dr] |= 3;
			}
		}
	}
	for (int a = 0; a < 2 && !rc; a++) {
		busy[a] = 0;
		for (size_t i = 0; i < 2 * N; i++)
			if (io[(size_t)a * 2 * N + i] > busy[a]) {
				busy[a] = io[(size_t)a * 2 * N + i];
				if (a == 1)
					*busy_node = (int)(i % N);
			}
	}
out:
	free(idx);
	free(w);
	free(io);
	free(seen);
	return rc;
}

static int bench_rank(const struct bcfg *b, int rank, const char **addrs, int lfd, struct bres *res)
{
	size_t T = (size_t)b->tokens, K = (size_t)b->topk, H = (size_t)b->hidden;
	struct dp_a2a_comm_cfg cfg;
	struct dp_a2a_comm *c = NULL;
	struct dp_err err = { 0 };
	float *w = malloc(T * K * sizeof(float)), *x = malloc(T * H * sizeof(float));
	float *out = malloc(T * H * sizeof(float));
	int32_t *idx = malloc(T * K * sizeof(int32_t));
	char shm[64];
	int rc = -ENOMEM;

	if (!w || !x || !out || !idx)
		goto out;
	rc = gen_route(b, rank, idx, w, x, &err);
	if (rc)
		goto out;
	dp_a2a_count_pairs(rank, (int)b->nodes, (int)b->rpn, (int)b->experts, (int)T, (int)K, idx,
			   &res->pairs_node, &res->pairs_rank);
	dp_a2a_comm_cfg_init(&cfg);
	(void)snprintf(shm, sizeof(shm), "/dp-a2a-bench-%d", (int)getppid());
	cfg.transport = b->tp;
	cfg.rank = rank;
	cfg.nodes = (int)b->nodes;
	cfg.ranks_per_node = (int)b->rpn;
	cfg.experts = (int)b->experts;
	cfg.hidden = (int)b->hidden;
	cfg.timeout_ms = 120000;
	cfg.addrs = addrs;
	cfg.listen_fd = lfd;
	cfg.shm_name = shm;
	cfg.tcp_inter_mbps = b->mbps;
	cfg.tcp_local_shm = b->intra_shm && strcmp(b->tp, "tcp") == 0;
	cfg.chunk_bytes = (size_t)b->chunk;
	rc = dp_a2a_comm_open(&cfg, &c, &err);
	if (rc)
		goto out;
	for (int a = 0; a < 2 && !rc; a++) {
		struct dp_a2a_plan *p = NULL;
		float *rx = NULL, *y = NULL;

		rc = dp_a2a_plan_build(c, a ? DP_A2A_TWO_HOP : DP_A2A_NAIVE, (int)T, (int)K, idx, w,
				       &p, &err);
		if (!rc) {
			const struct dp_a2a_recv *r = dp_a2a_plan_recv(p);
			int n = dp_a2a_plan_recv_count(p);

			rx = malloc(((size_t)n * H + 1) * sizeof(float));
			y = malloc(((size_t)dp_a2a_plan_slot_count(p) * H + 1) * sizeof(float));
			if (!rx || !y)
				rc = -ENOMEM;
			for (int it = -1; it < (int)b->iters && !rc; it++) { /* -1: warm-up */
				double t0, t1, t2, u0, u1, u2;

				rc = barrier(c, &err);
				t0 = now_ms();
				u0 = cpu_now_ms();
				if (!rc)
					rc = dp_a2a_dispatch_issue(p, x, rx, &err);
				if (!rc)
					rc = dp_a2a_dispatch_wait(p, &err);
				t1 = now_ms();
				u1 = cpu_now_ms();
				/* "experts": identity, so y = x for every slot */
				for (int i = 0; i < n && !rc; i++)
					for (int s = 0; s < r[i].nslots; s++)
						memcpy(y + (size_t)(r[i].slot + s) * H,
						       rx + (size_t)i * H, H * sizeof(float));
				if (!rc)
					rc = barrier(c, &err);
				t2 = now_ms();
				u2 = cpu_now_ms();
				if (!rc)
					rc = dp_a2a_combine_issue(p, y, out, &err);
				if (!rc)
					rc = dp_a2a_combine_wait(p, &err);
				if (it >= 0) {
					res->disp_ms[a][it] = t1 - t0;
					res->comb_ms[a][it] = now_ms() - t2;
					res->cpu_ms[a] += (u1 - u0) + (cpu_now_ms() - u2);
				}
			}
			if (!rc) {
				dp_a2a_plan_stats(p, &res->st[a]);
				/* counters add up over iterations: per iteration */
				res->st[a].dispatch_inter /= (uint64_t)b->iters + 1;
				res->st[a].dispatch_intra /= (uint64_t)b->iters + 1;
				res->st[a].combine_inter /= (uint64_t)b->iters + 1;
				res->st[a].combine_intra /= (uint64_t)b->iters + 1;
			}
		}
		free(rx);
		free(y);
		dp_a2a_plan_free(p);
	}
	dp_a2a_comm_close(c);
out:
	if (rc)
		(void)snprintf(res->msg, sizeof(res->msg), "%s",
			       err.msg[0] ? err.msg : strerror(-rc));
	res->rc = rc;
	free(w);
	free(x);
	free(out);
	free(idx);
	return rc;
}

static int parse_opts(struct dp_cli *cli, int argc, char **argv, struct bcfg *b, int *json)
{
	struct dp_err err = { 0 };
	int ch;

	optind = 0;
	while ((ch = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		long *dst = NULL, lo = 1, hi = 1 << 20;
		int rc = 0;

		switch (ch) {
		case 'h':
			return -1;
		case O_NODES:
			dst = &b->nodes;
			hi = 64;
			break;
		case O_RPN:
			dst = &b->rpn;
			hi = 64;
			break;
		case O_TOKENS:
			dst = &b->tokens;
			lo = 0;
			break;
		case O_HIDDEN:
			dst = &b->hidden;
			hi = 65536;
			break;
		case O_EXPERTS:
			dst = &b->experts;
			hi = 4096;
			break;
		case O_GROUPS:
			dst = &b->groups;
			hi = 4096;
			break;
		case O_MAXN:
			dst = &b->maxn;
			hi = 4096;
			break;
		case O_TOPK:
			dst = &b->topk;
			hi = DP_A2A_MAX_TOPK;
			break;
		case O_ITERS:
			dst = &b->iters;
			hi = MAX_ITERS;
			break;
		case O_TP:
			b->tp = optarg;
			break;
		case O_MBPS:
			rc = dp_parse_double(optarg, 0, 1e7, &b->mbps, "--inter-mbps", &err);
			break;
		case O_JSON:
			*json = 1;
			break;
		case O_NODE:
			rc = dp_parse_long(optarg, 0, 63, &b->node, "--node", &err);
			break;
		case O_PEERS:
			b->peers = optarg;
			break;
		case O_COUNTS:
			b->counts = optarg;
			break;
		case O_INTRA:
			if (strcmp(optarg, "shm") != 0 && strcmp(optarg, "tcp") != 0)
				return dp_cli_usage_error(cli, "bench",
							  "--intra-node must be shm or tcp");
			b->intra_shm = strcmp(optarg, "shm") == 0;
			break;
		case O_CHUNK:
			rc = dp_parse_long(optarg, 1, 1L << 30, &b->chunk, "--chunk-bytes", &err);
			break;
		default:
			return dp_cli_bad_option(cli, "bench", argc, argv);
		}
		if (dst)
			rc = dp_parse_long(optarg, lo, hi, dst, opts[ch - O_NODES].name, &err);
		if (rc)
			return dp_cli_usage_error(cli, "bench", "%s", err.msg);
	}
	return 0;
}

static double mean(const double *v, long n)
{
	double s = 0;

	for (long i = 0; i < n; i++)
		s += v[i];
	return n ? s / (double)n : 0;
}

/* Split "host:port,host:port,..." into exactly @world malloc'd strings. */
static int parse_peers(struct dp_cli *cli, const char *list, int world, const char **addrs)
{
	const char *p = list;

	for (int i = 0; i < world; i++) {
		const char *e = strchr(p, ',');
		size_t n = e ? (size_t)(e - p) : strlen(p);
		char *s;

		if (n == 0 || !memchr(p, ':', n) || (i + 1 < world) != (e != NULL))
			return dp_cli_usage_error(cli, "bench",
						  "--peers needs %d host:port entries", world);
		s = malloc(n + 1);
		if (!s)
			return dp_cli_error(cli, EX_OSERR, "bench: out of memory");
		memcpy(s, p, n);
		s[n] = '\0';
		addrs[i] = s;
		p = e ? e + 1 : p + n;
	}
	return 0;
}

static int bench_a2a(struct dp_cli *cli, int argc, char **argv)
{
	struct bcfg b = { 2, 4, 1024, 1024, 256, 8, 4, 8, 3, 0, "tcp", -1, NULL, NULL, 1, 0 };
	int json = cli->json, world, rc, failed = 0, r0, r1;
	struct bres *res;
	const char **addrs;
	int *lfds;
	pid_t *pids;
	double disp[2] = { 0, 0 }, comb[2] = { 0, 0 }, cpu[2] = { 0, 0 };
	uint64_t inter[2] = { 0, 0 }, intra[2] = { 0, 0 }, pn = 0, pr = 0, tb, busy[2] = { 0, 0 };
	int busy_node = 0;
	static const char *const names[2] = { "naive", "two-hop" };

	rc = parse_opts(cli, argc, argv, &b, &json);
	if (rc < 0)
		return dp_cli_help(cli, &dp_cmd_bench);
	if (rc)
		return rc;
	world = (int)(b.nodes * b.rpn);
	if (b.experts % world || b.experts % b.groups)
		return dp_cli_usage_error(cli, "bench",
					  "--experts must divide over ranks and --groups");
	if (b.node >= b.nodes)
		return dp_cli_usage_error(cli, "bench", "--node must be below --nodes");
	if ((b.node >= 0) != (b.peers != NULL))
		return dp_cli_usage_error(cli, "bench", "--node and --peers go together");
	if (b.peers && strcmp(b.tp, "tcp") != 0)
		return dp_cli_usage_error(cli, "bench", "--peers needs --transport tcp");
	r0 = b.node >= 0 ? (int)(b.node * b.rpn) : 0; /* the ranks run here */
	r1 = b.node >= 0 ? (int)((b.node + 1) * b.rpn) : world;
	if (b.counts) {
		struct dp_err err = { 0 };

		if (write_counts(&b, b.counts, &err))
			return dp_cli_error(cli, EX_CANTCREAT, "%s", err.msg);
	}
	res = mmap(NULL, sizeof(*res) * (size_t)world, PROT_READ | PROT_WRITE,
		   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	addrs = calloc((size_t)world, sizeof(*addrs));
	lfds = calloc((size_t)world, sizeof(*lfds));
	pids = calloc((size_t)world, sizeof(*pids));
	if (res == MAP_FAILED || !addrs || !lfds || !pids) {
		rc = dp_cli_error(cli, EX_OSERR, "bench: out of memory");
		goto out;
	}
	memset(res, 0, sizeof(*res) * (size_t)world);
	for (int i = 0; i < world; i++)
		lfds[i] = -1;
	if (b.peers) {
		rc = parse_peers(cli, b.peers, world, addrs);
		if (rc)
			goto out;
	}
	for (int i = 0; i < world && !b.peers; i++) { /* listeners first: no port races */
		struct sockaddr_in a = { .sin_family = AF_INET };
		socklen_t al = sizeof(a);
		char *s = malloc(32);

		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		lfds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (!s || lfds[i] < 0 || bind(lfds[i], (struct sockaddr *)&a, sizeof(a)) ||
		    listen(lfds[i], 128) || getsockname(lfds[i], (struct sockaddr *)&a, &al)) {
			free(s);
			rc = dp_cli_error(cli, EX_OSERR, "bench: cannot listen on 127.0.0.1: %s",
					  strerror(errno));
			goto out;
		}
		(void)snprintf(s, 32, "127.0.0.1:%d", ntohs(a.sin_port));
		addrs[i] = s;
	}
	(void)fflush(cli->out);
	(void)fflush(cli->err);
	for (int i = r0; i < r1; i++) {
		pids[i] = fork();
		if (pids[i] < 0) {
			rc = dp_cli_error(cli, EX_OSERR, "bench: fork: %s", strerror(errno));
			goto out;
		}
		if (pids[i] == 0) {
			for (int j = 0; j < world; j++)
				if (j != i && lfds[j] >= 0)
					(void)close(lfds[j]);
			_exit(bench_rank(&b, i, addrs, lfds[i], &res[i]) ? 1 : 0);
		}
	}
	for (int i = r0; i < r1; i++) {
		int st = 0;

		(void)waitpid(pids[i], &st, 0);
		pids[i] = 0;
		if (!WIFEXITED(st) || WEXITSTATUS(st) || res[i].rc) {
			if (!failed)
				(void)dp_cli_error(cli, EX_SOFTWARE, "bench: rank %d: %s", i,
						   res[i].msg[0] ? res[i].msg : "died");
			failed = 1;
		}
	}
	if (failed) {
		rc = EX_SOFTWARE;
		goto out;
	}
	tb = (uint64_t)b.hidden * sizeof(float);
	for (int a = 0; a < 2; a++) {
		for (long it = 0; it < b.iters; it++) { /* slowest rank per iteration */
			double d = 0, c = 0;

			for (int i = r0; i < r1; i++) {
				if (res[i].disp_ms[a][it] > d)
					d = res[i].disp_ms[a][it];
				if (res[i].comb_ms[a][it] > c)
					c = res[i].comb_ms[a][it];
			}
			res[r0].disp_ms[a][it] = d;
			res[r0].comb_ms[a][it] = c;
		}
		disp[a] = mean(res[r0].disp_ms[a], b.iters);
		comb[a] = mean(res[r0].comb_ms[a], b.iters);
		for (int i = r0; i < r1; i++) {
			inter[a] += res[i].st[a].dispatch_inter;
			intra[a] += res[i].st[a].dispatch_intra;
			cpu[a] += res[i].cpu_ms[a] / (double)b.iters;
		}
	}
	for (int i = r0; i < r1; i++) {
		pn += res[i].pairs_node;
		pr += res[i].pairs_rank;
	}
	{
		struct dp_err err = { 0 };

		if (link_load(&b, busy, &busy_node, &err)) {
			rc = dp_cli_error(cli, EX_OSERR, "%s", err.msg);
			goto out;
		}
	}
	if (json) {
		(void)fprintf(
			cli->out,
			"{\"transport\":\"%s\",\"nodes\":%ld,\"ranks_per_node\":%ld,\"tokens\":%ld,"
			"\"hidden\":%ld,\"experts\":%ld,\"groups\":%ld,\"max_nodes\":%ld,\"topk\":%ld,"
			"\"iters\":%ld,\"inter_mbps\":%g,\"node\":%ld,\"token_bytes\":%llu,"
			"\"formula\":{\"token_remote_node\":%llu,\"token_remote_rank\":%llu},"
			"\"busiest_link\":{\"node\":%d,\"two_hop_bytes\":%llu,\"naive_bytes\":%llu},",
			b.tp, b.nodes, b.rpn, b.tokens, b.hidden, b.experts, b.groups, b.maxn,
			b.topk, b.iters, b.mbps, b.node, (unsigned long long)tb,
			(unsigned long long)pn, (unsigned long long)pr, busy_node,
			(unsigned long long)busy[1], (unsigned long long)busy[0]);
		for (int a = 0; a < 2; a++)
			(void)fprintf(cli->out,
				      "\"%s\":{\"dispatch_ms\":%.3f,\"combine_ms\":%.3f,"
				      "\"inter_bytes\":%llu,\"intra_bytes\":%llu,\"cpu_ms\":%.3f},",
				      a ? "two_hop" : "naive", disp[a], comb[a],
				      (unsigned long long)inter[a], (unsigned long long)intra[a],
				      cpu[a]);
		(void)fprintf(cli->out, "\"inter_bytes_ratio\":%.3f,\"time_ratio\":%.3f}\n",
			      inter[1] ? (double)inter[0] / (double)inter[1] : 0.0,
			      disp[1] + comb[1] > 0 ? (disp[0] + comb[0]) / (disp[1] + comb[1])
						    : 0.0);
	} else {
		(void)fprintf(
			cli->out,
			"a2a: %s%s, %ld nodes x %ld ranks, %ld tokens/rank, hidden %ld (%llu B/token), "
			"%ld experts, %ld groups, top-%ld, <= %ld nodes/token, inter-node %s%g Mbit/s, "
			"%ld iters\n",
			b.tp, b.intra_shm && strcmp(b.tp, "tcp") == 0 ? " (shm inside a node)" : "",
			b.nodes, b.rpn, b.tokens, b.hidden, (unsigned long long)tb, b.experts,
			b.groups, b.topk, b.maxn, b.mbps > 0 ? "" : "unpaced ", b.mbps, b.iters);
		if (b.node >= 0)
			(void)fprintf(cli->out,
				      "node %ld: ranks %d..%d only (times: slowest of them)\n",
				      b.node, r0, r1 - 1);
		(void)fprintf(cli->out, "%-8s %12s %12s %14s %14s %12s %10s\n", "algo",
			      "dispatch_ms", "combine_ms", "inter_MB", "intra_MB", "disp_GB/s",
			      "cpu_ms");
		for (int a = 0; a < 2; a++)
			(void)fprintf(cli->out, "%-8s %12.2f %12.2f %14.2f %14.2f %12.3f %10.1f\n",
				      names[a], disp[a], comb[a], (double)inter[a] / 1e6,
				      (double)intra[a] / 1e6,
				      disp[a] > 0 ? (double)(inter[a] + intra[a]) / 1e6 / disp[a]
						  : 0.0,
				      cpu[a]);
		(void)fprintf(
			cli->out,
			"formula: two-hop %llu (token, remote node) x %llu B = %.2f MB; naive %llu "
			"(token, remote rank) x %llu B = %.2f MB\n",
			(unsigned long long)pn, (unsigned long long)tb, (double)(pn * tb) / 1e6,
			(unsigned long long)pr, (unsigned long long)tb, (double)(pr * tb) / 1e6);
		(void)fprintf(
			cli->out,
			"links: the busiest node link (node %d) carries two-hop %.2f MB one way, "
			"naive %.2f MB (whole job; every node's link: %.2f / %.2f MB on average)\n",
			busy_node, (double)busy[1] / 1e6, (double)busy[0] / 1e6,
			(double)(pn * tb) / 1e6 / (double)b.nodes,
			(double)(pr * tb) / 1e6 / (double)b.nodes);
		(void)fprintf(cli->out, "ratio naive/two-hop: inter-node bytes %.2fx, time %.2fx\n",
			      inter[1] ? (double)inter[0] / (double)inter[1] : 0.0,
			      disp[1] + comb[1] > 0 ? (disp[0] + comb[0]) / (disp[1] + comb[1])
						    : 0.0);
	}
	rc = (inter[1] == pn * tb && inter[0] == pr * tb)
		     ? EX_OK
		     : dp_cli_error(cli, EX_SOFTWARE,
				    "bench: inter-node bytes differ from the formula");
out:
	for (int i = 0; pids && i < world; i++)
		if (pids[i] > 0) {
			(void)kill(pids[i], SIGKILL);
			(void)waitpid(pids[i], NULL, 0);
		}
	for (int i = 0; addrs && lfds && i < world; i++) {
		if (lfds[i] >= 0)
			(void)close(lfds[i]);
		free((void *)addrs[i]);
	}
	free(addrs);
	free(lfds);
	free(pids);
	if (res != MAP_FAILED)
		(void)munmap(res, sizeof(*res) * (size_t)world);
	return rc;
}

static int cmd_bench(struct dp_cli *cli, int argc, char **argv)
{
	if (argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0))
		return dp_cli_help(cli, &dp_cmd_bench);
	if (argc < 2)
		return dp_cli_usage_error(cli, "bench", "which benchmark? (a2a)");
	if (strcmp(argv[1], "a2a") == 0)
		return bench_a2a(cli, argc - 1, argv + 1);
	return dp_cli_usage_error(cli, "bench", "unknown benchmark '%s'", argv[1]);
}

const struct dp_cli_cmd dp_cmd_bench = {
	.name = "bench",
	.fn = cmd_bench,
	.opts = opts,
	.summary = "run micro-benchmarks (all-to-all, pipeline, launch)",
	.usage = "usage: dpctl bench a2a [options]\n"
		 "\n"
		 "Naive versus two-hop (DeepEP) expert all-to-all between forked local ranks.\n"
		 "\n"
		 "Options:\n"
		 "  --nodes N          nodes (default 2)\n"
		 "  --ranks-per-node R ranks per node (default 4)\n"
		 "  --tokens T         tokens per rank (default 1024)\n"
		 "  --hidden H         floats per token (default 1024)\n"
		 "  --experts E        experts (default 256)\n"
		 "  --groups G         expert groups (default 8)\n"
		 "  --max-nodes M      groups a token may use (default 4)\n"
		 "  --topk K           experts per token (default 8)\n"
		 "  --iters I          timed iterations after one warm-up (default 3)\n"
		 "  --transport NAME   tcp (default) or shm\n"
		 "  --intra-node KIND  tcp: shm (default) or tcp between the ranks of a node\n"
		 "  --chunk-bytes B    two-hop pipelining chunk (default: the library's, 128 KiB)\n"
		 "  --inter-mbps X     pace each rank's inter-node bytes to X Mbit/s (tcp)\n"
		 "  --node I           run only node I's ranks (0-based; needs --peers)\n"
		 "  --peers LIST       host:port of every rank, comma-separated (tcp)\n"
		 "  --counts FILE      write the per-rank-pair token counts (for MPI_Alltoallv)\n"
		 "  --json             print JSON\n"
		 "  -h, --help         print this help\n",
};
