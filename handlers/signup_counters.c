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
 * included). The batch's bits go in as byte ranges of the fence, each one GETRANGE and one
 * SETRANGE in the script (the bitmap is the one SETBIT would write). Offsets below the
 * partition's committed offset can never be redelivered, so the script deletes the block below
 * the committed offset's block; every block also expires FENCE_TTL_S after its last write, so
 * blocks skipped by a jump in offsets do not stay. A block holds at most 128 KiB.
 *
 * Unique users need no fence: adding a user to a HyperLogLog again changes nothing, so every
 * event's user is added (PFADD), whether its record was new or not.
 *
 * It is a batch handler: one PFADD per "<type>:<day>" and one script call apply a whole batch
 * of events (from any records and partitions) in one round trip, the script adding up the
 * counts per type and day inside Redis.
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
 * fence blocks, key prefix, fence TTL; per fence block: its number of ranges, then per range
 * the byte where it starts in the block and its mask (bytes in the fence's own bit order: the
 * batch's records in that range have their bit set, the others not); then per
 * "<type>:<day>": that string and its event count n; last, the record id of every event,
 * space-separated, group by group, where a record's id is the position of its bit in all the
 * masks one after the other. Each range is read (GETRANGE) and written back with the mask's
 * bits added (SETRANGE): no command per record. When every record is new (the common case),
 * the script counts whole groups and never reads the record ids. Counter keys derive from
 * the prefix (usher does not support Redis Cluster). Returns how many events were new. */
static const char count_script[] =
    "local nf, prefix, ttl = tonumber(ARGV[1]), ARGV[2], ARGV[3]\n"
    "for i = nf + 1, #KEYS do redis.call('DEL', KEYS[i]) end\n"
    "local band, bor, rshift, byte = bit.band, bit.bor, bit.rshift, string.byte\n"
    "local old, nold, a, base = {}, 0, 4, 0\n"
    "for f = 1, nf do\n"
    "  local nq = tonumber(ARGV[a])\n"
    "  a = a + 1\n"
    "  for q = 1, nq do\n"
    "    local lo, mask = tonumber(ARGV[a]), ARGV[a + 1]\n"
    "    local n = #mask\n"
    "    local ob = { byte(redis.call('GETRANGE', KEYS[f], lo, lo + n - 1), 1, -1) }\n"
    "    local nb = { byte(mask, 1, -1) }\n"
    "    for i = 1, #ob do\n"
    "      local o, m = ob[i], nb[i]\n"
    "      local c = band(o, m)\n"
    "      if c ~= 0 then\n"
    "        for b = 0, 7 do\n"
    "          if band(c, rshift(128, b)) ~= 0 then\n"
    "            old[(base + i - 1) * 8 + b], nold = true, nold + 1\n"
    "          end\n"
    "        end\n"
    "      end\n"
    "      nb[i] = bor(o, m)\n"
    "    end\n"
    "    redis.call('SETRANGE', KEYS[f], lo, string.char(unpack(nb, 1, n)))\n"
    "    base = base + n\n"
    "    a = a + 2\n"
    "  end\n"
    "  redis.call('EXPIRE', KEYS[f], ttl)\n"
    "end\n"
    "local ids = nold > 0 and string.gmatch(ARGV[#ARGV], '%d+') or nil\n"
    "local totals, counted, last = {}, 0, #ARGV - 1\n"
    "for g = a, last, 2 do\n"
    "  local td, n = ARGV[g], tonumber(ARGV[g + 1])\n"
    "  local cnt = n\n"
    "  if ids then\n"
    "    cnt = 0\n"
    "    for k = 1, n do\n"
    "      if not old[tonumber(ids())] then cnt = cnt + 1 end\n"
    "    end\n"
    "  end\n"
    "  if cnt > 0 then\n"
    "    local t, d = string.match(td, '^(.*):([^:]*)$')\n"
    "    redis.call('HINCRBY', prefix .. ':events:' .. t, d, cnt)\n"
    "    totals[t] = (totals[t] or 0) + cnt\n"
    "    counted = counted + cnt\n"
    "  end\n"
    "end\n"
    "for t, n in pairs(totals) do redis.call('HINCRBY', prefix .. ':events:' .. t, 'total', n) end\n"
    "return counted\n";

/* Records per fence block: 2^20 bits, 128 KiB. */
#define FENCE_BLOCK_BITS 20
/* A fence block expires this long after its last write (the markers' default TTL). */
#define FENCE_TTL_S (30L * 24 * 3600)
/* A fence range ends where the next record's bit is more than this many bytes on (reading and
 * writing the bytes between costs less than another range), or where the range would grow
 * past MAX_RANGE bytes (the script unpacks a range onto Lua's stack, which holds 8000). */
#define RANGE_GAP 32
#define MAX_RANGE 4096


/* Formats the UTC day of an epoch-ms time as YYYY-MM-DD. */
static void utc_day(int64_t ms, char day[11])
{
    /* the proleptic Gregorian date of a day number (Howard Hinnant's civil_from_days) */
    int64_t z = (ms >= 0 ? ms / 86400000 : 0) + 719468;
    int64_t era = z / 146097, doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1, m = mp < 10 ? mp + 3 : mp - 9;
    int64_t y = yoe + era * 400 + (m <= 2);

    if (y > 9999)
        y = 9999; /* (beyond any real event time; keeps the 10 characters) */
    day[0] = (char)('0' + y / 1000);
    day[1] = (char)('0' + y / 100 % 10);
    day[2] = (char)('0' + y / 10 % 10);
    day[3] = (char)('0' + y % 10);
    day[4] = '-';
    day[5] = (char)('0' + m / 10);
    day[6] = (char)('0' + m % 10);
    day[7] = '-';
    day[8] = (char)('0' + d / 10);
    day[9] = (char)('0' + d % 10);
    day[10] = 0;
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

/* A Redis command in the wire format (RESP), built argument by argument after HEAD bytes kept
 * free for the command's head (its argument count, EVALSHA and the SHA). */
typedef struct resp {
    char *buf;
    size_t len, cap;
    bool oom;
} resp;

#define HEAD 128

/* Room for n more bytes; false (oom set) when there is none. */
static bool resp_room(resp *r, size_t n)
{
    if (r->oom)
        return false;
    if (r->len + n > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        while (cap < r->len + n)
            cap *= 2;
        char *nb = realloc(r->buf, cap);
        if (nb == NULL) {
            r->oom = true;
            return false;
        }
        r->buf = nb;
        r->cap = cap;
    }
    return true;
}

/* Writes v in decimal at p; returns the digits written (at most 20). */
static size_t put_u64(char *p, uint64_t v)
{
    char tmp[20];
    size_t n = 0;

    do
        tmp[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    for (size_t i = 0; i < n; i++)
        p[i] = tmp[n - 1 - i];
    return n;
}

/* Appends one argument of n bytes. */
static void resp_arg(resp *r, const char *s, size_t n)
{
    if (!resp_room(r, n + 26))
        return;
    r->buf[r->len++] = '$';
    r->len += put_u64(r->buf + r->len, n);
    memcpy(r->buf + r->len, "\r\n", 2);
    memcpy(r->buf + r->len + 2, s, n);
    memcpy(r->buf + r->len + 2 + n, "\r\n", 2);
    r->len += n + 4;
}

/* Starts a command of argc arguments. */
static void resp_head(resp *r, size_t argc)
{
    if (!resp_room(r, 24))
        return;
    r->buf[r->len++] = '*';
    r->len += put_u64(r->buf + r->len, argc);
    memcpy(r->buf + r->len, "\r\n", 2);
    r->len += 2;
}

static void resp_str(resp *r, const char *s)
{
    resp_arg(r, s, strlen(s));
}

static void resp_u64(resp *r, uint64_t v)
{
    char d[20];
    resp_arg(r, d, put_u64(d, v));
}

/* Sends the npre commands in pre, then runs the script on the arguments in body (from HEAD on;
 * argc counts them all, the two of the head included) by SHA, in one write, and sends the
 * script's text only when Redis does not know it yet. Returns the script's reply (NULL on an
 * I/O error); *pre_err is set when one of pre's replies was an error. */
static redisReply *run_script(redisContext *c, const char *sha, resp *pre, size_t npre,
                              size_t argc, resp *body, bool *pre_err)
{
    char head[HEAD];
    size_t hn = 0;
    redisReply *r = NULL;
    resp full = { 0 };

    head[hn++] = '*';
    hn += put_u64(head + hn, argc);
    memcpy(head + hn, "\r\n$7\r\nEVALSHA\r\n$40\r\n", 20);
    hn += 20;
    memcpy(head + hn, sha, 40);
    hn += 40;
    memcpy(head + hn, "\r\n", 2);
    hn += 2;
    memcpy(body->buf + HEAD - hn, head, hn);
    if ((npre > 0 && redisAppendFormattedCommand(c, pre->buf, pre->len) != REDIS_OK) ||
        redisAppendFormattedCommand(c, body->buf + HEAD - hn, body->len - (HEAD - hn)) !=
            REDIS_OK)
        return NULL;
    for (size_t i = 0; i < npre; i++) {
        if (redisGetReply(c, (void **)&r) != REDIS_OK)
            return NULL;
        if (r->type == REDIS_REPLY_ERROR)
            *pre_err = true;
        freeReplyObject(r);
    }
    r = NULL;
    if (redisGetReply(c, (void **)&r) != REDIS_OK)
        return NULL;
    if (r->type != REDIS_REPLY_ERROR || strncmp(r->str, "NOSCRIPT", 8) != 0)
        return r;
    freeReplyObject(r);
    r = NULL;
    resp_head(&full, argc);
    resp_arg(&full, "EVAL", 4);
    resp_arg(&full, count_script, sizeof(count_script) - 1);
    if (resp_room(&full, body->len - HEAD)) {
        memcpy(full.buf + full.len, body->buf + HEAD, body->len - HEAD);
        full.len += body->len - HEAD;
    }
    if (!full.oom && (redisAppendFormattedCommand(c, full.buf, full.len) != REDIS_OK ||
                      redisGetReply(c, (void **)&r) != REDIS_OK))
        r = NULL;
    free(full.buf);
    return r;
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
    size_t fence;
    uint32_t bit;      /* its offset within the block */
    size_t id;         /* the position of its bit in the script's masks */
} rec;

/* Orders records by fence block, then bit. */
static int rec_cmp(const void *a, const void *b)
{
    const rec *x = *(const rec *const *)a, *y = *(const rec *const *)b;

    if (x->fence != y->fence)
        return x->fence < y->fence ? -1 : 1;
    return x->bit < y->bit ? -1 : x->bit > y->bit;
}

/* A "<type>:<day>" of the batch, how many events have it, and how many of those a user. */
typedef struct group {
    usher_event_type type;
    int64_t day;       /* days since the epoch (UTC) */
    char td[48];
    size_t n, u;       /* its events, and how many of them have a user id */
    size_t at_u, at;   /* where its next event with / without a user id goes in order[] */
} group;

/* True when ev names its user (a PFADD argument). */
static bool has_user(const usher_event *ev)
{
    return ev->user.id != NULL && ev->user.id[0] != '\0';
}

/* The index of the fence for (topic, partition, block) in f[0..*n), added when new. */
static size_t fence_of(fence *f, size_t *n, const char *prefix, const char *topic,
                       int32_t partition, int64_t block)
{
    for (size_t i = 0; i < *n; i++)
        if (f[i].block == block && f[i].partition == partition && strcmp(f[i].topic, topic) == 0)
            return i;
    memset(&f[*n], 0, sizeof(f[0]));
    f[*n].topic = topic;
    f[*n].partition = partition;
    f[*n].block = block;
    snprintf(f[*n].key, sizeof(f[0].key), "%s:fence:%s:%" PRId32 ":%" PRId64, prefix, topic,
             partition, block);
    return (*n)++;
}

/* The record of k in r[0..*n), added (with its fence) when new; SIZE_MAX when k is another
 * delivery of a record already there (same topic, partition and offset), whose events are
 * then not counted again. A record's events come together, so the last one is checked
 * first. */
static size_t rec_of(rec *r, size_t *n, fence *f, size_t *nf, fence *trims, size_t *nt,
                     const char *prefix, const usher_kafka_meta *k)
{
    if (*n > 0 && r[*n - 1].kafka == k)
        return *n - 1;
    for (size_t i = 0; i < *n; i++) {
        if (r[i].kafka == k)
            return i;
        if (r[i].kafka->offset == k->offset && r[i].kafka->partition == k->partition &&
            strcmp(r[i].kafka->topic, k->topic) == 0)
            return SIZE_MAX;
    }
    r[*n].kafka = k;
    r[*n].fence = fence_of(f, nf, prefix, k->topic, k->partition, k->offset >> FENCE_BLOCK_BITS);
    r[*n].bit = (uint32_t)(k->offset & ((INT64_C(1) << FENCE_BLOCK_BITS) - 1));
    int64_t cb = k->committed_offset >> FENCE_BLOCK_BITS;
    if (k->committed_offset > 0 && cb > 0)
        fence_of(trims, nt, prefix, k->topic, k->partition, cb - 1);
    return (*n)++;
}

/* The end of the fence range that starts at sorted[q] (records q..e-1 are one block's, by
 * bit): the range stops before a record more than RANGE_GAP bytes past the previous one, or
 * that would make it longer than MAX_RANGE bytes. Duplicate bits cannot occur (rec_of). */
static size_t range_end(rec *const *sorted, size_t q, size_t e)
{
    size_t lo = sorted[q]->bit >> 3, k = q + 1;

    while (k < e && (sorted[k]->bit >> 3) <= (sorted[k - 1]->bit >> 3) + RANGE_GAP &&
           (sorted[k]->bit >> 3) - lo < MAX_RANGE)
        k++;
    return k;
}

static void handle_batch(usher_ctx *ctx, const usher_event *const *events, size_t n,
                         usher_result *results, void *state)
{
    const char *prefix = usher_ctx_key_prefix(ctx);
    redisContext *c = usher_redis(ctx);
    redisReply *r = NULL;
    fence *fences = NULL, *trims = NULL;
    rec *recs = NULL;
    group *groups = NULL;
    size_t *ev_rec = NULL, *ev_group = NULL, *order = NULL;
    rec **sorted = NULL;
    size_t nf = 0, nt = 0, nr = 0, ng = 0, m = 0, nargs = 0;
    resp body = { 0 }, nums = { 0 }, pfadd = { 0 };
    size_t npfadd = 0;
    bool pfadd_err = false;
    usher_result res = USHER_RETRY;

    if (c == NULL) {
        usher_set_reason(ctx, "redis_unavailable");
        goto out;
    }
    fences = calloc(n, sizeof(*fences));
    trims = calloc(n, sizeof(*trims));
    recs = calloc(n, sizeof(*recs));
    groups = calloc(n, sizeof(*groups));
    ev_rec = calloc(n, sizeof(*ev_rec));
    ev_group = calloc(n, sizeof(*ev_group));
    order = calloc(n, sizeof(*order));
    sorted = calloc(n, sizeof(*sorted));
    if (!fences || !trims || !recs || !groups || !ev_rec || !ev_group || !order || !sorted) {
        usher_set_reason(ctx, "out_of_memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        int64_t ms = events[i]->occurred_at_ms >= 0 ? events[i]->occurred_at_ms : 0;
        int64_t dayn = ms / 86400000;
        size_t g = 0;
        if ((ev_rec[i] = rec_of(recs, &nr, fences, &nf, trims, &nt, prefix, events[i]->kafka)) ==
            SIZE_MAX)
            continue; /* (counted with the other delivery; ev_group unused) */
        m++;
        while (g < ng && !(groups[g].day == dayn && groups[g].type == events[i]->type))
            g++;
        if (g == ng) {
            char day[11];
            utc_day(ms, day);
            groups[g].type = events[i]->type;
            groups[g].day = dayn;
            snprintf(groups[g].td, sizeof(groups[g].td), "%s:%s",
                     usher_event_type_name(events[i]->type), day);
            ng++;
        }
        groups[g].n++;
        groups[g].u += has_user(events[i]);
        ev_group[i] = g;
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
    /* order the events group by group (in a group, the events with a user id first: they are
     * its PFADD's arguments) */
    for (size_t g = 0, at = 0; g < ng; at += groups[g].n, g++) {
        groups[g].at_u = at;
        groups[g].at = at + groups[g].u;
    }
    for (size_t i = 0; i < n; i++) {
        if (ev_rec[i] == SIZE_MAX)
            continue;
        group *g = &groups[ev_group[i]];
        if (has_user(events[i]))
            order[g->at_u++] = i;
        else
            order[g->at++] = i;
    }

    /* PFADD PREFIX:uu:<type>:<day> and the group's user ids, per group that has any */
    for (size_t g = 0, k = 0; g < ng; k += groups[g].n, g++) {
        char key[512];
        int kn;
        if (groups[g].u == 0)
            continue;
        kn = snprintf(key, sizeof(key), "%s:uu:%s", prefix, groups[g].td);
        resp_head(&pfadd, 2 + groups[g].u);
        resp_arg(&pfadd, "PFADD", 5);
        resp_arg(&pfadd, key, kn < 0 ? 0 : (size_t)kn < sizeof(key) ? (size_t)kn : sizeof(key) - 1);
        for (size_t j = 0; j < groups[g].u; j++)
            resp_str(&pfadd, events[order[k + j]]->user.id);
        npfadd++;
    }
    /* EVALSHA sha numkeys, the keys, 3 scalars, per fence its ranges, per group 2, the record
     * ids */
    for (size_t i = 0; i < nr; i++)
        sorted[i] = &recs[i];
    qsort(sorted, nr, sizeof(*sorted), rec_cmp);
    body.len = HEAD;
    resp_u64(&body, nf + nt);
    for (size_t f = 0; f < nf; f++)
        resp_str(&body, fences[f].key);
    for (size_t t = 0; t < nt; t++)
        resp_str(&body, trims[t].key);
    resp_u64(&body, nf);
    resp_str(&body, prefix);
    resp_u64(&body, (uint64_t)FENCE_TTL_S);
    nargs = 3 + nf + nt + 3;
    for (size_t j = 0, base = 0; j < nr;) { /* fence by fence (sorted[] is in fence order) */
        size_t f = sorted[j]->fence, e = j, nq = 0;
        while (e < nr && sorted[e]->fence == f)
            e++;
        for (size_t q = j; q < e; q = range_end(sorted, q, e))
            nq++;
        resp_u64(&body, nq);
        for (size_t q = j; q < e;) {
            size_t qe = range_end(sorted, q, e), lo = sorted[q]->bit >> 3;
            size_t len = (sorted[qe - 1]->bit >> 3) - lo + 1;
            unsigned char mask[MAX_RANGE];
            memset(mask, 0, len);
            for (size_t k = q; k < qe; k++) {
                mask[(sorted[k]->bit >> 3) - lo] |= (unsigned char)(0x80u >> (sorted[k]->bit & 7));
                sorted[k]->id = (base + (sorted[k]->bit >> 3) - lo) * 8 + (sorted[k]->bit & 7);
            }
            resp_u64(&body, lo);
            resp_arg(&body, (const char *)mask, len);
            base += len;
            q = qe;
        }
        nargs += 1 + 2 * nq;
        j = e;
    }
    for (size_t g = 0; g < ng; g++) {
        resp_str(&body, groups[g].td);
        resp_u64(&body, groups[g].n);
    }
    for (size_t k = 0; k < m; k++) {
        if (resp_room(&nums, 21)) {
            nums.len += put_u64(nums.buf + nums.len, recs[ev_rec[order[k]]].id);
            nums.buf[nums.len++] = ' ';
        }
    }
    resp_arg(&body, nums.len > 0 ? nums.buf : "", nums.len);
    if (body.oom || nums.oom || pfadd.oom) {
        usher_set_reason(ctx, "out_of_memory");
        goto out;
    }
    r = run_script(c, state, &pfadd, npfadd, nargs + 2 * ng + 1, &body, &pfadd_err);
    if (r == NULL || c->err) {
        usher_set_reason(ctx, "redis_io");
        usher_redis_broken(ctx);
        goto out;
    }
    if (r->type == REDIS_REPLY_ERROR || pfadd_err) {
        /* LOADING, BUSY, OOM, READONLY...: all transient for a counter. (A retry adds the
         * users again, and counts only what the script did not.) */
        usher_set_reason(ctx, "redis_error");
        usher_ctx_log(ctx, USHER_LOG_WARN, "redis: %s",
                      r->type == REDIS_REPLY_ERROR ? r->str : "PFADD refused");
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
    free(groups);
    free(ev_rec);
    free(ev_group);
    free(order);
    free(sorted);
    free(body.buf);
    free(nums.buf);
    free(pfadd.buf);
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
