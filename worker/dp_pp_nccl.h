/* worker/dp_pp_nccl.h - PP links over NCCL: struct dp_pp_link byte channels
 * whose bytes move with ncclSend/ncclRecv between the GPUs of the ranks
 * (train.pp_transport nccl; docs/executor.md, "NCCL links").
 *
 * Built from worker/pp_link_nccl_cuda.c when dpctl is built with CUDA, else
 * from worker/pp_link_nccl_nocuda.c, whose open fails with -ENOSYS and
 * "dpctl was built without CUDA".  Callers never #ifdef.
 *
 *   struct dp_pp_link *tcp[n], *nccl[n];     tcp: the authenticated rank mesh
 *   ... build the TCP mesh into tcp ...
 *   dp_pp_nccl_open(n, rank, dev, tcp, nccl, &err);   collective: all n ranks
 *   dp_exec_new(&cfg, nccl, &ex, &err);               the executor sees links
 *   ...
 *   for (j...) dp_pp_link_close(nccl[j]);   the last close ends the NCCL side
 *   for (j...) dp_pp_link_close(tcp[j]);    only then the TCP mesh
 *
 * One ncclComm spans the n ranks.  Rank 0 makes the ncclUniqueId and it
 * travels over the TCP links: every rank reads it from each linked lower
 * rank and hands it to each linked higher one (so every rank > 0 needs a
 * linked lower rank; the pp x ep mesh of train_ctl has one).  Afterwards
 * the TCP links only serve to notice a dead peer (its socket closes while
 * it still owes us a round): the NCCL side is then aborted and every call
 * fails with -ECONNRESET instead of hanging in NCCL.
 *
 * Byte stream semantics as the socket links: send moves exactly @len
 * bytes in order, recv reads exactly @len bytes however the sender cut
 * them.  A send returns once its bytes reached the peer's GPU and host
 * buffer (not when the peer read them).  Sends and receives may run on
 * different threads at once (the executor's sender threads); one send at
 * a time per link.  Closing a link tells its peer; a receive from a peer
 * that closed fails with -ECONNRESET once the buffered bytes are read.
 */
#ifndef DP_PP_NCCL_H
#define DP_PP_NCCL_H

#include "common/dp_err.h"
#include "worker/dp_exec.h"

/* Open NCCL links to the peers of this rank (@rank of @n) on CUDA device
 * @device.  @tcp has n entries, tcp[j] the socket link to rank j or NULL
 * (borrowed: they must stay open until every NCCL link is closed, and must
 * not be used meanwhile).  @out (n entries) gets a link for every j with
 * tcp[j] != NULL, NULL elsewhere; close each with dp_pp_link_close().
 * Collective: every rank of the n calls it.  0; -ENOSYS (built without
 * CUDA); -EINVAL (bad arguments, a rank > 0 without a linked lower rank);
 * -ENODEV (no such device); -EPROTO (a bad id message); -EIO (CUDA or
 * NCCL failed: the message says which call and why); a link error. */
int dp_pp_nccl_open(int n, int rank, int device, struct dp_pp_link *const *tcp,
		    struct dp_pp_link **out, struct dp_err *err);

#endif
