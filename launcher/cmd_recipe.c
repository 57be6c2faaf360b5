/* launcher/cmd_recipe.c - `dpctl recipe check`: validate recipes, launch nothing.
 *
 * An argument with "://" is a URL (file://, https://, http://), fetched
 * with libcurl first (launcher/dp_fetch.h: size cap, timeout, TLS verified).
 *
 * Every file is checked even after a bad one, so one run lists every
 * problem.  Exit status: 66 if any file could not be opened, else 65 if any
 * had errors, else 0.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "launcher/cli_int.h"
#include "launcher/dp_fetch.h"
#include "launcher/dp_launcher.h"
#include "common/dp_banned.h"

static const struct option opts[] = {
	{ "json", no_argument, NULL, 256 },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static json_t *diags_json(const struct dp_recipe_diags *d)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < d->n; i++)
		(void)json_array_append_new(a, json_pack("{s:I, s:I, s:s, s:s}", "line",
							 (json_int_t)d->v[i].line, "col",
							 (json_int_t)d->v[i].col, "key",
							 d->v[i].key, "message", d->v[i].msg));
	return a;
}

/* Check one file; returns EX_OK, EX_DATAERR, EX_NOINPUT or another sysexits code. */
static int check_one(struct dp_cli *cli, const char *path, json_t *files)
{
	struct dp_recipe_diags d;
	struct dp_recipe *r = NULL;
	struct dp_err e = { 0 };
	int rc, code;

	dp_recipe_diags_init(&d);
	rc = dp_recipe_load_any(path, &r, &d, &e);
	if (rc == 0) {
		code = EX_OK;
		if (!files && !cli->quiet)
			(void)fprintf(cli->out, "%s: ok\n", path);
	} else if (rc == -EINVAL && d.n > 0) {
		code = EX_DATAERR;
		for (size_t i = 0; i < d.n; i++)
			dp_cli_print_diag(cli, &d.v[i]);
	} else {
		code = dp_cli_error(cli, dp_cli_exit_code(rc), "%s", e.msg);
	}
	if (files) {
		json_t *o = json_pack("{s:s, s:b, s:o}", "file", path, "ok", code == EX_OK,
				      "errors", diags_json(&d));

		if (o && code != EX_OK && d.n == 0)
			(void)json_object_set_new(o, "open_error", json_string(e.msg));
		(void)json_array_append_new(files, o);
	}
	dp_recipe_free(r);
	dp_recipe_diags_release(&d);
	return code;
}

/* The status of several files: no input outranks other failures, which
 * outrank bad data (the command line must be fixed first). */
static int rank(int code)
{
	return code == EX_OK ? 0 : code == EX_DATAERR ? 1 : code == EX_NOINPUT ? 3 : 2;
}

static int cmd_recipe(struct dp_cli *cli, int argc, char **argv)
{
	int json = cli->json, c, worst = EX_OK, nok = 0, nbad = 0;
	json_t *files = NULL;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (c == 256)
			json = 1;
		else if (c == 'h')
			return dp_cli_help(cli, &dp_cmd_recipe);
		else
			return dp_cli_bad_option(cli, "recipe", argc, argv);
	}
	if (optind >= argc)
		return dp_cli_usage_error(cli, "recipe ", "missing subcommand (expected 'check')");
	if (strcmp(argv[optind], "check") != 0)
		return dp_cli_usage_error(cli, "recipe ", "unknown subcommand '%s'", argv[optind]);
	if (optind + 1 >= argc)
		return dp_cli_usage_error(cli, "recipe ", "check: missing FILE");
	if (json) {
		files = json_array();
		if (!files)
			return dp_cli_error(cli, EX_OSERR, "out of memory");
	}
	for (int i = optind + 1; i < argc; i++) {
		int code = check_one(cli, argv[i], files);

		if (code == EX_OK)
			nok++;
		else
			nbad++;
		if (rank(code) > rank(worst))
			worst = code;
	}
	if (files) {
		json_t *o = json_pack("{s:o, s:i, s:i}", "files", files, "ok", nok, "failed", nbad);

		if (!o || json_dumpf(o, cli->out, JSON_INDENT(2)) != 0)
			worst = dp_cli_error(cli, EX_OSERR, "cannot write JSON");
		else
			(void)fputc('\n', cli->out);
		json_decref(o);
	}
	return worst;
}

const struct dp_cli_cmd dp_cmd_recipe = {
	.name = "recipe",
	.fn = cmd_recipe,
	.opts = opts,
	.summary = "check a recipe",
	.usage =
		"usage: dpctl recipe check [--json] FILE|URL...\n"
		"\n"
		"Validate recipes without launching anything.  Prints 'FILE: ok' for each good\n"
		"file and reports every error on stderr as\n"
		"  FILE:LINE:COL: error: key 'x.y': what\n"
		"The keys are described in docs/recipe.md.  A recipe may be a file://, https://\n"
		"or http:// URL (at most 4 MiB, fetched within 30 s; https verifies TLS).\n"
		"\n"
		"Options:\n"
		"  --json            print a JSON summary of every file and its errors\n"
		"  -h, --help        print this help\n"
		"\n"
		"Exit status: 0 all files are valid, 65 a file has errors, 66 a file cannot be read,\n"
		"69 a URL's server cannot be reached or timed out.\n",
};
