/* Template rendering (SPEC §3): bytes in, bytes out. No I/O, no globals, no
 * libuv; the environment comes through a lookup callback and the kind of
 * each variable through a classify callback, so the same code serves the
 * init, the tests and the fuzzer.
 *
 * Recognised, when NAME ([A-Za-z_][A-Za-z0-9_]*, longest match) starts with
 * the prefix:
 *
 *   $NAME  ${NAME}     the value; unset or empty is an error
 *   ${NAME:-DEFAULT}   the value, or DEFAULT when unset or empty
 *   ${NAME:?MESSAGE}   the value; unset or empty is an error saying MESSAGE
 *
 * DEFAULT and MESSAGE are literal text up to the first '}'. Every other byte
 * is copied unchanged: $host, ${uri}, $1, a lone '$', CR, NUL, invalid
 * UTF-8. Each '$' is looked at on its own, as GNU envsubst does: "$$" is
 * two literal dollars and "$$NGINX_X" is a dollar followed by the value.
 *
 * Error reasons (struct pi_render_error.msg; the caller adds "FILE:LINE:COL: "):
 *
 *   NAME is not set
 *   NAME: MESSAGE                  ${NAME:?MESSAGE}, MESSAGE not empty; its
 *                                  control bytes are shown as '?'
 *   malformed reference to NAME    ${NAME followed by anything but }, :- or :?
 *   NAME is configuration, not a template variable
 *   NAME has an unsafe character at position P of its value
 *   NAME has an unsafe character at position P of its default
 *   NAME is not a valid host name or IP address (position P of its value)
 *   NAME is not a valid host name or IP address (position P of its default)
 *   out of memory / output too large / "host callback failed: <strerror>"
 *
 * P is 1-based, in bytes. A value is never quoted in an error. */
#ifndef PI_RENDER_H
#define PI_RENDER_H

#include <stddef.h>

/* Variable kinds, as returned by the classify callback (a bit set). */
enum {
	/* The value must pass pi_value_check_host; on_host is told about it. */
	PI_RENDER_HOST = 1,
	/* The value is a space-separated list of words (NGINX_LOCAL_RESOLVERS):
	 * spaces are allowed, every other byte must be safe. */
	PI_RENDER_WORDS = 2,
	/* The variable configures the init; any reference to it is an error. */
	PI_RENDER_CONFIG = 4,
};

/* Looks a variable up. name[0..len) is not NUL-terminated. Returns the
 * value and sets *vlen, or returns NULL when the variable is unset. The
 * value must stay valid and unchanged until pi_render returns.
 *
 * Both lookup and classify must answer the same for the same name during
 * one pi_render call: a reference to the variable met just before reuses
 * the answers (and the value's check) instead of asking again. */
typedef const char *(*pi_render_lookup_fn)(void *ctx, const char *name, size_t len, size_t *vlen);

/* Returns the PI_RENDER_* bits of a variable (0: an ordinary variable). */
typedef unsigned (*pi_render_classify_fn)(void *ctx, const char *name, size_t len);

/* Called with the name and value of every substituted host variable, from
 * the environment or a default, after the value passed the host check.
 * Both spans live only for the call. Each (variable, value) pair is
 * reported at least once per pi_render_piece call, but not once per
 * reference: the call remembers the last few variables it met (and the
 * last default reported), so a caller keeping a set of hosts is asked
 * about a pair it already has only when a piece starts or when a template
 * uses many host variables in turn. Returns 0, or a negative errno that
 * stops the rendering with that error. */
typedef int (*pi_render_host_fn)(void *ctx, const char *name, size_t nlen, const char *value,
				 size_t vlen);

struct pi_render_opts {
	const char *prefix;		/* NUL-terminated; NULL or "" matches every name */
	pi_render_lookup_fn lookup;	/* required */
	pi_render_classify_fn classify; /* NULL: every variable is ordinary */
	pi_render_host_fn on_host;	/* NULL: not told */
	void *ctx;			/* passed to the three callbacks */
	/* 0: no limit. Otherwise pi_render_piece stops after the first
	 * reference that brings the bytes it appended to out_limit or more,
	 * even when last is 1, and sets *used there; the caller hands out's
	 * contents on and calls again with the rest. This bounds the output
	 * held in memory whatever the values expand to: at most out_limit
	 * plus the text of the piece plus one value. */
	size_t out_limit;
};

/* A growable byte buffer. The caller owns data (free(3) it); a zeroed
 * struct is an empty buffer. data is not NUL-terminated. */
struct pi_buf {
	char *data;
	size_t len, cap;
};

/* Where and why rendering failed. line and col are 1-based and point at the
 * '$' of the reference (col counts bytes); both are 0 when the error has no
 * place (out of memory). var is the variable's name, cut to 120 bytes and
 * marked with "..." when longer, or "" when there is none. msg is the
 * reason, one line, without the place (see the list above). */
struct pi_render_error {
	unsigned line, col;
	char var[128];
	char msg[384];
};

/* The room pi_render reserves first for a template of len bytes (a quarter
 * more than len), so a caller can allocate the buffer itself. */
size_t pi_render_estimate(size_t len);

/* Renders in[0..len) and appends the result to *out, growing it as needed
 * (it first reserves pi_render_estimate(len) bytes).
 *
 * Returns 0, or a negative errno with *err filled: -EINVAL for a template
 * error, -ENOMEM, -EOVERFLOW when the output would not fit a size_t, or the
 * error on_host returned. On error out->len is back to its value on entry
 * (the appended bytes are discarded; out->data may have been reallocated). */
int pi_render(const char *in, size_t len, const struct pi_render_opts *o, struct pi_buf *out,
	      struct pi_render_error *err);

/* Renders a template that arrives in pieces (a large file read a block at a
 * time), giving the same output, host calls and errors as pi_render on the
 * whole template. in[0..len) is the text not rendered yet; last is 1 when
 * the template ends at len. When last is 0, rendering stops at a '$' whose
 * meaning could change with the bytes after len (a name that reaches len,
 * "${NAME" or "${NAME:" at the end, a DEFAULT or MESSAGE not closed yet):
 * everything before that '$' is appended to *out and *used is its offset.
 * The caller keeps in[*used..len), adds the next bytes after it and calls
 * again, until a call with last = 1 sets *used to len (with o->out_limit
 * set, a call may also stop early; see there).
 *
 * Returns as pi_render. Each call stands alone: err's line and col count
 * from in[0] (line 1, col 1), so the caller adds where in[0] is in the
 * template; a value from lookup need only stay valid during the call; on
 * error out->len is back to its value on entry to this call. */
int pi_render_piece(const char *in, size_t len, int last, const struct pi_render_opts *o,
		    struct pi_buf *out, size_t *used, struct pi_render_error *err);

/* Makes room for at least `more` bytes after out->len. Returns 0, -ENOMEM
 * or -EOVERFLOW; on failure *out is unchanged. */
int pi_buf_reserve(struct pi_buf *out, size_t more);

/* Appends p[0..n). Returns 0, -ENOMEM or -EOVERFLOW (*out unchanged). */
int pi_buf_append(struct pi_buf *out, const void *p, size_t n);

#endif
