/*
 * fuzz_config.c — libFuzzer target for usher_config_load (src/config.c).
 *
 * The input is the configuration file: written to a memfd and loaded through its
 * /proc/self/fd/N path (a temp file when memfd_create is not available), so nothing touches
 * the disk. LLVMFuzzerInitialize sets a few environment variables for ${VAR} /
 * ${VAR:-default} expansion (tests/fuzz/seeds/config/ and config.dict use them).
 *
 * After each load the result is checked against config.h: on failure *cfg is all zero and the
 * error is "PATH: ..." or "PATH:LINE: ..." within errstr_size (the buffer is sized exactly, and
 * sometimes tiny or absent, so ASan sees any overrun); on success the required fields are set
 * and the normalizer options point into the config's own arrays — and they are used once, on
 * two small records. usher_config_free is then called twice (documented as safe).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"
#include "normalize.h"

#define CHECK(cond, ...)                                                                       \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "fuzz_config: contract violated: %s: ", #cond);                    \
            fprintf(stderr, __VA_ARGS__);                                                      \
            fputc('\n', stderr);                                                               \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

static int conf_fd = -1;
static char conf_path[64];

/* Two records the loaded [normalize] options are tried on: a Logto hook (signing key,
 * type_map) and a CloudEvent with a custom type (type_map). */
static const char logto_value[] =
    "{\"hookId\":\"h1\",\"event\":\"PostSignIn\",\"createdAt\":\"2024-04-02T09:40:02.123Z\","
    "\"interactionEvent\":\"SignIn\",\"userId\":\"u1\",\"user\":{\"id\":\"u1\","
    "\"primaryEmail\":\"a@example.com\"}}";
static const char ce_value[] =
    "{\"specversion\":\"1.0\",\"id\":\"e1\",\"source\":\"/idp\",\"type\":"
    "\"com.example.user.logged_in\",\"time\":\"2024-04-02T09:40:02Z\",\"data\":{\"user\":"
    "{\"id\":\"u1\",\"email\":\"a@example.com\"}}}";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static char long_value[3001];

    (void)argc;
    (void)argv;
    memset(long_value, 'x', sizeof(long_value) - 1);
    setenv("USHER_FUZZ_BOOTSTRAP", "127.0.0.1:9092,[::1]:9093", 1);
    setenv("USHER_FUZZ_GROUP", "usher-fuzz", 1);
    setenv("USHER_FUZZ_TOPICS", "user-events, auth0-post-login", 1);
    setenv("USHER_FUZZ_EMPTY", "", 1);
    setenv("USHER_FUZZ_SECRET", "p;a#s=s ${USHER_FUZZ_GROUP} $HOME", 1); /* not re-expanded */
    setenv("USHER_FUZZ_NUMBER", "8", 1);
    setenv("USHER_FUZZ_LONG", long_value, 1);
    unsetenv("USHER_FUZZ_UNSET");

    conf_fd = memfd_create("usher-fuzz.conf", MFD_CLOEXEC);
    if (conf_fd >= 0) {
        snprintf(conf_path, sizeof(conf_path), "/proc/self/fd/%d", conf_fd);
    } else {
        const char *tmp = getenv("TMPDIR");
        snprintf(conf_path, sizeof(conf_path), "%s/usher-fuzz-XXXXXX.conf",
                 tmp && strlen(tmp) < 32 ? tmp : "/tmp");
        conf_fd = mkstemps(conf_path, 5);
        if (conf_fd < 0) {
            fprintf(stderr, "fuzz_config: cannot create a config file: %s\n", strerror(errno));
            abort();
        }
    }
    return 0;
}

static void write_input(const uint8_t *data, size_t size)
{
    size_t off = 0;

    if (ftruncate(conf_fd, 0) != 0)
        abort();
    while (off < size) {
        ssize_t w = pwrite(conf_fd, data + off, size - off, (off_t)off);
        if (w <= 0)
            abort();
        off += (size_t)w;
    }
}

static void try_normalize(const usher_config *cfg, const char *value, size_t len)
{
    usher_kafka_meta meta;
    usher_batch b;

    memset(&meta, 0, sizeof(meta));
    meta.topic = cfg->topic_count ? cfg->topics[0] : "events";
    meta.timestamp_ms = -1;
    (void)usher_normalize(&cfg->norm, &meta, value, len, &b);
    usher_batch_release(&b);
}

static void check_loaded(const usher_config *cfg)
{
    CHECK(cfg->path != NULL && strcmp(cfg->path, conf_path) == 0, "path");
    CHECK(cfg->bootstrap_servers != NULL && cfg->bootstrap_servers[0] != '\0',
          "bootstrap.servers is required");
    CHECK(cfg->group_id != NULL && cfg->group_id[0] != '\0', "group.id is required");
    CHECK(cfg->topic_count >= 1 && cfg->topics != NULL, "at least one topic");
    CHECK(cfg->topics[cfg->topic_count] == NULL, "topics is NULL-terminated");
    for (size_t i = 0; i < cfg->topic_count; i++)
        CHECK(cfg->topics[i] != NULL && cfg->topics[i][0] != '\0', "topic %zu is empty", i);
    CHECK(cfg->redis_url != NULL && cfg->key_prefix != NULL, "redis defaults");
    CHECK(cfg->norm.type_aliases == cfg->type_aliases &&
              cfg->norm.type_alias_count == cfg->type_alias_count,
          "norm.type_aliases points into the config");
    CHECK(cfg->norm.topic_defaults == cfg->topic_defaults &&
              cfg->norm.topic_default_count == cfg->topic_default_count,
          "norm.topic_defaults points into the config");
    CHECK(cfg->norm.logto_signing_key == cfg->logto_signing_key,
          "norm.logto_signing_key points into the config");
    for (size_t i = 0; i < cfg->type_alias_count; i++)
        CHECK(cfg->type_aliases[i].name != NULL, "type_map entry %zu", i);
    for (size_t i = 0; i < cfg->topic_default_count; i++)
        CHECK(cfg->topic_defaults[i].topic != NULL, "topic default %zu", i);
    for (size_t i = 0; i < cfg->handler_count; i++) {
        const usher_handler_section *h = &cfg->handlers[i];
        CHECK(h->name != NULL, "handler %zu has no name", i);
        for (size_t k = 0; k < h->keys.count; k++)
            CHECK(h->keys.items[k].key != NULL && h->keys.items[k].value != NULL,
                  "handler %s key %zu", h->name, k);
    }
    for (size_t k = 0; k < cfg->kafka_props.count; k++)
        CHECK(cfg->kafka_props.items[k].key != NULL && cfg->kafka_props.items[k].value != NULL,
              "kafka property %zu", k);
    try_normalize(cfg, logto_value, sizeof(logto_value) - 1);
    try_normalize(cfg, ce_value, sizeof(ce_value) - 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t err_sizes[] = {512, 48, 1, 0};
    static const usher_config zero;
    usher_config cfg;
    size_t err_size = err_sizes[size % 4];
    char *err = err_size ? malloc(err_size) : NULL;
    size_t plen = strlen(conf_path);
    int rc;

    if (err_size && err == NULL)
        abort();
    if (err)
        memset(err, 'Z', err_size);
    write_input(data, size);
    memset(&cfg, 0xA5, sizeof(cfg)); /* usher_config_load must not read what it was given */
    rc = usher_config_load(conf_path, &cfg, err, err_size);
    CHECK(rc == 0 || rc == -1, "usher_config_load returned %d", rc);
    if (err)
        CHECK(memchr(err, '\0', err_size) != NULL, "errstr is not NUL-terminated");
    if (rc == 0) {
        check_loaded(&cfg);
    } else {
        CHECK(memcmp(&cfg, &zero, sizeof(cfg)) == 0, "a failed load leaves *cfg freed (zero)");
        if (err_size > plen + 2) {
            CHECK(strncmp(err, conf_path, plen) == 0 && err[plen] == ':' && err[plen + 1] != '\0',
                  "error '%s' is not 'PATH: message' or 'PATH:LINE: message'", err);
        }
    }
    usher_config_free(&cfg);
    CHECK(memcmp(&cfg, &zero, sizeof(cfg)) == 0, "usher_config_free leaves *cfg zero");
    usher_config_free(&cfg);
    free(err);
    return 0;
}
