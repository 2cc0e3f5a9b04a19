/* event.c — canonical event type names; the event's raw JSON as a jansson value. */
#include <string.h>

#include "usher/event.h"

static const char *const type_names[USHER_EVENT_TYPE_COUNT] = {
    [USHER_EVENT_UNKNOWN] = "unknown",
    [USHER_EVENT_SIGNUP] = "signup",
    [USHER_EVENT_SIGNUP_FAILED] = "signup_failed",
    [USHER_EVENT_LOGIN] = "login",
    [USHER_EVENT_LOGIN_FAILED] = "login_failed",
    [USHER_EVENT_LOGOUT] = "logout",
    [USHER_EVENT_PASSWORD_RESET] = "password_reset",
    [USHER_EVENT_PASSWORD_RESET_REQUESTED] = "password_reset_requested",
    [USHER_EVENT_USER_UPDATED] = "user_updated",
    [USHER_EVENT_USER_DELETED] = "user_deleted",
    [USHER_EVENT_USER_SUSPENDED] = "user_suspended",
    [USHER_EVENT_USER_UNSUSPENDED] = "user_unsuspended",
};

const char *usher_event_type_name(usher_event_type type)
{
    if ((int)type < 0 || type >= USHER_EVENT_TYPE_COUNT)
        return "unknown";
    return type_names[type];
}

int usher_event_type_from_name(const char *name, usher_event_type *out)
{
    if (name == NULL)
        return -1;
    for (int i = 0; i < USHER_EVENT_TYPE_COUNT; i++) {
        if (strcmp(name, type_names[i]) == 0) {
            *out = (usher_event_type)i;
            return 0;
        }
    }
    return -1;
}

json_t *usher_event_raw(const usher_event *ev)
{
    if (ev == NULL || ev->raw_json == NULL)
        return NULL;
    return json_loadb(ev->raw_json, ev->raw_json_len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY,
                      NULL);
}
