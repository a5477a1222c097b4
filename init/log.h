/* Logging: one line per event on standard error (SPEC §8).
 *
 * A call is PI_LOG(level, FORMAT, ...): FORMAT is printf-checked. What it
 * produces is split on PI_KV (the ASCII unit separator): the first piece is
 * the message, each further piece is one `key=value` field. The value may
 * contain anything; the logger quotes and escapes it for logfmt or JSON, so
 * both formats come from the same call site:
 *
 *   PI_LOG(PI_WARN, "host does not resolve" PI_KV "var=%s" PI_KV "error=%s", v, e);
 *
 * Logging never changes errno. */
#ifndef PI_LOG_H
#define PI_LOG_H

enum pi_log_level { PI_DEBUG = 0, PI_INFO = 1, PI_WARN = 2, PI_ERROR = 3 };
enum pi_log_format { PI_LOG_TEXT = 0, PI_LOG_JSON = 1 };

#define PI_KV "\037"

extern int pi_log_min_level;

/* Sets the threshold and the format; before the first call: info, text. */
void pi_log_setup(int min_level, int format);

/* Parses "debug", "info", "warn", "error"; returns the level or -EINVAL. */
int pi_log_level_parse(const char *s);

void pi_log_emit(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define PI_LOG(level, ...)                                                                         \
	do {                                                                                       \
		if ((level) >= pi_log_min_level)                                                   \
			pi_log_emit((level), __VA_ARGS__);                                         \
	} while (0)

#endif
