/*
 * signup_counters — live event metrics in Redis, exact under redelivery.
 *
 * For every event it wants (default: all types) it adds, in one atomic Lua script:
 *   PREFIX:events:<type>            HASH  total -> N, <YYYY-MM-DD> -> N   (UTC day of the event)
 *   PREFIX:uu:<type>:<YYYY-MM-DD>   HyperLogLog of user ids (unique users per day)
 * Exactly once: the script first records "<offset>:<index>" in the partition's fence
 *   PREFIX:applied:<topic>:<partition>  ZSET member "<offset>:<event index>", score offset
 * and does nothing if it is already there, so a record redelivered after a crash or a rebalance
 * is not counted twice. Entries below the partition's committed offset can never be
 * redelivered, so the script trims them: the fence stays as small as what is in flight.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/sha.h>

#include "usher/handler.h"

static const char count_script[] =
    "local committed = tonumber(ARGV[3])\n"
    "if committed > 0 then\n"
    "  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. committed)\n"
    "end\n"
    "if redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1]) == 0 then return 0 end\n"
    "redis.call('HINCRBY', KEYS[2], 'total', 1)\n"
    "redis.call('HINCRBY', KEYS[2], ARGV[4], 1)\n"
    "if ARGV[5] ~= '' then redis.call('PFADD', KEYS[3], ARGV[5]) end\n"
    "return 1\n";

/* Formats the UTC day of an epoch-ms time as YYYY-MM-DD. */
static void utc_day(int64_t ms, char day[11])
{
    time_t s = (time_t)(ms >= 0 ? ms / 1000 : 0);
    struct tm tm;

    gmtime_r(&s, &tm);
    strftime(day, 11, "%Y-%m-%d", &tm);
}

/* The state is the script's SHA1 in hex, for EVALSHA. */
static int init(const usher_handler_conf *conf, void **state, char *errstr, size_t errstr_size)
{
    unsigned char md[SHA_DIGEST_LENGTH];
    char *sha = malloc(2 * SHA_DIGEST_LENGTH + 1);

    (void)conf;
    if (sha == NULL) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    SHA1((const unsigned char *)count_script, sizeof(count_script) - 1, md);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
        sprintf(sha + 2 * i, "%02x", md[i]);
    *state = sha;
    return 0;
}

static void destroy(void *state)
{
    free(state);
}

/* Runs the script by SHA, sending its text only when Redis does not know it yet. */
static redisReply *run_script(redisContext *c, const char *sha, int argc, const char **argv,
                              size_t *lens)
{
    redisReply *r = NULL;

    argv[0] = "EVALSHA";
    argv[1] = sha;
    lens[0] = 7;
    lens[1] = strlen(sha);
    r = redisCommandArgv(c, argc, argv, lens);
    if (r == NULL || r->type != REDIS_REPLY_ERROR || strncmp(r->str, "NOSCRIPT", 8) != 0)
        return r;
    freeReplyObject(r);
    argv[0] = "EVAL";
    argv[1] = count_script;
    lens[0] = 4;
    lens[1] = sizeof(count_script) - 1;
    return redisCommandArgv(c, argc, argv, lens);
}

static usher_result handle(usher_ctx *ctx, const usher_event *ev, void *state)
{
    const char *prefix = usher_ctx_key_prefix(ctx);
    const char *type = usher_event_type_name(ev->type);
    redisContext *c = usher_redis(ctx);
    redisReply *r = NULL;
    char fence[512], events_key[256], hll_key[256], member[48], offset[24], committed[24];
    char day[11];
    const char *argv[11];
    size_t lens[11];
    usher_result res = USHER_RETRY;

    if (c == NULL) {
        usher_set_reason(ctx, "redis_unavailable");
        return USHER_RETRY;
    }
    utc_day(ev->occurred_at_ms, day);
    snprintf(fence, sizeof(fence), "%s:applied:%s:%" PRId32, prefix, ev->kafka->topic,
             ev->kafka->partition);
    snprintf(events_key, sizeof(events_key), "%s:events:%s", prefix, type);
    snprintf(hll_key, sizeof(hll_key), "%s:uu:%s:%s", prefix, type, day);
    snprintf(member, sizeof(member), "%" PRId64 ":%u", ev->kafka->offset, ev->index);
    snprintf(offset, sizeof(offset), "%" PRId64, ev->kafka->offset);
    snprintf(committed, sizeof(committed), "%" PRId64, usher_ctx_committed_offset(ctx));
    argv[2] = "3";
    argv[3] = fence;
    argv[4] = events_key;
    argv[5] = hll_key;
    argv[6] = member;
    argv[7] = offset;
    argv[8] = committed;
    argv[9] = day;
    argv[10] = ev->user.id ? ev->user.id : "";
    for (int i = 2; i < 11; i++)
        lens[i] = strlen(argv[i]);
    r = run_script(c, state, 11, argv, lens);
    if (r == NULL || c->err) {
        usher_set_reason(ctx, "redis_io");
        usher_redis_broken(ctx);
        goto out;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        /* LOADING, BUSY, OOM, READONLY...: all transient for a counter. */
        usher_set_reason(ctx, "redis_error");
        usher_ctx_log(ctx, USHER_LOG_WARN, "redis: %s", r->str);
        goto out;
    }
    res = USHER_OK;
out:
    if (r != NULL)
        freeReplyObject(r);
    return res;
}

const usher_handler usher_handler_signup_counters = {
    .abi_version = USHER_HANDLER_ABI_VERSION,
    .name = "signup_counters",
    .description = "per-type totals, per-UTC-day counts and per-day unique users in Redis",
    .default_events = "*",
    .config_keys = NULL,
    .init = init,
    .handle = handle,
    .destroy = destroy,
};
