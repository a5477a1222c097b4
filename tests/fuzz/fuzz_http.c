/* libFuzzer harness for the request-head parser (health/http.h). Beyond
 * "no crash", it checks the contract: the result is -1, -2 or a length
 * within the input; spans lie inside the buffer; a complete head parses to
 * the same result from exactly its own bytes; a proper prefix of a complete
 * head is partial, and a prefix of anything never looks complete earlier. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "health/http.h"
#include "check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int inside(const char *buf, size_t len, struct pi_http_span s)
{
	return s.p >= buf && s.len <= len && (size_t)(s.p - buf) <= len - s.len;
}

static int parse(const char *buf, size_t len)
{
	struct pi_http_request req;
	return pi_http_parse_request(buf, len, &req);
}

/* The prefixes worth trying: all of them for short inputs, else a spread. */
static size_t next_prefix(size_t k, size_t len)
{
	return len <= 256 ? k + 1 : k + 1 + len / 64;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data;
	struct pi_http_request req;
	int r = pi_http_parse_request(buf, size, &req);

	CHECK(r == -1 || r == -2 || (r > 0 && (size_t)r <= size));
	CHECK(parse(buf, size) == r);
	if (r > 0) {
		CHECK(inside(buf, (size_t)r, req.method) && req.method.len > 0);
		CHECK(inside(buf, (size_t)r, req.target) && req.target.len > 0);
		CHECK(req.minor_version == 0 || req.minor_version == 1);
		CHECK(req.keep_alive == 0 || req.keep_alive == 1);
		CHECK(r >= 16); /* "A / HTTP/1.0" CRLF CRLF is the shortest head */
		CHECK(memcmp(buf + r - 2, "\r\n", 2) == 0);
		struct pi_http_span path = pi_http_target_path(req.target);
		CHECK(inside(req.target.p, req.target.len, path));
		CHECK(path.len == 0 || path.p[0] == '/');
		CHECK(parse(buf, (size_t)r) == r);
	}
	for (size_t k = 0; k < size; k = next_prefix(k, size)) {
		int pr = parse(buf, k);
		if (r > 0 && k < (size_t)r)
			CHECK(pr == -2);
		else if (r > 0)
			CHECK(pr == r);
		else if (r == -2)
			CHECK(pr == -2);
		else
			CHECK(pr == -1 || pr == -2);
	}
	return 0;
}
