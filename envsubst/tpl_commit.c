/* The commit protocol (SPEC §3, all-or-nothing):
 *
 * 1. Stage every output: create its folder, render the template into a
 *    temp file ".NAME.XXXXXX" beside it while comparing the stream with the
 *    previous file (an output that would not change is left alone, and no
 *    temp file is even made for it), and keep the previous file under a
 *    hidden link ".NAME.keep-XXXXXX" made with link(2). Stale outputs
 *    (rendered by the set this one supersedes from a template that is
 *    gone) get a kept link too. Nothing visible has changed yet.
 * 2. Rename each temp file over its output; unlink each stale output.
 * 3. Rollback renames each kept link back over its output (and unlinks
 *    outputs that did not exist): rename(2) needs no free disk space, so a
 *    full disk cannot stop it. Settling unlinks the kept links instead.
 *
 * Only regular files are replaced: a folder, FIFO, socket or device at an
 * output path is refused before anything changes (and never opened in a
 * way that could block). A symbolic link there is replaced by the file
 * (what it leads to is not written), and restored itself by a rollback. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "envsubst/tpl_internal.h"
#include "envsubst/wide.h"

/* One output being staged. */
struct commit_sink {
	struct pi_templates *t;
	struct pi_tpl_item *it;
	int old_fd;	 /* the previous output, -1 when there is none */
	off_t old_size;
	off_t pos; /* bytes rendered so far */
	int same;  /* everything rendered so far equals the previous output */
	int fd;	   /* the temp file, -1 until needed */
	mode_t mode;
	off_t expect; /* the output's likely size, when worth allocating up front */
};

/* Templates of this size or more get their output's blocks allocated when
 * the temp file is made: the file system then has no space to reserve a
 * block at a time while the output is written, which is a good part of
 * what writing a large output costs. */
#define COMMIT_PREALLOC_MIN (1 << 20)

static struct pi_tpl_id commit_id(const struct stat *st)
{
	return (struct pi_tpl_id){st->st_dev, st->st_ino, st->st_size, st->st_mtim};
}

static int commit_same_id(const struct stat *st, const struct pi_tpl_id *id)
{
	return st->st_dev == id->dev && st->st_ino == id->ino && st->st_size == id->size &&
	       st->st_mtim.tv_sec == id->mtime.tv_sec && st->st_mtim.tv_nsec == id->mtime.tv_nsec;
}

/* The folder part of a path, in a new string ("." when there is none). */
static char *commit_dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		return strdup(".");
	return strndup(path, slash == path ? 1 : (size_t)(slash - path));
}

/* The last part of a path. */
static const char *commit_base(const char *path)
{
	const char *slash = strrchr(path, '/');

	return slash ? slash + 1 : path;
}

/* Creates dir and its missing parents (0755), remembering each one made so
 * a failed commit or a rollback can remove them again. */
static int commit_mkdirs(struct pi_templates *t, const char *dir)
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
			if (pi_tpl_grow(&t->made, &t->madecap, t->nmade, sizeof(*t->made)) < 0 ||
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

static void commit_remove_made(struct pi_templates *t)
{
	while (t->nmade > 0) {
		t->nmade--;
		rmdir(t->made[t->nmade]);
		free(t->made[t->nmade]);
	}
}

static int commit_write_all(int fd, const char *p, size_t n)
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

/* A hidden path beside output: "DIR/.NAME" + tail, in a new string. NAME
 * is cut so that the entry fits NAME_MAX: an output whose name is allowed
 * must stay replaceable. The tail keeps it unique (a temp file is made
 * with O_EXCL, a kept link retries on EEXIST); the full path is what is
 * remembered. */
static char *commit_hidden(const char *output, const char *tail)
{
	const char *slash = strrchr(output, '/');
	size_t dlen = slash ? (size_t)(slash - output) + 1 : 0;
	size_t name = strlen(output + dlen), room = NAME_MAX - 1 - strlen(tail);
	char *path;

	if (name > room)
		name = room;
	size_t n = dlen + 1 + name + strlen(tail);
	if (n >= PATH_MAX) {
		errno = ENAMETOOLONG;
		return NULL;
	}
	path = malloc(n + 1);
	if (path)
		snprintf(path, n + 1, "%.*s.%.*s%s", (int)dlen, output, (int)name, output + dlen,
			 tail);
	return path;
}

/* Links output to a new hidden name beside it, kept for a rollback. */
static int commit_keep(struct pi_tpl_item *it)
{
	static unsigned counter;
	struct timespec ts;
	char tail[32];

	clock_gettime(CLOCK_MONOTONIC, &ts);
	for (int tries = 0; tries < 100; tries++) {
		unsigned n = __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
		unsigned x = (unsigned)ts.tv_nsec ^ ((unsigned)getpid() << 12) ^ (n * 2654435761u);

		snprintf(tail, sizeof(tail), ".keep-%08x", x);
		free(it->keep);
		it->keep = commit_hidden(it->output, tail);
		if (!it->keep)
			return -errno;
		if (link(it->output, it->keep) == 0)
			return 0;
		if (errno != EEXIST)
			break;
	}
	free(it->keep);
	it->keep = NULL;
	return -errno;
}

/* Copies the first n bytes of the previous output into the temp file:
 * the part of the new output already found equal to it. */
static int commit_copy_prefix(struct commit_sink *s, off_t n)
{
	off_t from = 0;

	while (from < n) {
		ssize_t c = copy_file_range(s->old_fd, &from, s->fd, NULL, (size_t)(n - from), 0);

		if (c > 0)
			continue;
		if (c == 0)
			return -EIO; /* the previous file shrank under us */
		if (errno == EINTR)
			continue;
		if (errno != EXDEV && errno != ENOSYS && errno != EINVAL && errno != EOPNOTSUPP)
			return -errno;
		/* No copy_file_range here: read and write. */
		for (;;) {
			char buf[16384];
			size_t want =
			    (size_t)(n - from) < sizeof(buf) ? (size_t)(n - from) : sizeof(buf);
			ssize_t r = want ? pread(s->old_fd, buf, want, from) : 0;
			int rc;

			if (want == 0)
				return 0;
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				return r < 0 ? -errno : -EIO;
			if ((rc = commit_write_all(s->fd, buf, (size_t)r)) < 0)
				return rc;
			from += r;
		}
	}
	return 0;
}

/* Creates the temp file and puts in it what was rendered so far (equal to
 * the previous output's first s->pos bytes). */
static int commit_open_temp(struct commit_sink *s)
{
	struct pi_tpl_item *it = s->it;
	int rc;

	it->temp = commit_hidden(it->output, ".XXXXXX");
	if (!it->temp)
		return -errno;
	s->fd = mkostemp(it->temp, O_CLOEXEC);
	if (s->fd < 0) {
		rc = -errno;
		free(it->temp);
		it->temp = NULL;
		return rc;
	}
	/* Only an estimate: a failure (no room for all of it, a file system
	 * without fallocate) leaves the rest to be allocated as written, and
	 * commit_finish cuts the file to what was written. */
	if (s->expect)
		fallocate(s->fd, 0, 0, s->expect);
	return s->pos ? commit_copy_prefix(s, s->pos) : 0;
}

/* 1 when the previous output holds p[0..n) at s->pos. */
static int commit_same(struct commit_sink *s, const char *p, size_t n)
{
	struct pi_buf *b = &s->t->cmp;
	size_t got = 0;

	if (s->old_fd < 0 || s->old_size - s->pos < (off_t)n)
		return 0;
	b->len = 0;
	if (pi_buf_reserve(b, n) < 0)
		return 0;
	while (got < n) {
		ssize_t r = pread(s->old_fd, b->data + got, n - got, s->pos + (off_t)got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return 0;
		got += (size_t)r;
	}
	return pi_wide_equal(b->data, p, n);
}

/* pi_tpl_emit_fn: compares with the previous output while they agree,
 * writes to the temp file from the first difference on. */
static int commit_emit(void *vs, const char *p, size_t n, struct pi_templates_error *err)
{
	struct commit_sink *s = vs;
	int rc = 0;

	if (s->same) {
		if (commit_same(s, p, n)) {
			s->pos += (off_t)n;
			return 0;
		}
		s->same = 0;
		rc = commit_open_temp(s);
	}
	if (rc == 0)
		rc = commit_write_all(s->fd, p, n);
	if (rc < 0) {
		pi_tpl_seterr(err, "cannot write %s: %s", s->it->output, strerror(-rc));
		return rc;
	}
	s->pos += (off_t)n;
	return 0;
}

/* Opens the previous output, if any, refusing anything but a regular file. */
static int commit_open_old(struct commit_sink *s, struct pi_templates_error *err)
{
	struct pi_tpl_item *it = s->it;
	struct stat st;
	int fd = pi_tpl_open_regular(it->output, (size_t)-1, &st);

	if (fd == -ENOENT) {
		/* A link leading nowhere is replaced like a file, and kept
		 * (link(2) links the link itself) so a rollback puts it back. */
		if (lstat(it->output, &st) == 0 && S_ISLNK(st.st_mode))
			it->existed = 1;
		return 0;
	}
	if (fd == -EINVAL) {
		pi_tpl_seterr(err, "cannot replace %s: not a regular file", it->output);
		return fd;
	}
	if (fd < 0) {
		pi_tpl_seterr(err, "cannot read previous %s: %s", it->output, strerror(-fd));
		return fd;
	}
	s->old_fd = fd;
	s->old_size = st.st_size;
	/* Permission bits only: a set-id or sticky bit on a config file is
	 * nobody's intent, and the new file is the init's own. */
	s->mode = st.st_mode & 0777;
	s->same = 1;
	it->existed = 1;
	it->id = commit_id(&st);
	return 0;
}

/* After the render: either the output is unchanged, or the temp file is
 * complete (mode set, closed) and the previous output is kept by a link. */
static int commit_finish(struct commit_sink *s, struct pi_templates_error *err)
{
	struct pi_tpl_item *it = s->it;
	struct stat st;
	int rc = 0;

	if (s->same && s->pos == s->old_size) {
		it->unchanged = 1;
		it->have_id = 1;
		return 0;
	}
	if (s->fd < 0)
		rc = commit_open_temp(s);
	if (rc == 0 && s->expect && ftruncate(s->fd, s->pos) < 0)
		rc = -errno;
	if (rc == 0 && (fchmod(s->fd, s->mode) < 0 || fstat(s->fd, &st) < 0))
		rc = -errno;
	if (s->fd >= 0 && close(s->fd) < 0 && rc == 0 && errno != EINTR)
		rc = -errno;
	s->fd = -1;
	if (rc < 0) {
		pi_tpl_seterr(err, "cannot write %s: %s", s->it->output, strerror(-rc));
		return rc;
	}
	it->id = commit_id(&st);
	it->have_id = 1;
	if (it->existed && (rc = commit_keep(it)) < 0)
		pi_tpl_seterr(err, "cannot keep previous %s: %s", it->output, strerror(-rc));
	return rc;
}

/* Stages one output: its folder, the comparison with its previous
 * contents, its temp file, the link keeping the previous file. */
static int commit_stage(struct pi_templates *t, struct pi_tpl_item *it,
			struct pi_templates_error *err)
{
	struct commit_sink s = {t, it, -1, 0, 0, 0, -1, 0644, 0};
	char *dir = commit_dir_of(it->output);
	struct stat tst;
	int rc;

	if (stat(it->source, &tst) == 0 && S_ISREG(tst.st_mode) &&
	    tst.st_size >= COMMIT_PREALLOC_MIN && tst.st_size <= PI_TEMPLATES_MAX_SIZE)
		s.expect = (off_t)pi_render_estimate((size_t)tst.st_size);

	if (!dir) {
		pi_tpl_seterr(err, "out of memory");
		return -ENOMEM;
	}
	if ((rc = commit_mkdirs(t, dir)) < 0) {
		pi_tpl_seterr(err, "cannot create output folder %s: %s", dir, strerror(-rc));
		goto out;
	}
	if ((rc = commit_open_old(&s, err)) < 0)
		goto out;
	if (!s.same && (rc = commit_open_temp(&s)) < 0) {
		pi_tpl_seterr(err, "cannot write %s: %s", it->output, strerror(-rc));
		goto out;
	}
	rc = pi_tpl_stream(t, it->source, commit_emit, &s, err);
	if (rc == 0)
		rc = commit_finish(&s, err);
out:
	if (s.fd >= 0)
		close(s.fd);
	if (s.old_fd >= 0)
		close(s.old_fd);
	free(dir);
	return rc;
}

/* A stale output is removed only while it is still the file this process
 * left there; anything else at that path is not ours. */
static int commit_stage_stale(struct pi_tpl_item *it, struct pi_templates_error *err)
{
	struct stat st;
	int rc;

	if (lstat(it->output, &st) < 0 || !S_ISREG(st.st_mode) || !commit_same_id(&st, &it->id)) {
		it->unchanged = 1;
		return 0;
	}
	it->existed = 1;
	rc = commit_keep(it);
	if (rc < 0)
		pi_tpl_seterr(err, "cannot keep previous %s: %s", it->output, strerror(-rc));
	return rc;
}

/* Puts one output back as it was before the commit. */
static int commit_restore(struct pi_tpl_item *it)
{
	if (it->keep) {
		if (rename(it->keep, it->output) < 0)
			return -errno;
		free(it->keep);
		it->keep = NULL;
		return 0;
	}
	if (!it->existed && unlink(it->output) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

static void commit_unlink(char **path)
{
	if (*path) {
		unlink(*path);
		free(*path);
		*path = NULL;
	}
}

/* Undoes one output's commit in progress or done. Returns 0 or -errno;
 * the first failure is described in err (when given and still empty). */
static int commit_undo_item(struct pi_tpl_item *it, struct pi_templates_error *err)
{
	int rc = it->renamed ? commit_restore(it) : 0;

	commit_unlink(&it->temp);
	if (rc == 0) {
		commit_unlink(&it->keep);
	} else {
		/* The kept link is now the only copy of the previous output:
		 * leave it on disk for the operator, never unlink it, and say
		 * where it is. */
		if (err && !err->msg[0] && it->keep)
			pi_tpl_seterr(err,
				      "cannot restore %s: %s; the previous file is kept beside it as %s",
				      it->output, strerror(-rc), commit_base(it->keep));
		else if (err && !err->msg[0])
			pi_tpl_seterr(err, "cannot remove %s: %s", it->output, strerror(-rc));
		free(it->keep);
		it->keep = NULL;
	}
	it->renamed = it->existed = it->unchanged = 0;
	return rc;
}

/* Undoes a commit in progress or done: renamed outputs are restored,
 * temp files and new folders removed. Returns the first error, described
 * in err when err is given. */
static int commit_undo(struct pi_templates *t, struct pi_templates_error *err)
{
	int first = 0, rc;

	for (size_t i = t->nstale; i-- > 0;)
		if ((rc = commit_undo_item(&t->stale[i], err)) < 0 && first == 0)
			first = rc;
	for (size_t i = t->n; i-- > 0;)
		if ((rc = commit_undo_item(&t->items[i], err)) < 0 && first == 0)
			first = rc;
	commit_remove_made(t);
	t->committed = 0;
	return first;
}

/* Whether path is one of the set's own outputs, now in place, under
 * another name: an output folder reached through a symbolic link, or a
 * case-insensitive mount (Api.conf then api.conf). Removing it as stale
 * would remove the file just committed. outs holds each output's lstat
 * (st_ino 0 when it failed), taken once for all stale paths. */
static int commit_is_output(const struct stat *outs, size_t n, const char *path)
{
	struct stat a;

	if (lstat(path, &a) < 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (outs[i].st_ino && a.st_dev == outs[i].st_dev && a.st_ino == outs[i].st_ino)
			return 1;
	return 0;
}

/* Removes the stale outputs still ours (step 2's second half). */
static int commit_remove_stale(struct pi_templates *t, struct pi_templates_error *err)
{
	struct stat *outs = NULL;

	if (t->nstale && !(outs = calloc(t->n ? t->n : 1, sizeof(*outs)))) {
		pi_tpl_seterr(err, "out of memory");
		return -ENOMEM;
	}
	for (size_t i = 0; t->nstale && i < t->n; i++)
		if (lstat(t->items[i].output, &outs[i]) < 0)
			outs[i].st_ino = 0;
	for (size_t i = 0; i < t->nstale; i++) {
		struct pi_tpl_item *it = &t->stale[i];

		if (!it->unchanged && commit_is_output(outs, t->n, it->output))
			it->unchanged = 1; /* its kept link goes at settle or undo */
		if (it->unchanged)
			continue;
		if (unlink(it->output) < 0 && errno != ENOENT) {
			int rc = -errno;

			pi_tpl_seterr(err, "cannot remove %s: %s", it->output, strerror(-rc));
			free(outs);
			return rc;
		}
		it->renamed = 1;
	}
	free(outs);
	return 0;
}

/* Step 2: every rename and every stale removal. */
static int commit_swap(struct pi_templates *t, struct pi_templates_error *err)
{
	for (size_t i = 0; i < t->n; i++) {
		struct pi_tpl_item *it = &t->items[i];

		if (it->unchanged)
			continue;
		if (rename(it->temp, it->output) < 0) {
			int rc = -errno;

			pi_tpl_seterr(err, "cannot replace %s: %s", it->output, strerror(-rc));
			return rc;
		}
		it->renamed = 1;
		free(it->temp);
		it->temp = NULL;
	}
	return commit_remove_stale(t, err);
}

int pi_templates_commit(struct pi_templates *t, struct pi_templates_error *err)
{
	int rc = 0;

	err->msg[0] = '\0';
	if (t->committed || !t->env) {
		pi_tpl_seterr(err, "templates already committed");
		return -EALREADY;
	}
	if (t->stale_lost) {
		pi_tpl_seterr(err, "out of memory");
		return -ENOMEM;
	}
	/* Every temp file is complete before the first rename, so a failure
	 * while rendering or writing (a template error, a full disk, a
	 * read-only folder) changes nothing. */
	for (size_t i = 0; i < t->n && rc == 0; i++)
		rc = commit_stage(t, &t->items[i], err);
	for (size_t i = 0; i < t->nstale && rc == 0; i++)
		rc = commit_stage_stale(&t->stale[i], err);
	if (rc == 0)
		rc = commit_swap(t, err);
	pi_tpl_stream_release(t);
	if (rc < 0) {
		commit_undo(t, NULL); /* err already says why the commit failed */
		return rc;
	}
	/* The set now keeps names and hosts only. */
	pi_tpl_env_free(t->env);
	t->env = NULL;
	t->committed = 1;
	return 0;
}

int pi_templates_rollback(struct pi_templates *t, struct pi_templates_error *err)
{
	if (err)
		err->msg[0] = '\0';
	if (!t->committed)
		return 0;
	return commit_undo(t, err);
}

void pi_tpl_commit_cleanup(struct pi_templates *t)
{
	for (size_t i = 0; i < t->n; i++) {
		commit_unlink(&t->items[i].temp);
		commit_unlink(&t->items[i].keep);
	}
	for (size_t i = 0; i < t->nstale; i++) {
		commit_unlink(&t->stale[i].temp);
		commit_unlink(&t->stale[i].keep);
	}
}

void pi_templates_settle(struct pi_templates *t)
{
	if (!t->committed)
		return;
	pi_tpl_commit_cleanup(t);
	for (size_t i = 0; i < t->nmade; i++)
		free(t->made[i]);
	t->nmade = 0;
	t->committed = 0;
}
