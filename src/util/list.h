/*
 * util/list: the one intrusive doubly-linked list of the code base (h2o's linklist.h).
 *
 * A list is an anchor (struct list) whose next/prev point at itself when empty; an element
 * embeds a struct list and is found back with list_item(). An element that is on no list has
 * next == NULL, so "is it linked?" is a pointer test and unlinking twice is harmless. Nothing
 * here allocates, so putting something on a list cannot fail.
 */
#ifndef WXLOGIN_UTIL_LIST_H
#define WXLOGIN_UTIL_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct list {
    struct list *next, *prev;
};

/* The element of type `type` whose member `member` is the node `node`. */
#define list_item(node, type, member) ((type *)(void *)((char *)(node)-offsetof(type, member)))

/* Iterates over a list; the body may unlink (and free) the current element. */
#define list_for_each_safe(pos, tmp, anchor)                                                       \
    for ((pos) = (anchor)->next, (tmp) = (pos)->next; (pos) != (anchor);                           \
         (pos) = (tmp), (tmp) = (pos)->next)

/* Makes an empty list anchor. */
static inline void list_init(struct list *anchor)
{
    anchor->next = anchor->prev = anchor;
}

static inline bool list_empty(const struct list *anchor)
{
    return anchor->next == anchor;
}

/* True while node is on a list (nodes start zeroed, i.e. unlinked). */
static inline bool list_linked(const struct list *node)
{
    return node->next != NULL;
}

static inline void list_insert_before(struct list *pos, struct list *node)
{
    node->prev = pos->prev;
    node->next = pos;
    pos->prev->next = node;
    pos->prev = node;
}

/* Appends node at the end of the list anchored at anchor. */
static inline void list_push_back(struct list *anchor, struct list *node)
{
    list_insert_before(anchor, node);
}

/* Removes node from its list; harmless when it is on none. */
static inline void list_unlink(struct list *node)
{
    if (node->next == NULL)
        return;
    node->next->prev = node->prev;
    node->prev->next = node->next;
    node->next = node->prev = NULL;
}

/* The first node, or NULL when the list is empty. */
static inline struct list *list_first(const struct list *anchor)
{
    return anchor->next != anchor ? anchor->next : NULL;
}

/* Moves every node of from to the end of to; from is left empty. */
static inline void list_splice(struct list *to, struct list *from)
{
    if (list_empty(from))
        return;
    from->next->prev = to->prev;
    to->prev->next = from->next;
    from->prev->next = to;
    to->prev = from->prev;
    list_init(from);
}

#endif
