/* worker/dp_ckpt.h - checkpoints of the pipeline executor: every rank writes
 * the state of its chunks (parameters, Adam moments, Adam step count) after
 * a step, atomically, and a run resumes from the newest complete checkpoint
 * with results bit-identical to an uninterrupted run.  docs/executor.md,
 * "Checkpoints", has the file format and the rules.
 *
 *   DIR/step-00000025/rank-0000.bin ... rank-<pp*ep-1>.bin   one per rank of replica 0
 *   DIR/step-00000025/manifest.json                          written last, by rank 0
 *
 * Data parallelism: the dp replicas hold the same bits, so only replica 0
 * writes (dp_ckpt_save returns 0 at once on the others) and every replica
 * loads the file of its own rank within the replica, rank % (pp * ep).  dp
 * is part of the configuration fingerprint, and so is the expert placement
 * (expert_slots: 0 contiguous, else experts + redundant of an EPLB one).
 *
 * A checkpoint named step-N holds the state after N completed steps (steps
 * 0..N-1 and their optimizer updates): a resumed run starts at step N.
 * Nothing else needs saving: the data of a step is a function of (seed,
 * step) and the executor keeps no other state between steps than, with
 * rebalance_every > 0 (part of the fingerprint too), its rebalancing
 * state: the loads of the current placement and the routed rows of the
 * current window (dp_exec_rebalance_info), which a load restores, so the
 * resumed run places the experts as the uninterrupted one.
 *
 * Writing (dp_ckpt_save): each rank writes its file as .rank-R.bin.tmp,
 * fsyncs it, renames it to rank-R.bin and fsyncs the directory.  Rank 0
 * then waits until every rank's file is there and valid (its own header
 * checksums), and writes manifest.json (file sizes and CRC32C) the same
 * atomic way.  A checkpoint without a manifest is incomplete.  All ranks
 * must see the same DIR (one machine, or a shared file system).
 *
 * Reading (dp_ckpt_latest, dp_ckpt_check): the step directories newest
 * first; one is taken only if its manifest parses, names this run's
 * configuration, and every rank file listed has the recorded size and
 * CRC32C and a valid header for this run.  Skipped ones are logged
 * (dp_log warn, module "ckpt") with the reason.  Every rank checks every
 * file, so ranks that scan the same DIR pick the same checkpoint.
 *
 * Threads: no shared state; calls on different executors may run at once.
 * Functions returning int give 0 or a negative errno with @err (may be
 * NULL) filled. */
#ifndef DP_CKPT_H
#define DP_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "common/dp_err.h"
#include "worker/dp_exec.h"

/* rank file and manifest format; 1 (dp 1), 2 (contiguous expert
 * placement) and 3 (no rebalancing) are still read */
#define DP_CKPT_VERSION 4

/* Checkpoint settings of a run (caller-embedded, nothing to release). */
struct dp_ckpt_cfg {
	const char *dir; /* borrowed; NULL or "": checkpoints off */
	long every;	 /* save after every @every completed steps; 0: only after the last */
	int resume;	 /* non-zero: start from the newest complete checkpoint in @dir */
	int wait_ms;	 /* how long rank 0 waits for the other ranks' files; 0: 60000 */
	long keep;	 /* > 0: after a save, keep the newest @keep complete checkpoints
			  * (dp_ckpt_prune); 0: keep all; < 0: unset (dp_ckpt_cfg_env) */
};

/* Fill the fields of @cc that are unset (dir NULL, every < 0, resume 0,
 * keep < 0) from DP_CKPT_DIR, DP_CKPT_EVERY, DP_CKPT_RESUME (1/0) and
 * DP_CKPT_KEEP; every or keep < 0 with no variable becomes 0.  -EINVAL if
 * a variable is not a number in range, or if a step interval, resume or
 * keep is set without a directory. */
int dp_ckpt_cfg_env(struct dp_ckpt_cfg *cc, struct dp_err *err);

/* CRC32C (Castagnoli, reflected 0x82F63B78) of @len bytes, continuing from
 * @crc (0 to start): dp_ckpt_crc32c(0, "123456789", 9) == 0xE3069283. */
uint32_t dp_ckpt_crc32c(uint32_t crc, const void *buf, size_t len);

/* Write this rank's checkpoint for @step completed steps into @dir (made
 * if missing), then on rank 0 wait up to @wait_ms (0: 60000) for every
 * rank's file and write the manifest.  @xc is the configuration the
 * executor was made with (its rank is this rank).  Rank 0 first removes
 * a manifest left in that step directory by an earlier run.  -ETIMEDOUT
 * if a rank's file does not appear in time (no manifest then), -EIO and
 * the like for file system errors. */
int dp_ckpt_save(const char *dir, const struct dp_exec_cfg *xc, struct dp_exec *ex, long step,
		 int wait_ms, struct dp_err *err);

/* The step-loop hook: after @done completed steps of @total, save if
 * checkpoints are on and @done is a multiple of cc->every, or @done ==
 * @total; then, with cc->keep > 0, global rank 0 prunes (dp_ckpt_prune;
 * a failure to remove is logged, not returned: training goes on).  1 if
 * a checkpoint was written, 0 if none was due, or -errno. */
int dp_ckpt_maybe_save(const struct dp_ckpt_cfg *cc, const struct dp_exec_cfg *xc,
		       struct dp_exec *ex, long done, long total, struct dp_err *err);

/* 0 if @dir/step-<@step> is a complete checkpoint of this configuration
 * (manifest, every rank file with its size, CRC32C and header), else
 * -ENOENT (missing manifest or file), -EBADMSG (corrupt: checksum, size,
 * header), -ESTALE (another configuration or format version) with the
 * reason in @err. */
int dp_ckpt_check(const char *dir, long step, const struct dp_exec_cfg *xc, struct dp_err *err);

/* The newest complete checkpoint in @dir for @xc into *step, logging each
 * newer one skipped and why.  -ENOENT if there is none (or no @dir). */
int dp_ckpt_latest(const char *dir, const struct dp_exec_cfg *xc, long *step, struct dp_err *err);

/* Load this rank's state of checkpoint @step (which should have passed
 * dp_ckpt_check) into the chunks of @ex.  -EBADMSG/-ESTALE as above if the
 * file is not this rank's of this configuration; the chunks are untouched
 * then. */
int dp_ckpt_load(const char *dir, long step, const struct dp_exec_cfg *xc, struct dp_exec *ex,
		 struct dp_err *err);

/* The resume hook: if cc->resume, find the newest complete checkpoint and
 * load it; *start gets its step, or 0 when there is none (logged at info:
 * a fresh start is not an error).  Without cc->resume *start = 0. */
int dp_ckpt_resume(const struct dp_ckpt_cfg *cc, const struct dp_exec_cfg *xc, struct dp_exec *ex,
		   long *start, struct dp_err *err);

/* Retention: walking the step directories of @dir newest first, keep
 * every one up to and including the @keep-th that has a manifest (a
 * complete checkpoint; an incomplete directory newer than that is left
 * alone), and remove every older step directory, complete or not: its
 * manifest first (so a half-removed directory reads as incomplete), then
 * its files, then the directory.  Anything else in @dir, and a step
 * directory holding a subdirectory, is left alone (the latter logged).
 * *removed (may be NULL) gets the number of directories removed.  @keep
 * >= 1; 0 or -errno (the first failure; it goes on with the others). */
int dp_ckpt_prune(const char *dir, long keep, int *removed, struct dp_err *err);

/* "DIR/step-00000025" into @buf; -ENAMETOOLONG if it does not fit. */
int dp_ckpt_step_path(const char *dir, long step, char *buf, size_t size, struct dp_err *err);

#endif
