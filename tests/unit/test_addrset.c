/* Address sets (init/addrset.c) and the DNS answers they are built from
 * (init/nameserver.c): whole sets compared in any order, whatever their
 * size; display capped, never the comparison. */
#include "init/addrset.h"
#include "init/nameserver.h"
#include "tap.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A set of n IPv4 addresses 10.0.x.y, added in the order of `perm`. */
static void fill(struct pi_addrset *s, size_t n, const size_t *perm)
{
	memset(s, 0, sizeof(*s));
	for (size_t i = 0; i < n; i++) {
		size_t k = perm ? perm[i] : i;
		unsigned char b[4] = {10, 0, (unsigned char)(k / 250),
				      (unsigned char)(k % 250 + 1)};
		pi_addrset_add(s, AF_INET, b);
	}
	pi_addrset_finish(s);
}

static void test_rotations_compare_equal(void)
{
	size_t perm[50];
	struct pi_addrset a, b;

	fill(&a, 50, NULL);
	int all_equal = 1;
	/* Every rotation of a 50-address answer is the same set: the old
	 * code kept the first 16 in answer order and saw a new set. */
	for (size_t r = 0; r < 50; r++) {
		for (size_t i = 0; i < 50; i++)
			perm[i] = (i + r) % 50;
		fill(&b, 50, perm);
		all_equal &= pi_addrset_equal(&a, &b);
		pi_addrset_free(&b);
	}
	ok(all_equal, "50 addresses in every rotation compare equal");
	is_int((long)a.n, 50, "all 50 kept");

	/* One address differing beyond the 16th (sorted) is a change. */
	for (size_t i = 0; i < 50; i++)
		perm[i] = i == 40 ? 60 : i;
	fill(&b, 50, perm);
	ok(!pi_addrset_equal(&a, &b), "a change in the 41st address is a change");
	pi_addrset_free(&b);
	fill(&b, 49, NULL);
	ok(!pi_addrset_equal(&a, &b), "one address fewer is a change");
	pi_addrset_free(&b);
	pi_addrset_free(&a);
}

static void test_duplicates_and_families(void)
{
	struct pi_addrset s = {0}, e = {0};
	unsigned char v4[4] = {192, 0, 2, 1}, v6[16] = {0x20, 0x01, 0x0d, 0xb8};

	v6[15] = 1;
	pi_addrset_add(&s, AF_INET, v4);
	pi_addrset_add(&s, AF_INET6, v6);
	pi_addrset_add(&s, AF_INET, v4);
	is_int(pi_addrset_add(&s, AF_UNIX, v4), -EAFNOSUPPORT, "other families refused");
	pi_addrset_finish(&s);
	is_int((long)s.n, 2, "duplicates dropped");
	is_str(s.a[0], "192.0.2.1", "sorted: IPv4 text first");
	is_str(s.a[1], "2001:db8::1", "IPv6 as text");
	ok(pi_addrset_equal(&e, &e), "empty sets are equal");
	ok(!pi_addrset_equal(&s, &e), "empty differs from non-empty");
	struct pi_addrset c = {0};
	is_int(pi_addrset_copy(&c, &s), 0, "copy");
	ok(pi_addrset_equal(&c, &s), "a copy is equal");
	pi_addrset_move(&e, &c);
	ok(c.n == 0 && c.a == NULL && e.n == 2, "move leaves the source empty");
	pi_addrset_free(&e);
	pi_addrset_free(&s);
}

static void test_from_addrinfo(void)
{
	struct sockaddr_in sa[3];
	struct addrinfo ai[3];
	struct pi_addrset s;

	memset(sa, 0, sizeof(sa));
	memset(ai, 0, sizeof(ai));
	const char *texts[3] = {"10.0.0.2", "10.0.0.1", "10.0.0.2"};
	for (int i = 0; i < 3; i++) {
		sa[i].sin_family = AF_INET;
		inet_pton(AF_INET, texts[i], &sa[i].sin_addr);
		ai[i].ai_family = AF_INET;
		ai[i].ai_addr = (struct sockaddr *)&sa[i];
		ai[i].ai_next = i < 2 ? &ai[i + 1] : NULL;
	}
	is_int(pi_addrset_from_addrinfo(&s, ai), 0, "from addrinfo");
	ok(s.n == 2 && strcmp(s.a[0], "10.0.0.1") == 0 && strcmp(s.a[1], "10.0.0.2") == 0,
	   "getaddrinfo's list sorted, duplicates (one per socket type) dropped");
	pi_addrset_free(&s);
}

static void test_join(void)
{
	struct pi_addrset s;
	char out[64];

	fill(&s, 50, NULL);
	is_str(pi_addrset_join(&s, 2, out, sizeof(out)), "10.0.0.1 10.0.0.10 (+48 more)",
	       "display capped by count (text order), the rest counted");
	pi_addrset_join(&s, 50, out, sizeof(out));
	ok(strlen(out) < sizeof(out) && strstr(out, "more)") != NULL,
	   "display capped by room, the rest counted: %s", out);
	pi_addrset_free(&s);
	is_str(pi_addrset_join(&s, 4, out, sizeof(out)), "none", "an empty set");
}

/* A response to q carrying the given A records (then a CNAME first). */
static size_t answer(unsigned char *pkt, const unsigned char *q, size_t qlen, int rcode, int n_a)
{
	size_t n = qlen;

	memcpy(pkt, q, qlen);
	pkt[2] |= 0x80;
	pkt[3] = (unsigned char)(0x80 | rcode);
	pkt[7] = (unsigned char)(n_a + 1);
	/* a CNAME record pointing at the question name, to be skipped */
	unsigned char cname[] = {0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 0xc0, 12};
	memcpy(pkt + n, cname, sizeof(cname));
	n += sizeof(cname);
	for (int i = 0; i < n_a; i++) {
		unsigned char rr[] = {0xc0, 12, 0, 1, 0,  1, 0, 0,
				      0,    60, 0, 4, 10, 1, 0, (unsigned char)(i + 1)};
		memcpy(pkt + n, rr, sizeof(rr));
		n += sizeof(rr);
	}
	return n;
}

static void test_dns_packets(void)
{
	unsigned char q[300], pkt[1500];
	struct pi_addrset s = {0};

	size_t qlen = pi_ns_query(q, sizeof(q), 0x1234, "api.example.internal", 1);
	ok(qlen == 12 + 22 + 4, "query built (%zu bytes)", qlen);
	is_int((long)pi_ns_query(pkt, sizeof(pkt), 1, "a..b", 1), 0, "empty label refused");
	size_t n = answer(pkt, q, qlen, 0, 50);
	is_int(pi_ns_parse(pkt, n, q + 12, qlen - 12, 0x1234, &s), 0, "NOERROR parsed");
	pi_addrset_finish(&s);
	is_int((long)s.n, 50, "all 50 A records, the CNAME skipped");
	pi_addrset_free(&s);
	is_int(pi_ns_parse(pkt, n, q + 12, qlen - 12, 0x4321, &s), -EINVAL, "another id refused");
	is_int(pi_ns_parse(pkt, n - 5, q + 12, qlen - 12, 0x1234, &s), 0,
	       "a cut answer keeps the whole records before the cut");
	pi_addrset_finish(&s);
	is_int((long)s.n, 49, "49 whole records");
	pi_addrset_free(&s);
	n = answer(pkt, q, qlen, 3, 0);
	is_int(pi_ns_parse(pkt, n, q + 12, qlen - 12, 0x1234, &s), 3, "NXDOMAIN is rcode 3");
	is_int((long)s.n, 0, "and no addresses");
	is_int(pi_ns_parse(pkt, 11, q + 12, qlen - 12, 0x1234, &s), -EINVAL, "short packet");
}

static void test_resolv_conf(void)
{
	char path[] = "/tmp/pi-test-resolv-XXXXXX";
	struct pi_resolv_conf rc;
	int fd = mkstemp(path);
	FILE *f = fdopen(fd, "w");

	fputs("# comment\nsearch a.example b.example\nnameserver 127.0.0.54\n"
	      "nameserver ::1\nnameserver bogus\nnameserver 127.0.0.53\nnameserver 127.0.0.9\n"
	      "options timeout:2 ndots:3\n",
	      f);
	fclose(f);
	is_int(pi_ns_read_conf(path, &rc), 0, "resolv.conf read");
	is_int((long)rc.n_ns, 3, "three nameservers at most, bogus ones skipped");
	is_str(rc.ns_text[0], "127.0.0.54", "first nameserver");
	is_str(rc.ns_text[1], "::1", "IPv6 nameserver");
	is_str(rc.ns_text[2], "127.0.0.53", "third nameserver");
	is_int(rc.ndots, 3, "ndots");
	ok(rc.n_search == 2 && strcmp(rc.search[1], "b.example") == 0, "search list");
	unlink(path);
	is_int(pi_ns_read_conf(path, &rc), -ENOENT, "missing file");
}

/* A lookup whose AAAA question went unanswered keeps the IPv6 half of
 * the set it had: only that family is taken over, sorted in. */
static void test_add_family(void)
{
	struct pi_addrset now = {0, NULL}, got = {0, NULL};
	unsigned char v4[4] = {10, 0, 0, 2}, v4b[4] = {10, 0, 0, 1}, v6[16] = {0xfd, 0, [15] = 0x11};
	char text[256];

	pi_addrset_add(&now, AF_INET, v4b);
	pi_addrset_add(&now, AF_INET6, v6);
	pi_addrset_finish(&now);
	pi_addrset_add(&got, AF_INET, v4);
	pi_addrset_finish(&got);
	is_int(pi_addrset_add_family(&got, &now, AF_INET6), 0, "the IPv6 half taken over");
	is_str(pi_addrset_join(&got, 16, text, sizeof(text)), "10.0.0.2 fd00::11",
	       "... and only it, sorted in");
	is_int(pi_addrset_add_family(&got, &now, AF_INET6), 0, "taken twice");
	is_int((int)got.n, 2, "... no duplicate");
	pi_addrset_free(&now);
	is_int(pi_addrset_add_family(&got, &now, AF_INET), 0, "from an empty set");
	is_int((int)got.n, 2, "... nothing added");
	pi_addrset_free(&got);
}

static void test_subset(void)
{
	size_t perm[40];
	struct pi_addrset all, part, empty = {0, NULL};

	fill(&all, 40, NULL);
	/* Every other address, in reverse: 29 of them would be a cut answer. */
	for (size_t i = 0; i < 20; i++)
		perm[i] = 38 - 2 * i;
	fill(&part, 20, perm);
	ok(pi_addrset_subset(&part, &all), "20 of 40 in another order are a subset");
	ok(!pi_addrset_subset(&all, &part), "... and the 40 are not theirs");
	ok(pi_addrset_subset(&all, &all), "a set is its own subset");
	pi_addrset_free(&part);
	perm[0] = 45; /* 10.0.0.46: not one of all */
	fill(&part, 1, perm);
	ok(!pi_addrset_subset(&part, &all), "an address past every known one is new");
	pi_addrset_free(&part);
	for (size_t i = 0; i < 3; i++)
		perm[i] = i == 1 ? 41 : i; /* one new address between known ones */
	fill(&part, 3, perm);
	ok(!pi_addrset_subset(&part, &all), "one new address among known ones");
	ok(pi_addrset_subset(&empty, &all), "the empty set is everyone's");
	ok(!pi_addrset_subset(&part, &empty), "nothing is the empty set's");
	pi_addrset_free(&part);
	pi_addrset_free(&all);
}

int main(void)
{
	test_rotations_compare_equal();
	test_duplicates_and_families();
	test_from_addrinfo();
	test_join();
	test_dns_packets();
	test_resolv_conf();
	test_add_family();
	test_subset();
	return done_testing();
}
