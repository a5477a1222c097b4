/* The template set: see templates.h. The walk, the environment, the
 * streaming render and the commit protocol each live in their own file
 * (tpl_*.c); this one builds the set and answers questions about it. */
#include "envsubst/templates.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "envsubst/tpl_internal.h"

extern char **environ;

void pi_tpl_seterr(struct pi_templates_error *err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
}

int pi_tpl_grow(void *arrp, size_t *cap, size_t n, size_t size)
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

char *pi_tpl_join(const char *a, const char *b, size_t blen)
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

ssize_t pi_tpl_read(int fd, void *p, size_t n)
{
	ssize_t r;

	do
		r = read(fd, p, n);
	while (r < 0 && errno == EINTR);
	return r < 0 ? -errno : r;
}

int pi_tpl_open_regular(const char *path, size_t max, struct stat *st)
{
	int fd, rc;

	/* stat first: opening a FIFO or a device to look at it could block
	 * or have effects; O_NONBLOCK covers a swap between stat and open. */
	if (stat(path, st) < 0)
		return -errno;
	if (!S_ISREG(st->st_mode))
		return S_ISDIR(st->st_mode) ? -EISDIR : -EINVAL;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0)
		return -errno;
	if (fstat(fd, st) < 0)
		rc = -errno;
	else if (!S_ISREG(st->st_mode))
		rc = S_ISDIR(st->st_mode) ? -EISDIR : -EINVAL;
	else if (st->st_size < 0 || (uintmax_t)st->st_size > max)
		rc = -EFBIG;
	else
		return fd;
	close(fd);
	return rc;
}

/* The options with their defaults filled in. */
static void templates_defaults(struct pi_templates_opts *o)
{
	if (!o->suffix)
		o->suffix = ".template";
	if (!o->output_dir)
		o->output_dir = "/etc/nginx/conf.d";
	if (!o->stream_suffix)
		o->stream_suffix = ".stream-template";
	if (!o->stream_output_dir)
		o->stream_output_dir = "/etc/nginx/stream-conf.d";
	if (!o->prefix)
		o->prefix = "NGINX_";
	if (!o->resolv_conf)
		o->resolv_conf = "/etc/resolv.conf";
	if (!o->envp)
		o->envp = environ;
}

/* Walks templates.dir, unless there is none. */
static int templates_find(const struct pi_templates_opts *o, struct pi_templates *t,
			  struct pi_templates_error *err)
{
	struct stat st;
	char *dir;
	int rc;

	if (!o->dir) {
		t->missing = 1;
		return 0;
	}
	/* "templates/" and "templates" must give the same paths. */
	dir = strdup(o->dir);
	if (!dir) {
		pi_tpl_seterr(err, "out of memory");
		return -ENOMEM;
	}
	for (size_t i = strlen(dir); i > 1 && dir[i - 1] == '/'; i--)
		dir[i - 1] = '\0';
	if (stat(dir, &st) < 0 && errno == ENOENT) {
		t->missing = 1;
		rc = 0;
	} else {
		rc = pi_tpl_walk(o, dir, t, err);
	}
	free(dir);
	return rc;
}

int pi_templates_render(const struct pi_templates_opts *o, struct pi_templates **out,
			struct pi_templates_error *err)
{
	struct pi_templates_opts opts = *o;
	struct pi_templates *t;
	int rc;

	err->msg[0] = '\0';
	templates_defaults(&opts);
	t = calloc(1, sizeof(*t));
	if (!t || !(t->prefix = strdup(opts.prefix)) ||
	    pi_tpl_env_new(&opts, &t->env) < 0) {
		pi_tpl_seterr(err, "out of memory");
		rc = -ENOMEM;
		goto out;
	}
	if ((rc = pi_tpl_env_hosts(t->env, t, err)) < 0)
		goto out;
	rc = templates_find(&opts, t, err);
out:
	if (rc < 0) {
		pi_templates_free(t);
		return rc;
	}
	*out = t;
	return 0;
}

void pi_templates_supersede(struct pi_templates *t, const struct pi_templates *prev)
{
	size_t i;

	for (i = 0; prev && i < prev->n; i++) {
		const struct pi_tpl_item *p = &prev->items[i];
		struct pi_tpl_item *s;
		size_t j;

		if (!p->have_id)
			continue;
		for (j = 0; j < t->n && strcmp(t->items[j].output, p->output) != 0; j++)
			;
		if (j < t->n)
			continue;
		if (pi_tpl_grow(&t->stale, &t->stalecap, t->nstale, sizeof(*t->stale)) < 0)
			break;
		s = &t->stale[t->nstale];
		*s = (struct pi_tpl_item){.output = strdup(p->output), .id = p->id, .have_id = 1};
		if (!s->output)
			break;
		t->nstale++;
	}
	/* A stale output left out would stay live: the commit must fail. */
	if (prev && i < prev->n)
		t->stale_lost = 1;
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

size_t pi_templates_nhosts(const struct pi_templates *t)
{
	return t->nhosts;
}

void pi_templates_host(const struct pi_templates *t, size_t i, const char **var, const char **value)
{
	*var = t->hosts[i].var;
	*value = t->hosts[i].value;
}

/* Sinks for print: one that drops everything (the check pass), one that
 * writes to a stream. */
static int templates_discard(void *f, const char *p, size_t n, struct pi_templates_error *err)
{
	(void)f, (void)p, (void)n, (void)err;
	return 0;
}

static int templates_fwrite(void *f, const char *p, size_t n, struct pi_templates_error *err)
{
	if (fwrite(p, 1, n, f) == n)
		return 0;
	pi_tpl_seterr(err, "cannot write to standard output: %s", strerror(errno));
	return -EIO;
}

int pi_templates_print(struct pi_templates *t, FILE *f, struct pi_templates_error *err)
{
	int rc = 0;

	err->msg[0] = '\0';
	if (!t->env) {
		pi_tpl_seterr(err, "templates already committed");
		return -EALREADY;
	}
	/* First every template rendered to nowhere, so an error prints
	 * nothing; then again to f. Twice the work, constant memory. */
	for (size_t i = 0; i < t->n && rc == 0; i++)
		rc = pi_tpl_stream(t, t->items[i].source, templates_discard, NULL, err);
	for (size_t i = 0; i < t->n && rc == 0; i++) {
		if (fprintf(f, "# ==> %s\n", t->items[i].output) < 0) {
			pi_tpl_seterr(err, "cannot write to standard output: %s", strerror(errno));
			rc = -EIO;
		} else {
			rc = pi_tpl_stream(t, t->items[i].source, templates_fwrite, f, err);
		}
	}
	if (rc == 0 && (fflush(f) != 0 || ferror(f))) {
		pi_tpl_seterr(err, "cannot write to standard output: %s", strerror(errno));
		rc = -EIO;
	}
	pi_tpl_stream_release(t);
	return rc;
}

static void templates_free_item(struct pi_tpl_item *it)
{
	free(it->source);
	free(it->output);
	free(it->temp);
	free(it->keep);
}

void pi_templates_free(struct pi_templates *t)
{
	if (!t)
		return;
	pi_tpl_commit_cleanup(t);
	for (size_t i = 0; i < t->n; i++)
		templates_free_item(&t->items[i]);
	for (size_t i = 0; i < t->nstale; i++)
		templates_free_item(&t->stale[i]);
	for (size_t i = 0; i < t->nhosts; i++) {
		free(t->hosts[i].var);
		free(t->hosts[i].value);
	}
	for (size_t i = 0; i < t->nmade; i++)
		free(t->made[i]);
	pi_tpl_env_free(t->env);
	pi_tpl_stream_release(t);
	free(t->prefix);
	free(t->items);
	free(t->stale);
	free(t->hosts);
	free(t->made);
	free(t);
}
