/* dlq.c — the dead-letter producer. See pipeline.h. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "pipeline.h"

struct usher_dlq {
    usher_app *app;
    rd_kafka_t *rk;
    const char *topic;
    pthread_t thread;
    atomic_bool stop;
};

/* One dead letter on its way to the broker; kept until acknowledged so it can be resent. */
typedef struct dlq_job {
    usher_dlq *d;
    usher_item *it;
    rd_kafka_headers_t *hdrs;
} dlq_job;

/* Formats wall-clock ms as ISO-8601 UTC. */
static void iso_time(int64_t ms, char *buf, size_t n)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    size_t k;

    gmtime_r(&s, &tm);
    k = strftime(buf, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + k, n - k, ".%03dZ", (int)(ms % 1000));
}

/* Queues job on the producer, waiting out a full local queue. Returns the librdkafka error. */
static rd_kafka_resp_err_t produce(usher_dlq *d, dlq_job *job)
{
    const rd_kafka_message_t *m = job->it->msg;
    rd_kafka_resp_err_t err;

    for (;;) {
        rd_kafka_headers_t *h = rd_kafka_headers_copy(job->hdrs);
        err = rd_kafka_producev(d->rk, RD_KAFKA_V_TOPIC(d->topic),
                                RD_KAFKA_V_VALUE(m->payload, m->len),
                                RD_KAFKA_V_KEY(m->key, m->key_len), RD_KAFKA_V_HEADERS(h),
                                RD_KAFKA_V_OPAQUE(job), RD_KAFKA_V_END);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
            return err; /* the producer now owns h */
        rd_kafka_headers_destroy(h);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || atomic_load(&d->stop))
            return err;
        rd_kafka_poll(d->rk, 50);
    }
}

static void job_free(dlq_job *job)
{
    rd_kafka_headers_destroy(job->hdrs);
    free(job);
}

/* Delivery report: the item is done only once the broker has the dead letter. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque)
{
    dlq_job *job = rkm->_private;
    usher_dlq *d = job->d;
    usher_item *it = job->it;

    (void)rk;
    (void)opaque;
    if (rkm->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        usher_debug("dead letter for %s[%" PRId32 "]@%" PRId64 " written to %s", it->meta.topic,
                    it->meta.partition, it->meta.offset, d->topic);
        job_free(job);
        usher_item_finish(d->app, it, true);
        return;
    }
    if (atomic_load(&d->stop) || rkm->err == RD_KAFKA_RESP_ERR__PURGE_QUEUE ||
        rkm->err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT) {
        job_free(job);
        usher_item_finish(d->app, it, false); /* redelivered to the next owner */
        return;
    }
    it->dlq_attempts++;
    usher_warn("dead letter for %s[%" PRId32 "]@%" PRId64 " failed (%s), attempt %d; retrying",
               it->meta.topic, it->meta.partition, it->meta.offset, rd_kafka_err2str(rkm->err),
               it->dlq_attempts);
    if (produce(d, job) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        job_free(job);
        usher_item_finish(d->app, it, false);
    }
}

/* True for [kafka] properties about reaching the cluster (security, sockets, DNS, ...), which
 * the dead-letter producer needs too; consumer tuning stays with the consumer. */
static bool shared_with_producer(const char *key)
{
    static const char *const prefixes[] = { "security.", "sasl.", "ssl.", "ssl_", "socket.",
                                            "broker.", "client.dns", "api.version", "metadata.",
                                            "reconnect.", "connections.", "enable.ssl", "debug",
                                            "log_level", "topic.metadata", "resolve" };
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
        if (strncmp(key, prefixes[i], strlen(prefixes[i])) == 0)
            return true;
    return false;
}

static void *dlq_thread(void *arg)
{
    usher_dlq *d = arg;

    pthread_setname_np(pthread_self(), "usher-dlq");

    while (!atomic_load(&d->stop))
        rd_kafka_poll(d->rk, 100);
    return NULL;
}

usher_dlq *usher_dlq_new(usher_app *app, char *errstr, size_t errstr_size)
{
    const usher_config *cfg = app->cfg;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    usher_dlq *d = calloc(1, sizeof(*d));
    char v[32];

    if (d == NULL || conf == NULL) {
        snprintf(errstr, errstr_size, "out of memory");
        goto fail;
    }
    d->app = app;
    d->topic = cfg->dlq_topic;
    atomic_init(&d->stop, false);
    for (size_t i = 0; i < cfg->kafka_props.count; i++) {
        const usher_kv *kv = &cfg->kafka_props.items[i];
        if (!shared_with_producer(kv->key))
            continue;
        if (rd_kafka_conf_set(conf, kv->key, kv->value, errstr, errstr_size) != RD_KAFKA_CONF_OK)
            goto fail;
    }
    /* Anything the consumer can receive must be forwardable. */
    const char *recv_max = "100000000";
    for (size_t i = 0; i < cfg->kafka_props.count; i++)
        if (strcmp(cfg->kafka_props.items[i].key, "receive.message.max.bytes") == 0)
            recv_max = cfg->kafka_props.items[i].value;
    long long mmax = atoll(recv_max);
    if (mmax > 1000000000)
        mmax = 1000000000;
    snprintf(v, sizeof(v), "%lld", mmax);
    const char *props[][2] = {
        { "bootstrap.servers", cfg->bootstrap_servers },
        { "enable.idempotence", "true" },
        { "acks", "all" },
        { "message.max.bytes", v },
        { "linger.ms", "5" },
        { "client.id", "usher-dlq" },
    };
    for (size_t i = 0; i < sizeof(props) / sizeof(props[0]); i++)
        if (rd_kafka_conf_set(conf, props[i][0], props[i][1], errstr, errstr_size) !=
            RD_KAFKA_CONF_OK)
            goto fail;
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    d->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, errstr_size);
    if (d->rk == NULL)
        goto fail;
    conf = NULL; /* rd_kafka_new() took ownership of conf */
    if (pthread_create(&d->thread, NULL, dlq_thread, d) != 0) {
        snprintf(errstr, errstr_size, "cannot start the dead-letter thread");
        goto fail;
    }
    return d;
fail:
    if (conf != NULL)
        rd_kafka_conf_destroy(conf);
    if (d != NULL && d->rk != NULL)
        rd_kafka_destroy(d->rk);
    free(d);
    return NULL;
}

int usher_dlq_send(usher_dlq *d, usher_item *it, const usher_dead_letter *dl)
{
    dlq_job *job = calloc(1, sizeof(*job));
    char num[32], first[40], last[40];

    if (job == NULL)
        return -1;
    job->d = d;
    job->it = it;
    job->hdrs = rd_kafka_headers_new(it->meta.header_count + 9);
    /* The original headers first (a Logto signature must survive a replay), then ours. */
    for (size_t i = 0; i < it->meta.header_count; i++) {
        const usher_header *h = &it->meta.headers[i];
        if (strncmp(h->name, "usher-", 6) != 0)
            rd_kafka_header_add(job->hdrs, h->name, -1, h->value, (ssize_t)h->value_len);
    }
    iso_time(dl->first_failure_ms, first, sizeof(first));
    iso_time(dl->last_failure_ms, last, sizeof(last));
    rd_kafka_header_add(job->hdrs, "usher-reason", -1, dl->reason, -1);
    rd_kafka_header_add(job->hdrs, "usher-detail", -1, dl->detail ? dl->detail : "", -1);
    rd_kafka_header_add(job->hdrs, "usher-handler", -1, dl->handler ? dl->handler : "", -1);
    snprintf(num, sizeof(num), "%d", dl->attempts);
    rd_kafka_header_add(job->hdrs, "usher-attempts", -1, num, -1);
    rd_kafka_header_add(job->hdrs, "usher-topic", -1, it->meta.topic, -1);
    snprintf(num, sizeof(num), "%" PRId32, it->meta.partition);
    rd_kafka_header_add(job->hdrs, "usher-partition", -1, num, -1);
    snprintf(num, sizeof(num), "%" PRId64, it->meta.offset);
    rd_kafka_header_add(job->hdrs, "usher-offset", -1, num, -1);
    rd_kafka_header_add(job->hdrs, "usher-first-failure", -1, first, -1);
    rd_kafka_header_add(job->hdrs, "usher-last-failure", -1, last, -1);
    if (produce(d, job) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        job_free(job);
        return -1;
    }
    return 0;
}

void usher_dlq_destroy(usher_dlq *d, int timeout_ms)
{
    if (d == NULL)
        return;
    if (rd_kafka_flush(d->rk, timeout_ms) != RD_KAFKA_RESP_ERR_NO_ERROR)
        usher_warn("%d dead letters still unacknowledged at shutdown; their records stay "
                   "uncommitted and will be redelivered", rd_kafka_outq_len(d->rk));
    atomic_store(&d->stop, true);
    pthread_join(d->thread, NULL);
    rd_kafka_purge(d->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_poll(d->rk, 0); /* serves the purge reports: their items finish as not done */
    rd_kafka_destroy(d->rk);
    free(d);
}
