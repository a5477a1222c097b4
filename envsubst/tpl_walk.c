/* The directory walk: finds every template under templates.dir. Entries
 * of each folder in strcmp(3) order, depth first, symbolic links followed.
 * Every folder is walked once, known by (device, inode): one reached again
 * through another link is skipped, so a chain of folders each linked twice
 * costs one visit per folder, not 2^depth. A folder inside itself is an
 * error, and so is one deeper than PI_TPL_DEPTH_MAX levels. */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "envsubst/tpl_internal.h"

struct walk_id {
	dev_t dev;
	ino_t ino;
};

struct walk {
	const struct pi_templates_opts *o;
	struct pi_templates *t;
	struct pi_templates_error *err;
	struct walk_id up[PI_TPL_DEPTH_MAX]; /* the folders being walked */
	int depth;
	struct walk_id *seen; /* every folder walked, sorted */
	size_t nseen, seencap;
};

static int walk_id_cmp(const struct walk_id *a, const struct walk_id *b)
{
	if (a->dev != b->dev)
		return a->dev < b->dev ? -1 : 1;
	return a->ino < b->ino ? -1 : a->ino > b->ino;
}

/* Adds id to the folders seen. Returns 1 when it was there, 0 when added,
 * -ENOMEM. Binary search and insertion: folders are few, walks are rare. */
static int walk_mark(struct walk *w, struct walk_id id)
{
	size_t lo = 0, hi = w->nseen;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = walk_id_cmp(&id, &w->seen[mid]);

		if (c == 0)
			return 1;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	if (pi_tpl_grow(&w->seen, &w->seencap, w->nseen, sizeof(*w->seen)) < 0)
		return -ENOMEM;
	memmove(w->seen + lo + 1, w->seen + lo, (w->nseen - lo) * sizeof(*w->seen));
	w->seen[lo] = id;
	w->nseen++;
	return 0;
}

static int walk_name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static size_t walk_suffix(const char *s, size_t n, const char *suffix)
{
	size_t k = strlen(suffix);

	return k > 0 && n > k && memcmp(s + n - k, suffix, k) == 0 ? k : 0;
}

static int walk_add(struct walk *w, const char *path, const char *outdir, const char *rel,
		    const char *name, size_t keep)
{
	struct pi_templates *t = w->t;
	char *sub = NULL, *out;
	struct pi_tpl_item *it;

	if (pi_tpl_grow(&t->items, &t->cap, t->n, sizeof(*t->items)) < 0)
		goto nomem;
	sub = pi_tpl_join(rel, name, keep);
	out = sub ? pi_tpl_join(outdir, sub, strlen(sub)) : NULL;
	free(sub);
	if (!out) {
		if (errno == ENAMETOOLONG) {
			pi_tpl_seterr(w->err, "path too long: %.200s...", path);
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
	pi_tpl_seterr(w->err, "out of memory");
	return -ENOMEM;
}

/* Reads a folder's visible names, sorted. On success *names holds *n
 * strings the caller frees (and the array). */
static int walk_list(const char *path, char ***names, size_t *n)
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
		if (pi_tpl_grow(names, &cap, *n, sizeof(**names)) < 0 ||
		    !(s = strdup(de->d_name))) {
			rc = -ENOMEM;
			break;
		}
		(*names)[(*n)++] = s;
	}
	closedir(d);
	if (rc == 0 && *n)
		qsort(*names, *n, sizeof(**names), walk_name_cmp);
	return rc;
}

static int walk_dir(struct walk *w, const char *dir, const char *rel);

/* A sub-folder: an error when it encloses itself or is too deep, skipped
 * when already walked through another path, else walked. */
static int walk_sub(struct walk *w, const char *path, const char *rel, const char *name,
		    const struct stat *st)
{
	struct walk_id id = {st->st_dev, st->st_ino};
	char *sub;
	int rc;

	for (int d = 0; d < w->depth; d++)
		if (walk_id_cmp(&w->up[d], &id) == 0) {
			pi_tpl_seterr(w->err, "folder %s is inside itself (symbolic link loop)",
				      path);
			return -ELOOP;
		}
	if (w->depth == PI_TPL_DEPTH_MAX) {
		pi_tpl_seterr(w->err, "folder %s is too deep: level %d, the limit is %d", path,
			      w->depth + 1, PI_TPL_DEPTH_MAX);
		return -ELOOP;
	}
	rc = walk_mark(w, id);
	if (rc != 0) {
		if (rc < 0)
			pi_tpl_seterr(w->err, "out of memory");
		return rc < 0 ? rc : 0;
	}
	sub = pi_tpl_join(rel, name, strlen(name));
	if (!sub) {
		rc = -errno;
		if (rc == -ENAMETOOLONG)
			pi_tpl_seterr(w->err, "path too long: %.200s...", path);
		else
			pi_tpl_seterr(w->err, "out of memory");
		return rc;
	}
	w->up[w->depth++] = id;
	rc = walk_dir(w, path, sub);
	w->depth--;
	free(sub);
	return rc;
}

/* One entry of a folder: a template, a sub-folder, or nothing of ours. */
static int walk_entry(struct walk *w, const char *dir, const char *rel, const char *name)
{
	const struct pi_templates_opts *o = w->o;
	size_t len = strlen(name);
	size_t ks = walk_suffix(name, len, o->suffix);
	size_t kt = walk_suffix(name, len, o->stream_suffix);
	char *path = pi_tpl_join(dir, name, len);
	struct stat st;
	int rc = 0;

	if (!path) {
		rc = -errno;
		if (rc == -ENAMETOOLONG)
			pi_tpl_seterr(w->err, "path too long: %.200s/%s", dir, name);
		else
			pi_tpl_seterr(w->err, "out of memory");
		return rc;
	}
	if (stat(path, &st) < 0) {
		/* A dangling link that is not a template is none of our
		 * business; one that is, is an unreadable template. */
		if (ks || kt) {
			rc = -errno;
			pi_tpl_seterr(w->err, "cannot read template %s: %s", path, strerror(errno));
		}
	} else if (S_ISDIR(st.st_mode)) {
		rc = walk_sub(w, path, rel, name, &st);
	} else if (S_ISREG(st.st_mode) && (ks || kt)) {
		if (ks >= kt)
			rc = walk_add(w, path, o->output_dir, rel, name, len - ks);
		else
			rc = walk_add(w, path, o->stream_output_dir, rel, name, len - kt);
	}
	free(path);
	return rc;
}

static int walk_dir(struct walk *w, const char *dir, const char *rel)
{
	char **names;
	size_t n, i;
	int rc;

	rc = walk_list(dir, &names, &n);
	if (rc < 0) {
		if (rc == -ENOMEM)
			pi_tpl_seterr(w->err, "out of memory");
		else
			pi_tpl_seterr(w->err, "cannot read templates folder %s: %s", dir,
				      strerror(-rc));
	}
	for (i = 0; i < n && rc == 0; i++)
		rc = walk_entry(w, dir, rel, names[i]);
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return rc;
}

static int walk_output_cmp(const void *a, const void *b)
{
	return strcmp((*(struct pi_tpl_item *const *)a)->output,
		      (*(struct pi_tpl_item *const *)b)->output);
}

/* Two templates must not write the same file (x.template and
 * x.stream-template when both output folders are one). */
static int walk_check_unique(struct pi_templates *t, struct pi_templates_error *err)
{
	struct pi_tpl_item **v;
	int rc = 0;

	if (t->n < 2)
		return 0;
	v = malloc(t->n * sizeof(*v));
	if (!v) {
		pi_tpl_seterr(err, "out of memory");
		return -ENOMEM;
	}
	for (size_t i = 0; i < t->n; i++)
		v[i] = &t->items[i];
	qsort(v, t->n, sizeof(*v), walk_output_cmp);
	for (size_t i = 1; i < t->n && rc == 0; i++)
		if (strcmp(v[i - 1]->output, v[i]->output) == 0) {
			pi_tpl_seterr(err, "templates %s and %s both render to %s",
				      v[i - 1]->source, v[i]->source, v[i]->output);
			rc = -EINVAL;
		}
	free(v);
	return rc;
}

int pi_tpl_walk(const struct pi_templates_opts *o, const char *dir, struct pi_templates *t,
		struct pi_templates_error *err)
{
	struct walk w = {.o = o, .t = t, .err = err};
	struct stat st;
	int rc;

	if (stat(dir, &st) < 0) {
		rc = -errno;
		pi_tpl_seterr(err, "cannot read templates folder %s: %s", dir, strerror(-rc));
		return rc;
	}
	w.up[0] = (struct walk_id){st.st_dev, st.st_ino};
	w.depth = 1;
	rc = walk_mark(&w, w.up[0]);
	if (rc < 0)
		pi_tpl_seterr(err, "out of memory");
	else
		rc = walk_dir(&w, dir, "");
	if (rc == 0)
		rc = walk_check_unique(t, err);
	free(w.seen);
	return rc;
}
