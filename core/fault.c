/* The hooks the fault-injection tests call (tests/fault_hooks.h), over the neutral layer's
 * counter (backends/api/fault.c). Built only with -DMAMBA_FAULT_INJECTION=ON. */
#include <cjson/cJSON.h>

#include "api/alloc.h"
#include "mamba.h"

/* cJSON allocates through hooks; routing them here makes its allocations points too. */
static void *json_malloc(size_t n) { return mb_malloc(n); }

/* From now on, the k-th point fails (k = 0: none). Resets the count. */
MAMBA_API void mamba_fault_inject(unsigned long k)
{
    static int hooked;
    if (!hooked) {
        cJSON_Hooks h = {json_malloc, free};
        cJSON_InitHooks(&h);
        hooked = 1;
    }
    mb_fault_arm(k);
}

/* Points passed since the last mamba_fault_inject. */
MAMBA_API unsigned long mamba_fault_points(void) { return mb_fault_count(); }
