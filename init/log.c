#include "init/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int pi_log_min_level = PI_INFO;
static int log_format = PI_LOG_TEXT;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

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

struct line {
	char buf[4096];
	size_t len;
	int truncated;
};

static void put(struct line *l, const char *s, size_t n)
{
	if (n > sizeof(l->buf) - 8 - l->len) {
		n = sizeof(l->buf) - 8 - l->len;
		l->truncated = 1;
	}
	memcpy(l->buf + l->len, s, n);
	l->len += n;
}

static void putc_(struct line *l, char c)
{
	put(l, &c, 1);
}

/* logfmt quotes a value when it is empty or holds a space, '=', '"' or a
 * control byte; JSON always quotes. Both escape '"', '\' and control bytes. */
static int is_integer(const char *s, size_t n)
{
	size_t i = n > 0 && s[0] == '-';
	if (i == n || n > 19)
		return 0;
	for (; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return 0;
	return 1;
}

/* JSON keeps integers as numbers, so a reader can compare them. */
static void put_value(struct line *l, const char *s, size_t n, int json)
{
	int quote = (json && !is_integer(s, n)) || n == 0;
	for (size_t i = 0; i < n && !quote; i++) {
		unsigned char c = (unsigned char)s[i];
		quote = c <= ' ' || c == '=' || c == '"' || c == 0x7f;
	}
	if (quote)
		putc_(l, '"');
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[8];
		if (c == '"' || c == '\\') {
			putc_(l, '\\');
			putc_(l, (char)c);
		} else if (c == '\n') {
			put(l, "\\n", 2);
		} else if (c == '\t') {
			put(l, "\\t", 2);
		} else if (c < 0x20 || c == 0x7f) {
			snprintf(esc, sizeof(esc), "\\u%04x", c);
			put(l, esc, 6);
		} else {
			putc_(l, (char)c);
		}
	}
	if (quote)
		putc_(l, '"');
}

static void put_field(struct line *l, const char *key, size_t klen, const char *val, size_t vlen,
		      int first)
{
	if (log_format == PI_LOG_JSON) {
		if (!first)
			putc_(l, ',');
		putc_(l, '"');
		put(l, key, klen);
		put(l, "\":", 2);
		put_value(l, val, vlen, 1);
	} else {
		if (!first)
			putc_(l, ' ');
		put(l, key, klen);
		putc_(l, '=');
		put_value(l, val, vlen, 0);
	}
}

void pi_log_emit(int level, const char *fmt, ...)
{
	int saved = errno;
	char text[3072], ts[40];
	struct line l = {.len = 0};
	struct timeval tv;
	struct tm tm;
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	size_t tlen = (size_t)n < sizeof(text) ? (size_t)n : sizeof(text) - 1;

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	size_t tsl = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	tsl += (size_t)snprintf(ts + tsl, sizeof(ts) - tsl, ".%03dZ", (int)(tv.tv_usec / 1000));

	if (log_format == PI_LOG_JSON)
		putc_(&l, '{');
	put_field(&l, "ts", 2, ts, tsl, 1);
	if (level < 0 || level > 3)
		level = PI_ERROR;
	put_field(&l, "level", 5, level_names[level], strlen(level_names[level]), 0);

	/* The first piece is the message; each later piece is key=value. */
	const char *p = text, *end = text + tlen;
	int piece = 0;
	while (p <= end) {
		const char *sep = memchr(p, PI_KV[0], (size_t)(end - p));
		const char *stop = sep ? sep : end;
		if (piece == 0) {
			put_field(&l, "msg", 3, p, (size_t)(stop - p), 0);
		} else {
			const char *eq = memchr(p, '=', (size_t)(stop - p));
			if (eq)
				put_field(&l, p, (size_t)(eq - p), eq + 1, (size_t)(stop - eq - 1), 0);
			else
				put_field(&l, "field", 5, p, (size_t)(stop - p), 0);
		}
		piece++;
		if (!sep)
			break;
		p = sep + 1;
	}
	if (l.truncated || (size_t)n >= sizeof(text))
		put_field(&l, "truncated", 9, "true", 4, 0);
	if (log_format == PI_LOG_JSON)
		putc_(&l, '}');
	putc_(&l, '\n');

	/* One write per line so lines from concurrent writers never interleave. */
	const char *w = l.buf;
	size_t left = l.len;
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
