/* utf8.h: the one UTF-8 validity rule for text that crosses a boundary (the
 * gateway's answers and callbacks, log values). */
#ifndef UTF8_H
#define UTF8_H

/* Bytes of the valid UTF-8 sequence at p (1 to 4), or 0 when it is not one:
 * overlong forms, surrogates, code points past U+10FFFF and sequences cut
 * by the string's end are refused. p is NUL-terminated. */
int utf8_len(const unsigned char *p);

#endif
