/* http.h: what billingd's two HTTP servers share (libmicrohttpd): starting
 * one on "host:port" with its own thread pool and limits, and replies. */
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

/* Serves handler(cls) on address ("host:port", "[v6]:port" or ":port"; port
 * 0 = ephemeral); uri and done (may be NULL) are MHD's URI log and
 * completion callbacks. setting names address in errors ("listen.address").
 * NULL with err when the address is bad or cannot be bound; *port is the
 * port bound. */
struct MHD_Daemon *http_start(const char *setting, const char *address,
                              const struct http_limits *lim, MHD_AccessHandlerCallback handler,
                              void *cls, http_uri_fn uri, MHD_RequestCompletedCallback done,
                              int *port, char *err, size_t errlen);

/* Queues body (freed or copied by MHD as mode says) with its content type
 * and one optional header. */
enum MHD_Result http_send(struct MHD_Connection *con, unsigned status, char *body, size_t len,
                          enum MHD_ResponseMemoryMode mode, const char *ctype, const char *header,
                          const char *value);
/* A text/plain reply, with one optional header (NULL). */
enum MHD_Result http_reply(struct MHD_Connection *con, unsigned status, const char *text,
                           const char *header, const char *value);

#endif
