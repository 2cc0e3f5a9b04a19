/*
 * config.h — the usher INI configuration, parsed with inih and validated against a
 * declarative key table (src/config.c). Every value has had ${VAR} / ${VAR:-default}
 * expanded from the environment. Errors are reported as "FILE:LINE: message".
 */
#ifndef USHER_CONFIG_H
#define USHER_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "normalize.h"
#include "usher/log.h"

/* One key = value line, kept with its line number for later validation messages. */
typedef struct usher_kv {
    char *key;
    char *value;
    int line;
} usher_kv;

typedef struct usher_kv_list {
    usher_kv *items;
    size_t count;
    size_t cap;
} usher_kv_list;

typedef enum usher_ordering {
    USHER_ORDER_KEY = 0,   /* same record key in order, different keys in parallel */
    USHER_ORDER_PARTITION, /* one event at a time per partition */
    USHER_ORDER_UNORDERED
} usher_ordering;

/* Retry policy: exponential backoff with full jitter between initial_ms and max_ms; gives up
 * after max_attempts attempts (0 = no limit) or max_time_ms since the first failure (0 = no
 * limit), whichever comes first. Giving up means dead-lettering; without a dead-letter topic
 * usher never gives up. */
typedef struct usher_retry_policy {
    int64_t initial_ms;
    int64_t max_ms;
    int max_attempts;
    int64_t max_time_ms;
} usher_retry_policy;

/* [handler.NAME] */
typedef struct usher_handler_section {
    char *name;
    int line;              /* line of the [handler.NAME] header */
    int enabled;           /* default 1 */
    char *events;          /* comma list as written, NULL = the handler's own default */
    int events_line;
    char *library;         /* shared object to dlopen, NULL = built in */
    int library_line;
    usher_retry_policy retry;
    int64_t marker_ttl_s;  /* how long usher_once_mark remembers a side effect, 30 days */
    usher_kv_list keys;    /* the handler's own keys, validated against its table later */
} usher_handler_section;

typedef struct usher_config {
    char *path;

    /* [usher] */
    int workers;               /* worker threads, default 4 */
    int max_inflight;          /* events in flight per member before partitions pause, 1000 */
    usher_ordering ordering;   /* default key */
    int64_t drain_timeout_ms;  /* budget to finish in-flight work on revoke / shutdown, 8000 */
    int64_t commit_interval_ms;/* periodic async commit, 1000 */
    int64_t report_interval_ms;/* liveness and lag written to Redis, 5000 */
    int64_t stuck_after_ms;    /* a partition with lag and no commit progress this long is stuck */
    usher_log_level log_level; /* default info */
    usher_retry_policy retry;  /* defaults for every handler: 200, 30000, 0, 600000 */

    /* [kafka] */
    char *bootstrap_servers;
    char *group_id;
    char **topics;
    size_t topic_count;
    usher_kv_list kafka_props; /* every other [kafka] key, passed to librdkafka as is */

    /* [redis] */
    char *redis_url;           /* default redis://127.0.0.1:6379 */
    char *key_prefix;          /* default usher */
    int64_t redis_connect_timeout_ms; /* 2000 */
    int64_t redis_command_timeout_ms; /* 5000 */

    /* [dlq] */
    char *dlq_topic;           /* NULL = no dead-letter topic */

    /* [normalize] and [topic.NAME]; the pointers inside norm point into the arrays below */
    usher_norm_options norm;
    usher_type_alias *type_aliases;
    size_t type_alias_count;
    usher_topic_default *topic_defaults;
    size_t topic_default_count;
    char *logto_signing_key;

    /* [handler.NAME], in file order */
    usher_handler_section *handlers;
    size_t handler_count;
} usher_config;

/*
 * Loads and validates path. On success returns 0 and *cfg owns everything it points to.
 * On failure returns -1, writes "FILE:LINE: message" (or "FILE: message" when there is no
 * line) to errstr, and leaves *cfg freed. Unknown sections and keys are errors; [kafka]
 * pass-through keys are checked by librdkafka itself.
 */
int usher_config_load(const char *path, usher_config *cfg, char *errstr, size_t errstr_size);

/* Frees everything cfg owns; safe on a zeroed or already freed config. */
void usher_config_free(usher_config *cfg);

/* The config path: explicit if non-NULL, else $USHER_CONFIG, else config/usher.conf. */
const char *usher_config_path(const char *explicit_path);

/* Parses a comma-separated list into trimmed, non-empty items. Returns the count, or -1 on
 * allocation failure. *out is a NULL-terminated array the caller frees with usher_strv_free. */
int usher_split_list(const char *s, char ***out);
void usher_strv_free(char **v);

/* Parses a log level name; -1 if not one. */
int usher_log_level_from_name(const char *s, usher_log_level *out);

#endif /* USHER_CONFIG_H */
