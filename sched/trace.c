/* sched/trace.c - the simulated timeline as Chrome trace-event JSON (load in
 * chrome://tracing or ui.perfetto.dev): one thread per rank, one complete
 * ("X") event per compute op; one time unit of the simulation = 1 ms. */
#include <errno.h>
#include <stdlib.h>

#include <jansson.h>

#include "sched/sched_int.h"

static json_t *op_event(const struct dp_sched_slot *sl, int rank)
{
	const struct dp_sched_op *op = sl->op;
	char name[64];
	json_t *ev, *args;

	(void)dp_sched_op_str(op, name, sizeof(name));
	args = op->kind == DP_SCHED_OP_FB
		       ? json_pack("{s:i, s:i, s:i, s:i}", "leg", op->leg, "micro", op->micro,
				   "bleg", op->leg2, "bmicro", op->micro2)
		       : json_pack("{s:i, s:i}", "leg", op->leg, "micro", op->micro);
	if (!args)
		return NULL;
	ev = json_pack("{s:s, s:s, s:s, s:f, s:f, s:i, s:i, s:o}", "name", name, "cat",
		       sched_kind_name(op->kind), "ph", "X", "ts", sl->start * 1000.0, "dur",
		       (sl->end - sl->start) * 1000.0, "pid", 0, "tid", rank, "args", args);
	return ev;
}

int sched_fmt_trace(const struct dp_sched *s, const struct dp_sched_sim *sim, int rank,
		    struct dp_buf *out, struct dp_err *err)
{
	int lo = rank >= 0 ? rank : 0, hi = rank >= 0 ? rank + 1 : s->cfg.pp;
	json_t *root, *events = json_array();
	char *text = NULL, pname[96];
	int rc = -ENOMEM;

	(void)snprintf(pname, sizeof(pname), "%s pp=%d micro=%d", dp_sched_algo_name(s->cfg.algo),
		       s->cfg.pp, s->cfg.micro);
	root = json_pack("{s:o, s:s}", "traceEvents", events ? events : json_array(),
			 "displayTimeUnit", "ms");
	if (!root || !events)
		goto out;
	if (json_array_append_new(events,
				  json_pack("{s:s, s:s, s:i, s:{s:s}}", "name", "process_name",
					    "ph", "M", "pid", 0, "args", "name", pname)))
		goto out;
	for (int r = lo; r < hi; r++) {
		char tname[32];

		(void)snprintf(tname, sizeof(tname), "rank %d", r);
		if (json_array_append_new(events, json_pack("{s:s, s:s, s:i, s:i, s:{s:s}}", "name",
							    "thread_name", "ph", "M", "pid", 0,
							    "tid", r, "args", "name", tname)))
			goto out;
		for (size_t i = 0; i < sim->ranks[r].nslots; i++)
			if (json_array_append_new(events, op_event(&sim->ranks[r].slots[i], r)))
				goto out;
	}
	text = json_dumps(root, JSON_COMPACT);
	if (!text)
		goto out;
	rc = dp_buf_adds(out, text);
	if (!rc)
		rc = dp_buf_adds(out, "\n");
out:
	free(text);
	json_decref(root);
	if (rc)
		return dp_err_set(err, -rc, "sched: trace output: %s",
				  rc == -E2BIG ? "too large" : "out of memory");
	return 0;
}
