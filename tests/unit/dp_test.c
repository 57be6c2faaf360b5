/* tests/unit/dp_test.c - shared helpers for the unit tests. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "launcher/dp_launcher.h"
#include "tests/unit/dp_test.h"

struct dp_test_run dp_test_dpctlv(int argc, const char *const *argv)
{
	struct dp_test_run r = { 0 };
	char **av = calloc((size_t)argc + 2, sizeof(*av));
	size_t olen = 0, elen = 0;
	FILE *out, *err;

	assert_non_null(av);
	av[0] = "dpctl";
	for (int i = 0; i < argc; i++)
		av[i + 1] = (char *)argv[i];
	out = open_memstream(&r.out, &olen);
	err = open_memstream(&r.err, &elen);
	assert_non_null(out);
	assert_non_null(err);
	r.rc = dp_cli_main(argc + 1, av, out, err);
	(void)fclose(out);
	(void)fclose(err);
	free(av);
	return r;
}

struct dp_test_run dp_test_dpctl_list(const char *const *argv)
{
	int argc = 0;

	while (argv[argc])
		argc++;
	return dp_test_dpctlv(argc, argv);
}

void dp_test_run_free(struct dp_test_run *r)
{
	free(r->out);
	free(r->err);
	r->out = r->err = NULL;
}

char *dp_test_slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;

	if (!f)
		fail_msg("cannot open '%s'", path);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	assert_true(n >= 0);
	rewind(f);
	buf = malloc((size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	(void)fclose(f);
	return buf;
}

char *dp_test_write_tmp(const char *suffix, const char *text)
{
	char tmpl[] = "/tmp/dptest-XXXXXX";
	char *path;
	size_t len;
	int fd = mkstemp(tmpl);

	assert_true(fd >= 0);
	len = strlen(tmpl) + strlen(suffix) + 1;
	path = malloc(len);
	assert_non_null(path);
	(void)snprintf(path, len, "%s%s", tmpl, suffix);
	assert_int_equal(rename(tmpl, path), 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	(void)close(fd);
	return path;
}

int dp_test_netns_up(int id, int n, char *st, size_t len)
{
	char cmd[512];
	FILE *p;
	int rc;

	(void)snprintf(cmd, sizeof(cmd), "%s/tests/netns/netns-cluster.sh up %d %d 2>/dev/null",
		       DP_SRCDIR, id, n);
	p = popen(cmd, "r");
	assert_non_null(p);
	st[0] = '\0';
	while (fgets(st, (int)len, p))
		;
	rc = pclose(p);
	if (!WIFEXITED(rc) || WEXITSTATUS(rc) != 0)
		return -1;
	st[strcspn(st, "\n")] = '\0';
	return 0;
}

void dp_test_netns_down(int id)
{
	char cmd[512];

	(void)snprintf(cmd, sizeof(cmd), "%s/tests/netns/netns-cluster.sh down %d", DP_SRCDIR, id);
	(void)!system(cmd);
}

int dp_test_netns_dpworkers(int id, int n)
{
	char cmd[512], line[64];
	int count = 0;
	FILE *p;

	(void)snprintf(cmd, sizeof(cmd),
		       "for i in $(seq 1 %d); do ip netns pids dp%dn$i; done | "
		       "xargs -r ps -o comm= -p 2>/dev/null | grep -c dpworker",
		       n, id);
	p = popen(cmd, "r");
	assert_non_null(p);
	if (fgets(line, sizeof(line), p))
		count = (int)strtol(line, NULL, 10);
	(void)pclose(p);
	return count;
}
