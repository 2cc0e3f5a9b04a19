/*
 * normalize_bench — how fast the normalizer is, next to its parts, on the valid fixtures:
 * the JSON pre-scan alone, json_doc's parse alone (what usher_normalize uses, into one
 * document reused from record to record), jansson's parse alone (the reference json_doc is
 * fuzzed against), and the whole usher_normalize. Single thread, in memory, no Kafka.
 * Usage: normalize_bench FIXTURES_DIR [ITERATIONS [STAGE...]]
 * STAGE (guard, doc, jansson, normalize) runs only those stages, e.g. under perf.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>

#include "json_doc.h"
#include "json_guard.h"
#include "normalize.h"

/* True when stage is to run: no stage named on the command line, or this one. */
static int wanted(int argc, char **argv, const char *stage)
{
    for (int i = 3; i < argc; i++)
        if (strcmp(argv[i], stage) == 0)
            return 1;
    return argc <= 3;
}

typedef struct sample {
    char *data;
    size_t len;
} sample;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Loads every *.json value file under dir (one level of subfolders, bad/ and headers skipped). */
static size_t load(const char *dir, sample *out, size_t max)
{
    size_t n = 0;
    DIR *d = opendir(dir);
    struct dirent *e;

    while (d != NULL && (e = readdir(d)) != NULL && n < max) {
        char sub[1024];
        DIR *sd;
        struct dirent *f;
        if (e->d_name[0] == '.' || strcmp(e->d_name, "bad") == 0)
            continue;
        snprintf(sub, sizeof(sub), "%s/%s", dir, e->d_name);
        if ((sd = opendir(sub)) == NULL)
            continue;
        while ((f = readdir(sd)) != NULL && n < max) {
            char path[2048];
            FILE *fp;
            struct stat st;
            if (strstr(f->d_name, ".json") == NULL || strstr(f->d_name, "headers") != NULL)
                continue;
            snprintf(path, sizeof(path), "%s/%s", sub, f->d_name);
            if (stat(path, &st) != 0 || (fp = fopen(path, "rb")) == NULL)
                continue;
            out[n].data = malloc((size_t)st.st_size + 1);
            out[n].len = fread(out[n].data, 1, (size_t)st.st_size, fp);
            fclose(fp);
            n++;
        }
        closedir(sd);
    }
    if (d != NULL)
        closedir(d);
    return n;
}

int main(int argc, char **argv)
{
    static sample s[256];
    size_t n, bytes = 0;
    long iters = argc > 2 ? atol(argv[2]) : 2000;
    usher_norm_options opt;
    usher_kafka_meta meta = { .topic = "user-events", .timestamp_ms = 1700000000000 };
    usher_json_guard_error ge;
    usher_jdoc doc;
    double t0, t_guard = 0, t_doc = 0, t_parse = 0, t_norm = 0;

    if (argc < 2) {
        fprintf(stderr, "usage: normalize_bench FIXTURES_DIR [ITERATIONS [STAGE...]]\n");
        return 2;
    }
    n = load(argv[1], s, 256);
    for (size_t i = 0; i < n; i++)
        bytes += s[i].len;
    usher_norm_options_init(&opt);

    t0 = now_s();
    for (long it = 0; it < iters && wanted(argc, argv, "guard"); it++)
        for (size_t i = 0; i < n; i++)
            usher_json_guard(s[i].data, s[i].len, 64, 10000, &ge);
    t_guard = now_s() - t0;

    usher_jdoc_init(&doc);
    t0 = now_s();
    for (long it = 0; it < iters && wanted(argc, argv, "doc"); it++)
        for (size_t i = 0; i < n; i++) {
            usher_jerror e;
            if (usher_jdoc_parse(&doc, s[i].data, s[i].len, 0, &e) != 0 && it == 0)
                fprintf(stderr, "note: fixture %zu is not one JSON text (%s): JSON Lines?\n", i,
                        e.text);
        }
    t_doc = now_s() - t0;
    usher_jdoc_free(&doc);

    t0 = now_s();
    for (long it = 0; it < iters && wanted(argc, argv, "jansson"); it++)
        for (size_t i = 0; i < n; i++) {
            json_error_t e;
            json_t *r = json_loadb(s[i].data, s[i].len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY,
                                   &e);
            json_decref(r);
        }
    t_parse = now_s() - t0;

    t0 = now_s();
    for (long it = 0; it < iters && wanted(argc, argv, "normalize"); it++)
        for (size_t i = 0; i < n; i++) {
            usher_batch b;
            meta.offset = it;
            usher_normalize(&opt, &meta, s[i].data, s[i].len, &b);
            usher_batch_release(&b);
        }
    t_norm = now_s() - t0;

    double recs = (double)n * (double)iters, mb = (double)bytes * (double)iters / 1e6;
    printf("%zu fixtures, %.0f bytes on average, %ld iterations\n", n, (double)bytes / (double)n,
           iters);
    printf("%-18s %12s %10s %10s\n", "stage", "records/s", "MB/s", "us/record");
    const char *names[] = { "guard", "doc", "jansson", "normalize" };
    const char *labels[] = { "json pre-scan", "json_doc parse", "jansson parse",
                             "usher_normalize" };
    double times[] = { t_guard, t_doc, t_parse, t_norm };
    for (size_t k = 0; k < 4; k++)
        if (wanted(argc, argv, names[k]))
            printf("%-18s %12.0f %10.1f %10.2f\n", labels[k], recs / times[k], mb / times[k],
                   times[k] / recs * 1e6);
    if (wanted(argc, argv, "doc") && wanted(argc, argv, "jansson"))
        printf("json_doc parse is %.1fx jansson's\n", t_parse / t_doc);
    return 0;
}
