/* Unit tests for Redis URL parsing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "redis.h"

static void test_plain_host_port(void **state)
{
    (void)state;
    usher_redis_target t;
    char err[256];
    assert_int_equal(usher_redis_parse_url("redis://10.1.2.3:7000", &t, err, sizeof(err)), 0);
    assert_string_equal(t.host, "10.1.2.3");
    assert_int_equal(t.port, 7000);
    assert_null(t.password);
    assert_null(t.user);
    assert_int_equal(t.db, 0);
    usher_redis_target_free(&t);
}

static void test_default_port_and_db(void **state)
{
    (void)state;
    usher_redis_target t;
    char err[256];
    assert_int_equal(usher_redis_parse_url("redis://cache.example/5", &t, err, sizeof(err)), 0);
    assert_string_equal(t.host, "cache.example");
    assert_int_equal(t.port, 6379);
    assert_int_equal(t.db, 5);
    usher_redis_target_free(&t);
}

static void test_userinfo_percent_decoded(void **state)
{
    (void)state;
    usher_redis_target t;
    char err[256];
    assert_int_equal(usher_redis_parse_url("redis://app:p%40ss%3Aw@h:1/2", &t, err, sizeof(err)),
                     0);
    assert_string_equal(t.user, "app");
    assert_string_equal(t.password, "p@ss:w");
    assert_string_equal(t.host, "h");
    assert_int_equal(t.port, 1);
    assert_int_equal(t.db, 2);
    usher_redis_target_free(&t);

    assert_int_equal(usher_redis_parse_url("redis://:secret@h", &t, err, sizeof(err)), 0);
    assert_null(t.user);
    assert_string_equal(t.password, "secret");
    usher_redis_target_free(&t);
}

static void test_unix_socket(void **state)
{
    (void)state;
    usher_redis_target t;
    char err[256];
    assert_int_equal(usher_redis_parse_url("unix:///run/redis.sock?db=3", &t, err, sizeof(err)),
                     0);
    assert_string_equal(t.path, "/run/redis.sock");
    assert_null(t.host);
    assert_int_equal(t.db, 3);
    usher_redis_target_free(&t);
}

static void test_rejects(void **state)
{
    (void)state;
    usher_redis_target t;
    char err[256];
    const char *bad[] = { "rediss://h:6380", "http://h", "redis://h:0", "redis://h:99999",
                          "redis://h:12x", "redis://h/abc", "redis://", "unix://relative" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = 0;
        assert_int_equal(usher_redis_parse_url(bad[i], &t, err, sizeof(err)), -1);
        assert_true(err[0] != 0);
    }
    assert_int_equal(usher_redis_parse_url("rediss://h", &t, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "TLS"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_host_port),
        cmocka_unit_test(test_default_port_and_db),
        cmocka_unit_test(test_userinfo_percent_decoded),
        cmocka_unit_test(test_unix_socket),
        cmocka_unit_test(test_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
