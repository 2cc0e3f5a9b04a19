/* stats.c — see stats.h. The key schema is documented in README.md. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "redis.h"
#include "stats.h"
#include "usher/event.h"

static const char *const handler_fields[] = { "ok", "retried", "failed", "dead_lettered",
                                              "skipped", "calls", "busy_us" };

/* Runs "CMD key"; returns the reply, or NULL with a message printed. */
static redisReply *command(redisContext *c, const char *cmd, const char *key)
{
    redisReply *r = redisCommand(c, "%s %s", cmd, key);

    if (r == NULL || c->err) {
        fprintf(stderr, "usher: redis: %s\n", c->errstr);
        if (r != NULL)
            freeReplyObject(r);
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "usher: redis: %s\n", r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

/* Reads a HASH into a JSON object: integer values, or (json_values) values that are JSON
 * objects (see report.h), others skipped. */
static json_t *hash_to_json(redisContext *c, const char *key, bool json_values, int *failed)
{
    redisReply *r = command(c, "HGETALL", key);
    json_t *o = json_object();

    if (r == NULL) {
        *failed = 1;
        return o;
    }
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const char *field = r->element[i]->str, *value = r->element[i + 1]->str;
        if (!json_values) {
            json_object_set_new(o, field, json_integer(strtoll(value, NULL, 10)));
        } else {
            json_t *v = json_loads(value, 0, NULL);
            if (json_is_object(v))
                json_object_set_new(o, field, v);
            else
                json_decref(v);
        }
    }
    freeReplyObject(r);
    return o;
}

/* Adds "members" (each with "alive": seen within three report intervals), "lag" per
 * partition and "lag_total". */
static void collect_liveness(redisContext *c, const char *prefix, int64_t interval_ms,
                             json_t *root, int *failed)
{
    char key[512];
    const char *name;
    json_t *v, *members, *lag;
    json_int_t total = 0;
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    json_int_t now = (json_int_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    snprintf(key, sizeof(key), "%s:members", prefix);
    members = hash_to_json(c, key, true, failed);
    json_object_foreach(members, name, v) {
        json_int_t seen = json_integer_value(json_object_get(v, "last_seen_ms"));
        json_object_set_new(v, "alive", json_boolean(now - seen <= 3 * interval_ms));
    }
    snprintf(key, sizeof(key), "%s:lag", prefix);
    lag = hash_to_json(c, key, true, failed);
    json_object_foreach(lag, name, v) {
        json_int_t l = json_integer_value(json_object_get(v, "lag"));
        if (l > 0)
            total += l;
    }
    json_object_set_new(root, "members", members);
    json_object_set_new(root, "lag", lag);
    json_object_set_new(root, "lag_total", json_integer(total));
}

/* Collects everything into one JSON document. */
static json_t *collect(redisContext *c, const char *prefix, const char *only_day,
                       int64_t report_interval_ms, int *failed)
{
    json_t *root = json_object(), *events = json_object(), *uu = json_object();
    json_t *handlers = json_object();
    char key[512];
    redisReply *r = NULL;

    for (int t = 0; t < USHER_EVENT_TYPE_COUNT; t++) {
        const char *name = usher_event_type_name((usher_event_type)t);
        json_t *h, *days = json_object(), *udays = json_object(), *v;
        const char *field;

        snprintf(key, sizeof(key), "%s:events:%s", prefix, name);
        h = hash_to_json(c, key, false, failed);
        if (json_object_size(h) == 0) {
            json_decref(h);
            json_decref(days);
            json_decref(udays);
            continue;
        }
        json_object_foreach(h, field, v) {
            if (strcmp(field, "total") == 0 || (only_day && strcmp(field, only_day) != 0))
                continue;
            json_object_set(days, field, v);
            snprintf(key, sizeof(key), "%s:uu:%s:%s", prefix, name, field);
            r = command(c, "PFCOUNT", key);
            if (r == NULL) {
                *failed = 1;
                continue;
            }
            json_object_set_new(udays, field, json_integer(r->integer));
            freeReplyObject(r);
        }
        json_object_set_new(events, name,
                            json_pack("{s:I,s:o}", "total",
                                      json_integer_value(json_object_get(h, "total")), "days",
                                      days));
        json_object_set_new(uu, name, udays);
        json_decref(h);
    }
    snprintf(key, sizeof(key), "%s:handlers", prefix);
    r = command(c, "SMEMBERS", key);
    if (r == NULL)
        *failed = 1;
    for (size_t i = 0; r != NULL && i < r->elements; i++) {
        json_t *h;
        snprintf(key, sizeof(key), "%s:handler:%s", prefix, r->element[i]->str);
        h = hash_to_json(c, key, false, failed);
        for (size_t f = 0; f < sizeof(handler_fields) / sizeof(handler_fields[0]); f++)
            if (json_object_get(h, handler_fields[f]) == NULL)
                json_object_set_new(h, handler_fields[f], json_integer(0));
        json_object_set_new(handlers, r->element[i]->str, h);
    }
    if (r != NULL)
        freeReplyObject(r);
    snprintf(key, sizeof(key), "%s:dead_lettered", prefix);
    r = command(c, "GET", key);
    json_object_set_new(root, "events", events);
    json_object_set_new(root, "unique_users", uu);
    json_object_set_new(root, "handlers", handlers);
    json_object_set_new(root, "dead_lettered",
                        json_integer(r && r->type == REDIS_REPLY_STRING
                                         ? strtoll(r->str, NULL, 10) : 0));
    if (r == NULL)
        *failed = 1;
    else
        freeReplyObject(r);
    snprintf(key, sizeof(key), "%s:dead_letter_reasons", prefix);
    json_object_set_new(root, "dead_letter_reasons", hash_to_json(c, key, false, failed));
    collect_liveness(c, prefix, report_interval_ms, root, failed);
    return root;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Prints the document as aligned text for a person, days in order. */
static void print_text(const json_t *root, FILE *out)
{
    const char *name, *day;
    json_t *v, *d;

    fprintf(out, "events (by UTC day of the event)\n");
    if (json_object_size(json_object_get(root, "events")) == 0)
        fprintf(out, "  (none yet)\n");
    json_object_foreach(json_object_get(root, "events"), name, v) {
        fprintf(out, "  %-26s total %10lld\n", name,
                (long long)json_integer_value(json_object_get(v, "total")));
        json_t *days = json_object_get(v, "days");
        size_t nd = json_object_size(days), k = 0;
        const char **sorted = calloc(nd ? nd : 1, sizeof(*sorted));
        if (sorted == NULL)
            continue;
        json_object_foreach(days, day, d)
            sorted[k++] = day;
        qsort(sorted, nd, sizeof(*sorted), cmp_str);
        for (k = 0; k < nd; k++) {
            json_t *u = json_object_get(json_object_get(json_object_get(root, "unique_users"),
                                                        name), sorted[k]);
            fprintf(out, "  %-26s %-10s %10lld   unique users ~%lld\n", "", sorted[k],
                    (long long)json_integer_value(json_object_get(days, sorted[k])),
                    (long long)json_integer_value(u));
        }
        free(sorted);
    }
    fprintf(out, "\nhandlers                          ok    retried     failed dead_lettered"
                 "    skipped   ms/call\n");
    json_object_foreach(json_object_get(root, "handlers"), name, v) {
        long long calls = json_integer_value(json_object_get(v, "calls"));
        fprintf(out, "  %-24s %10lld %10lld %10lld %13lld %10lld %9.2f\n", name,
                (long long)json_integer_value(json_object_get(v, "ok")),
                (long long)json_integer_value(json_object_get(v, "retried")),
                (long long)json_integer_value(json_object_get(v, "failed")),
                (long long)json_integer_value(json_object_get(v, "dead_lettered")),
                (long long)json_integer_value(json_object_get(v, "skipped")),
                calls > 0 ? (double)json_integer_value(json_object_get(v, "busy_us")) /
                                (double)calls / 1000.0 : 0.0);
    }
    fprintf(out, "\ndead-lettered records: %lld\n",
            (long long)json_integer_value(json_object_get(root, "dead_lettered")));
    json_object_foreach(json_object_get(root, "dead_letter_reasons"), name, v)
        fprintf(out, "  %-26s %10lld\n", name, (long long)json_integer_value(v));
    fprintf(out, "\nmembers\n");
    json_object_foreach(json_object_get(root, "members"), name, v)
        fprintf(out, "  %-32s %-5s partitions %lld, in flight %lld\n", name,
                json_is_true(json_object_get(v, "alive")) ? "alive" : "gone",
                (long long)json_integer_value(json_object_get(v, "partitions")),
                (long long)json_integer_value(json_object_get(v, "inflight")));
    fprintf(out, "\nlag per partition (total %lld)\n",
            (long long)json_integer_value(json_object_get(root, "lag_total")));
    json_object_foreach(json_object_get(root, "lag"), name, v)
        fprintf(out, "  %-32s lag %10lld  committed %10lld  end %10lld%s\n", name,
                (long long)json_integer_value(json_object_get(v, "lag")),
                (long long)json_integer_value(json_object_get(v, "committed")),
                (long long)json_integer_value(json_object_get(v, "end")),
                json_is_true(json_object_get(v, "stuck")) ? "  STUCK" : "");
}

int usher_stats(const usher_config *cfg, bool json, const char *day, FILE *out)
{
    usher_redis_target t;
    redisContext *c = NULL;
    json_t *root = NULL;
    char err[256];
    int failed = 0, rc = 1;

    if (usher_redis_parse_url(cfg->redis_url, &t, err, sizeof(err)) != 0) {
        fprintf(stderr, "usher: %s\n", err);
        return 1;
    }
    t.connect_timeout_ms = cfg->redis_connect_timeout_ms;
    t.command_timeout_ms = cfg->redis_command_timeout_ms;
    c = usher_redis_connect(&t, err, sizeof(err));
    if (c == NULL) {
        fprintf(stderr, "usher: %s\n", err);
        goto out;
    }
    root = collect(c, cfg->key_prefix, day, cfg->report_interval_ms, &failed);
    if (failed)
        goto out;
    if (json) {
        char *s = json_dumps(root, JSON_SORT_KEYS | JSON_COMPACT);
        if (s == NULL)
            goto out;
        fprintf(out, "%s\n", s);
        free(s);
    } else {
        print_text(root, out);
    }
    rc = 0;
out:
    json_decref(root);
    if (c != NULL)
        redisFree(c);
    usher_redis_target_free(&t);
    return rc;
}
