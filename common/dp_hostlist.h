/* common/dp_hostlist.h - Slurm-compatible host lists.
 *
 * Syntax (as Slurm's hostlist): comma-separated items; an item may hold one or
 * more bracket ranges, e.g. "node[01-03,7],gpu-a[1-2]" or "r[1-2]n[1-2]".
 * Zero padding of each range bound is kept ("node[08-10]" -> node08 node09
 * node10).  Expansion keeps the given order and duplicates; compression
 * sorts (by prefix, then numerically), removes duplicates and merges runs:
 * "node3,node1,node2,node1" -> "node[1-3]".
 */
#ifndef DP_HOSTLIST_H
#define DP_HOSTLIST_H

#include <stddef.h>

#include "common/dp_err.h"

struct dp_hostlist; /* opaque list of host names */

/* Upper bound on the number of hosts one expression may expand to. */
#define DP_HOSTLIST_MAX 1048576

/* Parse and expand @expr.  0 and *out set (caller frees with
 * dp_hostlist_free), or -EINVAL with @err naming the offending text and its
 * column, or -E2BIG past DP_HOSTLIST_MAX hosts, or -ENOMEM. */
int dp_hostlist_expand(const char *expr, struct dp_hostlist **out, struct dp_err *err);

/* An empty list to fill with dp_hostlist_push(). NULL on ENOMEM. */
struct dp_hostlist *dp_hostlist_new(void);
/* Append a copy of one plain host name.  0, -EINVAL (empty/whitespace/brackets), -ENOMEM. */
int dp_hostlist_push(struct dp_hostlist *hl, const char *host, struct dp_err *err);

size_t dp_hostlist_count(const struct dp_hostlist *hl);
/* Host @i (0-based); lives as long as @hl.  NULL if out of range. */
const char *dp_hostlist_get(const struct dp_hostlist *hl, size_t i);

/* Sort, deduplicate and compress to Slurm's ranged form.  Returns a string
 * the caller frees, or NULL with @err set (ENOMEM).  @hl is not changed. */
char *dp_hostlist_compress(const struct dp_hostlist *hl, struct dp_err *err);

void dp_hostlist_free(struct dp_hostlist *hl); /* NULL-safe */

#endif
