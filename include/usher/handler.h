/*
 * usher/handler.h — the one header a handler author needs.
 *
 * A handler is one const struct filled with designated initializers:
 *
 *     static usher_result handle(usher_ctx *ctx, const usher_event *ev, void *state);
 *
 *     const usher_handler usher_handler_hello = {
 *         .abi_version    = USHER_HANDLER_ABI_VERSION,
 *         .name           = "hello",            // its config section is [handler.hello]
 *         .description    = "logs every signup",
 *         .default_events = "signup",
 *         .config_keys    = hello_keys,         // { {"greeting", "hi", "what to say"}, {0} }
 *         .handle         = handle,
 *     };
 *
 * A file handlers/NAME.c that defines `usher_handler_NAME` is compiled into usher and
 * registered automatically. A handler built outside the tree is a shared object named in the
 * config (`[handler.NAME] library = /path/libhello.so`) that exports the same symbol.
 *
 * Threading: init and destroy run once, on the main thread. handle runs concurrently on
 * every worker thread, so `state` must be read-only or protected by the handler. Everything the
 * core lends through usher_ctx (the Redis connection, ...) belongs to the calling worker and is
 * valid only during that call.
 *
 * Delivery: usher is at-least-once. A record may reach handle() again after a crash or a
 * rebalance; a handler with an external side effect should guard it with
 * usher_once_done_before / usher_once_mark (or make it idempotent itself).
 */
#ifndef USHER_HANDLER_H
#define USHER_HANDLER_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "usher/event.h"
#include "usher/log.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 2 added `flags`; usher still loads handlers built for 1 (their flags count as 0). */
#define USHER_HANDLER_ABI_VERSION 2

/* usher_handler.flags */
/* handle() waits only inside usher_http and usher_smtp_send (and briefly for Redis, through
 * usher_redis or the usher_once_* helpers): never on I/O, a sleep or a condition of its own,
 * and it holds no lock across those calls (another call on the same thread may want it).
 * usher then makes the call on the worker thread itself, as a fiber beside the event's other
 * cooperative calls, all waiting for their replies at once; the calls of handlers without
 * this flag each get a thread of their own. */
#define USHER_HANDLER_COOPERATIVE 1u

typedef enum usher_result {
    USHER_OK = 0,    /* done; never called again for this event */
    USHER_RETRY = 1, /* transient failure: call again later, with backoff */
    USHER_FAIL = 2,  /* permanent failure: dead-letter the record with the reason set */
    USHER_SKIP = 3   /* nothing to do for this event (counted as skipped) */
} usher_result;

/* One configuration key a handler accepts in its [handler.NAME] section. */
typedef struct usher_config_key {
    const char *name;
    const char *default_value; /* NULL: no default */
    const char *description;
    int required;              /* non-zero: check-config fails when it is missing */
} usher_config_key;

typedef struct usher_ctx usher_ctx;                   /* one handle() call */
typedef struct usher_handler_conf usher_handler_conf; /* one [handler.NAME] section */

typedef struct usher_handler {
    int abi_version;                     /* USHER_HANDLER_ABI_VERSION */
    const char *name;
    const char *description;
    const char *default_events;          /* comma list, "*" for all; used when config is silent */
    const usher_config_key *config_keys; /* terminated by an entry with name == NULL; may be NULL */

    /* Optional. Builds the handler's state from its config (read files, check values; connect
     * nowhere: `usher check-config` runs it too). Returns 0, or -1 with errstr set, which
     * check-config and run report as a configuration error (exit 2). */
    int (*init)(const usher_handler_conf *conf, void **state, char *errstr, size_t errstr_size);
    /* Processes one event. Required unless handle_batch is set. */
    usher_result (*handle)(usher_ctx *ctx, const usher_event *ev, void *state);
    /* Optional. Frees what init built. */
    void (*destroy)(void *state);
    /* Optional, for handlers whose effects commute (counters): processes n events at once,
     * setting results[i] for events[i]; when set, usher calls it instead of handle. The events
     * of one record always come in the same call, also on retries (so a handler may dedupe per
     * record). Events may come from several records and partitions, and usher may call it
     * for an event while an earlier event of the same key still waits for another handler's
     * retry — so it must not depend on order. The reason set with usher_set_reason applies to
     * every result that is not USHER_OK. */
    void (*handle_batch)(usher_ctx *ctx, const usher_event *const *events, size_t n,
                         usher_result *results, void *state);
    /* USHER_HANDLER_* flags, or 0. */
    unsigned flags;
} usher_handler;

/* --- configuration ----------------------------------------------------------------------- */

/* The value of key in this handler's section (environment already expanded), else its
 * declared default, else NULL. */
const char *usher_conf_get(const usher_handler_conf *conf, const char *key);
/* Parses the value as an integer; returns fallback when unset. Returns -1 on a bad number. */
int usher_conf_get_int(const usher_handler_conf *conf, const char *key, long long fallback,
                       long long *out);
/* The handler's section name, e.g. "welcome_email". */
const char *usher_conf_name(const usher_handler_conf *conf);
/* The global Redis key prefix ([redis] key_prefix). */
const char *usher_conf_key_prefix(const usher_handler_conf *conf);

/* --- what the core lends to handle() ----------------------------------------------------- */

/* This worker's Redis connection, connected (reconnecting if needed), or NULL when Redis is
 * unreachable right now — return USHER_RETRY then. After a command fails with an I/O error,
 * call usher_redis_broken() so the next call reconnects. */
redisContext *usher_redis(usher_ctx *ctx);
void usher_redis_broken(usher_ctx *ctx);

/* The calling handler's configuration and key prefix. */
const usher_handler_conf *usher_ctx_conf(usher_ctx *ctx);
const char *usher_ctx_key_prefix(usher_ctx *ctx);

/* Says why the handler returned USHER_FAIL or USHER_RETRY (a short machine-readable word such
 * as "http_404"; it becomes the dead-letter reason header). */
void usher_set_reason(usher_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Asks that the next attempt wait at least ms (e.g. an HTTP Retry-After). */
void usher_retry_after(usher_ctx *ctx, int64_t ms);

/* Logs with the handler's name as prefix. */
void usher_ctx_log(usher_ctx *ctx, usher_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* --- templates ---------------------------------------------------------------------------- */

typedef enum usher_escape {
    USHER_ESCAPE_NONE = 0, /* as is (plain-text e-mail bodies) */
    USHER_ESCAPE_HTML,     /* & < > " ' as entities */
    USHER_ESCAPE_SLACK,    /* & < > as Slack requires, so "<!channel>" cannot ping anyone */
    USHER_ESCAPE_HEADER    /* control characters (CR, LF, ...) removed */
} usher_escape;

/* The value of a named event field: id, type, source, source_type, occurred_at (ISO-8601
 * UTC), user.id, user.email, user.name, user.username, user.phone, tenant, connection, client,
 * ip, user_agent, country, kafka.topic, kafka.partition, kafka.offset. buf holds formatted
 * values. Returns NULL when the field is absent or unknown. */
const char *usher_event_field(const usher_event *ev, const char *name, char *buf, size_t n);

/* Renders tpl, replacing {{field}} with usher_event_field() escaped for esc, and
 * {{field|fallback}} with the fallback when the field is absent. Literal text is copied as is.
 * Returns a string the caller frees, or NULL when out of memory. */
char *usher_render(const char *tpl, const usher_event *ev, usher_escape esc);

/* --- HTTP and SMTP ------------------------------------------------------------------------ */

/* One HTTP request. Unset fields take defaults: method POST when there is a body, else GET;
 * connect timeout 5 s; total timeout 30 s. */
typedef struct usher_http_request {
    const char *method;
    const char *url;
    const char *const *headers; /* NULL-terminated "Name: value" lines, or NULL */
    const char *body;
    size_t body_len;
    long timeout_ms;
} usher_http_request;

typedef struct usher_http_response {
    long status;            /* 0 when no response arrived */
    const char *body;       /* borrowed: valid until the next usher_http call of this worker */
    size_t body_len;
    int64_t retry_after_ms; /* from a Retry-After header, -1 when absent */
} usher_http_response;

/*
 * Performs req on this worker's reused connection and classifies the outcome, the same way for
 * every handler: 2xx -> USHER_OK; timeouts, connection errors, 408, 429 and 5xx -> USHER_RETRY
 * (Retry-After honoured); any other status -> USHER_FAIL. Sets the reason ("http_404",
 * "http_timeout", ...). resp may be NULL. The URL and headers are never logged.
 */
usher_result usher_http(usher_ctx *ctx, const usher_http_request *req,
                        usher_http_response *resp);

/* One e-mail: a multipart/alternative text + HTML message (html may be NULL). Header values
 * are sanitized by usher: CR/LF are removed, and non-ASCII display names and subjects are
 * RFC 2047 encoded, so user-controlled text can never add a header. */
typedef struct usher_mail {
    const char *smtp_url;  /* smtp://host:port or smtps://host:port; STARTTLS when offered */
    const char *username;  /* NULL: no AUTH */
    const char *password;
    const char *from;      /* address */
    const char *from_name; /* display name, may be NULL */
    const char *to;        /* address */
    const char *to_name;   /* display name, may be NULL */
    const char *subject;
    const char *text;
    const char *html;
    const char *message_id; /* stable id so a resend is recognizable; NULL = generated */
} usher_mail;

/* Sends m; classifies like usher_http (SMTP 4xx and connection errors retry, 5xx fail). The
 * calling thread keeps its SMTP session open for the next message to the same smtp_url with the
 * same credentials (another server or user opens a new one), and sends MAIL, RCPT and DATA in
 * one write when the server offers PIPELINING (with CHUNKING too, BDAT and the message in that
 * same write). */
usher_result usher_smtp_send(usher_ctx *ctx, const usher_mail *m);

/* --- idempotency markers ----------------------------------------------------------------- */

/* Before an external side effect: returns 1 if this handler already completed this event id
 * (skip the side effect and return USHER_OK), 0 if not, -1 if Redis is unreachable (return
 * USHER_RETRY). Once a handler has called it, usher may read the marker ahead, with the other
 * handlers' of the same event in one round trip (before the event's calls, or for a batch's
 * first record while the batch handlers run), after every marker written earlier: it then
 * answers from that, so a second call within the same handle() answers as the first did. */
int usher_once_done_before(usher_ctx *ctx, const usher_event *ev);
/* After the side effect succeeded: records it for ttl_seconds (0 = the section's marker_ttl_s,
 * 30 days unless configured). The write is sent at once (from a cooperative handler's call,
 * together with those of the event's other calls that finish at the same time) and its reply
 * is read before the record is released (an error then is logged), so the call costs no
 * round trip. Returns 0, or -1 (and logs a warning) if Redis is unreachable; a write that
 * fails later is logged as such. Either way return USHER_OK
 * then: the side effect did happen, and returning USHER_RETRY would repeat it at once; a lost
 * marker only risks one repeat if the record is later redelivered. */
int usher_once_mark(usher_ctx *ctx, const usher_event *ev, long ttl_seconds);

#ifdef __cplusplus
}
#endif

#endif /* USHER_HANDLER_H */
