/* tests/unit/test_ctl.c - control-plane protocol: round trips of every
 * message type, every kind of malformed frame, stream reassembly, tokens. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "launcher/ctl_proto.h"
#include "tests/unit/dp_test.h"

static struct dp_ctl_msg sample(enum dp_ctl_type t)
{
	struct dp_ctl_msg m;

	memset(&m, 0, sizeof(m));
	m.type = t;
	switch (t) {
	case DP_CTL_HELLO:
		m.u.hello.rank = 4000000000u;
		m.u.hello.pid = 4242;
		for (int i = 0; i < DP_CTL_TOKEN_LEN; i++)
			m.u.hello.token[i] = (uint8_t)(i * 37 + 1);
		(void)snprintf(m.u.hello.host, sizeof(m.u.hello.host), "node-07.example");
		(void)snprintf(m.u.hello.topo, sizeof(m.u.hello.topo), "gpus=8 nics=8 numa=2");
		break;
	case DP_CTL_HEARTBEAT:
		m.u.hb.step = 0x123456789abULL;
		m.u.hb.loss = 2.375;
		m.u.hb.tokens_per_s = 123456.5;
		m.u.hb.mem_bytes = 80ULL << 30;
		break;
	case DP_CTL_LOG:
		m.u.log.stream = 2;
		(void)snprintf(m.u.log.line, sizeof(m.u.log.line), "it's \"quoted\" $(x); ok");
		break;
	case DP_CTL_DONE:
		m.u.done_status = 137;
		break;
	case DP_CTL_START:
		m.u.world_size = 1024;
		break;
	case DP_CTL_STOP:
		(void)snprintf(m.u.reason, sizeof(m.u.reason), "rank 3 failed");
		break;
	case DP_CTL_ENDPOINT:
		(void)snprintf(m.u.ep.addr, sizeof(m.u.ep.addr), "10.254.7.2");
		m.u.ep.port = 65535;
		m.u.ep.nwant = 3;
		m.u.ep.want[0] = 0;
		m.u.ep.want[1] = 7;
		m.u.ep.want[2] = 4000000000u;
		break;
	case DP_CTL_PEERS:
		m.u.peers.n = 2;
		m.u.peers.v[0] = (struct dp_ctl_peer){ .rank = 1, .port = 4242 };
		(void)snprintf(m.u.peers.v[0].addr, sizeof(m.u.peers.v[0].addr), "127.0.0.1");
		m.u.peers.v[1] = (struct dp_ctl_peer){ .rank = 9, .port = 1 };
		(void)snprintf(m.u.peers.v[1].addr, sizeof(m.u.peers.v[1].addr), "fe80::1");
		break;
	case DP_CTL_STEP:
		m.u.step.step = 299;
		m.u.step.loss_share = 1.25;
		m.u.step.tokens = 1024;
		m.u.step.seconds = 0.0625;
		m.u.step.peak_live = 5;
		m.u.step.mem_bytes = 12345678;
		break;
	case DP_CTL_TIMELINE:
		m.u.tl.step = 9;
		m.u.tl.t0_ns = 1000;
		m.u.tl.t1_ns = 9000;
		m.u.tl.n = 2;
		m.u.tl.op[0] = (struct dp_ctl_tl_op){ .kind = 0,
						      .leg = 1,
						      .micro = 3,
						      .micro2 = -1,
						      .start_ns = 1000,
						      .end_ns = 2000 };
		m.u.tl.op[1] = (struct dp_ctl_tl_op){ .kind = 4,
						      .leg = 0,
						      .leg2 = 1,
						      .micro = 2,
						      .micro2 = 0,
						      .start_ns = 2000,
						      .end_ns = 2000 };
		break;
	/* pre-flight */
	case DP_CTL_PREFLIGHT:
		m.u.pf.checks = 0x3f;
		m.u.pf.gpus = 8;
		m.u.pf.nics = -1;
		m.u.pf.disk_free = 0xfedcba9876ULL;
		m.u.pf.clock = 1790000000.125;
		(void)snprintf(m.u.pf.version, sizeof(m.u.pf.version), "0.1.0-rc1");
		(void)snprintf(m.u.pf.disk_path, sizeof(m.u.pf.disk_path), "/ckpt/run 1");
		(void)snprintf(m.u.pf.topo, sizeof(m.u.pf.topo), "rail: GPU3 has no NIC");
		break;
	case DP_CTL_PREFLIGHT_PROBE:
		m.u.probe_clock = 1790000000.5;
		break;
	default:
		break;
	}
	return m;
}

static const enum dp_ctl_type all_types[] = {
	DP_CTL_HELLO,	  DP_CTL_READY,		  DP_CTL_HEARTBEAT, DP_CTL_LOG,
	DP_CTL_DONE,	  DP_CTL_START,		  DP_CTL_STOP,	    DP_CTL_DUMP_STACKS,
	DP_CTL_ENDPOINT,  DP_CTL_PEERS,		  DP_CTL_STEP,	    DP_CTL_TIMELINE,
	DP_CTL_PREFLIGHT, DP_CTL_PREFLIGHT_PROBE,
};

static void every_type_round_trips(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(all_types) / sizeof(all_types[0]); i++) {
		struct dp_ctl_msg in = sample(all_types[i]), out;
		struct dp_err err = { 0 };
		struct dp_buf b;
		long n;

		dp_buf_init(&b, 1 << 16);
		assert_int_equal(dp_ctl_encode(&in, &b, &err), 0);
		/* every proper prefix is "need more", never an error */
		for (size_t k = 0; k < b.len; k++)
			assert_int_equal(dp_ctl_decode(b.data, k, &out, &err), 0);
		n = dp_ctl_decode(b.data, b.len, &out, &err);
		assert_int_equal(n, (long)b.len);
		assert_int_equal(out.type, in.type);
		assert_memory_equal(&out.u, &in.u, sizeof(in.u));
		assert_string_not_equal(dp_ctl_type_name((int)in.type), "unknown");
		dp_buf_release(&b);
	}
}

static void heartbeat_nan_loss_is_allowed(void **state)
{
	struct dp_ctl_msg in = sample(DP_CTL_HEARTBEAT), out;
	struct dp_buf b;

	(void)state;
	in.u.hb.loss = NAN;
	dp_buf_init(&b, 1 << 16);
	assert_int_equal(dp_ctl_encode(&in, &b, NULL), 0);
	assert_true(dp_ctl_decode(b.data, b.len, &out, NULL) > 0);
	assert_true(isnan(out.u.hb.loss));
	dp_buf_release(&b);
}

/* Encode @m and return the frame in @b (initialised here). */
static void encode(const struct dp_ctl_msg *m, struct dp_buf *b)
{
	dp_buf_init(b, 1 << 16);
	assert_int_equal(dp_ctl_encode(m, b, NULL), 0);
}

static void set_plen(struct dp_buf *b, uint32_t plen)
{
	unsigned char *p = (unsigned char *)b->data;

	p[4] = (unsigned char)(plen >> 24);
	p[5] = (unsigned char)(plen >> 16);
	p[6] = (unsigned char)(plen >> 8);
	p[7] = (unsigned char)plen;
}

static void expect_error(const struct dp_buf *b, size_t len, long code, const char *needle)
{
	struct dp_ctl_msg out;
	struct dp_err err = { 0 };

	out.type = (enum dp_ctl_type)0x7f;
	assert_int_equal(dp_ctl_decode(b->data, len, &out, &err), code);
	assert_int_equal(out.type, 0x7f); /* untouched on error */
	if (!strstr(err.msg, needle))
		fail_msg("error '%s' does not mention '%s'", err.msg, needle);
}

static void bad_magic_and_version_are_refused(void **state)
{
	struct dp_ctl_msg m = sample(DP_CTL_READY);
	struct dp_buf b;

	(void)state;
	encode(&m, &b);
	b.data[0] = 'G'; /* an HTTP client, say */
	b.data[1] = 'E';
	expect_error(&b, 2, -EPROTO, "magic");
	dp_buf_release(&b);
	encode(&m, &b);
	b.data[2] = DP_CTL_VERSION + 1;
	expect_error(&b, 3, -EPROTO, "version");
	dp_buf_release(&b);
}

static void oversized_frame_is_refused_from_header(void **state)
{
	struct dp_ctl_msg m = sample(DP_CTL_LOG);
	struct dp_buf b;

	(void)state;
	encode(&m, &b);
	set_plen(&b, DP_CTL_MAX_PAYLOAD + 1);
	/* refused as soon as the header is in, without waiting for the payload */
	expect_error(&b, DP_CTL_HDR_LEN, -EMSGSIZE, "exceeds");
	set_plen(&b, 0xffffffffu);
	expect_error(&b, DP_CTL_HDR_LEN, -EMSGSIZE, "exceeds");
	dp_buf_release(&b);
}

static void unknown_type_is_refused(void **state)
{
	struct dp_ctl_msg m = sample(DP_CTL_READY);
	struct dp_buf b;

	(void)state;
	encode(&m, &b);
	b.data[3] = 99;
	expect_error(&b, b.len, -ENOMSG, "unknown message type 99");
	dp_buf_release(&b);
}

static void garbled_payloads_are_refused(void **state)
{
	struct dp_ctl_msg m;
	struct dp_buf b;

	(void)state;
	/* short: a heartbeat whose payload ends inside the step field */
	m = sample(DP_CTL_HEARTBEAT);
	encode(&m, &b);
	set_plen(&b, 5);
	expect_error(&b, DP_CTL_HDR_LEN + 5, -EBADMSG, "'step'");
	dp_buf_release(&b);

	/* trailing bytes: a ready frame with a payload */
	m = sample(DP_CTL_READY);
	encode(&m, &b);
	assert_int_equal(dp_buf_add(&b, "xy", 2), 0);
	set_plen(&b, 2);
	expect_error(&b, b.len, -EBADMSG, "2 trailing bytes");
	dp_buf_release(&b);

	/* string length beyond the payload */
	m = sample(DP_CTL_STOP);
	encode(&m, &b);
	b.data[DP_CTL_HDR_LEN] = 0x7f;
	expect_error(&b, b.len, -EBADMSG, "'reason'");
	dp_buf_release(&b);

	/* NUL inside a string */
	m = sample(DP_CTL_HELLO);
	encode(&m, &b);
	b.data[DP_CTL_HDR_LEN + 8 + DP_CTL_TOKEN_LEN + 2 + 3] = '\0';
	expect_error(&b, b.len, -EBADMSG, "'host'");
	dp_buf_release(&b);

	/* bad enum value: log stream 3 */
	m = sample(DP_CTL_LOG);
	encode(&m, &b);
	b.data[DP_CTL_HDR_LEN] = 3;
	expect_error(&b, b.len, -EBADMSG, "'stream'");
	dp_buf_release(&b);

	/* out-of-range exit status */
	m = sample(DP_CTL_DONE);
	encode(&m, &b);
	b.data[DP_CTL_HDR_LEN + 2] = 1; /* 256 + 137 */
	expect_error(&b, b.len, -EBADMSG, "'status'");
	dp_buf_release(&b);

	/* pre-flight: a GPU count below -1 ("unknown") */
	m = sample(DP_CTL_PREFLIGHT);
	encode(&m, &b);
	b.data[DP_CTL_HDR_LEN + 4] = (char)-1; /* gpus = 0xff000008 */
	expect_error(&b, b.len, -EBADMSG, "'gpus'");
	dp_buf_release(&b);

	/* pre-flight: a report cut inside its last string */
	m = sample(DP_CTL_PREFLIGHT);
	encode(&m, &b);
	set_plen(&b, (uint32_t)(b.len - DP_CTL_HDR_LEN - 1));
	expect_error(&b, b.len - 1, -EBADMSG, "'error'");
	dp_buf_release(&b);

	/* pre-flight: a NaN clock (NaN is "unknown" for a loss, not a time) */
	m = sample(DP_CTL_PREFLIGHT_PROBE);
	encode(&m, &b);
	memset(b.data + DP_CTL_HDR_LEN, 0xff, 8);
	expect_error(&b, b.len, -EBADMSG, "'clock'");
	dp_buf_release(&b);

	/* infinite tokens/s */
	m = sample(DP_CTL_HEARTBEAT);
	m.u.hb.tokens_per_s = INFINITY;
	encode(&m, &b);
	expect_error(&b, b.len, -EBADMSG, "'tokens/s'");
	dp_buf_release(&b);
}

/* The v2 frames: every count and range is checked against the payload. */
static void garbled_v2_payloads_are_refused(void **state)
{
	struct dp_ctl_msg m;
	struct dp_buf b;
	size_t addr_end = DP_CTL_HDR_LEN + 2 + strlen("10.254.7.2");

	(void)state;
	/* endpoint: port 0 */
	m = sample(DP_CTL_ENDPOINT);
	encode(&m, &b);
	b.data[addr_end] = 0;
	b.data[addr_end + 1] = 0;
	expect_error(&b, b.len, -EBADMSG, "'port'");
	dp_buf_release(&b);
	/* endpoint: more wanted ranks than the payload holds */
	m = sample(DP_CTL_ENDPOINT);
	encode(&m, &b);
	b.data[addr_end + 3] = 4;
	expect_error(&b, b.len, -EBADMSG, "'peer rank'");
	/* ... and than the limit */
	((unsigned char *)b.data)[addr_end + 2] = 0xff;
	expect_error(&b, b.len, -EBADMSG, "'peer count'");
	dp_buf_release(&b);
	/* endpoint: empty address */
	m = sample(DP_CTL_ENDPOINT);
	encode(&m, &b);
	b.data[DP_CTL_HDR_LEN + 1] = 0;
	expect_error(&b, b.len, -EBADMSG, "'address'");
	dp_buf_release(&b);
	/* peers: none, or more than fit a frame */
	m = sample(DP_CTL_PEERS);
	encode(&m, &b);
	b.data[DP_CTL_HDR_LEN + 1] = 0;
	expect_error(&b, b.len, -EBADMSG, "'peer count'");
	b.data[DP_CTL_HDR_LEN + 1] = DP_CTL_PEERS_MAX + 1;
	expect_error(&b, b.len, -EBADMSG, "'peer count'");
	dp_buf_release(&b);
	/* step: negative duration */
	m = sample(DP_CTL_STEP);
	encode(&m, &b);
	((unsigned char *)b.data)[DP_CTL_HDR_LEN + 24] |= 0x80;
	expect_error(&b, b.len, -EBADMSG, "'seconds'");
	dp_buf_release(&b);
	/* timeline: end before start, bad op kind, op ending before it starts */
	m = sample(DP_CTL_TIMELINE);
	m.u.tl.t1_ns = 999;
	dp_buf_init(&b, 1 << 16);
	assert_int_equal(dp_ctl_encode(&m, &b, NULL), -EINVAL); /* the encoder refuses it too */
	assert_int_equal(b.len, 0);
	dp_buf_release(&b);
	m.u.tl.t1_ns = 9000;
	encode(&m, &b);
	b.data[DP_CTL_HDR_LEN + 26] = 5;
	expect_error(&b, b.len, -EBADMSG, "'op kind'");
	b.data[DP_CTL_HDR_LEN + 26] = 0;
	b.data[DP_CTL_HDR_LEN + 37] = 0x7f; /* op 0 starts long after it ends */
	expect_error(&b, b.len, -EBADMSG, "'op end'");
	dp_buf_release(&b);
}

static void encoder_refuses_bad_messages(void **state)
{
	struct dp_ctl_msg m = sample(DP_CTL_LOG);
	struct dp_err err = { 0 };
	struct dp_buf b;

	(void)state;
	dp_buf_init(&b, 1 << 16);
	memset(m.u.log.line, 'x', sizeof(m.u.log.line)); /* no NUL: too long */
	assert_int_equal(dp_ctl_encode(&m, &b, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "overlong"));
	m = sample(DP_CTL_PREFLIGHT);
	m.u.pf.clock = NAN; /* the sender must stamp a real time */
	assert_int_equal(dp_ctl_encode(&m, &b, &err), -EINVAL);
	m.type = (enum dp_ctl_type)77;
	assert_int_equal(dp_ctl_encode(&m, &b, &err), -EINVAL);
	assert_int_equal(b.len, 0);
	dp_buf_release(&b);
}

/* Frames split at every byte boundary over a socketpair come out whole. */
static void rx_reassembles_split_frames(void **state)
{
	struct dp_ctl_msg a = sample(DP_CTL_HELLO), c = sample(DP_CTL_HEARTBEAT), out;
	struct dp_ctl_rx *rx = malloc(sizeof(*rx));
	struct dp_buf b;
	int sv[2], got = 0;

	(void)state;
	assert_non_null(rx);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	dp_buf_init(&b, 1 << 16);
	assert_int_equal(dp_ctl_encode(&a, &b, NULL), 0);
	assert_int_equal(dp_ctl_encode(&c, &b, NULL), 0);
	dp_ctl_rx_init(rx);
	for (size_t i = 0; i < b.len; i++) {
		int rc;

		assert_int_equal(write(sv[0], b.data + i, 1), 1);
		assert_int_equal(dp_ctl_rx_fill(rx, sv[1]), 1);
		while ((rc = dp_ctl_rx_next(rx, &out, NULL)) == 1) {
			assert_int_equal(out.type, got == 0 ? DP_CTL_HELLO : DP_CTL_HEARTBEAT);
			got++;
		}
		assert_int_equal(rc, 0);
	}
	assert_int_equal(got, 2);
	assert_int_equal(rx->len, 0);
	(void)close(sv[0]);
	assert_int_equal(dp_ctl_rx_fill(rx, sv[1]), 0); /* EOF */
	(void)close(sv[1]);
	dp_buf_release(&b);
	free(rx);
}

static void tokens_are_random_hex_and_compared_whole(void **state)
{
	uint8_t t1[DP_CTL_TOKEN_LEN], t2[DP_CTL_TOKEN_LEN], back[DP_CTL_TOKEN_LEN];
	char hex[2 * DP_CTL_TOKEN_LEN + 1];
	struct dp_err err = { 0 };

	(void)state;
	assert_int_equal(dp_ctl_token_new(t1, NULL), 0);
	assert_int_equal(dp_ctl_token_new(t2, NULL), 0);
	assert_memory_not_equal(t1, t2, DP_CTL_TOKEN_LEN);
	assert_int_equal(dp_ctl_token_to_hex(t1, hex, sizeof(hex)), 0);
	assert_int_equal(strlen(hex), 2 * DP_CTL_TOKEN_LEN);
	assert_int_equal(dp_ctl_token_to_hex(t1, hex, 10), -ENOSPC);
	assert_int_equal(dp_ctl_token_from_hex(hex, back, NULL), 0);
	assert_memory_equal(t1, back, DP_CTL_TOKEN_LEN);
	assert_true(dp_ctl_token_equal(t1, back));
	/* a difference in the last byte only is still a difference */
	back[DP_CTL_TOKEN_LEN - 1] ^= 1;
	assert_false(dp_ctl_token_equal(t1, back));
	back[DP_CTL_TOKEN_LEN - 1] ^= 1;
	back[0] ^= 0x80;
	assert_false(dp_ctl_token_equal(t1, back));
	hex[5] = 'g';
	assert_int_equal(dp_ctl_token_from_hex(hex, back, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "hexadecimal"));
	assert_int_equal(dp_ctl_token_from_hex("abcd", back, &err), -EINVAL);
	assert_int_equal(dp_ctl_token_from_hex(NULL, back, &err), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(every_type_round_trips),
		cmocka_unit_test(heartbeat_nan_loss_is_allowed),
		cmocka_unit_test(bad_magic_and_version_are_refused),
		cmocka_unit_test(garbled_v2_payloads_are_refused),
		cmocka_unit_test(oversized_frame_is_refused_from_header),
		cmocka_unit_test(unknown_type_is_refused),
		cmocka_unit_test(garbled_payloads_are_refused),
		cmocka_unit_test(encoder_refuses_bad_messages),
		cmocka_unit_test(rx_reassembles_split_frames),
		cmocka_unit_test(tokens_are_random_hex_and_compared_whole),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
