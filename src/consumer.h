/* consumer.h — `usher run`: the consumer-group member. */
#ifndef USHER_CONSUMER_H
#define USHER_CONSUMER_H

#include "config.h"
#include "registry.h"

/* Joins the group and processes records until SIGTERM/SIGINT, then drains in-flight work
 * within cfg->drain_timeout_ms, commits, leaves the group and returns 0. Returns 1 on a
 * runtime failure (a fatal Kafka error). reg must be resolved and initialized
 * (usher_registry_resolve, usher_registry_init); this function frees it. */
int usher_run(const usher_config *cfg, usher_registry *reg);

#endif
