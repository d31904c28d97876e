/* gateway_impl.h: what the gateway's own files share, and no other file
 * includes: gateway.c (requests and responses), gateway_transfer.c (the
 * client and its transfers), gateway_msg.c (signed inbound messages). */
#ifndef GATEWAY_IMPL_H
#define GATEWAY_IMPL_H

#include <stddef.h>
#include <curl/curl.h>
#include <cjson/cJSON.h>

#include "gateway.h"

#define GW_NCALLS (GW_ISBINDING + 1)

struct gw_client {
	struct cfg_gateway cfg;
	char url[GW_NCALLS][CFG_URL + 32];
	struct curl_slist *headers;
	struct gw_multi *sync; /* gw_call's, made on first use */
};

/* "cc_purchase", ...: the path of call under base_url. */
const char *gw_endpoint(enum gw_call call);

/* Validates req and returns its signed JSON body (cJSON_free), or NULL with
 * detail filled. */
char *gw_build_body(const struct gw_client *c, const struct gw_request *req, char *detail,
                    size_t dl);

/* A String(max): valid UTF-8, no control characters, at most max
 * characters; -1 with detail naming wire. */
int gw_check_text(const char *wire, const char *v, int max, char *detail, size_t dl);

/* The body as a JSON object (cJSON_Delete), NULL when it is not one. */
cJSON *gw_parse_object(const char *body, size_t len);
/* A JSON number as the text the gateway signed it as ("2000", not "2000.0"). */
void gw_num_text(double d, char out[32]);

/* A result with nothing known (status and amount -1). */
void gw_result_reset(struct gw_result *res);
/* Sets res to GW_UNKNOWN with the detail; returns GW_UNKNOWN. */
enum gw_outcome gw_unknown(struct gw_result *res, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* One line of detail (control characters become spaces). */
void gw_detailf(char *detail, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void gw_copy_line(char *dst, size_t n, const char *src);
/* 1 when s is non-NULL and non-empty. */
int gw_present(const char *s);

#endif
