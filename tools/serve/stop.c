/* Stop-string search over the growing text of one generation. */
#include "stop.h"

#include <string.h>

size_t stop_find(const char *const *stops, size_t n, const char *text, size_t len, size_t checked_to)
{
    size_t best = len;
    for (size_t i = 0; i < n; i++) {
        const size_t k = strlen(stops[i]);
        if (k == 0 || k > len) continue;
        /* a match ending past checked_to starts at or after checked_to - k + 1 */
        const size_t from = checked_to >= k ? checked_to - k + 1 : 0;
        const char *hit = memmem(text + from, len - from, stops[i], k);
        if (hit && (size_t)(hit - text) < best) best = (size_t)(hit - text);
    }
    return best;
}

size_t stop_partial(const char *const *stops, size_t n, const char *text, size_t len)
{
    size_t best = 0;
    for (size_t i = 0; i < n; i++) {
        const size_t k = strlen(stops[i]);
        if (k == 0) continue;
        for (size_t m = k - 1 < len ? k - 1 : len; m > best; m--)
            if (memcmp(text + len - m, stops[i], m) == 0) {
                best = m;
                break;
            }
    }
    return best;
}
