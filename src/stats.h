/* stats.h — `usher stats`: reads the metrics back from Redis. */
#ifndef USHER_STATS_H
#define USHER_STATS_H

#include <stdbool.h>
#include <stdio.h>

#include "config.h"

/* Prints the metrics under cfg's key prefix to out, as one JSON object (json) or as text.
 * day (YYYY-MM-DD or NULL) restricts per-day figures to that day. Returns 0, or 1 with a
 * message on stderr when Redis cannot be read. */
int usher_stats(const usher_config *cfg, bool json, const char *day, FILE *out);

#endif
