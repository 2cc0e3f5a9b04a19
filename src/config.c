/*
 * config.c — loads the usher INI file (see config.h and config/example-full.conf).
 *
 * The file is read into memory and fed to inih through our own fgets-style reader, which
 * counts lines (Debian's inih has no INI_HANDLER_LINENO) and notices section headers as they
 * go past (Debian's inih does not report a new section to the handler, so an empty or
 * duplicated section would otherwise be invisible). Every key is described once in a
 * declarative table per section — name, type, default, range, where it is stored — in the
 * spirit of Fluent Bit's config_map[] and Redis' standardConfig table; the code below only
 * interprets those tables. Values are ${VAR} / ${VAR:-default}-expanded before use.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>
#include <librdkafka/rdkafka.h>

#include "config.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* The longest line we accept; inih's heap buffer may grow to this (ini.h: 3 bytes of slack). */
#define CFG_MAX_LINE (1 << 20)
/* A config file larger than this is certainly a mistake (or not a config file). */
#define CFG_MAX_FILE (16 << 20)
/* Upper bound on keys in one section table (key_line[] below). */
#define CFG_MAX_KEYS 16
/* key_line_offset value meaning "do not record the line". */
#define NO_LINE ((size_t)-1)

#define MS_HOUR INT64_C(3600000)
#define MS_DAY INT64_C(86400000)
#define MS_YEAR (MS_DAY * 365)

typedef struct load_ctx load_ctx;
typedef struct cfg_key cfg_key;
typedef struct cfg_section cfg_section;
typedef struct sect_inst sect_inst;

typedef enum key_type {
    K_INT,     /* int, min..max */
    K_I64,     /* int64_t, min..max */
    K_UINT,    /* unsigned, min..max */
    K_SIZE,    /* size_t, min..max */
    K_BOOL,    /* int 0/1: true/false/yes/no/on/off/1/0 */
    K_STR,     /* char *, owned; optional check() */
    K_ENUM,    /* an enum stored as int; names[] in enum order */
    K_EVTYPE,  /* usher_event_type, canonical name */
    K_CUSTOM   /* set() does everything */
} key_type;

enum {
    F_REQUIRED = 1 << 0,   /* must appear in the file */
    F_NONEMPTY = 1 << 1,   /* K_STR: "" is an error */
    F_EMPTY_NULL = 1 << 2  /* K_STR: "" means NULL (absent) */
};

/* Validates (and for K_CUSTOM stores) one expanded value; reports through fail(). */
typedef int (*key_fn)(load_ctx *ctx, void *target, const cfg_key *k, const char *value,
                      int line);
/* Handles a key the section's table does not list (pass-through keys). */
typedef int (*other_fn)(load_ctx *ctx, sect_inst *inst, const char *key, const char *value,
                        int line);

struct cfg_key {
    const char *name;
    key_type type;
    const char *def;          /* default, as it would be written in the file; NULL = none */
    int64_t min, max;         /* integer kinds */
    size_t offset;            /* of the field in the section's target struct */
    size_t line_offset;       /* of an int receiving the key's line, or NO_LINE */
    unsigned flags;
    const char *const *names; /* K_ENUM */
    key_fn fn;                /* K_CUSTOM: the setter; K_STR: an optional check */
};

struct cfg_section {
    const char *name;         /* "usher", or "handler" for [handler.NAME] */
    bool prefixed;            /* [name.SUFFIX] */
    const cfg_key *keys;
    size_t nkeys;
    other_fn other;           /* NULL: keys not in the table are errors */
    void *(*target)(load_ctx *ctx, sect_inst *inst); /* base of the offsets */
    int (*begin)(load_ctx *ctx, sect_inst *inst);    /* on the header; NULL for fixed ones */
};

/* One [section] header seen in the file. */
struct sect_inst {
    const cfg_section *def;
    char *suffix;                 /* NAME of [handler.NAME] / [topic.NAME], else NULL */
    int line;                     /* of the header */
    size_t index;                 /* into cfg->handlers / cfg->topic_defaults */
    int key_line[CFG_MAX_KEYS];   /* line each table key was set on, 0 = not set */
};

struct load_ctx {
    usher_config *cfg;
    const char *path;
    char *errstr;
    size_t errstr_size;
    bool failed;

    /* the reader */
    char *buf;
    size_t len;
    size_t pos;
    int lines_done;               /* lines completed (newlines handed to inih) */
    bool at_bol;                  /* the next read starts a line */

    sect_inst *sects;             /* every header, file order */
    size_t nsects;
    size_t cur;                   /* 1 + index of the current section; 0 = none yet */

    rd_kafka_conf_t *kconf;       /* scratch conf that validates [kafka] pass-through keys */
};

static const char *const ordering_names[] = {"key", "partition", "unordered", NULL};
static const char *const log_level_names[] = {"error", "warn", "info", "debug", NULL};

_Static_assert(sizeof(usher_ordering) == sizeof(int), "K_ENUM stores an int");
_Static_assert(sizeof(usher_log_level) == sizeof(int), "K_ENUM stores an int");
_Static_assert(USHER_LOG_DEBUG == 3 && USHER_ORDER_UNORDERED == 2, "names[] match the enums");

/* ---------------------------------------------------------------------------------------- */
/* small helpers                                                                            */

/* Records the first error as "FILE:LINE: message" ("FILE: message" when line is 0) and
 * returns -1; later errors are dropped so the first cause is what the user sees. */
static int fail(load_ctx *ctx, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(load_ctx *ctx, int line, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    if (ctx->failed)
        return -1;
    ctx->failed = true;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (ctx->errstr && ctx->errstr_size) {
        if (line > 0)
            snprintf(ctx->errstr, ctx->errstr_size, "%s:%d: %s", ctx->path, line, msg);
        else
            snprintf(ctx->errstr, ctx->errstr_size, "%s: %s", ctx->path, msg);
    }
    return -1;
}

/* Returns 1 if s contains whitespace or a control character. */
static int has_space_or_ctl(const char *s)
{
    for (; *s; s++)
        if (isspace((unsigned char)*s) || iscntrl((unsigned char)*s))
            return 1;
    return 0;
}

/* Returns a malloc'ed copy of s[0..n) with surrounding whitespace removed, or NULL. */
static char *strndup_trim(const char *s, size_t n)
{
    while (n && isspace((unsigned char)*s)) {
        s++;
        n--;
    }
    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    return strndup(s, n);
}

/* Parses a whole string as a base-10 integer. 0 ok, -1 not an integer, -2 overflow. */
static int parse_i64(const char *s, int64_t *out)
{
    char *end = NULL;
    long long v;

    if (!(isdigit((unsigned char)s[0]) || (s[0] == '-' && isdigit((unsigned char)s[1]))))
        return -1;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (*end != '\0')
        return -1;
    if (errno == ERANGE)
        return -2;
    *out = (int64_t)v;
    return 0;
}

/* Parses true/false/yes/no/on/off/1/0 (any case). 0 ok, -1 not a boolean. */
static int parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};

    for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return -1;
}

/* Appends key/value/line to list, copying both strings. 0 ok, -1 out of memory. */
static int kv_append(usher_kv_list *list, const char *key, const char *value, int line)
{
    char *k = NULL;
    char *v = NULL;

    if (list->count == list->cap) {
        size_t cap = list->cap ? list->cap * 2 : 8;
        usher_kv *items = realloc(list->items, cap * sizeof(*items));
        if (!items)
            return -1;
        list->items = items;
        list->cap = cap;
    }
    k = strdup(key);
    v = strdup(value);
    if (!k || !v) {
        free(k);
        free(v);
        return -1;
    }
    list->items[list->count].key = k;
    list->items[list->count].value = v;
    list->items[list->count].line = line;
    list->count++;
    return 0;
}

/* Returns the entry named key, or NULL. */
static const usher_kv *kv_find(const usher_kv_list *list, const char *key)
{
    for (size_t i = 0; i < list->count; i++)
        if (strcmp(list->items[i].key, key) == 0)
            return &list->items[i];
    return NULL;
}

/* Frees every entry and zeroes the list. */
static void kv_free(usher_kv_list *list)
{
    for (size_t i = 0; i < list->count; i++) {
        free(list->items[i].key);
        free(list->items[i].value);
    }
    free(list->items);
    memset(list, 0, sizeof(*list));
}

/* ---------------------------------------------------------------------------------------- */
/* ${VAR} and ${VAR:-default}                                                               */

typedef struct strbuf {
    char *p;
    size_t len, cap;
} strbuf;

/* Appends s[0..n) and keeps p NUL-terminated. 0 ok, -1 out of memory. */
static int sb_add(strbuf *sb, const char *s, size_t n)
{
    if (sb->len + n + 1 > sb->cap) {
        size_t cap = sb->cap ? sb->cap : 64;
        char *p = NULL;
        while (cap < sb->len + n + 1)
            cap *= 2;
        p = realloc(sb->p, cap);
        if (!p)
            return -1;
        sb->p = p;
        sb->cap = cap;
    }
    memcpy(sb->p + sb->len, s, n);
    sb->len += n;
    sb->p[sb->len] = '\0';
    return 0;
}

/* Returns 1 if s[0..n) is a shell-style variable name. */
static int is_var_name(const char *s, size_t n)
{
    if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
        return 0;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_'))
            return 0;
    return 1;
}

/* Expands ${VAR} and ${VAR:-default} (default used when VAR is unset or empty, as in sh; the
 * default is literal text). A '$' not followed by '{' is kept. On success *out is a malloc'ed
 * string the caller frees; on error fail() has been called and *out is NULL. */
static int expand_env(load_ctx *ctx, const char *in, int line, char **out)
{
    strbuf sb = {NULL, 0, 0};
    const char *p = in;
    int rc = -1;

    *out = NULL;
    if (sb_add(&sb, "", 0) < 0)
        goto oom;
    while (*p) {
        const char *dollar = strstr(p, "${");
        const char *close = NULL;
        const char *dash = NULL;
        const char *val = NULL;
        size_t name_len;

        if (!dollar) {
            if (sb_add(&sb, p, strlen(p)) < 0)
                goto oom;
            break;
        }
        if (sb_add(&sb, p, (size_t)(dollar - p)) < 0)
            goto oom;
        close = strchr(dollar + 2, '}');
        if (!close) {
            fail(ctx, line, "unterminated '${' in value (write ${NAME} or ${NAME:-default})");
            goto out;
        }
        dash = strstr(dollar + 2, ":-");
        if (dash && dash > close)
            dash = NULL;
        name_len = (size_t)((dash ? dash : close) - (dollar + 2));
        if (!is_var_name(dollar + 2, name_len)) {
            fail(ctx, line, "invalid environment reference '%.*s' (write ${NAME} or "
                 "${NAME:-default})", (int)(close - dollar + 1), dollar);
            goto out;
        }
        {
            char name[256];
            if (name_len >= sizeof(name)) {
                fail(ctx, line, "environment variable name too long");
                goto out;
            }
            memcpy(name, dollar + 2, name_len);
            name[name_len] = '\0';
            val = getenv(name);
            if (dash && (!val || !*val)) {
                if (sb_add(&sb, dash + 2, (size_t)(close - (dash + 2))) < 0)
                    goto oom;
            }
            else if (!val) {
                fail(ctx, line, "environment variable %s is not set", name);
                goto out;
            }
            else if (sb_add(&sb, val, strlen(val)) < 0) {
                goto oom;
            }
        }
        p = close + 1;
    }
    *out = sb.p;
    sb.p = NULL;
    rc = 0;
    goto out;
oom:
    fail(ctx, line, "out of memory");
out:
    free(sb.p);
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* value setters and checks used by the tables                                              */

/* Splits a [kafka] topics list; at least one topic, no blanks inside a name, no repeats. */
static int set_topics(load_ctx *ctx, void *target, const cfg_key *k, const char *value,
                      int line)
{
    usher_config *cfg = target;
    char **v = NULL;
    int n = usher_split_list(value, &v);

    if (n < 0)
        return fail(ctx, line, "out of memory");
    if (n == 0) {
        usher_strv_free(v);
        return fail(ctx, line, "%s: at least one topic is required", k->name);
    }
    for (int i = 0; i < n; i++) {
        if (has_space_or_ctl(v[i])) {
            fail(ctx, line, "%s: invalid topic name '%s'", k->name, v[i]);
            goto bad;
        }
        for (int j = 0; j < i; j++) {
            if (strcmp(v[i], v[j]) == 0) {
                fail(ctx, line, "%s: topic '%s' is listed twice", k->name, v[i]);
                goto bad;
            }
        }
    }
    usher_strv_free(cfg->topics);
    cfg->topics = v;
    cfg->topic_count = (size_t)n;
    return 0;
bad:
    usher_strv_free(v);
    return -1;
}

/* Parses [normalize] type_map: "source_type=canonical, ..." into cfg->type_aliases. */
static int set_type_map(load_ctx *ctx, void *target, const cfg_key *k, const char *value,
                        int line)
{
    usher_config *cfg = target;
    char **v = NULL;
    usher_type_alias *aliases = NULL;
    size_t count = 0;
    int n = usher_split_list(value, &v);
    int rc = -1;

    if (n < 0)
        return fail(ctx, line, "out of memory");
    if (n > 0) {
        aliases = calloc((size_t)n, sizeof(*aliases));
        if (!aliases) {
            fail(ctx, line, "out of memory");
            goto out;
        }
    }
    for (int i = 0; i < n; i++) {
        char *eq = strrchr(v[i], '=');
        char *src = NULL;
        char *canon = NULL;
        usher_event_type t;

        if (!eq) {
            fail(ctx, line, "%s: '%s' is not source_type=canonical_type", k->name, v[i]);
            goto out;
        }
        src = strndup_trim(v[i], (size_t)(eq - v[i]));
        canon = strndup_trim(eq + 1, strlen(eq + 1));
        if (!src || !canon) {
            free(src);
            free(canon);
            fail(ctx, line, "out of memory");
            goto out;
        }
        if (!*src || usher_event_type_from_name(canon, &t) < 0) {
            if (!*src)
                fail(ctx, line, "%s: empty source type in '%s'", k->name, v[i]);
            else
                fail(ctx, line, "%s: unknown event type '%s'", k->name, canon);
            free(src);
            free(canon);
            goto out;
        }
        free(canon);
        for (size_t j = 0; j < count; j++) {
            if (strcmp(aliases[j].name, src) == 0) {
                fail(ctx, line, "%s: source type '%s' is mapped twice", k->name, src);
                free(src);
                goto out;
            }
        }
        aliases[count].name = src;
        aliases[count].type = t;
        count++;
    }
    /* replace (a duplicate key never gets here, but the default path might one day) */
    for (size_t j = 0; j < cfg->type_alias_count; j++)
        free((void *)cfg->type_aliases[j].name);
    free(cfg->type_aliases);
    cfg->type_aliases = aliases;
    cfg->type_alias_count = count;
    aliases = NULL;
    count = 0;
    rc = 0;
out:
    for (size_t j = 0; j < count; j++)
        free((void *)aliases[j].name);
    free(aliases);
    usher_strv_free(v);
    return rc;
}

/* Accepts redis://[user:password@]host[:port][/db] and unix:///path[?db=N], the forms
 * src/redis.c connects to, and explains rediss://. Never echoes the value (it may hold a
 * password). */
static int check_redis_url(load_ctx *ctx, void *target, const cfg_key *k, const char *value,
                           int line)
{
    const char *auth = NULL;
    const char *slash = NULL;
    const char *host = NULL;
    const char *colon = NULL;
    const char *port = NULL;
    const char *end = NULL;

    (void)target;
    if (strncmp(value, "rediss://", 9) == 0)
        return fail(ctx, line, "%s: rediss:// (TLS) is not supported: Debian 12's hiredis 0.14 "
                    "has no TLS; use redis:// over a trusted network, a TLS tunnel such as "
                    "stunnel, or unix://", k->name);
    if (strncmp(value, "unix://", 7) == 0) {
        if (value[7] != '/' || value[8] == '\0')
            return fail(ctx, line, "%s: unix:// needs an absolute socket path, e.g. "
                        "unix:///run/redis/redis-server.sock", k->name);
        return 0;
    }
    if (strncmp(value, "redis://", 8) != 0)
        return fail(ctx, line, "%s: scheme must be redis:// or unix://", k->name);

    auth = value + 8;
    slash = strchr(auth, '/');
    end = slash ? slash : auth + strlen(auth);
    host = auth;
    for (const char *p = auth; p < end; p++)
        if (*p == '@')
            host = p + 1;
    if (*host == '[') /* src/redis.c splits host:port at the first ':' */
        return fail(ctx, line, "%s: IPv6 address literals are not supported; use a host name",
                    k->name);
    colon = memchr(host, ':', (size_t)(end - host));
    if (colon)
        port = colon + 1;
    if ((colon ? colon : end) == host)
        return fail(ctx, line, "%s: missing host (write redis://host:port)", k->name);
    if (port) {
        long p = 0;
        if (port == end)
            return fail(ctx, line, "%s: empty port", k->name);
        for (const char *c = port; c < end; c++) {
            if (!isdigit((unsigned char)*c) || (p = p * 10 + (*c - '0')) > 65535)
                return fail(ctx, line, "%s: port must be a number 1..65535", k->name);
        }
        if (p == 0)
            return fail(ctx, line, "%s: port must be a number 1..65535", k->name);
    }
    if (slash && slash[1]) {
        long db = 0;
        for (const char *c = slash + 1; *c; c++)
            if (!isdigit((unsigned char)*c) || (db = db * 10 + (*c - '0')) > (1L << 20))
                return fail(ctx, line, "%s: the path must be a database number (/0, /1, ...)",
                            k->name);
    }
    return 0;
}

/* A Redis key prefix: non-empty, no whitespace or control characters. */
static int check_key_prefix(load_ctx *ctx, void *target, const cfg_key *k, const char *value,
                            int line)
{
    (void)target;
    if (has_space_or_ctl(value))
        return fail(ctx, line, "%s: must not contain spaces or control characters", k->name);
    return 0;
}

/* A single topic name (the [dlq] topic). */
static int check_topic(load_ctx *ctx, void *target, const cfg_key *k, const char *value,
                       int line)
{
    (void)target;
    if (has_space_or_ctl(value) || strchr(value, ','))
        return fail(ctx, line, "%s: invalid topic name '%s'", k->name, value);
    return 0;
}

/* A handler's events list: canonical type names, or '*' alone. */
static int check_events(load_ctx *ctx, void *target, const cfg_key *k, const char *value,
                        int line)
{
    char **v = NULL;
    int n = usher_split_list(value, &v);
    int rc = -1;

    (void)target;
    if (n < 0)
        return fail(ctx, line, "out of memory");
    if (n == 0) {
        fail(ctx, line, "%s: empty list (list event types, '*' for all; to turn the handler "
             "off write enabled = false)", k->name);
        goto out;
    }
    for (int i = 0; i < n; i++) {
        usher_event_type t;
        if (strcmp(v[i], "*") == 0) {
            if (n > 1) {
                fail(ctx, line, "%s: '*' must be the only item", k->name);
                goto out;
            }
        }
        else if (usher_event_type_from_name(v[i], &t) < 0) {
            fail(ctx, line, "%s: unknown event type '%s'", k->name, v[i]);
            goto out;
        }
    }
    rc = 0;
out:
    usher_strv_free(v);
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* the key tables                                                                           */

#define KEY_INT(nm, kind, st, fld, df, lo, hi)                                                \
    { .name = nm, .type = kind, .def = df, .min = lo, .max = hi,                              \
      .offset = offsetof(st, fld), .line_offset = NO_LINE }
#define KEY_ENUM(nm, st, fld, df, nms)                                                        \
    { .name = nm, .type = K_ENUM, .def = df, .offset = offsetof(st, fld),                    \
      .line_offset = NO_LINE, .names = nms }
#define KEY_EVTYPE(nm, st, fld, df)                                                           \
    { .name = nm, .type = K_EVTYPE, .def = df, .offset = offsetof(st, fld),                  \
      .line_offset = NO_LINE }
#define KEY_BOOL(nm, st, fld, df)                                                             \
    { .name = nm, .type = K_BOOL, .def = df, .offset = offsetof(st, fld),                    \
      .line_offset = NO_LINE }
#define KEY_STR(nm, st, fld, df, fl, chk)                                                     \
    { .name = nm, .type = K_STR, .def = df, .offset = offsetof(st, fld),                     \
      .line_offset = NO_LINE, .flags = fl, .fn = chk }
#define KEY_STR_L(nm, st, fld, lfld, df, fl, chk)                                             \
    { .name = nm, .type = K_STR, .def = df, .offset = offsetof(st, fld),                     \
      .line_offset = offsetof(st, lfld), .flags = fl, .fn = chk }
#define KEY_CUSTOM(nm, df, fl, setter)                                                        \
    { .name = nm, .type = K_CUSTOM, .def = df, .line_offset = NO_LINE, .flags = fl,          \
      .fn = setter }

/* [usher] — target: usher_config */
static const cfg_key usher_keys[] = {
    KEY_INT("workers", K_INT, usher_config, workers, "4", 1, 256),
    KEY_INT("max_inflight", K_INT, usher_config, max_inflight, "1000", 1, 1000000),
    KEY_ENUM("ordering", usher_config, ordering, "key", ordering_names),
    KEY_INT("drain_timeout_ms", K_I64, usher_config, drain_timeout_ms, "8000", 0, MS_HOUR),
    KEY_INT("commit_interval_ms", K_I64, usher_config, commit_interval_ms, "1000", 1, MS_HOUR),
    KEY_INT("report_interval_ms", K_I64, usher_config, report_interval_ms, "5000", 100, MS_HOUR),
    KEY_INT("stuck_after_ms", K_I64, usher_config, stuck_after_ms, "60000", 1000, MS_DAY),
    KEY_ENUM("log_level", usher_config, log_level, "info", log_level_names),
    KEY_INT("retry_initial_ms", K_I64, usher_config, retry.initial_ms, "200", 1, MS_DAY),
    KEY_INT("retry_max_ms", K_I64, usher_config, retry.max_ms, "30000", 1, MS_DAY),
    KEY_INT("retry_max_attempts", K_INT, usher_config, retry.max_attempts, "0", 0, 1000000000),
    KEY_INT("retry_max_time_ms", K_I64, usher_config, retry.max_time_ms, "600000", 0, MS_YEAR),
};

/* [kafka] — target: usher_config; every other key goes through kafka_other() */
static const cfg_key kafka_keys[] = {
    KEY_STR("bootstrap.servers", usher_config, bootstrap_servers, NULL,
            F_REQUIRED | F_NONEMPTY, NULL),
    KEY_STR("group.id", usher_config, group_id, NULL, F_REQUIRED | F_NONEMPTY, NULL),
    KEY_CUSTOM("topics", NULL, F_REQUIRED, set_topics),
};

/* [redis] — target: usher_config */
static const cfg_key redis_keys[] = {
    KEY_STR("url", usher_config, redis_url, "redis://127.0.0.1:6379", F_NONEMPTY,
            check_redis_url),
    KEY_STR("key_prefix", usher_config, key_prefix, "usher", F_NONEMPTY, check_key_prefix),
    KEY_INT("connect_timeout_ms", K_I64, usher_config, redis_connect_timeout_ms, "2000", 1,
            MS_HOUR),
    KEY_INT("command_timeout_ms", K_I64, usher_config, redis_command_timeout_ms, "5000", 1,
            MS_HOUR),
};

/* [dlq] — target: usher_config */
static const cfg_key dlq_keys[] = {
    KEY_STR("topic", usher_config, dlq_topic, NULL, F_EMPTY_NULL, check_topic),
};

/* [normalize] — target: usher_config. No table defaults: usher_norm_options_init() is the one
 * source of them (signup, 1 MiB, depth 64, 10000 members). */
static const cfg_key normalize_keys[] = {
    KEY_EVTYPE("default_type", usher_config, norm.default_type, NULL),
    KEY_STR("logto_signing_key", usher_config, logto_signing_key, NULL, F_EMPTY_NULL, NULL),
    KEY_CUSTOM("type_map", NULL, 0, set_type_map),
    KEY_INT("max_value_bytes", K_SIZE, usher_config, norm.max_value_bytes, NULL, 1,
            INT64_C(1) << 30),
    KEY_INT("max_depth", K_UINT, usher_config, norm.max_depth, NULL, 1, 100000),
    KEY_INT("max_members", K_SIZE, usher_config, norm.max_members, NULL, 1, 100000000),
};

/* [topic.NAME] — target: usher_topic_default */
static const cfg_key topic_keys[] = {
    KEY_EVTYPE("default_type", usher_topic_default, type, NULL),
};

/* [handler.NAME] — target: usher_handler_section. The retry keys have no table default: they
 * inherit the [usher] values once the whole file is read. Other keys go to section->keys. */
static const cfg_key handler_keys[] = {
    KEY_BOOL("enabled", usher_handler_section, enabled, "true"),
    KEY_STR_L("events", usher_handler_section, events, events_line, NULL, 0, check_events),
    KEY_STR_L("library", usher_handler_section, library, library_line, NULL, F_NONEMPTY,
              NULL),
    KEY_INT("retry_initial_ms", K_I64, usher_handler_section, retry.initial_ms, NULL, 1,
            MS_DAY),
    KEY_INT("retry_max_ms", K_I64, usher_handler_section, retry.max_ms, NULL, 1, MS_DAY),
    KEY_INT("retry_max_attempts", K_INT, usher_handler_section, retry.max_attempts, NULL, 0,
            1000000000),
    KEY_INT("retry_max_time_ms", K_I64, usher_handler_section, retry.max_time_ms, NULL, 0,
            MS_YEAR),
    KEY_INT("marker_ttl_s", K_I64, usher_handler_section, marker_ttl_s, "2592000", 1,
            315360000),
};

_Static_assert(ARRAY_SIZE(usher_keys) <= CFG_MAX_KEYS, "key_line[] too small");
_Static_assert(ARRAY_SIZE(normalize_keys) <= CFG_MAX_KEYS, "key_line[] too small");
_Static_assert(ARRAY_SIZE(handler_keys) <= CFG_MAX_KEYS, "key_line[] too small");

static void *target_cfg(load_ctx *ctx, sect_inst *inst);
static void *target_handler(load_ctx *ctx, sect_inst *inst);
static void *target_topic(load_ctx *ctx, sect_inst *inst);
static int begin_handler(load_ctx *ctx, sect_inst *inst);
static int begin_topic(load_ctx *ctx, sect_inst *inst);
static int kafka_other(load_ctx *ctx, sect_inst *inst, const char *key, const char *value,
                       int line);
static int handler_other(load_ctx *ctx, sect_inst *inst, const char *key, const char *value,
                         int line);

#define SECTION(nm, pfx, tbl, oth, tgt, bgn) \
    { nm, pfx, tbl, ARRAY_SIZE(tbl), oth, tgt, bgn }

static const cfg_section sections[] = {
    SECTION("usher", false, usher_keys, NULL, target_cfg, NULL),
    SECTION("kafka", false, kafka_keys, kafka_other, target_cfg, NULL),
    SECTION("redis", false, redis_keys, NULL, target_cfg, NULL),
    SECTION("dlq", false, dlq_keys, NULL, target_cfg, NULL),
    SECTION("normalize", false, normalize_keys, NULL, target_cfg, NULL),
    SECTION("topic", true, topic_keys, NULL, target_topic, begin_topic),
    SECTION("handler", true, handler_keys, handler_other, target_handler, begin_handler),
};

/* ---------------------------------------------------------------------------------------- */
/* applying one value                                                                       */

/* Stores one expanded value for table key k into target (a default when line is 0).
 * Validates type, range and names; returns 0, or -1 after fail(). */
static int apply_key(load_ctx *ctx, void *target, const cfg_key *k, const char *value, int line)
{
    char *field = (char *)target + k->offset;
    int64_t v = 0;
    int r;

    switch (k->type) {
    case K_INT:
    case K_I64:
    case K_UINT:
    case K_SIZE:
        r = parse_i64(value, &v);
        if (r == -1)
            return fail(ctx, line, "%s: '%s' is not an integer", k->name, value);
        if (r == -2 || v < k->min || v > k->max)
            return fail(ctx, line, "%s: %s is out of range (%" PRId64 "..%" PRId64 ")",
                        k->name, value, k->min, k->max);
        if (k->type == K_INT) {
            int x = (int)v;
            memcpy(field, &x, sizeof(x));
        }
        else if (k->type == K_I64) {
            memcpy(field, &v, sizeof(v));
        }
        else if (k->type == K_UINT) {
            unsigned x = (unsigned)v;
            memcpy(field, &x, sizeof(x));
        }
        else {
            size_t x = (size_t)v;
            memcpy(field, &x, sizeof(x));
        }
        break;
    case K_BOOL: {
        int b;
        if (parse_bool(value, &b) < 0)
            return fail(ctx, line, "%s: '%s' is not a boolean (true/false, yes/no, on/off, "
                        "1/0)", k->name, value);
        memcpy(field, &b, sizeof(b));
        break;
    }
    case K_ENUM: {
        int i;
        for (i = 0; k->names[i]; i++)
            if (strcmp(k->names[i], value) == 0)
                break;
        if (!k->names[i]) {
            char list[128] = "";
            for (int j = 0; k->names[j]; j++) {
                strncat(list, j ? "|" : "", sizeof(list) - strlen(list) - 1);
                strncat(list, k->names[j], sizeof(list) - strlen(list) - 1);
            }
            return fail(ctx, line, "%s: '%s' is not one of %s", k->name, value, list);
        }
        memcpy(field, &i, sizeof(i));
        break;
    }
    case K_EVTYPE: {
        usher_event_type t;
        if (usher_event_type_from_name(value, &t) < 0)
            return fail(ctx, line, "%s: unknown event type '%s'", k->name, value);
        memcpy(field, &t, sizeof(t));
        break;
    }
    case K_STR: {
        char *s = NULL;
        char *old = NULL;
        if (*value == '\0' && (k->flags & F_NONEMPTY))
            return fail(ctx, line, "%s: must not be empty", k->name);
        if (*value != '\0' && k->fn && k->fn(ctx, target, k, value, line) < 0)
            return -1;
        if (*value != '\0' || !(k->flags & F_EMPTY_NULL)) {
            s = strdup(value);
            if (!s)
                return fail(ctx, line, "out of memory");
        }
        memcpy(&old, field, sizeof(old));
        free(old);
        memcpy(field, &s, sizeof(s));
        break;
    }
    case K_CUSTOM:
        if (k->fn(ctx, target, k, value, line) < 0)
            return -1;
        break;
    }
    if (k->line_offset != NO_LINE)
        memcpy((char *)target + k->line_offset, &line, sizeof(line));
    return 0;
}

/* Applies the table defaults of sec to target. */
static int apply_defaults(load_ctx *ctx, const cfg_section *sec, void *target)
{
    for (size_t i = 0; i < sec->nkeys; i++)
        if (sec->keys[i].def && apply_key(ctx, target, &sec->keys[i], sec->keys[i].def, 0) < 0)
            return -1;
    return 0;
}

/* Returns the index of key name in sec's table, or -1. */
static int key_index(const cfg_section *sec, const char *name)
{
    for (size_t i = 0; i < sec->nkeys; i++)
        if (strcmp(sec->keys[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* Returns the line key name was set on in inst (0 = not set or no such key). */
static int inst_key_line(const sect_inst *inst, const char *name)
{
    int i = key_index(inst->def, name);
    return i < 0 ? 0 : inst->key_line[i];
}

static void *target_cfg(load_ctx *ctx, sect_inst *inst)
{
    (void)inst;
    return ctx->cfg;
}

static void *target_handler(load_ctx *ctx, sect_inst *inst)
{
    return &ctx->cfg->handlers[inst->index];
}

static void *target_topic(load_ctx *ctx, sect_inst *inst)
{
    return &ctx->cfg->topic_defaults[inst->index];
}

/* Appends a zeroed handler section named inst->suffix with the table defaults applied. */
static int begin_handler(load_ctx *ctx, sect_inst *inst)
{
    usher_config *cfg = ctx->cfg;
    usher_handler_section *hs = NULL;
    usher_handler_section *h = NULL;

    for (const char *c = inst->suffix; *c; c++)
        if (!(isalnum((unsigned char)*c) || *c == '_' || *c == '-'))
            return fail(ctx, inst->line, "invalid handler name '%s' (letters, digits, '_' "
                        "and '-' only)", inst->suffix);
    hs = realloc(cfg->handlers, (cfg->handler_count + 1) * sizeof(*hs));
    if (!hs)
        return fail(ctx, inst->line, "out of memory");
    cfg->handlers = hs;
    h = &hs[cfg->handler_count];
    memset(h, 0, sizeof(*h));
    h->name = strdup(inst->suffix);
    if (!h->name)
        return fail(ctx, inst->line, "out of memory");
    h->line = inst->line;
    inst->index = cfg->handler_count++;
    return apply_defaults(ctx, inst->def, h);
}

/* Appends a [topic.NAME] entry; whether NAME is consumed is checked once topics are known. */
static int begin_topic(load_ctx *ctx, sect_inst *inst)
{
    usher_config *cfg = ctx->cfg;
    usher_topic_default *td = NULL;
    char *name = NULL;

    if (has_space_or_ctl(inst->suffix))
        return fail(ctx, inst->line, "invalid topic name '%s'", inst->suffix);
    name = strdup(inst->suffix);
    if (!name)
        return fail(ctx, inst->line, "out of memory");
    td = realloc(cfg->topic_defaults, (cfg->topic_default_count + 1) * sizeof(*td));
    if (!td) {
        free(name);
        return fail(ctx, inst->line, "out of memory");
    }
    cfg->topic_defaults = td;
    td[cfg->topic_default_count].topic = name;
    td[cfg->topic_default_count].type = USHER_EVENT_UNKNOWN;
    inst->index = cfg->topic_default_count++;
    return apply_defaults(ctx, inst->def, &td[inst->index]);
}

/* Checks one librdkafka property on the scratch conf and keeps it in cfg->kafka_props. Keys
 * usher must control itself are refused with the reason. */
static int kafka_other(load_ctx *ctx, sect_inst *inst, const char *key, const char *value,
                       int line)
{
    usher_config *cfg = ctx->cfg;
    const usher_kv *dup = kv_find(&cfg->kafka_props, key);
    char errbuf[512];
    char got[16];
    size_t got_size = sizeof(got);

    (void)inst;
    if (dup)
        return fail(ctx, line, "duplicate key '%s' (first set on line %d)", key, dup->line);
    if (strcmp(key, "metadata.broker.list") == 0)
        return fail(ctx, line, "kafka: use bootstrap.servers instead of metadata.broker.list");
    if (rd_kafka_conf_set(ctx->kconf, key, value, errbuf, sizeof(errbuf)) != RD_KAFKA_CONF_OK)
        return fail(ctx, line, "kafka: %s", errbuf);
    if ((strcmp(key, "enable.auto.commit") == 0 || strcmp(key, "enable.auto.offset.store") == 0)
        && rd_kafka_conf_get(ctx->kconf, key, got, &got_size) == RD_KAFKA_CONF_OK
        && strcmp(got, "true") == 0)
        return fail(ctx, line, "kafka: %s=true is not allowed: usher stores and commits "
                    "offsets itself, only after every handler has finished with a record",
                    key);
    if (strcmp(key, "partition.assignment.strategy") == 0
        && strcmp(value, "cooperative-sticky") != 0)
        return fail(ctx, line, "kafka: partition.assignment.strategy must be "
                    "cooperative-sticky (usher relies on incremental rebalancing)");
    if (kv_append(&cfg->kafka_props, key, value, line) < 0)
        return fail(ctx, line, "out of memory");
    return 0;
}

/* Keeps a handler's own key for the registry to check against the handler's table. */
static int handler_other(load_ctx *ctx, sect_inst *inst, const char *key, const char *value,
                         int line)
{
    usher_handler_section *h = &ctx->cfg->handlers[inst->index];
    const usher_kv *dup = kv_find(&h->keys, key);

    if (dup)
        return fail(ctx, line, "duplicate key '%s' (first set on line %d)", key, dup->line);
    if (kv_append(&h->keys, key, value, line) < 0)
        return fail(ctx, line, "out of memory");
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* sections, the reader and the inih handler                                                */

/* Opens section `name` (header on line): finds its table, refuses unknown and repeated
 * sections, and makes it current. */
static int begin_section(load_ctx *ctx, const char *name, int line)
{
    const cfg_section *def = NULL;
    const char *suffix = NULL;
    sect_inst *sects = NULL;
    sect_inst *inst = NULL;

    for (size_t i = 0; i < ARRAY_SIZE(sections) && !def; i++) {
        size_t n = strlen(sections[i].name);
        if (!sections[i].prefixed && strcmp(name, sections[i].name) == 0)
            def = &sections[i];
        else if (sections[i].prefixed && strncmp(name, sections[i].name, n) == 0
                 && name[n] == '.' && name[n + 1] != '\0') {
            def = &sections[i];
            suffix = name + n + 1;
        }
    }
    if (!def)
        return fail(ctx, line, "unknown section [%s]", name);
    for (size_t i = 0; i < ctx->nsects; i++) {
        const sect_inst *s = &ctx->sects[i];
        if (s->def == def && (!suffix || strcmp(s->suffix, suffix) == 0))
            return fail(ctx, line, "duplicate section [%s] (first on line %d)", name, s->line);
    }
    sects = realloc(ctx->sects, (ctx->nsects + 1) * sizeof(*sects));
    if (!sects)
        return fail(ctx, line, "out of memory");
    ctx->sects = sects;
    inst = &sects[ctx->nsects];
    memset(inst, 0, sizeof(*inst));
    inst->def = def;
    inst->line = line;
    if (suffix && !(inst->suffix = strdup(suffix)))
        return fail(ctx, line, "out of memory");
    ctx->nsects++;
    ctx->cur = ctx->nsects;
    return def->begin ? def->begin(ctx, inst) : 0;
}

/* Looks at the whole line starting at ctx->pos before inih sees it: refuses over-long lines
 * and NUL bytes (inih would silently split or cut them) and opens sections, using inih's own
 * rules ([ after optional blanks, up to the first ]; a UTF-8 BOM is skipped on line 1). */
static int scan_line(load_ctx *ctx)
{
    int line = ctx->lines_done + 1;
    const char *p = ctx->buf + ctx->pos;
    const char *nl = memchr(p, '\n', ctx->len - ctx->pos);
    const char *end = nl ? nl : ctx->buf + ctx->len;
    const char *close = NULL;
    char *name = NULL;
    int rc;

    if ((size_t)(end - p) + 3 > (size_t)CFG_MAX_LINE)
        return fail(ctx, line, "line longer than %d bytes", CFG_MAX_LINE - 3);
    if (memchr(p, '\0', (size_t)(end - p)))
        return fail(ctx, line, "NUL byte in line");
    if (line == 1 && end - p >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0)
        p += 3;
    while (p < end && isspace((unsigned char)*p))
        p++;
    if (p == end || *p != '[')
        return 0;
    close = memchr(p, ']', (size_t)(end - p));
    if (!close)
        return 0; /* inih reports the syntax error on this line */
    name = strndup_trim(p + 1, (size_t)(close - p - 1));
    if (!name)
        return fail(ctx, line, "out of memory");
    rc = begin_section(ctx, name, line);
    free(name);
    return rc;
}

/* fgets-style reader over the in-memory file. Counts completed lines; returns NULL at the
 * end or after an error found by scan_line (which ends inih's loop). */
static char *cfg_reader(char *str, int num, void *stream)
{
    load_ctx *ctx = stream;
    size_t n = 0;

    if (ctx->failed || ctx->pos >= ctx->len || num < 2)
        return NULL;
    if (ctx->at_bol && scan_line(ctx) < 0)
        return NULL;
    while (n < (size_t)num - 1 && ctx->pos < ctx->len) {
        char c = ctx->buf[ctx->pos++];
        str[n++] = c;
        if (c == '\n')
            break;
    }
    str[n] = '\0';
    ctx->at_bol = str[n - 1] == '\n';
    if (ctx->at_bol)
        ctx->lines_done++;
    return str;
}

/* inih's handler: one key = value of the current section. Returns 1 to go on, 0 to stop. */
static int cfg_handler(void *user, const char *section, const char *name, const char *value)
{
    load_ctx *ctx = user;
    /* inih calls us once the whole line is read: it ended with a newline (counted), or it is
     * the last line of a file without a final newline */
    int line = ctx->lines_done + (ctx->at_bol ? 0 : 1);
    sect_inst *inst = NULL;
    char *v = NULL;
    int i;
    int rc = -1;

    (void)section; /* inih truncates it to 49 bytes; scan_line tracked the real one */
    if (ctx->failed)
        return 0;
    if (!ctx->cur) {
        fail(ctx, line, "key '%s' outside any section", name);
        goto out;
    }
    if (!*name) {
        fail(ctx, line, "missing key name before '='");
        goto out;
    }
    inst = &ctx->sects[ctx->cur - 1];
    i = key_index(inst->def, name);
    if (i >= 0 && inst->key_line[i]) {
        fail(ctx, line, "duplicate key '%s' (first set on line %d)", name, inst->key_line[i]);
        goto out;
    }
    if (i < 0 && !inst->def->other) {
        fail(ctx, line, "unknown key '%s' in [%s%s%s]", name, inst->def->name,
             inst->suffix ? "." : "", inst->suffix ? inst->suffix : "");
        goto out;
    }
    if (expand_env(ctx, value, line, &v) < 0)
        goto out;
    if (i >= 0) {
        if (apply_key(ctx, inst->def->target(ctx, inst), &inst->def->keys[i], v, line) < 0)
            goto out;
        inst->key_line[i] = line;
    }
    else if (inst->def->other(ctx, inst, name, v, line) < 0) {
        goto out;
    }
    rc = 0;
out:
    free(v);
    return rc == 0;
}

/* ---------------------------------------------------------------------------------------- */
/* after the whole file                                                                     */

/* Returns the instance of fixed section `name`, or NULL if the file has none. */
static const sect_inst *find_fixed(const load_ctx *ctx, const char *name)
{
    for (size_t i = 0; i < ctx->nsects; i++)
        if (!ctx->sects[i].def->prefixed && strcmp(ctx->sects[i].def->name, name) == 0)
            return &ctx->sects[i];
    return NULL;
}

/* Refuses max_ms < initial_ms, pointing at the line that set either. */
static int check_retry(load_ctx *ctx, const usher_retry_policy *r, const sect_inst *inst,
                       int fallback_line)
{
    int line;

    if (r->max_ms >= r->initial_ms)
        return 0;
    line = inst ? inst_key_line(inst, "retry_max_ms") : 0;
    if (!line && inst)
        line = inst_key_line(inst, "retry_initial_ms");
    if (!line)
        line = fallback_line;
    return fail(ctx, line, "retry_max_ms (%" PRId64 ") is less than retry_initial_ms (%" PRId64
                ")", r->max_ms, r->initial_ms);
}

/* Cross-key checks and derived values, once the whole file is read: required keys, retry
 * inheritance, [topic.NAME] against the topics, the dlq topic, cfg->norm's pointers. */
static int finish(load_ctx *ctx)
{
    usher_config *cfg = ctx->cfg;
    const sect_inst *us = find_fixed(ctx, "usher");
    size_t kept = 0;

    for (size_t s = 0; s < ARRAY_SIZE(sections); s++) {
        const cfg_section *sec = &sections[s];
        const sect_inst *inst = sec->prefixed ? NULL : find_fixed(ctx, sec->name);
        if (sec->prefixed)
            continue;
        for (size_t k = 0; k < sec->nkeys; k++)
            if ((sec->keys[k].flags & F_REQUIRED) && !(inst && inst->key_line[k]))
                return fail(ctx, inst ? inst->line : 0, "[%s] %s is required", sec->name,
                            sec->keys[k].name);
    }
    if (check_retry(ctx, &cfg->retry, us, 0) < 0)
        return -1;

    for (size_t i = 0; i < ctx->nsects; i++) {
        const sect_inst *inst = &ctx->sects[i];
        if (strcmp(inst->def->name, "handler") == 0) {
            usher_handler_section *h = &cfg->handlers[inst->index];
            if (!inst_key_line(inst, "retry_initial_ms"))
                h->retry.initial_ms = cfg->retry.initial_ms;
            if (!inst_key_line(inst, "retry_max_ms"))
                h->retry.max_ms = cfg->retry.max_ms;
            if (!inst_key_line(inst, "retry_max_attempts"))
                h->retry.max_attempts = cfg->retry.max_attempts;
            if (!inst_key_line(inst, "retry_max_time_ms"))
                h->retry.max_time_ms = cfg->retry.max_time_ms;
            if (check_retry(ctx, &h->retry, inst, inst->line) < 0)
                return -1;
        }
        else if (strcmp(inst->def->name, "topic") == 0) {
            size_t t;
            for (t = 0; t < cfg->topic_count; t++)
                if (strcmp(cfg->topics[t], inst->suffix) == 0)
                    break;
            if (t == cfg->topic_count) {
                int line = inst_key_line(inst, "default_type");
                return fail(ctx, line ? line : inst->line, "[topic.%s]: '%s' is not one of "
                            "the [kafka] topics", inst->suffix, inst->suffix);
            }
        }
    }
    /* keep only the [topic.NAME] entries that set something */
    for (size_t i = 0; i < ctx->nsects; i++) {
        const sect_inst *inst = &ctx->sects[i];
        if (strcmp(inst->def->name, "topic") != 0)
            continue;
        if (inst_key_line(inst, "default_type"))
            cfg->topic_defaults[kept++] = cfg->topic_defaults[inst->index];
        else
            free((void *)cfg->topic_defaults[inst->index].topic);
    }
    cfg->topic_default_count = kept;
    if (!kept) {
        free(cfg->topic_defaults);
        cfg->topic_defaults = NULL;
    }

    if (cfg->dlq_topic) {
        const sect_inst *dq = find_fixed(ctx, "dlq");
        for (size_t t = 0; t < cfg->topic_count; t++)
            if (strcmp(cfg->topics[t], cfg->dlq_topic) == 0)
                return fail(ctx, dq ? inst_key_line(dq, "topic") : 0, "topic: the dead-letter "
                            "topic must not be one of the consumed [kafka] topics");
    }

    cfg->norm.topic_defaults = cfg->topic_defaults;
    cfg->norm.topic_default_count = cfg->topic_default_count;
    cfg->norm.type_aliases = cfg->type_aliases;
    cfg->norm.type_alias_count = cfg->type_alias_count;
    cfg->norm.logto_signing_key = cfg->logto_signing_key;
    return 0;
}

/* Reads the whole file into ctx->buf. */
static int read_file(load_ctx *ctx)
{
    FILE *f = fopen(ctx->path, "rb");
    char *buf = NULL;
    size_t len = 0;
    size_t cap = 0;
    int rc = -1;

    if (!f)
        return fail(ctx, 0, "cannot open: %s", strerror(errno));
    for (;;) {
        size_t n;
        if (len == cap) {
            char *nb = NULL;
            cap = cap ? cap * 2 : 8192;
            if (cap > CFG_MAX_FILE + 1)
                cap = CFG_MAX_FILE + 1;
            if (len == cap) {
                fail(ctx, 0, "file larger than %d bytes", CFG_MAX_FILE);
                goto out;
            }
            nb = realloc(buf, cap);
            if (!nb) {
                fail(ctx, 0, "out of memory");
                goto out;
            }
            buf = nb;
        }
        n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) {
            if (ferror(f)) {
                fail(ctx, 0, "cannot read: %s", strerror(errno));
                goto out;
            }
            break;
        }
    }
    ctx->buf = buf;
    ctx->len = len;
    buf = NULL;
    rc = 0;
out:
    free(buf);
    fclose(f);
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* public API                                                                               */

int usher_config_load(const char *path, usher_config *cfg, char *errstr, size_t errstr_size)
{
    load_ctx ctx;
    int ret;
    int rc = -1;
    /* inih's run-time settings are process-wide (config is loaded on the main thread only):
     * set ours for this parse and restore the caller's after */
    bool saved_stack = ini_use_stack, saved_realloc = ini_allow_realloc;
    bool saved_multi = ini_allow_multiline, saved_inline = ini_allow_inline_comments;
    bool saved_stop = ini_stop_on_first_error, saved_novalue = ini_allow_no_value;
    bool saved_bom = ini_allow_bom;
    int saved_max = ini_max_line;
    char *saved_prefixes = ini_start_comment_prefixes;
    static char comment_prefixes[] = ";#";

    memset(cfg, 0, sizeof(*cfg));
    memset(&ctx, 0, sizeof(ctx));
    ctx.cfg = cfg;
    ctx.path = path ? path : "(null)";
    ctx.errstr = errstr;
    ctx.errstr_size = errstr_size;
    ctx.at_bol = true;
    if (errstr && errstr_size)
        errstr[0] = '\0';
    if (!path) {
        fail(&ctx, 0, "no configuration path");
        goto out;
    }

    cfg->path = strdup(path);
    ctx.kconf = rd_kafka_conf_new();
    if (!cfg->path || !ctx.kconf) {
        fail(&ctx, 0, "out of memory");
        goto out;
    }
    usher_norm_options_init(&cfg->norm);
    for (size_t s = 0; s < ARRAY_SIZE(sections); s++)
        if (!sections[s].prefixed && apply_defaults(&ctx, &sections[s], cfg) < 0)
            goto out;
    if (read_file(&ctx) < 0)
        goto out;

    ini_use_stack = false;
    ini_allow_realloc = true;
    ini_max_line = CFG_MAX_LINE;
    ini_allow_multiline = false;
    ini_allow_inline_comments = false; /* values may contain ';' */
    ini_stop_on_first_error = true;
    ini_allow_no_value = false;
    ini_allow_bom = true;
    ini_start_comment_prefixes = comment_prefixes;
    ret = ini_parse_stream(cfg_reader, &ctx, cfg_handler, &ctx);
    ini_use_stack = saved_stack;
    ini_allow_realloc = saved_realloc;
    ini_max_line = saved_max;
    ini_allow_multiline = saved_multi;
    ini_allow_inline_comments = saved_inline;
    ini_stop_on_first_error = saved_stop;
    ini_allow_no_value = saved_novalue;
    ini_allow_bom = saved_bom;
    ini_start_comment_prefixes = saved_prefixes;
    if (ctx.failed)
        goto out;
    if (ret == -2) {
        fail(&ctx, 0, "out of memory");
        goto out;
    }
    if (ret != 0) {
        fail(&ctx, ret, "syntax error (expected [section], key = value, or a comment starting "
             "with ';' or '#')");
        goto out;
    }
    if (finish(&ctx) < 0)
        goto out;
    rc = 0;
out:
    for (size_t i = 0; i < ctx.nsects; i++)
        free(ctx.sects[i].suffix);
    free(ctx.sects);
    free(ctx.buf);
    if (ctx.kconf)
        rd_kafka_conf_destroy(ctx.kconf);
    if (rc < 0)
        usher_config_free(cfg);
    return rc;
}

void usher_config_free(usher_config *cfg)
{
    if (!cfg)
        return;
    free(cfg->path);
    free(cfg->bootstrap_servers);
    free(cfg->group_id);
    usher_strv_free(cfg->topics);
    kv_free(&cfg->kafka_props);
    free(cfg->redis_url);
    free(cfg->key_prefix);
    free(cfg->dlq_topic);
    for (size_t i = 0; i < cfg->type_alias_count; i++)
        free((void *)cfg->type_aliases[i].name);
    free(cfg->type_aliases);
    for (size_t i = 0; i < cfg->topic_default_count; i++)
        free((void *)cfg->topic_defaults[i].topic);
    free(cfg->topic_defaults);
    free(cfg->logto_signing_key);
    for (size_t i = 0; i < cfg->handler_count; i++) {
        usher_handler_section *h = &cfg->handlers[i];
        free(h->name);
        free(h->events);
        free(h->library);
        kv_free(&h->keys);
    }
    free(cfg->handlers);
    memset(cfg, 0, sizeof(*cfg));
}

const char *usher_config_path(const char *explicit_path)
{
    const char *env = NULL;

    if (explicit_path)
        return explicit_path;
    env = getenv("USHER_CONFIG");
    if (env && *env)
        return env;
    return "config/usher.conf";
}

int usher_split_list(const char *s, char ***out)
{
    char **v = NULL;
    size_t n = 0;
    size_t cap = 1;
    const char *p = s ? s : "";

    *out = NULL;
    for (const char *c = p; *c; c++)
        if (*c == ',')
            cap++;
    v = calloc(cap + 1, sizeof(*v));
    if (!v)
        return -1;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char *item = strndup_trim(p, len);
        if (!item) {
            usher_strv_free(v);
            return -1;
        }
        if (*item)
            v[n++] = item;
        else
            free(item);
        if (!comma)
            break;
        p = comma + 1;
    }
    *out = v;
    return (int)n;
}

void usher_strv_free(char **v)
{
    if (!v)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}

int usher_log_level_from_name(const char *s, usher_log_level *out)
{
    if (!s)
        return -1;
    for (int i = 0; log_level_names[i]; i++) {
        if (strcmp(s, log_level_names[i]) == 0) {
            *out = (usher_log_level)i;
            return 0;
        }
    }
    return -1;
}
