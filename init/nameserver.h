/* Asking the nameservers of resolv.conf directly, one UDP query per
 * nameserver and family, for what getaddrinfo cannot tell us:
 *
 * - musl sends each query to every nameserver at once and takes the first
 *   answer, so with two nameservers of which only one knows a name (podman
 *   lists its own DNS and the host's) a fast NXDOMAIN wins at random. Here
 *   a positive answer from any nameserver counts.
 * - musl ignores a REFUSED answer and times out; here it is named.
 * - musl takes a truncated 512-byte answer as it is: a host with many
 *   addresses gives a different subset each time. Here the question
 *   carries EDNS0 (4096 bytes), and an answer still cut to fit (dnsmasq
 *   sends at most 1232 bytes) is asked again over TCP, so the set is
 *   whole.
 *
 * Blocking; meant for the lookup threads (init/resolver.c). No globals. */
#ifndef PI_NAMESERVER_H
#define PI_NAMESERVER_H

#include <stddef.h>
#include <sys/socket.h>

#include "init/addrset.h"

#define PI_NS_MAX	 3 /* as musl and glibc: later nameservers are ignored */
#define PI_NS_SEARCH_MAX 6

struct pi_resolv_conf {
	size_t n_ns;
	struct sockaddr_storage ns[PI_NS_MAX];
	char ns_text[PI_NS_MAX][48];
	size_t n_search;
	char search[PI_NS_SEARCH_MAX][256];
	int ndots; /* 1 unless "options ndots:N" says otherwise */
};

/* Reads path (resolv.conf syntax). Missing nameservers are not an error:
 * n_ns is 0 then. Returns 0 or -errno when the file cannot be opened. */
int pi_ns_read_conf(const char *path, struct pi_resolv_conf *rc);

/* Looks up name's A and AAAA records at every nameserver of rc at once,
 * following the search list as musl does, for at most timeout_ms. An
 * answer cut to fit (the truncated flag) is asked again over TCP.
 * Returns 1 when some nameserver answered with addresses (they are in
 * *out, finished; the caller frees); *missing is then 0, or AF_INET6
 * (AF_INET) when no nameserver that gave addresses answered the AAAA (A)
 * question before the deadline: that half of the set is unknown, not
 * empty. Returns 0 when none did; then diag holds what a misbehaving
 * nameserver did ("nameserver X answered REFUSED", "...does not answer"),
 * or "" when every answer was a plain "no such name". Returns -ENOMEM
 * when out of memory. */
int pi_ns_lookup(const struct pi_resolv_conf *rc, const char *name, int timeout_ms,
		 struct pi_addrset *out, int *missing, char *diag, size_t dlen);

/* Parses one DNS response for the query with the given id and question:
 * adds its A/AAAA answers to out. Returns the response code (0..15),
 * -EINVAL for a malformed packet or one that answers another question,
 * -ENOMEM. Exposed for the unit tests. */
int pi_ns_parse(const unsigned char *pkt, size_t len, const unsigned char *question, size_t qlen,
		unsigned id, struct pi_addrset *out);

/* Builds a query for name (no trailing dot) and qtype into q; returns its
 * length, or 0 when the name is not a valid DNS name or q is too small.
 * The question section starts at q + 12. */
size_t pi_ns_query(unsigned char *q, size_t qcap, unsigned id, const char *name, int qtype);

#endif
