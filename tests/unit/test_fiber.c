/* Unit tests for fibers: calls on one thread that wait for their I/O together. The fibers only
 * record what happened; the tests assert afterwards, on the thread's own stack. */
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
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

/* A reader that would wait 5 s on its own is woken by a writer fiber of the same thread. */
static void test_a_waiting_fiber_lets_the_others_run(void **state)
{
    (void)state;
    usher_fibers *fs = usher_fibers_new();
    struct shared sh = { .n = 0 };
    struct job r = { .sh = &sh, .name = 'r', .wait_ms = 5000 };
    struct job w = { .sh = &sh, .name = 'w', .wait_ms = 20 };
    usher_fiber_job jobs[] = { { reader, &r }, { writer, &w } };

    assert_non_null(fs);
    assert_int_equal(pipe(sh.fds), 0);
    assert_int_equal(usher_fibers_run(fs, jobs, 2), 0);
    /* both started, the writer woke after its 20 ms and finished, then the reader read */
    assert_string_equal(sh.log, "rwW!R");
    assert_int_equal(w.wrote, 1);
    assert_int_equal(r.result, 1);
    assert_true(r.revents & POLLIN);
    assert_in_range(r.took_us, 15000, 4000000);
    assert_int_equal(w.result, 0);
    assert_in_range(w.took_us, 19000, 4000000);
    usher_fibers_free(fs);
    close(sh.fds[0]);
    close(sh.fds[1]);
}

/* Eight fibers that each wait 100 ms take about 100 ms together: well under the 800 ms of
 * one after another. */
static void test_waits_overlap(void **state)
{
    (void)state;
    usher_fibers *fs = usher_fibers_new();
    struct job j[8];
    usher_fiber_job jobs[8];

    assert_non_null(fs);
    for (int i = 0; i < 8; i++) {
        j[i] = (struct job){ .sh = NULL, .name = 'a', .wait_ms = 100 };
        jobs[i] = (usher_fiber_job){ writer, &j[i] };
    }
    int64_t t0 = usher_now_us();
    assert_int_equal(usher_fibers_run(fs, jobs, 8), 0);
    int64_t took = usher_now_us() - t0;
    assert_in_range(took, 99000, 500000);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(j[i].result, 0);
        assert_in_range(j[i].took_us, 99000, 500000);
    }
    usher_fibers_free(fs);
}

/* A wait with nothing ready returns 0 at its timeout, with no revents, as poll does; the
 * set's stacks are reused, and it grows when a later run has more fibers. */
static void test_timeouts_and_reuse(void **state)
{
    (void)state;
    usher_fibers *fs = usher_fibers_new();
    struct shared sh = { .n = 0 };
    struct job r = { .sh = &sh, .name = 'r', .wait_ms = 30 };
    struct job s = { .sh = NULL, .name = 's', .wait_ms = 10 };
    usher_fiber_job jobs[] = { { reader, &r }, { writer, &s } };

    assert_non_null(fs);
    assert_int_equal(pipe(sh.fds), 0);
    assert_int_equal(usher_fibers_run(fs, jobs, 1), 0);
    assert_int_equal(r.result, 0);
    assert_int_equal(r.revents, 0);
    assert_in_range(r.took_us, 29000, 4000000);
    sh.n = 0;
    memset(sh.log, 0, sizeof(sh.log));
    assert_int_equal(usher_fibers_run(fs, jobs, 2), 0);
    assert_string_equal(sh.log, "rR"); /* (s logs nowhere) */
    assert_int_equal(r.result, 0);
    assert_int_equal(s.result, 0);
    assert_in_range(r.took_us, 29000, 4000000);
    usher_fibers_free(fs);
    close(sh.fds[0]);
    close(sh.fds[1]);
}

/* Outside a fiber, usher_io_wait is poll. */
static void test_outside_a_fiber_it_is_poll(void **state)
{
    (void)state;
    int fds[2];
    struct pollfd pfd;

    assert_int_equal(pipe(fds), 0);
    pfd = (struct pollfd){ .fd = fds[0], .events = POLLIN };
    assert_int_equal(usher_io_wait(&pfd, 1, 10), 0);
    assert_int_equal(write(fds[1], "x", 1), 1);
    assert_int_equal(usher_io_wait(&pfd, 1, 10), 1);
    assert_true(pfd.revents & POLLIN);
    close(fds[0]);
    close(fds[1]);
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
    (void)state;
    usher_fibers *fs = usher_fibers_new();
    usher_fiber_job jobs[] = { { nested, NULL } };

    assert_non_null(fs);
    nested_result = 0;
    assert_int_equal(usher_fibers_run(fs, jobs, 1), 0);
    assert_int_equal(nested_result, -1);
    usher_fibers_free(fs);
}

static void mark_round(void *arg)
{
    note(arg, '|');
}

/* The on-wait hook runs on the thread's own stack after every round, once all fibers wait or
 * are done: before each sleep in poll, and before the run returns. */
static void test_on_wait_runs_between_rounds(void **state)
{
    (void)state;
    usher_fibers *fs = usher_fibers_new();
    struct shared sh = { .n = 0 };
    struct job r = { .sh = &sh, .name = 'r', .wait_ms = 5000 };
    struct job w = { .sh = &sh, .name = 'w', .wait_ms = 20 };
    usher_fiber_job jobs[] = { { reader, &r }, { writer, &w } };

    assert_non_null(fs);
    assert_int_equal(pipe(sh.fds), 0);
    usher_fibers_on_wait(fs, mark_round, &sh);
    assert_int_equal(usher_fibers_run(fs, jobs, 2), 0);
    /* both start and wait; the writer wakes, writes and ends; then the reader reads and ends */
    assert_string_equal(sh.log, "rw|W|!R|");
    usher_fibers_free(fs);
    close(sh.fds[0]);
    close(sh.fds[1]);
}

/* 150 ms of blocking work (a sleep, as a library's connect would block). */
static void block_150ms(void *arg)
{
    struct timespec ts = { 0, 150 * 1000000L };

    nanosleep(&ts, NULL);
    *(int *)arg = 1;
}

static void offloader(void *arg)
{
    struct job *j = arg;
    int done = 0;

    note(j->sh, j->name);
    usher_offload(block_150ms, &done);
    j->result = done;
    note(j->sh, (char)(j->name - 'a' + 'A'));
}

/* Blocking work offloaded from a fiber does not hold up the others: a fiber that waits 20 ms
 * beside it finishes first. Outside a fiber, the work runs on the calling thread. */
static void test_offload_lets_the_others_run(void **state)
{
    (void)state;
    usher_fibers *fs = usher_fibers_new();
    struct shared sh = { .n = 0 };
    struct job o = { .sh = &sh, .name = 'o' };
    struct job w = { .sh = NULL, .name = 'w', .wait_ms = 20 };
    usher_fiber_job jobs[] = { { offloader, &o }, { writer, &w } };
    int done = 0;

    assert_non_null(fs);
    assert_int_equal(pipe(sh.fds), 0);
    w.sh = &sh;
    assert_int_equal(usher_fibers_run(fs, jobs, 2), 0);
    assert_string_equal(sh.log, "owWO");
    assert_int_equal(o.result, 1);
    assert_true(w.took_us >= 19000);
    usher_offload(block_150ms, &done);
    assert_int_equal(done, 1);
    usher_fibers_free(fs);
    close(sh.fds[0]);
    close(sh.fds[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_waiting_fiber_lets_the_others_run),
        cmocka_unit_test(test_waits_overlap),
        cmocka_unit_test(test_timeouts_and_reuse),
        cmocka_unit_test(test_outside_a_fiber_it_is_poll),
        cmocka_unit_test(test_no_fibers_inside_a_fiber),
        cmocka_unit_test(test_offload_lets_the_others_run),
        cmocka_unit_test(test_on_wait_runs_between_rounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
