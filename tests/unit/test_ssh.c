/* tests/unit/test_ssh.c - the ssh fan-out against a private sshd on
 * 127.0.0.1-3 with keys made by the test (skipped where sshd or root is
 * missing): exit codes, output lines, stdin secrets, known_hosts policies,
 * auth failures, refused connections, the handshake window. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/dp_log.h"
#include "launcher/dp_ssh.h"
#include "tests/unit/dp_test.h"

#define SSHD "/usr/sbin/sshd"

static char dir[64];
static int port;
static pid_t sshd_pid = -1;
static char hostkey_line[1024]; /* "<type> <base64>" */

struct lines {
	int n;
	char text[64][256];
	int job[64];
	int is_err[64];
};

static void collect(void *arg, int job, int is_stderr, const char *line)
{
	struct lines *l = arg;

	if (l->n < 64) {
		(void)snprintf(l->text[l->n], sizeof(l->text[0]), "%s", line);
		l->job[l->n] = job;
		l->is_err[l->n] = is_stderr;
		l->n++;
	}
}

static int sh(const char *cmd)
{
	int rc = system(cmd);

	return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int s = socket(AF_INET, SOCK_STREAM, 0), p;

	assert_true(s >= 0);
	assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(s, (struct sockaddr *)&a, &len), 0);
	p = ntohs(a.sin_port);
	(void)close(s);
	return p;
}

static int can_connect(const char *ip)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int s = socket(AF_INET, SOCK_STREAM, 0), ok;

	(void)inet_pton(AF_INET, ip, &a.sin_addr);
	ok = connect(s, (struct sockaddr *)&a, sizeof(a)) == 0;
	(void)close(s);
	return ok;
}

static void write_known_hosts(const char *name, const char *hosts[], int n, const char *keyline)
{
	char path[128];
	FILE *f;

	(void)snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	for (int i = 0; i < n; i++)
		(void)fprintf(f, "[%s]:%d %s\n", hosts[i], port, keyline);
	(void)fclose(f);
}

static int setup(void **state)
{
	char cmd[2048], path[128];
	FILE *f;

	(void)state;
	if (access(SSHD, X_OK) != 0 || geteuid() != 0 || access("/usr/bin/ssh-keygen", X_OK) != 0)
		return 0; /* tests skip */
	(void)snprintf(dir, sizeof(dir), "/tmp/dpssh-XXXXXX");
	assert_non_null(mkdtemp(dir));
	port = free_port();
	(void)snprintf(
		cmd, sizeof(cmd),
		"mkdir -p /run/sshd && cd %s && ssh-keygen -q -t ecdsa -N '' -f host_key && "
		"ssh-keygen -q -t ecdsa -N '' -f other_key && "
		"ssh-keygen -q -t ecdsa -m PEM -N '' -f id && ssh-keygen -q -t ecdsa -m PEM -N '' -f wrong_id && "
		"cp id.pub authorized_keys && chmod 600 authorized_keys",
		dir);
	assert_int_equal(sh(cmd), 0);
	(void)snprintf(path, sizeof(path), "%s/sshd_config", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	(void)fprintf(
		f,
		"Port %d\nListenAddress 127.0.0.1\nListenAddress 127.0.0.2\nListenAddress 127.0.0.3\n"
		"HostKey %s/host_key\nAuthorizedKeysFile %s/authorized_keys\nPidFile %s/sshd.pid\n"
		"StrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\n"
		"PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
		"MaxStartups 64\nLogLevel ERROR\n",
		port, dir, dir, dir);
	(void)fclose(f);
	(void)snprintf(path, sizeof(path), "%s/host_key.pub", dir);
	f = fopen(path, "r");
	assert_non_null(f);
	{
		char type[64], b64[900];

		assert_int_equal(fscanf(f, "%63s %899s", type, b64), 2);
		(void)snprintf(hostkey_line, sizeof(hostkey_line), "%s %s", type, b64);
	}
	(void)fclose(f);
	sshd_pid = fork();
	assert_true(sshd_pid >= 0);
	if (sshd_pid == 0) {
		(void)snprintf(path, sizeof(path), "%s/sshd_config", dir);
		char logp[128];
		int fd;

		(void)prctl(PR_SET_PDEATHSIG, SIGTERM); /* no orphan sshd if the test dies */
		(void)snprintf(logp, sizeof(logp), "%s/sshd.log", dir);
		fd = open(logp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (fd >= 0)
			(void)dup2(fd, 2);
		/* Debian's bash sources ~/.bashrc for commands run by sshd; a slow
		 * one (pyenv init on developer machines) would dominate the test.
		 * Hide it in a private mount namespace when we can. */
		if (access("/usr/bin/unshare", X_OK) == 0) {
			char script[512];

			(void)snprintf(
				script, sizeof(script),
				": > %s/empty; [ -f \"$HOME/.bashrc\" ] && mount --bind %s/empty \"$HOME/.bashrc\"; exec %s -D -e -f %s",
				dir, dir, SSHD, path);
			execl("/usr/bin/unshare", "unshare", "-m", "--propagation", "private", "sh",
			      "-c", script, (char *)NULL);
		}
		execl(SSHD, SSHD, "-D", "-e", "-f", path, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 100 && !(can_connect("127.0.0.1") && can_connect("127.0.0.3")); i++)
		(void)usleep(50000);
	{
		const char *all[] = { "127.0.0.1", "127.0.0.2", "127.0.0.3" };

		write_known_hosts("known_hosts", all, 3, hostkey_line);
	}
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	if (sshd_pid > 0) {
		(void)kill(sshd_pid, SIGTERM);
		(void)waitpid(sshd_pid, NULL, 0);
	}
	if (dir[0]) {
		(void)snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		(void)sh(cmd);
	}
	return 0;
}

static struct dp_ssh_opts opts(const char *kh, enum dp_ssh_hostkey_policy pol, const char *id)
{
	static char khp[128], idp[128];
	struct dp_ssh_opts o = { 0 };

	(void)snprintf(khp, sizeof(khp), "%s/%s", dir, kh);
	(void)snprintf(idp, sizeof(idp), "%s/%s", dir, id);
	o.user = "root";
	o.port = port;
	o.identity = idp;
	o.known_hosts = khp;
	o.hostkey_policy = pol;
	o.connect_timeout_ms = 10000;
	return o;
}

#define NEED_SSHD()                                                                                \
	do {                                                                                       \
		if (sshd_pid <= 0)                                                                 \
			skip();                                                                    \
	} while (0)

static void runs_commands_and_reports_exit_codes(void **state)
{
	struct dp_ssh_opts o = opts("known_hosts", DP_SSH_HOSTKEY_STRICT, "id");
	struct dp_ssh_job jobs[3] = {
		{ .host = "127.0.0.1", .command = "echo one; echo two >&2; exit 0" },
		{ .host = "127.0.0.2", .command = "printf 'no newline'; exit 3" },
		{ .host = "127.0.0.3", .command = "kill -TERM $$" },
	};
	struct lines l = { 0 };
	struct dp_err err = { 0 };

	(void)state;
	NEED_SSHD();
	assert_int_equal(dp_ssh_run(&o, jobs, 3, collect, &l, 20000, &err), 0);
	for (int i = 0; i < 3; i++)
		if (jobs[i].state != DP_SSH_DONE)
			fail_msg("job %d: %s", i, jobs[i].error);
	assert_int_equal(jobs[0].exit_status, 0);
	assert_int_equal(jobs[1].exit_status, 3);
	assert_int_equal(jobs[2].exit_status, 128 + SIGTERM);
	for (int i = 0; i < l.n; i++) {
		if (l.job[i] == 0 && !l.is_err[i])
			assert_string_equal(l.text[i], "one");
		if (l.job[i] == 0 && l.is_err[i])
			assert_string_equal(l.text[i], "two");
		if (l.job[i] == 1)
			assert_string_equal(l.text[i], "no newline"); /* flushed at exit */
	}
	assert_int_equal(l.n, 3);
}

static void secret_goes_through_stdin(void **state)
{
	struct dp_ssh_opts o = opts("known_hosts", DP_SSH_HOSTKEY_STRICT, "id");
	struct dp_ssh_job job = { .host = "127.0.0.1",
				  .command = "read -r t; echo \"got:$t\"; ps -o args= -p $$",
				  .stdin_data = "s3cret-token\n",
				  .stdin_len = 13 };
	struct lines l = { 0 };
	struct dp_err err = { 0 };

	(void)state;
	NEED_SSHD();
	assert_int_equal(dp_ssh_run(&o, &job, 1, collect, &l, 20000, &err), 0);
	assert_int_equal(job.state, DP_SSH_DONE);
	assert_int_equal(job.exit_status, 0);
	assert_true(l.n >= 1);
	assert_string_equal(l.text[0], "got:s3cret-token");
	for (int i = 1; i < l.n; i++)
		assert_null(strstr(l.text[i], "s3cret")); /* never in argv */
}

static void strict_refuses_unknown_and_changed_keys(void **state)
{
	const char *h1[] = { "127.0.0.1" };
	struct dp_ssh_opts o;
	struct dp_ssh_job jobs[2] = {
		{ .host = "127.0.0.1", .command = "true" }, /* key changed */
		{ .host = "127.0.0.2", .command = "true" }, /* key unknown */
	};
	struct dp_err err = { 0 };
	char other[1024];
	FILE *f;
	char path[128];

	(void)state;
	NEED_SSHD();
	(void)snprintf(path, sizeof(path), "%s/other_key.pub", dir);
	f = fopen(path, "r");
	assert_non_null(f);
	{
		char type[64], b64[900];

		assert_int_equal(fscanf(f, "%63s %899s", type, b64), 2);
		(void)snprintf(other, sizeof(other), "%s %s", type, b64);
	}
	(void)fclose(f);
	write_known_hosts("kh_changed", h1, 1, other);
	o = opts("kh_changed", DP_SSH_HOSTKEY_STRICT, "id");
	assert_int_equal(dp_ssh_run(&o, jobs, 2, NULL, NULL, 20000, &err), 0);
	assert_int_equal(jobs[0].state, DP_SSH_FAILED);
	assert_non_null(strstr(jobs[0].error, "127.0.0.1: host key of '127.0.0.1' has CHANGED"));
	assert_int_equal(jobs[1].state, DP_SSH_FAILED);
	assert_non_null(strstr(jobs[1].error, "127.0.0.2: host key of '127.0.0.2' is unknown"));
	assert_non_null(strstr(jobs[1].error, "policy strict"));
	/* accept-new records the unknown key but still refuses the changed one */
	o = opts("kh_changed", DP_SSH_HOSTKEY_ACCEPT_NEW, "id");
	assert_int_equal(dp_ssh_run(&o, jobs, 2, NULL, NULL, 20000, &err), 0);
	assert_int_equal(jobs[0].state, DP_SSH_FAILED);
	assert_int_equal(jobs[1].state, DP_SSH_DONE);
	o = opts("kh_changed", DP_SSH_HOSTKEY_STRICT, "id");
	assert_int_equal(dp_ssh_run(&o, &jobs[1], 1, NULL, NULL, 20000, &err), 0);
	assert_int_equal(jobs[1].state, DP_SSH_DONE); /* now known */
}

static void auth_and_connect_failures_are_per_host(void **state)
{
	struct dp_ssh_opts o = opts("known_hosts", DP_SSH_HOSTKEY_STRICT, "wrong_id");
	struct dp_ssh_job job = { .host = "127.0.0.1", .command = "true" };
	struct dp_err err = { 0 };

	(void)state;
	NEED_SSHD();
	assert_int_equal(dp_ssh_run(&o, &job, 1, NULL, NULL, 20000, &err), 0);
	assert_int_equal(job.state, DP_SSH_FAILED);
	assert_non_null(strstr(job.error, "127.0.0.1: authentication failed for user 'root'"));
	o = opts("known_hosts", DP_SSH_HOSTKEY_STRICT, "id");
	o.port = free_port(); /* nothing listens there */
	assert_int_equal(dp_ssh_run(&o, &job, 1, NULL, NULL, 20000, &err), 0);
	assert_int_equal(job.state, DP_SSH_FAILED);
	assert_non_null(strstr(job.error, "Connection refused"));
	job.host = "no-such-host.invalid";
	assert_int_equal(dp_ssh_run(&o, &job, 1, NULL, NULL, 20000, &err), 0);
	assert_int_equal(job.state, DP_SSH_FAILED);
	assert_non_null(strstr(job.error, "no-such-host.invalid: cannot resolve"));
}

static void many_hosts_through_a_small_window(void **state)
{
	struct dp_ssh_opts o = opts("known_hosts", DP_SSH_HOSTKEY_STRICT, "id");
	struct dp_ssh_job jobs[24];
	char cmds[24][32];
	struct lines l = { 0 };
	struct dp_err err = { 0 };
	int seen[24] = { 0 };

	(void)state;
	NEED_SSHD();
	o.window = 4;
	for (int i = 0; i < 24; i++) {
		(void)snprintf(cmds[i], sizeof(cmds[i]), "echo %d", i);
		jobs[i] = (struct dp_ssh_job){ .host = i % 2 ? "127.0.0.2" : "127.0.0.3",
					       .command = cmds[i] };
	}
	assert_int_equal(dp_ssh_run(&o, jobs, 24, collect, &l, 60000, &err), 0);
	for (int i = 0; i < 24; i++) {
		if (jobs[i].state != DP_SSH_DONE)
			fail_msg("job %d: %s", i, jobs[i].error);
		assert_int_equal(jobs[i].exit_status, 0);
	}
	assert_int_equal(l.n, 24);
	for (int i = 0; i < l.n; i++) {
		char want[8];

		(void)snprintf(want, sizeof(want), "%d", l.job[i]);
		assert_string_equal(l.text[i], want); /* each line comes from its own job */
		seen[l.job[i]]++;
	}
	for (int i = 0; i < 24; i++)
		assert_int_equal(seen[i], 1);
}

static void shell_quote_resists_injection(void **state)
{
	char buf[128] = "dpworker --name ";

	(void)state;
	assert_int_equal(dp_shell_quote(buf, sizeof(buf), "a'; rm -rf / #"), 0);
	assert_string_equal(buf, "dpworker --name 'a'\\''; rm -rf / #'");
	buf[0] = '\0';
	assert_int_equal(dp_shell_quote(buf, sizeof(buf), ""), 0);
	assert_string_equal(buf, "''");
	{
		char small[8] = "";

		assert_int_equal(dp_shell_quote(small, sizeof(small), "abcdefgh"), -E2BIG);
	}
	/* the quoted word comes back unchanged through a real shell */
	{
		char cmd[256] = "printf %s ";
		char out[64] = "";
		FILE *p;

		assert_int_equal(dp_shell_quote(cmd, sizeof(cmd), "x'$(echo pwned)`id`\"y"), 0);
		p = popen(cmd, "r");
		assert_non_null(p);
		assert_non_null(fgets(out, sizeof(out), p));
		(void)pclose(p);
		assert_string_equal(out, "x'$(echo pwned)`id`\"y");
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(shell_quote_resists_injection),
		cmocka_unit_test(runs_commands_and_reports_exit_codes),
		cmocka_unit_test(secret_goes_through_stdin),
		cmocka_unit_test(strict_refuses_unknown_and_changed_keys),
		cmocka_unit_test(auth_and_connect_failures_are_per_host),
		cmocka_unit_test(many_hosts_through_a_small_window),
	};

	if (getenv("DP_LOG")) {
		dp_log_set_sink(stderr);
		(void)dp_log_configure(getenv("DP_LOG"), NULL);
	}
	if (getenv("DP_TEST_FILTER"))
		cmocka_set_test_filter(getenv("DP_TEST_FILTER"));
	return cmocka_run_group_tests(tests, setup, teardown);
}
