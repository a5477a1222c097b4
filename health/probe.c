#include "health/probe.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "health/server.h"
#include "init/config.h"
#include "init/log.h"

#define DEFAULT_TIMEOUT_MS 5000

int pi_health_url(const char *listen, const char *path, char *out, size_t outlen)
{
	struct sockaddr_storage ss;
	char host[INET6_ADDRSTRLEN];
	unsigned port;
	int n;

	if (!path || path[0] != '/' || pi_health_parse_addr(listen, &ss) < 0)
		return -EINVAL;
	if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		if (IN6_IS_ADDR_UNSPECIFIED(&a->sin6_addr))
			a->sin6_addr = in6addr_loopback;
		inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
		port = ntohs(a->sin6_port);
		n = snprintf(out, outlen, "http://[%s]:%u%s", host, port, path);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		if (a->sin_addr.s_addr == htonl(INADDR_ANY))
			a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
		port = ntohs(a->sin_port);
		n = snprintf(out, outlen, "http://%s:%u%s", host, port, path);
	}
	return n < 0 || (size_t)n >= outlen ? -ENAMETOOLONG : 0;
}

struct target {
	struct sockaddr_storage addr;
	char authority[128]; /* for the Host header */
	const char *path;
};

/* http://HOST[:PORT][/PATH] with an IP literal or localhost for HOST. */
static int parse_url(const char *url, struct target *t)
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

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for ev on fd until the deadline: 1 ready, 0 timed out, -errno. */
static int wait_fd(int fd, short ev, int64_t deadline)
{
	for (;;) {
		struct pollfd p = {.fd = fd, .events = ev};
		int64_t left = deadline - now_ms();
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
static void json_string(const char *body, size_t len, const char *key, char *out, size_t cap)
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

/* The verdict of a response: 0 on 200, else 1 with why filled. */
static int judge(const char *resp, size_t len, char *why, size_t whylen)
{
	char status[32], output[256];
	int code = 0;

	if (len < 12 || memcmp(resp, "HTTP/1.", 7) != 0 || resp[8] != ' ') {
		snprintf(why, whylen, "not an HTTP response");
		return 1;
	}
	for (int i = 9; i < 12; i++) {
		if (resp[i] < '0' || resp[i] > '9') {
			snprintf(why, whylen, "not an HTTP response");
			return 1;
		}
		code = code * 10 + resp[i] - '0';
	}
	if (code == 200)
		return 0;
	const char *body = memmem(resp, len, "\r\n\r\n", 4);
	size_t blen = body ? len - (size_t)(body + 4 - resp) : 0;
	json_string(body ? body + 4 : resp, blen, "status", status, sizeof(status));
	json_string(body ? body + 4 : resp, blen, "output", output, sizeof(output));
	if (status[0] && output[0])
		snprintf(why, whylen, "HTTP %d: %s (%s)", code, status, output);
	else if (status[0])
		snprintf(why, whylen, "HTTP %d: %s", code, status);
	else
		snprintf(why, whylen, "HTTP %d", code);
	return 1;
}

/* One request, one response, all before the deadline. Returns 0 for 200,
 * else 1 with why filled. */
static int exchange(const struct target *t, int64_t deadline, const char *timeout_text, char *why,
		    size_t whylen)
{
	char req[1024], resp[4096];
	size_t got = 0, sent = 0;
	int fd, r, verdict = 1;

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
	socklen_t alen = t->addr.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
						       : sizeof(struct sockaddr_in);
	if (connect(fd, (const struct sockaddr *)&t->addr, alen) < 0 && errno != EINPROGRESS &&
	    errno != EINTR) {
		snprintf(why, whylen, "connect: %s", strerror(errno));
		goto out;
	}
	if ((r = wait_fd(fd, POLLOUT, deadline)) <= 0)
		goto wait_failed;
	int soerr = 0;
	socklen_t sl = sizeof(soerr);
	getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
	if (soerr) {
		snprintf(why, whylen, "connect: %s", strerror(soerr));
		goto out;
	}
	while (sent < (size_t)n) {
		ssize_t w = send(fd, req + sent, (size_t)n - sent, MSG_NOSIGNAL);
		if (w > 0) {
			sent += (size_t)w;
		} else if (w < 0 && errno != EAGAIN && errno != EINTR) {
			snprintf(why, whylen, "send: %s", strerror(errno));
			goto out;
		} else if ((r = wait_fd(fd, POLLOUT, deadline)) <= 0) {
			goto wait_failed;
		}
	}
	/* A 200 is known from the status line; for anything else read on, to
	 * quote the report's status, until the server closes or the buffer is full. */
	for (;;) {
		int line = memmem(resp, got, "\r\n", 2) != NULL;
		if (line && got >= 12 && memcmp(resp + 9, "200", 3) == 0)
			break;
		if (got == sizeof(resp))
			break;
		ssize_t k = recv(fd, resp + got, sizeof(resp) - got, 0);
		if (k > 0) {
			got += (size_t)k;
		} else if (k == 0) {
			break;
		} else if (errno != EAGAIN && errno != EINTR) {
			snprintf(why, whylen, "receive: %s", strerror(errno));
			goto out;
		} else if ((r = wait_fd(fd, POLLIN, deadline)) <= 0) {
			if (r == 0 && line)
				break; /* judge what arrived */
			goto wait_failed;
		}
	}
	if (got == 0) {
		snprintf(why, whylen, "connection closed without a response");
		goto out;
	}
	verdict = judge(resp, got, why, whylen);
	goto out;

wait_failed:
	if (r == 0)
		snprintf(why, whylen, "timed out after %s", timeout_text);
	else
		snprintf(why, whylen, "poll: %s", strerror(-r));
out:
	close(fd);
	return verdict;
}

/* Matches "NAME VALUE" and "NAME=VALUE"; *val is NULL when VALUE is missing. */
static int take_opt(int argc, char **argv, int *i, const char *name, const char **val)
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

int pi_health_probe_main(int argc, char **argv, const char *default_url)
{
	const char *url = default_url, *timeout = NULL, *val;
	uint64_t timeout_ms = DEFAULT_TIMEOUT_MS;
	char why[512], timeout_text[32];
	struct target t;

	for (int i = 1; i < argc; i++) {
		const char **dst = NULL, *config_file;
		if (take_opt(argc, argv, &i, "--url", &val))
			dst = &url;
		else if (take_opt(argc, argv, &i, "--timeout", &val))
			dst = &timeout;
		else if (take_opt(argc, argv, &i, "-c", &val) ||
			 take_opt(argc, argv, &i, "--config", &val))
			dst = &config_file;
		if (!dst || !val) {
			PI_LOG(PI_ERROR,
			       "usage: peerprep-init health [-c FILE] [--url URL] "
			       "[--timeout SECONDS]",
			       PI_STR("argument", argv[i < argc ? i : argc - 1]));
			return 2;
		}
		*dst = val;
	}
	if (timeout && pi_config_duration(timeout, &timeout_ms) < 0) {
		PI_LOG(PI_ERROR, "health: bad --timeout", PI_STR("value", timeout));
		return 2;
	}
	if (!url || parse_url(url, &t) < 0) {
		PI_LOG(PI_ERROR, "health check failed", PI_STR("url", url ? url : ""),
		       PI_STR("error", "bad URL, want http://HOST[:PORT]/PATH with an IP address"));
		return 1;
	}
	snprintf(timeout_text, sizeof(timeout_text), "%gs", (double)timeout_ms / 1000.0);
	if (exchange(&t, now_ms() + (int64_t)timeout_ms, timeout_text, why, sizeof(why)) == 0)
		return 0;
	PI_LOG(PI_ERROR, "health check failed", PI_STR("url", url), PI_STR("error", why));
	return 1;
}
