/* hload: HTTP/1.1 keep-alive load at a fixed rate (open loop), for the
 * bench's server-latency rows.
 *
 *   hload IPV4 PORT PATH RATE SECONDS CONNS
 *
 * Request k is due at start + k/RATE, whatever happened to the ones before
 * it, and its latency runs from that due time to the last byte of its
 * answer: a server that stalls is charged for every request due while it
 * stalled (wrk's closed loop instead waits for the server, and what it
 * records is mostly its own loop when the server is faster than it). A
 * request goes out on a connection with nothing in flight; with none free
 * it waits, still on the clock. The first tenth of the run is not counted
 * (connections warming up). The loop polls instead of sleeping, so that
 * the client's own wake-ups are not in the figures: it owns its CPU.
 *
 * RATE 0 is a closed loop: each connection sends its next request as soon
 * as its answer is in, latency from the send.
 *
 * Prints one line: "rate R sent N measured M missed X p50 A p90 B p99 C p999 D
 * max E us", X the requests due before the end that never went out.
 * Exit 1 on a refused connection, an answer that is not a 200 with a
 * Content-Length, an end of file, or answers still missing 2 s after the
 * end. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HL_MAX_US 200000 /* latencies above this are counted as this */

struct hl_conn {
	int fd;
	uint64_t due; /* ns, of the request in flight */
	size_t len;
	char buf[4096];
};

static uint32_t hl_hist[HL_MAX_US + 1];

static uint64_t hl_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* 1 when buf holds one whole 200 answer, 0 when more is to come, -1 when
 * it is not a 200 with a Content-Length or holds more than one answer. */
static int hl_answer_done(const struct hl_conn *c)
{
	const char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
	size_t head, body = (size_t)-1;

	if (!end)
		return c->len == sizeof(c->buf) ? -1 : 0;
	if (c->len < 12 || memcmp(c->buf, "HTTP/1.1 200", 12) != 0)
		return -1;
	for (const char *p = c->buf + 1; p < end; p++)
		if (p[-1] == '\n' && strncasecmp(p, "content-length:", 15) == 0)
			body = strtoul(p + 15, NULL, 10);
	head = (size_t)(end - c->buf) + 4;
	if (body == (size_t)-1 || c->len > head + body)
		return -1;
	return c->len == head + body;
}

static int hl_connect(const struct sockaddr_in *sa, int ep, int i)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
	struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};

	if (fd < 0 || connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) < 0) {
		perror("hload: connect");
		exit(1);
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
		perror("hload: epoll_ctl");
		exit(1);
	}
	return fd;
}

static void hl_report(double rate, uint64_t sent, uint64_t measured, uint64_t missed)
{
	static const double q[] = {0.5, 0.9, 0.99, 0.999, 1.0};
	unsigned long at[5] = {0};
	uint64_t seen = 0;
	size_t k = 0;

	for (uint32_t us = 0; us <= HL_MAX_US && k < 5; us++) {
		seen += hl_hist[us];
		while (k < 5 && seen > 0 && (double)seen >= q[k] * (double)measured)
			at[k++] = us;
	}
	printf("rate %.0f sent %llu measured %llu missed %llu p50 %lu p90 %lu p99 %lu p999 %lu "
	       "max %lu us\n",
	       rate, (unsigned long long)sent, (unsigned long long)measured,
	       (unsigned long long)missed, at[0], at[1], at[2], at[3], at[4]);
}

int main(int argc, char **argv)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	struct epoll_event evs[64];
	char req[512];

	if (argc != 7 || inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1 || atoi(argv[6]) < 1) {
		fprintf(stderr, "usage: hload IPV4 PORT PATH RATE SECONDS CONNS\n");
		return 2;
	}
	sa.sin_port = htons((uint16_t)atoi(argv[2]));
	double rate = atof(argv[4]), secs = atof(argv[5]);
	int n_conns = atoi(argv[6]), closed = rate <= 0;
	int req_len = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s:%s\r\n\r\n",
			       argv[3], argv[1], argv[2]);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct hl_conn *conns = calloc((size_t)n_conns, sizeof(*conns));
	/* Idle connections in a ring, first freed first used: every one of
	 * them carries load (a stack would keep reusing one or two, and the
	 * others would sit idle until the server closed them). */
	int *idle = calloc((size_t)n_conns, sizeof(*idle)), n_idle = 0, head = 0;

	if (ep < 0 || !conns || !idle || req_len < 0 || (size_t)req_len >= sizeof(req)) {
		fprintf(stderr, "hload: cannot start\n");
		return 1;
	}
	for (int i = 0; i < n_conns; i++) {
		conns[i].fd = hl_connect(&sa, ep, i);
		idle[n_idle++] = i;
	}

	uint64_t period = closed ? 0 : (uint64_t)(1e9 / rate);
	uint64_t start = hl_now() + 1000000, next = start;
	uint64_t end = start + (uint64_t)(secs * 1e9), counted = start + (uint64_t)(secs * 1e8);
	uint64_t sent = 0, measured = 0;
	for (;;) {
		uint64_t now = hl_now();
		if (now >= end && n_idle == n_conns)
			break;
		if (now >= end + 2000000000u) {
			fprintf(stderr, "hload: %d answers missing 2 s after the end\n",
				n_conns - n_idle);
			return 1;
		}
		while (n_idle && now < end && (closed || next <= now)) {
			struct hl_conn *c = &conns[idle[head]];
			head = (head + 1) % n_conns;
			n_idle--;
			/* Closed loop: the clock starts at this very send, not at
			 * the top of a burst of sends. */
			c->due = closed ? hl_now() : next;
			if (write(c->fd, req, (size_t)req_len) != req_len) {
				perror("hload: write");
				return 1;
			}
			c->len = 0;
			next += period;
			sent++;
		}
		int n = epoll_wait(ep, evs, 64, 0);
		for (int k = 0; k < n; k++) {
			struct hl_conn *c = &conns[evs[k].data.u32];
			ssize_t got = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
			if (got <= 0) {
				fprintf(stderr, "hload: read: %s\n", got ? strerror(errno) : "end of file");
				return 1;
			}
			c->len += (size_t)got;
			int done = hl_answer_done(c);
			if (done < 0) {
				fprintf(stderr, "hload: not a single 200 answer with a Content-Length\n");
				return 1;
			}
			if (!done)
				continue;
			if (c->due >= counted) {
				uint64_t us = (hl_now() - c->due) / 1000;
				hl_hist[us > HL_MAX_US ? HL_MAX_US : us]++;
				measured++;
			}
			idle[(head + n_idle++) % n_conns] = (int)(c - conns);
		}
	}
	/* Open loop: a request due before the end that never went out (every
	 * connection busy) has no latency to count; say how many, so that a
	 * run where the client fell behind is not taken for a fast server. */
	uint64_t missed = closed || next >= end ? 0 : (end - next) / period + 1;
	hl_report(closed ? (double)measured / (secs * 0.9) : rate, sent, measured, missed);
	return 0;
}
