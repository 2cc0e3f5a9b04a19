/* Unit tests for backoff arithmetic. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "retry.h"

static void test_backoff_grows_and_is_capped(void **state)
{
    (void)state;
    usher_retry_policy p = { .initial_ms = 100, .max_ms = 1000 };
    uint64_t rng = 42;
    for (int round = 0; round < 200; round++) {
        int64_t d2 = usher_backoff_ms(&p, 2, 0, &rng);
        int64_t d3 = usher_backoff_ms(&p, 3, 0, &rng);
        int64_t d20 = usher_backoff_ms(&p, 20, 0, &rng);
        assert_in_range(d2, 50, 100);
        assert_in_range(d3, 100, 200);
        assert_in_range(d20, 500, 1000);
    }
}

static void test_backoff_jitter_varies(void **state)
{
    (void)state;
    usher_retry_policy p = { .initial_ms = 1000, .max_ms = 60000 };
    uint64_t rng = 7;
    int64_t first = usher_backoff_ms(&p, 4, 0, &rng);
    int differs = 0;
    for (int i = 0; i < 50; i++)
        differs |= usher_backoff_ms(&p, 4, 0, &rng) != first;
    assert_true(differs);
}

static void test_backoff_honours_floor(void **state)
{
    (void)state;
    usher_retry_policy p = { .initial_ms = 10, .max_ms = 100 };
    uint64_t rng = 1;
    assert_true(usher_backoff_ms(&p, 2, 2000, &rng) >= 2000);
}

static void test_exhaustion(void **state)
{
    (void)state;
    usher_retry_policy unlimited = { .initial_ms = 1, .max_ms = 2 };
    usher_retry_policy by_count = { .max_attempts = 3 };
    usher_retry_policy by_time = { .max_time_ms = 500 };
    assert_false(usher_retry_exhausted(&unlimited, 1000000, INT64_MAX / 2));
    assert_false(usher_retry_exhausted(&by_count, 2, 0));
    assert_true(usher_retry_exhausted(&by_count, 3, 0));
    assert_false(usher_retry_exhausted(&by_time, 100, 499));
    assert_true(usher_retry_exhausted(&by_time, 1, 500));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff_grows_and_is_capped),
        cmocka_unit_test(test_backoff_jitter_varies),
        cmocka_unit_test(test_backoff_honours_floor),
        cmocka_unit_test(test_exhaustion),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
