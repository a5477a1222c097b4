/* Template folders (SPEC §3): find every template under templates.dir,
 * render each one straight into a temp file beside its output, then swap
 * the outputs in all at once, and put the previous files back when asked
 * (a failed config test).
 *
 *   pi_templates_render    walk + environment; renders and writes nothing
 *   pi_templates_supersede tell a new set which set it replaces
 *   pi_templates_print     render --stdout
 *   pi_templates_commit    render into temp files, then rename each over
 *   pi_templates_rollback  undo a successful commit
 *   pi_templates_settle    keep a successful commit for good
 *   pi_templates_free      release (never touches an output)
 *
 * Memory: templates are rendered piece by piece (a block of the template
 * in, a bounded chunk of output out), so a render needs the same one or
 * two MiB whatever the template's size, and a committed set keeps only
 * file names and the host list. A template of 1 MiB or more is mapped a
 * window at a time rather than read; one truncated while it is rendered
 * is an error of the render (a SIGBUS handler is installed for the length
 * of each such template: one thread at a time renders).
 *
 * Walk: templates.dir is read recursively, entries of each folder in
 * strcmp(3) order, depth first, symbolic links followed. A folder is
 * walked once, known by (device, inode): one reached again through another
 * link is skipped, so its templates render once, under the first path in
 * walk order. A link back to an enclosing folder is an error, and so is a
 * folder more than PI_TEMPLATES_DEPTH_MAX levels deep (templates.dir is
 * level 1). Names starting with '.' are skipped: they are hidden files,
 * Kubernetes' "..data" mounts and our own temp files.
 * A regular file ending in `suffix` (and longer than it) renders to
 * output_dir with the suffix removed; one ending in `stream_suffix` renders
 * to stream_output_dir; when both match, the longer suffix wins. Sub-folders
 * are mirrored. Other files are ignored. A missing templates.dir means no
 * templates, not an error.
 *
 * Variables: looked up in envp (the first of duplicates wins, as getenv
 * does), then in the opts' builtin callback. NGINX_LOCAL_RESOLVERS, when
 * not in envp, is the `nameserver`
 * addresses of resolv_conf, space-separated, IPv6 in brackets with any
 * zone index dropped; unset when the file is missing or lists none.
 * NGINX_ENVSUBST_* and NGINX_ENTRYPOINT_QUIET_LOGS configure the init; a
 * template referring to one of them is an error ("NAME is configuration,
 * not a template variable"), even with a default.
 *
 * Error lines (struct pi_templates_error.msg), one line each:
 *   TEMPLATE:LINE:COL: REASON          REASON as listed in render.h
 *   TEMPLATE: out of memory
 *   NAME is not a valid host name or IP address (position P of its value)
 *   NAME is empty but names an upstream host
 *   cannot read templates folder DIR: STRERROR
 *   cannot read template PATH: STRERROR
 *   cannot read template PATH: it was truncated or could not be read while it was rendered
 *   template PATH is larger than 512 MiB
 *   folder DIR is inside itself (symbolic link loop)
 *   folder DIR is too deep: level N, the limit is 32
 *   templates A and B both render to OUTPUT
 *   path too long: PATH...
 *   cannot create output folder DIR: STRERROR
 *   cannot write OUTPUT: STRERROR (its temp file beside it, or its copy)
 *   cannot read previous OUTPUT: STRERROR
 *   cannot replace OUTPUT: not a regular file
 *   cannot replace OUTPUT: STRERROR
 *   cannot keep previous OUTPUT: STRERROR
 *   cannot remove OUTPUT: STRERROR
 *   cannot write to standard output: STRERROR
 *   out of memory
 * Values never appear in an error. */
#ifndef PI_TEMPLATES_H
#define PI_TEMPLATES_H

#include <stddef.h>
#include <stdio.h>

/* Largest template read, so a stray huge file cannot stall a reload. */
#define PI_TEMPLATES_MAX_SIZE (512u << 20)
/* The deepest folder walked, templates.dir being level 1. */
#define PI_TEMPLATES_DEPTH_MAX 32

/* A built-in variable's value (not NUL-terminated: *vlen bytes), or NULL
 * when name (len bytes) is not one. */
typedef const char *(*pi_templates_builtin_fn)(void *ctx, const char *name, size_t len,
					       size_t *vlen);

/* All strings are borrowed for the duration of pi_templates_render only. */
struct pi_templates_opts {
	const char *dir;	       /* templates.dir */
	const char *suffix;	       /* NULL: ".template" */
	const char *output_dir;	       /* NULL: "/etc/nginx/conf.d" */
	const char *stream_suffix;     /* NULL: ".stream-template" */
	const char *stream_output_dir; /* NULL: "/etc/nginx/stream-conf.d" */
	const char *prefix;	       /* NULL: "NGINX_" */
	const char *hosts;	       /* space-separated fnmatch(3) patterns over variable names */
	const char *resolv_conf;       /* NULL: "/etc/resolv.conf" */
	char *const *envp;	       /* the environment to substitute from; NULL: environ */
	/* Values for the variables envp does not set, asked only when a
	 * template refers to one (NULL: none). Unlike the rest of the opts,
	 * builtin and builtin_ctx are kept by the set and must outlive it;
	 * an answer must stay valid and the same for the life of the set. */
	pi_templates_builtin_fn builtin;
	void *builtin_ctx;
};

struct pi_templates_error {
	char msg[1024];
};

struct pi_templates;

/* Finds every template and indexes the environment (copying what it
 * needs: the opts' strings and envp are borrowed for this call only);
 * checks the environment's host variables; renders and writes nothing.
 * On success *out is a new set the caller frees with pi_templates_free.
 * Returns 0, or a negative errno with err->msg set and *out untouched:
 * -EINVAL for a host value or two templates with one output, else the
 * errno of the failed read (or -ENOMEM, -ELOOP, -ENAMETOOLONG). Template
 * errors are found when rendering: by pi_templates_commit or _print. */
int pi_templates_render(const struct pi_templates_opts *o, struct pi_templates **out,
			struct pi_templates_error *err);

/* Tells t, before its commit, that it replaces prev (a committed set that
 * may be freed right after this call: nothing of it is kept). Outputs prev
 * rendered whose template t does not have any more are removed by t's
 * commit, in the same all-or-nothing step, and put back by its rollback:
 * only while each is still the very file prev left there (device, inode,
 * size and mtime: an inode number alone is reused once a file is deleted);
 * a file someone else put at that path is never touched. prev may be NULL.
 * Without memory to note them, t's commit fails with "out of memory". */
void pi_templates_supersede(struct pi_templates *t, const struct pi_templates *prev);

/* 1 when templates.dir did not exist (so there are no templates). */
int pi_templates_missing(const struct pi_templates *t);

/* The templates, in walk order. Paths live as long as t; i must be below
 * pi_templates_count. */
size_t pi_templates_count(const struct pi_templates *t);
const char *pi_templates_output(const struct pi_templates *t, size_t i);
const char *pi_templates_source(const struct pi_templates *t, size_t i);

/* The upstream hosts, unique (variable, value) pairs: first every
 * environment variable matching opts->hosts, in name order (each was
 * checked with pi_value_check_host), then every host variable a template
 * took from a ${NAME:-DEFAULT}, in the order met (known once the templates
 * are rendered: after pi_templates_commit or _print). Strings live as long
 * as t. */
size_t pi_templates_nhosts(const struct pi_templates *t);
void pi_templates_host(const struct pi_templates *t, size_t i, const char **var,
		       const char **value);

/* render --stdout: each output as a line "# ==> OUTPUT_PATH" followed by
 * its rendered text, streamed. Every template is rendered once to nowhere
 * first, so a template error prints nothing at all. Returns 0, -EIO when
 * writing f failed, -EALREADY after a commit, or a template's error, with
 * err->msg set. */
int pi_templates_print(struct pi_templates *t, FILE *f, struct pi_templates_error *err);

/* Renders and writes every output: creates missing output folders, then
 * for each template renders it piece by piece, comparing the stream with
 * the previous output (an output whose contents would not change is left
 * alone) and writing it from the first difference on to a temp file
 * ".NAME.XXXXXX" in the output's folder; keeps the previous output under a
 * hidden link ".NAME.keep-XXXXXXXX" beside it (link(2): no disk space);
 * and only when every temp file is written renames them over the outputs
 * and removes stale ones (see pi_templates_supersede). Only regular files
 * are replaced: anything else at an output path (a folder, a FIFO) is an
 * error naming it, found before anything changed. New files get mode 0644;
 * replaced ones keep their mode. No fsync: a crash is followed by a
 * container restart, which renders again.
 *
 * Returns 0, or a negative errno with err->msg set (-EINVAL for a template
 * error), after undoing every rename already done, removing every temp
 * file, kept link and folder it created: no output is left changed.
 * -EALREADY when already committed. After success the set keeps only
 * names and hosts. */
int pi_templates_commit(struct pi_templates *t, struct pi_templates_error *err);

/* After a successful commit: renames every kept previous output back over
 * its output (no disk space needed), removes outputs that did not exist
 * before and the folders commit created. Keeps going past failures;
 * returns 0 or the first negative errno, and err (may be NULL) says which
 * output and the name of the hidden link beside it that holds its
 * previous file (the only copy once its rename back failed). A second call, or one
 * without a commit or after pi_templates_settle, does nothing. */
int pi_templates_rollback(struct pi_templates *t, struct pi_templates_error *err);

/* After a successful commit that will not be rolled back (the config test
 * passed): removes the kept previous outputs. Without it they go at
 * pi_templates_free. */
void pi_templates_settle(struct pi_templates *t);

/* Frees t and everything it holds; NULL is fine. Outputs are not touched
 * (after a commit the new ones stay); the set's own hidden temp files and
 * kept links are removed. */
void pi_templates_free(struct pi_templates *t);

#endif
