/* The counter behind mb_fault() (api/alloc.h): built only with -DMAMBA_FAULT_INJECTION=ON. One
 * counter for the process: the tests that use it run one thread. */
#include <stdatomic.h>

#include "api/alloc.h"

static atomic_ulong points, fail_at;

int mb_fault(void)
{
    const unsigned long k = atomic_fetch_add(&points, 1) + 1;
    return k == atomic_load(&fail_at);
}

void mb_fault_arm(unsigned long k)
{
    atomic_store(&fail_at, k);
    atomic_store(&points, 0);
}

unsigned long mb_fault_count(void) { return atomic_load(&points); }
