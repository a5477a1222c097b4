/* HTTP/1.x request-head parser for the health endpoint (SPEC §6), in the
 * manner of picohttpparser: it parses in place, allocates nothing, keeps no
 * state between calls and reports what it found as spans into the caller's
 * buffer.
 *
 *   n = pi_http_parse_request(buf, len, &req);
 *
 * buf[0..len) holds the bytes received so far, starting at the first byte
 * of a request (after any earlier request was consumed). The result is:
 *
 *   n > 0   a complete head: request line, header lines and the empty line,
 *           n bytes long (n <= len). req is filled. Bytes after n belong to
 *           the next request (pipelining).
 *   -2      partial: buf is a valid prefix of a head but the empty line has
 *           not arrived. Call again from the start with more bytes.
 *   -1      malformed: the client must be answered 400 and the connection
 *           closed, since where the next request starts is unknown.
 *
 * req is only meaningful when n > 0. Its spans point into buf and are valid
 * while buf is unchanged; they are not NUL-terminated. buf need not be
 * NUL-terminated and may hold any bytes.
 *
 * The grammar is RFC 9112's, strictly:
 * - Up to PI_HTTP_MAX_EMPTY_LINES CRLFs before the request line are skipped
 *   (§2.2) and counted in n.
 * - request-line = method SP request-target SP "HTTP/1.0" | "HTTP/1.1" CRLF;
 *   method is a token; the target is 1+ visible ASCII bytes (0x21-0x7E).
 *   Other versions are malformed.
 * - Every line ends in CRLF: a bare CR or a bare LF is malformed.
 * - field-line = token ":" OWS value OWS CRLF; whitespace before the colon,
 *   obs-fold (a line starting with SP or HTAB) and control bytes other than
 *   HTAB in a value are malformed.
 * - An HTTP/1.1 request needs exactly one Host header; an HTTP/1.0 request
 *   may have none, never two.
 * - Content-Length is 1*DIGIT; two different values, or Content-Length
 *   together with Transfer-Encoding, are malformed (request smuggling).
 *
 * Bodies are not parsed. A request that announces one (Content-Length > 0
 * or any Transfer-Encoding) has has_body set; the server answers it and
 * then closes the connection, so body bytes are never read as a request.
 *
 * The parser puts no limit on length; the caller bounds its buffer
 * (PI_HTTP_HEAD_MAX) and treats -2 with a full buffer as 431. */
#ifndef PI_HEALTH_HTTP_H
#define PI_HEALTH_HTTP_H

#include <stddef.h>

/* The largest request head the server accepts (SPEC §6: over 8 KiB is 431). */
#define PI_HTTP_HEAD_MAX	8192
#define PI_HTTP_MAX_EMPTY_LINES 4

struct pi_http_span {
	const char *p;
	size_t len;
};

struct pi_http_request {
	struct pi_http_span method; /* e.g. "GET", case-sensitive */
	struct pi_http_span target; /* as sent: "/health?x=1", "*", "http://h/p" */
	int minor_version;	    /* 0 for HTTP/1.0, 1 for HTTP/1.1 */
	int keep_alive;		    /* 1: the connection may carry another request */
	int has_body;		    /* 1: Content-Length > 0 or Transfer-Encoding */
	size_t n_headers;	    /* header lines in the head */
};

/* See the contract above: returns bytes consumed, -2 partial or -1 malformed. */
int pi_http_parse_request(const char *buf, size_t len, struct pi_http_request *req);

/* The path of a target: absolute-form "http://host/p?q" gives "/p", an
 * origin-form "/p?q" gives "/p"; the query is dropped. Returns a span into
 * the target (empty for "*" or an authority without a path). */
struct pi_http_span pi_http_target_path(struct pi_http_span target);

#endif
