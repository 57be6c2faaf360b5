/* tests/fuzz/fuzz_ctl_proto.c - libFuzzer target for the control-plane
 * decoder (launcher/ctl_proto.c).
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. -D_GNU_SOURCE \
 *       tests/fuzz/fuzz_ctl_proto.c launcher/ctl_proto.c common/dp_buf.c \
 *       common/dp_err.c -lm -o fuzz_ctl_proto && ./fuzz_ctl_proto -max_total_time=60
 *
 * Each input is fed twice: as one buffer to dp_ctl_decode(), and byte-wise
 * through the dp_ctl_rx reassembly path.  Whatever decodes must re-encode to
 * the same bytes (the format has a single encoding per message).  The seed
 * tests/fuzz/seeds/ctl-v2-frames.bin holds one frame of each protocol v2
 * type (endpoint, peers, start, step, timeline, done).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "launcher/ctl_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_roundtrip(const uint8_t *frame, long n, const struct dp_ctl_msg *m)
{
	struct dp_buf b;

	dp_buf_init(&b, 1 << 16);
	if (dp_ctl_encode(m, &b, NULL) != 0)
		abort(); /* a decoded message must always be encodable */
	if (b.len != (size_t)n || memcmp(b.data, frame, (size_t)n) != 0)
		abort();
	dp_buf_release(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct dp_ctl_rx rx;
	struct dp_ctl_msg m;
	struct dp_err err;
	size_t off = 0;

	/* whole-buffer decode of consecutive frames */
	while (off < size) {
		long n = dp_ctl_decode(data + off, size - off, &m, &err);

		if (n <= 0)
			break;
		if ((size_t)n > size - off)
			abort();
		check_roundtrip(data + off, n, &m);
		off += (size_t)n;
	}
	/* the same bytes in small pieces through the reassembly buffer */
	dp_ctl_rx_init(&rx);
	for (size_t i = 0; i < size;) {
		size_t chunk = (size_t)(data[i] % 7) + 1;
		int rc;

		if (chunk > size - i)
			chunk = size - i;
		if (chunk > sizeof(rx.buf) - rx.len)
			abort(); /* a full buffer must always yield a frame or an error */
		memcpy(rx.buf + rx.len, data + i, chunk);
		rx.len += chunk;
		i += chunk;
		while ((rc = dp_ctl_rx_next(&rx, &m, &err)) == 1)
			;
		if (rc < 0)
			break;
	}
	return 0;
}
