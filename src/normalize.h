/*
 * normalize.h — turns one Kafka record value into canonical events (see MANIFEST of formats
 * in tests/fixtures/MANIFEST.md). Pure: no I/O, no globals, safe to call from any thread.
 */
#ifndef USHER_NORMALIZE_H
#define USHER_NORMALIZE_H

#include <stddef.h>

#include "usher/event.h"

/* Maps a source's own type string (a CloudEvents `type`, say) to a canonical type. */
typedef struct usher_type_alias {
    const char *name;
    usher_event_type type;
} usher_type_alias;

/* The default type of a bare Auth0 `event.user` read from one topic. */
typedef struct usher_topic_default {
    const char *topic;
    usher_event_type type;
} usher_topic_default;

typedef struct usher_norm_options {
    /* Type of a bare Auth0 user when neither a header nor a topic default names one. */
    usher_event_type default_type;
    const usher_topic_default *topic_defaults;
    size_t topic_default_count;
    /* Extra source-type -> canonical mappings, consulted before the built-in ones. */
    const usher_type_alias *type_aliases;
    size_t type_alias_count;
    /* When set, a Logto record must carry a logto-signature-sha-256 header that verifies. */
    const char *logto_signing_key;
    size_t max_value_bytes; /* larger values are rejected as message_too_large */
    unsigned max_depth;     /* deeper JSON is rejected as max_depth_exceeded */
    size_t max_members;     /* objects/arrays with more members: too_many_members */
} usher_norm_options;

/* Fills *opt with the defaults: signup, 1 MiB, depth 64, 10000 members, no key. */
void usher_norm_options_init(usher_norm_options *opt);

typedef struct usher_batch {
    usher_event *events; /* in record order */
    size_t count;
    size_t ignored;      /* valid records that are not user-lifecycle events (e.g. Auth0 `ssa`) */
    /* NULL when accepted. Otherwise a static machine-readable reason: parse_error,
     * schema_error, missing_user_id, max_depth_exceeded, message_too_large, too_many_members,
     * invalid_utf8, empty_value, null_value, field_too_long, duplicate_key, trailing_data,
     * unrecognized_format, ambiguous_format, unsupported_event, bad_signature, not_an_event. */
    const char *reason;
    char detail[256];    /* human-readable detail for a rejection, never contains secrets */
    void *priv;          /* owned storage (parsed documents, strings); usher_batch_release frees it */
} usher_batch;

/*
 * Normalizes one record value. meta gives the topic and headers (hints, CloudEvents binary
 * attributes, signatures) and is copied into every event's `kafka` pointer, so it must outlive
 * the batch; so must value, which events' raw_json points into. Returns 0 when accepted (out->count may be 0 if everything was ignorable) or -1
 * when rejected (out->reason set; events may still hold what was recognized, for diagnostics).
 * Either way the caller must call usher_batch_release(out).
 */
int usher_normalize(const usher_norm_options *opt, const usher_kafka_meta *meta,
                    const void *value, size_t len, usher_batch *out);

/* Frees everything the batch owns; the batch may then be reused. */
void usher_batch_release(usher_batch *b);

#endif /* USHER_NORMALIZE_H */
