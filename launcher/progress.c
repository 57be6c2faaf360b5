/* launcher/progress.c - run output: log files, events.jsonl, the --json
 * stream and the progress line (launcher/dp_progress.h).
 *
 * The live line is plain text padded with spaces over its previous length
 * (no cursor escapes), so it works on any terminal; color only adds bold and
 * is off when NO_COLOR is set.  ETA comes from the step rate since the first
 * progress event of the attempt, so start-up time does not skew it.
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "launcher/dp_progress.h"
#include "common/dp_banned.h"

#define MAX_LOGS 4096

struct dp_progress {
	struct dp_progress_cfg cfg;
	char *logdir;	 /* RUN_DIR/logs, NULL without run dir */
	FILE *events;	 /* RUN_DIR/events.jsonl */
	FILE **logs;	 /* by rank, opened on first line */
	size_t nlogs;	 /* entries in logs */
	int log_failed;	 /* warned once */
	size_t live_len; /* length of the live line shown, 0 if none */
	/* rate for the ETA */
	double t_first;
	uint64_t step_first;
	int have_first;
	/* plain lines */
	double last_print;
	long last_decile;
};

static const char *type_name(enum dp_ctl_event_type t)
{
	switch (t) {
	case DP_CTL_EV_START:
		return "start";
	case DP_CTL_EV_PREFLIGHT:
		return "preflight";
	case DP_CTL_EV_READY:
		return "rank-ready";
	case DP_CTL_EV_RUNNING:
		return "running";
	case DP_CTL_EV_PROGRESS:
		return "progress";
	case DP_CTL_EV_FAILURE:
		return "failure";
	case DP_CTL_EV_RESTART:
		return "restart";
	case DP_CTL_EV_REPLACE:
		return "replace";
	case DP_CTL_EV_DONE:
		return "done";
	}
	return "unknown";
}

static json_t *num_or_null(double v)
{
	return isfinite(v) ? json_real(v) : json_null();
}

static void add_result(json_t *o, const struct dp_ctl_result *res)
{
	json_t *tail, *nodes;

	(void)json_object_set_new(o, "outcome", json_string(dp_ctl_outcome_name(res->outcome)));
	(void)json_object_set_new(o, "exit_code", json_integer(res->exit_code));
	(void)json_object_set_new(o, "attempts", json_integer(res->attempts));
	(void)json_object_set_new(o, "ready_s", json_real(res->ready_s));
	(void)json_object_set_new(o, "run_s", json_real(res->run_s));
	(void)json_object_set_new(o, "max_step", json_integer((json_int_t)res->max_step));
	(void)json_object_set_new(o, "resume_step", json_integer((json_int_t)res->resume_step));
	(void)json_object_set_new(o, "refused", json_integer(res->refused));
	if (res->nreplaced) {
		json_t *rep = json_array();

		for (int i = 0; rep && i < res->nreplaced; i++)
			(void)json_array_append_new(rep, json_string(res->replaced[i]));
		(void)json_object_set_new(o, "replaced", rep);
		/* the lines are the first few; this counts them all */
		(void)json_object_set_new(o, "replaced_total", json_integer(res->nreplaced_all));
	}
	if (res->outcome == DP_CTL_OK)
		return;
	(void)json_object_set_new(o, "cause", json_string(res->cause));
	tail = json_array();
	for (int i = 0; tail && i < res->ntail; i++)
		(void)json_array_append_new(tail, json_string(res->tail[i]));
	(void)json_object_set_new(o, "tail", tail);
	if (res->outcome != DP_CTL_PREFLIGHT_FAILED)
		return;
	nodes = json_array();
	for (int i = 0; nodes && i < res->npf_lines; i++)
		(void)json_array_append_new(nodes, json_string(res->pf_lines[i]));
	(void)json_object_set_new(o, "nodes", nodes);
	(void)json_object_set_new(o, "failed_nodes", json_integer(res->npf_bad));
}

char *dp_progress_event_json(const struct dp_ctl_event *ev)
{
	json_t *o = json_object();
	char *s;

	if (!o)
		return NULL;
	(void)json_object_set_new(o, "event", json_string(type_name(ev->type)));
	(void)json_object_set_new(o, "t", json_real(ev->t));
	(void)json_object_set_new(o, "attempt", json_integer(ev->attempt));
	if (ev->rank >= 0) {
		(void)json_object_set_new(o, "rank", json_integer(ev->rank));
		(void)json_object_set_new(o, "host", json_string(ev->host ? ev->host : ""));
	}
	switch (ev->type) {
	case DP_CTL_EV_START:
		(void)json_object_set_new(o, "ranks", json_integer((json_int_t)ev->nranks));
		break;
	case DP_CTL_EV_PREFLIGHT:
		(void)json_object_set_new(o, "ok", json_boolean(ev->ok));
		(void)json_object_set_new(o, ev->ok ? "notes" : "reason",
					  json_string(ev->msg ? ev->msg : ""));
		break;
	case DP_CTL_EV_PROGRESS:
		(void)json_object_set_new(o, "step", json_integer((json_int_t)ev->step));
		if (ev->total_steps)
			(void)json_object_set_new(o, "total",
						  json_integer((json_int_t)ev->total_steps));
		(void)json_object_set_new(o, "loss", num_or_null(ev->loss));
		(void)json_object_set_new(o, "tokens_per_s", num_or_null(ev->tokens_per_s));
		break;
	case DP_CTL_EV_RESTART:
		(void)json_object_set_new(o, "after", json_string(ev->msg ? ev->msg : ""));
		break;
	case DP_CTL_EV_REPLACE:
		(void)json_object_set_new(o, "host", json_string(ev->host ? ev->host : ""));
		(void)json_object_set_new(o, "spare", json_string(ev->spare ? ev->spare : ""));
		(void)json_object_set_new(o, "msg", json_string(ev->msg ? ev->msg : ""));
		break;
	case DP_CTL_EV_FAILURE:
	case DP_CTL_EV_DONE:
		if (ev->res)
			add_result(o, ev->res);
		(void)json_object_set_new(o, "ranks", json_integer((json_int_t)ev->nranks));
		break;
	default:
		break;
	}
	s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(o);
	return s;
}

/* ---- the status output ---------------------------------------------------- */

static void live_erase(struct dp_progress *p)
{
	if (!p->live_len)
		return;
	(void)fprintf(p->cfg.status, "\r%*s\r", (int)p->live_len, "");
	(void)fflush(p->cfg.status);
	p->live_len = 0;
}

static void fmt_eta(char *buf, size_t len, double s)
{
	if (!isfinite(s) || s < 0)
		(void)snprintf(buf, len, "?");
	else if (s >= 3600)
		(void)snprintf(buf, len, "%d:%02d:%02d", (int)(s / 3600), (int)fmod(s / 60, 60),
			       (int)fmod(s, 60));
	else
		(void)snprintf(buf, len, "%d:%02d", (int)(s / 60), (int)fmod(s, 60));
}

static void show_progress(struct dp_progress *p, const struct dp_ctl_event *ev)
{
	char line[256], eta[32], tot[32], pct[16];
	double rate = NAN, left = NAN;
	long decile = -1;
	int n;

	if (!p->have_first) {
		p->have_first = 1;
		p->t_first = ev->t;
		p->step_first = ev->step;
	} else if (ev->t > p->t_first && ev->step > p->step_first) {
		rate = (double)(ev->step - p->step_first) / (ev->t - p->t_first);
	}
	if (ev->total_steps && isfinite(rate) && rate > 0)
		left = (double)(ev->total_steps > ev->step ? ev->total_steps - ev->step : 0) / rate;
	fmt_eta(eta, sizeof(eta), left);
	tot[0] = pct[0] = '\0';
	if (ev->total_steps) {
		(void)snprintf(tot, sizeof(tot), "/%llu", (unsigned long long)ev->total_steps);
		(void)snprintf(pct, sizeof(pct), " (%d%%)",
			       (int)(100.0 * (double)ev->step / (double)ev->total_steps));
		decile = (long)(10 * ev->step / ev->total_steps);
	}
	n = snprintf(line, sizeof(line), "step %llu%s%s  loss %.4g  %.0f tokens/s  eta %s",
		     (unsigned long long)ev->step, tot, pct, ev->loss, ev->tokens_per_s, eta);
	if (n < 0)
		return;
	if (p->cfg.tty) {
		size_t len = strlen(line);

		if (p->cfg.color)
			(void)fprintf(p->cfg.status, "\r\033[1m%s\033[0m", line);
		else
			(void)fprintf(p->cfg.status, "\r%s", line);
		if (len < p->live_len)
			(void)fprintf(p->cfg.status, "%*s", (int)(p->live_len - len), "");
		p->live_len = len;
		(void)fflush(p->cfg.status);
		return;
	}
	/* plain lines: every 10% of the steps, or every interval_s */
	if (decile > p->last_decile || ev->t - p->last_print >= p->cfg.interval_s ||
	    (ev->total_steps && ev->step >= ev->total_steps)) {
		(void)fprintf(p->cfg.status, "progress: %s\n", line);
		(void)fflush(p->cfg.status);
		p->last_print = ev->t;
		if (decile > p->last_decile)
			p->last_decile = decile;
	}
}

void dp_progress_event(void *arg, const struct dp_ctl_event *ev)
{
	struct dp_progress *p = arg;
	char *js = NULL;

	if (p->cfg.json || p->events)
		js = dp_progress_event_json(ev);
	if (js && p->cfg.json) {
		(void)fprintf(p->cfg.json, "%s\n", js);
		(void)fflush(p->cfg.json);
	}
	if (js && p->events) {
		(void)fprintf(p->events, "%s\n", js);
		(void)fflush(p->events);
	}
	free(js);
	if (!p->cfg.status)
		return;
	switch (ev->type) {
	case DP_CTL_EV_START:
		p->have_first = 0;
		p->last_decile = -1;
		p->last_print = ev->t;
		break;
	case DP_CTL_EV_PROGRESS:
		show_progress(p, ev);
		break;
	case DP_CTL_EV_FAILURE:
	case DP_CTL_EV_DONE:
		if (p->live_len) {
			(void)fputc('\n', p->cfg.status); /* keep the last state on screen */
			p->live_len = 0;
		}
		break;
	default:
		break;
	}
}

void dp_progress_line(void *arg, int rank, const char *host, int stream, const char *line)
{
	struct dp_progress *p = arg;

	(void)host;
	(void)stream;
	if (p->cfg.tty)
		live_erase(p); /* the rank's line goes where the status line was */
	if (!p->logdir || rank < 0 || rank >= MAX_LOGS)
		return;
	if ((size_t)rank >= p->nlogs) {
		size_t n = (size_t)rank + 1 > 2 * p->nlogs ? (size_t)rank + 1 : 2 * p->nlogs;
		FILE **nl = realloc(p->logs,
				    n * sizeof(FILE *)); /* NOLINT(bugprone-sizeof-expression) */

		if (!nl)
			return;
		memset(nl + p->nlogs, 0,
		       (n - p->nlogs) * sizeof(FILE *)); /* NOLINT(bugprone-sizeof-expression) */
		p->logs = nl;
		p->nlogs = n;
	}
	if (!p->logs[rank]) {
		char path[4096];

		if (snprintf(path, sizeof(path), "%s/rank-%04d.log", p->logdir, rank) >=
		    (int)sizeof(path))
			return;
		p->logs[rank] = fopen(path, "ae");
		if (!p->logs[rank]) {
			if (!p->log_failed && p->cfg.status)
				(void)fprintf(p->cfg.status,
					      "dpctl: warning: cannot write '%s': %s\n", path,
					      strerror(errno));
			p->log_failed = 1;
			return;
		}
		(void)setvbuf(p->logs[rank], NULL, _IOLBF, 0);
	}
	(void)fprintf(p->logs[rank], "%s\n", line);
}

static int mkdir_p(const char *dir, struct dp_err *err)
{
	char path[4096];

	if (snprintf(path, sizeof(path), "%s", dir) >= (int)sizeof(path))
		return dp_err_set(err, ENAMETOOLONG, "launch: run dir '%s' is too long", dir);
	for (char *s = path + 1;; s++) {
		char c = *s;

		if (c != '/' && c != '\0')
			continue;
		*s = '\0';
		if (mkdir(path, 0755) != 0 && errno != EEXIST) {
			int e = errno;

			return dp_err_set(err, e, "launch: cannot create '%s': %s", path,
					  strerror(e));
		}
		*s = c;
		if (!c)
			return 0;
	}
}

int dp_progress_new(const struct dp_progress_cfg *cfg, struct dp_progress **out, struct dp_err *err)
{
	struct dp_progress *p = calloc(1, sizeof(*p));
	size_t n;
	int rc;

	if (!p)
		return dp_err_set(err, ENOMEM, "launch: out of memory");
	p->cfg = *cfg;
	if (p->cfg.interval_s <= 0)
		p->cfg.interval_s = 10;
	p->last_decile = -1;
	if (cfg->run_dir) {
		char path[4096];

		n = strlen(cfg->run_dir) + sizeof("/logs");
		p->logdir = malloc(n);
		if (!p->logdir) {
			rc = dp_err_set(err, ENOMEM, "launch: out of memory");
			goto err_free;
		}
		(void)snprintf(p->logdir, n, "%s/logs", cfg->run_dir);
		p->cfg.run_dir = NULL; /* borrowed only for this call */
		rc = mkdir_p(p->logdir, err);
		if (rc)
			goto err_free;
		(void)snprintf(path, sizeof(path), "%s/events.jsonl", cfg->run_dir);
		p->events = fopen(path, "ae");
		if (!p->events) {
			int e = errno;

			rc = dp_err_set(err, e, "launch: cannot write '%s': %s", path, strerror(e));
			goto err_free;
		}
	}
	*out = p;
	return 0;
err_free:
	free(p->logdir);
	free(p);
	return rc;
}

void dp_progress_free(struct dp_progress *p)
{
	if (!p)
		return;
	if (p->cfg.tty)
		live_erase(p);
	for (size_t i = 0; i < p->nlogs; i++)
		if (p->logs[i])
			(void)fclose(p->logs[i]);
	free(p->logs);
	if (p->events)
		(void)fclose(p->events);
	free(p->logdir);
	free(p);
}
