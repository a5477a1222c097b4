#include "health/http.h"

#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

/* A cursor over the unread bytes. Every step that runs out of bytes
 * returns -2, so a truncated but so far valid head is always "partial". */
struct http_cur {
	const unsigned char *p, *end;
};

/* What the header lines said, gathered while parsing. */
struct http_heads {
	int close, keep_alive, hosts, chunked;
	int have_length;
	uint64_t length;
};

static int http_is_tchar(unsigned char c)
{
	if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
		return 1;
	return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int http_is_ows(unsigned char c)
{
	return c == ' ' || c == '\t';
}

static int http_expect_crlf(struct http_cur *c)
{
	if (c->p == c->end)
		return -2;
	if (c->p[0] != '\r')
		return -1;
	if (c->p + 1 == c->end)
		return -2;
	if (c->p[1] != '\n')
		return -1;
	c->p += 2;
	return 0;
}

/* A token of at least one byte, ended by `stop` (not consumed). */
static int http_parse_token(struct http_cur *c, unsigned char stop, struct pi_http_span *out)
{
	const unsigned char *start = c->p;

	for (;; c->p++) {
		if (c->p == c->end)
			return -2;
		if (*c->p == stop)
			break;
		if (!http_is_tchar(*c->p))
			return -1;
	}
	if (c->p == start)
		return -1;
	out->p = (const char *)start;
	out->len = (size_t)(c->p - start);
	return 0;
}

static int http_expect_byte(struct http_cur *c, unsigned char want)
{
	if (c->p == c->end)
		return -2;
	if (*c->p != want)
		return -1;
	c->p++;
	return 0;
}

static int http_parse_request_line(struct http_cur *c, struct pi_http_request *req)
{
	static const char version[] = "HTTP/1.";
	const unsigned char *start;
	int r;

	if ((r = http_parse_token(c, ' ', &req->method)) != 0)
		return r;
	c->p++;
	for (start = c->p;; c->p++) {
		if (c->p == c->end)
			return -2;
		if (*c->p == ' ')
			break;
		if (*c->p < 0x21 || *c->p > 0x7e)
			return -1;
	}
	if (c->p == start)
		return -1;
	req->target.p = (const char *)start;
	req->target.len = (size_t)(c->p - start);
	c->p++;
	for (const char *v = version; *v; v++)
		if ((r = http_expect_byte(c, (unsigned char)*v)) != 0)
			return r;
	if (c->p == c->end)
		return -2;
	if (*c->p != '0' && *c->p != '1')
		return -1;
	req->minor_version = *c->p++ - '0';
	return http_expect_crlf(c);
}

static int http_span_is(struct pi_http_span s, const char *lit)
{
	return s.len == strlen(lit) && strncasecmp(s.p, lit, s.len) == 0;
}

/* Connection is a comma-separated list of tokens; only two matter here. */
static void http_scan_connection(struct pi_http_span v, struct http_heads *h)
{
	const char *p = v.p, *end = v.p + v.len;

	while (p < end) {
		const char *comma = memchr(p, ',', (size_t)(end - p));
		const char *stop = comma ? comma : end;
		struct pi_http_span t;

		while (p < stop && http_is_ows((unsigned char)*p))
			p++;
		t.p = p;
		while (stop > p && http_is_ows((unsigned char)stop[-1]))
			stop--;
		t.len = (size_t)(stop - p);
		if (http_span_is(t, "close"))
			h->close = 1;
		else if (http_span_is(t, "keep-alive"))
			h->keep_alive = 1;
		p = comma ? comma + 1 : end;
	}
}

static int http_take_length(struct pi_http_span v, struct http_heads *h)
{
	uint64_t n = 0;

	if (v.len == 0 || v.len > 18)
		return -1;
	for (size_t i = 0; i < v.len; i++) {
		if (v.p[i] < '0' || v.p[i] > '9')
			return -1;
		n = n * 10 + (uint64_t)(v.p[i] - '0');
	}
	if (h->have_length && h->length != n)
		return -1;
	h->have_length = 1;
	h->length = n;
	return 0;
}

static int http_take_header(struct pi_http_span name, struct pi_http_span value,
			    struct http_heads *h)
{
	if (http_span_is(name, "connection"))
		http_scan_connection(value, h);
	else if (http_span_is(name, "content-length"))
		return http_take_length(value, h);
	else if (http_span_is(name, "transfer-encoding"))
		h->chunked = 1;
	else if (http_span_is(name, "host"))
		h->hosts++;
	return 0;
}

/* One field line, the cursor on its first byte (not CR). */
static int http_parse_header(struct http_cur *c, struct http_heads *h)
{
	struct pi_http_span name, value;
	const unsigned char *start;
	int r;

	if (http_is_ows(*c->p))
		return -1; /* obs-fold, or whitespace before the first field */
	if ((r = http_parse_token(c, ':', &name)) != 0)
		return r;
	c->p++;
	for (;; c->p++) {
		if (c->p == c->end)
			return -2;
		if (!http_is_ows(*c->p))
			break;
	}
	for (start = c->p;; c->p++) {
		if (c->p == c->end)
			return -2;
		if (*c->p == '\r')
			break;
		if ((*c->p < 0x20 && *c->p != '\t') || *c->p == 0x7f)
			return -1;
	}
	value.p = (const char *)start;
	value.len = (size_t)(c->p - start);
	while (value.len > 0 && http_is_ows((unsigned char)value.p[value.len - 1]))
		value.len--;
	if ((r = http_expect_crlf(c)) != 0)
		return r;
	return http_take_header(name, value, h);
}

int pi_http_parse_request(const char *buf, size_t len, struct pi_http_request *req)
{
	struct http_cur c = {(const unsigned char *)buf, (const unsigned char *)buf + len};
	struct http_heads h;
	int r;

	memset(req, 0, sizeof(*req));
	memset(&h, 0, sizeof(h));
	/* The result is an int; no caller's buffer comes near this. */
	if (len > INT_MAX)
		c.end = c.p + INT_MAX;
	for (int i = 0; i < PI_HTTP_MAX_EMPTY_LINES && c.p < c.end && *c.p == '\r'; i++)
		if ((r = http_expect_crlf(&c)) != 0)
			return r;
	if ((r = http_parse_request_line(&c, req)) != 0)
		return r;
	for (;;) {
		if (c.p == c.end)
			return -2;
		if (*c.p == '\r')
			break;
		if ((r = http_parse_header(&c, &h)) != 0)
			return r;
		req->n_headers++;
	}
	if ((r = http_expect_crlf(&c)) != 0)
		return r;

	if (h.hosts > 1 || (req->minor_version == 1 && h.hosts == 0))
		return -1;
	if (h.chunked && h.have_length)
		return -1;
	req->has_body = h.chunked || h.length > 0;
	if (req->minor_version == 1)
		req->keep_alive = !h.close;
	else
		req->keep_alive = h.keep_alive && !h.close;
	return (int)((const char *)c.p - buf);
}

struct pi_http_span pi_http_target_path(struct pi_http_span t)
{
	struct pi_http_span out = {t.p, 0};
	const char *p = t.p, *end = t.p + t.len;

	if (t.len > 0 && *p != '/') {
		const char *scheme = memchr(p, ':', t.len);
		/* absolute-form: scheme "://" authority [path]; anything else has no path. */
		if (!scheme || end - scheme < 3 || scheme[1] != '/' || scheme[2] != '/')
			return out;
		p = memchr(scheme + 3, '/', (size_t)(end - scheme - 3));
		if (!p)
			return out;
	}
	const char *q = memchr(p, '?', (size_t)(end - p));
	out.p = p;
	out.len = (size_t)((q ? q : end) - p);
	return out;
}
