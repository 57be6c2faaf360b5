/* worker/dp_worker_main.c - main() of dpworker. */
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "launcher/ctl_launch.h"
#include "worker/dp_worker.h"

/* DP_TEST_FAIL_ONLY_ON=ADDR (tests only, docs/executor.md): keep
 * DP_TEST_FAIL_AT_STEP and DP_TEST_CLOCK_SKEW_S only on the node that has
 * the IPv4 address ADDR on one of its interfaces, so a test can make one
 * node of a namespace cluster fail every attempt (or its pre-flight) while
 * a spare that takes its ranks does not. */
static void test_fail_only_on(void)
{
	const char *want = getenv("DP_TEST_FAIL_ONLY_ON");
	struct ifaddrs *ifs = NULL;
	int here = 0;

	if (!want || !*want)
		return;
	if (getifaddrs(&ifs) == 0) {
		for (const struct ifaddrs *i = ifs; i && !here; i = i->ifa_next) {
			char a[INET_ADDRSTRLEN];

			if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET &&
			    inet_ntop(AF_INET,
				      &((const struct sockaddr_in *)(const void *)i->ifa_addr)
					       ->sin_addr,
				      a, sizeof(a)) &&
			    strcmp(a, want) == 0)
				here = 1;
		}
		freeifaddrs(ifs);
	}
	if (!here) {
		(void)unsetenv("DP_TEST_FAIL_AT_STEP");
		(void)unsetenv("DP_TEST_CLOCK_SKEW_S");
	}
}

int main(int argc, char **argv)
{
	(void)signal(SIGPIPE, SIG_IGN);
	test_fail_only_on();
	/* an inner node of the ssh relay tree (launcher/relay.c, docs/launch.md) */
	if (argc == 2 && strcmp(argv[1], "--relay") == 0)
		return dp_launch_relay_main(STDIN_FILENO, stdout, stderr);
	return dp_worker_main(argc, argv, stdout, stderr);
}
