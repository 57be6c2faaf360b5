/* tests/unit/test_cli.c - dpctl global options, dispatch, exit codes, and
 * that every command and option is documented in docs/dpctl/<cmd>.md. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "launcher/cli_int.h"
#include "tests/unit/dp_test.h"

static void no_command_is_usage_error(void **state)
{
	struct dp_test_run r = dp_test_dpctl(NULL);

	(void)state;
	assert_int_equal(r.rc, EX_USAGE);
	assert_non_null(strstr(r.err, "usage: dpctl"));
	dp_test_run_free(&r);
}

static void unknown_command_names_it(void **state)
{
	struct dp_test_run r = dp_test_dpctl("frobnicate", NULL);

	(void)state;
	assert_int_equal(r.rc, EX_USAGE);
	assert_string_equal(r.err,
			    "dpctl: error: unknown command 'frobnicate'\nTry 'dpctl --help'.\n");
	dp_test_run_free(&r);
}

static void help_lists_every_command(void **state)
{
	struct dp_test_run r = dp_test_dpctl("--help", NULL);

	(void)state;
	assert_int_equal(r.rc, EX_OK);
	for (int i = 0; dp_cli_cmds[i]; i++) {
		char needle[64];

		(void)snprintf(needle, sizeof(needle), "  %s ", dp_cli_cmds[i]->name);
		assert_non_null(strstr(r.out, needle));
	}
	dp_test_run_free(&r);
}

static void every_command_has_help(void **state)
{
	(void)state;
	for (int i = 0; dp_cli_cmds[i]; i++) {
		struct dp_test_run r = dp_test_dpctl(dp_cli_cmds[i]->name, "--help", NULL);

		assert_int_equal(r.rc, EX_OK);
		assert_non_null(strstr(r.out, "usage: dpctl"));
		assert_string_equal(r.err, "");
		dp_test_run_free(&r);
	}
}

static void version_prints_features(void **state)
{
	struct dp_test_run r = dp_test_dpctl("--version", NULL);

	(void)state;
	assert_int_equal(r.rc, EX_OK);
	assert_non_null(strstr(r.out, "dpctl "));
	assert_non_null(strstr(r.out, "cuda="));
	assert_non_null(strstr(r.out, "verbs="));
	dp_test_run_free(&r);
	r = dp_test_dpctl("--json", "version", NULL);
	assert_int_equal(r.rc, EX_OK);
	assert_true(r.out[0] == '{');
	assert_non_null(strstr(r.out, "\"features\""));
	dp_test_run_free(&r);
}

static void bad_global_options_are_usage_errors(void **state)
{
	struct dp_test_run r = dp_test_dpctl("--color=purple", "version", NULL);

	(void)state;
	assert_int_equal(r.rc, EX_USAGE);
	assert_non_null(strstr(r.err, "--color: 'purple' is not auto, always or never"));
	dp_test_run_free(&r);
	r = dp_test_dpctl("--log=loud", "version", NULL);
	assert_int_equal(r.rc, EX_USAGE);
	assert_non_null(strstr(r.err, "unknown level 'loud'"));
	dp_test_run_free(&r);
	r = dp_test_dpctl("--bogus", NULL);
	assert_int_equal(r.rc, EX_USAGE);
	assert_non_null(strstr(r.err, "'--bogus'"));
	dp_test_run_free(&r);
}

static void color_follows_flag_and_no_color(void **state)
{
	struct dp_test_run r;

	(void)state;
	r = dp_test_dpctl("--color=always", "nosuch", NULL);
	assert_non_null(strstr(r.err, "\033[1;31m"));
	dp_test_run_free(&r);
	/* DPCTL_COLOR mirrors --color */
	assert_int_equal(setenv("DPCTL_COLOR", "always", 1), 0);
	r = dp_test_dpctl("nosuch", NULL);
	assert_non_null(strstr(r.err, "\033[1;31m"));
	dp_test_run_free(&r);
	assert_int_equal(unsetenv("DPCTL_COLOR"), 0);
	/* auto on a non-terminal: no colour */
	r = dp_test_dpctl("nosuch", NULL);
	assert_null(strstr(r.err, "\033["));
	dp_test_run_free(&r);
}

static void env_json_mirrors_flag(void **state)
{
	struct dp_test_run r;

	(void)state;
	assert_int_equal(setenv("DPCTL_JSON", "1", 1), 0);
	r = dp_test_dpctl("version", NULL);
	assert_true(r.out[0] == '{');
	dp_test_run_free(&r);
	assert_int_equal(unsetenv("DPCTL_JSON"), 0);
}

static void exit_codes_follow_sysexits(void **state)
{
	(void)state;
	assert_int_equal(dp_cli_exit_code(0), EX_OK);
	assert_int_equal(dp_cli_exit_code(-EINVAL), EX_DATAERR);
	assert_int_equal(dp_cli_exit_code(-EPROTONOSUPPORT), EX_DATAERR);
	assert_int_equal(dp_cli_exit_code(-ENOENT), EX_NOINPUT);
	assert_int_equal(dp_cli_exit_code(-ENOSYS), EX_UNAVAILABLE);
	assert_int_equal(dp_cli_exit_code(-EFAULT), EX_SOFTWARE);
}

/* A command or option without documentation fails here. */
static void every_command_and_option_is_documented(void **state)
{
	(void)state;
	for (int i = 0; dp_cli_cmds[i]; i++) {
		const struct dp_cli_cmd *c = dp_cli_cmds[i];
		char path[512];
		char *doc;

		(void)snprintf(path, sizeof(path), "%s/docs/dpctl/%s.md", DP_SRCDIR, c->name);
		doc = dp_test_slurp(path);
		for (const struct option *o = c->opts; o && o->name; o++) {
			char needle[64];

			(void)snprintf(needle, sizeof(needle), "--%s", o->name);
			if (!strstr(doc, needle))
				fail_msg("%s does not document option %s", path, needle);
			if (!strstr(c->usage, needle))
				fail_msg("'dpctl %s --help' does not mention %s", c->name, needle);
		}
		free(doc);
	}
	{
		char path[512];
		char *doc;

		(void)snprintf(path, sizeof(path), "%s/docs/dpctl/dpctl.md", DP_SRCDIR);
		doc = dp_test_slurp(path);
		for (const struct option *o = dp_cli_global_opts(); o->name; o++) {
			char needle[64];

			(void)snprintf(needle, sizeof(needle), "--%s", o->name);
			if (!strstr(doc, needle))
				fail_msg("%s does not document global option %s", path, needle);
		}
		free(doc);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(no_command_is_usage_error),
		cmocka_unit_test(unknown_command_names_it),
		cmocka_unit_test(help_lists_every_command),
		cmocka_unit_test(every_command_has_help),
		cmocka_unit_test(version_prints_features),
		cmocka_unit_test(bad_global_options_are_usage_errors),
		cmocka_unit_test(color_follows_flag_and_no_color),
		cmocka_unit_test(env_json_mirrors_flag),
		cmocka_unit_test(exit_codes_follow_sysexits),
		cmocka_unit_test(every_command_and_option_is_documented),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
