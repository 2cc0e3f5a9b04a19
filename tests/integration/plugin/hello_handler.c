/*
 * An out-of-tree handler, built as a shared object against include/usher only and loaded with
 * `[handler.hello] library = .../libhello_handler.so` — the way users add handlers without
 * forking usher. For every event it adds the event id to PREFIX:hello:<greeting> (a set) and
 * counts the side effect in PREFIX:hello:<greeting>:effects, once: the idempotency marker makes
 * a redelivered event a no-op, so effects == distinct events.
 */
#include <stdio.h>
#include <string.h>

#include "usher/handler.h"

static const usher_config_key keys[] = {
    { "greeting", "hello", "name of the set the event ids go to", 0 },
    { 0 },
};

static usher_result handle(usher_ctx *ctx, const usher_event *ev, void *state)
{
    const char *greeting = usher_conf_get(usher_ctx_conf(ctx), "greeting");
    redisContext *c = NULL;
    redisReply *r = NULL;
    int before;

    (void)state;
    if (ev->user.id == NULL)
        return USHER_SKIP;
    if ((before = usher_once_done_before(ctx, ev)) != 0)
        return before == 1 ? USHER_OK : USHER_RETRY;
    if ((c = usher_redis(ctx)) == NULL)
        return USHER_RETRY;
    redisAppendCommand(c, "SADD %s:hello:%s %s", usher_ctx_key_prefix(ctx), greeting, ev->id);
    redisAppendCommand(c, "INCR %s:hello:%s:effects", usher_ctx_key_prefix(ctx), greeting);
    for (int i = 0; i < 2; i++) {
        if (redisGetReply(c, (void **)&r) != REDIS_OK) {
            usher_redis_broken(ctx);
            return USHER_RETRY;
        }
        freeReplyObject(r);
    }
    usher_once_mark(ctx, ev, 3600); /* the effect happened: OK even if the marker was lost */
    return USHER_OK;
}

/* Built a second time with HELLO_ABI=1, as a handler built before ABI 2 says it was. */
#ifndef HELLO_ABI
#define HELLO_ABI USHER_HANDLER_ABI_VERSION
#endif

const usher_handler usher_handler_hello = {
    .abi_version = HELLO_ABI,
    .name = "hello",
    .description = "example of a handler loaded from a shared object",
    .default_events = "signup",
    .config_keys = keys,
    .handle = handle,
};
