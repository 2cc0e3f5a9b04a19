/*
 * test_config.c — the INI loader (src/config.c): defaults, every key, ${VAR} expansion, errors
 * with exact "FILE:LINE: message", long values, librdkafka pass-through, handler sections.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <ini.h>

#include "config.h"

#ifndef USHER_FIXTURES_DIR
#define USHER_FIXTURES_DIR "tests/fixtures"
#endif
#define CONFIG_DIR USHER_FIXTURES_DIR "/../../config"

/* Four lines: an error on the line after KAFKA + "[section]\n" is on line 6. */
#define KAFKA "[kafka]\nbootstrap.servers = b:9092\ngroup.id = g\ntopics = user-events\n"

/* Writes len bytes of text to a fresh /tmp file; returns its malloc'ed path. */
static char *write_conf_n(const char *text, size_t len)
{
    char *path = strdup("/tmp/usher-test-config-XXXXXX");
    int fd;

    assert_non_null(path);
    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    return path;
}

static char *write_conf(const char *text)
{
    return write_conf_n(text, strlen(text));
}

/* Loads text; the temp file is gone afterwards. *path_out (if given) gets the file name. */
static int load_text(const char *text, usher_config *cfg, char *err, size_t errsz,
                     char **path_out)
{
    char *path = write_conf(text);
    int rc = usher_config_load(path, cfg, err, errsz);

    unlink(path);
    if (path_out)
        *path_out = path;
    else
        free(path);
    return rc;
}

/* Asserts that loading text fails with exactly "FILE:LINE: msg" (or "FILE: msg" for line 0)
 * and leaves the config zeroed. With prefix_only, msg need only start the message. */
static void expect_error_impl(const char *text, int line, const char *msg, int prefix_only)
{
    usher_config cfg;
    char err[1024];
    char want[1024];
    char *path = NULL;
    int rc;

    memset(&cfg, 0xA5, sizeof(cfg)); /* the loader must zero it itself */
    err[0] = '\0';
    rc = load_text(text, &cfg, err, sizeof(err), &path);
    if (line > 0)
        snprintf(want, sizeof(want), "%s:%d: %s", path, line, msg);
    else
        snprintf(want, sizeof(want), "%s: %s", path, msg);
    if (rc != -1 || (prefix_only ? strncmp(err, want, strlen(want)) != 0 : strcmp(err, want) != 0))
        print_error("config:\n%s\n-- want%s: %s\n-- got (rc %d): %s\n", text,
                    prefix_only ? " prefix" : "", want, rc, err);
    assert_int_equal(rc, -1);
    if (prefix_only)
        assert_memory_equal(err, want, strlen(want));
    else
        assert_string_equal(err, want);
    assert_null(cfg.path);
    assert_null(cfg.topics);
    assert_null(cfg.handlers);
    assert_int_equal(cfg.handler_count, 0);
    assert_null(cfg.kafka_props.items);
    free(path);
}

static void expect_error(const char *text, int line, const char *msg)
{
    expect_error_impl(text, line, msg, 0);
}

/* Loads text and asserts success. */
static void load_ok(const char *text, usher_config *cfg)
{
    char err[1024] = "";
    int rc = load_text(text, cfg, err, sizeof(err), NULL);

    if (rc != 0)
        print_error("config:\n%s\n-- unexpected error: %s\n", text, err);
    assert_int_equal(rc, 0);
    assert_string_equal(err, "");
}

static const usher_handler_section *find_handler(const usher_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->handler_count; i++)
        if (strcmp(cfg->handlers[i].name, name) == 0)
            return &cfg->handlers[i];
    return NULL;
}

static const char *find_kv(const usher_kv_list *l, const char *key, int *line)
{
    for (size_t i = 0; i < l->count; i++) {
        if (strcmp(l->items[i].key, key) == 0) {
            if (line)
                *line = l->items[i].line;
            return l->items[i].value;
        }
    }
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */

static void test_defaults(void **state)
{
    usher_config cfg;
    (void)state;

    load_ok(KAFKA, &cfg);
    assert_non_null(cfg.path);
    assert_int_equal(cfg.workers, 4);
    assert_int_equal(cfg.max_inflight, 1000);
    assert_int_equal(cfg.ordering, USHER_ORDER_KEY);
    assert_int_equal(cfg.drain_timeout_ms, 8000);
    assert_int_equal(cfg.commit_interval_ms, 1000);
    assert_int_equal(cfg.log_level, USHER_LOG_INFO);
    assert_int_equal(cfg.retry.initial_ms, 200);
    assert_int_equal(cfg.retry.max_ms, 30000);
    assert_int_equal(cfg.retry.max_attempts, 0);
    assert_int_equal(cfg.retry.max_time_ms, 600000);
    assert_string_equal(cfg.bootstrap_servers, "b:9092");
    assert_string_equal(cfg.group_id, "g");
    assert_int_equal(cfg.topic_count, 1);
    assert_string_equal(cfg.topics[0], "user-events");
    assert_null(cfg.topics[1]);
    assert_int_equal(cfg.kafka_props.count, 0);
    assert_string_equal(cfg.redis_url, "redis://127.0.0.1:6379");
    assert_string_equal(cfg.key_prefix, "usher");
    assert_int_equal(cfg.redis_connect_timeout_ms, 2000);
    assert_int_equal(cfg.redis_command_timeout_ms, 5000);
    assert_null(cfg.dlq_topic);
    assert_int_equal(cfg.norm.default_type, USHER_EVENT_SIGNUP);
    assert_int_equal(cfg.norm.max_value_bytes, 1048576);
    assert_int_equal(cfg.norm.max_depth, 64);
    assert_int_equal(cfg.norm.max_members, 10000);
    assert_null(cfg.norm.logto_signing_key);
    assert_int_equal(cfg.norm.type_alias_count, 0);
    assert_int_equal(cfg.norm.topic_default_count, 0);
    assert_null(cfg.logto_signing_key);
    assert_int_equal(cfg.handler_count, 0);
    usher_config_free(&cfg);
    assert_null(cfg.path);
    assert_null(cfg.topics);
    usher_config_free(&cfg); /* twice is safe */
}

static const char every_key[] =
    "; every key, none at its default\n"
    "[usher]\n"
    "workers = 8\n"
    "max_inflight = 500\n"
    "ordering = partition\n"
    "drain_timeout_ms = 9000\n"
    "commit_interval_ms = 2500\n"
    "log_level = debug\n"
    "retry_initial_ms = 100\n"
    "retry_max_ms = 20000\n"
    "retry_max_attempts = 7\n"
    "retry_max_time_ms = 0\n"
    "\n"
    "[kafka]\n"
    "bootstrap.servers = k1:9092,k2:9092\n"
    "group.id = grp\n"
    "topics = a, b ,c\n"
    "client.id = usher-test\n"                      /* line 18 */
    "\n"
    "[redis]\n"
    "url = redis://user:pw@redis.local:6380/2\n"
    "key_prefix = pfx\n"
    "connect_timeout_ms = 100\n"
    "command_timeout_ms = 200\n"
    "\n"
    "[dlq]\n"
    "topic = a.dlq\n"
    "\n"
    "[normalize]\n"
    "default_type = login\n"
    "logto_signing_key = sekrit;with#chars\n"
    "type_map = com.example.identity.user.logged_in=login, com.example.gone = user_deleted\n"
    "max_value_bytes = 2048\n"
    "max_depth = 10\n"
    "max_members = 99\n"
    "\n"
    "[topic.b]\n"
    "default_type = user_updated\n"
    "\n"
    "[handler.h1]\n"                                /* line 40 */
    "enabled = off\n"
    "events = signup, login\n"                      /* line 42 */
    "library = /opt/h1.so\n"                        /* line 43 */
    "retry_initial_ms = 50\n"
    "retry_max_ms = 60\n"
    "retry_max_attempts = 3\n"
    "retry_max_time_ms = 1000\n"
    "smtp_url = smtp://x ; not a comment\n"         /* line 48 */
    "\n"
    "[handler.h2]\n"
    "enabled = YES\n"
    "events = *\n";

static void test_every_key(void **state)
{
    usher_config cfg;
    const usher_handler_section *h = NULL;
    int line = 0;
    (void)state;

    load_ok(every_key, &cfg);
    assert_int_equal(cfg.workers, 8);
    assert_int_equal(cfg.max_inflight, 500);
    assert_int_equal(cfg.ordering, USHER_ORDER_PARTITION);
    assert_int_equal(cfg.drain_timeout_ms, 9000);
    assert_int_equal(cfg.commit_interval_ms, 2500);
    assert_int_equal(cfg.log_level, USHER_LOG_DEBUG);
    assert_int_equal(cfg.retry.initial_ms, 100);
    assert_int_equal(cfg.retry.max_ms, 20000);
    assert_int_equal(cfg.retry.max_attempts, 7);
    assert_int_equal(cfg.retry.max_time_ms, 0);

    assert_string_equal(cfg.bootstrap_servers, "k1:9092,k2:9092");
    assert_string_equal(cfg.group_id, "grp");
    assert_int_equal(cfg.topic_count, 3);
    assert_string_equal(cfg.topics[0], "a");
    assert_string_equal(cfg.topics[1], "b");
    assert_string_equal(cfg.topics[2], "c");
    assert_int_equal(cfg.kafka_props.count, 1);
    assert_string_equal(find_kv(&cfg.kafka_props, "client.id", &line), "usher-test");
    assert_int_equal(line, 18);

    assert_string_equal(cfg.redis_url, "redis://user:pw@redis.local:6380/2");
    assert_string_equal(cfg.key_prefix, "pfx");
    assert_int_equal(cfg.redis_connect_timeout_ms, 100);
    assert_int_equal(cfg.redis_command_timeout_ms, 200);
    assert_string_equal(cfg.dlq_topic, "a.dlq");

    assert_int_equal(cfg.norm.default_type, USHER_EVENT_LOGIN);
    assert_string_equal(cfg.logto_signing_key, "sekrit;with#chars");
    assert_ptr_equal(cfg.norm.logto_signing_key, cfg.logto_signing_key);
    assert_int_equal(cfg.type_alias_count, 2);
    assert_string_equal(cfg.type_aliases[0].name, "com.example.identity.user.logged_in");
    assert_int_equal(cfg.type_aliases[0].type, USHER_EVENT_LOGIN);
    assert_string_equal(cfg.type_aliases[1].name, "com.example.gone");
    assert_int_equal(cfg.type_aliases[1].type, USHER_EVENT_USER_DELETED);
    assert_ptr_equal(cfg.norm.type_aliases, cfg.type_aliases);
    assert_int_equal(cfg.norm.type_alias_count, 2);
    assert_int_equal(cfg.norm.max_value_bytes, 2048);
    assert_int_equal(cfg.norm.max_depth, 10);
    assert_int_equal(cfg.norm.max_members, 99);
    assert_int_equal(cfg.topic_default_count, 1);
    assert_string_equal(cfg.topic_defaults[0].topic, "b");
    assert_int_equal(cfg.topic_defaults[0].type, USHER_EVENT_USER_UPDATED);
    assert_ptr_equal(cfg.norm.topic_defaults, cfg.topic_defaults);
    assert_int_equal(cfg.norm.topic_default_count, 1);

    assert_int_equal(cfg.handler_count, 2);
    h = &cfg.handlers[0];
    assert_string_equal(h->name, "h1");
    assert_int_equal(h->line, 40);
    assert_int_equal(h->enabled, 0);
    assert_string_equal(h->events, "signup, login");
    assert_int_equal(h->events_line, 42);
    assert_string_equal(h->library, "/opt/h1.so");
    assert_int_equal(h->library_line, 43);
    assert_int_equal(h->retry.initial_ms, 50);
    assert_int_equal(h->retry.max_ms, 60);
    assert_int_equal(h->retry.max_attempts, 3);
    assert_int_equal(h->retry.max_time_ms, 1000);
    assert_int_equal(h->keys.count, 1);
    assert_string_equal(find_kv(&h->keys, "smtp_url", &line), "smtp://x ; not a comment");
    assert_int_equal(line, 48);
    h = &cfg.handlers[1];
    assert_string_equal(h->name, "h2");
    assert_int_equal(h->enabled, 1);
    assert_string_equal(h->events, "*");
    assert_null(h->library);
    assert_int_equal(h->keys.count, 0);
    /* h2 inherits [usher]'s retry policy */
    assert_int_equal(h->retry.initial_ms, 100);
    assert_int_equal(h->retry.max_ms, 20000);
    assert_int_equal(h->retry.max_attempts, 7);
    assert_int_equal(h->retry.max_time_ms, 0);
    usher_config_free(&cfg);
}

static void test_env_expansion(void **state)
{
    usher_config cfg;
    (void)state;

    setenv("USHER_T_HOST", "h1", 1);
    setenv("USHER_T_EMPTY", "", 1);
    setenv("USHER_T_SET", "from-env", 1);
    unsetenv("USHER_T_UNSET");
    load_ok("[kafka]\n"
            "bootstrap.servers = ${USHER_T_HOST}:${USHER_T_PORT_UNSET:-9092}\n"
            "group.id = pa$$word-$HOME-${USHER_T_EMPTY:-dflt}-$\n"
            "topics = ${USHER_T_UNSET:-t1,t2}\n"
            "client.id = x${USHER_T_EMPTY}y\n"
            "[redis]\n"
            "key_prefix = ${USHER_T_SET:-ignored}\n"
            "[usher]\n"
            "workers = ${USHER_T_UNSET:-12}\n"
            "[handler.h]\n"
            "token = Bearer ${USHER_T_HOST}${USHER_T_HOST}\n",
            &cfg);
    assert_string_equal(cfg.bootstrap_servers, "h1:9092");
    assert_string_equal(cfg.group_id, "pa$$word-$HOME-dflt-$");
    assert_int_equal(cfg.topic_count, 2);
    assert_string_equal(cfg.topics[1], "t2");
    assert_string_equal(find_kv(&cfg.kafka_props, "client.id", NULL), "xy");
    assert_string_equal(cfg.key_prefix, "from-env");
    assert_int_equal(cfg.workers, 12);
    assert_string_equal(find_kv(&cfg.handlers[0].keys, "token", NULL), "Bearer h1h1");
    usher_config_free(&cfg);
}

static void test_env_errors(void **state)
{
    (void)state;
    unsetenv("USHER_T_UNSET");
    expect_error(KAFKA "[redis]\n\n; comment\nurl = redis://${USHER_T_UNSET}:6379\n", 8,
                 "environment variable USHER_T_UNSET is not set");
    expect_error(KAFKA "[handler.x]\nsecret = ${USHER_T_UNSET\n", 6,
                 "unterminated '${' in value (write ${NAME} or ${NAME:-default})");
    expect_error(KAFKA "[handler.x]\nsecret = ${1BAD}\n", 6,
                 "invalid environment reference '${1BAD}' (write ${NAME} or "
                 "${NAME:-default})");
    expect_error(KAFKA "[handler.x]\nsecret = ${}\n", 6,
                 "invalid environment reference '${}' (write ${NAME} or ${NAME:-default})");
}

static void test_unknown_section_and_key(void **state)
{
    (void)state;
    expect_error(KAFKA "\n[bogus]\nx = 1\n", 6, "unknown section [bogus]");
    /* an empty unknown section is still found (inih does not report headers) */
    expect_error(KAFKA "[redis]\n[kafkaa]\n", 6, "unknown section [kafkaa]");
    expect_error(KAFKA "[handler]\n", 5, "unknown section [handler]");
    expect_error(KAFKA "[handler.]\n", 5, "unknown section [handler.]");
    expect_error(KAFKA "[usher]\nworkers = 2\n# c\n\nworker = 3\n", 9,
                 "unknown key 'worker' in [usher]");
    expect_error(KAFKA "[topic.user-events]\ntype = login\n", 6,
                 "unknown key 'type' in [topic.user-events]");
    expect_error("x = 1\n" KAFKA, 1, "key 'x' outside any section");
    expect_error(KAFKA "[handler.h]\n = 1\n", 6, "missing key name before '='");
    expect_error(KAFKA "[usher]\nworkers = 2\nworkers = 3\n", 7,
                 "duplicate key 'workers' (first set on line 6)");
    expect_error(KAFKA "[handler.a]\n[usher]\n[handler.a]\n", 7,
                 "duplicate section [handler.a] (first on line 5)");
    expect_error(KAFKA "[kafka]\n", 5, "duplicate section [kafka] (first on line 1)");
    expect_error(KAFKA "[handler.a b]\n", 5,
                 "invalid handler name 'a b' (letters, digits, '_' and '-' only)");
}

static void test_syntax_errors_and_lines(void **state)
{
    (void)state;
    expect_error(KAFKA "[usher\n", 5,
                 "syntax error (expected [section], key = value, or a comment starting with "
                 "';' or '#')");
    expect_error(KAFKA "\n\n\n[usher]\njust some words\n", 9,
                 "syntax error (expected [section], key = value, or a comment starting with "
                 "';' or '#')");
    /* the last line has no newline */
    expect_error(KAFKA "[usher]\nworkers = 0", 6, "workers: 0 is out of range (1..256)");
    /* CRLF line endings count the same */
    expect_error("[kafka]\r\nbootstrap.servers = b\r\ngroup.id = g\r\ntopics = t\r\n"
                 "[usher]\r\nordering = none\r\n", 6,
                 "ordering: 'none' is not one of key|partition|unordered");
}

static void test_bom_and_nul(void **state)
{
    static const char nul[] = KAFKA "[usher]\nworkers = 4\0junk\n";
    usher_config cfg;
    char err[512] = "";
    char *path = NULL;
    char want[600];
    (void)state;

    /* a UTF-8 byte order mark before the first section is skipped */
    load_ok("\xEF\xBB\xBF" KAFKA, &cfg);
    assert_string_equal(cfg.group_id, "g");
    usher_config_free(&cfg);

    /* a NUL byte would make inih silently cut the line */
    path = write_conf_n(nul, sizeof(nul) - 1);
    assert_int_equal(usher_config_load(path, &cfg, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "%s:6: NUL byte in line", path);
    assert_string_equal(err, want);
    unlink(path);
    free(path);
}

static void test_long_value(void **state)
{
    enum { N = 5000 };
    usher_config cfg;
    char *big = malloc(N + 1);
    char *text = malloc(3 * N + 512);
    (void)state;

    assert_non_null(big);
    assert_non_null(text);
    for (int i = 0; i < N; i++)
        big[i] = (char)('a' + i % 26);
    big[N] = '\0';

    /* 5000-byte values in a handler key and in a librdkafka property */
    snprintf(text, 3 * N + 512, KAFKA "client.id = %s\n[handler.h]\ntemplate_text = %s\n"
             "other = short\n", big, big);
    load_ok(text, &cfg);
    assert_int_equal(strlen(find_kv(&cfg.kafka_props, "client.id", NULL)), N);
    assert_string_equal(find_kv(&cfg.kafka_props, "client.id", NULL), big);
    assert_string_equal(find_kv(&cfg.handlers[0].keys, "template_text", NULL), big);
    {
        int line = 0;
        assert_string_equal(find_kv(&cfg.handlers[0].keys, "other", &line), "short");
        assert_int_equal(line, 8);
    }
    usher_config_free(&cfg);

    /* line numbers stay right after long lines, and on a long line */
    snprintf(text, 3 * N + 512, KAFKA "client.id = %s\n[handler.h]\ntemplate_text = %s\n"
             "[usher]\nbogus = 1\n", big, big);
    expect_error(text, 9, "unknown key 'bogus' in [usher]");
    snprintf(text, 3 * N + 512, KAFKA "[usher]\n\nlong_unknown = %s\n", big);
    expect_error(text, 7, "unknown key 'long_unknown' in [usher]");
    free(big);
    free(text);
}

typedef struct bad_case {
    const char *text;
    int line;
    const char *msg;
} bad_case;

static void test_bad_values(void **state)
{
    static const bad_case cases[] = {
        {KAFKA "[usher]\nworkers = 0\n", 6, "workers: 0 is out of range (1..256)"},
        {KAFKA "[usher]\nworkers = 257\n", 6, "workers: 257 is out of range (1..256)"},
        {KAFKA "[usher]\nworkers = 4x\n", 6, "workers: '4x' is not an integer"},
        {KAFKA "[usher]\nworkers = 0x10\n", 6, "workers: '0x10' is not an integer"},
        {KAFKA "[usher]\nworkers = +4\n", 6, "workers: '+4' is not an integer"},
        {KAFKA "[usher]\nworkers =\n", 6, "workers: '' is not an integer"},
        {KAFKA "[usher]\nworkers = 4 4\n", 6, "workers: '4 4' is not an integer"},
        {KAFKA "[usher]\nmax_inflight = 99999999999999999999999\n", 6,
         "max_inflight: 99999999999999999999999 is out of range (1..1000000)"},
        {KAFKA "[usher]\nmax_inflight = 1000001\n", 6,
         "max_inflight: 1000001 is out of range (1..1000000)"},
        {KAFKA "[usher]\ndrain_timeout_ms = -1\n", 6,
         "drain_timeout_ms: -1 is out of range (0..3600000)"},
        {KAFKA "[usher]\nordering = random\n", 6,
         "ordering: 'random' is not one of key|partition|unordered"},
        {KAFKA "[usher]\nlog_level = verbose\n", 6,
         "log_level: 'verbose' is not one of error|warn|info|debug"},
        {KAFKA "[usher]\nlog_level = INFO\n", 6,
         "log_level: 'INFO' is not one of error|warn|info|debug"},
        {KAFKA "[usher]\nretry_initial_ms = 500\nretry_max_ms = 100\n", 7,
         "retry_max_ms (100) is less than retry_initial_ms (500)"},
        {KAFKA "[usher]\nretry_initial_ms = 50000\n", 6,
         "retry_max_ms (30000) is less than retry_initial_ms (50000)"},
        {KAFKA "[handler.x]\nenabled = maybe\n", 6,
         "enabled: 'maybe' is not a boolean (true/false, yes/no, on/off, 1/0)"},
        {KAFKA "[handler.x]\nevents = signup, sign_up\n", 6,
         "events: unknown event type 'sign_up'"},
        {KAFKA "[handler.x]\nevents = *, login\n", 6, "events: '*' must be the only item"},
        {KAFKA "[handler.x]\nmarker_ttl_s = 0\n", 6,
         "marker_ttl_s: 0 is out of range (1..315360000)"},
        {KAFKA "[handler.x]\nevents = ,\n", 6,
         "events: empty list (list event types, '*' for all; to turn the handler off write "
         "enabled = false)"},
        {KAFKA "[handler.x]\nlibrary =\n", 6, "library: must not be empty"},
        {KAFKA "[handler.x]\nretry_max_ms = 10\n", 6,
         "retry_max_ms (10) is less than retry_initial_ms (200)"},
        {KAFKA "[handler.x]\nk = 1\nk = 2\n", 7, "duplicate key 'k' (first set on line 6)"},
        {KAFKA "[normalize]\ndefault_type = signin\n", 6,
         "default_type: unknown event type 'signin'"},
        {KAFKA "[normalize]\ntype_map = a=b\n", 6, "type_map: unknown event type 'b'"},
        {KAFKA "[normalize]\ntype_map = nonsense\n", 6,
         "type_map: 'nonsense' is not source_type=canonical_type"},
        {KAFKA "[normalize]\ntype_map = =login\n", 6, "type_map: empty source type in '=login'"},
        {KAFKA "[normalize]\ntype_map = a=login, a=logout\n", 6,
         "type_map: source type 'a' is mapped twice"},
        {KAFKA "[normalize]\nmax_depth = 0\n", 6, "max_depth: 0 is out of range (1..100000)"},
        {KAFKA "[topic.user-events]\ndefault_type = nope\n", 6,
         "default_type: unknown event type 'nope'"},
        {KAFKA "[redis]\nkey_prefix = a b\n", 6,
         "key_prefix: must not contain spaces or control characters"},
        {KAFKA "[redis]\nkey_prefix =\n", 6, "key_prefix: must not be empty"},
        {KAFKA "[redis]\nconnect_timeout_ms = 0\n", 6,
         "connect_timeout_ms: 0 is out of range (1..3600000)"},
        {KAFKA "[dlq]\ntopic = user-events\n", 6,
         "topic: the dead-letter topic must not be one of the consumed [kafka] topics"},
        {KAFKA "[dlq]\ntopic = a b\n", 6, "topic: invalid topic name 'a b'"},
        {"[kafka]\nbootstrap.servers = b\ngroup.id = g\ntopics = a, b, a\n", 4,
         "topics: topic 'a' is listed twice"},
        {"[kafka]\nbootstrap.servers = b\ngroup.id = g\ntopics = , ,\n", 4,
         "topics: at least one topic is required"},
        {"[kafka]\nbootstrap.servers =\ngroup.id = g\ntopics = t\n", 2,
         "bootstrap.servers: must not be empty"},
    };
    (void)state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_error(cases[i].text, cases[i].line, cases[i].msg);
}

static void test_required(void **state)
{
    (void)state;
    expect_error("[usher]\nworkers = 2\n", 0, "[kafka] bootstrap.servers is required");
    expect_error("[usher]\n[kafka]\nbootstrap.servers = b\ntopics = t\n", 2,
                 "[kafka] group.id is required");
    expect_error("[kafka]\nbootstrap.servers = b\ngroup.id = g\n", 1,
                 "[kafka] topics is required");
    expect_error("", 0, "[kafka] bootstrap.servers is required");
}

static void test_kafka_passthrough(void **state)
{
    usher_config cfg;
    int line = 0;
    (void)state;

    load_ok(KAFKA
            "security.protocol = plaintext\n"
            "session.timeout.ms = 6000\n"
            "sasl.password = a;b#c=d\n"
            "enable.auto.commit = false\n"
            "enable.auto.offset.store = false\n"
            "partition.assignment.strategy = cooperative-sticky\n",
            &cfg);
    assert_int_equal(cfg.kafka_props.count, 6);
    assert_string_equal(cfg.kafka_props.items[0].key, "security.protocol");
    assert_string_equal(cfg.kafka_props.items[0].value, "plaintext");
    assert_int_equal(cfg.kafka_props.items[0].line, 5);
    assert_string_equal(find_kv(&cfg.kafka_props, "session.timeout.ms", &line), "6000");
    assert_int_equal(line, 6);
    assert_string_equal(find_kv(&cfg.kafka_props, "sasl.password", NULL), "a;b#c=d");
    usher_config_free(&cfg);

    expect_error(KAFKA "security.protocol = plaintext\nbogus.key = 1\n", 6,
                 "kafka: No such configuration property: \"bogus.key\"");
    expect_error(KAFKA "session.timeout.ms = soon\n", 5,
                 "kafka: Invalid value for configuration property \"session.timeout.ms\"");
    expect_error(KAFKA "security.protocol = carrier-pigeon\n", 5,
                 "kafka: Invalid value \"carrier-pigeon\" for configuration property "
                 "\"security.protocol\"");
    expect_error(KAFKA "enable.auto.commit = TRUE\n", 5,
                 "kafka: enable.auto.commit=true is not allowed: usher stores and commits "
                 "offsets itself, only after every handler has finished with a record");
    expect_error(KAFKA "enable.auto.offset.store = true\n", 5,
                 "kafka: enable.auto.offset.store=true is not allowed: usher stores and "
                 "commits offsets itself, only after every handler has finished with a record");
    expect_error(KAFKA "partition.assignment.strategy = range,roundrobin\n", 5,
                 "kafka: partition.assignment.strategy must be cooperative-sticky (usher "
                 "relies on incremental rebalancing)");
    expect_error(KAFKA "client.id = a\nclient.id = b\n", 6,
                 "duplicate key 'client.id' (first set on line 5)");
    expect_error(KAFKA "metadata.broker.list = x:9092\n", 5,
                 "kafka: use bootstrap.servers instead of metadata.broker.list");
}

static void test_redis_urls(void **state)
{
    static const char *const good[] = {
        "redis://127.0.0.1:6379", "redis://localhost", "redis://:pw@h:1/0",
        "redis://user:p%40ss@h.example:6380/15", "redis://h/", "redis://h:6379/1048576",
        "unix:///run/redis/redis-server.sock", "unix:///tmp/r.sock?db=2",
    };
    static const bad_case bad[] = {
        {KAFKA "[redis]\nurl = rediss://h:6380\n", 6,
         "url: rediss:// (TLS) is not supported: Debian 12's hiredis 0.14 has no TLS; use "
         "redis:// over a trusted network, a TLS tunnel such as stunnel, or unix://"},
        {KAFKA "[redis]\nurl = http://h\n", 6, "url: scheme must be redis:// or unix://"},
        {KAFKA "[redis]\nurl = redis://h:0\n", 6, "url: port must be a number 1..65535"},
        {KAFKA "[redis]\nurl = redis://h:65536\n", 6, "url: port must be a number 1..65535"},
        {KAFKA "[redis]\nurl = redis://h:63x\n", 6, "url: port must be a number 1..65535"},
        {KAFKA "[redis]\nurl = redis://:6379\n", 6,
         "url: missing host (write redis://host:port)"},
        {KAFKA "[redis]\nurl = redis://[::1]:6379\n", 6,
         "url: IPv6 address literals are not supported; use a host name"},
        {KAFKA "[redis]\nurl = redis://h:6379/1048577\n", 6,
         "url: the path must be a database number (/0, /1, ...)"},
        {KAFKA "[redis]\nurl = redis://h:6379/db\n", 6,
         "url: the path must be a database number (/0, /1, ...)"},
        {KAFKA "[redis]\nurl = unix://relative.sock\n", 6,
         "url: unix:// needs an absolute socket path, e.g. unix:///run/redis/redis-server.sock"},
        {KAFKA "[redis]\nurl =\n", 6, "url: must not be empty"},
    };
    char text[512];
    (void)state;

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        usher_config cfg;
        snprintf(text, sizeof(text), KAFKA "[redis]\nurl = %s\n", good[i]);
        load_ok(text, &cfg);
        assert_string_equal(cfg.redis_url, good[i]);
        usher_config_free(&cfg);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_error(bad[i].text, bad[i].line, bad[i].msg);
}

static void test_handler_retry_inherited(void **state)
{
    usher_config cfg;
    const usher_handler_section *a = NULL;
    const usher_handler_section *b = NULL;
    (void)state;

    /* [usher] comes after the handlers: they still inherit its values */
    load_ok(KAFKA
            "[handler.a]\n"
            "events = signup\n"
            "[handler.b]\n"
            "retry_max_attempts = 2\n"
            "retry_initial_ms = 10\n"
            "enabled = 0\n"
            "marker_ttl_s = 3600\n"
            "[usher]\n"
            "retry_initial_ms = 300\n"
            "retry_max_ms = 4000\n"
            "retry_max_attempts = 9\n"
            "retry_max_time_ms = 50000\n",
            &cfg);
    assert_int_equal(cfg.handler_count, 2);
    a = find_handler(&cfg, "a");
    b = find_handler(&cfg, "b");
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(a->line, 5);
    assert_int_equal(a->enabled, 1);
    assert_int_equal(a->retry.initial_ms, 300);
    assert_int_equal(a->retry.max_ms, 4000);
    assert_int_equal(a->retry.max_attempts, 9);
    assert_int_equal(a->retry.max_time_ms, 50000);
    assert_int_equal(a->marker_ttl_s, 2592000); /* 30 days unless set */
    assert_int_equal(b->marker_ttl_s, 3600);
    assert_int_equal(b->line, 7);
    assert_int_equal(b->enabled, 0);
    assert_null(b->events);
    assert_int_equal(b->events_line, 0);
    assert_int_equal(b->retry.initial_ms, 10);
    assert_int_equal(b->retry.max_ms, 4000);
    assert_int_equal(b->retry.max_attempts, 2);
    assert_int_equal(b->retry.max_time_ms, 50000);
    usher_config_free(&cfg);

    /* the inherited max is checked against the handler's own initial, at the handler's line */
    expect_error(KAFKA "[handler.a]\nretry_initial_ms = 5000\n[usher]\nretry_max_ms = 1000\n"
                 "retry_initial_ms = 100\n", 6,
                 "retry_max_ms (1000) is less than retry_initial_ms (5000)");
}

static void test_topic_sections(void **state)
{
    usher_config cfg;
    (void)state;

    /* [topic.X] may come before [kafka]; an empty one is accepted and dropped */
    load_ok("[topic.auth0-users]\n"
            "default_type = user_updated\n"
            "[topic.user-events]\n"
            "[kafka]\nbootstrap.servers = b\ngroup.id = g\ntopics = user-events, auth0-users\n"
            "[normalize]\ndefault_type = unknown\n",
            &cfg);
    assert_int_equal(cfg.topic_default_count, 1);
    assert_string_equal(cfg.topic_defaults[0].topic, "auth0-users");
    assert_int_equal(cfg.topic_defaults[0].type, USHER_EVENT_USER_UPDATED);
    assert_ptr_equal(cfg.norm.topic_defaults, cfg.topic_defaults);
    assert_int_equal(cfg.norm.topic_default_count, 1);
    assert_int_equal(cfg.norm.default_type, USHER_EVENT_UNKNOWN);
    usher_config_free(&cfg);

    expect_error(KAFKA "[topic.other-events]\n\ndefault_type = login\n", 7,
                 "[topic.other-events]: 'other-events' is not one of the [kafka] topics");
    expect_error(KAFKA "[topic.other-events]\n", 5,
                 "[topic.other-events]: 'other-events' is not one of the [kafka] topics");
    expect_error(KAFKA "[topic.user-events]\n[topic.user-events]\n", 6,
                 "duplicate section [topic.user-events] (first on line 5)");
}

static void test_missing_file(void **state)
{
    usher_config cfg;
    char err[512];
    (void)state;

    assert_int_equal(usher_config_load("/nonexistent/usher.conf", &cfg, err, sizeof(err)), -1);
    assert_string_equal(err, "/nonexistent/usher.conf: cannot open: No such file or directory");
    assert_null(cfg.path);
    /* a small errstr truncates, never overflows */
    assert_int_equal(usher_config_load("/nonexistent/usher.conf", &cfg, err, 8), -1);
    assert_string_equal(err, "/nonexi");
}

static void test_config_path(void **state)
{
    usher_config cfg;
    char err[512] = "";
    char *path = write_conf(KAFKA "[usher]\nworkers = 3\n");
    (void)state;

    unsetenv("USHER_CONFIG");
    assert_string_equal(usher_config_path(NULL), "config/usher.conf");
    setenv("USHER_CONFIG", "", 1);
    assert_string_equal(usher_config_path(NULL), "config/usher.conf");
    setenv("USHER_CONFIG", path, 1);
    assert_string_equal(usher_config_path(NULL), path);
    assert_string_equal(usher_config_path("/explicit.conf"), "/explicit.conf");

    assert_int_equal(usher_config_load(usher_config_path(NULL), &cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg.path, path);
    assert_int_equal(cfg.workers, 3);
    usher_config_free(&cfg);
    unsetenv("USHER_CONFIG");
    unlink(path);
    free(path);
}

static void test_split_list(void **state)
{
    char **v = NULL;
    (void)state;

    assert_int_equal(usher_split_list(" a ,b,, c d ,", &v), 3);
    assert_string_equal(v[0], "a");
    assert_string_equal(v[1], "b");
    assert_string_equal(v[2], "c d");
    assert_null(v[3]);
    usher_strv_free(v);
    assert_int_equal(usher_split_list("", &v), 0);
    assert_non_null(v);
    assert_null(v[0]);
    usher_strv_free(v);
    assert_int_equal(usher_split_list(" , ", &v), 0);
    assert_null(v[0]);
    usher_strv_free(v);
    usher_strv_free(NULL);
}

static void test_log_level_from_name(void **state)
{
    usher_log_level l = USHER_LOG_ERROR;
    (void)state;

    assert_int_equal(usher_log_level_from_name("debug", &l), 0);
    assert_int_equal(l, USHER_LOG_DEBUG);
    assert_int_equal(usher_log_level_from_name("warn", &l), 0);
    assert_int_equal(l, USHER_LOG_WARN);
    assert_int_equal(usher_log_level_from_name("error", &l), 0);
    assert_int_equal(l, USHER_LOG_ERROR);
    assert_int_equal(usher_log_level_from_name("info", &l), 0);
    assert_int_equal(l, USHER_LOG_INFO);
    assert_int_equal(usher_log_level_from_name("warning", &l), -1);
    assert_int_equal(usher_log_level_from_name(NULL, &l), -1);
    assert_int_equal(l, USHER_LOG_INFO);
}

static void test_inih_globals_restored(void **state)
{
    usher_config cfg;
    (void)state;

    ini_max_line = 200;
    ini_use_stack = true;
    ini_allow_inline_comments = true;
    load_ok(KAFKA, &cfg);
    usher_config_free(&cfg);
    assert_int_equal(ini_max_line, 200);
    assert_true(ini_use_stack);
    assert_true(ini_allow_inline_comments);
}

static void test_shipped_configs(void **state)
{
    usher_config cfg;
    char err[1024] = "";
    const usher_handler_section *h = NULL;
    (void)state;

    unsetenv("KAFKA_BOOTSTRAP");
    unsetenv("REDIS_URL");
    if (usher_config_load(CONFIG_DIR "/usher.conf", &cfg, err, sizeof(err)) != 0)
        print_error("%s\n", err);
    assert_string_equal(err, "");
    assert_string_equal(cfg.bootstrap_servers, "127.0.0.1:9092");
    assert_string_equal(cfg.group_id, "usher");
    assert_int_equal(cfg.topic_count, 1);
    assert_string_equal(cfg.topics[0], "user-events");
    assert_string_equal(cfg.redis_url, "redis://127.0.0.1:6379");
    assert_string_equal(cfg.dlq_topic, "user-events.dlq");
    h = find_handler(&cfg, "signup_counters");
    assert_non_null(h);
    assert_string_equal(h->events, "*");
    assert_int_equal(h->keys.count, 0);
    usher_config_free(&cfg);

    setenv("KAFKA_BOOTSTRAP", "kafka.internal:9093", 1);
    setenv("REDIS_URL", "unix:///tmp/redis.sock", 1);
    assert_int_equal(usher_config_load(CONFIG_DIR "/usher.conf", &cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg.bootstrap_servers, "kafka.internal:9093");
    assert_string_equal(cfg.redis_url, "unix:///tmp/redis.sock");
    usher_config_free(&cfg);
    unsetenv("KAFKA_BOOTSTRAP");
    unsetenv("REDIS_URL");

    if (usher_config_load(CONFIG_DIR "/example-full.conf", &cfg, err, sizeof(err)) != 0)
        print_error("%s\n", err);
    assert_string_equal(err, "");
    assert_int_equal(cfg.workers, 4);
    assert_int_equal(cfg.max_inflight, 1000);
    assert_non_null(find_handler(&cfg, "signup_counters"));
    usher_config_free(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_every_key),
        cmocka_unit_test(test_env_expansion),
        cmocka_unit_test(test_env_errors),
        cmocka_unit_test(test_unknown_section_and_key),
        cmocka_unit_test(test_syntax_errors_and_lines),
        cmocka_unit_test(test_bom_and_nul),
        cmocka_unit_test(test_long_value),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_required),
        cmocka_unit_test(test_kafka_passthrough),
        cmocka_unit_test(test_redis_urls),
        cmocka_unit_test(test_handler_retry_inherited),
        cmocka_unit_test(test_topic_sections),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_config_path),
        cmocka_unit_test(test_split_list),
        cmocka_unit_test(test_log_level_from_name),
        cmocka_unit_test(test_inih_globals_restored),
        cmocka_unit_test(test_shipped_configs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
