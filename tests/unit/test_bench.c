/* tests/unit/test_bench.c - `dpctl bench a2a` options for the MPI peer and
 * the multi-node run: --counts (the token counts MPI_Alltoallv moves) and
 * --node/--peers (one node's ranks per process). */
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/unit/dp_test.h"

/* The number after @key (after @obj if not NULL) in @json. */
static unsigned long long json_u64(const char *json, const char *obj, const char *key)
{
	const char *p = obj ? strstr(json, obj) : json;

	assert_non_null(p);
	p = strstr(p, key);
	assert_non_null(p);
	return strtoull(p + strlen(key), NULL, 10);
}

/* The off-node counts times the token size are exactly the naive
 * all-to-all's measured inter-node bytes and the (token, remote rank) pairs. */
static void counts_file_matches_naive_bytes(void **state)
{
	char *path = dp_test_write_tmp(".counts", "");
	struct dp_test_run r;
	unsigned long long off = 0, all = 0, tb, c;
	int world = 0, nodes = 0, rpn = 0;
	char *text, *p;
	(void)state;
	r = dp_test_dpctl("bench", "a2a", "--nodes", "2", "--ranks-per-node", "2", "--tokens", "40",
			  "--hidden", "8", "--experts", "64", "--iters", "1", "--counts", path,
			  "--json");
	assert_int_equal(r.rc, 0);
	text = dp_test_slurp(path);
	assert_true(strncmp(text, "dp-a2a-counts 1\n", 16) == 0);
	world = (int)json_u64(text, NULL, "world ");
	nodes = (int)json_u64(text, NULL, " nodes ");
	rpn = (int)json_u64(text, NULL, "ranks_per_node ");
	tb = json_u64(text, NULL, "token_bytes ");
	assert_int_equal(world, 4);
	assert_int_equal(nodes * rpn, world);
	assert_int_equal(tb, 32);
	p = strchr(strstr(text, "token_bytes "), '\n');
	assert_non_null(p);
	for (int i = 0; i < world; i++)
		for (int j = 0; j < world; j++) {
			char *end = NULL;

			c = strtoull(p, &end, 10);
			assert_true(end > p);
			p = end;
			all += c;
			if (i / rpn != j / rpn)
				off += c;
		}
	assert_string_equal(p, "\n"); /* nothing after the matrix */
	assert_true(all >= off && all <= 4ULL * 40 * 8);
	assert_int_equal(off * tb, json_u64(r.out, "\"naive\":", "\"inter_bytes\":"));
	assert_int_equal(off, json_u64(r.out, NULL, "\"token_remote_rank\":"));
	dp_test_run_free(&r);
	free(text);
	(void)unlink(path);
	free(path);
}

/* @n distinct free loopback ports: all bound at once, then released. */
static void free_ports(int *ports, int n)
{
	int fds[8];

	for (int i = 0; i < n; i++) {
		struct sockaddr_in a = { .sin_family = AF_INET };
		socklen_t al = sizeof(a);

		fds[i] = socket(AF_INET, SOCK_STREAM, 0);
		assert_true(fds[i] >= 0);
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		assert_int_equal(bind(fds[i], (struct sockaddr *)&a, sizeof(a)), 0);
		assert_int_equal(getsockname(fds[i], (struct sockaddr *)&a, &al), 0);
		ports[i] = ntohs(a.sin_port);
	}
	for (int i = 0; i < n; i++)
		(void)close(fds[i]);
}

/* Two processes, one node each, meet over --peers; each checks its own
 * ranks' bytes against the formula (exit 0 only then). */
static void node_mode_runs_one_node_per_process(void **state)
{
	char peers[128];
	int ports[4], st = 0;
	struct dp_test_run r;
	pid_t pid;

	(void)state;
	free_ports(ports, 4);
	(void)snprintf(peers, sizeof(peers), "127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d",
		       ports[0], ports[1], ports[2], ports[3]);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		r = dp_test_dpctl("bench", "a2a", "--ranks-per-node", "2", "--tokens", "24",
				  "--hidden", "8", "--experts", "64", "--iters", "1", "--node", "1",
				  "--peers", peers);
		_exit(r.rc);
	}
	r = dp_test_dpctl("bench", "a2a", "--ranks-per-node", "2", "--tokens", "24", "--hidden",
			  "8", "--experts", "64", "--iters", "1", "--node", "0", "--peers", peers,
			  "--json");
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_int_equal(r.rc, 0);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	assert_non_null(strstr(r.out, "\"node\":0,"));
	assert_true(json_u64(r.out, "\"two_hop\":", "\"inter_bytes\":") > 0);
	dp_test_run_free(&r);
}

static void node_and_peers_are_checked(void **state)
{
	static const char *const bad[][8] = {
		{ "--node", "0" },
		{ "--peers", "a:1,b:2,c:3,d:4,e:5,f:6,g:7,h:8" },
		{ "--node", "2", "--peers", "a:1,b:2,c:3,d:4,e:5,f:6,g:7,h:8" },
		{ "--node", "0", "--peers", "a:1,b:2" },
		{ "--node", "0", "--peers", "a:1,b:2,c:3,d:4,e:5,f:6,g:7,h" },
		{ "--node", "0", "--transport", "shm", "--peers",
		  "a:1,b:2,c:3,d:4,e:5,f:6,g:7,h:8" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *argv[12] = { "bench", "a2a" };
		struct dp_test_run r;
		int n = 2;

		for (int j = 0; j < 8 && bad[i][j]; j++)
			argv[n++] = bad[i][j];
		r = dp_test_dpctl_list(argv);
		assert_int_equal(r.rc, 64);
		dp_test_run_free(&r);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(counts_file_matches_naive_bytes),
		cmocka_unit_test(node_mode_runs_one_node_per_process),
		cmocka_unit_test(node_and_peers_are_checked),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
