/* launcher/plan.c - rank layout and DualPipe pairing (see dp_plan.h). */
#include <errno.h>
#include <stdlib.h>

#include "launcher/dp_plan.h"

static int check_cfg(const struct dp_plan_cfg *c, struct dp_err *err)
{
	long gpus;

	if (c->nodes < 1 || c->gpus_per_node < 1 || c->pp < 1 || c->ep < 1 || c->dp < 1)
		return dp_err_set(err, EINVAL,
				  "plan: nodes, gpus per node, pp, ep and dp must all be >= 1");
	gpus = (long)c->nodes * c->gpus_per_node;
	if ((long)c->pp * c->ep * c->dp != gpus)
		return dp_err_set(
			err, EINVAL,
			"plan: pp*ep*dp = %d*%d*%d = %ld but the cluster has %ld GPUs (%d nodes x %d)",
			c->pp, c->ep, c->dp, (long)c->pp * c->ep * c->dp, gpus, c->nodes,
			c->gpus_per_node);
	if (c->ep % c->gpus_per_node != 0 && c->gpus_per_node % c->ep != 0)
		return dp_err_set(
			err, EINVAL,
			"plan: ep %d must divide or be a multiple of the %d GPUs per node, so EP groups map onto whole nodes",
			c->ep, c->gpus_per_node);
	if (c->pairing == DP_PLAN_DUALPIPE && c->pp % 2 != 0)
		return dp_err_set(err, EINVAL, "plan: dualpipe needs an even pp, got %d", c->pp);
	return 0;
}

int dp_plan_build(const struct dp_plan_cfg *cfg, struct dp_plan **out, struct dp_err *err)
{
	struct dp_plan *p;
	int rc, g;

	rc = check_cfg(cfg, err);
	if (rc)
		return rc;
	p = calloc(1, sizeof(*p));
	if (!p)
		return dp_err_set(err, ENOMEM, "plan: out of memory");
	p->cfg = *cfg;
	p->nranks = cfg->nodes * cfg->gpus_per_node;
	p->ranks = calloc((size_t)p->nranks, sizeof(*p->ranks));
	p->pp_edge_links = calloc((size_t)(cfg->pp > 1 ? cfg->pp - 1 : 1), sizeof(int));
	if (!p->ranks || !p->pp_edge_links) {
		dp_plan_free(p);
		return dp_err_set(err, ENOMEM, "plan: out of memory");
	}
	g = cfg->gpus_per_node;
	p->nstages = cfg->pairing == DP_PLAN_DUALPIPEV ? 2 * cfg->pp : cfg->pp;
	for (int r = 0; r < p->nranks; r++) {
		struct dp_plan_rank *x = &p->ranks[r];

		x->rank = r;
		x->node = r / g;
		x->local = r % g;
		x->ep = r % cfg->ep;
		x->pp = (r / cfg->ep) % cfg->pp;
		x->dp = r / (cfg->ep * cfg->pp);
		x->stage[0] = x->pp;
		switch (cfg->pairing) {
		case DP_PLAN_DUALPIPE:
			x->nstages = 2;
			x->stage[1] = cfg->pp - 1 - x->pp;
			break;
		case DP_PLAN_DUALPIPEV:
			x->nstages = 2;
			x->stage[1] = 2 * cfg->pp - 1 - x->pp;
			break;
		default:
			x->nstages = 1;
			x->stage[1] = -1;
			break;
		}
	}
	/* a PP edge joins the same (dp, ep) on stages r and r+1 */
	for (int s = 0; s + 1 < cfg->pp; s++)
		for (int d = 0; d < cfg->dp; d++)
			for (int e = 0; e < cfg->ep; e++) {
				int a = dp_plan_rank_of(p, d, s, e),
				    b = dp_plan_rank_of(p, d, s + 1, e);

				if (p->ranks[a].node != p->ranks[b].node)
					p->pp_edge_links[s]++;
			}
	/* an EP group spans ep/g whole nodes (or one); two-hop uses one link per
	 * rail between every ordered pair of its nodes */
	p->ep_group_nodes = cfg->ep >= g ? cfg->ep / g : 1;
	p->ep_group_links =
		p->ep_group_nodes * (p->ep_group_nodes - 1) * (cfg->ep >= g ? g : cfg->ep);
	*out = p;
	return 0;
}

int dp_plan_rank_of(const struct dp_plan *p, int dp, int pp, int ep)
{
	const struct dp_plan_cfg *c = &p->cfg;

	if (dp < 0 || dp >= c->dp || pp < 0 || pp >= c->pp || ep < 0 || ep >= c->ep)
		return -1;
	return (dp * c->pp + pp) * c->ep + ep;
}

void dp_plan_free(struct dp_plan *p)
{
	if (!p)
		return;
	free(p->ranks);
	free(p->pp_edge_links);
	free(p);
}
