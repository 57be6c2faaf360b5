/* launcher/cmd_topo.c - `dpctl topo discover|show|validate`.
 *
 * `validate RECIPE` collects the topology of every node of the recipe: over
 * ssh (the dp_ssh fan-out running `dpworker --discover --json` on each host)
 * or, for a local recipe, by discovering this machine; then judges each node
 * against the recipe and against the others (launcher/dp_preflight.h).
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "common/dp_buf.h"
#include "common/dp_util.h"
#include "launcher/cli_int.h"
#include "launcher/dp_launcher.h"
#include "launcher/dp_preflight.h"
#include "launcher/dp_ssh.h"
#include "topo/dp_topo.h"
#include "common/dp_banned.h"

#define OUT_CAP (64u << 20)

enum {
	OPT_JSON = 256,
	OPT_ROOT,
	OPT_WORKER,
	OPT_SSH_PORT,
	OPT_SSH_IDENTITY,
	OPT_KNOWN_HOSTS,
	OPT_ACCEPT_NEW,
};

static const struct option opts[] = {
	{ "json", no_argument, NULL, OPT_JSON },
	{ "root", required_argument, NULL, OPT_ROOT },
	{ "worker", required_argument, NULL, OPT_WORKER },
	{ "ssh-port", required_argument, NULL, OPT_SSH_PORT },
	{ "ssh-identity", required_argument, NULL, OPT_SSH_IDENTITY },
	{ "known-hosts", required_argument, NULL, OPT_KNOWN_HOSTS },
	{ "accept-new-host-keys", no_argument, NULL, OPT_ACCEPT_NEW },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static const char usage[] =
	"usage: dpctl topo discover [--json] [--root DIR]\n"
	"       dpctl topo show [--json] FILE[+FILE...]...\n"
	"       dpctl topo validate [--json] [--root DIR] [FILE[+FILE...]...]\n"
	"       dpctl topo validate [--json] [ssh options] RECIPE.yaml\n"
	"\n"
	"discover   this machine from /sys (plus NVML and verbs when present)\n"
	"show       import topology files, one node per argument; FILE+FILE merges\n"
	"           files of one node (e.g. topo-mp.txt+ibv_devinfo.txt)\n"
	"validate   check rail alignment, ports, NVLink and homogeneity of the\n"
	"           given nodes (this machine if none); exit 65 if a check fails.\n"
	"           With a RECIPE (.yaml/.yml): run 'dpworker --discover --json' on\n"
	"           every host over ssh, check each node against the recipe (GPU and\n"
	"           NIC counts, rails) and the others (heterogeneity); one line per\n"
	"           node; exit 65 if a node fails, 69 if one cannot be reached\n"
	"\n"
	"Formats (detected): NCCL topology XML, hwloc XML, nvidia-smi topo -m/-mp,\n"
	"nvidia-smi nvlink -s, ibstat, ibstatus, ibv_devinfo, lspci -nn, dpctl JSON\n"
	"(dpworker --discover --json), a /sys tree or a /sys/class/infiniband copy.\n"
	"\n"
	"Options:\n"
	"  --json            print JSON ({\"nodes\":[...]} or {\"checks\":[...]})\n"
	"  --root DIR        discover from DIR instead of / (default $DP_SYSFS_ROOT)\n"
	"  --worker PATH     with a RECIPE: dpworker on the nodes (default: $DPWORKER,\n"
	"                    next to dpctl, PATH)\n"
	"  --ssh-port P      with a RECIPE: ssh port (cluster.port)\n"
	"  --ssh-identity FILE  with a RECIPE: private key (cluster.identity)\n"
	"  --known-hosts FILE   with a RECIPE: host keys to trust (~/.ssh/known_hosts)\n"
	"  --accept-new-host-keys  with a RECIPE: add unknown host keys\n"
	"  -h, --help        print this help\n";

static int report_err(struct dp_cli *cli, int rc, const struct dp_err *e)
{
	/* parse errors are already "FILE:LINE: error: ..." like a compiler's */
	if (rc == -EBADMSG && strstr(e->msg, ": error: ")) {
		(void)fprintf(cli->err, "%s\n", e->msg);
		return EX_DATAERR;
	}
	return dp_cli_error(cli, dp_cli_exit_code(rc), "%s", e->msg);
}

static const char *base_name(const char *p)
{
	const char *s = strrchr(p, '/');

	return s && s[1] ? s + 1 : p;
}

/* Import one node: FILE, or FILE+FILE+... merged.  An existing path that
 * contains '+' is taken whole. */
static int load_node(const char *arg, struct dp_topo **out, struct dp_err *e)
{
	struct dp_topo *t = NULL, *more = NULL;
	struct stat st;
	char *copy, *save = NULL;
	int rc = 0;

	if (!strchr(arg, '+') || stat(arg, &st) == 0) {
		rc = dp_topo_import(arg, &t, e);
		goto done;
	}
	copy = dp_strdup(arg, e);
	if (!copy)
		return -ENOMEM;
	for (char *p = strtok_r(copy, "+", &save); p && !rc; p = strtok_r(NULL, "+", &save)) {
		if (!t) {
			rc = dp_topo_import(p, &t, e);
			continue;
		}
		rc = dp_topo_import(p, &more, e);
		if (!rc)
			rc = dp_topo_merge(t, more, e);
		dp_topo_free(more);
		more = NULL;
	}
	free(copy);
done:
	if (rc) {
		dp_topo_free(t);
		return rc;
	}
	if (!dp_topo_hostname(t)[0]) {
		/* a file has no host name: name the node after its (first) file */
		char name[256];

		(void)snprintf(name, sizeof(name), "%s", arg);
		if (strchr(name, '+') && stat(arg, &st) != 0)
			*strchr(name, '+') = '\0';
		dp_topo_set_hostname(t, base_name(name));
	}
	*out = t;
	return 0;
}

static int print_nodes(struct dp_cli *cli, struct dp_topo **nodes, int n)
{
	struct dp_buf b;
	int rc = 0;

	dp_buf_init(&b, OUT_CAP);
	if (cli->json)
		rc |= dp_buf_adds(&b, "{\"nodes\":[");
	for (int i = 0; i < n; i++) {
		if (cli->json) {
			rc |= i ? dp_buf_adds(&b, ",") : 0;
			rc |= dp_topo_format_json(nodes[i], &b);
		} else {
			rc |= i ? dp_buf_adds(&b, "\n") : 0;
			rc |= dp_topo_format_text(nodes[i], &b);
		}
	}
	if (cli->json)
		rc |= dp_buf_adds(&b, "]}\n");
	if (!rc)
		(void)fputs(dp_buf_str(&b), cli->out);
	dp_buf_release(&b);
	return rc ? dp_cli_error(cli, EX_SOFTWARE, "topo: output too large") : EX_OK;
}

static int load_all(struct dp_cli *cli, int argc, char **argv, const char *root,
		    struct dp_topo ***out, int *nout)
{
	struct dp_topo **nodes;
	struct dp_err e = { 0 };
	int n = argc > 0 ? argc : 1, rc = 0;

	nodes = calloc((size_t)n, sizeof(*nodes)); /* NOLINT(bugprone-sizeof-expression) */
	if (!nodes)
		return dp_cli_error(cli, EX_OSERR, "topo: out of memory");
	if (argc == 0) {
		struct dp_topo_cfg cfg = { .sysfs_root = root };

		rc = dp_topo_discover(&cfg, &nodes[0], &e);
	}
	for (int i = 0; i < argc && !rc; i++)
		rc = load_node(argv[i], &nodes[i], &e);
	if (rc) {
		for (int i = 0; i < n; i++)
			dp_topo_free(nodes[i]);
		free(nodes);
		return report_err(cli, rc, &e);
	}
	*out = nodes;
	*nout = n;
	return EX_OK;
}

static void free_nodes(struct dp_topo **nodes, int n)
{
	for (int i = 0; i < n; i++)
		dp_topo_free(nodes[i]);
	free(nodes);
}

static int print_report(struct dp_cli *cli, const struct dp_topo_report *r, int nnodes)
{
	int pass = r->nchecks - r->nfail - r->nwarn;

	if (cli->json) {
		json_t *o = json_object(), *arr = json_array();
		char *txt;

		for (int i = 0; arr && i < r->nchecks; i++) {
			const struct dp_topo_check *c = &r->checks[i];

			(void)json_array_append_new(
				arr, json_pack("{s:s,s:s?,s:s,s:s,s:s?}", "name", c->name, "node",
					       c->node[0] ? c->node : NULL, "status",
					       dp_topo_check_status_name(c->status), "detail",
					       c->detail, "fix", c->fix[0] ? c->fix : NULL));
		}
		(void)json_object_set_new(o, "checks", arr);
		(void)json_object_set_new(o, "nodes", json_integer(nnodes));
		(void)json_object_set_new(o, "passed", json_integer(pass));
		(void)json_object_set_new(o, "warnings", json_integer(r->nwarn));
		(void)json_object_set_new(o, "failed", json_integer(r->nfail));
		txt = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
		json_decref(o);
		if (!txt)
			return dp_cli_error(cli, EX_OSERR, "topo: out of memory");
		(void)fprintf(cli->out, "%s\n", txt);
		free(txt);
	} else {
		(void)fprintf(cli->out, "%-12s %-24s %-6s %s\n", "CHECK", "NODE", "STATUS",
			      "DETAIL");
		for (int i = 0; i < r->nchecks; i++) {
			const struct dp_topo_check *c = &r->checks[i];

			(void)fprintf(cli->out, "%-12s %-24s %-6s %s\n", c->name,
				      c->node[0] ? c->node : "(all)",
				      dp_topo_check_status_name(c->status), c->detail);
			if (c->fix[0])
				(void)fprintf(cli->out, "%-12s %-24s %-6s fix: %s\n", "", "", "",
					      c->fix);
		}
		(void)fprintf(cli->out, "validate: %d node%s, %d passed, %d warning%s, %d failed\n",
			      nnodes, nnodes == 1 ? "" : "s", pass, r->nwarn,
			      r->nwarn == 1 ? "" : "s", r->nfail);
	}
	return r->nfail ? EX_DATAERR : EX_OK;
}

/* The options of `topo`, accepted before and after the subcommand.  Returns
 * -1 to go on, or the exit code to return (help printed, bad option). */
struct remote_opts {
	const char *worker, *identity, *known_hosts;
	long port;
	int accept_new, given;
};

static int parse_opts(struct dp_cli *cli, int argc, char **argv, const char *shortopts,
		      const char **root, struct remote_opts *ro)
{
	struct dp_err e = { 0 };
	int c;

	while ((c = getopt_long(argc, argv, shortopts, opts, NULL)) != -1) {
		switch (c) {
		case OPT_JSON:
			cli->json = 1;
			break;
		case OPT_ROOT:
			*root = optarg;
			break;
		case OPT_WORKER:
			ro->worker = optarg;
			ro->given = 1;
			break;
		case OPT_SSH_PORT:
			if (dp_parse_long(optarg, 1, 65535, &ro->port, "--ssh-port", &e) != 0)
				return dp_cli_usage_error(cli, "topo ", "%s", e.msg);
			ro->given = 1;
			break;
		case OPT_SSH_IDENTITY:
			ro->identity = optarg;
			ro->given = 1;
			break;
		case OPT_KNOWN_HOSTS:
			ro->known_hosts = optarg;
			ro->given = 1;
			break;
		case OPT_ACCEPT_NEW:
			ro->accept_new = 1;
			ro->given = 1;
			break;
		case 'h':
			return dp_cli_help(cli, &dp_cmd_topo);
		default:
			return dp_cli_bad_option(cli, "topo", argc, argv);
		}
	}
	return -1;
}

/* ---- validate RECIPE ------------------------------------------------------ */

#define DISCOVER_CAP (16u << 20)

struct collect {
	struct dp_buf *out;    /* stdout per host */
	char (*last_err)[256]; /* last stderr line per host */
};

static void collect_line(void *arg, int job, int is_stderr, const char *line)
{
	struct collect *c = arg;

	if (is_stderr) {
		(void)snprintf(c->last_err[job], sizeof(c->last_err[job]), "%s", line);
		return;
	}
	(void)dp_buf_adds(&c->out[job], line);
	(void)dp_buf_adds(&c->out[job], "\n");
}

static const char *worker_path(const char *given, char *buf, size_t len)
{
	const char *env = getenv("DPWORKER");
	ssize_t n;
	char *slash;

	if (given)
		return given;
	if (env && *env)
		return env;
	n = readlink("/proc/self/exe", buf, len - 1);
	if (n > 0) {
		buf[n] = '\0';
		slash = strrchr(buf, '/');
		if (slash && (size_t)(slash - buf) + sizeof("/dpworker") <= len) {
			(void)snprintf(slash, len - (size_t)(slash - buf), "/dpworker");
			if (access(buf, X_OK) == 0)
				return buf;
		}
	}
	return "dpworker";
}

static int print_nodes_report(struct dp_cli *cli, const struct dp_preflight_node *x, int n,
			      int nbad, int unreachable)
{
	if (cli->json) {
		json_t *o = json_object(), *arr = json_array();
		char *txt;

		for (int i = 0; arr && i < n; i++)
			(void)json_array_append_new(arr, json_pack("{s:s,s:b,s:i,s:i,s:s}", "host",
								   x[i].host, "ok", x[i].ok, "gpus",
								   x[i].gpus, "nics", x[i].nics,
								   "detail", x[i].why));
		(void)json_object_set_new(o, "nodes", arr);
		(void)json_object_set_new(o, "failed", json_integer(nbad));
		txt = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
		json_decref(o);
		if (!txt)
			return dp_cli_error(cli, EX_OSERR, "topo: out of memory");
		(void)fprintf(cli->out, "%s\n", txt);
		free(txt);
	} else {
		for (int i = 0; i < n; i++)
			(void)fprintf(cli->out, "%-24s %-4s %s\n", x[i].host,
				      x[i].ok ? "ok" : "FAIL", x[i].why);
		(void)fprintf(cli->out, "validate: %d node%s, %d failed\n", n, n == 1 ? "" : "s",
			      nbad);
	}
	return unreachable ? EX_UNAVAILABLE : nbad ? EX_DATAERR : EX_OK;
}

static int validate_recipe(struct dp_cli *cli, const char *path, const struct remote_opts *ro)
{
	struct dp_recipe *r = NULL;
	struct dp_preflight_plan plan = { 0 };
	struct dp_preflight_node *x = NULL;
	struct dp_topo **topos = NULL;
	struct dp_ssh_job *jobs = NULL;
	struct collect col = { 0 };
	char(*cmds)[PATH_MAX + 64] = NULL;
	char(*errs)[512] = NULL;
	char wbuf[PATH_MAX], hostname[256];
	struct dp_err e = { 0 };
	int rc, n = 0, nbad, unreachable = 0;

	rc = dp_cli_load_recipe(cli, path, &r);
	if (rc)
		return rc;
	plan.checks = DP_PF_GPUS | DP_PF_NICS | DP_PF_TOPOLOGY;
	plan.nics = r->cluster.nics;
	plan.need_gpu = r->train.backend == DP_RECIPE_BACKEND_CUDA;
	n = r->cluster.launcher == DP_RECIPE_LAUNCH_SSH ? (int)dp_hostlist_count(r->cluster.hosts)
							: 1;
	x = calloc((size_t)n, sizeof(*x));
	topos = calloc((size_t)n, sizeof(*topos)); /* NOLINT(bugprone-sizeof-expression) */
	errs = calloc((size_t)n, sizeof(*errs));
	if (!x || !topos || !errs) {
		rc = dp_cli_error(cli, EX_OSERR, "topo: out of memory");
		goto out;
	}
	if (r->cluster.launcher != DP_RECIPE_LAUNCH_SSH) {
		/* a local recipe: this machine is the node */
		if (gethostname(hostname, sizeof(hostname) - 1) != 0)
			(void)snprintf(hostname, sizeof(hostname), "localhost");
		hostname[sizeof(hostname) - 1] = '\0';
		x[0].host = hostname;
		if (dp_topo_discover(NULL, &topos[0], &e) == 0)
			x[0].topo = topos[0];
		else
			x[0].error = e.msg;
	} else {
		struct dp_ssh_opts so = { 0 };
		const char *w = worker_path(ro->worker, wbuf, sizeof(wbuf));

		if (r->cluster.known_hosts == DP_RECIPE_KH_OFF) {
			rc = dp_cli_error(
				cli, EX_UNAVAILABLE,
				"%s: cluster.known_hosts 'off' is refused; use accept-new",
				r->path);
			goto out;
		}
		jobs = calloc((size_t)n, sizeof(*jobs));
		cmds = calloc((size_t)n, sizeof(*cmds));
		col.out = calloc((size_t)n, sizeof(*col.out));
		col.last_err = calloc((size_t)n, sizeof(*col.last_err));
		if (!jobs || !cmds || !col.out || !col.last_err) {
			rc = dp_cli_error(cli, EX_OSERR, "topo: out of memory");
			goto out;
		}
		for (int i = 0; i < n; i++) {
			cmds[i][0] = '\0';
			if (dp_shell_quote(cmds[i], sizeof(cmds[i]), w) != 0) {
				rc = dp_cli_error(cli, EX_USAGE, "topo: worker path too long");
				goto out;
			}
			{
				size_t len = strlen(cmds[i]);

				if (snprintf(cmds[i] + len, sizeof(cmds[i]) - len,
					     " --discover --json") >=
				    (int)(sizeof(cmds[i]) - len)) {
					rc = dp_cli_error(cli, EX_USAGE,
							  "topo: worker path too long");
					goto out;
				}
			}
			jobs[i].host = dp_hostlist_get(r->cluster.hosts, (size_t)i);
			jobs[i].command = cmds[i];
			dp_buf_init(&col.out[i], DISCOVER_CAP);
			x[i].host = jobs[i].host;
		}
		so.user = r->cluster.user;
		so.port = ro->port ? (int)ro->port : r->cluster.port;
		so.identity = ro->identity ? ro->identity : r->cluster.identity;
		so.known_hosts = ro->known_hosts;
		so.hostkey_policy =
			ro->accept_new || r->cluster.known_hosts == DP_RECIPE_KH_ACCEPT_NEW
				? DP_SSH_HOSTKEY_ACCEPT_NEW
				: DP_SSH_HOSTKEY_STRICT;
		so.connect_timeout_ms = (int)(r->cluster.connect_timeout_s * 1000);
		so.use_agent = 1;
		rc = dp_ssh_run(&so, jobs, n, collect_line, &col,
				(int)(r->cluster.connect_timeout_s * 1000) + 60000, &e);
		if (rc && rc != -ETIMEDOUT) {
			rc = dp_cli_error(cli, dp_cli_exit_code(rc), "%s", e.msg);
			goto out;
		}
		for (int i = 0; i < n; i++) {
			struct dp_err ie = { 0 };

			if (jobs[i].state != DP_SSH_DONE) {
				(void)snprintf(errs[i], sizeof(errs[i]), "unreachable: %s",
					       jobs[i].error[0] ? jobs[i].error : "timed out");
				unreachable++;
			} else if (jobs[i].exit_status != 0) {
				(void)snprintf(errs[i], sizeof(errs[i]),
					       "dpworker --discover exited with status %d%s%s",
					       jobs[i].exit_status, col.last_err[i][0] ? ": " : "",
					       col.last_err[i]);
			} else if (dp_topo_import_mem(jobs[i].host, "dpctl-json",
						      dp_buf_str(&col.out[i]), col.out[i].len,
						      &topos[i], &ie) != 0) {
				(void)snprintf(errs[i], sizeof(errs[i]),
					       "bad discovery output: %.400s", ie.msg);
			} else {
				x[i].topo = topos[i];
				continue;
			}
			x[i].error = errs[i];
		}
	}
	nbad = dp_preflight_nodes_judge(&plan, r->cluster.gpus, x, n);
	rc = print_nodes_report(cli, x, n, nbad, unreachable);
out:
	for (int i = 0; topos && i < n; i++)
		dp_topo_free(topos[i]);
	for (int i = 0; col.out && i < n; i++)
		dp_buf_release(&col.out[i]);
	free(col.out);
	free(col.last_err);
	free(cmds);
	free(jobs);
	free(errs);
	free(topos);
	free(x);
	dp_recipe_free(r);
	return rc;
}

static int topo_main(struct dp_cli *cli, int argc, char **argv)
{
	const char *root = NULL, *sub;
	struct dp_topo **nodes = NULL;
	struct remote_opts ro = { 0 };
	int n = 0, rc;

	optind = 0;
	opterr = 0;
	rc = parse_opts(cli, argc, argv, "+h", &root, &ro);
	if (rc >= 0)
		return rc;
	if (optind >= argc)
		return dp_cli_usage_error(cli, "topo ",
					  "missing subcommand (discover, show, validate)");
	sub = argv[optind++];
	/* options may also follow the subcommand */
	{
		int sub_argc = argc - optind + 1;
		char **sub_argv = argv + optind - 1;

		optind = 0;
		rc = parse_opts(cli, sub_argc, sub_argv, "h", &root, &ro);
		if (rc >= 0)
			return rc;
		argc = sub_argc - optind;
		argv = sub_argv + optind;
	}
	if (strcmp(sub, "discover") == 0) {
		if (argc)
			return dp_cli_usage_error(cli, "topo ", "discover takes no FILE");
	} else if (strcmp(sub, "show") == 0) {
		if (!argc)
			return dp_cli_usage_error(cli, "topo ", "show needs at least one FILE");
		if (root)
			return dp_cli_usage_error(cli, "topo ", "--root is for discover/validate");
	} else if (strcmp(sub, "validate") != 0) {
		return dp_cli_usage_error(cli, "topo ", "unknown subcommand '%s'", sub);
	} else if (argc == 1 &&
		   (dp_str_endswith(argv[0], ".yaml") || dp_str_endswith(argv[0], ".yml"))) {
		if (root)
			return dp_cli_usage_error(cli, "topo ",
						  "give a RECIPE or --root, not both");
		return validate_recipe(cli, argv[0], &ro);
	} else if (ro.given) {
		return dp_cli_usage_error(cli, "topo ",
					  "--worker and the ssh options need a RECIPE");
	} else if (argc && root) {
		return dp_cli_usage_error(cli, "topo ", "give FILEs or --root, not both");
	}
	rc = load_all(cli, argc, argv, root, &nodes, &n);
	if (rc)
		return rc;
	if (strcmp(sub, "validate") == 0) {
		struct dp_topo_report r;
		struct dp_err e = { 0 };

		if (dp_topo_validate((const struct dp_topo *const *)nodes, n, &r, &e)) {
			rc = dp_cli_error(cli, EX_OSERR, "%s", e.msg);
		} else {
			rc = print_report(cli, &r, n);
			dp_topo_report_release(&r);
		}
	} else {
		rc = print_nodes(cli, nodes, n);
	}
	free_nodes(nodes, n);
	return rc;
}

const struct dp_cli_cmd dp_cmd_topo = {
	.name = "topo",
	.fn = topo_main,
	.opts = opts,
	.summary = "discover, show or validate node topology",
	.usage = usage,
};
