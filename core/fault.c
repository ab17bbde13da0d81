/* The counter behind mb_fault(), and the hooks the fault-injection tests call. Built only with
 * -DMAMBA_FAULT_INJECTION=ON. One counter for the process: the tests that use it run one
 * thread. */
#include <cjson/cJSON.h>
#include <stdatomic.h>

#include "fault.h"
#include "mamba.h"

static atomic_ulong points, fail_at;

int mb_fault(void)
{
    const unsigned long k = atomic_fetch_add(&points, 1) + 1;
    return k == atomic_load(&fail_at);
}

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
    atomic_store(&fail_at, k);
    atomic_store(&points, 0);
}

/* Points passed since the last mamba_fault_inject. */
MAMBA_API unsigned long mamba_fault_points(void) { return atomic_load(&points); }
