/* json_alloc.c — see json_alloc.h. */
#include <stdlib.h>

#include <jansson.h>

#include "json_alloc.h"

static bool installed;
static _Thread_local void *cur_arena;
static _Thread_local usher_arena_alloc_fn cur_alloc;
static _Thread_local usher_arena_owns_fn cur_owns;

static void *json_malloc(size_t n)
{
    void *p = NULL;

    if (cur_alloc != NULL && (p = cur_alloc(cur_arena, n)) != NULL)
        return p;
    return malloc(n);
}

static void json_free(void *p)
{
    if (cur_owns != NULL && cur_owns(cur_arena, p))
        return; /* freed with its arena */
    free(p);
}

void usher_json_alloc_install(void)
{
    json_set_alloc_funcs(json_malloc, json_free);
    installed = true;
}

bool usher_json_alloc_installed(void)
{
    return installed;
}

void usher_json_arena_set(void *arena, usher_arena_alloc_fn alloc, usher_arena_owns_fn owns)
{
    cur_arena = arena;
    cur_alloc = arena ? alloc : NULL;
    cur_owns = arena ? owns : NULL;
}
