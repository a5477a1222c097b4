/* Template folders: see templates.h. */
#include "envsubst/templates.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "envsubst/render.h"
#include "envsubst/value.h"

extern char **environ;

#define RESOLVERS	"NGINX_LOCAL_RESOLVERS"
#define RESOLV_CONF_MAX (64u << 10)
#define WALK_DEPTH_MAX	32
/* The limit as the error message spells it. */
#define MAX_SIZE_TEXT "512 MiB"
_Static_assert(PI_TEMPLATES_MAX_SIZE == 512u << 20, "MAX_SIZE_TEXT is out of date");

struct item {
	char *source; /* template path */
	char *output; /* output path */
	struct pi_buf text;
	/* Commit state. */
	int existed;   /* the output existed before the commit */
	int unchanged; /* ... with exactly the new contents: not touched */
	int renamed;   /* the new contents are in place */
	mode_t mode;   /* its mode then */
	struct pi_buf prev;
	char *temp; /* temp file while committing */
};

struct host {
	char *var, *value;
};

struct pi_templates {
	struct item *items;
	size_t n, cap;
	struct host *hosts;
	size_t nhosts, hcap;
	char **made; /* folders commit created, outermost first */
	size_t nmade, madecap;
	int missing, committed;
};

struct var {
	const char *name, *value;
	size_t nlen, vlen, order;
};

/* What the render callbacks see. */
struct ctx {
	struct var *vars; /* the environment, sorted by name */
	size_t nvars;
	char *patbuf; /* the host patterns, split in place */
	char **pats;
	size_t npats;
	struct pi_buf resolvers;
	int have_resolvers;
	struct pi_templates *t;
};

__attribute__((format(printf, 2, 3))) static void seterr(struct pi_templates_error *err,
							 const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
}

/* Grows an array of `size`-byte elements to hold one more. */
static int grow(void *arrp, size_t *cap, size_t n, size_t size)
{
	void **arr = arrp;
	size_t ncap;
	void *p;

	if (n < *cap)
		return 0;
	ncap = *cap ? *cap * 2 : 8;
	if (ncap > SIZE_MAX / size)
		return -ENOMEM;
	p = realloc(*arr, ncap * size);
	if (!p)
		return -ENOMEM;
	*arr = p;
	*cap = ncap;
	return 0;
}

/* "a/b" (just b when a is empty, no doubled '/') in a new string; NULL with errno set
 * (ENAMETOOLONG past PATH_MAX, ENOMEM). */
static char *join(const char *a, const char *b, size_t blen)
{
	size_t alen = strlen(a);
	int slash = alen && a[alen - 1] != '/';
	size_t n = alen + (size_t)slash + blen;
	char *p;

	if (n >= PATH_MAX) {
		errno = ENAMETOOLONG;
		return NULL;
	}
	p = malloc(n + 1);
	if (!p)
		return NULL;
	memcpy(p, a, alen);
	if (slash)
		p[alen] = '/';
	memcpy(p + n - blen, b, blen);
	p[n] = '\0';
	return p;
}

/* ---- the environment ---------------------------------------------------- */

static int var_cmp(const void *a, const void *b)
{
	const struct var *x = a, *y = b;
	size_t n = x->nlen < y->nlen ? x->nlen : y->nlen;
	int c = memcmp(x->name, y->name, n);

	if (c)
		return c;
	if (x->nlen != y->nlen)
		return x->nlen < y->nlen ? -1 : 1;
	return x->order < y->order ? -1 : x->order > y->order;
}

/* Indexes envp by name, keeping the first of duplicate names. */
static int load_env(struct ctx *c, char *const *envp)
{
	size_t n = 0, i, j;

	while (envp[n])
		n++;
	c->vars = calloc(n ? n : 1, sizeof(*c->vars));
	if (!c->vars)
		return -ENOMEM;
	for (i = 0, j = 0; i < n; i++) {
		const char *eq = strchr(envp[i], '=');

		if (!eq || eq == envp[i])
			continue;
		c->vars[j] =
		    (struct var){envp[i], eq + 1, (size_t)(eq - envp[i]), strlen(eq + 1), i};
		j++;
	}
	qsort(c->vars, j, sizeof(*c->vars), var_cmp);
	for (i = 0, n = 0; i < j; i++)
		if (n == 0 || c->vars[i].nlen != c->vars[n - 1].nlen ||
		    memcmp(c->vars[i].name, c->vars[n - 1].name, c->vars[i].nlen) != 0)
			c->vars[n++] = c->vars[i];
	c->nvars = n;
	return 0;
}

/* Names are unique after load_env, so a search by name alone suffices. */
static int name_cmp(const char *name, size_t len, const struct var *v)
{
	int c = memcmp(name, v->name, len < v->nlen ? len : v->nlen);

	if (c)
		return c;
	return len == v->nlen ? 0 : len < v->nlen ? -1 : 1;
}

static const struct var *find_var(const struct ctx *c, const char *name, size_t len)
{
	size_t lo = 0, hi = c->nvars;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int r = name_cmp(name, len, &c->vars[mid]);

		if (r == 0)
			return &c->vars[mid];
		if (r < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

static int span_is(const char *name, size_t len, const char *s)
{
	return strlen(s) == len && memcmp(name, s, len) == 0;
}

static int is_config(const char *name, size_t len)
{
	static const char env[] = "NGINX_ENVSUBST_";

	return (len >= sizeof(env) - 1 && memcmp(name, env, sizeof(env) - 1) == 0) ||
	       span_is(name, len, "NGINX_ENTRYPOINT_QUIET_LOGS");
}

/* Splits the space-separated host patterns into NUL-terminated strings,
 * once, so classify can hand them to fnmatch(3) as they are. */
static int load_patterns(struct ctx *c, const char *patterns)
{
	char *p, *save = NULL, *tok;
	size_t cap = 0;

	if (!patterns)
		return 0;
	c->patbuf = strdup(patterns);
	if (!c->patbuf)
		return -ENOMEM;
	for (p = c->patbuf; (tok = strtok_r(p, " \t", &save)) != NULL; p = NULL) {
		if (grow(&c->pats, &cap, c->npats, sizeof(*c->pats)) < 0)
			return -ENOMEM;
		c->pats[c->npats++] = tok;
	}
	return 0;
}

static int matches_hosts(const struct ctx *c, const char *name)
{
	for (size_t i = 0; i < c->npats; i++)
		if (fnmatch(c->pats[i], name, 0) == 0)
			return 1;
	return 0;
}

static unsigned classify(void *vc, const char *name, size_t len)
{
	struct ctx *c = vc;
	char buf[256], *s = buf;
	unsigned kind = 0;

	if (is_config(name, len))
		return PI_RENDER_CONFIG;
	if (span_is(name, len, RESOLVERS))
		return PI_RENDER_WORDS;
	if (len >= sizeof(buf)) {
		s = malloc(len + 1);
		/* Without memory to ask, the stricter check is the safe one. */
		if (!s)
			return PI_RENDER_HOST;
	}
	memcpy(s, name, len);
	s[len] = '\0';
	if (matches_hosts(c, s))
		kind = PI_RENDER_HOST;
	if (s != buf)
		free(s);
	return kind;
}

static const char *lookup(void *vc, const char *name, size_t len, size_t *vlen)
{
	struct ctx *c = vc;
	const struct var *v = find_var(c, name, len);

	if (v) {
		*vlen = v->vlen;
		return v->value;
	}
	if (c->have_resolvers && span_is(name, len, RESOLVERS)) {
		*vlen = c->resolvers.len;
		return c->resolvers.data;
	}
	return NULL;
}

static int add_host(struct pi_templates *t, const char *var, size_t nlen, const char *value,
		    size_t vlen)
{
	struct host h;

	for (size_t i = 0; i < t->nhosts; i++)
		if (span_is(var, nlen, t->hosts[i].var) && span_is(value, vlen, t->hosts[i].value))
			return 0;
	if (grow(&t->hosts, &t->hcap, t->nhosts, sizeof(*t->hosts)) < 0)
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

static int on_host(void *vc, const char *name, size_t nlen, const char *value, size_t vlen)
{
	struct ctx *c = vc;

	return add_host(c->t, name, nlen, value, vlen);
}

/* Every environment variable naming an upstream host must hold one. */
static int env_hosts(struct ctx *c, struct pi_templates_error *err)
{
	for (size_t i = 0; i < c->nvars; i++) {
		const struct var *v = &c->vars[i];
		size_t bad;

		if (classify(c, v->name, v->nlen) != PI_RENDER_HOST)
			continue;
		if (v->vlen == 0) {
			seterr(err, "%.*s is empty but names an upstream host", (int)v->nlen,
			       v->name);
			return -EINVAL;
		}
		if (pi_value_check_host(v->value, v->vlen, &bad) < 0) {
			seterr(err,
			       "%.*s is not a valid host name or IP address (position %zu of its "
			       "value)",
			       (int)v->nlen, v->name, bad + 1);
			return -EINVAL;
		}
		if (add_host(c->t, v->name, v->nlen, v->value, v->vlen) < 0) {
			seterr(err, "out of memory");
			return -ENOMEM;
		}
	}
	return 0;
}

/* ---- files -------------------------------------------------------------- */

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

/* Maps in the pages of data[from..to) with one call instead of one page
 * fault per 4 KiB, which for a 40 MB output is a third of the render's
 * time. A page only partly in the range is populated whole, which changes
 * no byte. Only a hint: older kernels refuse it, and nothing depends on it. */
static void prefault(char *data, size_t from, size_t to)
{
	const uintptr_t page = 4096;
	uintptr_t start = ((uintptr_t)data + from) & ~(page - 1);
	uintptr_t end = ((uintptr_t)data + to) & ~(page - 1);

	if (end > start)
		madvise((void *)start, end - start, MADV_POPULATE_WRITE);
}

/* Opens a file to read it whole: returns the descriptor and sets *size,
 * or a negative errno: -EISDIR for a folder, -EFBIG past max bytes. */
static int open_file(const char *path, size_t max, size_t *size)
{
	struct stat st;
	int fd, rc;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		rc = -errno;
	else if (S_ISDIR(st.st_mode))
		rc = -EISDIR;
	else if (st.st_size < 0 || (uintmax_t)st.st_size > max)
		rc = -EFBIG;
	else {
		*size = (size_t)st.st_size;
		return fd;
	}
	close(fd);
	return rc;
}

/* read(2), retried when a signal interrupts it. Returns the byte count
 * (0 at the end of the file) or a negative errno. */
static ssize_t read_some(int fd, void *p, size_t n)
{
	ssize_t r;

	do
		r = read(fd, p, n);
	while (r < 0 && errno == EINTR);
	return r < 0 ? -errno : r;
}

/* Reads a whole file into *b (replacing its contents), up to max bytes;
 * -EFBIG past that. Returns 0 or a negative errno. */
static int read_file(const char *path, size_t max, struct pi_buf *b)
{
	size_t size = 0;
	int fd, rc = 0;

	b->len = 0;
	fd = open_file(path, max, &size);
	if (fd < 0)
		return fd;
	/* One byte more than the size, so the read that sees EOF needs no
	 * growth; the size is only a hint, the file may change under us. */
	if ((rc = pi_buf_reserve(b, size + 1)) < 0)
		goto out;
	if (b->cap - b->len >= (1u << 20))
		prefault(b->data, b->len, b->cap);
	for (;;) {
		ssize_t r;

		if (b->len == b->cap && (rc = pi_buf_reserve(b, 1)) < 0)
			goto out;
		r = read_some(fd, b->data + b->len, b->cap - b->len);
		if (r < 0) {
			rc = (int)r;
			goto out;
		}
		if (r == 0)
			break;
		b->len += (size_t)r;
		if (b->len > max) {
			rc = -EFBIG;
			goto out;
		}
	}
out:
	close(fd);
	return rc;
}

/* The nameserver addresses of a resolv.conf, space-separated, ready for
 * nginx's resolver directive: IPv6 in brackets, zone index dropped. */
static int load_resolvers(struct ctx *c, const char *path)
{
	struct pi_buf f = {0};
	size_t i = 0;
	int rc;

	rc = read_file(path, RESOLV_CONF_MAX, &f);
	/* A NUL after the text lets strcspn stop on the last line. */
	if (rc == 0 && (rc = pi_buf_append(&f, "", 1)) == 0)
		f.len--;
	if (rc < 0) {
		free(f.data);
		/* No resolv.conf is normal in minimal images: the variable is
		 * then unset, and a template that needs it says so. */
		return rc == -ENOMEM ? rc : 0;
	}
	while (i < f.len) {
		char *line = f.data + i, *nl = memchr(line, '\n', f.len - i);
		size_t n = nl ? (size_t)(nl - line) : f.len - i;
		char addr[INET6_ADDRSTRLEN + 2];
		unsigned char bin[sizeof(struct in6_addr)];
		size_t a, alen;

		i += n + 1;
		if (n < 11 || memcmp(line, "nameserver", 10) != 0 ||
		    (line[10] != ' ' && line[10] != '\t'))
			continue;
		for (a = 10; a < n && (line[a] == ' ' || line[a] == '\t'); a++)
			;
		alen = strcspn(line + a, " \t\r\n%#;");
		if (a + alen > n)
			alen = n - a;
		if (alen == 0 || alen >= INET6_ADDRSTRLEN)
			continue;
		memcpy(addr + 1, line + a, alen);
		addr[alen + 1] = '\0';
		if (inet_pton(AF_INET, addr + 1, bin) == 1) {
			memmove(addr, addr + 1, alen + 1);
		} else if (inet_pton(AF_INET6, addr + 1, bin) == 1) {
			addr[0] = '[';
			addr[alen + 1] = ']';
			alen += 2;
		} else {
			continue;
		}
		if ((c->resolvers.len && (rc = pi_buf_append(&c->resolvers, " ", 1)) < 0) ||
		    (rc = pi_buf_append(&c->resolvers, addr, alen)) < 0)
			break;
		c->have_resolvers = 1;
	}
	free(f.data);
	return rc < 0 ? rc : 0;
}

/* ---- the walk ------------------------------------------------------------ */

struct walk {
	const struct pi_templates_opts *o;
	struct pi_templates *t;
	struct pi_templates_error *err;
	struct {
		dev_t dev;
		ino_t ino;
	} up[WALK_DEPTH_MAX]; /* the folders being walked, for loop detection */
	int depth;
};

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int ends_with(const char *s, size_t n, const char *suffix)
{
	size_t k = strlen(suffix);

	return k > 0 && n > k && memcmp(s + n - k, suffix, k) == 0;
}

static int add_item(struct walk *w, const char *path, const char *outdir, const char *rel,
		    const char *name, size_t keep)
{
	struct pi_templates *t = w->t;
	char *sub = NULL, *out;
	struct item *it;

	if (grow(&t->items, &t->cap, t->n, sizeof(*t->items)) < 0)
		goto nomem;
	sub = join(rel, name, keep);
	out = sub ? join(outdir, sub, strlen(sub)) : NULL;
	free(sub);
	if (!out) {
		if (errno == ENAMETOOLONG) {
			seterr(w->err, "path too long: %.200s...", path);
			return -ENAMETOOLONG;
		}
		goto nomem;
	}
	it = &t->items[t->n];
	memset(it, 0, sizeof(*it));
	it->output = out;
	it->source = strdup(path);
	if (!it->source) {
		free(out);
		goto nomem;
	}
	t->n++;
	return 0;
nomem:
	seterr(w->err, "out of memory");
	return -ENOMEM;
}

/* Reads a folder's visible names, sorted. On success *names holds *n
 * strings the caller frees (and the array). */
static int list_dir(const char *path, char ***names, size_t *n)
{
	size_t cap = 0;
	struct dirent *de;
	DIR *d;
	int rc = 0;

	*names = NULL;
	*n = 0;
	d = opendir(path);
	if (!d)
		return -errno;
	for (;;) {
		char *s;

		errno = 0;
		de = readdir(d);
		if (!de) {
			rc = -errno;
			break;
		}
		if (de->d_name[0] == '.')
			continue;
		if (grow(names, &cap, *n, sizeof(**names)) < 0 || !(s = strdup(de->d_name))) {
			rc = -ENOMEM;
			break;
		}
		(*names)[(*n)++] = s;
	}
	closedir(d);
	if (rc == 0 && *n)
		qsort(*names, *n, sizeof(**names), str_cmp);
	return rc;
}

static int walk(struct walk *w, const char *dir, const char *rel)
{
	const struct pi_templates_opts *o = w->o;
	char **names;
	size_t n, i;
	int rc;

	rc = list_dir(dir, &names, &n);
	if (rc < 0) {
		if (rc == -ENOMEM)
			seterr(w->err, "out of memory");
		else
			seterr(w->err, "cannot read templates folder %s: %s", dir, strerror(-rc));
		goto out;
	}
	for (i = 0; i < n && rc == 0; i++) {
		size_t len = strlen(names[i]);
		size_t ks = ends_with(names[i], len, o->suffix) ? strlen(o->suffix) : 0;
		size_t kt =
		    ends_with(names[i], len, o->stream_suffix) ? strlen(o->stream_suffix) : 0;
		char *path = join(dir, names[i], len);
		struct stat st;

		if (!path) {
			rc = -errno;
			if (rc == -ENAMETOOLONG)
				seterr(w->err, "path too long: %.200s/%s", dir, names[i]);
			else
				seterr(w->err, "out of memory");
			break;
		}
		if (stat(path, &st) < 0) {
			/* A dangling link that is not a template is none of
			 * our business; one that is, is an unreadable template. */
			if (ks || kt) {
				rc = -errno;
				seterr(w->err, "cannot read template %s: %s", path,
				       strerror(errno));
			}
		} else if (S_ISDIR(st.st_mode)) {
			char *sub = join(rel, names[i], len);

			rc = sub ? 0 : -errno;
			for (int d = 0; rc == 0 && d < w->depth; d++)
				if (w->up[d].dev == st.st_dev && w->up[d].ino == st.st_ino)
					rc = -ELOOP;
			if (rc == 0 && w->depth == WALK_DEPTH_MAX)
				rc = -ELOOP;
			if (rc == -ELOOP)
				seterr(w->err, "folder %s is inside itself (symbolic link loop)",
				       path);
			else if (rc < 0)
				seterr(w->err, "path too long: %.200s...", path);
			if (rc == 0) {
				w->up[w->depth].dev = st.st_dev;
				w->up[w->depth].ino = st.st_ino;
				w->depth++;
				rc = walk(w, path, sub);
				w->depth--;
			}
			free(sub);
		} else if (S_ISREG(st.st_mode) && (ks || kt)) {
			if (ks >= kt)
				rc = add_item(w, path, o->output_dir, rel, names[i], len - ks);
			else
				rc = add_item(w, path, o->stream_output_dir, rel, names[i],
					      len - kt);
		}
		free(path);
	}
out:
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return rc;
}

static int item_output_cmp(const void *a, const void *b)
{
	return strcmp((*(struct item *const *)a)->output, (*(struct item *const *)b)->output);
}

/* Two templates must not write the same file (x.template and
 * x.stream-template when both output folders are one). */
static int check_unique(struct pi_templates *t, struct pi_templates_error *err)
{
	struct item **v;
	int rc = 0;

	if (t->n < 2)
		return 0;
	v = malloc(t->n * sizeof(*v));
	if (!v) {
		seterr(err, "out of memory");
		return -ENOMEM;
	}
	for (size_t i = 0; i < t->n; i++)
		v[i] = &t->items[i];
	qsort(v, t->n, sizeof(*v), item_output_cmp);
	for (size_t i = 1; i < t->n && rc == 0; i++)
		if (strcmp(v[i - 1]->output, v[i]->output) == 0) {
			seterr(err, "templates %s and %s both render to %s", v[i - 1]->source,
			       v[i]->source, v[i]->output);
			rc = -EINVAL;
		}
	free(v);
	return rc;
}

/* ---- rendering ------------------------------------------------------------ */

/* A template is read this much at a time and rendered piece by piece, so
 * a large one is never in memory whole (only its output is) and the piece
 * being rendered is still in the CPU's cache from the read. */
#define PIECE (256u << 10)

/* Makes the place of an error in a piece starting `off` bytes into the
 * file a place in the file: reads the bytes before the piece again and
 * counts their lines. Only errors pay for this; rendering never counts
 * newlines. */
static void place_in_file(int fd, size_t off, struct pi_render_error *e)
{
	char buf[4096];
	uintmax_t lines = 0, col = 0; /* col: bytes since the last newline */
	size_t pos = 0;

	while (pos < off) {
		size_t want = off - pos < sizeof(buf) ? off - pos : sizeof(buf);
		ssize_t r = pread(fd, buf, want, (off_t)pos);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		for (const char *p = buf, *end = buf + r, *nl; p < end; p = nl + 1) {
			nl = memchr(p, '\n', (size_t)(end - p));
			if (!nl) {
				col += (uintmax_t)(end - p);
				break;
			}
			lines++;
			col = 0;
		}
		pos += (size_t)r;
	}
	if (e->line == 1)
		col += e->col;
	else
		col = e->col;
	lines += e->line;
	e->line = lines > UINT_MAX ? UINT_MAX : (unsigned)lines;
	e->col = col > UINT_MAX ? UINT_MAX : (unsigned)col;
}

static int render_item(struct ctx *c, const char *prefix, struct item *it,
		       struct pi_templates_error *err)
{
	struct pi_render_opts ro = {prefix, lookup, classify, on_host, c};
	struct pi_render_error rerr;
	struct pi_buf in = {0};
	size_t size = 0, off = 0; /* off: where in.data[0] is in the file */
	size_t ready = 0;	  /* it->text's pages up to here are populated */
	int fd, last = 0, rc;

	fd = open_file(it->source, PI_TEMPLATES_MAX_SIZE, &size);
	if (fd < 0) {
		rc = fd;
		goto read_failed;
	}
	/* Address space for the whole output at once, so it seldom moves;
	 * its pages are only populated a piece ahead of the rendering. */
	(void)pi_buf_reserve(&it->text, pi_render_estimate(size));
	if ((rc = pi_buf_reserve(&in, PIECE)) < 0)
		goto read_failed;
	while (!last) {
		size_t used, want;
		ssize_t r;

		/* What is left over is a reference cut by the end of the
		 * piece; when it fills half the buffer, double it, so a long
		 * unclosed "${NAME:-" is not scanned again for every block. */
		if (in.len > in.cap / 2 && (rc = pi_buf_reserve(&in, in.cap)) < 0)
			goto read_failed;
		r = read_some(fd, in.data + in.len, in.cap - in.len);
		if (r < 0) {
			rc = (int)r;
			goto read_failed;
		}
		last = r == 0;
		in.len += (size_t)r;
		if (off + in.len > PI_TEMPLATES_MAX_SIZE) {
			rc = -EFBIG;
			goto read_failed;
		}
		/* The room pi_render_piece reserves first, reserved here to
		 * populate what of it is new. */
		want = it->text.len + pi_render_estimate(in.len);
		if (want > ready && pi_buf_reserve(&it->text, want - it->text.len) == 0) {
			prefault(it->text.data, ready, want);
			ready = want;
		}
		rc = pi_render_piece(in.data, in.len, last, &ro, &it->text, &used, &rerr);
		if (rc < 0) {
			if (rerr.line) {
				place_in_file(fd, off, &rerr);
				seterr(err, "%s:%u:%u: %s", it->source, rerr.line, rerr.col,
				       rerr.msg);
			} else {
				seterr(err, "%s: %s", it->source, rerr.msg);
			}
			it->text.len = 0;
			goto out;
		}
		memmove(in.data, in.data + used, in.len - used);
		in.len -= used;
		off += used;
	}
	/* Give back the slack reserved for growth: every output stays in
	 * memory until the commit. */
	if (it->text.len && it->text.len < it->text.cap) {
		char *p = realloc(it->text.data, it->text.len);
		if (p) {
			it->text.data = p;
			it->text.cap = it->text.len;
		}
	}
	goto out;
read_failed:
	if (rc == -EFBIG)
		seterr(err, "template %s is larger than " MAX_SIZE_TEXT, it->source);
	else
		seterr(err, "cannot read template %s: %s", it->source, strerror(-rc));
out:
	if (fd >= 0)
		close(fd);
	free(in.data);
	return rc;
}

static void free_ctx(struct ctx *c)
{
	free(c->vars);
	free(c->pats);
	free(c->patbuf);
	free(c->resolvers.data);
}

int pi_templates_render(const struct pi_templates_opts *o, struct pi_templates **out,
			struct pi_templates_error *err)
{
	struct pi_templates_opts opts = *o;
	struct ctx c = {0};
	struct pi_templates *t;
	struct walk w = {0};
	char *dir = NULL;
	size_t i;
	int rc;

	err->msg[0] = '\0';
	if (!opts.suffix)
		opts.suffix = ".template";
	if (!opts.output_dir)
		opts.output_dir = "/etc/nginx/conf.d";
	if (!opts.stream_suffix)
		opts.stream_suffix = ".stream-template";
	if (!opts.stream_output_dir)
		opts.stream_output_dir = "/etc/nginx/stream-conf.d";
	if (!opts.prefix)
		opts.prefix = "NGINX_";
	if (!opts.resolv_conf)
		opts.resolv_conf = "/etc/resolv.conf";
	t = calloc(1, sizeof(*t));
	if (!t) {
		seterr(err, "out of memory");
		return -ENOMEM;
	}
	c.t = t;
	if ((rc = load_env(&c, opts.envp ? opts.envp : environ)) < 0 ||
	    (rc = load_patterns(&c, opts.hosts)) < 0 ||
	    (!find_var(&c, RESOLVERS, strlen(RESOLVERS)) &&
	     (rc = load_resolvers(&c, opts.resolv_conf)) < 0)) {
		seterr(err, "out of memory");
		goto out;
	}
	if ((rc = env_hosts(&c, err)) < 0)
		goto out;
	if (opts.dir) {
		struct stat st;

		/* "templates/" and "templates" must give the same paths. */
		dir = strdup(opts.dir);
		if (!dir) {
			rc = -ENOMEM;
			seterr(err, "out of memory");
			goto out;
		}
		for (i = strlen(dir); i > 1 && dir[i - 1] == '/'; i--)
			dir[i - 1] = '\0';
		if (stat(dir, &st) < 0) {
			if (errno != ENOENT) {
				rc = -errno;
				seterr(err, "cannot read templates folder %s: %s", dir,
				       strerror(errno));
				goto out;
			}
			t->missing = 1;
		} else {
			w.o = &opts;
			w.t = t;
			w.err = err;
			w.up[0].dev = st.st_dev;
			w.up[0].ino = st.st_ino;
			w.depth = 1;
			if ((rc = walk(&w, dir, "")) < 0 || (rc = check_unique(t, err)) < 0)
				goto out;
		}
	} else {
		t->missing = 1;
	}
	for (i = 0; i < t->n; i++)
		if ((rc = render_item(&c, opts.prefix, &t->items[i], err)) < 0)
			goto out;
out:
	free(dir);
	free_ctx(&c);
	if (rc < 0) {
		pi_templates_free(t);
		return rc;
	}
	*out = t;
	return 0;
}

int pi_templates_missing(const struct pi_templates *t)
{
	return t->missing;
}

size_t pi_templates_count(const struct pi_templates *t)
{
	return t->n;
}

const char *pi_templates_output(const struct pi_templates *t, size_t i)
{
	return t->items[i].output;
}

const char *pi_templates_source(const struct pi_templates *t, size_t i)
{
	return t->items[i].source;
}

const char *pi_templates_data(const struct pi_templates *t, size_t i, size_t *len)
{
	*len = t->items[i].text.len;
	return t->items[i].text.data ? t->items[i].text.data : "";
}

size_t pi_templates_nhosts(const struct pi_templates *t)
{
	return t->nhosts;
}

void pi_templates_host(const struct pi_templates *t, size_t i, const char **var, const char **value)
{
	*var = t->hosts[i].var;
	*value = t->hosts[i].value;
}

int pi_templates_print(const struct pi_templates *t, FILE *f)
{
	for (size_t i = 0; i < t->n; i++) {
		const struct item *it = &t->items[i];

		if (fprintf(f, "# ==> %s\n", it->output) < 0 ||
		    (it->text.len && fwrite(it->text.data, 1, it->text.len, f) != it->text.len))
			return -EIO;
	}
	return fflush(f) == 0 && !ferror(f) ? 0 : -EIO;
}

/* ---- commit and rollback ---------------------------------------------------- */

/* The folder part of a path, in a new string ("." when there is none). */
static char *dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		return strdup(".");
	return strndup(path, slash == path ? 1 : (size_t)(slash - path));
}

/* Creates dir and its missing parents (0755), remembering each one made so
 * a failed commit or a rollback can remove them again. */
static int mkdirs(struct pi_templates *t, const char *dir)
{
	char buf[PATH_MAX];
	size_t n = strlen(dir);
	struct stat st;

	if (n >= sizeof(buf))
		return -ENAMETOOLONG;
	if (stat(dir, &st) == 0)
		return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
	memcpy(buf, dir, n + 1);
	for (size_t i = 1; i <= n; i++) {
		char *made;

		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		buf[i] = '\0';
		if (mkdir(buf, 0755) == 0) {
			if (grow(&t->made, &t->madecap, t->nmade, sizeof(*t->made)) < 0 ||
			    !(made = strdup(buf))) {
				rmdir(buf);
				return -ENOMEM;
			}
			t->made[t->nmade++] = made;
		} else if (errno != EEXIST) {
			return -errno;
		} else if (stat(buf, &st) < 0 || !S_ISDIR(st.st_mode)) {
			return -ENOTDIR;
		}
		buf[i] = i < n ? '/' : '\0';
	}
	return 0;
}

static void remove_made(struct pi_templates *t)
{
	while (t->nmade > 0) {
		t->nmade--;
		rmdir(t->made[t->nmade]);
		free(t->made[t->nmade]);
	}
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Writes data to a new temp file ".NAME.XXXXXX" beside output, with mode.
 * On success *temp is its path (the caller frees it); on failure no temp
 * file is left. Returns 0 or a negative errno. */
static int write_temp(const char *output, const char *data, size_t len, mode_t mode, char **temp)
{
	const char *slash = strrchr(output, '/');
	size_t dlen = slash ? (size_t)(slash - output) + 1 : 0;
	size_t n = strlen(output) + 8; /* '.' + ".XXXXXX" */
	char *path;
	int fd, rc;

	if (n >= PATH_MAX)
		return -ENAMETOOLONG;
	path = malloc(n + 1);
	if (!path)
		return -ENOMEM;
	snprintf(path, n + 1, "%.*s.%s.XXXXXX", (int)dlen, output, output + dlen);
	fd = mkostemp(path, O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		free(path);
		return rc;
	}
	rc = write_all(fd, data, len);
	if (rc == 0 && fchmod(fd, mode) < 0)
		rc = -errno;
	if (close(fd) < 0 && rc == 0 && errno != EINTR)
		rc = -errno;
	if (rc < 0) {
		unlink(path);
		free(path);
		return rc;
	}
	*temp = path;
	return 0;
}

/* Puts an output back as it was before the commit. */
static int restore(struct item *it)
{
	char *temp;
	int rc;

	if (!it->existed)
		return unlink(it->output) < 0 && errno != ENOENT ? -errno : 0;
	rc = write_temp(it->output, it->prev.data, it->prev.len, it->mode, &temp);
	if (rc < 0)
		return rc;
	if (rename(temp, it->output) < 0) {
		rc = -errno;
		unlink(temp);
	}
	free(temp);
	return rc;
}

/* Remembers what an output is now: its contents and mode, or absence. */
static int read_prev(struct item *it)
{
	struct stat st;

	if (stat(it->output, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (S_ISDIR(st.st_mode))
		return -EISDIR;
	it->existed = 1;
	it->mode = st.st_mode & 07777;
	return read_file(it->output, PI_TEMPLATES_MAX_SIZE, &it->prev);
}

static void drop_prev(struct item *it)
{
	free(it->prev.data);
	it->prev = (struct pi_buf){0};
}

/* Undoes a commit in progress or done: renamed outputs are restored,
 * temp files and new folders removed. Returns the first error. */
static int undo(struct pi_templates *t)
{
	int first = 0;

	for (size_t i = t->n; i-- > 0;) {
		struct item *it = &t->items[i];
		int rc;

		if (it->renamed && (rc = restore(it)) < 0 && first == 0)
			first = rc;
		if (it->temp) {
			unlink(it->temp);
			free(it->temp);
			it->temp = NULL;
		}
		it->renamed = it->existed = it->unchanged = 0;
		drop_prev(it);
	}
	remove_made(t);
	t->committed = 0;
	return first;
}

/* Prepares one output: its folder, its previous state, its temp file. */
static int stage(struct pi_templates *t, struct item *it, struct pi_templates_error *err)
{
	char *dir = dir_of(it->output);
	int rc;

	if (!dir) {
		seterr(err, "out of memory");
		return -ENOMEM;
	}
	if ((rc = mkdirs(t, dir)) < 0) {
		seterr(err, "cannot create output folder %s: %s", dir, strerror(-rc));
		goto out;
	}
	if ((rc = read_prev(it)) < 0) {
		seterr(err, "cannot read previous %s: %s", it->output, strerror(-rc));
		goto out;
	}
	if (it->existed && it->prev.len == it->text.len &&
	    (it->text.len == 0 || memcmp(it->prev.data, it->text.data, it->text.len) == 0)) {
		it->unchanged = 1;
		drop_prev(it);
		goto out;
	}
	rc = write_temp(it->output, it->text.data ? it->text.data : "", it->text.len,
			it->existed ? it->mode : 0644, &it->temp);
	if (rc < 0)
		seterr(err, "cannot write to output folder %s: %s", dir, strerror(-rc));
out:
	free(dir);
	return rc;
}

int pi_templates_commit(struct pi_templates *t, struct pi_templates_error *err)
{
	size_t i;
	int rc = 0;

	err->msg[0] = '\0';
	if (t->committed) {
		seterr(err, "templates already committed");
		return -EALREADY;
	}
	/* Every temp file is complete before the first rename, so a failure
	 * while writing (a full disk, a read-only folder) changes nothing. */
	for (i = 0; i < t->n && rc == 0; i++)
		rc = stage(t, &t->items[i], err);
	for (i = 0; i < t->n && rc == 0; i++) {
		struct item *it = &t->items[i];

		if (it->unchanged)
			continue;
		if (rename(it->temp, it->output) < 0) {
			rc = -errno;
			seterr(err, "cannot replace %s: %s", it->output, strerror(errno));
			break;
		}
		it->renamed = 1;
		free(it->temp);
		it->temp = NULL;
	}
	if (rc < 0) {
		undo(t);
		return rc;
	}
	t->committed = 1;
	return 0;
}

int pi_templates_rollback(struct pi_templates *t)
{
	if (!t->committed)
		return 0;
	return undo(t);
}

void pi_templates_free(struct pi_templates *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->n; i++) {
		struct item *it = &t->items[i];

		if (it->temp) {
			unlink(it->temp);
			free(it->temp);
		}
		free(it->source);
		free(it->output);
		free(it->text.data);
		free(it->prev.data);
	}
	for (size_t i = 0; i < t->nhosts; i++) {
		free(t->hosts[i].var);
		free(t->hosts[i].value);
	}
	for (size_t i = 0; i < t->nmade; i++)
		free(t->made[i]);
	free(t->items);
	free(t->hosts);
	free(t->made);
	free(t);
}
