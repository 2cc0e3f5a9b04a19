/* Unit tests for usher_header_text: header-safe display names and subjects. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "transport.h"

/* The longest line of s (lines end in CRLF). */
static size_t longest_line(const char *s)
{
    size_t best = 0;

    for (const char *p = s; *p;) {
        const char *e = strstr(p, "\r\n");
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n > best)
            best = n;
        p += n + (e ? 2 : 0);
    }
    return best;
}

/* The bytes the encoded-words of s carry, concatenated (s as usher_header_text writes them). */
static size_t decode_words(const char *s, unsigned char *out)
{
    size_t w = 0;

    for (const char *p = strstr(s, "=?UTF-8?B?"); p != NULL; p = strstr(p, "=?UTF-8?B?")) {
        const char *b = p + 10, *e = strstr(b, "?=");
        int pad = 0;
        assert_non_null(e);
        for (const char *q = e; q > b && q[-1] == '='; q--)
            pad++;
        int n = EVP_DecodeBlock(out + w, (const unsigned char *)b, (int)(e - b));
        assert_true(n >= 0);
        w += (size_t)n - (size_t)pad;
        p = e + 2;
    }
    return w;
}

static void test_ascii(void **state)
{
    char out[2048];
    (void)state;

    assert_int_equal(usher_header_text("Hi\r\nBcc: x@y\tthere", 0, out, sizeof(out)), 0);
    assert_string_equal(out, "HiBcc: x@ythere"); /* control characters dropped */
    assert_int_equal(usher_header_text("A \"B\" \\C", 1, out, sizeof(out)), 0);
    assert_string_equal(out, "\"A \\\"B\\\" \\\\C\"");
    assert_int_equal(usher_header_text("abc", 0, out, 3), -1); /* no room for the NUL */
}

static void test_long_values_are_cut(void **state)
{
    char in[3000], out[2048];
    (void)state;

    memset(in, 'a', sizeof(in) - 1);
    in[sizeof(in) - 1] = 0;
    assert_int_equal(usher_header_text(in, 0, out, sizeof(out)), 0);
    assert_int_equal(strlen(out), 900);
    assert_int_equal(usher_header_text(in, 1, out, sizeof(out)), 0);
    assert_int_equal(strlen(out), 362); /* 360 and the quotes */
}

static void test_non_ascii_folded(void **state)
{
    char in[3000], out[2048];
    unsigned char dec[2048];
    size_t n = 0, got;
    (void)state;

    /* "x", then 2,000 bytes of "é€" (2 and 3 bytes): the 900-byte cut falls inside a "€",
     * which is left out; the rest is encoded as words of one folded line each */
    in[n++] = 'x';
    while (n < 2000) {
        memcpy(in + n, "\xc3\xa9\xe2\x82\xac", 5);
        n += 5;
    }
    in[n] = 0;
    assert_int_equal(usher_header_text(in, 0, out, sizeof(out)), 0);
    assert_true(longest_line(out) <= 76);
    assert_non_null(strstr(out, "?=\r\n =?UTF-8?B?"));
    got = decode_words(out, dec);
    assert_int_equal(got, 898);
    assert_memory_equal(dec, in, got); /* a prefix of the input, whole characters only */
    assert_true(got == n || (in[got] & 0xC0) != 0x80);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ascii),
        cmocka_unit_test(test_long_values_are_cut),
        cmocka_unit_test(test_non_ascii_folded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
