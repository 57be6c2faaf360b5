/* tests/unit/dp_test.h - shared helpers for the cmocka unit tests.
 * Include after <setjmp.h>/<cmocka.h> prerequisites (this header does it). */
#ifndef DP_TEST_H
#define DP_TEST_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

/* Output of one in-process dpctl run; release with dp_test_run_free(). */
struct dp_test_run {
	int rc;
	char *out; /* stdout text, never NULL */
	char *err; /* stderr text, never NULL */
};

/* Run `dpctl ARGS...` (without the program name) in-process through
 * dp_cli_main() with memory streams: dp_test_dpctl("hostlist", "expand", "a[1-2]").
 * A trailing NULL is allowed and ignored. */
#define dp_test_dpctl(...) dp_test_dpctl_list((const char *const[]){ __VA_ARGS__, NULL })
/* Same with a NULL-terminated argument list. */
struct dp_test_run dp_test_dpctl_list(const char *const *argv);
/* Same with an argv vector (argc entries, no program name). */
struct dp_test_run dp_test_dpctlv(int argc, const char *const *argv);
void dp_test_run_free(struct dp_test_run *r);

/* Read a whole file into a NUL-terminated string (caller frees); fails the
 * test if it cannot be read. */
char *dp_test_slurp(const char *path);

/* Write @text to a new temporary file; returns its path (caller frees and unlinks). */
char *dp_test_write_tmp(const char *suffix, const char *text);

/* Namespace nodes (tests/netns/netns-cluster.sh, needs root): bring up
 * cluster @id (subnet 10.254.ID.0/24) of @n nodes; 0 with its state
 * directory in @st, or -1 when it cannot be built here (the test skips). */
int dp_test_netns_up(int id, int n, char *st, size_t len);
/* Remove cluster @id (everything netns-cluster.sh made). */
void dp_test_netns_down(int id);
/* dpworker processes (relays included) left in cluster @id's nodes 1..@n. */
int dp_test_netns_dpworkers(int id, int n);

#endif
