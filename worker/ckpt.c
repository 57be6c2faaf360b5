/* worker/ckpt.c - checkpoints of the pipeline executor (see dp_ckpt.h and
 * docs/executor.md, "Checkpoints").
 *
 * Rank file: a 216-byte little-endian header (192 in version 1, whose
 * fingerprint has no dp field: read as dp 1; 200 in version 2, without
 * expert_slots: read as 0, the contiguous placement; 208 in version 3,
 * without rebalance_every: read as 0, no rebalancing), then per chunk a
 * record (stage, Adam step, n, then w, m, v as n floats each, host order:
 * the supported hosts are little-endian), then with rebalance_every > 0
 * the rebalancing record (window steps i64, re-placements i64, n u64 =
 * layers * experts, the n loads of the current placement as floats, the n
 * routed rows of the current window as i64).  The header carries its own CRC32C
 * and the payload's, so a file can be checked without the manifest (rank 0
 * does so while it waits for the other ranks).  The manifest adds each
 * file's size and whole-file CRC32C and is the completion mark.
 *
 * Data parallelism: the dp replicas hold the same bits (the executor sums
 * every gradient over them in a fixed order), so only replica 0 writes:
 * rank files 0..pp*ep-1, one per (pp rank, ep rank); every replica loads
 * the file of its own (pp rank, ep rank). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/dp_log.h"
#include "common/dp_util.h"
#include "worker/dp_ckpt.h"

#define MAGIC	       "DPCKPT\n" /* 8 bytes with the NUL */
#define FP_N	       20	  /* fingerprint fields written; versions 1, 2, 3 have 17, 18, 19 */
#define FP_N_V1	       17
#define FP_N_V2	       18
#define FP_N_V3	       19
#define HDR_PB_OF(nfp) (40 + 8 * (nfp)) /* payload_bytes offset */
#define HDR_PB	       HDR_PB_OF(FP_N)
#define HDR_BYTES      (HDR_PB + 16)
#define MANIFEST       "manifest.json"
#define FORMAT_NAME    "dpctl-checkpoint"
#define DEFAULT_WAIT   60000
#define CHUNK_REC_HEAD 24 /* stage i32, reserved i32, adam step i64, n u64 */
#define REBAL_REC_HEAD 24 /* window steps i64, re-placements i64, n u64 */

/* dp_err_set() whose result the static analyser can see is negative
 * (@code is a constant or a saved errno: evaluated twice). */
static int neg_code(int code)
{
	return code > 0 ? -code : -EIO;
}
#define ck_err(err, code, ...) ((void)dp_err_set(err, code, __VA_ARGS__), neg_code(code))

/* ---- CRC32C ----------------------------------------------------------- */

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
		crc_table[i] = c;
	}
}

uint32_t dp_ckpt_crc32c(uint32_t crc, const void *buf, size_t len)
{
	const unsigned char *p = buf;

	(void)pthread_once(&crc_once, crc_init);
	crc = ~crc;
	while (len--)
		crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

/* ---- configuration fingerprint ------------------------------------------ */

static const char *const fp_names[FP_N] = {
	"algo",	   "pp",	 "micro",	 "layers",
	"hidden",  "ffn_hidden", "experts",	 "shared_experts",
	"top_k",   "groups",	 "topk_groups",	 "vocab",
	"seq_len", "seqs",	 "lr_bits",	 "seed",
	"ep",	   "dp",	 "expert_slots", "rebalance_every",
};

/* Fingerprint fields of format @version, and the value a field an older
 * format lacks stands for: dp 1, expert_slots 0 (contiguous placement),
 * rebalance_every 0 (no rebalancing state). */
static int fp_count(long version)
{
	return version == 1 ? FP_N_V1 : version == 2 ? FP_N_V2 : version == 3 ? FP_N_V3 : FP_N;
}

static int64_t fp_default(int i)
{
	return i == 17 ? 1 : 0;
}

/* Rank files of a checkpoint: pp x ep, replica 0's ranks (ep 0 means 1). */
static int nranks_of(const struct dp_exec_cfg *xc)
{
	return xc->pp * (xc->ep > 1 ? xc->ep : 1);
}

/* The rank file this rank writes (replica 0) or reads (any replica):
 * its rank within its replica, pp_rank * ep + ep_rank. */
static int file_rank(const struct dp_exec_cfg *xc)
{
	return xc->rank % nranks_of(xc);
}

static void fingerprint(const struct dp_exec_cfg *xc, int64_t *fp)
{
	const struct dp_model_cfg *m = &xc->model;
	uint32_t lr_bits;

	memcpy(&lr_bits, &m->lr, sizeof(lr_bits));
	fp[0] = xc->algo;
	fp[1] = xc->pp;
	fp[2] = xc->micro;
	fp[3] = m->layers;
	fp[4] = m->hidden;
	fp[5] = m->ffn_hidden;
	fp[6] = m->experts;
	fp[7] = m->shared_experts;
	fp[8] = m->top_k;
	fp[9] = m->groups;
	fp[10] = m->topk_groups;
	fp[11] = m->vocab;
	fp[12] = m->seq_len;
	fp[13] = m->seqs;
	fp[14] = lr_bits;
	fp[15] = (int64_t)m->seed;
	fp[16] = xc->ep > 1 ? xc->ep : 1;
	fp[17] = xc->dp > 1 ? xc->dp : 1;
	/* the expert placement: 0 contiguous (a rank's copies of the experts
	 * it does not own are stale), else R slots of an EPLB placement
	 * (dp_exec.h: every rank holds every expert's current values) */
	fp[18] = (xc->ep > 1 && (xc->redundant > 0 || xc->expert_load))
			 ? (int64_t)m->experts + xc->redundant
			 : 0;
	fp[19] = xc->rebalance_every;
}

static void fp_value_str(int i, int64_t v, char *buf, size_t size)
{
	if (i == 0) {
		(void)snprintf(buf, size, "%s", dp_sched_algo_name((enum dp_sched_algo)v));
	} else if (i == 14) {
		uint32_t bits = (uint32_t)v;
		float f;

		memcpy(&f, &bits, sizeof(f));
		(void)snprintf(buf, size, "%g", (double)f);
	} else {
		(void)snprintf(buf, size, "%lld", (long long)v);
	}
}

/* -ESTALE naming the first field that differs, or 0. */
static int fp_compare(const int64_t *have, const int64_t *want, struct dp_err *err)
{
	for (int i = 0; i < FP_N; i++) {
		char a[32], b[32];

		if (have[i] == want[i])
			continue;
		fp_value_str(i, have[i], a, sizeof(a));
		fp_value_str(i, want[i], b, sizeof(b));
		return ck_err(err, ESTALE,
			      "different configuration: %s is %s in the checkpoint, %s in this run",
			      i == 14 ? "lr" : fp_names[i], a, b);
	}
	return 0;
}

/* ---- little-endian header ----------------------------------------------- */

static void put32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
	uint32_t v = 0;

	for (int i = 0; i < 4; i++)
		v |= (uint32_t)p[i] << (8 * i);
	return v;
}

static uint64_t get64(const unsigned char *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

struct hdr {
	uint32_t version, rank, nranks, nchunks;
	size_t bytes; /* of the header: HDR_BYTES, or 192 in version 1 */
	int64_t step;
	int64_t fp[FP_N];
	uint64_t payload_bytes;
	uint32_t payload_crc;
};

/* Layout: magic[8] version rank nranks (u32) pad(u32) step(i64) nchunks nfp
 * (u32) fp[FP_N](i64) payload_bytes(u64) payload_crc header_crc (u32). */
static void hdr_encode(const struct hdr *h, unsigned char *b)
{
	memset(b, 0, HDR_BYTES);
	memcpy(b, MAGIC, 8);
	put32(b + 8, h->version);
	put32(b + 12, h->rank);
	put32(b + 16, h->nranks);
	put64(b + 24, (uint64_t)h->step);
	put32(b + 32, h->nchunks);
	put32(b + 36, FP_N);
	for (int i = 0; i < FP_N; i++)
		put64(b + 40 + (size_t)8 * i, (uint64_t)h->fp[i]);
	put64(b + HDR_PB, h->payload_bytes);
	put32(b + HDR_PB + 8, h->payload_crc);
	put32(b + HDR_PB + 12, dp_ckpt_crc32c(0, b, HDR_PB + 12));
}

/* Versions 1 (17 fingerprint fields, no dp: dp 1), 2 (18, no
 * expert_slots: 0), 3 (19, no rebalance_every: 0) and 4 (20). */
static int hdr_decode(const unsigned char *b, size_t len, struct hdr *h, struct dp_err *err)
{
	uint32_t nfp;
	size_t pb;

	memset(h, 0, sizeof(*h));
	if (len < 40)
		return ck_err(err, EBADMSG, "truncated: %zu bytes, the header alone is %d", len,
			      HDR_BYTES);
	if (memcmp(b, MAGIC, 8) != 0)
		return ck_err(err, EBADMSG, "not a checkpoint file (bad magic)");
	h->version = get32(b + 8);
	if (h->version < 1 || h->version > DP_CKPT_VERSION)
		return ck_err(err, ESTALE, "format version %u, this build reads 1 to %d",
			      h->version, DP_CKPT_VERSION);
	nfp = get32(b + 36);
	if (nfp != (uint32_t)fp_count(h->version))
		return ck_err(err, EBADMSG, "bad header (fingerprint size)");
	pb = HDR_PB_OF(nfp);
	h->bytes = pb + 16;
	if (len < h->bytes)
		return ck_err(err, EBADMSG, "truncated: %zu bytes, the header alone is %zu", len,
			      h->bytes);
	if (get32(b + pb + 12) != dp_ckpt_crc32c(0, b, pb + 12))
		return ck_err(err, EBADMSG, "header checksum mismatch");
	h->rank = get32(b + 12);
	h->nranks = get32(b + 16);
	h->step = (int64_t)get64(b + 24);
	h->nchunks = get32(b + 32);
	for (uint32_t i = 0; i < nfp; i++)
		h->fp[i] = (int64_t)get64(b + 40 + (size_t)8 * i);
	for (uint32_t i = nfp; i < FP_N; i++)
		h->fp[i] = fp_default((int)i); /* a field older formats lack */
	h->payload_bytes = get64(b + pb);
	h->payload_crc = get32(b + pb + 8);
	return 0;
}

/* ---- files ---------------------------------------------------------------- */

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int fsync_dir(const char *dir, struct dp_err *err)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;

	if (fd < 0) {
		int e = errno;

		return ck_err(err, e, "ckpt: cannot open '%s': %s", dir, strerror(e));
	}
	if (fsync(fd)) {
		int e = errno;

		rc = ck_err(err, e, "ckpt: cannot fsync '%s': %s", dir, strerror(e));
	}
	(void)close(fd);
	return rc;
}

/* mkdir -p @path, fsyncing the parent of each directory made. */
static int make_dirs(const char *path, struct dp_err *err)
{
	char buf[4096];
	size_t len = strlen(path);

	if (len == 0 || len >= sizeof(buf))
		return ck_err(err, ENAMETOOLONG, "ckpt: bad directory name '%s'", path);
	memcpy(buf, path, len + 1);
	for (size_t i = 1; i <= len; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		buf[i] = '\0';
		if (mkdir(buf, 0777) == 0) {
			char *slash = strrchr(buf, '/');
			int rc;

			if (slash && slash != buf) {
				*slash = '\0';
				rc = fsync_dir(buf, err);
				*slash = '/';
			} else {
				rc = fsync_dir(slash ? "/" : ".", err);
			}
			if (rc)
				return rc;
		} else if (errno != EEXIST) {
			int e = errno;

			return ck_err(err, e, "ckpt: cannot create '%s': %s", buf, strerror(e));
		}
		buf[i] = i < len ? '/' : '\0';
	}
	return 0;
}

struct piece {
	const void *p;
	size_t len;
};

/* Write @pieces to @dir/.NAME.tmp, fsync, rename to @dir/NAME, fsync @dir.
 * A crash at any point leaves NAME either absent or complete (the hidden
 * temp file is overwritten by the next attempt). */
static int atomic_write(const char *dir, const char *name, const struct piece *pieces, int n,
			struct dp_err *err)
{
	char tmp[4096], dst[4096];
	int fd, rc = 0, e;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name) >= sizeof(tmp) ||
	    (size_t)snprintf(dst, sizeof(dst), "%s/%s", dir, name) >= sizeof(dst))
		return ck_err(err, ENAMETOOLONG, "ckpt: path too long in '%s'", dir);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
	if (fd < 0) {
		e = errno;
		return ck_err(err, e, "ckpt: cannot create '%s': %s", tmp, strerror(e));
	}
	for (int i = 0; i < n && !rc; i++)
		rc = write_all(fd, pieces[i].p, pieces[i].len);
	if (rc) {
		rc = ck_err(err, -rc, "ckpt: cannot write '%s': %s", tmp, strerror(-rc));
		goto fail;
	}
	if (fsync(fd)) {
		e = errno;
		rc = ck_err(err, e, "ckpt: cannot fsync '%s': %s", tmp, strerror(e));
		goto fail;
	}
	if (close(fd)) {
		e = errno;
		fd = -1;
		rc = ck_err(err, e, "ckpt: cannot close '%s': %s", tmp, strerror(e));
		goto fail;
	}
	fd = -1;
	if (rename(tmp, dst)) {
		e = errno;
		rc = ck_err(err, e, "ckpt: cannot rename '%s' to '%s': %s", tmp, dst, strerror(e));
		goto fail;
	}
	return fsync_dir(dir, err);
fail:
	if (fd >= 0)
		(void)close(fd);
	(void)unlink(tmp);
	return rc;
}

/* Read all of @path (caller frees *buf).  -ENOENT if missing. */
static int slurp(const char *path, unsigned char **buf, size_t *len, struct dp_err *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC), rc = 0;
	unsigned char *b = NULL;
	struct stat sb;
	size_t got = 0;

	if (fd < 0) {
		int e = errno;

		return ck_err(err, e, "cannot open '%s': %s", path, strerror(e));
	}
	if (fstat(fd, &sb) || sb.st_size < 0) {
		rc = ck_err(err, EIO, "cannot stat '%s'", path);
		goto out;
	}
	b = calloc(1, (size_t)sb.st_size + 1);
	if (!b) {
		rc = ck_err(err, ENOMEM, "out of memory reading '%s'", path);
		goto out;
	}
	while (got < (size_t)sb.st_size) {
		ssize_t n = read(fd, b + got, (size_t)sb.st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = ck_err(err, EIO, "cannot read '%s'", path);
			goto out;
		}
		got += (size_t)n;
	}
	*buf = b;
	*len = got;
	b = NULL;
out:
	free(b);
	(void)close(fd);
	return rc;
}

int dp_ckpt_step_path(const char *dir, long step, char *buf, size_t size, struct dp_err *err)
{
	if ((size_t)snprintf(buf, size, "%s/step-%08ld", dir, step) >= size)
		return ck_err(err, ENAMETOOLONG, "ckpt: path too long in '%s'", dir);
	return 0;
}

static int rank_path(const char *sdir, int rank, char *buf, size_t size, struct dp_err *err)
{
	if ((size_t)snprintf(buf, size, "%s/rank-%04d.bin", sdir, rank) >= size)
		return ck_err(err, ENAMETOOLONG, "ckpt: path too long in '%s'", sdir);
	return 0;
}

/* Check a whole rank file in memory against what this run expects: header,
 * payload size and checksum.  Messages without a prefix (callers add the
 * file name). */
static int check_rank_buf(const unsigned char *b, size_t len, int rank, long step,
			  const struct dp_exec_cfg *xc, struct hdr *h, struct dp_err *err)
{
	int64_t want[FP_N];
	int rc = hdr_decode(b, len, h, err);

	if (rc)
		return rc;
	if (len - h->bytes != h->payload_bytes)
		return ck_err(err, EBADMSG, "truncated: %zu payload bytes, header says %llu",
			      len - h->bytes, (unsigned long long)h->payload_bytes);
	if (dp_ckpt_crc32c(0, b + h->bytes, len - h->bytes) != h->payload_crc)
		return ck_err(err, EBADMSG, "payload checksum mismatch");
	fingerprint(xc, want);
	rc = fp_compare(h->fp, want, err);
	if (rc)
		return rc;
	if (h->rank != (uint32_t)rank || h->nranks != (uint32_t)nranks_of(xc) || h->step != step)
		return ck_err(err, EBADMSG,
			      "header says rank %u of %u, step %lld; expected rank %d of %d, "
			      "step %ld",
			      h->rank, h->nranks, (long long)h->step, rank, nranks_of(xc), step);
	return 0;
}

/* ---- save -------------------------------------------------------------------- */

static int write_rank_file(const char *sdir, const struct dp_exec_cfg *xc, struct dp_exec *ex,
			   long step, struct dp_err *err)
{
	int nch = dp_exec_nchunks(ex), np = 0, rc;
	unsigned char head[HDR_BYTES], rec[2][CHUNK_REC_HEAD], rrec[REBAL_REC_HEAD];
	unsigned char *rows = NULL;
	struct piece pieces[1 + 2 * 4 + 3];
	struct hdr h = { .version = DP_CKPT_VERSION };
	char name[32];
	uint32_t crc = 0;

	if (nch < 1 || nch > 2)
		return ck_err(err, EINVAL, "ckpt: executor has %d chunks", nch);
	h.rank = (uint32_t)file_rank(xc);
	h.nranks = (uint32_t)nranks_of(xc);
	h.step = step;
	h.nchunks = (uint32_t)nch;
	fingerprint(xc, h.fp);
	pieces[np++] = (struct piece){ head, HDR_BYTES };
	for (int c = 0; c < nch; c++) {
		struct dp_model_flat f;
		int stage = 0;

		dp_model_stage_flat(dp_exec_chunk(ex, c, &stage), &f);
		memset(rec[c], 0, CHUNK_REC_HEAD);
		put32(rec[c], (uint32_t)stage);
		put64(rec[c] + 8, (uint64_t)*f.adam_step);
		put64(rec[c] + 16, (uint64_t)f.n);
		pieces[np++] = (struct piece){ rec[c], CHUNK_REC_HEAD };
		pieces[np++] = (struct piece){ f.w, f.n * sizeof(float) };
		pieces[np++] = (struct piece){ f.m, f.n * sizeof(float) };
		pieces[np++] = (struct piece){ f.v, f.n * sizeof(float) };
	}
	if (xc->rebalance_every > 0) {
		const size_t LE = (size_t)xc->model.layers * (size_t)xc->model.experts;
		struct dp_exec_rebalance rb;

		rc = dp_exec_rebalance_info(ex, &rb, err);
		if (rc)
			return dp_err_prefix(err, "ckpt");
		rows = malloc(LE * 8 + 1);
		if (!rows)
			return ck_err(err, ENOMEM, "ckpt: out of memory");
		put64(rrec, (uint64_t)rb.window_steps);
		put64(rrec + 8, (uint64_t)rb.count);
		put64(rrec + 16, (uint64_t)LE);
		for (size_t i = 0; i < LE; i++)
			put64(rows + 8 * i, (uint64_t)rb.rows[i]);
		pieces[np++] = (struct piece){ rrec, REBAL_REC_HEAD };
		pieces[np++] = (struct piece){ rb.load, LE * sizeof(float) };
		pieces[np++] = (struct piece){ rows, LE * 8 };
	}
	for (int i = 1; i < np; i++) {
		crc = dp_ckpt_crc32c(crc, pieces[i].p, pieces[i].len);
		h.payload_bytes += pieces[i].len;
	}
	h.payload_crc = crc;
	hdr_encode(&h, head);
	(void)snprintf(name, sizeof(name), "rank-%04d.bin", file_rank(xc));
	rc = atomic_write(sdir, name, pieces, np, err);
	free(rows);
	return rc;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	(void)nanosleep(&ts, NULL);
}

static long now_ms(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Rank 0: wait for every rank file to be there and valid, then write the
 * manifest with each file's size and CRC32C. */
static int write_manifest(const char *sdir, const struct dp_exec_cfg *xc, long step, int wait_ms,
			  struct dp_err *err)
{
	json_t *root = NULL, *files = NULL, *conf = NULL;
	long deadline = now_ms() + (wait_ms > 0 ? wait_ms : DEFAULT_WAIT);
	int64_t fp[FP_N];
	char *text = NULL;
	int rc = 0;

	fingerprint(xc, fp);
	files = json_array();
	conf = json_object();
	if (!files || !conf) {
		rc = ck_err(err, ENOMEM, "ckpt: out of memory");
		goto out;
	}
	for (int r = 0; r < nranks_of(xc); r++) {
		char path[4096], crcs[16];
		unsigned char *b = NULL;
		size_t len = 0;
		struct dp_err e = { 0 };
		struct hdr h;
		int delay = 2;

		rc = rank_path(sdir, r, path, sizeof(path), err);
		if (rc)
			goto out;
		for (;;) {
			rc = slurp(path, &b, &len, &e);
			if (!rc) {
				rc = check_rank_buf(b, len, r, step, xc, &h, &e);
				if (rc) {
					free(b);
					b = NULL;
				}
			}
			if (!rc)
				break;
			if (now_ms() >= deadline) {
				rc = ck_err(err, ETIMEDOUT,
					    "ckpt: no valid file of rank %d in '%s' after %d ms "
					    "(%s): no manifest written",
					    r, sdir, wait_ms > 0 ? wait_ms : DEFAULT_WAIT, e.msg);
				goto out;
			}
			sleep_ms(delay);
			if (delay < 100)
				delay *= 2;
		}
		(void)snprintf(crcs, sizeof(crcs), "%08x", dp_ckpt_crc32c(0, b, len));
		free(b);
		{
			char name[32];
			json_t *ent;

			(void)snprintf(name, sizeof(name), "rank-%04d.bin", r);
			ent = json_pack("{s:s, s:i, s:I, s:s}", "name", name, "rank", r, "bytes",
					(json_int_t)len, "crc32c", crcs);
			if (!ent || json_array_append_new(files, ent)) {
				rc = ck_err(err, ENOMEM, "ckpt: out of memory");
				goto out;
			}
		}
	}
	for (int i = 0; i < FP_N; i++) {
		json_t *v = i == 0 ? json_string(dp_sched_algo_name((enum dp_sched_algo)fp[i]))
				   : json_integer((json_int_t)fp[i]);

		if (!v || json_object_set_new(conf, fp_names[i], v)) {
			rc = ck_err(err, ENOMEM, "ckpt: out of memory");
			goto out;
		}
	}
	root = json_pack("{s:s, s:i, s:I, s:i, s:o, s:o}", "format", FORMAT_NAME, "version",
			 DP_CKPT_VERSION, "step", (json_int_t)step, "nranks", nranks_of(xc),
			 "config", conf, "files", files);
	conf = files = NULL; /* stolen by "o", also on failure */
	if (!root) {
		rc = ck_err(err, ENOMEM, "ckpt: out of memory");
		goto out;
	}
	text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	if (!text) {
		rc = ck_err(err, ENOMEM, "ckpt: out of memory");
		goto out;
	}
	{
		size_t tl = strlen(text);
		struct piece p[2] = { { text, tl }, { "\n", 1 } };

		rc = atomic_write(sdir, MANIFEST, p, 2, err);
	}
out:
	free(text);
	json_decref(conf);
	json_decref(files);
	json_decref(root);
	return rc;
}

int dp_ckpt_save(const char *dir, const struct dp_exec_cfg *xc, struct dp_exec *ex, long step,
		 int wait_ms, struct dp_err *err)
{
	char sdir[4096];
	int rc;

	if (!dir || !*dir)
		return ck_err(err, EINVAL, "ckpt: no directory");
	if (step < 0)
		return ck_err(err, EINVAL, "ckpt: bad step %ld", step);
	if (xc->rank >= nranks_of(xc))
		return 0; /* a DP replica other than 0: replica 0 holds the same bits */
	rc = dp_ckpt_step_path(dir, step, sdir, sizeof(sdir), err);
	if (!rc)
		rc = make_dirs(sdir, err);
	if (rc)
		return rc;
	if (xc->rank == 0) {
		/* a manifest of an earlier run at this step must not vouch for
		 * files that are about to be replaced */
		char mpath[4200];

		(void)snprintf(mpath, sizeof(mpath), "%s/%s", sdir, MANIFEST);
		if (unlink(mpath) == 0) {
			rc = fsync_dir(sdir, err);
			if (rc)
				return rc;
		}
	}
	rc = write_rank_file(sdir, xc, ex, step, err);
	if (!rc && xc->rank == 0)
		rc = write_manifest(sdir, xc, step, wait_ms, err);
	if (!rc)
		dp_log(DP_LOG_INFO, "ckpt", "rank %d wrote step %ld in '%s'", xc->rank, step, sdir);
	return rc;
}

int dp_ckpt_maybe_save(const struct dp_ckpt_cfg *cc, const struct dp_exec_cfg *xc,
		       struct dp_exec *ex, long done, long total, struct dp_err *err)
{
	int rc;

	if (!cc || !cc->dir || !*cc->dir || done <= 0)
		return 0;
	if (!(cc->every > 0 && done % cc->every == 0) && done != total)
		return 0;
	rc = dp_ckpt_save(cc->dir, xc, ex, done, cc->wait_ms, err);
	if (rc)
		return rc;
	if (cc->keep > 0 && xc->rank == 0) {
		struct dp_err e = { 0 };
		int removed = 0;

		if (dp_ckpt_prune(cc->dir, cc->keep, &removed, &e))
			dp_log(DP_LOG_WARN, "ckpt", "keeping the last %ld: %s", cc->keep, e.msg);
		else if (removed)
			dp_log(DP_LOG_INFO, "ckpt", "removed %d old checkpoint%s (keep %ld)",
			       removed, removed == 1 ? "" : "s", cc->keep);
	}
	return 1;
}

/* ---- check, find, load ---------------------------------------------------------- */

static int manifest_check(const char *sdir, long step, const struct dp_exec_cfg *xc,
			  struct dp_err *err)
{
	char mpath[4200];
	json_error_t je;
	json_t *root, *conf, *files;
	int64_t want[FP_N], have[FP_N];
	json_int_t version;
	int rc = 0;

	(void)snprintf(mpath, sizeof(mpath), "%s/%s", sdir, MANIFEST);
	if (access(mpath, F_OK))
		return ck_err(err, ENOENT, "incomplete: no %s", MANIFEST);
	root = json_load_file(mpath, 0, &je);
	if (!root)
		return ck_err(err, EBADMSG, "corrupt %s: %s (line %d)", MANIFEST, je.text, je.line);
	if (!json_is_object(root) || !json_is_string(json_object_get(root, "format")) ||
	    strcmp(json_string_value(json_object_get(root, "format")), FORMAT_NAME) != 0) {
		rc = ck_err(err, EBADMSG, "%s is not a checkpoint manifest", MANIFEST);
		goto out;
	}
	version = json_integer_value(json_object_get(root, "version"));
	if (version < 1 || version > DP_CKPT_VERSION) {
		rc = ck_err(err, ESTALE, "%s: format version %lld, this build reads 1 to %d",
			    MANIFEST, (long long)version, DP_CKPT_VERSION);
		goto out;
	}
	if (json_integer_value(json_object_get(root, "step")) != step) {
		rc = ck_err(err, EBADMSG, "%s names step %lld", MANIFEST,
			    (long long)json_integer_value(json_object_get(root, "step")));
		goto out;
	}
	conf = json_object_get(root, "config");
	fingerprint(xc, want);
	for (int i = 0; i < FP_N; i++) {
		json_t *v = json_object_get(conf, fp_names[i]);

		if (i == 0) {
			enum dp_sched_algo a;

			if (!json_is_string(v) ||
			    dp_sched_algo_parse(json_string_value(v), &a, NULL))
				have[i] = -1;
			else
				have[i] = a;
		} else if (!v && i >= fp_count((long)version)) {
			have[i] = fp_default(i); /* a field older formats lack */
		} else {
			have[i] = json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
		}
	}
	rc = fp_compare(have, want, err);
	if (rc)
		goto out;
	files = json_object_get(root, "files");
	if (json_integer_value(json_object_get(root, "nranks")) != nranks_of(xc) ||
	    !json_is_array(files) || json_array_size(files) != (size_t)nranks_of(xc)) {
		rc = ck_err(err, EBADMSG, "%s does not list %d rank files", MANIFEST,
			    nranks_of(xc));
		goto out;
	}
	for (int r = 0; r < nranks_of(xc); r++) {
		json_t *ent = json_array_get(files, (size_t)r);
		const char *name = json_string_value(json_object_get(ent, "name"));
		const char *crcs = json_string_value(json_object_get(ent, "crc32c"));
		json_int_t bytes = json_integer_value(json_object_get(ent, "bytes"));
		char path[4096], want_name[32], got[16];
		unsigned char *b = NULL;
		size_t len = 0;
		struct hdr h;

		(void)snprintf(want_name, sizeof(want_name), "rank-%04d.bin", r);
		if (!name || !crcs || strcmp(name, want_name) != 0) {
			rc = ck_err(err, EBADMSG, "%s: bad entry %d", MANIFEST, r);
			goto out;
		}
		rc = rank_path(sdir, r, path, sizeof(path), err);
		if (rc)
			goto out;
		rc = slurp(path, &b, &len, err);
		if (rc == -ENOENT)
			rc = ck_err(err, ENOENT, "missing %s", name);
		if (rc)
			goto out;
		(void)snprintf(got, sizeof(got), "%08x", dp_ckpt_crc32c(0, b, len));
		if ((json_int_t)len != bytes)
			rc = ck_err(err, EBADMSG, "%s: %zu bytes, manifest says %lld", name, len,
				    (long long)bytes);
		else if (strcmp(got, crcs) != 0)
			rc = ck_err(err, EBADMSG, "%s: checksum mismatch (crc32c %s, manifest %s)",
				    name, got, crcs);
		else if (check_rank_buf(b, len, r, step, xc, &h, err))
			rc = dp_err_prefix(err, "%s", name);
		free(b);
		if (rc)
			goto out;
	}
out:
	json_decref(root);
	return rc;
}

int dp_ckpt_check(const char *dir, long step, const struct dp_exec_cfg *xc, struct dp_err *err)
{
	char sdir[4096];
	int rc = dp_ckpt_step_path(dir, step, sdir, sizeof(sdir), err);

	if (rc)
		return rc;
	rc = manifest_check(sdir, step, xc, err);
	if (rc)
		return dp_err_prefix(err, "ckpt: '%s'", sdir);
	return 0;
}

static int cmp_desc(const void *a, const void *b)
{
	long x = *(const long *)a, y = *(const long *)b;

	return x < y ? 1 : x > y ? -1 : 0;
}

/* Step numbers of the "step-<digits>" entries of @dir (caller frees). */
static int list_steps(const char *dir, long **out, size_t *n, struct dp_err *err)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	long *steps = NULL;
	size_t cnt = 0, cap = 0;
	int rc = 0;

	if (!d) {
		int e = errno;

		return ck_err(err, e, "ckpt: cannot open '%s': %s", dir, strerror(e));
	}
	while ((de = readdir(d))) {
		const char *s = de->d_name;
		char *end;
		long v;

		if (strncmp(s, "step-", 5) != 0 || s[5] < '0' || s[5] > '9')
			continue;
		errno = 0;
		v = strtol(s + 5, &end, 10);
		if (errno || *end || v < 0)
			continue;
		if (cnt == cap) {
			size_t nc = cap ? 2 * cap : 16;
			long *ns = realloc(steps, nc * sizeof(long));

			if (!ns) {
				rc = ck_err(err, ENOMEM, "ckpt: out of memory");
				goto out;
			}
			steps = ns;
			cap = nc;
		}
		steps[cnt++] = v;
	}
	if (cnt)
		qsort(steps, cnt, sizeof(long), cmp_desc);
	*out = steps;
	*n = cnt;
	steps = NULL;
out:
	free(steps);
	(void)closedir(d);
	return rc;
}

/* Remove step directory @sdir: manifest first, then its other entries
 * (regular files only), then itself.  0 or -errno with @err. */
static int remove_step(const char *sdir, struct dp_err *err)
{
	char mpath[4200];
	struct dirent *de;
	DIR *d;
	int rc = 0, e;

	(void)snprintf(mpath, sizeof(mpath), "%s/%s", sdir, MANIFEST);
	if (unlink(mpath) && (e = errno) != ENOENT)
		return ck_err(err, e, "ckpt: cannot remove '%s': %s", mpath, strerror(e));
	d = opendir(sdir);
	if (!d) {
		e = errno;
		return ck_err(err, e, "ckpt: cannot open '%s': %s", sdir, strerror(e));
	}
	while ((de = readdir(d))) {
		struct stat sb;

		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (fstatat(dirfd(d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) == 0 &&
		    S_ISDIR(sb.st_mode)) {
			rc = ck_err(err, ENOTEMPTY, "ckpt: '%s' holds a directory '%s': left alone",
				    sdir, de->d_name);
			continue;
		}
		if (unlinkat(dirfd(d), de->d_name, 0) && (e = errno) != ENOENT && !rc)
			rc = ck_err(err, e, "ckpt: cannot remove '%s/%s': %s", sdir, de->d_name,
				    strerror(e));
	}
	(void)closedir(d);
	if (!rc && rmdir(sdir)) {
		e = errno;
		rc = ck_err(err, e, "ckpt: cannot remove '%s': %s", sdir, strerror(e));
	}
	return rc;
}

int dp_ckpt_prune(const char *dir, long keep, int *removed, struct dp_err *err)
{
	long *steps = NULL;
	size_t n = 0;
	long complete = 0;
	int rc, gone = 0;

	if (removed)
		*removed = 0;
	if (!dir || !*dir || keep < 1)
		return ck_err(err, EINVAL, "ckpt: prune needs a directory and keep >= 1");
	rc = list_steps(dir, &steps, &n, err);
	for (size_t i = 0; i < n && !rc; i++) {
		char sdir[4096] = "", mpath[4200];
		struct dp_err e = { 0 };

		if ((i > 0 && steps[i] == steps[i - 1]) ||
		    dp_ckpt_step_path(dir, steps[i], sdir, sizeof(sdir), &e))
			continue;
		if (complete < keep) {
			(void)snprintf(mpath, sizeof(mpath), "%s/%s", sdir, MANIFEST);
			complete += access(mpath, F_OK) == 0;
			continue;
		}
		if (remove_step(sdir, &e)) {
			dp_log(DP_LOG_WARN, "ckpt", "%s", e.msg);
			if (err && !err->code)
				*err = e;
			continue;
		}
		gone++;
	}
	free(steps);
	if (removed)
		*removed = gone;
	if (!rc && err && err->code)
		rc = -err->code;
	return rc;
}

int dp_ckpt_latest(const char *dir, const struct dp_exec_cfg *xc, long *step, struct dp_err *err)
{
	long *steps = NULL;
	size_t n = 0;
	int rc;

	if (!dir || !*dir)
		return ck_err(err, ENOENT, "ckpt: no directory");
	rc = list_steps(dir, &steps, &n, err);
	if (rc)
		return rc;
	rc = ck_err(err, ENOENT, "ckpt: no complete checkpoint in '%s'", dir);
	for (size_t i = 0; i < n; i++) {
		struct dp_err e = { 0 };

		if (i > 0 && steps[i] == steps[i - 1])
			continue;
		char sdir[4096] = "";

		if (dp_ckpt_step_path(dir, steps[i], sdir, sizeof(sdir), &e) ||
		    manifest_check(sdir, steps[i], xc, &e)) {
			dp_log(DP_LOG_WARN, "ckpt", "skipping '%s': %s", sdir, e.msg);
			continue;
		}
		*step = steps[i];
		rc = 0;
		break;
	}
	if (rc == -ENOENT && n)
		(void)ck_err(err, ENOENT, "ckpt: no complete checkpoint in '%s' (%zu skipped)", dir,
			     n);
	free(steps);
	return rc;
}

/* The rebalancing record at @off (rebalance_every > 0: the fingerprint
 * matched, so the file has one): checked (finite loads, rows >= 0), and
 * with @apply restored. */
static int parse_rebalance(const struct dp_exec_cfg *xc, struct dp_exec *ex, const unsigned char *b,
			   size_t off, size_t len, int apply, struct dp_err *err)
{
	const size_t LE = (size_t)xc->model.layers * (size_t)xc->model.experts;
	int64_t *rows;
	float *load;
	int rc;

	if (len - off < REBAL_REC_HEAD || get64(b + off + 16) != LE)
		return ck_err(err, EBADMSG, "bad rebalancing record");
	if (len - off - REBAL_REC_HEAD != LE * (sizeof(float) + 8))
		return ck_err(err, EBADMSG, "rebalancing record of %zu bytes, expected %zu",
			      len - off - REBAL_REC_HEAD, LE * (sizeof(float) + 8));
	for (size_t i = 0; !apply && i < LE; i++) {
		float f;

		memcpy(&f, b + off + REBAL_REC_HEAD + i * sizeof(float), sizeof(f));
		if (!isfinite(f) ||
		    (int64_t)get64(b + off + REBAL_REC_HEAD + LE * sizeof(float) + 8 * i) < 0)
			return ck_err(err, EBADMSG, "bad rebalancing record");
	}
	if (!apply)
		return 0;
	rows = malloc(LE * sizeof(int64_t) + 1);
	load = malloc(LE * sizeof(float) + 1);
	if (!rows || !load) {
		free(rows);
		free(load);
		return ck_err(err, ENOMEM, "ckpt: out of memory");
	}
	off += REBAL_REC_HEAD;
	memcpy(load, b + off, LE * sizeof(float));
	for (size_t i = 0; i < LE; i++)
		rows[i] = (int64_t)get64(b + off + LE * sizeof(float) + 8 * i);
	off -= REBAL_REC_HEAD;
	rc = dp_exec_rebalance_restore(ex, load, rows, (long)get64(b + off),
				       (long)get64(b + off + 8), err);
	free(rows);
	free(load);
	return rc;
}

/* The chunk records of a rank file in @b (after the header) against the
 * chunks of @ex, then the rebalancing record; with @apply, copy them in
 * (only after a pass without). */
static int parse_chunks(const struct dp_exec_cfg *xc, struct dp_exec *ex, const unsigned char *b,
			size_t hdr_bytes, size_t len, int apply, struct dp_err *err)
{
	int nch = dp_exec_nchunks(ex);
	size_t off = hdr_bytes;

	for (int c = 0; c < nch; c++) {
		struct dp_model_flat f;
		int stage = 0;
		struct dp_model_stage *st = dp_exec_chunk(ex, c, &stage);
		uint64_t n;
		size_t bytes;
		int rc;

		dp_model_stage_flat(st, &f);
		if (len - off < CHUNK_REC_HEAD)
			return ck_err(err, EBADMSG, "chunk %d: record truncated", c);
		n = get64(b + off + 16);
		if ((int)get32(b + off) != stage || n != f.n)
			return ck_err(err, ESTALE,
				      "chunk %d: stage %d with %llu values, this rank has "
				      "stage %d with %zu",
				      c, (int)get32(b + off), (unsigned long long)n, stage, f.n);
		bytes = f.n * sizeof(float);
		if ((len - off - CHUNK_REC_HEAD) / 3 < bytes)
			return ck_err(err, EBADMSG, "chunk %d: values truncated", c);
		if (apply) {
			const unsigned char *p = b + off + CHUNK_REC_HEAD;

			*f.adam_step = (long)get64(b + off + 8);
			memcpy(f.w, p, bytes);
			memcpy(f.m, p + bytes, bytes);
			memcpy(f.v, p + 2 * bytes, bytes);
			/* a device stage uploads what was just written */
			rc = dp_model_stage_flat_commit(st, err);
			if (rc)
				return rc;
			dp_model_stage_zero_grad(st);
		}
		off += CHUNK_REC_HEAD + 3 * bytes;
	}
	if (xc->rebalance_every > 0)
		return parse_rebalance(xc, ex, b, off, len, apply, err);
	if (off != len)
		return ck_err(err, EBADMSG, "%zu bytes after the last chunk", len - off);
	return 0;
}

int dp_ckpt_load(const char *dir, long step, const struct dp_exec_cfg *xc, struct dp_exec *ex,
		 struct dp_err *err)
{
	char sdir[4096], path[4200];
	unsigned char *b = NULL;
	size_t len = 0;
	struct hdr h;
	int rc;

	rc = dp_ckpt_step_path(dir, step, sdir, sizeof(sdir), err);
	if (!rc)
		rc = rank_path(sdir, file_rank(xc), path, sizeof(path), err);
	if (rc)
		return rc;
	rc = slurp(path, &b, &len, err);
	if (rc)
		return dp_err_prefix(err, "ckpt");
	rc = check_rank_buf(b, len, file_rank(xc), step, xc, &h, err);
	if (rc)
		goto out;
	if (h.nchunks != (uint32_t)dp_exec_nchunks(ex)) {
		rc = ck_err(err, ESTALE, "%u chunks, this rank has %d", h.nchunks,
			    dp_exec_nchunks(ex));
		goto out;
	}
	/* every record is checked before the model is touched */
	rc = parse_chunks(xc, ex, b, h.bytes, len, 0, err);
	if (rc)
		goto out;
	rc = parse_chunks(xc, ex, b, h.bytes, len, 1, err);
out:
	free(b);
	if (rc)
		return dp_err_prefix(err, "ckpt: '%s'", path);
	return 0;
}

int dp_ckpt_resume(const struct dp_ckpt_cfg *cc, const struct dp_exec_cfg *xc, struct dp_exec *ex,
		   long *start, struct dp_err *err)
{
	struct dp_err e = { 0 };
	long step = 0;
	int rc;

	if (!cc || !cc->resume || !cc->dir || !*cc->dir) {
		*start = 0;
		return 0;
	}
	rc = dp_ckpt_latest(cc->dir, xc, &step, &e);
	if (rc == -ENOENT) {
		dp_log(DP_LOG_INFO, "ckpt", "%s: starting at step 0", e.msg);
		*start = 0;
		return 0;
	}
	if (rc) {
		if (err)
			*err = e;
		return rc;
	}
	rc = dp_ckpt_load(cc->dir, step, xc, ex, err);
	if (rc)
		return rc;
	*start = step;
	return 0;
}

/* An unset (< 0) count of dp_ckpt_cfg from variable @name, else 0.
 * 0, or -EINVAL if the variable is not a number in 0..1e9. */
static int env_count(const char *name, long *field, struct dp_err *err)
{
	const char *s;

	if (*field >= 0)
		return 0;
	*field = 0;
	s = getenv(name);
	return s && *s ? dp_parse_long(s, 0, 1000000000L, field, name, err) : 0;
}

int dp_ckpt_cfg_env(struct dp_ckpt_cfg *cc, struct dp_err *err)
{
	const char *s;
	long v;

	if (!cc->dir) {
		s = getenv("DP_CKPT_DIR");
		if (s && *s)
			cc->dir = s;
	}
	if (env_count("DP_CKPT_EVERY", &cc->every, err) ||
	    env_count("DP_CKPT_KEEP", &cc->keep, err))
		return -EINVAL;
	if (!cc->resume) {
		s = getenv("DP_CKPT_RESUME");
		if (s && *s) {
			if (dp_parse_long(s, 0, 1, &v, "DP_CKPT_RESUME", err))
				return -EINVAL;
			cc->resume = (int)v;
		}
	}
	if ((!cc->dir || !*cc->dir) && (cc->every > 0 || cc->resume || cc->keep > 0))
		return ck_err(err, EINVAL,
			      "checkpoint interval, keep or resume given without a directory "
			      "(--ckpt-dir or DP_CKPT_DIR)");
	return 0;
}
