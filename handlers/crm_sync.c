/*
 * crm_sync — keeps a CRM's contacts in step with the identity provider.
 *
 * [handler.crm_sync]     default events: signup, user_updated, user_deleted, user_suspended,
 *                                        user_unsuspended
 *   provider       hubspot    hubspot | webhook
 *   url            required   hubspot: the API base URL (https://api.hubapi.com);
 *                             webhook: the URL every event is POSTed to
 *   token          (none)     bearer token (Authorization: Bearer ...); a secret, never logged;
 *                             required for hubspot, optional for webhook
 *   field_map      email=user.email,user_id=user.id,name=user.name,event=type,
 *                  occurred_at=occurred_at,source=source
 *                             webhook only: comma list of json_key=field (fields as in
 *                             usher_event_field); an absent field is sent as null
 *
 * hubspot: one POST to <url>/crm/v3/objects/contacts/batch/upsert per event, keyed by e-mail:
 *   {"inputs":[{"idProperty":"email","id":"<email>","properties":{"email":...,
 *     "firstname":...,"lastname":...,"usher_user_id":...,"usher_last_event":"<type>",
 *     "usher_status":"deleted|suspended|active"}]}
 * firstname / lastname are the user's name split at the first space (when there is a name);
 * usher_status is sent for user_deleted, user_suspended and user_unsuspended only. Deletions
 * and suspensions update the contact, they never delete it: the CRM keeps the history. The
 * usher_* properties must exist in HubSpot (create them as single-line text contact
 * properties). Events without an e-mail are skipped, since the e-mail is the contact's id.
 * webhook: one POST of the field_map object per event, with or without an e-mail.
 *
 * Idempotency: the Redis marker PREFIX:done:crm_sync:<event id> is checked before the request
 * and set after the CRM accepted it, so a redelivered event is not synced twice (an older
 * event replayed later cannot overwrite a newer state).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "usher/handler.h"

#define DEFAULT_FIELD_MAP \
    "email=user.email,user_id=user.id,name=user.name,event=type,occurred_at=occurred_at," \
    "source=source"
#define MAX_FIELDS 64

static const usher_config_key keys[] = {
    { "provider", "hubspot", "hubspot | webhook", 0 },
    { "url", NULL, "hubspot: API base URL; webhook: the URL to POST to", 1 },
    { "token", NULL, "bearer token (a secret; required for hubspot)", 0 },
    { "field_map", DEFAULT_FIELD_MAP, "webhook: comma list of json_key=field", 0 },
    { NULL, NULL, NULL, 0 },
};

typedef struct field {
    char *json_key, *name; /* owned */
} field;

/* Built by init, read-only afterwards: handle() runs on several threads at once. */
typedef struct state {
    int hubspot;
    char *url;              /* the full URL to POST to, owned */
    char *auth;             /* "Authorization: Bearer ..." or NULL, owned */
    const char *headers[3]; /* Content-Type, auth, NULL */
    field fields[MAX_FIELDS];
    size_t nfields;
} state;

static void destroy(void *p)
{
    state *st = p;

    if (st == NULL)
        return;
    free(st->url);
    free(st->auth);
    for (size_t i = 0; i < st->nfields; i++) {
        free(st->fields[i].json_key);
        free(st->fields[i].name);
    }
    free(st);
}

/* Copies [s, e) without surrounding blanks into a new string (NULL when out of memory). */
static char *trimmed(const char *s, const char *e)
{
    while (s < e && (*s == ' ' || *s == '\t'))
        s++;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    return strndup(s, (size_t)(e - s));
}

/* True when usher_event_field knows name: asks it about an event with every field set. */
static int known_field(const char *name)
{
    static const usher_kafka_meta kafka = { .topic = "t" };
    static const usher_event probe = {
        .id = "x", .source = "x", .source_type = "x",
        .user = { .id = "x", .email = "x", .name = "x", .username = "x", .phone = "x" },
        .tenant = "x", .connection = "x", .client = "x", .ip = "x", .user_agent = "x",
        .country = "x", .kafka = &kafka,
    };
    char buf[64];

    return usher_event_field(&probe, name, buf, sizeof(buf)) != NULL;
}

/* Parses "json_key=field, ..." into st->fields. Returns 0, or -1 with errstr set. */
static int parse_field_map(state *st, const char *list, char *errstr, size_t errstr_size)
{
    const char *p = list;

    while (*p) {
        const char *end = p + strcspn(p, ","), *eq = memchr(p, '=', (size_t)(end - p));
        field *f = &st->fields[st->nfields];

        if (eq == NULL) {
            snprintf(errstr, errstr_size, "field_map: '%.*s' is not json_key=field",
                     (int)(end - p), p);
            return -1;
        }
        if (st->nfields == MAX_FIELDS) {
            snprintf(errstr, errstr_size, "field_map: more than %d entries", MAX_FIELDS);
            return -1;
        }
        f->json_key = trimmed(p, eq);
        f->name = trimmed(eq + 1, end);
        st->nfields++;
        if (f->json_key == NULL || f->name == NULL) {
            snprintf(errstr, errstr_size, "out of memory");
            return -1;
        }
        if (*f->json_key == 0 || !known_field(f->name)) {
            snprintf(errstr, errstr_size, "field_map: '%.*s': %s", (int)(end - p), p,
                     *f->json_key ? "unknown event field (see usher_event_field)"
                                  : "empty json_key");
            return -1;
        }
        p = *end ? end + 1 : end;
    }
    if (st->nfields == 0) {
        snprintf(errstr, errstr_size, "field_map: empty");
        return -1;
    }
    return 0;
}

static int init(const usher_handler_conf *conf, void **out, char *errstr, size_t errstr_size)
{
    state *st = calloc(1, sizeof(*st));
    const char *provider = usher_conf_get(conf, "provider");
    const char *url = usher_conf_get(conf, "url");
    const char *token = usher_conf_get(conf, "token");
    size_t n;

    if (st == NULL) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    if (strcmp(provider, "hubspot") == 0) {
        st->hubspot = 1;
    } else if (strcmp(provider, "webhook") != 0) {
        snprintf(errstr, errstr_size, "provider: '%s' is neither hubspot nor webhook", provider);
        goto fail;
    }
    if (st->hubspot && (token == NULL || *token == 0)) {
        snprintf(errstr, errstr_size, "token: required when provider = hubspot");
        goto fail;
    }
    if (st->hubspot) {
        n = strlen(url);
        while (n > 0 && url[n - 1] == '/')
            n--;
        if (asprintf(&st->url, "%.*s/crm/v3/objects/contacts/batch/upsert", (int)n, url) < 0)
            st->url = NULL;
    } else {
        st->url = strdup(url);
        if (parse_field_map(st, usher_conf_get(conf, "field_map"), errstr, errstr_size) != 0)
            goto fail;
    }
    if (token != NULL && *token != 0 &&
        asprintf(&st->auth, "Authorization: Bearer %s", token) < 0)
        st->auth = NULL;
    if (st->url == NULL || (token != NULL && *token != 0 && st->auth == NULL)) {
        snprintf(errstr, errstr_size, "out of memory");
        goto fail;
    }
    st->headers[0] = "Content-Type: application/json";
    st->headers[1] = st->auth; /* NULL ends the list early when there is no token */
    st->headers[2] = NULL;
    *out = st;
    return 0;
fail:
    destroy(st);
    return -1;
}

/* The HubSpot batch-upsert body for ev (which has an e-mail), or NULL when out of memory. */
static json_t *hubspot_body(const usher_event *ev)
{
    json_t *props = json_object(), *body = NULL;
    const char *name = ev->user.name, *status = NULL;

    if (props == NULL)
        return NULL;
    json_object_set_new(props, "email", json_string(ev->user.email));
    if (name != NULL) {
        const char *sp = strchr(name, ' ');
        json_object_set_new(props, "firstname",
                            sp ? json_stringn(name, (size_t)(sp - name)) : json_string(name));
        if (sp != NULL && sp[1] != 0)
            json_object_set_new(props, "lastname", json_string(sp + 1));
    }
    if (ev->user.id != NULL)
        json_object_set_new(props, "usher_user_id", json_string(ev->user.id));
    json_object_set_new(props, "usher_last_event", json_string(usher_event_type_name(ev->type)));
    switch (ev->type) {
    case USHER_EVENT_USER_DELETED:
        status = "deleted";
        break;
    case USHER_EVENT_USER_SUSPENDED:
        status = "suspended";
        break;
    case USHER_EVENT_USER_UNSUSPENDED:
        status = "active";
        break;
    default:
        break;
    }
    if (status != NULL)
        json_object_set_new(props, "usher_status", json_string(status));
    /* json_pack's "o" takes ownership of props, even when it fails. */
    body = json_pack("{s:[{s:s, s:s, s:o}]}", "inputs", "idProperty", "email", "id",
                     ev->user.email, "properties", props);
    return body;
}

/* The webhook body: {json_key: field value or null, ...}, or NULL when out of memory. */
static json_t *webhook_body(const state *st, const usher_event *ev)
{
    json_t *body = json_object();
    char buf[64];

    for (size_t i = 0; body != NULL && i < st->nfields; i++) {
        const char *v = usher_event_field(ev, st->fields[i].name, buf, sizeof(buf));
        json_object_set_new(body, st->fields[i].json_key, v ? json_string(v) : json_null());
    }
    return body;
}

static usher_result handle(usher_ctx *ctx, const usher_event *ev, void *p)
{
    const state *st = p;
    json_t *msg = NULL;
    char *body = NULL;
    usher_result res = USHER_RETRY;
    int done;

    if (st->hubspot && ev->user.email == NULL)
        return USHER_SKIP; /* a HubSpot contact is keyed by its e-mail */
    done = usher_once_done_before(ctx, ev);
    if (done == 1)
        return USHER_OK; /* synced before this record was redelivered */
    if (done < 0) {
        usher_set_reason(ctx, "redis_unavailable");
        return USHER_RETRY;
    }
    msg = st->hubspot ? hubspot_body(ev) : webhook_body(st, ev);
    if (msg == NULL || (body = json_dumps(msg, JSON_COMPACT)) == NULL) {
        usher_set_reason(ctx, "out_of_memory");
        goto out;
    }
    usher_http_request req = {
        .url = st->url,
        .headers = st->headers,
        .body = body,
        .body_len = strlen(body),
    };
    res = usher_http(ctx, &req, NULL);
    /* Synced: retrying now would send it again, so a marker that cannot be written only
     * costs protection against a later redelivery. Report what the CRM said. */
    if (res == USHER_OK)
        usher_once_mark(ctx, ev, 0);
out:
    free(body);
    json_decref(msg);
    return res;
}

const usher_handler usher_handler_crm_sync = {
    .abi_version = USHER_HANDLER_ABI_VERSION,
    .name = "crm_sync",
    .description = "upserts contacts in HubSpot, or POSTs each event to a CRM webhook",
    .default_events = "signup,user_updated,user_deleted,user_suspended,user_unsuspended",
    .config_keys = keys,
    .init = init,
    .handle = handle,
    .destroy = destroy,
    .flags = USHER_HANDLER_COOPERATIVE, /* it waits only in usher_http and for Redis */
};
