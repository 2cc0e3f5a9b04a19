/* report.c — see report.h. */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "log.h"
#include "pipeline.h"
#include "report.h"

struct usher_reporter {
    const usher_config *cfg;
    const usher_redis_target *target;
    redisContext *redis;
    char member[320];
    char host[256];
    int64_t started_ms;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    usher_part_report *parts; /* latest snapshot, under lock */
    size_t nparts;
    int inflight;
    bool fresh; /* a snapshot is waiting */
    bool stop;
};

/* Writes one snapshot; drops the connection on any I/O error (reconnects next time). */
static void write_snapshot(usher_reporter *r, const usher_part_report *parts, size_t n,
                           int inflight)
{
    char err[256];
    int sent = 0;
    int64_t now = usher_wall_ms();

    if (r->redis == NULL && (r->redis = usher_redis_connect(r->target, err, sizeof(err))) == NULL)
        return; /* liveness is best effort: the workers report Redis outages */
    json_t *m = json_pack("{s:s,s:s,s:i,s:s,s:I,s:I,s:I,s:i}", "member", r->member, "group",
                          r->cfg->group_id, "pid", (int)getpid(), "host", r->host, "started_ms",
                          (json_int_t)r->started_ms, "last_seen_ms", (json_int_t)now,
                          "partitions", (json_int_t)n, "inflight", inflight);
    char *ms = json_dumps(m, JSON_COMPACT);
    json_decref(m);
    if (ms != NULL) {
        redisAppendCommand(r->redis, "HSET %s:members %s %s", r->cfg->key_prefix, r->member, ms);
        sent++;
        free(ms);
    }
    for (size_t i = 0; i < n; i++) {
        const usher_part_report *p = &parts[i];
        int64_t lag = p->end >= 0 && p->committed >= 0 ? p->end - p->committed
                    : p->end >= 0 ? p->end : -1;
        if (lag < 0 && p->end >= 0)
            lag = 0;
        json_t *o = json_pack("{s:I,s:I,s:I,s:s,s:I,s:b}", "lag", (json_int_t)lag, "committed",
                              (json_int_t)p->committed, "end", (json_int_t)p->end, "member",
                              r->member, "updated_ms", (json_int_t)now, "stuck", p->stuck);
        char *s = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        if (s == NULL)
            continue;
        redisAppendCommand(r->redis, "HSET %s:lag %s:%" PRId32 " %s", r->cfg->key_prefix,
                           p->topic, p->partition, s);
        sent++;
        free(s);
    }
    for (int i = 0; i < sent; i++) {
        redisReply *rep = NULL;
        if (redisGetReply(r->redis, (void **)&rep) != REDIS_OK) {
            redisFree(r->redis);
            r->redis = NULL;
            return;
        }
        freeReplyObject(rep);
    }
}

static void *reporter_main(void *arg)
{
    usher_reporter *r = arg;
    usher_part_report *mine = NULL;
    size_t n = 0;
    int inflight = 0;

    pthread_setname_np(pthread_self(), "usher-report");

    pthread_mutex_lock(&r->lock);
    while (!r->stop) {
        if (!r->fresh) {
            pthread_cond_wait(&r->cond, &r->lock);
            continue;
        }
        /* Take the snapshot, write it without holding the lock. */
        free(mine);
        mine = r->parts;
        n = r->nparts;
        inflight = r->inflight;
        r->parts = NULL;
        r->nparts = 0;
        r->fresh = false;
        pthread_mutex_unlock(&r->lock);
        write_snapshot(r, mine, n, inflight);
        pthread_mutex_lock(&r->lock);
    }
    pthread_mutex_unlock(&r->lock);
    free(mine);
    return NULL;
}

usher_reporter *usher_reporter_start(const usher_config *cfg, const usher_redis_target *redis)
{
    usher_reporter *r = calloc(1, sizeof(*r));

    if (r == NULL)
        return NULL;
    r->cfg = cfg;
    r->target = redis;
    r->started_ms = usher_wall_ms();
    if (gethostname(r->host, sizeof(r->host) - 1) != 0)
        snprintf(r->host, sizeof(r->host), "unknown");
    snprintf(r->member, sizeof(r->member), "%s:%d", r->host, (int)getpid());
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    if (pthread_create(&r->thread, NULL, reporter_main, r) != 0) {
        pthread_mutex_destroy(&r->lock);
        pthread_cond_destroy(&r->cond);
        free(r);
        return NULL;
    }
    return r;
}

void usher_reporter_publish(usher_reporter *r, const usher_part_report *parts, size_t n,
                            int inflight)
{
    usher_part_report *copy = malloc((n ? n : 1) * sizeof(*copy));

    if (copy == NULL)
        return;
    memcpy(copy, parts, n * sizeof(*copy));
    pthread_mutex_lock(&r->lock);
    free(r->parts);
    r->parts = copy;
    r->nparts = n;
    r->inflight = inflight;
    r->fresh = true;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

void usher_reporter_stop(usher_reporter *r, const usher_part_report *parts, size_t n)
{
    if (r == NULL)
        return;
    pthread_mutex_lock(&r->lock);
    r->stop = true;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
    pthread_join(r->thread, NULL);
    if (n > 0)
        write_snapshot(r, parts, n, 0);
    if (r->redis != NULL) {
        redisReply *rep = redisCommand(r->redis, "HDEL %s:members %s", r->cfg->key_prefix,
                                       r->member);
        if (rep != NULL)
            freeReplyObject(rep);
        redisFree(r->redis);
    }
    free(r->parts);
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->cond);
    free(r);
}
