/* launcher/recipe.c - YAML recipes: load, default, validate.
 *
 * Three passes, so that one run reports every problem:
 *  1. libyaml's event parser builds a small node tree that keeps each node's
 *     mark (the document API would lose the key path on a syntax error, and
 *     we want to name where in the recipe the syntax broke);
 *  2. the tree is walked against the schema tables below: unknown and
 *     duplicate keys, types, ranges, enums, missing required keys; every
 *     accepted value is stored in struct dp_recipe and its mark remembered;
 *  3. cross-key consistency (pp*ep*dp = GPUs, DualPipe rules, expert
 *     divisibility, ...) on the values that passed 2, each error placed at
 *     the key that must change (or at its section when it was defaulted).
 * Diagnostics are sorted into file order at the end.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#include "common/dp_buf.h"
#include "common/dp_hostlist.h"
#include "common/dp_util.h"
#include "a2a/dp_eplb.h"
#include "launcher/dp_launcher.h"
#include "common/dp_banned.h"

#define MAX_DEPTH 64	      /* YAML nesting limit; recipes need 3 */
#define MAX_BYTES (16u << 20) /* a recipe is a few KiB; refuse runaway files */
#define KEY_MAX	  256

/* ---- the node tree -------------------------------------------------------- */

enum nkind { N_SCALAR, N_MAP, N_SEQ };

struct node {
	enum nkind kind;
	int quoted; /* scalar: quoted, block or tagged !!str, so never a number */
	char *text; /* scalar: its text */
	unsigned line, col;
	struct node **kids; /* map: key, value, key, value, ...; seq: items */
	size_t n, alloc;
};

struct anchor {
	char *name;
	struct node *node;
};

/* What pass 2 learned about one key: where it was and whether it was good. */
struct fstate {
	size_t off;	    /* offsetof in struct dp_recipe; SIZE_MAX for a section */
	char *path;	    /* dotted key path */
	unsigned line, col; /* the value's mark */
	int bad;	    /* reported by pass 2: skip it in pass 3 */
};

struct ctx {
	const char *file;
	const char *text; /* the whole recipe, for marks of reader errors */
	size_t len;
	struct dp_recipe *r;
	struct dp_recipe_diags diags;
	int nomem;
	struct node **all; /* every node, freed at the end (aliases share nodes) */
	size_t n_all, alloc_all;
	struct anchor *anchors;
	size_t n_anchors, alloc_anchors;
	struct fstate *st;
	size_t n_st, alloc_st;
	struct node *root;
	unsigned root_line, root_col;
};

static int grow(void **v, size_t *alloc, size_t need, size_t size)
{
	size_t n = *alloc ? *alloc : 8;
	void *p;

	if (need <= *alloc)
		return 0;
	while (n < need)
		n *= 2;
	p = realloc(*v, n * size);
	if (!p)
		return -ENOMEM;
	*v = p;
	*alloc = n;
	return 0;
}

/* ---- diagnostics ---------------------------------------------------------- */

void dp_recipe_diags_init(struct dp_recipe_diags *d)
{
	d->v = NULL;
	d->n = d->alloc = 0;
}

void dp_recipe_diags_release(struct dp_recipe_diags *d)
{
	if (!d)
		return;
	for (size_t i = 0; i < d->n; i++) {
		free(d->v[i].file);
		free(d->v[i].key);
		free(d->v[i].msg);
	}
	free(d->v);
	dp_recipe_diags_init(d);
}

char *dp_recipe_diag_format(const struct dp_recipe_diag *d)
{
	char *s = NULL;
	int n;

	if (d->key && *d->key)
		n = asprintf(&s, "%s:%u:%u: error: key '%s': %s", d->file, d->line, d->col, d->key,
			     d->msg);
	else
		n = asprintf(&s, "%s:%u:%u: error: %s", d->file, d->line, d->col, d->msg);
	return n < 0 ? NULL : s;
}

__attribute__((format(printf, 5, 6))) static void diag(struct ctx *c, unsigned line, unsigned col,
						       const char *key, const char *fmt, ...)
{
	struct dp_recipe_diag *d;
	va_list ap;
	int n;

	if (grow((void **)&c->diags.v, &c->diags.alloc, c->diags.n + 1, sizeof(*d))) {
		c->nomem = 1;
		return;
	}
	d = &c->diags.v[c->diags.n];
	memset(d, 0, sizeof(*d));
	d->line = line;
	d->col = col;
	d->file = strdup(c->file);
	d->key = strdup(key ? key : "");
	va_start(ap, fmt);
	n = vasprintf(&d->msg, fmt, ap);
	va_end(ap);
	if (n < 0)
		d->msg = NULL;
	if (!d->file || !d->key || !d->msg) {
		free(d->file);
		free(d->key);
		free(d->msg);
		c->nomem = 1;
		return;
	}
	c->diags.n++;
}

/* Stable insertion sort by (line, col): errors appear in file order, and
 * several at one mark keep the order they were found in. */
static void sort_diags(struct dp_recipe_diags *d)
{
	for (size_t i = 1; i < d->n; i++) {
		struct dp_recipe_diag t = d->v[i];
		size_t j = i;

		while (j > 0 && (d->v[j - 1].line > t.line ||
				 (d->v[j - 1].line == t.line && d->v[j - 1].col > t.col))) {
			d->v[j] = d->v[j - 1];
			j--;
		}
		d->v[j] = t;
	}
}

/* ---- pass 1: events to tree ---------------------------------------------- */

static struct node *node_new(struct ctx *c, enum nkind kind, const yaml_mark_t *m)
{
	struct node *n;

	if (grow((void **)&c->all, &c->alloc_all, c->n_all + 1, sizeof(struct node *)))
		return NULL;
	n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	n->kind = kind;
	n->line = (unsigned)m->line + 1;
	n->col = (unsigned)m->column + 1;
	c->all[c->n_all++] = n;
	return n;
}

/* A shallow copy of @target at the alias' own mark, so that errors in an
 * aliased value point at the place it is used.  The children stay shared. */
static struct node *node_alias(struct ctx *c, const struct node *target, const yaml_mark_t *m)
{
	struct node *n = node_new(c, target->kind, m);

	if (!n)
		return NULL;
	n->quoted = target->quoted;
	if (target->text && !(n->text = strdup(target->text)))
		return NULL;
	if (target->n) {
		n->kids = malloc(target->n * sizeof(struct node *));
		if (!n->kids)
			return NULL;
		memcpy(n->kids, target->kids, target->n * sizeof(struct node *));
		n->n = n->alloc = target->n;
	}
	return n;
}

static int node_add(struct node *parent, struct node *kid)
{
	if (grow((void **)&parent->kids, &parent->alloc, parent->n + 1, sizeof(struct node *)))
		return -ENOMEM;
	parent->kids[parent->n++] = kid;
	return 0;
}

static int anchor_add(struct ctx *c, const yaml_char_t *name, struct node *n)
{
	if (!name)
		return 0;
	if (grow((void **)&c->anchors, &c->alloc_anchors, c->n_anchors + 1, sizeof(*c->anchors)))
		return -ENOMEM;
	c->anchors[c->n_anchors].name = strdup((const char *)name);
	if (!c->anchors[c->n_anchors].name)
		return -ENOMEM;
	c->anchors[c->n_anchors++].node = n;
	return 0;
}

static struct node *anchor_find(const struct ctx *c, const yaml_char_t *name)
{
	/* the latest definition wins, as YAML says */
	for (size_t i = c->n_anchors; i-- > 0;)
		if (strcmp(c->anchors[i].name, (const char *)name) == 0)
			return c->anchors[i].node;
	return NULL;
}

static int is_null(const struct node *n)
{
	static const char *const nulls[] = { "", "~", "null", "Null", "NULL" };

	if (n->kind != N_SCALAR || n->quoted)
		return 0;
	for (size_t i = 0; i < DP_ARRAY_SIZE(nulls); i++)
		if (strcmp(n->text, nulls[i]) == 0)
			return 1;
	return 0;
}

/* The key path of the innermost open node, for a syntax error inside it. */
static void stack_path(struct node *const *stack, size_t depth, char *buf, size_t size)
{
	size_t len = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < depth; i++) {
		const struct node *s = stack[i];
		int n = 0;

		if (s->kind == N_MAP && s->n % 2 == 1 && s->kids[s->n - 1]->kind == N_SCALAR)
			n = snprintf(buf + len, size - len, "%s%s", len ? "." : "",
				     s->kids[s->n - 1]->text);
		else if (s->kind == N_SEQ && s->n > 0)
			n = snprintf(buf + len, size - len, "[%zu]", s->n - 1);
		else if (s->kind == N_MAP && i + 1 < depth && s->n >= 2)
			n = snprintf(buf + len, size - len, "%s%s", len ? "." : "",
				     s->kids[s->n - 2]->text ? s->kids[s->n - 2]->text : "?");
		if (n < 0 || (size_t)n >= size - len)
			return;
		len += (size_t)n;
	}
}

/* 0-based line and column of byte @off, counting characters as libyaml does. */
static void offset_mark(const struct ctx *c, size_t off, yaml_mark_t *m)
{
	m->line = m->column = 0;
	for (size_t i = 0; i < off && i < c->len; i++) {
		if (c->text[i] == '\n') {
			m->line++;
			m->column = 0;
		} else if (((unsigned char)c->text[i] & 0xc0) != 0x80) {
			m->column++;
		}
	}
}

static void syntax_error(struct ctx *c, const yaml_parser_t *p, struct node *const *stack,
			 size_t depth)
{
	char path[KEY_MAX];
	yaml_mark_t m = p->problem_mark;

	if (p->error == YAML_READER_ERROR) {
		/* bad encoding: libyaml gives a byte offset, and decodes ahead
		 * of the parser, so no key path applies */
		offset_mark(c, p->problem_offset, &m);
		diag(c, (unsigned)m.line + 1, (unsigned)m.column + 1, NULL, "invalid YAML: %s",
		     p->problem ? p->problem : "bad encoding");
		return;
	}
	stack_path(stack, depth, path, sizeof(path));
	if (m.index < c->len && c->text[m.index] == '\t')
		diag(c, (unsigned)m.line + 1, (unsigned)m.column + 1, path,
		     "invalid YAML: %s (YAML cannot indent with tabs)",
		     p->problem ? p->problem : "syntax error");
	else if (p->context)
		diag(c, (unsigned)m.line + 1, (unsigned)m.column + 1, path,
		     "invalid YAML: %s (%s at line %zu, column %zu)",
		     p->problem ? p->problem : "syntax error", p->context, p->context_mark.line + 1,
		     p->context_mark.column + 1);
	else
		diag(c, (unsigned)m.line + 1, (unsigned)m.column + 1, path, "invalid YAML: %s",
		     p->problem ? p->problem : "syntax error");
}

/* 0 with c->root set (NULL for an empty stream), -EINVAL after a diagnostic,
 * or -ENOMEM. */
static int build_tree(struct ctx *c, yaml_parser_t *p)
{
	struct node *stack[MAX_DEPTH];
	yaml_char_t *anchors[MAX_DEPTH];
	size_t depth = 0;
	int docs = 0, rc = 0, done = 0;

	while (!done && rc == 0) {
		yaml_event_t ev;
		struct node *n = NULL;
		const yaml_char_t *anchor = NULL;
		unsigned line, col;

		if (!yaml_parser_parse(p, &ev)) {
			if (p->error == YAML_MEMORY_ERROR)
				rc = -ENOMEM;
			else {
				syntax_error(c, p, stack, depth);
				rc = -EINVAL;
			}
			break;
		}
		line = (unsigned)ev.start_mark.line + 1;
		col = (unsigned)ev.start_mark.column + 1;
		switch (ev.type) {
		case YAML_STREAM_END_EVENT:
			done = 1;
			break;
		case YAML_DOCUMENT_START_EVENT:
			if (docs++ > 0) {
				diag(c, line, col, NULL,
				     "a recipe is one YAML document, found a second one");
				rc = -EINVAL;
			}
			break;
		case YAML_ALIAS_EVENT:
			n = anchor_find(c, ev.data.alias.anchor);
			if (n) {
				n = node_alias(c, n, &ev.start_mark);
				if (!n)
					rc = -ENOMEM;
			} else {
				char path[KEY_MAX];

				stack_path(stack, depth, path, sizeof(path));
				diag(c, line, col, path, "unknown alias '*%s'",
				     (const char *)ev.data.alias.anchor);
				rc = -EINVAL;
			}
			break;
		case YAML_SCALAR_EVENT:
			n = node_new(c, N_SCALAR, &ev.start_mark);
			if (!n) {
				rc = -ENOMEM;
				break;
			}
			n->text =
				strndup((const char *)ev.data.scalar.value, ev.data.scalar.length);
			if (!n->text) {
				rc = -ENOMEM;
				break;
			}
			if (strlen(n->text) != ev.data.scalar.length) {
				char path[KEY_MAX];

				stack_path(stack, depth, path, sizeof(path));
				diag(c, line, col, path, "value contains a NUL character");
			}
			n->quoted = ev.data.scalar.style != YAML_PLAIN_SCALAR_STYLE ||
				    (ev.data.scalar.tag &&
				     strcmp((const char *)ev.data.scalar.tag, YAML_STR_TAG) == 0);
			anchor = ev.data.scalar.anchor;
			break;
		case YAML_SEQUENCE_START_EVENT:
		case YAML_MAPPING_START_EVENT:
			if (depth == MAX_DEPTH) {
				diag(c, line, col, NULL, "YAML nested deeper than %d levels",
				     MAX_DEPTH);
				rc = -EINVAL;
				break;
			}
			n = node_new(c, ev.type == YAML_MAPPING_START_EVENT ? N_MAP : N_SEQ,
				     &ev.start_mark);
			if (!n) {
				rc = -ENOMEM;
				break;
			}
			break;
		case YAML_SEQUENCE_END_EVENT:
		case YAML_MAPPING_END_EVENT:
			/* an anchor names its node once complete, so no node can
			 * contain itself through an alias */
			if (depth == 0)
				break; /* libyaml balances these; be safe anyway */
			depth--;
			if (anchor_add(c, anchors[depth], stack[depth]))
				rc = -ENOMEM;
			free(anchors[depth]);
			break;
		default:
			break;
		}
		if (n && rc == 0) {
			if (depth == 0)
				c->root = n;
			else if (node_add(stack[depth - 1], n))
				rc = -ENOMEM;
			if (rc == 0 && n->kind == N_SCALAR && anchor_add(c, anchor, n))
				rc = -ENOMEM;
			if (rc == 0 && ev.type == YAML_SEQUENCE_START_EVENT) {
				stack[depth] = n;
				anchors[depth] = NULL;
				if (ev.data.sequence_start.anchor) {
					anchors[depth] = (yaml_char_t *)strdup(
						(const char *)ev.data.sequence_start.anchor);
					if (!anchors[depth])
						rc = -ENOMEM;
				}
				depth++;
			} else if (rc == 0 && ev.type == YAML_MAPPING_START_EVENT) {
				stack[depth] = n;
				anchors[depth] = NULL;
				if (ev.data.mapping_start.anchor) {
					anchors[depth] = (yaml_char_t *)strdup(
						(const char *)ev.data.mapping_start.anchor);
					if (!anchors[depth])
						rc = -ENOMEM;
				}
				depth++;
			}
		}
		yaml_event_delete(&ev);
	}
	while (depth > 0)
		free(anchors[--depth]);
	return rc;
}

/* ---- the schema ----------------------------------------------------------- */

enum ftype {
	F_SECTION,   /* a map of sub-keys */
	F_INT,	     /* int, range ilo..ihi */
	F_LONG,	     /* long, range ilo..ihi */
	F_DBL,	     /* double, range (dlo, dhi] */
	F_STR,	     /* char *, null keeps the default */
	F_URL,	     /* char *, http:// or https:// */
	F_ENUM,	     /* int index into names */
	F_HOSTS,     /* struct dp_hostlist *: hostlist string or list of them */
	F_PREFLIGHT, /* unsigned bit set of names */
	F_URLS,	     /* char ** + size_t count (notify.webhooks) */
	F_ENV,	     /* struct dp_recipe_env * + size_t count */
};

struct field {
	const char *name;
	size_t off;
	long ilo, ihi;
	double dlo, dhi;
	const char *const *names; /* F_ENUM, F_PREFLIGHT: NULL-terminated */
	const struct field *sub;  /* F_SECTION */
	enum ftype type;
	int req;
};

#define OFF(m)	      offsetof(struct dp_recipe, m)
#define AT(r, off, T) ((T *)(void *)((char *)(r) + (off)))
#define INT(n, m, lo, hi)                                                                          \
	{                                                                                          \
		.name = (n), .type = F_INT, .off = OFF(m), .ilo = (lo), .ihi = (hi)                \
	}
#define RINT(n, m, lo, hi)                                                                         \
	{                                                                                          \
		.name = (n), .type = F_INT, .off = OFF(m), .req = 1, .ilo = (lo), .ihi = (hi)      \
	}
#define LONG(n, m, lo, hi)                                                                         \
	{                                                                                          \
		.name = (n), .type = F_LONG, .off = OFF(m), .ilo = (lo), .ihi = (hi)               \
	}
#define DBL(n, m, lo, hi)                                                                          \
	{                                                                                          \
		.name = (n), .type = F_DBL, .off = OFF(m), .dlo = (lo), .dhi = (hi)                \
	}
#define STR(n, m)                                                                                  \
	{                                                                                          \
		.name = (n), .type = F_STR, .off = OFF(m)                                          \
	}
#define ENUM(n, m, v)                                                                              \
	{                                                                                          \
		.name = (n), .type = F_ENUM, .off = OFF(m), .names = (v)                           \
	}
#define SECTION(n, s, rq)                                                                          \
	{                                                                                          \
		.name = (n), .type = F_SECTION, .off = SIZE_MAX, .req = (rq), .sub = (s)           \
	}

static const char *const launcher_names[] = { "local", "ssh", "slurm", NULL };
static const char *const known_hosts_names[] = { "strict", "accept-new", "off", NULL };
static const char *const schedule_names[] = { "dualpipe", "dualpipev", "1f1b", "zb1p", NULL };
static const char *const backend_names[] = { "cpu", "cuda", NULL };
static const char *const pp_transport_names[] = { "tcp", "nccl", NULL };
/* bit i of health.preflight is preflight_names[i] */
static const char *const preflight_names[] = { "ssh", "gpus", "nics", "ports", "disk", "clock",
					       /* pre-flight gate (launcher/dp_preflight.h) */
					       "topology", "version", NULL };

static const struct field cluster_fields[] = {
	{ .name = "hosts", .type = F_HOSTS, .off = OFF(cluster.hosts), .req = 1 },
	{ .name = "spares", .type = F_HOSTS, .off = OFF(cluster.spares) },
	ENUM("launcher", cluster.launcher, launcher_names),
	STR("user", cluster.user),
	INT("port", cluster.port, 1, 65535),
	STR("identity", cluster.identity),
	ENUM("known_hosts", cluster.known_hosts, known_hosts_names),
	INT("gpus", cluster.gpus, 1, 1024),
	INT("nics", cluster.nics, 0, 1024),
	DBL("connect_timeout_s", cluster.connect_timeout_s, 0, 3600),
	INT("relay_width", cluster.relay_width, 0, 4096),
	{ 0 },
};

static const struct field model_fields[] = {
	STR("name", model.name),
	RINT("layers", model.layers, 1, 4096),
	INT("dense_layers", model.dense_layers, 0, 4096),
	RINT("hidden", model.hidden, 1, 1 << 20),
	INT("heads", model.heads, 1, 4096),
	INT("ffn_hidden", model.ffn_hidden, 1, 1 << 22),
	RINT("experts", model.experts, 1, 1 << 16),
	INT("shared_experts", model.shared_experts, 0, 64),
	RINT("top_k", model.top_k, 1, 1 << 16),
	INT("groups", model.groups, 1, 1 << 16),
	INT("max_nodes_per_token", model.max_nodes_per_token, 1, 1 << 16),
	INT("vocab", model.vocab, 2, 1 << 24),
	INT("seq_len", model.seq_len, 1, 1 << 24),
	INT("redundant_experts", model.redundant_experts, 0, 1 << 16),
	STR("expert_loads", model.expert_loads),
	INT("rebalance_every", model.rebalance_every, 0, 1000000000),
	{ 0 },
};

static const struct field parallel_fields[] = {
	RINT("pp", parallel.pp, 1, 4096),
	INT("ep", parallel.ep, 1, 1 << 16),
	INT("dp", parallel.dp, 1, 1 << 20),
	ENUM("schedule", parallel.schedule, schedule_names),
	INT("micro_batches", parallel.micro_batches, 1, 1 << 20),
	{ 0 },
};

static const struct field checkpoint_fields[] = {
	STR("dir", train.checkpoint_dir),
	LONG("every", train.checkpoint_every, 0, LONG_MAX),
	LONG("keep", train.checkpoint_keep, 0, 1000000000L),
	{ 0 },
};

static const struct field train_fields[] = {
	LONG("steps", train.steps, 1, LONG_MAX),
	LONG("batch", train.batch, 1, LONG_MAX),
	DBL("lr", train.lr, 0, 10),
	LONG("seed", train.seed, 0, LONG_MAX),
	ENUM("backend", train.backend, backend_names),
	ENUM("pp_transport", train.pp_transport, pp_transport_names),
	SECTION("checkpoint", checkpoint_fields, 0),
	{ 0 },
};

static const struct field health_fields[] = {
	DBL("heartbeat_s", health.heartbeat_s, 0, 3600),
	DBL("hang_timeout_s", health.hang_timeout_s, 0, 86400),
	DBL("rendezvous_s", health.rendezvous_s, 0, 86400),
	INT("max_restarts", health.max_restarts, 0, 1000),
	{ .name = "preflight",
	  .type = F_PREFLIGHT,
	  .off = OFF(health.preflight),
	  .names = preflight_names },
	DBL("min_free_disk_gb", health.min_free_disk_gb, 0, 1e9),
	DBL("max_clock_offset_s", health.max_clock_offset_s, 0, 86400),
	{ 0 },
};

static const struct field notify_fields[] = {
	{ .name = "webhooks", .type = F_URLS, .off = OFF(notify.webhooks) },
	{ 0 },
};

static const struct field metrics_fields[] = {
	{ .name = "push_url", .type = F_URL, .off = OFF(metrics.push_url) },
	DBL("interval_s", metrics.interval_s, 0, 86400),
	{ 0 },
};

static const struct field root_fields[] = {
	SECTION("cluster", cluster_fields, 1),
	SECTION("model", model_fields, 1),
	SECTION("parallel", parallel_fields, 1),
	SECTION("train", train_fields, 0),
	SECTION("health", health_fields, 0),
	{ .name = "env", .type = F_ENV, .off = OFF(env) },
	SECTION("notify", notify_fields, 0),
	SECTION("metrics", metrics_fields, 0),
	{ 0 },
};

static const char *enum_name(const char *const *names, size_t n, int v)
{
	return v >= 0 && (size_t)v < n && names[v] ? names[v] : "?";
}

const char *dp_recipe_launcher_name(enum dp_recipe_launcher v)
{
	return enum_name(launcher_names, DP_ARRAY_SIZE(launcher_names), (int)v);
}

const char *dp_recipe_known_hosts_name(enum dp_recipe_known_hosts v)
{
	return enum_name(known_hosts_names, DP_ARRAY_SIZE(known_hosts_names), (int)v);
}

const char *dp_recipe_schedule_name(enum dp_recipe_schedule v)
{
	return enum_name(schedule_names, DP_ARRAY_SIZE(schedule_names), (int)v);
}

const char *dp_recipe_backend_name(enum dp_recipe_backend v)
{
	return enum_name(backend_names, DP_ARRAY_SIZE(backend_names), (int)v);
}

const char *dp_recipe_pp_transport_name(enum dp_recipe_pp_transport v)
{
	return enum_name(pp_transport_names, DP_ARRAY_SIZE(pp_transport_names), (int)v);
}

const char *dp_recipe_preflight_name(unsigned bit)
{
	for (size_t i = 0; preflight_names[i]; i++)
		if (bit == 1u << i)
			return preflight_names[i];
	return NULL;
}

/* ---- pass 2 helpers ------------------------------------------------------- */

static void join(char *buf, size_t size, const char *parent, const char *key)
{
	int n = snprintf(buf, size, "%s%s%s", parent, *parent ? "." : "", key);

	if (n < 0)
		buf[0] = '\0'; /* a truncated path is still a useful pointer */
}

static struct fstate *note(struct ctx *c, size_t off, const char *path, const struct node *v,
			   int bad)
{
	struct fstate *s;

	if (grow((void **)&c->st, &c->alloc_st, c->n_st + 1, sizeof(*c->st))) {
		c->nomem = 1;
		return NULL;
	}
	s = &c->st[c->n_st];
	s->off = off;
	s->path = strdup(path);
	if (!s->path) {
		c->nomem = 1;
		return NULL;
	}
	s->line = v->line;
	s->col = v->col;
	s->bad = bad;
	c->n_st++;
	return s;
}

static const struct fstate *state_of(const struct ctx *c, size_t off)
{
	for (size_t i = 0; i < c->n_st; i++)
		if (c->st[i].off == off)
			return &c->st[i];
	return NULL;
}

static const struct fstate *section_of(const struct ctx *c, const char *path)
{
	for (size_t i = 0; i < c->n_st; i++)
		if (c->st[i].off == SIZE_MAX && strcmp(c->st[i].path, path) == 0)
			return &c->st[i];
	return NULL;
}

/* How a value looks, for "expected X, got Y". */
static const char *describe(const struct node *n, char *buf, size_t size)
{
	if (n->kind == N_MAP)
		return "a map";
	if (n->kind == N_SEQ)
		return "a list";
	if (is_null(n))
		return "null";
	if (!n->text || snprintf(buf, size, "%s'%.40s%s'", n->quoted ? "the string " : "", n->text,
				 strlen(n->text) > 40 ? "..." : "") < 0)
		return "a scalar";
	return buf;
}

static void type_error(struct ctx *c, const struct node *v, const char *kp, const char *want)
{
	char buf[80];

	diag(c, v->line, v->col, kp, "expected %s, got %s", want, describe(v, buf, sizeof(buf)));
}

static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	size_t row[64], best;

	if (la >= DP_ARRAY_SIZE(row) || lb >= DP_ARRAY_SIZE(row))
		return SIZE_MAX;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diagv = row[0];

		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];

			best = diagv + (a[i - 1] != b[j - 1]);
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diagv = up;
		}
	}
	return row[lb];
}

static void unknown_key(struct ctx *c, const struct node *k, const char *kp,
			const struct field *fields)
{
	const char *best = NULL;
	size_t bestd = SIZE_MAX, len = strlen(k->text);
	char list[512];
	size_t used = 0;

	for (const struct field *f = fields; f->name; f++) {
		size_t d = edit_distance(k->text, f->name);

		if (d < bestd) {
			bestd = d;
			best = f->name;
		}
	}
	/* close enough to be a typo: at most 2 edits, or a third of the word */
	if (best && (bestd <= 2 || bestd <= len / 3) && bestd < len) {
		diag(c, k->line, k->col, kp, "unknown key (did you mean '%s'?)", best);
		return;
	}
	list[0] = '\0';
	for (const struct field *f = fields; f->name; f++) {
		int n = snprintf(list + used, sizeof(list) - used, "%s%s", used ? ", " : "",
				 f->name);

		if (n < 0 || (size_t)n >= sizeof(list) - used)
			break;
		used += (size_t)n;
	}
	diag(c, k->line, k->col, kp, "unknown key (known keys: %s)", list);
}

static void list_names(const char *const *names, char *buf, size_t size)
{
	size_t used = 0;

	buf[0] = '\0';
	for (size_t i = 0; names[i]; i++) {
		int n = snprintf(buf + used, size - used, "%s%s", i ? ", " : "", names[i]);

		if (n < 0 || (size_t)n >= size - used)
			return;
		used += (size_t)n;
	}
}

static int name_index(const char *const *names, const char *s)
{
	for (int i = 0; names[i]; i++)
		if (strcmp(names[i], s) == 0)
			return i;
	return -1;
}

/* A plain scalar that is a base-10 integer; 0, -EINVAL (not one) or -ERANGE. */
static int scalar_long(const struct node *v, long *out)
{
	const char *s = v->text;
	char *end = NULL;
	long x;

	if (v->kind != N_SCALAR || v->quoted || is_null(v))
		return -EINVAL;
	if (!(*s >= '0' && *s <= '9') && !((*s == '-' || *s == '+') && s[1] >= '0' && s[1] <= '9'))
		return -EINVAL;
	errno = 0;
	x = strtol(s, &end, 10);
	if (*end != '\0')
		return -EINVAL;
	if (errno == ERANGE)
		return -ERANGE;
	*out = x;
	return 0;
}

static int scalar_double(const struct node *v, double *out)
{
	const char *s = v->text;
	char *end = NULL;
	double x;

	if (v->kind != N_SCALAR || v->quoted || is_null(v))
		return -EINVAL;
	/* digits, sign, point and exponent only: no hex, inf or nan */
	if (strspn(s, "0123456789+-.eE") != strlen(s) || !strpbrk(s, "0123456789"))
		return -EINVAL;
	errno = 0;
	x = strtod(s, &end);
	if (end == s || *end != '\0')
		return -EINVAL;
	if (errno == ERANGE || !isfinite(x))
		return -ERANGE;
	*out = x;
	return 0;
}

static int is_url(const char *s)
{
	return (strncmp(s, "http://", 7) == 0 && s[7]) || (strncmp(s, "https://", 8) == 0 && s[8]);
}

static char *take_string(struct ctx *c, const struct node *v)
{
	char *s = strdup(v->text);

	if (!s)
		c->nomem = 1;
	return s;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Expand one hostlist scalar, appending to *all (created on first use). */
static int hosts_item(struct ctx *c, const struct node *v, const char *kp, struct dp_hostlist **all)
{
	struct dp_hostlist *hl = NULL;
	struct dp_err e = { 0 };
	int rc;

	if (v->kind != N_SCALAR || is_null(v)) {
		type_error(c, v, kp, "a hostlist string");
		return -EINVAL;
	}
	rc = dp_hostlist_expand(v->text, &hl, &e);
	if (rc == -ENOMEM) {
		c->nomem = 1;
		return rc;
	}
	if (rc) {
		diag(c, v->line, v->col, kp, "%s", e.msg);
		return rc;
	}
	if (!*all) {
		*all = hl;
		return 0;
	}
	for (size_t i = 0; i < dp_hostlist_count(hl) && rc == 0; i++)
		rc = dp_hostlist_push(*all, dp_hostlist_get(hl, i), &e);
	if (rc == -ENOMEM)
		c->nomem = 1;
	else if (rc)
		diag(c, v->line, v->col, kp, "%s", e.msg);
	dp_hostlist_free(hl);
	return rc;
}

static int parse_hosts(struct ctx *c, const struct field *f, const struct node *v, const char *kp)
{
	struct dp_hostlist *all = NULL;
	const char **names = NULL;
	size_t n;
	int rc = 0;

	if (v->kind == N_SEQ) {
		char ikp[KEY_MAX];

		for (size_t i = 0; i < v->n && rc == 0; i++) {
			int k = snprintf(ikp, sizeof(ikp), "%s[%zu]", kp, i);

			if (k < 0)
				ikp[0] = '\0';
			rc = hosts_item(c, v->kids[i], ikp, &all);
		}
		if (rc == 0 && !all) {
			diag(c, v->line, v->col, kp, "needs at least one host");
			rc = -EINVAL;
		}
	} else if (v->kind == N_MAP) {
		type_error(c, v, kp, "a hostlist string or a list of hosts");
		rc = -EINVAL;
	} else {
		rc = hosts_item(c, v, kp, &all);
	}
	if (rc)
		goto out;
	/* one worker set per host: a name given twice is a mistake */
	n = dp_hostlist_count(all);
	names = malloc(n * sizeof(*names));
	if (!names) {
		c->nomem = 1;
		rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		names[i] = dp_hostlist_get(all, i);
	qsort(names, n, sizeof(*names), cmp_str);
	for (size_t i = 1; i < n; i++)
		if (strcmp(names[i - 1], names[i]) == 0) {
			diag(c, v->line, v->col, kp, "host '%s' is listed more than once",
			     names[i]);
			rc = -EINVAL;
			break;
		}
	free(names);
out:
	if (rc) {
		dp_hostlist_free(all);
		(void)note(c, f->off, kp, v, 1);
		return rc;
	}
	*AT(c->r, f->off, struct dp_hostlist *) = all;
	(void)note(c, f->off, kp, v, 0);
	return 0;
}

static void parse_preflight(struct ctx *c, const struct field *f, const struct node *v,
			    const char *kp)
{
	unsigned bits = 0;
	int bad = 0;

	if (v->kind != N_SEQ) {
		type_error(c, v, kp, "a list of checks");
		(void)note(c, f->off, kp, v, 1);
		return;
	}
	for (size_t i = 0; i < v->n; i++) {
		const struct node *it = v->kids[i];
		char ikp[KEY_MAX], names[128];
		int idx;

		if (snprintf(ikp, sizeof(ikp), "%s[%zu]", kp, i) < 0)
			ikp[0] = '\0';
		if (it->kind != N_SCALAR || is_null(it)) {
			type_error(c, it, ikp, "a check name");
			bad = 1;
			continue;
		}
		idx = name_index(f->names, it->text);
		if (idx < 0) {
			list_names(f->names, names, sizeof(names));
			diag(c, it->line, it->col, ikp, "'%s' is not one of %s", it->text, names);
			bad = 1;
		} else if (bits & (1u << idx)) {
			diag(c, it->line, it->col, ikp, "check '%s' is listed more than once",
			     it->text);
			bad = 1;
		} else {
			bits |= 1u << idx;
		}
	}
	if (!bad)
		*AT(c->r, f->off, unsigned) = bits;
	(void)note(c, f->off, kp, v, bad);
}

static void parse_urls(struct ctx *c, const struct field *f, const struct node *v, const char *kp)
{
	char **urls;
	size_t n = 0;
	int bad = 0;

	if (v->kind != N_SEQ) {
		type_error(c, v, kp, "a list of URLs");
		(void)note(c, f->off, kp, v, 1);
		return;
	}
	urls = calloc(v->n + 1, sizeof(*urls));
	if (!urls) {
		c->nomem = 1;
		return;
	}
	for (size_t i = 0; i < v->n; i++) {
		const struct node *it = v->kids[i];
		char ikp[KEY_MAX];

		if (snprintf(ikp, sizeof(ikp), "%s[%zu]", kp, i) < 0)
			ikp[0] = '\0';
		if (it->kind != N_SCALAR || is_null(it)) {
			type_error(c, it, ikp, "a URL");
			bad = 1;
		} else if (!is_url(it->text)) {
			diag(c, it->line, it->col, ikp, "'%s' is not an http:// or https:// URL",
			     it->text);
			bad = 1;
		} else if ((urls[n] = take_string(c, it)) != NULL) {
			n++;
		}
	}
	/* notify.webhooks: the only F_URLS; its count follows the array */
	*AT(c->r, f->off, char **) = urls;
	c->r->notify.n_webhooks = n;
	(void)note(c, f->off, kp, v, bad);
}

static int env_name_ok(const char *s)
{
	if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || *s == '_'))
		return 0;
	return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") ==
	       strlen(s);
}

static void parse_env(struct ctx *c, const struct field *f, const struct node *v, const char *kp)
{
	struct dp_recipe *r = c->r;
	size_t n = 0;

	if (is_null(v))
		return;
	if (v->kind != N_MAP) {
		type_error(c, v, kp, "a map of variables");
		(void)note(c, f->off, kp, v, 1);
		return;
	}
	r->env = calloc(v->n / 2 + 1, sizeof(*r->env));
	if (!r->env) {
		c->nomem = 1;
		return;
	}
	for (size_t i = 0; i + 1 < v->n; i += 2) {
		const struct node *k = v->kids[i], *val = v->kids[i + 1];
		char ekp[KEY_MAX];
		size_t j;

		if (k->kind != N_SCALAR) {
			diag(c, k->line, k->col, kp, "keys must be strings, got %s",
			     k->kind == N_MAP ? "a map" : "a list");
			continue;
		}
		join(ekp, sizeof(ekp), kp, k->text);
		if (!env_name_ok(k->text)) {
			diag(c, k->line, k->col, ekp, "not a valid environment variable name");
			continue;
		}
		for (j = 0; j < n; j++)
			if (strcmp(r->env[j].name, k->text) == 0)
				break;
		if (j < n) {
			diag(c, k->line, k->col, ekp, "duplicate key");
			continue;
		}
		if (val->kind != N_SCALAR) {
			type_error(c, val, ekp, "a string");
			continue;
		}
		r->env[n].name = strdup(k->text);
		r->env[n].value = strdup(is_null(val) ? "" : val->text);
		if (!r->env[n].name || !r->env[n].value) {
			free(r->env[n].name);
			free(r->env[n].value);
			r->env[n].name = r->env[n].value = NULL;
			c->nomem = 1;
			continue;
		}
		n++;
	}
	r->n_env = n;
}

static void walk_map(struct ctx *c, const struct node *m, const struct field *fields,
		     const char *path);

static void parse_value(struct ctx *c, const struct field *f, const struct node *v, const char *kp)
{
	char names[128];
	long l = 0;
	double d = 0;
	int rc;

	switch (f->type) {
	case F_SECTION:
		(void)note(c, SIZE_MAX, kp, v, 0);
		walk_map(c, v, f->sub, kp);
		return;
	case F_INT:
	case F_LONG:
		rc = scalar_long(v, &l);
		if (rc == -EINVAL) {
			type_error(c, v, kp, "an integer");
		} else if (rc == -ERANGE || l < f->ilo || l > f->ihi) {
			if (f->ihi == LONG_MAX)
				diag(c, v->line, v->col, kp, "must be at least %ld, got %s", f->ilo,
				     v->text);
			else
				diag(c, v->line, v->col, kp, "must be between %ld and %ld, got %s",
				     f->ilo, f->ihi, v->text);
			rc = -ERANGE;
		} else if (f->type == F_INT) {
			*AT(c->r, f->off, int) = (int)l;
		} else {
			*AT(c->r, f->off, long) = l;
		}
		(void)note(c, f->off, kp, v, rc != 0);
		return;
	case F_DBL:
		rc = scalar_double(v, &d);
		if (rc == -EINVAL) {
			type_error(c, v, kp, "a number");
		} else if (rc == -ERANGE || d <= f->dlo || d > f->dhi) {
			diag(c, v->line, v->col, kp,
			     "must be greater than %g and at most %g, got %s", f->dlo, f->dhi,
			     v->text);
			rc = -ERANGE;
		} else {
			*AT(c->r, f->off, double) = d;
		}
		(void)note(c, f->off, kp, v, rc != 0);
		return;
	case F_STR:
	case F_URL:
		rc = 0;
		if (v->kind != N_SCALAR) {
			type_error(c, v, kp, f->type == F_URL ? "a URL" : "a string");
			rc = -EINVAL;
		} else if (is_null(v)) {
			return; /* explicit null: keep the default */
		} else if (!*v->text) {
			diag(c, v->line, v->col, kp, "must not be empty");
			rc = -EINVAL;
		} else if (f->type == F_URL && !is_url(v->text)) {
			diag(c, v->line, v->col, kp, "'%s' is not an http:// or https:// URL",
			     v->text);
			rc = -EINVAL;
		} else {
			char **slot = AT(c->r, f->off, char *);

			free(*slot);
			*slot = take_string(c, v);
		}
		(void)note(c, f->off, kp, v, rc != 0);
		return;
	case F_ENUM:
		rc = -EINVAL;
		list_names(f->names, names, sizeof(names));
		if (v->kind != N_SCALAR || is_null(v))
			type_error(c, v, kp, "one of the names");
		else if (name_index(f->names, v->text) < 0)
			diag(c, v->line, v->col, kp, "'%s' is not one of %s", v->text, names);
		else
			rc = 0;
		if (rc == 0)
			*AT(c->r, f->off, int) = name_index(f->names, v->text);
		(void)note(c, f->off, kp, v, rc != 0);
		return;
	case F_HOSTS:
		(void)parse_hosts(c, f, v, kp);
		return;
	case F_PREFLIGHT:
		parse_preflight(c, f, v, kp);
		return;
	case F_URLS:
		parse_urls(c, f, v, kp);
		return;
	case F_ENV:
		parse_env(c, f, v, kp);
		return;
	}
}

static void walk_map(struct ctx *c, const struct node *m, const struct field *fields,
		     const char *path)
{
	const struct node *seen[32] = { 0 };
	char kp[KEY_MAX];

	if (is_null(m)) {
		/* "section:" with nothing under it: an empty map */
	} else if (m->kind != N_MAP) {
		type_error(c, m, path, "a map");
		return;
	}
	for (size_t i = 0; m->kind == N_MAP && i + 1 < m->n; i += 2) {
		const struct node *k = m->kids[i], *v = m->kids[i + 1];
		const struct field *f;
		size_t fi;

		if (k->kind != N_SCALAR) {
			diag(c, k->line, k->col, path, "keys must be strings, got %s",
			     k->kind == N_MAP ? "a map" : "a list");
			continue;
		}
		join(kp, sizeof(kp), path, k->text);
		for (f = fields; f->name; f++)
			if (strcmp(f->name, k->text) == 0)
				break;
		if (!f->name) {
			unknown_key(c, k, kp, fields);
			continue;
		}
		fi = (size_t)(f - fields);
		if (seen[fi]) {
			diag(c, k->line, k->col, kp,
			     "duplicate key (first given at line %u, column %u)", seen[fi]->line,
			     seen[fi]->col);
			continue;
		}
		seen[fi] = k;
		parse_value(c, f, v, kp);
	}
	for (const struct field *f = fields; f->name; f++) {
		if (!f->req || seen[f - fields])
			continue;
		join(kp, sizeof(kp), path, f->name);
		diag(c, m->line, m->col, kp, "missing required key");
	}
}

/* ---- pass 3: consistency -------------------------------------------------- */

/* Usable in pass 3: given and good, or defaulted (not given at all). */
static int ok(const struct ctx *c, size_t off)
{
	const struct fstate *s = state_of(c, off);

	return !s || !s->bad;
}

static int given(const struct ctx *c, size_t off)
{
	return state_of(c, off) != NULL;
}

/* A consistency error at @path: at its value if given, else at its section. */
__attribute__((format(printf, 4, 5))) static void cerr(struct ctx *c, size_t off, const char *path,
						       const char *fmt, ...)
{
	const struct fstate *s = state_of(c, off);
	char sec[KEY_MAX], *dot;
	unsigned line = c->root_line, col = c->root_col;
	char *msg = NULL;
	va_list ap;
	int n;

	if (s) {
		line = s->line;
		col = s->col;
	} else {
		if (snprintf(sec, sizeof(sec), "%s", path) < 0)
			sec[0] = '\0';
		while ((dot = strrchr(sec, '.')) != NULL) {
			const struct fstate *ss;

			*dot = '\0';
			ss = section_of(c, sec);
			if (ss) {
				line = ss->line;
				col = ss->col;
				break;
			}
		}
	}
	va_start(ap, fmt);
	n = vasprintf(&msg, fmt, ap);
	va_end(ap);
	if (n < 0) {
		c->nomem = 1;
		return;
	}
	diag(c, line, col, path, "%s%s", msg, s ? "" : " (not set: the default applies)");
	free(msg);
}

/* train.batch is the global batch: every DP replica and every EP rank runs
 * micro_batches micro-batches of batch / (micro_batches * dp * ep)
 * sequences, so it must be a multiple of that product.  The error gives the
 * nearest multiples below and above (the one below only when it is > 0). */
static void check_batch(struct ctx *c)
{
	const struct dp_recipe *r = c->r;
	long unit = (long)r->parallel.micro_batches * r->parallel.dp * r->parallel.ep;
	long below = r->train.batch / unit * unit;
	char near[64];

	if (r->train.batch % unit == 0)
		return;
	if (below > 0 && below <= LONG_MAX - unit)
		(void)snprintf(near, sizeof(near), "%ld or %ld", below, below + unit);
	else
		(void)snprintf(near, sizeof(near), "%ld", below > 0 ? below : unit);
	cerr(c, OFF(train.batch), "train.batch",
	     "%ld is not a multiple of micro_batches %d x dp %d x ep %d = %ld; use %s",
	     r->train.batch, r->parallel.micro_batches, r->parallel.dp, r->parallel.ep, unit, near);
}

static void check_experts(struct ctx *c, int experts_ok, int ep_ok, int layers_ok);

/* cluster.spares: ssh only (a spare replaces a failed host on a restart,
 * launcher/ctl_launch.h), and no spare is also a host. */
static void check_spares(struct ctx *c)
{
	const struct dp_recipe *r = c->r;
	const char **names;
	size_t nh;

	if (!r->cluster.spares)
		return;
	if (r->cluster.launcher != DP_RECIPE_LAUNCH_SSH && ok(c, OFF(cluster.launcher))) {
		cerr(c, OFF(cluster.spares), "cluster.spares",
		     "spares need launcher 'ssh', got '%s' (docs/launch.md: restarts)",
		     dp_recipe_launcher_name(r->cluster.launcher));
		return;
	}
	if (!r->cluster.hosts)
		return;
	/* the hosts sorted, each spare looked up: thousands of each are fine */
	nh = dp_hostlist_count(r->cluster.hosts);
	names = malloc(nh * sizeof(*names));
	if (!names) {
		c->nomem = 1;
		return;
	}
	for (size_t j = 0; j < nh; j++)
		names[j] = dp_hostlist_get(r->cluster.hosts, j);
	qsort(names, nh, sizeof(*names), cmp_str);
	for (size_t i = 0; i < dp_hostlist_count(r->cluster.spares); i++) {
		const char *s = dp_hostlist_get(r->cluster.spares, i);

		if (bsearch(&s, names, nh, sizeof(*names), cmp_str)) {
			cerr(c, OFF(cluster.spares), "cluster.spares",
			     "spare '%s' is also in cluster.hosts", s);
			break;
		}
	}
	free(names);
}

static void check_consistency(struct ctx *c)
{
	struct dp_recipe *r = c->r;
	long nodes = r->cluster.hosts ? (long)dp_hostlist_count(r->cluster.hosts) : 0;
	long long world = (long long)nodes * r->cluster.gpus;
	int have_hosts = r->cluster.hosts != NULL && ok(c, OFF(cluster.gpus));
	int pp_ok = given(c, OFF(parallel.pp)) && ok(c, OFF(parallel.pp));
	int mb_ok = ok(c, OFF(parallel.micro_batches));
	int sched_ok = ok(c, OFF(parallel.schedule));
	int experts_ok = given(c, OFF(model.experts)) && ok(c, OFF(model.experts));
	int topk_ok = given(c, OFF(model.top_k)) && ok(c, OFF(model.top_k));
	int groups_ok = ok(c, OFF(model.groups));
	int ep_ok = ok(c, OFF(parallel.ep)), dp_ok = ok(c, OFF(parallel.dp));
	int layers_ok = given(c, OFF(model.layers)) && ok(c, OFF(model.layers));
	int hidden_ok = given(c, OFF(model.hidden)) && ok(c, OFF(model.hidden));

	/* defaults that depend on other keys */
	if (!given(c, OFF(model.ffn_hidden)) && hidden_ok)
		r->model.ffn_hidden = 4 * r->model.hidden;
	if (!given(c, OFF(parallel.micro_batches)) && pp_ok)
		r->parallel.micro_batches = 2 * r->parallel.pp;
	/* the global batch: one sequence per micro-batch on every DP replica
	 * and EP rank (each EP rank takes micro-batches of its own) */
	if (!given(c, OFF(train.batch)) && mb_ok && dp_ok && ep_ok)
		r->train.batch = (long)r->parallel.micro_batches * r->parallel.dp * r->parallel.ep;
	if (!given(c, OFF(model.max_nodes_per_token)) && groups_ok && nodes > 0)
		r->model.max_nodes_per_token =
			(int)(r->model.groups < nodes ? r->model.groups : nodes);

	if (r->cluster.launcher == DP_RECIPE_LAUNCH_LOCAL && ok(c, OFF(cluster.launcher)) &&
	    r->cluster.hosts && nodes != 1)
		cerr(c, OFF(cluster.hosts), "cluster.hosts",
		     "launcher 'local' runs on one host, got %ld hosts", nodes);

	check_spares(c);

	if (have_hosts && pp_ok && ep_ok && dp_ok) {
		long long prod = (long long)r->parallel.pp * r->parallel.ep * r->parallel.dp;

		if (prod != world) {
			size_t off = given(c, OFF(parallel.dp))	  ? OFF(parallel.dp)
				     : given(c, OFF(parallel.ep)) ? OFF(parallel.ep)
								  : OFF(parallel.pp);
			const char *key = off == OFF(parallel.dp)   ? "parallel.dp"
					  : off == OFF(parallel.ep) ? "parallel.ep"
								    : "parallel.pp";

			cerr(c, off, key,
			     "pp*ep*dp = %d*%d*%d = %lld but the cluster has %lld GPU%s (%ld host%s x %d per node)",
			     r->parallel.pp, r->parallel.ep, r->parallel.dp, prod, world,
			     world == 1 ? "" : "s", nodes, nodes == 1 ? "" : "s", r->cluster.gpus);
		}
	}

	if (pp_ok && sched_ok && r->parallel.schedule == DP_RECIPE_SCHED_DUALPIPE &&
	    r->parallel.pp % 2 != 0)
		cerr(c, OFF(parallel.pp), "parallel.pp",
		     "schedule 'dualpipe' needs an even pp, got %d", r->parallel.pp);
	if (pp_ok && sched_ok && mb_ok) {
		int mb = r->parallel.micro_batches, pp = r->parallel.pp;

		if (r->parallel.schedule == DP_RECIPE_SCHED_DUALPIPE &&
		    (mb < 2 * pp || mb % 2 != 0))
			cerr(c, OFF(parallel.micro_batches), "parallel.micro_batches",
			     "schedule 'dualpipe' needs an even micro_batches >= 2*pp = %d, got %d",
			     2 * pp, mb);
		if (r->parallel.schedule == DP_RECIPE_SCHED_DUALPIPEV && mb < 2 * pp)
			cerr(c, OFF(parallel.micro_batches), "parallel.micro_batches",
			     "schedule 'dualpipev' needs micro_batches >= 2*pp = %d, got %d",
			     2 * pp, mb);
	}
	if (pp_ok && sched_ok && layers_ok) {
		/* DualPipeV cuts the model into 2*pp chunks, the others into pp */
		int chunks = r->parallel.schedule == DP_RECIPE_SCHED_DUALPIPEV ? 2 * r->parallel.pp
									       : r->parallel.pp;

		if (r->model.layers < chunks)
			cerr(c, OFF(parallel.pp), "parallel.pp",
			     "schedule '%s' splits the model into %d stages but model.layers is %d",
			     dp_recipe_schedule_name(r->parallel.schedule), chunks,
			     r->model.layers);
	}
	if (layers_ok && ok(c, OFF(model.dense_layers)) && r->model.dense_layers >= r->model.layers)
		cerr(c, OFF(model.dense_layers), "model.dense_layers",
		     "must be less than model.layers = %d, got %d", r->model.layers,
		     r->model.dense_layers);
	if (hidden_ok && ok(c, OFF(model.heads)) && r->model.hidden % r->model.heads != 0)
		cerr(c, OFF(model.heads), "model.heads",
		     "model.hidden = %d is not divisible by %d heads", r->model.hidden,
		     r->model.heads);
	if (experts_ok && ep_ok && r->model.experts % r->parallel.ep != 0)
		cerr(c, OFF(parallel.ep), "parallel.ep",
		     "model.experts = %d is not divisible by ep = %d", r->model.experts,
		     r->parallel.ep);
	if (experts_ok && groups_ok && r->model.experts % r->model.groups != 0)
		cerr(c, OFF(model.groups), "model.groups",
		     "model.experts = %d is not divisible by %d groups", r->model.experts,
		     r->model.groups);
	if (experts_ok && topk_ok && r->model.top_k > r->model.experts)
		cerr(c, OFF(model.top_k), "model.top_k", "%d is more than the %d routed experts",
		     r->model.top_k, r->model.experts);
	if (given(c, OFF(model.max_nodes_per_token)) && ok(c, OFF(model.max_nodes_per_token))) {
		int m = r->model.max_nodes_per_token;

		if (r->cluster.hosts && m > nodes)
			cerr(c, OFF(model.max_nodes_per_token), "model.max_nodes_per_token",
			     "%d is more than the %ld node%s of the cluster", m, nodes,
			     nodes == 1 ? "" : "s");
		else if (groups_ok && m > r->model.groups)
			cerr(c, OFF(model.max_nodes_per_token), "model.max_nodes_per_token",
			     "%d is more than the %d expert groups", m, r->model.groups);
	}
	if (experts_ok && topk_ok && groups_ok && r->model.max_nodes_per_token > 0 &&
	    ok(c, OFF(model.max_nodes_per_token)) && r->model.experts % r->model.groups == 0 &&
	    r->model.top_k <= r->model.experts) {
		/* group-limited routing: a token sees max_nodes_per_token groups */
		long reach =
			(long)r->model.max_nodes_per_token * (r->model.experts / r->model.groups);

		if (r->model.top_k > reach)
			cerr(c, OFF(model.top_k), "model.top_k",
			     "%d is more than the %ld experts a token can reach in %d groups of %d",
			     r->model.top_k, reach, r->model.max_nodes_per_token,
			     r->model.experts / r->model.groups);
	}
	if (given(c, OFF(train.batch)) && ok(c, OFF(train.batch)) && pp_ok && mb_ok && dp_ok &&
	    ep_ok)
		check_batch(c);
	if (ok(c, OFF(health.heartbeat_s)) && ok(c, OFF(health.hang_timeout_s)) &&
	    r->health.hang_timeout_s <= r->health.heartbeat_s)
		cerr(c, OFF(health.hang_timeout_s), "health.hang_timeout_s",
		     "%g must be greater than health.heartbeat_s = %g", r->health.hang_timeout_s,
		     r->health.heartbeat_s);
	if (ok(c, OFF(train.checkpoint_every)) && r->train.checkpoint_every > 0 &&
	    !r->train.checkpoint_dir && ok(c, OFF(train.checkpoint_dir)))
		cerr(c, OFF(train.checkpoint_every), "train.checkpoint.every",
		     "needs train.checkpoint.dir");
	if (ok(c, OFF(train.checkpoint_keep)) && r->train.checkpoint_keep > 0 &&
	    !r->train.checkpoint_dir && ok(c, OFF(train.checkpoint_dir)))
		cerr(c, OFF(train.checkpoint_keep), "train.checkpoint.keep",
		     "needs train.checkpoint.dir");
	/* NCCL moves device buffers between GPUs: no GPU, no NCCL */
	if (ok(c, OFF(train.pp_transport)) && ok(c, OFF(train.backend)) &&
	    r->train.pp_transport == DP_RECIPE_PP_NCCL &&
	    r->train.backend != DP_RECIPE_BACKEND_CUDA)
		cerr(c, OFF(train.pp_transport), "train.pp_transport",
		     "'nccl' needs train.backend 'cuda', got '%s'",
		     dp_recipe_backend_name(r->train.backend));
	check_experts(c, experts_ok, ep_ok, layers_ok);
}

/* The loads as the training ranks take them (DP_EXPERT_LOADS, read by
 * worker/train_ctl.c): the training model makes every layer an MoE layer,
 * so the dense layers get uniform rows, then the file's rows.  Kept only up
 * to DP_RECIPE_LOADS_ENV_MAX bytes (dpctl launch refuses more). */
static void loads_env(struct ctx *c)
{
	struct dp_recipe *r = c->r;
	const int L = r->model.layers, E = r->model.experts, dense = r->model.dense_layers;
	float *all = malloc((size_t)L * (size_t)E * sizeof(float));
	char *text = NULL;

	if (!all) {
		c->nomem = 1;
		return;
	}
	for (size_t i = 0; i < (size_t)dense * (size_t)E; i++)
		all[i] = 1.0f;
	memcpy(all + (size_t)dense * (size_t)E, r->model.expert_load,
	       (size_t)(L - dense) * (size_t)E * sizeof(float));
	if (dp_eplb_loads_format(all, L, E, &text, NULL) != 0) {
		c->nomem = 1;
	} else {
		r->model.expert_loads_bytes = strlen(text);
		if (r->model.expert_loads_bytes <= DP_RECIPE_LOADS_ENV_MAX &&
		    asprintf(&r->model.expert_loads_env, "DP_EXPERT_LOADS=%s", text) < 0) {
			r->model.expert_loads_env = NULL;
			c->nomem = 1;
		}
	}
	free(text);
	free(all);
}

/* model.redundant_experts and model.expert_loads (EPLB in `dpctl plan`): the
 * slots must split evenly over the EP ranks, model.rebalance_every needs
 * one of them, and the loads file is resolved
 * against the recipe's directory, read, and checked against the model shape
 * here, so that `recipe check` reports it at the key like any other error. */
static void check_experts(struct ctx *c, int experts_ok, int ep_ok, int layers_ok)
{
	struct dp_recipe *r = c->r;
	const char *rel = r->model.expert_loads, *slash = strrchr(c->file, '/');
	struct dp_err e = { 0 };
	float *w = NULL;
	int rows = 0, cols = 0, moe;
	char *path;

	if (given(c, OFF(model.redundant_experts)) && ok(c, OFF(model.redundant_experts)) &&
	    experts_ok && ep_ok && (r->model.experts + r->model.redundant_experts) % r->parallel.ep)
		cerr(c, OFF(model.redundant_experts), "model.redundant_experts",
		     "experts + redundant_experts = %d must be a multiple of parallel.ep = %d "
		     "(every EP rank holds the same number of expert slots)",
		     r->model.experts + r->model.redundant_experts, r->parallel.ep);
	if (given(c, OFF(model.rebalance_every)) && ok(c, OFF(model.rebalance_every)) &&
	    r->model.rebalance_every > 0 && r->model.redundant_experts == 0 && !rel)
		cerr(c, OFF(model.rebalance_every), "model.rebalance_every",
		     "%d needs an EPLB placement to re-place: set model.redundant_experts or "
		     "model.expert_loads",
		     r->model.rebalance_every);
	if (!rel || !ok(c, OFF(model.expert_loads)))
		return;
	if (rel[0] != '/' && slash) {
		if (asprintf(&path, "%.*s/%s", (int)(slash - c->file), c->file, rel) < 0)
			path = NULL;
	} else {
		path = strdup(rel);
	}
	if (!path) {
		c->nomem = 1;
		return;
	}
	free(r->model.expert_loads);
	r->model.expert_loads = path;
	if (dp_eplb_loads_read(path, &w, &rows, &cols, &e) != 0) {
		if (e.code == ENOMEM)
			c->nomem = 1;
		else
			cerr(c, OFF(model.expert_loads), "model.expert_loads", "%s",
			     strncmp(e.msg, "eplb: ", 6) == 0 ? e.msg + 6 : e.msg);
		return;
	}
	moe = r->model.layers - r->model.dense_layers;
	if (layers_ok && ok(c, OFF(model.dense_layers)) && rows != moe)
		cerr(c, OFF(model.expert_loads), "model.expert_loads",
		     "'%s' has %d rows but the model has %d MoE layers (layers %d - dense_layers "
		     "%d): give one row of loads per MoE layer",
		     path, rows, moe, r->model.layers, r->model.dense_layers);
	else if (experts_ok && cols != r->model.experts)
		cerr(c, OFF(model.expert_loads), "model.expert_loads",
		     "'%s' has %d loads per layer but model.experts is %d", path, cols,
		     r->model.experts);
	else if (layers_ok && experts_ok && ok(c, OFF(model.dense_layers))) {
		r->model.expert_load = w;
		w = NULL;
		loads_env(c);
	}
	free(w);
}

/* ---- load ----------------------------------------------------------------- */

static int set_defaults(struct dp_recipe *r, const char *name)
{
	r->path = strdup(name);
	r->model.name = strdup("moe");
	if (!r->path || !r->model.name)
		return -ENOMEM;
	r->cluster.launcher = DP_RECIPE_LAUNCH_LOCAL;
	r->cluster.port = 22;
	r->cluster.known_hosts = DP_RECIPE_KH_STRICT;
	r->cluster.gpus = 1;
	r->cluster.nics = 0;
	r->cluster.connect_timeout_s = 10;
	r->model.heads = 8;
	r->model.groups = 1;
	r->model.vocab = 32000;
	r->model.seq_len = 2048;
	r->parallel.ep = 1;
	r->parallel.dp = 1;
	r->parallel.schedule = DP_RECIPE_SCHED_DUALPIPE;
	r->train.steps = 100;
	r->train.lr = 3e-4;
	r->train.seed = 42;
	r->train.backend = DP_RECIPE_BACKEND_CPU;
	r->train.pp_transport = DP_RECIPE_PP_TCP;
	r->health.heartbeat_s = 5;
	r->health.hang_timeout_s = 120;
	r->health.rendezvous_s = 60;
	r->health.max_restarts = 3;
	r->health.preflight =
		DP_RECIPE_PREFLIGHT_SSH | DP_RECIPE_PREFLIGHT_GPUS | DP_RECIPE_PREFLIGHT_PORTS;
	r->health.min_free_disk_gb = 1;
	r->health.max_clock_offset_s = 1;
	r->metrics.interval_s = 10;
	return 0;
}

long dp_recipe_world_size(const struct dp_recipe *r)
{
	return r->cluster.hosts ? (long)dp_hostlist_count(r->cluster.hosts) * r->cluster.gpus : 0;
}

void dp_recipe_free(struct dp_recipe *r)
{
	if (!r)
		return;
	free(r->path);
	dp_hostlist_free(r->cluster.hosts);
	dp_hostlist_free(r->cluster.spares);
	free(r->cluster.user);
	free(r->cluster.identity);
	free(r->model.name);
	free(r->model.expert_loads);
	free(r->model.expert_load);
	free(r->model.expert_loads_env);
	free(r->train.checkpoint_dir);
	for (size_t i = 0; i < r->n_env; i++) {
		free(r->env[i].name);
		free(r->env[i].value);
	}
	free(r->env);
	for (size_t i = 0; i < r->notify.n_webhooks; i++)
		free(r->notify.webhooks[i]);
	free(r->notify.webhooks);
	free(r->metrics.push_url);
	free(r);
}

static void ctx_release(struct ctx *c)
{
	for (size_t i = 0; i < c->n_all; i++) {
		free(c->all[i]->text);
		free(c->all[i]->kids);
		free(c->all[i]);
	}
	free(c->all);
	for (size_t i = 0; i < c->n_anchors; i++)
		free(c->anchors[i].name);
	free(c->anchors);
	for (size_t i = 0; i < c->n_st; i++)
		free(c->st[i].path);
	free(c->st);
	dp_recipe_diags_release(&c->diags);
}

/* Runs the three passes over @text. */
static int load(const char *name, const char *text, size_t len, struct dp_recipe **out,
		struct dp_recipe_diags *diags, struct dp_err *err)
{
	struct ctx c = { .file = name, .text = text, .len = len, .root_line = 1, .root_col = 1 };
	yaml_parser_t p;
	int rc, have_parser = 0;

	dp_recipe_diags_init(&c.diags);
	c.r = calloc(1, sizeof(*c.r));
	if (!c.r || set_defaults(c.r, name) || !yaml_parser_initialize(&p)) {
		rc = -ENOMEM;
		goto out;
	}
	have_parser = 1;
	yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
	if (len > MAX_BYTES) {
		diag(&c, 1, 1, NULL, "file is larger than the %u MiB a recipe may have",
		     MAX_BYTES >> 20);
		rc = -EINVAL;
	} else {
		rc = build_tree(&c, &p);
	}
	if (rc == 0) {
		static const struct node empty = {
			.kind = N_SCALAR, .text = (char *)"", .line = 1, .col = 1
		};
		const struct node *root = c.root ? c.root : &empty;

		c.root_line = root->line;
		c.root_col = root->col;
		if (root->kind != N_MAP && !is_null(root)) {
			char buf[80];

			diag(&c, root->line, root->col, NULL,
			     "a recipe is a map of sections (cluster, model, parallel, ...), got %s",
			     describe(root, buf, sizeof(buf)));
		} else {
			walk_map(&c, root, root_fields, "");
			check_consistency(&c);
		}
	}
	if (c.nomem) {
		rc = -ENOMEM;
		goto out;
	}
	if (c.diags.n > 0) {
		char *first;

		sort_diags(&c.diags);
		first = dp_recipe_diag_format(&c.diags.v[0]);
		rc = dp_err_set(err, EINVAL, "%s%s", first ? first : "recipe: invalid",
				c.diags.n > 1 ? " (and more errors)" : "");
		free(first);
		if (diags) {
			if (grow((void **)&diags->v, &diags->alloc, diags->n + c.diags.n,
				 sizeof(*diags->v))) {
				rc = -ENOMEM;
				goto out;
			}
			memcpy(diags->v + diags->n, c.diags.v, c.diags.n * sizeof(*c.diags.v));
			diags->n += c.diags.n;
			free(c.diags.v);
			dp_recipe_diags_init(&c.diags);
		}
		goto out;
	}
	if (rc)
		goto out;
	*out = c.r;
	c.r = NULL;
out:
	if (rc == -ENOMEM)
		(void)dp_err_set(err, ENOMEM, "recipe: out of memory loading '%s'", name);
	if (have_parser)
		yaml_parser_delete(&p);
	dp_recipe_free(c.r);
	ctx_release(&c);
	return rc;
}

int dp_recipe_load(const char *path, struct dp_recipe **out, struct dp_recipe_diags *diags,
		   struct dp_err *err)
{
	struct dp_buf b;
	struct stat sb;
	char chunk[16384];
	size_t n;
	FILE *f;
	int rc = 0;

	f = fopen(path, "rb");
	if (!f) {
		int e = errno;

		return dp_err_set(err, e, "recipe: cannot open '%s': %s", path, strerror(e));
	}
	if (fstat(fileno(f), &sb) == 0 && S_ISDIR(sb.st_mode)) {
		(void)fclose(f);
		return dp_err_set(err, EISDIR, "recipe: cannot open '%s': %s", path,
				  strerror(EISDIR));
	}
	/* at most one byte over the cap, so that load() can say it is too big */
	dp_buf_init(&b, (size_t)MAX_BYTES + 1);
	while (rc == 0 && (n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
		rc = dp_buf_add(&b, chunk, n);
		if (rc == -E2BIG) {
			rc = dp_buf_add(&b, chunk, (size_t)MAX_BYTES + 1 - b.len);
			break;
		}
	}
	if (rc) {
		rc = dp_err_set(err, ENOMEM, "recipe: out of memory reading '%s'", path);
		goto out;
	}
	if (ferror(f)) {
		rc = dp_err_set(err, EIO, "recipe: cannot read '%s'", path);
		goto out;
	}
	rc = load(path, dp_buf_str(&b), b.len, out, diags, err);
out:
	dp_buf_release(&b);
	(void)fclose(f);
	return rc;
}

int dp_recipe_load_mem(const char *name, const char *text, size_t len, struct dp_recipe **out,
		       struct dp_recipe_diags *diags, struct dp_err *err)
{
	return load(name, text, len, out, diags, err);
}
