/* Entries of the parameter table (weights.h): what the architectures fill and weights.c packs. */
#include <stdio.h>
#include <string.h>

#include "weights.h"

void mb_spec_set(mb_spec *s, const char *name, int ndim, int64_t d0, int64_t d1, mb_init init, float scale,
                 int is_matrix)
{
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    s->ndim = ndim;
    s->shape[0] = d0;
    s->shape[1] = d1;
    s->init = init;
    s->scale = scale;
    s->is_matrix = is_matrix;
}

uint64_t mb_spec_count(const mb_spec *s)
{
    uint64_t n = 1;
    for (int i = 0; i < s->ndim; i++) n *= (uint64_t)s->shape[i];
    return n;
}

size_t mb_spec_rows(const mb_spec *s) { return s->ndim == 2 ? (size_t)s->shape[0] : (size_t)mb_spec_count(s); }

size_t mb_spec_cols(const mb_spec *s) { return s->ndim == 2 ? (size_t)s->shape[1] : 1; }
