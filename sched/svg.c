#include <errno.h>
#include "sched/sched_int.h"
int sched_fmt_svg(const struct dp_sched *s, const struct dp_sched_sim *sim, int rank, struct dp_buf *out, struct dp_err *err) { (void)s;(void)sim;(void)rank;(void)out; return dp_err_set(err, ENOSYS, "x"); }
int sched_fmt_trace(const struct dp_sched *s, const struct dp_sched_sim *sim, int rank, struct dp_buf *out, struct dp_err *err) { (void)s;(void)sim;(void)rank;(void)out; return dp_err_set(err, ENOSYS, "x"); }
