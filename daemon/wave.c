/* wave.c: a wave of one unfamiliar FAIL message (wave.h). Compares
 * messages as opaque text: only the gateway module knows its wording. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "wave.h"

/* The wave going on, for the admin's threads. */
static pthread_mutex_t current_mu = PTHREAD_MUTEX_INITIALIZER;
static char current[256];

static void set_current(const char *msg)
{
	pthread_mutex_lock(&current_mu);
	snprintf(current, sizeof(current), "%s", msg);
	pthread_mutex_unlock(&current_mu);
}

void wave_current(char *buf, size_t len)
{
	pthread_mutex_lock(&current_mu);
	snprintf(buf, len, "%s", current);
	pthread_mutex_unlock(&current_mu);
}

static void end_streak(struct wave *w)
{
	if (w->on) {
		log_event("info", "gateway_wave_over", "ret_msg", w->msg, (char *)NULL);
		set_current("");
	}
	w->n = 0;
	w->on = 0;
	w->msg[0] = '\0';
}

enum wave_verdict wave_feed(struct wave *w, const char *customer, int unfamiliar, const char *msg,
                            int *restarted)
{
	int i;

	*restarted = 0;
	if (!unfamiliar) {
		end_streak(w);
		return WAVE_NO;
	}
	if (w->n == 0 || strcmp(w->msg, msg) != 0) {
		end_streak(w);
		snprintf(w->msg, sizeof(w->msg), "%s", msg);
		*restarted = 1;
	}
	if (w->on)
		return WAVE_ON;
	for (i = 0; i < w->n && strcmp(w->customers[i], customer) != 0; i++)
		;
	if (i == w->n)
		snprintf(w->customers[w->n++], sizeof(w->customers[0]), "%s", customer);
	if (w->n < WAVE_CUSTOMERS)
		return WAVE_HOLD;
	w->on = 1;
	set_current(w->msg);
	log_event("error", "gateway_wave", "ret_msg", w->msg, "detail",
	          "the same unfamiliar FAIL for many customers in a row: charging stops and "
	          "retries later, nobody is dunned for it",
	          (char *)NULL);
	return WAVE_ON;
}
