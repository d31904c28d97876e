/* billing.c: the billing rules (billing.h). Periods are computed from the
 * anchor, never by stepping from the previous one, so that a month's
 * clamping (Jan 31 -> Feb 28) never drifts the calendar. */
#include <string.h>

#include "billing.h"
#include "calendar.h"
#include "db.h"

const char *const billing_state_names[BILLING_NSTATES] = {
    [BILLING_TRIALING] = "trialing", [BILLING_ACTIVE] = "active",
    [BILLING_PAST_DUE] = "past_due", [BILLING_PAUSED] = "paused",
    [BILLING_CANCELED] = "canceled", [BILLING_ENDED] = "ended"};

const char *const billing_result_names[BILLING_UNKNOWN + 1] = {[BILLING_SUCCEEDED] = "success",
                                                               [BILLING_DECLINED] = "declined",
                                                               [BILLING_BUSY] = "busy",
                                                               [BILLING_ABSENT] = "absent",
                                                               [BILLING_UNKNOWN] = "unknown"};

int billing_state_parse(const char *s)
{
	return db_name_index(billing_state_names, BILLING_NSTATES, s);
}

static enum billing_state exhausted_state(const struct plan *p)
{
	switch (p->on_exhausted) {
	case PLAN_CANCEL:
		return BILLING_CANCELED;
	case PLAN_PAUSE:
		return BILLING_PAUSED;
	default:
		return BILLING_PAST_DUE;
	}
}

void billing_apply(const struct plan *p, struct billing_sub *s, enum billing_result r, int64_t now)
{
	int k = s->period - s->anchor_period;
	/* An admin's pause or cancel made while the charge was in flight stands. */
	enum billing_state was = s->state;
	int halted = was == BILLING_PAUSED || was == BILLING_CANCELED || was == BILLING_ENDED;

	switch (r) {
	case BILLING_SUCCEEDED:
		s->period_start = cal_period_start(s->anchor, p->interval, p->interval_count, k);
		s->period_end = cal_period_start(s->anchor, p->interval, p->interval_count, k + 1);
		s->period++;
		s->cycles_done++;
		s->attempts = 0;
		if (p->cycles > 0 && s->cycles_done >= p->cycles) {
			s->state = BILLING_ENDED;
			s->next_charge_at = 0;
		} else {
			s->state = BILLING_ACTIVE;
			s->next_charge_at = s->period_end;
		}
		break;
	case BILLING_DECLINED:
		s->attempts++;
		if (s->attempts <= p->nretry) {
			s->state = BILLING_PAST_DUE;
			s->next_charge_at = cal_add(now, p->retry[s->attempts - 1]);
			break;
		}
		s->next_charge_at = 0;
		s->state = exhausted_state(p);
		break;
	case BILLING_BUSY:
		s->next_charge_at = now + BILLING_BUSY_RETRY_SECONDS;
		break;
	case BILLING_ABSENT:
	case BILLING_UNKNOWN:
		return;
	}
	if (halted) {
		s->state = was;
		s->next_charge_at = 0;
	}
}

int64_t billing_anchor(int64_t start, int trial_days)
{
	struct cal_duration d = {trial_days, 'd'};

	return trial_days > 0 ? cal_add(start, d) : start;
}

void billing_resume(struct billing_sub *s, int64_t *trial_end, int64_t paused_at, int64_t now)
{
	s->attempts = 0;
	if (paused_at > 0 && *trial_end > paused_at) {
		*trial_end = now + (*trial_end - paused_at);
		s->anchor = *trial_end;
		s->anchor_period = s->period;
		s->state = BILLING_TRIALING;
		s->next_charge_at = *trial_end;
		return;
	}
	s->state = BILLING_ACTIVE;
	if (s->period_end > now && s->period_end > paused_at) {
		s->next_charge_at = s->period_end;
		return;
	}
	s->anchor = now;
	s->anchor_period = s->period;
	s->next_charge_at = now;
}

int billing_periods_passed(const struct plan *p, int64_t anchor, int64_t now)
{
	int k = 0;

	while ((p->cycles == 0 || k + 1 < p->cycles) &&
	       cal_period_start(anchor, p->interval, p->interval_count, k + 1) <= now)
		k++;
	return k;
}
