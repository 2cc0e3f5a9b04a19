/* Unit tests for template rendering and escaping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "usher/handler.h"

static usher_event sample(void)
{
    static usher_kafka_meta meta = { .topic = "user-events", .partition = 3, .offset = 42 };
    usher_event ev = { 0 };
    ev.id = "evt_1";
    ev.type = USHER_EVENT_SIGNUP;
    ev.source = "auth0";
    ev.occurred_at_ms = 1710321705118; /* 2024-03-13T09:21:45Z */
    ev.user.id = "auth0|abc";
    ev.user.email = "ada@example.com";
    ev.user.name = "Ada <b>&</b> \"Lovelace\"";
    ev.tenant = "acme";
    ev.kafka = &meta;
    return ev;
}

static void assert_render(const char *tpl, usher_escape esc, const char *want)
{
    usher_event ev = sample();
    char *got = usher_render(tpl, &ev, esc);
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static void test_plain_fields(void **state)
{
    (void)state;
    assert_render("Hi {{user.email}} ({{ user.id }}) on {{tenant}}/{{kafka.topic}}:"
                  "{{kafka.partition}}@{{kafka.offset}} at {{occurred_at}}",
                  USHER_ESCAPE_NONE,
                  "Hi ada@example.com (auth0|abc) on acme/user-events:3@42 at "
                  "2024-03-13T09:21:45Z");
}

static void test_fallback_and_unknown(void **state)
{
    (void)state;
    assert_render("Hello {{user.username|friend}}{{nope}}!", USHER_ESCAPE_NONE,
                  "Hello friend!");
    assert_render("{{user.email|x}}", USHER_ESCAPE_NONE, "ada@example.com");
    assert_render("unclosed {{user.email", USHER_ESCAPE_NONE, "unclosed {{user.email");
}

static void test_html_escape(void **state)
{
    (void)state;
    assert_render("<p>{{user.name}}</p>", USHER_ESCAPE_HTML,
                  "<p>Ada &lt;b&gt;&amp;&lt;/b&gt; &quot;Lovelace&quot;</p>");
}

static void test_slack_escape(void **state)
{
    (void)state;
    usher_event ev = sample();
    ev.user.name = "<!channel> & <@U123>";
    char *got = usher_render("New: {{user.name}}", &ev, USHER_ESCAPE_SLACK);
    assert_string_equal(got, "New: &lt;!channel&gt; &amp; &lt;@U123&gt;");
    free(got);
}

static void test_header_escape_strips_crlf(void **state)
{
    (void)state;
    usher_event ev = sample();
    ev.user.name = "Eve\r\nBcc: attacker@example.org";
    char *got = usher_render("Welcome {{user.name}}", &ev, USHER_ESCAPE_HEADER);
    assert_null(strchr(got, '\r'));
    assert_null(strchr(got, '\n'));
    assert_string_equal(got, "Welcome EveBcc: attacker@example.org");
    free(got);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_fields),
        cmocka_unit_test(test_fallback_and_unknown),
        cmocka_unit_test(test_html_escape),
        cmocka_unit_test(test_slack_escape),
        cmocka_unit_test(test_header_escape_strips_crlf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
