/* SplitMix64's finalizer: the mixing function behind the library's counter-based random
 * numbers (synthetic weights, the trainer's initialization), whose draws are pure functions
 * of (seed, tensor, element) and so independent of the thread count. */
#ifndef MB_MIX64_H
#define MB_MIX64_H

#include <stdint.h>

static inline uint64_t mb_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

#endif /* MB_MIX64_H */
