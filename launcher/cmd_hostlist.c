/* launcher/cmd_hostlist.c - `dpctl hostlist expand|compress`: Slurm host lists.
 *
 * expand prints every host of the given expressions in order (duplicates
 * kept), compress prints the sorted, de-duplicated ranged form of all hosts
 * given.  Parsing and compression live in common/dp_hostlist.c.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/dp_hostlist.h"
#include "launcher/cli_int.h"
#include "common/dp_banned.h"

enum { OPT_SEP = 256, OPT_JSON };

static const struct option opts[] = {
	{ "sep", required_argument, NULL, OPT_SEP },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* Expand every argument into one list, in argument order. */
static int gather(struct dp_cli *cli, int argc, char **argv, struct dp_hostlist **out)
{
	struct dp_hostlist *all = dp_hostlist_new();
	struct dp_err err = { 0 };
	int rc = 0;

	if (!all)
		return dp_cli_error(cli, EX_OSERR, "hostlist: out of memory");
	for (int i = 0; i < argc && !rc; i++) {
		struct dp_hostlist *one = NULL;

		rc = dp_hostlist_expand(argv[i], &one, &err);
		for (size_t k = 0; !rc && k < dp_hostlist_count(one); k++) {
			if (dp_hostlist_count(all) >= DP_HOSTLIST_MAX)
				rc = dp_err_set(&err, E2BIG,
						"hostlist: the arguments hold more than %d hosts",
						DP_HOSTLIST_MAX);
			else
				rc = dp_hostlist_push(all, dp_hostlist_get(one, k), &err);
		}
		dp_hostlist_free(one);
	}
	if (rc) {
		dp_hostlist_free(all);
		return dp_cli_error(cli, dp_cli_exit_code(rc), "%s", err.msg);
	}
	*out = all;
	return EX_OK;
}

static int print_json(struct dp_cli *cli, json_t *j)
{
	int rc = json_dumpf(j, cli->out, JSON_COMPACT | JSON_ENCODE_ANY);

	json_decref(j);
	if (rc)
		return dp_cli_error(cli, EX_IOERR, "hostlist: cannot write JSON");
	(void)fputc('\n', cli->out);
	return EX_OK;
}

static int do_expand(struct dp_cli *cli, const struct dp_hostlist *hl, const char *sep, int json)
{
	size_t n = dp_hostlist_count(hl);

	if (json) {
		json_t *arr = json_array();

		if (!arr)
			return dp_cli_error(cli, EX_OSERR, "hostlist: out of memory");
		for (size_t i = 0; i < n; i++) {
			const char *h = dp_hostlist_get(hl, i);
			json_t *s = json_string(h);

			if (!s || json_array_append_new(arr, s)) {
				json_decref(arr);
				return dp_cli_error(cli, EX_DATAERR,
						    "hostlist: host name '%s' is not valid UTF-8",
						    h);
			}
		}
		return print_json(cli, arr);
	}
	for (size_t i = 0; i < n; i++) {
		if (i)
			(void)fputs(sep, cli->out);
		(void)fputs(dp_hostlist_get(hl, i), cli->out);
	}
	(void)fputc('\n', cli->out);
	return EX_OK;
}

static int do_compress(struct dp_cli *cli, const struct dp_hostlist *hl, int json)
{
	struct dp_err err = { 0 };
	char *s = dp_hostlist_compress(hl, &err);
	json_t *j;

	if (!s)
		return dp_cli_error(cli, EX_OSERR, "%s", err.msg);
	if (!json) {
		(void)fprintf(cli->out, "%s\n", s);
		free(s);
		return EX_OK;
	}
	j = json_string(s);
	if (!j) {
		int rc = dp_cli_error(cli, EX_DATAERR, "hostlist: '%s' is not valid UTF-8", s);

		free(s);
		return rc;
	}
	free(s);
	return print_json(cli, j);
}

static int cmd_hostlist(struct dp_cli *cli, int argc, char **argv)
{
	const char *sep = NULL, *sub;
	struct dp_hostlist *hl = NULL;
	int json = cli->json, c, rc, expand;

	optind = 0;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (c == OPT_SEP)
			sep = optarg;
		else if (c == OPT_JSON)
			json = 1;
		else if (c == 'h')
			return dp_cli_help(cli, &dp_cmd_hostlist);
		else
			return dp_cli_bad_option(cli, "hostlist", argc, argv);
	}
	if (optind >= argc)
		return dp_cli_usage_error(cli, "hostlist ",
					  "missing subcommand: expand or compress");
	sub = argv[optind++];
	if (strcmp(sub, "expand") == 0)
		expand = 1;
	else if (strcmp(sub, "compress") == 0)
		expand = 0;
	else
		return dp_cli_usage_error(cli, "hostlist ",
					  "unknown subcommand '%s' (expand or compress)", sub);
	if (optind >= argc)
		return dp_cli_usage_error(cli, "hostlist ", "%s: missing %s", sub,
					  expand ? "HOSTLIST" : "HOST");
	if (sep && !expand)
		return dp_cli_usage_error(cli, "hostlist ", "--sep applies to expand only");
	rc = gather(cli, argc - optind, argv + optind, &hl);
	if (rc)
		return rc;
	rc = expand ? do_expand(cli, hl, sep ? sep : "\n", json) : do_compress(cli, hl, json);
	dp_hostlist_free(hl);
	return rc;
}

const struct dp_cli_cmd dp_cmd_hostlist = {
	.name = "hostlist",
	.fn = cmd_hostlist,
	.opts = opts,
	.summary = "expand or compress Slurm-style host lists",
	.usage = "usage: dpctl hostlist expand [--sep S] [--json] HOSTLIST...\n"
		 "       dpctl hostlist compress [--json] HOST-OR-HOSTLIST...\n"
		 "\n"
		 "expand prints every host of the Slurm host list expressions, in order, one per\n"
		 "line (duplicates kept): 'node[01-03,7],gpu-a[1-2]' gives node01 node02 node03\n"
		 "node7 gpu-a1 gpu-a2.  compress sorts and de-duplicates all hosts given (plain\n"
		 "names, comma lists or ranged expressions) and prints Slurm's ranged form:\n"
		 "'n3 n1 n2,n2' gives n[1-3].  Bad expressions exit 65 naming the column.\n"
		 "\n"
		 "Options:\n"
		 "  --sep S           separator between expanded hosts (default newline)\n"
		 "  --json            print a JSON array (expand) or string (compress)\n"
		 "  -h, --help        print this help\n",
};
