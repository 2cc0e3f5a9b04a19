/*
 * usher-testkit — the integration tests' Kafka toolbox (librdkafka + jansson).
 *
 *   create-topic     -b BROKERS -t TOPIC -p PARTITIONS [--max-message-bytes N]
 *   produce-signups  -b BROKERS -t TOPIC -n N -u USERS [--days D] [--seed S]
 *                    [--start K] [--count C] [--expect-only]
 *   produce-mixed    -b BROKERS -t TOPIC -n N -u USERS [--days D] [--seed S]
 *                    [--start K] [--count C] [--expect-only] [--poison FILE ...]
 *   produce-file     -b BROKERS -t TOPIC -f FILE [-k KEY] [-H name=value ...]
 *                    [--headers-json FILE.headers.json] [--tombstone]
 *   offsets          -b BROKERS -g GROUP -t TOPIC
 *   wait-offsets     -b BROKERS -g GROUP -t TOPIC --timeout SECONDS [--interval-ms MS]
 *                    [--progress]
 *   read-topic       -b BROKERS -t TOPIC [--timeout S]
 *
 * Exit status: 0 ok, 1 runtime failure (broker error, failed delivery, timeout), 2 usage.
 * Every produce waits for every delivery report (acks=all, idempotent producer) and fails if
 * any one failed, so "produced" always means "durably in the log".
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#define MAX_HEADERS 64
#define MAX_POISON 64
#define MAX_PARTITIONS 1024
#define DAY_MS 86400000LL
/* 2026-01-01T00:00:00Z: the first day produce-signups spreads events over. */
#define SIGNUP_EPOCH_MS 1767225600000LL
/* Clerk/Svix test secret: the svix-signature headers are real v1 HMACs under these key bytes,
 * i.e. the Svix signing secret "whsec_VEVTVC1PTkxZLWNsZXJrLXN2aXgtc2VjcmV0LTAwMDA=". */
#define SVIX_TEST_SECRET "TEST-ONLY-clerk-svix-secret-0000"

/* ------------------------------------------------------------------------------------- */
/* options                                                                               */

struct opts {
    const char *brokers, *topic, *group, *file, *key, *headers_json;
    const char *headers[MAX_HEADERS];
    int n_headers;
    const char *poison[MAX_POISON];
    int n_poison;
    int partitions;
    long long max_message_bytes;
    long long n, users, days, start, count;
    uint64_t seed;
    double timeout_s;
    long long interval_ms; /* wait-offsets poll interval */
    bool expect_only, tombstone, count_set, progress;
};

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

/* Prints "usher-testkit: MESSAGE" to stderr and exits 1. */
static void die(const char *fmt, ...) {
    va_list ap;
    fputs("usher-testkit: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static void usage(void) __attribute__((noreturn));

/* Prints the usage and exits 2. */
static void usage(void) {
    fputs("usage: usher-testkit COMMAND [options]\n"
          "  create-topic    -b BROKERS -t TOPIC -p PARTITIONS [--max-message-bytes N]\n"
          "  produce-signups -b BROKERS -t TOPIC -n N -u USERS [--days D] [--seed S]\n"
          "                  [--start K] [--count C] [--expect-only]\n"
          "  produce-mixed   -b BROKERS -t TOPIC -n N -u USERS [--days D] [--seed S]\n"
          "                  [--start K] [--count C] [--expect-only] [--poison FILE ...]\n"
          "  produce-file    -b BROKERS -t TOPIC -f FILE [-k KEY] [-H name=value ...]\n"
          "                  [--headers-json FILE] [--tombstone]\n"
          "  offsets         -b BROKERS -g GROUP -t TOPIC\n"
          "  wait-offsets    -b BROKERS -g GROUP -t TOPIC --timeout SECONDS\n"
          "                  [--interval-ms MS] [--progress]\n"
          "  read-topic      -b BROKERS -t TOPIC [--timeout S]\n",
          stderr);
    exit(2);
}

/* Parses a non-negative decimal integer or exits 2 naming the option. */
static long long parse_ll(const char *s, const char *what) {
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < 0) {
        fprintf(stderr, "usher-testkit: %s: not a non-negative integer: '%s'\n", what, s);
        exit(2);
    }
    return v;
}

enum {
    OPT_DAYS = 1000, OPT_SEED, OPT_START, OPT_COUNT, OPT_EXPECT_ONLY, OPT_HEADERS_JSON,
    OPT_TOMBSTONE, OPT_TIMEOUT, OPT_MAX_MSG, OPT_POISON, OPT_INTERVAL_MS, OPT_PROGRESS
};

/* Fills *o from argv (after the command word); unknown options exit 2. */
static void parse_opts(int argc, char **argv, struct opts *o) {
    static const struct option longopts[] = {
        {"brokers", required_argument, NULL, 'b'},
        {"topic", required_argument, NULL, 't'},
        {"group", required_argument, NULL, 'g'},
        {"partitions", required_argument, NULL, 'p'},
        {"file", required_argument, NULL, 'f'},
        {"key", required_argument, NULL, 'k'},
        {"header", required_argument, NULL, 'H'},
        {"n", required_argument, NULL, 'n'},
        {"users", required_argument, NULL, 'u'},
        {"days", required_argument, NULL, OPT_DAYS},
        {"seed", required_argument, NULL, OPT_SEED},
        {"start", required_argument, NULL, OPT_START},
        {"count", required_argument, NULL, OPT_COUNT},
        {"expect-only", no_argument, NULL, OPT_EXPECT_ONLY},
        {"headers-json", required_argument, NULL, OPT_HEADERS_JSON},
        {"tombstone", no_argument, NULL, OPT_TOMBSTONE},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"max-message-bytes", required_argument, NULL, OPT_MAX_MSG},
        {"poison", required_argument, NULL, OPT_POISON},
        {"interval-ms", required_argument, NULL, OPT_INTERVAL_MS},
        {"progress", no_argument, NULL, OPT_PROGRESS},
        {NULL, 0, NULL, 0},
    };
    memset(o, 0, sizeof(*o));
    o->days = 3;
    o->seed = 1;
    o->timeout_s = 30;
    o->interval_ms = 250;
    o->partitions = 1;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "b:t:g:p:f:k:H:n:u:", longopts, NULL)) != -1) {
        switch (c) {
        case 'b': o->brokers = optarg; break;
        case 't': o->topic = optarg; break;
        case 'g': o->group = optarg; break;
        case 'p': o->partitions = (int)parse_ll(optarg, "-p"); break;
        case 'f': o->file = optarg; break;
        case 'k': o->key = optarg; break;
        case 'H':
            if (o->n_headers == MAX_HEADERS) die("too many -H");
            o->headers[o->n_headers++] = optarg;
            break;
        case 'n': o->n = parse_ll(optarg, "-n"); break;
        case 'u': o->users = parse_ll(optarg, "-u"); break;
        case OPT_DAYS: o->days = parse_ll(optarg, "--days"); break;
        case OPT_SEED: o->seed = (uint64_t)parse_ll(optarg, "--seed"); break;
        case OPT_START: o->start = parse_ll(optarg, "--start"); break;
        case OPT_COUNT: o->count = parse_ll(optarg, "--count"); o->count_set = true; break;
        case OPT_EXPECT_ONLY: o->expect_only = true; break;
        case OPT_HEADERS_JSON: o->headers_json = optarg; break;
        case OPT_TOMBSTONE: o->tombstone = true; break;
        case OPT_TIMEOUT: o->timeout_s = (double)parse_ll(optarg, "--timeout"); break;
        case OPT_MAX_MSG: o->max_message_bytes = parse_ll(optarg, "--max-message-bytes"); break;
        case OPT_POISON:
            if (o->n_poison == MAX_POISON) die("too many --poison");
            o->poison[o->n_poison++] = optarg;
            break;
        case OPT_INTERVAL_MS:
            o->interval_ms = parse_ll(optarg, "--interval-ms");
            if (o->interval_ms < 1) usage();
            break;
        case OPT_PROGRESS: o->progress = true; break;
        default: usage();
        }
    }
    if (optind != argc) usage();
}

static void need(const char *v, const char *what) {
    if (!v || !*v) {
        fprintf(stderr, "usher-testkit: missing %s\n", what);
        usage();
    }
}

/* ------------------------------------------------------------------------------------- */
/* librdkafka helpers                                                                    */

static void conf_set(rd_kafka_conf_t *conf, const char *k, const char *v) {
    char errstr[512];
    if (rd_kafka_conf_set(conf, k, v, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
        die("config %s=%s: %s", k, v, errstr);
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static long long delivered_ok, delivered_failed;

/* Where one tracked record landed (produce_one_tracked); filled by its delivery report. */
struct delivered {
    int32_t partition;
    int64_t offset;
    bool done;
};

/* Counts every delivery report; the first few failures are printed. A record produced with a
 * struct delivered as its opaque gets its partition and offset recorded there. */
static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    (void)opaque;
    if (m->_private && !m->err) {
        struct delivered *d = m->_private;
        d->partition = m->partition;
        d->offset = m->offset;
        d->done = true;
    }
    if (m->err) {
        if (delivered_failed++ < 5)
            fprintf(stderr, "usher-testkit: delivery failed (partition %" PRId32 "): %s\n",
                    m->partition, rd_kafka_err2str(m->err));
    } else {
        delivered_ok++;
    }
}

/* Creates an idempotent acks=all producer; the caller owns the handle. */
static rd_kafka_t *make_producer(const char *brokers, long long max_message_bytes) {
    char errstr[512], buf[32];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    conf_set(conf, "bootstrap.servers", brokers);
    conf_set(conf, "acks", "all");
    conf_set(conf, "enable.idempotence", "true");
    conf_set(conf, "linger.ms", "5");
    conf_set(conf, "message.timeout.ms", "60000");
    if (max_message_bytes > 0) {
        snprintf(buf, sizeof(buf), "%lld", max_message_bytes + 65536);
        conf_set(conf, "message.max.bytes", buf);
    }
    rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) die("producer: %s", errstr); /* conf is still ours only on failure; we exit */
    return rk; /* rd_kafka_new() took ownership of conf */
}

/* Produces one record, retrying while the local queue is full. Takes ownership of hdrs
 * (may be NULL). value NULL = tombstone. where (may be NULL) must stay valid until the flush:
 * the delivery report fills in the record's partition and offset. */
static void produce_one_tracked(rd_kafka_t *rk, const char *topic, const void *key,
                                size_t key_len, const void *value, size_t value_len,
                                rd_kafka_headers_t *hdrs, struct delivered *where) {
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_KEY(key, key_len), RD_KAFKA_V_VALUE((void *)value, value_len),
            RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(where), RD_KAFKA_V_END);
        if (!err) return; /* hdrs now belong to the message */
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(rk, 50);
            continue;
        }
        if (hdrs) rd_kafka_headers_destroy(hdrs);
        die("produce to %s: %s", topic, rd_kafka_err2str(err));
    }
}

/* Like produce_one_tracked, without tracking where the record landed. */
static void produce_one(rd_kafka_t *rk, const char *topic, const void *key, size_t key_len,
                        const void *value, size_t value_len, rd_kafka_headers_t *hdrs) {
    produce_one_tracked(rk, topic, key, key_len, value, value_len, hdrs, NULL);
}

/* Waits for every outstanding delivery report; exits 1 unless all of `expected` succeeded. */
static void flush_and_check(rd_kafka_t *rk, long long expected) {
    rd_kafka_resp_err_t err = rd_kafka_flush(rk, 120 * 1000);
    if (err) die("flush: %s (%d still queued)", rd_kafka_err2str(err), rd_kafka_outq_len(rk));
    rd_kafka_poll(rk, 0);
    if (delivered_failed || delivered_ok != expected)
        die("%lld of %lld deliveries failed (%lld ok)", delivered_failed, expected, delivered_ok);
}

/* Metadata for one topic; returns the partition count, or -1 if the topic is not (yet)
 * there or a partition has no leader. */
static int topic_partitions(rd_kafka_t *rk, const char *topic, int timeout_ms) {
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    if (!rkt) die("topic handle %s: %s", topic, rd_kafka_err2str(rd_kafka_last_error()));
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, timeout_ms);
    rd_kafka_topic_destroy(rkt);
    if (err) return -1;
    int n = -1;
    if (md->topic_cnt == 1 && !md->topics[0].err) {
        n = md->topics[0].partition_cnt;
        for (int i = 0; i < md->topics[0].partition_cnt; i++)
            if (md->topics[0].partitions[i].leader < 0 || md->topics[0].partitions[i].err) n = -1;
        if (n == 0) n = -1;
    }
    rd_kafka_metadata_destroy(md);
    return n;
}

/* Like topic_partitions() but retries for up to timeout_s; exits 1 on timeout. */
static int wait_topic(rd_kafka_t *rk, const char *topic, double timeout_s) {
    int64_t deadline = now_ms() + (int64_t)(timeout_s * 1000);
    for (;;) {
        int n = topic_partitions(rk, topic, 5000);
        if (n > 0) return n;
        if (now_ms() > deadline) die("topic %s not in metadata after %.0fs", topic, timeout_s);
        usleep(200 * 1000);
    }
}

/* ------------------------------------------------------------------------------------- */
/* create-topic                                                                          */

/* Creates TOPIC (replication 1) unless it exists, then waits until metadata shows all of its
 * partitions with a leader. */
static int cmd_create_topic(const struct opts *o) {
    need(o->brokers, "-b BROKERS");
    need(o->topic, "-t TOPIC");
    if (o->partitions < 1) usage();
    char errstr[512];
    rd_kafka_t *rk = make_producer(o->brokers, 0);
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(o->topic, o->partitions, 1, errstr,
                                                    sizeof(errstr));
    if (!nt) die("NewTopic: %s", errstr);
    if (o->max_message_bytes > 0) {
        char buf[32];
        snprintf(buf, sizeof(buf), "%lld", o->max_message_bytes);
        if (rd_kafka_NewTopic_set_config(nt, "max.message.bytes", buf))
            die("NewTopic_set_config max.message.bytes");
    }
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *ao = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_operation_timeout(ao, 30000, errstr, sizeof(errstr));
    rd_kafka_AdminOptions_set_request_timeout(ao, 30000, errstr, sizeof(errstr));
    rd_kafka_CreateTopics(rk, &nt, 1, ao, q);

    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 60 * 1000);
    if (!ev) die("CreateTopics %s: no answer within 60 s", o->topic);
    if (rd_kafka_event_error(ev)) die("CreateTopics %s: %s", o->topic, rd_kafka_event_error_string(ev));
    const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
    size_t cnt = 0;
    const rd_kafka_topic_result_t **tr = rd_kafka_CreateTopics_result_topics(res, &cnt);
    for (size_t i = 0; i < cnt; i++) {
        rd_kafka_resp_err_t err = rd_kafka_topic_result_error(tr[i]);
        if (err && err != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
            die("CreateTopics %s: %s: %s", rd_kafka_topic_result_name(tr[i]),
                rd_kafka_err2str(err), rd_kafka_topic_result_error_string(tr[i]));
    }
    rd_kafka_event_destroy(ev);
    rd_kafka_AdminOptions_destroy(ao);
    rd_kafka_NewTopic_destroy(nt);
    rd_kafka_queue_destroy(q);

    int n = wait_topic(rk, o->topic, 30);
    fprintf(stderr, "usher-testkit: topic %s ready with %d partitions\n", o->topic, n);
    rd_kafka_destroy(rk);
    return 0;
}

/* ------------------------------------------------------------------------------------- */
/* produce-signups                                                                       */

/* splitmix64: a tiny, well-mixed deterministic PRNG step. */
static uint64_t mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* Formats epoch ms as ISO-8601 UTC with milliseconds ("2026-01-01T00:00:00.000Z"). */
static void iso8601(int64_t ms, char *buf, size_t sz) {
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char tmp[32];
    strftime(tmp, sizeof(tmp), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, sz, "%s.%03dZ", tmp, (int)(ms % 1000));
}

static void day_of(int64_t ms, char *buf, size_t sz) {
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    strftime(buf, sz, "%Y-%m-%d", &tm);
}

/* The deterministic plan of event i: which user, when. The day is drawn from (seed, i) with
 * weights 1:2:3:... (so days differ and a day mix-up shows); the millisecond within the day is
 * i * A mod 86400000 (A coprime to it), so no two events share a time of day, hence every event
 * has its own timestamp. The same (seed, i) always gives the same event, whatever slice is
 * produced. */
struct plan {
    long long i, user;
    int fmt;
    int64_t t_ms;
};

enum { FMT_AUTH0_USER, FMT_LOG_SINGLE, FMT_LOG_ARRAY, FMT_LOGTO, FMT_CE_AUTH0, FMT_CLERK,
       FMT_KEYCLOAK, FMT_SUPABASE, FMT_COUNT };

static const char *const fmt_names[FMT_COUNT] = {
    "auth0_user", "auth0_log_single", "auth0_log_array", "logto_post_register",
    "cloudevents_auth0_user_created", "clerk_user_created", "keycloak_register",
    "supabase_send_email_signup",
};

static struct plan plan_of(const struct opts *o, long long i) {
    const uint64_t A = 2654435761ULL % (uint64_t)DAY_MS; /* odd, not a multiple of 3 or 5 */
    const uint64_t weights = (uint64_t)o->days * (uint64_t)(o->days + 1) / 2;
    uint64_t r = mix64(o->seed * 0x100000001b3ULL ^ mix64((uint64_t)i)) % weights;
    long long day = 0;
    while (r >= (uint64_t)(day + 1)) { /* day d has weight d + 1 */
        r -= (uint64_t)(day + 1);
        day++;
    }
    struct plan p;
    p.i = i;
    p.user = i % o->users;
    p.fmt = (int)(p.user % FMT_COUNT); /* a user always comes from the same IdP */
    p.t_ms = SIGNUP_EPOCH_MS + day * DAY_MS + (int64_t)(((uint64_t)i * A) % (uint64_t)DAY_MS);
    return p;
}

/* The user's identity in its IdP's id style; same (seed, user) gives the same strings. */
static void user_id_of(const struct opts *o, const struct plan *p, char *buf, size_t sz) {
    uint32_t s = (uint32_t)(o->seed & 0xffffffffu);
    unsigned long long u = (unsigned long long)p->user;
    switch (p->fmt) {
    case FMT_LOGTO: snprintf(buf, sz, "%04x%08llx", s & 0xffffu, u); break;
    case FMT_CLERK: snprintf(buf, sz, "user_2%08x%018llx", s, u); break;
    case FMT_KEYCLOAK:
        snprintf(buf, sz, "%08x-%04llx-4%03llx-8%03llx-%012llx", s, (u >> 40) & 0xffff,
                 (u >> 28) & 0xfff, (u >> 16) & 0xfff, u & 0xffffffffffffULL);
        break;
    case FMT_SUPABASE:
        snprintf(buf, sz, "%08x-5b0e-4%03llx-a%03llx-%012llx", s, (u >> 28) & 0xfff,
                 (u >> 16) & 0xfff, u & 0xffffffffffffULL);
        break;
    default: snprintf(buf, sz, "auth0|%08x%016llx", s, u); break;
    }
}

static void add_header(rd_kafka_headers_t *h, const char *name, const char *value) {
    if (rd_kafka_header_add(h, name, -1, value, value ? -1 : 0))
        die("header_add %s", name);
}

/* A bare Auth0 `event.user` (post-user-registration Action), like
 * fixtures/auth0-action/post-user-registration.user.json. */
static json_t *ev_auth0_user(const char *uid, const char *email, const char *iso, long long u) {
    char nick[64], uname[64];
    snprintf(nick, sizeof(nick), "user%lld", u);
    snprintf(uname, sizeof(uname), "user_%lld", u);
    return json_pack(
        "{s:{}, s:s, s:s, s:b, s:s, s:s, s:s, s:s, s:s, s:b, s:s, s:s, s:s,"
        " s:{s:s, s:b}, s:s}",
        "app_metadata", "created_at", iso, "email", email, "email_verified", 0,
        "family_name", "Tester", "given_name", "Test", "name", "Test User", "nickname", nick,
        "phone_number", "+15555550101", "phone_verified", 0,
        "picture", "https://s.gravatar.com/avatar/00000000000000000000000000000000?s=480&r=pg",
        "updated_at", iso, "user_id", uid,
        "user_metadata", "preferred_language", "en", "marketing_opt_in", 1, "username", uname);
}

/* One Auth0 Log Stream record `{log_id, data}` of type `ss`, like
 * fixtures/auth0-logstream/batch-jsonarray.ss.json's element. */
static json_t *ev_auth0_log(const char *log_id, const char *uid, const char *email,
                            const char *iso) {
    return json_pack(
        "{s:s, s:{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s,"
        " s:{s:{s:s, s:s, s:s, s:s, s:s}}, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:b,"
        " s:{s:s}}}",
        "log_id", log_id, "data", "log_id", log_id, "date", iso, "type", "ss", "description", "",
        "connection", "Username-Password-Authentication", "connection_id", "con_Q9f2LxR7tYb3Kd8M",
        "client_id", "Xq7Zp2LmN4vB8cD1eF3gH5jK6mN9pQ0r", "client_name", "Acme Web (SPA)",
        "ip", "203.0.113.45", "user_agent", "Chrome 124.0.0 / Mac OS X 10.15.7",
        "details", "body", "client_id", "Xq7Zp2LmN4vB8cD1eF3gH5jK6mN9pQ0r", "tenant", "acme-prod",
        "email", email, "password", "*****", "connection", "Username-Password-Authentication",
        "user_id", uid, "user_name", email, "strategy", "auth0", "strategy_type", "database",
        "hostname", "acme-prod.us.auth0.com", "tenant_name", "acme-prod",
        "environment_name", "prod-us-3", "is_mobile", 0, "$event_schema", "version", "1.0.0");
}

/* A Logto PostRegister interaction hook, like fixtures/logto/post-register.json. */
static json_t *ev_logto(const char *uid, const char *email, const char *iso, int64_t ms,
                        long long u, long long i) {
    char uname[64], sess[64];
    snprintf(uname, sizeof(uname), "user_%lld", u);
    snprintf(sess, sizeof(sess), "sess_%016llx", (unsigned long long)mix64((uint64_t)i));
    return json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s,"
        " s:{s:s, s:s, s:s, s:n, s:s, s:n, s:{}, s:{}, s:I, s:I, s:I, s:{}, s:s, s:b},"
        " s:{s:s, s:s, s:s, s:s}}",
        "hookId", "hk_5d2e9a0f7c1b", "event", "PostRegister", "interactionEvent", "Register",
        "createdAt", iso, "sessionId", sess,
        "userAgent", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
                     "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        "userId", uid, "userIp", "203.0.113.45",
        "user", "id", uid, "username", uname, "primaryEmail", email, "primaryPhone",
        "name", "Test User", "avatar", "customData", "identities", "lastSignInAt", (json_int_t)ms,
        "createdAt", (json_int_t)ms, "updatedAt", (json_int_t)ms, "profile",
        "applicationId", "k3v9q2m7x1z8c4b6", "isSuspended", 0,
        "application", "id", "k3v9q2m7x1z8c4b6", "type", "SPA", "name", "Acme Web",
        "description", "Customer portal");
}

/* A structured CloudEvent from Auth0 Event Streams, like
 * fixtures/cloudevents/structured.auth0-event-stream.user-created.json. */
static json_t *ev_cloudevent(const char *ce_id, const char *uid, const char *email,
                             const char *iso, long long u) {
    json_t *user = ev_auth0_user(uid, email, iso, u);
    const char *bare = strchr(uid, '|');
    json_object_set_new(user, "identities",
                        json_pack("[{s:s, s:s, s:s, s:b}]", "connection",
                                  "Username-Password-Authentication", "user_id",
                                  bare ? bare + 1 : uid, "provider", "auth0", "isSocial", 0));
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:{s:o}}", "specversion", "1.0",
                     "type", "user.created", "source", "urn:auth0:acme-prod.us.auth0.com",
                     "id", ce_id, "time", iso, "a0tenant", "acme-prod", "a0stream",
                     "est_Q2w3E4r5T6y7U8i9", "data", "object", user);
}

/* A Clerk `user.created` (Svix-delivered), like fixtures/clerk/user-created.json. */
static json_t *ev_clerk(const char *uid, const char *email, int64_t ms, long long u) {
    char idn[64];
    snprintf(idn, sizeof(idn), "idn_2%026llx", (unsigned long long)u);
    json_t *addr = json_pack(
        "{s:I, s:s, s:s, s:[], s:s, s:b, s:I, s:{s:i, s:I, s:s, s:s}}", "created_at",
        (json_int_t)ms, "email_address", email, "id", idn, "linked_to", "object",
        "email_address", "reserved", 0, "updated_at", (json_int_t)ms, "verification",
        "attempts", 1, "expire_at", (json_int_t)(ms + 600000), "status", "verified",
        "strategy", "email_code");
    json_t *data = json_pack(
        "{s:b, s:b, s:b, s:I, s:b, s:[o], s:[], s:n, s:s, s:b, s:s, s:s, s:I, s:s, s:n,"
        " s:b, s:n, s:n, s:n, s:s, s:[], s:b, s:[], s:s, s:n, s:n, s:{}, s:{}, s:[],"
        " s:b, s:b, s:{}, s:I, s:n, s:[]}",
        "backup_code_enabled", 0, "banned", 0, "create_organization_enabled", 1, "created_at",
        (json_int_t)ms, "delete_self_enabled", 1, "email_addresses", addr, "external_accounts",
        "external_id", "first_name", "Test", "has_image", 0, "id", uid, "image_url",
        "https://img.clerk.com/placeholder-example.png", "last_active_at", (json_int_t)ms,
        "last_name", "User", "last_sign_in_at", "locked", 0, "lockout_expires_in_seconds",
        "mfa_disabled_at", "mfa_enabled_at", "object", "user", "passkeys", "password_enabled",
        1, "phone_numbers", "primary_email_address_id", idn, "primary_phone_number_id",
        "primary_web3_wallet_id", "private_metadata", "public_metadata", "saml_accounts",
        "totp_enabled", 0, "two_factor_enabled", 0, "unsafe_metadata", "updated_at",
        (json_int_t)ms, "username", "web3_wallets");
    return json_pack("{s:o, s:{s:{s:s, s:s}}, s:s, s:s, s:I, s:s}", "data", data,
                     "event_attributes", "http_request", "client_ip", "203.0.113.88",
                     "user_agent", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7)",
                     "instance_id", "ins_2aBcDeFgHiJkLmNoPqRsTuVwXyZ", "object", "event",
                     "timestamp", (json_int_t)ms, "type", "user.created");
}

/* A Keycloak REGISTER user event, like fixtures/keycloak/event.register.json. */
static json_t *ev_keycloak(const char *kc_id, const char *uid, const char *email, int64_t ms,
                           long long u) {
    char uname[64];
    snprintf(uname, sizeof(uname), "user%lld", u);
    return json_pack(
        "{s:s, s:s, s:s, s:I, s:s, s:s, s:n, s:s, s:{s:s, s:s, s:s, s:s, s:s, s:s, s:s}}",
        "realmId", "7d1c4e2a-9b3f-4a6e-8c5d-0f1e2d3c4b5a", "clientId", "acme-web", "id", kc_id,
        "time", (json_int_t)ms, "type", "REGISTER", "userId", uid, "sessionId", "ipAddress",
        "203.0.113.45", "details", "auth_method", "openid-connect", "auth_type", "code",
        "register_method", "form", "redirect_uri", "https://app.example.com/callback",
        "code_id", "8f7e6d5c-4b3a-4291-8807-f6e5d4c3b2a1", "email", email, "username", uname);
}

/* A Supabase Send Email hook for a signup, like fixtures/supabase/send-email-hook.signup.json. */
static json_t *ev_supabase(const char *uid, const char *email, const char *iso, long long i) {
    char token[16], hash[64];
    uint64_t r = mix64((uint64_t)i ^ 0x5b0e);
    snprintf(token, sizeof(token), "%06llu", (unsigned long long)(r % 1000000));
    snprintf(hash, sizeof(hash), "%016llx%016llx", (unsigned long long)r,
             (unsigned long long)mix64(r));
    json_t *idd = json_pack("{s:s, s:b, s:b, s:s}", "email", email, "email_verified", 0,
                            "phone_verified", 0, "sub", uid);
    json_t *ident = json_pack("{s:s, s:s, s:s, s:O, s:s, s:s, s:s, s:s, s:s}", "identity_id",
                              uid, "id", uid, "user_id", uid, "identity_data", idd, "provider",
                              "email", "last_sign_in_at", iso, "created_at", iso, "updated_at",
                              iso, "email", email);
    return json_pack(
        "{s:{s:s, s:s, s:s, s:s, s:s, s:{s:s, s:[s]}, s:o, s:[o], s:s, s:s, s:b},"
        " s:{s:s, s:s, s:s, s:s, s:s, s:s, s:s}}",
        "user", "id", uid, "aud", "authenticated", "role", "authenticated", "email", email,
        "phone", "", "app_metadata", "provider", "email", "providers", "email",
        "user_metadata", idd, "identities", ident, "created_at", iso, "updated_at", iso,
        "is_anonymous", 0,
        "email_data", "token", token, "token_hash", hash, "redirect_to",
        "https://app.example.com/welcome", "email_action_type", "signup", "site_url",
        "https://app.example.com", "token_new", "", "token_hash_new", "");
}

/* Base64 (standard alphabet, padded) of len bytes into out (>= 4*ceil(len/3)+1 bytes). */
static void base64(const unsigned char *in, size_t len, char *out) {
    EVP_EncodeBlock((unsigned char *)out, in, (int)len);
}

/* Builds event p's record: value (malloc'd, caller frees), key and headers. */
static char *build_event(const struct opts *o, const struct plan *p, char *key, size_t key_sz,
                         rd_kafka_headers_t **hdrs_out) {
    char uid[96], email[128], iso[40], id[96];
    user_id_of(o, p, uid, sizeof(uid));
    snprintf(email, sizeof(email), "user%lld.s%llu@example.com", p->user,
             (unsigned long long)o->seed);
    iso8601(p->t_ms, iso, sizeof(iso));
    snprintf(key, key_sz, "%s", uid);
    rd_kafka_headers_t *h = NULL;
    json_t *v = NULL;
    switch (p->fmt) {
    case FMT_AUTH0_USER:
        v = ev_auth0_user(uid, email, iso, p->user);
        h = rd_kafka_headers_new(1);
        add_header(h, "usher-event-type", "signup");
        break;
    case FMT_LOG_SINGLE:
    case FMT_LOG_ARRAY:
        /* 56 digits, unique per (seed, i) */
        snprintf(id, sizeof(id), "900%020llu%033lld", (unsigned long long)o->seed, p->i);
        v = ev_auth0_log(id, uid, email, iso);
        if (p->fmt == FMT_LOG_ARRAY) v = json_pack("[o]", v);
        break;
    case FMT_LOGTO: v = ev_logto(uid, email, iso, p->t_ms, p->user, p->i); break;
    case FMT_CE_AUTH0:
        snprintf(id, sizeof(id), "evt_%08x%012llx", (unsigned)(o->seed & 0xffffffffu),
                 (unsigned long long)p->i);
        v = ev_cloudevent(id, uid, email, iso, p->user);
        break;
    case FMT_CLERK: v = ev_clerk(uid, email, p->t_ms, p->user); break;
    case FMT_KEYCLOAK:
        snprintf(id, sizeof(id), "%08x-%04llx-4%03llx-9%03llx-%012llx",
                 (unsigned)(o->seed & 0xffffffffu), ((unsigned long long)p->i >> 40) & 0xffff,
                 ((unsigned long long)p->i >> 28) & 0xfff, ((unsigned long long)p->i >> 16) & 0xfff,
                 (unsigned long long)p->i & 0xffffffffffffULL);
        v = ev_keycloak(id, uid, email, p->t_ms, p->user);
        break;
    case FMT_SUPABASE: v = ev_supabase(uid, email, iso, p->i); break;
    }
    if (!v) die("building event %lld (%s) failed", p->i, fmt_names[p->fmt]);
    char *value = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(v);
    if (!value) die("json_dumps");

    if (p->fmt == FMT_CLERK) {
        /* Svix headers with a real v1 signature: base64(HMAC-SHA256(secret, id.ts.body)). */
        char svix_id[64], ts[32], sig[128] = "v1,";
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int mac_len = 0;
        snprintf(svix_id, sizeof(svix_id), "msg_%08x%016llx", (unsigned)(o->seed & 0xffffffffu),
                 (unsigned long long)p->i);
        snprintf(ts, sizeof(ts), "%lld", (long long)(p->t_ms / 1000));
        size_t body_len = strlen(svix_id) + strlen(ts) + strlen(value) + 3;
        char *signed_body = malloc(body_len);
        if (!signed_body) die("out of memory");
        snprintf(signed_body, body_len, "%s.%s.%s", svix_id, ts, value);
        HMAC(EVP_sha256(), SVIX_TEST_SECRET, (int)strlen(SVIX_TEST_SECRET),
             (const unsigned char *)signed_body, strlen(signed_body), mac, &mac_len);
        free(signed_body);
        base64(mac, mac_len, sig + 3);
        h = rd_kafka_headers_new(3);
        add_header(h, "svix-id", svix_id);
        add_header(h, "svix-timestamp", ts);
        add_header(h, "svix-signature", sig);
    }
    *hdrs_out = h;
    return value;
}

/* Per-day tallies of a range of events: count and distinct users. */
struct tally {
    long long total;
    long long days_cnt[366 * 4];
    long long days_users[366 * 4];
};

/* Counts events [from, to) into t. Distinct users per day use one bitmap per day. */
static void tally_range(const struct opts *o, long long from, long long to, struct tally *t) {
    memset(t, 0, sizeof(*t));
    size_t words = (size_t)(o->users + 63) / 64;
    uint64_t *seen = calloc((size_t)o->days * words, sizeof(uint64_t));
    if (!seen) die("out of memory");
    for (long long i = from; i < to; i++) {
        struct plan p = plan_of(o, i);
        long long d = (p.t_ms - SIGNUP_EPOCH_MS) / DAY_MS;
        uint64_t *bits = seen + (size_t)d * words;
        t->total++;
        t->days_cnt[d]++;
        if (!(bits[p.user / 64] & (1ULL << (p.user % 64)))) {
            bits[p.user / 64] |= 1ULL << (p.user % 64);
            t->days_users[d]++;
        }
    }
    free(seen);
}

/* Prints OUT as one compact JSON line (sorted keys) on stdout and frees it. */
static void print_json_line(json_t *out) {
    char *s = json_dumps(out, JSON_COMPACT | JSON_SORT_KEYS);
    if (!s) die("json_dumps");
    puts(s);
    free(s);
    json_decref(out);
}

/* produce-signups / produce-mixed: checks -t and N/-u/--days, defaults --count to the rest of
 * the N events and checks --start/--count (exit 2 if outside 0..N). [*from, *to) is the range
 * to produce, or all N with --expect-only. */
static void produce_range(struct opts *o, long long *from, long long *to) {
    need(o->topic, "-t TOPIC");
    if (o->n < 1 || o->users < 1 || o->days < 1 || o->days > 366 * 4) usage();
    if (!o->count_set) o->count = o->n - o->start;
    if (o->start > o->n || o->count < 0 || o->start + o->count > o->n) {
        fprintf(stderr, "usher-testkit: --start/--count outside 0..N\n");
        exit(2);
    }
    *from = o->expect_only ? 0 : o->start;
    *to = o->expect_only ? o->n : o->start + o->count;
}

/* Prints {"total":N,"days":{...},"unique_users":{...}} for tally t. */
static void print_tally(const struct opts *o, const struct tally *t, long long from,
                        long long to) {
    json_t *days = json_object(), *uniq = json_object(), *fmts = json_object();
    for (long long d = 0; d < o->days; d++) {
        if (!t->days_cnt[d]) continue;
        char day[16];
        day_of(SIGNUP_EPOCH_MS + d * DAY_MS, day, sizeof(day));
        json_object_set_new(days, day, json_integer(t->days_cnt[d]));
        json_object_set_new(uniq, day, json_integer(t->days_users[d]));
    }
    for (long long i = from; i < to; i++) {
        struct plan p = plan_of(o, i);
        json_t *c = json_object_get(fmts, fmt_names[p.fmt]);
        json_object_set_new(fmts, fmt_names[p.fmt], json_integer(c ? json_integer_value(c) + 1 : 1));
    }
    json_t *out = json_pack("{s:I, s:o, s:o, s:o, s:I, s:I}", "total", (json_int_t)t->total,
                            "days", days, "unique_users", uniq, "formats", fmts, "start",
                            (json_int_t)from, "count", (json_int_t)(to - from));
    print_json_line(out);
}

/* Produces events [start, start+count) of the deterministic sequence of N signups and prints
 * the expectation for what it produced (or, with --expect-only, for all N, producing nothing). */
static int cmd_produce_signups(const struct opts *o_in) {
    struct opts o = *o_in;
    long long from, to;
    produce_range(&o, &from, &to);
    struct tally *t = malloc(sizeof(*t));
    if (!t) die("out of memory");
    tally_range(&o, from, to, t);
    if (!o.expect_only) {
        need(o.brokers, "-b BROKERS");
        rd_kafka_t *rk = make_producer(o.brokers, 0);
        for (long long i = from; i < to; i++) {
            struct plan p = plan_of(&o, i);
            char key[128];
            rd_kafka_headers_t *h = NULL;
            char *value = build_event(&o, &p, key, sizeof(key), &h);
            produce_one(rk, o.topic, key, strlen(key), value, strlen(value), h);
            free(value);
            rd_kafka_poll(rk, 0);
        }
        flush_and_check(rk, to - from);
        rd_kafka_destroy(rk);
        fprintf(stderr, "usher-testkit: produced %lld signups [%lld, %lld) to %s\n", to - from,
                from, to, o.topic);
    }
    print_tally(&o, t, from, to);
    free(t);
    return 0;
}

/* ------------------------------------------------------------------------------------- */
/* produce-file                                                                          */

/* Reads a whole file; *len gets its size. Exits 1 on error. */
static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) die("%s: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf) die("out of memory");
    for (;;) {
        if (n == cap) {
            cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb) die("out of memory");
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    if (ferror(f)) die("%s: read error", path);
    fclose(f);
    *len = n;
    return buf;
}

/* Produces one record with FILE's exact bytes as value (or NULL with --tombstone). Headers
 * come from -H name=value and from a fixtures *.headers.json ({"headers":[{key,value}],
 * "key"?}); that file's "key" is used when -k is not given. */
static int cmd_produce_file(const struct opts *o) {
    need(o->brokers, "-b BROKERS");
    need(o->topic, "-t TOPIC");
    if (!o->file && !o->tombstone) need(o->file, "-f FILE");
    size_t len = 0;
    char *value = o->file ? slurp(o->file, &len) : NULL;
    const char *key = o->key;
    rd_kafka_headers_t *h = rd_kafka_headers_new(8);
    json_t *hj = NULL;
    if (o->headers_json) {
        json_error_t jerr;
        hj = json_load_file(o->headers_json, 0, &jerr);
        if (!hj) die("%s:%d: %s", o->headers_json, jerr.line, jerr.text);
        json_t *arr = json_object_get(hj, "headers"), *e;
        size_t idx;
        if (!json_is_array(arr)) die("%s: no \"headers\" array", o->headers_json);
        json_array_foreach(arr, idx, e) {
            const char *k = json_string_value(json_object_get(e, "key"));
            json_t *v = json_object_get(e, "value");
            if (!k || !(json_is_string(v) || json_is_null(v)))
                die("%s: headers[%zu] needs string key and string/null value", o->headers_json, idx);
            add_header(h, k, json_string_value(v));
        }
        if (!key) key = json_string_value(json_object_get(hj, "key"));
    }
    for (int i = 0; i < o->n_headers; i++) {
        const char *eq = strchr(o->headers[i], '=');
        if (!eq) die("-H %s: expected name=value", o->headers[i]);
        if (rd_kafka_header_add(h, o->headers[i], eq - o->headers[i], eq + 1, -1))
            die("header_add");
    }
    long long max = (long long)len > 1000000 ? (long long)len : 0;
    rd_kafka_t *rk = make_producer(o->brokers, max);
    /* A 0-byte file gives an empty (not NULL) value: pass a non-NULL pointer. */
    const char *payload = o->tombstone ? NULL : (value ? value : "");
    produce_one(rk, o->topic, key, key ? strlen(key) : 0, payload, o->tombstone ? 0 : len, h);
    flush_and_check(rk, 1);
    rd_kafka_destroy(rk);
    fprintf(stderr, "usher-testkit: produced %s (%zu bytes%s) to %s\n",
            o->file ? o->file : "(tombstone)", o->tombstone ? 0 : len,
            o->tombstone ? ", NULL value" : "", o->topic);
    json_decref(hj);
    free(value);
    return 0;
}

/* ------------------------------------------------------------------------------------- */
/* offsets / wait-offsets                                                                */

/* A consumer handle carrying group.id, for rd_kafka_committed only: never subscribes, so it
 * never joins (or disturbs) the group. */
static rd_kafka_t *make_group_reader(const char *brokers, const char *group) {
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    conf_set(conf, "bootstrap.servers", brokers);
    conf_set(conf, "group.id", group);
    conf_set(conf, "enable.auto.commit", "false");
    conf_set(conf, "enable.auto.offset.store", "false");
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!rk) die("consumer: %s", errstr);
    return rk; /* rd_kafka_new() took ownership of conf */
}

struct offsets_row {
    int32_t partition;
    int64_t committed, low, end;
};

/* Reads committed and log-end offsets of every partition of topic. Returns the partition
 * count, or -1 (errstr set) on a broker error. committed is -1 when the group has none.
 * With known > 0 (the partition count of an earlier call on the same rows) and ends false, only
 * the committed offsets are read and rows keep their low and end: one request instead of one
 * per partition plus metadata, so a tight poll loop does not load the broker it measures. */
static int read_offsets_cached(rd_kafka_t *rk, const char *topic, struct offsets_row *rows,
                               int known, bool ends, char *errstr, size_t errsz) {
    int n = known > 0 ? known : topic_partitions(rk, topic, 5000);
    if (n < 0) {
        snprintf(errstr, errsz, "topic %s not found in metadata", topic);
        return -1;
    }
    if (n > MAX_PARTITIONS) n = MAX_PARTITIONS;
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(n);
    for (int p = 0; p < n; p++) rd_kafka_topic_partition_list_add(parts, topic, p);
    rd_kafka_resp_err_t err = rd_kafka_committed(rk, parts, 10000);
    if (err) {
        snprintf(errstr, errsz, "committed: %s", rd_kafka_err2str(err));
        rd_kafka_topic_partition_list_destroy(parts);
        return -1;
    }
    for (int p = 0; p < n; p++) {
        rd_kafka_topic_partition_t *tp = &parts->elems[p];
        if (tp->err) {
            snprintf(errstr, errsz, "committed partition %d: %s", p, rd_kafka_err2str(tp->err));
            rd_kafka_topic_partition_list_destroy(parts);
            return -1;
        }
        rows[p].partition = tp->partition;
        rows[p].committed = tp->offset >= 0 ? tp->offset : -1;
        if (known > 0 && !ends)
            continue;
        err = rd_kafka_query_watermark_offsets(rk, topic, tp->partition, &rows[p].low,
                                               &rows[p].end, 10000);
        if (err) {
            snprintf(errstr, errsz, "watermarks partition %d: %s", p, rd_kafka_err2str(err));
            rd_kafka_topic_partition_list_destroy(parts);
            return -1;
        }
    }
    rd_kafka_topic_partition_list_destroy(parts);
    return n;
}

static int read_offsets(rd_kafka_t *rk, const char *group, const char *topic,
                        struct offsets_row *rows, char *errstr, size_t errsz) {
    (void)group;
    return read_offsets_cached(rk, topic, rows, 0, true, errstr, errsz);
}

/* Lag of one partition: records at or after the committed position (from the log start if
 * the group never committed). */
static int64_t row_lag(const struct offsets_row *r) {
    int64_t pos = r->committed >= 0 ? r->committed : r->low;
    return r->end > pos ? r->end - pos : 0;
}

/* Lag of all n partitions. */
static int64_t total_lag(const struct offsets_row *rows, int n) {
    int64_t lag = 0;
    for (int p = 0; p < n; p++) lag += row_lag(&rows[p]);
    return lag;
}

static int64_t print_rows(FILE *out, const struct offsets_row *rows, int n) {
    for (int p = 0; p < n; p++)
        fprintf(out, "%" PRId32 " %" PRId64 " %" PRId64 "\n", rows[p].partition, rows[p].committed,
                rows[p].end);
    int64_t lag = total_lag(rows, n);
    fprintf(out, "lag %" PRId64 "\n", lag);
    return lag;
}

/* Prints "partition committed end" per partition, then "lag TOTAL". */
static int cmd_offsets(const struct opts *o) {
    need(o->brokers, "-b BROKERS");
    need(o->group, "-g GROUP");
    need(o->topic, "-t TOPIC");
    static struct offsets_row rows[MAX_PARTITIONS];
    char errstr[512];
    rd_kafka_t *rk = make_group_reader(o->brokers, o->group);
    int n = read_offsets(rk, o->group, o->topic, rows, errstr, sizeof(errstr));
    if (n < 0) die("%s", errstr);
    print_rows(stdout, rows, n);
    rd_kafka_destroy(rk);
    return 0;
}

/* Polls (every --interval-ms, default 250) until the group's committed offset equals the log
 * end on every partition (a partition the group never committed counts as done only while it
 * is empty). With --progress, every successful poll also prints, flushed at once,
 * "progress ELAPSED_MS DONE TOTAL": ms since start, records at or below the committed
 * positions, and records between the log start and the log end (DONE = TOTAL - lag). */
static int cmd_wait_offsets(const struct opts *o) {
    need(o->brokers, "-b BROKERS");
    need(o->group, "-g GROUP");
    need(o->topic, "-t TOPIC");
    static struct offsets_row rows[MAX_PARTITIONS];
    char errstr[512] = "";
    rd_kafka_t *rk = make_group_reader(o->brokers, o->group);
    int64_t start = now_ms(), deadline = start + (int64_t)(o->timeout_s * 1000);
    int64_t next_report = start + 10000;
    int n = -1;
    int64_t ends_at = 0; /* when the log ends were last read */
    for (;;) {
        /* The log ends are read again once a second, and whenever the group looks done:
         * "done" is only ever reported against ends read in the same poll. */
        bool ends = n <= 0 || now_ms() - ends_at >= 1000;
        n = read_offsets_cached(rk, o->topic, rows, n, ends, errstr, sizeof(errstr));
        if (n > 0 && !ends && total_lag(rows, n) == 0) {
            ends = true;
            n = read_offsets_cached(rk, o->topic, rows, n, true, errstr, sizeof(errstr));
        }
        if (n > 0 && ends)
            ends_at = now_ms();
        if (n > 0) {
            int64_t lag = total_lag(rows, n);
            if (o->progress) {
                int64_t total = 0;
                for (int p = 0; p < n; p++) total += rows[p].end - rows[p].low;
                printf("progress %" PRId64 " %" PRId64 " %" PRId64 "\n", now_ms() - start,
                       total - lag, total);
                fflush(stdout);
            }
            if (lag == 0) {
                fprintf(stderr, "usher-testkit: group %s at log end of %s after %.1fs\n",
                        o->group, o->topic, (double)(now_ms() - start) / 1000);
                print_rows(stdout, rows, n);
                rd_kafka_destroy(rk);
                return 0;
            }
            if (now_ms() >= next_report) {
                fprintf(stderr, "usher-testkit: waiting for group %s on %s: lag %" PRId64 "\n",
                        o->group, o->topic, lag);
                next_report += 10000;
            }
        }
        if (now_ms() >= deadline) break;
        usleep((useconds_t)(o->interval_ms * 1000));
    }
    fprintf(stderr, "usher-testkit: timeout after %.0fs: group %s has not committed the log end of %s\n",
            o->timeout_s, o->group, o->topic);
    if (n > 0)
        print_rows(stdout, rows, n);
    else
        fprintf(stderr, "usher-testkit: last error: %s\n", errstr);
    rd_kafka_destroy(rk);
    return 1;
}

/* ------------------------------------------------------------------------------------- */
/* read-topic                                                                            */

static void hex(const unsigned char *in, size_t len, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = '\0';
}

/* A JSON string of bytes if they are valid UTF-8, else {"hex": "..."}; NULL → null. */
static json_t *bytes_json(const void *p, size_t len) {
    if (!p) return json_null();
    json_t *s = json_stringn(p, len);
    if (s) return s;
    char *h = malloc(2 * len + 1);
    if (!h) die("out of memory");
    hex(p, len, h);
    s = json_pack("{s:s}", "hex", h);
    free(h);
    return s;
}

/* Reads TOPIC from the beginning up to the log end seen at start (all partitions assigned,
 * nothing committed) and prints one JSON object per record, ordered by partition then offset. */
static int cmd_read_topic(const struct opts *o) {
    need(o->brokers, "-b BROKERS");
    need(o->topic, "-t TOPIC");
    char errstr[512], group[64];
    snprintf(group, sizeof(group), "usher-testkit-read-%d", (int)getpid());
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    conf_set(conf, "bootstrap.servers", o->brokers);
    conf_set(conf, "group.id", group); /* never used: assign() without commits */
    conf_set(conf, "enable.auto.commit", "false");
    conf_set(conf, "enable.auto.offset.store", "false");
    conf_set(conf, "fetch.max.bytes", "16777216");
    conf_set(conf, "receive.message.max.bytes", "20000000");
    conf_set(conf, "fetch.message.max.bytes", "16777216");
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!rk) die("consumer: %s", errstr);
    conf = NULL; /* rd_kafka_new() took ownership */
    rd_kafka_poll_set_consumer(rk);

    int n = wait_topic(rk, o->topic, 10);
    if (n > MAX_PARTITIONS) die("too many partitions");
    static int64_t high[MAX_PARTITIONS], next[MAX_PARTITIONS];
    int remaining = 0;
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(n);
    for (int p = 0; p < n; p++) {
        int64_t low = 0;
        rd_kafka_resp_err_t err =
            rd_kafka_query_watermark_offsets(rk, o->topic, p, &low, &high[p], 10000);
        if (err) die("watermarks %s [%d]: %s", o->topic, p, rd_kafka_err2str(err));
        next[p] = low;
        if (high[p] > low) {
            remaining++;
            rd_kafka_topic_partition_list_add(parts, o->topic, p)->offset = low;
        }
    }
    if (remaining) {
        rd_kafka_resp_err_t err = rd_kafka_assign(rk, parts);
        if (err) die("assign: %s", rd_kafka_err2str(err));
    }
    rd_kafka_topic_partition_list_destroy(parts);

    /* Records arrive per partition in order; buffer lines per partition to print sorted. */
    json_t *lines = json_array();
    for (int p = 0; p < n; p++) json_array_append_new(lines, json_array());
    int64_t deadline = now_ms() + (int64_t)(o->timeout_s * 1000);
    while (remaining > 0) {
        if (now_ms() > deadline) {
            for (int p = 0; p < n; p++)
                if (next[p] < high[p])
                    fprintf(stderr, "usher-testkit: partition %d: read up to %" PRId64 " of %" PRId64 "\n",
                            p, next[p], high[p]);
            die("read-topic %s: timeout after %.0fs", o->topic, o->timeout_s);
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (!m) continue;
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                fprintf(stderr, "usher-testkit: consumer: %s\n", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        int p = m->partition;
        if (p < 0 || p >= n || m->offset < next[p] || m->offset >= high[p]) {
            rd_kafka_message_destroy(m);
            continue;
        }
        json_t *rec = json_pack("{s:i, s:I, s:o, s:o}", "partition", p, "offset",
                                (json_int_t)m->offset, "key", bytes_json(m->key, m->key_len),
                                "value_len", m->payload ? json_integer((json_int_t)m->len) : json_null());
        if (m->payload) {
            unsigned char md[SHA256_DIGEST_LENGTH];
            char mdhex[2 * SHA256_DIGEST_LENGTH + 1];
            SHA256(m->payload, m->len, md);
            hex(md, sizeof(md), mdhex);
            json_object_set_new(rec, "value_sha256", json_string(mdhex));
        } else {
            json_object_set_new(rec, "value_sha256", json_null());
        }
        json_t *hdrs = json_object();
        rd_kafka_headers_t *mh = NULL;
        if (!rd_kafka_message_headers(m, &mh)) {
            const char *name;
            const void *val;
            size_t vlen;
            for (size_t i = 0; !rd_kafka_header_get_all(mh, i, &name, &val, &vlen); i++)
                json_object_set_new(hdrs, name, bytes_json(val, vlen));
        }
        json_object_set_new(rec, "headers", hdrs);
        json_array_append_new(json_array_get(lines, (size_t)p), rec);
        next[p] = m->offset + 1;
        if (next[p] >= high[p]) remaining--;
        rd_kafka_message_destroy(m);
    }
    for (int p = 0; p < n; p++) {
        size_t i;
        json_t *rec;
        json_array_foreach(json_array_get(lines, (size_t)p), i, rec) {
            char *s = json_dumps(rec, JSON_COMPACT | JSON_PRESERVE_ORDER);
            puts(s);
            free(s);
        }
    }
    json_decref(lines);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return 0;
}


/* ------------------------------------------------------------------------------------- */
/* produce-mixed                                                                         */

/* A deterministic mix of event types for U users: event i belongs to user i % U and is that
 * user's event number seq = i / U (so a user's events are produced in seq order). A user's
 * first event is a signup; one user in eight (when it has two events or more) ends with a
 * deletion; the others are logins 45%, logouts 25%, password resets 10%, profile updates 20%,
 * drawn from (seed, i). Event times rise with i, spread evenly over --days UTC days, so a
 * user's events are also in time order. Even users come from Auth0 Log Streams (log_id is
 * the event id), odd users from Keycloak (id is the event id); both carry the per-user
 * sequence number as details.usher_seq. */
enum { MT_SIGNUP, MT_LOGIN, MT_LOGOUT, MT_PASSWORD_RESET, MT_USER_UPDATED, MT_USER_DELETED,
       MT_COUNT };

static const char *const mt_names[MT_COUNT] = {"signup", "login", "logout", "password_reset",
                                              "user_updated", "user_deleted"};
static const char *const mt_auth0[MT_COUNT] = {"ss", "s", "slo", "scp", "scu", "sdu"};
static const char *const mt_keycloak[MT_COUNT] = {"REGISTER", "LOGIN", "LOGOUT",
                                                 "UPDATE_PASSWORD", "UPDATE_PROFILE",
                                                 "DELETE_ACCOUNT"};

struct mplan {
    long long i, user, seq;
    int type;
    bool keycloak;
    int64_t t_ms;
};

/* How many of the N events belong to user u. */
static long long mixed_user_events(const struct opts *o, long long u) {
    return o->n / o->users + (u < o->n % o->users ? 1 : 0);
}

static struct mplan mixed_plan(const struct opts *o, long long i) {
    struct mplan p;
    p.i = i;
    p.user = i % o->users;
    p.seq = i / o->users;
    p.keycloak = p.user % 2 == 1;
    long long nu = mixed_user_events(o, p.user);
    bool deleter = nu >= 2 &&
                   mix64(o->seed * 0x9e3779b97f4a7c15ULL ^ mix64(0xde1e7e00ULL + (uint64_t)p.user)) % 8 == 0;
    if (p.seq == 0) {
        p.type = MT_SIGNUP;
    } else if (deleter && p.seq == nu - 1) {
        p.type = MT_USER_DELETED;
    } else {
        uint64_t r = mix64(o->seed * 0x100000001b3ULL ^ mix64((uint64_t)i ^ 0x6d69786564ULL)) % 100;
        p.type = r < 45 ? MT_LOGIN : r < 70 ? MT_LOGOUT : r < 80 ? MT_PASSWORD_RESET
                                                              : MT_USER_UPDATED;
    }
    p.t_ms = SIGNUP_EPOCH_MS +
             (int64_t)((unsigned long long)i * (unsigned long long)o->days * DAY_MS /
                       (unsigned long long)o->n);
    return p;
}

/* The user's id, e-mail and the event's id. */
static void mixed_ids(const struct opts *o, const struct mplan *p, char *uid, size_t uid_sz,
                      char *email, size_t email_sz, char *id, size_t id_sz) {
    uint32_t s = (uint32_t)(o->seed & 0xffffffffu);
    unsigned long long u = (unsigned long long)p->user, i = (unsigned long long)p->i;
    if (p->keycloak) {
        snprintf(uid, uid_sz, "%08x-%04llx-4%03llx-b%03llx-%012llx", s, (u >> 40) & 0xffff,
                 (u >> 28) & 0xfff, (u >> 16) & 0xfff, u & 0xffffffffffffULL);
        snprintf(id, id_sz, "%08x-%04llx-4%03llx-a%03llx-%012llx", s, (i >> 40) & 0xffff,
                 (i >> 28) & 0xfff, (i >> 16) & 0xfff, i & 0xffffffffffffULL);
    } else {
        snprintf(uid, uid_sz, "auth0|6d%06x%016llx", s & 0xffffffu, u);
        snprintf(id, id_sz, "901%020llu%033llu", (unsigned long long)o->seed, i);
    }
    snprintf(email, email_sz, "mixed%lld.s%llu@example.com", p->user,
             (unsigned long long)o->seed);
}

/* Builds event p's record value (malloc'd; the caller frees); key = the user id. */
static char *build_mixed(const struct opts *o, const struct mplan *p, char *key, size_t key_sz) {
    char uid[96], email[128], id[96], iso[40], uname[64], seq[32];
    mixed_ids(o, p, uid, sizeof(uid), email, sizeof(email), id, sizeof(id));
    snprintf(key, key_sz, "%s", uid);
    snprintf(uname, sizeof(uname), "mixed%lld", p->user);
    snprintf(seq, sizeof(seq), "%lld", p->seq);
    json_t *v;
    if (p->keycloak) {
        v = json_pack("{s:s, s:s, s:s, s:I, s:s, s:s, s:n, s:s, s:{s:s, s:s, s:s, s:s}}",
                      "realmId", "7d1c4e2a-9b3f-4a6e-8c5d-0f1e2d3c4b5a", "clientId", "acme-web",
                      "id", id, "time", (json_int_t)p->t_ms, "type", mt_keycloak[p->type],
                      "userId", uid, "sessionId", "ipAddress", "198.51.100.61", "details",
                      "auth_method", "openid-connect", "email", email, "username", uname,
                      "usher_seq", seq);
    } else {
        iso8601(p->t_ms, iso, sizeof(iso));
        json_t *details = json_pack("{s:I}", "usher_seq", (json_int_t)p->seq);
        if (p->type == MT_SIGNUP)
            json_object_set_new(details, "body", json_pack("{s:s, s:s}", "email", email,
                                                           "connection",
                                                           "Username-Password-Authentication"));
        v = json_pack("{s:s, s:{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:s, s:s,"
                      " s:s, s:s, s:b}}",
                      "log_id", id, "data", "log_id", id, "date", iso, "type", mt_auth0[p->type],
                      "description", "", "connection", "Username-Password-Authentication",
                      "client_id", "Xq7Zp2LmN4vB8cD1eF3gH5jK6mN9pQ0r", "client_name",
                      "Acme Web (SPA)", "ip", "203.0.113.45", "user_agent",
                      "Chrome 124.0.0 / Mac OS X 10.15.7", "details", details, "user_id", uid,
                      "user_name", email, "hostname", "acme-prod.us.auth0.com", "tenant_name",
                      "acme-prod", "is_mobile", 0);
    }
    if (!v) die("building mixed event %lld failed", p->i);
    char *value = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(v);
    if (!value) die("json_dumps");
    return value;
}

/* Poison record j goes right before event (j + 1) * N / (P + 1). */
static long long poison_position(const struct opts *o, int j) {
    return (long long)(j + 1) * o->n / (o->n_poison + 1);
}

/* Prints the expectation of events [from, to): per-type totals and per-day counts, per-type
 * per-day distinct users, per-user event sequences ([id, type, seq] in produced order), the
 * number of new users (signups), and the poison records (with where they landed when they
 * were produced). */
static void print_mixed_expect(const struct opts *o, long long from, long long to,
                               const struct delivered *where, bool produced) {
    size_t words = (size_t)(o->users + 63) / 64;
    long long (*cnt)[366 * 4] = calloc(MT_COUNT, sizeof(*cnt));
    long long (*uu)[366 * 4] = calloc(MT_COUNT, sizeof(*uu));
    long long totals[MT_COUNT] = {0};
    uint64_t *seen = calloc((size_t)MT_COUNT * (size_t)o->days * words, sizeof(uint64_t));
    if (!cnt || !uu || !seen) die("out of memory");
    json_t *users = json_object(), *events = json_object(), *uniq = json_object();
    long long signups = 0;
    for (long long i = from; i < to; i++) {
        struct mplan p = mixed_plan(o, i);
        char uid[96], email[128], id[96];
        mixed_ids(o, &p, uid, sizeof(uid), email, sizeof(email), id, sizeof(id));
        long long d = (p.t_ms - SIGNUP_EPOCH_MS) / DAY_MS;
        uint64_t *bits = seen + ((size_t)p.type * (size_t)o->days + (size_t)d) * words;
        totals[p.type]++;
        cnt[p.type][d]++;
        if (!(bits[p.user / 64] & (1ULL << (p.user % 64)))) {
            bits[p.user / 64] |= 1ULL << (p.user % 64);
            uu[p.type][d]++;
        }
        signups += p.type == MT_SIGNUP;
        json_t *u = json_object_get(users, uid);
        if (!u) {
            u = json_pack("{s:s, s:I, s:[]}", "email", email, "user", (json_int_t)p.user,
                          "events");
            json_object_set_new(users, uid, u);
        }
        json_array_append_new(json_object_get(u, "events"),
                              json_pack("[s, s, I]", id, mt_names[p.type], (json_int_t)p.seq));
    }
    for (int t = 0; t < MT_COUNT; t++) {
        if (!totals[t]) continue;
        json_t *days = json_object(), *udays = json_object();
        for (long long d = 0; d < o->days; d++) {
            if (!cnt[t][d]) continue;
            char day[16];
            day_of(SIGNUP_EPOCH_MS + d * DAY_MS, day, sizeof(day));
            json_object_set_new(days, day, json_integer(cnt[t][d]));
            json_object_set_new(udays, day, json_integer(uu[t][d]));
        }
        json_object_set_new(events, mt_names[t],
                            json_pack("{s:I, s:o}", "total", (json_int_t)totals[t], "days", days));
        json_object_set_new(uniq, mt_names[t], udays);
    }
    json_t *poison = json_array();
    for (int j = 0; j < o->n_poison; j++) {
        long long pos = poison_position(o, j);
        if (pos < from || pos >= to) continue;
        size_t len = 0;
        char *value = slurp(o->poison[j], &len);
        unsigned char md[SHA256_DIGEST_LENGTH];
        char mdhex[2 * SHA256_DIGEST_LENGTH + 1], key[32];
        SHA256((const unsigned char *)value, len, md);
        hex(md, sizeof(md), mdhex);
        free(value);
        snprintf(key, sizeof(key), "poison-%d", j);
        json_t *e = json_pack("{s:s, s:s, s:s, s:I}", "file", o->poison[j], "key", key,
                              "sha256", mdhex, "before_event", (json_int_t)pos);
        if (produced) {
            json_object_set_new(e, "partition", json_integer(where[j].partition));
            json_object_set_new(e, "offset", json_integer((json_int_t)where[j].offset));
        }
        json_array_append_new(poison, e);
    }
    json_t *out = json_pack("{s:I, s:I, s:I, s:I, s:I, s:o, s:o, s:I, s:o, s:o}", "total",
                            (json_int_t)(to - from), "start", (json_int_t)from, "count",
                            (json_int_t)(to - from), "n", (json_int_t)o->n, "users",
                            (json_int_t)o->users, "events", events, "unique_users", uniq,
                            "new_users", (json_int_t)signups, "user_events", users, "poison",
                            poison);
    print_json_line(out);
    free(cnt);
    free(uu);
    free(seen);
}

/* Produces events [start, start+count) of the deterministic mix of N events (and the poison
 * records that fall into that range, each a file's exact bytes under key "poison-J") and
 * prints the expectation of what it produced (with --expect-only: of all N, producing
 * nothing). */
static int cmd_produce_mixed(const struct opts *o_in) {
    struct opts o = *o_in;
    long long from, to;
    produce_range(&o, &from, &to);
    for (int j = 0; j < o.n_poison; j++)
        if (access(o.poison[j], R_OK) != 0) die("%s: %s", o.poison[j], strerror(errno));
    struct delivered where[MAX_POISON];
    memset(where, 0, sizeof(where));
    if (!o.expect_only) {
        need(o.brokers, "-b BROKERS");
        rd_kafka_t *rk = make_producer(o.brokers, 0);
        long long produced = 0;
        for (long long i = from; i < to; i++) {
            for (int j = 0; j < o.n_poison; j++) {
                if (poison_position(&o, j) != i) continue;
                size_t len = 0;
                char *value = slurp(o.poison[j], &len), key[32];
                snprintf(key, sizeof(key), "poison-%d", j);
                /* A 0-byte file gives an empty (not NULL) value. */
                produce_one_tracked(rk, o.topic, key, strlen(key), value ? value : "", len, NULL,
                                    &where[j]);
                free(value);
                produced++;
            }
            struct mplan p = mixed_plan(&o, i);
            char key[128];
            char *value = build_mixed(&o, &p, key, sizeof(key));
            produce_one(rk, o.topic, key, strlen(key), value, strlen(value), NULL);
            free(value);
            produced++;
            rd_kafka_poll(rk, 0);
        }
        flush_and_check(rk, produced);
        rd_kafka_destroy(rk);
        for (int j = 0; j < o.n_poison; j++) {
            long long pos = poison_position(&o, j);
            if (pos >= from && pos < to && !where[j].done) die("no delivery report for poison %d", j);
        }
        fprintf(stderr, "usher-testkit: produced %lld mixed events [%lld, %lld) and %lld poison "
                "records to %s\n", to - from, from, to, produced - (to - from), o.topic);
    }
    print_mixed_expect(&o, from, to, where, !o.expect_only);
    return 0;
}

/* ------------------------------------------------------------------------------------- */

int main(int argc, char **argv) {
    if (argc < 2) usage();
    const char *cmd = argv[1];
    struct opts o;
    parse_opts(argc - 1, argv + 1, &o);
    if (!strcmp(cmd, "create-topic")) return cmd_create_topic(&o);
    if (!strcmp(cmd, "produce-signups")) return cmd_produce_signups(&o);
    if (!strcmp(cmd, "produce-mixed")) return cmd_produce_mixed(&o);
    if (!strcmp(cmd, "produce-file")) return cmd_produce_file(&o);
    if (!strcmp(cmd, "offsets")) return cmd_offsets(&o);
    if (!strcmp(cmd, "wait-offsets")) return cmd_wait_offsets(&o);
    if (!strcmp(cmd, "read-topic")) return cmd_read_topic(&o);
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        usage();
    }
    fprintf(stderr, "usher-testkit: unknown command '%s'\n", cmd);
    usage();
}
