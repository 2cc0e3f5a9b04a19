/*
 * signup_counters — live event metrics in Redis, exact under redelivery.
 *
 * For every event it wants (default: all types) it maintains:
 *   PREFIX:events:<type>            HASH  total -> N, <YYYY-MM-DD> -> N   (UTC day of the event)
 *   PREFIX:uu:<type>:<YYYY-MM-DD>   HyperLogLog of user ids (unique users per day)
 *
 * Exactly once: before counting a record's events, the script sets the record's bit in its
 * partition's fence
 *   PREFIX:fence:<topic>:<partition>:<block>   bitmap, bit (offset mod 2^20) of block offset/2^20
 * and counts them only if the bit was clear, so a record redelivered after a crash or a
 * rebalance is not counted twice (usher passes all the events of a record in one call, retries
 * included). One BITFIELD per fence applies a whole batch. Offsets below the partition's
 * committed offset can never be redelivered, so the script deletes the block below the
 * committed offset's block; every block also expires FENCE_TTL_S after its last write, so
 * blocks skipped by a jump in offsets do not stay. A block holds at most 128 KiB.
 *
 * It is a batch handler: one script call applies a whole batch of events (from any records and
 * partitions) in one round trip, adding up the counts per type and day inside Redis.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/sha.h>

#include "usher/handler.h"

/* KEYS: the fence blocks of the batch's records, then the blocks to delete. ARGV: number of
 * fence blocks, key prefix, fence TTL, number of records; per record: fence index, bit; per
 * event: record index, "<type>:<day>", user id ("" = none). Counter and HyperLogLog keys derive
 * from the prefix (usher does not support Redis Cluster). Returns how many events were new. */
static const char count_script[] =
    "local nf, prefix, ttl, nr = tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4])\n"
    "for i = nf + 1, #KEYS do redis.call('DEL', KEYS[i]) end\n"
    "local ops, at = {}, {}\n"
    "for r = 1, nr do\n"
    "  local f = tonumber(ARGV[3 + 2 * r])\n"
    "  local o = ops[f]\n"
    "  if not o then o = {}; ops[f] = o end\n"
    "  local k = #o\n"
    "  o[k + 1], o[k + 2], o[k + 3], o[k + 4] = 'SET', 'u1', ARGV[4 + 2 * r], 1\n"
    "  at[r] = {f, k / 4 + 1}\n"
    "end\n"
    "local old = {}\n"
    "for f, o in pairs(ops) do\n"
    "  local got = {}\n"
    "  for i = 1, #o, 4000 do\n"
    "    local res = redis.call('BITFIELD', KEYS[f], unpack(o, i, math.min(i + 3999, #o)))\n"
    "    for j = 1, #res do got[#got + 1] = res[j] end\n"
    "  end\n"
    "  redis.call('EXPIRE', KEYS[f], ttl)\n"
    "  old[f] = got\n"
    "end\n"
    "local counts, users, new = {}, {}, 0\n"
    "for a = 5 + 2 * nr, #ARGV, 3 do\n"
    "  local p = at[tonumber(ARGV[a])]\n"
    "  if old[p[1]][p[2]] == 0 then\n"
    "    local td = ARGV[a + 1]\n"
    "    counts[td] = (counts[td] or 0) + 1\n"
    "    if ARGV[a + 2] ~= '' then\n"
    "      local u = users[td]\n"
    "      if not u then u = {}; users[td] = u end\n"
    "      u[#u + 1] = ARGV[a + 2]\n"
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

/* Records per fence block: 2^20 bits, 128 KiB. */
#define FENCE_BLOCK_BITS 20
/* A fence block expires this long after its last write (the markers' default TTL). */
#define FENCE_TTL_S (30L * 24 * 3600)


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

/* One fence block (a partition's offsets in one 2^20 range), or one to delete. */
typedef struct fence {
    const char *topic;
    int32_t partition;
    int64_t block;
    char key[320];
} fence;

/* A record of the batch: its fence block and bit. */
typedef struct rec {
    const usher_kafka_meta *kafka;
    char fence_index[24];
    char bit[24];
} rec;

/* Per-event strings, formatted once. */
typedef struct event_args {
    char rec_index[24];
    char type_day[48];
} event_args;

/* The index of the fence for (topic, partition, block) in f[0..*n), added when new. */
static size_t fence_of(fence *f, size_t *n, const char *prefix, const char *topic,
                       int32_t partition, int64_t block)
{
    for (size_t i = 0; i < *n; i++)
        if (f[i].block == block && f[i].partition == partition && strcmp(f[i].topic, topic) == 0)
            return i;
    f[*n].topic = topic;
    f[*n].partition = partition;
    f[*n].block = block;
    snprintf(f[*n].key, sizeof(f[0].key), "%s:fence:%s:%" PRId32 ":%" PRId64, prefix, topic,
             partition, block);
    return (*n)++;
}

static void handle_batch(usher_ctx *ctx, const usher_event *const *events, size_t n,
                         usher_result *results, void *state)
{
    const char *prefix = usher_ctx_key_prefix(ctx);
    redisContext *c = usher_redis(ctx);
    redisReply *r = NULL;
    fence *fences = NULL, *trims = NULL;
    rec *recs = NULL;
    event_args *ea = NULL;
    const char **argv = NULL;
    size_t *lens = NULL, nf = 0, nt = 0, nr = 0, argc = 0;
    usher_result res = USHER_RETRY;
    char nkeys[24], nfences[24], ttl[24], nrecs[24];

    if (c == NULL) {
        usher_set_reason(ctx, "redis_unavailable");
        goto out;
    }
    fences = calloc(n, sizeof(*fences));
    trims = calloc(n, sizeof(*trims));
    recs = calloc(n, sizeof(*recs));
    ea = calloc(n, sizeof(*ea));
    argv = calloc(7 + 3 * n + 2 * n + 3 * n, sizeof(*argv));
    lens = calloc(7 + 3 * n + 2 * n + 3 * n, sizeof(*lens));
    if (!fences || !trims || !recs || !ea || !argv || !lens) {
        usher_set_reason(ctx, "out_of_memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const usher_kafka_meta *k = events[i]->kafka;
        size_t ri = nr;
        if (nr > 0 && recs[nr - 1].kafka == k) {
            ri = nr - 1; /* a record's events come together */
        } else {
            for (size_t j = 0; j < nr && ri == nr; j++)
                if (recs[j].kafka == k)
                    ri = j;
        }
        if (ri == nr) {
            recs[nr++].kafka = k;
            size_t f = fence_of(fences, &nf, prefix, k->topic, k->partition,
                                k->offset >> FENCE_BLOCK_BITS);
            snprintf(recs[ri].fence_index, sizeof(recs[ri].fence_index), "%zu", f + 1);
            snprintf(recs[ri].bit, sizeof(recs[ri].bit), "%" PRId64,
                     k->offset & ((INT64_C(1) << FENCE_BLOCK_BITS) - 1));
            int64_t cb = k->committed_offset >> FENCE_BLOCK_BITS;
            if (k->committed_offset > 0 && cb > 0)
                fence_of(trims, &nt, prefix, k->topic, k->partition, cb - 1);
        }
        char day[11];
        utc_day(events[i]->occurred_at_ms, day);
        snprintf(ea[i].rec_index, sizeof(ea[i].rec_index), "%zu", ri + 1);
        snprintf(ea[i].type_day, sizeof(ea[i].type_day), "%s:%s",
                 usher_event_type_name(events[i]->type), day);
    }
    /* never delete a block this batch writes (cannot happen: records in flight are at or
     * above their partition's committed offset) */
    for (size_t t = 0; t < nt;) {
        bool used = false;
        for (size_t f = 0; f < nf && !used; f++)
            used = strcmp(trims[t].key, fences[f].key) == 0;
        if (used)
            trims[t] = trims[--nt];
        else
            t++;
    }
    snprintf(nkeys, sizeof(nkeys), "%zu", nf + nt);
    snprintf(nfences, sizeof(nfences), "%zu", nf);
    snprintf(ttl, sizeof(ttl), "%ld", FENCE_TTL_S);
    snprintf(nrecs, sizeof(nrecs), "%zu", nr);
    argc = 2;
    argv[argc++] = nkeys;
    for (size_t f = 0; f < nf; f++)
        argv[argc++] = fences[f].key;
    for (size_t t = 0; t < nt; t++)
        argv[argc++] = trims[t].key;
    argv[argc++] = nfences;
    argv[argc++] = prefix;
    argv[argc++] = ttl;
    argv[argc++] = nrecs;
    for (size_t i = 0; i < nr; i++) {
        argv[argc++] = recs[i].fence_index;
        argv[argc++] = recs[i].bit;
    }
    for (size_t i = 0; i < n; i++) {
        argv[argc++] = ea[i].rec_index;
        argv[argc++] = ea[i].type_day;
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
    free(trims);
    free(recs);
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
