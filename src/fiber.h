/*
 * fiber.h — calls that share one thread and wait for their I/O together.
 *
 * usher_fibers_run runs n functions on the calling thread, each on a stack of its own. When
 * one waits in usher_io_wait, the others run on; once all of them wait, the thread sleeps in
 * one poll(2) over everything they wait for and resumes those whose sockets are ready. A
 * worker makes the concurrent calls of an event this way (usher_http and usher_smtp_send wait
 * in usher_io_wait), with no thread per call to hand them to and wait for.
 */
#ifndef USHER_FIBER_H
#define USHER_FIBER_H

#include <poll.h>
#include <stddef.h>

typedef struct usher_fibers usher_fibers;

/* A set of fibers for one thread (its stacks are made on first need); NULL when out of
 * memory. */
usher_fibers *usher_fibers_new(void);
/* Frees the set; fs may be NULL. Not while it runs. */
void usher_fibers_free(usher_fibers *fs);

/* One function for a fiber to run. */
typedef struct usher_fiber_job {
    void (*fn)(void *);
    void *arg;
} usher_fiber_job;

/* Runs jobs[i].fn(jobs[i].arg) for i < n as fibers of the calling thread, starting them in
 * that order, and returns 0 once all have returned. Returns -1, having run none of them, when
 * their stacks cannot be made or when called from a fiber. */
int usher_fibers_run(usher_fibers *fs, const usher_fiber_job *jobs, size_t n);

/* Has fn(arg) called on the thread's own stack whenever all fibers of a run that are not done
 * wait: before the thread sleeps in poll. (For work the fibers leave to be done together, such
 * as writes they buffered; what the last of them leave is the caller's to do after the run.) */
void usher_fibers_on_wait(usher_fibers *fs, void (*fn)(void *), void *arg);

/* Gives the set stacks for n fibers ahead of usher_fibers_run; -1 when out of memory. */
int usher_fibers_reserve(usher_fibers *fs, size_t n);

/* poll(2), with the same arguments and results; in a fiber, the thread's other fibers run
 * meanwhile. */
int usher_io_wait(struct pollfd *fds, nfds_t n, int timeout_ms);

/* Calls fn(arg) and returns when it has returned. In a fiber, fn runs on a thread of its own
 * while this one waits in usher_io_wait, so that blocking work (a library's connect) does not
 * hold up the thread's other fibers; fn must not touch what they use. Elsewhere, or when no
 * thread can be started, fn runs here. */
void usher_offload(void (*fn)(void *), void *arg);

#endif
