/* http.h: what billingd's two HTTP servers share (libmicrohttpd): starting
 * one on "host:port" with its own thread pool, limits and database
 * connections, stopping it, and replies. */
#ifndef HTTP_H
#define HTTP_H

#include <stddef.h>
#include <microhttpd.h>

struct http_limits {
	unsigned threads;     /* its own pool */
	unsigned connections; /* at once, overall */
	unsigned per_ip;      /* at once, per client address (0: no limit) */
	unsigned timeout_s;   /* a connection idle that long is closed */
};

/* MHD_OPTION_URI_LOG_CALLBACK's function: sees the raw URI first. */
typedef void *(*http_uri_fn)(void *cls, const char *uri, struct MHD_Connection *con);

/* One of billingd's HTTP servers: where it listens, what serves it, and the
 * database connections its request threads borrow. */
struct http_site {
	const char *setting; /* names address in errors ("listen.address") */
	const char *address; /* "host:port", "[v6]:port" or ":port"; port 0: ephemeral */
	const char *event;   /* the log line once listening ("listening") */
	const struct http_limits *lim;
	MHD_AccessHandlerCallback handler;
	http_uri_fn uri;                   /* MHD's URI log callback (may be NULL) */
	MHD_RequestCompletedCallback done; /* MHD's completion callback (may be NULL) */
	const char *db_url, *actor;
	int db_conns;
};
struct http_server {
	struct MHD_Daemon *d;
	struct db_pool *pool;
	int port; /* the port bound */
};

/* Serves site with handler(cls) and logs its event with the address and the
 * port bound. 0, or -1 with err when the address is bad or cannot be bound;
 * http_server_stop frees what was made either way. */
int http_server_start(struct http_server *s, const struct http_site *site, void *cls, char *err,
                      size_t errlen);
/* Stops serving (waits for requests in progress) and closes its pool. */
void http_server_stop(struct http_server *s);

/* Queues body (freed or copied by MHD as mode says) with its content type
 * and one optional header. */
enum MHD_Result http_send(struct MHD_Connection *con, unsigned status, char *body, size_t len,
                          enum MHD_ResponseMemoryMode mode, const char *ctype, const char *header,
                          const char *value);
/* A text/plain reply, with one optional header (NULL). */
enum MHD_Result http_reply(struct MHD_Connection *con, unsigned status, const char *text,
                           const char *header, const char *value);

#endif
