/* The table of architectures: adding one is a file beside this one and a line here. */
#include <string.h>

#include "arch/arch.h"

extern const mb_arch mb_arch_mamba1, mb_arch_falcon_mamba;

static const mb_arch *const archs[] = {&mb_arch_mamba1, &mb_arch_falcon_mamba};

const mb_arch *mb_arch_find(const char *model_type)
{
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
        if (strcmp(archs[i]->model_type, model_type) == 0) return archs[i];
    return NULL;
}

const char *mb_arch_names(void) { return "mamba, falcon_mamba"; }
