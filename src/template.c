/* template.c — {{placeholder}} rendering with per-target escaping. See usher/handler.h. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "usher/handler.h"

/* A growable string; on allocation failure `failed` is set and appends become no-ops. */
typedef struct sbuf {
    char *s;
    size_t len, cap;
    int failed;
} sbuf;

static void sb_add(sbuf *b, const char *p, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t ncap = b->cap ? b->cap : 256;
        while (ncap < b->len + n + 1)
            ncap *= 2;
        char *ns = realloc(b->s, ncap);
        if (ns == NULL) {
            b->failed = 1;
            return;
        }
        b->s = ns;
        b->cap = ncap;
    }
    memcpy(b->s + b->len, p, n);
    b->len += n;
    b->s[b->len] = 0;
}

/* Appends v escaped for esc. */
static void sb_add_escaped(sbuf *b, const char *v, usher_escape esc)
{
    for (const char *p = v; *p; p++) {
        unsigned char c = (unsigned char)*p;
        const char *rep = NULL;
        switch (esc) {
        case USHER_ESCAPE_HTML:
            rep = c == '&' ? "&amp;" : c == '<' ? "&lt;" : c == '>' ? "&gt;"
                : c == '"' ? "&quot;" : c == '\'' ? "&#39;" : NULL;
            break;
        case USHER_ESCAPE_SLACK:
            rep = c == '&' ? "&amp;" : c == '<' ? "&lt;" : c == '>' ? "&gt;" : NULL;
            break;
        case USHER_ESCAPE_HEADER:
            if (c < 0x20 || c == 0x7f)
                rep = c == '\t' ? " " : "";
            break;
        case USHER_ESCAPE_NONE:
            break;
        }
        if (rep != NULL)
            sb_add(b, rep, strlen(rep));
        else
            sb_add(b, p, 1);
    }
}

const char *usher_event_field(const usher_event *ev, const char *name, char *buf, size_t n)
{
    const struct { const char *name; const char *value; } plain[] = {
        { "id", ev->id },
        { "type", usher_event_type_name(ev->type) },
        { "source", ev->source },
        { "source_type", ev->source_type },
        { "user.id", ev->user.id },
        { "user.email", ev->user.email },
        { "user.name", ev->user.name },
        { "user.username", ev->user.username },
        { "user.phone", ev->user.phone },
        { "tenant", ev->tenant },
        { "connection", ev->connection },
        { "client", ev->client },
        { "ip", ev->ip },
        { "user_agent", ev->user_agent },
        { "country", ev->country },
        { "kafka.topic", ev->kafka ? ev->kafka->topic : NULL },
    };

    for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++)
        if (strcmp(name, plain[i].name) == 0)
            return plain[i].value;
    if (strcmp(name, "occurred_at") == 0) {
        time_t s = (time_t)(ev->occurred_at_ms / 1000);
        struct tm tm;
        gmtime_r(&s, &tm);
        strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
        return buf;
    }
    if (ev->kafka != NULL && strcmp(name, "kafka.partition") == 0) {
        snprintf(buf, n, "%" PRId32, ev->kafka->partition);
        return buf;
    }
    if (ev->kafka != NULL && strcmp(name, "kafka.offset") == 0) {
        snprintf(buf, n, "%" PRId64, ev->kafka->offset);
        return buf;
    }
    return NULL;
}

char *usher_render(const char *tpl, const usher_event *ev, usher_escape esc)
{
    sbuf b = { 0 };
    const char *p = tpl;

    sb_add(&b, "", 0);
    while (*p) {
        const char *open = strstr(p, "{{"), *close = NULL;
        if (open == NULL || (close = strstr(open + 2, "}}")) == NULL) {
            sb_add(&b, p, strlen(p));
            break;
        }
        sb_add(&b, p, (size_t)(open - p));
        /* {{ name }} or {{ name|fallback }}, spaces around the name ignored */
        const char *s = open + 2, *e = close, *bar = memchr(s, '|', (size_t)(e - s));
        const char *name_end = bar ? bar : e;
        while (s < name_end && *s == ' ')
            s++;
        while (name_end > s && name_end[-1] == ' ')
            name_end--;
        char name[64], fmt[64];
        size_t nlen = (size_t)(name_end - s);
        const char *v = NULL;
        if (nlen < sizeof(name)) {
            memcpy(name, s, nlen);
            name[nlen] = 0;
            v = usher_event_field(ev, name, fmt, sizeof(fmt));
        }
        if (v != NULL && *v != 0) {
            sb_add_escaped(&b, v, esc);
        } else if (bar != NULL) {
            /* The fallback is template text, written by the operator: copied as is. */
            sb_add(&b, bar + 1, (size_t)(e - bar - 1));
        }
        p = close + 2;
    }
    if (b.failed) {
        free(b.s);
        return NULL;
    }
    return b.s;
}
