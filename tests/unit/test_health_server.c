/* The health listener (health/server.h) and the `health` client
 * (health/probe.h), end to end over loopback. One thread: the clients use
 * non-blocking sockets and the test pumps the libuv loop while it waits, so
 * the view can be changed between requests without locks. The `health`
 * client blocks, so it runs in a forked child while the parent pumps. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "health/addr.h"
#include "health/duration.h"
#include "health/http.h"
#include "health/probe.h"
#include "health/server.h"
#include "health/server_impl.h"
#include "tap.h"

static uv_loop_t loop;
static struct pi_health_upstream ups[3];
static struct pi_health_view view;

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Runs the loop for about ms milliseconds. */
static void pump(long ms)
{
	long end = now_ms() + ms;
	do {
		uv_run(&loop, UV_RUN_NOWAIT);
		poll(NULL, 0, 2);
	} while (now_ms() < end);
}

static void reset_view(void)
{
	memset(ups, 0, sizeof(ups));
	pi_health_upstream_name(&ups[0], "NGINX_USER_SERVICE_HOST",
				"user-service.peerprep-prod.internal");
	ups[0].resolved = 1;
	ups[0].checked = 1795629600; /* 2026-11-25T18:00:00Z */
	ups[0].n_addrs = 1;
	strcpy(ups[0].addrs[0], "10.0.1.23");
	memset(&view, 0, sizeof(view));
	view.child_pid = 1234;
	view.reload_ok = 1;
	view.reload_time = 1795629600;
	view.n_upstreams = 1;
	view.upstreams = ups;
}

/* The server's last log event, as "LEVEL MSG key=value...". */
static char last_event[512];

static void log_event(void *data, int level, const char *msg, const char *const *f)
{
	int n = snprintf(last_event, sizeof(last_event), "%d %s", level, msg);

	(void)data;
	for (; f && f[0] && f[1] && n > 0 && (size_t)n < sizeof(last_event); f += 2)
		n += snprintf(last_event + n, sizeof(last_event) - (size_t)n, " %s=%s", f[0], f[1]);
}

static struct pi_health_server *start(const char *probe, int *port)
{
	struct pi_health_server_opts o = {.listen = "127.0.0.1:0",
					  .path = "/health",
					  .probe = probe,
					  .version = "1.2.0",
					  .view = &view,
					  .log = log_event};
	struct pi_health_server *s = NULL;
	char err[256] = "";
	int r = pi_health_server_start(&loop, &o, &s, err, sizeof(err));

	if (!ok(r == 0, "server starts (probe '%s')", probe))
		diag("error %d: %s", r, err);
	*port = s ? pi_health_server_port(s) : -1;
	return s;
}

static void stop(struct pi_health_server *s)
{
	pi_health_server_stop(s);
	uv_run(&loop, UV_RUN_DEFAULT);
}

/* Connects with a 2 s deadline, so a full backlog fails the test instead
 * of hanging it for the kernel's SYN retries. */
static int connect_to(int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	struct pollfd p = {.fd = fd, .events = POLLOUT};
	int err = 0;
	socklen_t len = sizeof(err);

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		err = errno;
		if (err == EINPROGRESS) {
			err = ETIMEDOUT;
			if (poll(&p, 1, 2000) == 1 &&
			    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
				err = errno;
		}
	}
	if (err) {
		diag("connect: %s", strerror(err));
		close(fd);
		return -1;
	}
	return fd;
}

static void send_str(int fd, const char *s)
{
	size_t n = strlen(s), off = 0;
	while (off < n) {
		ssize_t w = send(fd, s + off, n - off, MSG_NOSIGNAL);
		if (w > 0)
			off += (size_t)w;
		else if (w < 0 && errno == EAGAIN)
			pump(5);
		else
			return;
	}
}

struct reply {
	char buf[131072];
	size_t len;
	int closed; /* the server closed (EOF or reset) */
};

/* Reads, pumping the loop, until `done` says enough or the peer closes or
 * ms pass. */
static void read_until(int fd, struct reply *r, long ms, int (*done)(const struct reply *))
{
	long end = now_ms() + ms;

	while (!r->closed && !(done && done(r)) && now_ms() < end) {
		uv_run(&loop, UV_RUN_NOWAIT);
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, 2) <= 0)
			continue;
		ssize_t k = recv(fd, r->buf + r->len, sizeof(r->buf) - 1 - r->len, 0);
		if (k > 0)
			r->len += (size_t)k;
		else if (k == 0 || errno != EAGAIN)
			r->closed = 1;
		r->buf[r->len] = '\0';
	}
}

/* One parsed response from the front of a byte string. */
struct resp {
	int status;
	long content_length;
	char head[2048];
	char body[65536];
	size_t size; /* bytes it took; 0 when incomplete */
};

static int parse_resp(const char *buf, size_t len, int head_only, struct resp *out)
{
	const char *end = memmem(buf, len, "\r\n\r\n", 4);
	memset(out, 0, sizeof(*out));
	if (!end || len < 12)
		return 0;
	size_t hlen = (size_t)(end - buf) + 4;
	if (hlen >= sizeof(out->head))
		return 0;
	memcpy(out->head, buf, hlen);
	out->status = atoi(buf + 9);
	const char *cl = strstr(out->head, "Content-Length: ");
	out->content_length = cl ? atol(cl + 16) : -1;
	size_t blen = head_only || out->content_length < 0 ? 0 : (size_t)out->content_length;
	if (len - hlen < blen || blen >= sizeof(out->body))
		return 0;
	memcpy(out->body, buf + hlen, blen);
	out->size = hlen + blen;
	return 1;
}

static int one_response(const struct reply *r)
{
	struct resp x;
	return parse_resp(r->buf, r->len, 0, &x);
}

/* Sends a request on a new connection and reads until the server closes
 * or one response is complete. */
static struct resp request(int port, const char *req, int *closed)
{
	static struct reply r;
	struct resp x;
	int fd = connect_to(port);

	memset(&r, 0, sizeof(r));
	memset(&x, 0, sizeof(x));
	if (fd < 0)
		return x;
	send_str(fd, req);
	read_until(fd, &r, 3000, one_response);
	parse_resp(r.buf, r.len, strncmp(req, "HEAD", 4) == 0, &x);
	if (closed) {
		read_until(fd, &r, 3000, NULL);
		*closed = r.closed;
	}
	close(fd);
	return x;
}

static struct resp get(int port, const char *path)
{
	char req[512];
	snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", path);
	return request(port, req, NULL);
}

static int has(const char *hay, const char *needle)
{
	return strstr(hay, needle) != NULL;
}

static void test_report(int port)
{
	struct resp x;

	reset_view();
	x = get(port, "/health");
	is_int(x.status, 200, "pass: 200");
	is_str(x.body,
	       "{\"status\":\"pass\",\"version\":\"1.2.0\",\"checks\":{"
	       "\"nginx:process\":[{\"status\":\"pass\",\"observedValue\":1234}],"
	       "\"upstream:NGINX_USER_SERVICE_HOST\":[{\"status\":\"pass\",\"componentId\":"
	       "\"user-service.peerprep-prod.internal\",\"observedValue\":[\"10.0.1.23\"],"
	       "\"time\":\"2026-11-25T18:00:00Z\"}],"
	       "\"config:reload\":[{\"status\":\"pass\",\"time\":\"2026-11-25T18:00:00Z\"}]}}\n",
	       "pass: the whole report");
	ok(has(x.head, "Content-Type: application/health+json\r\n"), "health+json content type");
	ok(has(x.head, "Cache-Control: no-store\r\n"), "Cache-Control: no-store");
	is_int(x.content_length, (long)strlen(x.body), "Content-Length is the body's length");

	ups[0].resolved = 0;
	strcpy(ups[0].error, "Name or service not known");
	x = get(port, "/health");
	is_int(x.status, 200, "unresolved upstream: 200");
	ok(has(x.body, "{\"status\":\"warn\",\"version\":\"1.2.0\",\"output\":"
		       "\"NGINX_USER_SERVICE_HOST does not resolve\""),
	   "warn with the reason on top");
	ok(has(x.body, "\"upstream:NGINX_USER_SERVICE_HOST\":[{\"status\":\"warn\"") &&
	       has(x.body, "\"output\":\"Name or service not known\""),
	   "the upstream check is warn with the resolver's error");

	reset_view();
	view.reload_ok = 0;
	strcpy(view.reload_error, "default.conf.template:3:7: NGINX_X is not set");
	x = get(port, "/health");
	is_int(x.status, 200, "rejected reload: 200");
	ok(has(x.body, "\"status\":\"warn\"") &&
	       has(x.body, "\"config:reload\":[{\"status\":\"warn\",\"time\":"
			   "\"2026-11-25T18:00:00Z\",\"output\":\"default.conf.template:3:7: "
			   "NGINX_X is not set\"}]"),
	   "config:reload warn with the reason");

	reset_view();
	view.child_pid = 0;
	x = get(port, "/health");
	is_int(x.status, 503, "no child: 503");
	ok(has(x.body, "\"status\":\"fail\"") && has(x.body, "nginx is not running") &&
	       has(x.body, "\"nginx:process\":[{\"status\":\"fail\""),
	   "no child: fail, nginx:process fail");
	x = get(port, "/health/live");
	is_int(x.status, 503, "no child: live 503");
	is_str(x.body, "{\"status\":\"fail\"}\n", "no child: live says fail");

	reset_view();
	view.stopping = 1;
	x = get(port, "/health");
	is_int(x.status, 503, "stopping: 503");
	ok(has(x.body, "\"output\":\"stopping\""), "stopping: said why");
	x = get(port, "/health/live");
	is_int(x.status, 200, "stopping with a child: live 200");
	is_str(x.body, "{\"status\":\"pass\"}\n", "live says pass");

	/* One variable naming two hosts (two templates, two defaults): one
	 * check, an entry per host, in order; a second variable between
	 * them keeps its own check; an unresolved one is named once. */
	reset_view();
	pi_health_upstream_name(&ups[1], "NGINX_CHAT_HOST", "chat");
	ups[1].resolved = 1;
	pi_health_upstream_name(&ups[2], "NGINX_USER_SERVICE_HOST", "user-fallback");
	view.n_upstreams = 3;
	x = get(port, "/health");
	is_str(x.body,
	       "{\"status\":\"warn\",\"version\":\"1.2.0\",\"output\":"
	       "\"NGINX_USER_SERVICE_HOST does not resolve\",\"checks\":{"
	       "\"nginx:process\":[{\"status\":\"pass\",\"observedValue\":1234}],"
	       "\"upstream:NGINX_USER_SERVICE_HOST\":[{\"status\":\"pass\",\"componentId\":"
	       "\"user-service.peerprep-prod.internal\",\"observedValue\":[\"10.0.1.23\"],"
	       "\"time\":\"2026-11-25T18:00:00Z\"},{\"status\":\"warn\",\"componentId\":"
	       "\"user-fallback\",\"observedValue\":[],\"output\":\"not resolved yet\"}],"
	       "\"upstream:NGINX_CHAT_HOST\":[{\"status\":\"pass\",\"componentId\":\"chat\","
	       "\"observedValue\":[]}],"
	       "\"config:reload\":[{\"status\":\"pass\",\"time\":\"2026-11-25T18:00:00Z\"}]}}\n",
	       "one variable, two hosts: one check with two entries");
	ups[0].resolved = 0;
	x = get(port, "/health");
	ok(has(x.body, "\"output\":\"NGINX_USER_SERVICE_HOST does not resolve\",\"checks\""),
	   "... neither resolving: the variable is named once");

	/* Strings are escaped, whatever they hold. */
	reset_view();
	pi_health_upstream_name(&ups[0], "NGINX_\"Q", "a\"b\\c\n\x01\xff");
	x = get(port, "/health");
	ok(has(x.body, "\"upstream:NGINX_\\\"Q\":[{") &&
	       has(x.body, "\"componentId\":\"a\\\"b\\\\c\\u000a\\u0001\\u00ff\""),
	   "names and hosts are JSON-escaped");
	reset_view();
}

static struct resp ask(int fd, const char *req);

/* A keep-alive /health answer is written in one piece: it must hold the
 * same head and body as the answer that closes, but for "Connection". */
static void same_as_close(int port, const char *what)
{
	static struct resp k, c;
	int fd = connect_to(port);
	char *conn, name[64];

	k = ask(fd, "GET /health HTTP/1.1\r\nHost: t\r\n\r\n");
	close(fd);
	c = get(port, "/health");
	ok(k.size > 0 && has(k.head, "\r\nConnection: keep-alive\r\n\r\n") &&
	       has(c.head, "\r\nConnection: close\r\n\r\n"),
	   "%s: keep-alive and close answers", what);
	if ((conn = strstr(k.head, "Connection: ")))
		strcpy(conn, "Connection: close\r\n\r\n");
	snprintf(name, sizeof(name), "%s: one head but for Connection", what);
	is_str(k.head, c.head, name);
	ok(k.content_length == c.content_length && strcmp(k.body, c.body) == 0,
	   "%s: one body (%ld bytes)", what, k.content_length);
}

/* Every valid state fits: 24 hosts with the longest names, each with 16
 * of the longest IPv6 addresses, all resolved, and a rejected reload whose
 * reason fills its field without a NUL. */
static void test_large_report(int port)
{
	enum { N_UPS = 24 };
	static struct pi_health_upstream many[N_UPS];
	static const char addr[] = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255";
	char var[PI_HEALTH_NAME_MAX], host[254];
	struct resp x;
	int n_addrs = 0;

	reset_view();
	memset(var, 'V', sizeof(var) - 1);
	var[sizeof(var) - 1] = '\0';
	memset(host, 'h', sizeof(host) - 1);
	host[sizeof(host) - 1] = '\0';
	for (int i = 0; i < N_UPS; i++) {
		many[i] = ups[0];
		var[0] = (char)('A' + i);
		pi_health_upstream_name(&many[i], var, host);
		many[i].n_addrs = PI_HEALTH_MAX_ADDRS;
		for (int k = 0; k < PI_HEALTH_MAX_ADDRS; k++)
			memcpy(many[i].addrs[k], addr, sizeof(addr));
	}
	view.upstreams = many;
	view.n_upstreams = N_UPS;
	x = get(port, "/health");
	is_int(x.status, 200, "24 hosts x 16 longest IPv6 addresses: 200");
	ok(x.content_length == (long)strlen(x.body), "the whole body arrives (%ld bytes)",
	   x.content_length);
	for (const char *p = x.body; (p = strstr(p, addr)); p++)
		n_addrs++;
	is_int(n_addrs, N_UPS * PI_HEALTH_MAX_ADDRS, "every address is in it");
	ok(x.content_length > 16384 && has(x.body, "\"config:reload\":[{\"status\":\"pass\"") &&
	       strcmp(x.body + strlen(x.body) - 3, "}}\n") == 0,
	   "a complete document, larger than the old 15.5 KiB limit");
	same_as_close(port, "large report");

	view.reload_ok = 0;
	memset(view.reload_error, 'r', sizeof(view.reload_error));
	x = get(port, "/health");
	char want[sizeof(view.reload_error) + 16];
	snprintf(want, sizeof(want), "\"output\":\"%.*s\"}]}}", (int)sizeof(view.reload_error),
		 view.reload_error);
	ok(x.status == 200 && has(x.body, want),
	   "a reload reason without a NUL is cut at its field, and still fits");
	view.reload_error[0] = '\0';
	x = get(port, "/health");
	ok(has(x.body, "\"output\":\"reload rejected; the log has the reason\"}]"),
	   "a rejected reload without a reason still says where to look");
	reset_view();
}

/* A closing answer with nothing left unread: the server closes at once
 * (nginx does the same) instead of half-closing and draining. Bytes sent
 * after the answer then meet a closed socket (a reset); after a request
 * with a body the server still drains, so they are swallowed. */
static void test_close_at_once(int port)
{
	static struct reply r;
	int fd = connect_to(port);

	memset(&r, 0, sizeof(r));
	send_str(fd, "GET /health/live HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
	read_until(fd, &r, 3000, NULL);
	ok(r.closed && has(r.buf, "HTTP/1.1 200 OK\r\n"), "close: answered, then the end");
	/* The server lingered 2 s before: well within 1 s, a send meets the
	 * reset of a closed socket now. */
	long end = now_ms() + 1000;
	ssize_t k;
	while ((k = send(fd, "x", 1, MSG_NOSIGNAL)) == 1 && now_ms() < end)
		pump(10);
	ok(k < 0 && (errno == EPIPE || errno == ECONNRESET),
	   "close: the socket was closed at once (a later send fails)");
	close(fd);

	fd = connect_to(port);
	memset(&r, 0, sizeof(r));
	send_str(fd, "POST /health HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbody");
	read_until(fd, &r, 3000, NULL);
	pump(20);
	end = now_ms() + 300;
	while ((k = send(fd, "x", 1, MSG_NOSIGNAL)) == 1 && now_ms() < end)
		pump(10);
	ok(r.closed && k == 1, "close: after a body the server drains (sends still go in)");
	close(fd);
}

/* The input starts small: a head longer than that is still read whole,
 * and the connection goes on. */
static void test_long_head(int port)
{
	static char req[4096 + 128];
	int fd = connect_to(port);
	int n = snprintf(req, sizeof(req), "GET /health/live HTTP/1.1\r\nHost: t\r\nX-Pad: ");
	struct resp x;

	memset(req + n, 'p', 4096);
	memcpy(req + n + 4096, "\r\n\r\n", 5);
	x = ask(fd, req);
	is_int(x.status, 200, "a 4 KiB head is answered");
	x = ask(fd, "GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n");
	is_int(x.status, 200, "and the connection answers the next one");
	close(fd);
	ok(sizeof(struct pi_health_conn) + 16 <= 1024,
	   "an idle connection costs %zu bytes (with malloc's 16: at most 1 KiB)",
	   sizeof(struct pi_health_conn));
}

/* Sends req on the open connection fd and reads one response to it. */
static struct resp ask(int fd, const char *req)
{
	static struct reply r;
	struct resp x;

	memset(&r, 0, sizeof(r));
	send_str(fd, req);
	read_until(fd, &r, 3000, one_response);
	parse_resp(r.buf, r.len, strncmp(req, "HEAD", 4) == 0, &x);
	return x;
}

/* The server renders /health once and reuses it: every change of the view
 * or of the probe must show on the very next request, here on one
 * keep-alive connection, with nothing else happening in between. */
static void test_cached_report(int port)
{
	static const char get_req[] = "GET /health HTTP/1.1\r\nHost: t\r\n\r\n";
	int fd = connect_to(port);
	struct resp x;

	reset_view();
	x = ask(fd, get_req);
	is_int(x.status, 200, "cache: pass first");
	x = ask(fd, get_req);
	ok(x.status == 200 && has(x.body, "\"status\":\"pass\""), "cache: pass again");
	ok(has(x.head, "Connection: keep-alive\r\n"), "cache: keep-alive answered as such");
	same_as_close(port, "pass report");

	view.stopping = 1;
	x = ask(fd, get_req);
	ok(x.status == 503 && has(x.body, "\"output\":\"stopping\""),
	   "cache: stopping shows on the next request");
	view.stopping = 0;
	x = ask(fd, get_req);
	is_int(x.status, 200, "cache: and its end on the one after");

	view.reload_ok = 0;
	strcpy(view.reload_error, "first reason");
	x = ask(fd, get_req);
	ok(x.status == 200 && has(x.body, "{\"status\":\"warn\"") &&
	       has(x.body, "\"output\":\"first reason\""),
	   "cache: a rejected reload shows as warn at once");
	strcpy(view.reload_error, "second reason");
	x = ask(fd, get_req);
	ok(has(x.body, "\"output\":\"second reason\""), "cache: a new reason in place shows");
	view.reload_ok = 1;
	view.reload_time += 1;
	x = ask(fd, get_req);
	ok(has(x.body, "{\"status\":\"pass\"") &&
	       has(x.body, "\"config:reload\":[{\"status\":\"pass\",\"time\":"
			   "\"2026-11-25T18:00:01Z\"}]"),
	   "cache: a good reload one second later shows its time");

	strcpy(ups[0].addrs[0], "10.0.1.24");
	x = ask(fd, get_req);
	ok(has(x.body, "\"observedValue\":[\"10.0.1.24\"]"),
	   "cache: an address rewritten in place shows");
	strcpy(ups[0].addrs[1], "10.0.1.25");
	ups[0].n_addrs = 2;
	x = ask(fd, get_req);
	ok(has(x.body, "\"observedValue\":[\"10.0.1.24\",\"10.0.1.25\"]"),
	   "cache: an added address shows");
	ups[0].resolved = 0;
	strcpy(ups[0].error, "SERVFAIL");
	x = ask(fd, get_req);
	ok(has(x.body, "{\"status\":\"warn\"") && has(x.body, "\"output\":\"SERVFAIL\""),
	   "cache: an upstream turning unresolved shows");
	ups[0].checked += 30;
	x = ask(fd, get_req);
	ok(has(x.body, "\"time\":\"2026-11-25T18:00:30Z\""), "cache: a new lookup time shows");
	view.n_upstreams = 0;
	x = ask(fd, get_req);
	ok(x.status == 200 && !has(x.body, "upstream:") && has(x.body, "{\"status\":\"pass\""),
	   "cache: fewer upstreams show");

	reset_view();
	view.child_pid = 0;
	x = ask(fd, "HEAD /health HTTP/1.1\r\nHost: t\r\n\r\n");
	ok(x.status == 503 && x.content_length > 0, "cache: HEAD sees the child gone");
	view.child_pid = 4321;
	x = ask(fd, "GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
	ok(x.status == 200 && has(x.body, "\"observedValue\":4321") &&
	       has(x.head, "Connection: close\r\n") && x.content_length == (long)strlen(x.body),
	   "cache: a new child pid shows, on a closing answer");
	close(fd);
	reset_view();
}

static void test_errors(int port)
{
	struct resp x;
	int closed = 0;

	x = get(port, "/nope");
	is_int(x.status, 404, "other path: 404");
	x = get(port, "/health/");
	is_int(x.status, 404, "trailing slash is another path");
	x = get(port, "/health?verbose=1");
	is_int(x.status, 200, "query string ignored");
	x = request(port, "GET http://h/health HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
		    NULL);
	is_int(x.status, 200, "absolute-form target");

	x = request(port, "DELETE /health HTTP/1.1\r\nHost: t\r\n\r\n", &closed);
	is_int(x.status, 405, "other method: 405");
	ok(has(x.head, "Allow: GET, HEAD\r\n"), "405 names the allowed methods");
	is_int(closed, 0, "405 keeps the connection");

	x = request(port, "POST /health HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
		    &closed);
	is_int(x.status, 405, "POST with a body: 405");
	ok(has(x.head, "Connection: close\r\n"), "a request with a body ends the connection");
	is_int(closed, 1, "and the server closes it");

	x = request(port, "GET /health HTTP/1.1\r\nHost : t\r\n\r\n", &closed);
	is_int(x.status, 400, "malformed: 400");
	is_int(closed, 1, "400 closes");

	static char big[PI_HTTP_HEAD_MAX + 1024];
	int n = snprintf(big, sizeof(big), "GET /health HTTP/1.1\r\nHost: t\r\nX-Pad: ");
	memset(big + n, 'a', sizeof(big) - (size_t)n - 5);
	memcpy(big + sizeof(big) - 5, "\r\n\r\n", 5);
	x = request(port, big, &closed);
	is_int(x.status, 431, "head over 8 KiB: 431");
	is_int(closed, 1, "431 closes");
	ok(has(x.head, "Cache-Control: no-store\r\n") && x.content_length > 0,
	   "error answers carry Content-Length and Cache-Control");
}

static void test_connection_reuse(int port)
{
	static struct reply r;
	struct resp a, b, c, d;
	int fd = connect_to(port);

	memset(&r, 0, sizeof(r));
	send_str(fd, "GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n"
		     "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n"
		     "HEAD /health HTTP/1.1\r\nHost: t\r\n\r\n"
		     "GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
	read_until(fd, &r, 3000, NULL);
	close(fd);
	is_int(r.closed, 1, "pipelined: closed after the last");
	size_t off = 0;
	int parsed = parse_resp(r.buf, r.len, 0, &a) && (off += a.size) &&
		     parse_resp(r.buf + off, r.len - off, 0, &b) && (off += b.size) &&
		     parse_resp(r.buf + off, r.len - off, 1, &c) && (off += c.size) &&
		     parse_resp(r.buf + off, r.len - off, 0, &d) && (off += d.size);
	if (ok(parsed, "pipelined: four responses")) {
		ok(a.status == 200 && b.status == 404 && c.status == 200 && d.status == 200,
		   "pipelined: answered in order (200 404 200 200)");
		is_str(a.body, "{\"status\":\"pass\"}\n", "first is /health/live");
		ok(c.content_length == d.content_length && c.content_length > 0,
		   "HEAD has the GET's Content-Length");
		is_int((long)off, (long)r.len, "HEAD sent no body: nothing after the fourth");
		ok(has(d.body, "\"status\":\"pass\""), "fourth is the report");
	}

	/* HTTP/1.0 keep-alive and HTTP/1.1 sequential reuse on one socket. */
	fd = connect_to(port);
	memset(&r, 0, sizeof(r));
	send_str(fd, "GET /health/live HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
	read_until(fd, &r, 3000, one_response);
	ok(has(r.buf, "Connection: keep-alive\r\n"), "1.0 keep-alive is honoured");
	memset(&r, 0, sizeof(r));
	send_str(fd, "GET /health/live HTTP/1.0\r\n\r\n");
	read_until(fd, &r, 3000, NULL);
	ok(r.closed && has(r.buf, "HTTP/1.1 200 OK\r\n") && has(r.buf, "Connection: close\r\n"),
	   "second request on the 1.0 connection answered, then closed");
	close(fd);

	/* A client that half-closes after its request still gets the answer. */
	fd = connect_to(port);
	memset(&r, 0, sizeof(r));
	send_str(fd, "GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n");
	shutdown(fd, SHUT_WR);
	read_until(fd, &r, 3000, NULL);
	ok(r.closed && has(r.buf, "HTTP/1.1 200 OK\r\n"), "half-closed client answered");
	close(fd);
}

/* Sends what the socket takes of the next requests, alternately /health and
 * /health/live, N in all; *sent counts whole ones, *off a started one. */
static void send_alternating(int fd, int n, int *sent, size_t *off)
{
	static const char *const reqs[2] = {"GET /health HTTP/1.1\r\nHost: t\r\n\r\n",
					    "GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n"};

	while (*sent < n) {
		const char *q = reqs[*sent % 2];
		ssize_t w = send(fd, q + *off, strlen(q) - *off, MSG_NOSIGNAL);
		if (w <= 0)
			return;
		if ((*off += (size_t)w) == strlen(q)) {
			++*sent;
			*off = 0;
		}
	}
}

/* A client that pipelines and reads nothing for half a second, then reads
 * everything: the answers, some 30 MB (twelve upstreams of sixteen
 * addresses make each report some 6 KB), are far more than the loopback
 * socket buffers hold, so the server has to wait for the socket and write
 * the rest later. Every answer must come whole and in order. */
static void test_slow_reader(int port)
{
	enum { N = 10000, N_UPS = 12 };
	static struct pi_health_upstream many[N_UPS];
	static char in[65536];
	size_t in_len = 0, off = 0;
	int fd = connect_to(port), sent = 0, got = 0, in_order = 1;
	long start = now_ms();

	reset_view();
	for (int i = 0; i < N_UPS; i++) {
		many[i] = ups[0];
		many[i].n_addrs = PI_HEALTH_MAX_ADDRS;
		for (int k = 0; k < PI_HEALTH_MAX_ADDRS; k++)
			snprintf(many[i].addrs[k], sizeof(many[i].addrs[k]), "10.0.%d.%d", i, k);
	}
	view.upstreams = many;
	view.n_upstreams = N_UPS;
	while (got < N && now_ms() - start < 15000) {
		struct resp x;
		size_t used = 0;

		send_alternating(fd, N, &sent, &off);
		if (now_ms() - start < 500) {
			pump(1);
			continue;
		}
		uv_run(&loop, UV_RUN_NOWAIT);
		ssize_t k = recv(fd, in + in_len, sizeof(in) - in_len, 0);
		if (k == 0 || (k < 0 && errno != EAGAIN))
			break;
		if (k < 0)
			poll(NULL, 0, 1);
		in_len += k > 0 ? (size_t)k : 0;
		while (parse_resp(in + used, in_len - used, 0, &x)) {
			in_order &= x.status == 200 &&
				    (got % 2 ? strcmp(x.body, "{\"status\":\"pass\"}\n") == 0
					     : has(x.body, "\"checks\""));
			used += x.size;
			got++;
		}
		memmove(in, in + used, in_len - used);
		in_len -= used;
	}
	is_int(got, N, "a late reader gets every pipelined request answered");
	ok(in_order && in_len == 0, "complete answers, in order");
	close(fd);
	reset_view();
}

/* A listening socket nobody accepts from: connects succeed via the backlog. */
static int listener(int *port)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	bind(fd, (struct sockaddr *)&a, sizeof(a));
	listen(fd, 64);
	getsockname(fd, (struct sockaddr *)&a, &len);
	*port = ntohs(a.sin_port);
	return fd;
}

static int drain_accepts(int fd)
{
	int n = 0, c;
	while ((c = accept(fd, NULL, NULL)) >= 0) {
		close(c);
		n++;
	}
	return n;
}

static void test_probe(void)
{
	char probe[64];
	int nginx_port, port, lfd = listener(&nginx_port);
	struct pi_health_server *s;
	struct resp x;

	reset_view();
	snprintf(probe, sizeof(probe), "127.0.0.1:%d", nginx_port);
	s = start(probe, &port);
	x = get(port, "/health");
	is_int(x.status, 200, "probe to a listening port: 200");
	char want[128];
	snprintf(want, sizeof(want),
		 "\"nginx:listen\":[{\"status\":\"pass\",\"componentId\":\"%s\"}]", probe);
	ok(has(x.body, want), "nginx:listen pass with the probe address");
	pump(1100);
	drain_accepts(lfd);

	/* Twenty clients at once: one connect serves them all. */
	int fds[20];
	static struct reply replies[20];
	for (int i = 0; i < 20; i++) {
		fds[i] = connect_to(port);
		send_str(fds[i], "GET /health HTTP/1.0\r\n\r\n");
	}
	int answered = 0;
	for (int i = 0; i < 20; i++) {
		memset(&replies[i], 0, sizeof(replies[i]));
		read_until(fds[i], &replies[i], 3000, NULL);
		answered += has(replies[i].buf, "HTTP/1.1 200 OK\r\n");
		close(fds[i]);
	}
	is_int(answered, 20, "20 concurrent requests answered");
	int connects = drain_accepts(lfd);
	ok(connects >= 1 && connects <= 2, "they caused %d probe connect(s), at most 2", connects);

	/* nginx goes away: within the cache age the report turns fail. */
	close(lfd);
	pump(1100);
	x = get(port, "/health");
	is_int(x.status, 503, "probe refused: 503");
	ok(has(x.body, "\"nginx:listen\":[{\"status\":\"fail\"") &&
	       has(x.body, "connection refused"),
	   "nginx:listen fail says connection refused");
	ok(has(x.body, "\"output\":\"nginx:listen connection refused\""),
	   "the top-level output says why");
	x = get(port, "/health/live");
	is_int(x.status, 200, "live does not depend on the probe");
	stop(s);
}

/* Pumps the loop until the server's clock reaches `at` (its uv_now). */
static void pump_until_loop_time(uint64_t at)
{
	while (uv_now(&loop) < at)
		pump(5);
}

/* Pumps the loop until no probe connect is in flight, for at most 3 s. */
static void pump_probe_idle(const struct pi_health_server *s)
{
	long end = now_ms() + 3000;

	while (s->probe_state != PI_PROBE_IDLE && now_ms() < end)
		pump(5);
}

/* A result over 0.5 s old is renewed by a connect the request does not wait
 * for, so requests keep being answered at once past the first result's 1 s;
 * a result over 1 s old is never used. nginx is a listener with a backlog of
 * one: once that one connection sits unaccepted, connects hang. */
static void test_probe_refresh(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t len = sizeof(a);
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int nginx_port, port, filler;
	struct pi_health_server *s;
	char probe[64];
	struct resp x;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	bind(lfd, (struct sockaddr *)&a, sizeof(a));
	listen(lfd, 0);
	getsockname(lfd, (struct sockaddr *)&a, &len);
	nginx_port = ntohs(a.sin_port);
	reset_view();
	snprintf(probe, sizeof(probe), "127.0.0.1:%d", nginx_port);
	s = start(probe, &port);
	x = get(port, "/health");
	is_int(x.status, 200, "refresh: the first request gets a result");
	pump_probe_idle(s);
	is_int(drain_accepts(lfd), 1, "refresh: from one connect");
	uint64_t first = s->probe_at;

	/* Past 0.5 s: answered from the result, and a connect renews it. */
	pump_until_loop_time(first + 600);
	x = get(port, "/health");
	is_int(x.status, 200, "a request at 0.6 s is answered");
	pump_probe_idle(s);
	is_int(drain_accepts(lfd), 1, "and renews the result with a connect of its own");
	ok(s->probe_at > first, "the result is newer than the first");

	/* nginx now hangs. Past the first result's 1 s the renewed one answers,
	 * without waiting for a connect. */
	filler = connect_to(nginx_port);
	pump_until_loop_time(first + 1000);
	long t0 = now_ms();
	x = get(port, "/health");
	long took = now_ms() - t0;
	is_int(x.status, 200, "a request at 1 s is answered from the renewed result");
	ok(took < 500, "at once (%ld ms), without waiting for a connect", took);

	/* The renewed result turns 1 s old with nginx still hanging: the next
	 * request waits for the connect, which times out. */
	pump_until_loop_time(s->probe_at + 1000);
	x = get(port, "/health");
	is_int(x.status, 503, "a result over 1 s old is not used: 503");
	ok(has(x.body, "\"nginx:listen\":[{\"status\":\"fail\""),
	   "nginx:listen fails once the connect times out");
	stop(s);
	close(filler);
	close(lfd);
}

/* Counts the connections of fds[from..to) the server has closed. */
static int count_closed(const int *fds, int from, int to)
{
	int closed = 0;

	for (int i = from; i < to; i++) {
		char ch;
		errno = 0;
		if (fds[i] >= 0 && (recv(fds[i], &ch, 1, 0) == 0 || errno == ECONNRESET))
			closed++;
	}
	return closed;
}

/* At the limit a new connection cuts the oldest idle one; with none idle
 * it is refused. Each is logged. */
static void test_limits(int port)
{
	enum { N = 300, MAX = PI_HEALTH_MAX_CONNS };
	static int fds[N];
	static struct reply r;
	int answered = 0;
	long end;

	for (int i = 0; i < N; i++) {
		memset(&r, 0, sizeof(r));
		if ((fds[i] = connect_to(port)) < 0)
			continue;
		send_str(fds[i], "GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n");
		read_until(fds[i], &r, 3000, one_response);
		answered += one_response(&r);
	}
	is_int(answered, N, "300 connections, each answered in turn");
	end = now_ms() + 3000;
	while (count_closed(fds, 0, N) < N - MAX && now_ms() < end)
		pump(10);
	pump(100);
	is_int(count_closed(fds, 0, N - MAX), N - MAX,
	       "beyond 256, each new connection closed the oldest idle one");
	is_int(count_closed(fds, N - MAX, N), 0, "the newest 256 are held");
	ok(has(last_event, "closed the oldest idle connection limit=256"), "logged: %s",
	   last_event);
	memset(&r, 0, sizeof(r));
	send_str(fds[N - MAX], "GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n");
	read_until(fds[N - MAX], &r, 3000, one_response);
	ok(has(r.buf, "HTTP/1.1 200 OK\r\n"), "a held connection is still answered");

	/* A request in progress on each: none is idle, a new one is refused. */
	for (int i = N - MAX; i < N; i++)
		send_str(fds[i], "GET /health/live HTTP/1.1\r\n");
	pump(100);
	int extra = connect_to(port);
	memset(&r, 0, sizeof(r));
	read_until(extra, &r, 3000, NULL);
	ok(r.closed, "with none idle, a new connection is closed at once");
	ok(has(last_event, "none idle: refused a connection limit=256"), "logged: %s", last_event);
	is_int(count_closed(fds, N - MAX, N), 0, "busy connections are not cut for it");
	close(extra);
	for (int i = 0; i < N - MAX + 64; i++)
		close(fds[i]);
	pump(100);
	struct resp x = get(port, "/health/live");
	is_int(x.status, 200, "after some leave, a new connection is answered");
	for (int i = N - MAX + 64; i < N; i++)
		close(fds[i]);
	pump(100);
}

/* A client dribbling its first head is cut 2 s after it connected,
 * however often it sends; an idle keep-alive client 10 s after its answer;
 * a client that keeps asking is answered all along. */
static void test_timeouts(int port)
{
	static const char head[] =
	    "GET /health HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa";
	static struct reply slow_r, idle_r, busy_r;
	int slow = connect_to(port), idle = connect_to(port), busy = connect_to(port);
	long t0 = now_ms(), slow_cut = -1, idle_cut = -1, idle_answered = -1;
	int busy_ok = 0, busy_asked = 0;
	size_t sent = 0;

	memset(&slow_r, 0, sizeof(slow_r));
	memset(&idle_r, 0, sizeof(idle_r));
	send_str(idle, "GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n");
	read_until(idle, &idle_r, 3000, one_response);
	if (one_response(&idle_r))
		idle_answered = now_ms() - t0;
	while (now_ms() - t0 < 14000 && (slow_cut < 0 || idle_cut < 0)) {
		if (slow_cut < 0 && sent < sizeof(head) - 1) {
			char ch[2] = {head[sent++], 0};
			send_str(slow, ch);
		}
		read_until(slow, &slow_r, 100, NULL);
		if (slow_r.closed && slow_cut < 0)
			slow_cut = now_ms() - t0;
		read_until(idle, &idle_r, 1, NULL);
		if (idle_r.closed && idle_cut < 0)
			idle_cut = now_ms() - t0;
		memset(&busy_r, 0, sizeof(busy_r));
		send_str(busy, "GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n");
		busy_asked++;
		read_until(busy, &busy_r, 250, one_response);
		busy_ok += has(busy_r.buf, "HTTP/1.1 200 OK\r\n");
	}
	ok(slow_cut >= 1900 && slow_cut <= 3000, "slow first head cut at %ld ms (want ~2000)",
	   slow_cut);
	ok(idle_answered >= 0 && idle_cut - idle_answered >= 9500 &&
	       idle_cut - idle_answered <= 11000,
	   "idle keep-alive client cut %ld ms after its answer (want ~10000)",
	   idle_cut - idle_answered);
	is_int(busy_ok, busy_asked, "a busy client was answered every time meanwhile");
	close(slow);
	close(idle);
	close(busy);
}

/* The log callback of the tests: one line on standard error. */
static void log_line(void *data, int level, const char *msg, const char *const *f)
{
	(void)data;
	fprintf(stderr, "%d %s", level, msg);
	for (; f && f[0] && f[1]; f += 2)
		fprintf(stderr, " %s=%s", f[0], f[1]);
	fputc('\n', stderr);
}

/* Runs pi_health_probe_main in a child; returns its exit status and its
 * standard error. */
static int run_probe(const char *url, const char *timeout, char *err, size_t errlen)
{
	int pipefd[2];
	char *argv[] = {"health", "--url", (char *)url, "--timeout", (char *)timeout, NULL};

	if (pipe(pipefd) < 0)
		return -1;
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0) {
		dup2(pipefd[1], 2);
		close(pipefd[0]);
		int out = open("/dev/null", O_WRONLY);
		dup2(out, 1);
		_exit(pi_health_probe_main(5, argv, "http://127.0.0.1:1/never", log_line, NULL));
	}
	close(pipefd[1]);
	fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
	size_t got = 0;
	int status = 0;
	for (;;) {
		pump(2);
		ssize_t k = read(pipefd[0], err + got, errlen - 1 - got);
		if (k > 0)
			got += (size_t)k;
		if (waitpid(pid, &status, WNOHANG) == pid)
			break;
	}
	ssize_t k;
	while ((k = read(pipefd[0], err + got, errlen - 1 - got)) > 0)
		got += (size_t)k;
	err[got] = '\0';
	close(pipefd[0]);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int count_lines(const char *s)
{
	int n = 0;
	for (; *s; s++)
		n += *s == '\n';
	return n;
}

static void test_health_command(int port)
{
	char url[128], err[2048];
	int code;

	reset_view();
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/health", port);
	code = run_probe(url, "5", err, sizeof(err));
	is_int(code, 0, "health: 200 exits 0");
	is_str(err, "", "health: prints nothing on success");

	view.child_pid = 0;
	code = run_probe(url, "5", err, sizeof(err));
	is_int(code, 1, "health: 503 exits 1");
	ok(count_lines(err) == 1 && has(err, "HTTP 503: fail (nginx is not running)"),
	   "health: one line with the status and why");
	if (count_lines(err) != 1)
		diag("stderr: %s", err);
	reset_view();

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/nope", port);
	code = run_probe(url, "5", err, sizeof(err));
	ok(code == 1 && count_lines(err) == 1 && has(err, "HTTP 404"), "health: 404 exits 1");

	int lport, lfd = listener(&lport);
	close(lfd);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/health", lport);
	code = run_probe(url, "5", err, sizeof(err));
	ok(code == 1 && count_lines(err) == 1 && has(err, "onnection refused"),
	   "health: refused exits 1 with one line");

	/* A server that accepts and never answers. */
	lfd = listener(&lport);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/health", lport);
	long t0 = now_ms();
	code = run_probe(url, "300ms", err, sizeof(err));
	long took = now_ms() - t0;
	ok(code == 1 && count_lines(err) == 1 && has(err, "timed out after 0.3s"),
	   "health: silent server times out, one line");
	ok(took >= 250 && took < 2000, "health: --timeout 300ms took %ld ms", took);
	close(lfd);

	code = run_probe("http://example.com/health", "5", err, sizeof(err));
	ok(code == 1 && count_lines(err) == 1 && has(err, "bad URL"),
	   "health: name in URL refused");
	code = run_probe(url, "soon", err, sizeof(err));
	ok(code == 1 && count_lines(err) == 1, "health: bad --timeout exits 1 with one line");
}

static void test_addresses(void)
{
	static const struct {
		const char *in;
		int ok;
	} cases[] = {
	    {"127.0.0.1:8081", 1},
	    {"0.0.0.0:0", 1},
	    {"[::1]:80", 1},
	    {"[::]:65535", 1},
	    {"localhost:80", 1},
	    {"1.2.3:80", 0},
	    {"127.0.0.1", 0},
	    {"127.0.0.1:", 0},
	    {"127.0.0.1:65536", 0},
	    {"127.0.0.1:-1", 0},
	    {"::1:80", 0},
	    {"[::1]80", 0},
	    {"[::1]", 0},
	    {":80", 0},
	    {"host.example:80", 0},
	    {"127.0.0.1:8x", 0},
	    {"", 0},
	};
	struct sockaddr_storage ss;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		ok((pi_health_parse_addr(cases[i].in, &ss) == 0) == cases[i].ok,
		   "parse_addr '%s' %s", cases[i].in, cases[i].ok ? "accepted" : "rejected");

	uint64_t ms = 7;
	ok(pi_health_parse_duration("1.5", &ms) == 0 && ms == 1500, "duration 1.5 is 1500 ms");
	ok(pi_health_parse_duration(" 250ms ", &ms) == 0 && ms == 250, "duration 250ms");
	ok(pi_health_parse_duration("2m", &ms) == 0 && ms == 120000, "duration 2m");
	ms = 7;
	ok(pi_health_parse_duration("abc", &ms) == -EINVAL && ms == 7, "duration abc rejected");
	ok(pi_health_parse_duration("-1", &ms) == -EINVAL, "duration -1 rejected");
	ok(pi_health_parse_duration("8d", &ms) == -EINVAL, "duration 8d rejected");

	char url[64];
	pi_health_url("0.0.0.0:8081", "/health", url, sizeof(url));
	is_str(url, "http://127.0.0.1:8081/health", "wildcard IPv4 listen probed on loopback");
	pi_health_url("[::]:8081", "/h", url, sizeof(url));
	is_str(url, "http://[::1]:8081/h", "wildcard IPv6 listen probed on [::1]");
	pi_health_url("10.1.2.3:81", "/health", url, sizeof(url));
	is_str(url, "http://10.1.2.3:81/health", "a specific address is kept");
	is_int(pi_health_url("127.0.0.1:1", "/health", url, 10), -ENAMETOOLONG,
	       "pi_health_url: truncation is an error");
	is_int(pi_health_url("nope", "/health", url, sizeof(url)), -EINVAL,
	       "pi_health_url: bad listen");
}

static void test_start_errors(void)
{
	struct pi_health_server_opts o = {
	    .listen = "1.2.3:80", .path = "/health", .probe = "", .version = "1", .view = &view};
	struct pi_health_server *s = NULL;
	char err[256] = "";
	int port, lfd;

	is_int(pi_health_server_start(&loop, &o, &s, err, sizeof(err)), -EINVAL, "bad listen");
	ok(has(err, "1.2.3:80"), "the reason names the address: %s", err);
	o.listen = "127.0.0.1:0";
	o.probe = "nginx:80";
	is_int(pi_health_server_start(&loop, &o, &s, err, sizeof(err)), -EINVAL, "bad probe");
	o.probe = "";
	o.path = "health";
	is_int(pi_health_server_start(&loop, &o, &s, err, sizeof(err)), -EINVAL, "bad path");

	lfd = listener(&port);
	char addr[64];
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
	o.listen = addr;
	o.path = "/health";
	int r = pi_health_server_start(&loop, &o, &s, err, sizeof(err));
	is_int(r, UV_EADDRINUSE, "port in use: EADDRINUSE");
	ok(has(err, "address already in use"), "the reason says so: %s", err);
	ok(s == NULL, "no server handed out");
	close(lfd);
	uv_run(&loop, UV_RUN_DEFAULT);
}

int main(void)
{
	int port;

	signal(SIGPIPE, SIG_IGN);
	uv_loop_init(&loop);
	reset_view();

	test_addresses();
	test_start_errors();
	struct pi_health_server *s = start("", &port);
	if (s) {
		ok(has(last_event, "0 health endpoint listening listen=127.0.0.1:0"),
		   "events go to the log callback: %s", last_event);
		test_report(port);
		test_large_report(port);
		test_close_at_once(port);
		test_long_head(port);
		test_cached_report(port);
		test_errors(port);
		test_connection_reuse(port);
		test_slow_reader(port);
		test_health_command(port);
		test_limits(port);
		test_timeouts(port);

		/* Stop with connections open: everything closes and is freed. */
		int a = connect_to(port), b = connect_to(port);
		send_str(b, "GET /health HTTP/1.1\r\nHost: t\r\nX-Partial: ");
		pump(50);
		stop(s);
		char ch;
		fcntl(a, F_SETFL, 0);
		ok(recv(a, &ch, 1, 0) <= 0, "stop closes open connections");
		close(a);
		close(b);
	}
	test_probe();
	test_probe_refresh();
	is_int(uv_loop_close(&loop), 0, "no handle left on the loop");
	return done_testing();
}
