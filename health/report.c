#include "health/report.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

enum { RPT_PASS, RPT_WARN, RPT_FAIL };

static const char *const rpt_level_names[] = {"pass", "warn", "fail"};

/* A growing output buffer. After a failed allocation every further put is
 * dropped and `failed` is set: the caller discards the whole text. */
struct rpt_buf {
	char *p;
	size_t cap, len;
	int failed;
};

static int rpt_grow(struct rpt_buf *b, size_t need)
{
	size_t cap = b->cap ? b->cap : 2048;
	char *p;

	while (cap - b->len < need) {
		if (cap > ((size_t)-1) / 2)
			return -ENOMEM;
		cap *= 2;
	}
	if (!(p = realloc(b->p, cap)))
		return -ENOMEM;
	b->p = p;
	b->cap = cap;
	return 0;
}

static void rpt_put(struct rpt_buf *b, const char *s, size_t n)
{
	if (b->failed)
		return;
	if (n > b->cap - b->len && rpt_grow(b, n) < 0) {
		b->failed = 1;
		return;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

static void rpt_puts(struct rpt_buf *b, const char *s)
{
	rpt_put(b, s, strlen(s));
}

/* String contents: quote, backslash, control bytes and every byte above
 * 0x7E are escaped, so the body is ASCII whatever the strings hold. */
static void rpt_escape(struct rpt_buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t run = 0;

	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch >= 0x20 && ch <= 0x7e && ch != '"' && ch != '\\')
			continue;
		rpt_put(b, s + run, i - run);
		run = i + 1;
		if (ch == '"' || ch == '\\') {
			char e[2] = {'\\', (char)ch};
			rpt_put(b, e, 2);
		} else {
			char e[6] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15]};
			rpt_put(b, e, 6);
		}
	}
	rpt_put(b, s + run, n - run);
}

/* A quoted string from a field of cap bytes that need not end in NUL. */
static void rpt_field(struct rpt_buf *b, const char *s, size_t cap)
{
	rpt_put(b, "\"", 1);
	rpt_escape(b, s, strnlen(s, cap));
	rpt_put(b, "\"", 1);
}

static void rpt_time(struct rpt_buf *b, time_t t)
{
	struct tm tm;
	char ts[32];

	if (t == 0 || !gmtime_r(&t, &tm) || !strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm))
		return;
	rpt_puts(b, ",\"time\":\"");
	rpt_puts(b, ts);
	rpt_puts(b, "\"");
}

static const char *rpt_probe_error(int probe_result)
{
	return probe_result == UV_ETIMEDOUT ? "timed out after 1s" : uv_strerror(probe_result);
}

/* The upstream entries, none when the view has no array. */
static size_t rpt_n_upstreams(const struct pi_health_view *v)
{
	return v->upstreams ? v->n_upstreams : 0;
}

static int rpt_same_var(const struct pi_health_upstream *a, const struct pi_health_upstream *b)
{
	return strncmp(a->var, b->var, sizeof(a->var)) == 0;
}

/* Whether an entry before i has entry i's variable (and, with
 * unresolved set, does not resolve). Two templates may give one variable
 * different defaults: one variable can name several hosts, shown as one
 * check whose array has an entry per host. */
static int rpt_var_before(const struct pi_health_view *v, size_t i, int unresolved)
{
	for (size_t j = 0; j < i; j++)
		if ((!unresolved || !v->upstreams[j].resolved) &&
		    rpt_same_var(&v->upstreams[j], &v->upstreams[i]))
			return 1;
	return 0;
}

/* One reason for the top-level "output", "; "-separated. */
static void rpt_reason(struct rpt_buf *b, int *n, const char *a, const char *name, size_t cap,
		       const char *z)
{
	if ((*n)++)
		rpt_puts(b, "; ");
	rpt_puts(b, a);
	if (name)
		rpt_escape(b, name, strnlen(name, cap));
	rpt_puts(b, z);
}

/* The overall level, the worst of the checks; with b set, appends the
 * reasons (escaped, unquoted). */
static int rpt_assess(const struct pi_health_report *r, int probe, struct rpt_buf *b)
{
	const struct pi_health_view *v = r->view;
	int level = RPT_PASS, n = 0;
	struct rpt_buf none = {.failed = 1};

	if (!b)
		b = &none;
	if (v->stopping) {
		level = RPT_FAIL;
		rpt_reason(b, &n, "stopping", NULL, 0, "");
	}
	if (v->child_pid == 0) {
		level = RPT_FAIL;
		rpt_reason(b, &n, "nginx is not running", NULL, 0, "");
	}
	if (r->probe_name[0] && probe != 0) {
		level = RPT_FAIL;
		rpt_reason(b, &n, "nginx:listen ", NULL, 0, rpt_probe_error(probe));
	}
	for (size_t i = 0; i < rpt_n_upstreams(v); i++) {
		const struct pi_health_upstream *u = &v->upstreams[i];
		if (u->resolved)
			continue;
		level = level < RPT_WARN ? RPT_WARN : level;
		if (rpt_var_before(v, i, 1))
			continue; /* named once */
		rpt_reason(b, &n, "", u->var, sizeof(u->var), " does not resolve");
	}
	if (!v->reload_ok) {
		level = level < RPT_WARN ? RPT_WARN : level;
		rpt_reason(b, &n, "config reload rejected", NULL, 0, "");
	}
	return level;
}

/* `"NAME":[` with NAME = prefix + name (name escaped). */
static void rpt_key(struct rpt_buf *b, const char *prefix, const char *name, size_t cap)
{
	rpt_puts(b, "\"");
	rpt_puts(b, prefix);
	rpt_escape(b, name, strnlen(name, cap));
	rpt_puts(b, "\":[");
}

/* `{"status":"LEVEL"`: an entry of a check's array. */
static void rpt_entry_open(struct rpt_buf *b, int level)
{
	rpt_puts(b, "{\"status\":\"");
	rpt_puts(b, rpt_level_names[level]);
	rpt_puts(b, "\"");
}

/* `"NAME":[{"status":"LEVEL"`: a check with one entry. */
static void rpt_check_open(struct rpt_buf *b, const char *prefix, const char *name, size_t cap,
			   int level)
{
	rpt_key(b, prefix, name, cap);
	rpt_entry_open(b, level);
}

static void rpt_output(struct rpt_buf *b, const char *text, size_t cap)
{
	rpt_puts(b, ",\"output\":");
	rpt_field(b, text, cap);
}

static void rpt_process(struct rpt_buf *b, const struct pi_health_view *v)
{
	char pid[40];

	rpt_check_open(b, "nginx:process", "", 0, v->child_pid ? RPT_PASS : RPT_FAIL);
	if (v->child_pid) {
		snprintf(pid, sizeof(pid), ",\"observedValue\":%ld", (long)v->child_pid);
		rpt_puts(b, pid);
	} else {
		rpt_output(b, "not running", 12);
	}
	rpt_puts(b, "}]");
}

static void rpt_listen(struct rpt_buf *b, const struct pi_health_report *r, int probe)
{
	rpt_puts(b, ",");
	rpt_check_open(b, "nginx:listen", "", 0, probe ? RPT_FAIL : RPT_PASS);
	rpt_puts(b, ",\"componentId\":");
	rpt_field(b, r->probe_name, (size_t)-1);
	if (probe)
		rpt_output(b, rpt_probe_error(probe), (size_t)-1);
	rpt_puts(b, "}]");
}

static void rpt_addrs(struct rpt_buf *b, const struct pi_health_upstream *u)
{
	size_t n = u->n_addrs < PI_HEALTH_MAX_ADDRS ? u->n_addrs : PI_HEALTH_MAX_ADDRS;

	rpt_puts(b, ",\"observedValue\":[");
	for (size_t k = 0; k < n; k++) {
		if (k)
			rpt_puts(b, ",");
		rpt_field(b, u->addrs[k], sizeof(u->addrs[k]));
	}
	rpt_puts(b, "]");
}

static void rpt_upstream(struct rpt_buf *b, const struct pi_health_upstream *u)
{
	rpt_entry_open(b, u->resolved ? RPT_PASS : RPT_WARN);
	rpt_puts(b, ",\"componentId\":");
	rpt_field(b, u->host, sizeof(u->host));
	rpt_addrs(b, u);
	rpt_time(b, u->checked);
	if (!u->resolved && u->error[0])
		rpt_output(b, u->error, sizeof(u->error));
	else if (!u->resolved)
		rpt_output(b, "not resolved yet", 17);
	else if (u->note[0]) /* more addresses than shown, a set not loaded yet */
		rpt_output(b, u->note, sizeof(u->note));
	rpt_puts(b, "}");
}

/* A check per variable, in the order the variables first appear, with an
 * entry per host it names. */
static void rpt_upstreams(struct rpt_buf *b, const struct pi_health_view *v)
{
	size_t n = rpt_n_upstreams(v);

	for (size_t i = 0; i < n; i++) {
		if (rpt_var_before(v, i, 0))
			continue;
		rpt_puts(b, ",");
		rpt_key(b, "upstream:", v->upstreams[i].var, sizeof(v->upstreams[i].var));
		for (size_t k = i; k < n; k++) {
			if (k > i && !rpt_same_var(&v->upstreams[k], &v->upstreams[i]))
				continue;
			if (k > i)
				rpt_puts(b, ",");
			rpt_upstream(b, &v->upstreams[k]);
		}
		rpt_puts(b, "]");
	}
}

/* The init says which step failed and that the log has the reason; when
 * it says nothing, the answer still does. */
static void rpt_reload(struct rpt_buf *b, const struct pi_health_view *v)
{
	rpt_puts(b, ",");
	rpt_check_open(b, "config:reload", "", 0, v->reload_ok ? RPT_PASS : RPT_WARN);
	rpt_time(b, v->reload_time);
	if (!v->reload_ok && v->reload_error[0])
		rpt_output(b, v->reload_error, sizeof(v->reload_error));
	else if (!v->reload_ok)
		rpt_output(b, "reload rejected; the log has the reason", 40);
	rpt_puts(b, "}]");
}

/* Renders the body into b; returns the HTTP status. */
static int rpt_body(const struct pi_health_report *r, int probe, struct rpt_buf *b)
{
	const struct pi_health_view *v = r->view;
	int level = rpt_assess(r, probe, NULL);

	rpt_puts(b, "{\"status\":\"");
	rpt_puts(b, rpt_level_names[level]);
	rpt_puts(b, "\",\"version\":");
	rpt_field(b, r->version, (size_t)-1);
	if (level != RPT_PASS) {
		rpt_puts(b, ",\"output\":\"");
		rpt_assess(r, probe, b);
		rpt_puts(b, "\"");
	}
	rpt_puts(b, ",\"checks\":{");
	rpt_process(b, v);
	if (r->probe_name[0])
		rpt_listen(b, r, probe);
	rpt_upstreams(b, v);
	rpt_reload(b, v);
	rpt_puts(b, "}}\n");
	return level == RPT_FAIL ? 503 : 200;
}

static const char *rpt_status_text(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 431:
		return "Request Header Fields Too Large";
	case 503:
		return "Service Unavailable";
	default:
		return "Internal Server Error";
	}
}

int pi_health_format_head(char *p, size_t room, int status, const char *type, const char *extra,
			  size_t body_len)
{
	int n = snprintf(p, room,
			 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
			 "Cache-Control: no-store\r\n%sConnection: ",
			 status, rpt_status_text(status), type, body_len, extra);

	return n < 0 || (size_t)n >= room ? -ENOBUFS : n;
}

void pi_health_report_init(struct pi_health_report *r, const struct pi_health_view *view,
			   const char *version, const char *probe_name)
{
	memset(r, 0, sizeof(*r));
	r->view = view;
	r->version = version;
	r->probe_name = probe_name;
}

/* Whether two text fields of cap bytes read the same: eight bytes a step
 * up to the word holding a's NUL, since this runs on every request and
 * musl's strncmp goes byte by byte. A difference after the NUL within that
 * word only costs a render. */
static int rpt_same_text(const char *a, const char *b, size_t cap)
{
	const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;

	for (size_t i = 0; i + 8 <= cap; i += 8) {
		uint64_t x, y;
		memcpy(&x, a + i, 8);
		memcpy(&y, b + i, 8);
		if (x != y)
			return 0;
		if ((x - ones) & ~x & highs)
			return 1; /* a zero byte: the text ends in this word */
	}
	return 1;
}

/* Every text field of the view is a whole number of words long. */
#define RPT_SAME_TEXT(a, b, field)                                                                 \
	((void)sizeof(char[sizeof((a)->field) % 8 == 0 ? 1 : -1]),                                 \
	 rpt_same_text((a)->field, (b)->field, sizeof((a)->field)))

/* Whether an upstream entry shows the same as when it was rendered: every
 * field the report reads, and nothing else, since this runs on every
 * request (a whole-entry compare of some 1.3 KB each cost 1.7 us per
 * request with six hosts). A field added to the entry and rendered must be
 * added here. */
static int rpt_same_upstream(const struct pi_health_upstream *a, const struct pi_health_upstream *b)
{
	if (a->resolved != b->resolved || a->checked != b->checked || a->n_addrs != b->n_addrs ||
	    !RPT_SAME_TEXT(a, b, var) || !RPT_SAME_TEXT(a, b, host) || !RPT_SAME_TEXT(a, b, error) ||
	    !RPT_SAME_TEXT(a, b, note))
		return 0;
	for (size_t k = 0; k < a->n_addrs && k < PI_HEALTH_MAX_ADDRS; k++)
		if (!RPT_SAME_TEXT(a, b, addrs[k]))
			return 0;
	return 1;
}

/* The same for the view's own fields (a field rendered must be here). */
static int rpt_same_view(const struct pi_health_view *a, const struct pi_health_view *b)
{
	return a->child_pid == b->child_pid && a->stopping == b->stopping &&
	       a->reload_ok == b->reload_ok && a->reload_time == b->reload_time &&
	       a->n_upstreams == b->n_upstreams && a->upstreams == b->upstreams &&
	       RPT_SAME_TEXT(a, b, reload_error);
}

int pi_health_report_fresh(const struct pi_health_report *r, int probe_result)
{
	const struct pi_health_view *v = r->view;

	if (!r->valid || (r->probe_name[0] && probe_result != r->seen_probe) ||
	    !rpt_same_view(&r->seen, v))
		return 0;
	for (size_t i = 0; i < rpt_n_upstreams(v); i++)
		if (!rpt_same_upstream(&r->seen_ups[i], &v->upstreams[i]))
			return 0;
	return 1;
}

/* Notes the inputs of the answer just rendered. Without memory for the
 * upstreams the answer stays stale, and the next request renders afresh. */
static void rpt_remember(struct pi_health_report *r, int probe_result)
{
	const struct pi_health_view *v = r->view;
	size_t n = rpt_n_upstreams(v);

	if (n > r->seen_cap) {
		struct pi_health_upstream *u = realloc(r->seen_ups, n * sizeof(*u));
		if (!u)
			return;
		r->seen_ups = u;
		r->seen_cap = n;
	}
	r->seen = *v;
	if (n)
		memcpy(r->seen_ups, v->upstreams, n * sizeof(*v->upstreams));
	r->seen_probe = probe_result;
	r->valid = 1;
}

/* Room in front of the body for the head and PI_HEALTH_KEEP_ALIVE. */
#define RPT_FRONT (PI_HEALTH_REPORT_HEAD_MAX + sizeof(PI_HEALTH_KEEP_ALIVE) - 1)

int pi_health_report_render(struct pi_health_report *r, int probe_result)
{
	static const char oom[] =
	    "{\"status\":\"fail\",\"output\":\"health report: out of memory\"}\n";
	struct rpt_buf b = {r->body_buf, r->body_cap, 0, 0};
	int probe = r->probe_name[0] ? probe_result : 0;
	size_t ka = sizeof(PI_HEALTH_KEEP_ALIVE) - 1;
	int status;
	char *whole;

	if (b.cap < RPT_FRONT && rpt_grow(&b, RPT_FRONT) < 0)
		b.failed = 1;
	b.len = RPT_FRONT;
	status = rpt_body(r, probe, &b);
	r->valid = 0;
	r->body_buf = b.p;
	r->body_cap = b.cap;
	r->keep_alive = NULL;
	if (b.failed) {
		r->body = oom;
		r->body_len = sizeof(oom) - 1;
		r->head_len = (size_t)pi_health_format_head(
		    r->head, sizeof(r->head), 500, "application/health+json", "", r->body_len);
		return -ENOMEM;
	}
	r->body = b.p + RPT_FRONT;
	r->body_len = b.len - RPT_FRONT;
	/* No status and length make a head over PI_HEALTH_REPORT_HEAD_MAX. */
	r->head_len = (size_t)pi_health_format_head(r->head, sizeof(r->head), status,
						    "application/health+json", "", r->body_len);
	if (r->head_len < sizeof(r->head)) { /* always, as said; else three pieces */
		whole = b.p + RPT_FRONT - ka - r->head_len;
		memcpy(whole, r->head, r->head_len);
		memcpy(whole + r->head_len, PI_HEALTH_KEEP_ALIVE, ka);
		r->keep_alive = whole;
		r->keep_alive_len = r->head_len + ka + r->body_len;
	}
	rpt_remember(r, probe_result);
	return 0;
}

void pi_health_report_free(struct pi_health_report *r)
{
	free(r->body_buf);
	free(r->seen_ups);
	r->body_buf = NULL;
	r->seen_ups = NULL;
	r->body_cap = r->seen_cap = 0;
	r->valid = 0;
}
