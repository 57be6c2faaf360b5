/* common/dp_log.c - per-module log filtering. */
#include <errno.h>
#include <stdarg.h>
#include <string.h>

#include "common/dp_log.h"
#include "common/dp_util.h"

#define MAX_MODS 16

struct mod_level {
	char name[16];
	enum dp_log_level lvl;
};

static FILE *log_sink;
static enum dp_log_level default_level = DP_LOG_WARN;
static struct mod_level mod_levels[MAX_MODS];
static int n_mod_levels;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

void dp_log_set_sink(FILE *sink)
{
	log_sink = sink;
}

static int parse_level(const char *s, size_t len, enum dp_log_level *out)
{
	for (size_t i = 0; i < DP_ARRAY_SIZE(level_names); i++) {
		if (strlen(level_names[i]) == len && strncmp(s, level_names[i], len) == 0) {
			*out = (enum dp_log_level)i;
			return 0;
		}
	}
	return -EINVAL;
}

int dp_log_configure(const char *spec, struct dp_err *err)
{
	struct mod_level mods[MAX_MODS];
	enum dp_log_level def = DP_LOG_WARN;
	int nmods = 0;
	const char *p = spec ? spec : "";

	memset(mods, 0, sizeof(mods));
	while (*p) {
		size_t len = strcspn(p, ",");
		const char *colon = memchr(p, ':', len);
		enum dp_log_level lvl;

		if (len == 0) {
			p++;
			continue;
		}
		if (!colon) {
			if (parse_level(p, len, &def))
				return dp_err_set(
					err, EINVAL,
					"log: unknown level '%.*s' (error, warn, info, debug)",
					(int)len, p);
		} else {
			size_t nlen = (size_t)(colon - p);

			if (nlen == 0 || nlen >= sizeof(mods[0].name) || nmods == MAX_MODS)
				return dp_err_set(err, EINVAL, "log: bad module in '%.*s'",
						  (int)len, p);
			if (parse_level(colon + 1, len - nlen - 1, &lvl))
				return dp_err_set(
					err, EINVAL,
					"log: unknown level in '%.*s' (error, warn, info, debug)",
					(int)len, p);
			memcpy(mods[nmods].name, p, nlen);
			mods[nmods].name[nlen] = '\0';
			mods[nmods].lvl = lvl;
			nmods++;
		}
		p += len;
		if (*p == ',')
			p++;
	}
	default_level = def;
	memcpy(mod_levels, mods, sizeof(mods[0]) * (size_t)nmods);
	n_mod_levels = nmods;
	return 0;
}

int dp_log_enabled(enum dp_log_level lvl, const char *mod)
{
	if (!log_sink)
		return 0;
	for (int i = 0; i < n_mod_levels; i++)
		if (mod && strcmp(mod_levels[i].name, mod) == 0)
			return lvl <= mod_levels[i].lvl;
	return lvl <= default_level;
}

void dp_log(enum dp_log_level lvl, const char *mod, const char *fmt, ...)
{
	char line[2048];
	va_list ap;
	int n;

	if (!dp_log_enabled(lvl, mod))
		return;
	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	(void)fprintf(log_sink, "dpctl: %s: %s: %s\n", level_names[lvl], mod ? mod : "-", line);
}
