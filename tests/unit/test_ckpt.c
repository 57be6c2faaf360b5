/* tests/unit/test_ckpt.c - checkpoints of the pipeline executor.
 *
 * - resume is exact: for dualpipe, dualpipev, 1f1b and zb1p, a run that
 *   stops after a checkpoint and resumes gives per-step losses equal (as
 *   doubles, memcmp) to an uninterrupted run, and the checkpoint files
 *   written afterwards (parameters, Adam moments and step of every chunk)
 *   are byte-identical;
 * - a flipped byte, a truncated file, a missing manifest, a missing rank
 *   file and a checkpoint of another configuration are each detected and
 *   skipped (the newest good one is taken; with none left, a fresh start);
 * - atomicity: a process killed between writing the temp file and the
 *   rename (rename is wrapped: -Wl,--wrap=rename, see test_ckpt.ldflags)
 *   leaves only a hidden temp file, never a visible partial one, and the
 *   next save succeeds;
 * - `dpworker --train-local` with --ckpt-dir/--ckpt-every/--resume and the
 *   DP_CKPT_* variables;
 * - data parallelism: with --dp 2 only replica 0 writes (pp x ep files),
 *   every replica resumes from them with the uninterrupted run's losses, and
 *   a checkpoint of another dp is refused naming the field;
 * - format version 1 (no dp in the fingerprint) still loads as dp 1,
 *   version 2 (no expert_slots) as the contiguous placement, and a newer
 *   version is refused naming both versions;
 * - an EPLB placement (--redundant) resumes exactly, and a run with another
 *   placement refuses its checkpoint naming expert_slots.
 * The model is tiny (test_cfg): every run takes milliseconds. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#include <jansson.h>

#include "common/dp_log.h"
#include "worker/dp_ckpt.h"
#include "worker/dp_exec.h"
#include "tests/unit/dp_test.h"

#define MAX_PP	  4 /* ranks: pp x ep */
#define MAX_STEPS 8

/* ---- rename fault injection ------------------------------------------- */

int __real_rename(const char *from, const char *to);
int __wrap_rename(const char *from, const char *to);

static int crash_at_rename; /* 0: pass through; n: the n-th call _exit()s */
static int rename_calls;

int __wrap_rename(const char *from, const char *to)
{
	if (crash_at_rename && ++rename_calls == crash_at_rename)
		_exit(0); /* the process dies after the temp file, before the rename */
	return __real_rename(from, to);
}

/* ---- helpers ------------------------------------------------------------- */

static void test_cfg(struct dp_exec_cfg *xc, enum dp_sched_algo algo, int pp, int micro)
{
	struct dp_model_cfg *m = &xc->model;

	memset(xc, 0, sizeof(*xc));
	xc->algo = algo;
	xc->pp = pp;
	xc->micro = micro;
	dp_model_cfg_default(m);
	m->layers = 4;
	m->hidden = 8;
	m->ffn_hidden = 12;
	m->experts = 4;
	m->groups = 2;
	m->topk_groups = 2;
	m->top_k = 2;
	m->vocab = 11;
	m->seq_len = 5;
	m->seqs = 2;
	m->lr = 0.01f;
	m->seed = 7;
}

static char *make_tmpdir(void)
{
	char *d = strdup("/tmp/dp-ckpt-XXXXXX");

	assert_non_null(d);
	assert_non_null(mkdtemp(d));
	return d;
}

static void rm_rf(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *de;

	if (!d) {
		(void)unlink(path);
		return;
	}
	while ((de = readdir(d))) {
		char sub[4096];

		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		(void)snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
		rm_rf(sub);
	}
	(void)closedir(d);
	(void)rmdir(path);
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

/* The child: resume (if asked), train to @steps with checkpoints, write the
 * start step and then each step's loss share to @fd. */
static int rank_child(const struct dp_exec_cfg *xc, struct dp_pp_link **links,
		      const struct dp_ckpt_cfg *cc, long steps, int fd)
{
	struct dp_err err = { 0 };
	struct dp_exec *ex = NULL;
	long start = 0;
	int rc = dp_exec_new(xc, links, &ex, &err);

	if (!rc)
		rc = dp_ckpt_resume(cc, xc, ex, &start, &err);
	if (!rc && write_all(fd, &start, sizeof(start)))
		rc = -EPIPE;
	for (long k = start; !rc && k < steps; k++) {
		double loss = 0;

		rc = dp_exec_step(ex, k, &loss, &err);
		if (rc)
			break;
		dp_exec_optimizer_step(ex);
		rc = dp_ckpt_maybe_save(cc, xc, ex, k + 1, steps, &err);
		if (rc > 0)
			rc = 0;
		if (!rc && write_all(fd, &loss, sizeof(loss)))
			rc = -EPIPE;
	}
	dp_exec_free(ex);
	if (rc)
		(void)fprintf(stderr, "rank %d: %s\n", xc->rank, err.msg);
	return rc ? 1 : 0;
}

/* Fork the ranks of @xc (pp x ep, an EP group over shm) and train to
 * @steps; *start gets the step the ranks started at (all must agree),
 * loss[k] the step loss (sum of shares in rank order) for k >= *start. */
static void run_train(const struct dp_exec_cfg *xc0, const struct dp_ckpt_cfg *cc, long steps,
		      long *start, double *loss)
{
	const int ep = xc0->ep > 1 ? xc0->ep : 1;
	int pp = xc0->pp * ep, sp[MAX_PP][MAX_PP], rfd[MAX_PP];
	char shm[MAX_PP][64];
	pid_t pid[MAX_PP];
	long st0 = -1;

	assert_true(pp <= MAX_PP && steps <= MAX_STEPS);
	for (int i = 0; i < pp; i++)
		for (int j = 0; j < pp; j++)
			sp[i][j] = -1;
	for (int g = 0; g < pp / ep; g++)
		(void)snprintf(shm[g], sizeof(shm[g]), "/dp-ckpt-test-%d-%d", (int)getpid(), g);
	for (int i = 0; i < pp; i++)
		for (int j = i + 1; j < pp; j++) {
			int fds[2];

			assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
			sp[i][j] = fds[0];
			sp[j][i] = fds[1];
		}
	(void)fflush(stdout);
	(void)fflush(stderr);
	for (int r = 0; r < pp; r++) {
		int p[2];

		assert_int_equal(pipe(p), 0);
		pid[r] = fork();
		assert_true(pid[r] >= 0);
		if (pid[r] == 0) {
			struct dp_pp_link *links[MAX_PP] = { NULL };
			struct dp_exec_cfg xc = *xc0;
			struct dp_a2a_comm_cfg ac;
			int code;

			(void)close(p[0]);
			for (int i = 0; i < r; i++)
				(void)close(rfd[i]);
			for (int i = 0; i < pp; i++)
				for (int j = 0; j < pp; j++) {
					if (sp[i][j] < 0)
						continue;
					if (i == r)
						(void)dp_pp_link_fd(sp[i][j], &links[j], NULL);
					else
						(void)close(sp[i][j]);
				}
			xc.rank = r;
			dp_a2a_comm_cfg_init(&ac);
			ac.transport = "shm";
			ac.timeout_ms = 20000;
			ac.shm_name = shm[r / ep];
			ac.shm_ring_bytes = 16384;
			xc.ep_comm = &ac;
			code = rank_child(&xc, links, cc, steps, p[1]);
			for (int i = 0; i < pp; i++)
				dp_pp_link_close(links[i]);
			_exit(code);
		}
		(void)close(p[1]);
		rfd[r] = p[0];
	}
	for (int i = 0; i < pp; i++)
		for (int j = 0; j < pp; j++)
			if (sp[i][j] >= 0)
				(void)close(sp[i][j]);
	for (long k = 0; k < steps; k++)
		loss[k] = 0;
	for (int r = 0; r < pp; r++) {
		long s = -1;
		int ok = read_all(rfd[r], &s, sizeof(s)) == 0, st = 0;

		if (ok && r == 0)
			st0 = s;
		ok = ok && s == st0;
		for (long k = s; ok && k < steps; k++) {
			double l;

			ok = read_all(rfd[r], &l, sizeof(l)) == 0;
			loss[k] += l;
		}
		(void)close(rfd[r]);
		if (!ok)
			for (int q = 0; q < pp; q++)
				(void)kill(pid[q], SIGKILL);
		assert_int_equal(waitpid(pid[r], &st, 0), pid[r]);
		if (!ok)
			fail_msg("rank %d of %s pp %d failed (status %d, start %ld vs %ld)", r,
				 dp_sched_algo_name(xc0->algo), pp, st, s, st0);
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	for (int g = 0; ep > 1 && g < pp / ep; g++)
		(void)shm_unlink(shm[g]); /* rank 0 of each group did; in case */
	*start = st0;
}

static char *slurp_bin(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;

	if (!f)
		return NULL;
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	assert_true(n >= 0);
	rewind(f);
	buf = malloc((size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	(void)fclose(f);
	*len = (size_t)n;
	return buf;
}

static void rank_file(const char *dir, long step, int rank, char *buf, size_t size)
{
	int n = snprintf(buf, size, "%s/step-%08ld/rank-%04d.bin", dir, step, rank);

	assert_true(n > 0 && (size_t)n < size);
}

/* The rank files of checkpoint @step in two directories are byte-identical. */
static void assert_same_files(const char *a, const char *b, long step, int pp)
{
	for (int r = 0; r < pp; r++) {
		char pa[4096], pb[4096];
		size_t la = 0, lb = 0;
		char *x, *y;

		rank_file(a, step, r, pa, sizeof(pa));
		rank_file(b, step, r, pb, sizeof(pb));
		x = slurp_bin(pa, &la);
		y = slurp_bin(pb, &lb);
		assert_non_null(x);
		assert_non_null(y);
		assert_int_equal(la, lb);
		if (memcmp(x, y, la) != 0)
			fail_msg("step %ld rank %d: checkpoint files differ", step, r);
		free(x);
		free(y);
	}
}

/* A log sink in memory (the skip reasons are logged at warn). */
static FILE *log_mem;
static char *log_buf;
static size_t log_len;

static void log_start(void)
{
	log_mem = open_memstream(&log_buf, &log_len);
	assert_non_null(log_mem);
	dp_log_set_sink(log_mem);
}

/* Stop capturing; the caller frees the text. */
static char *log_stop(void)
{
	dp_log_set_sink(NULL);
	assert_int_equal(fclose(log_mem), 0);
	log_mem = NULL;
	return log_buf;
}

/* ---- tests --------------------------------------------------------------- */

static void crc32c_known_values(void **state)
{
	(void)state;
	assert_int_equal(dp_ckpt_crc32c(0, "123456789", 9), 0xE3069283u);
	assert_int_equal(dp_ckpt_crc32c(0, "", 0), 0);
	/* continuing over pieces equals one pass */
	assert_int_equal(dp_ckpt_crc32c(dp_ckpt_crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
}

static uint64_t bits(double x)
{
	uint64_t u;

	memcpy(&u, &x, sizeof(u));
	return u;
}

/* Uninterrupted 6 steps vs 3 steps, stop, resume to 6. */
static void check_resume(enum dp_sched_algo algo, int pp, int micro, const char *backend)
{
	char *da = make_tmpdir(), *db = make_tmpdir();
	struct dp_ckpt_cfg ca = { .dir = da, .every = 2 }, cb = { .dir = db, .every = 3 };
	double la[MAX_STEPS], lb[MAX_STEPS], lc[MAX_STEPS];
	struct dp_exec_cfg xc;
	long start = -1;

	test_cfg(&xc, algo, pp, micro);
	xc.backend = backend;
	run_train(&xc, &ca, 6, &start, la);
	assert_int_equal(start, 0);
	run_train(&xc, &cb, 3, &start, lb); /* checkpoint at 3, then "stop" */
	assert_int_equal(start, 0);
	assert_memory_equal(la, lb, 3 * sizeof(double));
	cb.every = 2;
	cb.resume = 1;
	run_train(&xc, &cb, 6, &start, lc);
	assert_int_equal(start, 3);
	for (int k = 3; k < 6; k++)
		if (bits(la[k]) != bits(lc[k]))
			fail_msg("%s pp %d micro %d step %d: loss %.17g after resume, %.17g "
				 "uninterrupted",
				 dp_sched_algo_name(algo), pp, micro, k, lc[k], la[k]);
	assert_true(la[5] < la[0]); /* it trained */
	/* the state after steps 4 and 6: parameters, Adam moments and step */
	assert_same_files(da, db, 4, pp);
	assert_same_files(da, db, 6, pp);
	assert_int_equal(dp_ckpt_check(db, 6, &xc, NULL), 0);
	rm_rf(da);
	rm_rf(db);
	free(da);
	free(db);
}

static void resume_dualpipe(void **state)
{
	(void)state;
	check_resume(DP_SCHED_DUALPIPE, 2, 4, NULL);
	check_resume(DP_SCHED_DUALPIPE, 4, 8, NULL);
}

static void resume_1f1b(void **state)
{
	(void)state;
	check_resume(DP_SCHED_1F1B, 2, 4, NULL);
	check_resume(DP_SCHED_1F1B, 3, 4, NULL);
}

static void resume_zb1p_dualpipev(void **state)
{
	(void)state;
	check_resume(DP_SCHED_ZB1P, 2, 4, NULL);
	check_resume(DP_SCHED_DUALPIPEV, 2, 4, NULL);
}

/* The same on the "emu" device backend: the load writes the stages' host
 * mirrors and commits them to the device (dp_model_stage_flat_commit). */
static void resume_on_device_backend(void **state)
{
	(void)state;
	check_resume(DP_SCHED_DUALPIPE, 2, 4, "emu");
	check_resume(DP_SCHED_ZB1P, 2, 4, "emu");
}

/* A directory with good checkpoints at steps 2 and 4 (1f1b pp 2). */
static char *two_checkpoints(struct dp_exec_cfg *xc, double *loss)
{
	char *d = make_tmpdir();
	struct dp_ckpt_cfg cc = { .dir = d, .every = 2 };
	long start = -1;

	test_cfg(xc, DP_SCHED_1F1B, 2, 4);
	run_train(xc, &cc, 4, &start, loss);
	assert_int_equal(dp_ckpt_check(d, 2, xc, NULL), 0);
	assert_int_equal(dp_ckpt_check(d, 4, xc, NULL), 0);
	return d;
}

/* The latest checkpoint is @want and the log names the skipped step 4 with
 * @reason. */
static void expect_latest(const char *d, const struct dp_exec_cfg *xc, long want,
			  const char *reason)
{
	struct dp_err err = { 0 };
	long step = -1;
	char *log;
	int rc;

	log_start();
	rc = dp_ckpt_latest(d, xc, &step, &err);
	log = log_stop();
	if (want < 0) {
		assert_int_equal(rc, -ENOENT);
		assert_non_null(strstr(err.msg, "no complete checkpoint"));
	} else {
		assert_int_equal(rc, 0);
		assert_int_equal(step, want);
	}
	if (reason &&
	    (!strstr(log, "skipping") || !strstr(log, "step-00000004") || !strstr(log, reason)))
		fail_msg("log does not give '%s' for step 4:\n%s", reason, log);
	free(log);
}

static void corrupt_byte_is_skipped(void **state)
{
	struct dp_exec_cfg xc;
	double loss[MAX_STEPS];
	char *d = two_checkpoints(&xc, loss), path[4096];
	struct dp_err err = { 0 };
	unsigned char c;
	int fd;

	(void)state;
	rank_file(d, 4, 1, path, sizeof(path));
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &c, 1, 1000), 1);
	c ^= 0x10; /* one bit of a parameter */
	assert_int_equal(pwrite(fd, &c, 1, 1000), 1);
	assert_int_equal(close(fd), 0);
	assert_int_equal(dp_ckpt_check(d, 4, &xc, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "rank-0001.bin: checksum mismatch"));
	expect_latest(d, &xc, 2, "checksum mismatch");
	rm_rf(d);
	free(d);
}

static void truncated_file_is_skipped(void **state)
{
	struct dp_exec_cfg xc;
	double loss[MAX_STEPS];
	char *d = two_checkpoints(&xc, loss), path[4096];
	struct dp_err err = { 0 };
	struct stat sb;

	(void)state;
	rank_file(d, 4, 0, path, sizeof(path));
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(truncate(path, sb.st_size - 7), 0);
	assert_int_equal(dp_ckpt_check(d, 4, &xc, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "manifest says"));
	expect_latest(d, &xc, 2, "bytes, manifest says");
	/* the loader refuses it on its own too (no manifest involved) */
	{
		struct dp_pp_link *links[2] = { NULL };
		int fds[2];
		struct dp_exec *ex = NULL;

		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
		assert_int_equal(dp_pp_link_fd(fds[0], &links[1], NULL), 0);
		assert_int_equal(dp_exec_new(&xc, links, &ex, &err), 0);
		assert_int_equal(dp_ckpt_load(d, 4, &xc, ex, &err), -EBADMSG);
		assert_non_null(strstr(err.msg, "truncated"));
		dp_exec_free(ex);
		dp_pp_link_close(links[1]);
		(void)close(fds[1]);
	}
	rm_rf(d);
	free(d);
}

static void missing_manifest_or_file_is_skipped(void **state)
{
	struct dp_exec_cfg xc;
	double loss[MAX_STEPS];
	char *d = two_checkpoints(&xc, loss), path[4096];
	struct dp_err err = { 0 };

	(void)state;
	(void)snprintf(path, sizeof(path), "%s/step-00000004/manifest.json", d);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(dp_ckpt_check(d, 4, &xc, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "incomplete: no manifest.json"));
	expect_latest(d, &xc, 2, "incomplete: no manifest.json");
	/* step 2 without rank 1's file: nothing left */
	rank_file(d, 2, 1, path, sizeof(path));
	assert_int_equal(unlink(path), 0);
	assert_int_equal(dp_ckpt_check(d, 2, &xc, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "missing rank-0001.bin"));
	expect_latest(d, &xc, -1, NULL);
	rm_rf(d);
	free(d);
}

static void other_config_is_skipped(void **state)
{
	struct dp_exec_cfg xc, other;
	double loss[MAX_STEPS];
	char *d = two_checkpoints(&xc, loss);
	struct dp_err err = { 0 };

	(void)state;
	other = xc;
	other.model.seed++;
	assert_int_equal(dp_ckpt_check(d, 4, &other, &err), -ESTALE);
	assert_non_null(strstr(err.msg, "different configuration: seed is 7 in the checkpoint, "
					"8 in this run"));
	expect_latest(d, &other, -1, "different configuration");
	other = xc;
	other.algo = DP_SCHED_ZB1P;
	assert_int_equal(dp_ckpt_check(d, 4, &other, &err), -ESTALE);
	assert_non_null(strstr(err.msg, "algo is 1f1b in the checkpoint, zb1p in this run"));
	other = xc;
	other.micro = 6;
	assert_int_equal(dp_ckpt_check(d, 4, &other, &err), -ESTALE);
	assert_non_null(strstr(err.msg, "micro is 4"));
	other = xc;
	other.model.hidden = 12;
	assert_int_equal(dp_ckpt_check(d, 4, &other, &err), -ESTALE);
	assert_non_null(strstr(err.msg, "hidden is 8"));
	/* a newer checkpoint of another seed in the same directory: skipped,
	 * the good step 4 is taken */
	{
		struct dp_ckpt_cfg cc = { .dir = d, .every = 5 };
		double l2[MAX_STEPS];
		long start = -1;

		other = xc;
		other.model.seed = 99;
		run_train(&other, &cc, 5, &start, l2);
		assert_int_equal(dp_ckpt_check(d, 5, &other, NULL), 0);
		expect_latest(d, &xc, 4, NULL);
		expect_latest(d, &other, 5, NULL);
	}
	rm_rf(d);
	free(d);
}

/* Everything corrupt: a resumed run starts at step 0 and matches a fresh
 * run; with one good checkpoint left it resumes from that one. */
static void fallback_and_fresh_start(void **state)
{
	struct dp_exec_cfg xc;
	double loss[MAX_STEPS], l2[MAX_STEPS];
	char *d = two_checkpoints(&xc, loss), path[4096];
	struct dp_ckpt_cfg cc = { .dir = d, .every = 0, .resume = 1 };
	long start = -1;

	(void)state;
	rank_file(d, 4, 0, path, sizeof(path));
	assert_int_equal(truncate(path, 100), 0); /* inside the header */
	run_train(&xc, &cc, 4, &start, l2);
	assert_int_equal(start, 2);
	assert_memory_equal(&loss[2], &l2[2], 2 * sizeof(double));
	/* that run rewrote step 4 (the last step): good again */
	assert_int_equal(dp_ckpt_check(d, 4, &xc, NULL), 0);
	rank_file(d, 4, 1, path, sizeof(path));
	assert_int_equal(truncate(path, 0), 0);
	rank_file(d, 2, 0, path, sizeof(path));
	assert_int_equal(truncate(path, 0), 0);
	run_train(&xc, &cc, 4, &start, l2);
	assert_int_equal(start, 0);
	assert_memory_equal(loss, l2, 4 * sizeof(double));
	rm_rf(d);
	free(d);
}

/* Two executors of a 1f1b pp 2 pipeline in this process (no step run):
 * enough to save both ranks' files. */
struct pair {
	struct dp_exec_cfg xc[2];
	struct dp_exec *ex[2];
	struct dp_pp_link *links[2][2];
};

static void pair_new(struct pair *p)
{
	int fds[2];

	memset(p, 0, sizeof(*p));
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
	assert_int_equal(dp_pp_link_fd(fds[0], &p->links[0][1], NULL), 0);
	assert_int_equal(dp_pp_link_fd(fds[1], &p->links[1][0], NULL), 0);
	for (int r = 0; r < 2; r++) {
		test_cfg(&p->xc[r], DP_SCHED_1F1B, 2, 4);
		p->xc[r].rank = r;
		assert_int_equal(dp_exec_new(&p->xc[r], p->links[r], &p->ex[r], NULL), 0);
	}
}

static void pair_free(struct pair *p)
{
	for (int r = 0; r < 2; r++) {
		dp_exec_free(p->ex[r]);
		dp_pp_link_close(p->links[r][1 - r]);
	}
}

/* Names in @dir other than . and .., sorted, space-separated. */
static void list_dir(const char *dir, char *buf, size_t size)
{
	struct dirent **ents = NULL;
	int n = scandir(dir, &ents, NULL, alphasort);

	buf[0] = '\0';
	for (int i = 0; i < n; i++) {
		if (strcmp(ents[i]->d_name, ".") != 0 && strcmp(ents[i]->d_name, "..") != 0) {
			size_t l = strlen(buf);

			(void)snprintf(buf + l, size - l, "%s%s", l ? " " : "", ents[i]->d_name);
		}
		free(ents[i]);
	}
	free(ents);
}

/* Fork; in the child the @n-th rename() kills the process; the child saves
 * rank @rank's checkpoint at @step. */
static void save_and_crash(struct pair *p, const char *d, int rank, long step, int n)
{
	pid_t pid;
	int st = 0;

	(void)fflush(stdout);
	(void)fflush(stderr);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		crash_at_rename = n;
		(void)dp_ckpt_save(d, &p->xc[rank], p->ex[rank], step, 1000, NULL);
		_exit(3); /* not reached when the crash happened */
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

static void crash_before_rename_leaves_nothing_visible(void **state)
{
	char *d = make_tmpdir(), names[512], sdir[4096], tmp[4200];
	struct dp_err err = { 0 };
	struct pair p;
	struct stat sb;
	long step = -1;

	(void)state;
	pair_new(&p);
	/* a good checkpoint at step 1 */
	assert_int_equal(dp_ckpt_save(d, &p.xc[1], p.ex[1], 1, 1000, &err), 0);
	assert_int_equal(dp_ckpt_save(d, &p.xc[0], p.ex[0], 1, 1000, &err), 0);
	assert_int_equal(dp_ckpt_check(d, 1, &p.xc[0], &err), 0);

	/* rank 1 dies between its temp file and the rename */
	save_and_crash(&p, d, 1, 2, 1);
	assert_int_equal(dp_ckpt_step_path(d, 2, sdir, sizeof(sdir), NULL), 0);
	list_dir(sdir, names, sizeof(names));
	assert_string_equal(names, ".rank-0001.bin.tmp");
	(void)snprintf(tmp, sizeof(tmp), "%s/.rank-0001.bin.tmp", sdir);
	assert_int_equal(stat(tmp, &sb), 0);
	assert_true(sb.st_size > 1000); /* the temp was written in full */
	assert_int_equal(dp_ckpt_check(d, 2, &p.xc[0], &err), -ENOENT);
	assert_int_equal(dp_ckpt_latest(d, &p.xc[0], &step, &err), 0);
	assert_int_equal(step, 1);

	/* rank 0 waits for rank 1's file and gives up: no manifest */
	assert_int_equal(dp_ckpt_save(d, &p.xc[0], p.ex[0], 2, 50, &err), -ETIMEDOUT);
	assert_non_null(strstr(err.msg, "rank 1"));
	list_dir(sdir, names, sizeof(names));
	assert_string_equal(names, ".rank-0001.bin.tmp rank-0000.bin");

	/* rank 1 writes; rank 0 dies at the manifest's rename (its 2nd) */
	assert_int_equal(dp_ckpt_save(d, &p.xc[1], p.ex[1], 2, 1000, &err), 0);
	save_and_crash(&p, d, 0, 2, 2);
	list_dir(sdir, names, sizeof(names));
	assert_string_equal(names, ".manifest.json.tmp rank-0000.bin rank-0001.bin");
	assert_int_equal(dp_ckpt_check(d, 2, &p.xc[0], &err), -ENOENT);
	expect_latest(d, &p.xc[0], 1, NULL);

	/* a clean retry completes it; the temp files are gone */
	assert_int_equal(dp_ckpt_save(d, &p.xc[0], p.ex[0], 2, 1000, &err), 0);
	list_dir(sdir, names, sizeof(names));
	assert_string_equal(names, "manifest.json rank-0000.bin rank-0001.bin");
	assert_int_equal(dp_ckpt_latest(d, &p.xc[0], &step, &err), 0);
	assert_int_equal(step, 2);
	pair_free(&p);
	rm_rf(d);
	free(d);
}

/* A fake step directory under @dir: a rank file, and a manifest if
 * @complete. */
static void fake_step(const char *dir, long step, int complete)
{
	char p[4200];
	FILE *f;

	(void)snprintf(p, sizeof(p), "%s/step-%08ld", dir, step);
	assert_int_equal(mkdir(p, 0755), 0);
	(void)snprintf(p, sizeof(p), "%s/step-%08ld/rank-0000.bin", dir, step);
	f = fopen(p, "w");
	assert_non_null(f);
	(void)fclose(f);
	if (complete) {
		(void)snprintf(p, sizeof(p), "%s/step-%08ld/manifest.json", dir, step);
		f = fopen(p, "w");
		assert_non_null(f);
		(void)fclose(f);
	}
}

static int step_exists(const char *dir, long step)
{
	char p[4200];

	(void)snprintf(p, sizeof(p), "%s/step-%08ld", dir, step);
	return access(p, F_OK) == 0;
}

/* Retention: the newest K complete checkpoints stay, with any incomplete
 * directory newer than the K-th; everything older goes; other entries
 * stay; a step directory holding a directory is left alone and named. */
static void prune_keeps_the_newest_complete(void **state)
{
	struct dp_err err = { 0 };
	char *d = make_tmpdir(), p[4200];
	int removed = -1;

	(void)state;
	fake_step(d, 1, 1);
	fake_step(d, 2, 1);
	fake_step(d, 3, 0);
	fake_step(d, 4, 1);
	fake_step(d, 5, 0); /* a save in progress, or one that failed */
	(void)snprintf(p, sizeof(p), "%s/notes.txt", d);
	{
		FILE *f = fopen(p, "w");

		assert_non_null(f);
		(void)fclose(f);
	}
	assert_int_equal(dp_ckpt_prune(d, 2, &removed, &err), 0);
	assert_int_equal(removed, 1);
	assert_false(step_exists(d, 1));
	for (long s = 2; s <= 5; s++)
		assert_true(step_exists(d, s));
	assert_int_equal(dp_ckpt_prune(d, 1, &removed, &err), 0);
	assert_int_equal(removed, 2); /* 3 (incomplete, older than 4) and 2 */
	assert_false(step_exists(d, 2));
	assert_false(step_exists(d, 3));
	assert_true(step_exists(d, 4) && step_exists(d, 5));
	assert_int_equal(access(p, F_OK), 0);
	/* keep 1 again: nothing older left */
	assert_int_equal(dp_ckpt_prune(d, 1, &removed, &err), 0);
	assert_int_equal(removed, 0);
	/* an old step directory with a directory inside: reported, kept */
	fake_step(d, 0, 1);
	(void)snprintf(p, sizeof(p), "%s/step-%08d/extra", d, 0);
	assert_int_equal(mkdir(p, 0755), 0);
	assert_int_equal(dp_ckpt_prune(d, 1, &removed, &err), -ENOTEMPTY);
	assert_non_null(strstr(err.msg, "holds a directory 'extra'"));
	assert_true(step_exists(d, 0));
	assert_true(step_exists(d, 4));
	assert_int_equal(dp_ckpt_prune(d, 0, NULL, &err), -EINVAL);
	rm_rf(d);
	free(d);
}

/* maybe_save with keep 2 on a real pair of ranks: after steps 1..4 only
 * the newest two remain, and they are complete. */
static void maybe_save_keeps_the_last_two(void **state)
{
	struct dp_ckpt_cfg cc = { .every = 1, .keep = 2, .wait_ms = 5000 };
	struct dp_err err = { 0 };
	struct pair p;
	char *d = make_tmpdir();
	long latest = -1;

	(void)state;
	cc.dir = d;
	pair_new(&p);
	for (long s = 1; s <= 4; s++) {
		/* rank 1 first: rank 0 waits for its file, writes the
		 * manifest, then prunes */
		assert_int_equal(dp_ckpt_maybe_save(&cc, &p.xc[1], p.ex[1], s, 4, &err), 1);
		assert_int_equal(dp_ckpt_maybe_save(&cc, &p.xc[0], p.ex[0], s, 4, &err), 1);
	}
	assert_false(step_exists(d, 1));
	assert_false(step_exists(d, 2));
	assert_int_equal(dp_ckpt_check(d, 3, &p.xc[0], &err), 0);
	assert_int_equal(dp_ckpt_check(d, 4, &p.xc[1], &err), 0);
	assert_int_equal(dp_ckpt_latest(d, &p.xc[0], &latest, &err), 0);
	assert_int_equal(latest, 4);
	/* the environment sets keep; keep needs a directory */
	{
		struct dp_ckpt_cfg c2 = { .dir = d, .every = -1, .keep = -1 };
		struct dp_ckpt_cfg c3 = { .every = -1, .keep = -1 };

		assert_int_equal(setenv("DP_CKPT_KEEP", "5", 1), 0);
		assert_int_equal(dp_ckpt_cfg_env(&c2, &err), 0);
		assert_int_equal(c2.keep, 5);
		assert_int_equal(dp_ckpt_cfg_env(&c3, &err), -EINVAL);
		assert_non_null(strstr(err.msg, "without a directory"));
		c2.keep = -1;
		assert_int_equal(setenv("DP_CKPT_KEEP", "-1", 1), 0);
		assert_int_equal(dp_ckpt_cfg_env(&c2, &err), -EINVAL);
		assert_int_equal(unsetenv("DP_CKPT_KEEP"), 0);
	}
	pair_free(&p);
	rm_rf(d);
	free(d);
}

static void maybe_save_and_env(void **state)
{
	struct dp_ckpt_cfg cc = { .every = -1 };
	struct dp_err err = { 0 };
	struct pair p;
	char *d = make_tmpdir();

	(void)state;
	pair_new(&p);
	/* off without a directory */
	assert_int_equal(dp_ckpt_maybe_save(&cc, &p.xc[1], p.ex[1], 2, 4, &err), 0);
	assert_int_equal(setenv("DP_CKPT_DIR", d, 1), 0);
	assert_int_equal(setenv("DP_CKPT_EVERY", "3", 1), 0);
	assert_int_equal(dp_ckpt_cfg_env(&cc, &err), 0);
	assert_string_equal(cc.dir, d);
	assert_int_equal(cc.every, 3);
	assert_int_equal(cc.resume, 0);
	/* explicit values win over the environment */
	{
		struct dp_ckpt_cfg c2 = { .dir = "/x", .every = 5 };

		assert_int_equal(dp_ckpt_cfg_env(&c2, &err), 0);
		assert_string_equal(c2.dir, "/x");
		assert_int_equal(c2.every, 5);
	}
	assert_int_equal(setenv("DP_CKPT_EVERY", "often", 1), 0);
	cc.every = -1;
	assert_int_equal(dp_ckpt_cfg_env(&cc, &err), -EINVAL);
	assert_int_equal(unsetenv("DP_CKPT_EVERY"), 0);
	assert_int_equal(unsetenv("DP_CKPT_DIR"), 0);
	{
		struct dp_ckpt_cfg c3 = { .every = 2 };

		assert_int_equal(dp_ckpt_cfg_env(&c3, &err), -EINVAL);
		assert_non_null(strstr(err.msg, "without a directory"));
	}
	/* due: multiples of every, and the last step */
	cc.dir = d;
	cc.every = 3;
	cc.wait_ms = 50;
	assert_int_equal(dp_ckpt_maybe_save(&cc, &p.xc[1], p.ex[1], 2, 7, &err), 0);
	assert_int_equal(dp_ckpt_maybe_save(&cc, &p.xc[1], p.ex[1], 3, 7, &err), 1);
	assert_int_equal(dp_ckpt_maybe_save(&cc, &p.xc[1], p.ex[1], 7, 7, &err), 1);
	assert_int_equal(dp_ckpt_maybe_save(&cc, &p.xc[0], p.ex[0], 7, 7, &err), 1);
	assert_int_equal(dp_ckpt_check(d, 7, &p.xc[0], &err), 0);
	assert_int_equal(dp_ckpt_check(d, 3, &p.xc[0], &err), -ENOENT); /* rank 0 did not */
	pair_free(&p);
	rm_rf(d);
	free(d);
}

/* dpworker --train-local with checkpoint options: output and exit codes. */
struct cmd_out {
	int rc;
	char *out, *err;
};

static struct cmd_out run_cmd(const char *const *args)
{
	struct cmd_out r = { 0 };
	size_t lo = 0, le = 0;
	FILE *out = open_memstream(&r.out, &lo), *err = open_memstream(&r.err, &le);
	char *argv[32];
	int argc = 0;

	assert_non_null(out);
	assert_non_null(err);
	argv[argc++] = "dpworker";
	for (; *args; args++)
		argv[argc++] = (char *)*args;
	argv[argc] = NULL;
	r.rc = dp_worker_cmd_train(argc, argv, out, err);
	assert_int_equal(fclose(out), 0);
	assert_int_equal(fclose(err), 0);
	return r;
}

static void cmd_free(struct cmd_out *r)
{
	free(r->out);
	free(r->err);
}

/* The "step k loss x" lines of @text from step @from on. */
static char *step_lines(const char *text, long from)
{
	char *res = calloc(1, strlen(text) + 1);
	const char *p = text;

	assert_non_null(res);
	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p + 1) : strlen(p);
		char *end = NULL;
		long k = -1;

		if (strncmp(p, "step ", 5) == 0)
			k = strtol(p + 5, &end, 10);
		if (end && strncmp(end, " loss", 5) == 0 && k >= from)
			(void)strncat(res, p, len);
		p += len;
	}
	return res;
}

/* @res resumed at step @at and printed the losses of @full from there on,
 * up to step @last. */
static void expect_resumed(const struct cmd_out *full, const struct cmd_out *res, long at,
			   long last)
{
	char want[64], *a, *b;

	assert_int_equal(res->rc, 0);
	(void)snprintf(want, sizeof(want), "resuming at step %ld", at);
	assert_non_null(strstr(res->err, want));
	a = step_lines(full->out, at);
	b = step_lines(res->out, 0);
	assert_string_equal(a, b);
	(void)snprintf(want, sizeof(want), "step %ld loss", last);
	assert_non_null(strstr(b, want));
	free(a);
	free(b);
}

/* --dp @dp --pp 2 --ep @ep: the checkpoint has the pp x ep files of
 * replica 0 only, a resumed run (every replica loading them) continues with
 * the losses of an uninterrupted one, and a run with --dp @odp --ep @oep
 * refuses the checkpoint with @why. */
static void check_layout_resume(const char *dp, const char *ep, const char *odp, const char *oep,
				const char *why)
{
	char *d = make_tmpdir(), path[4096];
	struct cmd_out full, part, res, r;
	int files = 2 * (int)strtol(ep, NULL, 10);

	full = run_cmd((const char *const[]){ "--train-local", "--dp", dp, "--pp", "2", "--ep", ep,
					      "--steps", "4", "--layers", "2", NULL });
	assert_int_equal(full.rc, 0);
	part = run_cmd((const char *const[]){ "--train-local", "--dp", dp, "--pp", "2", "--ep", ep,
					      "--steps", "2", "--layers", "2", "--ckpt-dir", d,
					      NULL });
	assert_int_equal(part.rc, 0);
	for (int i = 0; i <= files; i++) {
		rank_file(d, 2, i, path, sizeof(path));
		if ((access(path, F_OK) == 0) != (i < files))
			fail_msg("%s: %s", path, i < files ? "missing" : "written by replica 1");
	}
	res = run_cmd((const char *const[]){ "--train-local", "--dp", dp, "--pp", "2", "--ep", ep,
					     "--steps", "4", "--layers", "2", "--ckpt-dir", d,
					     "--resume", NULL });
	expect_resumed(&full, &res, 2, 3);
	r = run_cmd((const char *const[]){ "--train-local", "--dp", odp, "--pp", "2", "--ep", oep,
					   "--steps", "1", "--layers", "2", "--ckpt-dir", d,
					   "--resume", NULL });
	assert_int_equal(r.rc, 0);
	assert_non_null(strstr(r.err, why));
	cmd_free(&r);
	cmd_free(&full);
	cmd_free(&part);
	cmd_free(&res);
	rm_rf(d);
	free(d);
}

/* pp 2 x ep 2: four ranks, each with its own experts; a checkpoint of
 * another ep is refused naming the field. */
static void train_local_ep_resume(void **state)
{
	(void)state;
	check_layout_resume("1", "2", "1", "1", "ep is 2 in the checkpoint, 1 in this run");
}

/* pp 2 x ep 2 with an EPLB placement (--redundant 2: 10 slots): the
 * resumed run continues with the uninterrupted run's losses, and a run with
 * the contiguous placement or another slot count refuses the checkpoint
 * naming expert_slots. */
static void train_local_eplb_resume(void **state)
{
	char *d = make_tmpdir();
	struct cmd_out full, part, res, r, r2;

	(void)state;
	full = run_cmd((const char *const[]){ "--train-local", "--pp", "2", "--ep", "2",
					      "--redundant", "2", "--steps", "4", "--layers", "2",
					      NULL });
	assert_int_equal(full.rc, 0);
	part = run_cmd((const char *const[]){ "--train-local", "--pp", "2", "--ep", "2",
					      "--redundant", "2", "--steps", "2", "--layers", "2",
					      "--ckpt-dir", d, NULL });
	assert_int_equal(part.rc, 0);
	res = run_cmd((const char *const[]){ "--train-local", "--pp", "2", "--ep", "2",
					     "--redundant", "2", "--steps", "4", "--layers", "2",
					     "--ckpt-dir", d, "--resume", NULL });
	expect_resumed(&full, &res, 2, 3);
	r = run_cmd((const char *const[]){ "--train-local", "--pp", "2", "--ep", "2", "--steps",
					   "1", "--layers", "2", "--ckpt-dir", d, "--resume",
					   NULL });
	assert_int_equal(r.rc, 0);
	assert_non_null(strstr(r.err, "expert_slots is 10 in the checkpoint, 0 in this run"));
	r2 = run_cmd((const char *const[]){ "--train-local", "--pp", "2", "--ep", "2",
					    "--redundant", "4", "--steps", "1", "--layers", "2",
					    "--ckpt-dir", d, "--resume", NULL });
	assert_int_equal(r2.rc, 0);
	assert_non_null(strstr(r2.err, "expert_slots is 10 in the checkpoint, 12 in this run"));
	cmd_free(&r);
	cmd_free(&r2);
	cmd_free(&full);
	cmd_free(&part);
	cmd_free(&res);
	rm_rf(d);
	free(d);
}

/* dp 2 x pp 2 (x ep 2): replica 0 writes rank-0000.. rank-<pp*ep-1>, both
 * replicas resume from them; a dp 1 run refuses them. */
static void train_local_dp_resume(void **state)
{
	(void)state;
	check_layout_resume("2", "1", "1", "1", "dp is 2 in the checkpoint, 1 in this run");
	check_layout_resume("2", "2", "1", "2", "dp is 2 in the checkpoint, 1 in this run");
}

/* Rewrite rank file @path of format 4 (20 fingerprint fields, a 216-byte
 * header) as format @version would have written it: 1 has 17 fields (no
 * dp), a 192-byte header; 2 has 18 (no expert_slots), 200 bytes; 3 has 19
 * (no rebalance_every), 208 bytes. */
static void downgrade_rank_file(const char *path, int version)
{
	const size_t nfp = (size_t)version + 16, hb = 40 + 8 * nfp + 16;
	unsigned char h[216];
	size_t len = 0;
	char *b = slurp_bin(path, &len);
	uint32_t crc;
	FILE *f;

	assert_non_null(b);
	assert_true(len > 216);
	assert_int_equal((unsigned char)b[8], 4); /* version 4 */
	assert_int_equal((unsigned char)b[36], 20);
	memcpy(h, b, 40 + 8 * nfp);			 /* magic .. fp[0..nfp-1] */
	memcpy(h + 40 + 8 * nfp, b + (40 + 8 * 20), 12); /* payload_bytes, payload_crc */
	h[8] = (unsigned char)version;
	h[36] = (unsigned char)nfp; /* fingerprint fields */
	crc = dp_ckpt_crc32c(0, h, hb - 4);
	for (int i = 0; i < 4; i++)
		h[hb - 4 + i] = (unsigned char)(crc >> (8 * i));
	f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(h, 1, hb, f), hb);
	assert_int_equal(fwrite(b + 216, 1, len - 216, f), len - 216);
	assert_int_equal(fclose(f), 0);
	free(b);
}

/* Rewrite the manifest of @sdir as version @version without the keys it
 * did not have (1: dp, expert_slots, rebalance_every; 2: expert_slots,
 * rebalance_every; 3: rebalance_every), with the rank
 * files' new sizes and checksums. */
static void downgrade_manifest(const char *sdir, int version, int nfiles)
{
	char mpath[4200], path[4200], crcs[16];
	json_t *m, *files;

	(void)snprintf(mpath, sizeof(mpath), "%s/manifest.json", sdir);
	m = json_load_file(mpath, 0, NULL);
	assert_non_null(m);
	assert_int_equal(json_object_set_new(m, "version", json_integer(version)), 0);
	/* absent the second time */
	if (version == 1)
		(void)json_object_del(json_object_get(m, "config"), "dp");
	if (version <= 2)
		(void)json_object_del(json_object_get(m, "config"), "expert_slots");
	(void)json_object_del(json_object_get(m, "config"), "rebalance_every");
	files = json_object_get(m, "files");
	for (int r = 0; r < nfiles; r++) {
		json_t *ent = json_array_get(files, (size_t)r);
		size_t len = 0;
		char *b;

		(void)snprintf(path, sizeof(path), "%s/rank-%04d.bin", sdir, r);
		b = slurp_bin(path, &len);
		assert_non_null(b);
		(void)snprintf(crcs, sizeof(crcs), "%08x", dp_ckpt_crc32c(0, b, len));
		assert_int_equal(json_object_set_new(ent, "bytes", json_integer((json_int_t)len)),
				 0);
		assert_int_equal(json_object_set_new(ent, "crc32c", json_string(crcs)), 0);
		free(b);
	}
	assert_int_equal(json_dump_file(m, mpath, JSON_INDENT(2)), 0);
	json_decref(m);
}

/* A checkpoint written before dp existed (format 1) is read as dp 1, one
 * before expert placements (format 2) as the contiguous placement:
 * checked, loaded, and the resumed run goes on with the same losses. */
static void check_old_version(int version)
{
	struct dp_exec_cfg xc, dp2;
	double loss[MAX_STEPS], again[MAX_STEPS];
	char *d = two_checkpoints(&xc, loss), sdir[4096], path[4096];
	struct dp_ckpt_cfg cc = { .dir = NULL, .every = 0, .resume = 1 };
	struct dp_err err = { 0 };
	long start = -1;

	assert_int_equal(dp_ckpt_step_path(d, 2, sdir, sizeof(sdir), NULL), 0);
	for (int r = 0; r < 2; r++) {
		rank_file(d, 2, r, path, sizeof(path));
		downgrade_rank_file(path, version);
	}
	downgrade_manifest(sdir, version, 2);
	assert_int_equal(dp_ckpt_check(d, 2, &xc, &err), 0);
	dp2 = xc;
	dp2.dp = 2;
	assert_int_equal(dp_ckpt_check(d, 2, &dp2, &err), -ESTALE);
	assert_non_null(strstr(err.msg, "dp is 1 in the checkpoint, 2 in this run"));
	assert_int_equal(dp_ckpt_step_path(d, 4, path, sizeof(path), NULL), 0);
	rm_rf(path); /* resume from the version 1 step 2 */
	cc.dir = d;
	run_train(&xc, &cc, 4, &start, again);
	assert_int_equal(start, 2);
	assert_memory_equal(loss + 2, again + 2, 2 * sizeof(double));
	/* a version this build does not know: refused, naming both */
	downgrade_manifest(sdir, 5, 0);
	assert_int_equal(dp_ckpt_check(d, 2, &xc, &err), -ESTALE);
	assert_non_null(strstr(err.msg, "format version 5, this build reads 1 to 4"));
	rm_rf(d);
	free(d);
}

static void version_1_checkpoint_still_loads(void **state)
{
	(void)state;
	check_old_version(1);
}

static void version_2_checkpoint_still_loads(void **state)
{
	(void)state;
	check_old_version(2);
}

/* format 3: no rebalance_every in the fingerprint, no rebalancing state */
static void version_3_checkpoint_still_loads(void **state)
{
	(void)state;
	check_old_version(3);
}

/* Rebalancing (pp 2 x ep 2, dualpipe, 2 redundant slots, re-placed every 2
 * steps): 3 steps, stop, resume to 6 (the checkpoint of step 3 holds the
 * placement made after step 2 and the one-step partial window): the
 * losses equal the uninterrupted run's as doubles.  A rank file of the
 * run holds the rebalancing record; a run with another rebalance_every
 * (or none) refuses the checkpoint naming the field. */
static void resume_rebalancing(void **state)
{
	struct dp_exec_cfg xc, other;
	struct dp_ckpt_cfg ca = { 0 }, cb = { 0 };
	double full[MAX_STEPS], part[MAX_STEPS], res[MAX_STEPS];
	char *da = make_tmpdir(), *db = make_tmpdir();
	struct dp_err err = { 0 };
	long start = -1;

	(void)state;
	test_cfg(&xc, DP_SCHED_DUALPIPE, 2, 4);
	xc.ep = 2;
	xc.redundant = 2;
	xc.rebalance_every = 2;
	ca.dir = da;
	run_train(&xc, &ca, 6, &start, full);
	assert_int_equal(start, 0);
	cb.dir = db;
	run_train(&xc, &cb, 3, &start, part);
	assert_memory_equal(full, part, 3 * sizeof(double));
	cb.resume = 1;
	run_train(&xc, &cb, 6, &start, res);
	assert_int_equal(start, 3);
	for (int k = 3; k < 6; k++)
		if (res[k] != full[k])
			fail_msg(
				"rebalancing step %d: loss %.17g after resume, %.17g uninterrupted",
				k, res[k], full[k]);
	/* the same rank files at step 6 (the resumed run wrote them too) */
	assert_same_files(da, db, 6, 4);
	other = xc;
	other.rebalance_every = 3;
	assert_int_equal(dp_ckpt_check(db, 3, &other, &err), -ESTALE);
	assert_non_null(strstr(err.msg, "rebalance_every is 2 in the checkpoint, 3 in this run"));
	other.rebalance_every = 0;
	assert_int_equal(dp_ckpt_check(db, 3, &other, &err), -ESTALE);
	assert_non_null(strstr(err.msg, "rebalance_every is 2 in the checkpoint, 0 in this run"));
	print_message("rebalancing resume: losses of steps 3..5 %.9f %.9f %.9f equal\n", res[3],
		      res[4], res[5]);
	rm_rf(da);
	rm_rf(db);
	free(da);
	free(db);
}

/* dpworker with the options @base (NULL-terminated), then --steps @steps,
 * --ckpt-dir @dir unless NULL, and --resume if @resume. */
static struct cmd_out run_with(const char *const *base, const char *steps, const char *dir,
			       int resume)
{
	const char *argv[32];
	int n = 0;

	while (*base && n < 24)
		argv[n++] = *base++;
	argv[n++] = "--steps";
	argv[n++] = steps;
	if (dir) {
		argv[n++] = "--ckpt-dir";
		argv[n++] = dir;
	}
	if (resume)
		argv[n++] = "--resume";
	argv[n] = NULL;
	return run_cmd(argv);
}

/* dpworker --rebalance-every 2 (pp 2 x ep 2, 2 redundant slots): stopped
 * after step 3 (one step of a window counted), resumed to 6: the printed
 * losses are the uninterrupted run's (as doubles: resume_rebalancing);
 * --rebalance-every 3 refuses the checkpoint naming the field. */
static void train_local_rebalance_resume(void **state)
{
	static const char *const base[] = {
		"--train-local",     "--pp", "2", "--ep", "2", "--redundant", "2", "--layers", "2",
		"--rebalance-every", "2",    NULL
	};
	static const char *const other[] = {
		"--train-local",     "--pp", "2", "--ep", "2", "--redundant", "2", "--layers", "2",
		"--rebalance-every", "3",    NULL
	};
	char *d = make_tmpdir();
	struct cmd_out o[4]; /* full, stopped, resumed, refused */

	(void)state;
	o[0] = run_with(base, "6", NULL, 0);
	o[1] = run_with(base, "3", d, 0);
	assert_int_equal(o[0].rc + o[1].rc, 0);
	o[2] = run_with(base, "6", d, 1);
	expect_resumed(&o[0], &o[2], 3, 5);
	o[3] = run_with(other, "4", d, 1);
	assert_int_equal(o[3].rc, 0);
	assert_non_null(strstr(o[3].err, "rebalance_every is 2 in the checkpoint, 3 in this run"));
	for (int i = 0; i < 4; i++)
		cmd_free(&o[i]);
	rm_rf(d);
	free(d);
}

static void train_local_options(void **state)
{
	char *d = make_tmpdir();
	struct cmd_out full, part, res, r;

	(void)state;
	full = run_cmd((const char *const[]){ "--train-local", "--algo", "1f1b", "--pp", "2",
					      "--steps", "5", "--layers", "2", NULL });
	assert_int_equal(full.rc, 0);
	part = run_cmd((const char *const[]){ "--train-local", "--algo", "1f1b", "--pp", "2",
					      "--steps", "3", "--layers", "2", "--ckpt-dir", d,
					      "--ckpt-every", "2", NULL });
	assert_int_equal(part.rc, 0);
	{
		char names[512];

		list_dir(d, names, sizeof(names));
		assert_string_equal(names, "step-00000002 step-00000003");
	}
	res = run_cmd((const char *const[]){ "--train-local", "--algo", "1f1b", "--pp", "2",
					     "--steps", "5", "--layers", "2", "--ckpt-dir", d,
					     "--resume", NULL });
	expect_resumed(&full, &res, 3, 4);

	/* all done already */
	r = run_cmd((const char *const[]){ "--train-local", "--algo", "1f1b", "--pp", "2",
					   "--steps", "5", "--layers", "2", "--ckpt-dir", d,
					   "--resume", NULL });
	assert_int_equal(r.rc, 0);
	assert_non_null(strstr(r.err, "nothing to run"));
	cmd_free(&r);
	/* another configuration: skipped with the reason, fresh start */
	r = run_cmd((const char *const[]){ "--train-local", "--algo", "1f1b", "--pp", "2",
					   "--steps", "1", "--layers", "3", "--ckpt-dir", d,
					   "--resume", NULL });
	assert_int_equal(r.rc, 0);
	assert_non_null(strstr(r.err, "layers is 2 in the checkpoint, 3 in this run"));
	assert_non_null(strstr(r.err, "starting at step 0"));
	cmd_free(&r);

	/* the environment names the directory and interval */
	rm_rf(d);
	assert_int_equal(setenv("DP_CKPT_DIR", d, 1), 0);
	assert_int_equal(setenv("DP_CKPT_EVERY", "1", 1), 0);
	r = run_cmd((const char *const[]){ "--train-local", "--algo", "dualpipe", "--pp", "2",
					   "--steps", "2", "--layers", "2", NULL });
	assert_int_equal(unsetenv("DP_CKPT_DIR"), 0);
	assert_int_equal(unsetenv("DP_CKPT_EVERY"), 0);
	assert_int_equal(r.rc, 0);
	cmd_free(&r);
	{
		char names[512];

		list_dir(d, names, sizeof(names));
		assert_string_equal(names, "step-00000001 step-00000002");
	}

	/* usage errors and help */
	r = run_cmd((const char *const[]){ "--train-local", "--resume", NULL });
	assert_int_equal(r.rc, EX_USAGE);
	assert_non_null(strstr(r.err, "without a directory"));
	cmd_free(&r);
	r = run_cmd((const char *const[]){ "--train-local", "--ckpt-every", "x", "--ckpt-dir", d,
					   NULL });
	assert_int_equal(r.rc, EX_USAGE);
	cmd_free(&r);
	r = run_cmd((const char *const[]){ "--train-local", "--help", NULL });
	assert_int_equal(r.rc, 0);
	assert_non_null(strstr(r.out, "--ckpt-dir DIR"));
	assert_non_null(strstr(r.out, "--ckpt-every N"));
	assert_non_null(strstr(r.out, "--resume"));
	cmd_free(&r);

	cmd_free(&full);
	cmd_free(&part);
	cmd_free(&res);
	rm_rf(d);
	free(d);
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

/* Both ranks of `dpworker --train --pp 2 ... --steps @steps [--resume]`
 * over TCP on 127.0.0.1, rank 1 forked; the checkpoint directory and
 * interval come from DP_CKPT_DIR / DP_CKPT_EVERY.  out[r]: rank r's stdout,
 * err0: rank 0's stderr (caller frees). */
static void tcp_pair(const char *steps, int resume, char **out, char **err0)
{
	char peers[64], buf[8192];
	char *args[] = { "dpworker", "--train", "--algo",   "1f1b",	   "--pp",   "2",
			 "--layers", "2",	"--steps",  (char *)steps, "--rank", "0",
			 "--peers",  peers,	"--resume", NULL };
	int nargs = resume ? 15 : 14, p[2], st = 0, rc;
	size_t lo = 0, le = 0, got = 0;
	FILE *o, *e;
	pid_t pid;

	(void)snprintf(peers, sizeof(peers), "127.0.0.1:%d,127.0.0.1:%d", free_port(), free_port());
	assert_int_equal(pipe(p), 0);
	(void)fflush(stdout);
	(void)fflush(stderr);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		(void)close(p[0]);
		o = fdopen(p[1], "w");
		args[11] = "1";
		_exit(o ? dp_worker_cmd_train(nargs, args, o, stderr) | (fclose(o) ? 1 : 0) : 1);
	}
	(void)close(p[1]);
	o = open_memstream(&out[0], &lo);
	e = open_memstream(err0, &le);
	assert_non_null(o);
	assert_non_null(e);
	rc = dp_worker_cmd_train(nargs, args, o, e);
	assert_int_equal(fclose(o), 0);
	assert_int_equal(fclose(e), 0);
	for (ssize_t n;
	     got < sizeof(buf) - 1 && (n = read(p[0], buf + got, sizeof(buf) - 1 - got)) > 0;)
		got += (size_t)n;
	buf[got] = '\0';
	(void)close(p[0]);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	if (rc != 0)
		fail_msg("rank 0 exit %d: %s", rc, *err0);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	out[1] = strdup(buf);
	assert_non_null(out[1]);
}

/* The "step k rank r loss-share x" lines of @text for k >= @from. */
static char *share_lines(const char *text, long from)
{
	char *res = calloc(1, strlen(text) + 1);
	const char *p = text;

	assert_non_null(res);
	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p + 1) : strlen(p);
		char *end = NULL;
		long k = -1;

		if (strncmp(p, "step ", 5) == 0)
			k = strtol(p + 5, &end, 10);
		if (end && strncmp(end, " rank ", 6) == 0 && k >= from)
			(void)strncat(res, p, len);
		p += len;
	}
	return res;
}

/* `dpworker --train` over TCP: stop after step 2, resume to 4: the loss
 * shares of steps 2 and 3 are those of an uninterrupted run. */
static void train_tcp_resume(void **state)
{
	char *d = make_tmpdir(), *full[2], *part[2], *res[2], *e0;

	(void)state;
	tcp_pair("4", 0, full, &e0);
	free(e0);
	assert_int_equal(setenv("DP_CKPT_EVERY", "2", 1), 0);
	assert_int_equal(setenv("DP_CKPT_DIR", d, 1), 0);
	tcp_pair("2", 0, part, &e0);
	free(e0);
	tcp_pair("4", 1, res, &e0);
	assert_int_equal(unsetenv("DP_CKPT_DIR"), 0);
	assert_int_equal(unsetenv("DP_CKPT_EVERY"), 0);
	assert_non_null(strstr(e0, "rank 0: starting at step 2"));
	for (int r = 0; r < 2; r++) {
		char *a = share_lines(full[r], 2), *b = share_lines(res[r], 0);

		assert_non_null(strstr(a, "step 3 rank"));
		assert_string_equal(a, b);
		free(a);
		free(b);
		free(full[r]);
		free(part[r]);
		free(res[r]);
	}
	free(e0);
	{
		char names[512];

		list_dir(d, names, sizeof(names));
		assert_string_equal(names, "step-00000002 step-00000004");
	}
	rm_rf(d);
	free(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(crc32c_known_values),
		cmocka_unit_test(resume_dualpipe),
		cmocka_unit_test(resume_1f1b),
		cmocka_unit_test(resume_zb1p_dualpipev),
		cmocka_unit_test(resume_on_device_backend),
		cmocka_unit_test(corrupt_byte_is_skipped),
		cmocka_unit_test(truncated_file_is_skipped),
		cmocka_unit_test(missing_manifest_or_file_is_skipped),
		cmocka_unit_test(other_config_is_skipped),
		cmocka_unit_test(fallback_and_fresh_start),
		cmocka_unit_test(crash_before_rename_leaves_nothing_visible),
		cmocka_unit_test(maybe_save_and_env),
		cmocka_unit_test(prune_keeps_the_newest_complete),
		cmocka_unit_test(maybe_save_keeps_the_last_two),
		cmocka_unit_test(train_local_options),
		cmocka_unit_test(train_local_ep_resume),
		cmocka_unit_test(train_tcp_resume),
		cmocka_unit_test(train_local_dp_resume),
		cmocka_unit_test(version_1_checkpoint_still_loads),
		cmocka_unit_test(version_2_checkpoint_still_loads),
		cmocka_unit_test(version_3_checkpoint_still_loads),
		cmocka_unit_test(train_local_rebalance_resume),
		cmocka_unit_test(resume_rebalancing),
		cmocka_unit_test(train_local_eplb_resume),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
