/* a2a/eplb_loads.c - read an EPLB load matrix from JSON (jansson).
 *
 * Numbers are converted to float32 the way a Python harness feeding
 * upstream would: a JSON integer becomes an int64 and then a float (one
 * rounding), a JSON real becomes a double (strtod) and then a float.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "a2a/dp_eplb.h"

static int load_value(const char *path, json_t *v, size_t l, size_t e, float *out,
		      struct dp_err *err)
{
	float f;

	if (json_is_integer(v)) {
		json_int_t i = json_integer_value(v);

		if (i < 0)
			return dp_err_set(err, EINVAL,
					  "eplb: '%s': weight[%zu][%zu] is negative (%lld)", path,
					  l, e, (long long)i);
		f = (float)i;
	} else if (json_is_real(v)) {
		double d = json_real_value(v);

		if (isnan(d))
			return dp_err_set(err, EINVAL, "eplb: '%s': weight[%zu][%zu] is NaN", path,
					  l, e);
		if (d < 0.0)
			return dp_err_set(err, EINVAL,
					  "eplb: '%s': weight[%zu][%zu] is negative (%g)", path, l,
					  e, d);
		f = (float)d;
		if (!isfinite(f))
			return dp_err_set(
				err, EINVAL,
				"eplb: '%s': weight[%zu][%zu] (%g) does not fit in float32", path,
				l, e, d);
	} else {
		return dp_err_set(err, EINVAL, "eplb: '%s': weight[%zu][%zu] is not a number", path,
				  l, e);
	}
	*out = f;
	return 0;
}

/* The load matrix of the parsed document @root (consumed); @path names it
 * in messages. */
static int loads_of(const char *path, json_t *root, float **weight, int *layers, int *experts,
		    struct dp_err *err)
{
	json_t *rows;
	float *w = NULL;
	size_t L, E;
	int rc;

	rows = json_is_object(root) ? json_object_get(root, "weight") : NULL;
	if (!rows || !json_is_array(rows)) {
		rc = dp_err_set(err, EINVAL,
				"eplb: '%s': expected an object {\"weight\": [[load, ...], ...]}",
				path);
		goto out;
	}
	L = json_array_size(rows);
	if (L == 0) {
		rc = dp_err_set(err, EINVAL, "eplb: '%s': \"weight\" has no layers", path);
		goto out;
	}
	E = 0;
	for (size_t l = 0; l < L; l++) {
		json_t *row = json_array_get(rows, l);

		if (!json_is_array(row)) {
			rc = dp_err_set(err, EINVAL, "eplb: '%s': weight[%zu] is not an array",
					path, l);
			goto out;
		}
		if (json_array_size(row) == 0) {
			rc = dp_err_set(err, EINVAL, "eplb: '%s': weight[%zu] has no experts", path,
					l);
			goto out;
		}
		if (l == 0) {
			E = json_array_size(row);
		} else if (json_array_size(row) != E) {
			rc = dp_err_set(
				err, EINVAL,
				"eplb: '%s': weight[%zu] has %zu loads but weight[0] has %zu "
				"(rows must have the same length)",
				path, l, json_array_size(row), E);
			goto out;
		}
	}
	if (L > INT_MAX || E > INT_MAX || L * E > (size_t)INT_MAX) {
		rc = dp_err_set(err, E2BIG, "eplb: '%s': %zu x %zu loads is too large", path, L, E);
		goto out;
	}
	w = malloc(L * E * sizeof(*w));
	if (!w) {
		rc = dp_err_set(err, ENOMEM, "eplb: out of memory");
		goto out;
	}
	for (size_t l = 0; l < L; l++) {
		json_t *row = json_array_get(rows, l);

		for (size_t e = 0; e < E; e++) {
			rc = load_value(path, json_array_get(row, e), l, e, &w[l * E + e], err);
			if (rc)
				goto out;
		}
	}
	*weight = w;
	*layers = (int)L;
	*experts = (int)E;
	w = NULL;
	rc = 0;
out:
	free(w);
	json_decref(root);
	return rc;
}

int dp_eplb_loads_read(const char *path, float **weight, int *layers, int *experts,
		       struct dp_err *err)
{
	json_error_t jerr;
	json_t *root;
	FILE *f;

	f = fopen(path, "rb");
	if (!f) {
		int e = errno;

		return dp_err_set(err, e, "eplb: cannot open '%s': %s", path, strerror(e));
	}
	root = json_loadf(f, JSON_REJECT_DUPLICATES, &jerr);
	(void)fclose(f);
	if (!root)
		return dp_err_set(err, EBADMSG, "eplb: '%s' line %d column %d: %s", path, jerr.line,
				  jerr.column, jerr.text);
	return loads_of(path, root, weight, layers, experts, err);
}

int dp_eplb_loads_parse(const char *text, const char *name, float **weight, int *layers,
			int *experts, struct dp_err *err)
{
	json_error_t jerr;
	json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);

	if (!root)
		return dp_err_set(err, EBADMSG, "eplb: '%s' column %d: %s", name, jerr.column,
				  jerr.text);
	return loads_of(name, root, weight, layers, experts, err);
}

int dp_eplb_loads_format(const float *weight, int layers, int experts, char **out,
			 struct dp_err *err)
{
	size_t cap = 64 + (size_t)layers * ((size_t)experts * 17 + 4), n = 0;
	char *s = malloc(cap);

	if (!s)
		return dp_err_set(err, ENOMEM, "eplb: out of memory");
	n += (size_t)snprintf(s + n, cap - n, "{\"weight\":[");
	for (int l = 0; l < layers; l++) {
		n += (size_t)snprintf(s + n, cap - n, "%s[", l ? "," : "");
		for (int e = 0; e < experts; e++)
			n += (size_t)snprintf(
				s + n, cap - n, "%s%.9g", e ? "," : "",
				(double)weight[(size_t)l * (size_t)experts + (size_t)e]);
		n += (size_t)snprintf(s + n, cap - n, "]");
	}
	(void)snprintf(s + n, cap - n, "]}");
	*out = s;
	return 0;
}
