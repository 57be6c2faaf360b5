/* worker/cmd_reference.c - hidden `dpworker --train-reference`: train the
 * default model with the single-process reference trainer and print the
 * loss of every step.  A smoke test of the model, and what `make demo`'s
 * pipelined run is compared with. */
#include <getopt.h>
#include <sysexits.h>

#include "common/dp_util.h"
#include "worker/dp_model.h"

static const struct option ref_opts[] = {
	{ "train-reference", no_argument, NULL, 'R' },
	{ "steps", required_argument, NULL, 'n' },
	{ "seed", required_argument, NULL, 's' },
	{ "stages", required_argument, NULL, 'p' },
	{ NULL, 0, NULL, 0 },
};

int dp_worker_cmd_reference(int argc, char **argv, FILE *out, FILE *err)
{
	struct dp_model_cfg cfg;
	struct dp_model_ref *ref = NULL;
	struct dp_err e = { 0 };
	long steps = 50, seed = 1, stages = 1;
	int c, rc = EX_OK;

	dp_model_cfg_default(&cfg);
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", ref_opts, NULL)) != -1) {
		switch (c) {
		case 'R':
			break;
		case 'n':
			if (dp_parse_long(optarg, 1, 1000000, &steps, "--steps", &e))
				goto usage;
			break;
		case 's':
			if (dp_parse_long(optarg, 0, 0x7fffffffL, &seed, "--seed", &e))
				goto usage;
			break;
		case 'p':
			if (dp_parse_long(optarg, 1, cfg.layers, &stages, "--stages", &e))
				goto usage;
			break;
		default:
			(void)fprintf(err,
				      "dpworker: error: option '%s' is unknown or needs a value\n",
				      argv[optind - 1]);
			return EX_USAGE;
		}
	}
	if (optind < argc) {
		(void)fprintf(err, "dpworker: error: unexpected argument '%s'\n", argv[optind]);
		return EX_USAGE;
	}
	cfg.seed = (uint64_t)seed;
	if (dp_model_ref_new(&cfg, (int)stages, &ref, &e)) {
		(void)fprintf(err, "dpworker: error: %s\n", e.msg);
		return EX_SOFTWARE;
	}
	for (long k = 0; k < steps; k++) {
		double loss;

		if (dp_model_ref_train_step(ref, k, &loss, &e)) {
			(void)fprintf(err, "dpworker: error: step %ld: %s\n", k, e.msg);
			rc = EX_SOFTWARE;
			break;
		}
		(void)fprintf(out, "step %ld loss %.6f\n", k, loss);
	}
	dp_model_ref_free(ref);
	return rc;
usage:
	(void)fprintf(err, "dpworker: error: %s\n", e.msg);
	return EX_USAGE;
}
