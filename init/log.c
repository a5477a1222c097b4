#include "init/log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int pi_log_min_level = PI_INFO;
static int log_format = PI_LOG_TEXT;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

/* Room kept back for the line's end whatever came before: a closing quote,
 * the truncated field, the closing brace and the newline. */
#define LOG_TAIL_RESERVE 24
#define LOG_KEY_MAX	 64
#define LOG_CAP_MIN	 256
/* A timestamp is short; capping it keeps room for level and msg in any line. */
#define LOG_TS_MAX 40

void pi_log_setup(int min_level, int format)
{
	pi_log_min_level = min_level;
	log_format = format;
}

int pi_log_level_parse(const char *s)
{
	for (int i = 0; i < 4; i++)
		if (strcmp(s, level_names[i]) == 0)
			return i;
	return -EINVAL;
}

struct log_enc {
	char *buf;
	size_t len;
	size_t lim; /* len never passes it; the reserve lies beyond */
	int json;
	int truncated;
};

/* Appends all n bytes or none, so an escape is never cut in half. */
static int log_put(struct log_enc *e, const char *s, size_t n)
{
	if (n > e->lim - e->len)
		return -1;
	memcpy(e->buf + e->len, s, n);
	e->len += n;
	return 0;
}

/* Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlongs,
 * no surrogates, nothing above U+10FFFF), or 0 when s does not start one. */
static size_t log_utf8_len(const unsigned char *s, size_t n, unsigned *cp)
{
	unsigned c = s[0], lo = 0x80, hi = 0xbf;
	size_t len;
	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	if (c >= 0xc2 && c <= 0xdf)
		len = 2;
	else if (c >= 0xe0 && c <= 0xef)
		len = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		len = 4;
	else
		return 0;
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	if (n < len || s[1] < lo || s[1] > hi)
		return 0;
	*cp = c & (0xff >> (len + 1));
	*cp = (*cp << 6) | (s[1] & 0x3f);
	for (size_t i = 2; i < len; i++) {
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
		*cp = (*cp << 6) | (s[i] & 0x3f);
	}
	return len;
}

/* The escape for the character at s, written into esc; returns its length
 * and sets *used to the input bytes it stands for. Valid UTF-8 passes
 * through except C1 controls and U+2028/U+2029, which some readers take
 * as line ends; a byte that is not UTF-8 becomes \u00XX in JSON (the byte
 * as a code point) and \xXX in logfmt. */
static size_t log_hex_escape(char *esc, char kind, unsigned v, int digits)
{
	static const char hex[] = "0123456789abcdef";
	esc[0] = '\\';
	esc[1] = kind;
	for (int i = 0; i < digits; i++)
		esc[2 + i] = hex[(v >> (4 * (digits - 1 - i))) & 0xf];
	return 2 + (size_t)digits;
}

static size_t log_escape_char(const unsigned char *s, size_t n, int json, char *esc, size_t *used)
{
	static const char simple_from[] = "\"\\\n\r\t", simple_to[] = "\"\\nrt";
	unsigned cp;
	size_t len = log_utf8_len(s, n, &cp);

	*used = len ? len : 1;
	if (len == 0)
		return json ? log_hex_escape(esc, 'u', s[0], 4) : log_hex_escape(esc, 'x', s[0], 2);
	const char *simple = cp && cp < 0x80 ? strchr(simple_from, (int)cp) : NULL;
	if (simple) {
		esc[0] = '\\';
		esc[1] = simple_to[simple - simple_from];
		return 2;
	}
	if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029)
		return log_hex_escape(esc, 'u', cp, 4);
	memcpy(esc, s, len);
	return len;
}

/* Writes the escaped text of s inside quotes that the caller writes, at
 * most max bytes; a cut sets e->truncated. */
static void log_put_escaped(struct log_enc *e, const char *s, size_t max)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strlen(s), written = 0;

	while (n > 0) {
		char esc[8];
		size_t used, k = log_escape_char(p, n, e->json, esc, &used);
		if (written + k > max || log_put(e, esc, k) < 0) {
			e->truncated = 1;
			return;
		}
		written += k;
		p += used;
		n -= used;
	}
}

/* logfmt leaves a value bare only when every byte is printable ASCII that
 * a logfmt reader cannot mistake for syntax. */
static int log_text_bare(const char *s)
{
	if (*s == '\0')
		return 0;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c <= ' ' || c >= 0x7f || c == '=' || c == '"' || c == '\\')
			return 0;
	}
	return 1;
}

/* log_begin_field left room for at least two bytes (an empty quoted value). */
static void log_put_string(struct log_enc *e, const char *s, size_t max)
{
	size_t n = strlen(s), room = e->lim - e->len;

	if (max > room)
		max = room;
	if (!e->json && log_text_bare(s)) {
		if (n > max) {
			n = max;
			e->truncated = 1;
		}
		log_put(e, s, n);
		return;
	}
	log_put(e, "\"", 1);
	log_put_escaped(e, s, max - 2);
	log_put(e, "\"", 1);
}

static int log_reserved_key(const char *k)
{
	return !strcmp(k, "ts") || !strcmp(k, "level") || !strcmp(k, "msg") ||
	       !strcmp(k, "truncated");
}

/* A logfmt key is a bare word: anything outside [A-Za-z0-9_.-] becomes '_'. */
static int log_put_text_key(struct log_enc *e, const char *k)
{
	char key[LOG_KEY_MAX + 1];
	size_t n = 0;

	if (log_reserved_key(k))
		key[n++] = '_';
	for (; *k && n < LOG_KEY_MAX; k++) {
		unsigned char c = (unsigned char)*k;
		int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			 (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
		key[n++] = ok ? (char)c : '_';
	}
	if (*k)
		e->truncated = 1;
	if (n == 0)
		key[n++] = '_';
	return log_put(e, key, n);
}

/* Starts a field: separator, key, and the key/value separator, with room
 * left for at least an empty quoted value. All of it or nothing, so a line
 * that is full ends cleanly after its last complete field. */
static int log_begin_field(struct log_enc *e, const char *key, int first, int reserved_ok)
{
	size_t mark = e->len;
	int rc;

	if (!key)
		key = "";
	if (e->json) {
		rc = log_put(e, first ? "\"" : ",\"", first ? 1 : 2);
		if (rc == 0 && !reserved_ok && log_reserved_key(key))
			rc = log_put(e, "_", 1);
		if (rc == 0) {
			log_put_escaped(e, key, LOG_KEY_MAX);
			rc = log_put(e, "\":", 2);
		}
	} else {
		rc = first ? 0 : log_put(e, " ", 1);
		if (rc == 0)
			rc = reserved_ok ? log_put(e, key, strlen(key)) : log_put_text_key(e, key);
		if (rc == 0)
			rc = log_put(e, "=", 1);
	}
	if (rc == 0 && e->lim - e->len < 2)
		rc = -1;
	if (rc < 0) {
		e->len = mark;
		e->truncated = 1;
	}
	return rc;
}

static size_t log_value_room(const struct log_enc *e)
{
	size_t room = e->lim - e->len;
	return room < PI_LOG_VALUE_MAX ? room : PI_LOG_VALUE_MAX;
}

/* Returns -1 when the field did not fit at all: the fields after it are left
 * out too, so a line always holds a prefix of its fields. */
static int log_put_field(struct log_enc *e, const struct pi_log_field *f)
{
	char num[32];
	size_t mark = e->len;

	if (log_begin_field(e, f->key, 0, 0) < 0)
		return -1;
	switch (f->type) {
	case PI_LOG_T_INT:
		snprintf(num, sizeof(num), "%lld", f->v.i);
		break;
	case PI_LOG_T_UINT:
		snprintf(num, sizeof(num), "%llu", f->v.u);
		break;
	default:
		log_put_string(e, f->v.s ? f->v.s : "", log_value_room(e));
		return 0;
	}
	/* Numbers come from integer types, so they are always valid JSON. */
	if (log_put(e, num, strlen(num)) < 0) {
		e->len = mark;
		e->truncated = 1;
		return -1;
	}
	return 0;
}

size_t pi_log_encode(char *buf, size_t cap, int format, const char *ts, int level, const char *msg,
		     const struct pi_log_field *fields, size_t n)
{
	struct log_enc e = {.buf = buf, .json = format == PI_LOG_JSON};

	if (cap < LOG_CAP_MIN)
		return 0;
	e.lim = cap - LOG_TAIL_RESERVE;
	if (level < PI_DEBUG || level > PI_ERROR)
		level = PI_ERROR;
	if (e.json)
		log_put(&e, "{", 1);
	if (log_begin_field(&e, "ts", 1, 1) == 0)
		log_put_string(&e, ts ? ts : "", LOG_TS_MAX);
	if (log_begin_field(&e, "level", 0, 1) == 0)
		log_put_string(&e, level_names[level], log_value_room(&e));
	if (log_begin_field(&e, "msg", 0, 1) == 0)
		log_put_string(&e, msg ? msg : "", log_value_room(&e));
	for (size_t i = 0; i < n; i++)
		if (log_put_field(&e, &fields[i]) < 0)
			break;

	/* From here on the reserve is used: these always fit. */
	e.lim = cap;
	if (e.truncated)
		log_put(&e, e.json ? ",\"truncated\":true" : " truncated=true", e.json ? 17 : 15);
	if (e.json)
		log_put(&e, "}", 1);
	log_put(&e, "\n", 1);
	return e.len;
}

static size_t log_timestamp(char *ts, size_t size)
{
	struct timeval tv;
	struct tm tm;

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	size_t n = strftime(ts, size, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(ts + n, size - n, ".%03dZ", (int)(tv.tv_usec / 1000));
	return n;
}

void pi_log_emit(int level, const char *msg, const struct pi_log_field *fields, size_t n)
{
	int saved = errno;
	char line[PI_LOG_LINE_MAX], ts[40];

	log_timestamp(ts, sizeof(ts));
	size_t left = pi_log_encode(line, sizeof(line), log_format, ts, level, msg, fields, n);

	/* One write per line so lines from concurrent writers never interleave. */
	const char *w = line;
	while (left > 0) {
		ssize_t k = write(STDERR_FILENO, w, left);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		w += k;
		left -= (size_t)k;
	}
	errno = saved;
}
