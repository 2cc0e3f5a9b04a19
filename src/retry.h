/* retry.h — backoff arithmetic shared by every retry in usher. */
#ifndef USHER_RETRY_H
#define USHER_RETRY_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"

/* Delay before attempt number `attempt` (2 = the first retry): exponential from initial_ms,
 * capped at max_ms, with the upper half jittered so that retrying members spread out. Never
 * less than floor_ms (a Retry-After). rng is the caller's xorshift state (non-zero). */
int64_t usher_backoff_ms(const usher_retry_policy *p, int attempt, int64_t floor_ms,
                         uint64_t *rng);

/* True once `attempts` attempts or `elapsed_ms` since the first failure exceed the policy. */
bool usher_retry_exhausted(const usher_retry_policy *p, int attempts, int64_t elapsed_ms);

#endif
