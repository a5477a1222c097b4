#include "health/probe.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "health/addr.h"
#include "health/duration.h"

#define PR_KEEP 4096 /* bytes of the answer kept: its head and the start of its body */

int pi_health_url(const char *listen, const char *path, char *out, size_t outlen)
{
	struct sockaddr_storage ss;
	char host[INET6_ADDRSTRLEN];
	unsigned port;
	int n;

	if (!path || path[0] != '/' || pi_health_parse_addr(listen, &ss) < 0)
		return -EINVAL;
	port = (unsigned)pi_health_addr_port(&ss);
	if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		if (IN6_IS_ADDR_UNSPECIFIED(&a->sin6_addr))
			a->sin6_addr = in6addr_loopback;
		inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
		n = snprintf(out, outlen, "http://[%s]:%u%s", host, port, path);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		if (a->sin_addr.s_addr == htonl(INADDR_ANY))
			a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
		n = snprintf(out, outlen, "http://%s:%u%s", host, port, path);
	}
	return n < 0 || (size_t)n >= outlen ? -ENAMETOOLONG : 0;
}

struct pr_target {
	struct sockaddr_storage addr;
	char authority[128]; /* for the Host header */
	const char *path;
};

/* http://HOST[:PORT][/PATH] with an IP literal or localhost for HOST. */
static int pr_parse_url(const char *url, struct pr_target *t)
{
	char hostport[sizeof(t->authority) + 4];

	if (strncmp(url, "http://", 7) != 0)
		return -EINVAL;
	const char *a = url + 7, *slash = strchr(a, '/');
	size_t alen = slash ? (size_t)(slash - a) : strlen(a);
	if (alen == 0 || alen >= sizeof(t->authority))
		return -EINVAL;
	memcpy(t->authority, a, alen);
	t->authority[alen] = '\0';
	t->path = slash ? slash : "/";
	for (const char *p = t->path; *p; p++)
		if (*p < 0x21 || *p > 0x7e)
			return -EINVAL;

	const char *after_host = t->authority[0] == '[' ? strchr(t->authority, ']') : t->authority;
	if (!after_host)
		return -EINVAL;
	int has_port = strchr(after_host, ':') != NULL;
	snprintf(hostport, sizeof(hostport), "%s%s", t->authority, has_port ? "" : ":80");
	return pi_health_parse_addr(hostport, &t->addr);
}

static int64_t pr_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for ev on fd until the deadline: 1 ready, 0 timed out, -errno. */
static int pr_wait(int fd, short ev, int64_t deadline)
{
	for (;;) {
		struct pollfd p = {.fd = fd, .events = ev};
		int64_t left = deadline - pr_now_ms();
		if (left <= 0)
			return 0;
		int r = poll(&p, 1, left > 60000 ? 60000 : (int)left);
		if (r > 0)
			return 1;
		if (r < 0 && errno != EINTR)
			return -errno;
	}
}

/* The first "key":"value" string in a JSON text, control bytes and escapes
 * flattened, so it fits on one log line. Empty when absent. */
static void pr_json_string(const char *body, size_t len, const char *key, char *out, size_t cap)
{
	char pat[32];
	int n = snprintf(pat, sizeof(pat), "\"%s\"", key);
	const char *p = memmem(body, len, pat, (size_t)n), *end = body + len;
	size_t o = 0;

	out[0] = '\0';
	if (!p)
		return;
	for (p += n; p < end && (*p == ' ' || *p == ':'); p++)
		;
	if (p >= end || *p++ != '"')
		return;
	for (; p < end && *p != '"' && o + 1 < cap; p++) {
		if (*p == '\\' && p + 1 < end)
			p++;
		out[o++] = (unsigned char)*p < 0x20 ? '?' : *p;
	}
	out[o] = '\0';
}

/* An answer as it arrives: the first PR_KEEP bytes are kept, the rest of
 * the body only counted. */
struct pr_reply {
	char buf[PR_KEEP];
	size_t len;		  /* bytes in buf */
	size_t head_len;	  /* 0 until the head is complete */
	int status;		  /* from the status line, once the head is complete */
	long long content_length; /* -1: none, read to the server's close */
	unsigned long long body;  /* body bytes received */
	int closed;		  /* the server closed its end */
};

/* "HTTP/1.0 " or "HTTP/1.1 ", three digits, then SP or the line's CRLF. */
static int pr_status_line(const char *p, size_t head_len)
{
	int code = 0;

	if (head_len < 14 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') ||
	    p[8] != ' ')
		return -1;
	for (int i = 9; i < 12; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -1;
		code = code * 10 + p[i] - '0';
	}
	if (p[12] != ' ' && !(p[12] == '\r' && p[13] == '\n'))
		return -1;
	const char *lf = memchr(p, '\n', head_len);
	return lf && lf > p && lf[-1] == '\r' ? code : -1;
}

/* The next header line of the head from *p on named `name` (lower case,
 * with its colon): its value, with *eol set to the line's LF; NULL when no
 * further line has that name. Start with *p at the status line. */
static const char *pr_next_header(const char **p, const char *end, const char *name,
				  const char **eol)
{
	size_t nlen = strlen(name);
	const char *line = memchr(*p, '\n', (size_t)(end - *p));

	while (line && ++line < end) {
		const char *lf = memchr(line, '\n', (size_t)(end - line));
		*p = lf ? lf : end;
		if (lf && (size_t)(lf - line) >= nlen && strncasecmp(line, name, nlen) == 0) {
			*eol = lf;
			return line + nlen;
		}
		line = lf;
	}
	*p = end;
	return NULL;
}

/* The Content-Length of the head (-1 without one), or -2 when it is not
 * 1*DIGIT or given twice with different values. */
static long long pr_content_length(const char *head, size_t len)
{
	long long found = -1;
	const char *p = head, *end = head + len, *v, *eol;

	while ((v = pr_next_header(&p, end, "content-length:", &eol))) {
		long long n = 0;
		int digits = 0;
		while (v < eol && (*v == ' ' || *v == '\t'))
			v++;
		for (; v < eol && *v >= '0' && *v <= '9' && n < (1LL << 50); v++, digits++)
			n = n * 10 + (*v - '0');
		while (v < eol && (*v == ' ' || *v == '\t' || *v == '\r'))
			v++;
		if (!digits || v != eol || (found >= 0 && found != n))
			return -2;
		found = n;
	}
	return found;
}

/* Once the head is complete: its status and length. 0, or -1 with why. */
static int pr_take_head(struct pr_reply *r, char *why, size_t whylen)
{
	const char *end = memmem(r->buf, r->len, "\r\n\r\n", 4);

	if (!end)
		return 0;
	r->head_len = (size_t)(end - r->buf) + 4;
	r->body = r->len - r->head_len;
	if ((r->status = pr_status_line(r->buf, r->head_len)) < 0) {
		snprintf(why, whylen, "malformed status line");
		return -1;
	}
	/* The init never sends a chunked answer, and one read to the close
	 * could not tell a cut body from a whole one. */
	const char *p = r->buf, *eol;
	if (r->status == 200 &&
	    pr_next_header(&p, r->buf + r->head_len, "transfer-encoding:", &eol)) {
		snprintf(why, whylen, "Transfer-Encoding in a 200 answer");
		return -1;
	}
	if ((r->content_length = pr_content_length(r->buf, r->head_len)) == -2) {
		snprintf(why, whylen, "malformed Content-Length");
		return -1;
	}
	return 0;
}

/* 1 when the whole answer is in: its head and its announced body. */
static int pr_complete(const struct pr_reply *r)
{
	return r->head_len &&
	       (r->content_length < 0 ? r->closed
				      : r->body >= (unsigned long long)r->content_length);
}

/* Receives what is there. 0 for more to come, -1 with why on an error. */
static int pr_receive(int fd, struct pr_reply *r, char *why, size_t whylen)
{
	char scratch[4096];
	int keep = r->len < sizeof(r->buf);
	ssize_t k = keep ? recv(fd, r->buf + r->len, sizeof(r->buf) - r->len, 0)
			 : recv(fd, scratch, sizeof(scratch), 0);

	if (k == 0) {
		r->closed = 1;
	} else if (k > 0) {
		if (keep)
			r->len += (size_t)k;
		if (r->head_len)
			r->body += (unsigned long long)k;
		else if (pr_take_head(r, why, whylen) < 0)
			return -1;
		else if (!r->head_len && r->len == sizeof(r->buf)) {
			snprintf(why, whylen, "response head over %d bytes", PR_KEEP);
			return -1;
		}
	} else if (errno != EAGAIN && errno != EINTR) {
		snprintf(why, whylen, "receive: %s", strerror(errno));
		return -1;
	}
	return 0;
}

/* The verdict on a whole (or, for a failure status, partial) answer: 0 on
 * 200, else 1 with why filled. */
static int pr_judge(const struct pr_reply *r, char *why, size_t whylen)
{
	char status[32], output[256];
	const char *body = r->buf + r->head_len;
	size_t blen = r->len - r->head_len;

	if (r->status == 200)
		return 0;
	pr_json_string(body, blen, "status", status, sizeof(status));
	pr_json_string(body, blen, "output", output, sizeof(output));
	if (status[0] && output[0])
		snprintf(why, whylen, "HTTP %d: %s (%s)", r->status, status, output);
	else if (status[0])
		snprintf(why, whylen, "HTTP %d: %s", r->status, status);
	else
		snprintf(why, whylen, "HTTP %d", r->status);
	return 1;
}

/* Why an answer that ended (closed, or out of time) is not whole. */
static void pr_cut_short(const struct pr_reply *r, char *why, size_t whylen)
{
	if (r->len == 0)
		snprintf(why, whylen, "connection closed without a response");
	else if (!r->head_len)
		snprintf(why, whylen, "response cut short in its head (%zu bytes)", r->len);
	else
		snprintf(why, whylen, "body cut short: %llu of %lld bytes", r->body,
			 r->content_length);
}

/* Reads the answer until it is whole. 0 when whole, 1 when it failed with
 * why filled, or for a non-200 answer whatever arrived in time. */
static int pr_read_answer(int fd, int64_t deadline, const char *timeout_text, char *why,
			  size_t whylen)
{
	static struct pr_reply r;
	int w;

	memset(&r, 0, sizeof(r));
	while (!pr_complete(&r)) {
		if (r.closed) {
			if (r.head_len && r.status != 200)
				break; /* quote what the failure said */
			pr_cut_short(&r, why, whylen);
			return 1;
		}
		if ((w = pr_wait(fd, POLLIN, deadline)) <= 0) {
			if (w == 0 && r.head_len && r.status != 200)
				break;
			if (w == 0)
				snprintf(why, whylen, "timed out after %s", timeout_text);
			else
				snprintf(why, whylen, "poll: %s", strerror(-w));
			return 1;
		}
		if (pr_receive(fd, &r, why, whylen) < 0)
			return 1;
	}
	return pr_judge(&r, why, whylen);
}

/* Connects before the deadline: 0, or 1 with why filled. */
static int pr_connect(int fd, const struct pr_target *t, int64_t deadline, const char *timeout_text,
		      char *why, size_t whylen)
{
	socklen_t alen = t->addr.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
						       : sizeof(struct sockaddr_in);
	int soerr = 0, w;
	socklen_t sl = sizeof(soerr);

	if (connect(fd, (const struct sockaddr *)&t->addr, alen) < 0 && errno != EINPROGRESS &&
	    errno != EINTR) {
		snprintf(why, whylen, "connect: %s", strerror(errno));
		return 1;
	}
	if ((w = pr_wait(fd, POLLOUT, deadline)) <= 0) {
		if (w == 0)
			snprintf(why, whylen, "timed out after %s", timeout_text);
		else
			snprintf(why, whylen, "poll: %s", strerror(-w));
		return 1;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
		soerr = errno;
	if (soerr) {
		snprintf(why, whylen, "connect: %s", strerror(soerr));
		return 1;
	}
	return 0;
}

/* Sends all of req before the deadline: 0, or 1 with why filled. */
static int pr_send(int fd, const char *req, size_t n, int64_t deadline, const char *timeout_text,
		   char *why, size_t whylen)
{
	size_t sent = 0;
	int w;

	while (sent < n) {
		ssize_t k = send(fd, req + sent, n - sent, MSG_NOSIGNAL);
		if (k > 0) {
			sent += (size_t)k;
			continue;
		}
		if (k < 0 && errno != EAGAIN && errno != EINTR) {
			snprintf(why, whylen, "send: %s", strerror(errno));
			return 1;
		}
		if ((w = pr_wait(fd, POLLOUT, deadline)) <= 0) {
			snprintf(why, whylen, w == 0 ? "timed out after %s" : "poll: %s",
				 w == 0 ? timeout_text : strerror(-w));
			return 1;
		}
	}
	return 0;
}

/* One request, one answer, all before the deadline. Returns 0 for a whole
 * 200, else 1 with why filled. */
static int pr_exchange(const struct pr_target *t, int64_t deadline, const char *timeout_text,
		       char *why, size_t whylen)
{
	char req[1024];
	int fd, verdict;
	int n =
	    snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n",
		     t->path, t->authority);

	if (n < 0 || (size_t)n >= sizeof(req)) {
		snprintf(why, whylen, "URL too long");
		return 1;
	}
	fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(why, whylen, "socket: %s", strerror(errno));
		return 1;
	}
	verdict = pr_connect(fd, t, deadline, timeout_text, why, whylen) ||
		  pr_send(fd, req, (size_t)n, deadline, timeout_text, why, whylen) ||
		  pr_read_answer(fd, deadline, timeout_text, why, whylen);
	close(fd);
	return verdict;
}

/* Matches "NAME VALUE" and "NAME=VALUE"; *val is NULL when VALUE is missing. */
static int pr_take_opt(int argc, char **argv, int *i, const char *name, const char **val)
{
	size_t n = strlen(name);
	const char *a = argv[*i];

	if (strncmp(a, name, n) != 0 || (a[n] != '\0' && a[n] != '='))
		return 0;
	if (a[n] == '=')
		*val = a + n + 1;
	else
		*val = *i + 1 < argc ? argv[++*i] : NULL;
	return 1;
}

static void pr_log(pi_health_log_cb *log, void *data, const char *msg, const char *k1,
		   const char *v1, const char *k2, const char *v2)
{
	const char *fields[] = {k1, v1, k2, v2, NULL};

	if (log)
		log(data, PI_HEALTH_LOG_ERROR, msg, fields);
}

/* Reads the options into *url and *timeout. Returns 0, or the argument
 * index that is not understood (or lacks its value). */
static int pr_options(int argc, char **argv, const char **url, const char **timeout)
{
	const char *val, *config_file;

	for (int i = 1; i < argc; i++) {
		const char **dst = NULL;
		int at = i;
		if (pr_take_opt(argc, argv, &i, "--url", &val))
			dst = url;
		else if (pr_take_opt(argc, argv, &i, "--timeout", &val))
			dst = timeout;
		else if (pr_take_opt(argc, argv, &i, "-c", &val) ||
			 pr_take_opt(argc, argv, &i, "--config", &val))
			dst = &config_file;
		if (!dst || !val)
			return at;
		*dst = val;
	}
	return 0;
}

int pi_health_probe_main(int argc, char **argv, const char *default_url, pi_health_log_cb *log,
			 void *log_data)
{
	const char *url = default_url, *timeout = NULL;
	uint64_t timeout_ms = PI_HEALTH_PROBE_TIMEOUT_MS;
	char why[512], timeout_text[32];
	struct pr_target t;
	int bad = pr_options(argc, argv, &url, &timeout);

	if (bad) {
		pr_log(log, log_data,
		       "usage: peerprep-init health [-c FILE] [--url URL] [--timeout SECONDS]",
		       "argument", argv[bad], NULL, NULL);
		return 1;
	}
	if (timeout && (pi_health_parse_duration(timeout, &timeout_ms) < 0 || timeout_ms == 0)) {
		pr_log(log, log_data, "health: bad --timeout", "value", timeout, NULL, NULL);
		return 1;
	}
	if (!url || pr_parse_url(url, &t) < 0) {
		pr_log(log, log_data, "health check failed", "url", url ? url : "", "error",
		       "bad URL, want http://HOST[:PORT]/PATH with an IP address");
		return 1;
	}
	snprintf(timeout_text, sizeof(timeout_text), "%gs", (double)timeout_ms / 1000.0);
	if (pr_exchange(&t, pr_now_ms() + (int64_t)timeout_ms, timeout_text, why, sizeof(why)) == 0)
		return 0;
	pr_log(log, log_data, "health check failed", "url", url, "error", why);
	return 1;
}
