/*
 * fuzz_json_doc.c — differential libFuzzer target: src/json_doc.c against jansson, the
 * reference implementation.
 *
 * Every input is parsed twice by each side: with the EOF check (json_loadb with
 * JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, usher_jdoc_parse with no flags), and without it
 * (JSON_DISABLE_EOF_CHECK, USHER_JDOC_STOP_AT_END, as JSON Lines are read). Both must accept or
 * both reject; on rejection the error code (as normalize.c tells them apart) and the byte
 * position must match (jansson's positions do not count the NUL bytes it drops after a number
 * or a literal: usher_jdoc.nul_dropped); on acceptance the trees must be equal (types, string
 * bytes, integers, reals bit for bit), the end position must match, and every node's span must
 * hold its text. Any difference aborts, so libFuzzer keeps the input.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "json_doc.h"

#define CHECK(cond, ...)                                                                       \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "fuzz_json_doc: json_doc and jansson differ: %s: ", #cond);        \
            fprintf(stderr, __VA_ARGS__);                                                      \
            fputc('\n', stderr);                                                               \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

/* jansson's error code as the usher_jerr class normalize.c maps to a reason. */
static usher_jerr jansson_class(const json_error_t *e)
{
    switch (json_error_code(e)) {
    case json_error_end_of_input_expected:
        return USHER_JERR_END_OF_INPUT_EXPECTED;
    case json_error_premature_end_of_input:
        return USHER_JERR_PREMATURE_END;
    case json_error_invalid_utf8:
        return USHER_JERR_INVALID_UTF8;
    case json_error_duplicate_key:
        return USHER_JERR_DUPLICATE_KEY;
    case json_error_stack_overflow:
        return USHER_JERR_DEPTH;
    case json_error_out_of_memory:
        return USHER_JERR_OUT_OF_MEMORY;
    default:
        return USHER_JERR_OTHER;
    }
}

/* Aborts unless node n (and its descendants) equals j; checks spans against the input. */
static void same_tree(const usher_jnode *n, const json_t *j, const uint8_t *in, size_t size)
{
    size_t i;

    CHECK(n->start < n->end && n->end <= size, "span [%u, %u) of %zu", n->start, n->end, size);
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        const usher_jnode *k, *v;
        CHECK(n->type == USHER_JOBJECT, "type %d, want object", n->type);
        CHECK(in[n->start] == '{' && in[n->end - 1] == '}', "object span");
        CHECK(n->n == json_object_size(j), "%u members, want %zu", n->n, json_object_size(j));
        usher_jobj_foreach(n, i, k, v) {
            const json_t *jv = json_object_getn(j, k->v.s, k->n);
            CHECK(k->type == USHER_JSTRING, "key type %d", k->type);
            CHECK(jv != NULL, "key \"%s\" not in jansson's object", k->v.s);
            if (i < 4) /* (a lookup is a scan: for every member, a wide object took minutes) */
                CHECK(usher_jv_get(n, k->v.s) == v || strlen(k->v.s) != k->n, "jv_get misses");
            same_tree(v, jv, in, size);
        }
        CHECK(i == n->n, "iterated %zu members of %u", i, n->n);
        break;
    }
    case JSON_ARRAY: {
        const usher_jnode *e;
        CHECK(n->type == USHER_JARRAY, "type %d, want array", n->type);
        CHECK(in[n->start] == '[' && in[n->end - 1] == ']', "array span");
        CHECK(n->n == json_array_size(j), "%u elements, want %zu", n->n, json_array_size(j));
        usher_jarr_foreach(n, i, e) {
            same_tree(e, json_array_get(j, i), in, size);
            if (i < 4)
                CHECK(usher_jv_at(n, i) == e, "jv_at(%zu)", i);
        }
        CHECK(i == n->n, "iterated %zu elements of %u", i, n->n);
        break;
    }
    case JSON_STRING:
        CHECK(n->type == USHER_JSTRING, "type %d, want string", n->type);
        CHECK(in[n->start] == '"' && in[n->end - 1] == '"', "string span");
        CHECK(n->n == json_string_length(j) &&
                  memcmp(n->v.s, json_string_value(j), n->n) == 0 && n->v.s[n->n] == '\0',
              "string bytes (%u vs %zu)", n->n, json_string_length(j));
        break;
    case JSON_INTEGER:
        CHECK(n->type == USHER_JINTEGER, "type %d, want integer", n->type);
        CHECK(n->v.i == json_integer_value(j), "%lld vs %lld", n->v.i,
              (long long)json_integer_value(j));
        break;
    case JSON_REAL: {
        double a = n->v.d, b = json_real_value(j);
        CHECK(n->type == USHER_JREAL, "type %d, want real", n->type);
        CHECK(memcmp(&a, &b, sizeof(a)) == 0, "%.17g vs %.17g", a, b);
        break;
    }
    case JSON_TRUE:
        CHECK(n->type == USHER_JTRUE, "type %d, want true", n->type);
        break;
    case JSON_FALSE:
        CHECK(n->type == USHER_JFALSE, "type %d, want false", n->type);
        break;
    case JSON_NULL:
        CHECK(n->type == USHER_JNULL, "type %d, want null", n->type);
        break;
    }
}

/* One differential run in one mode. */
static void run(usher_jdoc *d, const uint8_t *data, size_t size, int stop_at_end)
{
    json_error_t je;
    usher_jerror ue;
    size_t jflags = JSON_REJECT_DUPLICATES | JSON_DECODE_ANY;
    json_t *j = NULL;
    int rc;

    if (stop_at_end)
        jflags |= JSON_DISABLE_EOF_CHECK;
    j = json_loadb((const char *)data, size, jflags, &je);
    rc = usher_jdoc_parse(d, data, size, stop_at_end ? USHER_JDOC_STOP_AT_END : 0, &ue);
    CHECK((j != NULL) == (rc == 0), "mode %d: jansson %s (%s), json_doc %s (%s)", stop_at_end,
          j ? "accepts" : "rejects", j ? "" : je.text, rc == 0 ? "accepts" : "rejects",
          rc == 0 ? "" : ue.text);
    if (j == NULL) {
        CHECK(jansson_class(&je) == ue.code, "mode %d: code %d (%s) vs %d (%s)", stop_at_end,
              (int)jansson_class(&je), je.text, (int)ue.code, ue.text);
        CHECK((size_t)je.position == ue.position - d->nul_dropped,
              "mode %d: position %d (%s) vs %zu - %zu (%s)", stop_at_end, je.position, je.text,
              ue.position, d->nul_dropped, ue.text);
        return;
    }
    CHECK((size_t)je.position == d->end - d->nul_dropped, "mode %d: end %d vs %zu - %zu",
          stop_at_end, je.position, d->end, d->nul_dropped);
    same_tree(usher_jdoc_root(d), j, data, size);
    json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    usher_jdoc d;

    usher_jdoc_init(&d);
    run(&d, data, size, 0);
    run(&d, data, size, 1); /* the document's memory is reused */
    usher_jdoc_free(&d);
    return 0;
}

#ifdef USHER_JSON_DOC_DIFF_MAIN
/* Without libFuzzer: runs the comparison over the files named on the command line. */
int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        static uint8_t buf[8 << 20];
        size_t n;
        if (f == NULL)
            continue;
        n = fread(buf, 1, sizeof(buf), f);
        fclose(f);
        uint8_t *copy = malloc(n ? n : 1);
        memcpy(copy, buf, n);
        LLVMFuzzerTestOneInput(copy, n);
        free(copy);
    }
    return 0;
}
#endif
