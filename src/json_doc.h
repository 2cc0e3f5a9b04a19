/*
 * json_doc.h — usher's validating, allocation-light JSON reader for the normalizer's hot path.
 *
 * Accepts exactly what jansson 2.14's json_loadb(JSON_REJECT_DUPLICATES | JSON_DECODE_ANY)
 * accepts (tests/fuzz/fuzz_json_doc.c checks that differentially), and produces the same
 * values. The parse result is a flat array of nodes (a "tape") in document order: a container
 * is followed by its descendants, an object's children alternate key (a string node) and value.
 * Every node records the byte span of its text in the input. Strings are unescaped in place in
 * one copy of the input and are NUL-terminated. A document's memory (copy, nodes, parser
 * stack) is owned by the usher_jdoc and reused by the next parse into the same document.
 */
#ifndef USHER_JSON_DOC_H
#define USHER_JSON_DOC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* jansson's JSON_PARSER_MAX_DEPTH: deeper values are rejected as USHER_JERR_DEPTH. */
#define USHER_JDOC_MAX_DEPTH 2048u

typedef enum usher_jtype {
    USHER_JOBJECT,
    USHER_JARRAY,
    USHER_JSTRING,
    USHER_JINTEGER,
    USHER_JREAL,
    USHER_JTRUE,
    USHER_JFALSE,
    USHER_JNULL
} usher_jtype;

typedef struct usher_jnode {
    uint8_t type;    /* usher_jtype; the hidden node 0 has another value */
    uint8_t pad_[3];
    uint32_t n;      /* object: members; array: elements; string: bytes (without the NUL) */
    uint32_t idx;    /* this node's index in the tape */
    uint32_t next;   /* index one past this node's last descendant (idx + 1 for scalars) */
    uint32_t start;  /* byte span [start, end) of the value's text in the input */
    uint32_t end;
    union {
        const char *s;  /* string: unescaped, NUL-terminated */
        long long i;    /* integer */
        double d;       /* real */
        uint64_t keys;  /* object: a one-hash Bloom filter of its keys (usher_jv_getn) */
    } v;
} usher_jnode;

/* Error codes: the json_error_code values the normalizer tells apart. */
typedef enum usher_jerr {
    USHER_JERR_NONE = 0,
    USHER_JERR_END_OF_INPUT_EXPECTED, /* data after the value (EOF check on) */
    USHER_JERR_PREMATURE_END,         /* the input ends inside the value */
    USHER_JERR_INVALID_UTF8,
    USHER_JERR_DUPLICATE_KEY,
    USHER_JERR_DEPTH,                 /* nesting deeper than USHER_JDOC_MAX_DEPTH */
    USHER_JERR_OUT_OF_MEMORY,
    USHER_JERR_OTHER                  /* any other syntax error, numeric overflow, \u0000 */
} usher_jerr;

typedef struct usher_jerror {
    usher_jerr code;
    size_t position; /* byte offset where the error was found (jansson's error.position) */
    char text[160];  /* jansson's wording; only a duplicate key quotes input (the key, <= 20) */
} usher_jerror;

typedef struct usher_jframe usher_jframe;
typedef struct usher_jkey usher_jkey;

typedef struct usher_jdoc {
    usher_jnode *nodes; /* nodes[0] is hidden (holds the input pointer); the root is nodes[1] */
    size_t count, cap;
    char *buf;          /* the input's copy the strings live in */
    size_t bufcap;
    usher_jframe *frames;
    size_t framecap;
    usher_jkey *keys;   /* while parsing: the keys of the open objects, innermost last */
    size_t keycap;
    size_t end;         /* where the value ended: bytes consumed after a successful parse */
    size_t nul_dropped; /* NUL bytes skipped right after a number or literal, as jansson does;
                           jansson's positions are the ones here minus these */
    size_t depth;       /* after a successful parse: the deepest nesting of containers */
    uint32_t widest;    /* ... and the most members or elements of one container */
} usher_jdoc;

/* Parse flags. */
#define USHER_JDOC_STOP_AT_END 1u /* jansson's JSON_DISABLE_EOF_CHECK: data after the value
                                      is left alone; doc->end says where the value ended */

/* An empty document (no memory yet). */
void usher_jdoc_init(usher_jdoc *d);
/* Frees what the document owns; it may be reused after usher_jdoc_init. */
void usher_jdoc_free(usher_jdoc *d);
/* Frees a parsed document's parse scratch and spare node room; its value stays readable. For
 * documents kept side by side in numbers (one per JSON line). */
void usher_jdoc_trim(usher_jdoc *d);

/*
 * Parses len bytes of input into d (replacing what d held). Returns 0 and the root, or -1 with
 * *err filled (err may be NULL). input must outlive the use of node spans (usher_jv_text),
 * not of strings: those live in d. Thread-safe as long as d is not shared.
 */
int usher_jdoc_parse(usher_jdoc *d, const void *input, size_t len, unsigned flags,
                     usher_jerror *err);

/* The root value of a parsed document. */
static inline const usher_jnode *usher_jdoc_root(const usher_jdoc *d)
{
    return d->count > 1 ? &d->nodes[1] : NULL;
}

/* --- Lookups. Every one accepts NULL (and then answers false / NULL / 0), like jansson. --- */

static inline bool usher_jv_is_object(const usher_jnode *v)
{
    return v && v->type == USHER_JOBJECT;
}
static inline bool usher_jv_is_array(const usher_jnode *v)
{
    return v && v->type == USHER_JARRAY;
}
static inline bool usher_jv_is_string(const usher_jnode *v)
{
    return v && v->type == USHER_JSTRING;
}
static inline bool usher_jv_is_integer(const usher_jnode *v)
{
    return v && v->type == USHER_JINTEGER;
}
static inline bool usher_jv_is_real(const usher_jnode *v)
{
    return v && v->type == USHER_JREAL;
}
static inline bool usher_jv_is_true(const usher_jnode *v)
{
    return v && v->type == USHER_JTRUE;
}
static inline bool usher_jv_is_false(const usher_jnode *v)
{
    return v && v->type == USHER_JFALSE;
}
static inline bool usher_jv_is_boolean(const usher_jnode *v)
{
    return v && (v->type == USHER_JTRUE || v->type == USHER_JFALSE);
}
static inline bool usher_jv_is_null(const usher_jnode *v)
{
    return v && v->type == USHER_JNULL;
}

/* The string's bytes (NUL-terminated), or NULL when v is not a string. */
static inline const char *usher_jv_str(const usher_jnode *v)
{
    return usher_jv_is_string(v) ? v->v.s : NULL;
}
/* The string's length in bytes, 0 when v is not a string. */
static inline size_t usher_jv_strlen(const usher_jnode *v)
{
    return usher_jv_is_string(v) ? v->n : 0;
}
/* The integer's value, 0 when v is not an integer. */
static inline long long usher_jv_int(const usher_jnode *v)
{
    return usher_jv_is_integer(v) ? v->v.i : 0;
}
/* Elements of an array, 0 for anything else (json_array_size). */
static inline size_t usher_jarr_size(const usher_jnode *v)
{
    return usher_jv_is_array(v) ? v->n : 0;
}
/* Members of an object, 0 for anything else (json_object_size). */
static inline size_t usher_jobj_size(const usher_jnode *v)
{
    return usher_jv_is_object(v) ? v->n : 0;
}
/* The node after v and all its descendants: its next sibling when there is one. */
static inline const usher_jnode *usher_jv_skip(const usher_jnode *v)
{
    return v + (v->next - v->idx);
}
/* First element of an array / first key of an object (its value is key + 1); NULL if empty. */
static inline const usher_jnode *usher_jv_first(const usher_jnode *c)
{
    return usher_jarr_size(c) > 0 || usher_jobj_size(c) > 0 ? c + 1 : NULL;
}

/* obj[key] for a key of klen bytes (compared with its unescaped bytes), or NULL. Linear in
 * obj's members when they may hold the key; most absent keys are answered without a scan. */
const usher_jnode *usher_jv_getn(const usher_jnode *obj, const char *key, size_t klen);
/* obj[key] for a NUL-terminated key, or NULL (also for a NULL key). */
static inline const usher_jnode *usher_jv_get(const usher_jnode *obj, const char *key)
{
    return key != NULL ? usher_jv_getn(obj, key, strlen(key)) : NULL;
}
/* arr[i], or NULL. Linear in i. */
const usher_jnode *usher_jv_at(const usher_jnode *arr, size_t i);
/* The value's own text in the input (its span), with *len set; NULL for NULL. */
const char *usher_jv_text(const usher_jnode *v, size_t *len);

/* for (i = 0, e = each element of arr) — arr may be NULL or not an array (no iterations). */
#define usher_jarr_foreach(arr, i, e)                                                          \
    for ((i) = 0, (e) = usher_jv_first(usher_jv_is_array(arr) ? (arr) : NULL);                \
         (e) != NULL; (e) = ++(i) < (arr)->n ? usher_jv_skip(e) : NULL)

/* for (k = each key node of obj, v = its value) — obj may be NULL or not an object. */
#define usher_jobj_foreach(obj, i, k, v)                                                       \
    for ((i) = 0, (k) = usher_jv_first(usher_jv_is_object(obj) ? (obj) : NULL),                \
        (v) = (k) ? (k) + 1 : NULL;                                                            \
         (k) != NULL;                                                                          \
         (k) = ++(i) < (obj)->n ? usher_jv_skip(v) : NULL, (v) = (k) ? (k) + 1 : NULL)

#endif /* USHER_JSON_DOC_H */
