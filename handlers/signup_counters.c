/*
 * signup_counters — live event metrics in Redis, exact under redelivery.
 *
 * For every event it wants (default: all types) it maintains:
 *   PREFIX:events:<type>            HASH  total -> N, <YYYY-MM-DD> -> N   (UTC day of the event)
 *   PREFIX:uu:<type>:<YYYY-MM-DD>   HyperLogLog of user ids (unique users per day)
 *
 * Exactly once: before counting an event, the script adds "<offset>:<index>" to its partition's
 * fence
 *   PREFIX:applied:<topic>:<partition>  ZSET member "<offset>:<event index>", score offset
 * and counts the event only if it was not there, so a record redelivered after a crash or a
 * rebalance is not counted twice. Offsets below the partition's committed offset can never be
 * redelivered, so the script trims them: a fence holds about what is in flight.
 *
 * It is a batch handler: one script call applies a whole batch of events (from any records and
 * partitions) in one round trip, adding up the counts per type and day inside Redis.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/sha.h>

#include "usher/handler.h"

/* KEYS: the fences of the batch's partitions. ARGV: key prefix; one committed offset per
 * fence; then per event: fence index, member, offset, type, day, user id ("" = none). Counter
 * and HyperLogLog keys derive from the prefix (usher does not support Redis Cluster). Returns
 * how many events were new. */
static const char count_script[] =
    "local nf = #KEYS\n"
    "local prefix = ARGV[1]\n"
    "for i = 1, nf do\n"
    "  local c = tonumber(ARGV[1 + i])\n"
    "  if c > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', '(' .. c) end\n"
    "end\n"
    "local counts, users, new = {}, {}, 0\n"
    "for a = nf + 2, #ARGV, 6 do\n"
    "  if redis.call('ZADD', KEYS[tonumber(ARGV[a])], 'NX', ARGV[a + 2], ARGV[a + 1]) == 1 then\n"
    "    local td = ARGV[a + 3] .. ':' .. ARGV[a + 4]\n"
    "    counts[td] = (counts[td] or 0) + 1\n"
    "    if ARGV[a + 5] ~= '' then\n"
    "      users[td] = users[td] or {}\n"
    "      table.insert(users[td], ARGV[a + 5])\n"
    "    end\n"
    "    new = new + 1\n"
    "  end\n"
    "end\n"
    "local totals = {}\n"
    "for td, n in pairs(counts) do\n"
    "  local t, d = string.match(td, '^(.*):([^:]*)$')\n"
    "  redis.call('HINCRBY', prefix .. ':events:' .. t, d, n)\n"
    "  totals[t] = (totals[t] or 0) + n\n"
    "end\n"
    "for t, n in pairs(totals) do redis.call('HINCRBY', prefix .. ':events:' .. t, 'total', n) end\n"
    "for td, list in pairs(users) do\n"
    "  for i = 1, #list, 1000 do\n"
    "    redis.call('PFADD', prefix .. ':uu:' .. td, unpack(list, i, math.min(i + 999, #list)))\n"
    "  end\n"
    "end\n"
    "return new\n";

#define ARGS_PER_EVENT 6

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

/* Runs the script by SHA, sending its text only when Redis does not know it yet. argv[0..1]
 * are filled here. */
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

/* Per-event strings, formatted once. */
typedef struct event_args {
    char fence_index[24];
    char member[48];
    char offset[24];
    char day[11];
} event_args;

static void handle_batch(usher_ctx *ctx, const usher_event *const *events, size_t n,
                         usher_result *results, void *state)
{
    const char *prefix = usher_ctx_key_prefix(ctx);
    redisContext *c = usher_redis(ctx);
    redisReply *r = NULL;
    const usher_kafka_meta **fences = NULL; /* one per distinct topic/partition */
    char (*fence_keys)[320] = NULL, (*committed)[24] = NULL;
    event_args *ea = NULL;
    const char **argv = NULL;
    size_t *lens = NULL, nf = 0, argc = 0;
    usher_result res = USHER_RETRY;

    if (c == NULL) {
        usher_set_reason(ctx, "redis_unavailable");
        goto out;
    }
    fences = calloc(n, sizeof(*fences));
    fence_keys = calloc(n, sizeof(*fence_keys));
    committed = calloc(n, sizeof(*committed));
    ea = calloc(n, sizeof(*ea));
    argv = calloc(4 + 2 * n + ARGS_PER_EVENT * n, sizeof(*argv));
    lens = calloc(4 + 2 * n + ARGS_PER_EVENT * n, sizeof(*lens));
    if (!fences || !fence_keys || !committed || !ea || !argv || !lens) {
        usher_set_reason(ctx, "out_of_memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const usher_kafka_meta *k = events[i]->kafka;
        size_t f = 0;
        while (f < nf && !(fences[f]->partition == k->partition &&
                           strcmp(fences[f]->topic, k->topic) == 0))
            f++;
        if (f == nf) {
            fences[nf] = k;
            snprintf(fence_keys[nf], sizeof(fence_keys[0]), "%s:applied:%s:%" PRId32, prefix,
                     k->topic, k->partition);
            nf++;
        }
        if (k->committed_offset > fences[f]->committed_offset)
            fences[f] = k; /* keep the newest committed offset seen for the partition */
        snprintf(ea[i].fence_index, sizeof(ea[i].fence_index), "%zu", f + 1);
        snprintf(ea[i].member, sizeof(ea[i].member), "%" PRId64 ":%u", k->offset,
                 events[i]->index);
        snprintf(ea[i].offset, sizeof(ea[i].offset), "%" PRId64, k->offset);
        utc_day(events[i]->occurred_at_ms, ea[i].day);
    }
    argc = 2;
    char nkeys[24];
    snprintf(nkeys, sizeof(nkeys), "%zu", nf);
    argv[argc++] = nkeys;
    for (size_t f = 0; f < nf; f++)
        argv[argc++] = fence_keys[f];
    argv[argc++] = prefix;
    for (size_t f = 0; f < nf; f++) {
        snprintf(committed[f], sizeof(committed[0]), "%" PRId64, fences[f]->committed_offset);
        argv[argc++] = committed[f];
    }
    for (size_t i = 0; i < n; i++) {
        argv[argc++] = ea[i].fence_index;
        argv[argc++] = ea[i].member;
        argv[argc++] = ea[i].offset;
        argv[argc++] = usher_event_type_name(events[i]->type);
        argv[argc++] = ea[i].day;
        argv[argc++] = events[i]->user.id ? events[i]->user.id : "";
    }
    for (size_t i = 2; i < argc; i++)
        lens[i] = strlen(argv[i]);
    r = run_script(c, state, (int)argc, argv, lens);
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
    for (size_t i = 0; i < n; i++)
        results[i] = res;
    if (r != NULL)
        freeReplyObject(r);
    free(fences);
    free(fence_keys);
    free(committed);
    free(ea);
    free(argv);
    free(lens);
}

const usher_handler usher_handler_signup_counters = {
    .abi_version = USHER_HANDLER_ABI_VERSION,
    .name = "signup_counters",
    .description = "per-type totals, per-UTC-day counts and per-day unique users in Redis",
    .default_events = "*",
    .config_keys = NULL,
    .init = init,
    .handle_batch = handle_batch,
    .destroy = destroy,
};
