/* What the files of the template set share (not a public contract; see
 * templates.h for that):
 *
 *   templates.c   the set: pi_templates_render, accessors, print, free
 *   tpl_env.c     the environment index, host patterns, resolv.conf, hosts
 *   tpl_walk.c    the directory walk that finds the templates
 *   tpl_stream.c  one template rendered piece by piece into a sink
 *   tpl_commit.c  the commit protocol: stage, rename, rollback, settle
 *
 * Ownership: the set owns every string below; the environment index holds
 * its own copies of the variables it needs, so nothing in the set points
 * into the caller's envp after pi_templates_render returns. */
#ifndef PI_TPL_INTERNAL_H
#define PI_TPL_INTERNAL_H

#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include "envsubst/render.h"
#include "envsubst/templates.h"

/* The deepest folder walked (templates.h). */
#define PI_TPL_DEPTH_MAX PI_TEMPLATES_DEPTH_MAX

/* A file as the init left it: device and inode, and (because an inode
 * number is reused as soon as a file is deleted) its size and mtime. */
struct pi_tpl_id {
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
};

/* One output: a template's, or (stale) one a previous set rendered from a
 * template that is gone now. */
struct pi_tpl_item {
	char *source; /* template path; NULL for a stale output */
	char *output; /* output path */
	/* Commit state. */
	char *temp;	     /* the new contents, until renamed over output */
	char *keep;	     /* a hidden link to the previous output, for rollback */
	int existed;	     /* output existed before the commit */
	int unchanged;	     /* ... with exactly the new contents: not touched */
	int renamed;	     /* the new contents are in place (stale: removed) */
	int have_id;	     /* id is known */
	struct pi_tpl_id id; /* the output file as this set left it */
};

struct pi_tpl_host {
	char *var, *value;
	size_t nlen, vlen;
};

struct pi_tpl_env;

struct pi_templates {
	struct pi_tpl_item *items;
	size_t n, cap;
	struct pi_tpl_item *stale; /* outputs to remove at commit */
	size_t nstale, stalecap;
	struct pi_tpl_host *hosts;
	size_t nhosts, hcap;
	char **made; /* folders commit created, outermost first */
	size_t nmade, madecap;
	/* From pi_templates_render until the commit: what rendering needs. */
	struct pi_tpl_env *env;
	char *prefix;
	struct pi_buf in, out, cmp; /* piece buffers, reused by every template */
	int missing, committed;
	int stale_lost; /* supersede ran out of memory */
};

/* ---- shared helpers (templates.c) ---- */
__attribute__((format(printf, 2, 3))) void pi_tpl_seterr(struct pi_templates_error *err,
							 const char *fmt, ...);
/* Grows *arrp (an array of size-byte elements, *cap of them) to hold n + 1. */
int pi_tpl_grow(void *arrp, size_t *cap, size_t n, size_t size);
/* "a/b" in a new string (b alone when a is empty); NULL with errno set. */
char *pi_tpl_join(const char *a, const char *b, size_t blen);
/* read(2) retried on EINTR: the byte count, 0 at the end, or -errno. */
ssize_t pi_tpl_read(int fd, void *p, size_t n);
/* Opens a regular file to read, without blocking on a FIFO: the fd, or
 * -errno (-EISDIR for a folder, -EINVAL for anything else not regular,
 * -EFBIG past max bytes). *st is its status. */
int pi_tpl_open_regular(const char *path, size_t max, struct stat *st);

/* ---- tpl_env.c ---- */
/* Indexes o->envp (copying the variables that start with o->prefix),
 * splits the host patterns, keeps the builtin callback and o->resolv_conf's
 * path (read when a template first refers to NGINX_LOCAL_RESOLVERS and the
 * environment does not set it). Returns 0 or -ENOMEM. */
int pi_tpl_env_new(const struct pi_templates_opts *o, struct pi_tpl_env **out);
void pi_tpl_env_free(struct pi_tpl_env *e);
/* Checks every environment variable naming a host and adds it to t. */
int pi_tpl_env_hosts(struct pi_tpl_env *e, struct pi_templates *t, struct pi_templates_error *err);
/* Render options whose callbacks read e and add default hosts to t. */
void pi_tpl_env_opts(struct pi_tpl_env *e, struct pi_templates *t, const char *prefix,
		     struct pi_render_opts *ro);
/* Adds (var, value) to t's host list unless there. 0 or -ENOMEM. */
int pi_tpl_add_host(struct pi_templates *t, const char *var, size_t nlen, const char *value,
		    size_t vlen);

/* ---- tpl_walk.c ---- */
/* Finds the templates under o->dir (which exists) and adds them to t. */
int pi_tpl_walk(const struct pi_templates_opts *o, const char *dir, struct pi_templates *t,
		struct pi_templates_error *err);

/* ---- tpl_stream.c ---- */
/* Receives rendered bytes; returns 0 or a negative errno (err filled). */
typedef int (*pi_tpl_emit_fn)(void *sink, const char *p, size_t n, struct pi_templates_error *err);
/* Renders the template at source piece by piece, handing the output to
 * emit in chunks of a bounded size. Returns 0 or a negative errno. A large
 * template is mapped, with a SIGBUS handler installed for the length of
 * the call (tpl_stream.c): one thread at a time. */
int pi_tpl_stream(struct pi_templates *t, const char *source, pi_tpl_emit_fn emit, void *sink,
		  struct pi_templates_error *err);
/* Frees the piece buffers. */
void pi_tpl_stream_release(struct pi_templates *t);

/* ---- tpl_commit.c ---- */
/* Removes every temp and kept file the set still holds (not its outputs). */
void pi_tpl_commit_cleanup(struct pi_templates *t);

#endif
