/* listener.h: billingd's public HTTP listener (listen.address): the
 * gateway's signed callbacks (GET /iotpay/return, POST /iotpay/notify) and
 * nothing else (monitoring is admin.h's). */
#ifndef LISTENER_H
#define LISTENER_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct listener;

/* Copies what it needs from c and starts serving on c->listen_address
 * ("host:port", port 0 = ephemeral) with its own threads and database
 * connections (opened on demand, so that it starts while the database is
 * down). clock gives the billing clock the callbacks' writes declare
 * (NULL: the real time). NULL with err when the address is bad or cannot
 * be bound. */
struct listener *listener_start(const struct cfg *c, int64_t (*clock)(void), char *err,
                                size_t errlen);
/* A reloaded configuration: the key, mch_id and URLs of c from the next
 * request on (one in progress finishes with the old). The address and the
 * database stay as they were started. */
void listener_reload(struct listener *l, const struct cfg *c);
/* The port actually bound. */
int listener_port(const struct listener *l);
/* Stops serving, closes its connections and frees l. */
void listener_stop(struct listener *l);

#endif
