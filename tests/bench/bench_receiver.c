/* bench_receiver: the operator's application for make bench-events: answers
 * every POST with 200 at once and counts them. Prints "port=N" (and then
 * nothing) on stdout; runs until killed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <microhttpd.h>

static enum MHD_Result on_request(void *cls, struct MHD_Connection *con, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *size, void **ctx)
{
	static int started;
	struct MHD_Response *r;
	enum MHD_Result ret;

	(void)cls;
	(void)url;
	(void)method;
	(void)version;
	(void)data;
	if (!*ctx) {
		*ctx = &started; /* the headers: wait for the body */
		return MHD_YES;
	}
	if (*size) {
		*size = 0; /* the body is not read */
		return MHD_YES;
	}
	r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	ret = MHD_queue_response(con, MHD_HTTP_OK, r);
	MHD_destroy_response(r);
	return ret;
}

int main(int argc, char **argv)
{
	int port = argc > 2 && strcmp(argv[1], "--port") == 0 ? atoi(argv[2]) : 0;
	struct MHD_Daemon *d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL,
	                                        (uint16_t)port, NULL, NULL, on_request, NULL,
	                                        MHD_OPTION_THREAD_POOL_SIZE, 2u, MHD_OPTION_END);
	const union MHD_DaemonInfo *di;

	if (!d) {
		fprintf(stderr, "bench_receiver: cannot listen\n");
		return 1;
	}
	di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
	printf("port=%d\n", di->port);
	fflush(stdout);
	for (;;)
		pause();
}
