/* redis.h — Redis URLs and connections (hiredis 0.14: plain TCP or a unix socket, no TLS). */
#ifndef USHER_REDIS_H
#define USHER_REDIS_H

#include <stdint.h>

#include <hiredis/hiredis.h>

typedef struct usher_redis_target {
    char *host;     /* NULL for a unix socket */
    int port;
    char *path;     /* unix socket path, NULL for TCP */
    char *user;     /* NULL: AUTH with password only (or no AUTH) */
    char *password; /* NULL: no AUTH */
    int db;
    int64_t connect_timeout_ms;
    int64_t command_timeout_ms;
} usher_redis_target;

/* Parses redis://[user:password@]host[:port][/db] or unix:///path[?db=N] (userinfo may be
 * percent-encoded). Returns 0, or -1 with errstr set. */
int usher_redis_parse_url(const char *url, usher_redis_target *t, char *errstr, size_t errstr_size);
void usher_redis_target_free(usher_redis_target *t);

/* Connects, authenticates, selects the db and sets the command timeout. Returns a ready
 * context, or NULL with errstr set (never a context in error state). */
redisContext *usher_redis_connect(const usher_redis_target *t, char *errstr, size_t errstr_size);

/* True when a reply/connection pair means the connection is unusable (I/O error, EOF,
 * timeout) rather than a Redis-level error reply. */
int usher_redis_io_failed(const redisContext *c, const redisReply *r);

#endif
