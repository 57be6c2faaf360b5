/* launcher/plan_recipe.c - the parts of a plan that come from a recipe:
 * layout, expert placement (EPLB), worker argv/environment, node checks.
 * `dpctl plan` and `dpctl launch` both call these, so what plan shows is what
 * launch starts (see dp_plan.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "a2a/dp_eplb.h"
#include "common/dp_buf.h"
#include "launcher/dp_launcher.h"
#include "launcher/dp_plan.h"
#include "topo/dp_topo.h"
#include "common/dp_banned.h"

static enum dp_plan_pairing pairing_of(enum dp_recipe_schedule s)
{
	switch (s) {
	case DP_RECIPE_SCHED_DUALPIPE:
		return DP_PLAN_DUALPIPE;
	case DP_RECIPE_SCHED_DUALPIPEV:
		return DP_PLAN_DUALPIPEV;
	default:
		return DP_PLAN_SINGLE;
	}
}

int dp_plan_from_recipe(const struct dp_recipe *r, struct dp_plan **out, struct dp_err *err)
{
	struct dp_plan_cfg cfg = {
		.nodes = (int)dp_hostlist_count(r->cluster.hosts),
		.gpus_per_node = r->cluster.gpus,
		.pp = r->parallel.pp,
		.ep = r->parallel.ep,
		.dp = r->parallel.dp,
		.pairing = pairing_of(r->parallel.schedule),
	};
	int rc = dp_plan_build(&cfg, out, err);

	if (rc)
		return dp_err_prefix(err, "%s", r->path);
	return 0;
}

/* ---- expert placement ------------------------------------------------------ */

int dp_plan_places_experts(const struct dp_recipe *r)
{
	return r->parallel.ep > 1 && (r->model.redundant_experts > 0 || r->model.expert_load);
}

int dp_plan_experts(const struct dp_recipe *r, const struct dp_plan *p, struct dp_eplb_plan **out,
		    struct dp_err *err)
{
	struct dp_eplb_cfg cfg = {
		.layers = r->model.layers - r->model.dense_layers,
		.experts = r->model.experts,
		.replicas = r->model.experts + r->model.redundant_experts,
		.groups = r->model.groups,
		.nodes = p->ep_group_nodes,
		.gpus = r->parallel.ep,
	};
	float *uniform = NULL;
	int rc;

	if (!r->model.expert_load && r->model.redundant_experts == 0) {
		*out = NULL;
		return 0;
	}
	if (!r->model.expert_load) {
		size_t n = (size_t)cfg.layers * (size_t)cfg.experts;

		if (cfg.layers < 1)
			return dp_err_set(err, EINVAL, "plan: %s: the model has no MoE layer",
					  r->path);
		uniform = malloc(n * sizeof(*uniform));
		if (!uniform)
			return dp_err_set(err, ENOMEM, "plan: out of memory");
		for (size_t i = 0; i < n; i++)
			uniform[i] = 1.0f;
	}
	rc = dp_eplb_plan_build(r->model.expert_load ? r->model.expert_load : uniform, &cfg, out,
				err);
	free(uniform);
	if (rc)
		return dp_err_prefix(err, "plan: %s", r->path);
	return 0;
}

/* ---- worker argv and environment ------------------------------------------- */

char **dp_plan_recipe_env(const struct dp_recipe *r, struct dp_err *err)
{
	char **v = calloc(r->n_env + 1, sizeof(*v));

	if (!v)
		goto nomem;
	for (size_t i = 0; i < r->n_env; i++)
		if (asprintf(&v[i], "%s=%s", r->env[i].name, r->env[i].value) < 0) {
			v[i] = NULL;
			dp_plan_strv_free(v);
			goto nomem;
		}
	return v;
nomem:
	(void)dp_err_set(err, ENOMEM, "plan: out of memory");
	return NULL;
}

void dp_plan_strv_free(char **v)
{
	if (!v)
		return;
	for (char **s = v; *s; s++)
		free(*s);
	free(v);
}

long dp_plan_seqs_per_micro(const struct dp_recipe *r)
{
	long unit = (long)r->parallel.micro_batches * r->parallel.dp * r->parallel.ep;

	return unit > 0 ? r->train.batch / unit : 0;
}

/* The model of a recipe as dpworker reads it (DP_MODEL; worker/train_ctl.c):
 * a token may use max_nodes_per_token expert groups (the recipe's own
 * reading of that key); batch is the global batch, so sequences per
 * micro-batch = batch / (micro * dp * ep) (dp_plan_seqs_per_micro()). */
static void model_env(const struct dp_recipe *r, char *buf, size_t len)
{
	long seqs = dp_plan_seqs_per_micro(r);

	(void)snprintf(buf, len,
		       "DP_MODEL=layers=%d,hidden=%d,ffn=%d,experts=%d,shared=%d,top_k=%d,"
		       "groups=%d,topk_groups=%d,vocab=%d,seq_len=%d,seqs=%ld,lr=%.9g",
		       r->model.layers, r->model.hidden, r->model.ffn_hidden, r->model.experts,
		       r->model.shared_experts, r->model.top_k, r->model.groups,
		       r->model.max_nodes_per_token > 0 ? r->model.max_nodes_per_token
							: r->model.groups,
		       r->model.vocab, r->model.seq_len, seqs > 0 ? seqs : 1, r->train.lr);
}

void dp_plan_env_build(const struct dp_recipe *r, char *const *renv, const struct dp_plan_rank *x,
		       struct dp_plan_env *out)
{
	int k = 0, n = 0;

#define LAYOUT(...)                                                                                \
	((void)snprintf(out->layout[n], sizeof(out->layout[n]), __VA_ARGS__),                      \
	 out->v[k++] = out->layout[n++])
	LAYOUT("DP_PP_RANK=%d", x->pp);
	LAYOUT("DP_EP_RANK=%d", x->ep);
	LAYOUT("DP_DP_RANK=%d", x->dp);
	if (x->nstages == 2)
		LAYOUT("DP_STAGES=%d,%d", x->stage[0], x->stage[1]);
	else
		LAYOUT("DP_STAGES=%d", x->stage[0]);
	LAYOUT("DP_PP_SIZE=%d", r->parallel.pp);
	LAYOUT("DP_EP_SIZE=%d", r->parallel.ep);
	LAYOUT("DP_DP_SIZE=%d", r->parallel.dp);
	LAYOUT("DP_SCHEDULE=%s", dp_recipe_schedule_name(r->parallel.schedule));
	LAYOUT("DP_MICRO_BATCHES=%d", r->parallel.micro_batches);
	LAYOUT("DP_STEPS=%ld", r->train.steps);
	LAYOUT("DP_SEED=%ld", r->train.seed);
	if (r->train.backend == DP_RECIPE_BACKEND_CUDA) {
		/* the rank's GPU on its node; under Slurm each task is bound to
		 * one GPU (--gpus-per-task=1), which it sees as device 0 */
		LAYOUT("DP_BACKEND=cuda");
		LAYOUT("DP_DEVICE=%d",
		       r->cluster.launcher == DP_RECIPE_LAUNCH_SLURM ? 0 : x->local);
		LAYOUT("DP_PP_TRANSPORT=%s", dp_recipe_pp_transport_name(r->train.pp_transport));
	}
	if (dp_plan_places_experts(r)) {
		/* the EPLB placement of dp_plan_experts(): slots, and the nodes
		 * an EP group spans (dp_plan_build's ep_group_nodes) */
		const int g = r->cluster.gpus, ep = r->parallel.ep;

		LAYOUT("DP_REDUNDANT_EXPERTS=%d", r->model.redundant_experts);
		LAYOUT("DP_EP_NODES=%d", g > 0 && ep >= g ? ep / g : 1);
		if (r->model.rebalance_every > 0)
			LAYOUT("DP_EPLB_REBALANCE_EVERY=%d", r->model.rebalance_every);
	}
#undef LAYOUT
	model_env(r, out->model, sizeof(out->model));
	out->v[k++] = out->model;
	if (dp_plan_places_experts(r) && r->model.expert_loads_env)
		out->v[k++] = r->model.expert_loads_env;
	if (r->train.checkpoint_dir) {
		/* for the checkpoint code of the step loop */
		(void)snprintf(out->ckpt_dir, sizeof(out->ckpt_dir), "DP_CKPT_DIR=%s",
			       r->train.checkpoint_dir);
		(void)snprintf(out->ckpt_every, sizeof(out->ckpt_every), "DP_CKPT_EVERY=%ld",
			       r->train.checkpoint_every);
		(void)snprintf(out->ckpt_keep, sizeof(out->ckpt_keep), "DP_CKPT_KEEP=%ld",
			       r->train.checkpoint_keep);
		out->v[k++] = out->ckpt_dir;
		out->v[k++] = out->ckpt_every;
		out->v[k++] = out->ckpt_keep;
	}
	for (size_t i = 0; renv && renv[i] && k < DP_PLAN_ENV_MAX; i++)
		out->v[k++] = renv[i];
	out->v[k] = NULL;
}

const char *dp_plan_worker_path(char *buf, size_t len)
{
	const char *env = getenv("DPWORKER");
	ssize_t n;
	char *slash;

	if (env && *env)
		return env;
	/* next to dpctl itself */
	n = len > 1 ? readlink("/proc/self/exe", buf, len - 1) : -1;
	if (n > 0) {
		buf[n] = '\0';
		slash = strrchr(buf, '/');
		if (slash && (size_t)(slash - buf) + sizeof("/dpworker") <= len) {
			(void)snprintf(slash, len - (size_t)(slash - buf), "/dpworker");
			if (access(buf, X_OK) == 0)
				return buf;
		}
	}
	return "dpworker"; /* from PATH */
}

/* ---- node checks ------------------------------------------------------------ */

static int rdma_nics(const struct dp_topo *t)
{
	int n = 0;

	for (int i = 0; i < dp_topo_nic_count(t); i++)
		n += dp_topo_nic(t, i)->usable > 0;
	return n;
}

static const char *gpu_model(const struct dp_topo *t)
{
	return dp_topo_gpu_count(t) > 0 ? dp_topo_gpu(t, 0)->model : "";
}

/* A file that does not name the model (NCCL XML often) cannot differ. */
static int models_differ(const struct dp_topo *a, const struct dp_topo *b)
{
	return *gpu_model(a) && *gpu_model(b) && strcmp(gpu_model(a), gpu_model(b)) != 0;
}

int dp_plan_nodes_check(const struct dp_topo *const *nodes, const char *const *names, int n,
			struct dp_err *err)
{
	const struct dp_topo *a;
	struct dp_buf b;
	int bad = 0, rc = 0;

	if (n < 2)
		return 0;
	a = nodes[0];
	dp_buf_init(&b, 2048);
	for (int i = 1; i < n && rc == 0; i++) {
		const struct dp_topo *t = nodes[i];
		char line[256];
		int len;

		if (dp_topo_gpu_count(t) == dp_topo_gpu_count(a) && rdma_nics(t) == rdma_nics(a) &&
		    !models_differ(t, a))
			continue;
		len = snprintf(line, sizeof(line), "%s'%.64s' has", bad++ ? "; " : "", names[i]);
		if (dp_topo_gpu_count(t) != dp_topo_gpu_count(a))
			len += snprintf(line + len, sizeof(line) - (size_t)len, " %d GPUs,",
					dp_topo_gpu_count(t));
		if (rdma_nics(t) != rdma_nics(a))
			len += snprintf(line + len, sizeof(line) - (size_t)len, " %d RDMA NICs,",
					rdma_nics(t));
		if (models_differ(t, a))
			len += snprintf(line + len, sizeof(line) - (size_t)len,
					" GPU model '%.64s',", gpu_model(t));
		line[len - 1] = '\0'; /* the last comma */
		rc = dp_buf_adds(&b, line);
	}
	if (rc == -E2BIG || (rc == 0 && bad))
		/* a cut list still names the first nodes; say it was cut */
		rc = dp_err_set(err, EINVAL,
				"plan: nodes differ from '%s' (%d GPUs %s, %d RDMA NICs): %s%s",
				names[0], dp_topo_gpu_count(a),
				*gpu_model(a) ? gpu_model(a) : "of unknown model", rdma_nics(a),
				dp_buf_str(&b), rc == -E2BIG ? "; ..." : "");
	else if (rc)
		rc = dp_err_set(err, ENOMEM, "plan: out of memory");
	dp_buf_release(&b);
	return rc;
}
