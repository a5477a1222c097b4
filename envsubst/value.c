/* Safe values: see value.h. */
#include "envsubst/value.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

static int is_alnum(unsigned char c)
{
	return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
}

/* 1 for the bytes nginx's tokenizer treats specially, plus every control
 * byte: a value free of these cannot end a directive, open or close a
 * block, start a comment or a quoted string, escape, or name a variable.
 * That is 0x00-0x1F, space, " # $ ' ; \\ { } and 0x7F. A table, because
 * this runs over every substituted byte. */
static const unsigned char unsafe[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 0, 1, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 1,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};

static int fail(size_t *bad, size_t pos)
{
	if (bad)
		*bad = pos;
	return -EINVAL;
}

int pi_value_check_word(const char *v, size_t n, size_t *bad)
{
	for (size_t i = 0; i < n; i++)
		if (unsafe[(unsigned char)v[i]])
			return fail(bad, i);
	return 0;
}

/* Parses an IP literal with inet_pton, which wants a NUL-terminated copy.
 * Anything longer than the longest textual address is refused up front. */
static int parse_ip(int af, const char *s, size_t n)
{
	char tmp[INET6_ADDRSTRLEN];
	unsigned char addr[sizeof(struct in6_addr)];

	/* inet_pton stops at a NUL, so "[::\0x]" would pass as "[::]". */
	if (n >= sizeof(tmp) || memchr(s, '\0', n))
		return 0;
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	return inet_pton(af, tmp, addr) == 1;
}

static int check_dns(const char *v, size_t n, size_t *bad)
{
	size_t label = 0; /* start of the current label */
	size_t end = n;

	if (end > 0 && v[end - 1] == '.')
		end--;
	if (end == 0)
		return fail(bad, 0);
	for (size_t i = 0; i <= end; i++) {
		unsigned char c = i < end ? (unsigned char)v[i] : '.';

		if (i == PI_VALUE_HOST_MAX && i < end)
			return fail(bad, i);
		if (c == '.') {
			if (i == label)
				return fail(bad, i);
			if (v[i - 1] == '-')
				return fail(bad, i - 1);
			label = i + 1;
		} else if (c == '-') {
			if (i == label)
				return fail(bad, i);
		} else if (!is_alnum(c)) {
			return fail(bad, i);
		}
		if (i - label >= PI_VALUE_LABEL_MAX && c != '.')
			return fail(bad, i);
	}
	return 0;
}

int pi_value_check_host(const char *v, size_t n, size_t *bad)
{
	size_t i;

	if (n == 0)
		return fail(bad, 0);
	if (v[0] == '[') {
		if (n < 2 || v[n - 1] != ']') {
			/* Point at the first byte that cannot be part of an
			 * address, so "[::1]x" blames the 'x'. */
			const char *close = memchr(v, ']', n);
			return fail(bad, close ? (size_t)(close - v) + 1 : n);
		}
		if (!parse_ip(AF_INET6, v + 1, n - 2))
			return fail(bad, 1);
		return 0;
	}
	for (i = 0; i < n; i++)
		if (v[i] != '.' && !(v[i] >= '0' && v[i] <= '9'))
			break;
	/* Only digits and dots: an IPv4 address or nothing. A DNS name whose
	 * every label is numeric would be read as an address by resolvers. */
	if (i == n)
		return parse_ip(AF_INET, v, n) ? 0 : fail(bad, 0);
	return check_dns(v, n, bad);
}
