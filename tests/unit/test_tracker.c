/* Unit tests for the offset tracker: the commit position is the lowest unfinished offset. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "tracker.h"

/* Records one offset taken for work; 0, or -1 when out of memory. */
static int dispatch(usher_partition *p, int64_t offset)
{
    return usher_partition_dispatch_n(p, &offset, 1);
}

/* Marks one offset finished. */
static void done(usher_partition *p, int64_t offset)
{
    usher_partition_done_n(p, &offset, 1);
}

static void test_empty_has_no_position(void **state)
{
    (void)state;
    usher_partition *p = usher_partition_new("t", 0);
    assert_non_null(p);
    assert_int_equal(usher_partition_position(p), -1);
    usher_partition_unref(p);
}

static void test_out_of_order_completion_commits_prefix_only(void **state)
{
    (void)state;
    usher_partition *p = usher_partition_new("t", 3);
    for (int64_t o = 10; o < 15; o++)
        assert_int_equal(dispatch(p, o), 0);
    assert_int_equal(usher_partition_position(p), 10);
    done(p, 12);
    done(p, 14);
    assert_int_equal(usher_partition_position(p), 10);
    done(p, 10);
    assert_int_equal(usher_partition_position(p), 11);
    done(p, 11);
    assert_int_equal(usher_partition_position(p), 13);
    assert_int_equal(usher_partition_unfinished(p), 2);
    done(p, 13);
    assert_int_equal(usher_partition_position(p), 15);
    assert_int_equal(usher_partition_unfinished(p), 0);
    usher_partition_unref(p);
}

static void test_gaps_in_offsets(void **state)
{
    (void)state;
    usher_partition *p = usher_partition_new("t", 0);
    /* Compacted topics and transaction markers leave gaps. */
    dispatch(p, 5);
    dispatch(p, 9);
    dispatch(p, 20);
    done(p, 9);
    assert_int_equal(usher_partition_position(p), 5);
    done(p, 5);
    assert_int_equal(usher_partition_position(p), 20);
    done(p, 20);
    assert_int_equal(usher_partition_position(p), 21);
    usher_partition_unref(p);
}

static void test_abandoned_offset_blocks_position(void **state)
{
    (void)state;
    usher_partition *p = usher_partition_new("t", 0);
    dispatch(p, 0);
    dispatch(p, 1);
    dispatch(p, 2);
    done(p, 0);
    done(p, 2); /* 1 is never finished (abandoned on revoke) */
    assert_int_equal(usher_partition_position(p), 1);
    usher_partition_unref(p);
}

static void test_ring_growth_and_wraparound(void **state)
{
    (void)state;
    usher_partition *p = usher_partition_new("t", 0);
    int64_t next = 0;
    /* Keep a window of in-flight offsets that slides through many ring sizes. */
    for (int round = 0; round < 50; round++) {
        for (int i = 0; i < 37; i++)
            assert_int_equal(dispatch(p, next++), 0);
        int64_t first = usher_partition_position(p);
        /* Finish all but the last 5, newest first. */
        for (int64_t o = next - 6; o >= first; o--)
            done(p, o);
        assert_int_equal(usher_partition_position(p), next - 5);
    }
    for (int64_t o = next - 5; o < next; o++)
        done(p, o);
    assert_int_equal(usher_partition_position(p), next);
    assert_int_equal(usher_partition_unfinished(p), 0);
    usher_partition_unref(p);
}

static void test_done_of_unknown_offset_is_ignored(void **state)
{
    (void)state;
    usher_partition *p = usher_partition_new("t", 0);
    dispatch(p, 7);
    done(p, 6);
    done(p, 8);
    assert_int_equal(usher_partition_position(p), 7);
    usher_partition_unref(p);
}

static void test_done_of_many_at_once(void **state)
{
    (void)state;
    usher_partition *p = usher_partition_new("t", 0);
    const int64_t some[] = { 4, 2, 11, 9, 3 }, rest[] = { 5, 6, 7, 8 };
    for (int64_t o = 2; o < 10; o++)
        dispatch(p, o);
    usher_partition_done_n(p, some, 5); /* (in any order; 11 is unknown: ignored) */
    assert_int_equal(usher_partition_position(p), 5);
    assert_int_equal(usher_partition_unfinished(p), 5);
    usher_partition_done_n(p, rest, 0);
    assert_int_equal(usher_partition_position(p), 5);
    usher_partition_done_n(p, rest, 4);
    assert_int_equal(usher_partition_position(p), 10);
    assert_int_equal(usher_partition_unfinished(p), 0);
    usher_partition_unref(p);
}

static void test_dispatch_of_many_at_once(void **state)
{
    (void)state;
    usher_partition *p = usher_partition_new("t", 0);
    int64_t offs[100];
    for (int i = 0; i < 100; i++)
        offs[i] = 1000 + 2 * i; /* (with gaps; the ring grows past 64 within the call) */
    assert_int_equal(usher_partition_dispatch_n(p, offs, 0), 0);
    assert_int_equal(usher_partition_position(p), -1);
    assert_int_equal(usher_partition_dispatch_n(p, offs, 100), 0);
    assert_int_equal(usher_partition_unfinished(p), 100);
    assert_int_equal(usher_partition_position(p), 1000);
    usher_partition_done_n(p, offs, 70);
    assert_int_equal(usher_partition_position(p), 1140);
    assert_int_equal(usher_partition_dispatch_n(p, (const int64_t[]){ 1200, 1201 }, 2), 0);
    usher_partition_done_n(p, offs + 70, 30);
    assert_int_equal(usher_partition_position(p), 1200);
    assert_int_equal(usher_partition_unfinished(p), 2);
    usher_partition_unref(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_has_no_position),
        cmocka_unit_test(test_out_of_order_completion_commits_prefix_only),
        cmocka_unit_test(test_gaps_in_offsets),
        cmocka_unit_test(test_abandoned_offset_blocks_position),
        cmocka_unit_test(test_ring_growth_and_wraparound),
        cmocka_unit_test(test_done_of_unknown_offset_is_ignored),
        cmocka_unit_test(test_done_of_many_at_once),
        cmocka_unit_test(test_dispatch_of_many_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
