/*
 * usher/event.h — the canonical user event.
 *
 * Every Kafka record value is normalized into one or more usher_event before any handler sees
 * it. An event is read-only and borrowed: it, and every string it points to, stays valid only
 * for the duration of the handler call that receives it. Absent strings are NULL, never "".
 */
#ifndef USHER_EVENT_H
#define USHER_EVENT_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Canonical event types. The names (usher_event_type_name) are part of the external contract:
 * they appear in config `events` lists, in Redis keys and in `usher stats`. */
typedef enum usher_event_type {
    USHER_EVENT_UNKNOWN = 0,
    USHER_EVENT_SIGNUP,
    USHER_EVENT_SIGNUP_FAILED,
    USHER_EVENT_LOGIN,
    USHER_EVENT_LOGIN_FAILED,
    USHER_EVENT_LOGOUT,
    USHER_EVENT_PASSWORD_RESET,
    USHER_EVENT_PASSWORD_RESET_REQUESTED,
    USHER_EVENT_USER_UPDATED,
    USHER_EVENT_USER_DELETED,
    USHER_EVENT_USER_SUSPENDED,
    USHER_EVENT_USER_UNSUSPENDED,
    USHER_EVENT_TYPE_COUNT
} usher_event_type;

/* Returns the canonical name ("signup", "login_failed", ...); "unknown" for out-of-range. */
const char *usher_event_type_name(usher_event_type type);

/* Parses a canonical name. Returns 0 and sets *out, or -1 if name is not a canonical type. */
int usher_event_type_from_name(const char *name, usher_event_type *out);

/* One Kafka record header. value may be NULL (a header without value). */
typedef struct usher_header {
    const char *name;
    const void *value;
    size_t value_len;
} usher_header;

/* Where the record came from. */
typedef struct usher_kafka_meta {
    const char *topic;
    int32_t partition;
    int64_t offset;
    const void *key; /* NULL when the record has no key */
    size_t key_len;
    int64_t timestamp_ms; /* -1 when the record carries no timestamp */
    const usher_header *headers;
    size_t header_count;
    /* The partition's committed offset when the handler runs: every record below it is done
     * for good and will not be redelivered to this group (unless offsets are reset by hand),
     * which lets a handler keep its dedupe state bounded. 0 when nothing is committed yet. */
    int64_t committed_offset;
} usher_kafka_meta;

typedef struct usher_user {
    const char *id;
    const char *email;
    int email_verified; /* 1 yes, 0 no, -1 not stated */
    const char *name;
    const char *username;
    const char *phone;
} usher_user;

typedef struct usher_event {
    /* The source's own id (Auth0 log_id, CloudEvents id, Svix id, ...), else a hex digest of
     * source, type, user id and time. Stable across redelivery of the same record. */
    const char *id;
    usher_event_type type;
    const char *source;      /* auth0, auth0_log, auth0_events, logto, cloudevents, clerk,
                                keycloak, keycloak_admin, supabase */
    const char *source_type; /* the source's own event name: "ss", "PostRegister", "user.created" */
    int64_t occurred_at_ms;  /* UTC; falls back to the Kafka timestamp when the payload has none */
    usher_user user;
    const char *tenant;
    const char *connection;
    const char *client;
    const char *ip;
    const char *user_agent;
    const char *country;
    /* The event's own JSON text (borrowed, not NUL-terminated): the bytes of its object in the
     * record value (an Auth0 log batch's element, say), or in the decoded text when the event
     * came from a nested one (a JSON string value, CloudEvents data_base64). usher_event_raw
     * parses it. */
    const char *raw_json;
    size_t raw_json_len;
    const usher_kafka_meta *kafka;   /* the record's coordinates (borrowed) */
    unsigned index;                  /* position of this event within its record, from 0 */
} usher_event;

/* Parses ev->raw_json with jansson (JSON_REJECT_DUPLICATES | JSON_DECODE_ANY: a CloudEvent in
 * binary mode may carry any JSON value) and returns a new reference the
 * caller must json_decref, or NULL on failure. No caching: safe to call from handlers of the
 * same event running on different threads at once. */
json_t *usher_event_raw(const usher_event *ev);

#ifdef __cplusplus
}
#endif

#endif /* USHER_EVENT_H */
