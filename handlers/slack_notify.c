/*
 * slack_notify — posts one Slack message per event to an incoming webhook.
 *
 * [handler.slack_notify]             default events: signup
 *   webhook_url    required   https://hooks.slack.com/services/...; a secret, never logged
 *   text           ":tada: New {{type}}: {{user.name|someone}} <{{user.email|no e-mail}}> via {{source}}"
 *                             message template (fields as in usher_event_field)
 *
 * Event values are escaped for Slack (& < >), so a user named "<!channel>" cannot ping anyone;
 * the template's own text (including its fallbacks) is the operator's and is sent as written,
 * Slack markup and all. The body is {"text": T, "blocks": [{"type": "section", "text":
 * {"type": "mrkdwn", "text": T}}]}, JSON-encoded by jansson.
 *
 * Idempotency: the Redis marker PREFIX:done:slack_notify:<event id> is checked before posting
 * and set after Slack accepted the post, so a redelivered event is not announced twice.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "usher/handler.h"

static const usher_config_key keys[] = {
    { "webhook_url", NULL, "Slack incoming-webhook URL (a secret)", 1 },
    { "text", ":tada: New {{type}}: {{user.name|someone}} <{{user.email|no e-mail}}> via "
              "{{source}}", "message template", 0 },
    { NULL, NULL, NULL, 0 },
};

/* Built by init, read-only afterwards: handle() runs on several threads at once. */
typedef struct state {
    const char *webhook_url, *text; /* borrowed from the config */
} state;

static int init(const usher_handler_conf *conf, void **out, char *errstr, size_t errstr_size)
{
    state *st = calloc(1, sizeof(*st));

    if (st == NULL) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    st->webhook_url = usher_conf_get(conf, "webhook_url");
    st->text = usher_conf_get(conf, "text");
    *out = st;
    return 0;
}

static void destroy(void *p)
{
    free(p);
}

static usher_result handle(usher_ctx *ctx, const usher_event *ev, void *p)
{
    const state *st = p;
    static const char *const headers[] = { "Content-Type: application/json", NULL };
    char *text = NULL, *body = NULL;
    json_t *msg = NULL;
    usher_result res = USHER_RETRY;
    int done;

    done = usher_once_done_before(ctx, ev);
    if (done == 1)
        return USHER_OK; /* posted before this record was redelivered */
    if (done < 0) {
        usher_set_reason(ctx, "redis_unavailable");
        return USHER_RETRY;
    }
    if ((text = usher_render(st->text, ev, USHER_ESCAPE_SLACK)) == NULL)
        goto oom;
    msg = json_pack("{s:s, s:[{s:s, s:{s:s, s:s}}]}", "text", text, "blocks", "type",
                    "section", "text", "type", "mrkdwn", "text", text);
    if (msg == NULL || (body = json_dumps(msg, JSON_COMPACT)) == NULL)
        goto oom; /* json_pack also fails on invalid UTF-8, which the normalizer rejects */
    usher_http_request req = {
        .url = st->webhook_url,
        .headers = headers,
        .body = body,
        .body_len = strlen(body),
    };
    res = usher_http(ctx, &req, NULL);
    /* Posted: a retry now would surely post twice, so a marker that cannot be written only
     * costs protection against a later redelivery. Report what Slack said. */
    if (res == USHER_OK)
        usher_once_mark(ctx, ev, 0);
    goto out;
oom:
    usher_set_reason(ctx, "out_of_memory");
out:
    free(body);
    json_decref(msg);
    free(text);
    return res;
}

const usher_handler usher_handler_slack_notify = {
    .abi_version = USHER_HANDLER_ABI_VERSION,
    .name = "slack_notify",
    .description = "posts a message per event to a Slack incoming webhook",
    .default_events = "signup",
    .config_keys = keys,
    .init = init,
    .handle = handle,
    .destroy = destroy,
    .flags = USHER_HANDLER_COOPERATIVE, /* it waits only in usher_http and for Redis */
};
