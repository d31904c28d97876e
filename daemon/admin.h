/* admin.h: billingd's admin listener (admin.address, by default
 * 127.0.0.1:9187): GET /healthz and GET /metrics for operators, on a
 * thread pool of its own so that they answer while the public listener is
 * under attack. */
#ifndef ADMIN_H
#define ADMIN_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct admin;

/* Serves on c->admin_address ("host:port", port 0 = ephemeral) with one
 * database connection of its own (opened on demand; the metrics leader
 * lock lives on it). clock gives "now" for the gauges (NULL: the real
 * time). NULL with err when the address is bad or cannot be bound. */
struct admin *admin_start(const struct cfg *c, int64_t (*clock)(void), char *err, size_t errlen);
/* The port actually bound. */
int admin_port(const struct admin *a);
void admin_stop(struct admin *a);

#endif
