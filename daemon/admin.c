/* admin.c: GET /healthz and GET /metrics on the admin address.
 *
 * /healthz names the failing part only ("database", "schema"): never a
 * host, a port or a credential, which its error would carry; or the
 * gateway's message while a wave of it stops charging (wave.h). /metrics
 * serves the process's own metrics always, and the database-wide gauges
 * only while this daemon holds the metrics leader lock (metrics.h), which
 * lives on the admin's own connection: one daemon exports them, another
 * takes over when that connection ends. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "admin.h"
#include "db.h"
#include "db_pool.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "migrate.h"
#include "wave.h"

/* Two threads: a slow scrape leaves one for /healthz. */
static const struct http_limits limits = {2, 64, 0, 10};

struct admin {
	int64_t (*clock)(void);
	char actor[64];
	struct http_server srv; /* one connection, which holds the leader lock */
};

enum part { PART_NONE, PART_SCHEMA };

static int check_schema(PGconn *c, void *arg, char *err, size_t errlen)
{
	int rc = migrate_check(c, migrate_embedded, migrate_embedded_count, err, errlen);

	if (rc < 0 && !db_is_down(c))
		*(enum part *)arg = PART_SCHEMA;
	return rc;
}

static enum MHD_Result healthz(struct admin *a, struct MHD_Connection *con)
{
	enum part failed = PART_NONE;
	char err[512], msg[256], body[300];

	wave_current(msg, sizeof(msg));
	if (msg[0]) {
		snprintf(body, sizeof(body), "gateway: %s\n", msg);
		return http_reply(con, MHD_HTTP_SERVICE_UNAVAILABLE, body, NULL, NULL);
	}
	if (db_pool_run(a->srv.pool, check_schema, &failed, err, sizeof(err)) == 0)
		return http_reply(con, MHD_HTTP_OK, "ok\n", NULL, NULL);
	log_event("warn", "healthz", "error", err, (char *)NULL);
	return http_reply(con, MHD_HTTP_SERVICE_UNAVAILABLE,
	                  failed == PART_SCHEMA ? "schema\n" : "database\n", NULL, NULL);
}

struct render {
	struct admin *a;
	char *out;
};

static int64_t now(const struct admin *a)
{
	return a->clock ? a->clock() : (int64_t)time(NULL);
}

static int render(PGconn *c, void *arg, char *err, size_t errlen)
{
	struct render *r = arg;
	int leader = metrics_lead(c, err, errlen);

	if (leader < 0)
		return -1;
	return metrics_render(c, leader, now(r->a), &r->out, err, errlen);
}

static enum MHD_Result metrics(struct admin *a, struct MHD_Connection *con)
{
	struct render r = {.a = a};
	char err[512];

	/* Without the database the process's own metrics are still served,
	 * with billing_database_up 0. */
	if (db_pool_run(a->srv.pool, render, &r, err, sizeof(err)) < 0) {
		log_event("warn", "metrics_database", "error", err, (char *)NULL);
		if (metrics_render(NULL, 0, now(a), &r.out, err, sizeof(err)) < 0)
			return http_reply(con, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n",
			                  NULL, NULL);
	}
	return http_send(con, MHD_HTTP_OK, r.out, strlen(r.out), MHD_RESPMEM_MUST_FREE,
	                 "text/plain; version=0.0.4; charset=utf-8", NULL, NULL);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *con, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *size, void **con_cls)
{
	struct admin *a = cls;
	int is_health = strcmp(url, "/healthz") == 0;

	(void)version;
	(void)data;
	(void)size;
	(void)con_cls;
	if (!is_health && strcmp(url, "/metrics") != 0)
		return http_reply(con, MHD_HTTP_NOT_FOUND, "not found\n", NULL, NULL);
	if (strcmp(method, "GET") != 0)
		return http_reply(con, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n",
		                  MHD_HTTP_HEADER_ALLOW, "GET");
	return is_health ? healthz(a, con) : metrics(a, con);
}

struct admin *admin_start(const struct cfg *c, int64_t (*clock)(void), char *err, size_t errlen)
{
	struct admin *a = calloc(1, sizeof(*a));
	struct http_site site = {.setting = "admin.address",
	                         .address = c->admin_address,
	                         .event = "admin_listening",
	                         .lim = &limits,
	                         .handler = on_request,
	                         .db_url = c->database_url,
	                         .db_conns = 1};

	if (!a) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	a->clock = clock;
	snprintf(a->actor, sizeof(a->actor), "billingd-admin:%ld", (long)getpid());
	site.actor = a->actor;
	if (http_server_start(&a->srv, &site, a, err, errlen) < 0) {
		admin_stop(a);
		return NULL;
	}
	return a;
}

int admin_port(const struct admin *a)
{
	return a->srv.port;
}

void admin_stop(struct admin *a)
{
	if (!a)
		return;
	http_server_stop(&a->srv);
	free(a);
}
