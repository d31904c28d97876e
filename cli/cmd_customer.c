/* cmd_customer.c: billctl customer enrol|update-card|show|list|check|history:
 * enrolment and card replacement through the gateway's hosted card page,
 * the binding state of our customers, and what happened to one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cards.h"
#include "customers.h"
#include "history.h"
#include "out.h"

#define USAGE                                                                                      \
	"usage: billctl customer enrol ID [--email E] [--name N] | update-card ID [--dry-run] | "  \
	"show ID | list [--expiring DAYS] | check ID | history ID"

static cJSON *customer_json(const void *item)
{
	const struct customer *cu = item;
	cJSON *o = cJSON_CreateObject();

	out_json_add(o,
	             "customer_id:s state:s email:s name:s card:s card_type:s card_expiry:s "
	             "binding_id:s enrol_expires_at:t created_at:t",
	             cu->id, cu->state, cu->email, cu->name, cu->card_masked, cu->card_type,
	             cu->card_expiry, cu->binding_id, cu->enrol_expires_at, cu->created_at);
	return o;
}

static int enrol(struct cli *ctx, int argc, char **argv)
{
	const char *email = NULL, *name = NULL, *id;
	const struct out_opt opts[] = {{"--email", &email, NULL}, {"--name", &name, NULL}, {0}};
	char url[1024], err[512];
	PGconn *db;
	struct gw_client *gw;

	if (out_args(argc, argv, 2, opts, &id, 1, 1, USAGE) < 0)
		return CLI_USAGE;
	if (out_connect(ctx, &db, &gw) < 0)
		return CLI_FAIL;
	if (customers_enrol(db, gw, &ctx->cfg, id, email, name, ctx->now, url, sizeof(url), err,
	                    sizeof(err)) < 0)
		return out_fail(err);
	if (ctx->json) {
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "customer_id", id);
		cJSON_AddStringToObject(o, "state", customers_states[CUSTOMERS_PENDING]);
		cJSON_AddStringToObject(o, "pay_url", url);
		out_json(o);
	} else {
		printf("%s\n", url);
	}
	return CLI_OK;
}

static cJSON *update_json(const struct cards_update *u)
{
	cJSON *o = cJSON_CreateObject();

	out_json_add(o, "binding_id:s state:s pay_url:s requested_at:t expires_at:t", u->binding_id,
	             u->state, u->pay_url, u->requested_at, u->expires_at);
	return o;
}

/* A new card page under the next binding id; the card in use stays until
 * the new one is bound. */
static int update_card(struct cli *ctx, int argc, char **argv)
{
	const char *id;
	int dry = 0;
	const struct out_opt opts[] = {{"--dry-run", NULL, &dry}, {0}};
	struct cards_update u;
	struct customer cu;
	char err[512], t[64];
	PGconn *db;
	struct gw_client *gw = NULL;

	if (out_args(argc, argv, 2, opts, &id, 1, 1, USAGE) < 0)
		return CLI_USAGE;
	if (dry ? !(db = cli_db(ctx)) : out_connect(ctx, &db, &gw) < 0)
		return CLI_FAIL;
	if (cards_request(db, gw, &ctx->cfg, id, ctx->now, dry, &u, err, sizeof(err)) < 0 ||
	    customers_get(db, id, &cu, err, sizeof(err)) < 0)
		return out_fail(err);
	if (ctx->json) {
		cJSON *o = update_json(&u);

		out_json_add(o, "customer_id:s card_in_use:s", id, cu.binding_id);
		if (dry)
			out_json_add(o, "dry_run:b", 1);
		out_json(o);
		return CLI_OK;
	}
	out_time(u.expires_at, t, sizeof(t));
	if (dry)
		printf("dry run, nothing sent: would send customer %s a card page (cc_adduser) "
		       "binding %s, open until %s; card %s (%s) stays in use until then\n",
		       id, u.binding_id, t, cu.card_masked, cu.binding_id);
	else
		printf("%s\n", u.pay_url);
	return CLI_OK;
}

static int show(struct cli *ctx, int argc, char **argv)
{
	const char *id;
	struct customer cu;
	struct cards_update u;
	int u_rc;
	char err[512], t[64];
	PGconn *db;

	if (out_args(argc, argv, 2, NULL, &id, 1, 1, USAGE) < 0)
		return CLI_USAGE;
	if (!(db = cli_db(ctx)))
		return CLI_FAIL;
	if (customers_get(db, id, &cu, err, sizeof(err)) < 0 ||
	    (u_rc = cards_pending(db, id, &u, err, sizeof(err))) < 0)
		return out_fail(err);
	if (ctx->json) {
		cJSON *o = customer_json(&cu);

		out_json_add(o, "card_update:j", u_rc > 0 ? update_json(&u) : NULL);
		out_json(o);
		return CLI_OK;
	}
	printf("customer  %s\nstate     %s\nemail     %s\nname      %s\n", cu.id, cu.state,
	       cu.email, cu.name);
	if (cu.card_masked[0])
		printf("card      %s %s expires %.2s/%.2s\n", cu.card_type, cu.card_masked,
		       cu.card_expiry, cu.card_expiry + 2);
	else if (strcmp(cu.binding_id, cu.id) != 0)
		printf("card      (its details were not sent: bound through cc_isbinding)\n");
	if (strcmp(cu.binding_id, cu.id) != 0)
		printf("binding   %s (the gateway's customerId of the card in use)\n",
		       cu.binding_id);
	if (u_rc > 0) {
		out_time(u.expires_at, t, sizeof(t));
		printf("card update pending: binding %s, open until %s\ncard page %s\n",
		       u.binding_id, t, u.pay_url[0] ? u.pay_url : "(none handed out)");
	}
	if (strcmp(cu.state, customers_states[CUSTOMERS_PENDING]) == 0) {
		out_time(cu.enrol_expires_at, t, sizeof(t));
		printf("enrolment expires %s\n", t);
	}
	return CLI_OK;
}

static void customer_row(struct out_table *t, const void *item)
{
	const struct customer *cu = item;
	char exp[8] = "";

	if (cu->card_expiry[0])
		snprintf(exp, sizeof(exp), "%.2s/%.2s", cu->card_expiry, cu->card_expiry + 2);
	out_table_row(
	    t, (const char *[]){cu->id, cu->state, cu->card_masked, exp, cu->email, cu->name});
}

static int list(struct cli *ctx, int argc, char **argv)
{
	const char *days_s = NULL;
	const struct out_opt opts[] = {{"--expiring", &days_s, NULL}, {0}};
	const char *hdr[] = {"CUSTOMER", "STATE", "CARD", "EXPIRY", "EMAIL", "NAME"};
	struct customer *cs = NULL;
	int days = -1, n = 0;
	char err[512];
	PGconn *db;

	if (out_args(argc, argv, 2, opts, NULL, 0, 0, USAGE) < 0)
		return CLI_USAGE;
	if (days_s && out_parse_int("--expiring", days_s, 0, 36500, &days) < 0)
		return CLI_USAGE;
	if (!(db = cli_db(ctx)))
		return CLI_FAIL;
	if (customers_list(db, days, ctx->now, &cs, &n, err, sizeof(err)) < 0)
		return out_fail(err);
	out_list(ctx, cs, n, sizeof(*cs), customer_json, 6, hdr, customer_row);
	free(cs);
	return CLI_OK;
}

/* cc_isbinding, and our record brought in line with a definite answer
 * (the binding rule is customers_check_binding's, as in billingd). */
static int check(struct cli *ctx, int argc, char **argv)
{
	const char *id;
	struct customers_binding b;
	char err[512];
	PGconn *db;
	struct gw_client *gw;
	int changed;

	if (out_args(argc, argv, 2, NULL, &id, 1, 1, USAGE) < 0)
		return CLI_USAGE;
	if (out_connect(ctx, &db, &gw) < 0)
		return CLI_FAIL;
	if (customers_check_binding(db, gw, id, ctx->now, &b, err, sizeof(err)) < 0)
		return out_fail(err);
	if (b.outcome != GW_SUCCESS && b.outcome != GW_FAIL) {
		cli_error("cc_isbinding %s: %s (%s); nothing changed", id, b.detail,
		          gw_outcome_name(b.outcome));
		return CLI_FAIL;
	}
	changed = strcmp(b.state, b.was) != 0;
	if (ctx->json) {
		cJSON *j = cJSON_CreateObject();
		cJSON_AddStringToObject(j, "customer_id", id);
		cJSON_AddBoolToObject(j, "bound", b.outcome == GW_SUCCESS);
		cJSON_AddStringToObject(j, "state", b.state);
		cJSON_AddStringToObject(j, "was", b.was);
		out_json(j);
	} else {
		printf("%s: %s at the gateway; state %s", id,
		       b.outcome == GW_SUCCESS ? "bound" : "not bound", b.state);
		if (changed)
			printf(" (was %s)", b.was);
		putchar('\n');
	}
	return b.outcome == GW_SUCCESS ? CLI_OK : CLI_FAIL;
}

static cJSON *step_json(const struct history_step *h)
{
	cJSON *o = cJSON_CreateObject();

	out_json_add(o,
	             "at:t billing_time:t entity:s ref:s of:s old_state:s new_state:s detail:s"
	             " amount_cents:I pay_order_id:s ret_msg:s actor:s reason:s",
	             h->at, h->business, h->entity, h->ref, h->of, h->old_state, h->new_state,
	             h->detail, h->amount_cents, h->pay_order_id, h->ret_msg, h->actor, h->reason);
	return o;
}

/* One timeline: enrolments and bindings, subscriptions and every change,
 * charge attempts, refunds and voids, each with who and why. */
static int history(struct cli *ctx, int argc, char **argv)
{
	const char *id;
	const char *hdr[] = {"AT",     "BILLING_TIME", "WHAT",   "REF",   "OF",    "CHANGE",
	                     "AMOUNT", "PAY_ORDER_ID", "DETAIL", "ACTOR", "REASON"};
	struct history_step *hs = NULL;
	int n = 0;
	char err[512];
	PGconn *db;

	if (out_args(argc, argv, 2, NULL, &id, 1, 1, USAGE) < 0)
		return CLI_USAGE;
	if (!(db = cli_db(ctx)))
		return CLI_FAIL;
	if (history_customer(db, id, &hs, &n, err, sizeof(err)) < 0)
		return out_fail(err);
	if (ctx->json) {
		cJSON *o = cJSON_CreateObject(), *a;

		cJSON_AddStringToObject(o, "customer_id", id);
		a = cJSON_AddArrayToObject(o, "history");
		for (int i = 0; i < n; i++)
			cJSON_AddItemToArray(a, step_json(&hs[i]));
		out_json(o);
	} else {
		struct out_table *t = out_table_new(11, hdr);

		for (int i = 0; i < n; i++) {
			const struct history_step *h = &hs[i];
			char at[64], biz[64] = "", change[40], money[32] = "", detail[520];

			out_time(h->at, at, sizeof(at));
			if (h->business)
				out_time(h->business, biz, sizeof(biz));
			snprintf(change, sizeof(change), "%s%s%s", h->old_state,
			         h->old_state[0] ? " -> " : "", h->new_state);
			if (h->amount_cents)
				out_money(strcmp(h->entity, "refund") == 0 ||
				                  strcmp(h->entity, "void") == 0
				              ? -h->amount_cents
				              : h->amount_cents,
				          money, sizeof(money));
			snprintf(detail, sizeof(detail), "%s%s%s", h->detail,
			         h->detail[0] && h->ret_msg[0] ? "; " : "", h->ret_msg);
			out_table_row(t, (const char *[]){at, biz, h->entity, h->ref, h->of, change,
			                                  money, h->pay_order_id, detail, h->actor,
			                                  h->reason});
		}
		out_table_print(t, stdout);
		out_table_free(t);
	}
	free(hs);
	return CLI_OK;
}

int cmd_customer(struct cli *ctx, int argc, char **argv)
{
	static const struct out_sub subs[] = {{"enrol", enrol},
	                                      {"update-card", update_card},
	                                      {"show", show},
	                                      {"list", list},
	                                      {"check", check},
	                                      {"history", history},
	                                      {0}};

	return out_dispatch(ctx, argc, argv, subs, USAGE);
}
