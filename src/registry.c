/* registry.c — see registry.h. */
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "registry.h"

struct usher_handler_conf {
    const usher_handler *h;
    const usher_handler_section *sec;
    const char *key_prefix;
};

/* The declared key named key, or NULL. */
static const usher_config_key *find_decl(const usher_handler *h, const char *key)
{
    for (const usher_config_key *k = h->config_keys; k != NULL && k->name != NULL; k++)
        if (strcmp(k->name, key) == 0)
            return k;
    return NULL;
}

const char *usher_conf_get(const usher_handler_conf *conf, const char *key)
{
    const usher_config_key *decl = NULL;

    for (size_t i = 0; i < conf->sec->keys.count; i++)
        if (strcmp(conf->sec->keys.items[i].key, key) == 0)
            return conf->sec->keys.items[i].value;
    decl = find_decl(conf->h, key);
    return decl ? decl->default_value : NULL;
}

int usher_conf_get_int(const usher_handler_conf *conf, const char *key, long long fallback,
                       long long *out)
{
    const char *v = usher_conf_get(conf, key);
    char *end = NULL;

    if (v == NULL || *v == 0) {
        *out = fallback;
        return 0;
    }
    errno = 0;
    *out = strtoll(v, &end, 10);
    if (errno != 0 || end == v || *end != 0)
        return -1;
    return 0;
}

const char *usher_conf_name(const usher_handler_conf *conf)
{
    return conf->sec->name;
}

const char *usher_conf_key_prefix(const usher_handler_conf *conf)
{
    return conf->key_prefix;
}

/* Builds the event mask from a comma list ("*" = all). Returns 0 or -1 with the bad name. */
static int events_mask(const char *list, uint32_t *mask, char *bad, size_t bad_size)
{
    char **v = NULL;
    int n = usher_split_list(list, &v), rc = 0;

    *mask = 0;
    if (n < 0)
        return -1;
    for (int i = 0; i < n; i++) {
        usher_event_type t;
        if (strcmp(v[i], "*") == 0) {
            *mask = (1u << USHER_EVENT_TYPE_COUNT) - 1;
        } else if (usher_event_type_from_name(v[i], &t) == 0) {
            *mask |= 1u << t;
        } else {
            snprintf(bad, bad_size, "%s", v[i]);
            rc = -1;
            break;
        }
    }
    usher_strv_free(v);
    return rc;
}

/* Finds the handler for section sec: the library's symbol, else the built-in table. */
static int lookup(const usher_config *cfg, const usher_handler_section *sec,
                  usher_bound_handler *b, char *errstr, size_t errstr_size)
{
    char sym[256];

    snprintf(sym, sizeof(sym), "usher_handler_%s", sec->name);
    if (sec->library != NULL) {
        b->dl = dlopen(sec->library, RTLD_NOW | RTLD_LOCAL);
        if (b->dl == NULL) {
            snprintf(errstr, errstr_size, "%s:%d: cannot load %s: %s", cfg->path,
                     sec->library_line, sec->library, dlerror());
            return -1;
        }
        b->h = dlsym(b->dl, sym);
        if (b->h == NULL)
            b->h = dlsym(b->dl, "usher_handler");
        if (b->h == NULL) {
            snprintf(errstr, errstr_size, "%s:%d: %s exports neither %s nor usher_handler",
                     cfg->path, sec->library_line, sec->library, sym);
            return -1;
        }
    } else {
        for (size_t i = 0; usher_builtin_handlers[i] != NULL; i++)
            if (strcmp(usher_builtin_handlers[i]->name, sec->name) == 0)
                b->h = usher_builtin_handlers[i];
        if (b->h == NULL) {
            char names[512] = "";
            for (size_t i = 0; usher_builtin_handlers[i] != NULL; i++) {
                strncat(names, i ? ", " : "", sizeof(names) - strlen(names) - 1);
                strncat(names, usher_builtin_handlers[i]->name, sizeof(names) - strlen(names) - 1);
            }
            snprintf(errstr, errstr_size,
                     "%s:%d: no built-in handler named '%s' (built in: %s); a handler of "
                     "your own needs `library = /path/to/handler.so`",
                     cfg->path, sec->line, sec->name, names);
            return -1;
        }
    }
    if (b->h->abi_version < 1 || b->h->abi_version > USHER_HANDLER_ABI_VERSION ||
        (b->h->handle == NULL && b->h->handle_batch == NULL) || b->h->name == NULL) {
        snprintf(errstr, errstr_size, "%s:%d: handler '%s' has ABI version %d (usher takes 1 "
                 "to %d) or neither handle nor handle_batch", cfg->path, sec->line, sec->name,
                 b->h->abi_version, USHER_HANDLER_ABI_VERSION);
        return -1;
    }
    /* (a handler built for ABI 1 ends before flags) */
    b->cooperative = b->h->abi_version >= 2 && (b->h->flags & USHER_HANDLER_COOPERATIVE) != 0;
    return 0;
}

int usher_registry_resolve(const usher_config *cfg, usher_registry *reg, char *errstr,
                           size_t errstr_size)
{
    memset(reg, 0, sizeof(*reg));
    reg->items = calloc(cfg->handler_count ? cfg->handler_count : 1, sizeof(*reg->items));
    if (reg->items == NULL) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < cfg->handler_count; i++) {
        const usher_handler_section *sec = &cfg->handlers[i];
        usher_bound_handler *b = &reg->items[reg->count];
        char bad[128];

        if (!sec->enabled)
            continue;
        reg->count++;
        if (lookup(cfg, sec, b, errstr, errstr_size) != 0)
            goto fail;
        for (size_t k = 0; k < sec->keys.count; k++) {
            if (find_decl(b->h, sec->keys.items[k].key) == NULL) {
                snprintf(errstr, errstr_size, "%s:%d: unknown key '%s' for handler '%s'",
                         cfg->path, sec->keys.items[k].line, sec->keys.items[k].key, sec->name);
                goto fail;
            }
        }
        for (const usher_config_key *k = b->h->config_keys; k && k->name; k++) {
            if (k->required && k->default_value == NULL) {
                int found = 0;
                for (size_t j = 0; j < sec->keys.count; j++)
                    found |= strcmp(sec->keys.items[j].key, k->name) == 0 &&
                             sec->keys.items[j].value[0] != 0;
                if (!found) {
                    snprintf(errstr, errstr_size, "%s:%d: handler '%s' needs '%s' (%s)",
                             cfg->path, sec->line, sec->name, k->name,
                             k->description ? k->description : "required");
                    goto fail;
                }
            }
        }
        const char *events = sec->events ? sec->events
                                         : (b->h->default_events ? b->h->default_events : "*");
        if (events_mask(events, &b->event_mask, bad, sizeof(bad)) != 0) {
            snprintf(errstr, errstr_size, "%s:%d: unknown event type '%s' for handler '%s'",
                     cfg->path, sec->events ? sec->events_line : sec->line, bad, sec->name);
            goto fail;
        }
        b->retry = sec->retry;
        b->marker_ttl_s = (long)sec->marker_ttl_s;
        b->conf = calloc(1, sizeof(*b->conf));
        if (b->conf == NULL) {
            snprintf(errstr, errstr_size, "out of memory");
            goto fail;
        }
        b->conf->h = b->h;
        b->conf->sec = sec;
        b->conf->key_prefix = cfg->key_prefix;
    }
    return 0;
fail:
    usher_registry_free(reg);
    return -1;
}

int usher_registry_init(usher_registry *reg, char *errstr, size_t errstr_size)
{
    for (size_t i = 0; i < reg->count; i++) {
        usher_bound_handler *b = &reg->items[i];
        char err[512] = "";

        if (b->h->init != NULL && b->h->init(b->conf, &b->state, err, sizeof(err)) != 0) {
            snprintf(errstr, errstr_size, "handler %s: %s", b->h->name,
                     err[0] ? err : "init failed");
            return -1;
        }
        b->initialized = 1;
    }
    return 0;
}

void usher_registry_free(usher_registry *reg)
{
    for (size_t i = 0; reg->items != NULL && i < reg->count; i++) {
        usher_bound_handler *b = &reg->items[i];
        if (b->initialized && b->h->destroy != NULL)
            b->h->destroy(b->state);
        free(b->conf);
        if (b->dl != NULL)
            dlclose(b->dl);
    }
    free(reg->items);
    memset(reg, 0, sizeof(*reg));
}
