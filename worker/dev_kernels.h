/* worker/dev_kernels.h - the per-thread bodies of the model's device
 * kernels, written once for both device backends: worker/dev_kernels.cu
 * wraps dp_dev_kernel_run() in a grid-stride __global__ kernel, the "emu"
 * backend (worker/dev_emu.c) calls it in a host loop over the thread index.
 * Compiled as C11 and as CUDA C++ (DP_DEV_FN is __host__ __device__ there).
 *
 * Reductions use one thread per output row (softmax, cross-entropy,
 * routing, attention rows, row sums), each summing in the CPU model's
 * order, so the results do not depend on the launch shape.  Matrix
 * products are not here: they are GEMMs (dp_dev_ops.gemm).  Row-major
 * [rows][cols] arrays, as worker/model_cpu.c.
 */
#ifndef DP_DEV_KERNELS_H
#define DP_DEV_KERNELS_H

#include <math.h>
#include <stdint.h>

#include "worker/dp_dev.h"

#ifdef __CUDACC__
#define DP_DEV_FN __host__ __device__ static inline
#else
#define DP_DEV_FN static inline
#endif

#define DP_DEV_MAX_EXPERTS 256 /* as the model's cfg check */

/* Kernel ids; the comment gives the threads and the kargs fields used. */
enum dp_dev_kernel {
	DP_DEV_K_ZERO,	     /* i < n: y[i] = 0 */
	DP_DEV_K_COPY,	     /* i < n: y[i] = a[i] */
	DP_DEV_K_EMBED,	     /* t < T: y row t = a row ia[t]; n0 H */
	DP_DEV_K_ATTN_FWD,   /* t < T: a q, b k, c v -> y p [T][S], z attn; n0 H, n1 S, f0 scale */
	DP_DEV_K_GATE_ROUTE, /* t < T: y scores -> softmax in place, iy sel, z weight;
			      * n0 E, n1 K, n2 groups, n3 topk_groups */
	DP_DEV_K_SILU,	     /* i < n: y = silu(a) */
	DP_DEV_K_SILU_BACK,  /* i < n: y *= silu'(a) */
	DP_DEV_K_GATHER,     /* r < n: y row r = a row ia[r]; n0 H */
	DP_DEV_K_COMBINE, /* t < T: y out += a h (first) + sum_k b w * c ey[ia tok_row]; n0 H, n1 K
			   */
	DP_DEV_K_XENT,	  /* t < T: y logits -> f0 * (softmax - onehot(ia target)), dy loss; n0 V */
	DP_DEV_K_COMBINE_BWD, /* t < T: a dout, b s, c w, d ey, ia tok_row, ib sel -> y packed dY,
			       * z dl; n0 H, n1 E, n2 K */
	DP_DEV_K_ADD_ROWS,    /* t < T: y dh row t += a rows ia[t*K+k]; n0 H, n1 K */
	DP_DEV_K_ATTN_BWD_Q,  /* t < T: a p, b da, c v, d k -> y dscore [T][S], z dq; n0 H, n1 S, f0
			       */
	DP_DEV_K_ATTN_BWD_KV, /* j < T: a dscore, b q, c p, d da -> y dk, z dv; n0 H, n1 S */
	DP_DEV_K_EMBED_GRAD,  /* v < V: y row v += a rows t with ia[t] == v; n0 H, n1 T */
	DP_DEV_K_ADAM,	      /* i < n: a g, y w, z m, u v; f0 lr, f1 bc1, f2 bc2 */
	DP_DEV_K_COUNT
};

DP_DEV_FN float dp_dev_sigmoid(float u)
{
	return 1.0f / (1.0f + expf(-u));
}

/* Group-limited top-k of one token (dp_model_route_select's contract):
 * groups by their best score (ties: lower group), then the top_k best
 * experts of the kept groups (ties: lower expert). */
DP_DEV_FN void dp_dev_route_select(int E, int G, int topk_groups, int top_k, const float *scores,
				   int32_t *sel)
{
	const int gsz = G > 0 && E >= G ? E / G : 1; /* the cfg check makes it E / G */
	float gscore[DP_DEV_MAX_EXPERTS];
	unsigned char gkeep[DP_DEV_MAX_EXPERTS] = { 0 }, taken[DP_DEV_MAX_EXPERTS] = { 0 };

	for (int g = 0; g < G; g++) {
		gscore[g] = scores[(long)g * gsz];
		for (int e = g * gsz + 1; e < (g + 1) * gsz; e++)
			if (scores[e] > gscore[g])
				gscore[g] = scores[e];
	}
	/* strict '>' while scanning upwards: ties go to the lower index */
	for (int n = 0; n < topk_groups; n++) {
		int best = -1;

		for (int g = 0; g < G; g++)
			if (!gkeep[g] && (best < 0 || gscore[g] > gscore[best]))
				best = g;
		if (best < 0) /* cannot happen: topk_groups <= groups */
			break;
		gkeep[best] = 1;
	}
	for (int n = 0; n < top_k; n++) {
		int best = -1;

		for (int e = 0; e < E; e++)
			if (gkeep[e / gsz] && !taken[e] && (best < 0 || scores[e] > scores[best]))
				best = e;
		if (best < 0) /* cannot happen: the cfg check keeps top_k within the groups */
			best = 0;
		taken[best] = 1;
		sel[n] = best;
	}
}

DP_DEV_FN float dp_dev_dot(const float *a, const float *b, long n)
{
	float s = 0.0f;

	for (long i = 0; i < n; i++)
		s += a[i] * b[i];
	return s;
}

/* Causal single-head attention of token t: scores, softmax, weighted sum. */
DP_DEV_FN void k_attn_fwd(const struct dp_dev_kargs *A, long t)
{
	const long H = A->n0, S = A->n1, i = t % S, t0 = t - i;
	float *p = A->y + t * S, *a = A->z + t * H, mx = -INFINITY, sum = 0.0f;

	for (long j = 0; j <= i; j++) {
		p[j] = A->f0 * dp_dev_dot(A->a + t * H, A->b + (t0 + j) * H, H);
		if (p[j] > mx)
			mx = p[j];
	}
	for (long j = 0; j <= i; j++) {
		p[j] = expf(p[j] - mx);
		sum += p[j];
	}
	for (long o = 0; o < H; o++)
		a[o] = 0.0f;
	for (long j = 0; j <= i; j++) {
		const float *vj = A->c + (t0 + j) * H;

		p[j] /= sum;
		for (long o = 0; o < H; o++)
			a[o] += p[j] * vj[o];
	}
}

DP_DEV_FN void k_gate_route(const struct dp_dev_kargs *A, long t)
{
	const long E = A->n0, K = A->n1;
	float *s = A->y + t * E, mx = s[0], sum = 0.0f;

	for (long e = 1; e < E; e++)
		if (s[e] > mx)
			mx = s[e];
	for (long e = 0; e < E; e++) {
		s[e] = expf(s[e] - mx);
		sum += s[e];
	}
	for (long e = 0; e < E; e++)
		s[e] /= sum;
	dp_dev_route_select((int)E, (int)A->n2, (int)A->n3, (int)K, s, A->iy + t * K);
	for (long k = 0; k < K; k++)
		A->z[t * K + k] = s[A->iy[t * K + k]];
}

DP_DEV_FN void k_combine(const struct dp_dev_kargs *A, long t)
{
	const long H = A->n0, K = A->n1;
	float *o = A->y + t * H;
	const float *h = A->a + t * H;

	for (long i = 0; i < H; i++)
		o[i] = h[i] + o[i];
	for (long k = 0; k < K; k++) {
		const float wk = A->b[t * K + k];
		const float *y = A->c + (long)A->ia[t * K + k] * H;

		for (long i = 0; i < H; i++)
			o[i] += wk * y[i];
	}
}

/* Loss of token t in double, as the CPU model, and the gradient of the loss
 * share wrt the logits in place. */
DP_DEV_FN void k_xent(const struct dp_dev_kargs *A, long t)
{
	const long V = A->n0, tgt = A->ia[t];
	float *z = A->y + t * V, mx = z[0];
	double sum;

	for (long j = 1; j < V; j++)
		if (z[j] > mx)
			mx = z[j];
	sum = exp((double)(z[0] - mx));
	for (long j = 1; j < V; j++)
		sum += exp((double)(z[j] - mx));
	A->dy[t] = (double)mx + log(sum) - (double)z[tgt];
	for (long j = 0; j < V; j++)
		z[j] = (float)(exp((double)(z[j] - mx)) / sum) * A->f0;
	z[tgt] -= A->f0;
}

DP_DEV_FN void k_combine_bwd(const struct dp_dev_kargs *A, long t)
{
	const long H = A->n0, E = A->n1, K = A->n2;
	const float *d = A->a + t * H, *s = A->b + t * E;
	float *dl = A->z + t * E, sds = 0.0f;

	for (long e = 0; e < E; e++)
		dl[e] = 0.0f;
	for (long k = 0; k < K; k++) {
		const long row = A->ia[t * K + k];
		const float wk = A->c[t * K + k];
		float *py = A->y + row * H;

		dl[A->ib[t * K + k]] = dp_dev_dot(d, A->d + row * H, H);
		for (long i = 0; i < H; i++)
			py[i] = wk * d[i];
	}
	for (long e = 0; e < E; e++)
		sds += s[e] * dl[e];
	for (long e = 0; e < E; e++)
		dl[e] = s[e] * (dl[e] - sds);
}

DP_DEV_FN void k_add_rows(const struct dp_dev_kargs *A, long t)
{
	const long H = A->n0, K = A->n1;
	float *dh = A->y + t * H;

	for (long k = 0; k < K; k++) {
		const float *g = A->a + (long)A->ia[t * K + k] * H;

		for (long i = 0; i < H; i++)
			dh[i] += g[i];
	}
}

/* Token t: dscore[t][j] = scale * p (dp - sum p dp), dq[t] = sum_j dscore k_j. */
DP_DEV_FN void k_attn_bwd_q(const struct dp_dev_kargs *A, long t)
{
	const long H = A->n0, S = A->n1, i = t % S, t0 = t - i;
	const float *p = A->a + t * S, *da = A->b + t * H;
	float *g = A->y + t * S, *dq = A->z + t * H, sum = 0.0f;

	for (long j = 0; j <= i; j++) {
		g[j] = dp_dev_dot(da, A->c + (t0 + j) * H, H);
		sum += p[j] * g[j];
	}
	for (long o = 0; o < H; o++)
		dq[o] = 0.0f;
	for (long j = 0; j <= i; j++) {
		const float *kj = A->d + (t0 + j) * H;

		g[j] = A->f0 * (p[j] * (g[j] - sum));
		for (long o = 0; o < H; o++)
			dq[o] += g[j] * kj[o];
	}
}

/* Key/value token j: sums over the later queries t of its sequence. */
DP_DEV_FN void k_attn_bwd_kv(const struct dp_dev_kargs *A, long j)
{
	const long H = A->n0, S = A->n1, jj = j % S, t0 = j - jj;
	float *dk = A->y + j * H, *dv = A->z + j * H;

	for (long o = 0; o < H; o++)
		dk[o] = dv[o] = 0.0f;
	for (long t = j; t < t0 + S; t++) {
		const float g = A->a[t * S + jj], p = A->c[t * S + jj];
		const float *q = A->b + t * H, *da = A->d + t * H;

		for (long o = 0; o < H; o++) {
			dk[o] += g * q[o];
			dv[o] += p * da[o];
		}
	}
}

DP_DEV_FN void k_embed_grad(const struct dp_dev_kargs *A, long v)
{
	const long H = A->n0, T = A->n1;
	float *gr = A->y + v * H;

	for (long t = 0; t < T; t++)
		if (A->ia[t] == v)
			for (long i = 0; i < H; i++)
				gr[i] += A->a[t * H + i];
}

/* Adam as dp_model_stage_step (beta1 0.9, beta2 0.99, eps 1e-8). */
DP_DEV_FN void k_adam(const struct dp_dev_kargs *A, long i)
{
	const float g = A->a[i];

	A->z[i] = (float)0.9 * A->z[i] + (float)(1.0 - 0.9) * g;
	A->u[i] = (float)0.99 * A->u[i] + (float)(1.0 - 0.99) * g * g;
	A->y[i] -= A->f0 * (A->z[i] / A->f1) / (sqrtf(A->u[i] / A->f2) + 1e-8f);
}

/* Thread @i of kernel @id. */
DP_DEV_FN void dp_dev_kernel_run(int id, const struct dp_dev_kargs *A, long i)
{
	switch (id) {
	case DP_DEV_K_ZERO:
		A->y[i] = 0.0f;
		break;
	case DP_DEV_K_COPY:
		A->y[i] = A->a[i];
		break;
	case DP_DEV_K_EMBED:
	case DP_DEV_K_GATHER:
		for (long o = 0; o < A->n0; o++)
			A->y[i * A->n0 + o] = A->a[(long)A->ia[i] * A->n0 + o];
		break;
	case DP_DEV_K_ATTN_FWD:
		k_attn_fwd(A, i);
		break;
	case DP_DEV_K_GATE_ROUTE:
		k_gate_route(A, i);
		break;
	case DP_DEV_K_SILU:
		A->y[i] = A->a[i] * dp_dev_sigmoid(A->a[i]);
		break;
	case DP_DEV_K_SILU_BACK: {
		const float sg = dp_dev_sigmoid(A->a[i]);

		A->y[i] *= sg * (1.0f + A->a[i] * (1.0f - sg));
		break;
	}
	case DP_DEV_K_COMBINE:
		k_combine(A, i);
		break;
	case DP_DEV_K_XENT:
		k_xent(A, i);
		break;
	case DP_DEV_K_COMBINE_BWD:
		k_combine_bwd(A, i);
		break;
	case DP_DEV_K_ADD_ROWS:
		k_add_rows(A, i);
		break;
	case DP_DEV_K_ATTN_BWD_Q:
		k_attn_bwd_q(A, i);
		break;
	case DP_DEV_K_ATTN_BWD_KV:
		k_attn_bwd_kv(A, i);
		break;
	case DP_DEV_K_EMBED_GRAD:
		k_embed_grad(A, i);
		break;
	case DP_DEV_K_ADAM:
		k_adam(A, i);
		break;
	default:
		break;
	}
}

#endif
