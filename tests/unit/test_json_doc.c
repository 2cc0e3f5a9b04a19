/*
 * Unit tests for src/json_doc.c: values, escapes, the rejections jansson makes (with its error
 * classes and positions), duplicate keys small and large, numbers at their limits, the
 * stop-at-end mode JSON Lines use, spans, nesting depth and document reuse.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "json_doc.h"

/* Parses the NUL-terminated text s into d; returns usher_jdoc_parse's result. */
static int parse(usher_jdoc *d, const char *s, unsigned flags, usher_jerror *e)
{
    return usher_jdoc_parse(d, s, strlen(s), flags, e);
}

/* Asserts that s is rejected with code at position pos. */
static void rejects(const char *s, usher_jerr code, size_t pos)
{
    usher_jdoc d;
    usher_jerror e;

    usher_jdoc_init(&d);
    if (parse(&d, s, 0, &e) == 0)
        fail_msg("accepted: %s", s);
    if (e.code != code || e.position != pos)
        fail_msg("%s: code %d at %zu (%s), want %d at %zu", s, (int)e.code, e.position, e.text,
                 (int)code, pos);
    assert_null(usher_jdoc_root(&d));
    usher_jdoc_free(&d);
}

/* Asserts that the text s is one string value with the given bytes. */
static void string_is(const char *s, const char *want, size_t wantlen)
{
    usher_jdoc d;
    usher_jerror e;
    const usher_jnode *r;

    usher_jdoc_init(&d);
    if (parse(&d, s, 0, &e) != 0)
        fail_msg("%s rejected: %s", s, e.text);
    r = usher_jdoc_root(&d);
    assert_true(usher_jv_is_string(r));
    assert_int_equal(usher_jv_strlen(r), wantlen);
    assert_memory_equal(usher_jv_str(r), want, wantlen);
    assert_int_equal(usher_jv_str(r)[wantlen], '\0');
    usher_jdoc_free(&d);
}

static void test_value_types(void **state)
{
    usher_jdoc d;
    usher_jerror e;
    const usher_jnode *r, *v;
    const char *text = " {\"o\":{},\"a\":[1,-2.5,\"x\"],\"s\":\"str\",\"i\":42,\"r\":0.5,"
                       "\"t\":true,\"f\":false,\"n\":null} ";
    (void)state;

    usher_jdoc_init(&d);
    assert_int_equal(parse(&d, text, 0, &e), 0);
    r = usher_jdoc_root(&d);
    assert_true(usher_jv_is_object(r));
    assert_int_equal(usher_jobj_size(r), 8);
    assert_true(usher_jv_is_object(usher_jv_get(r, "o")));
    assert_int_equal(usher_jobj_size(usher_jv_get(r, "o")), 0);
    v = usher_jv_get(r, "a");
    assert_true(usher_jv_is_array(v));
    assert_int_equal(usher_jarr_size(v), 3);
    assert_int_equal(usher_jv_int(usher_jv_at(v, 0)), 1);
    assert_true(usher_jv_is_real(usher_jv_at(v, 1)));
    assert_true(usher_jv_at(v, 1)->v.d == -2.5);
    assert_string_equal(usher_jv_str(usher_jv_at(v, 2)), "x");
    assert_null(usher_jv_at(v, 3));
    assert_string_equal(usher_jv_str(usher_jv_get(r, "s")), "str");
    assert_int_equal(usher_jv_strlen(usher_jv_get(r, "s")), 3);
    assert_true(usher_jv_is_integer(usher_jv_get(r, "i")));
    assert_int_equal(usher_jv_int(usher_jv_get(r, "i")), 42);
    assert_true(usher_jv_is_real(usher_jv_get(r, "r")));
    assert_true(usher_jv_is_true(usher_jv_get(r, "t")));
    assert_true(usher_jv_is_boolean(usher_jv_get(r, "t")));
    assert_true(usher_jv_is_false(usher_jv_get(r, "f")));
    assert_true(usher_jv_is_boolean(usher_jv_get(r, "f")));
    assert_true(usher_jv_is_null(usher_jv_get(r, "n")));
    assert_false(usher_jv_is_null(usher_jv_get(r, "missing")));
    assert_null(usher_jv_get(r, "missing"));
    /* NULL-safe, type-checked accessors */
    assert_null(usher_jv_get(NULL, "a"));
    assert_null(usher_jv_get(usher_jv_get(r, "a"), "a"));
    assert_null(usher_jv_str(usher_jv_get(r, "i")));
    assert_int_equal(usher_jv_int(usher_jv_get(r, "s")), 0);
    assert_int_equal(usher_jobj_size(usher_jv_get(r, "s")), 0);
    assert_int_equal(usher_jarr_size(r), 0); /* an object is no array (json_array_size) */
    assert_int_equal(usher_jobj_size(usher_jv_get(r, "a")), 0);
    /* iteration in document order */
    {
        static const char *const keys[] = {"o", "a", "s", "i", "r", "t", "f", "n"};
        const usher_jnode *k, *val, *el;
        size_t i;
        usher_jobj_foreach(r, i, k, val) {
            assert_string_equal(k->v.s, keys[i]);
            assert_ptr_equal(val, usher_jv_get(r, keys[i]));
        }
        assert_int_equal(i, 8);
        usher_jarr_foreach(usher_jv_get(r, "a"), i, el)
            assert_ptr_equal(el, usher_jv_at(usher_jv_get(r, "a"), i));
        assert_int_equal(i, 3);
        usher_jarr_foreach(r, i, el) /* not an array: no iteration */
            fail();
    }
    /* every type at the top level */
    assert_int_equal(parse(&d, "\"s\"", 0, &e), 0);
    assert_true(usher_jv_is_string(usher_jdoc_root(&d)));
    assert_int_equal(parse(&d, "-7", 0, &e), 0);
    assert_int_equal(usher_jv_int(usher_jdoc_root(&d)), -7);
    assert_int_equal(parse(&d, "true", 0, &e), 0);
    assert_int_equal(parse(&d, "null", 0, &e), 0);
    assert_true(usher_jv_is_null(usher_jdoc_root(&d)));
    assert_int_equal(parse(&d, "[]", 0, &e), 0);
    assert_int_equal(usher_jarr_size(usher_jdoc_root(&d)), 0);
    assert_null(usher_jv_first(usher_jdoc_root(&d)));
    usher_jdoc_free(&d);
}

static void test_escapes(void **state)
{
    (void)state;
    string_is("\"a\\\"b\\\\c\\/d\\be\\ff\\ng\\rh\\ti\"", "a\"b\\c/d\be\ff\ng\rh\ti", 17);
    string_is("\"\\u0041\\u00e9\\u20AC\"", "A\xc3\xa9\xe2\x82\xac", 6);
    string_is("\"\\ud83d\\ude00!\"", "\xf0\x9f\x98\x80!", 5);  /* surrogate pair */
    string_is("\"\xf0\x9f\x98\x80 caf\xc3\xa9\"", "\xf0\x9f\x98\x80 caf\xc3\xa9", 10);
    string_is("\"\"", "", 0);
    string_is("\"plain then \\n escape, then plain\"", "plain then \n escape, then plain", 31);
    rejects("\"\\ud83d\"", USHER_JERR_OTHER, 8);          /* lone high surrogate */
    rejects("\"\\ude00\"", USHER_JERR_OTHER, 8);          /* lone low surrogate */
    rejects("\"\\ud83d\\u0041\"", USHER_JERR_OTHER, 14);  /* high + not a low one */
    rejects("\"\\ud83dx\"", USHER_JERR_OTHER, 9);
    rejects("\"\\x\"", USHER_JERR_OTHER, 3);              /* unknown escape */
    rejects("\"\\u12G4\"", USHER_JERR_OTHER, 6);          /* bad hex digit */
    rejects("\"a\tb\"", USHER_JERR_OTHER, 2);             /* raw control character */
    rejects("\"a\xc3(\"", USHER_JERR_INVALID_UTF8, 2);
    rejects("\"\xed\xa0\x80\"", USHER_JERR_INVALID_UTF8, 1); /* UTF-8 encoded surrogate */
}

static void test_nul_rejected(void **state)
{
    usher_jdoc d;
    usher_jerror e;
    (void)state;

    rejects("\"a\\u0000b\"", USHER_JERR_OTHER, 10);
    rejects("{\"a\\u0000\":1}", USHER_JERR_OTHER, 10); /* in a key */
    rejects("[1,\"\\u0000\"]", USHER_JERR_OTHER, 11);
    /* a raw NUL byte: a control character in a string, else a token jansson reads as none */
    usher_jdoc_init(&d);
    assert_int_not_equal(usher_jdoc_parse(&d, "\"a\0\"", 4, 0, &e), 0);
    assert_int_equal(e.code, USHER_JERR_OTHER);
    assert_int_not_equal(usher_jdoc_parse(&d, "[1,\0]", 5, 0, &e), 0);
    assert_int_equal(e.code, USHER_JERR_PREMATURE_END);
    usher_jdoc_free(&d);
}

static void test_duplicates(void **state)
{
    usher_jdoc d;
    usher_jerror e;
    size_t cap = 5000 * 16 + 16, n = 0;
    char *big = malloc(cap);
    (void)state;

    rejects("{\"a\":1,\"b\":2,\"a\":3}", USHER_JERR_DUPLICATE_KEY, 16);
    rejects("{\"a\":1,\"\\u0061\":2}", USHER_JERR_DUPLICATE_KEY, 15); /* unescaped compare */
    rejects("{\"x\":{\"a\":1},\"y\":{\"a\":1,\"a\":2}}", USHER_JERR_DUPLICATE_KEY, 27);
    usher_jdoc_init(&d);
    assert_int_not_equal(parse(&d, "{\"k\":1,\"k\":2}", 0, &e), 0);
    assert_string_equal(e.text, "duplicate object key near '\"k\"'");
    /* the same key in sibling objects is no duplicate */
    assert_int_equal(parse(&d, "[{\"a\":1},{\"a\":2}]", 0, &e), 0);

    /* 5,000 members: distinct keys accepted, and a duplicate of an early key found at the end */
    assert_non_null(big);
    big[n++] = '{';
    for (int i = 0; i < 5000; i++)
        n += (size_t)snprintf(big + n, cap - n, "%s\"k%d\":%d", i ? "," : "", i, i);
    big[n++] = '}';
    assert_int_equal(usher_jdoc_parse(&d, big, n, 0, &e), 0);
    assert_int_equal(usher_jobj_size(usher_jdoc_root(&d)), 5000);
    assert_int_equal(usher_jv_int(usher_jv_get(usher_jdoc_root(&d), "k4999")), 4999);
    assert_int_equal(usher_jv_int(usher_jv_get(usher_jdoc_root(&d), "k17")), 17);
    n--; /* replace the closing brace */
    n += (size_t)snprintf(big + n, cap - n, ",\"k3\":0}");
    assert_int_not_equal(usher_jdoc_parse(&d, big, n, 0, &e), 0);
    assert_int_equal(e.code, USHER_JERR_DUPLICATE_KEY);
    assert_int_equal(e.position, n - 3);

    /* Around the size where a hash table joins the tag scan (64 members), with a nested object
     * in the middle whose keys repeat the outer ones: a duplicate of each earlier member is
     * found, and keys that differ only in their middle bytes (all of one tag) are no duplicates. */
    for (int members = 62; members <= 67; members++) {
        for (int dup = -1; dup < members; dup += members / 3) {
            n = 0;
            big[n++] = '{';
            for (int i = 0; i < members; i++) {
                n += (size_t)snprintf(big + n, cap - n, "%s\"prefix00%03dsuffix00\":%d",
                                      i ? "," : "", i, i);
                if (i == members / 2)
                    n += (size_t)snprintf(big + n, cap - n, ",\"in\":{\"prefix00%03dsuffix00\":1}",
                                          i - 1);
            }
            if (dup >= 0)
                n += (size_t)snprintf(big + n, cap - n, ",\"prefix00%03dsuffix00\":0", dup);
            big[n++] = '}';
            if (dup < 0) {
                assert_int_equal(usher_jdoc_parse(&d, big, n, 0, &e), 0);
                assert_int_equal(usher_jobj_size(usher_jdoc_root(&d)), members + 1);
            } else {
                assert_int_not_equal(usher_jdoc_parse(&d, big, n, 0, &e), 0);
                assert_int_equal(e.code, USHER_JERR_DUPLICATE_KEY);
                assert_int_equal(e.position, n - 3);
            }
        }
    }
    /* Short keys (lengths 0-9, the tag reads them in pieces): every key of one object made of
     * the letters a and b is accepted, and a repeat of each one is found. */
    for (int len = 0; len <= 9; len++) {
        int keys = 1 << len;
        for (int dup = -1; dup < keys; dup++) {
            n = 0;
            big[n++] = '{';
            for (int i = 0; i <= keys; i++) {
                int k = i < keys ? i : dup;
                if (i == keys && dup < 0)
                    break;
                n += (size_t)snprintf(big + n, cap - n, "%s\"", i ? "," : "");
                for (int b = 0; b < len; b++)
                    big[n++] = (k >> b) & 1 ? 'b' : 'a';
                n += (size_t)snprintf(big + n, cap - n, "\":%d", i);
            }
            big[n++] = '}';
            if (dup < 0) {
                assert_int_equal(usher_jdoc_parse(&d, big, n, 0, &e), 0);
                assert_int_equal(usher_jobj_size(usher_jdoc_root(&d)), keys);
            } else {
                assert_int_not_equal(usher_jdoc_parse(&d, big, n, 0, &e), 0);
                assert_int_equal(e.code, USHER_JERR_DUPLICATE_KEY);
            }
        }
    }
    usher_jdoc_free(&d);
    free(big);
}

static void test_numbers(void **state)
{
    usher_jdoc d;
    usher_jerror e;
    const usher_jnode *r;
    (void)state;

    usher_jdoc_init(&d);
    assert_int_equal(parse(&d, "-0", 0, &e), 0);
    r = usher_jdoc_root(&d);
    assert_true(usher_jv_is_integer(r));
    assert_int_equal(usher_jv_int(r), 0);
    assert_int_equal(parse(&d, "-0.0", 0, &e), 0);
    assert_true(usher_jv_is_real(usher_jdoc_root(&d)));
    assert_true(usher_jdoc_root(&d)->v.d == 0.0);
    assert_int_equal(parse(&d, "9223372036854775807", 0, &e), 0);
    assert_true(usher_jv_int(usher_jdoc_root(&d)) == 9223372036854775807LL);
    assert_int_equal(parse(&d, "-9223372036854775808", 0, &e), 0);
    assert_true(usher_jv_int(usher_jdoc_root(&d)) == -9223372036854775807LL - 1);
    assert_int_equal(parse(&d, "1E+2", 0, &e), 0);
    assert_true(usher_jv_is_real(usher_jdoc_root(&d)));
    assert_true(usher_jdoc_root(&d)->v.d == 100.0);
    assert_int_equal(parse(&d, "1e-400", 0, &e), 0); /* underflow is no error in jansson */
    usher_jdoc_free(&d);

    rejects("9223372036854775808", USHER_JERR_OTHER, 19);
    rejects("-9223372036854775809", USHER_JERR_OTHER, 20);
    rejects("1e400", USHER_JERR_OTHER, 5);
    rejects("-1e400", USHER_JERR_OTHER, 6);
    rejects("01", USHER_JERR_OTHER, 1);
    rejects("[-]", USHER_JERR_OTHER, 2);
    rejects("+1", USHER_JERR_OTHER, 1);
    rejects("1.", USHER_JERR_OTHER, 2);
    rejects("1.e5", USHER_JERR_OTHER, 2);
    rejects(".5", USHER_JERR_OTHER, 1);
    rejects("1e", USHER_JERR_OTHER, 2);
    rejects("NaN", USHER_JERR_OTHER, 3);
    rejects("[Infinity]", USHER_JERR_OTHER, 9);
}

static void test_trailing_and_stop_at_end(void **state)
{
    usher_jdoc d;
    usher_jerror e;
    const char *lines = "{\"a\":1}\n[2, 3] x";
    (void)state;

    rejects("{} {}", USHER_JERR_END_OF_INPUT_EXPECTED, 4);
    rejects("{}\n{\"a\":1}", USHER_JERR_END_OF_INPUT_EXPECTED, 4);
    rejects("1 2", USHER_JERR_END_OF_INPUT_EXPECTED, 3);
    rejects("[1] x", USHER_JERR_END_OF_INPUT_EXPECTED, 5);
    rejects("{} \"open", USHER_JERR_PREMATURE_END, 8); /* the trailing token fails first */

    usher_jdoc_init(&d);
    assert_int_equal(parse(&d, lines, USHER_JDOC_STOP_AT_END, &e), 0);
    assert_int_equal(d.end, 7);
    assert_int_equal(usher_jv_int(usher_jv_get(usher_jdoc_root(&d), "a")), 1);
    assert_int_equal(usher_jdoc_parse(&d, lines + 8, strlen(lines + 8), USHER_JDOC_STOP_AT_END,
                                      &e),
                     0);
    assert_int_equal(d.end, 6);
    assert_int_equal(usher_jarr_size(usher_jdoc_root(&d)), 2);
    assert_int_equal(parse(&d, "  42  ", USHER_JDOC_STOP_AT_END, &e), 0);
    assert_int_equal(d.end, 4);
    assert_int_equal(parse(&d, " {} ", 0, &e), 0); /* with the EOF check: the whole input */
    assert_int_equal(d.end, 4);
    usher_jdoc_free(&d);
}

static void test_truncated(void **state)
{
    const char *full = "{\"user\":{\"id\":\"a\",\"tags\":[1,true,null]}}";
    usher_jdoc d;
    usher_jerror e;
    (void)state;

    usher_jdoc_init(&d);
    /* every proper prefix is rejected; those ending at a token boundary as a premature end */
    for (size_t n = 0; n < strlen(full); n++) {
        assert_int_not_equal(usher_jdoc_parse(&d, full, n, 0, &e), 0);
        assert_true(e.code == USHER_JERR_PREMATURE_END || e.code == USHER_JERR_OTHER);
    }
    assert_int_equal(usher_jdoc_parse(&d, full, strlen(full), 0, &e), 0);
    usher_jdoc_free(&d);
    rejects("", USHER_JERR_PREMATURE_END, 0);
    rejects("   ", USHER_JERR_PREMATURE_END, 3);
    rejects("{\"a\":1", USHER_JERR_PREMATURE_END, 6);
    rejects("{\"a\":", USHER_JERR_PREMATURE_END, 5);
    rejects("[1,", USHER_JERR_PREMATURE_END, 3);
    rejects("\"abc", USHER_JERR_PREMATURE_END, 4);
    rejects("tru", USHER_JERR_OTHER, 3); /* jansson: an invalid token, not an early end */
    rejects("[1,]", USHER_JERR_OTHER, 4);
    rejects("{\"a\":1,}", USHER_JERR_OTHER, 8);
    rejects("{\"a\" 1}", USHER_JERR_OTHER, 6);
}

static void test_spans(void **state)
{
    const char *text = " {\"a\" : [ 1 , {\"b\":\"x\\ny\"} ], \"c\":-2.5e1 } ";
    usher_jdoc d;
    usher_jerror e;
    const usher_jnode *r, *a, *o, *s;
    size_t len = 0;
    const char *t;
    (void)state;

    usher_jdoc_init(&d);
    assert_int_equal(parse(&d, text, 0, &e), 0);
    r = usher_jdoc_root(&d);
    t = usher_jv_text(r, &len);
    assert_int_equal(t - text, 1);
    assert_int_equal(len, strlen(text) - 2);
    a = usher_jv_get(r, "a");
    t = usher_jv_text(a, &len);
    assert_int_equal(len, strlen("[ 1 , {\"b\":\"x\\ny\"} ]"));
    assert_memory_equal(t, "[ 1 , {\"b\":\"x\\ny\"} ]", len);
    o = usher_jv_at(a, 1);
    t = usher_jv_text(o, &len);
    assert_memory_equal(t, "{\"b\":\"x\\ny\"}", len);
    assert_int_equal(len, 12);
    s = usher_jv_get(o, "b");
    t = usher_jv_text(s, &len);
    assert_memory_equal(t, "\"x\\ny\"", len); /* the span is the escaped text */
    assert_int_equal(len, 6);
    assert_string_equal(usher_jv_str(s), "x\ny");
    t = usher_jv_text(usher_jv_first(o), &len); /* a key has a span too */
    assert_memory_equal(t, "\"b\"", len);
    t = usher_jv_text(usher_jv_get(r, "c"), &len);
    assert_memory_equal(t, "-2.5e1", len);
    assert_int_equal(len, 6);
    /* skip goes past all descendants: a's next sibling is the key "c" */
    assert_string_equal(usher_jv_str(usher_jv_skip(a)), "c");
    assert_int_equal(a->next - a->idx, 5); /* a, 1, {}, "b", "x\ny" */
    usher_jdoc_free(&d);
}

static void test_deep_nesting(void **state)
{
    size_t depth = USHER_JDOC_MAX_DEPTH + 1;
    char *s = malloc(2 * depth + 2);
    usher_jdoc d;
    usher_jerror e;
    const usher_jnode *n;
    size_t levels = 0, i;
    (void)state;

    assert_non_null(s);
    usher_jdoc_init(&d);
    /* 2048 arrays: jansson's limit, accepted */
    memset(s, '[', USHER_JDOC_MAX_DEPTH);
    memset(s + USHER_JDOC_MAX_DEPTH, ']', USHER_JDOC_MAX_DEPTH);
    assert_int_equal(usher_jdoc_parse(&d, s, 2 * USHER_JDOC_MAX_DEPTH, 0, &e), 0);
    for (n = usher_jdoc_root(&d); n != NULL; n = usher_jv_first(n))
        levels++;
    assert_int_equal(levels, USHER_JDOC_MAX_DEPTH);
    assert_int_equal(usher_jdoc_root(&d)->next, USHER_JDOC_MAX_DEPTH + 1);
    /* a scalar inside them is one level too deep */
    memset(s, '[', USHER_JDOC_MAX_DEPTH);
    s[USHER_JDOC_MAX_DEPTH] = '1';
    memset(s + USHER_JDOC_MAX_DEPTH + 1, ']', USHER_JDOC_MAX_DEPTH);
    assert_int_not_equal(usher_jdoc_parse(&d, s, 2 * USHER_JDOC_MAX_DEPTH + 1, 0, &e), 0);
    assert_int_equal(e.code, USHER_JERR_DEPTH);
    assert_int_equal(e.position, USHER_JDOC_MAX_DEPTH + 1);
    /* 2049 objects-in-arrays */
    for (i = 0; i < depth; i++)
        s[i] = i % 2 ? '[' : '{';
    assert_int_not_equal(usher_jdoc_parse(&d, s, depth, 0, &e), 0);
    assert_int_equal(e.code, USHER_JERR_OTHER); /* {[ is no key: fails before the limit */
    memset(s, '[', depth);
    assert_int_not_equal(usher_jdoc_parse(&d, s, depth, 0, &e), 0);
    assert_int_equal(e.code, USHER_JERR_DEPTH);
    usher_jdoc_free(&d);
    free(s);
}

static void test_reuse_and_errors_reset(void **state)
{
    usher_jdoc d;
    usher_jerror e;
    (void)state;

    usher_jdoc_init(&d);
    assert_int_not_equal(parse(&d, "{\"a\":", 0, &e), 0);
    assert_null(usher_jdoc_root(&d));
    assert_int_equal(parse(&d, "{\"a\":\"b\"}", 0, &e), 0);
    assert_string_equal(usher_jv_str(usher_jv_get(usher_jdoc_root(&d), "a")), "b");
    assert_int_equal(parse(&d, "[1]", 0, NULL), 0); /* err may be NULL */
    assert_int_not_equal(parse(&d, "[1", 0, NULL), 0);
    usher_jdoc_free(&d);
    usher_jdoc_free(&d); /* twice is fine */
}

/* Keys that share a bit of their object's key filter ("id", "cf" and "fe" do) are still told
 * apart: each present key is found, an absent one with the same bit is not, distinct keys
 * with the same bit are no duplicate, and an escaped key is filtered by its unescaped bytes. */
static void test_keys_sharing_a_filter_bit(void **state)
{
    usher_jdoc d;
    usher_jerror e;
    const usher_jnode *r;
    (void)state;

    usher_jdoc_init(&d);
    assert_int_equal(parse(&d, "{\"id\":1,\"cf\":2,\"name\":3}", 0, &e), 0);
    r = usher_jdoc_root(&d);
    assert_int_equal(usher_jv_int(usher_jv_get(r, "id")), 1);
    assert_int_equal(usher_jv_int(usher_jv_get(r, "cf")), 2);
    assert_int_equal(usher_jv_int(usher_jv_get(r, "name")), 3);
    assert_null(usher_jv_get(r, "fe"));
    assert_null(usher_jv_get(r, "zz"));
    assert_null(usher_jv_get(r, ""));
    assert_int_equal(parse(&d, "{\"\\u0069d\":1}", 0, &e), 0);
    assert_int_equal(usher_jv_int(usher_jv_get(usher_jdoc_root(&d), "id")), 1);
    usher_jdoc_free(&d);
    rejects("{\"id\":1,\"cf\":2,\"fe\":3,\"cf\":4}", USHER_JERR_DUPLICATE_KEY, 26);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_value_types),
        cmocka_unit_test(test_keys_sharing_a_filter_bit),
        cmocka_unit_test(test_escapes),
        cmocka_unit_test(test_nul_rejected),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_trailing_and_stop_at_end),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_spans),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_reuse_and_errors_reset),
    };
    return cmocka_run_group_tests_name("json_doc", tests, NULL, NULL);
}
