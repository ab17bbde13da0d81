/* Stop strings in generated text: where the first one begins, and how much of the text's end
 * must be held back because it could be the start of one. */
#ifndef MAMBA_SERVE_STOP_H
#define MAMBA_SERVE_STOP_H

#include <stddef.h>

/* The offset in text[0..len) of the earliest complete stop string, or len when there is none.
 * Bytes before checked_to were searched before: only matches ending past it are looked for. */
size_t stop_find(const char *const *stops, size_t n, const char *text, size_t len, size_t checked_to);
/* The length of the longest end of text[0..len) that is the start (not all) of a stop string. */
size_t stop_partial(const char *const *stops, size_t n, const char *text, size_t len);

#endif
