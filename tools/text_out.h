/* Streamed text with stop strings: what is appended is written out at once, except a tail
 * that could be the start of a stop string, held until the next text decides it. At the
 * first stop string the text before it is written and the rest dropped. */
#ifndef MAMBA_TEXT_OUT_H
#define MAMBA_TEXT_OUT_H

#include <stdio.h>

typedef struct text_out {
    FILE *fp;                  /* where the text goes (flushed after each append), or NULL */
    const char *const *stops;
    size_t n_stops;
    char *held;                /* the undecided tail                                      */
    size_t n_held, cap_held;
    char *text;                /* everything written since the last text_out_clear        */
    size_t len, cap;
    int stopped;               /* a stop string was found                                 */
} text_out;

/* stops (n strings, none empty; kept by reference) may be NULL when n is 0. */
void text_out_init(text_out *o, FILE *fp, const char *const *stops, size_t n);
void text_out_free(text_out *o);
/* Append n bytes. 1: a stop string was found (everything after it is dropped, now and
 * later); 0: not; -1: out of memory. */
int text_out_put(text_out *o, const char *s, size_t n);
/* Write what is held (the text ended without a stop string). -1: out of memory. */
int text_out_finish(text_out *o);
/* Start a new text (keeps the stops). */
void text_out_clear(text_out *o);

#endif
