/* fakegw.c: the fake IOTPay gateway (tests/FAKEGW.md) for tests, benchmarks
 * and the demo: the Credit Card API V2 over real HTTP with signatures, state,
 * hosted card pages, notify delivery and fault injection.
 *
 * Two threads serve every connection, each with its own libmicrohttpd on
 * epoll and its own loop; a latency or a hang suspends its connection until
 * due, so that a waiting request costs no thread and no context switches
 * (with a thread per connection the fake spent more CPU per charge than
 * billingd, on the cores they share in a benchmark). All state sits behind one mutex
 * (the notify thread shares it) in hash tables so that a request stays O(1)
 * however many orders exist. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <microhttpd.h>

#include "buf.h"
#include "sign.h"

#define MAX_BODY       (64 * 1024)
#define MAX_FIELDS     32
#define MAX_FAULTS     64
#define NOTIFY_TRIES   20
#define NOTIFY_FIRST_S 0.1
#define NOTIFY_MAX_S   2.0

/* ---- options ---------------------------------------------------------- */

static struct {
	const char *key;
	const char *mch_id;
	int port;
	long latency_ms;
	double decline_rate;
	unsigned long long seed;
	int reversed_status; /* 0: a reversed order still reports its own status */
} opt = {.seed = 1};

/* ---- string -> index hash table (open addressing, keys owned elsewhere) */

struct ht_slot {
	const char *key;
	void *val;
};

struct ht {
	struct ht_slot *slots;
	size_t cap, n;
};

static uint64_t ht_hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

static void *ht_get(const struct ht *t, const char *key)
{
	if (!t->cap)
		return NULL;
	for (size_t i = ht_hash(key) & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
		if (!t->slots[i].key)
			return NULL;
		if (strcmp(t->slots[i].key, key) == 0)
			return t->slots[i].val;
	}
}

static void ht_insert(struct ht_slot *slots, size_t cap, const char *key, void *val)
{
	size_t i = ht_hash(key) & (cap - 1);

	while (slots[i].key)
		i = (i + 1) & (cap - 1);
	slots[i].key = key;
	slots[i].val = val;
}

/* Adds key (which must not be present yet); the key's storage must outlive
 * the table. Aborts on allocation failure: the fake has no way to go on. */
static void ht_put(struct ht *t, const char *key, void *val)
{
	if ((t->n + 1) * 10 > t->cap * 7) {
		size_t cap = t->cap ? t->cap * 2 : 1024;
		struct ht_slot *slots = calloc(cap, sizeof(*slots));

		if (!slots)
			abort();
		for (size_t i = 0; i < t->cap; i++)
			if (t->slots[i].key)
				ht_insert(slots, cap, t->slots[i].key, t->slots[i].val);
		free(t->slots);
		t->slots = slots;
		t->cap = cap;
	}
	ht_insert(t->slots, t->cap, key, val);
	t->n++;
}

static void ht_clear(struct ht *t)
{
	free(t->slots);
	memset(t, 0, sizeof(*t));
}

/* ---- growable vector of owned pointers ------------------------------- */

struct vec {
	void **v;
	size_t n, cap;
};

static void vec_push(struct vec *a, void *p)
{
	if (a->n == a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 1024;
		void **v = realloc(a->v, cap * sizeof(*v));

		if (!v)
			abort();
		a->v = v;
		a->cap = cap;
	}
	a->v[a->n++] = p;
}

static void vec_clear(struct vec *a, void (*free_item)(void *))
{
	for (size_t i = 0; i < a->n; i++)
		free_item(a->v[i]);
	free(a->v);
	memset(a, 0, sizeof(*a));
}

static void *xcalloc(size_t size)
{
	void *p = calloc(1, size);

	if (!p)
		abort();
	return p;
}

static char *xstrdup(const char *s)
{
	char *p = strdup(s);

	if (!p)
		abort();
	return p;
}

/* ---- state ------------------------------------------------------------ */

enum endpoint {
	EP_PURCHASE,
	EP_ADDUSER,
	EP_PURCHASE_TOKEN,
	EP_REFUND,
	EP_VOID,
	EP_QUERY,
	EP_ISBINDING,
	EP_COUNT
};

static const char *const ep_names[EP_COUNT] = {
    "cc_purchase", "cc_adduser", "cc_purchasewithtoken", "cc_refund",
    "cc_void",     "cc_query",   "cc_isbinding",
};

enum fault_kind {
	FK_NONE = -1,
	FK_LATENCY,
	FK_DROP_BEFORE,
	FK_DROP_AFTER,
	FK_HANG_AFTER,
	FK_HTTP5XX,
	FK_HTTP429,
	FK_GARBAGE,
	FK_BUSY,
	FK_DUP_CHARGE,
	FK_UNFAMILIAR,
	FK_COUNT
};

static const char *const fk_names[FK_COUNT] = {
    "latency", "drop_before", "drop_after", "hang_after", "http5xx",
    "http429", "garbage",     "busy",       "dup_charge", "unfamiliar",
};

struct order {
	char pay_order_id[32];
	char mch_order_no[32];
	char trans_id[32];
	char customer_id[32];
	char pay_type[8];
	char original_order_id[32];
	char pay_succ_time[24];
	long long amount;
	long long refunded;
	int status;
	int voided;
};

struct customer {
	char id[32];
	int bound;
	char card_number[24]; /* masked: 450116XXXXXX7214 */
	char expiry[8];
	char card_type[2];
	long declines; /* forced declines still to come (/_fake/decline) */
};

/* A hosted page handed out by cc_adduser or cc_purchase. */
struct page {
	char token[40];
	int purchase;
	int used;
	char customer_id[32];
	char mch_order_no[32];
	char return_url[201];
	char notify_url[201];
	long long amount;
};

struct notify {
	char mch_order_no[32];
	char url[201];
	char *body;
	int attempts;
	int delivered;
	double next_at; /* monotonic seconds */
	double delay;
};

struct fault {
	int endpoint; /* -1: every endpoint */
	enum fault_kind kind;
	double rate;
	long count; /* > 0: the next count requests; -1: by rate */
	long ms;
};

static struct {
	pthread_mutex_t mu;
	pthread_cond_t wake; /* notify queue changed, or stopping */
	int stopping;
	unsigned long generation; /* bumped by reset: in-flight notifies are void */
	struct vec orders, customers, pages, notifies;
	struct ht by_pay, by_mch, by_customer, by_token;
	struct fault faults[MAX_FAULTS];
	int nfaults;
	long requests[EP_COUNT];
	uint64_t rng;
	unsigned long long next_id; /* never reset: ids stay unique per run */
} st = {.mu = PTHREAD_MUTEX_INITIALIZER};

static double rng_double(void)
{
	/* xorshift64*: seeded by --seed so that fault runs are reproducible. */
	st.rng ^= st.rng >> 12;
	st.rng ^= st.rng << 25;
	st.rng ^= st.rng >> 27;
	return (double)((st.rng * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

static double now_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void free_notify(void *p)
{
	struct notify *n = p;

	free(n->body);
	free(n);
}

static void state_clear(void)
{
	vec_clear(&st.orders, free);
	vec_clear(&st.customers, free);
	vec_clear(&st.pages, free);
	vec_clear(&st.notifies, free_notify);
	ht_clear(&st.by_pay);
	ht_clear(&st.by_mch);
	ht_clear(&st.by_customer);
	ht_clear(&st.by_token);
	st.nfaults = 0;
	memset(st.requests, 0, sizeof(st.requests));
	st.generation++;
}

/* Readable once SIGTERM/SIGINT came: main wakes. */
static int stop_pipe[2] = {-1, -1};

static void on_stop_signal(int sig)
{
	(void)sig;
	if (write(stop_pipe[1], "x", 1) < 0)
		return; /* the pipe is already readable */
}

/* ---- delays: suspended connections, resumed by their loop ------------- */

struct call;
static void answer_api(struct call *call);

/* A suspended connection: its API request (call) is answered when due, if
 * it is not yet. */
struct delay {
	double due; /* now_mono() seconds */
	struct MHD_Connection *c;
	struct call *call; /* NULL: a hang */
};

/* Each loop's own (libmicrohttpd's handlers run in their loop's thread). */
static __thread struct {
	struct delay *v;
	int n, cap;
	int stopping; /* suspend none */
} dl;

/* Suspends c (inside its request's handler) until ms after from. -1 when
 * stopping: the caller closes the connection instead. */
static int delay(struct MHD_Connection *c, struct call *call, double from, long ms)
{
	if (dl.stopping)
		return -1;
	if (dl.n == dl.cap) {
		dl.cap = dl.cap ? dl.cap * 2 : 256;
		dl.v = realloc(dl.v, (size_t)dl.cap * sizeof(*dl.v));
		if (!dl.v)
			abort();
	}
	MHD_suspend_connection(c);
	dl.v[dl.n++] = (struct delay){from + ms / 1000.0, c, call};
	return 0;
}

/* Resumes what may resume (everything once stopping); returns 0 when it
 * resumed one (libmicrohttpd has work), else the seconds until the next
 * must, or -1 when none waits. */
static double delays_resume(void)
{
	double now = now_mono(), next = 0;
	int resumed = 0;

	for (int i = 0; i < dl.n;) {
		if (dl.stopping || dl.v[i].due <= now) {
			if (dl.v[i].call)
				answer_api(dl.v[i].call);
			MHD_resume_connection(dl.v[i].c);
			dl.v[i] = dl.v[--dl.n];
			resumed = 1;
			continue;
		}
		if (!next || dl.v[i].due < next)
			next = dl.v[i].due;
		i++;
	}
	if (resumed)
		return 0;
	return next ? next - now : -1;
}

static void format_time(char *out, size_t len)
{
	time_t t = time(NULL);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, len, "%Y-%m-%d %H:%M:%S", &tm);
}

static struct customer *customer_get(const char *id, int create)
{
	struct customer *c = ht_get(&st.by_customer, id);

	if (c || !create)
		return c;
	c = xcalloc(sizeof(*c));
	snprintf(c->id, sizeof(c->id), "%s", id);
	vec_push(&st.customers, c);
	ht_put(&st.by_customer, c->id, c);
	return c;
}

/* A new successful order; the first order of a mchOrderNo is the one that
 * cc_query finds (a dup_charge order is only in the ledger). */
static struct order *order_new(const char *mch_order_no, const char *customer_id, long long amount,
                               const char *pay_type, const char *original)
{
	struct order *o = xcalloc(sizeof(*o));
	unsigned long long id = st.next_id++;

	snprintf(o->pay_order_id, sizeof(o->pay_order_id), "IP%llu", id);
	snprintf(o->trans_id, sizeof(o->trans_id), "TR%llu", id);
	snprintf(o->mch_order_no, sizeof(o->mch_order_no), "%s", mch_order_no);
	snprintf(o->customer_id, sizeof(o->customer_id), "%s", customer_id);
	snprintf(o->pay_type, sizeof(o->pay_type), "%s", pay_type);
	snprintf(o->original_order_id, sizeof(o->original_order_id), "%s", original);
	format_time(o->pay_succ_time, sizeof(o->pay_succ_time));
	o->amount = amount;
	o->status = 2;
	vec_push(&st.orders, o);
	ht_put(&st.by_pay, o->pay_order_id, o);
	if (!ht_get(&st.by_mch, o->mch_order_no))
		ht_put(&st.by_mch, o->mch_order_no, o);
	return o;
}

static int card_declined(const char *card_number)
{
	size_t n = strlen(card_number);

	return n >= 4 && strcmp(card_number + n - 4, "0002") == 0;
}

/* ---- faults ----------------------------------------------------------- */

struct decision {
	long latency_ms;
	enum fault_kind outcome; /* the one fault that changes the answer */
	long outcome_ms;
	int dup_charge;
};

static int fault_fires(struct fault *f)
{
	if (f->count > 0) {
		f->count--;
		return 1;
	}
	return f->count < 0 && f->rate > 0 && rng_double() < f->rate;
}

/* Which faults hit this request (state lock held). */
static void faults_decide(enum endpoint ep, struct decision *d)
{
	memset(d, 0, sizeof(*d));
	d->latency_ms = opt.latency_ms;
	d->outcome = FK_NONE;
	for (int i = 0; i < st.nfaults; i++) {
		struct fault *f = &st.faults[i];

		if (f->endpoint >= 0 && f->endpoint != (int)ep)
			continue;
		if (f->kind == FK_DUP_CHARGE && ep != EP_PURCHASE_TOKEN)
			continue;
		if (f->kind != FK_LATENCY && f->kind != FK_DUP_CHARGE && d->outcome != FK_NONE)
			continue;
		if (!fault_fires(f))
			continue;
		if (f->kind == FK_LATENCY)
			d->latency_ms += f->ms;
		else if (f->kind == FK_DUP_CHARGE)
			d->dup_charge = 1;
		else {
			d->outcome = f->kind;
			d->outcome_ms = f->ms;
		}
	}
}

/* ---- API requests ----------------------------------------------------- */

/* A request body as the signature sees it: every field as a string. */
struct req {
	cJSON *json;
	int n;
	struct sign_kv kv[MAX_FIELDS];
	char num[MAX_FIELDS][32];
};

static int req_parse(struct req *r, const char *body, size_t len, char *msg, size_t msglen)
{
	const cJSON *it;

	memset(r, 0, sizeof(*r));
	r->json = cJSON_ParseWithLength(body, len);
	if (!cJSON_IsObject(r->json)) {
		snprintf(msg, msglen, "invalid json");
		return -1;
	}
	cJSON_ArrayForEach(it, r->json)
	{
		const char *v;

		if (r->n == MAX_FIELDS) {
			snprintf(msg, msglen, "too many fields");
			return -1;
		}
		if (cJSON_IsString(it)) {
			v = it->valuestring;
		} else if (cJSON_IsNumber(it)) {
			double d = it->valuedouble;

			if (d == floor(d) && fabs(d) < 1e15)
				snprintf(r->num[r->n], sizeof(r->num[0]), "%lld", (long long)d);
			else
				snprintf(r->num[r->n], sizeof(r->num[0]), "%.17g", d);
			v = r->num[r->n];
		} else if (cJSON_IsBool(it)) {
			v = cJSON_IsTrue(it) ? "true" : "false";
		} else if (cJSON_IsNull(it)) {
			v = "";
		} else {
			snprintf(msg, msglen, "field %s must be a string or a number", it->string);
			return -1;
		}
		r->kv[r->n].key = it->string;
		r->kv[r->n].value = v;
		r->n++;
	}
	return 0;
}

static const char *req_str(const struct req *r, const char *name)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(r->json, name);

	return cJSON_IsString(it) && it->valuestring[0] ? it->valuestring : NULL;
}

static long long req_int(const struct req *r, const char *name)
{
	return (long long)cJSON_GetObjectItemCaseSensitive(r->json, name)->valuedouble;
}

enum ftype { F_STR, F_INT };

struct field {
	const char *name;
	enum ftype type;
	int max; /* String(max) */
	int required;
};

#define FIELD_END                                                                                  \
	{                                                                                          \
		NULL, F_STR, 0, 0                                                                  \
	}

static const struct field f_purchase[] = {
    {"mchOrderNo", F_STR, 30, 1}, {"customerId", F_STR, 30, 1},
    {"amount", F_INT, 0, 1},      {"currency", F_STR, 3, 1},
    {"jobNo", F_STR, 12, 1},      {"subject", F_STR, 64, 0},
    {"body", F_STR, 250, 0},      {"notifyUrl", F_STR, 200, 1},
    {"returnUrl", F_STR, 200, 1}, FIELD_END};
static const struct field f_adduser[] = {{"customerId", F_STR, 30, 1},
                                         {"currency", F_STR, 3, 1},
                                         {"jobNo", F_STR, 12, 1},
                                         {"returnUrl", F_STR, 200, 1},
                                         FIELD_END};
static const struct field f_purchase_token[] = {
    {"mchOrderNo", F_STR, 30, 1}, {"customerId", F_STR, 30, 1},
    {"amount", F_INT, 0, 1},      {"currency", F_STR, 3, 1},
    {"jobNo", F_STR, 12, 1},      {"subject", F_STR, 64, 0},
    {"body", F_STR, 250, 0},      FIELD_END};
static const struct field f_refund[] = {
    {"mchRefundNo", F_STR, 30, 1}, {"loginName", F_STR, 12, 1},  {"currency", F_STR, 3, 1},
    {"refundAmount", F_INT, 0, 1}, {"payOrderId", F_STR, 30, 1}, FIELD_END};
static const struct field f_void[] = {{"mchRefundNo", F_STR, 30, 1},
                                      {"loginName", F_STR, 12, 1},
                                      {"currency", F_STR, 3, 1},
                                      {"payOrderId", F_STR, 30, 1},
                                      FIELD_END};
static const struct field f_query[] = {
    {"mchOrderNo", F_STR, 30, 0}, {"payOrderId", F_STR, 30, 0}, FIELD_END};
static const struct field f_isbinding[] = {{"customerId", F_STR, 30, 1}, FIELD_END};

static const struct field *const ep_fields[EP_COUNT] = {
    f_purchase, f_adduser, f_purchase_token, f_refund, f_void, f_query, f_isbinding,
};

/* The API tables' rules: required, String(n), Int > 0, CAD only. */
static int check_fields(const struct req *r, const struct field *f, char *msg, size_t msglen)
{
	for (; f->name; f++) {
		const cJSON *it = cJSON_GetObjectItemCaseSensitive(r->json, f->name);
		int empty = !it || cJSON_IsNull(it) || (cJSON_IsString(it) && !it->valuestring[0]);

		if (empty) {
			if (f->required) {
				snprintf(msg, msglen, "missing field %s", f->name);
				return -1;
			}
			continue;
		}
		if (f->type == F_INT) {
			double d = cJSON_IsNumber(it) ? it->valuedouble : -1;

			if (d <= 0 || d != floor(d) || d > 1e12) {
				snprintf(msg, msglen, "field %s must be a positive integer",
				         f->name);
				return -1;
			}
			continue;
		}
		if (!cJSON_IsString(it)) {
			snprintf(msg, msglen, "field %s must be a string", f->name);
			return -1;
		}
		if (strlen(it->valuestring) > (size_t)f->max) {
			snprintf(msg, msglen, "field %s too long (max %d)", f->name, f->max);
			return -1;
		}
		if (strcmp(f->name, "currency") == 0 && strcmp(it->valuestring, "CAD") != 0) {
			snprintf(msg, msglen, "field currency must be CAD");
			return -1;
		}
	}
	return 0;
}

static cJSON *answer(const char *code, const char *msg)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddStringToObject(o, "retCode", code);
	cJSON_AddStringToObject(o, "retMsg", msg);
	return o;
}

static cJSON *fail(const char *msg)
{
	return answer("FAIL", msg);
}

static cJSON *order_json(const struct order *o)
{
	cJSON *j = cJSON_CreateObject();
	/* The API defines no status for a voided or fully refunded payment;
	 * some gateways keep reporting it paid, others give it another number. */
	int reversed = strcmp(o->pay_type, "pay") == 0 && (o->voided || o->refunded >= o->amount);

	cJSON_AddStringToObject(j, "payOrderId", o->pay_order_id);
	cJSON_AddStringToObject(j, "mchOrderNo", o->mch_order_no);
	cJSON_AddStringToObject(j, "transId", o->trans_id);
	cJSON_AddNumberToObject(j, "status",
	                        reversed && opt.reversed_status ? opt.reversed_status : o->status);
	cJSON_AddStringToObject(j, "paySuccTime", o->pay_succ_time);
	cJSON_AddStringToObject(j, "originalOrderId", o->original_order_id);
	cJSON_AddStringToObject(j, "payType", o->pay_type);
	cJSON_AddNumberToObject(j, "amount", (double)o->amount);
	return j;
}

static cJSON *success_order(const struct order *o)
{
	cJSON *j = answer("SUCCESS", "");

	cJSON_AddItemToObject(j, "order", order_json(o));
	return j;
}

static int listen_port;

static cJSON *hosted_page(const struct req *r, int purchase)
{
	struct page *p = xcalloc(sizeof(*p));
	char url[128];
	cJSON *j;

	snprintf(p->token, sizeof(p->token), "%llx%08x", st.next_id++,
	         (unsigned)(rng_double() * 4294967295.0));
	p->purchase = purchase;
	snprintf(p->customer_id, sizeof(p->customer_id), "%s", req_str(r, "customerId"));
	snprintf(p->return_url, sizeof(p->return_url), "%s", req_str(r, "returnUrl"));
	if (purchase) {
		snprintf(p->mch_order_no, sizeof(p->mch_order_no), "%s", req_str(r, "mchOrderNo"));
		snprintf(p->notify_url, sizeof(p->notify_url), "%s", req_str(r, "notifyUrl"));
		p->amount = req_int(r, "amount");
	}
	vec_push(&st.pages, p);
	ht_put(&st.by_token, p->token, p);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/hosted/%s?token=%s", listen_port,
	         purchase ? "purchase" : "adduser", p->token);
	j = answer("SUCCESS", "");
	cJSON_AddStringToObject(j, "payUrl", url);
	return j;
}

static cJSON *api_purchase_token(const struct req *r, int dup_charge)
{
	const char *mch = req_str(r, "mchOrderNo");
	struct customer *c = customer_get(req_str(r, "customerId"), 0);
	int declined;

	if (!c || !c->bound)
		return fail("customer not bound");
	if (!dup_charge && ht_get(&st.by_mch, mch))
		return fail("duplicate mchOrderNo");
	declined = card_declined(c->card_number) || c->declines > 0 ||
	           (opt.decline_rate > 0 && rng_double() < opt.decline_rate);
	if (c->declines > 0)
		c->declines--;
	if (declined)
		return fail("card declined");
	return success_order(order_new(mch, c->id, req_int(r, "amount"), "pay", ""));
}

/* Refund (amount > 0) or void (amount 0: the whole order). */
static cJSON *api_refund(const struct req *r, int is_void)
{
	struct order *o = ht_get(&st.by_pay, req_str(r, "payOrderId"));
	const char *no = req_str(r, "mchRefundNo");
	long long amount;

	if (!o || strcmp(o->pay_type, "pay") != 0)
		return fail("order not exist");
	if (ht_get(&st.by_mch, no))
		return fail("duplicate mchRefundNo");
	if (o->voided)
		return fail("order already voided");
	if (is_void) {
		if (o->refunded)
			return fail("order already refunded");
		o->voided = 1;
		amount = o->amount;
	} else {
		amount = req_int(r, "refundAmount");
		if (amount > o->amount - o->refunded)
			return fail("refund amount exceeds the order");
		o->refunded += amount;
	}
	return success_order(
	    order_new(no, o->customer_id, amount, is_void ? "void" : "refund", o->pay_order_id));
}

static cJSON *api_query(const struct req *r)
{
	const char *pay = req_str(r, "payOrderId"), *mch = req_str(r, "mchOrderNo");
	struct order *o;

	if (!pay && !mch)
		return fail("missing field mchOrderNo or payOrderId");
	o = ht_get(pay ? &st.by_pay : &st.by_mch, pay ? pay : mch);
	return o ? success_order(o) : fail("order not exist");
}

static cJSON *api_isbinding(const struct req *r)
{
	struct customer *c = customer_get(req_str(r, "customerId"), 0);

	return c && c->bound ? answer("SUCCESS", "bound") : fail("customer not bound");
}

/* Checks and runs one API request; returns the response body (malloc'd). */
static char *api_process(enum endpoint ep, const char *body, size_t len, int dup_charge)
{
	struct req r;
	char msg[160];
	cJSON *res = NULL;
	char *out;

	if (req_parse(&r, body, len, msg, sizeof(msg)) < 0)
		res = fail(msg);
	else if (!sign_verify(r.kv, (size_t)r.n, opt.key, req_str(&r, "sign")))
		res = fail("sign error");
	else if (!req_str(&r, "mchId") || strcmp(req_str(&r, "mchId"), opt.mch_id) != 0)
		res = fail("mchId error");
	else if (check_fields(&r, ep_fields[ep], msg, sizeof(msg)) < 0)
		res = fail(msg);
	if (!res) {
		pthread_mutex_lock(&st.mu);
		switch (ep) {
		case EP_PURCHASE:
			res = ht_get(&st.by_mch, req_str(&r, "mchOrderNo"))
			          ? fail("duplicate mchOrderNo")
			          : hosted_page(&r, 1);
			break;
		case EP_ADDUSER:
			res = hosted_page(&r, 0);
			break;
		case EP_PURCHASE_TOKEN:
			res = api_purchase_token(&r, dup_charge);
			break;
		case EP_REFUND:
		case EP_VOID:
			res = api_refund(&r, ep == EP_VOID);
			break;
		case EP_QUERY:
			res = api_query(&r);
			break;
		default:
			res = api_isbinding(&r);
			break;
		}
		pthread_mutex_unlock(&st.mu);
	}
	out = cJSON_PrintUnformatted(res);
	cJSON_Delete(res);
	cJSON_Delete(r.json);
	if (!out)
		abort();
	return out;
}

/* ---- hosted pages ----------------------------------------------------- */

/* Appends s URL-encoded (RFC 3986 unreserved characters kept). */
static void url_encode(char *out, size_t outlen, size_t *pos, const char *s)
{
	for (; *s && *pos + 4 < outlen; s++) {
		unsigned char ch = (unsigned char)*s;

		if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
		    (ch >= '0' && ch <= '9') || strchr("-._~", ch))
			out[(*pos)++] = (char)ch;
		else
			*pos += (size_t)snprintf(out + *pos, outlen - *pos, "%%%02X", ch);
	}
	out[*pos] = '\0';
}

/* returnUrl + "?" (or "&") + the signed, URL-encoded fields. */
static void signed_location(char *out, size_t outlen, const char *base, struct sign_kv *kv,
                            size_t n)
{
	char sig[33];
	size_t pos;

	sign_compute(kv, n, opt.key, sig);
	kv[n].key = "sign";
	kv[n].value = sig;
	pos = (size_t)snprintf(out, outlen, "%s%c", base, strchr(base, '?') ? '&' : '?');
	for (size_t i = 0; i <= n && pos < outlen; i++) {
		if (!kv[i].value[0])
			continue;
		pos += (size_t)snprintf(out + pos, outlen - pos, "%s%s=", i ? "&" : "", kv[i].key);
		if (pos < outlen)
			url_encode(out, outlen, &pos, kv[i].value);
	}
}

static int valid_card(const char *card, const char *expiry)
{
	size_t n = card ? strlen(card) : 0;

	if (n < 12 || n > 19 || strspn(card, "0123456789") != n)
		return 0;
	return expiry && strlen(expiry) == 4 && strspn(expiry, "0123456789") == 4;
}

static const char *card_type(const char *card)
{
	switch (card[0]) {
	case '4':
		return "V";
	case '2':
	case '5':
		return "M";
	case '3':
		return "A";
	default:
		return "O";
	}
}

/* 4501161234567214 -> 450116XXXXXX7214 */
static void mask_card(char *out, size_t len, const char *card)
{
	snprintf(out, len, "%.6sXXXXXX%s", card, card + strlen(card) - 4);
}

/* Binds card (the full number) to the customer, replacing any card. */
static struct customer *customer_bind(const char *id, const char *card, const char *expiry)
{
	struct customer *c = customer_get(id, 1);

	c->bound = 1;
	mask_card(c->card_number, sizeof(c->card_number), card);
	snprintf(c->expiry, sizeof(c->expiry), "%s", expiry);
	snprintf(c->card_type, sizeof(c->card_type), "%s", card_type(card));
	return c;
}

static void queue_notify(const struct order *o, const struct page *p, const char *card_num,
                         const char *expiry, const char *type)
{
	char amount[24], sig[33];
	struct sign_kv kv[] = {
	    {"payOrderId", o->pay_order_id},
	    {"mchId", opt.mch_id},
	    {"mchOrderNo", o->mch_order_no},
	    {"transId", o->trans_id},
	    {"currency", "CAD"},
	    {"amount", amount},
	    {"status", "2"},
	    {"paySuccTime", o->pay_succ_time},
	    {"cardType", type},
	    {"cardNum", card_num},
	    {"expirationDate", expiry},
	};
	struct notify *n = xcalloc(sizeof(*n));
	cJSON *j = cJSON_CreateObject();

	snprintf(amount, sizeof(amount), "%lld", o->amount);
	sign_compute(kv, sizeof(kv) / sizeof(kv[0]), opt.key, sig);
	for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
		if (kv[i].value == amount)
			cJSON_AddNumberToObject(j, "amount", (double)o->amount);
		else if (strcmp(kv[i].key, "status") == 0)
			cJSON_AddNumberToObject(j, "status", o->status);
		else
			cJSON_AddStringToObject(j, kv[i].key, kv[i].value);
	cJSON_AddStringToObject(j, "sign", sig);
	n->body = cJSON_PrintUnformatted(j);
	cJSON_Delete(j);
	if (!n->body)
		abort();
	snprintf(n->mch_order_no, sizeof(n->mch_order_no), "%s", o->mch_order_no);
	snprintf(n->url, sizeof(n->url), "%s", p->notify_url);
	n->next_at = now_mono();
	n->delay = NOTIFY_FIRST_S;
	vec_push(&st.notifies, n);
	pthread_cond_broadcast(&st.wake);
}

/* The customer on a hosted page: fills out (the redirect's Location) and
 * returns 302, or 404/409 when the token is unknown or spent. */
static unsigned hosted_visit(int purchase, const char *token, const char *card, const char *expiry,
                             const char *result, char *out, size_t outlen)
{
	struct page *p = token ? ht_get(&st.by_token, token) : NULL;
	int ok = valid_card(card, expiry) && !(result && strcmp(result, "fail") == 0);
	char masked[24] = "";
	struct sign_kv kv[8];
	size_t n = 0;

	if (!p || p->purchase != purchase)
		return 404;
	if (p->used)
		return 409;
	if (ok)
		mask_card(masked, sizeof(masked), card);
	if (!purchase) {
		kv[n++] = (struct sign_kv){"retCode", ok ? "SUCCESS" : "FAIL"};
		kv[n++] = (struct sign_kv){"customerId", p->customer_id};
		if (ok) {
			struct customer *c = customer_bind(p->customer_id, card, expiry);

			kv[n++] = (struct sign_kv){"cardNumber", c->card_number};
			kv[n++] = (struct sign_kv){"expirationDate", c->expiry};
			kv[n++] = (struct sign_kv){"cardType", c->card_type};
		}
		signed_location(out, outlen, p->return_url, kv, n);
		return 302;
	}
	if (ok && (card_declined(card) || ht_get(&st.by_mch, p->mch_order_no)))
		ok = 0;
	if (!ok) {
		kv[n++] = (struct sign_kv){"retCode", "FAIL"};
		kv[n++] = (struct sign_kv){"mchOrderNo", p->mch_order_no};
		signed_location(out, outlen, p->return_url, kv, n);
		return 302;
	}
	struct order *o = order_new(p->mch_order_no, p->customer_id, p->amount, "pay", "");

	p->used = 1;
	queue_notify(o, p, masked, expiry, card_type(card));
	kv[n++] = (struct sign_kv){"retCode", "SUCCESS"};
	kv[n++] = (struct sign_kv){"payOrderId", o->pay_order_id};
	kv[n++] = (struct sign_kv){"mchOrderNo", o->mch_order_no};
	kv[n++] = (struct sign_kv){"transId", o->trans_id};
	kv[n++] = (struct sign_kv){"paySuccTime", o->pay_succ_time};
	kv[n++] = (struct sign_kv){"status", "2"};
	signed_location(out, outlen, p->return_url, kv, n);
	return 302;
}

/* ---- notify delivery -------------------------------------------------- */

static size_t on_curl_body(char *data, size_t size, size_t nmemb, void *udata)
{
	return buf_add(udata, data, size * nmemb) < 0 ? 0 : size * nmemb;
}

/* 1 when the receiver answered exactly SUCCESS. */
static int notify_post(CURL *h, const char *url, const char *body)
{
	struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
	struct buf b = {.max = MAX_BODY};
	int ok;

	curl_easy_reset(h);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 2000L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_curl_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
	ok = curl_easy_perform(h) == CURLE_OK && b.p && strcmp(b.p, "SUCCESS") == 0;
	curl_slist_free_all(hdr);
	buf_free(&b);
	return ok;
}

static struct notify *notify_next(double *due)
{
	struct notify *best = NULL;

	for (size_t i = 0; i < st.notifies.n; i++) {
		struct notify *n = st.notifies.v[i];

		if (!n->delivered && n->attempts < NOTIFY_TRIES &&
		    (!best || n->next_at < best->next_at))
			best = n;
	}
	*due = best ? best->next_at : 0;
	return best;
}

static void *notify_main(void *arg)
{
	CURL *h = curl_easy_init();

	(void)arg;
	if (!h)
		abort();
	pthread_mutex_lock(&st.mu);
	while (!st.stopping) {
		double due, wait;
		struct notify *n = notify_next(&due);

		if (!n) {
			pthread_cond_wait(&st.wake, &st.mu);
			continue;
		}
		wait = due - now_mono();
		if (wait > 0) {
			struct timespec ts;

			clock_gettime(CLOCK_MONOTONIC, &ts);
			ts.tv_sec += (time_t)wait;
			ts.tv_nsec += (long)((wait - floor(wait)) * 1e9);
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&st.wake, &st.mu, &ts);
			continue;
		}
		n->attempts++;
		unsigned long gen = st.generation;
		char *url = strdup(n->url), *body = strdup(n->body);

		pthread_mutex_unlock(&st.mu);
		int ok = url && body && notify_post(h, url, body);
		free(url);
		free(body);
		pthread_mutex_lock(&st.mu);
		if (gen != st.generation)
			continue; /* reset meanwhile: n is gone */
		n->delivered = ok;
		n->next_at = now_mono() + n->delay;
		n->delay = fmin(n->delay * 2, NOTIFY_MAX_S);
	}
	pthread_mutex_unlock(&st.mu);
	curl_easy_cleanup(h);
	return NULL;
}

/* ---- control ---------------------------------------------------------- */

static char *ledger_json(void)
{
	cJSON *root = cJSON_CreateObject();
	cJSON *orders = cJSON_AddArrayToObject(root, "orders");
	cJSON *bindings = cJSON_AddArrayToObject(root, "bindings");
	cJSON *notifies = cJSON_AddArrayToObject(root, "notifies");
	cJSON *requests = cJSON_AddObjectToObject(root, "requests");
	char *out;

	pthread_mutex_lock(&st.mu);
	for (size_t i = 0; i < st.orders.n; i++) {
		const struct order *o = st.orders.v[i];
		cJSON *j = cJSON_CreateObject();

		cJSON_AddStringToObject(j, "payOrderId", o->pay_order_id);
		cJSON_AddStringToObject(j, "mchOrderNo", o->mch_order_no);
		cJSON_AddStringToObject(j, "transId", o->trans_id);
		cJSON_AddStringToObject(j, "customerId", o->customer_id);
		cJSON_AddNumberToObject(j, "amount", (double)o->amount);
		cJSON_AddNumberToObject(j, "status", o->status);
		cJSON_AddStringToObject(j, "payType", o->pay_type);
		cJSON_AddStringToObject(j, "originalOrderId", o->original_order_id);
		cJSON_AddNumberToObject(j, "refunded", (double)o->refunded);
		cJSON_AddBoolToObject(j, "voided", o->voided);
		cJSON_AddItemToArray(orders, j);
	}
	for (size_t i = 0; i < st.customers.n; i++) {
		const struct customer *c = st.customers.v[i];
		cJSON *j;

		if (!c->bound)
			continue;
		j = cJSON_CreateObject();
		cJSON_AddStringToObject(j, "customerId", c->id);
		cJSON_AddStringToObject(j, "cardNumber", c->card_number);
		cJSON_AddStringToObject(j, "expirationDate", c->expiry);
		cJSON_AddStringToObject(j, "cardType", c->card_type);
		cJSON_AddItemToArray(bindings, j);
	}
	for (size_t i = 0; i < st.notifies.n; i++) {
		const struct notify *n = st.notifies.v[i];
		cJSON *j = cJSON_CreateObject();

		cJSON_AddStringToObject(j, "mchOrderNo", n->mch_order_no);
		cJSON_AddNumberToObject(j, "attempts", n->attempts);
		cJSON_AddBoolToObject(j, "delivered", n->delivered);
		cJSON_AddItemToArray(notifies, j);
	}
	for (int i = 0; i < EP_COUNT; i++)
		cJSON_AddNumberToObject(requests, ep_names[i], (double)st.requests[i]);
	pthread_mutex_unlock(&st.mu);
	out = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	if (!out)
		abort();
	return out;
}

static int ep_lookup(const char *name)
{
	for (int i = 0; i < EP_COUNT; i++)
		if (strcmp(ep_names[i], name) == 0)
			return i;
	return -1;
}

static int fk_lookup(const char *name)
{
	for (int i = 0; i < FK_COUNT; i++)
		if (strcmp(fk_names[i], name) == 0)
			return i;
	return -1;
}

/* A fault rule replaces the rule for the same endpoint and kind. */
static const char *ctl_faults(const cJSON *in)
{
	const cJSON *ep = cJSON_GetObjectItemCaseSensitive(in, "endpoint");
	const cJSON *kind = cJSON_GetObjectItemCaseSensitive(in, "kind");
	const cJSON *rate = cJSON_GetObjectItemCaseSensitive(in, "rate");
	const cJSON *count = cJSON_GetObjectItemCaseSensitive(in, "count");
	const cJSON *ms = cJSON_GetObjectItemCaseSensitive(in, "ms");
	struct fault f = {.count = -1};
	int i;

	if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(in, "clear"))) {
		st.nfaults = 0;
		return NULL;
	}
	if (!cJSON_IsString(ep) || !cJSON_IsString(kind))
		return "endpoint and kind are required";
	f.endpoint = strcmp(ep->valuestring, "*") == 0 ? -1 : ep_lookup(ep->valuestring);
	if (f.endpoint < 0 && strcmp(ep->valuestring, "*") != 0)
		return "unknown endpoint";
	if (fk_lookup(kind->valuestring) < 0)
		return "unknown kind";
	f.kind = (enum fault_kind)fk_lookup(kind->valuestring);
	if (cJSON_IsNumber(count))
		f.count = count->valueint > 0 ? count->valueint : 0;
	else if (cJSON_IsNumber(rate) && rate->valuedouble >= 0 && rate->valuedouble <= 1)
		f.rate = rate->valuedouble;
	else
		return "rate (0..1) or count is required";
	f.ms = cJSON_IsNumber(ms) && ms->valuedouble > 0 ? (long)ms->valuedouble : 0;
	for (i = 0; i < st.nfaults; i++)
		if (st.faults[i].endpoint == f.endpoint && st.faults[i].kind == f.kind)
			break;
	if (i == MAX_FAULTS)
		return "too many fault rules";
	st.faults[i] = f;
	if (i == st.nfaults)
		st.nfaults++;
	return NULL;
}

static const char *ctl_customer(const cJSON *in, int unbind)
{
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(in, "customerId");
	const cJSON *count = cJSON_GetObjectItemCaseSensitive(in, "count");
	struct customer *c;

	if (!cJSON_IsString(id) || !id->valuestring[0] || strlen(id->valuestring) > 30)
		return "customerId is required";
	if (!unbind && !cJSON_IsNumber(count))
		return "count is required";
	c = customer_get(id->valuestring, 1);
	if (unbind)
		c->bound = 0;
	else
		c->declines = count->valueint > 0 ? count->valueint : 0;
	return NULL;
}

/* Binds <prefix>1 .. <prefix>count at once (benchmark set-up), each to the
 * card 4501161234567214, as if each had completed the hosted page. */
static const char *ctl_bind(const cJSON *in)
{
	const cJSON *prefix = cJSON_GetObjectItemCaseSensitive(in, "prefix");
	const cJSON *count = cJSON_GetObjectItemCaseSensitive(in, "count");
	char id[32];

	if (!cJSON_IsString(prefix) || strlen(prefix->valuestring) > 20 || !cJSON_IsNumber(count) ||
	    count->valuedouble < 1 || count->valuedouble > 1e9)
		return "prefix (at most 20 characters) and count (1..1e9) are required";
	for (long i = 1; i <= (long)count->valuedouble; i++) {
		snprintf(id, sizeof(id), "%s%ld", prefix->valuestring, i);
		customer_bind(id, "4501161234567214", "0728");
	}
	return NULL;
}

/* {"status":N}: the status reversed payments are reported with (0: their own). */
static const char *ctl_reversed(const cJSON *in)
{
	const cJSON *n = cJSON_GetObjectItemCaseSensitive(in, "status");

	if (!cJSON_IsNumber(n) || n->valuedouble < 0 || n->valuedouble > 99 ||
	    n->valuedouble != (int)n->valuedouble)
		return "status must be an integer from 0 to 99";
	opt.reversed_status = (int)n->valuedouble;
	return NULL;
}

/* POST /_fake/<name>: 200 {"ok":true} or 400 {"error":...}. */
static unsigned control(const char *name, const char *body, size_t len, char **out)
{
	cJSON *in = cJSON_ParseWithLength(body ? body : "{}", body ? len : 2);
	const char *err = NULL;
	cJSON *res = cJSON_CreateObject();

	pthread_mutex_lock(&st.mu);
	if (strcmp(name, "reset") == 0)
		state_clear();
	else if (!cJSON_IsObject(in))
		err = "body must be a JSON object";
	else if (strcmp(name, "faults") == 0)
		err = ctl_faults(in);
	else if (strcmp(name, "decline") == 0)
		err = ctl_customer(in, 0);
	else if (strcmp(name, "unbind") == 0)
		err = ctl_customer(in, 1);
	else if (strcmp(name, "bind") == 0)
		err = ctl_bind(in);
	else if (strcmp(name, "reversed") == 0)
		err = ctl_reversed(in);
	else
		err = "unknown control";
	pthread_mutex_unlock(&st.mu);
	if (err)
		cJSON_AddStringToObject(res, "error", err);
	else
		cJSON_AddBoolToObject(res, "ok", 1);
	*out = cJSON_PrintUnformatted(res);
	cJSON_Delete(res);
	cJSON_Delete(in);
	if (!*out)
		abort();
	return err ? 400 : 200;
}

/* ---- HTTP ------------------------------------------------------------- */

/* What one request carries between libmicrohttpd's calls. */
struct call {
	int ep; /* API endpoint, -1 for other paths */
	struct decision d;
	struct buf body;
	double arrived; /* now_mono() at its first byte */
	int hanging;    /* resumed from its hang: closed */
	/* an API request's answer (answer_api) */
	int answered;
	unsigned code;
	const char *ctype;
	char *out;    /* NULL: close without answering */
	long hang_ms; /* then keep the connection open that long */
};

static enum MHD_Result respond(struct MHD_Connection *c, unsigned code, const char *ctype,
                               char *body, const char *location)
{
	struct MHD_Response *r =
	    MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
	enum MHD_Result ret;

	if (!r) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", ctype);
	if (location)
		MHD_add_response_header(r, "Location", location);
	ret = MHD_queue_response(c, code, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result respond_text(struct MHD_Connection *c, unsigned code, const char *text)
{
	char *body = strdup(text);

	return body ? respond(c, code, "text/plain", body, NULL) : MHD_NO;
}

/* A plain-text answer: an HTTP error in place of the API's JSON. */
static void answer_text(struct call *call, unsigned code, const char *text)
{
	call->code = code;
	call->ctype = "text/plain";
	call->out = xstrdup(text);
}

/* The answer to an API request, decided once its latency has passed, as
 * the gateway processes a request whether or not its client still waits
 * (the delays process it when due, before resuming its connection). */
static void answer_api(struct call *call)
{
	const struct decision *d = &call->d;
	char *out;

	call->answered = 1;
	call->code = 200;
	call->ctype = "application/json";
	if (d->outcome == FK_HTTP429) {
		answer_text(call, 429, "Too Many Requests");
		return;
	}
	if (d->outcome == FK_BUSY) {
		call->out = xstrdup("{\"retCode\":\"FAIL\",\"retMsg\":\"system busy\"}");
		return;
	}
	/* a refusal in words billingd does not know, as another gateway's
	 * "unknown mchId" would be */
	if (d->outcome == FK_UNFAMILIAR) {
		call->out = xstrdup("{\"retCode\":\"FAIL\",\"retMsg\":\"unknown mchId\"}");
		return;
	}
	if (call->body.full) {
		answer_text(call, 413, "Payload Too Large");
		return;
	}
	out = api_process((enum endpoint)call->ep, call->body.p ? call->body.p : "", call->body.len,
	                  d->dup_charge);
	switch (d->outcome) {
	case FK_DROP_AFTER:
		free(out);
		return;
	case FK_HANG_AFTER:
		free(out);
		call->hang_ms = d->outcome_ms > 0 ? d->outcome_ms : 0;
		return;
	case FK_HTTP5XX:
		free(out);
		answer_text(call, 502, "Bad Gateway");
		return;
	case FK_GARBAGE:
		pthread_mutex_lock(&st.mu);
		if (rng_double() < 0.5) {
			out[strlen(out) / 2] = '\0'; /* truncated JSON */
		} else {
			free(out);
			out = xstrdup("<html><body>upstream error</body></html>");
		}
		pthread_mutex_unlock(&st.mu);
		call->out = out;
		return;
	default:
		call->out = out;
	}
}

static enum MHD_Result serve_api(struct MHD_Connection *c, struct call *call)
{
	char *out;

	if (call->hanging)
		return MHD_NO;
	if (!call->answered) {
		/* answered when due (delays_resume), or now once stopping; its
		 * latency counts from its arrival, not from when this thread got
		 * to it */
		if (call->d.latency_ms > 0 &&
		    delay(c, call, call->arrived, call->d.latency_ms) == 0)
			return MHD_YES;
		answer_api(call);
	}
	if (call->hang_ms > 0) {
		call->hanging = 1;
		return delay(c, NULL, now_mono(), call->hang_ms) == 0 ? MHD_YES : MHD_NO;
	}
	if (!call->out)
		return MHD_NO; /* dropped after processing, or a hang of 0 ms */
	out = call->out;
	call->out = NULL;
	return respond(c, call->code, call->ctype, out, NULL);
}

static enum MHD_Result serve_hosted(struct MHD_Connection *c, int purchase)
{
	char location[2048];
	unsigned code;

	pthread_mutex_lock(&st.mu);
	code =
	    hosted_visit(purchase, MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "token"),
	                 MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "card"),
	                 MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "expiry"),
	                 MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "result"), location,
	                 sizeof(location));
	pthread_mutex_unlock(&st.mu);
	if (code == 404)
		return respond_text(c, 404, "unknown token");
	if (code == 409)
		return respond_text(c, 409, "page already used");
	return respond(c, 302, "text/plain", strdup(""), location);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
	struct call *call = *con_cls;
	int post = strcmp(method, "POST") == 0, get = strcmp(method, "GET") == 0;

	(void)cls;
	(void)version;
	if (!call) {
		call = xcalloc(sizeof(*call));
		call->arrived = now_mono();
		call->body.max = MAX_BODY;
		*con_cls = call;
		call->ep = strncmp(url, "/v2/", 4) == 0 ? ep_lookup(url + 4) : -1;
		if (call->ep >= 0 && post) {
			pthread_mutex_lock(&st.mu);
			st.requests[call->ep]++;
			faults_decide((enum endpoint)call->ep, &call->d);
			pthread_mutex_unlock(&st.mu);
			if (call->d.outcome == FK_DROP_BEFORE)
				return MHD_NO;
		}
		return MHD_YES;
	}
	if (*upload_size) {
		if (buf_add(&call->body, upload, *upload_size) < 0 && call->body.nomem)
			abort();
		*upload_size = 0;
		return MHD_YES;
	}
	if (call->ep >= 0 && post)
		return serve_api(c, call);
	if (get && strcmp(url, "/hosted/adduser") == 0)
		return serve_hosted(c, 0);
	if (get && strcmp(url, "/hosted/purchase") == 0)
		return serve_hosted(c, 1);
	if (get && strcmp(url, "/_fake/ledger") == 0)
		return respond(c, 200, "application/json", ledger_json(), NULL);
	if (post && strncmp(url, "/_fake/", 7) == 0) {
		char *out;
		unsigned code = control(url + 7, call->body.p, call->body.len, &out);

		return respond(c, code, "application/json", out, NULL);
	}
	return respond_text(c, 404, "not found");
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
	struct call *call = *con_cls;

	(void)cls;
	(void)c;
	(void)toe;
	if (call) {
		buf_free(&call->body);
		free(call->out);
		free(call);
		*con_cls = NULL;
	}
}

/* ---- main ------------------------------------------------------------- */

static void usage(void)
{
	fprintf(stderr, "usage: fakegw --key KEY --mch-id ID [--port N] [--latency-ms N] "
	                "[--decline-rate P] [--seed N] [--reversed-status N]\n");
}

static int parse_args(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		char *end = NULL;

		if (!v)
			return -1;
		i++;
		if (strcmp(a, "--key") == 0)
			opt.key = v;
		else if (strcmp(a, "--mch-id") == 0)
			opt.mch_id = v;
		else if (strcmp(a, "--port") == 0)
			opt.port = (int)strtol(v, &end, 10);
		else if (strcmp(a, "--latency-ms") == 0)
			opt.latency_ms = strtol(v, &end, 10);
		else if (strcmp(a, "--decline-rate") == 0)
			opt.decline_rate = strtod(v, &end);
		else if (strcmp(a, "--seed") == 0)
			opt.seed = strtoull(v, &end, 10);
		else if (strcmp(a, "--reversed-status") == 0)
			opt.reversed_status = (int)strtol(v, &end, 10);
		else
			return -1;
		if (end && *end)
			return -1;
	}
	if (!opt.key || !opt.key[0] || !opt.mch_id || !opt.mch_id[0] || opt.port < 0 ||
	    opt.port > 65535 || opt.latency_ms < 0 || opt.decline_rate < 0 ||
	    opt.decline_rate > 1 || opt.reversed_status < 0 || opt.reversed_status > 99)
		return -1;
	return 0;
}

/* ---- the loops ---------------------------------------------------------- */

/* LOOPS threads, each with its own libmicrohttpd daemon on the shared port
 * (SO_REUSEPORT: the kernel spreads the connections) and its own delays:
 * requests of one burst are processed on both cores, as a gateway would,
 * instead of each waiting for the ones before it. */
#define LOOPS 2

static struct loop {
	struct MHD_Daemon *d;
	pthread_t thread;
} loops[LOOPS];

static struct MHD_Daemon *daemon_start(int port)
{
	struct sockaddr_in addr = {.sin_family = AF_INET};

	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	addr.sin_port = htons((uint16_t)port);
	return MHD_start_daemon(MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME, 0, NULL, NULL, on_request,
	                        NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
	                        MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u, MHD_OPTION_CONNECTION_LIMIT,
	                        4096u, MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u,
	                        MHD_OPTION_CONNECTION_TIMEOUT, 120u, MHD_OPTION_NOTIFY_COMPLETED,
	                        on_completed, NULL, MHD_OPTION_END);
}

/* One loop's thread: its daemon's events, then its delays that are due,
 * until the stop pipe is readable; then what is suspended is resumed (and
 * closed by its handler) and the daemon stops. */
static void *loop_main(void *arg)
{
	struct loop *l = arg;
	struct pollfd ready[2] = {
	    {.fd = MHD_get_daemon_info(l->d, MHD_DAEMON_INFO_EPOLL_FD)->epoll_fd, .events = POLLIN},
	    {.fd = stop_pipe[0], .events = POLLIN}};

	while (!ready[1].revents) {
		MHD_UNSIGNED_LONG_LONG mhd_ms;
		struct timespec ts;
		double wait;

		MHD_run(l->d);
		wait = delays_resume();
		if (MHD_get_timeout(l->d, &mhd_ms) == MHD_YES &&
		    (wait < 0 || mhd_ms / 1000.0 < wait))
			wait = mhd_ms / 1000.0;
		ts.tv_sec = (time_t)wait;
		ts.tv_nsec = (long)((wait - (double)ts.tv_sec) * 1e9);
		if (ppoll(ready, 2, wait < 0 ? NULL : &ts, NULL) < 0 && errno != EINTR)
			break;
	}
	dl.stopping = 1;
	delays_resume();
	MHD_run(l->d);
	MHD_stop_daemon(l->d);
	free(dl.v);
	return NULL;
}

int main(int argc, char **argv)
{
	struct rlimit rl;
	pthread_condattr_t ca;
	pthread_t notifier;
	struct sigaction sa = {0};
	struct pollfd stop = {.fd = -1, .events = POLLIN};

	if (parse_args(argc, argv) < 0) {
		usage();
		return 2;
	}
	/* 1,000 concurrent clients need more descriptors than the usual 1,024. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	st.rng = opt.seed * 0x9E3779B97F4A7C15ULL + 1;
	st.next_id = (unsigned long long)time(NULL) * 1000000ULL;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&st.wake, &ca);
	pthread_condattr_destroy(&ca);
	signal(SIGPIPE, SIG_IGN);
	if (pipe2(stop_pipe, O_NONBLOCK) < 0) {
		fprintf(stderr, "fakegw: pipe: %s\n", strerror(errno));
		return 1;
	}
	stop.fd = stop_pipe[0];
	/* A handler, not a blocked mask and sigwait: whichever thread the
	 * signal lands on, it only makes the stop pipe readable. */
	sa.sa_handler = on_stop_signal;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (pthread_create(&notifier, NULL, notify_main, NULL) != 0) {
		fprintf(stderr, "fakegw: cannot start the notify thread\n");
		return 1;
	}
	/* the first loop binds the port (the kernel's choice with --port 0),
	 * the others share it */
	for (int i = 0; i < LOOPS; i++) {
		int port = i ? listen_port : opt.port;

		loops[i].d = daemon_start(port);
		if (!loops[i].d) {
			fprintf(stderr, "fakegw: cannot listen on 127.0.0.1:%d\n", port);
			return 1;
		}
		listen_port = MHD_get_daemon_info(loops[i].d, MHD_DAEMON_INFO_BIND_PORT)->port;
	}
	for (int i = 0; i < LOOPS; i++)
		if (pthread_create(&loops[i].thread, NULL, loop_main, &loops[i]) != 0) {
			fprintf(stderr, "fakegw: cannot start its threads\n");
			return 1;
		}
	printf("port=%d\n", listen_port);
	fflush(stdout);
	while (poll(&stop, 1, -1) < 1)
		;

	pthread_mutex_lock(&st.mu);
	st.stopping = 1;
	pthread_cond_broadcast(&st.wake);
	pthread_mutex_unlock(&st.mu);
	for (int i = 0; i < LOOPS; i++)
		pthread_join(loops[i].thread, NULL);
	pthread_join(notifier, NULL);
	state_clear();
	curl_global_cleanup();
	return 0;
}
