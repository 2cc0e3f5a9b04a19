/* retry.c — see retry.h. */
#include "retry.h"

static uint64_t xorshift64(uint64_t *s)
{
    uint64_t x = *s ? *s : 0x9E3779B97F4A7C15ull;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

int64_t usher_backoff_ms(const usher_retry_policy *p, int attempt, int64_t floor_ms,
                         uint64_t *rng)
{
    int64_t cap = p->max_ms > 0 ? p->max_ms : 30000;
    int64_t d = p->initial_ms > 0 ? p->initial_ms : 1;

    for (int i = 2; i < attempt && d < cap; i++)
        d *= 2;
    if (d > cap)
        d = cap;
    /* Half fixed, half jitter: never zero, never more than the cap. */
    d = d / 2 + (int64_t)(xorshift64(rng) % (uint64_t)(d / 2 + 1));
    return d < floor_ms ? floor_ms : d;
}

bool usher_retry_exhausted(const usher_retry_policy *p, int attempts, int64_t elapsed_ms)
{
    if (p->max_attempts > 0 && attempts >= p->max_attempts)
        return true;
    return p->max_time_ms > 0 && elapsed_ms >= p->max_time_ms;
}
