/* http.c: libmicrohttpd servers as billingd runs them: a thread pool each
 * (epoll where available), connection limits overall and per client
 * address, an idle timeout, bounded request memory, MHD's messages in our
 * log. */
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "config.h"
#include "db.h"
#include "db_pool.h"
#include "http.h"
#include "log.h"

enum MHD_Result http_send(struct MHD_Connection *con, unsigned status, char *body, size_t len,
                          enum MHD_ResponseMemoryMode mode, const char *ctype, const char *header,
                          const char *value)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
	enum MHD_Result ret;

	if (!r)
		return MHD_NO;
	if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype) != MHD_YES ||
	    (header && MHD_add_response_header(r, header, value) != MHD_YES)) {
		MHD_destroy_response(r);
		return MHD_NO;
	}
	ret = MHD_queue_response(con, status, r);
	MHD_destroy_response(r);
	return ret;
}

enum MHD_Result http_reply(struct MHD_Connection *con, unsigned status, const char *text,
                           const char *header, const char *value)
{
	return http_send(con, status, (char *)text, strlen(text), MHD_RESPMEM_MUST_COPY,
	                 "text/plain; charset=utf-8", header, value);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[256];
	size_t n;

	(void)cls;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
		msg[--n] = '\0';
	log_event("warn", "http_server", "msg", msg, (char *)NULL);
}

/* "host:port", "[v6]:port" or ":port" (every address). */
static int resolve(const char *setting, const char *address, struct sockaddr_storage *out,
                   char *err, size_t errlen)
{
	char host[CFG_STR];
	const char *colon = strrchr(address, ':'), *h = address;
	struct addrinfo hints = {.ai_flags = AI_PASSIVE | AI_NUMERICSERV,
	                         .ai_socktype = SOCK_STREAM};
	struct addrinfo *ai;
	size_t hl;
	int rc;

	if (!colon || !colon[1]) {
		snprintf(err, errlen, "%s '%s': expected host:port", setting, address);
		return -1;
	}
	hl = (size_t)(colon - address);
	if (hl >= 2 && address[0] == '[' && address[hl - 1] == ']') {
		h++;
		hl -= 2;
	}
	snprintf(host, sizeof(host), "%.*s", (int)hl, h);
	rc = getaddrinfo(hl ? host : NULL, colon + 1, &hints, &ai);
	if (rc != 0) {
		snprintf(err, errlen, "%s '%s': %s", setting, address, gai_strerror(rc));
		return -1;
	}
	memcpy(out, ai->ai_addr, ai->ai_addrlen);
	freeaddrinfo(ai);
	return 0;
}

/* Thousands of connections need as many descriptors: use the hard limit. */
static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			log_event("warn", "rlimit_nofile", "error", strerror(errno), (char *)NULL);
	}
}

static struct MHD_Daemon *start(const struct http_site *site, void *cls, int *port, char *err,
                                size_t errlen)
{
	const struct http_limits *lim = site->lim;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
	struct sockaddr_storage addr;
	const union MHD_DaemonInfo *di;
	struct MHD_Daemon *d;

	if (resolve(site->setting, site->address, &addr, err, errlen) < 0)
		return NULL;
	raise_nofile();
	flags |=
	    MHD_is_feature_supported(MHD_FEATURE_EPOLL) == MHD_YES ? MHD_USE_EPOLL : MHD_USE_POLL;
	if (addr.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	/* clang-format off */
	d = MHD_start_daemon(flags, 0, NULL, NULL, site->handler, cls,
		MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL, /* first, to catch all */
		MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
		MHD_OPTION_THREAD_POOL_SIZE, lim->threads,
		MHD_OPTION_CONNECTION_LIMIT, lim->connections,
		MHD_OPTION_PER_IP_CONNECTION_LIMIT, lim->per_ip,
		MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)2048,
		MHD_OPTION_CONNECTION_TIMEOUT, lim->timeout_s,
		/* per connection: bounds the request line and headers */
		MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)32768,
		MHD_OPTION_URI_LOG_CALLBACK, site->uri, NULL,
		MHD_OPTION_NOTIFY_COMPLETED, site->done, NULL,
		MHD_OPTION_END);
	/* clang-format on */
	if (!d) {
		snprintf(err, errlen, "%s '%s': cannot listen there (in use?)", site->setting,
		         site->address);
		return NULL;
	}
	di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
	*port = di ? di->port : 0;
	return d;
}

int http_server_start(struct http_server *s, const struct http_site *site, void *cls, char *err,
                      size_t errlen)
{
	char port[8];

	s->pool = db_pool_new(site->db_url, site->actor, site->db_conns);
	if (!s->pool) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	s->d = start(site, cls, &s->port, err, errlen);
	if (!s->d)
		return -1;
	snprintf(port, sizeof(port), "%d", s->port);
	log_event("info", site->event, "address", site->address, "port", port, (char *)NULL);
	return 0;
}

void http_server_stop(struct http_server *s)
{
	if (s->d)
		MHD_stop_daemon(s->d);
	db_pool_free(s->pool);
	*s = (struct http_server){0};
}
