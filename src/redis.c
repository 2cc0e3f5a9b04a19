/* redis.c — see redis.h. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis.h"

/* Returns a malloc'd copy of s[0..n) with %XX sequences decoded, or NULL. */
static char *pct_decode(const char *s, size_t n)
{
    char *out = malloc(n + 1), *w = out;

    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && isxdigit((unsigned char)s[i + 1]) &&
            isxdigit((unsigned char)s[i + 2])) {
            char hex[3] = { s[i + 1], s[i + 2], 0 };
            *w++ = (char)strtol(hex, NULL, 16);
            i += 2;
        } else {
            *w++ = s[i];
        }
    }
    *w = 0;
    return out;
}

/* Parses a non-negative decimal int in s[0..n); -1 if it is not one. */
static long parse_num(const char *s, size_t n, long max)
{
    long v = 0;

    if (n == 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
        if (v > max)
            return -1;
    }
    return v;
}

void usher_redis_target_free(usher_redis_target *t)
{
    free(t->host);
    free(t->path);
    free(t->user);
    free(t->password);
    memset(t, 0, sizeof(*t));
}

int usher_redis_parse_url(const char *url, usher_redis_target *t, char *errstr, size_t errstr_size)
{
    const char *p = NULL, *end = NULL, *at = NULL, *slash = NULL, *colon = NULL;
    long v;

    memset(t, 0, sizeof(*t));
    t->port = 6379;
    t->connect_timeout_ms = 2000;
    t->command_timeout_ms = 5000;
    if (strncmp(url, "unix://", 7) == 0) {
        const char *q = strchr(url + 7, '?');
        size_t plen = q ? (size_t)(q - (url + 7)) : strlen(url + 7);
        if (plen == 0 || url[7] != '/') {
            snprintf(errstr, errstr_size, "redis url: unix:// needs an absolute path");
            goto fail;
        }
        t->path = strndup(url + 7, plen);
        if (q != NULL) {
            if (strncmp(q, "?db=", 4) != 0 || (v = parse_num(q + 4, strlen(q + 4), 1 << 20)) < 0) {
                snprintf(errstr, errstr_size, "redis url: only ?db=N is supported after the path");
                goto fail;
            }
            t->db = (int)v;
        }
        return t->path ? 0 : -1;
    }
    if (strncmp(url, "redis://", 8) != 0) {
        snprintf(errstr, errstr_size, "redis url must start with redis:// or unix:// "
                 "(rediss:// needs TLS, which Debian's hiredis 0.14 does not have)");
        goto fail;
    }
    p = url + 8;
    end = p + strlen(p);
    slash = memchr(p, '/', (size_t)(end - p));
    if (slash == NULL)
        slash = end;
    at = NULL;
    for (const char *c = p; c < slash; c++)
        if (*c == '@')
            at = c; /* the last '@' ends the userinfo; passwords may contain '@' encoded or not */
    if (at != NULL) {
        colon = memchr(p, ':', (size_t)(at - p));
        if (colon != NULL) {
            if (colon > p)
                t->user = pct_decode(p, (size_t)(colon - p));
            t->password = pct_decode(colon + 1, (size_t)(at - colon - 1));
        } else {
            t->password = pct_decode(p, (size_t)(at - p));
        }
        p = at + 1;
    }
    colon = memchr(p, ':', (size_t)(slash - p));
    if (colon != NULL) {
        if ((v = parse_num(colon + 1, (size_t)(slash - colon - 1), 65535)) <= 0) {
            snprintf(errstr, errstr_size, "redis url: bad port");
            goto fail;
        }
        t->port = (int)v;
    }
    if ((colon ? colon : slash) == p) {
        snprintf(errstr, errstr_size, "redis url: missing host");
        goto fail;
    }
    t->host = strndup(p, (size_t)((colon ? colon : slash) - p));
    if (slash < end && slash + 1 < end) {
        if ((v = parse_num(slash + 1, (size_t)(end - slash - 1), 1 << 20)) < 0) {
            snprintf(errstr, errstr_size, "redis url: the path must be a database number");
            goto fail;
        }
        t->db = (int)v;
    }
    return 0;
fail:
    usher_redis_target_free(t);
    return -1;
}

/* Runs a command that must answer OK (AUTH, SELECT). Returns 0, or -1 with errstr set. */
static int expect_ok(redisContext *c, char *errstr, size_t errstr_size, const char *what,
                     int argc, const char **argv)
{
    redisReply *r = redisCommandArgv(c, argc, argv, NULL);
    int rc = -1;

    if (r == NULL)
        snprintf(errstr, errstr_size, "redis %s: %s", what, c->errstr);
    else if (r->type == REDIS_REPLY_ERROR)
        snprintf(errstr, errstr_size, "redis %s: %s", what, r->str);
    else
        rc = 0;
    if (r != NULL)
        freeReplyObject(r);
    return rc;
}

redisContext *usher_redis_connect(const usher_redis_target *t, char *errstr, size_t errstr_size)
{
    struct timeval ctv = { (time_t)(t->connect_timeout_ms / 1000),
                           (suseconds_t)(t->connect_timeout_ms % 1000) * 1000 };
    struct timeval ttv = { (time_t)(t->command_timeout_ms / 1000),
                           (suseconds_t)(t->command_timeout_ms % 1000) * 1000 };
    redisContext *c = NULL;

    if (t->path != NULL)
        c = redisConnectUnixWithTimeout(t->path, ctv);
    else
        c = redisConnectWithTimeout(t->host, t->port, ctv);
    if (c == NULL) {
        snprintf(errstr, errstr_size, "redis: out of memory");
        return NULL;
    }
    if (c->err) {
        snprintf(errstr, errstr_size, "redis connect %s:%d: %s", t->path ? t->path : t->host,
                 t->path ? 0 : t->port, c->errstr);
        goto fail;
    }
    if (redisSetTimeout(c, ttv) != REDIS_OK) {
        snprintf(errstr, errstr_size, "redis: cannot set timeout");
        goto fail;
    }
    if (t->password != NULL) {
        const char *argv[3] = { "AUTH", t->user ? t->user : t->password, t->password };
        if (expect_ok(c, errstr, errstr_size, "AUTH", t->user ? 3 : 2, argv) != 0)
            goto fail;
    }
    if (t->db != 0) {
        char db[16];
        const char *argv[2] = { "SELECT", db };
        snprintf(db, sizeof(db), "%d", t->db);
        if (expect_ok(c, errstr, errstr_size, "SELECT", 2, argv) != 0)
            goto fail;
    }
    return c;
fail:
    redisFree(c);
    return NULL;
}

int usher_redis_io_failed(const redisContext *c, const redisReply *r)
{
    return r == NULL || c->err != 0;
}
