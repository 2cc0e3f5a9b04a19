/*
 * fiber.c — see fiber.h. Fibers are ucontext(3) contexts on mmap'd stacks with a guard region
 * below; a set belongs to one thread and runs only inside usher_fibers_run. A fiber is made
 * once and then loops: it runs a job, switches back, and is switched into again with the next
 * (so a run costs no getcontext, which is a system call).
 */
#include "fiber.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include "pipeline.h"

#if defined(__SANITIZE_ADDRESS__)
#define FIBER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FIBER_ASAN 1
#endif
#endif
#ifdef FIBER_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

/* A fiber's stack: what a handler call needs (libcurl and OpenSSL included: about 10 KiB for a
 * TLS handshake) with room to spare; only the pages it touches take memory. */
#define FIBER_STACK_BYTES (512u * 1024u)
/* Below it, inaccessible: an overflow faults, even from a frame larger than a page. */
#define FIBER_GUARD_BYTES (64u * 1024u)

enum { F_RUN, F_WAIT, F_DONE };

typedef struct usher_fiber {
    ucontext_t uc;
    char *stack;               /* FIBER_STACK_BYTES, above the guard */
    void (*fn)(void *);        /* its job */
    void *arg;
    int state;                 /* F_* */
    struct pollfd *fds;        /* F_WAIT: what usher_io_wait waits for */
    nfds_t nfds;
    int64_t deadline_us;       /* F_WAIT: monotonic; -1: none */
    int ready;                 /* what usher_io_wait returns */
    int err;                   /* its errno when ready < 0 */
    void *asan_fake;           /* (AddressSanitizer's bookkeeping of the switch) */
} usher_fiber;

struct usher_fibers {
    ucontext_t home;           /* the thread's own context, where the scheduler runs */
    usher_fiber **f;           /* (each allocated once: a saved ucontext_t must not move) */
    size_t cap;                /* fibers with a stack */
    struct pollfd *all;        /* the scheduler's poll set */
    size_t allcap;
    void (*on_wait)(void *);   /* usher_fibers_on_wait */
    void *on_wait_arg;
    const void *home_bottom;   /* (AddressSanitizer: the thread's own stack) */
    size_t home_size;
    void *home_fake;
};

static _Thread_local usher_fibers *cur_set;
static _Thread_local usher_fiber *cur;

static void asan_start(void **fake, const void *bottom, size_t size)
{
#ifdef FIBER_ASAN
    __sanitizer_start_switch_fiber(fake, bottom, size);
#else
    (void)fake, (void)bottom, (void)size;
#endif
}

static void asan_finish(void *fake, const void **bottom, size_t *size)
{
#ifdef FIBER_ASAN
    __sanitizer_finish_switch_fiber(fake, bottom, size);
#else
    (void)fake, (void)bottom, (void)size;
#endif
}

/* Runs f until it waits or returns. */
static void switch_in(usher_fibers *fs, usher_fiber *f)
{
    cur = f;
    asan_start(&fs->home_fake, f->stack, FIBER_STACK_BYTES);
    swapcontext(&fs->home, &f->uc);
    asan_finish(fs->home_fake, NULL, NULL);
    cur = NULL;
}

/* Back to the scheduler; returns when the fiber is resumed, to go on waiting or with its next
 * job. */
static void switch_out(usher_fibers *fs, usher_fiber *f)
{
    asan_start(&f->asan_fake, fs->home_bottom, fs->home_size);
    swapcontext(&f->uc, &fs->home);
    asan_finish(f->asan_fake, &fs->home_bottom, &fs->home_size);
}

static void fiber_main(void)
{
    usher_fibers *fs = cur_set;
    usher_fiber *f = cur;

    asan_finish(NULL, &fs->home_bottom, &fs->home_size);
    for (;;) {
        f->fn(f->arg);
        f->state = F_DONE;
        switch_out(fs, f); /* (a fiber belongs to one set, run on one thread) */
    }
}

usher_fibers *usher_fibers_new(void)
{
    return calloc(1, sizeof(usher_fibers));
}

void usher_fibers_free(usher_fibers *fs)
{
    if (fs == NULL)
        return;
    for (size_t i = 0; i < fs->cap; i++) { /* (a made fiber waits for a job: nothing to end) */
        munmap(fs->f[i]->stack - FIBER_GUARD_BYTES, FIBER_GUARD_BYTES + FIBER_STACK_BYTES);
        free(fs->f[i]);
    }
    free(fs->f);
    free(fs->all);
    free(fs);
}

void usher_fibers_on_wait(usher_fibers *fs, void (*fn)(void *), void *arg)
{
    fs->on_wait = fn;
    fs->on_wait_arg = arg;
}

int usher_fibers_reserve(usher_fibers *fs, size_t n)
{
    if (n <= fs->cap)
        return 0;
    usher_fiber **nf = realloc(fs->f, n * sizeof(*nf));
    if (nf == NULL)
        return -1;
    fs->f = nf;
    while (fs->cap < n) {
        usher_fiber *f = calloc(1, sizeof(*f));
        char *m = mmap(NULL, FIBER_GUARD_BYTES + FIBER_STACK_BYTES, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_NORESERVE, -1, 0);
        if (f == NULL || m == MAP_FAILED || mprotect(m, FIBER_GUARD_BYTES, PROT_NONE) != 0) {
            free(f);
            if (m != MAP_FAILED)
                munmap(m, FIBER_GUARD_BYTES + FIBER_STACK_BYTES);
            return -1;
        }
        f->stack = m + FIBER_GUARD_BYTES;
        getcontext(&f->uc); /* (made once: it then waits in fiber_main for each job) */
        f->uc.uc_stack.ss_sp = f->stack;
        f->uc.uc_stack.ss_size = FIBER_STACK_BYTES;
        f->uc.uc_link = NULL;
        makecontext(&f->uc, fiber_main, 0);
        fs->f[fs->cap++] = f;
    }
    return 0;
}

/* The poll timeout until deadline_us (-1: none), rounded up to whole milliseconds. */
static int timeout_until(int64_t deadline_us, int64_t now_us)
{
    if (deadline_us < 0)
        return -1;
    if (deadline_us <= now_us)
        return 0;
    int64_t ms = (deadline_us - now_us + 999) / 1000;
    return ms < INT_MAX ? (int)ms : INT_MAX;
}

int usher_fibers_run(usher_fibers *fs, const usher_fiber_job *jobs, size_t n)
{
    if (cur != NULL || usher_fibers_reserve(fs, n) != 0)
        return -1;
    cur_set = fs;
    for (size_t i = 0; i < n; i++) {
        fs->f[i]->fn = jobs[i].fn;
        fs->f[i]->arg = jobs[i].arg;
        fs->f[i]->state = F_RUN;
    }
    for (;;) {
        size_t nfds = 0, waiting = 0;
        int64_t first = -1;
        for (size_t i = 0; i < n; i++)
            if (fs->f[i]->state == F_RUN)
                switch_in(fs, fs->f[i]);
        for (size_t i = 0; i < n; i++) {
            usher_fiber *f = fs->f[i];
            if (f->state != F_WAIT)
                continue;
            waiting++;
            nfds += f->nfds;
            if (f->deadline_us >= 0 && (first < 0 || f->deadline_us < first))
                first = f->deadline_us;
        }
        if (waiting == 0)
            break;
        if (fs->on_wait != NULL)
            fs->on_wait(fs->on_wait_arg);
        int r = -1, err = ENOMEM;
        if (nfds > fs->allcap) {
            struct pollfd *na = realloc(fs->all, nfds * sizeof(*na));
            if (na != NULL) {
                fs->all = na;
                fs->allcap = nfds;
            }
        }
        if (nfds <= fs->allcap) {
            size_t k = 0;
            for (size_t i = 0; i < n; i++)
                if (fs->f[i]->state == F_WAIT)
                    for (nfds_t j = 0; j < fs->f[i]->nfds; j++)
                        fs->all[k++] = fs->f[i]->fds[j];
            r = poll(fs->all, (nfds_t)nfds, timeout_until(first, usher_now_us()));
            err = errno;
            if (r < 0 && err == EINTR)
                continue; /* (a signal: wait again, with the deadlines as they were) */
        }
        int64_t now = usher_now_us();
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            usher_fiber *f = fs->f[i];
            int ready = 0;
            if (f->state != F_WAIT)
                continue;
            for (nfds_t j = 0; j < f->nfds; j++, k++) {
                f->fds[j].revents = r < 0 ? 0 : fs->all[k].revents;
                ready += f->fds[j].revents != 0;
            }
            if (r < 0 || ready > 0 || (f->deadline_us >= 0 && f->deadline_us <= now)) {
                f->ready = r < 0 ? -1 : ready;
                f->err = err;
                f->state = F_RUN;
            }
        }
    }
    cur_set = NULL;
    return 0;
}

int usher_io_wait(struct pollfd *fds, nfds_t n, int timeout_ms)
{
    usher_fiber *f = cur;

    if (f == NULL || timeout_ms == 0)
        return poll(fds, n, timeout_ms);
    f->fds = fds;
    f->nfds = n;
    f->deadline_us = timeout_ms < 0 ? -1 : usher_now_us() + (int64_t)timeout_ms * 1000;
    f->state = F_WAIT;
    switch_out(cur_set, f);
    if (f->ready < 0)
        errno = f->err;
    return f->ready;
}

/* What usher_offload's thread runs: fn, then a write to the eventfd its fiber waits on. */
struct offload {
    void (*fn)(void *);
    void *arg;
    int efd;
};

static void *offload_main(void *arg)
{
    struct offload *o = arg;
    uint64_t one = 1;

    o->fn(o->arg);
    while (write(o->efd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
    return NULL;
}

void usher_offload(void (*fn)(void *), void *arg)
{
    struct offload o = { fn, arg, -1 };
    pthread_t th;

    if (cur == NULL || (o.efd = eventfd(0, EFD_CLOEXEC)) < 0) {
        fn(arg);
        return;
    }
    if (pthread_create(&th, NULL, offload_main, &o) != 0) {
        close(o.efd);
        fn(arg);
        return;
    }
    for (;;) { /* (should poll fail, the join waits instead) */
        struct pollfd pfd = { .fd = o.efd, .events = POLLIN };
        int r = usher_io_wait(&pfd, 1, -1);
        if (r > 0 || (r < 0 && errno != EINTR))
            break;
    }
    pthread_join(th, NULL);
    close(o.efd);
}
