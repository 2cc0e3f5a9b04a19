/*
 * json_alloc.h — jansson's allocator, so that the trees the normalizer parses can live in the
 * record's own arena: no malloc/free per JSON value, and releasing a record drops its arena
 * instead of walking its trees. Outside an arena window jansson uses malloc and free as usual
 * (so json_dumps results are still released with free()).
 */
#ifndef USHER_JSON_ALLOC_H
#define USHER_JSON_ALLOC_H

#include <stdbool.h>
#include <stddef.h>

/* Returns n bytes from arena (8-aligned, freed with the arena), or NULL to use the heap. */
typedef void *(*usher_arena_alloc_fn)(void *arena, size_t n);
/* True when p was allocated from arena. */
typedef bool (*usher_arena_owns_fn)(void *arena, const void *p);

/* Installs the allocator. Call once at program start, before any other jansson call. */
void usher_json_alloc_install(void);
bool usher_json_alloc_installed(void);

/* Opens (arena non-NULL) or closes (NULL) the calling thread's arena window: while it is open,
 * jansson allocates from arena and frees of arena blocks are no-ops. Values allocated in the
 * window must never be freed after it closes — they go with the arena. */
void usher_json_arena_set(void *arena, usher_arena_alloc_fn alloc, usher_arena_owns_fn owns);

#endif
