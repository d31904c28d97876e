/* listener.h: billingd's HTTP listener (listen.address): the gateway's
 * signed callbacks (GET /iotpay/return, POST /iotpay/notify), GET /healthz
 * and GET /metrics. */
#ifndef LISTENER_H
#define LISTENER_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct listener;

/* Copies what it needs from c and starts serving on c->listen_address
 * ("host:port", port 0 = ephemeral) with its own threads and database
 * connections (opened on demand, so that it starts while the database is
 * down). clock gives "now" for the metrics (NULL: the real time). NULL with
 * err when the address is bad or cannot be bound. */
struct listener *listener_start(const struct cfg *c, int64_t (*clock)(void), char *err,
                                size_t errlen);
/* The port actually bound. */
int listener_port(const struct listener *l);
/* Stops serving, closes its connections and frees l. */
void listener_stop(struct listener *l);

#endif
