/* topo/topo_util.c - small parsing helpers shared by the topology sources:
 * PCI bus ids, cpumasks, port rates and states. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "topo/topo_int.h"
#include "common/dp_banned.h"

int topo_parse_err(struct dp_err *err, const char *path, long line, const char *fmt, ...)
{
	char what[512];
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (line > 0)
		return dp_err_set(err, EBADMSG, "%s:%ld: error: %s", path, line, what);
	return dp_err_set(err, EBADMSG, "%s: error: %s", path, what);
}

void topo_strlcpy(char *dst, const char *src, size_t size)
{
	size_t n;

	if (!size)
		return;
	n = src ? strnlen(src, size - 1) : 0;
	if (n)
		memcpy(dst, src, n);
	dst[n] = '\0';
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Read up to @max hex digits; returns count read (0 = none), value in *v. */
static int hexfield(const char **p, int max, unsigned long *v)
{
	int n = 0;

	*v = 0;
	while (n < max && hexval((unsigned char)**p) >= 0) {
		*v = *v * 16 + (unsigned long)hexval((unsigned char)**p);
		(*p)++;
		n++;
	}
	return n;
}

int topo_pci_norm(const char *in, char out[DP_TOPO_PCI_LEN])
{
	unsigned long f[4] = { 0 };
	const char *p = in;
	int n;

	if (!in)
		return -EINVAL;
	while (isspace((unsigned char)*p))
		p++;
	/* domain:bus:dev.fn or bus:dev.fn; NVML writes an 8-digit domain */
	n = hexfield(&p, 8, &f[0]);
	if (!n || *p != ':')
		return -EINVAL;
	p++;
	n = hexfield(&p, 2, &f[1]);
	if (!n)
		return -EINVAL;
	if (*p == ':') {
		p++;
		if (!hexfield(&p, 2, &f[2]) || *p != '.')
			return -EINVAL;
	} else if (*p == '.') {
		/* no domain: shift */
		f[2] = f[1];
		f[1] = f[0];
		f[0] = 0;
		if (f[1] > 0xff)
			return -EINVAL;
	} else {
		return -EINVAL;
	}
	p++;
	if (!hexfield(&p, 1, &f[3]) || f[3] > 7)
		return -EINVAL;
	if (*p && !isspace((unsigned char)*p))
		return -EINVAL;
	if (f[0] > 0xffff)
		f[0] &= 0xffff; /* NVML's 0000xxxx / sentinel ffffffff */
	(void)snprintf(out, DP_TOPO_PCI_LEN, "%04x:%02x:%02x.%x", (unsigned int)(f[0] & 0xffff),
		       (unsigned int)(f[1] & 0xff), (unsigned int)(f[2] & 0xff),
		       (unsigned int)(f[3] & 7));
	return 0;
}

int topo_pci_cmp(const char *a, const char *b)
{
	/* normalised ids are fixed width hex: strcmp sorts numerically; empty last */
	if (!*a || !*b)
		return (*a == '\0') - (*b == '\0');
	return strcmp(a, b);
}

static int list_add_range(char *out, size_t outlen, size_t *pos, int lo, int hi)
{
	int n;

	if (lo == hi)
		n = snprintf(out + *pos, outlen - *pos, "%s%d", *pos ? "," : "", lo);
	else
		n = snprintf(out + *pos, outlen - *pos, "%s%d-%d", *pos ? "," : "", lo, hi);
	if (n < 0 || (size_t)n >= outlen - *pos)
		return -E2BIG;
	*pos += (size_t)n;
	return 0;
}

int topo_cpumask_to_list(const char *mask, char *out, size_t outlen, int *ncpus)
{
	unsigned char bits[TOPO_MAX_CPUS / 8];
	size_t len = strlen(mask), pos = 0;
	int bit = 0, lo = -1, count = 0;

	memset(bits, 0, sizeof(bits));
	if (!outlen)
		return -EINVAL;
	out[0] = '\0';
	size_t start = (mask[0] == '0' && (mask[1] == 'x' || mask[1] == 'X')) ? 2 : 0;

	/* the least significant word is last: walk backwards, 4 bits per digit */
	for (size_t i = len; i-- > start;) {
		int v;

		if (mask[i] == ',' || isspace((unsigned char)mask[i]))
			continue;
		v = hexval((unsigned char)mask[i]);
		if (v < 0)
			return -EINVAL;
		for (int b = 0; b < 4; b++, bit++) {
			if (!(v & (1 << b)))
				continue;
			if (bit >= TOPO_MAX_CPUS)
				return -ERANGE;
			bits[bit / 8] |= (unsigned char)(1u << (bit % 8));
		}
	}
	for (int c = 0; c <= TOPO_MAX_CPUS; c++) {
		int set = c < TOPO_MAX_CPUS && (bits[c / 8] & (1u << (c % 8)));

		if (set) {
			count++;
			if (lo < 0)
				lo = c;
		} else if (lo >= 0) {
			if (list_add_range(out, outlen, &pos, lo, c - 1))
				return -E2BIG;
			lo = -1;
		}
	}
	if (ncpus)
		*ncpus = count;
	return 0;
}

int topo_cpulist_count(const char *list)
{
	const char *p = list;
	int count = 0;

	while (*p && *p != '\n') {
		char *end;
		long lo, hi;

		errno = 0;
		lo = strtol(p, &end, 10);
		if (end == p || lo < 0 || errno)
			return -EINVAL;
		hi = lo;
		p = end;
		if (*p == '-') {
			p++;
			hi = strtol(p, &end, 10);
			if (end == p || hi < lo || errno)
				return -EINVAL;
			p = end;
		}
		if (hi - lo + 1 > TOPO_MAX_CPUS || count + (hi - lo + 1) > TOPO_MAX_CPUS)
			return -ERANGE;
		count += (int)(hi - lo + 1);
		if (*p == ',')
			p++;
		else if (*p && *p != '\n')
			return -EINVAL;
	}
	return count;
}

int topo_parse_rate(const char *s, double *gbps)
{
	char *end;
	double v;

	while (isspace((unsigned char)*s))
		s++;
	errno = 0;
	v = strtod(s, &end);
	if (end == s || errno || !(v >= 0) || v > 1e6)
		return -EINVAL;
	while (isspace((unsigned char)*end))
		end++;
	/* "400", "200 Gb/sec (4X HDR)", "400 Gb/s"; a bare number is Gb/s (ibstat) */
	if (*end && strncmp(end, "Gb/s", 4) != 0 && strncmp(end, "Gb/sec", 6) != 0)
		return -EINVAL;
	*gbps = v;
	return 0;
}

enum dp_topo_state topo_parse_state(const char *s)
{
	while (isspace((unsigned char)*s) || isdigit((unsigned char)*s) || *s == ':')
		s++;
	if (strncmp(s, "PORT_", 5) == 0)
		s += 5;
	if (strncasecmp(s, "ACTIVE", 6) == 0)
		return DP_TOPO_STATE_ACTIVE;
	if (strncasecmp(s, "DOWN", 4) == 0)
		return DP_TOPO_STATE_DOWN;
	if (strncasecmp(s, "INIT", 4) == 0)
		return DP_TOPO_STATE_INIT;
	if (strncasecmp(s, "ARMED", 5) == 0)
		return DP_TOPO_STATE_ARMED;
	return DP_TOPO_STATE_UNKNOWN;
}

enum dp_topo_link_layer topo_parse_link_layer(const char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	if (strncasecmp(s, "InfiniBand", 10) == 0)
		return DP_TOPO_LL_IB;
	if (strncasecmp(s, "Ethernet", 8) == 0)
		return DP_TOPO_LL_ETH;
	return DP_TOPO_LL_UNKNOWN;
}

int topo_parse_hex(const char *s, unsigned long *out)
{
	const char *p = s;
	unsigned long v;
	int n;

	if (!s)
		return -EINVAL;
	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X'))
		p += 2;
	n = hexfield(&p, 16, &v);
	if (!n || *p)
		return -EINVAL;
	*out = v;
	return 0;
}

int topo_name_is_bond(const char *name)
{
	return strstr(name, "_bond") != NULL || strncmp(name, "bond", 4) == 0;
}

int topo_hex4(const char *s, unsigned int *out)
{
	unsigned int v = 0;

	for (int i = 0; i < 4; i++) {
		int d = hexval((unsigned char)s[i]);

		if (d < 0)
			return -EINVAL;
		v = v * 16 + (unsigned int)d;
	}
	*out = v;
	return 0;
}

const char *topo_gpu_model(unsigned long dev)
{
	/* what XML and sysfs leave out; NVML and hwloc give the real name */
	static const struct {
		unsigned long id;
		const char *name;
	} ids[] = {
		{ 0x2330, "H100 SXM5 80GB" }, { 0x2335, "H200 SXM5 141GB" },
		{ 0x20b0, "A100 SXM4 40GB" }, { 0x20b2, "A100 SXM4 80GB" },
		{ 0x20b5, "A100 PCIe 80GB" }, { 0x1db8, "V100 SXM3 32GB" },
		{ 0x2331, "H100 PCIe" },      { 0x2901, "B200" },
	};

	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
		if (ids[i].id == dev)
			return ids[i].name;
	return NULL;
}
