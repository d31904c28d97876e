/* log.h: one logfmt line per event on stderr. */
#ifndef LOG_H
#define LOG_H

/* log_event("info", "charge", "sub", "12", "outcome", "success", NULL):
 * key/value string pairs ended by NULL; values quoted when needed. */
void log_event(const char *level, const char *event, ...) __attribute__((sentinel));

/* Suppresses info lines (billctl prints its own output). */
void log_set_quiet(int quiet);

#endif
