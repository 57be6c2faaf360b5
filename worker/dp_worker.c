/* worker/dp_worker_main.c - main() of dpworker. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "launcher/ctl_launch.h"
#include "worker/dp_worker.h"

int main(int argc, char **argv)
{
	(void)signal(SIGPIPE, SIG_IGN);
	/* an inner node of the ssh relay tree (launcher/relay.c, docs/launch.md) */
	if (argc == 2 && strcmp(argv[1], "--relay") == 0)
		return dp_launch_relay_main(STDIN_FILENO, stdout, stderr);
	return dp_worker_main(argc, argv, stdout, stderr);
}
