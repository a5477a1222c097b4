/* The environment a template set renders from: an index of the variables
 * (copied, so the set does not borrow the caller's envp), the host
 * patterns, NGINX_LOCAL_RESOLVERS from resolv.conf, and the host list. */
#include <arpa/inet.h>
#include <errno.h>
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "envsubst/tpl_internal.h"
#include "envsubst/value.h"
#include "envsubst/wide.h"

#define RESOLVERS	"NGINX_LOCAL_RESOLVERS"
#define RESOLV_CONF_MAX (64u << 10)

struct env_var {
	char *str; /* "NAME=VALUE", owned */
	size_t nlen, vlen, order;
	unsigned kind; /* PI_RENDER_* bits */
};

struct pi_tpl_env {
	struct env_var *vars; /* sorted by name, unique */
	size_t nvars;
	char *patbuf; /* the host patterns, split in place */
	char **pats;
	size_t npats;
	struct pi_buf resolvers;
	int have_resolvers;
	char *resolv_conf;	/* read when a template first refers to RESOLVERS */
	struct pi_templates *t; /* where default hosts go while rendering */
	pi_templates_builtin_fn builtin;
	void *builtin_ctx;
};

static int env_var_cmp(const void *a, const void *b)
{
	const struct env_var *x = a, *y = b;
	size_t n = x->nlen < y->nlen ? x->nlen : y->nlen;
	int c = memcmp(x->str, y->str, n);

	if (c)
		return c;
	if (x->nlen != y->nlen)
		return x->nlen < y->nlen ? -1 : 1;
	return x->order < y->order ? -1 : x->order > y->order;
}

/* Names are unique after indexing, so a search by name alone suffices. */
static const struct env_var *env_find(const struct pi_tpl_env *e, const char *name, size_t len)
{
	size_t lo = 0, hi = e->nvars;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct env_var *v = &e->vars[mid];
		int c = memcmp(name, v->str, len < v->nlen ? len : v->nlen);

		if (c == 0 && len != v->nlen)
			c = len < v->nlen ? -1 : 1;
		if (c == 0)
			return v;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

static int env_span_is(const char *name, size_t len, const char *s)
{
	return strlen(s) == len && memcmp(name, s, len) == 0;
}

static int env_is_config(const char *name, size_t len)
{
	static const char pre[] = "NGINX_ENVSUBST_";

	return (len >= sizeof(pre) - 1 && memcmp(name, pre, sizeof(pre) - 1) == 0) ||
	       env_span_is(name, len, "NGINX_ENTRYPOINT_QUIET_LOGS");
}

/* The kind of a variable by its name alone (the patterns are fnmatch(3)
 * patterns, so the name is copied to be NUL-terminated). */
static unsigned env_kind_of(const struct pi_tpl_env *e, const char *name, size_t len)
{
	char buf[256], *s = buf;
	unsigned kind = 0;

	if (env_is_config(name, len))
		return PI_RENDER_CONFIG;
	if (env_span_is(name, len, RESOLVERS))
		return PI_RENDER_WORDS;
	if (len >= sizeof(buf)) {
		s = malloc(len + 1);
		/* Without memory to ask, the stricter check is the safe one. */
		if (!s)
			return PI_RENDER_HOST;
	}
	memcpy(s, name, len);
	s[len] = '\0';
	for (size_t i = 0; i < e->npats && !kind; i++)
		if (fnmatch(e->pats[i], s, 0) == 0)
			kind = PI_RENDER_HOST;
	if (s != buf)
		free(s);
	return kind;
}

/* Copies the variables of envp that start with prefix (no other can be
 * substituted) or name a host, keeping the first of duplicate names, sorted by name. */
static int env_index(struct pi_tpl_env *e, char *const *envp, const char *prefix)
{
	size_t n = 0, i, j, plen = strlen(prefix);

	while (envp[n])
		n++;
	e->vars = calloc(n ? n : 1, sizeof(*e->vars));
	if (!e->vars)
		return -ENOMEM;
	for (i = 0, j = 0; i < n; i++) {
		const char *eq = strchr(envp[i], '=');

		if (!eq || eq == envp[i])
			continue;
		/* A host variable is checked even when no template can use it. */
		if (strncmp(envp[i], prefix, plen) != 0 &&
		    env_kind_of(e, envp[i], (size_t)(eq - envp[i])) != PI_RENDER_HOST)
			continue;
		e->vars[j] =
		    (struct env_var){strdup(envp[i]), (size_t)(eq - envp[i]), strlen(eq + 1), i, 0};
		if (!e->vars[j].str) {
			e->nvars = j; /* those copied are freed with e */
			return -ENOMEM;
		}
		j++;
	}
	e->nvars = j;
	qsort(e->vars, j, sizeof(*e->vars), env_var_cmp);
	for (i = 0, n = 0; i < j; i++) {
		struct env_var *v = &e->vars[i];

		if (n && v->nlen == e->vars[n - 1].nlen &&
		    memcmp(v->str, e->vars[n - 1].str, v->nlen) == 0) {
			free(v->str);
			continue;
		}
		e->vars[n++] = *v;
	}
	e->nvars = n;
	for (i = 0; i < n; i++)
		e->vars[i].kind = env_kind_of(e, e->vars[i].str, e->vars[i].nlen);
	return 0;
}

/* Splits the space-separated host patterns into NUL-terminated strings,
 * once, so they can go to fnmatch(3) as they are. */
static int env_patterns(struct pi_tpl_env *e, const char *patterns)
{
	char *p, *save = NULL, *tok;
	size_t cap = 0;

	if (!patterns)
		return 0;
	e->patbuf = strdup(patterns);
	if (!e->patbuf)
		return -ENOMEM;
	for (p = e->patbuf; (tok = strtok_r(p, " \t", &save)) != NULL; p = NULL) {
		if (pi_tpl_grow(&e->pats, &cap, e->npats, sizeof(*e->pats)) < 0)
			return -ENOMEM;
		e->pats[e->npats++] = tok;
	}
	return 0;
}

/* Reads a small whole file into b. Returns 0 or a negative errno. */
static int env_slurp(const char *path, size_t max, struct pi_buf *b)
{
	struct stat st;
	int fd = pi_tpl_open_regular(path, max, &st), rc = 0;

	if (fd < 0)
		return fd;
	for (;;) {
		ssize_t r;

		if ((rc = pi_buf_reserve(b, 4096)) < 0)
			break;
		r = pi_tpl_read(fd, b->data + b->len, b->cap - b->len);
		if (r <= 0) {
			rc = (int)r;
			break;
		}
		b->len += (size_t)r;
		if (b->len > max) {
			rc = -EFBIG;
			break;
		}
	}
	close(fd);
	return rc;
}

/* One resolv.conf line: appends its nameserver address, if any, ready for
 * nginx's resolver directive (IPv6 in brackets, zone index dropped). */
static int env_nameserver(struct pi_tpl_env *e, const char *line, size_t n)
{
	char addr[INET6_ADDRSTRLEN + 2];
	unsigned char bin[sizeof(struct in6_addr)];
	size_t a, alen;
	int rc;

	if (n < 11 || memcmp(line, "nameserver", 10) != 0 || (line[10] != ' ' && line[10] != '\t'))
		return 0;
	for (a = 10; a < n && (line[a] == ' ' || line[a] == '\t'); a++)
		;
	for (alen = 0; a + alen < n && !strchr(" \t\r%#;", line[a + alen]); alen++)
		;
	if (alen == 0 || alen >= INET6_ADDRSTRLEN)
		return 0;
	memcpy(addr + 1, line + a, alen);
	addr[alen + 1] = '\0';
	if (inet_pton(AF_INET, addr + 1, bin) == 1) {
		memmove(addr, addr + 1, alen + 1);
	} else if (inet_pton(AF_INET6, addr + 1, bin) == 1) {
		addr[0] = '[';
		addr[alen + 1] = ']';
		alen += 2;
	} else {
		return 0;
	}
	if ((e->resolvers.len && (rc = pi_buf_append(&e->resolvers, " ", 1)) < 0) ||
	    (rc = pi_buf_append(&e->resolvers, addr, alen)) < 0)
		return rc;
	e->have_resolvers = 1;
	return 0;
}

static int env_resolvers(struct pi_tpl_env *e, const char *path)
{
	struct pi_buf f = {0};
	size_t i = 0;
	int rc = env_slurp(path, RESOLV_CONF_MAX, &f);

	/* No resolv.conf is normal in minimal images: the variable is then
	 * unset, and a template that needs it says so. */
	while (rc == 0 && i < f.len) {
		const char *line = f.data + i, *nl = memchr(line, '\n', f.len - i);
		size_t n = nl ? (size_t)(nl - line) : f.len - i;

		rc = env_nameserver(e, line, n);
		i += n + 1;
	}
	free(f.data);
	return rc == -ENOMEM ? rc : 0;
}

int pi_tpl_env_new(const struct pi_templates_opts *o, struct pi_tpl_env **out)
{
	struct pi_tpl_env *e = calloc(1, sizeof(*e));
	int rc;

	if (!e)
		return -ENOMEM;
	e->builtin = o->builtin;
	e->builtin_ctx = o->builtin_ctx;
	if ((rc = env_patterns(e, o->hosts)) < 0 || (rc = env_index(e, o->envp, o->prefix)) < 0 ||
	    !(e->resolv_conf = strdup(o->resolv_conf))) {
		rc = rc < 0 ? rc : -ENOMEM;
		pi_tpl_env_free(e);
		return rc;
	}
	*out = e;
	return 0;
}

void pi_tpl_env_free(struct pi_tpl_env *e)
{
	if (!e)
		return;
	for (size_t i = 0; i < e->nvars; i++)
		free(e->vars[i].str);
	free(e->vars);
	free(e->pats);
	free(e->patbuf);
	free(e->resolvers.data);
	free(e->resolv_conf);
	free(e);
}

static unsigned env_classify(void *ctx, const char *name, size_t len)
{
	const struct pi_tpl_env *e = ctx;
	const struct env_var *v = env_find(e, name, len);

	return v ? v->kind : env_kind_of(e, name, len);
}

static const char *env_lookup(void *ctx, const char *name, size_t len, size_t *vlen)
{
	struct pi_tpl_env *e = ctx;
	const struct env_var *v = env_find(e, name, len);

	if (v) {
		*vlen = v->vlen;
		return v->str + v->nlen + 1;
	}
	if (!env_span_is(name, len, RESOLVERS))
		return e->builtin ? e->builtin(e->builtin_ctx, name, len, vlen) : NULL;
	/* resolv.conf is read once per set, when a template first needs it
	 * (out of memory, the variable counts as unset). */
	if (e->resolv_conf) {
		if (env_resolvers(e, e->resolv_conf) < 0)
			e->have_resolvers = 0; /* never half a list */
		free(e->resolv_conf);
		e->resolv_conf = NULL;
	}
	*vlen = e->resolvers.len;
	return e->have_resolvers ? e->resolvers.data : NULL;
}

int pi_tpl_add_host(struct pi_templates *t, const char *var, size_t nlen, const char *value,
		    size_t vlen)
{
	struct pi_tpl_host h = {NULL, NULL, nlen, vlen};

	for (size_t i = 0; i < t->nhosts; i++) {
		const struct pi_tpl_host *o = &t->hosts[i];

		if (o->nlen == nlen && o->vlen == vlen && pi_wide_equal(o->var, var, nlen) &&
		    pi_wide_equal(o->value, value, vlen))
			return 0;
	}
	if (pi_tpl_grow(&t->hosts, &t->hcap, t->nhosts, sizeof(*t->hosts)) < 0)
		return -ENOMEM;
	h.var = strndup(var, nlen);
	h.value = strndup(value, vlen);
	if (!h.var || !h.value) {
		free(h.var);
		free(h.value);
		return -ENOMEM;
	}
	t->hosts[t->nhosts++] = h;
	return 0;
}

static int env_on_host(void *ctx, const char *name, size_t nlen, const char *value, size_t vlen)
{
	struct pi_tpl_env *e = ctx;

	return pi_tpl_add_host(e->t, name, nlen, value, vlen);
}

void pi_tpl_env_opts(struct pi_tpl_env *e, struct pi_templates *t, const char *prefix,
		     struct pi_render_opts *ro)
{
	e->t = t;
	*ro = (struct pi_render_opts){prefix, env_lookup, env_classify, env_on_host, e, 0};
}

int pi_tpl_env_hosts(struct pi_tpl_env *e, struct pi_templates *t, struct pi_templates_error *err)
{
	for (size_t i = 0; i < e->nvars; i++) {
		const struct env_var *v = &e->vars[i];
		size_t bad;

		if (v->kind != PI_RENDER_HOST)
			continue;
		if (v->vlen == 0) {
			pi_tpl_seterr(err, "%.*s is empty but names an upstream host", (int)v->nlen,
				      v->str);
			return -EINVAL;
		}
		if (pi_value_check_host(v->str + v->nlen + 1, v->vlen, &bad) < 0) {
			pi_tpl_seterr(
			    err,
			    "%.*s is not a valid host name or IP address (position %zu of "
			    "its value)",
			    (int)v->nlen, v->str, bad + 1);
			return -EINVAL;
		}
		if (pi_tpl_add_host(t, v->str, v->nlen, v->str + v->nlen + 1, v->vlen) < 0) {
			pi_tpl_seterr(err, "out of memory");
			return -ENOMEM;
		}
	}
	return 0;
}
