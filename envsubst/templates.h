/* Template folders (SPEC §3): find every template under templates.dir,
 * render all of them in memory, then swap the outputs in all at once, and
 * put the previous files back when asked (a failed config test).
 *
 *   pi_templates_render   walk + read + render; writes nothing
 *   pi_templates_print    render --stdout
 *   pi_templates_commit   temp file per output, then rename each over
 *   pi_templates_rollback undo a successful commit
 *   pi_templates_free     release (does not touch any file)
 *
 * Walk: templates.dir is read recursively, entries of each folder in
 * strcmp(3) order, depth first, symbolic links followed (a link back to an
 * enclosing folder is an error). Names starting with '.' are skipped: they
 * are hidden files, Kubernetes' "..data" mounts and our own temp files.
 * A regular file ending in `suffix` (and longer than it) renders to
 * output_dir with the suffix removed; one ending in `stream_suffix` renders
 * to stream_output_dir; when both match, the longer suffix wins. Sub-folders
 * are mirrored. Other files are ignored. A missing templates.dir means no
 * templates, not an error.
 *
 * Variables: looked up in envp (the first of duplicates wins, as getenv
 * does). NGINX_LOCAL_RESOLVERS, when not in envp, is the `nameserver`
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
 *   template PATH is larger than 512 MiB
 *   folder DIR is inside itself (symbolic link loop)
 *   templates A and B both render to OUTPUT
 *   path too long: PATH...
 *   cannot create output folder DIR: STRERROR
 *   cannot write to output folder DIR: STRERROR
 *   cannot read previous OUTPUT: STRERROR
 *   cannot replace OUTPUT: STRERROR
 *   out of memory
 * Values never appear in an error. */
#ifndef PI_TEMPLATES_H
#define PI_TEMPLATES_H

#include <stddef.h>
#include <stdio.h>

/* Largest template read, so a stray huge file cannot exhaust memory. */
#define PI_TEMPLATES_MAX_SIZE (512u << 20)

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
};

struct pi_templates_error {
	char msg[1024];
};

struct pi_templates;

/* Finds and renders every template in memory and collects the host
 * variables; writes nothing. On success *out is a new set the caller frees
 * with pi_templates_free. Returns 0, or a negative errno with err->msg set
 * and *out untouched: -EINVAL for a template or value error, else the
 * errno of the failed read (or -ENOMEM, -ELOOP, -ENAMETOOLONG, -EFBIG). */
int pi_templates_render(const struct pi_templates_opts *o, struct pi_templates **out,
			struct pi_templates_error *err);

/* 1 when templates.dir did not exist (so there are no templates). */
int pi_templates_missing(const struct pi_templates *t);

/* The templates, in walk order. Paths and data live as long as t;
 * i must be below pi_templates_count. */
size_t pi_templates_count(const struct pi_templates *t);
const char *pi_templates_output(const struct pi_templates *t, size_t i);
const char *pi_templates_source(const struct pi_templates *t, size_t i);
/* The rendered bytes (not NUL-terminated) and their length. */
const char *pi_templates_data(const struct pi_templates *t, size_t i, size_t *len);

/* The upstream hosts, unique (variable, value) pairs: first every
 * environment variable matching opts->hosts, in name order (each was
 * checked with pi_value_check_host), then every host variable a template
 * took from a ${NAME:-DEFAULT}, in the order met. Strings live as long as t. */
size_t pi_templates_nhosts(const struct pi_templates *t);
void pi_templates_host(const struct pi_templates *t, size_t i, const char **var,
		       const char **value);

/* render --stdout: each output as a line "# ==> OUTPUT_PATH" followed by
 * its rendered text. Returns 0 or -EIO when writing f failed. */
int pi_templates_print(const struct pi_templates *t, FILE *f);

/* Writes every output: creates missing output folders, remembers each
 * output's previous contents and mode (or its absence), writes the new text
 * to a temp file ".NAME.XXXXXX" in the output's folder, and only when every
 * temp file is written renames them over the outputs. An output whose
 * previous contents equal the new ones is left alone. New files get mode
 * 0644; replaced ones keep their mode. No fsync: a crash is followed by a
 * container restart, which renders again.
 *
 * Returns 0, or a negative errno with err->msg set, after undoing every
 * rename already done, removing every temp file and every folder it
 * created: no output is left changed. -EALREADY when already committed. */
int pi_templates_commit(struct pi_templates *t, struct pi_templates_error *err);

/* After a successful commit: puts every replaced output back (through a
 * temp file and rename), removes outputs that did not exist before and the
 * folders commit created. Keeps going past failures; returns 0 or the first
 * negative errno. A second call, or one without a commit, does nothing. */
int pi_templates_rollback(struct pi_templates *t);

/* Frees t and everything it holds; NULL is fine. Files are not touched:
 * after a commit the new outputs stay. */
void pi_templates_free(struct pi_templates *t);

#endif
