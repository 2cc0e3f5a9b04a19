/*
 * report.h — a member's liveness and per-partition lag, written to Redis by a thread of its
 * own so that the poll thread never waits on Redis.
 *
 *   PREFIX:members          HASH  <member> -> {"member","group","pid","host","started_ms",
 *                                  "last_seen_ms","partitions":N,"inflight":N}
 *   PREFIX:lag              HASH  <topic>:<partition> -> {"lag","committed","end","member",
 *                                  "updated_ms","stuck"}
 */
#ifndef USHER_REPORT_H
#define USHER_REPORT_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "redis.h"

typedef struct usher_part_report {
    char topic[256];
    int32_t partition;
    int64_t committed; /* last acknowledged commit, -1 unknown */
    int64_t end;       /* high watermark, -1 unknown */
    bool stuck;
} usher_part_report;

typedef struct usher_reporter usher_reporter;

/* Starts the reporter thread. Returns NULL on allocation failure. */
usher_reporter *usher_reporter_start(const usher_config *cfg, const usher_redis_target *redis);
/* Hands over a snapshot (copied) to be written soon; never blocks on Redis. */
void usher_reporter_publish(usher_reporter *r, const usher_part_report *parts, size_t n,
                            int inflight);
/* Writes the final snapshot (if any), removes this member from PREFIX:members, and stops. */
void usher_reporter_stop(usher_reporter *r, const usher_part_report *parts, size_t n);

#endif
