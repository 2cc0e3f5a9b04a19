/*
 * json_doc.c — see json_doc.h.
 *
 * The lexer reads the input in the order jansson's does (including the one byte it looks past
 * a number or a literal), so that the first error found — and so its code — is the one jansson
 * reports: UTF-8 is validated as bytes are read, the first error set wins, and a string is
 * scanned to its closing quote before its \u escapes are checked for surrogates. The parser is
 * iterative (an explicit stack of open containers), so deep input cannot exhaust the C stack.
 */
#include <errno.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_doc.h"
#include "json_guard.h"

#define HIDDEN_TYPE 0xFFu
/* Objects with more members than this also get a hash table for the duplicate check (below
 * it, scanning its keys when its Bloom filter may hold the new one is quicker). */
#define DUP_LINEAR_MAX 64u
/* Bytes after the input's copy (and its NUL) that lex_string may read a word at a time. */
#define BUF_PAD 8u

enum {
    TOK_EOF = 0,
    TOK_INVALID = 256,
    TOK_STRING,
    TOK_INTEGER,
    TOK_REAL,
    TOK_TRUE,
    TOK_FALSE,
    TOK_NULL
};

/* A key of an open object, for the duplicate check: its key node. */
struct usher_jkey {
    uint32_t node;
};

struct usher_jframe {
    uint32_t node;   /* the open container */
    uint32_t keybase; /* its keys start here in the document's key stack */
    uint32_t *table; /* large objects: hash set of key node indices (0 = empty slot) */
    uint32_t tcap;   /* slots in table (a power of two) */
    uint64_t keys;   /* bit key_bit() set for each of its keys so far: most new keys of a
                        small object need no scan; pop() leaves it in the object's node */
};

typedef struct parser {
    usher_jdoc *d;
    const unsigned char *in; /* the caller's bytes */
    unsigned char *b;        /* d->buf: the copy, with a NUL at b[len] */
    size_t len, pos;         /* pos: bytes consumed (jansson's stream position) */
    size_t nframes;
    size_t keytop;           /* keys on the document's key stack (d->keys) */
    unsigned kbit;           /* has_key: key_bit() of the key it checked */
    int tok;
    size_t tok_start, tok_end; /* the current token's bytes */
    char *str;               /* TOK_STRING: unescaped, NUL-terminated, in b */
    size_t slen;
    bool snul;               /* the string holds a \u0000 */
    long long ival;
    double dval;
    usher_jerror *err;
    bool failed;             /* an error is set (the first one wins) */
} parser;

/* 1: a byte that ends the plain run of a string ('"', '\\', control, non-ASCII). */
static unsigned char str_stop[256];
/* 1: JSON whitespace. */
static unsigned char ws[256];
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;
/* "C" numeric locale for strtod_l: a '.' is the decimal point whatever setlocale says (jansson
 * converts to the current locale's point for the same effect). (locale_t)0 if unavailable. */
static locale_t c_locale;

/* Fills the byte classes and the C locale (once per process; constant afterwards). */
static void init_tables(void)
{
    c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    for (int c = 0; c < 256; c++) {
        str_stop[c] = (unsigned char)(c < 0x20 || c >= 0x80 || c == '"' || c == '\\');
        ws[c] = (unsigned char)(c == ' ' || c == '\t' || c == '\n' || c == '\r');
    }
}

/* Sets the error unless one is set already (jansson keeps the first). */
__attribute__((format(printf, 4, 5))) static void set_err(parser *p, usher_jerr code,
                                                         size_t pos, const char *fmt, ...)
{
    va_list ap;

    if (p->failed)
        return;
    p->failed = true;
    if (p->err == NULL)
        return;
    p->err->code = code;
    p->err->position = pos;
    va_start(ap, fmt);
    vsnprintf(p->err->text, sizeof(p->err->text), fmt, ap);
    va_end(ap);
}

/* jansson reads the byte at i (a look-ahead): an ill-formed UTF-8 sequence there is an error. */
static void read_at(parser *p, size_t i)
{
    if (i < p->len && p->b[i] >= 0x80 && usher_utf8_seq_len(p->b + i, p->len - i) == 0)
        set_err(p, USHER_JERR_INVALID_UTF8, i, "unable to decode byte 0x%x", p->b[i]);
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Checks the 4 hex digits after the 'u' at b[u] as jansson's scan does; returns the value or
 * -1 with the error set. */
static long scan_u4(parser *p, size_t u)
{
    long v = 0;

    for (size_t k = u + 1; k <= u + 4; k++) {
        int h;
        if (k >= p->len) {
            set_err(p, USHER_JERR_OTHER, p->len, "invalid escape");
            return -1;
        }
        read_at(p, k);
        h = hexval(p->b[k]);
        if (h < 0) {
            set_err(p, USHER_JERR_OTHER, k + 1, "invalid escape");
            return -1;
        }
        v = v * 16 + h;
    }
    return v;
}

/* Writes code point cp as UTF-8 at w; returns the bytes written. */
static size_t put_utf8(unsigned char *w, unsigned long cp)
{
    if (cp < 0x80) {
        w[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        w[0] = (unsigned char)(0xC0 | (cp >> 6));
        w[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        w[0] = (unsigned char)(0xE0 | (cp >> 12));
        w[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        w[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    w[0] = (unsigned char)(0xF0 | (cp >> 18));
    w[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    w[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    w[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Lexes the string whose opening quote is at p->pos, unescaping it in place. */
static void lex_string(parser *p)
{
    unsigned char *b = p->b;
    size_t r = p->pos + 1, w;
    char decode_err[48];

    decode_err[0] = '\0';
    p->tok = TOK_INVALID;
    p->snul = false;
    w = r;
    for (;;) {
        unsigned char c;
        if (w == r) { /* the common case: no escape so far, nothing to move */
            for (;;) { /* eight bytes at a time while none of them stops the run */
                uint64_t x, q, bs, stop;
                memcpy(&x, b + r, 8); /* within the copy's padding (BUF_PAD) */
                q = x ^ 0x2222222222222222ull;  /* '"' -> 0 */
                bs = x ^ 0x5C5C5C5C5C5C5C5Cull; /* '\\' -> 0 */
                stop = (((q - 0x0101010101010101ull) & ~q) | ((bs - 0x0101010101010101ull) & ~bs) |
                        ((x - 0x2020202020202020ull) & ~x) | x) &
                       0x8080808080808080ull;
                if (stop != 0) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
                    /* the lowest flag is exact (a borrow only flags bytes above a stop) */
                    r += (size_t)__builtin_ctzll(stop) / 8;
#else
                    while (!str_stop[b[r]])
                        r++;
#endif
                    break;
                }
                r += 8;
            }
            w = r;
        } else {
            while (!str_stop[b[r]])
                b[w++] = b[r++];
        }
        c = b[r];
        if (c == '"')
            break;
        if (r >= p->len) {
            set_err(p, USHER_JERR_PREMATURE_END, p->len, "premature end of input");
            return;
        }
        if (c < 0x20) {
            set_err(p, USHER_JERR_OTHER, r,
                    c == '\n' ? "unexpected newline" : "control character 0x%x", c);
            return;
        }
        if (c >= 0x80) {
            size_t n = usher_utf8_seq_len(b + r, p->len - r);
            if (n == 0) {
                set_err(p, USHER_JERR_INVALID_UTF8, r, "unable to decode byte 0x%x", c);
                return;
            }
            if (w != r)
                memmove(b + w, b + r, n);
            w += n;
            r += n;
            continue;
        }
        /* a backslash */
        if (r + 1 >= p->len) {
            set_err(p, USHER_JERR_OTHER, p->len, "invalid escape");
            return;
        }
        c = b[r + 1];
        if (c == 'u') {
            long v = scan_u4(p, r + 1);
            if (v < 0)
                return;
            r += 6;
            if (decode_err[0] != '\0')
                continue; /* jansson decodes only once the scan is through */
            if (v >= 0xD800 && v <= 0xDBFF) {
                if (r + 1 < p->len && b[r] == '\\' && b[r + 1] == 'u') {
                    long v2 = scan_u4(p, r + 1);
                    if (v2 < 0)
                        return;
                    r += 6;
                    if (v2 >= 0xDC00 && v2 <= 0xDFFF) {
                        v = ((v - 0xD800) << 10) + (v2 - 0xDC00) + 0x10000;
                    } else {
                        snprintf(decode_err, sizeof(decode_err),
                                 "invalid Unicode '\\u%04lX\\u%04lX'", v, v2);
                        continue;
                    }
                } else {
                    snprintf(decode_err, sizeof(decode_err), "invalid Unicode '\\u%04lX'", v);
                    continue;
                }
            } else if (v >= 0xDC00 && v <= 0xDFFF) {
                snprintf(decode_err, sizeof(decode_err), "invalid Unicode '\\u%04lX'", v);
                continue;
            }
            if (v == 0)
                p->snul = true;
            w += put_utf8(b + w, (unsigned long)v);
            continue;
        }
        switch (c) {
        case '"':
        case '\\':
        case '/':
            break;
        case 'b':
            c = '\b';
            break;
        case 'f':
            c = '\f';
            break;
        case 'n':
            c = '\n';
            break;
        case 'r':
            c = '\r';
            break;
        case 't':
            c = '\t';
            break;
        default:
            read_at(p, r + 1);
            set_err(p, USHER_JERR_OTHER, r + 2, "invalid escape");
            return;
        }
        b[w++] = c;
        r += 2;
    }
    p->pos = r + 1;
    if (decode_err[0] != '\0') {
        set_err(p, USHER_JERR_OTHER, p->pos, "%s", decode_err);
        return;
    }
    b[w] = '\0';
    p->str = (char *)b + p->tok_start + 1;
    p->slen = w - (p->tok_start + 1);
    p->tok = TOK_STRING;
}

static bool isdig(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* The one or more digits a fraction or an exponent needs, from `from`: true with *i past
 * them; false, with the error position where a digit is missing, when there are none. */
static bool digits(parser *p, size_t *i, size_t from)
{
    const unsigned char *b = p->b;
    size_t k = from;

    if (k >= p->len || !isdig(b[k])) {
        read_at(p, k);
        p->pos = k;
        return false;
    }
    while (k < p->len && isdig(b[k]))
        k++;
    *i = k;
    return true;
}

/* Lexes the number starting at p->pos ('-' or a digit) with jansson's grammar and limits. */
static void lex_number(parser *p)
{
    const unsigned char *b = p->b;
    size_t start = p->pos, i = start, len = p->len;
    bool neg = b[i] == '-';

    p->tok = TOK_INVALID;
    if (neg)
        i++;
    if (i < len && b[i] == '0') {
        i++;
        if (i < len && isdig(b[i])) {
            p->pos = i;
            return;
        }
    } else if (i < len && isdig(b[i])) {
        while (i < len && isdig(b[i]))
            i++;
    } else {
        read_at(p, i);
        p->pos = i;
        return;
    }
    if (i >= len || (b[i] != '.' && b[i] != 'e' && b[i] != 'E')) {
        /* an integer: strtoll's range, overflow is an error */
        size_t d0 = start + (neg ? 1 : 0), nd = i - d0;
        unsigned long long u = 0, lim = neg ? (unsigned long long)LLONG_MAX + 1u
                                            : (unsigned long long)LLONG_MAX;
        bool over = false;
        read_at(p, i);
        p->pos = i;
        for (size_t k = d0; k < i; k++) {
            unsigned d = (unsigned)(b[k] - '0');
            if (nd > 18 && (u > (lim - d) / 10)) {
                over = true;
                break;
            }
            u = u * 10 + d;
        }
        if (over) {
            set_err(p, USHER_JERR_OTHER, i, neg ? "too big negative integer" : "too big integer");
            return;
        }
        p->ival = neg ? (u == (unsigned long long)LLONG_MAX + 1u ? LLONG_MIN : -(long long)u)
                      : (long long)u;
        p->tok = TOK_INTEGER;
        return;
    }
    if (b[i] == '.' && !digits(p, &i, i + 1))
        return;
    if (i < len && (b[i] == 'e' || b[i] == 'E') &&
        !digits(p, &i, i + 1 + (i + 1 < len && (b[i + 1] == '+' || b[i + 1] == '-'))))
        return;
    read_at(p, i);
    p->pos = i;
    {
        /* strtod needs a terminator: borrow the byte after the number (b[len] is NUL). */
        unsigned char *t = p->b + i, save = *t;
        double v;
        *t = '\0';
        errno = 0;
        v = c_locale != (locale_t)0 ? strtod_l((const char *)b + start, NULL, c_locale)
                                    : strtod((const char *)b + start, NULL);
        *t = save;
        if ((v == HUGE_VAL || v == -HUGE_VAL) && errno == ERANGE) {
            set_err(p, USHER_JERR_OTHER, i, "real number overflow");
            return;
        }
        p->dval = v;
        p->tok = TOK_REAL;
    }
}

static bool isalph(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/*
 * After a number or a literal, jansson reads one byte ahead and puts it back; a NUL byte put
 * back is lost (its stream buffer is NUL-terminated), so it accepts "[1\0]" and "true\0". The
 * same here: the NUL is skipped, and counted (jansson's positions after it are one less).
 */
static void drop_nul(parser *p)
{
    p->tok_end = p->pos;
    if (p->pos < p->len && p->b[p->pos] == '\0' && !p->failed) {
        p->pos++;
        p->d->nul_dropped++;
    }
}

/* Reads the next token (jansson's lex_scan). */
static void lex(parser *p)
{
    const unsigned char *b = p->b;
    unsigned char c;

    while (ws[b[p->pos]])
        p->pos++;
    p->tok_start = p->pos;
    p->tok_end = p->len; /* set where the token ends; drop_nul may move pos past it */
    if (p->pos >= p->len) {
        p->pos = p->len;
        p->tok = TOK_EOF;
        return;
    }
    c = b[p->pos];
    switch (c) {
    case '{':
    case '}':
    case '[':
    case ']':
    case ':':
    case ',':
        p->pos++;
        p->tok = c;
        return;
    case '"':
        lex_string(p);
        return;
    default:
        break;
    }
    if (c == '-' || isdig(c)) {
        lex_number(p);
        if (p->tok != TOK_INVALID)
            drop_nul(p);
        return;
    }
    if (isalph(c)) {
        size_t s = p->pos, i = s;
        while (i < p->len && isalph(b[i]))
            i++;
        read_at(p, i);
        p->pos = i;
        if (i - s == 4 && memcmp(b + s, "true", 4) == 0)
            p->tok = TOK_TRUE;
        else if (i - s == 5 && memcmp(b + s, "false", 5) == 0)
            p->tok = TOK_FALSE;
        else if (i - s == 4 && memcmp(b + s, "null", 4) == 0)
            p->tok = TOK_NULL;
        else
            p->tok = TOK_INVALID;
        if (p->tok != TOK_INVALID)
            drop_nul(p);
        return;
    }
    p->tok = TOK_INVALID;
    if (c >= 0x80) {
        size_t n = usher_utf8_seq_len(b + p->pos, p->len - p->pos);
        if (n == 0) {
            set_err(p, USHER_JERR_INVALID_UTF8, p->pos, "unable to decode byte 0x%x", c);
            return;
        }
        p->pos += n;
        return;
    }
    p->pos++;
}

/* lex() for the next token, with a structural character that follows the last token directly
 * (no whitespace: compact JSON) read here, without the call. */
static inline void next_token(parser *p)
{
    unsigned char c = p->b[p->pos];

    if (c == ',' || c == ':' || c == '}' || c == ']') { /* (b[len] is NUL: never one of them) */
        p->tok_start = p->pos;
        p->tok_end = p->len;
        p->pos++;
        p->tok = c;
        return;
    }
    lex(p);
}

/* Appends a node; NULL (error set) when out of memory. */
static inline usher_jnode *emit(parser *p, usher_jtype type)
{
    usher_jdoc *d = p->d;
    usher_jnode *n;

    if (d->count == d->cap) {
        size_t cap = d->cap * 2;
        usher_jnode *nn = realloc(d->nodes, cap * sizeof(*nn));
        if (nn == NULL) {
            set_err(p, USHER_JERR_OUT_OF_MEMORY, p->pos, "out of memory");
            return NULL;
        }
        d->nodes = nn;
        d->cap = cap;
    }
    n = &d->nodes[d->count];
    n->type = (uint8_t)type;
    n->n = 0;
    n->idx = (uint32_t)d->count;
    n->next = (uint32_t)d->count + 1;
    n->start = (uint32_t)p->tok_start;
    n->end = (uint32_t)(p->tok_end < p->pos ? p->tok_end : p->pos);
    n->v.i = 0;
    d->count++;
    return n;
}

/* FNV-1a over the key bytes. */
static uint32_t key_hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u;

    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

/* Adds key node k to the frame's hash set (which has room); true if an equal key is there. */
static bool table_insert(usher_jframe *f, const usher_jnode *nodes, uint32_t k)
{
    const usher_jnode *kn = &nodes[k];
    uint32_t mask = f->tcap - 1, i = key_hash(kn->v.s, kn->n) & mask;

    while (f->table[i] != 0) {
        const usher_jnode *o = &nodes[f->table[i]];
        if (o->n == kn->n && memcmp(o->v.s, kn->v.s, kn->n) == 0)
            return true;
        i = (i + 1) & mask;
    }
    f->table[i] = k;
    return false;
}

/* Rebuilds the frame's hash set with room for twice the object's members. */
static int table_grow(usher_jframe *f, const usher_jnode *nodes)
{
    const usher_jnode *obj = &nodes[f->node];
    size_t cap = 64;
    const usher_jnode *k = NULL;

    while (cap < (size_t)obj->n * 4u)
        cap *= 2;
    free(f->table);
    f->table = calloc(cap, sizeof(*f->table));
    if (f->table == NULL)
        return -1;
    f->tcap = (uint32_t)cap;
    k = obj + 1;
    for (uint32_t m = 0; m < obj->n; m++) {
        (void)table_insert(f, nodes, k->idx);
        k = usher_jv_skip(k + 1);
    }
    return 0;
}

/* The bit of a key in its object's Bloom filter (usher_jnode.v.keys): a hash of its length
 * and its first and last bytes, cheap enough for every lookup to compute. */
static inline unsigned key_bit(const char *s, size_t n)
{
    return n == 0 ? 0u
                  : ((unsigned char)s[0] + (unsigned char)s[n - 1] * 3u + (unsigned)n * 5u) & 63u;
}

/* True when the object of frame f already has the key p->str; false otherwise. Leaves the
 * key's bit in p->kbit for add_key. */
static bool has_key(parser *p, usher_jframe *f)
{
    const usher_jdoc *d = p->d;
    const usher_jnode *nodes = d->nodes, *obj = &nodes[f->node];
    uint32_t mask, i;

    p->kbit = key_bit(p->str, p->slen);
    if (obj->n <= DUP_LINEAR_MAX) {
        if (!((f->keys >> p->kbit) & 1u))
            return false;
        for (size_t k = f->keybase; k < p->keytop; k++) {
            const usher_jnode *o = &nodes[d->keys[k].node];
            if (o->n == p->slen && memcmp(o->v.s, p->str, p->slen) == 0)
                return true;
        }
        return false;
    }
    mask = f->tcap - 1;
    for (i = key_hash(p->str, p->slen) & mask; f->table[i] != 0; i = (i + 1) & mask) {
        const usher_jnode *o = &nodes[f->table[i]];
        if (o->n == p->slen && memcmp(o->v.s, p->str, p->slen) == 0)
            return true;
    }
    return false;
}

/* Records the key node k just emitted (bit p->kbit) for the duplicate checks of its object.
 * 0, or -1 on OOM. */
static int add_key(parser *p, usher_jframe *f, uint32_t k)
{
    usher_jdoc *d = p->d;
    const usher_jnode *obj = &d->nodes[f->node];

    if (p->keytop == d->keycap) {
        size_t cap = d->keycap ? d->keycap * 2 : 64;
        usher_jkey *nk = realloc(d->keys, cap * sizeof(*nk));
        if (nk == NULL)
            return -1;
        d->keys = nk;
        d->keycap = cap;
    }
    d->keys[p->keytop++] = (usher_jkey){ .node = k };
    f->keys |= 1ull << p->kbit;
    if (obj->n < DUP_LINEAR_MAX)
        return 0;
    if (f->table == NULL || (obj->n + 1u) * 2u > f->tcap) {
        if (table_grow(f, d->nodes) != 0)
            return -1;
    }
    (void)table_insert(f, d->nodes, k);
    return 0;
}

/* Pushes a frame for the container node just emitted; -1 (error set) on OOM. */
static int push(parser *p)
{
    usher_jdoc *d = p->d;

    if (p->nframes == d->framecap) {
        size_t cap = d->framecap ? d->framecap * 2 : 32;
        usher_jframe *nf = realloc(d->frames, cap * sizeof(*nf));
        if (nf == NULL) {
            set_err(p, USHER_JERR_OUT_OF_MEMORY, p->pos, "out of memory");
            return -1;
        }
        d->frames = nf;
        d->framecap = cap;
    }
    d->frames[p->nframes].node = (uint32_t)(d->count - 1);
    d->frames[p->nframes].keybase = (uint32_t)p->keytop;
    d->frames[p->nframes].table = NULL;
    d->frames[p->nframes].tcap = 0;
    d->frames[p->nframes].keys = 0;
    p->nframes++;
    if (p->nframes > d->depth)
        d->depth = p->nframes;
    return 0;
}

/* Closes the innermost container: its span and next end here. */
static void pop(parser *p)
{
    usher_jdoc *d = p->d;
    usher_jframe *f = &d->frames[--p->nframes];
    usher_jnode *n = &d->nodes[f->node];

    n->next = (uint32_t)d->count;
    n->end = (uint32_t)p->pos;
    if (n->type == USHER_JOBJECT)
        n->v.keys = f->keys;
    if (n->n > d->widest)
        d->widest = n->n;
    p->keytop = f->keybase;
    free(f->table);
    f->table = NULL;
}

/* A syntax error at the current token. jansson calls it a premature end of input when the
 * token's saved text is empty: at the end of the input, or on a token that is one NUL byte. */
static void syntax_err(parser *p, const char *what)
{
    bool empty = p->tok == TOK_EOF || (p->tok == TOK_INVALID && p->b[p->tok_start] == '\0');

    set_err(p, empty ? USHER_JERR_PREMATURE_END : USHER_JERR_OTHER, p->pos, "%s", what);
}

/* The parser proper (jansson's parse_json / parse_value / parse_object / parse_array). */
static int parse(parser *p, unsigned flags)
{
    usher_jdoc *d = p->d;
    usher_jnode *n = NULL;
    usher_jframe *f = NULL;

    next_token(p);
value:
    if (p->nframes + 1 > USHER_JDOC_MAX_DEPTH) {
        set_err(p, USHER_JERR_DEPTH, p->pos, "maximum parsing depth reached");
        return -1;
    }
    switch (p->tok) {
    case TOK_STRING:
        if (p->snul) {
            set_err(p, USHER_JERR_OTHER, p->pos, "\\u0000 is not allowed without JSON_ALLOW_NUL");
            return -1;
        }
        if ((n = emit(p, USHER_JSTRING)) == NULL)
            return -1;
        n->n = (uint32_t)p->slen;
        n->v.s = p->str;
        goto after_value;
    case TOK_INTEGER:
        if ((n = emit(p, USHER_JINTEGER)) == NULL)
            return -1;
        n->v.i = p->ival;
        goto after_value;
    case TOK_REAL:
        if ((n = emit(p, USHER_JREAL)) == NULL)
            return -1;
        n->v.d = p->dval;
        goto after_value;
    case TOK_TRUE:
    case TOK_FALSE:
    case TOK_NULL:
        if (emit(p, p->tok == TOK_TRUE    ? USHER_JTRUE
                    : p->tok == TOK_FALSE ? USHER_JFALSE
                                          : USHER_JNULL) == NULL)
            return -1;
        goto after_value;
    case '{':
        if (emit(p, USHER_JOBJECT) == NULL || push(p) != 0)
            return -1;
        next_token(p);
        if (p->tok == '}') {
            pop(p);
            goto after_value;
        }
        goto key;
    case '[':
        if (emit(p, USHER_JARRAY) == NULL || push(p) != 0)
            return -1;
        next_token(p);
        if (p->tok == ']') {
            pop(p);
            goto after_value;
        }
        if (p->tok == TOK_EOF) {
            syntax_err(p, "']' expected");
            return -1;
        }
        goto value;
    case TOK_INVALID:
        syntax_err(p, "invalid token");
        return -1;
    default:
        syntax_err(p, "unexpected token");
        return -1;
    }

key:
    f = &d->frames[p->nframes - 1];
    if (p->tok != TOK_STRING) {
        syntax_err(p, "string or '}' expected");
        return -1;
    }
    if (p->snul) {
        set_err(p, USHER_JERR_OTHER, p->pos, "NUL byte in object key not supported");
        return -1;
    }
    if (has_key(p, f)) {
        size_t rl = p->pos - p->tok_start;
        if (rl <= 20)
            set_err(p, USHER_JERR_DUPLICATE_KEY, p->pos, "duplicate object key near '%.*s'",
                    (int)rl, (const char *)p->in + p->tok_start);
        else
            set_err(p, USHER_JERR_DUPLICATE_KEY, p->pos, "duplicate object key");
        return -1;
    }
    if ((n = emit(p, USHER_JSTRING)) == NULL)
        return -1;
    n->n = (uint32_t)p->slen;
    n->v.s = p->str;
    if (add_key(p, f, n->idx) != 0) {
        set_err(p, USHER_JERR_OUT_OF_MEMORY, p->pos, "out of memory");
        return -1;
    }
    next_token(p);
    if (p->tok != ':') {
        syntax_err(p, "':' expected");
        return -1;
    }
    next_token(p);
    goto value;

after_value:
    if (p->nframes == 0)
        goto done;
    f = &d->frames[p->nframes - 1];
    n = &d->nodes[f->node];
    n->n++;
    next_token(p);
    if (p->tok == ',') {
        next_token(p);
        if (n->type == USHER_JOBJECT)
            goto key;
        if (p->tok == TOK_EOF) {
            syntax_err(p, "']' expected");
            return -1;
        }
        goto value;
    }
    if (n->type == USHER_JOBJECT ? p->tok != '}' : p->tok != ']') {
        syntax_err(p, n->type == USHER_JOBJECT ? "'}' expected" : "']' expected");
        return -1;
    }
    pop(p);
    goto after_value;

done:
    d->end = p->pos;
    if (!(flags & USHER_JDOC_STOP_AT_END)) {
        next_token(p);
        if (p->tok != TOK_EOF) {
            set_err(p, USHER_JERR_END_OF_INPUT_EXPECTED, p->pos, "end of file expected");
            return -1;
        }
        d->end = p->pos;
    }
    return 0;
}

void usher_jdoc_init(usher_jdoc *d)
{
    memset(d, 0, sizeof(*d));
}

void usher_jdoc_free(usher_jdoc *d)
{
    if (d == NULL)
        return;
    free(d->nodes);
    free(d->buf);
    free(d->frames);
    free(d->keys);
    memset(d, 0, sizeof(*d));
}

void usher_jdoc_trim(usher_jdoc *d)
{
    free(d->frames);
    d->frames = NULL;
    d->framecap = 0;
    free(d->keys);
    d->keys = NULL;
    d->keycap = 0;
    if (d->count > 0 && d->cap > d->count) {
        usher_jnode *n = realloc(d->nodes, d->count * sizeof(*n));
        if (n != NULL) {
            d->nodes = n;
            d->cap = d->count;
        }
    }
}

int usher_jdoc_parse(usher_jdoc *d, const void *input, size_t len, unsigned flags,
                     usher_jerror *err)
{
    parser p;
    int rc = -1;

    pthread_once(&tables_once, init_tables);
    memset(&p, 0, sizeof(p));
    p.d = d;
    p.in = input;
    p.len = len;
    p.err = err;
    if (err != NULL) {
        err->code = USHER_JERR_NONE;
        err->position = 0;
        err->text[0] = '\0';
    }
    d->count = 0;
    d->end = 0;
    d->nul_dropped = 0;
    d->depth = 0;
    d->widest = 0;
    if (len >= UINT32_MAX - 1u || (input == NULL && len > 0)) {
        set_err(&p, USHER_JERR_OTHER, 0, "input too large");
        return -1;
    }
    if (d->bufcap < len + 1 + BUF_PAD) {
        char *nb = realloc(d->buf, len + 1 + BUF_PAD);
        if (nb == NULL)
            goto oom;
        d->buf = nb;
        d->bufcap = len + 1 + BUF_PAD;
    }
    if (len > 0)
        memcpy(d->buf, input, len);
    memset(d->buf + len, 0, 1 + BUF_PAD);
    p.b = (unsigned char *)d->buf;
    {
        size_t want = len / 8 + 16; /* a guess; emit grows the tape as needed */
        if (d->cap < want) {
            usher_jnode *nn = realloc(d->nodes, want * sizeof(*nn));
            if (nn == NULL)
                goto oom;
            d->nodes = nn;
            d->cap = want;
        }
    }
    /* node 0: hidden, remembers the input for usher_jv_text */
    memset(&d->nodes[0], 0, sizeof(d->nodes[0]));
    d->nodes[0].type = HIDDEN_TYPE;
    d->nodes[0].v.s = input;
    d->count = 1;
    rc = parse(&p, flags);
    while (p.nframes > 0) { /* after an error: drop the hash sets of open objects */
        free(d->frames[p.nframes - 1].table);
        p.nframes--;
    }
    if (rc != 0)
        d->count = 0;
    return rc;
oom:
    set_err(&p, USHER_JERR_OUT_OF_MEMORY, 0, "out of memory");
    return -1;
}

const usher_jnode *usher_jv_getn(const usher_jnode *obj, const char *key, size_t klen)
{
    const usher_jnode *k = NULL;

    if (!usher_jv_is_object(obj) || key == NULL)
        return NULL;
    if (!((obj->v.keys >> key_bit(key, klen)) & 1u)) /* (no key of obj has this bit) */
        return NULL;
    k = obj + 1;
    for (uint32_t m = 0; m < obj->n; m++) {
        /* (the first byte first: most keys of the same length differ there) */
        if (k->n == klen && (klen == 0 || (k->v.s[0] == key[0] &&
                                           memcmp(k->v.s, key, klen) == 0)))
            return k + 1;
        k = usher_jv_skip(k + 1);
    }
    return NULL;
}

const usher_jnode *usher_jv_at(const usher_jnode *arr, size_t i)
{
    const usher_jnode *e = NULL;

    if (!usher_jv_is_array(arr) || i >= arr->n)
        return NULL;
    e = arr + 1;
    while (i-- > 0)
        e = usher_jv_skip(e);
    return e;
}

const char *usher_jv_text(const usher_jnode *v, size_t *len)
{
    const usher_jnode *hidden = NULL;

    if (v == NULL) {
        if (len != NULL)
            *len = 0;
        return NULL;
    }
    hidden = v - v->idx;
    if (len != NULL)
        *len = v->end - v->start;
    return hidden->v.s + v->start;
}
