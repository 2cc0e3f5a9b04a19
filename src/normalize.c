/*
 * normalize.c — turns one Kafka record value into canonical events.
 *
 * Flow: size/emptiness checks -> json_guard pre-scan (linear, non-recursive) -> json_doc parse
 * (strict, jansson's acceptance: duplicate keys rejected) -> format detection
 * (tests/fixtures/MANIFEST.md rules 0-11) -> one handler per format, which fills usher_event
 * values borrowing strings from the parsed documents (kept alive in the batch) or from a small
 * arena. Pure: no I/O, no globals, no logging.
 *
 * Recursion is bounded by constants, never by the input: a value may be unwrapped from a JSON
 * string once, may sit in one REST envelope, and JSON lines are only split at the top.
 */
#include <ctype.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "json_doc.h"
#include "json_guard.h"
#include "normalize.h"

typedef usher_jnode jv; /* a parsed JSON value */
#define OCCURRED_UNSET INT64_MIN
#define EMAIL_MAX 254u
#define EMAIL_LOCAL_MAX 64u

/* Pseudo types used by the mapping tables next to usher_event_type. */
#define T_IGNORE (-1) /* a valid message that is not a user-lifecycle event */
#define T_SAPI (-2)   /* Auth0 `sapi`: decided by the Management API request */

/* ---------------------------------------------------------------------------------------- */
/* Owned storage                                                                            */

typedef struct arena_blk {
    struct arena_blk *next;
    size_t used, cap;
    char data[];
} arena_blk;

typedef struct norm_priv {
    struct norm_priv *next; /* in the thread's cache of released storage */
    usher_jdoc *docs;       /* every parsed document events may borrow from */
    size_t ndocs, capdocs;
    size_t ninit;           /* docs[0..ninit) are initialized (and may hold memory to reuse) */
    arena_blk *arena;       /* computed strings, decoded nested texts */
    usher_event *events;    /* the batch's events */
    size_t cap_events;
    EVP_MD_CTX *md;         /* digest_id's, made on first use and kept with the storage */
} norm_priv;

/* The first arena block of a record; later ones are ARENA_BLOCK or the size asked for. */
#define ARENA_FIRST 2048u
#define ARENA_BLOCK 16384u
/* Released storage kept per thread for the next records (a worker normalizes up to a few
 * hundred records at a time): its documents, first arena block and event array are reused,
 * which saves several mallocs and frees per record. Freed when the thread exits. */
#define PRIV_CACHE_MAX 128 /* a worker takes up to 128 records at once (worker.c MAX_TAKE) */
#define PRIV_KEEP_BYTES 65536u /* a document that held a bigger value is not kept */
#define PRIV_KEEP_NODES 4096u
#define PRIV_KEEP_DOCS 4u

static _Thread_local norm_priv *priv_cache;
static _Thread_local size_t priv_cached;
static pthread_key_t priv_key;
static pthread_once_t priv_key_once = PTHREAD_ONCE_INIT;

static void priv_free(norm_priv *p)
{
    for (size_t i = 0; i < p->ninit; i++)
        usher_jdoc_free(&p->docs[i]);
    free(p->docs);
    while (p->arena != NULL) {
        arena_blk *n = p->arena->next;
        free(p->arena);
        p->arena = n;
    }
    free(p->events);
    EVP_MD_CTX_free(p->md);
    free(p);
}

/* pthread key destructor: frees the exiting thread's cache. */
static void priv_cache_drain(void *unused)
{
    (void)unused;
    while (priv_cache != NULL) {
        norm_priv *p = priv_cache;
        priv_cache = p->next;
        priv_free(p);
    }
    priv_cached = 0;
}

static void priv_key_make(void)
{
    (void)pthread_key_create(&priv_key, priv_cache_drain);
}

/* Storage for one record: from the thread's cache, else new. NULL when out of memory. */
static norm_priv *priv_get(void)
{
    norm_priv *p = priv_cache;

    if (p == NULL)
        return calloc(1, sizeof(*p));
    priv_cache = p->next;
    priv_cached--;
    p->next = NULL;
    return p;
}

/* Takes back a record's storage: emptied and cached, or freed when the cache is full. */
static void priv_put(norm_priv *p)
{
    arena_blk *keep = NULL;

    bool big = priv_cached >= PRIV_CACHE_MAX || p->cap_events > 256;
    for (size_t i = 0; i < p->ninit && !big; i++)
        big = p->docs[i].bufcap > PRIV_KEEP_BYTES || p->docs[i].cap > PRIV_KEEP_NODES;
    if (big) {
        priv_free(p); /* the cache keeps only what ordinary records need */
        return;
    }
    while (p->ninit > PRIV_KEEP_DOCS) /* a record of many JSON lines: keep a few documents */
        usher_jdoc_free(&p->docs[--p->ninit]);
    if (p->capdocs > PRIV_KEEP_DOCS) {
        usher_jdoc *d = realloc(p->docs, PRIV_KEEP_DOCS * sizeof(*d));
        if (d != NULL) {
            p->docs = d;
            p->capdocs = PRIV_KEEP_DOCS;
        }
    }
    while (p->arena != NULL) {
        arena_blk *n = p->arena->next;
        if (p->arena->cap == ARENA_FIRST && keep == NULL)
            keep = p->arena;
        else
            free(p->arena);
        p->arena = n;
    }
    if (keep != NULL) {
        keep->next = NULL;
        keep->used = 0;
    }
    p->arena = keep;
    p->ndocs = 0;
    pthread_once(&priv_key_once, priv_key_make);
    pthread_setspecific(priv_key, p); /* any non-NULL value: makes the destructor run */
    p->next = priv_cache;
    priv_cache = p;
    priv_cached++;
}

typedef struct norm_ctx {
    const usher_norm_options *opt;
    const usher_kafka_meta *meta;
    usher_batch *out;
    norm_priv *p;
} norm_ctx;

/* One value being normalized: the Kafka record itself, or a record inside a REST envelope. */
typedef struct rec {
    const void *raw;          /* bytes a Logto signature covers; NULL when there are none */
    size_t raw_len;
    const jv *env_headers; /* the envelope record's own headers [{key,value}], or NULL */
    int top;                  /* the Kafka record itself: meta's headers are its headers */
    int rule0;                /* header-driven detection (MANIFEST rule 0) applies */
    int unwrapped;            /* already unwrapped from a JSON string once */
    int in_envelope;          /* inside a REST envelope: no further envelopes */
} rec;

enum fmt {
    F_NONE,
    F_CE,
    F_LOGTO,
    F_A0LOG,
    F_CLERK,
    F_SUPABASE,
    F_KEYCLOAK,
    F_HDINSIGHT,
    F_UPSTASH,
    F_UPSTASH_RESP,
    F_A0FULL,
    F_A0USER
};

static int do_bytes(norm_ctx *c, const rec *r, const char *buf, size_t len, int allow_lines);
static int do_value(norm_ctx *c, const rec *r, const jv *v);

/* Returns n bytes of 8-aligned arena memory that lives until usher_batch_release, or NULL. */
static void *arena_alloc(norm_priv *p, size_t n)
{
    arena_blk *b = p->arena;
    void *mem = NULL;

    n = (n + 7u) & ~(size_t)7u;
    if (b == NULL || b->cap - b->used < n) {
        size_t cap = b == NULL && n <= ARENA_FIRST ? ARENA_FIRST : n > ARENA_BLOCK ? n : ARENA_BLOCK;
        b = malloc(sizeof(*b) + cap);
        if (b == NULL)
            return NULL;
        b->next = p->arena;
        b->used = 0;
        b->cap = cap;
        p->arena = b;
    }
    mem = b->data + b->used;
    b->used += n;
    return mem;
}

/* Sets the batch's rejection (first one wins) and returns -1. */
__attribute__((format(printf, 3, 4))) static int reject(norm_ctx *c, const char *reason,
                                                        const char *fmt, ...)
{
    va_list ap;

    if (c->out->reason != NULL)
        return -1;
    c->out->reason = reason;
    va_start(ap, fmt);
    vsnprintf(c->out->detail, sizeof(c->out->detail), fmt, ap);
    va_end(ap);
    return -1;
}

/* Prepends prefix to the rejection detail, truncating the tail if needed. */
static void prefix_detail(norm_ctx *c, const char *prefix)
{
    char *d = c->out->detail;
    size_t cap = sizeof(c->out->detail) - 1;
    size_t plen = strlen(prefix), dlen = strlen(d);

    if (plen > cap)
        plen = cap;
    if (dlen > cap - plen)
        dlen = cap - plen;
    memmove(d + plen, d, dlen);
    memcpy(d, prefix, plen);
    d[plen + dlen] = '\0';
}

/* Copies n bytes into the arena as a NUL-terminated string; NULL (and a rejection) on OOM. */
static const char *arena_strndup(norm_ctx *c, const char *s, size_t n)
{
    char *d = arena_alloc(c->p, n + 1);

    if (d == NULL) {
        reject(c, "parse_error", "out of memory");
        return NULL;
    }
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

/* A new empty document that lives until usher_batch_release (its index in p->docs), or -1
 * with a rejection on OOM. Documents are only ever added, so an index stays valid. */
static long new_doc(norm_ctx *c)
{
    norm_priv *p = c->p;

    if (p->ndocs == p->capdocs) {
        size_t cap = p->capdocs ? p->capdocs * 2 : 4;
        usher_jdoc *n = realloc(p->docs, cap * sizeof(*n));
        if (n == NULL)
            return reject(c, "parse_error", "out of memory");
        p->docs = n;
        p->capdocs = cap;
    }
    if (p->ndocs == p->ninit) {
        usher_jdoc_init(&p->docs[p->ndocs]);
        p->ninit++;
    }
    return (long)p->ndocs++; /* a reused document is replaced by its next parse */
}

/* ---------------------------------------------------------------------------------------- */
/* JSON access with type checks (no coercion)                                               */

/* Returns a short name for v's JSON type, for details. */
static const char *jtype(const jv *v)
{
    switch (v ? (usher_jtype)v->type : USHER_JNULL) {
    case USHER_JOBJECT:
        return "object";
    case USHER_JARRAY:
        return "array";
    case USHER_JSTRING:
        return "string";
    case USHER_JINTEGER:
        return "integer";
    case USHER_JREAL:
        return "number";
    case USHER_JTRUE:
    case USHER_JFALSE:
        return "boolean";
    default:
        return "null";
    }
}

/* obj[key] as an optional string: *out is NULL when absent, null or ""; -1 (schema_error) when
 * it has another type. obj may be NULL. */
static int get_str(norm_ctx *c, const jv *obj, const char *path, const char *key,
                   const char **out)
{
    const jv *v = obj ? usher_jv_get(obj, key) : NULL;

    *out = NULL;
    if (v == NULL || usher_jv_is_null(v))
        return 0;
    if (!usher_jv_is_string(v))
        return reject(c, "schema_error", "%s%s: expected string, got %s", path, key, jtype(v));
    if (usher_jv_strlen(v) > 0)
        *out = usher_jv_str(v);
    return 0;
}

/* obj[key] as an optional object (NULL when absent or null); -1 on another type. */
static int get_obj(norm_ctx *c, const jv *obj, const char *path, const char *key,
                   const jv **out)
{
    const jv *v = obj ? usher_jv_get(obj, key) : NULL;

    *out = NULL;
    if (v == NULL || usher_jv_is_null(v))
        return 0;
    if (!usher_jv_is_object(v))
        return reject(c, "schema_error", "%s%s: expected object, got %s", path, key, jtype(v));
    *out = v;
    return 0;
}

/* obj[key] as an optional boolean: *out = 1/0, or -1 when absent or null; -1 on another type. */
static int get_bool(norm_ctx *c, const jv *obj, const char *path, const char *key, int *out)
{
    const jv *v = obj ? usher_jv_get(obj, key) : NULL;

    *out = -1;
    if (v == NULL || usher_jv_is_null(v))
        return 0;
    if (!usher_jv_is_boolean(v))
        return reject(c, "schema_error", "%s%s: expected boolean, got %s", path, key, jtype(v));
    *out = usher_jv_is_true(v) ? 1 : 0;
    return 0;
}

/* Lenient read for free-form areas (Auth0 `details`): a non-empty string or NULL. */
static const char *peek_str(const jv *obj, const char *key)
{
    const jv *v = obj ? usher_jv_get(obj, key) : NULL;

    if (!usher_jv_is_string(v) || usher_jv_strlen(v) == 0)
        return NULL;
    return usher_jv_str(v);
}

/* Lenient read for free-form areas: an object or NULL. */
static const jv *peek_obj(const jv *obj, const char *key)
{
    const jv *v = obj ? usher_jv_get(obj, key) : NULL;

    return usher_jv_is_object(v) ? v : NULL;
}

/* 1 when obj has key (with any value, null included). */
static int has(const jv *obj, const char *key)
{
    return obj != NULL && usher_jv_get(obj, key) != NULL;
}

/* 1 when obj[key] is the string lit. */
static int str_is(const jv *obj, const char *key, const char *lit)
{
    const char *s = peek_str(obj, key);

    return s != NULL && strcmp(s, lit) == 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Headers                                                                                  */

/* Finds a Kafka header by case-insensitive name (first wins). */
static int hdr_kafka(const usher_kafka_meta *m, const char *name, const char **v, size_t *n)
{
    if (m == NULL)
        return 0;
    for (size_t i = 0; i < m->header_count; i++) {
        const usher_header *h = &m->headers[i];
        if (h->name != NULL && strcasecmp(h->name, name) == 0) {
            *v = h->value;
            *n = h->value ? h->value_len : 0;
            return 1;
        }
    }
    return 0;
}

/* Finds a header in an envelope's already validated [{key,value}] array (first wins). */
static int hdr_env(const jv *arr, const char *name, const char **v, size_t *n)
{
    size_t i;
    const jv *h;

    usher_jarr_foreach(arr, i, h) {
        const char *k = peek_str(h, "key");
        const jv *val = usher_jv_get(h, "value");
        if (k != NULL && strcasecmp(k, name) == 0) {
            *v = usher_jv_is_string(val) ? usher_jv_str(val) : NULL;
            *n = usher_jv_is_string(val) ? usher_jv_strlen(val) : 0;
            return 1;
        }
    }
    return 0;
}

/* A header of this value itself: the Kafka record's, or the envelope record's. */
static int hdr_direct(const norm_ctx *c, const rec *r, const char *name, const char **v,
                      size_t *n)
{
    *v = NULL;
    *n = 0;
    if (r->top)
        return hdr_kafka(c->meta, name, v, n);
    return r->env_headers != NULL && hdr_env(r->env_headers, name, v, n);
}

/* A header usable as a hint: the value's own, else (inside an envelope) the Kafka record's. */
static int hdr_hint(const norm_ctx *c, const rec *r, const char *name, const char **v, size_t *n)
{
    if (hdr_direct(c, r, name, v, n) && *v != NULL)
        return 1;
    if (!r->top && hdr_kafka(c->meta, name, v, n) && *v != NULL)
        return 1;
    return 0;
}

/* 1 when the header value (v, n) equals lit exactly. */
static int hv_eq(const char *v, size_t n, const char *lit)
{
    return v != NULL && n == strlen(lit) && memcmp(v, lit, n) == 0;
}

/* Copies a header value into the arena as a string; rejects NUL bytes and invalid UTF-8.
 * *out is NULL for an empty value. */
static int hdr_string(norm_ctx *c, const char *name, const char *v, size_t n, const char **out)
{
    *out = NULL;
    if (v == NULL || n == 0)
        return 0;
    if (memchr(v, '\0', n) != NULL)
        return reject(c, "schema_error", "header %s contains a NUL byte", name);
    if (usher_utf8_valid_prefix(v, n) != n)
        return reject(c, "invalid_utf8", "header %s: invalid UTF-8 at byte offset %zu", name,
                      usher_utf8_valid_prefix(v, n));
    *out = arena_strndup(c, v, n);
    return *out ? 0 : -1;
}

/* ---------------------------------------------------------------------------------------- */
/* Time                                                                                     */

/* Reads exactly n decimal digits at *s; advances *s. */
static int digits(const char **s, int n, int *out)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*s)[i]))
            return -1;
        v = v * 10 + ((*s)[i] - '0');
    }
    *s += n;
    *out = v;
    return 0;
}

/* Parses ISO-8601 / RFC 3339 "YYYY-MM-DDTHH:MM[:SS[.frac]][Z|±HH[:]MM]" (no zone = UTC) into
 * UTC epoch milliseconds. Returns 0, or -1 when s is not such a time. */
static int parse_iso8601(const char *s, int64_t *ms)
{
    static const int mdays[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    int y, mo, d, h, mi, sec = 0, frac_ms = 0, off = 0;
    int64_t days;

    if (digits(&s, 4, &y) || *s++ != '-' || digits(&s, 2, &mo) || *s++ != '-' ||
        digits(&s, 2, &d))
        return -1;
    if (*s != 'T' && *s != 't' && *s != ' ')
        return -1;
    s++;
    if (digits(&s, 2, &h) || *s++ != ':' || digits(&s, 2, &mi))
        return -1;
    if (*s == ':') {
        s++;
        if (digits(&s, 2, &sec))
            return -1;
        if (*s == '.' || *s == ',') {
            int n = 0;
            s++;
            if (!isdigit((unsigned char)*s))
                return -1;
            for (; isdigit((unsigned char)*s); s++, n++) {
                if (n < 3)
                    frac_ms = frac_ms * 10 + (*s - '0');
            }
            for (; n < 3; n++)
                frac_ms *= 10;
        }
    }
    if (*s == 'Z' || *s == 'z') {
        s++;
    } else if (*s == '+' || *s == '-') {
        int sign = *s++ == '-' ? -1 : 1, oh, om = 0;
        if (digits(&s, 2, &oh))
            return -1;
        if (*s == ':')
            s++;
        if (*s != '\0' && digits(&s, 2, &om))
            return -1;
        if (oh > 23 || om > 59)
            return -1;
        off = sign * (oh * 3600 + om * 60);
    }
    if (*s != '\0')
        return -1;
    if (mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || sec > 60)
        return -1;
    if (d > mdays[mo - 1] + (mo == 2 && y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)))
        return -1; /* 2024-02-30 and the like */
    /* days since 1970-01-01 of the proleptic Gregorian date (Howard Hinnant's days_from_civil;
     * second 60 runs into the next minute, as timegm has it) */
    {
        int yy = mo <= 2 ? y - 1 : y, era = (yy >= 0 ? yy : yy - 399) / 400;
        int yoe = yy - era * 400, mp = mo > 2 ? mo - 3 : mo + 9;
        int doy = (153 * mp + 2) / 5 + d - 1, doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        days = (int64_t)era * 146097 + doe - 719468;
    }
    *ms = ((days * 86400 + h * 3600 + mi * 60 + sec) - off) * 1000 + frac_ms;
    return 0;
}

/* obj[key] as an optional time: ISO-8601 string or integer epoch ms. Leaves *ms untouched when
 * absent or null; -1 (schema_error) on another type or an unparsable string. */
static int get_time(norm_ctx *c, const jv *obj, const char *path, const char *key,
                    int64_t *ms)
{
    const jv *v = obj ? usher_jv_get(obj, key) : NULL;

    if (v == NULL || usher_jv_is_null(v))
        return 0;
    if (usher_jv_is_integer(v)) {
        *ms = (int64_t)usher_jv_int(v);
        return 0;
    }
    if (usher_jv_is_string(v)) {
        if (parse_iso8601(usher_jv_str(v), ms) != 0)
            return reject(c, "schema_error", "%s%s: not an ISO-8601 time", path, key);
        return 0;
    }
    return reject(c, "schema_error", "%s%s: expected string or integer, got %s", path, key,
                  jtype(v));
}

/* ---------------------------------------------------------------------------------------- */
/* Events                                                                                   */

/* Appends a zeroed event (type, source, raw, kafka and index set; time unset; email_verified
 * -1) and returns it, or NULL with a rejection on OOM. The pointer is valid until the next
 * new_event call. */
static usher_event *new_event(norm_ctx *c, const jv *raw, const char *source,
                              const char *source_type, usher_event_type type)
{
    usher_batch *b = c->out;
    usher_event *ev;

    if (b->count == c->p->cap_events) {
        size_t cap = c->p->cap_events ? c->p->cap_events * 2 : 4;
        usher_event *n = realloc(c->p->events, cap * sizeof(*n));
        if (n == NULL) {
            reject(c, "parse_error", "out of memory");
            return NULL;
        }
        c->p->events = n;
        c->p->cap_events = cap;
    }
    b->events = c->p->events;
    ev = &b->events[b->count];
    memset(ev, 0, sizeof(*ev));
    ev->type = type;
    ev->source = source;
    ev->source_type = source_type;
    ev->occurred_at_ms = OCCURRED_UNSET;
    ev->user.email_verified = -1;
    ev->raw_json = usher_jv_text(raw, &ev->raw_json_len);
    ev->kafka = c->meta;
    ev->index = (unsigned)b->count;
    b->count++;
    return ev;
}

/* Feeds s and a field separator into a digest. */
static void md_field(EVP_MD_CTX *md, const char *s)
{
    if (s != NULL)
        EVP_DigestUpdate(md, s, strlen(s));
    EVP_DigestUpdate(md, "\x1f", 1);
}

static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

/* SHA-256, fetched once: EVP_sha256() makes OpenSSL 3 look the algorithm up on every use. */
static const EVP_MD *sha256(void)
{
    pthread_once(&sha256_once, sha256_fetch);
    return sha256_md != NULL ? sha256_md : EVP_sha256();
}

/* Writes the decimal digits of u ending just before end; returns where they start. */
static char *put_decimal(char *end, uint64_t u)
{
    do {
        *--end = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    return end;
}

/* Sets ev->id to 32 hex chars of SHA-256(source|source_type|type|user id|time|index): stable
 * for the same bytes, distinct for the events of one record. */
static int digest_id(norm_ctx *c, usher_event *ev)
{
    unsigned char h[EVP_MAX_MD_SIZE];
    unsigned int hlen = 0;
    char num[48], *end = num + sizeof(num) - 1, *t = NULL; /* "<time>|<index>", backwards */
    char *hex = NULL;
    EVP_MD_CTX *md = c->p->md != NULL ? c->p->md : (c->p->md = EVP_MD_CTX_new());
    int ok = md != NULL && EVP_DigestInit_ex(md, sha256(), NULL) == 1;

    if (ok) {
        md_field(md, ev->source);
        md_field(md, ev->source_type);
        md_field(md, usher_event_type_name(ev->type));
        md_field(md, ev->user.id);
        t = put_decimal(end, ev->index);
        *--t = '|';
        t = put_decimal(t, ev->occurred_at_ms < 0 ? 0 - (uint64_t)ev->occurred_at_ms
                                                  : (uint64_t)ev->occurred_at_ms);
        if (ev->occurred_at_ms < 0)
            *--t = '-';
        *end = '\0';
        md_field(md, t);
        ok = EVP_DigestFinal_ex(md, h, &hlen) == 1 && hlen >= 16;
    }
    if (!ok)
        return reject(c, "parse_error", "digest failed");
    hex = arena_alloc(c->p, 33);
    if (hex == NULL)
        return reject(c, "parse_error", "out of memory");
    for (int i = 0; i < 16; i++) {
        hex[2 * i] = "0123456789abcdef"[h[i] >> 4];
        hex[2 * i + 1] = "0123456789abcdef"[h[i] & 15];
    }
    hex[32] = 0;
    ev->id = hex;
    return 0;
}

/* Completes an event: checks e-mail length limits (field_too_long), falls back to the Kafka
 * timestamp (then 0) for the time, and computes a digest id when the source has none. */
static int finish_event(norm_ctx *c, usher_event *ev)
{
    if (ev->user.email != NULL) {
        size_t len = strlen(ev->user.email);
        const char *at = strrchr(ev->user.email, '@');
        if (len > EMAIL_MAX)
            return reject(c, "field_too_long", "user.email is %zu octets (max %u)", len,
                          EMAIL_MAX);
        if (at != NULL && (size_t)(at - ev->user.email) > EMAIL_LOCAL_MAX)
            return reject(c, "field_too_long", "user.email local part is %zu octets (max %u)",
                          (size_t)(at - ev->user.email), EMAIL_LOCAL_MAX);
    }
    if (ev->occurred_at_ms == OCCURRED_UNSET)
        ev->occurred_at_ms = (c->meta != NULL && c->meta->timestamp_ms >= 0)
                                 ? c->meta->timestamp_ms
                                 : 0;
    if (ev->id == NULL)
        return digest_id(c, ev);
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Type mapping                                                                             */

typedef struct code_map {
    const char *name;
    int type; /* usher_event_type, T_IGNORE or T_SAPI */
} code_map;

/* Looks name up in a table; returns its type, or dflt when absent. */
static int map_lookup(const code_map *m, size_t n, const char *name, int dflt)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(m[i].name, name) == 0)
            return m[i].type;
    }
    return dflt;
}

/* opt->type_aliases (exact match); 1 and *t when one matches. */
static int alias_type(const norm_ctx *c, const char *name, int *t)
{
    if (name == NULL)
        return 0;
    for (size_t i = 0; i < c->opt->type_alias_count; i++) {
        const usher_type_alias *a = &c->opt->type_aliases[i];
        if (a->name != NULL && strcmp(a->name, name) == 0) {
            *t = (int)a->type;
            return 1;
        }
    }
    return 0;
}

static const code_map auth0_codes[] = {
    {"ss", USHER_EVENT_SIGNUP},
    {"fs", USHER_EVENT_SIGNUP_FAILED},
    {"s", USHER_EVENT_LOGIN},
    {"scoa", USHER_EVENT_LOGIN},
    {"sens", USHER_EVENT_LOGIN},
    {"ssa", T_IGNORE},
    {"fsa", T_IGNORE},
    {"f", USHER_EVENT_LOGIN_FAILED},
    {"fp", USHER_EVENT_LOGIN_FAILED},
    {"fu", USHER_EVENT_LOGIN_FAILED},
    {"fc", USHER_EVENT_LOGIN_FAILED},
    {"fco", USHER_EVENT_LOGIN_FAILED},
    {"fcoa", USHER_EVENT_LOGIN_FAILED},
    {"fens", USHER_EVENT_LOGIN_FAILED},
    {"gd_auth_failed", USHER_EVENT_LOGIN_FAILED},
    {"gd_auth_rejected", USHER_EVENT_LOGIN_FAILED},
    {"slo", USHER_EVENT_LOGOUT},
    {"oidc_backchannel_logout_succeeded", USHER_EVENT_LOGOUT},
    {"universal_logout_succeeded", USHER_EVENT_LOGOUT},
    {"scp", USHER_EVENT_PASSWORD_RESET},
    {"scpr", USHER_EVENT_PASSWORD_RESET_REQUESTED},
    {"sce", USHER_EVENT_USER_UPDATED},
    {"scu", USHER_EVENT_USER_UPDATED},
    {"scpn", USHER_EVENT_USER_UPDATED},
    {"sv", USHER_EVENT_USER_UPDATED},
    {"sdu", USHER_EVENT_USER_DELETED},
    {"du", USHER_EVENT_USER_DELETED},
    {"sapi", T_SAPI},
    {"mgmt_api_read", T_IGNORE},
    {"limit_wc", USHER_EVENT_USER_SUSPENDED},
    {"limit_sul", USHER_EVENT_USER_SUSPENDED},
    {"ublkdu", USHER_EVENT_USER_UNSUSPENDED},
    /* token exchanges */
    {"seacft", T_IGNORE},
    {"seccft", T_IGNORE},
    {"sede", T_IGNORE},
    {"seoobft", T_IGNORE},
    {"seotpft", T_IGNORE},
    {"sepft", T_IGNORE},
    {"sercft", T_IGNORE},
    {"sertft", T_IGNORE},
    {"srrt", T_IGNORE},
    {"feacft", T_IGNORE},
    {"feccft", T_IGNORE},
    {"fede", T_IGNORE},
    {"feoobft", T_IGNORE},
    {"feotpft", T_IGNORE},
    {"fepft", T_IGNORE},
    {"fercft", T_IGNORE},
    {"fertft", T_IGNORE},
    {"ferrt", T_IGNORE},
    /* system */
    {"api_limit", T_IGNORE},
    {"depnote", T_IGNORE},
    {"coff", T_IGNORE},
    {"con", T_IGNORE},
    {"fcpro", T_IGNORE},
};

/* Maps an Auth0 log code (aliases first; sys_* ignored; anything unlisted is unknown). */
static int auth0_code_type(const norm_ctx *c, const char *code)
{
    int t;

    if (alias_type(c, code, &t))
        return t;
    if (strncmp(code, "sys_", 4) == 0)
        return T_IGNORE;
    return map_lookup(auth0_codes, sizeof(auth0_codes) / sizeof(auth0_codes[0]), code,
                      USHER_EVENT_UNKNOWN);
}

static const code_map keycloak_types[] = {
    {"REGISTER", USHER_EVENT_SIGNUP},
    {"REGISTER_ERROR", USHER_EVENT_SIGNUP_FAILED},
    {"LOGIN", USHER_EVENT_LOGIN},
    {"LOGIN_ERROR", USHER_EVENT_LOGIN_FAILED},
    {"LOGOUT", USHER_EVENT_LOGOUT},
    {"UPDATE_PASSWORD", USHER_EVENT_PASSWORD_RESET},
    {"RESET_PASSWORD", USHER_EVENT_PASSWORD_RESET},
    {"SEND_RESET_PASSWORD", USHER_EVENT_PASSWORD_RESET_REQUESTED},
    {"UPDATE_EMAIL", USHER_EVENT_USER_UPDATED},
    {"UPDATE_PROFILE", USHER_EVENT_USER_UPDATED},
    {"VERIFY_EMAIL", USHER_EVENT_USER_UPDATED},
    {"DELETE_ACCOUNT", USHER_EVENT_USER_DELETED},
    {"CODE_TO_TOKEN", T_IGNORE},
    {"CODE_TO_TOKEN_ERROR", T_IGNORE},
    {"REFRESH_TOKEN", T_IGNORE},
    {"REFRESH_TOKEN_ERROR", T_IGNORE},
    {"CLIENT_LOGIN", T_IGNORE},
    {"INTROSPECT_TOKEN", T_IGNORE},
    {"TOKEN_EXCHANGE", T_IGNORE},
    {"USER_INFO_REQUEST", T_IGNORE},
};

static const code_map clerk_types[] = {
    {"user.created", USHER_EVENT_SIGNUP},
    {"user.updated", USHER_EVENT_USER_UPDATED},
    {"user.deleted", USHER_EVENT_USER_DELETED},
    {"session.created", USHER_EVENT_LOGIN},
    {"session.ended", USHER_EVENT_LOGOUT},
    {"session.removed", USHER_EVENT_LOGOUT},
    {"session.revoked", USHER_EVENT_LOGOUT},
};

static const code_map logto_events[] = {
    {"PostRegister", USHER_EVENT_SIGNUP},
    {"PostSignIn", USHER_EVENT_LOGIN},
    {"PostResetPassword", USHER_EVENT_PASSWORD_RESET},
    {"User.Created", USHER_EVENT_SIGNUP},
    {"User.Deleted", USHER_EVENT_USER_DELETED},
    {"User.Data.Updated", USHER_EVENT_USER_UPDATED},
};

static const code_map supabase_actions[] = {
    {"signup", USHER_EVENT_SIGNUP},
    {"recovery", USHER_EVENT_PASSWORD_RESET_REQUESTED},
    {"magiclink", T_IGNORE},
    {"invite", T_IGNORE},
    {"reauthentication", T_IGNORE},
    {"email_change", T_IGNORE},
    {"email_change_new", T_IGNORE},
    {"email", T_IGNORE},
};

/* Maps a CloudEvents type: built-in Auth0 Event Streams names, then reverse-DNS heuristics on
 * the last two dot-separated segments (noun.verb). Unrecognized types are unknown. */
static int ce_type_builtin(const char *type, int is_auth0)
{
    static const code_map verbs[] = {
        {"logged_in", USHER_EVENT_LOGIN},          {"login", USHER_EVENT_LOGIN},
        {"signed_in", USHER_EVENT_LOGIN},          {"sign_in", USHER_EVENT_LOGIN},
        {"login_failed", USHER_EVENT_LOGIN_FAILED}, {"sign_in_failed", USHER_EVENT_LOGIN_FAILED},
        {"logged_out", USHER_EVENT_LOGOUT},        {"logout", USHER_EVENT_LOGOUT},
        {"signed_out", USHER_EVENT_LOGOUT},        {"sign_out", USHER_EVENT_LOGOUT},
        {"registered", USHER_EVENT_SIGNUP},        {"signed_up", USHER_EVENT_SIGNUP},
        {"signup", USHER_EVENT_SIGNUP},            {"sign_up", USHER_EVENT_SIGNUP},
        {"password_reset", USHER_EVENT_PASSWORD_RESET},
        {"password_changed", USHER_EVENT_PASSWORD_RESET},
        {"password_reset_requested", USHER_EVENT_PASSWORD_RESET_REQUESTED},
    };
    static const code_map user_verbs[] = {
        {"created", USHER_EVENT_SIGNUP},          {"updated", USHER_EVENT_USER_UPDATED},
        {"deleted", USHER_EVENT_USER_DELETED},    {"suspended", USHER_EVENT_USER_SUSPENDED},
        {"blocked", USHER_EVENT_USER_SUSPENDED},  {"unsuspended", USHER_EVENT_USER_UNSUSPENDED},
        {"unblocked", USHER_EVENT_USER_UNSUSPENDED},
    };
    const char *verb = strrchr(type, '.');
    const char *noun = NULL;
    size_t nlen = 0;

    if (is_auth0) {
        if (strcmp(type, "user.created") == 0)
            return USHER_EVENT_SIGNUP;
        if (strcmp(type, "user.updated") == 0)
            return USHER_EVENT_USER_UPDATED;
        if (strcmp(type, "user.deleted") == 0)
            return USHER_EVENT_USER_DELETED;
        return strncmp(type, "user.", 5) == 0 ? USHER_EVENT_UNKNOWN : T_IGNORE;
    }
    if (verb == NULL) {
        verb = type;
    } else {
        const char *end = verb;
        verb++;
        noun = end;
        while (noun > type && noun[-1] != '.')
            noun--;
        nlen = (size_t)(end - noun);
    }
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
        if (strcasecmp(verb, verbs[i].name) == 0)
            return verbs[i].type;
    }
    if (noun != NULL && nlen == 4 && strncasecmp(noun, "user", 4) == 0) {
        for (size_t i = 0; i < sizeof(user_verbs) / sizeof(user_verbs[0]); i++) {
            if (strcasecmp(verb, user_verbs[i].name) == 0)
                return user_verbs[i].type;
        }
    }
    return USHER_EVENT_UNKNOWN;
}

/* Type from explicit producer headers: `usher-event-type` (canonical name), then `source`
 * (auth0-action/<trigger>). Returns 1 and *t when one names a type, 0 when none does, -1 when
 * usher-event-type is not a canonical name (schema_error). */
static int header_hint(norm_ctx *c, const rec *r, usher_event_type *t)
{
    static const struct {
        const char *source;
        usher_event_type type;
    } sources[] = {
        {"auth0-action/post-user-registration", USHER_EVENT_SIGNUP},
        {"auth0-action/post-login", USHER_EVENT_LOGIN},
        {"auth0-action/post-change-password", USHER_EVENT_PASSWORD_RESET},
    };
    const char *v = NULL;
    size_t n = 0;

    if (hdr_hint(c, r, "usher-event-type", &v, &n)) {
        char name[40];
        if (n >= sizeof(name) || memchr(v, '\0', n) != NULL)
            return reject(c, "schema_error", "header usher-event-type: not a canonical type");
        memcpy(name, v, n);
        name[n] = '\0';
        if (usher_event_type_from_name(name, t) != 0)
            return reject(c, "schema_error", "header usher-event-type: not a canonical type");
        return 1;
    }
    if (hdr_hint(c, r, "source", &v, &n)) {
        for (size_t i = 0; i < sizeof(sources) / sizeof(sources[0]); i++) {
            if (hv_eq(v, n, sources[i].source)) {
                *t = sources[i].type;
                return 1;
            }
        }
    }
    return 0;
}

/* Type of a bare Auth0 user: header hints, then the topic default, then opt->default_type. */
static int bare_user_type(norm_ctx *c, const rec *r, usher_event_type *t)
{
    int h = header_hint(c, r, t);

    if (h != 0)
        return h < 0 ? -1 : 0;
    if (c->meta != NULL && c->meta->topic != NULL) {
        for (size_t i = 0; i < c->opt->topic_default_count; i++) {
            const usher_topic_default *d = &c->opt->topic_defaults[i];
            if (d->topic != NULL && strcmp(d->topic, c->meta->topic) == 0) {
                *t = d->type;
                return 0;
            }
        }
    }
    *t = c->opt->default_type;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Signature                                                                                */

/* Decodes 64 hex digits into 32 bytes; -1 on a non-hex digit. */
static int unhex32(const char *s, unsigned char out[32])
{
    for (int i = 0; i < 64; i++) {
        int ch = (unsigned char)s[i], v;
        if (ch >= '0' && ch <= '9')
            v = ch - '0';
        else if (ch >= 'a' && ch <= 'f')
            v = ch - 'a' + 10;
        else if (ch >= 'A' && ch <= 'F')
            v = ch - 'A' + 10;
        else
            return -1;
        if (i % 2 == 0)
            out[i / 2] = (unsigned char)(v << 4);
        else
            out[i / 2] |= (unsigned char)v;
    }
    return 0;
}

/* When a Logto signing key is configured, requires a logto-signature-sha-256 header equal to
 * hex(HMAC-SHA256(key, raw bytes)) (optional "sha256=" prefix), compared in constant time.
 * Never puts signature or key bytes into the detail. */
static int logto_verify(norm_ctx *c, const rec *r)
{
    const char *key = c->opt->logto_signing_key;
    const char *v = NULL;
    size_t n = 0;
    unsigned char want[32], mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;

    if (key == NULL || key[0] == '\0')
        return 0;
    if (!hdr_direct(c, r, "logto-signature-sha-256", &v, &n) || v == NULL)
        return reject(c, "bad_signature", "missing logto-signature-sha-256 header");
    if (r->raw == NULL)
        return reject(c, "bad_signature", "no raw bytes to verify the Logto signature over");
    if (n >= 7 && strncasecmp(v, "sha256=", 7) == 0) {
        v += 7;
        n -= 7;
    }
    if (n != 64 || unhex32(v, want) != 0)
        return reject(c, "bad_signature", "logto-signature-sha-256 is not 64 hex digits");
    if (HMAC(EVP_sha256(), key, (int)strlen(key), r->raw, r->raw_len, mac, &maclen) == NULL ||
        maclen != 32)
        return reject(c, "bad_signature", "cannot compute HMAC-SHA256");
    if (CRYPTO_memcmp(mac, want, 32) != 0)
        return reject(c, "bad_signature", "logto-signature-sha-256 does not verify");
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Parsing                                                                                  */

/* Maps a json_doc error to a reason; base is the offset of the parsed slice in its buffer. The
 * detail keeps jansson's wording without an excerpt of the input (it may quote a secret),
 * except for duplicate keys where the excerpt is the key name. */
static int map_parse_error(norm_ctx *c, const usher_jerror *e, size_t base)
{
    size_t pos = base + e->position;

    switch (e->code) {
    case USHER_JERR_DUPLICATE_KEY:
        return reject(c, "duplicate_key", "%s at byte offset %zu", e->text, pos);
    case USHER_JERR_END_OF_INPUT_EXPECTED:
        return reject(c, "trailing_data", "data after the JSON value at byte offset %zu", pos);
    case USHER_JERR_PREMATURE_END:
        return reject(c, "parse_error", "unexpected end of input at byte offset %zu", pos);
    case USHER_JERR_DEPTH:
        return reject(c, "max_depth_exceeded", "nesting too deep at byte offset %zu", pos);
    case USHER_JERR_INVALID_UTF8:
        return reject(c, "invalid_utf8", "invalid UTF-8 at byte offset %zu", pos);
    case USHER_JERR_OUT_OF_MEMORY:
        return reject(c, "parse_error", "out of memory");
    default:
        return reject(c, "parse_error", "%s at byte offset %zu", e->text, pos);
    }
}

/* Runs the guard over buf and rejects with its reason; 0 when json_doc may parse buf. */
static int guard(norm_ctx *c, const char *buf, size_t len)
{
    usher_json_guard_error ge;

    if (len > c->opt->max_value_bytes)
        return reject(c, "message_too_large", "value is %zu bytes (limit %zu)", len,
                      c->opt->max_value_bytes);
    if (usher_json_guard(buf, len, c->opt->max_depth, c->opt->max_members, &ge) != 0)
        return reject(c, ge.reason, "%s", ge.detail);
    return 0;
}

/* Parses buf into a new document of the batch; *out is its root. -1 with *e filled (no
 * rejection yet) when the text is not accepted, -2 with a rejection on OOM. */
static int parse_doc(norm_ctx *c, const char *buf, size_t len, unsigned flags, usher_jerror *e,
                     const jv **out, size_t *end)
{
    long d = new_doc(c);
    usher_jdoc *doc = NULL;

    *out = NULL;
    if (d < 0)
        return -2;
    doc = &c->p->docs[d];
    if (usher_jdoc_parse(doc, buf, len, flags, e) != 0)
        return -1;
    *out = usher_jdoc_root(doc);
    if (end != NULL)
        *end = doc->end;
    return 0;
}

/* Parses all of buf into a new document, with the guard's verdict taking precedence as if it
 * had run first. It runs only when the parse failed or the document comes near the depth or
 * member limits: a document that json_doc accepted has valid UTF-8 and no raw control
 * character or \u0000, so within those limits the guard passes it. Returns 0 (*out is the
 * root), -1 with a rejection (the guard's, or OOM), or 1 with *e set when the text does not
 * parse. */
static int guarded_parse(norm_ctx *c, const char *buf, size_t len, usher_jerror *e,
                         const jv **out)
{
    size_t depth_limit = c->opt->max_depth < USHER_JSON_GUARD_DEPTH_CAP
                             ? c->opt->max_depth : USHER_JSON_GUARD_DEPTH_CAP;
    int rc = parse_doc(c, buf, len, 0, e, out, NULL);
    const usher_jdoc *d = NULL;

    if (rc == -2)
        return -1;
    d = &c->p->docs[c->p->ndocs - 1];
    if ((rc != 0 || d->depth >= depth_limit || d->widest >= c->opt->max_members) &&
        guard(c, buf, len) != 0)
        return -1;
    return rc == 0 ? 0 : 1;
}

/* Guards and parses one nested JSON text (data_base64, a Keycloak representation) that must
 * be a single document; the document is kept alive in the batch, and so must buf be. */
static int parse_nested(norm_ctx *c, const char *buf, size_t len, const jv **out)
{
    usher_jerror e;
    int rc = guarded_parse(c, buf, len, &e, out);

    if (rc == 1)
        return map_parse_error(c, &e, 0);
    return rc;
}

/* JSON Lines: newline-separated objects/arrays. Every line is parsed before any is normalized,
 * so a bad line rejects the record without half-built events. Two documents on one line, or
 * anything but a container after a newline, is trailing_data. */
/* The length of the container starting at s[0] ('{' or '['): up to its matching close,
 * strings and escapes skipped; n when it does not close within n bytes. Each line's parse then
 * copies only its own value (the parser copies its whole input), so a record of many lines
 * costs linear, not quadratic, memory; for a value that is well formed up to its close, the
 * parse of this prefix is the parse of the whole rest, errors included. */
static size_t container_extent(const char *s, size_t n)
{
    size_t depth = 0;
    bool in_string = false;

    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (in_string) {
            if (ch == '\\')
                i++;
            else if (ch == '"')
                in_string = false;
            continue;
        }
        if (ch == '"')
            in_string = true;
        else if (ch == '{' || ch == '[')
            depth++;
        else if ((ch == '}' || ch == ']') && --depth == 0)
            return i + 1;
    }
    return n;
}

static int do_lines(norm_ctx *c, const rec *r, const char *buf, size_t len)
{
    rec r2 = *r;
    size_t off = 0, first = c->p->ndocs;
    unsigned line = 0;
    char pfx[40];

    r2.rule0 = 0;
    for (;;) {
        int nl = 0, rc;
        usher_jerror e;
        const jv *root = NULL;
        size_t end = 0;

        while (off < len && (buf[off] == ' ' || buf[off] == '\t' || buf[off] == '\r' ||
                             buf[off] == '\n')) {
            if (buf[off] == '\n')
                nl = 1;
            off++;
        }
        if (off == len)
            break;
        if ((line > 0 && !nl) || (buf[off] != '{' && buf[off] != '['))
            return reject(c, "trailing_data", "data after the JSON value at byte offset %zu",
                          off);
        if (line >= c->opt->max_members)
            return reject(c, "too_many_members", "more than %zu JSON lines in one record",
                          c->opt->max_members);
        rc = parse_doc(c, buf + off, container_extent(buf + off, len - off),
                       USHER_JDOC_STOP_AT_END, &e, &root, &end);
        if (rc == -2)
            return -1;
        if (rc != 0) {
            map_parse_error(c, &e, off);
            snprintf(pfx, sizeof(pfx), "line %u: ", line + 1);
            prefix_detail(c, pfx);
            return -1;
        }
        usher_jdoc_trim(&c->p->docs[c->p->ndocs - 1]); /* many lines: keep only the values */
        off += end;
        line++;
    }
    /* the documents of this record's lines are c->p->docs[first .. first+line) */
    for (unsigned i = 0; i < line; i++) {
        if (do_value(c, &r2, usher_jdoc_root(&c->p->docs[first + i])) != 0) {
            snprintf(pfx, sizeof(pfx), "line %u: ", i + 1);
            prefix_detail(c, pfx);
            return -1;
        }
    }
    return 0;
}

/* Size check, guard, parse and normalize one JSON text (which must outlive the batch: events
 * borrow their raw JSON from it). allow_lines: the Kafka value itself, which may be JSON
 * Lines. */
static int do_bytes(norm_ctx *c, const rec *r, const char *buf, size_t len, int allow_lines)
{
    usher_jerror e;
    const jv *root = NULL;
    size_t i = 0;
    int rc;

    if (len > c->opt->max_value_bytes)
        return reject(c, "message_too_large", "value is %zu bytes (limit %zu)", len,
                      c->opt->max_value_bytes);
    while (i < len && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\r' || buf[i] == '\n'))
        i++;
    if (i == len)
        return reject(c, "empty_value", "the value is empty");
    rc = guarded_parse(c, buf, len, &e, &root);
    if (rc < 0)
        return -1;
    if (rc != 0) {
        if (allow_lines && e.code == USHER_JERR_END_OF_INPUT_EXPECTED)
            return do_lines(c, r, buf, len);
        return map_parse_error(c, &e, 0);
    }
    return do_value(c, r, root);
}

/* ---------------------------------------------------------------------------------------- */
/* Auth0                                                                                    */

/* Fills ev->user from an Auth0 user object (user_id, email, email_verified, name, username,
 * phone_number), with type checks. */
static int fill_auth0_user(norm_ctx *c, usher_event *ev, const jv *u, const char *path)
{
    if (get_str(c, u, path, "user_id", &ev->user.id) || get_str(c, u, path, "email", &ev->user.email) ||
        get_bool(c, u, path, "email_verified", &ev->user.email_verified) ||
        get_str(c, u, path, "name", &ev->user.name) ||
        get_str(c, u, path, "username", &ev->user.username) ||
        get_str(c, u, path, "phone_number", &ev->user.phone))
        return -1;
    return 0;
}

/* Fails with missing_user_id unless u.user_id is a non-empty string (schema_error for another
 * type). Never derives an id from the e-mail. */
static int require_auth0_user_id(norm_ctx *c, const jv *u, const char *path)
{
    const char *id = NULL;

    if (get_str(c, u, path, "user_id", &id) != 0)
        return -1;
    if (id == NULL)
        return reject(c, "missing_user_id", "Auth0 user has no %suser_id", path);
    return 0;
}

/* A bare Auth0 `event.user` (MANIFEST rule 10): its type comes from hints. */
static int h_auth0_user(norm_ctx *c, const rec *r, const jv *u)
{
    usher_event_type t = USHER_EVENT_UNKNOWN;
    usher_event *ev = NULL;
    const char *v = NULL;
    size_t n = 0;

    if (require_auth0_user_id(c, u, "") != 0 || bare_user_type(c, r, &t) != 0)
        return -1;
    ev = new_event(c, u, "auth0", "event.user", t);
    if (ev == NULL || fill_auth0_user(c, ev, u, "") != 0)
        return -1;
    if (hdr_hint(c, r, "tenant", &v, &n) && hdr_string(c, "tenant", v, n, &ev->tenant) != 0)
        return -1;
    if (get_time(c, u, "", t == USHER_EVENT_SIGNUP ? "created_at" : "updated_at",
                 &ev->occurred_at_ms) != 0)
        return -1;
    return finish_event(c, ev);
}

/* A full Auth0 Action `event` (post-login, post-user-registration, post-change-password). The
 * trigger comes from header hints, else from the shape. */
static int h_auth0_full(norm_ctx *c, const rec *r, const jv *o)
{
    const jv *u = usher_jv_get(o, "user");
    const jv *tenant = NULL, *req = NULL, *client = NULL, *geo = NULL, *session = NULL;
    const jv *conn = usher_jv_get(o, "connection");
    usher_event_type t = USHER_EVENT_UNKNOWN;
    const char *trigger = NULL;
    usher_event *ev = NULL;
    int h;

    if (!usher_jv_is_object(u))
        return reject(c, "schema_error", "user: expected object, got %s", jtype(u));
    if (get_obj(c, o, "", "tenant", &tenant) || get_obj(c, o, "", "request", &req) ||
        get_obj(c, o, "", "client", &client) || get_obj(c, o, "", "session", &session) ||
        get_obj(c, req, "request.", "geoip", &geo))
        return -1;
    if (has(o, "client") || has(o, "stats") || has(o, "session") || has(o, "authentication")) {
        trigger = "post-login";
        t = USHER_EVENT_LOGIN;
    } else if (has(u, "last_password_reset") && !has(u, "created_at")) {
        trigger = "post-change-password";
        t = USHER_EVENT_PASSWORD_RESET;
    } else if (has(u, "created_at")) {
        trigger = "post-user-registration";
        t = USHER_EVENT_SIGNUP;
    }
    h = header_hint(c, r, &t);
    if (h < 0 || require_auth0_user_id(c, u, "user.") != 0)
        return -1;
    ev = new_event(c, o, "auth0", trigger, t);
    if (ev == NULL || fill_auth0_user(c, ev, u, "user.") != 0)
        return -1;
    if (get_str(c, tenant, "tenant.", "id", &ev->tenant) ||
        get_str(c, client, "client.", "client_id", &ev->client) ||
        get_str(c, req, "request.", "ip", &ev->ip) ||
        get_str(c, req, "request.", "user_agent", &ev->user_agent) ||
        get_str(c, geo, "request.geoip.", "countryCode", &ev->country))
        return -1;
    if (usher_jv_is_string(conn)) {
        ev->connection = usher_jv_strlen(conn) ? usher_jv_str(conn) : NULL;
    } else if (usher_jv_is_object(conn)) {
        if (get_str(c, conn, "connection.", "name", &ev->connection) != 0)
            return -1;
    } else if (conn != NULL && !usher_jv_is_null(conn)) {
        return reject(c, "schema_error", "connection: expected object, got %s", jtype(conn));
    }
    if (ev->type == USHER_EVENT_LOGIN) {
        if (get_time(c, session, "session.", "authenticated_at", &ev->occurred_at_ms) != 0)
            return -1;
    } else if (ev->type == USHER_EVENT_PASSWORD_RESET) {
        if (get_time(c, u, "user.", "last_password_reset", &ev->occurred_at_ms) != 0)
            return -1;
    } else if (ev->type == USHER_EVENT_SIGNUP) {
        if (get_time(c, u, "user.", "created_at", &ev->occurred_at_ms) != 0)
            return -1;
    }
    return finish_event(c, ev);
}

/* Percent-decodes a URL path segment into the arena; rejects %00 and invalid UTF-8. */
static int pct_decode(norm_ctx *c, const char *s, size_t n, const char **out)
{
    char *d = arena_alloc(c->p, n + 1);
    size_t j = 0;

    *out = NULL;
    if (d == NULL)
        return reject(c, "parse_error", "out of memory");
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && isxdigit((unsigned char)s[i + 1]) &&
            isxdigit((unsigned char)s[i + 2])) {
            char hx[3] = {s[i + 1], s[i + 2], '\0'};
            d[j++] = (char)strtol(hx, NULL, 16);
            i += 2;
        } else {
            d[j++] = s[i];
        }
    }
    d[j] = '\0';
    if (memchr(d, '\0', j) != NULL || usher_utf8_valid_prefix(d, j) != j)
        return reject(c, "schema_error", "details.request.path: bad user id encoding");
    *out = j ? d : NULL;
    return 0;
}

/* Auth0 `sapi`: decides the type from details.request (DELETE/PATCH/POST on /api/v2/users)
 * and takes the subject from the path. Returns T_IGNORE for writes to other resources. */
static int auth0_sapi(norm_ctx *c, const jv *log, const char **uid, const char **email)
{
    const jv *details = peek_obj(log, "details");
    const jv *req = peek_obj(details, "request");
    const jv *body = peek_obj(req, "body");
    const char *method = peek_str(req, "method");
    const char *path = peek_str(req, "path");
    static const char users[] = "/api/v2/users";
    size_t plen, idlen;
    const char *rest, *slash;

    *uid = NULL;
    *email = peek_str(body, "email");
    if (method == NULL || path == NULL || strncmp(path, users, sizeof(users) - 1) != 0)
        return T_IGNORE;
    plen = strcspn(path, "?#");
    rest = path + sizeof(users) - 1;
    if ((size_t)(rest - path) == plen) {
        if (strcasecmp(method, "POST") != 0)
            return T_IGNORE;
        *uid = peek_str(peek_obj(peek_obj(details, "response"), "body"), "user_id");
        return USHER_EVENT_SIGNUP;
    }
    if (*rest != '/')
        return T_IGNORE;
    rest++;
    slash = memchr(rest, '/', plen - (size_t)(rest - path));
    idlen = slash ? (size_t)(slash - rest) : plen - (size_t)(rest - path);
    if (idlen == 0)
        return T_IGNORE;
    if (pct_decode(c, rest, idlen, uid) != 0)
        return -100;
    if (slash == NULL) {
        if (strcasecmp(method, "DELETE") == 0)
            return USHER_EVENT_USER_DELETED;
        if (strcasecmp(method, "PATCH") == 0 || strcasecmp(method, "PUT") == 0) {
            const jv *blocked = usher_jv_get(body, "blocked");
            if (usher_jv_is_true(blocked))
                return USHER_EVENT_USER_SUSPENDED;
            if (usher_jv_is_false(blocked))
                return USHER_EVENT_USER_UNSUSPENDED;
            return USHER_EVENT_USER_UPDATED;
        }
        return T_IGNORE;
    }
    if (strcasecmp(method, "GET") == 0 || strcasecmp(method, "HEAD") == 0)
        return T_IGNORE;
    return USHER_EVENT_USER_UPDATED;
}

/* One Auth0 Log Stream record ({log_id, data} or a bare /api/v2/logs entry). Ignorable codes
 * only bump out->ignored; unknown codes become `unknown` events. */
static int h_auth0_log(norm_ctx *c, const jv *o)
{
    const jv *data = usher_jv_get(o, "data");
    const jv *log = usher_jv_is_object(data) ? data : o;
    const char *path = log == o ? "" : "data.";
    const char *code = NULL, *uid = NULL, *uname = NULL, *email = NULL, *log_id = NULL;
    const jv *details = NULL;
    usher_event *ev = NULL;
    int t;

    if (get_str(c, log, path, "type", &code) != 0)
        return -1;
    if (code == NULL)
        return reject(c, "schema_error", "%stype: missing Auth0 log type code", path);
    t = auth0_code_type(c, code);
    if (t == T_SAPI) {
        t = auth0_sapi(c, log, &uid, &email);
        if (t == -100)
            return -1;
    } else {
        if (get_str(c, log, path, "user_id", &uid) || get_str(c, log, path, "user_name", &uname))
            return -1;
        details = peek_obj(log, "details");
        if (uname != NULL && strchr(uname, '@') != NULL)
            email = uname;
        if (email == NULL)
            email = peek_str(peek_obj(details, "body"), "email");
        if (email == NULL)
            email = peek_str(details, "email");
        if (email != NULL && strchr(email, '@') == NULL)
            email = NULL;
    }
    if (t == T_IGNORE) {
        c->out->ignored++;
        return 0;
    }
    if (get_str(c, log, path, "log_id", &log_id) != 0)
        return -1;
    if (log_id == NULL && get_str(c, o, "", "log_id", &log_id) != 0)
        return -1;
    ev = new_event(c, log, "auth0_log", code, (usher_event_type)t);
    if (ev == NULL)
        return -1;
    ev->id = log_id;
    ev->user.id = uid;
    ev->user.email = email;
    if (uname != NULL && email != uname)
        ev->user.username = uname;
    if (get_str(c, log, path, "connection", &ev->connection) ||
        get_str(c, log, path, "client_id", &ev->client) ||
        get_str(c, log, path, "ip", &ev->ip) ||
        get_str(c, log, path, "user_agent", &ev->user_agent) ||
        get_str(c, log, path, "tenant_name", &ev->tenant) ||
        get_time(c, log, path, "date", &ev->occurred_at_ms))
        return -1;
    ev->country = peek_str(peek_obj(log, "location_info"), "country_code");
    return finish_event(c, ev);
}

/* ---------------------------------------------------------------------------------------- */
/* Logto                                                                                    */

/* A Logto webhook (interaction, data or exception event). Verifies the signature first when a
 * key is configured; validates the envelope's field types; keeps user fields even for unknown
 * events (the record is then rejected as unsupported_event by the caller). */
static int h_logto(norm_ctx *c, const rec *r, const jv *o)
{
    const char *hook = NULL, *event = NULL, *ie = NULL, *uid = NULL, *uip = NULL, *ip = NULL;
    const char *ua = NULL, *sid = NULL;
    const jv *user = NULL, *data = NULL, *params = NULL, *app = NULL, *u = NULL;
    usher_event *ev = NULL;
    int t, susp = -1;

    if (logto_verify(c, r) != 0)
        return -1;
    if (get_str(c, o, "", "hookId", &hook) || get_str(c, o, "", "event", &event) ||
        get_str(c, o, "", "interactionEvent", &ie) || get_str(c, o, "", "userId", &uid) ||
        get_obj(c, o, "", "user", &user) || get_str(c, o, "", "userIp", &uip) ||
        get_str(c, o, "", "ip", &ip) || get_str(c, o, "", "userAgent", &ua) ||
        get_str(c, o, "", "sessionId", &sid) || get_obj(c, o, "", "data", &data) ||
        get_obj(c, o, "", "params", &params) || get_obj(c, o, "", "application", &app))
        return -1;
    if (hook == NULL || event == NULL)
        return reject(c, "schema_error", "missing %s", hook == NULL ? "hookId" : "event");
    if (!alias_type(c, event, &t)) {
        t = map_lookup(logto_events, sizeof(logto_events) / sizeof(logto_events[0]), event,
                       USHER_EVENT_UNKNOWN);
        if (strcmp(event, "User.SuspensionStatus.Updated") == 0) {
            if (get_bool(c, data, "data.", "isSuspended", &susp) != 0)
                return -1;
            t = susp == 1   ? USHER_EVENT_USER_SUSPENDED
                : susp == 0 ? USHER_EVENT_USER_UNSUSPENDED
                            : USHER_EVENT_USER_UPDATED;
        } else if (t == USHER_EVENT_UNKNOWN &&
                   (strncmp(event, "Role.", 5) == 0 || strncmp(event, "Scope.", 6) == 0 ||
                    strncmp(event, "Organization", 12) == 0 ||
                    strncmp(event, "Application.", 12) == 0)) {
            t = T_IGNORE;
        }
    }
    if (t == T_IGNORE) {
        c->out->ignored++;
        return 0;
    }
    u = user != NULL ? user : (strncmp(event, "User.", 5) == 0 ? data : NULL);
    ev = new_event(c, o, "logto", event, (usher_event_type)t);
    if (ev == NULL)
        return -1;
    const char *path = user != NULL ? "user." : "data.";
    if (get_str(c, u, path, "id", &ev->user.id) ||
        get_str(c, u, path, "primaryEmail", &ev->user.email) ||
        get_str(c, u, path, "username", &ev->user.username) ||
        get_str(c, u, path, "name", &ev->user.name) ||
        get_str(c, u, path, "primaryPhone", &ev->user.phone))
        return -1;
    if (uid != NULL)
        ev->user.id = uid;
    if (ev->user.id == NULL && get_str(c, params, "params.", "userId", &ev->user.id) != 0)
        return -1;
    ev->ip = uip != NULL ? uip : ip;
    ev->user_agent = ua;
    if (get_str(c, app, "application.", "id", &ev->client) != 0 ||
        get_time(c, o, "", "createdAt", &ev->occurred_at_ms) != 0)
        return -1;
    return finish_event(c, ev);
}

/* ---------------------------------------------------------------------------------------- */
/* CloudEvents                                                                              */

typedef struct ce_attrs {
    const char *id, *source, *type, *time, *subject, *a0tenant, *a0stream;
} ce_attrs;

/* Shared tail of structured and binary CloudEvents: maps the type and reads the user from
 * data (Auth0 Event Streams: data.object). */
static int ce_common(norm_ctx *c, const jv *raw, const ce_attrs *a, const jv *data)
{
    int is_auth0 = strncmp(a->source, "urn:auth0:", 10) == 0 &&
                   (a->a0tenant != NULL || a->a0stream != NULL);
    usher_event *ev = NULL;
    int t;

    if (!alias_type(c, a->type, &t))
        t = ce_type_builtin(a->type, is_auth0);
    if (t == T_IGNORE) {
        c->out->ignored++;
        return 0;
    }
    ev = new_event(c, raw, is_auth0 ? "auth0_events" : "cloudevents", a->type,
                   (usher_event_type)t);
    if (ev == NULL)
        return -1;
    ev->id = a->id;
    ev->tenant = a->a0tenant;
    if (a->time != NULL && parse_iso8601(a->time, &ev->occurred_at_ms) != 0)
        return reject(c, "schema_error", "time: not an RFC 3339 time");
    if (is_auth0) {
        const jv *obj = NULL;
        if (get_obj(c, data, "data.", "object", &obj) != 0 ||
            fill_auth0_user(c, ev, obj, "data.object.") != 0)
            return -1;
    } else if (usher_jv_is_object(data)) {
        const jv *u = peek_obj(data, "user") ? peek_obj(data, "user") : data;
        const char *p = u == data ? "data." : "data.user.";
        const char *ip2 = NULL, *ua2 = NULL;
        if (get_str(c, u, p, "userId", &ev->user.id) != 0)
            return -1;
        if (ev->user.id == NULL && get_str(c, u, p, "user_id", &ev->user.id) != 0)
            return -1;
        if (ev->user.id == NULL && get_str(c, u, p, "sub", &ev->user.id) != 0)
            return -1;
        if (get_str(c, u, p, "email", &ev->user.email) ||
            get_bool(c, u, p, "email_verified", &ev->user.email_verified) ||
            get_str(c, u, p, "name", &ev->user.name) ||
            get_str(c, u, p, "username", &ev->user.username) ||
            get_str(c, data, "data.", "ip", &ev->ip) ||
            get_str(c, data, "data.", "ipAddress", &ip2) ||
            get_str(c, data, "data.", "userAgent", &ev->user_agent) ||
            get_str(c, data, "data.", "user_agent", &ua2) ||
            get_str(c, data, "data.", "tenant", &ev->tenant))
            return -1;
        if (ev->ip == NULL)
            ev->ip = ip2;
        if (ev->user_agent == NULL)
            ev->user_agent = ua2;
    }
    if (ev->user.id == NULL && a->subject != NULL) {
        const char *s = a->subject;
        if (strncmp(s, "users/", 6) == 0 && s[6] != '\0' && strchr(s + 6, '/') == NULL)
            ev->user.id = s + 6;
        else if (strncmp(s, "user/", 5) == 0 && s[5] != '\0' && strchr(s + 5, '/') == NULL)
            ev->user.id = s + 5;
    }
    return finish_event(c, ev);
}

/* Base64 (standard alphabet, padding optional, no whitespace) into the batch's arena (the
 * decoded text's events borrow from it); NULL when s is not base64 or on OOM. */
static unsigned char *b64_decode(norm_priv *pv, const char *s, size_t n, size_t *outlen)
{
    unsigned char *d = arena_alloc(pv, n / 4 * 3 + 3);
    unsigned acc = 0;
    int bits = 0;
    size_t j = 0;

    if (d == NULL)
        return NULL;
    while (n > 0 && s[n - 1] == '=')
        n--;
    for (size_t i = 0; i < n; i++) {
        const char *p = strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
                               s[i]);
        if (s[i] == '\0' || p == NULL)
            return NULL;
        acc = (acc << 6) | (unsigned)(p - "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/");
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            d[j++] = (unsigned char)(acc >> bits);
        }
        acc &= 0xFFu;
    }
    *outlen = j;
    return d;
}

/* Checks the four required attributes (specversion, id, source, type, in that order, named
 * names[] in details) and fills a's id, source and type. Rejects "missing id, source" or an
 * unsupported specversion. */
static int ce_required(norm_ctx *c, const char *const vals[4], const char *const names[4],
                       ce_attrs *a)
{
    char missing[96] = "";

    for (int i = 0; i < 4; i++) {
        if (vals[i] == NULL) {
            if (missing[0] != '\0')
                strcat(missing, ", ");
            strcat(missing, names[i]);
        }
    }
    if (missing[0] != '\0')
        return reject(c, "schema_error", "missing %s", missing);
    if (strncmp(vals[0], "1.", 2) != 0)
        return reject(c, "schema_error", "%s: unsupported version", names[0]);
    a->id = vals[1];
    a->source = vals[2];
    a->type = vals[3];
    return 0;
}

/* A structured-mode CloudEvent: the four required attributes must be non-empty strings
 * ("missing id, source" otherwise); data_base64 is decoded and parsed when it holds JSON. */
static int h_ce(norm_ctx *c, const jv *o)
{
    static const char *const req[] = {"specversion", "id", "source", "type"};
    const char *vals[4] = {NULL, NULL, NULL, NULL};
    ce_attrs a;
    const jv *data = usher_jv_get(o, "data");
    const jv *b64 = usher_jv_get(o, "data_base64");
    const char *dct = NULL;

    memset(&a, 0, sizeof(a));
    for (int i = 0; i < 4; i++)
        if (get_str(c, o, "", req[i], &vals[i]) != 0)
            return -1;
    if (ce_required(c, vals, req, &a) != 0)
        return -1;
    if (get_str(c, o, "", "time", &a.time) || get_str(c, o, "", "subject", &a.subject) ||
        get_str(c, o, "", "a0tenant", &a.a0tenant) ||
        get_str(c, o, "", "a0stream", &a.a0stream) ||
        get_str(c, o, "", "datacontenttype", &dct))
        return -1;
    if (b64 != NULL && !usher_jv_is_null(b64)) {
        size_t n = 0;
        unsigned char *bin = NULL;
        int rc;
        if (data != NULL)
            return reject(c, "schema_error", "both data and data_base64");
        if (!usher_jv_is_string(b64))
            return reject(c, "schema_error", "data_base64: expected string, got %s",
                          jtype(b64));
        data = NULL;
        if (dct == NULL || strstr(dct, "json") != NULL) {
            bin = b64_decode(c->p, usher_jv_str(b64), usher_jv_strlen(b64), &n);
            if (bin == NULL)
                return reject(c, "schema_error", "data_base64: not base64");
            rc = parse_nested(c, (const char *)bin, n, &data);
            if (rc != 0) {
                prefix_detail(c, "data_base64: ");
                return -1;
            }
        }
    }
    return ce_common(c, o, &a, data);
}

/* 1 when the value's own headers carry the four binary-mode CloudEvents attributes. */
static int ce_binary_headers(const norm_ctx *c, const rec *r)
{
    static const char *const req[] = {"ce_specversion", "ce_id", "ce_source", "ce_type"};
    const char *v;
    size_t n;

    for (int i = 0; i < 4; i++) {
        if (!hdr_direct(c, r, req[i], &v, &n))
            return 0;
    }
    return 1;
}

/* A binary-mode CloudEvent: attributes from ce_* headers, the value is `data`. */
static int h_ce_binary(norm_ctx *c, const rec *r, const jv *data)
{
    static const char *const names[] = {"ce_specversion", "ce_id",      "ce_source",  "ce_type",
                                        "ce_time",        "ce_subject", "ce_a0tenant", "ce_a0stream"};
    const char *vals[8] = {NULL};
    ce_attrs a;

    for (int i = 0; i < 8; i++) {
        const char *v = NULL;
        size_t n = 0;
        if (hdr_direct(c, r, names[i], &v, &n) && hdr_string(c, names[i], v, n, &vals[i]) != 0)
            return -1;
    }
    if (ce_required(c, vals, names, &a) != 0)
        return -1;
    a.time = vals[4];
    a.subject = vals[5];
    a.a0tenant = vals[6];
    a.a0stream = vals[7];
    return ce_common(c, data, &a, data);
}

/* ---------------------------------------------------------------------------------------- */
/* Clerk, Keycloak, Supabase                                                                */

/* The element of arr whose "id" equals id, or NULL. */
static const jv *find_by_id(const jv *arr, const char *id)
{
    size_t i;
    const jv *e;

    if (id == NULL)
        return NULL;
    usher_jarr_foreach(arr, i, e) {
        if (str_is(e, "id", id))
            return e;
    }
    return NULL;
}

/* Fills ev->user from a Clerk user object: primary e-mail (by primary_email_address_id) and
 * its verification, primary phone, username and "first last" name. */
static int clerk_user(norm_ctx *c, usher_event *ev, const jv *u, const char *p)
{
    const char *pe = NULL, *pp = NULL, *first = NULL, *last = NULL;
    const jv *em = NULL, *ph = NULL;

    if (get_str(c, u, p, "primary_email_address_id", &pe) ||
        get_str(c, u, p, "primary_phone_number_id", &pp) ||
        get_str(c, u, p, "username", &ev->user.username) ||
        get_str(c, u, p, "first_name", &first) || get_str(c, u, p, "last_name", &last))
        return -1;
    em = find_by_id(usher_jv_get(u, "email_addresses"), pe);
    ph = find_by_id(usher_jv_get(u, "phone_numbers"), pp);
    if (em != NULL) {
        const char *st = peek_str(peek_obj(em, "verification"), "status");
        if (get_str(c, em, "data.email_addresses[].", "email_address", &ev->user.email) != 0)
            return -1;
        if (st != NULL)
            ev->user.email_verified = strcmp(st, "verified") == 0;
    }
    if (ph != NULL &&
        get_str(c, ph, "data.phone_numbers[].", "phone_number", &ev->user.phone) != 0)
        return -1;
    if (first != NULL || last != NULL) {
        size_t n1 = first ? strlen(first) : 0, n2 = last ? strlen(last) : 0;
        char *name = arena_alloc(c->p, n1 + n2 + 2);
        if (name == NULL)
            return reject(c, "parse_error", "out of memory");
        snprintf(name, n1 + n2 + 2, "%s%s%s", first ? first : "", (first && last) ? " " : "",
                 last ? last : "");
        ev->user.name = name;
    }
    return 0;
}

/* A Clerk (Svix) webhook event. The event id is the svix-id header when there is one. */
static int h_clerk(norm_ctx *c, const rec *r, const jv *o)
{
    const char *type = NULL, *sv = NULL;
    const jv *data = NULL, *attrs = NULL, *http = NULL;
    usher_event *ev = NULL;
    size_t n = 0;
    int t;

    if (get_str(c, o, "", "type", &type) || get_obj(c, o, "", "data", &data) ||
        get_obj(c, o, "", "event_attributes", &attrs) ||
        get_obj(c, attrs, "event_attributes.", "http_request", &http))
        return -1;
    if (type == NULL || data == NULL)
        return reject(c, "schema_error", "missing %s", type == NULL ? "type" : "data");
    if (!alias_type(c, type, &t))
        t = map_lookup(clerk_types, sizeof(clerk_types) / sizeof(clerk_types[0]), type,
                       strncmp(type, "user.", 5) == 0 ? USHER_EVENT_UNKNOWN : T_IGNORE);
    if (t == T_IGNORE) {
        c->out->ignored++;
        return 0;
    }
    ev = new_event(c, o, "clerk", type, (usher_event_type)t);
    if (ev == NULL)
        return -1;
    if (strncmp(type, "session.", 8) == 0) {
        const jv *u = NULL;
        if (get_str(c, data, "data.", "user_id", &ev->user.id) ||
            get_obj(c, data, "data.", "user", &u) || (u && clerk_user(c, ev, u, "data.user.")))
            return -1;
    } else {
        if (get_str(c, data, "data.", "id", &ev->user.id) || clerk_user(c, ev, data, "data."))
            return -1;
    }
    if (get_str(c, o, "", "instance_id", &ev->tenant) ||
        get_str(c, http, "event_attributes.http_request.", "client_ip", &ev->ip) ||
        get_str(c, http, "event_attributes.http_request.", "user_agent", &ev->user_agent) ||
        get_time(c, o, "", "timestamp", &ev->occurred_at_ms))
        return -1;
    if (hdr_hint(c, r, "svix-id", &sv, &n) && hdr_string(c, "svix-id", sv, n, &ev->id) != 0)
        return -1;
    return finish_event(c, ev);
}

/* A Keycloak user event (EventRepresentation). */
static int h_keycloak(norm_ctx *c, const jv *o)
{
    const char *type = NULL;
    const jv *details = NULL;
    usher_event *ev = NULL;
    int t;

    if (get_str(c, o, "", "type", &type) || get_obj(c, o, "", "details", &details))
        return -1;
    if (!alias_type(c, type, &t))
        t = map_lookup(keycloak_types, sizeof(keycloak_types) / sizeof(keycloak_types[0]), type,
                       USHER_EVENT_UNKNOWN);
    if (t == T_IGNORE) {
        c->out->ignored++;
        return 0;
    }
    ev = new_event(c, o, "keycloak", type, (usher_event_type)t);
    if (ev == NULL)
        return -1;
    if (get_str(c, o, "", "id", &ev->id) || get_str(c, o, "", "userId", &ev->user.id) ||
        get_str(c, o, "", "ipAddress", &ev->ip) || get_str(c, o, "", "clientId", &ev->client) ||
        get_str(c, o, "", "realmId", &ev->tenant) ||
        get_str(c, details, "details.", "email", &ev->user.email) ||
        get_str(c, details, "details.", "username", &ev->user.username) ||
        get_time(c, o, "", "time", &ev->occurred_at_ms))
        return -1;
    return finish_event(c, ev);
}

/* A Keycloak admin event (AdminEventRepresentation) on a USER resource; the subject comes from
 * resourcePath users/{id}; the JSON-string representation is parsed (guarded) for e-mail. */
static int h_keycloak_admin(norm_ctx *c, const jv *o)
{
    const char *op = NULL, *rt = NULL, *rp = NULL, *sub = NULL;
    const jv *rep = usher_jv_get(o, "representation");
    const jv *repo = NULL;
    usher_event *ev = NULL;
    int t = USHER_EVENT_UNKNOWN;
    size_t idlen;

    if (get_str(c, o, "", "operationType", &op) || get_str(c, o, "", "resourceType", &rt) ||
        get_str(c, o, "", "resourcePath", &rp))
        return -1;
    if (op == NULL || rt == NULL || rp == NULL)
        return reject(c, "schema_error", "missing operationType, resourceType or resourcePath");
    if (alias_type(c, op, &t)) {
        /* explicit mapping */
    } else if (strcmp(rt, "USER") != 0 || strncmp(rp, "users/", 6) != 0) {
        t = T_IGNORE;
    } else {
        sub = strchr(rp + 6, '/');
        if (sub == NULL) {
            t = strcmp(op, "CREATE") == 0   ? USHER_EVENT_SIGNUP
                : strcmp(op, "UPDATE") == 0 ? USHER_EVENT_USER_UPDATED
                : strcmp(op, "DELETE") == 0 ? USHER_EVENT_USER_DELETED
                                            : USHER_EVENT_UNKNOWN;
        } else if (strcmp(sub, "/reset-password") == 0) {
            t = USHER_EVENT_PASSWORD_RESET;
        }
    }
    if (t == T_IGNORE) {
        c->out->ignored++;
        return 0;
    }
    if (usher_jv_is_string(rep)) {
        if (parse_nested(c, usher_jv_str(rep), usher_jv_strlen(rep), &repo) != 0) {
            prefix_detail(c, "representation: ");
            return -1;
        }
    } else if (usher_jv_is_object(rep)) {
        repo = rep;
    }
    ev = new_event(c, o, "keycloak_admin", op, (usher_event_type)t);
    if (ev == NULL)
        return -1;
    if (strncmp(rp, "users/", 6) == 0) {
        sub = strchr(rp + 6, '/');
        idlen = sub ? (size_t)(sub - (rp + 6)) : strlen(rp + 6);
        if (idlen > 0 && (ev->user.id = arena_strndup(c, rp + 6, idlen)) == NULL)
            return -1;
    }
    if (usher_jv_is_object(repo) &&
        (get_str(c, repo, "representation.", "email", &ev->user.email) ||
         get_str(c, repo, "representation.", "username", &ev->user.username)))
        return -1;
    if (get_str(c, o, "", "id", &ev->id) || get_str(c, o, "", "realmId", &ev->tenant) ||
        get_time(c, o, "", "time", &ev->occurred_at_ms))
        return -1;
    return finish_event(c, ev);
}

/* Fills ev->user from a Supabase auth.users-shaped object. */
static int supabase_user(norm_ctx *c, usher_event *ev, const jv *u, const char *p)
{
    const char *confirmed = NULL;
    int verified = -1;

    if (get_str(c, u, p, "id", &ev->user.id) || get_str(c, u, p, "email", &ev->user.email) ||
        get_str(c, u, p, "phone", &ev->user.phone) ||
        get_str(c, u, p, "email_confirmed_at", &confirmed))
        return -1;
    verified = usher_jv_is_boolean(usher_jv_get(peek_obj(u, "user_metadata"), "email_verified"))
                   ? usher_jv_is_true(usher_jv_get(peek_obj(u, "user_metadata"), "email_verified"))
                   : -1;
    ev->user.email_verified = confirmed != NULL ? 1 : verified;
    return 0;
}

/* Supabase: the Send Email auth hook, or a Database Webhook on auth.users. The OTP token in
 * email_data is never read. */
static int h_supabase(norm_ctx *c, const rec *r, const jv *o)
{
    const jv *user = NULL, *ed = NULL, *rec_o = NULL;
    const char *action = NULL, *type = NULL, *table = NULL, *schema = NULL, *wid = NULL;
    usher_event *ev = NULL;
    size_t n = 0;
    int t;

    if (get_obj(c, o, "", "email_data", &ed) != 0)
        return -1;
    if (ed != NULL) {
        if (get_obj(c, o, "", "user", &user) ||
            get_str(c, ed, "email_data.", "email_action_type", &action))
            return -1;
        if (user == NULL || action == NULL)
            return reject(c, "schema_error", "missing %s",
                          user == NULL ? "user" : "email_data.email_action_type");
        if (!alias_type(c, action, &t))
            t = map_lookup(supabase_actions,
                           sizeof(supabase_actions) / sizeof(supabase_actions[0]), action,
                           USHER_EVENT_UNKNOWN);
        if (t == T_IGNORE) {
            c->out->ignored++;
            return 0;
        }
        ev = new_event(c, o, "supabase", action, (usher_event_type)t);
        if (ev == NULL || supabase_user(c, ev, user, "user.") != 0)
            return -1;
        if (t == USHER_EVENT_SIGNUP && get_time(c, user, "user.", "created_at", &ev->occurred_at_ms))
            return -1;
    } else {
        if (get_str(c, o, "", "type", &type) || get_str(c, o, "", "table", &table) ||
            get_str(c, o, "", "schema", &schema))
            return -1;
        if (type == NULL || table == NULL || schema == NULL)
            return reject(c, "schema_error", "missing type, table or schema");
        if (strcmp(schema, "auth") != 0 || strcmp(table, "users") != 0) {
            c->out->ignored++;
            return 0;
        }
        t = strcmp(type, "INSERT") == 0   ? USHER_EVENT_SIGNUP
            : strcmp(type, "UPDATE") == 0 ? USHER_EVENT_USER_UPDATED
                                          : USHER_EVENT_USER_DELETED;
        if (get_obj(c, o, "", t == USHER_EVENT_USER_DELETED ? "old_record" : "record", &rec_o))
            return -1;
        ev = new_event(c, o, "supabase", type, (usher_event_type)t);
        if (ev == NULL || supabase_user(c, ev, rec_o, "record.") != 0)
            return -1;
        if (t == USHER_EVENT_SIGNUP &&
            get_time(c, rec_o, "record.", "created_at", &ev->occurred_at_ms))
            return -1;
    }
    if (hdr_hint(c, r, "webhook-id", &wid, &n) &&
        hdr_string(c, "webhook-id", wid, n, &ev->id) != 0)
        return -1;
    return finish_event(c, ev);
}

/* ---------------------------------------------------------------------------------------- */
/* REST envelopes                                                                           */

/* Validates an envelope record's headers: absent/null, or an array of {key: string,
 * value: string|null}. */
static int check_env_headers(norm_ctx *c, const jv *h, const char *label)
{
    size_t i;
    const jv *e;

    if (h == NULL || usher_jv_is_null(h))
        return 0;
    if (!usher_jv_is_array(h))
        return reject(c, "schema_error", "%sheaders: expected array, got %s", label, jtype(h));
    usher_jarr_foreach(h, i, e) {
        const jv *v = usher_jv_get(e, "value");
        if (!usher_jv_is_string(usher_jv_get(e, "key")) ||
            (v != NULL && !usher_jv_is_null(v) && !usher_jv_is_string(v)))
            return reject(c, "schema_error",
                          "%sheaders[%zu]: expected {key: string, value: string}", label, i);
    }
    return 0;
}

/* One record of a REST envelope (Upstash element, HDInsight records[i]): its value (a JSON
 * string, an object or an array) is normalized with the record's headers as hints. */
static int envelope_record(norm_ctx *c, const rec *r, const jv *er, const char *label)
{
    const jv *val = usher_jv_get(er, "value");
    const jv *h = usher_jv_get(er, "headers");
    rec r2;
    char pfx[48];
    int rc;

    if (check_env_headers(c, h, label) != 0)
        return -1;
    memset(&r2, 0, sizeof(r2));
    r2.env_headers = usher_jv_is_array(h) ? h : NULL;
    r2.rule0 = 1;
    r2.in_envelope = 1;
    (void)r;
    if (val == NULL)
        return reject(c, "not_an_event", "%shas no value", label);
    snprintf(pfx, sizeof(pfx), "%svalue: ", label);
    if (usher_jv_is_string(val)) {
        r2.raw = usher_jv_str(val);
        r2.raw_len = usher_jv_strlen(val);
        rc = do_bytes(c, &r2, usher_jv_str(val), usher_jv_strlen(val), 0);
    } else if (usher_jv_is_object(val) || usher_jv_is_array(val)) {
        rc = do_value(c, &r2, val);
    } else {
        return reject(c, "not_an_event", "%svalue is %s, not an event", label, jtype(val));
    }
    if (rc != 0)
        prefix_detail(c, pfx);
    return rc;
}

/* Azure HDInsight Kafka REST proxy v1 body: {records: [{key?, partition?, value}]}. */
static int h_hdinsight(norm_ctx *c, const rec *r, const jv *o)
{
    const jv *recs = usher_jv_get(o, "records");
    const jv *e;
    size_t i;
    char label[40];

    if (usher_jarr_size(recs) == 0)
        return reject(c, "not_an_event", "records is empty");
    usher_jarr_foreach(recs, i, e) {
        snprintf(label, sizeof(label), "records[%zu].", i);
        if (!usher_jv_is_object(e))
            return reject(c, "schema_error", "records[%zu]: expected object, got %s", i,
                          jtype(e));
        if (envelope_record(c, r, e, label) != 0)
            return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Detection                                                                                */

/* 1 when every key of o is in the NULL-terminated list. */
static int keys_within(const jv *o, const char *const *allowed)
{
    const jv *k, *v;
    size_t i;

    usher_jobj_foreach(o, i, k, v) {
        int ok = 0;
        (void)v;
        for (const char *const *a = allowed; *a != NULL; a++) {
            if (strcmp(k->v.s, *a) == 0) {
                ok = 1;
                break;
            }
        }
        if (!ok)
            return 0;
    }
    return 1;
}

/* 1 when s is a non-empty UPPER_SNAKE string. */
static int upper_snake(const char *s)
{
    if (s == NULL || *s == '\0')
        return 0;
    for (; *s; s++) {
        if (!(isupper((unsigned char)*s) || *s == '_' || isdigit((unsigned char)*s)))
            return 0;
    }
    return 1;
}

/* 1 when o is one Auth0 log record: {log_id, data{type}} or a bare /api/v2/logs entry. */
static int is_auth0_log(const jv *o)
{
    const jv *d = usher_jv_get(o, "data");

    return has(o, "log_id") &&
           ((usher_jv_is_object(d) && has(d, "type")) || (has(o, "type") && has(o, "date")));
}

static const char *const upstash_rec_keys[] = {"value", "key",   "partition", "timestamp",
                                               "headers", "topic", "offset",    NULL};
static const char *const upstash_resp_keys[] = {"topic", "partition", "offset", "timestamp",
                                                NULL};

/* Classifies an object by MANIFEST rules 2-10 (rule 0 is handled by the caller). Returns
 * F_NONE when nothing matches and rejects ambiguous_format when several of rules 2-7 do. */
static int detect(norm_ctx *c, const jv *o, enum fmt *out)
{
    const jv *ed = usher_jv_get(o, "email_data");
    const char *type = peek_str(o, "type");
    static const char *const names[] = {"CloudEvents", "Logto", "Auth0 log", "Clerk",
                                        "Supabase", "Keycloak"};
    static const enum fmt fmts[] = {F_CE, F_LOGTO, F_A0LOG, F_CLERK, F_SUPABASE, F_KEYCLOAK};
    int m[6];
    int count = 0, first = -1, second = -1;

    m[0] = has(o, "specversion");
    m[1] = has(o, "hookId") && has(o, "event");
    m[2] = is_auth0_log(o) || usher_jv_is_array(usher_jv_get(o, "logs"));
    m[3] = str_is(o, "object", "event") && has(o, "type") && has(o, "data");
    m[4] = (usher_jv_is_object(usher_jv_get(o, "user")) && usher_jv_is_object(ed) &&
            has(ed, "email_action_type")) ||
           (type != NULL &&
            (!strcmp(type, "INSERT") || !strcmp(type, "UPDATE") || !strcmp(type, "DELETE")) &&
            has(o, "table") && has(o, "schema") && has(o, "record"));
    m[5] = (has(o, "realmId") && has(o, "time") && upper_snake(type)) ||
           (has(o, "operationType") && has(o, "resourceType") && has(o, "resourcePath") &&
            has(o, "authDetails"));
    for (int i = 0; i < 6; i++) {
        if (!m[i])
            continue;
        if (count == 0)
            first = i;
        else if (count == 1)
            second = i;
        count++;
    }
    if (count > 1)
        return reject(c, "ambiguous_format", "matches both %s and %s", names[first],
                      names[second]);
    if (count == 1) {
        *out = fmts[first];
        return 0;
    }
    if (has(o, "records")) {
        *out = F_HDINSIGHT;
        return 0;
    }
    if (has(o, "value") && keys_within(o, upstash_rec_keys)) {
        *out = F_UPSTASH;
        return 0;
    }
    if (usher_jobj_size(o) > 0 && keys_within(o, upstash_resp_keys) &&
        (has(o, "offset") || has(o, "partition"))) {
        *out = F_UPSTASH_RESP;
        return 0;
    }
    if (usher_jv_is_object(usher_jv_get(o, "user")) &&
        usher_jv_is_object(usher_jv_get(o, "tenant")) &&
        has(usher_jv_get(o, "tenant"), "id") && has(o, "connection")) {
        *out = F_A0FULL;
        return 0;
    }
    if (has(o, "user_id") ||
        (has(o, "created_at") && (has(o, "email") || has(o, "app_metadata") ||
                                  has(o, "user_metadata") || has(o, "identities") ||
                                  has(o, "email_verified")))) {
        *out = F_A0USER;
        return 0;
    }
    *out = F_NONE;
    return 0;
}

/* The format rule 0 imposes from the value's own headers (F_NONE when none). CloudEvents
 * binary mode is handled separately (ce_binary_headers). */
static enum fmt forced_format(const norm_ctx *c, const rec *r)
{
    const char *v, *v2, *v3;
    size_t n, n2, n3;

    if (hdr_direct(c, r, "content-type", &v, &n) && v != NULL && n >= 23 &&
        strncasecmp(v, "application/cloudevents", 23) == 0)
        return F_CE;
    if (hdr_direct(c, r, "logto-signature-sha-256", &v, &n))
        return F_LOGTO;
    if (hdr_direct(c, r, "svix-id", &v, &n) && hdr_direct(c, r, "svix-timestamp", &v2, &n2) &&
        hdr_direct(c, r, "svix-signature", &v3, &n3))
        return F_CLERK;
    if (hdr_direct(c, r, "webhook-id", &v, &n) &&
        hdr_direct(c, r, "webhook-timestamp", &v2, &n2) &&
        hdr_direct(c, r, "webhook-signature", &v3, &n3))
        return F_SUPABASE;
    return F_NONE;
}

/* Normalizes one JSON object of a known or detected format. */
static int do_object(norm_ctx *c, const rec *r, const jv *o, enum fmt forced)
{
    enum fmt f = forced;

    if (f == F_NONE && detect(c, o, &f) != 0)
        return -1;
    if (r->in_envelope && (f == F_HDINSIGHT || f == F_UPSTASH || f == F_UPSTASH_RESP))
        return reject(c, "unrecognized_format", "a REST envelope inside a REST envelope");
    switch (f) {
    case F_CE:
        return h_ce(c, o);
    case F_LOGTO:
        return h_logto(c, r, o);
    case F_A0LOG: {
        const jv *logs = usher_jv_get(o, "logs");
        const jv *e;
        size_t i;
        char pfx[32];
        if (is_auth0_log(o))
            return h_auth0_log(c, o);
        usher_jarr_foreach(logs, i, e) {
            snprintf(pfx, sizeof(pfx), "logs[%zu]: ", i);
            if (!is_auth0_log(e)) {
                reject(c, "schema_error", "not an Auth0 log record");
                prefix_detail(c, pfx);
                return -1;
            }
            if (h_auth0_log(c, e) != 0) {
                prefix_detail(c, pfx);
                return -1;
            }
        }
        return 0;
    }
    case F_CLERK:
        return h_clerk(c, r, o);
    case F_SUPABASE:
        return h_supabase(c, r, o);
    case F_KEYCLOAK:
        return has(o, "operationType") ? h_keycloak_admin(c, o) : h_keycloak(c, o);
    case F_HDINSIGHT:
        return h_hdinsight(c, r, o);
    case F_UPSTASH:
        return envelope_record(c, r, o, "");
    case F_UPSTASH_RESP:
        return reject(c, "not_an_event", "a Kafka REST produce response, not an event");
    case F_A0FULL:
        return h_auth0_full(c, r, o);
    case F_A0USER:
        return h_auth0_user(c, r, o);
    default:
        return reject(c, "unrecognized_format", "no known event format matches");
    }
}

/* Kind of one array element, for homogeneous arrays. */
static enum fmt array_elem_kind(const jv *e)
{
    if (!usher_jv_is_object(e))
        return F_NONE;
    if (is_auth0_log(e))
        return F_A0LOG;
    if (has(e, "specversion"))
        return F_CE;
    if (has(e, "value") && keys_within(e, upstash_rec_keys))
        return F_UPSTASH;
    if (usher_jobj_size(e) > 0 && keys_within(e, upstash_resp_keys))
        return F_UPSTASH_RESP;
    return F_NONE;
}

/* A top-level (or envelope) array: Auth0 JSONARRAY, a CloudEvents batch, or Upstash records.
 * All elements must be of the first element's kind; events keep array order. */
static int do_array(norm_ctx *c, const rec *r, const jv *a, enum fmt forced)
{
    enum fmt kind;
    const jv *e;
    size_t i;
    char pfx[32];

    if (usher_jarr_size(a) == 0)
        return reject(c, "not_an_event", "an empty array");
    if (forced != F_NONE && forced != F_CE)
        return reject(c, "schema_error", "expected a JSON object, got array");
    kind = forced == F_CE ? F_CE : array_elem_kind(usher_jv_at(a, 0));
    if (kind == F_NONE)
        return reject(c, "unrecognized_format", "an array of unrecognized elements");
    if (r->in_envelope && (kind == F_UPSTASH || kind == F_UPSTASH_RESP))
        return reject(c, "unrecognized_format", "a REST envelope inside a REST envelope");
    usher_jarr_foreach(a, i, e) {
        enum fmt k = array_elem_kind(e);
        int rc;
        snprintf(pfx, sizeof(pfx), "[%zu] ", i);
        if (k != kind && !(kind == F_CE && usher_jv_is_object(e))) {
            reject(c, "schema_error", "element differs from element 0");
            prefix_detail(c, pfx);
            return -1;
        }
        if (kind == F_UPSTASH_RESP)
            continue;
        rc = kind == F_A0LOG   ? h_auth0_log(c, e)
             : kind == F_CE    ? h_ce(c, e)
                               : envelope_record(c, r, e, pfx);
        if (rc != 0) {
            if (kind != F_UPSTASH)
                prefix_detail(c, pfx);
            return -1;
        }
    }
    if (kind == F_UPSTASH_RESP)
        return reject(c, "not_an_event", "a Kafka REST produce response, not an event");
    return 0;
}

/* Normalizes one parsed JSON value: rule 0 (CloudEvents binary mode), null, one unwrap of a
 * JSON string, then objects and arrays. */
static int do_value(norm_ctx *c, const rec *r, const jv *v)
{
    if (r->rule0 && ce_binary_headers(c, r))
        return h_ce_binary(c, r, v);
    switch ((usher_jtype)v->type) {
    case USHER_JNULL:
        return reject(c, "null_value", "the value is JSON null");
    case USHER_JSTRING: {
        rec r2 = *r;
        if (r->unwrapped)
            return reject(c, "schema_error", "a JSON string inside a JSON string");
        r2.unwrapped = 1;
        return do_bytes(c, &r2, usher_jv_str(v), usher_jv_strlen(v), 0);
    }
    case USHER_JOBJECT:
        return do_object(c, r, v, r->rule0 ? forced_format(c, r) : F_NONE);
    case USHER_JARRAY:
        return do_array(c, r, v, r->rule0 ? forced_format(c, r) : F_NONE);
    default:
        return reject(c, "unrecognized_format", "a top-level JSON %s", jtype(v));
    }
}

/* ---------------------------------------------------------------------------------------- */
/* API                                                                                      */

void usher_norm_options_init(usher_norm_options *opt)
{
    memset(opt, 0, sizeof(*opt));
    opt->default_type = USHER_EVENT_SIGNUP;
    opt->max_value_bytes = 1024u * 1024u;
    opt->max_depth = 64;
    opt->max_members = 10000;
}

int usher_normalize(const usher_norm_options *opt, const usher_kafka_meta *meta,
                    const void *value, size_t len, usher_batch *out)
{
    norm_ctx c;
    rec r;
    int rc = -1;
    usher_norm_options defaults;

    memset(out, 0, sizeof(*out));
    if (opt == NULL) {
        usher_norm_options_init(&defaults);
        opt = &defaults;
    }
    c.opt = opt;
    c.meta = meta;
    c.out = out;
    c.p = priv_get();
    if (c.p == NULL) {
        reject(&c, "parse_error", "out of memory");
        return -1;
    }
    out->priv = c.p;
    if (value == NULL || len == 0) {
        reject(&c, "empty_value", value == NULL ? "tombstone (null value)" : "the value is empty");
        goto out;
    }
    memset(&r, 0, sizeof(r));
    r.raw = value;
    r.raw_len = len;
    r.top = 1;
    r.rule0 = 1;
    if (do_bytes(&c, &r, value, len, 1) != 0)
        goto out;
    if (out->count > 0) {
        size_t unknown = 0;
        for (size_t i = 0; i < out->count; i++)
            unknown += out->events[i].type == USHER_EVENT_UNKNOWN;
        if (unknown == out->count) {
            reject(&c, "unsupported_event", "%s event %s has no canonical type",
                   out->events[0].source,
                   out->events[0].source_type ? out->events[0].source_type : "(untyped)");
            goto out;
        }
    }
    rc = 0;
out:
    if (rc != 0 && out->reason == NULL)
        reject(&c, "parse_error", "rejected");
    return rc;
}

void usher_batch_release(usher_batch *b)
{
    norm_priv *p = NULL;

    if (b == NULL)
        return;
    p = b->priv;
    if (p != NULL)
        priv_put(p); /* b->events is p's */
    memset(b, 0, sizeof(*b));
}
