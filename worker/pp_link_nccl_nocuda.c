/* worker/pp_link_nccl_nocuda.c - NCCL links for a build without CUDA. */
#include <errno.h>

#include "worker/dp_pp_nccl.h"

int dp_pp_nccl_open(int n, int rank, int device, struct dp_pp_link *const *tcp,
		    struct dp_pp_link **out, struct dp_err *err)
{
	(void)n;
	(void)rank;
	(void)device;
	(void)tcp;
	(void)out;
	return dp_err_set(err, ENOSYS,
			  "exec: nccl links: dpctl was built without CUDA (rebuild with "
			  "WITH_CUDA=yes)");
}
