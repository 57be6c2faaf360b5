/* worker/dp_worker_main.c - main() of dpworker. */
#include <signal.h>
#include <stdio.h>

#include "worker/dp_worker.h"

int main(int argc, char **argv)
{
	(void)signal(SIGPIPE, SIG_IGN);
	return dp_worker_main(argc, argv, stdout, stderr);
}
