/* common/dp_log.h - levelled, per-module logging to a sink chosen by main().
 *
 * Library code logs with dp_log(DP_LOG_WARN, "topo", "..."); nothing is
 * printed until main() installs a sink with dp_log_set_sink().  Levels are
 * filtered per module by a spec string, e.g. "info" or "warn,topo:debug"
 * (from --log or $DP_LOG).  Not thread-safe to reconfigure while logging;
 * logging itself may be called from any thread (one fprintf per line).
 */
#ifndef DP_LOG_H
#define DP_LOG_H

#include <stdio.h>

#include "common/dp_err.h"

enum dp_log_level {
	DP_LOG_ERROR = 0,
	DP_LOG_WARN = 1,
	DP_LOG_INFO = 2,
	DP_LOG_DEBUG = 3,
};

/* Send log lines to @sink (borrowed; NULL disables logging). */
void dp_log_set_sink(FILE *sink);

/* Parse and apply a level spec ("warn", "info,topo:debug").  0, or -EINVAL
 * with @err naming the bad element; on error the previous spec stays. */
int dp_log_configure(const char *spec, struct dp_err *err);

/* Non-zero if a line of @lvl for @mod would be printed. */
int dp_log_enabled(enum dp_log_level lvl, const char *mod);

void dp_log(enum dp_log_level lvl, const char *mod, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
