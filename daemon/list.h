/* list.h: an intrusive doubly-linked list that counts its members, for
 * what is in flight (the events' deliveries, the gateway's transfers): a
 * member is added and removed in constant time when its transfer ends. */
#ifndef LIST_H
#define LIST_H

#include <stddef.h>

struct list_node {
	struct list_node *prev, *next;
};

struct list {
	struct list_node *head;
	int n;
};

/* The struct of type holding node as its member. */
#define LIST_ITEM(node, type, member) ((type *)(void *)((char *)(node)-offsetof(type, member)))

static inline void list_push(struct list *l, struct list_node *x)
{
	x->prev = NULL;
	x->next = l->head;
	if (l->head)
		l->head->prev = x;
	l->head = x;
	l->n++;
}

static inline void list_unlink(struct list *l, struct list_node *x)
{
	if (x->prev)
		x->prev->next = x->next;
	else
		l->head = x->next;
	if (x->next)
		x->next->prev = x->prev;
	x->prev = x->next = NULL;
	l->n--;
}

#endif
