/* Durations written as text ("1.5", "250ms", "2s", "1m"), shared by the
 * `health` client (--timeout) and the config loader (every *_ms key). */
#ifndef PI_HEALTH_DURATION_H
#define PI_HEALTH_DURATION_H

#include <stdint.h>

/* Parses seconds (decimals allowed) or a number followed by ms, s or m,
 * with optional surrounding blanks, into milliseconds (rounded). Returns 0
 * with *ms set, or -EINVAL (not a duration, or over a week) with *ms
 * untouched. */
int pi_health_parse_duration(const char *s, uint64_t *ms);

#endif
