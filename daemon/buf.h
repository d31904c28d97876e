/* buf.h: a growable byte buffer with a cap: what goes past the cap is
 * refused, not kept, so that a peer cannot make us hold more than we mean
 * to. The bytes are always NUL-terminated (p is NULL until the first add).
 * Out of memory is reported, not fatal (docs/design.md, "Out of memory"). */
#ifndef BUF_H
#define BUF_H

#include <stddef.h>

struct buf {
	char *p;
	size_t len, cap;
	size_t max; /* 0: no cap */
	int full;   /* something was refused for the cap */
	int nomem;  /* something was refused for want of memory */
};

/* Appends n bytes: 0, or -1 (b->full or b->nomem says why; b unchanged). */
int buf_add(struct buf *b, const void *data, size_t n);
/* Appends formatted text; 0 / -1 as buf_add. */
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Empties b (keeps its cap and memory). */
void buf_reset(struct buf *b);
void buf_free(struct buf *b);

#endif
