/* dlq_replay.h — `usher dlq replay`: puts dead letters back on their original topic. */
#ifndef USHER_DLQ_REPLAY_H
#define USHER_DLQ_REPLAY_H

#include <stdbool.h>

#include "config.h"

typedef struct usher_replay_filter {
    const char *handler; /* only dead letters from this handler (NULL = any) */
    const char *reason;  /* only dead letters with this reason (NULL = any) */
    bool dry_run;        /* print what would be replayed, change nothing */
} usher_replay_filter;

extern const char usher_replay_help[];

/* Reads the dead-letter topic from the beginning to its current end and re-produces every
 * matching record, value, key and original headers unchanged, to the topic it came from. Each
 * dead letter is replayed at most once: replayed ones are remembered in Redis
 * (PREFIX:dlq:replayed) once the broker acknowledged the copy. Returns 0, 1 on failure. */
int usher_dlq_replay(const usher_config *cfg, const usher_replay_filter *filter);

#endif
