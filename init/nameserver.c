#include "init/nameserver.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define NS_QTYPE_A    1
#define NS_QTYPE_AAAA 28
#define NS_UNANSWERED (-1)

static int ns_parse_addr(const char *text, struct sockaddr_storage *ss)
{
	struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, text, &v4->sin_addr) == 1) {
		v4->sin_family = AF_INET;
		v4->sin_port = htons(53);
		return 0;
	}
	if (inet_pton(AF_INET6, text, &v6->sin6_addr) == 1) {
		v6->sin6_family = AF_INET6;
		v6->sin6_port = htons(53);
		return 0;
	}
	return -EINVAL;
}

static void ns_conf_line(struct pi_resolv_conf *rc, char *line)
{
	char *save = NULL, *key = strtok_r(line, " \t\r\n", &save), *w;

	if (!key)
		return;
	if (strcmp(key, "nameserver") == 0) {
		w = strtok_r(NULL, " \t\r\n", &save);
		if (w && rc->n_ns < PI_NS_MAX && strlen(w) < sizeof(rc->ns_text[0]) &&
		    ns_parse_addr(w, &rc->ns[rc->n_ns]) == 0)
			snprintf(rc->ns_text[rc->n_ns++], sizeof(rc->ns_text[0]), "%s", w);
	} else if (strcmp(key, "search") == 0 || strcmp(key, "domain") == 0) {
		rc->n_search = 0; /* the last such line wins, as in musl */
		while ((w = strtok_r(NULL, " \t\r\n", &save)) && rc->n_search < PI_NS_SEARCH_MAX)
			if (strlen(w) < sizeof(rc->search[0]))
				snprintf(rc->search[rc->n_search++], sizeof(rc->search[0]), "%s",
					 w);
	} else if (strcmp(key, "options") == 0) {
		while ((w = strtok_r(NULL, " \t\r\n", &save)))
			if (strncmp(w, "ndots:", 6) == 0) {
				long v = strtol(w + 6, NULL, 10);
				rc->ndots = v < 0 ? 0 : v > 15 ? 15 : (int)v;
			}
	}
}

int pi_ns_read_conf(const char *path, struct pi_resolv_conf *rc)
{
	char line[512];
	FILE *f = fopen(path, "re");

	memset(rc, 0, sizeof(*rc));
	rc->ndots = 1;
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f))
		if (line[0] != '#' && line[0] != ';')
			ns_conf_line(rc, line);
	fclose(f);
	return 0;
}

size_t pi_ns_query(unsigned char *q, size_t qcap, unsigned id, const char *name, int qtype)
{
	size_t n = 12;

	if (qcap < 12 + 2 + 4 || !*name)
		return 0;
	memset(q, 0, 12);
	q[0] = (unsigned char)(id >> 8), q[1] = (unsigned char)id;
	q[2] = 0x01; /* recursion desired */
	q[5] = 1;    /* one question */
	for (const char *p = name; *p;) {
		const char *dot = strchr(p, '.');
		size_t l = dot ? (size_t)(dot - p) : strlen(p);
		if (l == 0 || l > 63 || n + 1 + l + 5 > qcap || n + 1 + l > 12 + 254)
			return 0;
		q[n++] = (unsigned char)l;
		memcpy(q + n, p, l);
		n += l;
		p += l + (dot ? 1 : 0);
	}
	q[n++] = 0;
	q[n++] = 0, q[n++] = (unsigned char)qtype;
	q[n++] = 0, q[n++] = 1; /* class IN */
	return n;
}

/* Skips a (possibly compressed) name at *off; -1 when malformed. */
static int ns_skip_name(const unsigned char *p, size_t len, size_t *off)
{
	size_t o = *off;

	for (int labels = 0; labels < 128; labels++) {
		if (o >= len)
			return -1;
		if ((p[o] & 0xc0) == 0xc0) {
			if (o + 2 > len)
				return -1;
			*off = o + 2;
			return 0;
		}
		if (p[o] & 0xc0)
			return -1;
		if (p[o] == 0) {
			*off = o + 1;
			return 0;
		}
		o += 1 + (size_t)p[o];
	}
	return -1;
}

/* Whether pkt is a response to the query with this id and question. */
static int ns_answers(const unsigned char *pkt, size_t len, const unsigned char *question,
		      size_t qlen, unsigned id)
{
	return len >= 12 + qlen && pkt[0] == (unsigned char)(id >> 8) &&
	       pkt[1] == (unsigned char)id && (pkt[2] & 0x80) && pkt[4] == 0 && pkt[5] == 1 &&
	       memcmp(pkt + 12, question, qlen) == 0;
}

int pi_ns_parse(const unsigned char *pkt, size_t len, const unsigned char *question, size_t qlen,
		unsigned id, struct pi_addrset *out)
{
	size_t off = 12 + qlen;

	if (!ns_answers(pkt, len, question, qlen, id))
		return -EINVAL;
	int rcode = pkt[3] & 15;
	unsigned an = (unsigned)pkt[6] << 8 | pkt[7];
	for (unsigned i = 0; i < an && rcode == 0; i++) {
		if (ns_skip_name(pkt, len, &off) < 0 || off + 10 > len)
			break; /* a truncated answer keeps what came before */
		unsigned type = (unsigned)pkt[off] << 8 | pkt[off + 1];
		unsigned cls = (unsigned)pkt[off + 2] << 8 | pkt[off + 3];
		size_t rdlen = (size_t)pkt[off + 8] << 8 | pkt[off + 9];
		off += 10;
		if (off + rdlen > len)
			break;
		int rc = 0;
		if (cls == 1 && type == NS_QTYPE_A && rdlen == 4)
			rc = pi_addrset_add(out, AF_INET, pkt + off);
		else if (cls == 1 && type == NS_QTYPE_AAAA && rdlen == 16)
			rc = pi_addrset_add(out, AF_INET6, pkt + off);
		if (rc == -ENOMEM)
			return -ENOMEM;
		off += rdlen;
	}
	return rcode;
}

static long long ns_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One name asked of every nameserver, A and AAAA. */
struct ns_round {
	const struct pi_resolv_conf *rc;
	int fd[PI_NS_MAX];
	unsigned char q[2][300];
	size_t qlen[2]; /* header and question; an EDNS record follows */
	unsigned id[2];
	int rcode[PI_NS_MAX][2]; /* NS_UNANSWERED until an answer came */
	int positive[PI_NS_MAX]; /* gave addresses */
};

static int ns_send(struct ns_round *r, const char *name)
{
	unsigned short rnd[2] = {0, 0};

	if (getrandom(rnd, sizeof(rnd), GRND_NONBLOCK) != sizeof(rnd))
		rnd[0] = (unsigned short)ns_now_ms(), rnd[1] = (unsigned short)(rnd[0] ^ 0x5a5a);
	for (int t = 0; t < 2; t++) {
		r->id[t] = rnd[t];
		r->qlen[t] = pi_ns_query(r->q[t], sizeof(r->q[t]), r->id[t], name,
					 t ? NS_QTYPE_AAAA : NS_QTYPE_A);
		if (!r->qlen[t])
			return -EINVAL;
		/* EDNS0 with a 4096-byte payload: a host with many addresses
		 * fits whole, where a 512-byte answer would hold a subset
		 * that changes from one answer to the next. */
		static const unsigned char opt[11] = {0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0};
		memcpy(r->q[t] + r->qlen[t], opt, sizeof(opt));
		r->q[t][11] = 1; /* one additional record */
	}
	for (size_t i = 0; i < r->rc->n_ns; i++) {
		const struct sockaddr_storage *ss = &r->rc->ns[i];
		socklen_t sl = ss->ss_family == AF_INET ? sizeof(struct sockaddr_in)
							: sizeof(struct sockaddr_in6);
		r->rcode[i][0] = r->rcode[i][1] = NS_UNANSWERED;
		r->positive[i] = 0;
		r->fd[i] = socket(ss->ss_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (r->fd[i] < 0)
			continue;
		if (connect(r->fd[i], (const struct sockaddr *)ss, sl) < 0) {
			close(r->fd[i]);
			r->fd[i] = -1;
			continue;
		}
		for (int t = 0; t < 2; t++)
			(void)send(r->fd[i], r->q[t], r->qlen[t] + 11, 0);
	}
	return 0;
}

/* Waits until fd is ready for events or the deadline; > 0 when ready. */
static int ns_wait(int fd, short events, long long deadline)
{
	struct pollfd pfd = {.fd = fd, .events = events};
	long long left;
	int rc;

	do {
		if ((left = deadline - ns_now_ms()) <= 0)
			return 0;
		rc = poll(&pfd, 1, (int)left);
	} while (rc < 0 && errno == EINTR);
	return rc;
}

/* Sends or receives exactly n bytes before the deadline; 0 or -1. */
static int ns_tcp_io(int fd, unsigned char *p, size_t n, int in, long long deadline)
{
	while (n > 0) {
		if (ns_wait(fd, in ? POLLIN : POLLOUT, deadline) <= 0)
			return -1;
		ssize_t k = in ? recv(fd, p, n, 0) : send(fd, p, n, MSG_NOSIGNAL);
		if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR))
			return -1;
		if (k > 0)
			p += k, n -= (size_t)k;
	}
	return 0;
}

/* Asks question t of nameserver i again over TCP (RFC 7766), for an
 * answer that came cut (the truncated flag): the whole set, not the
 * subset that fit, which may differ from one answer to the next. Adds
 * the addresses to out. Returns the response code, -ENOMEM, or -EIO when
 * no whole answer came before the deadline. */
static int ns_tcp(const struct ns_round *r, size_t i, int t, long long deadline,
		  struct pi_addrset *out)
{
	const struct sockaddr_storage *ss = &r->rc->ns[i];
	socklen_t sl = ss->ss_family == AF_INET ? sizeof(struct sockaddr_in)
						: sizeof(struct sockaddr_in6);
	unsigned char msg[2 + sizeof(r->q[t]) + 11], len[2], *ans = NULL;
	size_t qn = r->qlen[t] + 11;
	int err = 0, rc = -EIO;
	socklen_t el = sizeof(err);
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	if (fd < 0)
		return -EIO;
	msg[0] = (unsigned char)(qn >> 8);
	msg[1] = (unsigned char)qn;
	memcpy(msg + 2, r->q[t], qn);
	if ((connect(fd, (const struct sockaddr *)ss, sl) == 0 || errno == EINPROGRESS) &&
	    ns_wait(fd, POLLOUT, deadline) > 0 &&
	    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err == 0 &&
	    ns_tcp_io(fd, msg, qn + 2, 0, deadline) == 0 &&
	    ns_tcp_io(fd, len, 2, 1, deadline) == 0) {
		size_t n = (size_t)len[0] << 8 | len[1];
		if (!(ans = malloc(n ? n : 1)))
			rc = -ENOMEM;
		else if (ns_tcp_io(fd, ans, n, 1, deadline) == 0)
			rc = pi_ns_parse(ans, n, r->q[t] + 12, r->qlen[t] - 12, r->id[t], out);
		if (rc == -EINVAL)
			rc = -EIO;
	}
	free(ans);
	close(fd);
	return rc;
}

/* Reads what nameserver i sent; returns -ENOMEM or 0. */
static int ns_receive(struct ns_round *r, size_t i, long long deadline, struct pi_addrset *out)
{
	/* The largest answer the EDNS record offers to take, and then some. */
	unsigned char a[4096 + 512];
	ssize_t got;

	while ((got = recv(r->fd[i], a, sizeof(a), 0)) >= 0) {
		for (int t = 0; t < 2; t++) {
			if (r->rcode[i][t] != NS_UNANSWERED)
				continue;
			size_t before = out->n;
			const unsigned char *q = r->q[t] + 12;
			size_t qlen = r->qlen[t] - 12;
			int rc = -EIO;
			/* An answer cut to fit (the truncated flag) is asked
			 * again over TCP; what it holds counts only when TCP
			 * gives nothing. */
			if (got > 2 && (a[2] & 0x02) && ns_answers(a, (size_t)got, q, qlen, r->id[t]))
				rc = ns_tcp(r, i, t, deadline, out);
			if (rc == -EIO)
				rc = pi_ns_parse(a, (size_t)got, q, qlen, r->id[t], out);
			if (rc == -ENOMEM)
				return rc;
			if (rc >= 0)
				r->rcode[i][t] = rc;
			if (out->n > before)
				r->positive[i] = 1;
		}
	}
	return 0;
}

static int ns_answered(const struct ns_round *r, size_t i)
{
	return r->fd[i] < 0 || (r->rcode[i][0] != NS_UNANSWERED && r->rcode[i][1] != NS_UNANSWERED);
}

/* Done when every nameserver answered both questions, or one that knows
 * the name did (its A and AAAA together: half a dual-stack set would look
 * like a change). */
static int ns_done(const struct ns_round *r)
{
	int all = 1;

	for (size_t i = 0; i < r->rc->n_ns; i++) {
		if (r->positive[i] && ns_answered(r, i))
			return 1;
		all &= ns_answered(r, i);
	}
	return all;
}

/* Asks name until every nameserver answered, one gave addresses, or the
 * deadline. Returns 1 with addresses, 0 without, -ENOMEM. */
static int ns_ask(struct ns_round *r, const char *name, long long deadline, struct pi_addrset *out)
{
	struct pollfd pfd[PI_NS_MAX];
	int rc = 0;

	if (ns_send(r, name) < 0)
		return 0;
	while (!ns_done(r)) {
		long long left = deadline - ns_now_ms();
		if (left <= 0)
			break;
		for (size_t i = 0; i < r->rc->n_ns; i++)
			pfd[i] = (struct pollfd){.fd = r->fd[i], .events = POLLIN};
		if (poll(pfd, r->rc->n_ns, (int)left) < 0 && errno != EINTR)
			break;
		for (size_t i = 0; i < r->rc->n_ns && rc == 0; i++)
			if (pfd[i].revents)
				rc = ns_receive(r, i, deadline, out);
	}
	for (size_t i = 0; i < r->rc->n_ns; i++)
		if (r->fd[i] >= 0)
			close(r->fd[i]);
	if (rc < 0)
		return rc;
	return out->n > 0;
}

/* A family's set is known from a NOERROR answer, records or none. An
 * error (SERVFAIL, REFUSED, or NXDOMAIN beside the other family's
 * addresses) says nothing about it: counted as whole and empty, it would
 * drop the family's addresses for one bad answer, and reload twice. */
static int ns_known(int rcode)
{
	return rcode == 0;
}

/* After ns_ask gave addresses: the family none of the nameservers that
 * gave addresses made known (its question went unanswered until the
 * deadline, or got an error), or 0 when one of them made both known. */
static int ns_missing(const struct ns_round *r)
{
	int a = 0, aaaa = 0;

	for (size_t i = 0; i < r->rc->n_ns; i++) {
		int ka = ns_known(r->rcode[i][0]), kaaaa = ns_known(r->rcode[i][1]);

		if (!r->positive[i])
			continue;
		if (ka && kaaaa)
			return 0;
		a |= ka;
		aaaa |= kaaaa;
	}
	return !aaaa ? AF_INET6 : !a ? AF_INET : 0;
}

static void ns_diag(const struct ns_round *r, char *diag, size_t dlen)
{
	static const char *const rcodes[] = {"NOERROR",	 "FORMERR", "SERVFAIL",
					     "NXDOMAIN", "NOTIMP",  "REFUSED"};

	for (size_t i = 0; i < r->rc->n_ns; i++) {
		for (int t = 0; t < 2; t++) {
			int c = r->rcode[i][t];
			if (c == NS_UNANSWERED) {
				snprintf(diag, dlen, "nameserver %s does not answer",
					 r->rc->ns_text[i]);
				return;
			}
			if (c != 0 && c != 3) {
				snprintf(diag, dlen, "nameserver %s answered %s", r->rc->ns_text[i],
					 c < 6 ? rcodes[c] : "with an error");
				return;
			}
		}
	}
}

int pi_ns_lookup(const struct pi_resolv_conf *rc, const char *name, int timeout_ms,
		 struct pi_addrset *out, int *missing, char *diag, size_t dlen)
{
	struct ns_round r = {.rc = rc};
	long long deadline = ns_now_ms() + timeout_ms;
	size_t len = strlen(name), dots = 0;
	char cand[520];

	memset(out, 0, sizeof(*out));
	*missing = 0;
	diag[0] = '\0';
	if (rc->n_ns == 0 || len == 0 || len > 253)
		return 0;
	for (size_t i = 0; i < len; i++)
		dots += name[i] == '.';
	int absolute = name[len - 1] == '.';
	/* musl: the search list first when the name has fewer dots than
	 * ndots, then the name itself. */
	size_t n_search = absolute || dots >= (size_t)rc->ndots ? 0 : rc->n_search;
	for (size_t k = 0; k <= n_search && ns_now_ms() < deadline; k++) {
		if (k < n_search)
			snprintf(cand, sizeof(cand), "%s.%s", name, rc->search[k]);
		else
			snprintf(cand, sizeof(cand), "%.*s", (int)(len - absolute), name);
		int got = ns_ask(&r, cand, deadline, out);
		if (got != 0) {
			if (got > 0) {
				pi_addrset_finish(out);
				*missing = ns_missing(&r);
			}
			else /* out of memory: nothing half-made for the caller */
				pi_addrset_free(out);
			return got;
		}
		if (!diag[0])
			ns_diag(&r, diag, dlen);
	}
	return 0;
}
