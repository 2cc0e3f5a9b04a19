/*
 * nudge.h — keeps librdkafka's fetchers awake under back-pressure.
 *
 * When the poll thread stops taking records, librdkafka's prefetch (msgq) fills up to
 * queued.max.messages.kbytes and the broker thread stops fetching. librdkafka 2.0.2 then
 * re-checks the prefetch only on that thread's one-second tick: as the poll thread drains msgq
 * again, nothing is fetched for up to a second, unless something wakes the broker thread. A
 * request to the broker does: the nudge thread sends one ListOffsets per leader of the
 * assignment (rd_kafka_offsets_for_times), at most once per NUDGE_INTERVAL_MS, whenever the
 * poll thread asks. That lets the prefetch be small (memory) without the one-second stalls.
 */
#ifndef USHER_NUDGE_H
#define USHER_NUDGE_H

#include <librdkafka/rdkafka.h>

typedef struct usher_nudge usher_nudge;

/* Starts the nudge thread for the consumer rk. Returns NULL when it cannot. */
usher_nudge *usher_nudge_start(rd_kafka_t *rk);

/* Asks for the fetchers to be woken soon. Cheap and non-blocking: requests coalesce. */
void usher_nudge_kick(usher_nudge *n);

/* Stops and frees the thread; call before rd_kafka_destroy(rk). NULL is fine. */
void usher_nudge_stop(usher_nudge *n);

#endif
