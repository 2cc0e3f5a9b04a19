/* Unit tests for the shared outcome classification (HTTP, SMTP, libcurl, Retry-After). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "outcome.h"

static void test_http_status(void **state)
{
    (void)state;
    assert_int_equal(usher_classify_http(200), USHER_OK);
    assert_int_equal(usher_classify_http(201), USHER_OK);
    assert_int_equal(usher_classify_http(204), USHER_OK);
    assert_int_equal(usher_classify_http(408), USHER_RETRY);
    assert_int_equal(usher_classify_http(429), USHER_RETRY);
    assert_int_equal(usher_classify_http(500), USHER_RETRY);
    assert_int_equal(usher_classify_http(502), USHER_RETRY);
    assert_int_equal(usher_classify_http(503), USHER_RETRY);
    assert_int_equal(usher_classify_http(599), USHER_RETRY);
    assert_int_equal(usher_classify_http(400), USHER_FAIL);
    assert_int_equal(usher_classify_http(401), USHER_FAIL);
    assert_int_equal(usher_classify_http(404), USHER_FAIL);
    assert_int_equal(usher_classify_http(409), USHER_FAIL);
    assert_int_equal(usher_classify_http(301), USHER_FAIL);
    assert_int_equal(usher_classify_http(0), USHER_FAIL);
}

static void test_smtp_codes(void **state)
{
    (void)state;
    assert_int_equal(usher_classify_smtp(250), USHER_OK);
    assert_int_equal(usher_classify_smtp(421), USHER_RETRY);
    assert_int_equal(usher_classify_smtp(451), USHER_RETRY);
    assert_int_equal(usher_classify_smtp(452), USHER_RETRY);
    assert_int_equal(usher_classify_smtp(550), USHER_FAIL);
    assert_int_equal(usher_classify_smtp(553), USHER_FAIL);
}

static void test_curl_errors(void **state)
{
    (void)state;
    assert_int_equal(usher_classify_curl(CURLE_OPERATION_TIMEDOUT), USHER_RETRY);
    assert_int_equal(usher_classify_curl(CURLE_COULDNT_CONNECT), USHER_RETRY);
    assert_int_equal(usher_classify_curl(CURLE_COULDNT_RESOLVE_HOST), USHER_RETRY);
    assert_int_equal(usher_classify_curl(CURLE_GOT_NOTHING), USHER_RETRY);
    assert_int_equal(usher_classify_curl(CURLE_RECV_ERROR), USHER_RETRY);
    assert_int_equal(usher_classify_curl(CURLE_SEND_ERROR), USHER_RETRY);
    assert_int_equal(usher_classify_curl(CURLE_URL_MALFORMAT), USHER_FAIL);
    assert_int_equal(usher_classify_curl(CURLE_UNSUPPORTED_PROTOCOL), USHER_FAIL);
    assert_int_equal(usher_classify_curl(CURLE_LOGIN_DENIED), USHER_FAIL);
}

static void test_retry_after(void **state)
{
    (void)state;
    /* Sun, 06 Nov 1994 08:49:37 GMT = 784111777 */
    int64_t now = 784111777LL * 1000;
    assert_int_equal(usher_parse_retry_after("2", now), 2000);
    assert_int_equal(usher_parse_retry_after(" 120 ", now), 120000);
    assert_int_equal(usher_parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now), 10000);
    assert_int_equal(usher_parse_retry_after("Sun, 06 Nov 1994 08:49:27 GMT", now), 0);
    assert_int_equal(usher_parse_retry_after("soon", now), -1);
    assert_int_equal(usher_parse_retry_after("-5", now), -1);
    assert_int_equal(usher_parse_retry_after("5x", now), -1);
    assert_int_equal(usher_parse_retry_after(NULL, now), -1);
    assert_int_equal(usher_parse_retry_after("999999999", now), 86400000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http_status),
        cmocka_unit_test(test_smtp_codes),
        cmocka_unit_test(test_curl_errors),
        cmocka_unit_test(test_retry_after),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
