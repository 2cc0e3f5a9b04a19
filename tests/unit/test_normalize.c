/*
 * Unit tests for the normalizer: one test per file in tests/fixtures (valid and bad/), with the
 * values MANIFEST.md names, plus hints, signatures, ids and guard limits.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "normalize.h"

#ifndef USHER_FIXTURES_DIR
#error "USHER_FIXTURES_DIR must be defined"
#endif

#define E6 "auth0|65f1c2a9e4b0a1b2c3d4e5f6"
#define E7 "auth0|65f1c2a9e4b0a1b2c3d4e5f7"
#define ADA "ada.lovelace@example.com"
#define GRACE "grace.hopper@example.org"
#define KJ_ID "5c0f3b8e-2a4d-4e6f-8b1c-9d7e6f5a4b3c"
#define KJ_MAIL "katherine.johnson@example.com"
#define TEST_KEY "TEST-ONLY-signing-key-do-not-use-0000"
#define KAFKA_TS INT64_C(1700000000000)

/* One fixture loaded as a Kafka record: value bytes, optional headers, meta, result. */
typedef struct fx {
    char *value;
    size_t len;
    json_t *hroot;
    usher_header hdrs[16];
    usher_kafka_meta meta;
    usher_batch b;
    int rc;
} fx;

/* Reads a fixture file (relative to USHER_FIXTURES_DIR) into a malloc'd buffer. */
static char *read_fixture(const char *rel, size_t *len)
{
    char path[1024];
    FILE *f = NULL;
    char *buf = NULL;
    long n;

    snprintf(path, sizeof(path), "%s/%s", USHER_FIXTURES_DIR, rel);
    f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* Initializes f with meta (topic idp-user-events, ts KAFKA_TS) and no value. */
static void fx_init(fx *f)
{
    memset(f, 0, sizeof(*f));
    f->meta.topic = "idp-user-events";
    f->meta.partition = 3;
    f->meta.offset = 42;
    f->meta.timestamp_ms = KAFKA_TS;
    f->meta.headers = f->hdrs;
}

/* Appends one Kafka header (strings must outlive f). */
static void fx_header(fx *f, const char *name, const char *value)
{
    assert_true(f->meta.header_count < 16);
    f->hdrs[f->meta.header_count].name = name;
    f->hdrs[f->meta.header_count].value = value;
    f->hdrs[f->meta.header_count].value_len = value ? strlen(value) : 0;
    f->meta.header_count++;
}

/* Loads a value file and, if given, its *.headers.json ({"headers":[{key,value}]}). */
static void fx_load(fx *f, const char *rel, const char *headers_rel)
{
    fx_init(f);
    f->value = read_fixture(rel, &f->len);
    if (headers_rel != NULL) {
        size_t hl = 0, i;
        char *hb = read_fixture(headers_rel, &hl);
        json_t *h;
        f->hroot = json_loadb(hb, hl, 0, NULL);
        free(hb);
        assert_non_null(f->hroot);
        json_array_foreach(json_object_get(f->hroot, "headers"), i, h) {
            fx_header(f, json_string_value(json_object_get(h, "key")),
                      json_string_value(json_object_get(h, "value")));
        }
        assert_true(f->meta.header_count > 0);
    }
}

/* Normalizes f's value with opt (defaults when NULL). */
static int fx_run(fx *f, const usher_norm_options *opt)
{
    usher_norm_options d;

    if (opt == NULL) {
        usher_norm_options_init(&d);
        opt = &d;
    }
    f->rc = usher_normalize(opt, &f->meta, f->value, f->len, &f->b);
    return f->rc;
}

static void fx_free(fx *f)
{
    usher_batch_release(&f->b);
    free(f->value);
    json_decref(f->hroot);
}

/* Loads, normalizes with defaults, and asserts acceptance with n events. */
static void fx_ok(fx *f, const char *rel, const char *headers_rel, size_t n)
{
    fx_load(f, rel, headers_rel);
    fx_run(f, NULL);
    if (f->rc != 0)
        fail_msg("%s rejected: %s: %s", rel, f->b.reason, f->b.detail);
    assert_null(f->b.reason);
    assert_int_equal(f->b.count, n);
}

/* Loads, normalizes with opt, and asserts rejection with reason. */
static void fx_bad(fx *f, const char *rel, const usher_norm_options *opt, const char *reason)
{
    fx_load(f, rel, NULL);
    assert_int_equal(fx_run(f, opt), -1);
    assert_non_null(f->b.reason);
    if (strcmp(f->b.reason, reason) != 0)
        fail_msg("%s: expected %s, got %s: %s", rel, reason, f->b.reason, f->b.detail);
}

/* Asserts a nullable string equals want (NULL = absent). */
static void assert_str(const char *got, const char *want)
{
    if (want == NULL) {
        if (got != NULL)
            fail_msg("expected NULL, got \"%s\"", got);
        return;
    }
    if (got == NULL)
        fail_msg("expected \"%s\", got NULL", want);
    assert_string_equal(got, want);
}

/* Checks the fields every test names, and the invariants every event must satisfy. */
static void check_ev(const fx *f, size_t i, usher_event_type type, const char *source,
                     const char *uid, const char *email)
{
    const usher_event *e = &f->b.events[i];

    assert_true(i < f->b.count);
    if (e->type != type)
        fail_msg("event %zu: expected %s, got %s", i, usher_event_type_name(type),
                 usher_event_type_name(e->type));
    assert_str(e->source, source);
    assert_str(e->user.id, uid);
    assert_str(e->user.email, email);
    assert_int_equal(e->index, i);
    assert_ptr_equal(e->kafka, &f->meta);
    assert_non_null(e->id);
    assert_true(e->id[0] != '\0');
    assert_non_null(e->raw_json);
    assert_true(e->raw_json_len > 0);
}

/* ---- auth0-action ------------------------------------------------------------------------ */

static void test_auth0_action_user(void **state)
{
    fx f;
    (void)state;
    fx_ok(&f, "auth0-action/post-user-registration.user.json", NULL, 1);
    check_ev(&f, 0, USHER_EVENT_SIGNUP, "auth0", E6, ADA); /* default type = signup */
    assert_str(f.b.events[0].user.name, "Ada Lovelace");
    assert_str(f.b.events[0].user.username, "ada_l");
    assert_str(f.b.events[0].user.phone, "+15555550101");
    assert_int_equal(f.b.events[0].user.email_verified, 0);
    assert_int_equal(f.b.events[0].occurred_at_ms, INT64_C(1710321705118)); /* created_at */
    assert_int_equal(strlen(f.b.events[0].id), 32); /* digest: no source id */
    fx_free(&f);
}

static void test_auth0_action_user_no_hint_is_unsupported(void **state)
{
    fx f;
    usher_norm_options o;
    (void)state;
    usher_norm_options_init(&o);
    o.default_type = USHER_EVENT_UNKNOWN;
    fx_load(&f, "auth0-action/post-user-registration.user.json", NULL);
    assert_int_equal(fx_run(&f, &o), -1);
    assert_string_equal(f.b.reason, "unsupported_event");
    assert_int_equal(f.b.count, 1); /* kept for diagnostics */
    check_ev(&f, 0, USHER_EVENT_UNKNOWN, "auth0", E6, ADA);
    fx_free(&f);
}

static void test_auth0_action_user_double_encoded(void **state)
{
    fx f;
    (void)state;
    fx_ok(&f, "auth0-action/post-user-registration.user.double-encoded.json", NULL, 1);
    check_ev(&f, 0, USHER_EVENT_SIGNUP, "auth0", E6, ADA);
    assert_str(f.b.events[0].user.username, "ada_l");
    fx_free(&f);
}

static void test_double_encoded_twice_rejected(void **state)
{
    fx f;
    json_t *s;
    char *once, *twice;
    (void)state;
    fx_load(&f, "auth0-action/post-user-registration.user.double-encoded.json", NULL);
    s = json_loadb(f.value, f.len, JSON_DECODE_ANY, NULL);
    assert_non_null(s);
    once = json_dumps(s, JSON_ENCODE_ANY);
    json_decref(s);
    s = json_string(once);
    twice = json_dumps(s, JSON_ENCODE_ANY); /* a string holding a string holding the user */
    json_decref(s);
    free(once);
    free(f.value);
    f.value = twice;
    f.len = strlen(twice);
    assert_int_equal(fx_run(&f, NULL), -1);
    assert_string_equal(f.b.reason, "schema_error");
    assert_int_equal(f.b.count, 0);
    fx_free(&f);
}

static void test_auth0_action_full_registration(void **state)
{
    fx f;
    const usher_event *e;
    (void)state;
    fx_ok(&f, "auth0-action/post-user-registration.full-event.json", NULL, 1);
    check_ev(&f, 0, USHER_EVENT_SIGNUP, "auth0", E7, GRACE);
    e = &f.b.events[0];
    assert_str(e->source_type, "post-user-registration");
    assert_str(e->ip, "203.0.113.45");
    assert_str(e->tenant, "acme-prod");
    assert_str(e->connection, "Username-Password-Authentication");
    assert_str(e->country, "US");
    assert_null(e->client);
    assert_int_equal(e->user.email_verified, 0);
    assert_int_equal(e->occurred_at_ms, INT64_C(1710432131904));
    fx_free(&f);
}

static void test_auth0_action_full_login(void **state)
{
    fx f;
    json_t *raw = NULL;
    const usher_event *e;
    (void)state;
    fx_ok(&f, "auth0-action/post-login.full-event.json", NULL, 1);
    check_ev(&f, 0, USHER_EVENT_LOGIN, "auth0", E6, ADA);
    e = &f.b.events[0];
    assert_str(e->ip, "198.51.100.23");
    assert_str(e->client, "Xq7Zp2LmN4vB8cD1eF3gH5jK6mN9pQ0r");
    assert_str(e->tenant, "acme-prod");
    assert_int_equal(e->user.email_verified, 1);
    assert_int_equal(e->occurred_at_ms, INT64_C(1712045659007)); /* session.authenticated_at */
    /* stats.logins_count and the MFA method stay reachable through raw */
    raw = usher_event_raw(e);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(raw, "stats"),
                                                        "logins_count")),
                     17);
    json_decref(raw);
    fx_free(&f);
}

static void test_auth0_action_full_change_password(void **state)
{
    fx f;
    (void)state;
    fx_ok(&f, "auth0-action/post-change-password.full-event.json", NULL, 1);
    check_ev(&f, 0, USHER_EVENT_PASSWORD_RESET, "auth0", E7, GRACE);
    assert_str(f.b.events[0].ip, "192.0.2.10");
    assert_str(f.b.events[0].user.username, "ghopper");
    assert_int_equal(f.b.events[0].occurred_at_ms, INT64_C(1712320244210));
    fx_free(&f);
}

/* ---- upstash / hdinsight ----------------------------------------------------------------- */

static void test_upstash_produce_request(void **state)
{
    fx f;
    usher_norm_options o;
    (void)state;
    usher_norm_options_init(&o);
    o.default_type = USHER_EVENT_UNKNOWN; /* the type must come from the envelope header */
    fx_load(&f, "upstash-rest/produce-request.single.json", NULL);
    if (fx_run(&f, &o) != 0)
        fail_msg("%s: %s", f.b.reason, f.b.detail);
    assert_int_equal(f.b.count, 1);
    check_ev(&f, 0, USHER_EVENT_SIGNUP, "auth0", E6, ADA);
    assert_str(f.b.events[0].tenant, "acme-prod"); /* envelope header `tenant` */
    fx_free(&f);
}

static void test_upstash_produce_response(void **state)
{
    fx f;
    (void)state;
    fx_bad(&f, "upstash-rest/produce-response.json", NULL, "not_an_event");
    assert_int_equal(f.b.count, 0);
    fx_free(&f);
}

static void test_hdinsight_produce_request(void **state)
{
    fx f;
    (void)state;
    fx_ok(&f, "hdinsight-rest/produce-request.json", NULL, 2);
    check_ev(&f, 0, USHER_EVENT_SIGNUP, "auth0", E6, ADA);  /* object value, default hint */
    check_ev(&f, 1, USHER_EVENT_LOGIN, "logto", "a1l2a3n4t5u6", "alan.turing@example.com");
    assert_str(f.b.events[1].ip, "198.51.100.23");
    assert_string_not_equal(f.b.events[0].id, f.b.events[1].id);
    fx_free(&f);
}

/* ---- auth0 log streams ------------------------------------------------------------------- */

static void test_auth0_log_batch_ss(void **state)
{
    fx f;
    const usher_event *e;
    (void)state;
    fx_ok(&f, "auth0-logstream/batch-jsonarray.ss.json", NULL, 1);
    check_ev(&f, 0, USHER_EVENT_SIGNUP, "auth0_log", E6, ADA);
    e = &f.b.events[0];
    assert_str(e->id, "90020240402081400000100000000000000000000000000000000001");
    assert_str(e->source_type, "ss");
    assert_str(e->ip, "203.0.113.45");
    assert_str(e->tenant, "acme-prod");
    assert_str(e->connection, "Username-Password-Authentication");
    assert_str(e->client, "Xq7Zp2LmN4vB8cD1eF3gH5jK6mN9pQ0r");
    assert_str(e->user_agent, "Chrome 124.0.0 / Mac OS X 10.15.7");
    assert_int_equal(e->occurred_at_ms, INT64_C(1710321705301));
    assert_int_equal(f.b.ignored, 0);
    fx_free(&f);
}

static void test_auth0_log_batch_mixed(void **state)
{
    fx f;
    (void)state;
    fx_ok(&f, "auth0-logstream/batch-jsonarray.mixed.json", NULL, 5);
    check_ev(&f, 0, USHER_EVENT_LOGIN, "auth0_log", E6, ADA);
    check_ev(&f, 1, USHER_EVENT_LOGIN_FAILED, "auth0_log", E7, GRACE);
    check_ev(&f, 2, USHER_EVENT_LOGIN_FAILED, "auth0_log", NULL, "nobody.here@example.org");
    check_ev(&f, 3, USHER_EVENT_LOGIN_FAILED, "auth0_log", NULL, NULL);
    check_ev(&f, 4, USHER_EVENT_LOGOUT, "auth0_log", E6, ADA);
    assert_str(f.b.events[1].source_type, "fp");
    assert_str(f.b.events[2].source_type, "fu");
    assert_str(f.b.events[3].source_type, "f");
    assert_str(f.b.events[3].ip, "192.0.2.77");
    assert_null(f.b.events[3].connection);
    assert_str(f.b.events[4].id, "90020240404081400000300000000000000000000000000000000003");
    for (size_t i = 0; i < 5; i++)
        for (size_t j = i + 1; j < 5; j++)
            assert_string_not_equal(f.b.events[i].id, f.b.events[j].id);
    fx_free(&f);
}

static void test_auth0_log_jsonlines(void **state)
{
    fx f;
    (void)state;
    fx_ok(&f, "auth0-logstream/batch-jsonlines.ss-s.jsonl", NULL, 2);
    check_ev(&f, 0, USHER_EVENT_SIGNUP, "auth0_log", E6, ADA);
    check_ev(&f, 1, USHER_EVENT_LOGIN, "auth0_log", E6, ADA);
    assert_str(f.b.events[0].id, "90020240402081400000100000000000000000000000000000000001");
    assert_str(f.b.events[1].id, "90020240403081400000200000000000000000000000000000000002");
    assert_int_equal(f.b.events[1].occurred_at_ms, INT64_C(1712045659220));
    fx_free(&f);
}

static void test_auth0_log_single_login(void **state)
{
    fx f;
    json_t *raw = NULL;
    const usher_event *e;
    (void)state;
    fx_ok(&f, "auth0-logstream/single.s-login.json", NULL, 1);
    check_ev(&f, 0, USHER_EVENT_LOGIN, "auth0_log", E6, ADA);
    e = &f.b.events[0];
    assert_str(e->ip, "198.51.100.23");
    assert_int_equal(e->occurred_at_ms, INT64_C(1712045659220));
    raw = usher_event_raw(e);
    assert_string_equal(json_string_value(json_object_get(json_object_get(raw, "details"),
                                                          "session_id")),
                        "mGz3Ue0rQkF1y7bT4nW8sLpX2cVd9HaJ");
    json_decref(raw);
    fx_free(&f);
}

static void test_auth0_log_single_logout(void **state)
{
    fx f;
    json_t *raw = NULL;
    (void)state;
    fx_ok(&f, "auth0-logstream/single.slo-logout.json", NULL, 1);
    check_ev(&f, 0, USHER_EVENT_LOGOUT, "auth0_log", E6, ADA);
    raw = usher_event_raw(&f.b.events[0]);
    assert_string_equal(json_string_value(json_object_get(json_object_get(raw, "details"),
                                                          "session_id")),
                        "mGz3Ue0rQkF1y7bT4nW8sLpX2cVd9HaJ");
    json_decref(raw);
    fx_free(&f);
}

static void test_auth0_log_signup_failed(void **state)
{
    fx f;
    (void)state;
    fx_ok(&f, "auth0-logstream/single.fs-signup-failed.json", NULL, 1);
    check_ev(&f, 0, USHER_EVENT_SIGNUP_FAILED, "auth0_log", NULL, ADA);
    assert_str(f.b.events[0].ip, "203.0.113.9");
    assert_int_equal(f.b.events[0].occurred_at_ms, INT64_C(1712228400500));
    fx_free(&f);
}

static void test_auth0_log_password_changed(void **state)
{
    fx f;
    (void)state;
    fx_ok(&f, "auth0-logstream/single.scp-password-changed.json", NULL, 1);
    check_ev(&f, 0, USHER_EVENT_PASSWORD_RESET, "auth0_log", E7, GRACE);
    fx_free(&f);
}

static void test_auth0_log_user_deleted(void **state)
{
    fx f;
    (void)state;
    fx_ok(&f, "auth0-logstream/single.sdu-user-deleted.json", NULL, 1);
    check_ev(&f, 0, USHER_EVENT_USER_DELETED, "auth0_log", E7, GRACE);
    assert_str(f.b.events[0].ip, "198.51.100.200");
    fx_free(&f);
}

/* Normalizes an inline value with defaults. */
static int run_inline(fx *f, const char *json, const usher_norm_options *opt)
{
    fx_init(f);
    f->value = strdup(json);
    f->len = strlen(json);
    return fx_run(f, opt);
}

/* A digest id is a stable function of the event (the same bytes give the same id in every
 * version), also for a time before 1970. */
static void test_digest_id_is_stable(void **state)
{
    fx f;
    (void)state;
    assert_int_equal(run_inline(&f,
                                "{\"user_id\":\"auth0|pin\",\"created_at\":"
                                "\"2024-03-13T09:21:45.118Z\",\"email\":\"pin@example.com\"}",
                                NULL),
                     0);
    assert_str(f.b.events[0].id, "996e4bfebbb44a3341b9156123407eb1");
    fx_free(&f);
    assert_int_equal(run_inline(&f,
                                "{\"user_id\":\"auth0|pin\",\"created_at\":"
                                "\"1969-12-31T23:59:58.500Z\",\"email\":\"pin@example.com\"}",
                                NULL),
                     0);
    assert_int_equal(f.b.events[0].occurred_at_ms, -1500);
    assert_str(f.b.events[0].id, "34da161e03e202e17a97b3f46723f069");
    fx_free(&f);
}

static void test_auth0_log_ignored_and_unknown_codes(void **state)
{
    fx f;
    (void)state;
    /* ssa (silent auth) and a token exchange are dropped and counted; an unknown code does not
     * fail the batch. */
    assert_int_equal(
        run_inline(&f,
                   "[{\"log_id\":\"1\",\"data\":{\"type\":\"ssa\",\"user_id\":\"auth0|a\"}},"
                   "{\"log_id\":\"2\",\"data\":{\"type\":\"s\",\"user_id\":\"auth0|a\","
                   "\"date\":\"2024-04-02T10:14:19.5+02:00\"}},"
                   "{\"log_id\":\"3\",\"data\":{\"type\":\"zz_new_code\",\"user_id\":\"auth0|a\"}},"
                   "{\"log_id\":\"4\",\"data\":{\"type\":\"seacft\"}}]",
                   NULL),
        0);
    assert_int_equal(f.b.count, 2);
    assert_int_equal(f.b.ignored, 2);
    check_ev(&f, 0, USHER_EVENT_LOGIN, "auth0_log", "auth0|a", NULL);
    check_ev(&f, 1, USHER_EVENT_UNKNOWN, "auth0_log", "auth0|a", NULL);
    assert_int_equal(f.b.events[0].occurred_at_ms, INT64_C(1712045659500)); /* +02:00 offset */
    assert_int_equal(f.b.events[0].occurred_at_ms % 1000, 500);
    fx_free(&f);

    /* only ignorable: accepted with no events */
    assert_int_equal(run_inline(&f, "{\"log_id\":\"9\",\"data\":{\"type\":\"ssa\"}}", NULL), 0);
    assert_int_equal(f.b.count, 0);
    assert_int_equal(f.b.ignored, 1);
    fx_free(&f);
}

static void test_auth0_log_sapi(void **state)
{
    fx f;
    (void)state;
    assert_int_equal(
        run_inline(&f,
                   "[{\"log_id\":\"1\",\"data\":{\"type\":\"sapi\",\"user_id\":\"admin\","
                   "\"details\":{\"request\":{\"method\":\"delete\",\"path\":"
                   "\"/api/v2/users/auth0%7Cabc\"}}}},"
                   "{\"log_id\":\"2\",\"data\":{\"type\":\"sapi\",\"details\":{\"request\":"
                   "{\"method\":\"patch\",\"path\":\"/api/v2/users/auth0%7Cabc\","
                   "\"body\":{\"blocked\":true}}}}},"
                   "{\"log_id\":\"3\",\"data\":{\"type\":\"sapi\",\"details\":{\"request\":"
                   "{\"method\":\"patch\",\"path\":\"/api/v2/clients/x\"}}}}]",
                   NULL),
        0);
    assert_int_equal(f.b.count, 2);
    assert_int_equal(f.b.ignored, 1);
    check_ev(&f, 0, USHER_EVENT_USER_DELETED, "auth0_log", "auth0|abc", NULL);
    check_ev(&f, 1, USHER_EVENT_USER_SUSPENDED, "auth0_log", "auth0|abc", NULL);
    fx_free(&f);
}

/* ---- logto ------------------------------------------------------------------------------- */

static void test_logto_post_register(void **state)
{
    fx f;
    (void)state;
    fx_ok(&f, "logto/post-register.json", NULL, 1);
    check_ev(&f, 0, USHER_EVENT_SIGNUP, "logto", "u7k2m9x4p1q8", ADA);
    assert_str(f.b.events[0].ip, "203.0.113.45");
    assert_str(f.b.events[0].source_type, "PostRegister");
    assert_str(f.b.events[0].client, "k3v9q2m7x1z8c4b6");
    assert_int_equal(f.b.events[0].occurred_at_ms, INT64_C(1710321705260));
    assert_int_equal(strlen(f.b.events[0].id), 32);
    fx_free(&f);
}

static void test_logto_post_sign_in(void **state)
{
    fx f;
    (void)state;
    fx_ok(&f, "logto/post-sign-in.json", "logto/post-sign-in.headers.json", 1);
    check_ev(&f, 0, USHER_EVENT_LOGIN, "logto", "a1l2a3n4t5u6", "alan.turing@example.com");
    assert_str(f.b.events[0].ip, "198.51.100.23");
    assert_null(f.b.events[0].user.username); /* null in the payload */
    fx_free(&f);
}

static void test_logto_post_reset_password(void **state)
{
    fx f;
    (void)state;
    fx_ok(&f, "logto/post-reset-password.json", NULL, 1);
    check_ev(&f, 0, USHER_EVENT_PASSWORD_RESET, "logto", "g9r8a7c6e5h4", GRACE);
    assert_str(f.b.events[0].ip, "2001:db8::1f");
    fx_free(&f);
}

static void test_logto_user_created(void **state)
{
    fx f;
    (void)state;
    fx_ok(&f, "logto/user-created.management-api.json", NULL, 1);
    check_ev(&f, 0, USHER_EVENT_SIGNUP, "logto", "n3w4u5s6e7r8", "bob.builder@example.org");
    assert_str(f.b.events[0].ip, "198.51.100.200");
    assert_str(f.b.events[0].user.username, "bob_admin_created");
    fx_free(&f);
}

static void test_logto_user_data_updated(void **state)
{
    fx f;
    (void)state;
    fx_ok(&f, "logto/user-data-updated.profile.json", NULL, 1);
    check_ev(&f, 0, USHER_EVENT_USER_UPDATED, "logto", "u7k2m9x4p1q8", "ada.king@example.com");
    fx_free(&f);
}

static void test_logto_user_deleted(void **state)
{
    fx f;
    (void)state;
    fx_ok(&f, "logto/user-deleted.docs-shape-data-null.json", NULL, 1);
    check_ev(&f, 0, USHER_EVENT_USER_DELETED, "logto", "n3w4u5s6e7r8", NULL);
    fx_free(&f);
}

static void test_logto_user_suspended(void **state)
{
    fx f;
    (void)state;
    fx_ok(&f, "logto/user-suspension-status-updated.suspended.json", NULL, 1);
    check_ev(&f, 0, USHER_EVENT_USER_SUSPENDED, "logto", "a1l2a3n4t5u6",
             "alan.turing@example.com");
    fx_free(&f);
}

static void test_logto_signature_good(void **state)
{
    fx f;
    usher_norm_options o;
    (void)state;
    usher_norm_options_init(&o);
    o.logto_signing_key = TEST_KEY;
    fx_load(&f, "logto/post-sign-in.json", "logto/post-sign-in.headers.json");
    if (fx_run(&f, &o) != 0)
        fail_msg("%s: %s", f.b.reason, f.b.detail);
    check_ev(&f, 0, USHER_EVENT_LOGIN, "logto", "a1l2a3n4t5u6", "alan.turing@example.com");
    fx_free(&f);
}

static void test_logto_signature_sha256_prefix(void **state)
{
    fx f;
    usher_norm_options o;
    static char sig[80];
    (void)state;
    usher_norm_options_init(&o);
    o.logto_signing_key = TEST_KEY;
    fx_load(&f, "logto/post-sign-in.json", "logto/post-sign-in.headers.json");
    snprintf(sig, sizeof(sig), "sha256=%s", (const char *)f.hdrs[0].value);
    f.hdrs[0].value = sig;
    f.hdrs[0].value_len = strlen(sig);
    assert_int_equal(fx_run(&f, &o), 0);
    assert_int_equal(f.b.count, 1);
    fx_free(&f);
}

static void test_logto_signature_tampered(void **state)
{
    fx f;
    usher_norm_options o;
    char *p;
    (void)state;
    usher_norm_options_init(&o);
    o.logto_signing_key = TEST_KEY;
    fx_load(&f, "logto/post-sign-in.json", "logto/post-sign-in.headers.json");
    p = strstr(f.value, "a1l2a3n4t5u6");
    assert_non_null(p);
    p[0] = 'b'; /* same length, different user */
    assert_int_equal(fx_run(&f, &o), -1);
    assert_string_equal(f.b.reason, "bad_signature");
    assert_null(strstr(f.b.detail, "08439bce")); /* no signature bytes in the detail */
    assert_null(strstr(f.b.detail, TEST_KEY));
    assert_int_equal(f.b.count, 0);
    fx_free(&f);
}

static void test_logto_signature_wrong_key(void **state)
{
    fx f;
    usher_norm_options o;
    (void)state;
    usher_norm_options_init(&o);
    o.logto_signing_key = "another-key";
    fx_load(&f, "logto/post-sign-in.json", "logto/post-sign-in.headers.json");
    assert_int_equal(fx_run(&f, &o), -1);
    assert_string_equal(f.b.reason, "bad_signature");
    fx_free(&f);
}

static void test_logto_signature_missing(void **state)
{
    fx f;
    usher_norm_options o;
    (void)state;
    usher_norm_options_init(&o);
    o.logto_signing_key = TEST_KEY;
    fx_load(&f, "logto/post-register.json", NULL);
    assert_int_equal(fx_run(&f, &o), -1);
    assert_string_equal(f.b.reason, "bad_signature");
    assert_non_null(strstr(f.b.detail, "missing"));
    fx_free(&f);
}

/* ---- cloudevents ------------------------------------------------------------------------- */

static void test_ce_auth0_event_stream(void **state)
{
    fx f;
    const usher_event *e;
    (void)state;
    fx_ok(&f, "cloudevents/structured.auth0-event-stream.user-created.json", NULL, 1);
    check_ev(&f, 0, USHER_EVENT_SIGNUP, "auth0_events", E6, ADA);
    e = &f.b.events[0];
    assert_str(e->id, "evt_3kQ9mB7xT2vN5pLr");
    assert_str(e->source_type, "user.created");
    assert_str(e->tenant, "acme-prod");
    assert_int_equal(e->occurred_at_ms, INT64_C(1710321705400));
    fx_free(&f);
}

static void test_ce_generic_logged_in(void **state)
{
    fx f;
    const usher_event *e;
    (void)state;
    fx_ok(&f, "cloudevents/structured.generic.user-logged-in.json", NULL, 1);
    check_ev(&f, 0, USHER_EVENT_LOGIN, "cloudevents", KJ_ID, KJ_MAIL);
    e = &f.b.events[0];
    assert_str(e->id, "6f1b0c9e-8d7a-4c3b-9a2f-1e0d9c8b7a65");
    assert_str(e->ip, "198.51.100.61");
    assert_int_equal(e->occurred_at_ms, INT64_C(1712045659000));
    fx_free(&f);
}

static void test_ce_type_alias(void **state)
{
    fx f;
    usher_norm_options o;
    static const usher_type_alias aliases[] = {
        {"com.example.identity.user.logged_in", USHER_EVENT_USER_UPDATED},
    };
    (void)state;
    usher_norm_options_init(&o);
    o.type_aliases = aliases;
    o.type_alias_count = 1;
    fx_load(&f, "cloudevents/structured.generic.user-logged-in.json", NULL);
    assert_int_equal(fx_run(&f, &o), 0);
    check_ev(&f, 0, USHER_EVENT_USER_UPDATED, "cloudevents", KJ_ID, KJ_MAIL);
    fx_free(&f);
}

static void test_ce_binary(void **state)
{
    fx f;
    (void)state;
    fx_ok(&f, "cloudevents/binary.user-logged-out.value.json",
          "cloudevents/binary.user-logged-out.headers.json", 1);
    check_ev(&f, 0, USHER_EVENT_LOGOUT, "cloudevents", KJ_ID, KJ_MAIL);
    assert_str(f.b.events[0].id, "d4c3b2a1-0f9e-8d7c-6b5a-493827160514");
    assert_str(f.b.events[0].source_type, "com.example.identity.user.logged_out");
    assert_str(f.b.events[0].ip, "198.51.100.61");
    assert_int_equal(f.b.events[0].occurred_at_ms, INT64_C(1712050802000));
    fx_free(&f);
}

static void test_ce_binary_value_without_headers(void **state)
{
    fx f;
    (void)state;
    fx_bad(&f, "cloudevents/binary.user-logged-out.value.json", NULL, "unrecognized_format");
    fx_free(&f);
}

/* ---- clerk / keycloak / supabase --------------------------------------------------------- */

static void test_clerk_user_created(void **state)
{
    fx f;
    const usher_event *e;
    (void)state;
    fx_ok(&f, "clerk/user-created.json", NULL, 1);
    check_ev(&f, 0, USHER_EVENT_SIGNUP, "clerk", "user_2fQx7JmK3pLr9TnB1vWc8YdZ0aE",
             "mary.jackson@example.com");
    e = &f.b.events[0];
    assert_int_equal(e->user.email_verified, 1);
    assert_str(e->user.name, "Mary Jackson");
    assert_str(e->ip, "203.0.113.88");
    assert_int_equal(e->occurred_at_ms, INT64_C(1710321705200));
    fx_free(&f);
}

static void test_clerk_session_created(void **state)
{
    fx f;
    (void)state;
    fx_init(&f);
    f.value = read_fixture("clerk/session-created.json", &f.len);
    fx_header(&f, "svix-id", "msg_2fQxSvixId0001");
    fx_header(&f, "svix-timestamp", "1712045659");
    fx_header(&f, "svix-signature", "v1,AAAA");
    assert_int_equal(fx_run(&f, NULL), 0);
    assert_int_equal(f.b.count, 1);
    check_ev(&f, 0, USHER_EVENT_LOGIN, "clerk", "user_2fQx7JmK3pLr9TnB1vWc8YdZ0aE", NULL);
    assert_str(f.b.events[0].ip, "198.51.100.23");
    assert_str(f.b.events[0].id, "msg_2fQxSvixId0001");
    assert_int_equal(f.b.events[0].occurred_at_ms, INT64_C(1712045659100));
    fx_free(&f);
}

static void test_keycloak_register(void **state)
{
    fx f;
    (void)state;
    fx_ok(&f, "keycloak/event.register.json", NULL, 1);
    check_ev(&f, 0, USHER_EVENT_SIGNUP, "keycloak", KJ_ID, KJ_MAIL);
    assert_str(f.b.events[0].id, "e1a2b3c4-d5e6-4f70-8192-a3b4c5d6e7f8");
    assert_str(f.b.events[0].ip, "203.0.113.45");
    assert_int_equal(f.b.events[0].occurred_at_ms, INT64_C(1710321705118));
    fx_free(&f);
}

static void test_keycloak_login(void **state)
{
    fx f;
    (void)state;
    fx_ok(&f, "keycloak/event.login.json", NULL, 1);
    check_ev(&f, 0, USHER_EVENT_LOGIN, "keycloak", KJ_ID, NULL);
    assert_str(f.b.events[0].user.username, "kjohnson");
    assert_str(f.b.events[0].client, "acme-web");
    fx_free(&f);
}

static void test_keycloak_admin_delete_user(void **state)
{
    fx f;
    (void)state;
    fx_ok(&f, "keycloak/admin-event.delete-user.json", NULL, 1);
    check_ev(&f, 0, USHER_EVENT_USER_DELETED, "keycloak_admin", KJ_ID, NULL);
    assert_int_equal(f.b.events[0].occurred_at_ms, INT64_C(1713635112000));
    fx_free(&f);
}

static void test_supabase_send_email_signup(void **state)
{
    fx f;
    (void)state;
    fx_ok(&f, "supabase/send-email-hook.signup.json", NULL, 1);
    check_ev(&f, 0, USHER_EVENT_SIGNUP, "supabase", "3f6c2a1e-9b8d-4c7e-a5f4-0d1e2c3b4a59",
             "dorothy.vaughan@example.com");
    assert_null(f.b.events[0].user.phone); /* "" becomes NULL */
    assert_int_equal(f.b.events[0].user.email_verified, 0);
    assert_int_equal(f.b.events[0].occurred_at_ms, INT64_C(1715691393821));
    fx_free(&f);
}

/* ---- bad/ -------------------------------------------------------------------------------- */

static void test_bad_01_truncated(void **state)
{
    fx f;
    (void)state;
    fx_bad(&f, "bad/01-truncated.json", NULL, "parse_error");
    assert_non_null(strstr(f.b.detail, "unexpected end of input"));
    fx_free(&f);
}

static void test_bad_02_wrong_types(void **state)
{
    fx f;
    (void)state;
    fx_bad(&f, "bad/02-wrong-types.logto.json", NULL, "schema_error");
    assert_string_equal(f.b.detail, "hookId: expected string, got integer");
    assert_int_equal(f.b.count, 0);
    fx_free(&f);
}

static void test_bad_03_missing_user_id(void **state)
{
    fx f;
    (void)state;
    fx_bad(&f, "bad/03-missing-user-id.auth0-user.json", NULL, "missing_user_id");
    assert_int_equal(f.b.count, 0);
    fx_free(&f);
}

static void test_bad_05_deep_nesting(void **state)
{
    fx f;
    (void)state;
    fx_bad(&f, "bad/05-deep-nesting-100k.json", NULL, "max_depth_exceeded");
    fx_free(&f);
}

static void test_bad_06_huge_wide_object(void **state)
{
    fx f;
    usher_norm_options o;
    (void)state;
    fx_bad(&f, "bad/06-huge-wide-object.json", NULL, "message_too_large");
    fx_free(&f);
    usher_norm_options_init(&o);
    o.max_value_bytes = 8u << 20; /* past the size limit, the member limit catches it */
    fx_bad(&f, "bad/06-huge-wide-object.json", &o, "too_many_members");
    fx_free(&f);
}

static void test_bad_07_invalid_utf8(void **state)
{
    fx f;
    (void)state;
    fx_bad(&f, "bad/07-invalid-utf8.json", NULL, "invalid_utf8");
    assert_non_null(strstr(f.b.detail, "byte offset 56")); /* C3 28 */
    fx_free(&f);
}

static void test_bad_09_empty(void **state)
{
    fx f;
    (void)state;
    fx_bad(&f, "bad/09-empty.json", NULL, "empty_value");
    fx_free(&f);
}

static void test_tombstone(void **state)
{
    usher_batch b;
    usher_norm_options o;
    usher_kafka_meta m;
    (void)state;
    memset(&m, 0, sizeof(m));
    m.timestamp_ms = -1;
    usher_norm_options_init(&o);
    assert_int_equal(usher_normalize(&o, &m, NULL, 0, &b), -1);
    assert_string_equal(b.reason, "empty_value");
    assert_int_equal(b.count, 0);
    usher_batch_release(&b);
    assert_int_equal(usher_normalize(&o, &m, " \n\t", 3, &b), -1);
    assert_string_equal(b.reason, "empty_value");
    usher_batch_release(&b);
}

static void test_bad_10_null(void **state)
{
    fx f;
    (void)state;
    fx_bad(&f, "bad/10-null.json", NULL, "null_value");
    fx_free(&f);
}

static void test_bad_12_2mb_email(void **state)
{
    fx f;
    usher_norm_options o;
    (void)state;
    fx_bad(&f, "bad/12-2mb-email.json", NULL, "message_too_large"); /* default 1 MiB */
    fx_free(&f);
    usher_norm_options_init(&o);
    o.max_value_bytes = 4u << 20;
    fx_bad(&f, "bad/12-2mb-email.json", &o, "field_too_long");
    fx_free(&f);
    /* 65-octet local part, total well under 254 */
    assert_int_equal(
        run_inline(&f,
                   "{\"user_id\":\"auth0|x\",\"created_at\":\"2024-01-01T00:00:00Z\",\"email\":"
                   "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@x.example\"}",
                   NULL),
        -1);
    assert_string_equal(f.b.reason, "field_too_long");
    fx_free(&f);
}

static void test_bad_13_duplicate_keys(void **state)
{
    fx f;
    (void)state;
    fx_bad(&f, "bad/13-duplicate-keys.json", NULL, "duplicate_key");
    assert_int_equal(f.b.count, 0);
    fx_free(&f);
}

static void test_bad_15_unknown_event_type(void **state)
{
    fx f;
    (void)state;
    fx_bad(&f, "bad/15-unknown-event-type.logto.json", NULL, "unsupported_event");
    assert_int_equal(f.b.count, 1);
    check_ev(&f, 0, USHER_EVENT_UNKNOWN, "logto", "u7k2m9x4p1q8", ADA);
    assert_str(f.b.events[0].source_type, "User.Teleported");
    fx_free(&f);
}

static void test_bad_17_unicode_idn_emails(void **state)
{
    fx f;
    (void)state;
    fx_ok(&f, "bad/17-unicode-idn-emails.json", NULL, 1);
    check_ev(&f, 0, USHER_EVENT_SIGNUP, "auth0", "auth0|65f1c2a9e4b0a1b2c3d4e601",
             "jos\xc3\xa9.m\xc3\xbcller@b\xc3\xbc" "cher.example");
    assert_str(f.b.events[0].user.name, "Jos\xc3\xa9 M\xc3\xbcller \xf0\x9f\x98\x80");
    fx_free(&f);
}

static void test_bad_18_nul_bytes(void **state)
{
    fx f;
    (void)state;
    /* Decision: an escaped NUL is rejected as parse_error by the pre-scan (it would truncate a
     * C string); it comes before the raw 0x00 in this file. */
    fx_bad(&f, "bad/18-nul-bytes.json", NULL, "parse_error");
    assert_non_null(strstr(f.b.detail, "\\u0000"));
    fx_free(&f);
    /* a raw control character alone is parse_error as well */
    assert_int_equal(run_inline(&f, "{\"user_id\":\"a\x01" "b\"}", NULL), -1);
    assert_string_equal(f.b.reason, "parse_error");
    assert_non_null(strstr(f.b.detail, "control character"));
    fx_free(&f);
}

static void test_bad_20_trailing_garbage(void **state)
{
    fx f;
    (void)state;
    fx_bad(&f, "bad/20-trailing-garbage.json", NULL, "trailing_data");
    assert_int_equal(f.b.count, 0); /* nothing half-built */
    fx_free(&f);
    /* JSON Lines with a broken second line: the whole record is rejected, no events */
    assert_int_equal(run_inline(&f, "{\"log_id\":\"1\",\"data\":{\"type\":\"s\"}}\n"
                                    "{\"log_id\":\"2\",\"data\":{\"type\":\"s\",}}\n",
                                NULL),
                     -1);
    assert_string_equal(f.b.reason, "parse_error");
    assert_non_null(strstr(f.b.detail, "line 2"));
    assert_int_equal(f.b.count, 0);
    fx_free(&f);
    /* two documents on one line are not JSON Lines either */
    assert_int_equal(run_inline(&f, "{\"log_id\":\"1\",\"data\":{\"type\":\"s\"}} "
                                    "{\"log_id\":\"2\",\"data\":{\"type\":\"s\"}}",
                                NULL),
                     -1);
    assert_string_equal(f.b.reason, "trailing_data");
    fx_free(&f);
}

static void test_bad_22_nan_infinity(void **state)
{
    fx f;
    (void)state;
    fx_bad(&f, "bad/22-nan-infinity-literals.json", NULL, "parse_error");
    fx_free(&f);
}

static void test_bad_24_cloudevent_missing_required(void **state)
{
    fx f;
    (void)state;
    fx_bad(&f, "bad/24-cloudevent-missing-required.json", NULL, "schema_error");
    assert_string_equal(f.b.detail, "missing id, source");
    fx_free(&f);
}

/* ---- hints, ids, misc -------------------------------------------------------------------- */

static void test_hint_topic_default(void **state)
{
    fx f;
    usher_norm_options o;
    static const usher_topic_default defs[] = {
        {"other-topic", USHER_EVENT_LOGOUT},
        {"idp-user-events", USHER_EVENT_LOGIN},
    };
    (void)state;
    usher_norm_options_init(&o);
    o.topic_defaults = defs;
    o.topic_default_count = 2;
    fx_load(&f, "auth0-action/post-user-registration.user.json", NULL);
    assert_int_equal(fx_run(&f, &o), 0);
    check_ev(&f, 0, USHER_EVENT_LOGIN, "auth0", E6, ADA);
    fx_free(&f);
}

static void test_hint_usher_event_type_header(void **state)
{
    fx f;
    usher_norm_options o;
    static const usher_topic_default defs[] = {{"idp-user-events", USHER_EVENT_LOGIN}};
    (void)state;
    usher_norm_options_init(&o);
    o.topic_defaults = defs; /* the header outranks the topic default */
    o.topic_default_count = 1;
    fx_load(&f, "auth0-action/post-user-registration.user.json", NULL);
    fx_header(&f, "usher-event-type", "user_deleted");
    assert_int_equal(fx_run(&f, &o), 0);
    check_ev(&f, 0, USHER_EVENT_USER_DELETED, "auth0", E6, ADA);
    fx_free(&f);

    fx_load(&f, "auth0-action/post-user-registration.user.json", NULL);
    fx_header(&f, "source", "auth0-action/post-change-password");
    assert_int_equal(fx_run(&f, &o), 0);
    check_ev(&f, 0, USHER_EVENT_PASSWORD_RESET, "auth0", E6, ADA);
    fx_free(&f);

    fx_load(&f, "auth0-action/post-user-registration.user.json", NULL);
    fx_header(&f, "usher-event-type", "teleported");
    assert_int_equal(fx_run(&f, &o), -1);
    assert_string_equal(f.b.reason, "schema_error");
    fx_free(&f);
}

static void test_ids_stable_and_distinct(void **state)
{
    fx a, b;
    (void)state;
    fx_ok(&a, "hdinsight-rest/produce-request.json", NULL, 2);
    fx_ok(&b, "hdinsight-rest/produce-request.json", NULL, 2);
    for (size_t i = 0; i < 2; i++)
        assert_string_equal(a.b.events[i].id, b.b.events[i].id);
    assert_string_not_equal(a.b.events[0].id, a.b.events[1].id);
    fx_free(&a);
    fx_free(&b);

    /* two identical bare users in one envelope still get distinct digests */
    assert_int_equal(run_inline(&a,
                                "{\"records\":[{\"value\":{\"user_id\":\"auth0|z\"}},"
                                "{\"value\":{\"user_id\":\"auth0|z\"}}]}",
                                NULL),
                     0);
    assert_int_equal(a.b.count, 2);
    assert_string_not_equal(a.b.events[0].id, a.b.events[1].id);
    assert_int_equal(a.b.events[0].occurred_at_ms, KAFKA_TS); /* no time: Kafka timestamp */
    fx_free(&a);

    fx_ok(&a, "logto/post-register.json", NULL, 1);
    fx_ok(&b, "logto/post-register.json", NULL, 1);
    assert_string_equal(a.b.events[0].id, b.b.events[0].id);
    fx_free(&a);
    fx_free(&b);
}

static void test_ambiguous_and_unrecognized(void **state)
{
    fx f;
    (void)state;
    assert_int_equal(run_inline(&f,
                                "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"s\","
                                "\"type\":\"t\",\"hookId\":\"h\",\"event\":\"PostSignIn\"}",
                                NULL),
                     -1);
    assert_string_equal(f.b.reason, "ambiguous_format");
    fx_free(&f);
    assert_int_equal(run_inline(&f, "{\"hello\":\"world\"}", NULL), -1);
    assert_string_equal(f.b.reason, "unrecognized_format");
    fx_free(&f);
    assert_int_equal(run_inline(&f, "42", NULL), -1);
    assert_string_equal(f.b.reason, "unrecognized_format");
    fx_free(&f);
}

static void test_guard_limits(void **state)
{
    fx f;
    usher_norm_options o;
    (void)state;
    usher_norm_options_init(&o);
    o.max_depth = 3;
    assert_int_equal(run_inline(&f, "{\"user_id\":\"auth0|d\",\"a\":[[1]]}", &o), 0);
    fx_free(&f);
    assert_int_equal(run_inline(&f, "{\"user_id\":\"auth0|d\",\"a\":[[[1]]]}", &o), -1);
    assert_string_equal(f.b.reason, "max_depth_exceeded");
    fx_free(&f);
    /* brackets inside strings do not count */
    assert_int_equal(run_inline(&f, "{\"user_id\":\"auth0|d\",\"a\":\"[[[[[{{{{\"}", &o), 0);
    fx_free(&f);
    usher_norm_options_init(&o);
    o.max_members = 3;
    assert_int_equal(run_inline(&f, "{\"user_id\":\"auth0|d\",\"a\":[1,2,3]}", &o), 0);
    fx_free(&f);
    assert_int_equal(run_inline(&f, "{\"user_id\":\"auth0|d\",\"a\":[1,2,3,4]}", &o), -1);
    assert_string_equal(f.b.reason, "too_many_members");
    fx_free(&f);
    /* JSON Lines count as members too: three lines pass, a fourth is one too many */
    assert_int_equal(run_inline(&f, "{\"user_id\":\"auth0|d\"}\n{\"user_id\":\"auth0|e\"}\n"
                                    "{\"user_id\":\"auth0|f\"}\n", &o), 0);
    assert_int_equal(f.b.count, 3);
    fx_free(&f);
    assert_int_equal(run_inline(&f, "{\"user_id\":\"auth0|d\"}\n{\"user_id\":\"auth0|e\"}\n"
                                    "{\"user_id\":\"auth0|f\"}\n{\"user_id\":\"auth0|g\"}", &o), -1);
    assert_string_equal(f.b.reason, "too_many_members");
    assert_non_null(strstr(f.b.detail, "JSON lines"));
    fx_free(&f);
    /* a line's value may span lines, and braces or quotes inside strings do not end it */
    assert_int_equal(run_inline(&f, "{\n \"user_id\": \"auth0|d}]\\\"}\"\n}\n"
                                    "{\"user_id\":\"auth0|e\"}", NULL), 0);
    assert_int_equal(f.b.count, 2);
    assert_string_equal(f.b.events[0].user.id, "auth0|d}]\"}");
    assert_string_equal(f.b.events[1].user.id, "auth0|e");
    fx_free(&f);
    /* an unclosed last line is still a parse error at its own offset */
    assert_int_equal(run_inline(&f, "{\"user_id\":\"auth0|d\"}\n{\"user_id\":", NULL), -1);
    assert_string_equal(f.b.reason, "parse_error");
    assert_non_null(strstr(f.b.detail, "line 2"));
    fx_free(&f);
    /* overlong, surrogate and FF bytes are each invalid UTF-8 */
    assert_int_equal(run_inline(&f, "{\"user_id\":\"\xc0\xaf\"}", NULL), -1);
    assert_string_equal(f.b.reason, "invalid_utf8");
    fx_free(&f);
    assert_int_equal(run_inline(&f, "{\"user_id\":\"\xed\xa0\x80\"}", NULL), -1);
    assert_string_equal(f.b.reason, "invalid_utf8");
    fx_free(&f);
    assert_int_equal(run_inline(&f, "{\"user_id\":\"ab\xff\"}", NULL), -1);
    assert_string_equal(f.b.reason, "invalid_utf8");
    assert_non_null(strstr(f.b.detail, "byte offset 14"));
    fx_free(&f);
    /* the guard's verdict wins over a syntax error before it, as if it had run first */
    assert_int_equal(run_inline(&f, "{\"user_id\":,\"x\":\"ab\xff\"}", NULL), -1);
    assert_string_equal(f.b.reason, "invalid_utf8");
    fx_free(&f);
    usher_norm_options_init(&o);
    o.max_depth = 2;
    assert_int_equal(run_inline(&f, "{\"user_id\":[[[1]]], x}", &o), -1);
    assert_string_equal(f.b.reason, "max_depth_exceeded");
    fx_free(&f);
}

/* raw_json is the event's own text: a batch element's bytes, a JSON line's, or the bytes of the
 * decoded text for an event inside a JSON string; usher_event_raw parses it afresh each call. */
static void test_raw_json_spans(void **state)
{
    fx f;
    json_t *a = NULL, *b = NULL;
    const char *batch = "[ {\"log_id\":\"1\",\"data\":{\"type\":\"s\",\"user_id\":\"auth0|a\"}} ,"
                        "{\"log_id\":\"2\",\"data\":{\"type\":\"slo\",\"user_id\":\"auth0|b\"}}]";
    /* a {log_id, data} record's event is its data object, as before */
    const char *second = "{\"type\":\"slo\",\"user_id\":\"auth0|b\"}";
    (void)state;

    assert_int_equal(run_inline(&f, batch, NULL), 0);
    assert_int_equal(f.b.count, 2);
    assert_int_equal(f.b.events[1].raw_json_len, strlen(second));
    assert_memory_equal(f.b.events[1].raw_json, second, strlen(second));
    assert_ptr_equal(f.b.events[1].raw_json, strstr(f.value, second)); /* borrowed, not copied */
    assert_int_equal(f.b.events[0].raw_json[0], '{');
    assert_int_equal(f.b.events[0].raw_json[f.b.events[0].raw_json_len - 1], '}');
    a = usher_event_raw(&f.b.events[1]);
    b = usher_event_raw(&f.b.events[1]);
    assert_non_null(a);
    assert_true(a != b); /* a new reference every time */
    assert_string_equal(json_string_value(json_object_get(a, "type")), "slo");
    assert_true(json_equal(a, b));
    json_decref(a);
    json_decref(b);
    fx_free(&f);

    /* JSON Lines: each event's text is its line */
    assert_int_equal(run_inline(&f, "{\"log_id\":\"1\",\"data\":{\"type\":\"s\"}}\n"
                                    "{\"log_id\":\"2\",\"data\":{\"type\":\"s\"}}  \n",
                                NULL),
                     0);
    assert_int_equal(f.b.count, 2);
    assert_int_equal(f.b.events[1].raw_json_len, strlen("{\"type\":\"s\"}"));
    assert_ptr_equal(f.b.events[1].raw_json, strrchr(f.value, '{'));
    fx_free(&f);

    /* a record that is a JSON string: the event's text is the decoded one, unescaped */
    assert_int_equal(run_inline(&f, "\"{\\\"user_id\\\":\\\"auth0|s\\\",\\\"email\\\":"
                                    "\\\"s@example.com\\\"}\"",
                                NULL),
                     0);
    assert_int_equal(f.b.count, 1);
    assert_int_equal(f.b.events[0].raw_json_len,
                     strlen("{\"user_id\":\"auth0|s\",\"email\":\"s@example.com\"}"));
    assert_memory_equal(f.b.events[0].raw_json, "{\"user_id\":\"auth0|s\",", 19);
    a = usher_event_raw(&f.b.events[0]);
    assert_string_equal(json_string_value(json_object_get(a, "email")), "s@example.com");
    json_decref(a);
    fx_free(&f);
}

/* An HDInsight envelope whose records is not an array has no records (as jansson's
 * json_array_size said): rejected, not silently accepted with no events. */
static void test_hdinsight_records_not_array(void **state)
{
    fx f;
    (void)state;
    assert_int_equal(run_inline(&f, "{\"records\":{\"value\":\"x\"}}", NULL), -1);
    assert_string_equal(f.b.reason, "not_an_event");
    fx_free(&f);
}

static void test_batch_release_reuse(void **state)
{
    fx f;
    (void)state;
    fx_ok(&f, "auth0-logstream/batch-jsonarray.mixed.json", NULL, 5);
    usher_batch_release(&f.b);
    assert_null(f.b.events);
    assert_int_equal(f.b.count, 0);
    assert_null(f.b.priv);
    usher_batch_release(&f.b); /* idempotent */
    assert_int_equal(fx_run(&f, NULL), 0);
    assert_int_equal(f.b.count, 5);
    fx_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_auth0_action_user),
        cmocka_unit_test(test_digest_id_is_stable),
        cmocka_unit_test(test_auth0_action_user_no_hint_is_unsupported),
        cmocka_unit_test(test_auth0_action_user_double_encoded),
        cmocka_unit_test(test_double_encoded_twice_rejected),
        cmocka_unit_test(test_auth0_action_full_registration),
        cmocka_unit_test(test_auth0_action_full_login),
        cmocka_unit_test(test_auth0_action_full_change_password),
        cmocka_unit_test(test_upstash_produce_request),
        cmocka_unit_test(test_upstash_produce_response),
        cmocka_unit_test(test_hdinsight_produce_request),
        cmocka_unit_test(test_auth0_log_batch_ss),
        cmocka_unit_test(test_auth0_log_batch_mixed),
        cmocka_unit_test(test_auth0_log_jsonlines),
        cmocka_unit_test(test_auth0_log_single_login),
        cmocka_unit_test(test_auth0_log_single_logout),
        cmocka_unit_test(test_auth0_log_signup_failed),
        cmocka_unit_test(test_auth0_log_password_changed),
        cmocka_unit_test(test_auth0_log_user_deleted),
        cmocka_unit_test(test_auth0_log_ignored_and_unknown_codes),
        cmocka_unit_test(test_auth0_log_sapi),
        cmocka_unit_test(test_logto_post_register),
        cmocka_unit_test(test_logto_post_sign_in),
        cmocka_unit_test(test_logto_post_reset_password),
        cmocka_unit_test(test_logto_user_created),
        cmocka_unit_test(test_logto_user_data_updated),
        cmocka_unit_test(test_logto_user_deleted),
        cmocka_unit_test(test_logto_user_suspended),
        cmocka_unit_test(test_logto_signature_good),
        cmocka_unit_test(test_logto_signature_sha256_prefix),
        cmocka_unit_test(test_logto_signature_tampered),
        cmocka_unit_test(test_logto_signature_wrong_key),
        cmocka_unit_test(test_logto_signature_missing),
        cmocka_unit_test(test_ce_auth0_event_stream),
        cmocka_unit_test(test_ce_generic_logged_in),
        cmocka_unit_test(test_ce_type_alias),
        cmocka_unit_test(test_ce_binary),
        cmocka_unit_test(test_ce_binary_value_without_headers),
        cmocka_unit_test(test_clerk_user_created),
        cmocka_unit_test(test_clerk_session_created),
        cmocka_unit_test(test_keycloak_register),
        cmocka_unit_test(test_keycloak_login),
        cmocka_unit_test(test_keycloak_admin_delete_user),
        cmocka_unit_test(test_supabase_send_email_signup),
        cmocka_unit_test(test_bad_01_truncated),
        cmocka_unit_test(test_bad_02_wrong_types),
        cmocka_unit_test(test_bad_03_missing_user_id),
        cmocka_unit_test(test_bad_05_deep_nesting),
        cmocka_unit_test(test_bad_06_huge_wide_object),
        cmocka_unit_test(test_bad_07_invalid_utf8),
        cmocka_unit_test(test_bad_09_empty),
        cmocka_unit_test(test_tombstone),
        cmocka_unit_test(test_bad_10_null),
        cmocka_unit_test(test_bad_12_2mb_email),
        cmocka_unit_test(test_bad_13_duplicate_keys),
        cmocka_unit_test(test_bad_15_unknown_event_type),
        cmocka_unit_test(test_bad_17_unicode_idn_emails),
        cmocka_unit_test(test_bad_18_nul_bytes),
        cmocka_unit_test(test_bad_20_trailing_garbage),
        cmocka_unit_test(test_bad_22_nan_infinity),
        cmocka_unit_test(test_bad_24_cloudevent_missing_required),
        cmocka_unit_test(test_hint_topic_default),
        cmocka_unit_test(test_hint_usher_event_type_header),
        cmocka_unit_test(test_ids_stable_and_distinct),
        cmocka_unit_test(test_ambiguous_and_unrecognized),
        cmocka_unit_test(test_guard_limits),
        cmocka_unit_test(test_batch_release_reuse),
        cmocka_unit_test(test_raw_json_spans),
        cmocka_unit_test(test_hdinsight_records_not_array),
    };
    return cmocka_run_group_tests_name("normalize", tests, NULL, NULL);
}
