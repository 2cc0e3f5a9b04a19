/* dlq_replay.c — see dlq_replay.h. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "dlq_replay.h"
#include "log.h"
#include "pipeline.h"
#include "redis.h"

const char usher_replay_help[] =
    "usage: usher dlq replay [-c FILE] [--handler NAME] [--reason REASON] [--dry-run]\n"
    "Re-produces dead-lettered records (value, key and original headers unchanged) to the\n"
    "topic they came from, optionally only those of one handler or reason. Each dead letter\n"
    "is replayed at most once; run it again after fixing a sink to replay what is left.\n";

/* The value of header name as a NUL-terminated copy in buf, or NULL. */
static const char *header(rd_kafka_headers_t *h, const char *name, char *buf, size_t n)
{
    const void *v = NULL;
    size_t len = 0;

    if (h == NULL || rd_kafka_header_get_last(h, name, &v, &len) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        v == NULL)
        return NULL;
    if (len >= n)
        len = n - 1;
    memcpy(buf, v, len);
    buf[len] = 0;
    return buf;
}

/* True when the comma list has name. */
static bool list_has(const char *list, const char *name)
{
    size_t len = strlen(name);

    for (const char *p = list; *p;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == len && strncmp(p, name, len) == 0)
            return true;
        p += n + (end ? 1 : 0);
    }
    return false;
}

typedef struct replay_state {
    int acked, failed;
} replay_state;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    replay_state *st = opaque;
    int *ok = m->_private;

    (void)rk;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        *ok = 1;
        st->acked++;
    } else {
        usher_err("replay delivery failed: %s", rd_kafka_err2str(m->err));
        st->failed++;
    }
}

/* Creates a client of the given type with the [kafka] connection settings. */
static rd_kafka_t *client(const usher_config *cfg, rd_kafka_type_t type, replay_state *st)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char err[512];
    rd_kafka_t *rk;

    if (rd_kafka_conf_set(conf, "bootstrap.servers", cfg->bootstrap_servers, err, sizeof(err)) !=
        RD_KAFKA_CONF_OK)
        goto fail;
    for (size_t i = 0; i < cfg->kafka_props.count; i++) {
        const usher_kv *kv = &cfg->kafka_props.items[i];
        if (strncmp(kv->key, "security.", 9) == 0 || strncmp(kv->key, "sasl.", 5) == 0 ||
            strncmp(kv->key, "ssl.", 4) == 0)
            if (rd_kafka_conf_set(conf, kv->key, kv->value, err, sizeof(err)) != RD_KAFKA_CONF_OK)
                goto fail;
    }
    if (type == RD_KAFKA_PRODUCER) {
        if (rd_kafka_conf_set(conf, "enable.idempotence", "true", err, sizeof(err)) !=
                RD_KAFKA_CONF_OK ||
            rd_kafka_conf_set(conf, "message.max.bytes", "1000000000", err, sizeof(err)) !=
                RD_KAFKA_CONF_OK)
            goto fail;
        rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
        rd_kafka_conf_set_opaque(conf, st);
    } else if (rd_kafka_conf_set(conf, "enable.partition.eof", "true", err, sizeof(err)) !=
                   RD_KAFKA_CONF_OK ||
               rd_kafka_conf_set(conf, "group.id", "usher-dlq-replay", err, sizeof(err)) !=
                   RD_KAFKA_CONF_OK) {
        goto fail;
    }
    rk = rd_kafka_new(type, conf, err, sizeof(err));
    if (rk == NULL)
        goto fail;
    return rk; /* rd_kafka_new() took ownership of conf */
fail:
    usher_err("kafka: %s", err);
    rd_kafka_conf_destroy(conf);
    return NULL;
}

int usher_dlq_replay(const usher_config *cfg, const usher_replay_filter *f)
{
    rd_kafka_t *cons = NULL, *prod = NULL;
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_topic_partition_list_t *assign = NULL;
    rd_kafka_topic_t *rkt = NULL;
    usher_redis_target t = { 0 };
    redisContext *rc = NULL;
    replay_state st = { 0 };
    char err[512];
    int64_t *ends = NULL;
    int nparts = 0, remaining = 0, replayed = 0, skipped = 0, seen_before = 0, status = 1;

    if (cfg->dlq_topic == NULL) {
        fprintf(stderr, "usher: no [dlq] topic is configured: nothing to replay\n");
        return 2;
    }
    if (usher_redis_parse_url(cfg->redis_url, &t, err, sizeof(err)) != 0 ||
        (rc = usher_redis_connect(&t, err, sizeof(err))) == NULL) {
        usher_err("%s", err);
        goto out;
    }
    if ((cons = client(cfg, RD_KAFKA_CONSUMER, &st)) == NULL ||
        (prod = client(cfg, RD_KAFKA_PRODUCER, &st)) == NULL)
        goto out;
    rkt = rd_kafka_topic_new(cons, cfg->dlq_topic, NULL);
    if (rd_kafka_metadata(cons, 0, rkt, &md, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        md->topic_cnt != 1 || md->topics[0].err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        usher_err("cannot read metadata of %s", cfg->dlq_topic);
        goto out;
    }
    nparts = md->topics[0].partition_cnt;
    ends = calloc((size_t)nparts + 1, sizeof(*ends));
    assign = rd_kafka_topic_partition_list_new(nparts);
    for (int i = 0; i < nparts; i++) {
        int32_t p = md->topics[0].partitions[i].id;
        int64_t lo = 0, hi = 0;
        if (rd_kafka_query_watermark_offsets(cons, cfg->dlq_topic, p, &lo, &hi, 10000) !=
            RD_KAFKA_RESP_ERR_NO_ERROR) {
            usher_err("cannot read the end of %s[%d]", cfg->dlq_topic, p);
            goto out;
        }
        ends[i] = hi;
        if (hi > lo) {
            rd_kafka_topic_partition_list_add(assign, cfg->dlq_topic, p)->offset = lo;
            remaining++;
        }
    }
    rd_kafka_assign(cons, assign);
    while (remaining > 0) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(cons, 1000);
        rd_kafka_headers_t *h = NULL;
        char topic[256], hname[128], reason[128], key[64];
        int ok = 0;

        if (m == NULL)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            remaining--;
            rd_kafka_message_destroy(m);
            continue;
        }
        int64_t end = 0;
        for (int i = 0; i < nparts; i++)
            if (md->topics[0].partitions[i].id == m->partition)
                end = ends[i];
        if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            usher_warn("%s", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        if (m->offset >= end) {
            rd_kafka_message_destroy(m);
            continue; /* newer than this run: leave for the next one */
        }
        rd_kafka_message_headers(m, &h);
        if (header(h, "usher-topic", topic, sizeof(topic)) == NULL) {
            usher_warn("%s[%" PRId32 "]@%" PRId64 " has no usher-topic header; skipped",
                       cfg->dlq_topic, m->partition, m->offset);
            skipped++;
            rd_kafka_message_destroy(m);
            continue;
        }
        header(h, "usher-handler", hname, sizeof(hname)) ? 0 : (hname[0] = 0);
        if ((f->handler && !list_has(hname, f->handler)) ||
            (f->reason && (!header(h, "usher-reason", reason, sizeof(reason)) ||
                           strcmp(reason, f->reason) != 0))) {
            skipped++;
            rd_kafka_message_destroy(m);
            continue;
        }
        snprintf(key, sizeof(key), "%" PRId32 ":%" PRId64, m->partition, m->offset);
        redisReply *r = redisCommand(rc, "SISMEMBER %s:dlq:replayed %s", cfg->key_prefix, key);
        if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
            usher_err("redis: %s", r ? r->str : rc->errstr);
            if (r != NULL)
                freeReplyObject(r);
            rd_kafka_message_destroy(m);
            goto out;
        }
        int before = (int)r->integer;
        freeReplyObject(r);
        if (before) {
            seen_before++;
            rd_kafka_message_destroy(m);
            continue;
        }
        printf("%s %s[%" PRId32 "]@%" PRId64 " -> %s\n", f->dry_run ? "would replay" : "replay",
               cfg->dlq_topic, m->partition, m->offset, topic);
        if (!f->dry_run) {
            rd_kafka_headers_t *out = rd_kafka_headers_new(8);
            size_t n = h ? rd_kafka_header_cnt(h) : 0;
            for (size_t i = 0; i < n; i++) {
                const char *name;
                const void *v;
                size_t len;
                if (rd_kafka_header_get_all(h, i, &name, &v, &len) == 0 &&
                    strncmp(name, "usher-", 6) != 0)
                    rd_kafka_header_add(out, name, -1, v, (ssize_t)len);
            }
            /* Only the handlers the dead letter was owed to run on the replayed record. */
            if (hname[0] != 0)
                rd_kafka_header_add(out, "usher-handlers", -1, hname, -1);
            if (rd_kafka_producev(prod, RD_KAFKA_V_TOPIC(topic),
                                  RD_KAFKA_V_VALUE(m->payload, m->len),
                                  RD_KAFKA_V_KEY(m->key, m->key_len),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                  RD_KAFKA_V_HEADERS(out), RD_KAFKA_V_OPAQUE(&ok),
                                  RD_KAFKA_V_END) != RD_KAFKA_RESP_ERR_NO_ERROR) {
                rd_kafka_headers_destroy(out);
                usher_err("cannot produce to %s", topic);
                rd_kafka_message_destroy(m);
                goto out;
            }
            /* One at a time: the replay mark must follow the broker's acknowledgement. */
            rd_kafka_flush(prod, 30000);
            if (!ok) {
                rd_kafka_message_destroy(m);
                goto out;
            }
            r = redisCommand(rc, "SADD %s:dlq:replayed %s", cfg->key_prefix, key);
            if (r != NULL)
                freeReplyObject(r);
        }
        replayed++;
        rd_kafka_message_destroy(m);
    }
    printf("%s %d record(s); %d did not match the filter; %d were replayed before\n",
           f->dry_run ? "would replay" : "replayed", replayed, skipped, seen_before);
    status = 0;
out:
    if (assign != NULL)
        rd_kafka_topic_partition_list_destroy(assign);
    if (md != NULL)
        rd_kafka_metadata_destroy(md);
    if (rkt != NULL)
        rd_kafka_topic_destroy(rkt);
    if (cons != NULL) {
        rd_kafka_consumer_close(cons);
        rd_kafka_destroy(cons);
    }
    if (prod != NULL) {
        rd_kafka_flush(prod, 10000);
        rd_kafka_destroy(prod);
    }
    if (rc != NULL)
        redisFree(rc);
    usher_redis_target_free(&t);
    free(ends);
    return status;
}
