/* Stop strings over streamed text. */
#include "text_out.h"

#include <stdlib.h>
#include <string.h>

void text_out_init(text_out *o, FILE *fp, const char *const *stops, size_t n)
{
    memset(o, 0, sizeof *o);
    o->fp = fp;
    o->stops = stops;
    o->n_stops = n;
}

void text_out_free(text_out *o)
{
    free(o->held);
    free(o->text);
    o->held = o->text = NULL;
    o->n_held = o->cap_held = o->len = o->cap = 0;
}

void text_out_clear(text_out *o)
{
    o->n_held = o->len = 0;
    o->stopped = 0;
}

static int grow(char **p, size_t *cap, size_t need)
{
    if (need <= *cap) return 1;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    char *q = realloc(*p, c);
    if (!q) return 0;
    *p = q;
    *cap = c;
    return 1;
}

static int emit(text_out *o, const char *s, size_t n)
{
    if (!n) return 0;
    if (!grow(&o->text, &o->cap, o->len + n)) return -1;
    memcpy(o->text + o->len, s, n);
    o->len += n;
    if (o->fp) {
        fwrite(s, 1, n, o->fp);
        fflush(o->fp);
    }
    return 0;
}

int text_out_put(text_out *o, const char *s, size_t n)
{
    if (o->stopped) return 1;
    if (!n) return 0;
    if (!grow(&o->held, &o->cap_held, o->n_held + n)) return -1;
    memcpy(o->held + o->n_held, s, n);
    o->n_held += n;
    const char *h = o->held;
    const size_t len = o->n_held;
    /* a stop string whole now ends the text, at the earliest such one */
    for (size_t p = 0; p < len; p++)
        for (size_t k = 0; k < o->n_stops; k++) {
            const size_t sl = strlen(o->stops[k]);
            if (len - p >= sl && memcmp(h + p, o->stops[k], sl) == 0) {
                o->stopped = 1;
                const int rc = emit(o, h, p);
                o->n_held = 0;
                return rc < 0 ? -1 : 1;
            }
        }
    /* else the text is written up to the earliest tail that could begin one */
    size_t keep = len;
    for (size_t p = 0; p < len && keep == len; p++)
        for (size_t k = 0; k < o->n_stops; k++)
            if (strlen(o->stops[k]) > len - p && memcmp(h + p, o->stops[k], len - p) == 0) {
                keep = p;
                break;
            }
    if (emit(o, h, keep) < 0) return -1;
    memmove(o->held, h + keep, len - keep);
    o->n_held = len - keep;
    return 0;
}

int text_out_finish(text_out *o)
{
    if (o->stopped) return 0;
    const int rc = emit(o, o->held, o->n_held);
    o->n_held = 0;
    return rc;
}
