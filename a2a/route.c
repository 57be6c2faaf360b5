/* a2a/route.c - DeepSeek-V3 group-limited top-k routing and the byte
 * accounting formula.  Pure functions, no allocation beyond small arrays. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "a2a/dp_a2a.h"
#include "common/dp_banned.h"

/* a is better than b: higher score, or equal score and lower index */
static int better(float sa, int ia, float sb, int ib)
{
	return sa > sb || (sa == sb && ia < ib);
}

/* Indices of the @k best of @n scores (by better()) into @out, best first,
 * skipping !allowed[i].  @taken is n bytes of scratch.  Selection by
 * repeated scan: n is small (experts per group, groups, E). */
static void top_indices(const float *s, int n, int k, const unsigned char *allowed,
			unsigned char *taken, int *out)
{
	memset(taken, 0, (size_t)n);
	for (int j = 0; j < k; j++) {
		int best = -1;

		for (int i = 0; i < n; i++) {
			if (taken[i] || (allowed && !allowed[i]))
				continue;
			if (best < 0 || better(s[i], i, s[best], best))
				best = i;
		}
		out[j] = best;
		if (best >= 0)
			taken[best] = 1;
	}
}

int dp_a2a_route(const struct dp_a2a_route_cfg *cfg, const float *scores, int ntokens, int32_t *idx,
		 float *w, struct dp_err *err)
{
	int E, G, per, M, K, gk;
	float *gscore = NULL;
	unsigned char *allowed = NULL, *taken = NULL;
	int *gsel = NULL, *esel = NULL, *tmp = NULL;
	int rc = 0;

	if (!cfg || cfg->experts <= 0 || cfg->groups <= 0 || cfg->experts % cfg->groups)
		return dp_err_set(err, EINVAL,
				  "a2a: experts must be a positive multiple of groups");
	E = cfg->experts;
	G = cfg->groups;
	per = E / G;
	M = cfg->max_groups < 1 ? 1 : (cfg->max_groups > G ? G : cfg->max_groups);
	K = cfg->topk;
	gk = cfg->group_topk <= 0 ? 2 : cfg->group_topk;
	if (gk > per)
		gk = per;
	if (K < 1 || K > DP_A2A_MAX_TOPK || K > M * per)
		return dp_err_set(
			err, EINVAL,
			"a2a: topk %d must be in 1..%d and at most max_groups * experts per group (%d)",
			K, DP_A2A_MAX_TOPK, M * per);
	if (ntokens < 0 || (ntokens > 0 && (!scores || !idx || !w)))
		return dp_err_set(err, EINVAL, "a2a: bad token arrays");
	gscore = calloc((size_t)G, sizeof(*gscore));
	allowed = calloc((size_t)E, 1);
	gsel = calloc((size_t)G, sizeof(*gsel));
	esel = calloc((size_t)E, sizeof(*esel));
	tmp = calloc((size_t)per, sizeof(*tmp));
	taken = calloc((size_t)E, 1);
	if (!gscore || !allowed || !gsel || !esel || !tmp || !taken) {
		rc = dp_err_set(err, ENOMEM, "a2a: out of memory");
		goto out;
	}
	for (int t = 0; t < ntokens; t++) {
		const float *s = scores + (size_t)t * (size_t)E;
		float sum = 0.0f;

		for (int g = 0; g < G; g++) {
			float acc = 0.0f;

			top_indices(s + (size_t)g * (size_t)per, per, gk, NULL, taken, tmp);
			for (int j = 0; j < gk; j++) /* best first: a fixed order */
				acc += s[(size_t)g * (size_t)per + (size_t)tmp[j]];
			gscore[g] = acc;
		}
		top_indices(gscore, G, M, NULL, taken, gsel);
		memset(allowed, 0, (size_t)E);
		for (int j = 0; j < M; j++)
			memset(allowed + (size_t)gsel[j] * (size_t)per, 1, (size_t)per);
		top_indices(s, E, K, allowed, taken, esel);
		for (int j = 0; j < K; j++)
			sum += s[esel[j]];
		for (int j = 0; j < K; j++) {
			idx[(size_t)t * K + j] = esel[j];
			w[(size_t)t * K + j] =
				cfg->normalize && sum != 0.0f ? s[esel[j]] / sum : s[esel[j]];
		}
	}
out:
	free(taken);
	free(tmp);
	free(esel);
	free(gsel);
	free(allowed);
	free(gscore);
	return rc;
}

void dp_a2a_count_pairs(int rank, int nodes, int ranks_per_node, int experts, int ntokens, int topk,
			const int32_t *idx, uint64_t *token_remote_nodes,
			uint64_t *token_remote_ranks)
{
	int world = nodes * ranks_per_node;
	int epr = experts / world;
	int my_node = rank / ranks_per_node;
	uint64_t nn = 0, nr = 0;
	unsigned char *seen_rank = calloc((size_t)world, 1);
	unsigned char *seen_node = calloc((size_t)nodes, 1);

	if (!seen_rank || !seen_node)
		goto out;
	for (int t = 0; t < ntokens; t++) {
		memset(seen_rank, 0, (size_t)world);
		memset(seen_node, 0, (size_t)nodes);
		for (int j = 0; j < topk; j++) {
			int e = idx[(size_t)t * topk + j];
			int r, n;

			if (e < 0)
				continue;
			r = e / epr;
			n = r / ranks_per_node;
			if (!seen_rank[r] && n != my_node)
				nr++;
			seen_rank[r] = 1;
			if (!seen_node[n] && n != my_node)
				nn++;
			seen_node[n] = 1;
		}
	}
out:
	free(seen_node);
	free(seen_rank);
	*token_remote_nodes = nn;
	*token_remote_ranks = nr;
}
