/* common/dp_hostlist.h - Slurm-compatible host lists.
 *
 * Syntax (as Slurm's hostlist): items separated by commas or white space; an
 * item may hold one or more bracket ranges, e.g. "node[01-03,7],gpu-a[1-2]"
 * or "r[1-2]n[1-2]"; no text may follow an item's last ']' (as in Slurm).
 * Each range prints with the width of its written lower bound, so zero
 * padding is kept ("node[08-10]" -> node08 node09 node10, "n[01-2]" -> n01
 * n02).  Expansion keeps the given order and duplicates, the last bracket
 * group varying fastest (Slurm's order also for three groups or more).
 * Compression sorts as Slurm does (by prefix in natural order, names without
 * a number first, then numerically, keeping differently padded numbers
 * apart), removes duplicates and merges runs: "node3,node1,node2,node1" ->
 * "node[1-3]", "n08,n9,n10" -> "n[9,08,10]".  Where Slurm guesses (unclosed
 * '[', empty items, "a[1-]") we fail instead.  See docs/dpctl/hostlist.md.
 *
 * Host names are at most 255 characters.  A list is not thread-safe for
 * writing; concurrent reads are fine.
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
 * 1-based column, e.g. "hostlist: reversed range '5-3' at column 6 in
 * 'node[5-3]'" (also for an empty or all-blank @expr: "hostlist: empty host
 * list"), or -E2BIG past DP_HOSTLIST_MAX hosts, or -ENOMEM.  *out is left
 * alone on failure. */
int dp_hostlist_expand(const char *expr, struct dp_hostlist **out, struct dp_err *err);

/* An empty list to fill with dp_hostlist_push(). NULL on ENOMEM. */
struct dp_hostlist *dp_hostlist_new(void);
/* Append a copy of one plain host name.  0, -EINVAL (empty, longer than 255,
 * or holding a comma, white space, a bracket or a control character), -ENOMEM. */
int dp_hostlist_push(struct dp_hostlist *hl, const char *host, struct dp_err *err);

size_t dp_hostlist_count(const struct dp_hostlist *hl);
/* Host @i (0-based); lives as long as @hl (pushing more does not move it).
 * NULL if out of range. */
const char *dp_hostlist_get(const struct dp_hostlist *hl, size_t i);

/* Sort, deduplicate and compress to Slurm's ranged form, O(n log n).
 * Returns a string the caller frees ("" for an empty list), or NULL with
 * @err set (ENOMEM).  @hl is not changed. */
char *dp_hostlist_compress(const struct dp_hostlist *hl, struct dp_err *err);

void dp_hostlist_free(struct dp_hostlist *hl); /* NULL-safe */

#endif
