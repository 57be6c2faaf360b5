/* launcher/cli_recipe.c - loading a recipe on behalf of a command, with the
 * diagnostics printed the same way by every command. */
#include <errno.h>

#include "launcher/cli_int.h"
#include "launcher/dp_launcher.h"

void dp_cli_print_diag(struct dp_cli *cli, const struct dp_recipe_diag *d)
{
	const char *red = cli->color ? "\033[1;31m" : "", *off = cli->color ? "\033[0m" : "";

	if (*d->key)
		(void)fprintf(cli->err, "%s:%u:%u: %serror:%s key '%s': %s\n", d->file, d->line,
			      d->col, red, off, d->key, d->msg);
	else
		(void)fprintf(cli->err, "%s:%u:%u: %serror:%s %s\n", d->file, d->line, d->col, red,
			      off, d->msg);
}

int dp_cli_load_recipe(struct dp_cli *cli, const char *path, struct dp_recipe **out)
{
	struct dp_recipe_diags d;
	struct dp_err e = { 0 };
	int rc, code = EX_OK;

	dp_recipe_diags_init(&d);
	rc = dp_recipe_load(path, out, &d, &e);
	if (rc == -EINVAL && d.n > 0) {
		for (size_t i = 0; i < d.n; i++)
			dp_cli_print_diag(cli, &d.v[i]);
		code = EX_DATAERR;
	} else if (rc) {
		code = dp_cli_error(cli, dp_cli_exit_code(rc), "%s", e.msg);
	}
	dp_recipe_diags_release(&d);
	return code;
}
