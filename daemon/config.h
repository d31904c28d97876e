/* config.h: billing.yaml loaded into one struct, with defaults and env overrides. */
#ifndef CONFIG_H
#define CONFIG_H

#include <stddef.h>

#define CFG_STR 256
#define CFG_URL 1024

struct cfg_gateway {
	char base_url[CFG_URL];
	char mch_id[31];
	char job_no[13];
	char merchant_key_file[CFG_STR];
	char merchant_key[CFG_STR]; /* never logged, never printed */
	long timeout_ms;
	long connect_timeout_ms;
	char ca_file[CFG_STR];
	int max_in_flight;
	int allow_insecure_http; /* http:// to a host that is not loopback (tests) */
};

/* Events to the operator's application (events.*). */
#define CFG_EVENTS_MAX_RETRY 32
struct cfg_events {
	char url[CFG_URL]; /* "": events are written, not sent */
	char secret_file[CFG_STR];
	char secret[CFG_STR]; /* never logged, never printed */
	long timeout_ms;
	int max_in_flight;
	char retry_text[CFG_STR];         /* as configured: "30s,2m,..." */
	long retry[CFG_EVENTS_MAX_RETRY]; /* seconds before each retry */
	int nretry;
	int card_expiring_days;
};

struct cfg {
	char path[CFG_STR];
	struct cfg_gateway gateway;
	char database_url[CFG_URL];
	char timezone[64];
	char order_prefix[9];
	int lease_seconds;            /* a claimed charge not finished by then is unknown */
	int batch_size;               /* subscriptions claimed per transaction */
	long poll_interval_ms;        /* idle sleep between passes */
	char listen_address[CFG_STR]; /* the gateway's callbacks (public) */
	char admin_address[CFG_STR];  /* /metrics and /healthz (operators only) */
	char return_url[201];
	char success_url[CFG_URL];
	char failure_url[CFG_URL];
	int enrolment_expiry_hours;
	char plans_dir[CFG_STR];
	struct cfg_events events;
};

/* Where the configuration is read when -c is not given. */
#define CFG_SYSTEM_PATH "/etc/billing/billing.yaml"

/* The configuration file to read: given (-c) if not NULL, else env
 * BILLING_CONFIG, else ./billing.yaml if it exists, else CFG_SYSTEM_PATH. */
const char *cfg_find_path(const char *given);

/* Fills c with the defaults alone (what billing.yaml.example documents). */
void cfg_defaults(struct cfg *c);

/* Fills c with defaults, then path's values, then the environment
 * (DATABASE_URL, IOTPAY_MERCHANT_KEY: taken out of the environment at the
 * first load and kept for the process; BILLING_EVENTS_SECRET). Relative
 * plans_dir, merchant_key_file, ca_file and events.secret_file are taken
 * relative to path's directory. On error returns -1 with one line in
 * err such as "billing.yaml:7: gateway.timeout_ms: expected an integer". */
int cfg_load(struct cfg *c, const char *path, char *err, size_t errlen);

/* cfg_load in two steps, so that a process that only reads the ledger never
 * reads the merchant key: everything but the key, then the key (env
 * IOTPAY_MERCHANT_KEY or gateway.merchant_key_file), which only what calls
 * the gateway needs. Same errors as cfg_load. */
int cfg_load_without_key(struct cfg *c, const char *path, char *err, size_t errlen);
int cfg_load_key(struct cfg *c, char *err, size_t errlen);

/* Wipes the key of a configuration that is no longer needed (a copy left
 * in freed memory would otherwise outlive it). */
void cfg_wipe(struct cfg *c);

/* Sets the process timezone (TZ) to c->timezone; -1 if it is unknown. */
int cfg_apply_timezone(const struct cfg *c, char *err, size_t errlen);

#endif
