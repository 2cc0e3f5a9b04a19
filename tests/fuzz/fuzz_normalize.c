/*
 * fuzz_normalize.c — libFuzzer target for usher_normalize (src/normalize.c).
 *
 * The whole input is the record value, so the fixtures are seeds as they are. Each input is
 * normalized twice:
 *
 *   1. plainly: default options, no headers, as a record on a topic without a default;
 *   2. with a variation chosen by a hash of the first bytes of the input: a Logto signing key
 *      with a correct, wrong or missing logto-signature-sha-256 header (or a header without a
 *      key), usher-event-type / source / tenant hints, a CloudEvents binary-mode ce_* header
 *      set, content-type / Svix / Standard-Webhooks headers that force a format, a topic with a
 *      [topic.NAME] default, extra type_map aliases, tight input limits, and one header whose
 *      value is the tail of the input (so the fuzzer controls header bytes too).
 *
 * Every header value is an exact-size heap copy without a terminating NUL, so AddressSanitizer
 * catches a read past value_len. After each call the batch is checked against the contract of
 * normalize.h and usher/event.h (a violation aborts, so libFuzzer keeps the input), then
 * released. Every event's raw JSON must be readable to its last byte and parse with jansson
 * (usher_event_raw): it is a piece of a text json_doc accepted.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "json_guard.h"
#include "normalize.h"

#define MAX_HEADERS 24
#define SIGNING_KEY "TEST-ONLY-signing-key-do-not-use-0000"

/* Dies with a message: libFuzzer records the input as a crash. */
#define CHECK(cond, ...)                                                                       \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "fuzz_normalize: contract violated: %s: ", #cond);                 \
            fprintf(stderr, __VA_ARGS__);                                                      \
            fputc('\n', stderr);                                                               \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

typedef struct hdrs {
    usher_header h[MAX_HEADERS];
    size_t n;
} hdrs;

/* Adds a header whose value is an exact-size heap copy of (v, n); v NULL = no value. */
static void hdr_add(hdrs *hs, const char *name, const void *v, size_t n)
{
    void *copy = NULL;

    if (hs->n == MAX_HEADERS)
        return;
    if (v != NULL) {
        copy = malloc(n ? n : 1);
        if (copy == NULL)
            abort();
        if (n)
            memcpy(copy, v, n);
    }
    hs->h[hs->n].name = name;
    hs->h[hs->n].value = copy;
    hs->h[hs->n].value_len = v ? n : 0;
    hs->n++;
}

static void hdr_str(hdrs *hs, const char *name, const char *s)
{
    hdr_add(hs, name, s, strlen(s));
}

static void hdrs_free(hdrs *hs)
{
    for (size_t i = 0; i < hs->n; i++)
        free((void *)hs->h[i].value);
    hs->n = 0;
}

/* FNV-1a over the first (up to) 16 bytes: the variation of an input. */
static uint64_t selector(const uint8_t *d, size_t n)
{
    uint64_t h = 1469598103934665603ull;

    for (size_t i = 0; i < n && i < 16; i++) {
        h ^= d[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* Takes k bits off *s. */
static unsigned bits(uint64_t *s, unsigned k)
{
    unsigned v = (unsigned)(*s & ((1u << k) - 1u));

    *s >>= k;
    return v;
}

static const char *const reasons[] = {
    "parse_error",        "schema_error",  "missing_user_id", "max_depth_exceeded",
    "message_too_large",  "too_many_members", "invalid_utf8", "empty_value",
    "null_value",         "field_too_long", "duplicate_key",  "trailing_data",
    "unrecognized_format", "ambiguous_format", "unsupported_event", "bad_signature",
    "not_an_event",
};

/* An optional event string: NULL or a non-empty, valid UTF-8 C string (usher/event.h:
 * "Absent strings are NULL, never ""."). Reading it all lets ASan check the memory. */
static void check_str(const char *what, size_t i, const char *s, int accepted)
{
    size_t n;

    if (s == NULL)
        return;
    n = strlen(s);
    if (!accepted)
        return;
    CHECK(n > 0, "event %zu: %s is \"\" (absent strings must be NULL)", i, what);
    CHECK(usher_utf8_valid_prefix(s, n) == n, "event %zu: %s is not valid UTF-8", i, what);
}

static void check_batch(int rc, const usher_batch *b, const usher_kafka_meta *meta,
                        const char *secret, const char *secret2)
{
    int accepted = rc == 0;

    CHECK(rc == 0 || rc == -1, "usher_normalize returned %d", rc);
    CHECK(memchr(b->detail, '\0', sizeof(b->detail)) != NULL, "detail is not NUL-terminated");
    if (accepted) {
        CHECK(b->reason == NULL, "accepted with reason %s", b->reason);
    } else {
        size_t k;
        CHECK(b->reason != NULL, "rejected without a reason");
        for (k = 0; k < sizeof(reasons) / sizeof(reasons[0]); k++)
            if (strcmp(b->reason, reasons[k]) == 0)
                break;
        CHECK(k < sizeof(reasons) / sizeof(reasons[0]), "undocumented reason '%s'", b->reason);
        CHECK(b->detail[0] != '\0', "reason %s without a detail", b->reason);
        if (secret != NULL)
            CHECK(strstr(b->detail, secret) == NULL, "the detail quotes the signing key");
        if (secret2 != NULL)
            CHECK(strstr(b->detail, secret2) == NULL, "the detail quotes the signature");
    }
    CHECK(b->count == 0 || b->events != NULL, "%zu events but no array", b->count);
    for (size_t i = 0; i < b->count; i++) {
        const usher_event *ev = &b->events[i];
        CHECK((int)ev->type >= 0 && ev->type < USHER_EVENT_TYPE_COUNT, "event %zu: type %d", i,
              (int)ev->type);
        CHECK(ev->kafka == meta, "event %zu: kafka does not point at the record's meta", i);
        CHECK(ev->index == i, "event %zu: index %u", i, ev->index);
        CHECK(ev->user.email_verified >= -1 && ev->user.email_verified <= 1,
              "event %zu: email_verified %d", i, ev->user.email_verified);
        if (accepted) {
            CHECK(ev->id != NULL, "event %zu: no id", i);
            CHECK(ev->source != NULL, "event %zu: no source", i);
        }
        check_str("id", i, ev->id, accepted);
        check_str("source", i, ev->source, accepted);
        check_str("source_type", i, ev->source_type, accepted);
        check_str("user.id", i, ev->user.id, accepted);
        check_str("user.email", i, ev->user.email, accepted);
        check_str("user.name", i, ev->user.name, accepted);
        check_str("user.username", i, ev->user.username, accepted);
        check_str("user.phone", i, ev->user.phone, accepted);
        check_str("tenant", i, ev->tenant, accepted);
        check_str("connection", i, ev->connection, accepted);
        check_str("client", i, ev->client, accepted);
        check_str("ip", i, ev->ip, accepted);
        check_str("user_agent", i, ev->user_agent, accepted);
        check_str("country", i, ev->country, accepted);
        CHECK(ev->raw_json != NULL && ev->raw_json_len > 0, "event %zu: no raw JSON", i);
        {
            json_t *raw = usher_event_raw(ev);
            CHECK(raw != NULL, "event %zu: jansson rejects its raw JSON", i);
            json_decref(raw);
        }
    }
}

static void run(const usher_norm_options *opt, const usher_kafka_meta *meta, const uint8_t *d,
                size_t n, const char *secret, const char *secret2)
{
    usher_batch b;
    int rc;

    memset(&b, 0xA5, sizeof(b)); /* usher_normalize must initialize all of it */
    rc = usher_normalize(opt, meta, d, n, &b);
    check_batch(rc, &b, meta, secret, secret2);
    usher_batch_release(&b);
    usher_batch_release(&b); /* released twice: the batch may be reused */
}

static const char *const hint_types[] = {
    "signup", "login", "logout", "password_reset", "user_updated", "user_deleted",
    "user_suspended", "unknown", "Signup", "", "bogus", "signup\xc3", "password_reset_requested",
    "this-is-not-a-canonical-type-and-it-is-longer-than-forty-bytes", "user_unsuspended",
    "login_failed",
};
static const char *const hint_sources[] = {
    "auth0-action/post-user-registration", "auth0-action/post-login",
    "auth0-action/post-change-password", "auth0-action/pre-user-registration",
};
static const char *const ce_types[] = {
    "user.created", "user.updated", "user.deleted", "com.example.identity.user.logged_out",
    "com.example.user.logged_in", "org.example.user.password_reset_requested", "user.sign_up",
    "com.example.session.created",
};
static const char *const tail_names[] = {
    "usher-event-type", "source", "tenant", "svix-id", "ce_id", "ce_type", "ce_time",
    "logto-signature-sha-256", "webhook-id", "ce_specversion", "content-type", "ce_source",
    "ce_subject", "ce_a0tenant", "ce_a0stream", "SOURCE",
};

static const usher_type_alias aliases[] = {
    {"com.example.user.logged_in", USHER_EVENT_LOGIN},
    {"user.created", USHER_EVENT_USER_UPDATED},
    {"ss", USHER_EVENT_LOGIN},
    {"PostSignIn", USHER_EVENT_SIGNUP},
    {"user.signed_up", USHER_EVENT_SIGNUP},
};
static const usher_topic_default topic_defaults[] = {
    {"auth0-post-login", USHER_EVENT_LOGIN},
    {"users", USHER_EVENT_USER_UPDATED},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    usher_norm_options opt;
    usher_kafka_meta meta;
    hdrs hs = {.n = 0};
    uint64_t s = selector(data, size);
    char sig_hex[72] = "";
    const char *secret2 = NULL;
    unsigned logto, hint, name_ix, ce, force, tail, tight, topic, dup;

    /* 1. plainly */
    usher_norm_options_init(&opt);
    memset(&meta, 0, sizeof(meta));
    meta.topic = "events";
    meta.partition = 0;
    meta.offset = 42;
    meta.timestamp_ms = 1700000000000;
    run(&opt, &meta, data, size, NULL, NULL);

    /* 2. with the variation the first bytes choose */
    logto = bits(&s, 2);
    hint = bits(&s, 2);
    name_ix = bits(&s, 4);
    ce = bits(&s, 3);
    force = bits(&s, 3);
    tail = bits(&s, 4);
    tight = bits(&s, 2);
    topic = bits(&s, 2);
    dup = bits(&s, 1);

    if (dup) /* a header without a value comes first: the first one found wins */
        hdr_add(&hs, hint ? "usher-event-type" : "ce_id", NULL, 0);
    if (logto == 1 || logto == 2)
        opt.logto_signing_key = SIGNING_KEY;
    if (logto == 1) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int maclen = 0;
        size_t off = 0;
        if (name_ix & 1) {
            memcpy(sig_hex, "sha256=", 7);
            off = 7;
        }
        if (HMAC(EVP_sha256(), SIGNING_KEY, (int)strlen(SIGNING_KEY), data, size, mac,
                 &maclen) == NULL)
            abort();
        for (unsigned i = 0; i < maclen; i++)
            snprintf(sig_hex + off + 2 * i, 3, (name_ix & 2) ? "%02X" : "%02x", mac[i]);
        hdr_str(&hs, "logto-signature-sha-256", sig_hex);
        secret2 = sig_hex + off;
    } else if (logto == 2 && (name_ix & 1)) {
        hdr_str(&hs, "Logto-Signature-SHA-256",
                "08439bce600d4fd1b09c18783846907f959d04209a8ec9680b71a27a3c2a48ab");
    } else if (logto == 3) {
        hdr_str(&hs, "logto-signature-sha-256", "not-a-signature");
    }
    if (hint & 1)
        hdr_str(&hs, (name_ix & 8) ? "USHER-EVENT-TYPE" : "usher-event-type",
                hint_types[name_ix]);
    if (hint & 2) {
        hdr_str(&hs, "source", hint_sources[name_ix & 3]);
        if (hint == 3)
            hdr_str(&hs, "tenant", "acme-fuzz");
    }
    if (ce & 1) {
        /* binary mode: three or four of the required attributes, plus optional ones */
        hdr_str(&hs, "ce_specversion", (ce & 2) ? "1.0" : "0.3");
        hdr_str(&hs, "ce_id", "evt_fuzz_0001");
        hdr_str(&hs, "ce_source", (ce & 4) ? "urn:auth0:acme.example.auth0.com"
                                            : "/idp/keycloak/realms/acme");
        if (!(ce == 1 && (name_ix & 4)))
            hdr_str(&hs, "ce_type", ce_types[name_ix & 7]);
        hdr_str(&hs, "ce_time", (name_ix & 1) ? "2024-04-02T09:40:02Z" : "yesterday");
        hdr_str(&hs, "ce_subject", "users/5c0f3b8e");
        if (ce & 4) {
            hdr_str(&hs, "ce_a0tenant", "acme");
            hdr_str(&hs, "ce_a0stream", "est_fuzz");
        }
    }
    switch (force) {
    case 1:
        hdr_str(&hs, "content-type", "application/cloudevents+json; charset=utf-8");
        break;
    case 2:
        hdr_str(&hs, "svix-id", "msg_fuzz");
        hdr_str(&hs, "svix-timestamp", "1700000000");
        hdr_str(&hs, "svix-signature", "v1,Zm9v");
        break;
    case 3:
        hdr_str(&hs, "webhook-id", "wh_fuzz");
        hdr_str(&hs, "webhook-timestamp", "1700000000");
        hdr_str(&hs, "webhook-signature", "v1,Zm9v");
        break;
    case 4:
        hdr_str(&hs, "content-type", "application/json");
        break;
    default:
        break;
    }
    if (tail != 0 && size > 0) {
        /* the last up to 64 bytes of the input become one header's value */
        size_t k = (size_t)(name_ix * 4 + tail) % 65;
        if (k > size)
            k = size;
        hdr_add(&hs, tail_names[tail], data + size - k, k);
    }
    if (tight == 1) {
        opt.max_value_bytes = 4096;
        opt.max_depth = 4;
        opt.max_members = 8;
    } else if (tight == 2) {
        opt.max_depth = 1;
        opt.max_members = 1;
    }
    opt.default_type = (usher_event_type)(name_ix % USHER_EVENT_TYPE_COUNT);
    if (topic & 1) {
        opt.topic_defaults = topic_defaults;
        opt.topic_default_count = sizeof(topic_defaults) / sizeof(topic_defaults[0]);
        opt.type_aliases = aliases;
        opt.type_alias_count = sizeof(aliases) / sizeof(aliases[0]);
    }
    meta.topic = (topic & 2) ? "auth0-post-login" : "users";
    meta.partition = (int32_t)(name_ix % 3);
    meta.offset = (int64_t)(s & 0xffff);
    meta.timestamp_ms = (tight == 3) ? -1 : 1712050802000;
    meta.key = size ? data : NULL; /* the key is the input's first bytes */
    meta.key_len = size < 16 ? size : 16;
    meta.headers = hs.h;
    meta.header_count = hs.n;
    /* The detail may quote the input (a source's own type name, say): look for the secrets
     * there only when the input does not carry them itself. */
    run(&opt, &meta, data, size,
        memmem(data, size, SIGNING_KEY, strlen(SIGNING_KEY)) ? NULL : SIGNING_KEY,
        secret2 && !memmem(data, size, secret2, strlen(secret2)) ? secret2 : NULL);
    hdrs_free(&hs);
    return 0;
}
