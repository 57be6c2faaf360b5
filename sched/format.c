/* sched/format.c - text and JSON output of a schedule: the canonical ops and
 * long formats (byte-exact, see docs/schedules.md) and a JSON dump; svg and
 * trace go through the simulator (sched/svg.c, sched/trace.c). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "sched/sched_int.h"

static const char *const fmt_names[] = { "ops", "long", "json", "svg", "trace" };

int dp_sched_fmt_parse(const char *name, enum dp_sched_fmt *out, struct dp_err *err)
{
	for (size_t i = 0; i < sizeof(fmt_names) / sizeof(fmt_names[0]); i++) {
		if (name && strcmp(name, fmt_names[i]) == 0) {
			*out = (enum dp_sched_fmt)i;
			return 0;
		}
	}
	return dp_err_set(err, EINVAL,
			  "sched: unknown format '%s' (expected ops, long, json, svg or trace)",
			  name ? name : "");
}

const char *sched_kind_name(int kind)
{
	static const char *const names[] = { "F",  "B",	 "I",  "W",  "FB",
					     "RF", "SF", "RB", "SB", "WAIT" };

	if (kind >= 0 && kind <= DP_SCHED_OP_WAIT)
		return names[kind];
	return "?";
}

static int buf_err(int rc, struct dp_err *err)
{
	if (rc == -E2BIG)
		return dp_err_set(err, E2BIG, "sched: output too large");
	return dp_err_set(err, ENOMEM, "sched: out of memory");
}

static int fmt_text(const struct dp_sched *s, int lo, int hi, int is_long, struct dp_buf *out,
		    struct dp_err *err)
{
	char tok[160];
	int rc;

	for (int r = lo; r < hi; r++) {
		const struct sched_rank *rk = &s->ranks[r];

		if (!is_long) {
			rc = dp_buf_addf(out, "rank %d:", r);
			if (rc)
				return buf_err(rc, err);
		}
		for (size_t i = 0; i < rk->len; i++) {
			int n = 0;

			if (is_long)
				n = snprintf(tok, sizeof(tok), "%d %zu %d ", r, i, rk->ops[i].step);
			else if (i)
				n = snprintf(tok, sizeof(tok), " | ");
			else
				n = snprintf(tok, sizeof(tok), " ");
			n += dp_sched_op_str(&rk->ops[i], tok + n, sizeof(tok) - (size_t)n - 1);
			if (is_long)
				tok[n++] = '\n';
			/* one add per op: dp_buf_addf would format twice */
			rc = dp_buf_add(out, tok, (size_t)n);
			if (rc)
				return buf_err(rc, err);
		}
		if (!is_long) {
			rc = dp_buf_adds(out, "\n");
			if (rc)
				return buf_err(rc, err);
		}
	}
	return 0;
}

static json_t *op_json(const struct dp_sched_op *op)
{
	json_t *o = json_object();

	if (!o)
		return NULL;
	if (json_object_set_new(o, "op", json_string(sched_kind_name(op->kind))) ||
	    json_object_set_new(o, "step", json_integer(op->step)))
		goto fail;
	if (op->kind != DP_SCHED_OP_WAIT &&
	    (json_object_set_new(o, "leg", json_integer(op->leg)) ||
	     json_object_set_new(o, "micro", json_integer(op->micro))))
		goto fail;
	if (op->kind == DP_SCHED_OP_FB &&
	    (json_object_set_new(o, "bleg", json_integer(op->leg2)) ||
	     json_object_set_new(o, "bmicro", json_integer(op->micro2))))
		goto fail;
	if (op->kind >= DP_SCHED_OP_RF && op->kind <= DP_SCHED_OP_SB &&
	    json_object_set_new(o, "peer", json_integer(op->peer)))
		goto fail;
	return o;
fail:
	json_decref(o);
	return NULL;
}

static int fmt_json(const struct dp_sched *s, int lo, int hi, struct dp_buf *out,
		    struct dp_err *err)
{
	json_t *root = json_object(), *ranks = json_array();
	char *text = NULL;
	int rc = -ENOMEM;

	if (!root || !ranks)
		goto out;
	if (json_object_set_new(root, "algo", json_string(dp_sched_algo_name(s->cfg.algo))) ||
	    json_object_set_new(root, "pp", json_integer(s->cfg.pp)) ||
	    json_object_set_new(root, "micro", json_integer(s->cfg.micro)) ||
	    json_object_set_new(root, "comm", json_boolean(s->cfg.comm)) ||
	    json_object_set(root, "ranks", ranks))
		goto out;
	for (int r = lo; r < hi; r++) {
		json_t *rk = json_object(), *ops = json_array();

		if (!rk || !ops || json_array_append_new(ranks, rk) ||
		    json_object_set_new(rk, "rank", json_integer(r)) ||
		    json_object_set(rk, "ops", ops)) {
			json_decref(ops);
			goto out;
		}
		for (size_t i = 0; i < s->ranks[r].len; i++) {
			if (json_array_append_new(ops, op_json(&s->ranks[r].ops[i]))) {
				json_decref(ops);
				goto out;
			}
		}
		json_decref(ops);
	}
	text = json_dumps(root, JSON_COMPACT);
	if (!text)
		goto out;
	rc = dp_buf_adds(out, text);
	if (!rc)
		rc = dp_buf_adds(out, "\n");
out:
	free(text);
	json_decref(ranks);
	json_decref(root);
	return rc ? buf_err(rc, err) : 0;
}

int dp_sched_format(const struct dp_sched *s, enum dp_sched_fmt fmt, int rank,
		    const struct dp_sched_times *t, struct dp_buf *out, struct dp_err *err)
{
	static const struct dp_sched_times dflt = { .f = 1, .b = 2, .w = 1, .fb = 2.5 };
	struct dp_sched_sim sim = { 0 };
	int lo = 0, hi = s->cfg.pp;
	int rc;

	if (rank >= s->cfg.pp || rank < -1)
		return dp_err_set(err, EINVAL, "sched: rank %d out of range [0, %d)", rank,
				  s->cfg.pp);
	if (rank >= 0) {
		lo = rank;
		hi = rank + 1;
	}
	switch (fmt) {
	case DP_SCHED_FMT_OPS:
		return fmt_text(s, lo, hi, 0, out, err);
	case DP_SCHED_FMT_LONG:
		return fmt_text(s, lo, hi, 1, out, err);
	case DP_SCHED_FMT_JSON:
		return fmt_json(s, lo, hi, out, err);
	case DP_SCHED_FMT_SVG:
	case DP_SCHED_FMT_TRACE:
		rc = dp_sched_simulate(s, t ? t : &dflt, &sim, err);
		if (rc)
			return rc;
		if (fmt == DP_SCHED_FMT_SVG)
			rc = sched_fmt_svg(s, &sim, rank, out, err);
		else
			rc = sched_fmt_trace(s, &sim, rank, out, err);
		dp_sched_sim_release(&sim);
		return rc;
	}
	return dp_err_set(err, EINVAL, "sched: unknown format %d", (int)fmt);
}
