/* Independent checkers for lines from the log encoder (init/log.h), shared
 * by tests/fuzz/fuzz_log.c and tests/unit/test_log.c.
 *
 *   lc_parse(line, len, json, &out)   1 when line is exactly one line in the
 *       format: for JSON one object that a strict RFC 8259 parser accepts,
 *       with every string valid UTF-8 and no raw control byte; for logfmt
 *       `key=value` pairs split by single spaces, each value bare printable
 *       ASCII or quoted with the escapes \" \\ \n \r \t \uXXXX \xXX. On
 *       success out holds the fields in order, keys and values decoded.
 *   lc_expected(s, json, dst, cap)    what decoding the encoding of s must
 *       give back: s itself, except that in JSON a byte that is not UTF-8
 *       comes back as the code point U+00XX.
 *
 * Written apart from the encoder on purpose (its own UTF-8 reading), so a
 * bug in one is not repeated in the other. Everything is static; one test
 * program is one translation unit. */
#ifndef PI_LOG_CHECK_H
#define PI_LOG_CHECK_H

#include <stddef.h>
#include <string.h>

#define LC_FIELDS_MAX 64
#define LC_TEXT_MAX   8192

struct lc_field {
	char key[LC_TEXT_MAX];
	size_t klen;
	char val[LC_TEXT_MAX];
	size_t vlen;
	int is_string; /* 0: a bare JSON literal or number, copied as written */
};

struct lc_line {
	struct lc_field f[LC_FIELDS_MAX];
	size_t n;
};

struct lc_cur {
	const unsigned char *p, *end;
};

/* A code point as UTF-8 into dst (room for 4 bytes). */
static size_t lc_put_utf8(char *dst, unsigned long cp)
{
	if (cp < 0x80) {
		dst[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		dst[0] = (char)(0xc0 | (cp >> 6));
		dst[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		dst[0] = (char)(0xe0 | (cp >> 12));
		dst[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		dst[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	dst[0] = (char)(0xf0 | (cp >> 18));
	dst[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	dst[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	dst[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* Decodes one UTF-8 sequence by computing the code point and rejecting
 * what the result shows to be wrong (overlong, surrogate, too large). */
static size_t lc_utf8(const unsigned char *p, size_t n, unsigned long *cp)
{
	static const unsigned long min[5] = {0, 0, 0x80, 0x800, 0x10000};
	size_t len = p[0] < 0x80   ? 1
		     : p[0] < 0xc0 ? 0
		     : p[0] < 0xe0 ? 2
		     : p[0] < 0xf0 ? 3
		     : p[0] < 0xf8 ? 4
				   : 0;
	if (len == 0 || len > n)
		return 0;
	unsigned long c = len == 1 ? p[0] : p[0] & (0x7fu >> len);
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		c = c << 6 | (p[i] & 0x3fu);
	}
	if (c < min[len] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return 0;
	*cp = c;
	return len;
}

static size_t lc_expected(const char *s, int json, char *dst, size_t cap)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strlen(s), len = 0;
	while (n > 0 && len + 4 <= cap) {
		unsigned long cp;
		size_t k = lc_utf8(p, n, &cp);
		if (k == 0) {
			k = 1;
			if (json)
				len += lc_put_utf8(dst + len, p[0]);
			else
				dst[len++] = (char)p[0];
		} else {
			memcpy(dst + len, p, k);
			len += k;
		}
		p += k;
		n -= k;
	}
	return len;
}

static int lc_hex(struct lc_cur *c, int digits, unsigned long *v)
{
	*v = 0;
	for (int i = 0; i < digits; i++, c->p++) {
		if (c->p >= c->end)
			return 0;
		unsigned ch = *c->p;
		unsigned d = ch >= '0' && ch <= '9'   ? ch - '0'
			     : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
			     : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
						      : 16;
		if (d == 16)
			return 0;
		*v = *v << 4 | d;
	}
	return 1;
}

static int lc_append(char *dst, size_t *len, const char *src, size_t n)
{
	if (*len + n > LC_TEXT_MAX)
		return 0;
	memcpy(dst + *len, src, n);
	*len += n;
	return 1;
}

/* A JSON string after its opening quote, decoded into dst. */
static int lc_json_string(struct lc_cur *c, char *dst, size_t *len)
{
	*len = 0;
	while (c->p < c->end) {
		unsigned ch = *c->p;
		char tmp[4];
		unsigned long cp;
		if (ch == '"') {
			c->p++;
			return 1;
		}
		if (ch < 0x20)
			return 0;
		if (ch != '\\') {
			size_t k = lc_utf8(c->p, (size_t)(c->end - c->p), &cp);
			if (k == 0 || !lc_append(dst, len, (const char *)c->p, k))
				return 0;
			c->p += k;
			continue;
		}
		if (++c->p >= c->end)
			return 0;
		const char *simple = strchr("\"\\/bfnrt", *c->p);
		if (simple && *c->p) {
			static const char out[] = "\"\\/\b\f\n\r\t";
			if (!lc_append(dst, len, &out[simple - "\"\\/bfnrt"], 1))
				return 0;
			c->p++;
			continue;
		}
		if (*c->p++ != 'u' || !lc_hex(c, 4, &cp))
			return 0;
		if (cp >= 0xdc00 && cp <= 0xdfff)
			return 0;
		if (cp >= 0xd800 && cp <= 0xdbff) {
			unsigned long lo;
			if (c->end - c->p < 2 || c->p[0] != '\\' || c->p[1] != 'u')
				return 0;
			c->p += 2;
			if (!lc_hex(c, 4, &lo) || lo < 0xdc00 || lo > 0xdfff)
				return 0;
			cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
		}
		if (!lc_append(dst, len, tmp, lc_put_utf8(tmp, cp)))
			return 0;
	}
	return 0;
}

static int lc_json_value(struct lc_cur *c, int depth);

static void lc_ws(struct lc_cur *c)
{
	while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
		c->p++;
}

static int lc_digits(struct lc_cur *c)
{
	const unsigned char *start = c->p;
	while (c->p < c->end && *c->p >= '0' && *c->p <= '9')
		c->p++;
	return c->p > start;
}

/* RFC 8259 number: -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)? */
static int lc_json_number(struct lc_cur *c)
{
	if (c->p < c->end && *c->p == '-')
		c->p++;
	if (c->p < c->end && *c->p == '0')
		c->p++;
	else if (c->p >= c->end || *c->p < '1' || *c->p > '9' || !lc_digits(c))
		return 0;
	if (c->p < c->end && *c->p == '.') {
		c->p++;
		if (!lc_digits(c))
			return 0;
	}
	if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
		c->p++;
		if (c->p < c->end && (*c->p == '+' || *c->p == '-'))
			c->p++;
		if (!lc_digits(c))
			return 0;
	}
	return 1;
}

static int lc_json_word(struct lc_cur *c, const char *w)
{
	size_t n = strlen(w);
	if ((size_t)(c->end - c->p) < n || memcmp(c->p, w, n) != 0)
		return 0;
	c->p += n;
	return 1;
}

static int lc_json_container(struct lc_cur *c, int depth, char close)
{
	static char scratch[LC_TEXT_MAX];
	size_t n;
	lc_ws(c);
	if (c->p < c->end && *c->p == close) {
		c->p++;
		return 1;
	}
	for (;;) {
		if (close == '}') {
			if (c->p >= c->end || *c->p++ != '"' || !lc_json_string(c, scratch, &n))
				return 0;
			lc_ws(c);
			if (c->p >= c->end || *c->p++ != ':')
				return 0;
		}
		if (!lc_json_value(c, depth + 1))
			return 0;
		lc_ws(c);
		if (c->p >= c->end)
			return 0;
		if (*c->p == close) {
			c->p++;
			return 1;
		}
		if (*c->p++ != ',')
			return 0;
		lc_ws(c);
	}
}

static int lc_json_value(struct lc_cur *c, int depth)
{
	static char scratch[LC_TEXT_MAX];
	size_t n;
	if (depth > 32)
		return 0;
	lc_ws(c);
	if (c->p >= c->end)
		return 0;
	switch (*c->p) {
	case '{':
		c->p++;
		return lc_json_container(c, depth, '}');
	case '[':
		c->p++;
		return lc_json_container(c, depth, ']');
	case '"':
		c->p++;
		return lc_json_string(c, scratch, &n);
	case 't':
		return lc_json_word(c, "true");
	case 'f':
		return lc_json_word(c, "false");
	case 'n':
		return lc_json_word(c, "null");
	default:
		return lc_json_number(c);
	}
}

/* The top-level object of an encoder line: a generic strict parse first,
 * then a second pass that records its members. */
static int lc_parse_json(const unsigned char *p, size_t len, struct lc_line *out)
{
	struct lc_cur c = {p, p + len};
	if (len == 0 || *p != '{' || !lc_json_value(&c, 0) || c.p != c.end)
		return 0;
	c.p = p + 1;
	out->n = 0;
	lc_ws(&c);
	if (c.p < c.end && *c.p == '}')
		return 1;
	for (;;) {
		if (out->n == LC_FIELDS_MAX)
			return 0;
		struct lc_field *f = &out->f[out->n++];
		lc_ws(&c);
		c.p++; /* the key's quote, checked by the first pass */
		lc_json_string(&c, f->key, &f->klen);
		lc_ws(&c);
		c.p++;
		lc_ws(&c);
		const unsigned char *v = c.p;
		f->is_string = *v == '"';
		if (f->is_string) {
			c.p++;
			lc_json_string(&c, f->val, &f->vlen);
		} else {
			lc_json_value(&c, 1);
			f->vlen = (size_t)(c.p - v);
			if (f->vlen > LC_TEXT_MAX)
				return 0;
			memcpy(f->val, v, f->vlen);
		}
		lc_ws(&c);
		if (*c.p++ == '}')
			return 1;
	}
}

static int lc_key_byte(unsigned ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       ch == '_' || ch == '.' || ch == '-';
}

static int lc_text_bare_byte(unsigned ch)
{
	return ch > ' ' && ch < 0x7f && ch != '=' && ch != '"' && ch != '\\';
}

static int lc_text_value(struct lc_cur *c, struct lc_field *f)
{
	f->vlen = 0;
	f->is_string = 1;
	if (c->p < c->end && *c->p != '"') {
		while (c->p < c->end && lc_text_bare_byte(*c->p) && f->vlen < LC_TEXT_MAX)
			f->val[f->vlen++] = (char)*c->p++;
		return f->vlen > 0;
	}
	c->p++;
	while (c->p < c->end && *c->p != '"') {
		unsigned long cp;
		char tmp[4];
		if (*c->p < 0x20 || *c->p == 0x7f)
			return 0;
		if (*c->p != '\\') {
			if (!lc_append(f->val, &f->vlen, (const char *)c->p++, 1))
				return 0;
			continue;
		}
		if (++c->p >= c->end)
			return 0;
		unsigned e = *c->p++;
		const char *simple = e ? strchr("\"\\nrt", (int)e) : NULL;
		if (simple) {
			if (!lc_append(f->val, &f->vlen, &"\"\\\n\r\t"[simple - "\"\\nrt"], 1))
				return 0;
		} else if (e == 'x') {
			if (!lc_hex(c, 2, &cp))
				return 0;
			tmp[0] = (char)cp;
			if (!lc_append(f->val, &f->vlen, tmp, 1))
				return 0;
		} else if (e == 'u') {
			if (!lc_hex(c, 4, &cp) || !lc_append(f->val, &f->vlen, tmp, lc_put_utf8(tmp, cp)))
				return 0;
		} else {
			return 0;
		}
	}
	if (c->p >= c->end)
		return 0;
	c->p++;
	return 1;
}

static int lc_parse_text(const unsigned char *p, size_t len, struct lc_line *out)
{
	struct lc_cur c = {p, p + len};
	out->n = 0;
	while (c.p < c.end) {
		if (out->n == LC_FIELDS_MAX)
			return 0;
		struct lc_field *f = &out->f[out->n++];
		f->klen = 0;
		while (c.p < c.end && lc_key_byte(*c.p) && f->klen < LC_TEXT_MAX)
			f->key[f->klen++] = (char)*c.p++;
		if (f->klen == 0 || c.p >= c.end || *c.p++ != '=' || !lc_text_value(&c, f))
			return 0;
		if (c.p < c.end && *c.p++ != ' ')
			return 0;
		if (c.p == c.end && c.p[-1] == ' ')
			return 0;
	}
	return out->n > 0;
}

static int lc_parse(const char *line, size_t len, int json, struct lc_line *out)
{
	const unsigned char *p = (const unsigned char *)line;
	if (len == 0 || p[len - 1] != '\n' || memchr(p, '\n', len - 1))
		return 0;
	return json ? lc_parse_json(p, len - 1, out) : lc_parse_text(p, len - 1, out);
}

#endif
