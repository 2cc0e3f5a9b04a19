/* json_guard.c — linear pre-scan of untrusted JSON bytes (see json_guard.h). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_guard.h"

size_t usher_utf8_seq_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    unsigned char lo = 0x80, hi = 0xBF;
    size_t need = 0;

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if (n < need + 1)
        return 0;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t k = 2; k <= need; k++) {
        if (s[k] < 0x80 || s[k] > 0xBF)
            return 0;
    }
    return need + 1;
}

size_t usher_utf8_valid_prefix(const void *buf, size_t len)
{
    const unsigned char *s = buf;
    size_t i = 0;

    while (i < len) {
        size_t k = usher_utf8_seq_len(s + i, len - i);
        if (k == 0)
            break;
        i += k;
    }
    return i;
}

/* Containers nested this deep are counted on the stack; deeper limits allocate. */
#define LOCAL_DEPTH 128

#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

/* True when none of the eight bytes at p ends or escapes a string or needs a look: no '"',
 * no '\\', no control character, no byte >= 0x80. */
static int plain8(const unsigned char *p)
{
    uint64_t x, q, b;

    memcpy(&x, p, 8);
    q = x ^ (ONES * '"');
    b = x ^ (ONES * '\\');
    return (((q - ONES) & ~q) | ((b - ONES) & ~b) | (x - ONES * 0x20) | x) & HIGHS ? 0 : 1;
}

/* Fills *err and returns -1. */
static int guard_fail(usher_json_guard_error *err, const char *reason, size_t offset,
                      const char *what)
{
    err->reason = reason;
    err->offset = offset;
    snprintf(err->detail, sizeof(err->detail), "%s at byte offset %zu", what, offset);
    return -1;
}

int usher_json_guard(const void *buf, size_t len, unsigned max_depth, size_t max_members,
                     usher_json_guard_error *err)
{
    const unsigned char *s = buf;
    size_t local[LOCAL_DEPTH + 1];
    size_t *commas = local; /* commas[d]: commas seen in the open container at depth d */
    unsigned depth = 0;
    int in_string = 0;
    int rc = -1;

    memset(err, 0, sizeof(*err));
    if (max_depth > USHER_JSON_GUARD_DEPTH_CAP)
        max_depth = USHER_JSON_GUARD_DEPTH_CAP;
    if (max_depth > LOCAL_DEPTH && (commas = calloc((size_t)max_depth + 1, sizeof(*commas))) ==
                                       NULL) {
        err->reason = "parse_error";
        snprintf(err->detail, sizeof(err->detail), "out of memory");
        goto out;
    }

    for (size_t i = 0; i < len; i++) {
        unsigned char c;

        /* Inside a string, skip eight plain bytes at a time (most of the input). */
        while (in_string && len - i >= 8 && plain8(s + i))
            i += 8;
        if (i >= len)
            break;
        c = s[i];

        if (c >= 0x80) {
            size_t k = usher_utf8_seq_len(s + i, len - i);
            if (k == 0) {
                guard_fail(err, "invalid_utf8", i, "invalid UTF-8");
                goto out;
            }
            i += k - 1;
            continue;
        }
        if (in_string) {
            if (c == '"') {
                in_string = 0;
            } else if (c == '\\') {
                if (i + 1 >= len)
                    break; /* truncated: jansson reports it */
                if (s[i + 1] == 'u' && i + 5 < len && memcmp(s + i + 2, "0000", 4) == 0) {
                    guard_fail(err, "parse_error", i, "escaped NUL (\\u0000) in a string");
                    goto out;
                }
                i++; /* the escaped character (the hex digits after a \u are plain ASCII) */
            } else if (c < 0x20) {
                char what[64];
                snprintf(what, sizeof(what), "raw control character 0x%02x in a string", c);
                guard_fail(err, "parse_error", i, what);
                goto out;
            }
            continue;
        }
        switch (c) {
        case '"':
            in_string = 1;
            break;
        case '{':
        case '[':
            if (depth >= max_depth) {
                char what[64];
                snprintf(what, sizeof(what), "nesting deeper than %u", max_depth);
                guard_fail(err, "max_depth_exceeded", i, what);
                goto out;
            }
            depth++;
            commas[depth] = 0;
            break;
        case '}':
        case ']':
            if (depth > 0) /* an unbalanced close is jansson's to report */
                depth--;
            break;
        case ',':
            if (depth > 0 && ++commas[depth] >= max_members) {
                char what[80];
                snprintf(what, sizeof(what), "more than %zu members in one object or array",
                         max_members);
                guard_fail(err, "too_many_members", i, what);
                goto out;
            }
            break;
        default:
            break;
        }
    }
    rc = 0;
out:
    if (commas != local)
        free(commas);
    return rc;
}
