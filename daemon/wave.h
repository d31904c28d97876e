/* wave.h: a wave of one unfamiliar FAIL message. When WAVE_CUSTOMERS
 * different customers in a row get the same FAIL in words the gateway
 * module does not know (GW_R_UNFAMILIAR), it is not their cards: the
 * merchant's account or the gateway is wrong, so nobody is dunned for it and
 * charging stops until an answer differs (docs/design.md, "A wave of
 * identical failures"). Single unfamiliar FAILs stay declines. The state
 * belongs to one thread; wave_current is safe from any thread. */
#ifndef WAVE_H
#define WAVE_H

#include <stddef.h>

#define WAVE_CUSTOMERS 8

enum wave_verdict {
	WAVE_NO,   /* not part of a wave: recorded as it is, and ends any streak */
	WAVE_HOLD, /* joins a streak: hold its recording until the streak is decided */
	WAVE_ON    /* a wave (just reached, or going on): not the customer's doing */
};

struct wave {
	char msg[256];                      /* the streak's message */
	char customers[WAVE_CUSTOMERS][31]; /* its distinct customers */
	int n;
	int on; /* the streak is a wave */
};

/* Feeds one charge's answer: customer, whether it is an unfamiliar FAIL,
 * and its message. A streak of another message (or an answer that is not
 * an unfamiliar FAIL) ends the current one: WAVE_NO, or WAVE_HOLD when this
 * answer starts a new streak; *restarted says whether it did. */
enum wave_verdict wave_feed(struct wave *w, const char *customer, int unfamiliar, const char *msg,
                            int *restarted);

/* The message of the wave going on in this process, into buf ("" when
 * none); what /healthz and /metrics show. */
void wave_current(char *buf, size_t len);

#endif
