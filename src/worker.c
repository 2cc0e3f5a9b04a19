/*
 * worker.c — worker threads: each serves one lane, normalizes its records, runs the handler
 * chain with per-(event, handler) success tracking and retries, and releases each record as
 * done, dead-lettered or abandoned. The calls of an event run concurrently: those of
 * cooperative handlers as fibers of the worker's thread, any other on a runner thread. Each
 * call position of an event has a Redis connection and curl handles of its own, kept across
 * events; each worker has one more Redis connection, for the markers of its fibers' calls
 * and its metrics.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fiber.h"
#include "log.h"
#include "normalize.h"
#include "pipeline.h"
#include "retry.h"
#include "transport.h"
#include "usher/handler.h"

/* Outcome counts, then the call timings (flush_metrics writes those less often: keep them last). */
enum { M_OK, M_RETRIED, M_FAILED, M_DEAD_LETTERED, M_SKIPPED, M_CALLS, M_BUSY_US, M_COUNT };
static const char *const metric_names[M_COUNT] = { "ok", "retried", "failed", "dead_lettered",
                                                   "skipped", "calls", "busy_us" };

#define MAX_PENDING_REASONS 16
/* Markers read ahead in one MGET, at most this many per event. */
#define MAX_AHEAD 16
/* Upper bound on records a worker takes from its lane at once (one batch). Its records'
 * parsed documents are alive together, about 17 KiB each: at 256, four workers held 4.4 MiB
 * each, past what the CPU caches keep while a batch is read three times (normalize, batch
 * pass, handlers). At 128, a million-record counters run used 3.06-3.30 s of usher CPU
 * against 3.46-3.84 s at 256, and peaked about 10 MiB lower; Redis used 0.1 s more for
 * twice the batch calls. At 64, Redis used 0.3 s more. */
#define MAX_TAKE 128

/* A Redis connection and curl handles, used by one thread at a time: what a call's handler is
 * lent, or the one a worker writes its fibers' markers and its metrics on. */
typedef struct usher_conn {
    usher_app *app;
    char name[32];            /* "worker 3", "worker 3.1": for log lines */
    redisContext *redis;
    usher_transport transport;
    int64_t redis_retry_at;   /* monotonic ms before which we do not reconnect */
    int64_t redis_warned_at;
    int unread;               /* replies to writes sent without waiting (markers, see
                                 usher_once_mark; metrics, see flush_metrics) not read yet */
    bool markers;             /* some of them, or of what is appended, are markers' */
    bool connecting;          /* a fiber is connecting it (conn_redis) */
} usher_conn;

struct usher_ctx {
    usher_conn *conn;         /* the call's */
    usher_conn *marks;        /* a fiber's call: its worker's marker connection, where its
                                 markers are appended for the fibers' scheduler to write out
                                 together (see usher_worker.marks); NULL: on conn, at once */
    const usher_bound_handler *b;
    char reason[128];
    int64_t retry_after_ms;
    int marker_ahead;         /* the event's marker, read before the call (read_markers):
                                 1 absent, 2 present; 0 not read (usher_once_done_before asks) */
};

/* One handler call of an attempt. */
typedef struct usher_call {
    usher_ctx ctx;
    const usher_event *ev;
    size_t h;                 /* the handler's index in the registry */
    usher_result res;
    int64_t us;               /* how long the call took */
} usher_call;

/* A helper thread of one worker: it makes one call of a handler that is not cooperative at a
 * time for its worker, so that the handlers of one event run concurrently. The worker sets
 * job (its connection chosen), then posts go; the runner makes the call, or quits when job is
 * NULL. */
typedef struct usher_runner {
    usher_worker *w;
    pthread_t thread;
    sem_t go;
    usher_call *job;
} usher_runner;

struct usher_worker {
    usher_app *app;
    size_t id;
    pthread_t thread;
    int started;
    usher_lane lane;
    usher_conn conn;
    /* The markers of calls made as fibers (usher_once_mark), appended by them, and the
     * worker's metrics (flush_metrics). Markers set in one round of the fibers go out
     * together before the thread waits for the next (flush_marks); those of the last round
     * go out with the metrics in settle(), in one write, whose replies settle() reads with
     * one read. Never lent to a handler: no call holds its context across a wait, when a
     * write error may drop it. */
    usher_conn marks;
    /* The connections of an event's second, third, ... call (call_conn). */
    usher_conn *xconns;
    /* Fibers for the calls of cooperative handlers; their stacks are made on first need
     * (without memory for them, those calls go to runners). */
    usher_fibers *fibers;
    bool fibers_warned;
    /* Runners, started on first need (an event with a call to make beside another that is
     * not a fiber's). */
    usher_runner *runners;
    size_t nrunners;          /* started */
    atomic_size_t fan_pending; /* jobs handed out and not yet finished */
    sem_t fan_done;           /* posted by the runner that finishes the last of them */
    bool runners_failed;      /* a runner thread could not be started: no more tries */
    usher_call *calls;        /* one per handler: the calls of the current attempt */
    usher_call **fan;         /* one per handler: fan_out's calls for runners */
    usher_fiber_job *jobs;    /* one per handler: fan_out's calls for fibers */
    /* Markers asked for ahead on the second call's connection (see process): of the first
     * event of record ahead_rec, for the handlers ahead_h[0..ahead_n). */
    const struct record *ahead_rec;
    size_t ahead_h[MAX_AHEAD];
    size_t ahead_n;
    bool has_batch;           /* a handler of the registry is a batch handler */
    uint64_t rng;
    /* Metrics not yet written to Redis: per handler, plus dead letters by reason. */
    long long (*metrics)[M_COUNT];
    long long dead_letters;
    struct { char reason[48]; long long n; } reasons[MAX_PENDING_REASONS];
    size_t reason_count;
    int64_t timings_flushed_at; /* when calls and busy_us were last written */
    int handlers_announced;
    /* Records done but not yet released: released by settle(), after their metrics are
     * sent, so that a committed record's metrics are on their way to Redis too. */
    usher_item *done[MAX_TAKE];
    size_t ndone;
};


int64_t usher_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t usher_now_ms(void)
{
    return usher_now_us() / 1000;
}

int64_t usher_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

usher_item *usher_item_new(usher_app *app)
{
    usher_item *it = app->spare_taken;

    if (it == NULL) /* (all of them at once: only this thread takes, so no ABA) */
        it = atomic_exchange_explicit(&app->spare, NULL, memory_order_acquire);
    if (it == NULL)
        return calloc(1, sizeof(*it));
    app->spare_taken = it->next;
    memset(it, 0, sizeof(*it));
    return it;
}

void usher_items_free(usher_app *app)
{
    usher_item *lists[2] = { app->spare_taken, atomic_exchange(&app->spare, NULL) };

    for (int i = 0; i < 2; i++)
        for (usher_item *it = lists[i], *next; it != NULL; it = next) {
            next = it->next;
            free(it);
        }
    app->spare_taken = NULL;
}

/* usher_item_finish of its[0..n) without the wake-up of drain waiters (the caller signals
 * drain_cond), with one lock of each partition's tracker and one update of each shared count
 * for all of them, not one per item. */
static void items_release(usher_app *app, usher_item **its, size_t n, bool done)
{
    usher_partition *parts[MAX_TAKE];
    int per_part[MAX_TAKE];
    int64_t offsets[MAX_TAKE];
    size_t nparts = 0;

    if (n == 0)
        return;
    for (size_t i = 0; i < n; i++) { /* (the items' partitions, each once) */
        size_t j = 0;
        while (j < nparts && parts[j] != its[i]->part)
            j++;
        if (j == nparts) {
            parts[nparts] = its[i]->part;
            per_part[nparts++] = 0;
        }
        per_part[j]++;
    }
    for (size_t j = 0; done && j < nparts; j++) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (its[i]->part == parts[j])
                offsets[k++] = its[i]->meta.offset;
        usher_partition_done_n(parts[j], offsets, k);
    }
    for (size_t i = 0; i < n; i++) {
        usher_item *it = its[i];
        if (it->keyslot >= 0)
            atomic_fetch_sub(&app->keyslots[it->keyslot].inflight, 1);
        atomic_fetch_sub_explicit(&app->lane_load[it->lane].n, 1, memory_order_relaxed);
        rd_kafka_message_destroy(it->msg);
        if (it->headers != it->inline_headers)
            free(it->headers);
        it->next = i + 1 < n ? its[i + 1] : NULL;
    }
    /* kept for usher_item_new (one allocation per record fewer, none freed across threads);
     * from here on the items may be in use again */
    its[n - 1]->next = atomic_load_explicit(&app->spare, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&app->spare, &its[n - 1]->next, its[0],
                                                  memory_order_release, memory_order_relaxed))
        ;
    for (size_t j = 0; j < nparts; j++) {
        atomic_fetch_sub(&parts[j]->pending, per_part[j]);
        usher_partition_unref_n(parts[j], per_part[j]);
    }
    atomic_fetch_sub(&app->inflight, (int)n);
}

/* Wakes the drain waiters. (The lock is taken and dropped before the wake-up, not around it:
 * a waiter either sees the new counts when it checks them under the lock, or is already
 * waiting; and a woken waiter does not find the lock still held and go back to sleep on it.) */
static void drain_signal(usher_app *app)
{
    pthread_mutex_lock(&app->drain_lock);
    pthread_mutex_unlock(&app->drain_lock);
    pthread_cond_broadcast(&app->drain_cond);
}

void usher_item_finish(usher_app *app, usher_item *it, bool done)
{
    items_release(app, &it, 1, done);
    drain_signal(app);
}

/* --- what handle() may call ------------------------------------------------------------- */

/* Drops c's Redis connection (it is reconnected on next use). */
static void conn_drop_redis(usher_conn *c)
{
    if (c->unread > 0)
        usher_warn("%s: Redis connection dropped before it confirmed %d write(s) sent earlier "
                   "(idempotency markers or metrics): a later redelivery may repeat the side "
                   "effects of those events, and metrics may miss them", c->name, c->unread);
    if (c->redis != NULL)
        redisFree(c->redis);
    c->redis = NULL;
    c->unread = 0;
    c->markers = false;
}

/* Reads the replies to c's earlier writes sent without waiting (if connected), so that the
 * next command gets its own. An error among them is logged; an I/O error drops the
 * connection. */
static void conn_read_owed(usher_conn *c)
{
    while (c->redis != NULL && c->unread > 0) {
        redisReply *r = NULL;
        if (redisGetReply(c->redis, (void **)&r) != REDIS_OK) {
            conn_drop_redis(c); /* (warns about the unconfirmed writes) */
            return;
        }
        if (r->type == REDIS_REPLY_ERROR)
            usher_warn("%s: Redis refused a write (idempotency marker or metric): %s", c->name,
                       r->str);
        freeReplyObject(r);
        c->unread--;
    }
    if (c->unread == 0)
        c->markers = false;
}

/* Reads the replies owed on w's marker connection (writing out first what is still appended)
 * when markers are among them; replies owed only to metrics are left for flush_metrics. */
static void marks_read_owed(usher_worker *w)
{
    if (w->marks.markers)
        conn_read_owed(&w->marks);
}

/* Reads the replies owed on the connections w's calls use: every marker they wrote without
 * waiting is then in Redis, whichever connection a later reader uses. Only while w's calls
 * are idle. */
static void worker_read_owed(usher_worker *w)
{
    conn_read_owed(&w->conn);
    marks_read_owed(w);
    for (size_t k = 1; k < w->app->reg->count; k++)
        conn_read_owed(&w->xconns[k - 1]);
}

/* The connection of an event's call k (in handler order among the event's calls): w's own for
 * the first, one each for the others. Events that the same handlers want put each handler on
 * the same connection, so it finds the SMTP session or HTTP keep-alive of its last call. */
static usher_conn *call_conn(usher_worker *w, size_t k)
{
    return k == 0 ? &w->conn : &w->xconns[k - 1];
}

static void conn_free(usher_conn *c)
{
    conn_read_owed(c);
    conn_drop_redis(c);
    usher_transport_free(&c->transport);
}

/* A connect to Redis (blocking, up to redis_connect_timeout_ms), for usher_offload. */
struct redis_open {
    const usher_redis_target *target;
    redisContext *c;
    char *err;
    size_t errn;
};

static void redis_open_connect(void *arg)
{
    struct redis_open *o = arg;

    o->c = usher_redis_connect(o->target, o->err, o->errn);
}

/* c's Redis connection, connected now if it was not (at most every 250 ms); NULL when Redis is
 * unreachable. Replies owed on it stay owed. */
static redisContext *conn_redis(usher_conn *c)
{
    char err[256];
    int64_t now;

    if (c->connecting) { /* (another fiber's connect: its outcome is this one's) */
        while (c->connecting)
            usher_io_wait(NULL, 0, 1);
        return c->redis;
    }
    if (c->redis != NULL)
        return c->redis;
    now = usher_now_ms();
    if (now < c->redis_retry_at)
        return NULL;
    struct redis_open open = { &c->app->redis, NULL, err, sizeof(err) };
    c->connecting = true;
    usher_offload(redis_open_connect, &open); /* (blocking: in a fiber, the others run) */
    c->connecting = false;
    c->redis = open.c;
    if (c->redis == NULL) {
        now = usher_now_ms(); /* (the connect may have taken its whole timeout) */
        c->redis_retry_at = now + 250;
        if (now - c->redis_warned_at >= 5000) {
            usher_warn("%s: %s", c->name, err);
            c->redis_warned_at = now;
        }
    }
    return c->redis;
}

redisContext *usher_redis(usher_ctx *ctx)
{
    conn_read_owed(ctx->conn);
    return conn_redis(ctx->conn);
}

void usher_redis_broken(usher_ctx *ctx)
{
    conn_drop_redis(ctx->conn);
}

usher_transport *usher_ctx_transport(usher_ctx *ctx)
{
    return &ctx->conn->transport;
}

const usher_handler_conf *usher_ctx_conf(usher_ctx *ctx)
{
    return ctx->b->conf;
}

const char *usher_ctx_key_prefix(usher_ctx *ctx)
{
    return ctx->conn->app->cfg->key_prefix;
}

void usher_set_reason(usher_ctx *ctx, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(ctx->reason, sizeof(ctx->reason), fmt, ap);
    va_end(ap);
}

void usher_retry_after(usher_ctx *ctx, int64_t ms)
{
    if (ms > ctx->retry_after_ms)
        ctx->retry_after_ms = ms;
}

void usher_ctx_log(usher_ctx *ctx, usher_log_level level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    usher_logv(level, ctx->b->h->name, fmt, ap);
    va_end(ap);
}

/* Builds the marker key prefix:done:<handler>:<event id>. */
static void once_key(usher_ctx *ctx, const usher_event *ev, char *key, size_t n)
{
    snprintf(key, n, "%s:done:%s:%s", usher_ctx_key_prefix(ctx), ctx->b->h->name,
             ev->id ? ev->id : "");
}

int usher_once_done_before(usher_ctx *ctx, const usher_event *ev)
{
    redisContext *c = NULL;
    redisReply *r = NULL;
    char key[512];
    int rc = -1;

    /* (the flag lives in the shared registry, read by every worker: written once) */
    if (!atomic_load_explicit(&ctx->b->checks_markers, memory_order_relaxed))
        atomic_store_explicit(&((usher_bound_handler *)ctx->b)->checks_markers, true,
                              memory_order_relaxed);
    if (ctx->marker_ahead != 0)
        return ctx->marker_ahead == 2;
    if ((c = usher_redis(ctx)) == NULL)
        return -1;
    once_key(ctx, ev, key, sizeof(key));
    r = redisCommand(c, "EXISTS %s", key);
    if (usher_redis_io_failed(c, r))
        usher_redis_broken(ctx); /* (an error reply is -1 too, the connection kept) */
    else if (r->type == REDIS_REPLY_INTEGER)
        rc = r->integer > 0;
    if (r != NULL)
        freeReplyObject(r);
    return rc;
}

/* Writes out what was appended to conn's Redis connection, without reading the replies.
 * Returns false, with the connection dropped, on an I/O error. */
static bool send_appended(usher_conn *conn)
{
    for (int done = 0; conn->redis != NULL && !done;) {
        if (redisBufferWrite(conn->redis, &done) != REDIS_OK) {
            conn_drop_redis(conn); /* (warns about the unconfirmed writes) */
            return false;
        }
    }
    return true;
}

/* Writes out the markers w's fibers appended (usher_fibers_on_wait: whenever all of them
 * wait), so that markers set in the same round go out in one write. (With none appended,
 * hiredis writes nothing.) */
static void flush_marks(void *arg)
{
    send_appended(&((usher_worker *)arg)->marks);
}

int usher_once_mark(usher_ctx *ctx, const usher_event *ev, long ttl_seconds)
{
    usher_conn *mc = ctx->marks != NULL ? ctx->marks : ctx->conn;
    /* (on the shared connection, replies owed to the other fibers' markers stay unread) */
    redisContext *c = ctx->marks != NULL ? conn_redis(mc) : usher_redis(ctx);
    char key[512];
    int sent = 0;

    if (c != NULL) {
        once_key(ctx, ev, key, sizeof(key));
        /* (a failed append leaves the connection as it was: no memory for the command) */
        sent = redisAppendCommand(c, "SET %s 1 EX %ld", key,
                                  ttl_seconds > 0 ? ttl_seconds : ctx->b->marker_ttl_s) == REDIS_OK;
        if (sent && ctx->marks == NULL) /* (else it goes out before the fibers wait or in settle) */
            sent = send_appended(mc);
        if (sent) {
            mc->unread++; /* read before the connection's next command */
            mc->markers = true;
        }
    }
    if (!sent) {
        usher_ctx_log(ctx, USHER_LOG_WARN, "event %s is done but could not be marked in Redis; "
                      "a later redelivery may repeat it", ev->id ? ev->id : "-");
        return -1;
    }
    return 0;
}

/* Sends, on w's connection conn, one MGET of ev's markers for those of calls[0..n) whose
 * handlers check theirs (usher_once_done_before), if there are at least min_k; their handler
 * indices go to hs[]. Returns how many were asked for (0: nothing sent, also when Redis is
 * unreachable); read_markers reads the reply. Call it only while w's calls are idle: it
 * first reads the replies owed on all of w's connections, so that every marker written by an
 * earlier call (on whichever connection) is in Redis before the MGET reads it. */
static size_t send_markers(usher_worker *w, usher_conn *conn, const usher_call *calls,
                           size_t n, const usher_event *ev, size_t *hs, size_t min_k)
{
    char keys[MAX_AHEAD][512];
    const char *argv[MAX_AHEAD + 1] = { "MGET" };
    size_t lens[MAX_AHEAD + 1] = { 4 }, k = 0;
    usher_ctx ctx = { .conn = conn };
    redisContext *c = NULL;

    for (size_t i = 0; i < n && k < MAX_AHEAD; i++) {
        usher_ctx kc = { .conn = conn, .b = calls[i].ctx.b };
        if (!atomic_load_explicit(&calls[i].ctx.b->checks_markers, memory_order_relaxed))
            continue;
        once_key(&kc, ev, keys[k], sizeof(keys[k]));
        argv[k + 1] = keys[k];
        lens[k + 1] = strlen(keys[k]);
        hs[k++] = calls[i].h;
    }
    if (k == 0 || k < min_k)
        return 0;
    worker_read_owed(w);
    if ((c = usher_redis(&ctx)) == NULL)
        return 0;
    if (redisAppendCommandArgv(c, (int)k + 1, argv, lens) != REDIS_OK || !send_appended(conn))
        return 0;
    return k;
}

/* Reads the reply to send_markers (k markers, of the handlers hs[]) on conn and sets
 * marker_ahead in the calls[0..n) of those handlers; on an error they stay unread (0) and the
 * handlers ask Redis themselves. */
static void read_markers(usher_conn *conn, usher_call *calls, size_t n, const size_t *hs,
                         size_t k)
{
    usher_ctx ctx = { .conn = conn };
    redisReply *r = NULL;

    if (k == 0 || conn->redis == NULL)
        return;
    if (redisGetReply(conn->redis, (void **)&r) != REDIS_OK) {
        usher_redis_broken(&ctx);
        return;
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements == k) {
        for (size_t j = 0; j < k; j++) {
            int t = r->element[j]->type;
            for (size_t i = 0; i < n && (t == REDIS_REPLY_NIL || t == REDIS_REPLY_STRING); i++)
                if (calls[i].h == hs[j])
                    calls[i].ctx.marker_ahead = t == REDIS_REPLY_NIL ? 1 : 2;
        }
    }
    freeReplyObject(r);
}

/* --- metrics ---------------------------------------------------------------------------- */

static void count_reason(usher_worker *w, const char *reason)
{
    w->dead_letters++;
    for (size_t i = 0; i < w->reason_count; i++) {
        if (strcmp(w->reasons[i].reason, reason) == 0) {
            w->reasons[i].n++;
            return;
        }
    }
    if (w->reason_count < MAX_PENDING_REASONS) {
        snprintf(w->reasons[w->reason_count].reason, sizeof(w->reasons[0].reason), "%s", reason);
        w->reasons[w->reason_count++].n = 1;
    }
}

/* Sends the pending metrics on w's marker connection, behind the markers still appended there,
 * in one pipelined write, without waiting for the replies: always the outcome counts (ok,
 * failed, dead letters, ...), which settle() must send before it releases their records; the
 * call timings (calls, busy_us) only with all set or every 250 ms, so that a worker finishing
 * one record at a time does not write three counters per handler for each. With no metric
 * pending it still writes out the appended markers. Metrics are best effort: when Redis is
 * down (or the write fails) they stay pending and go out with the next flush; once written to
 * the connection they are cleared, and a connection lost before Redis read them loses them
 * (with a warning). */
static void flush_metrics(usher_worker *w, bool all)
{
    usher_app *app = w->app;
    const char *prefix = app->cfg->key_prefix;
    redisContext *c = NULL;
    int64_t now = usher_now_ms();
    int upto = all || now - w->timings_flushed_at >= 250 ? M_COUNT : M_CALLS; /* sent: [0, upto) */
    int sent = 0;

    for (size_t h = 0; h < app->reg->count; h++)
        for (int m = 0; m < upto; m++)
            sent += w->metrics[h][m] != 0;
    if (sent == 0 && w->dead_letters == 0 && w->handlers_announced) {
        send_appended(&w->marks);
        return;
    }
    /* Replies owed to earlier metrics alone are read first (they have normally arrived); with
     * markers among them or appended, all are read by settle() after this write, together. */
    if (!w->marks.markers)
        conn_read_owed(&w->marks);
    c = conn_redis(&w->marks);
    if (c == NULL)
        return;
    sent = 0;
    /* (sent counts the commands appended: each owes a reply) */
    if (!w->handlers_announced) {
        for (size_t h = 0; h < app->reg->count; h++)
            sent += redisAppendCommand(c, "SADD %s:handlers %s", prefix,
                                       app->reg->items[h].h->name) == REDIS_OK;
    }
    for (size_t h = 0; h < app->reg->count; h++)
        for (int m = 0; m < upto; m++)
            if (w->metrics[h][m] != 0)
                sent += redisAppendCommand(c, "HINCRBY %s:handler:%s %s %lld", prefix,
                                           app->reg->items[h].h->name, metric_names[m],
                                           w->metrics[h][m]) == REDIS_OK;
    if (w->dead_letters != 0)
        sent += redisAppendCommand(c, "INCRBY %s:dead_lettered %lld", prefix,
                                   w->dead_letters) == REDIS_OK;
    for (size_t i = 0; i < w->reason_count; i++)
        sent += redisAppendCommand(c, "HINCRBY %s:dead_letter_reasons %s %lld", prefix,
                                   w->reasons[i].reason, w->reasons[i].n) == REDIS_OK;
    if (!send_appended(&w->marks))
        return; /* nothing is cleared: a partial write may be repeated, never lost */
    w->marks.unread += sent;
    w->handlers_announced = 1;
    for (size_t h = 0; h < app->reg->count; h++)
        memset(w->metrics[h], 0, (size_t)upto * sizeof(w->metrics[h][0]));
    if (upto == M_COUNT)
        w->timings_flushed_at = now;
    w->dead_letters = 0;
    w->reason_count = 0;
}

/* --- lanes ------------------------------------------------------------------------------ */

static uint64_t fnv1a(const void *data, size_t n, uint64_t h)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* The lane with the fewest items by load[] (the lanes' loads as this hand-out sees them): the
 * prefer lane when it is idle (a worker's own: it then goes on without being woken), else the
 * first idle one from next_lane on. Under dispatch_lock. */
static unsigned least_loaded(usher_app *app, const int *load, int prefer)
{
    unsigned n = (unsigned)app->nworkers, best = app->next_lane % n;
    int best_load = INT_MAX;

    if (prefer >= 0 && load[prefer] == 0)
        return (unsigned)prefer;
    for (unsigned i = 0; i < n; i++) {
        unsigned l = (app->next_lane + i) % n;
        if (load[l] < best_load) {
            best = l;
            best_load = load[l];
            if (best_load == 0)
                break;
        }
    }
    app->next_lane = best + 1;
    return best;
}

/* Where an item goes under the configured ordering, from its key or partition, set once before
 * it is queued as ready (so hand_out, under dispatch_lock and perhaps on a worker whose cache
 * does not hold the key, does not read it): ordering = key and a key: keyslot; partition order:
 * a fixed lane; unordered: lane UINT_MAX (any). */
static void place(usher_app *app, usher_item *it)
{
    uint64_t h = 0xcbf29ce484222325ull;

    it->keyslot = -1;
    it->lane = UINT_MAX;
    switch (app->cfg->ordering) {
    case USHER_ORDER_KEY:
        if (it->meta.key != NULL) {
            it->keyslot = (int)(fnv1a(it->meta.key, it->meta.key_len, h) % USHER_KEY_SLOTS);
            return;
        }
        /* records without a key keep partition order */
        __attribute__((fallthrough));
    case USHER_ORDER_PARTITION:
        h = fnv1a(it->meta.topic, strlen(it->meta.topic), h);
        h = fnv1a(&it->meta.partition, sizeof(it->meta.partition), h);
        it->lane = (unsigned)(h % app->nworkers);
        return;
    case USHER_ORDER_UNORDERED:
    default:
        return;
    }
}

/* The lane of a placed item: its key's lane while the key has a record in flight, its fixed
 * lane, or the least loaded; load[] and prefer as for least_loaded. Under dispatch_lock. */
static unsigned lane_of(usher_app *app, const usher_item *it, const int *load, int prefer)
{
    if (it->keyslot >= 0) {
        usher_keyslot *ks = &app->keyslots[it->keyslot];
        if (atomic_load(&ks->inflight) == 0)
            ks->lane = least_loaded(app, load, prefer);
        atomic_fetch_add(&ks->inflight, 1);
        return ks->lane;
    }
    return it->lane != UINT_MAX ? it->lane : least_loaded(app, load, prefer);
}

/* Appends items[0..n) to the ready queue, then hands ready records out in order while there is
 * room (all of them when all is set), prefer as for least_loaded. */
static void hand_out(usher_app *app, usher_item **items, size_t n, int prefer, bool all)
{
    usher_item *head[256] = { 0 }, *tail[256] = { 0 };
    int load[256], added[256] = { 0 };
    int room, k = 0;

    pthread_mutex_lock(&app->dispatch_lock);
    for (size_t i = 0; i < n; i++) {
        items[i]->next = NULL;
        if (app->ready_tail != NULL)
            app->ready_tail->next = items[i];
        else
            app->ready_head = items[i];
        app->ready_tail = items[i];
    }
    room = all ? INT_MAX : app->cfg->max_inflight - atomic_load(&app->inflight);
    /* The lanes' loads once (workers update them all the time: reading them per item costs a
     * cache miss each), plus what this hand-out adds. Chained per lane first, then one lock
     * and one wake-up per lane. */
    for (size_t l = 0; room > 0 && app->ready_head != NULL && l < app->nworkers; l++)
        load[l] = atomic_load_explicit(&app->lane_load[l].n, memory_order_relaxed);
    for (usher_item *it; k < room && (it = app->ready_head) != NULL; k++) {
        app->ready_head = it->next;
        unsigned l = lane_of(app, it, load, prefer);
        it->lane = l;
        load[l]++;
        added[l]++;
        it->next = NULL;
        if (tail[l] != NULL)
            tail[l]->next = it;
        else
            head[l] = it;
        tail[l] = it;
    }
    if (app->ready_head == NULL)
        app->ready_tail = NULL;
    atomic_store_explicit(&app->ready_n, atomic_load(&app->ready_n) + (int)n - k,
                          memory_order_relaxed);
    atomic_fetch_add(&app->inflight, k);
    for (size_t l = 0; k > 0 && l < app->nworkers; l++) {
        usher_lane *lane = &app->workers[l].lane;
        if (head[l] == NULL)
            continue;
        atomic_fetch_add_explicit(&app->lane_load[l].n, added[l], memory_order_relaxed);
        pthread_mutex_lock(&lane->lock);
        if (lane->tail != NULL)
            lane->tail->next = head[l];
        else
            lane->head = head[l];
        lane->tail = tail[l];
        pthread_mutex_unlock(&lane->lock);
    }
    pthread_mutex_unlock(&app->dispatch_lock);
    /* (after the unlocks: see drain_signal; a worker handing out does not wake itself) */
    for (size_t l = 0; k > 0 && l < app->nworkers; l++)
        if (head[l] != NULL && (int)l != prefer)
            pthread_cond_signal(&app->workers[l].lane.cond);
}

/* True when ready records could go out now (read without the lock: hand_out decides). */
static bool room_for_ready(usher_app *app)
{
    return atomic_load_explicit(&app->ready_n, memory_order_relaxed) > 0 &&
           atomic_load(&app->inflight) < app->cfg->max_inflight;
}

void usher_workers_dispatch(usher_app *app, usher_item **items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        place(app, items[i]);
    if (n > 0 || room_for_ready(app))
        hand_out(app, items, n, -1, false);
}

void usher_workers_dispatch_all(usher_app *app)
{
    hand_out(app, NULL, 0, -1, true);
}

void usher_workers_wake(usher_app *app)
{
    for (size_t i = 0; i < app->nworkers; i++) {
        usher_lane *lane = &app->workers[i].lane;
        pthread_mutex_lock(&lane->lock);
        pthread_cond_broadcast(&lane->cond);
        pthread_mutex_unlock(&lane->lock);
    }
}

/* Takes up to max items in order, waiting up to 250 ms for the first; returns how many. */
static size_t lane_take(usher_worker *w, usher_item **out, size_t max)
{
    usher_lane *lane = &w->lane;
    struct timespec ts;
    size_t n = 0;

    pthread_mutex_lock(&lane->lock);
    if (lane->head == NULL && !atomic_load(&w->app->quit)) {
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 250 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&lane->cond, &lane->lock, &ts);
    }
    while (n < max && lane->head != NULL) {
        out[n++] = lane->head;
        lane->head = lane->head->next;
    }
    if (lane->head == NULL)
        lane->tail = NULL;
    pthread_mutex_unlock(&lane->lock);
    return n;
}

/* True when the item must not run (further): its partition was revoked or usher is quitting. */
static bool must_abandon(usher_worker *w, usher_item *it)
{
    return atomic_load(&it->part->revoked) || atomic_load(&w->app->quit);
}

/* Releases the records that are done (so they can be committed): after their metrics are sent
 * and Redis confirmed every write owed on the connections of the worker's calls (the markers
 * their handlers set: once a record is released, another worker may take the next record of
 * its key and ask for them over its own connection, which Redis does not order after ours).
 * The metrics go out in one write with the markers of the fibers' last round, and one read
 * confirms both. Then hands out ready records into the room made, its own lane first when
 * idle. Call it only while w's calls are idle. */
static void settle(usher_worker *w)
{
    usher_app *app = w->app;

    flush_metrics(w, false);
    if (w->ndone > 0)
        worker_read_owed(w);
    if (w->ndone == 0)
        return;
    items_release(app, w->done, w->ndone, true);
    w->ndone = 0;
    if (room_for_ready(app))
        hand_out(app, NULL, 0, (int)w->id, false);
    /* The poll thread, asleep while the pipeline is full, is woken to refill the ready queue
     * once half of it went out (or to take records into the room made when none were ready),
     * not for every release. (At 64 in flight that was one of the ten context switches per
     * event.) */
    if (atomic_load(&app->drainers) > 0 ||
        atomic_load_explicit(&app->ready_n, memory_order_relaxed) <= app->ready_max / 2)
        drain_signal(app);
}

/* Sleeps until deadline (monotonic ms) unless the item must be abandoned first. Returns false
 * when it must be abandoned. */
static bool backoff_wait(usher_worker *w, usher_item *it, int64_t deadline)
{
    usher_lane *lane = &w->lane;

    settle(w);
    for (;;) {
        int64_t now = usher_now_ms();
        struct timespec ts;
        int64_t until;

        if (must_abandon(w, it))
            return false;
        if (now >= deadline)
            return true;
        until = usher_wall_ms() + (deadline - now < 200 ? deadline - now : 200);
        ts.tv_sec = (time_t)(until / 1000);
        ts.tv_nsec = (long)(until % 1000) * 1000000L;
        pthread_mutex_lock(&lane->lock);
        pthread_cond_timedwait(&lane->cond, &lane->lock, &ts);
        pthread_mutex_unlock(&lane->lock);
    }
}

/* --- the handler chain ------------------------------------------------------------------ */

/* One record while its worker processes it. */
typedef struct record {
    usher_item *it;
    usher_batch batch;
    unsigned char *done;   /* batch.count x handlers: 1 once that handler is through with it */
    unsigned char done_buf[32]; /* done and hfailed when they fit (most records) */
    unsigned char *hfailed;/* per handler: 1 if it failed permanently on an event of r */
    bool rejected;         /* the normalizer rejected the value */
    bool batch_tried;      /* the batch pass already made attempt 1 of the batch handlers */
    int failed;            /* handler that failed permanently, or -1 */
    int retry_handler;     /* first handler asking for a retry in the last attempt, or -1 */
    int64_t wait_floor;    /* largest Retry-After of the last attempt */
    char reason[128];
    char detail[256];
} record;

/* Applies one handler result to (record, event e, handler h). */
static void apply(usher_worker *w, record *r, size_t e, size_t h, usher_result res,
                  const usher_ctx *ctx)
{
    const usher_event *ev = &r->batch.events[e];

    switch (res) {
    case USHER_OK:
    case USHER_SKIP:
        r->done[e * w->app->reg->count + h] = 1;
        w->metrics[h][res == USHER_OK ? M_OK : M_SKIPPED]++;
        break;
    case USHER_RETRY:
        w->metrics[h][M_RETRIED]++;
        if (r->retry_handler < 0) {
            r->retry_handler = (int)h;
            if (r->failed < 0)
                snprintf(r->reason, sizeof(r->reason), "%s",
                         ctx->reason[0] ? ctx->reason : "retry");
        }
        if (ctx->retry_after_ms > r->wait_floor)
            r->wait_floor = ctx->retry_after_ms;
        break;
    case USHER_FAIL:
    default:
        r->done[e * w->app->reg->count + h] = 1; /* never re-run: the record is dead-lettered */
        r->hfailed[h] = 1;
        w->metrics[h][M_FAILED]++;
        if (r->failed < 0) {
            r->failed = (int)h;
            snprintf(r->reason, sizeof(r->reason), "%s",
                     ctx->reason[0] ? ctx->reason : "handler_failed");
            snprintf(r->detail, sizeof(r->detail), "event %s (%s)", ev->id ? ev->id : "-",
                     usher_event_type_name(ev->type));
        }
        break;
    }
}

/* --- runners: the handlers of one event run concurrently ------------------------------- */

/* Makes call arg, one call of a per-event handler, keeping its result and duration (a
 * runner's, a fiber's or the worker's own). */
static void run_call(void *arg)
{
    usher_call *c = arg;
    const usher_bound_handler *b = c->ctx.b;
    int64_t t0 = usher_now_us();

    c->res = b->h->handle(&c->ctx, c->ev, b->state);
    c->us = usher_now_us() - t0;
}

/* Counts one call of handler h that took us microseconds. */
static void count_call(usher_worker *w, size_t h, int64_t us)
{
    w->metrics[h][M_CALLS]++;
    w->metrics[h][M_BUSY_US] += us;
}

static void *runner_main(void *arg)
{
    usher_runner *rn = arg;
    usher_worker *w = rn->w;
    char name[16];

    snprintf(name, sizeof(name), "usher-w%zu.%zu", w->id, (size_t)(rn - w->runners) + 1);
    pthread_setname_np(pthread_self(), name);

    for (;;) {
        while (sem_wait(&rn->go) != 0 && errno == EINTR)
            ;
        usher_call *c = rn->job;
        if (c == NULL)
            break; /* quit */
        run_call(c);
        if (atomic_fetch_sub(&w->fan_pending, 1) == 1) /* (the worker waits for all of them) */
            sem_post(&w->fan_done);
    }
    return NULL;
}

/* Starts runners until want are running (at most one per handler). Returns how many run;
 * fewer than want only when a thread could not be started. */
static size_t ensure_runners(usher_worker *w, size_t want)
{
    while (w->nrunners < want && !w->runners_failed) {
        usher_runner *rn = &w->runners[w->nrunners];
        rn->w = w;
        sem_init(&rn->go, 0, 0); /* (cannot fail with these arguments) */
        if (pthread_create(&rn->thread, NULL, runner_main, rn) != 0) {
            sem_destroy(&rn->go);
            usher_warn("worker %zu: cannot start a runner thread; calls of handlers that are "
                       "not cooperative beyond %zu at once run one after another", w->id,
                       w->nrunners + 1);
            w->runners_failed = true;
            break;
        }
        w->nrunners++;
    }
    return w->nrunners < want ? w->nrunners : want;
}

/* Makes calls[0..n) concurrently, each on its call_conn, and returns when every call has
 * returned. With two or more cooperative calls, those run as fibers of this thread and the
 * others on runners; otherwise (or with no memory for fiber stacks) this thread makes the
 * first call and runners the others. A call left without a runner (a thread could not be
 * started) is made on this thread after the others have started. */
static void fan_out(usher_worker *w, usher_call *calls, size_t n)
{
    usher_fiber_job *co = w->jobs;
    usher_call **other = w->fan;
    size_t nco = 0, nother = 0, mine, par = 0;

    /* Markers the fibers of an earlier event wrote are in Redis before any of these calls
     * asks for one on its own connection (normally read already, by settle). */
    marks_read_owed(w);
    for (size_t k = 0; k < n; k++) {
        calls[k].ctx.conn = call_conn(w, k);
        if (calls[k].ctx.b->cooperative)
            co[nco++] = (usher_fiber_job){ run_call, &calls[k] };
        else
            other[nother++] = &calls[k];
    }
    if (nco == 1) /* (alone, it gains nothing from a fiber) */
        other[nother++] = co[--nco].arg;
    if (nco > 0 && usher_fibers_reserve(w->fibers, nco) != 0) {
        if (!w->fibers_warned)
            usher_warn("worker %zu: no memory for fiber stacks; cooperative calls run on "
                       "runner threads", w->id);
        w->fibers_warned = true;
        while (nco > 0)
            other[nother++] = co[--nco].arg;
    }
    for (size_t k = 0; k < nco; k++)
        ((usher_call *)co[k].arg)->ctx.marks = &w->marks;
    mine = nco == 0 && nother > 0 ? 1 : 0; /* (this thread waits anyway) */
    if (nother > mine)
        par = ensure_runners(w, nother - mine);
    atomic_store(&w->fan_pending, par);
    for (size_t k = 0; k < par; k++) {
        w->runners[k].job = other[mine + k];
        sem_post(&w->runners[k].go);
    }
    if (nco > 0 && usher_fibers_run(w->fibers, co, nco) != 0) /* (reserved: cannot fail) */
        for (size_t k = 0; k < nco; k++)
            run_call(co[k].arg);
    for (size_t k = 0; k < nother; k++)
        if (k < mine || k >= mine + par)
            run_call(other[k]);
    if (par > 0)
        while (sem_wait(&w->fan_done) != 0 && errno == EINTR)
            ;
}

static void batch_pass(usher_worker *w, record *recs, size_t n);

/* Fills calls[] with the per-event handler calls event e of r still needs; returns how many. */
static size_t event_calls(usher_worker *w, const record *r, size_t e, usher_call *calls)
{
    const usher_registry *reg = w->app->reg;
    const usher_event *ev = &r->batch.events[e];
    size_t n = 0;

    for (size_t h = 0; h < reg->count; h++) {
        const usher_bound_handler *b = &reg->items[h];
        if (r->done[e * reg->count + h] || !usher_bound_wants(b, ev->type) ||
            b->h->handle_batch != NULL)
            continue;
        calls[n++] = (usher_call){ .ctx = { .b = b }, .ev = ev, .h = h };
    }
    return n;
}

/* Makes one attempt at every unfinished (event, handler) pair of r. Batch handlers go first,
 * through the batch pass (so a record's events reach them together, retries included), unless
 * skip_batch says the batch pass already made this attempt for them; then the per-event
 * handlers of each event run concurrently, and events one after another, so ordering holds
 * per handler. Before two or more calls, the markers of the handlers that check theirs are
 * read in one round trip (or were read ahead, see process) instead of one in each call. */
static void attempt(usher_worker *w, record *r, bool skip_batch)
{
    usher_call *calls = w->calls;

    if (!skip_batch)
        batch_pass(w, r, 1);
    for (size_t e = 0; e < r->batch.count; e++) {
        size_t n = event_calls(w, r, e, calls);
        if (e == 0 && w->ahead_rec == r) {
            read_markers(call_conn(w, 1), calls, n, w->ahead_h, w->ahead_n);
            w->ahead_rec = NULL;
        } else if (n >= 2) { /* (one MGET for two or more: it saves a round trip) */
            size_t k = send_markers(w, &w->conn, calls, n, calls[0].ev, w->ahead_h, 2);
            read_markers(&w->conn, calls, n, w->ahead_h, k);
        }
        fan_out(w, calls, n);
        for (size_t k = 0; k < n; k++) { /* in handler order, as apply() expects */
            count_call(w, calls[k].h, calls[k].us);
            apply(w, r, e, calls[k].h, calls[k].res, &calls[k].ctx);
        }
    }
}

/* The first handler that still has an event of r to finish, or -1 when r is complete. */
static int unfinished(usher_worker *w, const record *r)
{
    const usher_registry *reg = w->app->reg;

    for (size_t e = 0; e < r->batch.count; e++)
        for (size_t h = 0; h < reg->count; h++)
            if (!r->done[e * reg->count + h] &&
                usher_bound_wants(&reg->items[h], r->batch.events[e].type))
                return (int)h;
    return -1;
}

/* The handlers a dead letter of r is owed to (failed, or still unfinished), as a comma list;
 * a replay of the dead letter runs only these. Counts it in their dead_lettered metric. */
static void owed_handlers(usher_worker *w, const record *r, char *out, size_t n)
{
    const usher_registry *reg = w->app->reg;
    size_t k = 0;

    out[0] = 0;
    for (size_t h = 0; h < reg->count; h++) {
        bool owed = r->hfailed[h];
        for (size_t e = 0; !owed && e < r->batch.count; e++)
            owed = !r->done[e * reg->count + h] &&
                   usher_bound_wants(&reg->items[h], r->batch.events[e].type);
        if (!owed)
            continue;
        w->metrics[h][M_DEAD_LETTERED]++;
        int m = snprintf(out + k, n - k, "%s%s", k ? "," : "", reg->items[h].h->name);
        if (m > 0 && (size_t)m < n - k)
            k += (size_t)m;
    }
}

/* Hands the record to the dead-letter producer, or finishes it as not done if that fails. */
static void dead_letter(usher_worker *w, usher_item *it, const usher_dead_letter *dl)
{
    usher_warn("dead-lettering %s[%" PRId32 "]@%" PRId64 ": %s%s%s (%s)", it->meta.topic,
               it->meta.partition, it->meta.offset, dl->reason, dl->handler[0] ? " in " : "",
               dl->handler, dl->detail ? dl->detail : "");
    count_reason(w, dl->reason);
    if (usher_dlq_send(w->app->dlq, it, dl) != 0) {
        usher_err("cannot queue dead letter for %s[%" PRId32 "]@%" PRId64
                  "; the record stays uncommitted", it->meta.topic, it->meta.partition,
                  it->meta.offset);
        usher_item_finish(w->app, it, false);
    }
}

/* Without a dead-letter topic, a record that cannot succeed blocks its lane until its
 * partition is revoked or usher stops: it is never skipped. */
static void block(usher_worker *w, usher_item *it, const char *what, const char *why)
{
    usher_err("%s[%" PRId32 "]@%" PRId64 ": %s (%s); no [dlq] topic is configured, so the "
              "record is retried until an operator acts", it->meta.topic, it->meta.partition,
              it->meta.offset, what, why);
    while (backoff_wait(w, it, usher_now_ms() + 30000))
        ;
    usher_item_finish(w->app, it, false);
}

/* Runs one record to its end: done, dead-lettered, blocked or abandoned. Attempt 1 of its batch
 * handlers was made by the batch pass when batch_tried is set. */
static void finish_record(usher_worker *w, record *r)
{
    usher_app *app = w->app;
    const usher_registry *reg = app->reg;
    usher_item *it = r->it;
    int64_t first_failure = 0, last_failure = 0, first_failure_mono = 0;

    if (r->rejected) {
        usher_dead_letter dl = { r->batch.reason, r->batch.detail, "", 1, usher_wall_ms(), 0 };
        dl.last_failure_ms = dl.first_failure_ms;
        if (app->dlq != NULL)
            dead_letter(w, it, &dl);
        else
            block(w, it, "rejected", r->batch.reason);
        return;
    }
    for (int attempts = 1;; attempts++) {
        if (attempts > 1 && must_abandon(w, it)) {
            usher_item_finish(app, it, false);
            return;
        }
        if (attempts > 1 || !r->batch_tried) {
            /* (the batch pass's results stand for the first attempt of batch handlers) */
            r->retry_handler = -1;
            r->wait_floor = 0;
        }
        attempt(w, r, attempts == 1 && r->batch_tried);
        int pending = unfinished(w, r);
        if (pending < 0 && r->failed < 0) {
            w->done[w->ndone++] = it; /* released by settle() */
            return;
        }
        if (pending >= 0 && r->retry_handler < 0)
            r->retry_handler = pending; /* cannot happen: a pair is unfinished only after RETRY */
        last_failure = usher_wall_ms();
        if (first_failure == 0) {
            first_failure = last_failure;
            first_failure_mono = usher_now_ms();
        }
        const usher_bound_handler *rb = &reg->items[r->retry_handler >= 0 ? r->retry_handler
                                                                          : r->failed];
        bool give_up = pending < 0 ||
                       usher_retry_exhausted(&rb->retry, attempts,
                                             usher_now_ms() - first_failure_mono);
        if (give_up && app->dlq != NULL) {
            char owed[512], detail[256];
            snprintf(detail, sizeof(detail), "%s after %d attempts", r->reason, attempts);
            owed_handlers(w, r, owed, sizeof(owed));
            usher_dead_letter dl = { pending < 0 ? r->reason : "retries_exhausted",
                                     pending < 0 ? r->detail : detail, owed, attempts,
                                     first_failure, last_failure };
            dead_letter(w, it, &dl);
            return;
        }
        if (pending < 0) {
            block(w, it, "a handler failed permanently", r->reason);
            return;
        }
        int64_t delay = usher_backoff_ms(&rb->retry, attempts + 1, r->wait_floor, &w->rng);
        if (attempts == 1 || attempts % 10 == 0)
            usher_warn("%s[%" PRId32 "]@%" PRId64 ": handler %s asked to retry (%s), attempt "
                       "%d, next in %" PRId64 " ms", it->meta.topic, it->meta.partition,
                       it->meta.offset, rb->h->name, r->reason, attempts, delay);
        if (!backoff_wait(w, it, usher_now_ms() + delay)) {
            usher_item_finish(app, it, false);
            return;
        }
    }
}

/* True when the comma list l[0..n) has the item name. */
static bool list_has(const char *l, size_t n, const char *name)
{
    size_t len = strlen(name);

    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && l[j] != ',')
            j++;
        if (j - i == len && memcmp(l + i, name, len) == 0)
            return true;
        i = j + 1;
    }
    return false;
}

/* A replayed dead letter carries usher-handlers, the handlers it was owed to: only those run
 * (the others already did their part before it was dead-lettered). */
static void restrict_to_replayed(usher_worker *w, record *r)
{
    const usher_registry *reg = w->app->reg;
    const usher_kafka_meta *m = &r->it->meta;

    for (size_t i = 0; i < m->header_count; i++) {
        const usher_header *hd = &m->headers[i];
        if (strcmp(hd->name, "usher-handlers") != 0 || hd->value == NULL)
            continue;
        for (size_t h = 0; h < reg->count; h++)
            if (!list_has(hd->value, hd->value_len, reg->items[h].h->name))
                for (size_t e = 0; e < r->batch.count; e++)
                    r->done[e * reg->count + h] = 1;
        return;
    }
}

/* Calls every batch handler once for all the events of recs that it wants. */
static void batch_pass(usher_worker *w, record *recs, size_t n)
{
    const usher_registry *reg = w->app->reg;
    size_t total = 0, k;

    for (size_t i = 0; i < n; i++)
        total += recs[i].rejected ? 0 : recs[i].batch.count;
    if (total == 0)
        return;
    const usher_event **evs = malloc(total * sizeof(*evs));
    usher_result *res = malloc(total * sizeof(*res));
    size_t *at = malloc(total * 2 * sizeof(*at));
    if (evs == NULL || res == NULL || at == NULL)
        goto out; /* the pairs stay unfinished: retried after a backoff */
    for (size_t h = 0; h < reg->count; h++) {
        const usher_bound_handler *b = &reg->items[h];
        usher_ctx ctx = { .conn = &w->conn, .b = b };
        if (b->h->handle_batch == NULL)
            continue;
        k = 0;
        for (size_t i = 0; i < n; i++) {
            for (size_t e = 0; !recs[i].rejected && e < recs[i].batch.count; e++) {
                if (!usher_bound_wants(b, recs[i].batch.events[e].type) ||
                    recs[i].done[e * reg->count + h])
                    continue;
                evs[k] = &recs[i].batch.events[e];
                at[2 * k] = i;
                at[2 * k + 1] = e;
                k++;
            }
        }
        if (k == 0)
            continue;
        int64_t t0 = usher_now_us();
        b->h->handle_batch(&ctx, evs, k, res, b->state);
        count_call(w, h, usher_now_us() - t0);
        for (size_t j = 0; j < k; j++)
            apply(w, &recs[at[2 * j]], at[2 * j + 1], h, res[j], &ctx);
    }
    for (size_t i = 0; i < n; i++)
        recs[i].batch_tried = true;
out:
    free(evs);
    free(res);
    free(at);
}

/* Zeroed room for r's done and hfailed flags: its own buffer when n bytes fit. */
static unsigned char *done_alloc(record *r, size_t n)
{
    if (n <= sizeof(r->done_buf))
        return r->done_buf; /* zero: the record was cleared */
    return calloc(n, 1);
}

/* Processes records taken together from the lane: normalize all, one batch pass, then each
 * record in lane order. Records whose partition was revoked meanwhile are abandoned. */
static void process(usher_worker *w, usher_item **items, size_t n)
{
    usher_app *app = w->app;
    record recs[MAX_TAKE];
    size_t m = 0;

    for (size_t i = 0; i < n; i++) {
        usher_item *it = items[i];
        record *r = &recs[m];
        const rd_kafka_message_t *msg = it->msg;

        if (i + 1 < n) { /* the next value, while this one is read (it left the cache) */
            const rd_kafka_message_t *next = items[i + 1]->msg;
            uintptr_t line = (uintptr_t)next->payload & ~(uintptr_t)63;
            for (; line < (uintptr_t)next->payload + next->len &&
                   line < (uintptr_t)next->payload + 2048; line += 64)
                __builtin_prefetch((const void *)line);
        }

        if (must_abandon(w, it)) {
            usher_item_finish(app, it, false);
            continue;
        }
        if (usher_item_read_headers(it) != 0) {
            usher_err("out of memory; %s[%" PRId32 "]@%" PRId64 " will be redelivered",
                      it->meta.topic, it->meta.partition, it->meta.offset);
            usher_item_finish(app, it, false);
            continue;
        }
        memset(r, 0, sizeof(*r));
        r->it = it;
        r->failed = -1;
        r->retry_handler = -1;
        it->meta.committed_offset = atomic_load(&it->part->committed);
        if (usher_normalize(&app->cfg->norm, &it->meta, msg->payload, msg->len, &r->batch) != 0) {
            r->rejected = true;
        } else if (app->reg->count > 0 &&
                   (r->done = done_alloc(r, (r->batch.count + 1) * app->reg->count)) == NULL) {
            usher_err("out of memory; %s[%" PRId32 "]@%" PRId64 " will be redelivered",
                      it->meta.topic, it->meta.partition, it->meta.offset);
            usher_batch_release(&r->batch);
            usher_item_finish(app, it, false);
            continue;
        }
        if (r->done != NULL) {
            r->hfailed = r->done + r->batch.count * app->reg->count;
            if (!r->rejected)
                restrict_to_replayed(w, r);
        }
        m++;
    }
    /* While the batch pass runs, the markers of the first record's first event are read on
     * the second call's connection (idle until the fan-out), so that round trip costs no
     * time. Only when that record is the batch's first: nothing else may run between the read
     * and the record's calls (a rejected record before it can wait long to be dead-lettered). */
    if (m > 0 && !recs[0].rejected && recs[0].batch.count > 0 && w->has_batch) {
        size_t n = event_calls(w, &recs[0], 0, w->calls);
        if (n >= 2 &&
            (w->ahead_n = send_markers(w, call_conn(w, 1), w->calls, n, w->calls[0].ev,
                                       w->ahead_h, 1)) > 0)
            w->ahead_rec = &recs[0];
    }
    batch_pass(w, recs, m);
    for (size_t i = 0; i < m; i++) {
        finish_record(w, &recs[i]);
        if (recs[i].done != recs[i].done_buf)
            free(recs[i].done);
        usher_batch_release(&recs[i].batch);
    }
    if (w->ahead_rec != NULL) { /* (not used: its record never made attempt 1) */
        read_markers(call_conn(w, 1), NULL, 0, w->ahead_h, w->ahead_n);
        w->ahead_rec = NULL;
    }
    settle(w);
}

static void *worker_main(void *arg)
{
    usher_worker *w = arg;
    usher_item *items[MAX_TAKE];
    char name[16];

    snprintf(name, sizeof(name), "usher-w%zu", w->id);
    pthread_setname_np(pthread_self(), name);

    for (;;) {
        size_t n = lane_take(w, items, MAX_TAKE);
        if (n == 0) {
            flush_metrics(w, true);
            if (atomic_load(&w->app->quit))
                break;
            continue;
        }
        process(w, items, n);
    }
    /* Anything still queued was never started: leave it uncommitted. */
    for (size_t n; (n = lane_take(w, items, MAX_TAKE)) > 0;)
        for (size_t i = 0; i < n; i++)
            usher_item_finish(w->app, items[i], false);
    flush_metrics(w, true);
    return NULL;
}

int usher_workers_start(usher_app *app, size_t n, char *errstr, size_t errstr_size)
{
    app->workers = calloc(n, sizeof(*app->workers));
    app->keyslots = calloc(USHER_KEY_SLOTS, sizeof(*app->keyslots));
    app->lane_load = aligned_alloc(64, n * sizeof(*app->lane_load));
    if (app->lane_load != NULL)
        memset(app->lane_load, 0, n * sizeof(*app->lane_load));
    if (app->workers == NULL || app->keyslots == NULL || app->lane_load == NULL)
        goto oom;
    app->nworkers = n;
    for (size_t i = 0; i < n; i++) {
        usher_worker *w = &app->workers[i];
        w->app = app;
        w->id = i;
        w->rng = 0x9E3779B97F4A7C15ull ^ ((uint64_t)usher_wall_ms() << 8) ^ (i + 1);
        w->conn.app = app;
        snprintf(w->conn.name, sizeof(w->conn.name), "worker %zu", i);
        w->marks.app = app;
        snprintf(w->marks.name, sizeof(w->marks.name), "markers %zu", i);
        pthread_mutex_init(&w->lane.lock, NULL);
        pthread_cond_init(&w->lane.cond, NULL);
        sem_init(&w->fan_done, 0, 0);
        w->metrics = calloc(app->reg->count ? app->reg->count : 1, sizeof(*w->metrics));
        w->calls = calloc(app->reg->count ? app->reg->count : 1, sizeof(*w->calls));
        w->fan = calloc(app->reg->count ? app->reg->count : 1, sizeof(*w->fan));
        w->jobs = calloc(app->reg->count ? app->reg->count : 1, sizeof(*w->jobs));
        w->runners = calloc(app->reg->count ? app->reg->count : 1, sizeof(*w->runners));
        w->xconns = calloc(app->reg->count ? app->reg->count : 1, sizeof(*w->xconns));
        w->fibers = usher_fibers_new();
        if (w->metrics == NULL || w->calls == NULL || w->fan == NULL || w->jobs == NULL ||
            w->runners == NULL || w->xconns == NULL || w->fibers == NULL)
            goto oom;
        usher_fibers_on_wait(w->fibers, flush_marks, w);
        for (size_t k = 1; k < app->reg->count; k++) {
            w->xconns[k - 1].app = app;
            snprintf(w->xconns[k - 1].name, sizeof(w->xconns[k - 1].name), "worker %u.%u",
                     (unsigned)i, (unsigned)k);
        }
        for (size_t h = 0; h < app->reg->count; h++)
            w->has_batch |= app->reg->items[h].h->handle_batch != NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (pthread_create(&app->workers[i].thread, NULL, worker_main, &app->workers[i]) != 0) {
            snprintf(errstr, errstr_size, "cannot start worker thread %zu", i);
            return -1;
        }
        app->workers[i].started = 1;
    }
    return 0;
oom:
    snprintf(errstr, errstr_size, "out of memory");
    return -1;
}

void usher_workers_join(usher_app *app)
{
    usher_workers_wake(app);
    for (size_t i = 0; i < app->nworkers; i++) {
        usher_worker *w = &app->workers[i];
        if (w->started)
            pthread_join(w->thread, NULL);
        for (size_t k = 0; k < w->nrunners; k++) { /* (idle: the worker has returned) */
            w->runners[k].job = NULL;
            sem_post(&w->runners[k].go);
            pthread_join(w->runners[k].thread, NULL);
            sem_destroy(&w->runners[k].go);
        }
        for (size_t k = 1; w->xconns != NULL && k < app->reg->count; k++)
            conn_free(&w->xconns[k - 1]);
        usher_fibers_free(w->fibers);
        conn_free(&w->conn);
        conn_free(&w->marks);
        free(w->metrics);
        free(w->calls);
        free(w->fan);
        free(w->jobs);
        free(w->runners);
        free(w->xconns);
        pthread_mutex_destroy(&w->lane.lock);
        pthread_cond_destroy(&w->lane.cond);
        sem_destroy(&w->fan_done);
    }
    free(app->workers);
    app->workers = NULL;
    app->nworkers = 0;
    free(app->keyslots);
    app->keyslots = NULL;
    free(app->lane_load);
    app->lane_load = NULL;
}
