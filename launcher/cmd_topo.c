/* launcher/cmd_topo.c - `dpctl topo discover|show|validate`. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "common/dp_buf.h"
#include "common/dp_util.h"
#include "launcher/cli_int.h"
#include "topo/dp_topo.h"
#include "common/dp_banned.h"

#define OUT_CAP (64u << 20)

enum { OPT_JSON = 256, OPT_ROOT };

static const struct option opts[] = {
	{ "json", no_argument, NULL, OPT_JSON },
	{ "root", required_argument, NULL, OPT_ROOT },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static const char usage[] =
	"usage: dpctl topo discover [--json] [--root DIR]\n"
	"       dpctl topo show [--json] FILE[+FILE...]...\n"
	"       dpctl topo validate [--json] [--root DIR] [FILE[+FILE...]...]\n"
	"\n"
	"discover   this machine from /sys (plus NVML and verbs when present)\n"
	"show       import topology files, one node per argument; FILE+FILE merges\n"
	"           files of one node (e.g. topo-mp.txt+ibv_devinfo.txt)\n"
	"validate   check rail alignment, ports, NVLink and homogeneity of the\n"
	"           given nodes (this machine if none); exit 65 if a check fails\n"
	"\n"
	"Formats (detected): NCCL topology XML, hwloc XML, nvidia-smi topo -m/-mp,\n"
	"nvidia-smi nvlink -s, ibstat, ibstatus, ibv_devinfo, lspci -nn, dpctl JSON\n"
	"(dpworker --discover --json), a /sys tree or a /sys/class/infiniband copy.\n"
	"\n"
	"Options:\n"
	"  --json            print JSON ({\"nodes\":[...]} or {\"checks\":[...]})\n"
	"  --root DIR        discover from DIR instead of / (default $DP_SYSFS_ROOT)\n"
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
static int parse_opts(struct dp_cli *cli, int argc, char **argv, const char *shortopts,
		      const char **root)
{
	int c;

	while ((c = getopt_long(argc, argv, shortopts, opts, NULL)) != -1) {
		switch (c) {
		case OPT_JSON:
			cli->json = 1;
			break;
		case OPT_ROOT:
			*root = optarg;
			break;
		case 'h':
			return dp_cli_help(cli, &dp_cmd_topo);
		default:
			return dp_cli_bad_option(cli, "topo", argc, argv);
		}
	}
	return -1;
}

static int topo_main(struct dp_cli *cli, int argc, char **argv)
{
	const char *root = NULL, *sub;
	struct dp_topo **nodes = NULL;
	int n = 0, rc;

	optind = 0;
	opterr = 0;
	rc = parse_opts(cli, argc, argv, "+h", &root);
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
		rc = parse_opts(cli, sub_argc, sub_argv, "h", &root);
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
