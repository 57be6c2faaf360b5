/* tests/unit/test_gpu.c - the GPU entry points answer clearly with and
 * without CUDA; on a machine with a GPU the kernel self-test must pass. */
#include <errno.h>
#include <string.h>

#include "worker/dp_gpu.h"
#include "tests/unit/dp_test.h"

static void without_cuda_says_so(void **state)
{
	struct dp_err err = { 0 };
	int n = -1;

	(void)state;
	if (dp_gpu_built())
		skip();
	assert_int_equal(dp_gpu_count(&n, &err), -ENOSYS);
	assert_string_equal(err.msg,
			    "gpu: dpctl was built without CUDA (rebuild with WITH_CUDA=yes)");
	assert_int_equal(n, -1);
	assert_int_equal(dp_gpu_selftest(0, 16, &err), -ENOSYS);
}

static void with_cuda_counts_or_reports_no_device(void **state)
{
	struct dp_err err = { 0 };
	int n = -1, rc;

	(void)state;
	if (!dp_gpu_built())
		skip();
	rc = dp_gpu_count(&n, &err);
	if (rc == 0) {
		assert_true(n > 0);
		return;
	}
	assert_int_equal(rc, -ENODEV);
	assert_int_equal(n, -1); /* untouched on failure */
	assert_true(strncmp(err.msg, "gpu: ", 5) == 0);
}

static void selftest_runs_kernel_on_a_gpu(void **state)
{
	struct dp_err err = { 0 };
	int n = 0;

	(void)state;
	if (dp_gpu_count(&n, NULL) != 0)
		skip(); /* no device here: the device machine runs this */
	assert_int_equal(dp_gpu_selftest(0, 1 << 20, &err), 0);
	assert_int_equal(dp_gpu_selftest(n, 16, &err), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(without_cuda_says_so),
		cmocka_unit_test(with_cuda_counts_or_reports_no_device),
		cmocka_unit_test(selftest_runs_kernel_on_a_gpu),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
