/* Unit tests for fibers: calls on one thread that wait for their I/O together. The fibers only
 * record what happened; the tests assert afterwards, on the thread's own stack. */
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "fiber.h"
#include "pipeline.h"

/* What the fibers of one test share: a pipe, and a log of what they did, in order. */
struct shared {
    int fds[2];
    char log[64];
    size_t n;
};

struct job {
    struct shared *sh;
    char name;
    int wait_ms;     /* the timeout it gives usher_io_wait */
    int result;      /* what usher_io_wait returned */
    short revents;
    int wrote;       /* what write returned (writer) */
    int64_t took_us; /* how long usher_io_wait took */
};

static void note(struct shared *sh, char c)
{
    if (sh != NULL && sh->n < sizeof(sh->log) - 1)
        sh->log[sh->n++] = c;
}

/* Waits (up to wait_ms) for the pipe to be readable, then reads one byte. */
static void reader(void *arg)
{
    struct job *j = arg;
    struct pollfd pfd = { .fd = j->sh->fds[0], .events = POLLIN };
    char c = 0;
    int64_t t0 = usher_now_us();

    note(j->sh, j->name);
    j->result = usher_io_wait(&pfd, 1, j->wait_ms);
    j->took_us = usher_now_us() - t0;
    j->revents = pfd.revents;
    if (j->result == 1 && read(j->sh->fds[0], &c, 1) == 1)
        note(j->sh, c);
    note(j->sh, (char)(j->name - 'a' + 'A'));
}

/* Sleeps wait_ms in usher_io_wait (nothing to wait for but its timeout), then writes. */
static void writer(void *arg)
{
    struct job *j = arg;
    int64_t t0 = usher_now_us();

    note(j->sh, j->name);
    j->result = usher_io_wait(NULL, 0, j->wait_ms);
    j->took_us = usher_now_us() - t0;
    if (j->sh != NULL)
        j->wrote = (int)write(j->sh->fds[1], "!", 1);
    note(j->sh, (char)(j->name - 'a' + 'A'));
}

/* Each test's fibers and what they share (the pipe open, the log empty). */
struct fixture {
    usher_fibers *fs;
    struct shared sh;
};

static int fixture_open(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));

    if (fx == NULL || (fx->fs = usher_fibers_new()) == NULL || pipe(fx->sh.fds) != 0) {
        if (fx != NULL)
            usher_fibers_free(fx->fs);
        free(fx);
        return -1;
    }
    *state = fx;
    return 0;
}

static int fixture_close(void **state)
{
    struct fixture *fx = *state;

    usher_fibers_free(fx->fs);
    close(fx->sh.fds[0]);
    close(fx->sh.fds[1]);
    free(fx);
    return 0;
}

/* Runs a reader that would wait 5 s on its own beside a writer that writes after 20 ms. */
static void run_reader_beside_writer(struct fixture *fx, struct job *r, struct job *w)
{
    *r = (struct job){ .sh = &fx->sh, .name = 'r', .wait_ms = 5000 };
    *w = (struct job){ .sh = &fx->sh, .name = 'w', .wait_ms = 20 };
    usher_fiber_job jobs[] = { { reader, r }, { writer, w } };

    assert_int_equal(usher_fibers_run(fx->fs, jobs, 2), 0);
}

/* The reader is woken by the writer, a fiber of the same thread. */
static void test_a_waiting_fiber_lets_the_others_run(void **state)
{
    struct fixture *fx = *state;
    struct job r, w;

    run_reader_beside_writer(fx, &r, &w);
    /* both started, the writer woke after its 20 ms and finished, then the reader read */
    assert_string_equal(fx->sh.log, "rwW!R");
    assert_int_equal(w.wrote, 1);
    assert_int_equal(r.result, 1);
    assert_true(r.revents & POLLIN);
    assert_in_range(r.took_us, 15000, 4000000);
    assert_int_equal(w.result, 0);
    assert_in_range(w.took_us, 19000, 4000000);
}

/* Eight fibers that each wait 100 ms take about 100 ms together: well under the 800 ms of
 * one after another. */
static void test_waits_overlap(void **state)
{
    struct fixture *fx = *state;
    struct job j[8];
    usher_fiber_job jobs[8];

    for (int i = 0; i < 8; i++) {
        j[i] = (struct job){ .sh = NULL, .name = 'a', .wait_ms = 100 };
        jobs[i] = (usher_fiber_job){ writer, &j[i] };
    }
    int64_t t0 = usher_now_us();
    assert_int_equal(usher_fibers_run(fx->fs, jobs, 8), 0);
    int64_t took = usher_now_us() - t0;
    assert_in_range(took, 99000, 500000);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(j[i].result, 0);
        assert_in_range(j[i].took_us, 99000, 500000);
    }
}

/* A wait with nothing ready returns 0 at its timeout, with no revents, as poll does; the
 * set's stacks are reused, and it grows when a later run has more fibers. */
static void test_timeouts_and_reuse(void **state)
{
    struct fixture *fx = *state;
    struct job r = { .sh = &fx->sh, .name = 'r', .wait_ms = 30 };
    struct job s = { .sh = NULL, .name = 's', .wait_ms = 10 };
    usher_fiber_job jobs[] = { { reader, &r }, { writer, &s } };

    assert_int_equal(usher_fibers_run(fx->fs, jobs, 1), 0);
    assert_int_equal(r.result, 0);
    assert_int_equal(r.revents, 0);
    assert_in_range(r.took_us, 29000, 4000000);
    fx->sh.n = 0;
    memset(fx->sh.log, 0, sizeof(fx->sh.log));
    assert_int_equal(usher_fibers_run(fx->fs, jobs, 2), 0);
    assert_string_equal(fx->sh.log, "rR"); /* (s logs nowhere) */
    assert_int_equal(r.result, 0);
    assert_int_equal(s.result, 0);
    assert_in_range(r.took_us, 29000, 4000000);
}

/* Outside a fiber, usher_io_wait is poll. */
static void test_outside_a_fiber_it_is_poll(void **state)
{
    struct fixture *fx = *state;
    struct pollfd pfd = { .fd = fx->sh.fds[0], .events = POLLIN };

    assert_int_equal(usher_io_wait(&pfd, 1, 10), 0);
    assert_int_equal(write(fx->sh.fds[1], "x", 1), 1);
    assert_int_equal(usher_io_wait(&pfd, 1, 10), 1);
    assert_true(pfd.revents & POLLIN);
}

static int nested_result;

static void nested(void *arg)
{
    usher_fibers *inner = usher_fibers_new();
    usher_fiber_job jobs[] = { { nested, arg } };

    nested_result = inner == NULL ? -2 : usher_fibers_run(inner, jobs, 1);
    usher_fibers_free(inner);
}

/* A fiber cannot run fibers of its own: the call refuses, running nothing. */
static void test_no_fibers_inside_a_fiber(void **state)
{
    struct fixture *fx = *state;
    usher_fiber_job jobs[] = { { nested, NULL } };

    nested_result = 0;
    assert_int_equal(usher_fibers_run(fx->fs, jobs, 1), 0);
    assert_int_equal(nested_result, -1);
}

static void mark_round(void *arg)
{
    note(arg, '|');
}

/* The on-wait hook runs on the thread's own stack after every round that leaves fibers
 * waiting (before each sleep in poll), not after the last one. */
static void test_on_wait_runs_between_rounds(void **state)
{
    struct fixture *fx = *state;
    struct job r, w;

    usher_fibers_on_wait(fx->fs, mark_round, &fx->sh);
    run_reader_beside_writer(fx, &r, &w);
    /* both start and wait; the writer wakes, writes and ends; then the reader reads and ends */
    assert_string_equal(fx->sh.log, "rw|W|!R");
}

/* 150 ms of blocking work (a sleep, as a library's connect would block), on the thread it
 * records. */
struct blocking {
    int done;
    pthread_t on;
};

static void block_150ms(void *arg)
{
    struct blocking *b = arg;
    struct timespec ts = { 0, 150 * 1000000L };

    nanosleep(&ts, NULL);
    b->on = pthread_self();
    b->done = 1;
}

static void offloader(void *arg)
{
    struct job *j = arg;
    struct blocking b = { 0 };

    note(j->sh, j->name);
    usher_offload(block_150ms, &b);
    j->result = b.done && !pthread_equal(b.on, pthread_self());
    note(j->sh, (char)(j->name - 'a' + 'A'));
}

/* Blocking work offloaded from a fiber runs on another thread and does not hold up the
 * others: a fiber that waits 20 ms beside it finishes first. Outside a fiber, the work runs
 * on the calling thread. */
static void test_offload_lets_the_others_run(void **state)
{
    struct fixture *fx = *state;
    struct job o = { .sh = &fx->sh, .name = 'o' };
    struct job w = { .sh = &fx->sh, .name = 'w', .wait_ms = 20 };
    usher_fiber_job jobs[] = { { offloader, &o }, { writer, &w } };
    struct blocking b = { 0 };

    assert_int_equal(usher_fibers_run(fx->fs, jobs, 2), 0);
    assert_string_equal(fx->sh.log, "owWO");
    assert_int_equal(o.result, 1); /* done, on a thread of its own */
    assert_true(w.took_us >= 19000);
    usher_offload(block_150ms, &b);
    assert_int_equal(b.done, 1);
    assert_true(pthread_equal(b.on, pthread_self()));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_a_waiting_fiber_lets_the_others_run, fixture_open,
                                        fixture_close),
        cmocka_unit_test_setup_teardown(test_waits_overlap, fixture_open, fixture_close),
        cmocka_unit_test_setup_teardown(test_timeouts_and_reuse, fixture_open, fixture_close),
        cmocka_unit_test_setup_teardown(test_outside_a_fiber_it_is_poll, fixture_open,
                                        fixture_close),
        cmocka_unit_test_setup_teardown(test_no_fibers_inside_a_fiber, fixture_open,
                                        fixture_close),
        cmocka_unit_test_setup_teardown(test_offload_lets_the_others_run, fixture_open,
                                        fixture_close),
        cmocka_unit_test_setup_teardown(test_on_wait_runs_between_rounds, fixture_open,
                                        fixture_close),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
