/* tests/unit/dp_test_cuda.h - prototypes of the in-process CUDA / NCCL
 * fakes: a test linked with -Wl,--wrap=<sym> (tests/unit/test_X.ldflags)
 * defines __wrap_<sym>, and may call __real_<sym> for the real library.
 * Each test defines only the ones it wraps. */
#ifndef DP_TEST_CUDA_H
#define DP_TEST_CUDA_H

#include <cuda_runtime.h>
#include <nccl.h>

#define DP_TEST_WRAP(ret, name, params)                                                            \
	ret __wrap_##name params;                                                                  \
	ret __real_##name params;
DP_TEST_WRAP(cudaError_t, cudaGetDeviceCount, (int *n))
DP_TEST_WRAP(cudaError_t, cudaSetDevice, (int d))
DP_TEST_WRAP(cudaError_t, cudaGetLastError, (void))
DP_TEST_WRAP(const char *, cudaGetErrorString, (cudaError_t e))
DP_TEST_WRAP(cudaError_t, cudaStreamCreateWithFlags, (cudaStream_t * s, unsigned int f))
DP_TEST_WRAP(cudaError_t, cudaStreamDestroy, (cudaStream_t s))
DP_TEST_WRAP(cudaError_t, cudaStreamQuery, (cudaStream_t s))
DP_TEST_WRAP(cudaError_t, cudaStreamSynchronize, (cudaStream_t s))
DP_TEST_WRAP(cudaError_t, cudaMalloc, (void **p, size_t n))
DP_TEST_WRAP(cudaError_t, cudaMallocHost, (void **p, size_t n))
DP_TEST_WRAP(cudaError_t, cudaFree, (void *p))
DP_TEST_WRAP(cudaError_t, cudaFreeHost, (void *p))
DP_TEST_WRAP(cudaError_t, cudaMemcpyAsync,
	     (void *dst, const void *src, size_t n, enum cudaMemcpyKind k, cudaStream_t s))
DP_TEST_WRAP(cudaError_t, cudaIpcGetMemHandle, (cudaIpcMemHandle_t * h, void *p))
DP_TEST_WRAP(cudaError_t, cudaIpcOpenMemHandle, (void **p, cudaIpcMemHandle_t h, unsigned int f))
DP_TEST_WRAP(cudaError_t, cudaIpcCloseMemHandle, (void *p))
DP_TEST_WRAP(ncclResult_t, ncclGetUniqueId, (ncclUniqueId * id))
DP_TEST_WRAP(ncclResult_t, ncclCommInitRank, (ncclComm_t * c, int n, ncclUniqueId id, int rank))
DP_TEST_WRAP(ncclResult_t, ncclCommFinalize, (ncclComm_t c))
DP_TEST_WRAP(ncclResult_t, ncclCommDestroy, (ncclComm_t c))
DP_TEST_WRAP(ncclResult_t, ncclCommAbort, (ncclComm_t c))
DP_TEST_WRAP(ncclResult_t, ncclCommGetAsyncError, (ncclComm_t c, ncclResult_t *r))
DP_TEST_WRAP(const char *, ncclGetErrorString, (ncclResult_t r))
DP_TEST_WRAP(ncclResult_t, ncclGroupStart, (void))
DP_TEST_WRAP(ncclResult_t, ncclGroupEnd, (void))
DP_TEST_WRAP(ncclResult_t, ncclSend,
	     (const void *b, size_t n, ncclDataType_t t, int peer, ncclComm_t c, cudaStream_t s))
DP_TEST_WRAP(ncclResult_t, ncclRecv,
	     (void *b, size_t n, ncclDataType_t t, int peer, ncclComm_t c, cudaStream_t s))
#undef DP_TEST_WRAP

#endif
