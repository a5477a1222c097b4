/* Logging: one line per event on standard error (SPEC §8).
 *
 * A call names the level, a message and any number of typed fields:
 *
 *   PI_LOG(PI_WARN, "host does not resolve", PI_STR("var", v), PI_STR("error", e));
 *   PI_LOG(PI_INFO, "started", PI_STR("command", argv0), PI_INT("pid", pid));
 *   PI_LOG(PI_INFO, "reloaded nginx");
 *
 * Each value travels to the encoder on its own, never inside a formatted
 * string, so no byte of a value (or of the message) can end its field, add
 * a field or start a line: the encoder quotes and escapes every value for
 * the format in use. The compiler checks each value's type against its
 * field macro (a pointer where PI_INT wants a number does not compile
 * cleanly), which takes the place of printf format checking.
 *
 * Keys are meant to be string literals; any bytes are still safe (the
 * encoder escapes them, and renames one that would repeat ts, level, msg or
 * truncated by prefixing `_`).
 *
 * Every line is at most PI_LOG_LINE_MAX bytes and ends with exactly one
 * newline: a value longer than PI_LOG_VALUE_MAX encoded bytes, or a line
 * that would not fit, is cut at a character boundary and the line gets the
 * field truncated=true. Logging never changes errno. */
#ifndef PI_LOG_H
#define PI_LOG_H

#include <stddef.h>

enum pi_log_level { PI_DEBUG = 0, PI_INFO = 1, PI_WARN = 2, PI_ERROR = 3 };
enum pi_log_format { PI_LOG_TEXT = 0, PI_LOG_JSON = 1 };

#define PI_LOG_LINE_MAX	 4096
#define PI_LOG_VALUE_MAX 1024

enum pi_log_type { PI_LOG_T_NONE = 0, PI_LOG_T_STR, PI_LOG_T_INT, PI_LOG_T_UINT };

/* One field. The strings are borrowed: they only need to live for the call. */
struct pi_log_field {
	const char *key;
	enum pi_log_type type;
	union {
		const char *s; /* NULL logs as an empty string */
		long long i;
		unsigned long long u;
	} v;
};

#define PI_STR(k, val)	((struct pi_log_field){.key = (k), .type = PI_LOG_T_STR, .v.s = (val)})
#define PI_INT(k, val)	((struct pi_log_field){.key = (k), .type = PI_LOG_T_INT, .v.i = (val)})
#define PI_UINT(k, val) ((struct pi_log_field){.key = (k), .type = PI_LOG_T_UINT, .v.u = (val)})

extern int pi_log_min_level;

/* Sets the threshold and the format; before the first call: info, text. */
void pi_log_setup(int min_level, int format);

/* Parses "debug", "info", "warn", "error"; returns the level or -EINVAL. */
int pi_log_level_parse(const char *s);

/* Encodes one event into buf, a pure function (no clock, no I/O, no
 * globals): ts is the timestamp text (cut at 40 bytes), msg may be NULL
 * (empty), fields has n entries. cap must be at least 256 (smaller: returns
 * 0 and writes nothing). Writes at most cap bytes and returns how many: one
 * line, ending with its only newline; in PI_LOG_JSON format one valid UTF-8
 * JSON object. ts, level and msg always come first, in that order, then the
 * fields that fit, then truncated=true when anything was cut or left out. */
size_t pi_log_encode(char *buf, size_t cap, int format, const char *ts, int level, const char *msg,
		     const struct pi_log_field *fields, size_t n);

/* Encodes with the current time and format and writes the line to standard
 * error in one write. Use PI_LOG instead, which skips disabled levels. */
void pi_log_emit(int level, const char *msg, const struct pi_log_field *fields, size_t n);

/* The first, empty array element keeps the array non-empty when a call has
 * no fields (", ##__VA_ARGS__" drops the comma then; gcc and clang). */
#define PI_LOG(level, msg, ...)                                                                    \
	do {                                                                                       \
		if ((level) >= pi_log_min_level) {                                                 \
			const struct pi_log_field pi_log_fields_[] = {                             \
			    {NULL, PI_LOG_T_NONE, {NULL}}, ##__VA_ARGS__};                         \
			pi_log_emit((level), (msg), pi_log_fields_ + 1,                            \
				    sizeof(pi_log_fields_) / sizeof(pi_log_fields_[0]) - 1);       \
		}                                                                                  \
	} while (0)

#endif
