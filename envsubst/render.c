/* Template rendering: see render.h. One pass over the template, copying
 * text while looking for the next '$' (pi_render_piece). Line and column
 * are only computed when there is an error to report. */
#include "envsubst/render.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "envsubst/value.h"
#include "envsubst/wide.h"

/* How much of a variable name an error shows. */
#define NAME_SHOWN 120

enum form { FORM_PLAIN, FORM_DEFAULT, FORM_REQUIRED };

/* One reference, as spans into the template. */
struct ref {
	size_t end; /* offset just past the reference */
	const char *name;
	size_t nlen;
	int slot; /* the render_var it names, or -1 when not known yet */
	enum form form;
	const char *word; /* DEFAULT or MESSAGE text */
	size_t wlen;
};

int pi_buf_reserve(struct pi_buf *out, size_t more)
{
	size_t cap;
	char *p;

	if (more <= out->cap - out->len)
		return 0;
	if (more > SIZE_MAX - out->len)
		return -EOVERFLOW;
	/* Grow by half again, so appending n bytes costs O(n) overall while
	 * the slack stays well under the 2x a doubling buffer could waste. */
	cap = out->cap > SIZE_MAX / 3 * 2 ? SIZE_MAX : out->cap + out->cap / 2;
	if (cap < out->len + more)
		cap = out->len + more;
	if (cap < 64)
		cap = 64;
	p = realloc(out->data, cap);
	if (!p)
		return -ENOMEM;
	out->data = p;
	out->cap = cap;
	return 0;
}

int pi_buf_append(struct pi_buf *out, const void *p, size_t n)
{
	int rc;

	if (n == 0)
		return 0;
	rc = pi_buf_reserve(out, n);
	if (rc < 0)
		return rc;
	memcpy(out->data + out->len, p, n);
	out->len += n;
	return 0;
}

/* Name bytes: 1 for [A-Za-z_] (may start a name), 2 for [0-9]. A table,
 * because every '$' in a template is followed by a name scan. */
static const unsigned char name_byte[256] = {
    ['_'] = 1, ['0'] = 2, ['1'] = 2, ['2'] = 2, ['3'] = 2, ['4'] = 2, ['5'] = 2, ['6'] = 2,
    ['7'] = 2, ['8'] = 2, ['9'] = 2, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1,
    ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1,
    ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1,
    ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1,
    ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1,
    ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1,
    ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

/* The end of the name whose second byte may be in[i]: the first byte at
 * or after i that is not [A-Za-z0-9_], or len. Names are scanned for
 * every reference of ours, so 16 bytes are classified at once where SSE2
 * is there (every x86-64): c | 0x20 is in a..z exactly for letters. */
static size_t name_end(const char *in, size_t len, size_t i)
{
#ifdef __SSE2__
	const __m128i lo = _mm_set1_epi8('a' - 1), hi = _mm_set1_epi8('z' + 1);
	const __m128i d0 = _mm_set1_epi8('0' - 1), d9 = _mm_set1_epi8('9' + 1);
	const __m128i us = _mm_set1_epi8('_'), x20 = _mm_set1_epi8(0x20);

	for (; i + 16 <= len; i += 16) {
		__m128i c = _mm_loadu_si128((const __m128i *)(const void *)(in + i));
		__m128i l = _mm_or_si128(c, x20);
		__m128i name = _mm_and_si128(_mm_cmpgt_epi8(l, lo), _mm_cmplt_epi8(l, hi));
		unsigned m;

		name =
		    _mm_or_si128(name, _mm_and_si128(_mm_cmpgt_epi8(c, d0), _mm_cmplt_epi8(c, d9)));
		name = _mm_or_si128(name, _mm_cmpeq_epi8(c, us));
		m = (unsigned)_mm_movemask_epi8(name) ^ 0xffffu;
		if (m)
			return i + (size_t)__builtin_ctz(m);
	}
#endif
	while (i < len && name_byte[(unsigned char)in[i]])
		i++;
	return i;
}

/* A variable met in this pi_render_piece call, with what the callbacks
 * said about it and what was done with its value. Templates name a few
 * variables over and over; the callbacks must give the same answers for
 * the same name (render.h), so each variable is looked up, classified,
 * checked and reported once per call instead of once per reference. */
struct render_var {
	const char *name, *value;
	size_t nlen, vlen;
	unsigned kind;
	int checked; /* value passed its check */
	int told;    /* on_host was told about value */
	/* The value can replace $NAME or ${NAME} with nothing else to do
	 * (set, checked, told): the scanner's fast path copies it at once. */
	int ready;
	/* The name's first 16 bytes (zero after its end) and a bit for each
	 * of them: one 16-byte compare tells whether a name may follow. */
	unsigned char head[16];
	unsigned hmask;
	/* A name of 17 to 32 bytes: its last 16 bytes, for a second compare. */
	unsigned char tail[16];
};

/* The variables remembered (the most recently filled slots win). */
#define RENDER_SLOTS 8

/* What parse_ref makes of a '$'. */
enum parsed {
	REF_TEXT,      /* not a reference of ours: the '$' is copied */
	REF_SUBST,     /* a reference to substitute */
	REF_MALFORMED, /* a malformed reference to a prefixed name */
	REF_CUT,       /* cut off by the end of a piece that is not the last */
};

/* Looks at the '$' at in[p]. r->name is set for REF_SUBST and
 * REF_MALFORMED. When last is 0 and the answer could change with bytes
 * after in[len - 1] (a name that reaches the end, "${NAME" or "${NAME:",
 * a DEFAULT or MESSAGE without its '}' yet), it is REF_CUT; when last is
 * 1 the end is the template's. */
/* The name starting at in[i] (a name's first byte, the prefix's first
 * byte): first tried against the variables met already (one wide compare
 * each, and the byte after must end the name), else scanned. Returns the
 * offset just past the name, or 0 when it is cut by the end of a piece
 * that is not the last. */
static size_t parse_name(const char *in, size_t len, size_t i, int last,
			 const struct render_var *vars, unsigned nvars, struct ref *r)
{
	r->name = in + i;
	r->slot = -1;
	for (unsigned k = 0; k < nvars; k++) {
		size_t n = vars[k].nlen;

		if (n < len - i && !name_byte[(unsigned char)in[i + n]] &&
		    pi_wide_equal(in + i, vars[k].name, n)) {
			r->slot = (int)k;
			r->nlen = n;
			return i + n;
		}
	}
	i = name_end(in, len, i + 1);
	if (i == len && !last)
		return 0;
	r->nlen = (size_t)(in + i - r->name);
	return i;
}

static enum parsed parse_ref(const char *in, size_t len, size_t p, int last, const char *prefix,
			     size_t plen, const struct render_var *vars, unsigned nvars,
			     struct ref *r)
{
	size_t i = p + 1;
	int braced = 0;

	if (i < len && in[i] == '{') {
		braced = 1;
		i++;
	}
	if (i >= len)
		return last ? REF_TEXT : REF_CUT;
	if (name_byte[(unsigned char)in[i]] != 1)
		return REF_TEXT;
	/* Most dollars are nginx's own ($uri, $host): one byte settles it. */
	if (plen && in[i] != prefix[0])
		return REF_TEXT;
	i = parse_name(in, len, i, last, vars, nvars, r);
	if (i == 0)
		return REF_CUT;
	if (r->slot < 0 && (r->nlen < plen || !pi_wide_equal(r->name, prefix, plen)))
		return REF_TEXT;
	r->form = FORM_PLAIN;
	if (!braced) {
		r->end = i;
		return REF_SUBST;
	}
	if (i < len && in[i] == '}') {
		r->end = i + 1;
		return REF_SUBST;
	}
	if (i + 1 < len && in[i] == ':' && (in[i + 1] == '-' || in[i + 1] == '?')) {
		const char *close;

		r->form = in[i + 1] == '-' ? FORM_DEFAULT : FORM_REQUIRED;
		r->word = in + i + 2;
		close = memchr(r->word, '}', len - (i + 2));
		if (close) {
			r->wlen = (size_t)(close - r->word);
			r->end = (size_t)(close - in) + 1;
			return REF_SUBST;
		}
		return last ? REF_MALFORMED : REF_CUT;
	}
	if (!last && i + 1 == len && in[i] == ':')
		return REF_CUT;
	return REF_MALFORMED;
}

size_t pi_render_estimate(size_t len)
{
	/* A quarter more: values are usually somewhat longer than their
	 * references ("${NGINX_X}" for a host name), and growing a large
	 * buffer later costs more than the unused slack. */
	return len > (SIZE_MAX - 64) / 5 * 4 ? len : len + len / 4 + 64;
}

/* Fills the place and the name of an error; the caller writes msg. */
static void locate(struct pi_render_error *err, const char *in, size_t p, const char *name,
		   size_t nlen)
{
	size_t line = 1, bol = 0;
	const char *nl;

	while ((nl = memchr(in + bol, '\n', p - bol)) != NULL) {
		line++;
		bol = (size_t)(nl - in) + 1;
	}
	err->line = line > UINT_MAX ? UINT_MAX : (unsigned)line;
	err->col = p - bol + 1 > UINT_MAX ? UINT_MAX : (unsigned)(p - bol + 1);
	if (nlen > NAME_SHOWN) {
		memcpy(err->var, name, NAME_SHOWN);
		memcpy(err->var + NAME_SHOWN, "...", 4);
	} else {
		memcpy(err->var, name, nlen);
		err->var[nlen] = '\0';
	}
}

static void no_place(struct pi_render_error *err, const char *msg)
{
	err->line = err->col = 0;
	err->var[0] = '\0';
	snprintf(err->msg, sizeof(err->msg), "%s", msg);
}

/* The ${NAME:?MESSAGE} error. MESSAGE comes from the template, so it is
 * trusted text, but it must still fit on one log line. */
static void required_msg(struct pi_render_error *err, const struct ref *r)
{
	size_t n = strlen(err->var), room = sizeof(err->msg) - 1;
	size_t i;

	if (r->wlen == 0) {
		snprintf(err->msg, sizeof(err->msg), "%s is not set", err->var);
		return;
	}
	snprintf(err->msg, sizeof(err->msg), "%s: ", err->var);
	n += 2;
	for (i = 0; i < r->wlen && n < room; i++, n++) {
		unsigned char c = (unsigned char)r->word[i];
		err->msg[n] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
	}
	err->msg[n] = '\0';
}

/* Checks a value as its kind requires; returns 0 or -EINVAL with *bad. */
static int check_value(unsigned kind, const char *v, size_t n, size_t *bad)
{
	if (kind & PI_RENDER_HOST)
		return pi_value_check_host(v, n, bad);
	if (kind & PI_RENDER_WORDS) {
		size_t i = 0;

		while (i < n) {
			const char *sp = memchr(v + i, ' ', n - i);
			size_t wend = sp ? (size_t)(sp - v) : n;

			if (pi_value_check_word(v + i, wend - i, bad) < 0) {
				*bad += i;
				return -EINVAL;
			}
			i = wend + 1;
		}
		return 0;
	}
	return pi_value_check_word(v, n, bad);
}

static int fail_oom(int rc, struct pi_render_error *err)
{
	no_place(err, rc == -ENOMEM ? "out of memory" : "output too large");
	return rc;
}

enum reason { R_MALFORMED, R_CONFIG, R_UNSET, R_REQUIRED, R_UNSAFE, R_HOST };

/* Fills *err for a template error at the reference starting at in[p].
 * Kept out of the loop: finding the line means counting newlines from the
 * start, which must only happen once, when rendering stops. */
static int report(struct pi_render_error *err, const char *in, size_t p, const struct ref *r,
		  enum reason why, size_t bad, int from_default)
{
	const char *what = from_default ? "default" : "value";

	locate(err, in, p, r->name, r->nlen);
	switch (why) {
	case R_MALFORMED:
		snprintf(err->msg, sizeof(err->msg), "malformed reference to %s", err->var);
		break;
	case R_CONFIG:
		snprintf(err->msg, sizeof(err->msg), "%s is configuration, not a template variable",
			 err->var);
		break;
	case R_UNSET:
		snprintf(err->msg, sizeof(err->msg), "%s is not set", err->var);
		break;
	case R_REQUIRED:
		required_msg(err, r);
		break;
	case R_UNSAFE:
		snprintf(err->msg, sizeof(err->msg),
			 "%s has an unsafe character at position %zu of its %s", err->var, bad + 1,
			 what);
		break;
	case R_HOST:
		snprintf(err->msg, sizeof(err->msg),
			 "%s is not a valid host name or IP address (position %zu of its %s)",
			 err->var, bad + 1, what);
		break;
	}
	return -EINVAL;
}

struct render_state {
	const struct pi_render_opts *o;
	const char *prefix;
	size_t plen;
	struct render_var var[RENDER_SLOTS];
	unsigned nvars, next;
	unsigned hit; /* the slot render_known found last: tried first */
	/* Defaults sit at a new place for every reference: the last one
	 * checked and the last host told are compared by content. */
	const char *dflt, *told_name, *told;
	size_t dflt_len, told_nlen, told_len;
	unsigned dflt_kind;
};

/* The slot of r's variable, filled from the callbacks when it is new. */
static struct render_var *render_var_of(struct render_state *st, const struct ref *r)
{
	const struct pi_render_opts *o = st->o;
	struct render_var *v;

	/* parse_name found the slot where it could; a name at the very end
	 * of the input is looked for here. */
	if (r->slot >= 0)
		return &st->var[r->slot];
	for (unsigned i = 0; i < st->nvars; i++) {
		v = &st->var[i];
		if (v->nlen == r->nlen && pi_wide_equal(r->name, v->name, r->nlen))
			return v;
	}
	v = &st->var[st->next];
	st->next = (st->next + 1) % RENDER_SLOTS;
	if (st->nvars < RENDER_SLOTS)
		st->nvars++;
	*v = (struct render_var){.name = r->name, .nlen = r->nlen};
	memcpy(v->head, r->name, r->nlen < 16 ? r->nlen : 16);
	v->hmask = r->nlen < 16 ? (1u << r->nlen) - 1 : 0xffffu;
	if (r->nlen > 16)
		memcpy(v->tail, r->name + r->nlen - 16, 16);
	v->kind = o->classify ? o->classify(o->ctx, r->name, r->nlen) : 0;
	v->value = o->lookup(o->ctx, r->name, r->nlen, &v->vlen);
	if (!v->value)
		v->vlen = 0;
	return v;
}

/* Reports a host to on_host; 0 or the callback's error in *err. */
static int render_tell(struct render_state *st, const char *in, size_t p, const struct ref *r,
		       const char *v, size_t vlen, struct pi_render_error *err)
{
	const struct pi_render_opts *o = st->o;
	int rc;

	if (!o->on_host)
		return 0;
	rc = o->on_host(o->ctx, r->name, r->nlen, v, vlen);
	if (rc < 0) {
		locate(err, in, p, r->name, r->nlen);
		snprintf(err->msg, sizeof(err->msg), "host callback failed: %s", strerror(-rc));
	}
	return rc;
}

/* A ${NAME:-DEFAULT} whose variable is unset or empty: the default is
 * checked and (for a host) reported unless it equals the last one. */
static int render_default(struct render_state *st, const char *in, size_t p, const struct ref *r,
			  unsigned kind, struct pi_render_error *err)
{
	size_t bad = 0;
	int rc;

	if (!(st->dflt && kind == st->dflt_kind && r->wlen == st->dflt_len &&
	      pi_wide_equal(r->word, st->dflt, r->wlen))) {
		if (check_value(kind, r->word, r->wlen, &bad) < 0)
			return report(err, in, p, r, (kind & PI_RENDER_HOST) ? R_HOST : R_UNSAFE,
				      bad, 1);
		st->dflt = r->word;
		st->dflt_len = r->wlen;
		st->dflt_kind = kind;
	}
	if (!(kind & PI_RENDER_HOST) ||
	    (st->told && r->nlen == st->told_nlen && r->wlen == st->told_len &&
	     pi_wide_equal(r->name, st->told_name, r->nlen) &&
	     pi_wide_equal(r->word, st->told, r->wlen)))
		return 0;
	rc = render_tell(st, in, p, r, r->word, r->wlen, err);
	if (rc == 0) {
		st->told_name = r->name;
		st->told_nlen = r->nlen;
		st->told = r->word;
		st->told_len = r->wlen;
	}
	return rc;
}

/* Finds the value that replaces the reference r at in[p] and checks it.
 * Returns 0 with *v and *vlen set, or a negative errno with *err filled. */
static int render_value(struct render_state *st, const char *in, size_t p, const struct ref *r,
			const char **v, size_t *vlen, struct pi_render_error *err)
{
	struct render_var *var = render_var_of(st, r);
	size_t bad = 0;
	int rc;

	if (var->kind & PI_RENDER_CONFIG)
		return report(err, in, p, r, R_CONFIG, 0, 0);
	if (var->vlen == 0) {
		if (r->form != FORM_DEFAULT)
			return report(err, in, p, r,
				      r->form == FORM_REQUIRED ? R_REQUIRED : R_UNSET, 0, 0);
		*v = r->word;
		*vlen = r->wlen;
		return render_default(st, in, p, r, var->kind, err);
	}
	*v = var->value;
	*vlen = var->vlen;
	if (!var->checked) {
		if (check_value(var->kind, *v, *vlen, &bad) < 0)
			return report(err, in, p, r,
				      (var->kind & PI_RENDER_HOST) ? R_HOST : R_UNSAFE, bad, 0);
		var->checked = 1;
	}
	if ((var->kind & PI_RENDER_HOST) && !var->told) {
		if ((rc = render_tell(st, in, p, r, *v, *vlen, err)) < 0)
			return rc;
		var->told = 1;
	}
	var->ready = 1;
	return 0;
}

/* Makes room after out->len for `more` bytes and then `rest`, what is
 * left of the piece: the scanner copies text without looking at the room
 * left, so there is always room for the rest of the piece as it is. */
static int render_room(struct pi_buf *out, size_t rest, size_t more, struct pi_render_error *err)
{
	int rc;

	if (rest > SIZE_MAX - more)
		return fail_oom(-EOVERFLOW, err);
	if (rest + more > out->cap - out->len && (rc = pi_buf_reserve(out, rest + more)) < 0)
		return fail_oom(rc, err);
	return 0;
}

/* What render_ref made of a '$'. */
enum step { STEP_TEXT, STEP_SUBST, STEP_CUT };

/* The '$' at in[p] the long way, every form and every error: out holds
 * everything before it. Returns a step with *next where the scan goes on,
 * or a negative errno with *err filled. */
static int render_ref(struct render_state *st, const char *in, size_t len, size_t p, int last,
		      struct pi_buf *out, size_t *next, struct pi_render_error *err)
{
	struct ref r;
	const char *v = NULL;
	size_t vlen = 0;
	int rc;

	switch (parse_ref(in, len, p, last, st->prefix, st->plen, st->var, st->nvars, &r)) {
	case REF_TEXT:
		out->data[out->len++] = '$'; /* the room for the rest holds it */
		*next = p + 1;
		return STEP_TEXT;
	case REF_CUT:
		return STEP_CUT;
	case REF_MALFORMED:
		return report(err, in, p, &r, R_MALFORMED, 0, 0);
	case REF_SUBST:
		break;
	}
	if ((rc = render_value(st, in, p, &r, &v, &vlen, err)) < 0 ||
	    (rc = render_room(out, len - r.end, vlen, err)) < 0)
		return rc;
	pi_wide_copy(out->data + out->len, v, vlen);
	out->len += vlen;
	*next = r.end;
	return STEP_SUBST;
}

/* The slot of the variable whose name starts at q (just after "$" or
 * "${") and ends as the reference's form requires, or NULL. The caller
 * made sure that 17 bytes from q on can be read. The slots are tried from
 * the one found last: a variable often comes twice in a row. */
static const struct render_var *render_known(struct render_state *st, const char *q,
					     const char *end, int braced)
{
#ifdef __SSE2__
	const __m128i h = _mm_loadu_si128((const __m128i *)(const void *)q);
#endif
	unsigned k = st->hit;

	for (unsigned i = 0; i < st->nvars; i++, k = k + 1 < st->nvars ? k + 1 : 0) {
		const struct render_var *v = &st->var[k];
		size_t n = v->nlen;
		unsigned char after;

#ifdef __SSE2__
		__m128i c =
		    _mm_cmpeq_epi8(h, _mm_loadu_si128((const __m128i *)(const void *)v->head));

		if (((unsigned)_mm_movemask_epi8(c) & v->hmask) != v->hmask)
			continue;
#else
		if (!pi_wide_equal(q, v->head, n < 16 ? n : 16))
			continue;
#endif
		if (n > 16) {
			if ((size_t)(end - q) <= n)
				continue;
#ifdef __SSE2__
			if (n <= 32) {
				c = _mm_cmpeq_epi8(
				    _mm_loadu_si128((const __m128i *)(const void *)(q + n - 16)),
				    _mm_loadu_si128((const __m128i *)(const void *)v->tail));
				if (_mm_movemask_epi8(c) != 0xffff)
					continue;
			} else
#endif
			    if (!pi_wide_equal(q + 16, v->name + 16, n - 16))
				continue;
		}
		after = (unsigned char)q[n];
		if (braced ? after == '}' : !name_byte[after]) {
			st->hit = k;
			return v;
		}
	}
	return NULL;
}

/* The scan: text is copied 16 bytes at a time while looking for '$' (the
 * copy goes on past the '$' into room that is there anyway, and is
 * overwritten); a '$' that names a variable already met and ready goes
 * through a fast path, everything else through render_ref. The write
 * position and the buffer's bounds live in locals while scanning: stores
 * through a char pointer would otherwise make the compiler reload *out
 * after each one. */
int pi_render_piece(const char *in, size_t len, int last, const struct pi_render_opts *o,
		    struct pi_buf *out, size_t *used, struct pi_render_error *err)
{
	struct render_state st = {.o = o, .prefix = o->prefix ? o->prefix : ""};
	const char *s = in, *end = in + len;
	size_t start_len = out->len, stop = len, next = 0, limit;
	unsigned char first;
	char *base, *w, *wend;
	int rc;
#ifdef __SSE2__
	const __m128i dollar = _mm_set1_epi8('$');
#endif

	st.plen = strlen(st.prefix);
	first = (unsigned char)st.prefix[0];
	/* Where out_limit stops the piece, as an offset in out. */
	limit = o->out_limit && o->out_limit <= SIZE_MAX - start_len ? start_len + o->out_limit
								     : SIZE_MAX;
	rc = pi_buf_reserve(
	    out, pi_render_estimate(o->out_limit && o->out_limit < len ? o->out_limit : len));
	if (rc < 0)
		return fail_oom(rc, err);
	if ((rc = render_room(out, len, 0, err)) < 0)
		return rc;
	base = out->data;
	w = base + out->len;
	wend = base + out->cap;
	for (;;) {
		const struct render_var *v;
		const char *q;

#ifdef __SSE2__
		for (; end - s >= 16; s += 16, w += 16) {
			__m128i x = _mm_loadu_si128((const __m128i *)(const void *)s);
			unsigned m = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(x, dollar));

			_mm_storeu_si128((__m128i *)(void *)w, x);
			if (m) {
				s += __builtin_ctz(m);
				w += __builtin_ctz(m);
				goto dollar;
			}
		}
#endif
		q = memchr(s, '$', (size_t)(end - s));
		pi_wide_copy(w, s, (size_t)((q ? q : end) - s));
		w += (q ? q : end) - s;
		if (!q)
			break;
		s = q;
#ifdef __SSE2__
	dollar:
#endif
		/* The fast path: "$NAME" or "${NAME}" of a variable met. */
		if (end - s >= 19) {
			int braced = s[1] == '{';

			q = s + 1 + braced;
			if (name_byte[(unsigned char)*q] != 1 ||
			    (first && (unsigned char)*q != first)) {
				*w++ = '$';
				s++;
				continue;
			}
			v = render_known(&st, q, end, braced);
			if (v && v->ready) {
				const char *after = q + v->nlen + braced;

				/* The room for the rest of the piece is there; the
				 * value needs its own. */
				if ((size_t)(wend - w) - (size_t)(end - after) < v->vlen) {
					out->len = (size_t)(w - base);
					if ((rc = render_room(out, (size_t)(end - after), v->vlen,
							      err)) < 0)
						goto fail;
					base = out->data;
					w = base + out->len;
					wend = base + out->cap;
				}
				pi_wide_copy(w, v->value, v->vlen);
				w += v->vlen;
				s = after;
				goto substituted;
			}
		}
		out->len = (size_t)(w - base);
		rc = render_ref(&st, in, len, (size_t)(s - in), last, out, &next, err);
		if (rc < 0)
			goto fail;
		if (rc == STEP_CUT) {
			stop = (size_t)(s - in);
			break;
		}
		base = out->data;
		w = base + out->len;
		wend = base + out->cap;
		s = in + next;
		if (rc == STEP_TEXT)
			continue;
	substituted:
		if ((size_t)(w - base) >= limit) {
			stop = (size_t)(s - in);
			break;
		}
	}
	out->len = (size_t)(w - base);
	*used = stop;
	return 0;
fail:
	out->len = start_len;
	return rc;
}

int pi_render(const char *in, size_t len, const struct pi_render_opts *o, struct pi_buf *out,
	      struct pi_render_error *err)
{
	size_t used;

	return pi_render_piece(in, len, 1, o, out, &used, err);
}
