/* launcher/dp_launcher.h - the dpctl controller: CLI entry point, recipes,
 * launch backends.  (Recipe and launch APIs are declared here as they land.)
 */
#ifndef DP_LAUNCHER_H
#define DP_LAUNCHER_H

#include <stddef.h>
#include <stdio.h>

#include "common/dp_err.h"
#include "common/dp_hostlist.h"

/* Run dpctl with @argc/@argv (argv[0] is the program name), printing data on
 * @out and diagnostics on @err (both borrowed).  Returns a sysexits.h code.
 * Never exits; usable in-process by tests. */
int dp_cli_main(int argc, char **argv, FILE *out, FILE *err);

/* ---- recipes --------------------------------------------------------------
 *
 * A recipe is one YAML file describing a run (docs/recipe.md lists every
 * key).  dp_recipe_load() parses it with libyaml, fills every optional key
 * with its default, checks types, ranges, enums and cross-key consistency,
 * and reports ALL problems as diagnostics:
 *
 *   struct dp_recipe_diags d;
 *   struct dp_recipe *r;
 *   dp_recipe_diags_init(&d);
 *   rc = dp_recipe_load("recipes/local-demo.yaml", &r, &d, &err);
 *   // rc == -EINVAL: d.v[0..d.n) hold the errors, sorted in file order
 *   dp_recipe_diags_release(&d);
 *   dp_recipe_free(r);
 *
 * Everything in a loaded struct dp_recipe is owned by it; treat it as
 * read-only and free it with dp_recipe_free().  Loading is thread-safe (no
 * global state); one recipe may be read from several threads.
 */

enum dp_recipe_launcher {
	DP_RECIPE_LAUNCH_LOCAL, /* fork/exec workers on this machine */
	DP_RECIPE_LAUNCH_SSH,	/* libssh2 to every host */
	DP_RECIPE_LAUNCH_SLURM, /* srun inside an allocation */
};

enum dp_recipe_known_hosts {
	DP_RECIPE_KH_STRICT,	 /* host key must already be in known_hosts */
	DP_RECIPE_KH_ACCEPT_NEW, /* add unknown keys, refuse changed ones */
	DP_RECIPE_KH_OFF,	 /* no host key checking (test namespaces only) */
};

enum dp_recipe_schedule {
	DP_RECIPE_SCHED_DUALPIPE,
	DP_RECIPE_SCHED_DUALPIPEV,
	DP_RECIPE_SCHED_1F1B,
	DP_RECIPE_SCHED_ZB1P,
};

enum dp_recipe_backend {
	DP_RECIPE_BACKEND_CPU,
	DP_RECIPE_BACKEND_CUDA,
};

/* train.pp_transport: what carries the pipeline's tensors between ranks. */
enum dp_recipe_pp_transport {
	DP_RECIPE_PP_TCP,  /* the TCP links of the rank mesh (any backend) */
	DP_RECIPE_PP_NCCL, /* ncclSend/ncclRecv (backend cuda only) */
};

/* health.preflight checks, as bits of dp_recipe.health.preflight. */
enum dp_recipe_preflight {
	DP_RECIPE_PREFLIGHT_SSH = 1u << 0,   /* "ssh": every host answers */
	DP_RECIPE_PREFLIGHT_GPUS = 1u << 1,  /* "gpus": per-node GPU count matches */
	DP_RECIPE_PREFLIGHT_NICS = 1u << 2,  /* "nics": per-node NIC count matches */
	DP_RECIPE_PREFLIGHT_PORTS = 1u << 3, /* "ports": rendezvous ports are free */
	DP_RECIPE_PREFLIGHT_DISK = 1u << 4,  /* "disk": checkpoint dir is writable */
	DP_RECIPE_PREFLIGHT_CLOCK = 1u << 5, /* "clock": host clocks agree */

	/* pre-flight gate (launcher/dp_preflight.h) */
	DP_RECIPE_PREFLIGHT_TOPOLOGY = 1u << 6, /* "topology": rails, ports, NVLink */
	DP_RECIPE_PREFLIGHT_VERSION = 1u << 7,	/* "version": dpworker = dpctl version */
};

/* Names of the enum values above, as written in recipes ("ssh", "dualpipe",
 * "accept-new", ...).  Static strings; "?" for an out-of-range value. */
const char *dp_recipe_launcher_name(enum dp_recipe_launcher v);
const char *dp_recipe_known_hosts_name(enum dp_recipe_known_hosts v);
const char *dp_recipe_schedule_name(enum dp_recipe_schedule v);
const char *dp_recipe_backend_name(enum dp_recipe_backend v);
const char *dp_recipe_pp_transport_name(enum dp_recipe_pp_transport v);
/* Name of one DP_RECIPE_PREFLIGHT_* bit, or NULL if @bit is not one. */
const char *dp_recipe_preflight_name(unsigned bit);

struct dp_recipe_env {
	char *name;  /* a valid environment variable name */
	char *value; /* the scalar's text ("" for null) */
};

/* Bytes of model.expert_loads text the training ranks take through the
 * environment (DP_EXPERT_LOADS); dpctl launch refuses larger loads. */
#define DP_RECIPE_LOADS_ENV_MAX 32768

struct dp_recipe {
	char *path; /* the file it was loaded from (or the name given to _mem) */

	struct {
		struct dp_hostlist *hosts;	  /* required; expanded, >= 1 host */
		struct dp_hostlist *spares;	  /* ssh only; replace failed hosts; NULL: none */
		enum dp_recipe_launcher launcher; /* default local */
		char *user;			  /* ssh user; NULL: the current user */
		int port;			  /* ssh port; default 22 */
		char *identity;			  /* ssh key file; NULL: agent/defaults */
		enum dp_recipe_known_hosts known_hosts; /* default strict */
		int gpus;				/* workers (GPUs) per node; default 1 */
		int nics;		  /* NICs per node hint; 0 (default): detect */
		double connect_timeout_s; /* ssh connect window; default 10 */
		int relay_width;	  /* ssh relay tree width; 0 (default): flat */
	} cluster;

	struct {
		char *name;		 /* free text; default "moe" */
		int layers;		 /* required; transformer layers */
		int dense_layers;	 /* leading layers without MoE; default 0 */
		int hidden;		 /* required; model width */
		int heads;		 /* attention heads; default 8; divides hidden */
		int ffn_hidden;		 /* per-expert FFN width; default 4 * hidden */
		int experts;		 /* required; routed experts per MoE layer */
		int shared_experts;	 /* always-on experts; default 0 */
		int top_k;		 /* required; routed experts per token */
		int groups;		 /* expert groups for routing; default 1 */
		int max_nodes_per_token; /* default min(groups, nodes) */
		int vocab;		 /* vocabulary size; default 32000 */
		int seq_len;		 /* tokens per sequence; default 2048 */
		int redundant_experts;	 /* extra physical expert slots per MoE layer (EPLB); 0 */
		/* re-place the experts every N steps from the loads routed in them
		 * (DP_EPLB_REBALANCE_EVERY); 0 (default): never; > 0 needs
		 * redundant_experts or expert_loads */
		int rebalance_every;
		/* model.expert_loads: the JSON file (`dpctl eplb --loads` format), relative
		 * paths resolved against the recipe's directory; NULL (default): none.  When
		 * set, the loads were read and checked at load time: expert_load is
		 * [layers - dense_layers][experts] row-major. */
		char *expert_loads;
		float *expert_load;
		/* the same loads for the training ranks: "DP_EXPERT_LOADS={...}" with
		 * one row per layer (dense layers uniform), NULL if the text is over
		 * DP_RECIPE_LOADS_ENV_MAX bytes (expert_loads_bytes) or there are no
		 * loads */
		char *expert_loads_env;
		size_t expert_loads_bytes;
	} model;

	struct {
		int pp;				  /* required; pipeline stages */
		int ep;				  /* expert parallel size; default 1 */
		int dp;				  /* data parallel size; default 1 */
		enum dp_recipe_schedule schedule; /* default dualpipe */
		int micro_batches;		  /* per step per pipeline; default 2 * pp */
	} parallel;

	struct {
		long steps; /* default 100 */
		long batch; /* global sequences per step, over all DP replicas and EP
			     * ranks; default micro_batches * dp * ep */
		double lr;  /* learning rate; default 3e-4 */
		long seed;  /* default 42 */
		enum dp_recipe_backend backend;		  /* default cpu */
		enum dp_recipe_pp_transport pp_transport; /* default tcp; nccl needs cuda */
		char *checkpoint_dir;			  /* NULL (default): no checkpoints */
		long checkpoint_every; /* steps between checkpoints; 0: at the end */
		long checkpoint_keep;  /* newest complete checkpoints kept; 0: all */
	} train;

	struct {
		double heartbeat_s;    /* worker heartbeat period; default 5 */
		double hang_timeout_s; /* no progress for this long = hang; default 120 */
		double rendezvous_s;   /* all workers must join within; default 60 */
		int max_restarts;      /* default 3 */
		unsigned preflight;    /* DP_RECIPE_PREFLIGHT_* bits; default ssh|gpus|ports */

		/* pre-flight thresholds */
		double min_free_disk_gb;   /* "disk" check threshold; default 1 */
		double max_clock_offset_s; /* "clock" check limit; default 1 */
	} health;

	struct dp_recipe_env *env; /* passed to every worker, in file order */
	size_t n_env;

	struct {
		char **webhooks; /* http(s) URLs to POST run events to; default none */
		size_t n_webhooks;
	} notify;

	struct {
		char *push_url;	   /* http(s) push endpoint; NULL (default): off */
		double interval_s; /* push period; default 10 */
	} metrics;
};

/* One problem found in a recipe.  line/col are 1-based (libyaml marks + 1). */
struct dp_recipe_diag {
	char *file; /* as given to dp_recipe_load() */
	unsigned line, col;
	char *key; /* dotted key path, e.g. "parallel.pp" or "cluster.hosts[1]"; "" if none */
	char *msg; /* what is wrong, lower case, no full stop */
};

/* A list of diagnostics (caller-embedded: _init / _release). */
struct dp_recipe_diags {
	struct dp_recipe_diag *v;
	size_t n, alloc;
};

void dp_recipe_diags_init(struct dp_recipe_diags *d);
void dp_recipe_diags_release(struct dp_recipe_diags *d); /* NULL-safe; reusable after _init */

/* Format @d as one line without a newline:
 *   FILE:LINE:COL: error: key 'x.y': what
 * (the "key '...': " part is left out when d->key is empty).  Returns a string
 * the caller frees, or NULL on ENOMEM. */
char *dp_recipe_diag_format(const struct dp_recipe_diag *d);

/* Load and validate the recipe at @path.  0 and *out set (caller frees with
 * dp_recipe_free).  -EINVAL when the recipe has errors: all of them are
 * appended to @diags (if not NULL) sorted by line and column, and @err holds
 * the first one formatted.  -ENOENT/-EACCES/-EISDIR/... when the file cannot
 * be opened (@err says so, no diagnostics), -ENOMEM. */
int dp_recipe_load(const char *path, struct dp_recipe **out, struct dp_recipe_diags *diags,
		   struct dp_err *err);

/* The same for recipe text in memory (e.g. an embedded default); @name is
 * used as FILE in diagnostics and as recipe->path. */
int dp_recipe_load_mem(const char *name, const char *text, size_t len, struct dp_recipe **out,
		       struct dp_recipe_diags *diags, struct dp_err *err);

/* Total workers: hosts x cluster.gpus. */
long dp_recipe_world_size(const struct dp_recipe *r);

void dp_recipe_free(struct dp_recipe *r); /* NULL-safe */

#endif
