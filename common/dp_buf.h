/* common/dp_buf.h - a growing byte buffer with a hard size cap (like curl's
 * dynbuf).  Always NUL-terminated so text can be read with dp_buf_str().
 *
 *   struct dp_buf b;
 *   dp_buf_init(&b, 1 << 20);          // caller-embedded; cap in bytes
 *   dp_buf_addf(&b, "%d ranks", n);    // -ENOMEM, or -E2BIG past the cap
 *   puts(dp_buf_str(&b));
 *   dp_buf_release(&b);                // frees storage; b is reusable after init
 *
 * dp_buf_detach() hands the storage to the caller (caller frees).
 */
#ifndef DP_BUF_H
#define DP_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct dp_buf {
	char *data;
	size_t len;
	size_t alloc;
	size_t cap; /* hard limit on len */
};

void dp_buf_init(struct dp_buf *b, size_t cap);
void dp_buf_release(struct dp_buf *b); /* NULL-safe */
void dp_buf_reset(struct dp_buf *b);   /* len = 0, storage kept */

/* 0, -ENOMEM, or -E2BIG if the cap would be exceeded (buffer unchanged). */
int dp_buf_add(struct dp_buf *b, const void *data, size_t len);
int dp_buf_adds(struct dp_buf *b, const char *s);
int dp_buf_addf(struct dp_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int dp_buf_vaddf(struct dp_buf *b, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));

/* Contents as a string ("" when empty); valid until the next change. */
const char *dp_buf_str(const struct dp_buf *b);

/* Give the storage to the caller (caller frees, may be NULL if empty) and
 * reset @b to empty. */
char *dp_buf_detach(struct dp_buf *b, size_t *len);

#endif
