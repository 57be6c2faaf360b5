/* tests/fuzz/fuzz_topo.h - the body shared by the topology fuzz targets:
 * import @data as @format (NULL: detect), then print and validate what came
 * out so every later stage sees fuzzed models too.  Built by `make fuzz`
 * with clang -fsanitize=fuzzer,address,undefined. */
#ifndef DP_FUZZ_TOPO_H
#define DP_FUZZ_TOPO_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/dp_buf.h"
#include "topo/dp_topo.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static inline int dp_fuzz_topo(const char *format, const uint8_t *data, size_t size)
{
	struct dp_err err = { 0 };
	struct dp_topo *t = NULL;
	struct dp_topo_report r;
	struct dp_buf b;

	if (dp_topo_import_mem("fuzz", format, (const char *)data, size, &t, &err)) {
		/* every failure carries a message */
		if (!err.msg[0])
			__builtin_trap();
		return 0;
	}
	dp_buf_init(&b, 1 << 24);
	(void)dp_topo_format_text(t, &b);
	dp_buf_reset(&b);
	(void)dp_topo_format_json(t, &b);
	dp_buf_release(&b);
	{
		const struct dp_topo *nodes[2] = { t, t };

		if (dp_topo_validate(nodes, 2, &r, NULL) == 0)
			dp_topo_report_release(&r);
	}
	/* merging a node into itself must keep it consistent */
	{
		struct dp_topo *u = NULL;

		if (dp_topo_import_mem("fuzz", format, (const char *)data, size, &u, NULL) == 0) {
			(void)dp_topo_merge(t, u, NULL);
			dp_topo_free(u);
		}
	}
	for (int i = 0; i < dp_topo_gpu_count(t); i++) {
		const struct dp_topo_gpu *g = dp_topo_gpu(t, i);

		if (g->nic >= dp_topo_nic_count(t) || g->nnear > DP_TOPO_MAX_NEAR)
			__builtin_trap();
	}
	dp_topo_free(t);
	return 0;
}

#define DP_FUZZ_TARGET(format)                                                                     \
	int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)                               \
	{                                                                                          \
		return dp_fuzz_topo(format, data, size);                                           \
	}

#endif
