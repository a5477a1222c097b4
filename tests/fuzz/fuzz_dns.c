/* libFuzzer harness for the DNS answer parser (init/nameserver.h), which
 * reads packets from the network. The input's bytes after the header and
 * question of a fixed query are taken as the answer, so the harness reaches
 * the record loop instead of failing the id/question check. Properties:
 * the result is a response code 0..15 or -EINVAL/-ENOMEM; every address
 * added parses back as an IPv4 or IPv6 address; the finished set is sorted
 * without duplicates; a prefix of an answer never gives more addresses. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "init/nameserver.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int parse(const unsigned char *pkt, size_t len, const unsigned char *q, size_t qlen,
		 struct pi_addrset *s)
{
	memset(s, 0, sizeof(*s));
	int rc = pi_ns_parse(pkt, len, q + 12, qlen - 12, 0x7069, s);
	CHECK(rc == -EINVAL || rc == -ENOMEM || (rc >= 0 && rc <= 15));
	CHECK(rc == 0 || s->n == 0 || rc == -ENOMEM);
	pi_addrset_finish(s);
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned char q[300], pkt[4096];
	unsigned char bin[16];
	struct pi_addrset s, half;

	size_t qlen = pi_ns_query(q, sizeof(q), 0x7069, "api.example.internal", 1);
	CHECK(qlen > 12);
	if (size < 4 || qlen + size - 4 > sizeof(pkt))
		return 0;
	/* Header from the query, flags and counts from the input. */
	memcpy(pkt, q, qlen);
	pkt[2] = (unsigned char)(data[0] | 0x80);
	pkt[3] = data[1];
	pkt[6] = data[2] & 1, pkt[7] = data[3];
	memcpy(pkt + qlen, data + 4, size - 4);
	size_t len = qlen + size - 4;

	parse(pkt, len, q, qlen, &s);
	for (size_t i = 0; i < s.n; i++) {
		CHECK(memchr(s.a[i], 0, sizeof(s.a[i])) != NULL);
		CHECK(inet_pton(AF_INET, s.a[i], bin) == 1 || inet_pton(AF_INET6, s.a[i], bin) == 1);
		if (i)
			CHECK(strcmp(s.a[i - 1], s.a[i]) < 0);
	}
	parse(pkt, qlen + (size - 4) / 2, q, qlen, &half);
	CHECK(half.n <= s.n);
	pi_addrset_free(&half);
	pi_addrset_free(&s);
	return 0;
}
