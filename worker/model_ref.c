/* worker/model_ref.c - synthetic training data and the single-process,
 * non-pipelined reference trainer the pipelined executor is checked against.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "worker/dp_model.h"

static uint64_t mix64(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ULL;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static uint64_t gcd(uint64_t a, uint64_t b)
{
	while (b) {
		uint64_t t = a % b;

		a = b;
		b = t;
	}
	return a;
}

/* An affine permutation x -> (a x + b) mod V drawn from @s (gcd(a, V) = 1). */
static void draw_perm(uint64_t s, uint64_t V, uint64_t *a, uint64_t *b)
{
	uint64_t m = mix64(s);

	*a = 1 + m % V;
	while (gcd(*a, V) != 1)
		*a = *a % V + 1;
	*b = mix64(m) % V;
}

void dp_model_batch(const struct dp_model_cfg *cfg, long step, int mb, int32_t *tokens,
		    int32_t *targets)
{
	const uint64_t V = (uint64_t)cfg->vocab;
	const int S = cfg->seq_len;
	const uint64_t data_seed = mix64(cfg->seed ^ 0x6461746173656564ULL);
	uint64_t a[2], b[2];

	draw_perm(data_seed ^ 1, V, &a[0], &b[0]);
	draw_perm(data_seed ^ 2, V, &a[1], &b[1]);
	for (int s = 0; s < cfg->seqs; s++) {
		uint64_t h = mix64(data_seed ^ mix64((uint64_t)step ^
						     mix64(((uint64_t)mb << 20) ^ (uint64_t)s)));
		uint64_t prev = 0, cur = h % V;

		for (int i = 0; i < S; i++) {
			const uint64_t next = (a[prev & 1] * cur + b[prev & 1]) % V;

			tokens[s * S + i] = (int32_t)cur;
			targets[s * S + i] = (int32_t)next;
			prev = cur;
			cur = next;
		}
	}
}

struct dp_model_ref {
	struct dp_model_cfg cfg;
	int n;
	/* [n+1]: stage i with its context, the activations entering it and
	 * their gradient (entry n: only the last stage's output and its grad) */
	struct ref_part {
		struct dp_model_stage *st;
		struct dp_model_ctx *ctx;
		float *act, *dact; /* T*H each */
	} * p;
	int32_t *tokens, *targets;
};

void dp_model_ref_free(struct dp_model_ref *ref)
{
	if (!ref)
		return;
	for (int i = 0; ref->p && i <= ref->n; i++) {
		dp_model_ctx_free(ref->p[i].ctx);
		dp_model_stage_free(ref->p[i].st);
		free(ref->p[i].act);
		free(ref->p[i].dact);
	}
	free(ref->p);
	free(ref->tokens);
	free(ref->targets);
	free(ref);
}

int dp_model_ref_new(const struct dp_model_cfg *cfg, int nstages, struct dp_model_ref **out,
		     struct dp_err *err)
{
	struct dp_model_ref *ref;
	size_t T, TH;
	int rc;

	rc = dp_model_cfg_check(cfg, err);
	if (rc)
		return rc;
	if (nstages < 1 || nstages > 4096)
		return dp_err_set(err, EINVAL, "model: %d stages is out of range 1..4096", nstages);
	T = (size_t)dp_model_cfg_tokens(cfg);
	TH = T * (size_t)cfg->hidden;
	ref = calloc(1, sizeof(*ref));
	if (!ref)
		return dp_err_set(err, ENOMEM, "model: out of memory");
	ref->cfg = *cfg;
	ref->n = nstages;
	ref->p = calloc((size_t)nstages + 1, sizeof(*ref->p));
	ref->tokens = calloc(T, sizeof(int32_t));
	ref->targets = calloc(T, sizeof(int32_t));
	if (!ref->p || !ref->tokens || !ref->targets)
		goto err_nomem;
	for (int i = 0; i <= nstages; i++) {
		ref->p[i].act = calloc(TH, sizeof(float));
		ref->p[i].dact = calloc(TH, sizeof(float));
		if (!ref->p[i].act || !ref->p[i].dact)
			goto err_nomem;
	}
	for (int i = 0; i < nstages; i++) {
		rc = dp_model_stage_new_split(cfg, nstages, i, &ref->p[i].st, err);
		if (!rc)
			rc = dp_model_ctx_new(ref->p[i].st, &ref->p[i].ctx, err);
		if (rc)
			goto err_free;
	}
	*out = ref;
	return 0;
err_nomem:
	rc = dp_err_set(err, ENOMEM, "model: out of memory");
err_free:
	dp_model_ref_free(ref);
	return rc;
}

struct dp_model_stage *dp_model_ref_stage(struct dp_model_ref *ref, int i)
{
	return i >= 0 && i < ref->n ? ref->p[i].st : NULL;
}

struct dp_model_ctx *dp_model_ref_ctx(struct dp_model_ref *ref, int i)
{
	return i >= 0 && i < ref->n ? ref->p[i].ctx : NULL;
}

int dp_model_ref_nstages(const struct dp_model_ref *ref)
{
	return ref->n;
}

int dp_model_ref_grads(struct dp_model_ref *ref, long step, int split_iw, double *loss,
		       struct dp_err *err)
{
	double total = 0.0;
	int rc = 0;

	for (int i = 0; i < ref->n; i++)
		dp_model_stage_zero_grad(ref->p[i].st);
	for (int m = 0; m < ref->cfg.micro_batches && !rc; m++) {
		const struct dp_model_io io0 = { .tokens = ref->tokens, .targets = ref->targets };
		double l = 0.0;

		dp_model_batch(&ref->cfg, step, m, ref->tokens, ref->targets);
		for (int i = 0; i < ref->n && !rc; i++) {
			struct dp_model_io io = io0;

			io.x = ref->p[i].act;
			rc = dp_model_forward(ref->p[i].st, ref->p[i].ctx, &io, ref->p[i + 1].act,
					      i == ref->n - 1 ? &l : NULL, err);
		}
		total += l;
		for (int i = ref->n - 1; i >= 0 && !rc; i--) {
			if (split_iw) {
				rc = dp_model_backward_input(ref->p[i].st, ref->p[i].ctx,
							     ref->p[i + 1].dact, ref->p[i].dact,
							     err);
				if (!rc)
					rc = dp_model_backward_weight(ref->p[i].st, ref->p[i].ctx,
								      err);
			} else {
				rc = dp_model_backward(ref->p[i].st, ref->p[i].ctx,
						       ref->p[i + 1].dact, ref->p[i].dact, err);
			}
		}
	}
	if (!rc && loss)
		*loss = total;
	return rc;
}

int dp_model_ref_train_step(struct dp_model_ref *ref, long step, double *loss, struct dp_err *err)
{
	int rc = dp_model_ref_grads(ref, step, 0, loss, err);

	for (int i = 0; i < ref->n && !rc; i++)
		dp_model_stage_step(ref->p[i].st);
	return rc;
}
