/* libFuzzer harness for the log encoder (init/log.h, pi_log_encode).
 *
 * Input: a flags byte, a size byte, then NUL-separated pieces: [ts] msg,
 * then key, value pairs. Flags: bit 0 JSON, bits 1-3 the level (4-7 are out
 * of range and must log as error), bit 4 the first piece is the timestamp,
 * bit 5 a small line (256 + 8 * size byte) instead of PI_LOG_LINE_MAX. A
 * value starting with byte 1 is an integer field, 2 an unsigned one, 3 a
 * NULL string; any other is a string.
 *
 * Properties, checked with the independent parser of log_check.h: the
 * output fits the buffer and is exactly one line; in JSON mode one valid
 * UTF-8 JSON object; ts, level, msg come first, then the given fields in
 * order, each key and value decoding to what was given (a prefix of it when
 * the line says truncated=true, which only the last field may say); and a
 * line with room for everything is never truncated. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "init/log.h"
#include "check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The checker is not what is being explored: without coverage of its own
 * (as in fuzz_config.c), the corpus grows on the encoder's branches only
 * and each run is cheaper. */
#pragma clang attribute push(__attribute__((no_sanitize("coverage"))), apply_to = function)

#include "log_check.h"

#define FIELDS_MAX 48

static const char *const levels[] = {"debug", "info", "warn", "error"};

struct input {
	int json, level;
	size_t cap;
	const char *ts, *msg;
	struct pi_log_field f[FIELDS_MAX];
	size_t n;
	size_t worst; /* the longest the whole line could need, escapes and all */
	int value_fits; /* every value fits PI_LOG_VALUE_MAX even fully escaped */
};

static char pieces_buf[1 << 16];

/* Splits the pieces in place; each gets its NUL from the copy. */
static size_t split_pieces(const uint8_t *data, size_t size, char **piece, size_t max)
{
	size_t n = 0;
	if (size >= sizeof(pieces_buf))
		size = sizeof(pieces_buf) - 1;
	memcpy(pieces_buf, data, size);
	pieces_buf[size] = '\0';
	char *p = pieces_buf, *end = pieces_buf + size;
	while (n < max) {
		piece[n++] = p;
		char *z = memchr(p, '\0', (size_t)(end - p));
		if (!z || z == end)
			break;
		p = z + 1;
	}
	return n;
}

static void add_field(struct input *in, const char *key, const char *val)
{
	struct pi_log_field *f = &in->f[in->n++];
	long long num = 0;
	memcpy(&num, val + (val[0] != 0), strnlen(val + (val[0] != 0), sizeof(num)));
	switch (val[0]) {
	case 1:
		*f = PI_INT(key, num);
		break;
	case 2:
		*f = PI_UINT(key, (unsigned long long)num);
		break;
	case 3:
		*f = PI_STR(key, NULL);
		break;
	default:
		*f = PI_STR(key, val);
		if (6 * strlen(val) + 2 > PI_LOG_VALUE_MAX)
			in->value_fits = 0;
	}
	in->worst += 6 * (strlen(key) + strlen(val)) + 32;
	if (6 * strlen(key) + 1 > 64)
		in->value_fits = 0;
}

static int decode_input(const uint8_t *data, size_t size, struct input *in)
{
	char *piece[2 + 2 * FIELDS_MAX];
	if (size < 2)
		return 0;
	memset(in, 0, sizeof(*in));
	in->json = data[0] & 1;
	in->level = (data[0] >> 1) & 7;
	in->cap = data[0] & 0x20 ? 256 + 8 * (size_t)data[1] : PI_LOG_LINE_MAX;
	in->value_fits = 1;
	size_t n = split_pieces(data + 2, size - 2, piece, 2 + 2 * FIELDS_MAX), i = 0;
	in->ts = data[0] & 0x10 && i < n ? piece[i++] : "2026-12-01T21:35:19.123Z";
	in->msg = i < n ? piece[i++] : NULL;
	if (strlen(in->ts) * 6 > 40)
		in->value_fits = 0;
	in->worst = 64 + 6 * (strlen(in->ts) + (in->msg ? strlen(in->msg) : 0));
	if (in->msg && 6 * strlen(in->msg) + 2 > PI_LOG_VALUE_MAX)
		in->value_fits = 0;
	for (; i + 1 < n && in->n < FIELDS_MAX; i += 2)
		add_field(in, piece[i], piece[i + 1]);
	return 1;
}

static int is_prefix(const char *got, size_t glen, const char *want, size_t wlen, int exact)
{
	return exact ? glen == wlen && memcmp(got, want, glen) == 0
		     : glen <= wlen && memcmp(got, want, glen) == 0;
}

static int reserved(const char *k)
{
	return !strcmp(k, "ts") || !strcmp(k, "level") || !strcmp(k, "msg") ||
	       !strcmp(k, "truncated");
}

/* The key the encoder must write for k, decoded. */
static size_t expected_key(const char *k, int json, char *dst)
{
	size_t n = 0;
	if (reserved(k))
		dst[n++] = '_';
	if (json)
		return n + lc_expected(k, 1, dst + n, LC_TEXT_MAX - n);
	size_t len = strlen(k);
	for (size_t i = 0; i < len && n < LC_TEXT_MAX; i++) {
		unsigned char c = (unsigned char)k[i];
		dst[n++] = (char)(lc_key_byte(c) ? c : '_');
	}
	if (n == 0)
		dst[n++] = '_';
	return n;
}

static void check_value(const struct lc_field *got, const struct pi_log_field *f, int json,
			int exact)
{
	static char want[LC_TEXT_MAX];
	size_t wlen;
	switch (f->type) {
	case PI_LOG_T_INT:
		wlen = (size_t)snprintf(want, sizeof(want), "%lld", f->v.i);
		CHECK(!json || !got->is_string);
		CHECK(got->vlen == wlen && memcmp(got->val, want, wlen) == 0);
		return;
	case PI_LOG_T_UINT:
		wlen = (size_t)snprintf(want, sizeof(want), "%llu", f->v.u);
		CHECK(!json || !got->is_string);
		CHECK(got->vlen == wlen && memcmp(got->val, want, wlen) == 0);
		return;
	default:
		wlen = lc_expected(f->v.s ? f->v.s : "", json, want, sizeof(want));
		CHECK(got->is_string);
		CHECK(is_prefix(got->val, got->vlen, want, wlen, exact));
	}
}

static void check_fixed(const struct lc_line *l, const struct input *in, int exact)
{
	static char want[LC_TEXT_MAX];
	size_t wlen;
	int level = in->level > 3 ? 3 : in->level;

	CHECK(l->n >= 3);
	CHECK(l->f[0].klen == 2 && memcmp(l->f[0].key, "ts", 2) == 0);
	wlen = lc_expected(in->ts, in->json, want, sizeof(want));
	CHECK(is_prefix(l->f[0].val, l->f[0].vlen, want, wlen, exact));
	CHECK(l->f[1].klen == 5 && memcmp(l->f[1].key, "level", 5) == 0);
	CHECK(l->f[1].vlen == strlen(levels[level]) &&
	      memcmp(l->f[1].val, levels[level], l->f[1].vlen) == 0);
	CHECK(l->f[2].klen == 3 && memcmp(l->f[2].key, "msg", 3) == 0);
	wlen = lc_expected(in->msg ? in->msg : "", in->json, want, sizeof(want));
	CHECK(is_prefix(l->f[2].val, l->f[2].vlen, want, wlen, exact));
}

static struct lc_line parsed;
static char line[PI_LOG_LINE_MAX + 64];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct input in;
	static char want[LC_TEXT_MAX];

	if (!decode_input(data, size, &in))
		return 0;
	/* A canary after the buffer catches a write past cap. */
	memset(line, 0xA5, sizeof(line));
	size_t len = pi_log_encode(line, in.cap, in.json ? PI_LOG_JSON : PI_LOG_TEXT, in.ts,
				   in.level, in.msg, in.f, in.n);
	CHECK(len > 0 && len <= in.cap);
	for (size_t i = in.cap; i < sizeof(line); i++)
		CHECK((unsigned char)line[i] == 0xA5);
	CHECK(lc_parse(line, len, in.json, &parsed));

	const struct lc_field *last = &parsed.f[parsed.n - 1];
	int truncated = last->klen == 9 && memcmp(last->key, "truncated", 9) == 0;
	if (truncated)
		CHECK(last->vlen == 4 && memcmp(last->val, "true", 4) == 0 && parsed.n >= 4);
	if (in.cap == PI_LOG_LINE_MAX && in.value_fits && in.worst + 24 < in.cap)
		CHECK(!truncated);
	check_fixed(&parsed, &in, !truncated);

	size_t got = parsed.n - 3 - (size_t)truncated;
	CHECK(got <= in.n);
	if (!truncated)
		CHECK(got == in.n);
	for (size_t i = 0; i < got; i++) {
		const struct lc_field *g = &parsed.f[3 + i];
		size_t wlen = expected_key(in.f[i].key, in.json, want);
		CHECK(is_prefix(g->key, g->klen, want, wlen, !truncated));
		check_value(g, &in.f[i], in.json, !truncated);
	}
	return 0;
}

#pragma clang attribute pop
