/*
 * json_guard.h — a linear, non-recursive pre-scan of untrusted JSON bytes, run before the
 * bytes reach jansson (whose parser recurses). Used by normalize.c only.
 */
#ifndef USHER_JSON_GUARD_H
#define USHER_JSON_GUARD_H

#include <stddef.h>

/* The deepest nesting the guard lets through, whatever the caller asks for: jansson's own
 * recursion limit is 2048, so the guard always rejects first. */
#define USHER_JSON_GUARD_DEPTH_CAP 2000u

typedef struct usher_json_guard_error {
    const char *reason; /* static string: invalid_utf8, parse_error, max_depth_exceeded,
                           too_many_members */
    size_t offset;      /* byte offset of the offending byte */
    char detail[160];   /* never contains input bytes */
} usher_json_guard_error;

/*
 * Scans len bytes once, in O(len) time and O(max_depth) memory, and returns 0 when jansson may
 * parse them, or -1 with *err filled when they hold: invalid UTF-8 (overlong forms, surrogates,
 * code points above U+10FFFF, stray continuation bytes, FE/FF), a raw control character inside
 * a string, a \u0000 escape, nesting deeper than max_depth, or an object/array with more than
 * max_members members. It does not check the grammar: that is the JSON reader's job (json_doc.h).
 */
int usher_json_guard(const void *buf, size_t len, unsigned max_depth, size_t max_members,
                     usher_json_guard_error *err);

/* Returns the length of the longest valid UTF-8 prefix of buf (== len when all of it is). */
size_t usher_utf8_valid_prefix(const void *buf, size_t len);

/* The length (1..4) of the well-formed UTF-8 sequence starting at s[0] (n > 0 bytes
 * available), or 0 when it is ill-formed per Unicode table 3-7: no overlong forms, no UTF-16
 * surrogates (ED A0..BF), nothing above U+10FFFF, no C0/C1/F5..FF lead bytes. */
size_t usher_utf8_seq_len(const unsigned char *s, size_t n);

#endif /* USHER_JSON_GUARD_H */
