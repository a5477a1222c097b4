/* The request-head parser (health/http.h): complete heads, every partial
 * split, pipelining, version and connection rules, malformed heads, size. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "health/http.h"
#include "tap.h"

struct parsed {
	int n;
	char method[32], target[256];
	int minor, keep_alive, has_body;
	long n_headers;
};

static void span_copy(char *dst, size_t cap, struct pi_http_span s)
{
	size_t n = s.len < cap - 1 ? s.len : cap - 1;
	memcpy(dst, s.p, n);
	dst[n] = '\0';
}

/* Parses a heap copy of exactly n bytes, so ASan sees any read past the end
 * and nothing can lean on a terminating NUL. */
static struct parsed parse_n(const char *s, size_t n)
{
	struct parsed out = {0};
	struct pi_http_request req;
	char *buf = malloc(n ? n : 1);

	memcpy(buf, s, n);
	out.n = pi_http_parse_request(buf, n, &req);
	if (out.n > 0) {
		span_copy(out.method, sizeof(out.method), req.method);
		span_copy(out.target, sizeof(out.target), req.target);
		out.minor = req.minor_version;
		out.keep_alive = req.keep_alive;
		out.has_body = req.has_body;
		out.n_headers = (long)req.n_headers;
	}
	free(buf);
	return out;
}

static struct parsed parse(const char *s)
{
	return parse_n(s, strlen(s));
}

static void test_complete(void)
{
	const char *h = "GET /health HTTP/1.1\r\nHost: 127.0.0.1:8081\r\nUser-Agent: t\r\n\r\n";
	struct parsed p = parse(h);

	is_int(p.n, (long)strlen(h), "complete 1.1 head: consumed all");
	is_str(p.method, "GET", "method");
	is_str(p.target, "/health", "target");
	is_int(p.minor, 1, "minor version 1");
	is_int(p.keep_alive, 1, "1.1 keeps alive by default");
	is_int(p.has_body, 0, "no body");
	is_int(p.n_headers, 2, "two headers");

	p = parse("HEAD /health/live?x=1 HTTP/1.0\r\n\r\n");
	is_int(p.n, 34, "1.0 head without headers");
	is_str(p.method, "HEAD", "HEAD method");
	is_str(p.target, "/health/live?x=1", "target with query");
	is_int(p.minor, 0, "minor version 0");
	is_int(p.keep_alive, 0, "1.0 closes by default");
	is_int(p.n_headers, 0, "no headers");
}

/* Every proper prefix of a valid head is partial, and the whole is not. */
static void test_every_split(void)
{
	const char *heads[] = {
	    "GET /health HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
	    "\r\nHEAD / HTTP/1.0\r\nX-Empty:\r\nX-Tab:\tv\t\r\n\r\n",
	};
	for (size_t h = 0; h < sizeof(heads) / sizeof(heads[0]); h++) {
		size_t len = strlen(heads[h]);
		int bad = 0;
		for (size_t k = 0; k < len; k++)
			if (parse_n(heads[h], k).n != -2) {
				diag("prefix of %zu bytes gave %d", k, parse_n(heads[h], k).n);
				bad++;
			}
		ok(bad == 0, "head %zu: all %zu proper prefixes are partial (-2)", h, len);
		is_int(parse_n(heads[h], len).n, (long)len, "the whole head is complete");
	}
}

static void test_pipelined(void)
{
	const char *a = "GET /health HTTP/1.1\r\nHost: a\r\n\r\n";
	const char *b = "HEAD /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
	char both[256];
	snprintf(both, sizeof(both), "%s%s", a, b);

	struct parsed p = parse(both);
	is_int(p.n, (long)strlen(a), "pipelined: first head ends where the second starts");
	is_str(p.method, "GET", "first is GET");
	p = parse(both + strlen(a));
	is_int(p.n, (long)strlen(b), "second head parsed from the rest");
	is_str(p.method, "HEAD", "second is HEAD");
	is_int(p.keep_alive, 0, "second asks to close");

	/* A head followed by the start of the next one is still complete. */
	p = parse_n(both, strlen(a) + 5);
	is_int(p.n, (long)strlen(a), "first head complete with 5 bytes of the next");
}

static void test_connection(void)
{
	is_int(parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive, 1,
	       "1.0 with keep-alive persists");
	is_int(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive, 1,
	       "connection tokens are case-insensitive");
	is_int(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keep_alive, 0,
	       "1.1 with close does not persist");
	is_int(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo ,  CLOSE \t\r\n\r\n").keep_alive,
	       0, "close found in a list with OWS");
	is_int(parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n")
		   .keep_alive,
	       0, "close wins over keep-alive across headers");
	is_int(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n").keep_alive, 1,
	       "closed is not close");
}

static void test_bodies(void)
{
	struct parsed p = parse("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
	ok(p.n > 0 && !p.has_body, "Content-Length: 0 has no body");
	p = parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
	is_int(p.n, 47, "head with a body: only the head is consumed");
	is_int(p.has_body, 1, "Content-Length: 5 announces a body");
	p = parse("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
	ok(p.n > 0 && p.has_body, "Transfer-Encoding announces a body");
	p = parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n");
	ok(p.n > 0 && p.has_body, "the same Content-Length twice is accepted");
}

static void test_malformed(void)
{
	static const struct {
		const char *head;
		const char *why;
	} bad[] = {
	    {"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", "two spaces after the method"},
	    {"GET /  HTTP/1.1\r\nHost: a\r\n\r\n", "two spaces after the target"},
	    {" GET / HTTP/1.1\r\nHost: a\r\n\r\n", "leading space"},
	    {"GET / HTTP/2.0\r\n\r\n", "HTTP/2.0"},
	    {"GET / HTTP/1.2\r\n\r\n", "HTTP/1.2"},
	    {"GET / http/1.1\r\nHost: a\r\n\r\n", "lower-case version"},
	    {"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", "space after the version"},
	    {"GET /\r\n\r\n", "HTTP/0.9 request line"},
	    {"G@T / HTTP/1.1\r\nHost: a\r\n\r\n", "method is not a token"},
	    {"GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n", "control byte in the target"},
	    {"GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", "non-ASCII target"},
	    {"GET / HTTP/1.1\nHost: a\n\n", "bare LF line ends"},
	    {"GET / HTTP/1.1\r\nHost: a\n\r\n", "bare LF after a header"},
	    {"GET / HTTP/1.1\rHost: a\r\n\r\n", "bare CR"},
	    {"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", "bare CR in a value"},
	    {"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n", "obs-fold"},
	    {"GET / HTTP/1.1\r\n Host: a\r\n\r\n", "whitespace before the first header"},
	    {"GET / HTTP/1.1\r\nHost : a\r\n\r\n", "whitespace before the colon"},
	    {"GET / HTTP/1.1\r\n: a\r\nHost: a\r\n\r\n", "empty field name"},
	    {"GET / HTTP/1.1\r\nHo(st: a\r\n\r\n", "field name not a token"},
	    {"GET / HTTP/1.1\r\nHost: a\x7f\r\n\r\n", "DEL in a value"},
	    {"GET / HTTP/1.1\r\n\r\n", "1.1 without Host"},
	    {"GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", "two Host headers"},
	    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
	     "two different Content-Length"},
	    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\n", "Content-Length list"},
	    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", "negative length"},
	    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
	     "length overflow"},
	    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", "empty length"},
	    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: "
	     "chunked\r\n\r\n",
	     "Content-Length with Transfer-Encoding"},
	    {"\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.0\r\n\r\n", "five empty lines first"},
	    {"\r\r\n", "CR CR"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		is_int(parse(bad[i].head).n, -1, bad[i].why);

	const char nul[] = "GET / HTTP/1.1\r\nHost: a\0b\r\n\r\n";
	is_int(parse_n(nul, sizeof(nul) - 1).n, -1, "NUL in a value");

	/* A malformed head is reported as soon as the bad byte is seen. */
	is_int(parse("GET / HTTP/1.1\nHo").n, -1, "bare LF found before the head ends");
	is_int(parse("GET / HTTP/3").n, -1, "bad version found early");
}

static void test_limits(void)
{
	static char big[PI_HTTP_HEAD_MAX * 2];
	size_t len = (size_t)snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nHost: a\r\n");

	for (int i = 0; i < 200; i++)
		len += (size_t)snprintf(big + len, sizeof(big) - len, "X-H%d: %d\r\n", i, i);
	memcpy(big + len, "\r\n", 2);
	len += 2;
	struct parsed p = parse_n(big, len);
	is_int(p.n, (long)len, "201 headers parse");
	is_int(p.n_headers, 201, "and are all counted");

	len = (size_t)snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nHost: a\r\nX-Long: ");
	memset(big + len, 'v', 12000);
	len += 12000;
	is_int(parse_n(big, len).n, -2, "a 12 KB value without its end is partial");
	memcpy(big + len, "\r\n\r\n", 4);
	is_int(parse_n(big, len + 4).n, (long)len + 4, "the parser has no length limit of its own");
}

static void test_target_path(void)
{
	static const struct {
		const char *target, *path;
	} cases[] = {
	    {"/health", "/health"},
	    {"/health?x=1&y", "/health"},
	    {"/health/live", "/health/live"},
	    {"http://127.0.0.1:8081/health?q", "/health"},
	    {"HTTP://h/x", "/x"},
	    {"http://h", ""},
	    {"*", ""},
	    {"h:80", ""},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct pi_http_span t = {cases[i].target, strlen(cases[i].target)};
		struct pi_http_span p = pi_http_target_path(t);
		char got[64];
		span_copy(got, sizeof(got), p);
		is_str(got, cases[i].path, cases[i].target);
	}
}

int main(void)
{
	test_complete();
	test_every_split();
	test_pipelined();
	test_connection();
	test_bodies();
	test_malformed();
	test_limits();
	test_target_path();
	return done_testing();
}
