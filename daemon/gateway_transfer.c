/* gateway_transfer.c: the gateway client's engine: a pool of keep-alive
 * connections and libcurl's multi interface, so that one thread keeps up to
 * max_in_flight requests going; gw_call is the same path with one request.
 * What is sent and how an answer is read are gateway.c's; a transport
 * failure after the request may have left is GW_UNKNOWN, never GW_FAIL. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <curl/curl.h>
#include <cjson/cJSON.h>
#include <openssl/crypto.h>

#include "buf.h"
#include "gateway_impl.h"
#include "list.h"

#define GW_MAX_RESPONSE 65536 /* a larger answer is not the gateway's */

struct gw_job {
	struct gw_job *next;   /* in the queue */
	struct list_node link; /* in the running list */
	struct gw_request req; /* call and the ids gw_classify checks */
	char mch_order_no[31];
	char pay_order_id[31];
	char *body;
	size_t body_len, body_off;
	struct buf resp; /* at most GW_MAX_RESPONSE */
	gw_done_fn done;
	void *udata;
	CURL *easy;
	char errbuf[CURL_ERROR_SIZE];
	struct timespec t0;
	struct gw_result res;
};

struct gw_multi {
	struct gw_client *c;
	CURLM *cm;
	CURLSH *share;
	int max, pending;
	struct gw_job *qhead, *qtail; /* submitted, waiting for a slot */
	struct list running;          /* handed to libcurl */
};

static size_t on_read(char *buf, size_t size, size_t nmemb, void *ud)
{
	struct gw_job *j = ud;
	size_t k = j->body_len - j->body_off;

	if (k > size * nmemb)
		k = size * nmemb;
	memcpy(buf, j->body + j->body_off, k);
	j->body_off += k;
	return k;
}

/* libcurl re-sends a request whose reused keep-alive connection died before
 * any response byte arrived. For a POST the gateway may already have
 * processed (a charge), that would be a second charge or a "duplicate
 * mchOrderNo" FAIL hiding a success. Refusing to rewind the body makes such a
 * transfer fail (CURLE_SEND_FAIL_REWIND), which is classified UNKNOWN. */
static int on_seek(void *ud, curl_off_t offset, int origin)
{
	(void)ud;
	(void)offset;
	(void)origin;
	return CURL_SEEKFUNC_FAIL;
}

static size_t on_write(char *data, size_t size, size_t nmemb, void *ud)
{
	struct gw_job *j = ud;

	return buf_add(&j->resp, data, size * nmemb) < 0 ? 0 : size * nmemb;
}

static void job_free(struct gw_job *j)
{
	if (j->easy)
		curl_easy_cleanup(j->easy);
	cJSON_free(j->body);
	buf_free(&j->resp);
	free(j);
}

static int job_start(struct gw_multi *m, struct gw_job *j)
{
	const struct cfg_gateway *g = &m->c->cfg;
	CURL *e = curl_easy_init();
	int ok;

	if (!e)
		return -1;
	j->easy = e;
	ok =
	    curl_easy_setopt(e, CURLOPT_URL, m->c->url[j->req.call]) == CURLE_OK &&
	    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK &&
	    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1) == CURLE_OK &&
	    curl_easy_setopt(e, CURLOPT_HTTPHEADER, m->c->headers) == CURLE_OK &&
	    curl_easy_setopt(e, CURLOPT_POST, 1L) == CURLE_OK &&
	    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)j->body_len) == CURLE_OK &&
	    curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read) == CURLE_OK &&
	    curl_easy_setopt(e, CURLOPT_READDATA, j) == CURLE_OK &&
	    curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, on_seek) == CURLE_OK &&
	    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write) == CURLE_OK &&
	    curl_easy_setopt(e, CURLOPT_WRITEDATA, j) == CURLE_OK &&
	    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, j->errbuf) == CURLE_OK &&
	    curl_easy_setopt(e, CURLOPT_PRIVATE, j) == CURLE_OK &&
	    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
	    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, g->timeout_ms) == CURLE_OK &&
	    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
	                     g->connect_timeout_ms > 0 ? g->connect_timeout_ms : g->timeout_ms) ==
	        CURLE_OK &&
	    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L) == CURLE_OK &&
	    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L) == CURLE_OK &&
	    (!g->ca_file[0] || curl_easy_setopt(e, CURLOPT_CAINFO, g->ca_file) == CURLE_OK) &&
	    curl_easy_setopt(e, CURLOPT_SHARE, m->share) == CURLE_OK;
	if (!ok || curl_multi_add_handle(m->cm, e) != CURLM_OK)
		return -1;
	clock_gettime(CLOCK_MONOTONIC, &j->t0);
	list_push(&m->running, &j->link);
	return 0;
}

static void transport_unknown(struct gw_job *j, CURLcode rc, long timeout_ms)
{
	const char *why = j->errbuf[0] ? j->errbuf : curl_easy_strerror(rc);

	switch (rc) {
	case CURLE_OPERATION_TIMEDOUT:
		gw_unknown(&j->res, "timeout after %ld ms: %s", timeout_ms, why);
		break;
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
		gw_unknown(&j->res, "cannot connect: %s", why);
		break;
	case CURLE_GOT_NOTHING:
		gw_unknown(&j->res, "connection closed without a response");
		break;
	case CURLE_SEND_FAIL_REWIND:
		gw_unknown(&j->res, "connection lost after the request was sent (not resent)");
		break;
	case CURLE_PARTIAL_FILE:
		gw_unknown(&j->res, "truncated response: %s", why);
		break;
	case CURLE_WRITE_ERROR:
		if (j->resp.full) {
			gw_unknown(&j->res, "response longer than %d bytes", GW_MAX_RESPONSE);
			break;
		}
		/* fall through */
	default:
		gw_unknown(&j->res, "connection lost: %s", why);
	}
}

static double seconds_since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

static void job_finish(struct gw_multi *m, struct gw_job *j, CURLcode rc)
{
	long status = 0;

	curl_easy_getinfo(j->easy, CURLINFO_RESPONSE_CODE, &status);
	if (rc == CURLE_OK) {
		gw_classify(&j->req, status, j->resp.p, j->resp.len, &j->res);
	} else {
		gw_result_reset(&j->res);
		j->res.http_status = status;
		transport_unknown(j, rc, m->c->cfg.timeout_ms);
	}
	j->res.seconds = seconds_since(&j->t0);
	j->done(j->udata, &j->res);
	job_free(j);
}

/* Moves queued requests into free slots. A request that cannot even be
 * handed to libcurl has sent nothing: it completes as GW_INVALID. */
static int start_queued(struct gw_multi *m)
{
	int failed = 0;

	while (m->running.n < m->max && m->qhead) {
		struct gw_job *j = m->qhead;

		m->qhead = j->next;
		if (!m->qhead)
			m->qtail = NULL;
		if (job_start(m, j) == 0)
			continue;
		if (j->easy)
			curl_multi_remove_handle(m->cm, j->easy);
		m->pending--;
		gw_result_reset(&j->res);
		j->res.outcome = GW_INVALID;
		gw_detailf(j->res.detail, sizeof(j->res.detail), "cannot start a transfer");
		j->done(j->udata, &j->res);
		job_free(j);
		failed++;
	}
	return failed;
}

static int reap(struct gw_multi *m)
{
	CURLMsg *msg;
	int left, n = 0;

	while ((msg = curl_multi_info_read(m->cm, &left))) {
		CURL *e = msg->easy_handle;
		CURLcode rc = msg->data.result;
		struct gw_job *j = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&j);
		curl_multi_remove_handle(m->cm, e);
		list_unlink(&m->running, &j->link);
		m->pending--;
		job_finish(m, j, rc);
		n++;
	}
	return n;
}

struct gw_multi *gw_multi_new(struct gw_client *c, int max_in_flight)
{
	struct gw_multi *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	m->c = c;
	m->max = max_in_flight > 0 ? max_in_flight : 1;
	m->cm = curl_multi_init();
	m->share = curl_share_init();
	if (!m->cm || !m->share ||
	    curl_share_setopt(m->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) !=
	        CURLSHE_OK ||
	    curl_share_setopt(m->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK ||
	    /* keep every connection of a full window alive for reuse */
	    curl_multi_setopt(m->cm, CURLMOPT_MAXCONNECTS, (long)m->max) != CURLM_OK ||
	    curl_multi_setopt(m->cm, CURLMOPT_MAX_HOST_CONNECTIONS, (long)m->max) != CURLM_OK) {
		gw_multi_free(m);
		return NULL;
	}
	return m;
}

void gw_multi_free(struct gw_multi *m)
{
	struct gw_job *j, *next;

	if (!m)
		return;
	while (m->running.head) {
		j = LIST_ITEM(m->running.head, struct gw_job, link);
		list_unlink(&m->running, &j->link);
		curl_multi_remove_handle(m->cm, j->easy);
		job_free(j);
	}
	for (j = m->qhead; j; j = next) {
		next = j->next;
		job_free(j);
	}
	if (m->cm)
		curl_multi_cleanup(m->cm);
	if (m->share)
		curl_share_cleanup(m->share);
	free(m);
}

int gw_multi_submit(struct gw_multi *m, const struct gw_request *req, gw_done_fn done, void *udata,
                    struct gw_result *res)
{
	char detail[256];
	struct gw_job *j = calloc(1, sizeof(*j));

	if (j)
		j->body = gw_build_body(m->c, req, detail, sizeof(detail));
	else
		gw_detailf(detail, sizeof(detail), "out of memory");
	if (!j || !j->body) {
		free(j);
		if (res) {
			gw_result_reset(res);
			res->outcome = GW_INVALID;
			gw_copy_line(res->detail, sizeof(res->detail), detail);
		}
		return GW_INVALID;
	}
	j->body_len = strlen(j->body);
	j->resp.max = GW_MAX_RESPONSE;
	j->req.call = req->call;
	/* the ids gw_classify checks the answer against */
	if (gw_present(req->mch_order_no)) {
		snprintf(j->mch_order_no, sizeof(j->mch_order_no), "%s", req->mch_order_no);
		j->req.mch_order_no = j->mch_order_no;
	}
	if (gw_present(req->pay_order_id)) {
		snprintf(j->pay_order_id, sizeof(j->pay_order_id), "%s", req->pay_order_id);
		j->req.pay_order_id = j->pay_order_id;
	}
	j->done = done;
	j->udata = udata;
	if (m->qtail)
		m->qtail->next = j;
	else
		m->qhead = j;
	m->qtail = j;
	m->pending++;
	return 0;
}

int gw_multi_pending(const struct gw_multi *m)
{
	return m->pending;
}

static long ms_until(const struct timespec *deadline)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (deadline->tv_sec - t.tv_sec) * 1000 + (deadline->tv_nsec - t.tv_nsec) / 1000000;
}

int gw_multi_run(struct gw_multi *m, int timeout_ms)
{
	return gw_multi_wait(m, timeout_ms, -1);
}

int gw_multi_wait(struct gw_multi *m, int timeout_ms, int fd)
{
	struct timespec deadline;
	struct curl_waitfd other = {fd, CURL_WAIT_POLLIN, 0};
	int completed = 0, running;
	long left;

	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += timeout_ms / 1000;
	deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
	if (deadline.tv_nsec >= 1000000000) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000;
	}
	for (;;) {
		completed += start_queued(m);
		if (m->running.n == 0 && fd < 0)
			break;
		if (curl_multi_perform(m->cm, &running) != CURLM_OK)
			return -1;
		completed += reap(m);
		left = ms_until(&deadline);
		if (completed > 0 || other.revents || left <= 0)
			break;
		if (curl_multi_poll(m->cm, fd >= 0 ? &other : NULL, fd >= 0 ? 1 : 0,
		                    left > 1000 ? 1000 : (int)left, NULL) != CURLM_OK)
			return -1;
	}
	/* hand freed slots (and requests that done submitted) to libcurl now,
	 * so they travel while the caller handles the results */
	if (completed > 0 && m->qhead) {
		completed += start_queued(m);
		if (curl_multi_perform(m->cm, &running) != CURLM_OK)
			return -1;
	}
	return completed;
}

/* ---- the client ---- */

static int client_check(const struct cfg_gateway *g, char *err, size_t errlen)
{
	char detail[256];

	if (strncmp(g->base_url, "http://", 7) != 0 && strncmp(g->base_url, "https://", 8) != 0) {
		snprintf(err, errlen, "gateway.base_url: expected an http:// or https:// URL");
		return -1;
	}
	if (!g->mch_id[0] ||
	    gw_check_text("gateway.mch_id", g->mch_id, 30, detail, sizeof(detail))) {
		snprintf(err, errlen, "%s", g->mch_id[0] ? detail : "gateway.mch_id: required");
		return -1;
	}
	if (!g->job_no[0] ||
	    gw_check_text("gateway.job_no", g->job_no, 12, detail, sizeof(detail))) {
		snprintf(err, errlen, "%s", g->job_no[0] ? detail : "gateway.job_no: required");
		return -1;
	}
	if (!g->merchant_key[0]) {
		snprintf(err, errlen, "gateway: no merchant key");
		return -1;
	}
	if (g->timeout_ms <= 0) {
		snprintf(err, errlen, "gateway.timeout_ms: must be positive");
		return -1;
	}
	return 0;
}

struct gw_client *gw_client_new(const struct cfg_gateway *gc, char *err, size_t errlen)
{
	struct gw_client *c;
	size_t blen = strlen(gc->base_url);

	if (client_check(gc, err, errlen) < 0)
		return NULL;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		snprintf(err, errlen, "gateway: libcurl initialisation failed");
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		curl_global_cleanup();
		snprintf(err, errlen, "gateway: out of memory");
		return NULL;
	}
	c->cfg = *gc;
	while (blen > 0 && gc->base_url[blen - 1] == '/')
		blen--;
	for (int i = 0; i < GW_NCALLS; i++)
		snprintf(c->url[i], sizeof(c->url[i]), "%.*s/%s", (int)blen, gc->base_url,
		         gw_endpoint(i));
	c->headers = curl_slist_append(NULL, "Content-Type: application/json;charset=UTF-8");
	if (c->headers)
		c->headers = curl_slist_append(c->headers, "Accept: application/json");
	/* no "Expect: 100-continue" round trip before the body */
	if (c->headers)
		c->headers = curl_slist_append(c->headers, "Expect:");
	if (!c->headers) {
		gw_client_free(c);
		snprintf(err, errlen, "gateway: out of memory");
		return NULL;
	}
	return c;
}

void gw_client_free(struct gw_client *c)
{
	if (!c)
		return;
	gw_multi_free(c->sync);
	curl_slist_free_all(c->headers);
	OPENSSL_cleanse(c->cfg.merchant_key, sizeof(c->cfg.merchant_key));
	free(c);
	curl_global_cleanup();
}

static void sync_done(void *udata, const struct gw_result *res)
{
	*(struct gw_result *)udata = *res;
}

enum gw_outcome gw_call(struct gw_client *c, const struct gw_request *req, struct gw_result *res)
{
	if (!c->sync)
		c->sync = gw_multi_new(c, 1);
	if (!c->sync) {
		gw_result_reset(res);
		res->outcome = GW_INVALID;
		gw_detailf(res->detail, sizeof(res->detail), "out of memory");
		return GW_INVALID;
	}
	if (gw_multi_submit(c->sync, req, sync_done, res, res) == GW_INVALID)
		return GW_INVALID;
	while (gw_multi_pending(c->sync) > 0) {
		if (gw_multi_run(c->sync, 1000) < 0) {
			/* the request may be on the wire: abandon it, as unknown */
			gw_multi_free(c->sync);
			c->sync = NULL;
			gw_result_reset(res);
			return gw_unknown(res, "internal libcurl error");
		}
	}
	return res->outcome;
}

/* No order number of ours starts with "0-": a prefix precedes the
 * subscription, payment link or refund id, and ids start at 1. */
#define GW_PROBE_ORDER "0-credentials-check"

enum gw_outcome gw_prove(struct gw_client *c, char *err, size_t errlen)
{
	struct gw_request req = {.call = GW_QUERY, .mch_order_no = GW_PROBE_ORDER};
	struct gw_result res;

	gw_call(c, &req, &res);
	if (res.outcome == GW_FAIL && res.reason == GW_R_NOT_FOUND)
		return GW_SUCCESS;
	if (gw_auth_error(&res, err, errlen))
		return GW_FAIL;
	if (res.outcome == GW_SUCCESS)
		snprintf(err, errlen,
		         "could not prove gateway.mch_id and the merchant key: the gateway "
		         "claims to know order %s",
		         GW_PROBE_ORDER);
	else
		snprintf(err, errlen, "could not prove gateway.mch_id and the merchant key: %s",
		         res.detail[0] ? res.detail : res.ret_msg);
	return GW_UNKNOWN;
}
