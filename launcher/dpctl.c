/* launcher/dpctl.c - main() of dpctl: process setup around dp_cli_main(). */
#include <signal.h>
#include <stdio.h>

#include "launcher/dp_launcher.h"

int main(int argc, char **argv)
{
	int rc;

	/* a closed pipe (dpctl ... | head) must give EPIPE, not kill us mid-write */
	(void)signal(SIGPIPE, SIG_IGN);
	rc = dp_cli_main(argc, argv, stdout, stderr);
	if (fflush(stdout) != 0 && rc == 0)
		rc = 74; /* EX_IOERR: output could not be written */
	return rc;
}
