/* worker/cmd_train.c - `dpworker --train-local` (fork the dp x pp x ep
 * ranks over socketpairs and print the step loss) and `dpworker
 * --train` (one rank, TCP links to its peers).  With --ep the EP groups use
 * the a2a shm transport (local) or tcp on each peer's port + 1.  Checkpoints:
 * --ckpt-dir, --ckpt-every, --ckpt-keep, --resume or
 * DP_CKPT_DIR/DP_CKPT_EVERY/DP_CKPT_KEEP/DP_CKPT_RESUME.
 * docs/executor.md. */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "a2a/dp_eplb.h"
#include "common/dp_log.h"
#include "common/dp_util.h"
#include "worker/dp_ckpt.h"
#include "worker/dp_dev.h"
#include "worker/dp_exec.h"
#include "worker/dp_worker.h"

struct train_opts {
	struct dp_exec_cfg cfg;
	long steps;
	int local;
	int timing;  /* --timing: each rank prints its op times at the end */
	double mbps; /* --ep-mbps: local EP groups on tcp, one rank per "node", paced */
	int help;
	char *peers;		/* borrowed from argv */
	const char *loads_path; /* --expert-loads, borrowed from argv */
	float *loads;		/* its loads (owned): cfg.expert_load */
	struct dp_ckpt_cfg ck;
};

static const char train_usage[] =
	"usage: dpworker --train-local [options]\n"
	"       dpworker --train --rank R --peers h0:p0,h1:p1,... [options]\n"
	"\n"
	"Train the demo MoE model with a pipeline schedule (docs/executor.md).\n"
	"\n"
	"Options:\n"
	"  --algo A          dualpipe (default), dualpipev, 1f1b, zb1p\n"
	"  --pp N            pipeline ranks (default 2)\n"
	"  --ep N            expert-parallel ranks per stage (default 1)\n"
	"  --dp N            data-parallel replicas of the pipeline (default 1);\n"
	"                    a step has micro x ep x dp micro-batches\n"
	"  --micro M         micro-batches per step (default 4)\n"
	"  --steps S         train until S steps are done (default 30)\n"
	"  --seed S          parameters and data (default 1)\n"
	"  --layers L        MoE layers of the model (default 4)\n"
	"  --rank R          --train: this rank\n"
	"  --peers LIST      --train: every rank's host:port, rank order\n"
	"  --redundant N     --ep > 1: N extra expert slots per layer, placed by EPLB\n"
	"                    (experts + N a multiple of --ep; busy experts get\n"
	"                    replicas; $DP_REDUNDANT_EXPERTS under dpctl launch)\n"
	"  --expert-loads F  --ep > 1: the per-layer expert loads EPLB balances, a\n"
	"                    `dpctl eplb --loads` file with one row per layer\n"
	"                    (default: uniform)\n"
	"  --rebalance-every N\n"
	"                    with --redundant or --expert-loads: re-place the experts\n"
	"                    every N steps from the loads routed in them (default 0:\n"
	"                    never; $DP_EPLB_REBALANCE_EVERY under dpctl launch)\n"
	"  --no-overlap      no F&B overlap of compute and all-to-all\n"
	"  --timing          each rank prints its mean op times at the end\n"
	"  --ep-mbps M       --train-local: EP all-to-all over tcp paced to M Mbit/s\n"
	"  --backend B       model backend: cpu (default), emu (the device code on a\n"
	"                    host emulator), cuda (GPUs; docs/model.md)\n"
	"  --device N        --backend cuda: the GPU (default 0; the ranks of\n"
	"                    --train-local share it)\n"
	"  --ckpt-dir DIR    write checkpoints to DIR/step-N/ (default: $DP_CKPT_DIR)\n"
	"  --ckpt-every N    a checkpoint every N steps, and one after the last\n"
	"                    (default: $DP_CKPT_EVERY, else only after the last)\n"
	"  --ckpt-keep K     after each save keep the newest K complete checkpoints\n"
	"                    and remove older step directories (default: $DP_CKPT_KEEP,\n"
	"                    else 0: keep all)\n"
	"  --resume          continue from the newest complete checkpoint in DIR\n"
	"                    (or start at step 0 if there is none; $DP_CKPT_RESUME=1)\n"
	"  -h, --help        print this help\n";

enum {
	O_LOCAL = 256,
	O_TRAIN,
	O_ALGO,
	O_PP,
	O_MICRO,
	O_RANK,
	O_STEPS,
	O_SEED,
	O_PEERS,
	O_LAYERS,
	O_EP,
	O_NO_OVERLAP,
	O_TIMING,
	O_EP_MBPS,
	O_CKPT_DIR,
	O_CKPT_EVERY,
	O_CKPT_KEEP,
	O_RESUME,
	O_DP,
	O_BACKEND,
	O_DEVICE,
	O_REDUNDANT,
	O_LOADS,
	O_REBALANCE,
};

static const struct option train_opts_tab[] = {
	{ "train-local", no_argument, NULL, O_LOCAL },
	{ "train", no_argument, NULL, O_TRAIN },
	{ "algo", required_argument, NULL, O_ALGO },
	{ "pp", required_argument, NULL, O_PP },
	{ "micro", required_argument, NULL, O_MICRO },
	{ "rank", required_argument, NULL, O_RANK },
	{ "steps", required_argument, NULL, O_STEPS },
	{ "seed", required_argument, NULL, O_SEED },
	{ "layers", required_argument, NULL, O_LAYERS },
	{ "peers", required_argument, NULL, O_PEERS },
	{ "ep", required_argument, NULL, O_EP },
	{ "dp", required_argument, NULL, O_DP },
	{ "no-overlap", no_argument, NULL, O_NO_OVERLAP },
	{ "timing", no_argument, NULL, O_TIMING },
	{ "ep-mbps", required_argument, NULL, O_EP_MBPS },
	{ "backend", required_argument, NULL, O_BACKEND },
	{ "device", required_argument, NULL, O_DEVICE },
	{ "redundant", required_argument, NULL, O_REDUNDANT },
	{ "expert-loads", required_argument, NULL, O_LOADS },
	{ "rebalance-every", required_argument, NULL, O_REBALANCE },
	{ "ckpt-dir", required_argument, NULL, O_CKPT_DIR },
	{ "ckpt-every", required_argument, NULL, O_CKPT_EVERY },
	{ "ckpt-keep", required_argument, NULL, O_CKPT_KEEP },
	{ "resume", no_argument, NULL, O_RESUME },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* --expert-loads: one row of experts loads per layer of the model. */
static int read_loads(struct train_opts *o, struct dp_err *e)
{
	int rows = 0, cols = 0;

	if (o->cfg.ep < 2)
		return dp_err_set(e, EINVAL, "--expert-loads needs --ep 2 or more");
	if (dp_eplb_loads_read(o->loads_path, &o->loads, &rows, &cols, e))
		return dp_err_prefix(e, "--expert-loads");
	o->cfg.expert_load = o->loads;
	if (rows != o->cfg.model.layers || cols != o->cfg.model.experts)
		return dp_err_set(e, EINVAL,
				  "--expert-loads: '%s' has %d x %d loads, the model %d layers x "
				  "%d experts",
				  o->loads_path, rows, cols, o->cfg.model.layers,
				  o->cfg.model.experts);
	return 0;
}

static int parse(int argc, char **argv, struct train_opts *o, struct dp_err *e)
{
	long v;
	int c, rc;

	memset(o, 0, sizeof(*o));
	dp_model_cfg_default(&o->cfg.model);
	/* the model of a recipe run, as `dpctl launch` passes it to its ranks */
	if (getenv("DP_MODEL") && dp_worker_model_parse(getenv("DP_MODEL"), &o->cfg.model, e))
		return -EINVAL;
	o->cfg.algo = DP_SCHED_DUALPIPE;
	o->cfg.pp = 2;
	o->cfg.micro = 4;
	o->cfg.ep = 1;
	o->cfg.dp = 1;
	o->cfg.overlap = 1;
	o->steps = 30;
	o->ck.every = -1;
	o->ck.keep = -1;
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", train_opts_tab, NULL)) != -1) {
		switch (c) {
		case O_LOCAL:
			o->local = 1;
			break;
		case O_TRAIN:
			break;
		case O_ALGO:
			if (dp_sched_algo_parse(optarg, &o->cfg.algo, e))
				return -EINVAL;
			break;
		case O_PP:
			if (dp_parse_long(optarg, 1, 64, &v, "--pp", e))
				return -EINVAL;
			o->cfg.pp = (int)v;
			break;
		case O_MICRO:
			if (dp_parse_long(optarg, 1, 4096, &v, "--micro", e))
				return -EINVAL;
			o->cfg.micro = (int)v;
			break;
		case O_RANK:
			if (dp_parse_long(optarg, 0, 4095, &v, "--rank", e))
				return -EINVAL;
			o->cfg.rank = (int)v;
			break;
		case O_STEPS:
			if (dp_parse_long(optarg, 1, 1000000, &o->steps, "--steps", e))
				return -EINVAL;
			break;
		case O_SEED:
			if (dp_parse_long(optarg, 0, 0x7fffffffL, &v, "--seed", e))
				return -EINVAL;
			o->cfg.model.seed = (uint64_t)v;
			break;
		case O_LAYERS:
			if (dp_parse_long(optarg, 1, 256, &v, "--layers", e))
				return -EINVAL;
			o->cfg.model.layers = (int)v;
			break;
		case O_PEERS:
			o->peers = optarg;
			break;
		case O_EP:
			if (dp_parse_long(optarg, 1, 64, &v, "--ep", e))
				return -EINVAL;
			o->cfg.ep = (int)v;
			break;
		case O_DP:
			if (dp_parse_long(optarg, 1, 64, &v, "--dp", e))
				return -EINVAL;
			o->cfg.dp = (int)v;
			break;
		case O_NO_OVERLAP:
			o->cfg.overlap = 0;
			break;
		case O_TIMING:
			o->timing = 1;
			break;
		case O_EP_MBPS:
			if (dp_parse_double(optarg, 0.001, 1e6, &o->mbps, "--ep-mbps", e))
				return -EINVAL;
			break;
		case O_CKPT_DIR:
			o->ck.dir = optarg;
			break;
		case O_CKPT_EVERY:
			if (dp_parse_long(optarg, 0, 1000000000L, &o->ck.every, "--ckpt-every", e))
				return -EINVAL;
			break;
		case O_CKPT_KEEP:
			if (dp_parse_long(optarg, 0, 1000000000L, &o->ck.keep, "--ckpt-keep", e))
				return -EINVAL;
			break;
		case O_RESUME:
			o->ck.resume = 1;
			break;
		case O_BACKEND:
			if (dp_dev_backend_check(optarg, e))
				return dp_err_prefix(e, "--backend");
			o->cfg.backend = optarg;
			break;
		case O_DEVICE:
			if (dp_parse_long(optarg, 0, 1023, &v, "--device", e))
				return -EINVAL;
			o->cfg.device = (int)v;
			break;
		case O_REDUNDANT:
			if (dp_parse_long(optarg, 0, 4096, &v, "--redundant", e))
				return -EINVAL;
			o->cfg.redundant = (int)v;
			break;
		case O_LOADS:
			o->loads_path = optarg;
			break;
		case O_REBALANCE:
			if (dp_parse_long(optarg, 0, 1000000000L, &v, "--rebalance-every", e))
				return -EINVAL;
			o->cfg.rebalance_every = (int)v;
			break;
		case 'h':
			o->help = 1;
			return 0;
		default:
			return dp_err_set(e, EINVAL, "option '%s' is unknown or needs a value",
					  argv[optind - 1]);
		}
	}
	if (optind < argc)
		return dp_err_set(e, EINVAL, "unexpected argument '%s'", argv[optind]);
	if (dp_ckpt_cfg_env(&o->ck, e))
		return -EINVAL;
	if (o->cfg.pp * o->cfg.ep * o->cfg.dp > 4096)
		return dp_err_set(e, EINVAL, "--dp %d x --pp %d x --ep %d is more than 4096 ranks",
				  o->cfg.dp, o->cfg.pp, o->cfg.ep);
	if (o->cfg.rank >= o->cfg.pp * o->cfg.ep * o->cfg.dp)
		return dp_err_set(e, EINVAL, "--rank %d needs --dp x --pp x --ep > %d", o->cfg.rank,
				  o->cfg.rank);
	if (!o->local && !o->peers && o->cfg.pp * o->cfg.ep * o->cfg.dp > 1)
		return dp_err_set(e, EINVAL, "--train needs --peers host:port,... (one per rank)");
	if (o->cfg.redundant && o->cfg.ep < 2)
		return dp_err_set(e, EINVAL, "--redundant %d needs --ep 2 or more",
				  o->cfg.redundant);
	if (o->loads_path && (rc = read_loads(o, e)))
		return rc;
	if (o->cfg.rebalance_every && (o->cfg.ep < 2 || (!o->cfg.redundant && !o->loads_path)))
		return dp_err_set(e, EINVAL,
				  "--rebalance-every %d needs --ep 2 or more and --redundant or "
				  "--expert-loads (an EPLB placement)",
				  o->cfg.rebalance_every);
	return 0;
}

/* A re-placement after step @k: the rank's line on @err. */
static void note_rebalance(const struct dp_exec *ex, int rank, long k, FILE *err)
{
	char line[256];

	if (dp_exec_rebalance_note(ex, k, line, sizeof(line))) {
		(void)fprintf(err, "dpworker: rank %d: %s\n", rank, line);
		(void)fflush(err);
	}
}

/* --timing: "rank r times: F n ms B n ms ... F&B n ms overlapped n" (mean
 * milliseconds per op of each kind over the whole run). */
static void print_times(const struct dp_exec *ex, int rank, FILE *out)
{
	struct dp_exec_times t;

	dp_exec_times(ex, &t);
	(void)fprintf(out,
		      "rank %d times: F %ld %.3f B %ld %.3f I %ld %.3f W %ld %.3f F&B %ld %.3f "
		      "overlapped %ld\n",
		      rank, t.n_f, t.n_f ? 1e3 * t.f / (double)t.n_f : 0.0, t.n_b,
		      t.n_b ? 1e3 * t.b / (double)t.n_b : 0.0, t.n_i,
		      t.n_i ? 1e3 * t.i / (double)t.n_i : 0.0, t.n_w,
		      t.n_w ? 1e3 * t.w / (double)t.n_w : 0.0, t.n_fb,
		      t.n_fb ? 1e3 * t.fb / (double)t.n_fb : 0.0, t.n_overlapped);
	(void)fflush(out);
}

/* Exit code of a failed rank: no device or no CUDA build is "unavailable". */
static int fail_code(int rc)
{
	return rc == -ENODEV || rc == -ENOSYS ? EX_UNAVAILABLE : EX_SOFTWARE;
}

/* One rank of the local run: load checkpoint @start if > 0 (the parent
 * chose it), run steps @start.. @steps - 1 with checkpoints as @ck says,
 * and write each step's local loss share to @res_fd. */
static int rank_main(const struct dp_exec_cfg *cfg, struct dp_pp_link **links,
		     const struct dp_ckpt_cfg *ck, long start, long steps, int res_fd, FILE *err,
		     FILE *times)
{
	struct dp_err e = { 0 };
	struct dp_exec *ex = NULL;
	int rc = dp_exec_new(cfg, links, &ex, &e);

	if (!rc && start > 0)
		rc = dp_ckpt_load(ck->dir, start, cfg, ex, &e);
	for (long k = start; !rc && k < steps; k++) {
		double loss = 0;

		rc = dp_exec_step(ex, k, &loss, &e);
		if (rc)
			break;
		note_rebalance(ex, cfg->rank, k, err);
		dp_exec_optimizer_step(ex);
		rc = dp_ckpt_maybe_save(ck, cfg, ex, k + 1, steps, &e);
		if (rc > 0)
			rc = 0;
		if (!rc && write(res_fd, &loss, sizeof(loss)) != (ssize_t)sizeof(loss))
			rc = dp_err_set(&e, EPIPE, "exec: cannot report the loss");
	}
	if (rc)
		(void)fprintf(err, "dpworker: rank %d: error: %s\n", cfg->rank, e.msg);
	else if (times)
		print_times(ex, cfg->rank, times);
	dp_exec_free(ex);
	return rc ? fail_code(rc) : EX_OK;
}

static double now_s(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* --ep-mbps: a listening socket on 127.0.0.1 per rank for the a2a tcp
 * transport, made before the fork.  0 or -errno. */
static int ep_listeners(int n, int *lfd, char (*addr)[32])
{
	for (int i = 0; i < n; i++) {
		struct sockaddr_in a = { .sin_family = AF_INET };
		socklen_t al = sizeof(a);

		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		lfd[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (lfd[i] < 0 || bind(lfd[i], (struct sockaddr *)&a, sizeof(a)) ||
		    listen(lfd[i], 64) || getsockname(lfd[i], (struct sockaddr *)&a, &al))
			return -errno;
		(void)snprintf(addr[i], sizeof(addr[i]), "127.0.0.1:%d", ntohs(a.sin_port));
	}
	return 0;
}

/* --resume: the step to start at (0 if no complete checkpoint), saying so
 * on @err; -1 on an error other than "none there". */
static long resume_step(const struct train_opts *o, FILE *err)
{
	struct dp_err e = { 0 };
	long step = 0;
	int rc;

	if (!o->ck.resume)
		return 0;
	rc = dp_ckpt_latest(o->ck.dir, &o->cfg, &step, &e);
	if (rc == -ENOENT) {
		(void)fprintf(err, "dpworker: %s: starting at step 0\n", e.msg);
		return 0;
	}
	if (rc) {
		(void)fprintf(err, "dpworker: error: %s\n", e.msg);
		return -1;
	}
	(void)fprintf(err, "dpworker: resuming at step %ld from '%s/step-%08ld'\n", step, o->ck.dir,
		      step);
	return step;
}

static int train_local(const struct train_opts *o, FILE *out, FILE *err)
{
	int pp = o->cfg.dp * o->cfg.pp * o->cfg.ep, rc = EX_OK;	    /* pp: ranks */
	int(*sp)[2] = calloc((size_t)pp * (size_t)pp, sizeof(*sp)); /* sp[i*pp+j]: i's end to j */
	int *res = calloc((size_t)pp, sizeof(int));
	pid_t *pid = calloc((size_t)pp, sizeof(pid_t));
	int *lfd = calloc((size_t)pp, sizeof(int));
	char(*addr)[32] = calloc((size_t)pp, sizeof(*addr));
	const char **ap = calloc((size_t)pp, sizeof(char *));
	double t0 = now_s(), first = 0, last = 0;
	long start = 0;

	if (!sp || !res || !pid || !lfd || !addr || !ap) {
		(void)fputs("dpworker: error: out of memory\n", err);
		rc = EX_OSERR;
		goto out;
	}
	for (int i = 0; i < pp * pp; i++)
		sp[i][0] = sp[i][1] = -1;
	for (int i = 0; i < pp; i++) {
		res[i] = lfd[i] = -1;
		ap[i] = addr[i];
	}
	if (o->mbps > 0 && ep_listeners(pp, lfd, addr)) {
		(void)fprintf(err, "dpworker: error: cannot listen on 127.0.0.1: %s\n",
			      strerror(errno));
		rc = EX_OSERR;
		goto out;
	}
	start = resume_step(o, err);
	if (start < 0) {
		rc = EX_IOERR;
		goto out;
	}
	if (start >= o->steps) {
		(void)fprintf(err,
			      "dpworker: step %ld already done (--steps %ld): nothing to run\n",
			      start, o->steps);
		goto out;
	}
	for (int i = 0; i < pp; i++)
		for (int j = i + 1; j < pp; j++) {
			int fds[2];

			if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds)) {
				(void)fprintf(err, "dpworker: error: socketpair: %s\n",
					      strerror(errno));
				rc = EX_OSERR;
				goto out;
			}
			sp[i * pp + j][0] = fds[0];
			sp[j * pp + i][0] = fds[1];
		}
	(void)fflush(out);
	(void)fflush(err);
	for (int r = 0; r < pp; r++) {
		int p[2];

		if (pipe(p)) {
			rc = EX_OSERR;
			goto out;
		}
		pid[r] = fork();
		if (pid[r] < 0) {
			(void)close(p[0]);
			(void)close(p[1]);
			rc = EX_OSERR;
			goto out;
		}
		if (pid[r] == 0) {
			struct dp_pp_link **links = calloc((size_t)pp, sizeof(struct dp_pp_link *));
			struct dp_exec_cfg cfg = o->cfg;
			struct dp_a2a_comm_cfg cc;
			char shm[64];
			int code = EX_OSERR;

			/* EP groups: shm, one segment per group (dp x pp of them) */
			dp_a2a_comm_cfg_init(&cc);
			cc.transport = "shm";
			(void)snprintf(shm, sizeof(shm), "/dpworker-%d-%d", (int)getppid(),
				       r / o->cfg.ep);
			cc.shm_name = shm;
			if (o->mbps > 0) { /* tcp, each EP rank its own paced "node" */
				cc.transport = "tcp";
				cc.addrs = ap + (ptrdiff_t)(r / o->cfg.ep) * o->cfg.ep;
				cc.listen_fd = lfd[r];
				cc.nodes = o->cfg.ep;
				cc.ranks_per_node = 1;
				cc.tcp_inter_mbps = o->mbps;
				for (int i = 0; i < pp; i++)
					if (i != r && lfd[i] >= 0)
						(void)close(lfd[i]);
			}
			cfg.ep_comm = &cc;

			(void)close(p[0]);
			for (int i = 0; i < r; i++)
				(void)close(res[i]);
			if (links) {
				for (int i = 0; i < pp; i++)
					for (int j = 0; j < pp; j++) {
						int fd = sp[i * pp + j][0];

						if (fd < 0)
							continue;
						if (i == r)
							(void)dp_pp_link_fd(fd, &links[j], NULL);
						else
							(void)close(fd);
					}
				cfg.rank = r;
				code = rank_main(&cfg, links, &o->ck, start, o->steps, p[1], err,
						 o->timing ? out : NULL);
				for (int i = 0; i < pp; i++)
					dp_pp_link_close(links[i]);
				free(links);
			}
			(void)fflush(err);
			_exit(code);
		}
		(void)close(p[1]);
		res[r] = p[0];
	}
	for (int i = 0; i < pp * pp; i++)
		if (sp[i][0] >= 0) {
			(void)close(sp[i][0]);
			sp[i][0] = -1;
		}
	for (int i = 0; i < pp; i++)
		if (lfd[i] >= 0) {
			(void)close(lfd[i]);
			lfd[i] = -1;
		}
	for (long k = start; k < o->steps && rc == EX_OK; k++) {
		double loss = 0;

		for (int r = 0; r < pp; r++) {
			double l;

			if (read(res[r], &l, sizeof(l)) != (ssize_t)sizeof(l)) {
				int st;

				(void)fprintf(err, "dpworker: error: rank %d stopped at step %ld\n",
					      r, k);
				rc = EX_SOFTWARE;
				/* its pipe is closed: it exited; the run gets its code */
				if (waitpid(pid[r], &st, 0) == pid[r]) {
					pid[r] = 0;
					if (WIFEXITED(st) && WEXITSTATUS(st))
						rc = WEXITSTATUS(st);
				}
				break;
			}
			loss += l;
		}
		if (rc)
			break;
		if (k == start)
			first = loss;
		last = loss;
		(void)fprintf(out, "step %ld loss %.6f\n", k, loss);
		(void)fflush(out);
	}
	if (rc == EX_OK)
		(void)fprintf(out,
			      "done: %s %s%.0d%spp %d%s%.0d%s%.0d micro %d, %ld steps in %.2f s, "
			      "loss %.4f -> %.4f\n",
			      dp_sched_algo_name(o->cfg.algo), o->cfg.dp > 1 ? "dp " : "",
			      o->cfg.dp > 1 ? o->cfg.dp : 0, o->cfg.dp > 1 ? " " : "", o->cfg.pp,
			      o->cfg.ep > 1 ? " ep " : "", o->cfg.ep > 1 ? o->cfg.ep : 0,
			      o->cfg.redundant ? " redundant " : "", o->cfg.redundant, o->cfg.micro,
			      o->steps - start, now_s() - t0, first, last);
out:
	for (int r = 0; pid && r < pp; r++) {
		int st;

		if (pid[r] <= 0)
			continue;
		if (rc)
			(void)kill(pid[r], SIGTERM);
		if (waitpid(pid[r], &st, 0) == pid[r] && rc == EX_OK &&
		    (!WIFEXITED(st) || WEXITSTATUS(st)))
			rc = WIFEXITED(st) ? WEXITSTATUS(st) : EX_SOFTWARE;
	}
	for (int i = 0; sp && i < pp * pp; i++)
		if (sp[i][0] >= 0)
			(void)close(sp[i][0]);
	for (int r = 0; res && r < pp; r++)
		if (res[r] >= 0)
			(void)close(res[r]);
	for (int g = 0; o->cfg.ep > 1 && g < o->cfg.dp * o->cfg.pp; g++) {
		char shm[64];

		(void)snprintf(shm, sizeof(shm), "/dpworker-%d-%d", (int)getpid(), g);
		(void)shm_unlink(shm); /* normally gone already */
	}
	for (int i = 0; lfd && i < pp; i++)
		if (lfd[i] >= 0)
			(void)close(lfd[i]);
	free(lfd);
	free(addr);
	free(ap);
	free(sp);
	free(res);
	free(pid);
	return rc;
}

/* --peers h0:p0,h1:p1,...: one per rank */
static int train_tcp(const struct train_opts *o, FILE *out, FILE *err)
{
	int pp = o->cfg.dp * o->cfg.pp * o->cfg.ep, n = 0, rc = EX_OK; /* pp: ranks */
	char *list = strdup(o->peers ? o->peers : "");
	const char **hosts = calloc((size_t)pp, sizeof(const char *));
	int *ports = calloc((size_t)pp, sizeof(int));
	struct dp_pp_link **links = calloc((size_t)pp, sizeof(struct dp_pp_link *));
	struct dp_err e = { 0 };
	char *save = NULL;

	if (!list || !hosts || !ports || !links) {
		rc = EX_OSERR;
		goto out;
	}
	for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		char *colon = strrchr(t, ':');
		long port;

		if (n == pp || !colon || dp_parse_long(colon + 1, 1, 65535, &port, "port", &e)) {
			(void)fprintf(err, "dpworker: error: --peers needs %d host:port entries\n",
				      pp);
			rc = EX_USAGE;
			goto out;
		}
		*colon = '\0';
		hosts[n] = t;
		ports[n++] = (int)port;
	}
	if (n != pp) {
		(void)fprintf(err, "dpworker: error: --peers needs %d host:port entries\n", pp);
		rc = EX_USAGE;
		goto out;
	}
	if (dp_pp_link_tcp_mesh(pp, o->cfg.rank, hosts, ports, 60000, links, &e)) {
		(void)fprintf(err, "dpworker: error: %s\n", e.msg);
		rc = EX_UNAVAILABLE;
		goto out;
	}
	{
		struct dp_exec *ex = NULL;
		struct dp_exec_cfg cfg = o->cfg;
		struct dp_a2a_comm_cfg cc;
		long start = 0;
		char addr[64][280];
		const char *ap[64];
		int g0 = cfg.rank / cfg.ep * cfg.ep;

		/* the EP group's a2a on tcp: each rank's --peers port + 1 */
		dp_a2a_comm_cfg_init(&cc);
		cc.transport = "tcp";
		for (int j = 0; j < cfg.ep; j++) {
			int len = snprintf(addr[j], sizeof(addr[j]), "%s:%d", hosts[g0 + j],
					   ports[g0 + j] + 1);

			if (len < 0 || (size_t)len >= sizeof(addr[j])) {
				(void)fprintf(err, "dpworker: error: host name too long\n");
				rc = EX_USAGE;
				goto out;
			}
			ap[j] = addr[j];
		}
		cc.addrs = ap;
		cfg.ep_comm = &cc;
		rc = dp_exec_new(&cfg, links, &ex, &e);
		if (rc) {
			(void)fprintf(err, "dpworker: error: %s\n", e.msg);
			rc = fail_code(rc);
			goto out;
		}
		/* every rank scans the same DIR and so picks the same step; if
		 * one did not, its first message would carry another step and
		 * the peer would stop with -EPROTO naming both */
		if (dp_ckpt_resume(&o->ck, &cfg, ex, &start, &e)) {
			(void)fprintf(err, "dpworker: rank %d: error: %s\n", cfg.rank, e.msg);
			dp_exec_free(ex);
			rc = EX_IOERR;
			goto out;
		}
		if (o->ck.resume)
			(void)fprintf(err, "dpworker: rank %d: starting at step %ld\n", cfg.rank,
				      start);
		for (long k = start; k < o->steps; k++) {
			double loss;

			if (dp_exec_step(ex, k, &loss, &e)) {
				(void)fprintf(err, "dpworker: rank %d: error: %s\n", cfg.rank,
					      e.msg);
				rc = EX_SOFTWARE;
				break;
			}
			note_rebalance(ex, cfg.rank, k, err);
			dp_exec_optimizer_step(ex);
			if (dp_ckpt_maybe_save(&o->ck, &cfg, ex, k + 1, o->steps, &e) < 0) {
				(void)fprintf(err, "dpworker: rank %d: error: %s\n", cfg.rank,
					      e.msg);
				rc = EX_IOERR;
				break;
			}
			(void)fprintf(out, "step %ld rank %d loss-share %.6f\n", k, cfg.rank, loss);
			(void)fflush(out);
		}
		if (rc == EX_OK && o->timing)
			print_times(ex, cfg.rank, out);
		dp_exec_free(ex);
	}
out:
	for (int i = 0; links && i < pp; i++)
		dp_pp_link_close(links[i]);
	free(links);
	free(ports);
	free(hosts);
	free(list);
	return rc;
}

int dp_worker_cmd_train(int argc, char **argv, FILE *out, FILE *err)
{
	struct train_opts o;
	struct dp_err e = { 0 };
	int rc;

	if (parse(argc, argv, &o, &e)) {
		(void)fprintf(err, "dpworker: error: %s\n", e.msg);
		free(o.loads);
		return EX_USAGE;
	}
	if (o.help) {
		(void)fputs(train_usage, out);
		free(o.loads);
		return EX_OK;
	}
	/* checkpoint warnings (a skipped checkpoint and why) go to @err;
	 * DP_LOG=ckpt:info also shows each checkpoint written */
	dp_log_set_sink(err);
	(void)dp_log_configure(getenv("DP_LOG"), NULL);
	rc = o.local ? train_local(&o, out, err) : train_tcp(&o, out, err);
	dp_log_set_sink(NULL);
	free(o.loads);
	return rc;
}
