/* fuzz_gateway.c: the classification of a gateway answer (gw_classify) on
 * any body and HTTP status, for each call. First byte: the call; next two:
 * the status. Checks that the outcome is one of the four, that the texts
 * are terminated (the detail one line), and that nothing unparsed is taken as a success. */
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "fuzz.h"
#include "gateway.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* NUL-terminated within cap; one line when line is set. */
static void terminated(const char *s, size_t cap, int line)
{
	size_t n = strnlen(s, cap);

	if (n == cap || (line && memchr(s, '\n', n)))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct gw_request req = {.mch_order_no = "BD12-0-1",
	                         .customer_id = "c1",
	                         .amount = 2900,
	                         .subject = "Monthly",
	                         .notify_url = "https://shop.example/notify",
	                         .return_url = "https://shop.example/return",
	                         .mch_refund_no = "BDR7",
	                         .pay_order_id = "IP123"};
	struct gw_result res;
	enum gw_outcome o;
	cJSON *j;
	long status;

	if (size < 3)
		return 0;
	req.call = (enum gw_call)(data[0] % (GW_ISBINDING + 1));
	if (req.call == GW_QUERY && data[0] & 0x80)
		req.mch_order_no = NULL; /* by payOrderId */
	else if (req.call == GW_QUERY)
		req.pay_order_id = NULL;
	status = data[1] << 8 | data[2];
	memset(&res, 0xa5, sizeof(res));
	o = gw_classify(&req, status, (const char *)data + 3, size - 3, &res);
	if (o != GW_INVALID && o != GW_SUCCESS && o != GW_FAIL && o != GW_UNKNOWN)
		abort();
	if (o != res.outcome)
		abort();
	terminated(res.detail, sizeof(res.detail), 1);
	terminated(res.ret_msg, sizeof(res.ret_msg), 0);
	terminated(res.pay_url, sizeof(res.pay_url), 0);
	j = cJSON_ParseWithLength((const char *)data + 3, size - 3);
	if (o == GW_SUCCESS && (!j || status < 200 || status > 299))
		abort();
	cJSON_Delete(j);
	return 0;
}
