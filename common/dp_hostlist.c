/* common/dp_hostlist.c - Slurm-compatible host lists: expand and compress.
 *
 * Expansion follows Slurm's bracket syntax (src/common/hostlist.c): items
 * are separated by commas or white space, an item is literal text with zero
 * or more "[...]" groups and no text after its last group, a group is a
 * comma list of "N" or "LO-HI" whose output width is the length of the
 * written lower bound.  The last group varies fastest, as Slurm expands
 * "rack[1-2]-n[1-2]" (see group_at_level() for three groups or more).  Where Slurm guesses
 * (unclosed '[', empty items, "1-"), we report an error with the column instead.
 *
 * Compression reproduces Slurm's hostlist_uniq()/hostlist_sort() followed
 * by hostlist_ranged_string(): names split into prefix + trailing number,
 * sorted by prefix in Slurm's natural order (strnatcmp), names without a
 * number first, then by a width rule that keeps "n08" and "n8" apart, then
 * numerically; consecutive numbers that print with one width merge.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/dp_buf.h"
#include "common/dp_hostlist.h"
#include "common/dp_banned.h"

/* Longest host name we build or accept (DNS allows 253). */
#define NAME_MAX_LEN 255
/* Names are copied into blocks of this size so returned pointers stay put. */
#define BLOCK_SIZE 65536
/* How much of a bad expression an error message quotes. */
#define QUOTE_MAX 200

struct dp_hostlist {
	const char **names; /* count entries, each inside one of blocks[] */
	size_t count, alloc;
	char **blocks;
	size_t nblocks, blocks_alloc;
	size_t used, cap; /* of blocks[nblocks - 1] */
};

struct dp_hostlist *dp_hostlist_new(void)
{
	return calloc(1, sizeof(struct dp_hostlist));
}

void dp_hostlist_free(struct dp_hostlist *hl)
{
	if (!hl)
		return;
	for (size_t i = 0; i < hl->nblocks; i++)
		free(hl->blocks[i]);
	free(hl->blocks);
	free(hl->names);
	free(hl);
}

size_t dp_hostlist_count(const struct dp_hostlist *hl)
{
	return hl ? hl->count : 0;
}

const char *dp_hostlist_get(const struct dp_hostlist *hl, size_t i)
{
	return hl && i < hl->count ? hl->names[i] : NULL;
}

/* Copy @len bytes of @s as a new name.  0 or -ENOMEM (list unchanged). */
static int add_name(struct dp_hostlist *hl, const char *s, size_t len)
{
	char *dst;

	if (hl->count == hl->alloc) {
		size_t n = hl->alloc ? hl->alloc * 2 : 64;
		const char **p = realloc(hl->names, n * sizeof(*p));

		if (!p)
			return -ENOMEM;
		hl->names = p;
		hl->alloc = n;
	}
	if (!hl->nblocks || hl->cap - hl->used < len + 1) {
		size_t sz = len + 1 > BLOCK_SIZE ? len + 1 : BLOCK_SIZE;
		char *b;

		if (hl->nblocks == hl->blocks_alloc) {
			size_t n = hl->blocks_alloc ? hl->blocks_alloc * 2 : 8;
			char **p = realloc(hl->blocks, n * sizeof(*p));

			if (!p)
				return -ENOMEM;
			hl->blocks = p;
			hl->blocks_alloc = n;
		}
		b = malloc(sz);
		if (!b)
			return -ENOMEM;
		hl->blocks[hl->nblocks++] = b;
		hl->used = 0;
		hl->cap = sz;
	}
	dst = hl->blocks[hl->nblocks - 1] + hl->used;
	memcpy(dst, s, len);
	dst[len] = '\0';
	hl->used += len + 1;
	hl->names[hl->count++] = dst;
	return 0;
}

static int is_sep(char c)
{
	return c == ',' || isspace((unsigned char)c);
}

int dp_hostlist_push(struct dp_hostlist *hl, const char *host, struct dp_err *err)
{
	size_t len;

	if (!host || !*host)
		return dp_err_set(err, EINVAL, "hostlist: empty host name");
	len = strlen(host);
	if (len > NAME_MAX_LEN)
		return dp_err_set(err, EINVAL, "hostlist: host name '%.40s...' is longer than %d",
				  host, NAME_MAX_LEN);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)host[i];

		if (is_sep((char)c) || c == '[' || c == ']' || iscntrl(c))
			return dp_err_set(err, EINVAL,
					  "hostlist: invalid character 0x%02x in host name '%s'", c,
					  host);
	}
	if (add_name(hl, host, len))
		return dp_err_set(err, ENOMEM, "hostlist: out of memory");
	return 0;
}

/* ---- expansion ---- */

struct range {
	uint64_t lo, hi;
	int width; /* digits in the written lower bound */
};

/* One "[...]" group and the literal text before it. */
struct group {
	const char *lit;
	size_t lit_len;
	struct range *r;
	size_t nr, ralloc;
	int max_width; /* widest number this group prints */
};

struct parser {
	const char *expr;
	size_t expr_len;
	struct dp_hostlist *hl;
	size_t total; /* hosts produced so far */
	struct dp_err *err;
};

/* Set @err: "hostlist: <what> at column C in '<expr>'" (what is formatted). */
__attribute__((format(printf, 4, 5))) static int perr(struct parser *p, int code, size_t pos,
						      const char *fmt, ...)
{
	char what[512];
	va_list ap;
	int n = p->expr_len > QUOTE_MAX ? QUOTE_MAX : (int)p->expr_len;

	va_start(ap, fmt);
	(void)vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	(void)dp_err_set(p->err, code, "hostlist: %s at column %zu in '%.*s%s'", what, pos + 1, n,
			 p->expr, p->expr_len > QUOTE_MAX ? "..." : "");
	return -code;
}

static int digits_of(uint64_t v)
{
	int n = 1;

	while (v >= 10) {
		v /= 10;
		n++;
	}
	return n;
}

/* Parse decimal digits s[0..len) into *out; -ERANGE on overflow. */
static int parse_u64(const char *s, size_t len, uint64_t *out)
{
	uint64_t v = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned d = (unsigned)(s[i] - '0');

		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

static size_t span_digits(const char *s, size_t i, size_t end)
{
	size_t j = i;

	while (j < end && isdigit((unsigned char)s[j]))
		j++;
	return j - i;
}

/* Parse one range item e[a..b) ("N" or "LO-HI") into @r. */
static int parse_range(struct parser *p, size_t a, size_t b, struct range *r)
{
	const char *e = p->expr;
	size_t nlo = span_digits(e, a, b), nhi = 0;
	int ilen = (int)(b - a);

	memset(r, 0, sizeof(*r));
	if (a == b)
		return perr(p, EINVAL, a, "empty range");
	if (nlo == 0 || (a + nlo < b && (e[a + nlo] != '-' || a + nlo + 1 == b)))
		return perr(p, EINVAL, a, "invalid range '%.*s'", ilen, e + a);
	if (a + nlo < b) {
		nhi = span_digits(e, a + nlo + 1, b);
		if (nhi == 0 || a + nlo + 1 + nhi != b)
			return perr(p, EINVAL, a, "invalid range '%.*s'", ilen, e + a);
	}
	if (parse_u64(e + a, nlo, &r->lo) || (nhi && parse_u64(e + a + nlo + 1, nhi, &r->hi)))
		return perr(p, EINVAL, a, "number too large in range '%.*s'", ilen, e + a);
	if (!nhi)
		r->hi = r->lo;
	if (r->lo > r->hi)
		return perr(p, EINVAL, a, "reversed range '%.*s'", ilen, e + a);
	if (nlo > NAME_MAX_LEN)
		return perr(p, EINVAL, a, "host name longer than %d characters", NAME_MAX_LEN);
	r->width = (int)nlo;
	return 0;
}

/* Parse the ranges of a group whose '[' is at @open and ']' at @close. */
static int parse_group(struct parser *p, size_t open, size_t close, struct group *g)
{
	size_t a = open + 1;

	for (;;) {
		size_t b = a;
		struct range *r;
		int rc, w;

		while (b < close && p->expr[b] != ',')
			b++;
		if (g->nr == g->ralloc) {
			size_t n = g->ralloc ? g->ralloc * 2 : 4;
			struct range *nr = realloc(g->r, n * sizeof(*nr));

			if (!nr)
				return dp_err_set(p->err, ENOMEM, "hostlist: out of memory");
			g->r = nr;
			g->ralloc = n;
		}
		r = &g->r[g->nr];
		rc = parse_range(p, a, b, r);
		if (rc)
			return rc;
		g->nr++;
		w = digits_of(r->hi) > r->width ? digits_of(r->hi) : r->width;
		if (w > g->max_width)
			g->max_width = w;
		if (b == close)
			return 0;
		a = b + 1;
	}
}

/* The group that nesting level @level walks.  Slurm takes the last group
 * as the innermost loop, then expands the prefix before it from its last
 * '[' backwards, so the outer loops run over groups k-2, k-3, ..., 0:
 * "a[1-2]b[1-2]c[1-2]" gives a1b1c1 a1b1c2 a2b1c1 a2b1c2 a1b2c1 ... */
static size_t group_at_level(size_t ng, size_t level)
{
	return level == ng - 1 ? ng - 1 : ng - 2 - level;
}

/* Build the name for the current value and width of every group. */
static int emit_name(struct parser *p, const struct group *groups, size_t ng, const uint64_t *val,
		     const int *width)
{
	char buf[NAME_MAX_LEN + 1];
	size_t len = 0;

	for (size_t g = 0; g < ng; g++) {
		int n;

		memcpy(buf + len, groups[g].lit, groups[g].lit_len);
		len += groups[g].lit_len;
		n = snprintf(buf + len, sizeof(buf) - len, "%0*" PRIu64, width[g], val[g]);
		if (n < 0 || (size_t)n >= sizeof(buf) - len)
			return dp_err_set(p->err, EOVERFLOW, "hostlist: internal: name too long");
		len += (size_t)n;
	}
	if (add_name(p->hl, buf, len))
		return dp_err_set(p->err, ENOMEM, "hostlist: out of memory");
	return 0;
}

/* Append every name of the product of @groups in Slurm's order. */
static int emit(struct parser *p, const struct group *groups, size_t ng, size_t level,
		uint64_t *val, int *width)
{
	size_t gi;

	if (level == ng)
		return emit_name(p, groups, ng, val, width);
	gi = group_at_level(ng, level);
	for (size_t k = 0; k < groups[gi].nr; k++) {
		const struct range *r = &groups[gi].r[k];

		width[gi] = r->width;
		for (uint64_t v = r->lo;; v++) {
			int rc;

			val[gi] = v;
			rc = emit(p, groups, ng, level + 1, val, width);
			if (rc)
				return rc;
			if (v == r->hi)
				break;
		}
	}
	return 0;
}

static void groups_release(struct group *groups, size_t ng)
{
	for (size_t i = 0; i < ng; i++)
		free(groups[i].r);
	free(groups);
}

/* Parse and expand the item e[a..b) (no separators outside brackets). */
static int parse_item(struct parser *p, size_t a, size_t b)
{
	const char *e = p->expr;
	struct group *groups = NULL;
	size_t ng = 0, lit = a, name_len = 0;
	uint64_t count = 1, *val = NULL;
	int *width = NULL, rc = 0;

	for (size_t i = a; i < b; i++) {
		unsigned char c = (unsigned char)e[i];

		if (iscntrl(c)) {
			rc = perr(p, EINVAL, i, "invalid character 0x%02x", c);
			goto out;
		}
		if (c == ']') {
			rc = perr(p, EINVAL, i, "unexpected ']'");
			goto out;
		}
		if (c == '[') {
			size_t close = i + 1;
			struct group *ngp, *g;
			uint64_t n = 0;

			while (close < b && e[close] != ']' && e[close] != '[')
				close++;
			if (close == b) {
				rc = perr(p, EINVAL, i, "unclosed '['");
				goto out;
			}
			if (e[close] == '[') {
				rc = perr(p, EINVAL, close, "nested '['");
				goto out;
			}
			ngp = realloc(groups, (ng + 1) * sizeof(*ngp));
			if (!ngp) {
				rc = dp_err_set(p->err, ENOMEM, "hostlist: out of memory");
				goto out;
			}
			groups = ngp;
			g = &groups[ng++];
			memset(g, 0, sizeof(*g));
			g->lit = e + lit;
			g->lit_len = i - lit;
			rc = parse_group(p, i, close, g);
			if (rc)
				goto out;
			for (size_t k = 0; k < g->nr; k++) {
				uint64_t span = g->r[k].hi - g->r[k].lo;

				if (span >= DP_HOSTLIST_MAX || n + span + 1 > DP_HOSTLIST_MAX) {
					n = DP_HOSTLIST_MAX + 1;
					break;
				}
				n += span + 1;
			}
			count *= n; /* both factors <= DP_HOSTLIST_MAX + 1: no overflow */
			if (count > DP_HOSTLIST_MAX || p->total + count > DP_HOSTLIST_MAX) {
				rc = perr(p, E2BIG, a, "more than %d hosts", DP_HOSTLIST_MAX);
				goto out;
			}
			name_len += g->lit_len + (size_t)g->max_width;
			if (name_len > NAME_MAX_LEN) {
				rc = perr(p, EINVAL, a, "host name longer than %d characters",
					  NAME_MAX_LEN);
				goto out;
			}
			i = close;
			lit = close + 1;
		}
	}
	if (ng && lit < b) {
		rc = perr(p, EINVAL, lit, "unexpected text '%.*s' after ']'", (int)(b - lit),
			  e + lit);
		goto out;
	}
	if (!ng) {
		if (b - a > NAME_MAX_LEN) {
			rc = perr(p, EINVAL, a, "host name longer than %d characters",
				  NAME_MAX_LEN);
			goto out;
		}
		if (p->total + 1 > DP_HOSTLIST_MAX) {
			rc = perr(p, E2BIG, a, "more than %d hosts", DP_HOSTLIST_MAX);
			goto out;
		}
		if (add_name(p->hl, e + a, b - a)) {
			rc = dp_err_set(p->err, ENOMEM, "hostlist: out of memory");
			goto out;
		}
		p->total++;
		goto out;
	}
	val = malloc(ng * sizeof(*val));
	width = malloc(ng * sizeof(*width));
	if (!val || !width) {
		rc = dp_err_set(p->err, ENOMEM, "hostlist: out of memory");
		goto out;
	}
	rc = emit(p, groups, ng, 0, val, width);
	if (!rc)
		p->total += (size_t)count;
out:
	free(width);
	free(val);
	groups_release(groups, ng);
	return rc;
}

/* End of the item starting at @i: the first separator outside brackets.
 * Bracket errors are left to parse_item(), which sees the whole item. */
static size_t item_end(const char *e, size_t i, size_t len)
{
	int depth = 0;

	for (; i < len; i++) {
		if (e[i] == '[')
			depth = 1;
		else if (e[i] == ']')
			depth = 0;
		else if (!depth && is_sep(e[i]))
			break;
	}
	return i;
}

int dp_hostlist_expand(const char *expr, struct dp_hostlist **out, struct dp_err *err)
{
	struct parser p = { .expr = expr, .err = err };
	size_t i = 0;
	int need = 1, any = 0, rc;

	if (!expr)
		return dp_err_set(err, EINVAL, "hostlist: empty host list");
	p.expr_len = strlen(expr);
	p.hl = dp_hostlist_new();
	if (!p.hl)
		return dp_err_set(err, ENOMEM, "hostlist: out of memory");
	for (;;) {
		size_t end;

		while (i < p.expr_len && isspace((unsigned char)expr[i]))
			i++;
		if (i == p.expr_len) {
			if (!any) {
				rc = dp_err_set(err, EINVAL, "hostlist: empty host list");
				goto fail;
			}
			if (need) {
				rc = perr(&p, EINVAL, i, "empty host name");
				goto fail;
			}
			break;
		}
		if (expr[i] == ',') {
			if (need) {
				rc = perr(&p, EINVAL, i, "empty host name");
				goto fail;
			}
			need = 1;
			i++;
			continue;
		}
		end = item_end(expr, i, p.expr_len);
		rc = parse_item(&p, i, end);
		if (rc)
			goto fail;
		any = 1;
		need = 0;
		i = end;
	}
	*out = p.hl;
	return 0;
fail:
	dp_hostlist_free(p.hl);
	return rc;
}

/* ---- compression ---- */

/* A name split as Slurm does: prefix, then the trailing digits if any. */
struct key {
	const char *name;
	size_t plen;  /* prefix length; the whole name when single */
	uint64_t num; /* value of the trailing digits */
	int len;      /* number of trailing digits */
	int single;   /* no trailing number (or one too large) */
	int padded;   /* the digits have a leading zero beyond the value's own */
};

static void key_init(struct key *k, const char *name)
{
	size_t n = strlen(name), d = 0;

	while (d < n && isdigit((unsigned char)name[n - 1 - d]))
		d++;
	memset(k, 0, sizeof(*k));
	k->name = name;
	k->plen = n;
	k->single = 1;
	if (d == 0 || parse_u64(name + n - d, d, &k->num))
		return;
	k->plen = n - d;
	k->len = (int)d;
	k->single = 0;
	k->padded = (int)d > digits_of(k->num);
}

static int ch(const char *s, size_t n, size_t i)
{
	return i < n ? (signed char)s[i] : 0;
}

static int isdig(int c)
{
	return c >= '0' && c <= '9';
}

/* Digit runs without leading zero: the longer run wins, else the first
 * difference (Slurm's strnatcmp compare_right). */
static int cmp_right(const char *a, size_t na, size_t i, const char *b, size_t nb, size_t j)
{
	int bias = 0;

	for (;; i++, j++) {
		int ca = ch(a, na, i), cb = ch(b, nb, j);

		if (!isdig(ca) && !isdig(cb))
			return bias;
		if (!isdig(ca))
			return -1;
		if (!isdig(cb))
			return 1;
		if (!bias && ca != cb)
			bias = ca < cb ? -1 : 1;
	}
}

/* Digit runs with a leading zero compare as fractions (compare_left). */
static int cmp_left(const char *a, size_t na, size_t i, const char *b, size_t nb, size_t j)
{
	for (;; i++, j++) {
		int ca = ch(a, na, i), cb = ch(b, nb, j);

		if (!isdig(ca) && !isdig(cb))
			return 0;
		if (!isdig(ca))
			return -1;
		if (!isdig(cb))
			return 1;
		if (ca != cb)
			return ca < cb ? -1 : 1;
	}
}

/* Natural order of Slurm's strnatcmp() on a[0..na) and b[0..nb). Host
 * names hold no white space, so its space skipping does not arise. */
static int natcmp(const char *a, size_t na, const char *b, size_t nb)
{
	for (size_t i = 0;; i++) {
		int ca = ch(a, na, i), cb = ch(b, nb, i);

		if (isdig(ca) && isdig(cb)) {
			int r = (ca == '0' || cb == '0') ? cmp_left(a, na, i, b, nb, i)
							 : cmp_right(a, na, i, b, nb, i);

			if (r)
				return r;
		}
		if (!ca && !cb)
			return 0;
		if (ca != cb)
			return ca < cb ? -1 : 1;
	}
}

/* Slurm's hostrange_cmp() on single hosts, as a total order: by prefix,
 * names without a number first, then numbers that print with compatible
 * zero padding by value, others by digit count.  A zero-padded number of
 * width w sorts before unpadded numbers of w or more digits (which print
 * the same at width w) and after shorter unpadded ones. */
static int key_cmp(const void *va, const void *vb)
{
	const struct key *a = va, *b = vb;

	/* most neighbours share their prefix: skip the natural compare then */
	if (a->plen != b->plen || memcmp(a->name, b->name, a->plen) != 0) {
		int r = natcmp(a->name, a->plen, b->name, b->plen);

		if (r)
			return r;
	}
	if (a->single != b->single)
		return a->single ? -1 : 1;
	if (a->single)
		return 0;
	if (a->len != b->len)
		return a->len < b->len ? -1 : 1;
	if (a->padded != b->padded)
		return a->padded ? -1 : 1;
	if (a->num != b->num)
		return a->num < b->num ? -1 : 1;
	return 0;
}

struct run {
	const struct key *k; /* first host */
	uint64_t lo, hi;
	int width;
};

/* Can @k extend @r (same prefix, next number, prints at the run's width)? */
static int run_extends(const struct run *r, const struct key *k)
{
	if (r->k->single || k->single || r->k->plen != k->plen ||
	    memcmp(r->k->name, k->name, k->plen) != 0 || r->hi == UINT64_MAX || k->num != r->hi + 1)
		return 0;
	return k->padded ? k->len == r->width : k->len >= r->width;
}

static int same_bracket(const struct run *a, const struct run *b)
{
	return !a->k->single && !b->k->single && a->k->plen == b->k->plen &&
	       memcmp(a->k->name, b->k->name, a->k->plen) == 0;
}

static int write_runs(struct dp_buf *out, const struct run *runs, size_t nruns)
{
	int rc = 0;

	for (size_t i = 0; i < nruns && !rc;) {
		const struct run *r = &runs[i];
		size_t j = i + 1;
		int bracket;

		if (i)
			rc = dp_buf_adds(out, ",");
		if (!rc && r->k->single) {
			rc = dp_buf_adds(out, r->k->name);
			i++;
			continue;
		}
		while (j < nruns && same_bracket(r, &runs[j]))
			j++;
		bracket = j - i > 1 || r->lo != r->hi;
		if (!rc)
			rc = dp_buf_addf(out, "%.*s%s", (int)r->k->plen, r->k->name,
					 bracket ? "[" : "");
		for (size_t m = i; m < j && !rc; m++) {
			const struct run *q = &runs[m];

			rc = dp_buf_addf(out, "%s%0*" PRIu64, m > i ? "," : "", q->width, q->lo);
			if (!rc && q->hi != q->lo)
				rc = dp_buf_addf(out, "-%0*" PRIu64, q->width, q->hi);
		}
		if (!rc && bracket)
			rc = dp_buf_adds(out, "]");
		i = j;
	}
	return rc;
}

char *dp_hostlist_compress(const struct dp_hostlist *hl, struct dp_err *err)
{
	size_t n = dp_hostlist_count(hl), nruns = 0;
	struct key *keys = NULL;
	struct run *runs = NULL;
	struct dp_buf out;
	char *s = NULL;

	dp_buf_init(&out, SIZE_MAX / 2);
	if (n == 0) {
		s = strdup("");
		goto done;
	}
	keys = malloc(n * sizeof(*keys));
	runs = malloc(n * sizeof(*runs));
	if (!keys || !runs)
		goto done;
	for (size_t i = 0; i < n; i++)
		key_init(&keys[i], hl->names[i]);
	qsort(keys, n, sizeof(*keys), key_cmp);
	for (size_t i = 0; i < n; i++) {
		struct run *last = nruns ? &runs[nruns - 1] : NULL;

		if (i && key_cmp(&keys[i - 1], &keys[i]) == 0)
			continue; /* duplicate name */
		if (last && run_extends(last, &keys[i])) {
			last->hi = keys[i].num;
			continue;
		}
		runs[nruns++] = (struct run){
			.k = &keys[i], .lo = keys[i].num, .hi = keys[i].num, .width = keys[i].len
		};
	}
	if (write_runs(&out, runs, nruns) == 0)
		s = dp_buf_detach(&out, NULL);
done:
	if (!s)
		(void)dp_err_set(err, ENOMEM, "hostlist: out of memory");
	dp_buf_release(&out);
	free(runs);
	free(keys);
	return s;
}
