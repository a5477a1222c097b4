#include <string.h>

#include "health/server_impl.h"

/* The fixed answers, in the order of s->fixed. */
enum { FX_LIVE_PASS, FX_LIVE_FAIL, FX_NOT_FOUND, FX_METHOD, FX_MALFORMED, FX_TOO_LARGE };

static const struct {
	int status;
	const char *type, *extra, *body;
} route_fixed_specs[] = {
    [FX_LIVE_PASS] = {200, "application/health+json", "", "{\"status\":\"pass\"}\n"},
    [FX_LIVE_FAIL] = {503, "application/health+json", "", "{\"status\":\"fail\"}\n"},
    [FX_NOT_FOUND] = {404, "text/plain; charset=utf-8", "", "not found\n"},
    [FX_METHOD] = {405, "text/plain; charset=utf-8", "Allow: GET, HEAD\r\n",
		   "method not allowed\n"},
    [FX_MALFORMED] = {400, "text/plain; charset=utf-8", "", "malformed request\n"},
    [FX_TOO_LARGE] = {431, "text/plain; charset=utf-8", "", "request head too large\n"},
};

_Static_assert(sizeof(route_fixed_specs) / sizeof(route_fixed_specs[0]) ==
		   sizeof(((struct pi_health_server *)0)->fixed) /
		       sizeof(((struct pi_health_server *)0)->fixed[0]),
	       "one slot per fixed answer");

void pi_health_fixed_init(struct pi_health_server *s)
{
	for (size_t i = 0; i < sizeof(route_fixed_specs) / sizeof(route_fixed_specs[0]); i++) {
		struct pi_health_fixed *f = &s->fixed[i];
		/* Every head is far below sizeof(f->head). */
		int n = pi_health_format_head(f->head, sizeof(f->head), route_fixed_specs[i].status,
					      route_fixed_specs[i].type, route_fixed_specs[i].extra,
					      strlen(route_fixed_specs[i].body));
		f->head_len = n < 0 ? 0 : (size_t)n;
		f->body = route_fixed_specs[i].body;
	}
}

static void route_fixed(const struct pi_health_server *s, int i, struct pi_health_answer *a)
{
	a->head = s->fixed[i].head;
	a->head_len = s->fixed[i].head_len;
	a->body = s->fixed[i].body;
	a->body_len = strlen(a->body);
	a->keep_alive = NULL;
}

static int route_span_is(struct pi_http_span sp, const char *s)
{
	return sp.len == strlen(s) && memcmp(sp.p, s, sp.len) == 0;
}

enum pi_health_route pi_health_route(const struct pi_health_server *s,
				     const struct pi_http_request *req)
{
	struct pi_http_span p = pi_http_target_path(req->target);
	int health = route_span_is(p, s->path);

	if (!health && !route_span_is(p, s->live))
		return PI_ROUTE_NOT_FOUND;
	if (!route_span_is(req->method, "GET") && !route_span_is(req->method, "HEAD"))
		return PI_ROUTE_METHOD;
	return health ? PI_ROUTE_HEALTH : PI_ROUTE_LIVE;
}

void pi_health_fixed_answer(const struct pi_health_server *s, enum pi_health_route rt,
			    struct pi_health_answer *a)
{
	switch (rt) {
	case PI_ROUTE_LIVE:
		route_fixed(s, s->view->child_pid ? FX_LIVE_PASS : FX_LIVE_FAIL, a);
		return;
	case PI_ROUTE_METHOD:
		route_fixed(s, FX_METHOD, a);
		return;
	default:
		route_fixed(s, FX_NOT_FOUND, a);
		return;
	}
}

void pi_health_error_answer(const struct pi_health_server *s, int status,
			    struct pi_health_answer *a)
{
	route_fixed(s, status == 431 ? FX_TOO_LARGE : FX_MALFORMED, a);
}
