/* libFuzzer harness for envsubst/render.c.
 *
 * Input: an environment, a NUL byte, then the template (no NUL: all of it
 * is the template). The environment is "NAME=VALUE" lines; the first of
 * duplicate names wins. The prefix is "N_" so short inputs reach every
 * path; names ending in "_H" are hosts, "N_W" is a word list, names
 * starting with "N_C" are configuration.
 *
 * Properties checked, beyond "no crash":
 *   - pi_render succeeds exactly when a naive byte-at-a-time reference
 *     expander below does, and then the outputs are identical (so every
 *     byte outside a reference is copied unchanged);
 *   - on error the reported line and column are those of the reference the
 *     expander stopped at, the message is one non-empty line, and the
 *     output buffer holds exactly what it held before;
 *   - on_host reports exactly the (variable, value) pairs substituted for
 *     host variables, each first at its first reference, and is called at
 *     most once per reference;
 *   - pi_value_check_host accepts nothing pi_value_check_word refuses, and
 *     both report a position inside the value;
 *   - pi_render_piece fed the template a few bytes at a time (up to 8,
 *     then up to 96), as templates.c feeds it from read(2), with or
 *     without an output limit
 *     (out_limit, which may stop even the last piece early), gives the
 *     same output, host pairs and error (line and column included) as one
 *     pi_render. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envsubst/render.h"
#include "envsubst/value.h"

#define PREFIX "N_"

struct env {
	const uint8_t *data;
	size_t len;
	unsigned hosts_seen; /* on_host calls */
	struct pi_buf pairs; /* the pairs reported, each once, in order */
};

/* Adds "name\1value\2" to *b unless it is there. */
static void pairs_add(struct pi_buf *b, const char *name, size_t nlen, const char *v, size_t vlen)
{
	struct pi_buf one = {0};
	int have = 0;

	pi_buf_append(&one, name, nlen);
	pi_buf_append(&one, "\1", 1);
	pi_buf_append(&one, v, vlen);
	pi_buf_append(&one, "\2", 1);
	/* Entries end in \2 and hold no \2 (values are checked words). */
	for (size_t i = 0; i + one.len <= b->len && !have;) {
		const char *end = memchr(b->data + i, '\2', b->len - i);
		size_t n = (size_t)(end - (b->data + i)) + 1;

		have = n == one.len && memcmp(b->data + i, one.data, n) == 0;
		i += n;
	}
	if (!have)
		pi_buf_append(b, one.data, one.len);
	free(one.data);
}

static int same_pairs(const struct pi_buf *a, const struct pi_buf *b)
{
	return a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

static const char *lookup(void *ctx, const char *name, size_t len, size_t *vlen)
{
	const struct env *e = ctx;
	size_t i = 0;

	while (i < e->len) {
		const uint8_t *line = e->data + i;
		const uint8_t *nl = memchr(line, '\n', e->len - i);
		size_t n = nl ? (size_t)(nl - line) : e->len - i;

		if (n > len && line[len] == '=' && memcmp(line, name, len) == 0) {
			*vlen = n - len - 1;
			return (const char *)line + len + 1;
		}
		i += n + 1;
	}
	return NULL;
}

static unsigned classify(void *ctx, const char *name, size_t len)
{
	(void)ctx;
	if (len >= 3 && memcmp(name, "N_C", 3) == 0)
		return PI_RENDER_CONFIG;
	if (len == 3 && memcmp(name, "N_W", 3) == 0)
		return PI_RENDER_WORDS;
	if (len >= 2 && memcmp(name + len - 2, "_H", 2) == 0)
		return PI_RENDER_HOST;
	return 0;
}

static int on_host(void *ctx, const char *name, size_t nlen, const char *value, size_t vlen)
{
	struct env *e = ctx;

	e->hosts_seen++;
	pairs_add(&e->pairs, name, nlen, value, vlen);
	return 0;
}

/* ---- the reference expander: slow, simple, written from SPEC §3 ---- */

static int ref_unsafe(uint8_t c, int allow_space)
{
	if (c == ' ')
		return !allow_space;
	return c < 0x20 || c == 0x7f || strchr(";{}#\"'\\$", c) != NULL;
}

static int ref_value_ok(unsigned kind, const char *v, size_t n)
{
	if (kind & PI_RENDER_HOST)
		return pi_value_check_host(v, n, NULL) == 0;
	for (size_t i = 0; i < n; i++)
		if (ref_unsafe((uint8_t)v[i], (kind & PI_RENDER_WORDS) != 0))
			return 0;
	return 1;
}

static int is_alpha_(uint8_t c)
{
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* A plain growing output, separate from pi_buf so the check does not
 * lean on the code under test. */
struct ref_out {
	uint8_t *data;
	size_t len, cap;
};

static void emit(struct ref_out *r, const void *p, size_t n)
{
	if (n == 0)
		return;
	if (r->len + n > r->cap) {
		r->cap = (r->len + n) * 2;
		r->data = realloc(r->data, r->cap);
		if (!r->data)
			abort();
	}
	memcpy(r->data + r->len, p, n);
	r->len += n;
}

/* Expands in[0..len) into *out. Returns 0, or -1 with *at = offset of the
 * failing '$'. */
static int ref_expand(const uint8_t *in, size_t len, struct env *e, struct ref_out *out, size_t *at,
		      unsigned *hosts, struct pi_buf *pairs)
{
	size_t i = 0;

	while (i < len) {
		size_t j, k, end, wstart = 0, wlen = 0, vlen = 0;
		int braced, form = 0; /* 0 plain, 1 default, 2 required */
		const char *v;
		unsigned kind;

		if (in[i] != '$') {
			emit(out, in + i++, 1);
			continue;
		}
		j = i + 1;
		braced = j < len && in[j] == '{';
		if (braced)
			j++;
		k = j;
		if (k < len && is_alpha_(in[k]))
			while (k < len && (is_alpha_(in[k]) || (in[k] >= '0' && in[k] <= '9')))
				k++;
		if (k - j < strlen(PREFIX) || memcmp(in + j, PREFIX, strlen(PREFIX)) != 0) {
			emit(out, "$", 1);
			i++;
			continue;
		}
		*at = i;
		if (!braced) {
			end = k;
		} else if (k < len && in[k] == '}') {
			end = k + 1;
		} else if (k + 1 < len && in[k] == ':' && (in[k + 1] == '-' || in[k + 1] == '?')) {
			form = in[k + 1] == '-' ? 1 : 2;
			wstart = k + 2;
			for (end = wstart; end < len && in[end] != '}'; end++)
				;
			if (end == len)
				return -1;
			wlen = end - wstart;
			end++;
		} else {
			return -1;
		}
		kind = classify(NULL, (const char *)in + j, k - j);
		if (kind & PI_RENDER_CONFIG)
			return -1;
		v = lookup(e, (const char *)in + j, k - j, &vlen);
		if (!v || vlen == 0) {
			if (form != 1)
				return -1;
			v = (const char *)in + wstart;
			vlen = wlen;
		}
		if (!ref_value_ok(kind, v, vlen))
			return -1;
		if (kind & PI_RENDER_HOST) {
			(*hosts)++;
			pairs_add(pairs, (const char *)in + j, k - j, v, vlen);
		}
		emit(out, v, vlen);
		i = end;
	}
	return 0;
}

static void check_values(const uint8_t *d, size_t n)
{
	size_t bad = (size_t)-1;

	if (pi_value_check_host((const char *)d, n, &bad) == 0) {
		if (pi_value_check_word((const char *)d, n, NULL) != 0)
			abort();
	} else if (bad > n) {
		abort();
	}
	bad = (size_t)-1;
	if (pi_value_check_word((const char *)d, n, &bad) != 0 && bad >= n)
		abort();
}

/* The line and column (from 1) of offset at in t. */
static void line_col(const uint8_t *t, size_t at, unsigned *line, unsigned *col)
{
	*line = 1;
	*col = 1;
	for (size_t i = 0; i < at; i++) {
		++*col;
		if (t[i] == '\n') {
			++*line;
			*col = 1;
		}
	}
}

/* Renders tpl in pieces of 0 to most - 1 new bytes (sizes from a
 * generator seeded by the input), carrying the unused tail over as
 * templates.c does, with an output limit of 0 (none) to 63 bytes, and
 * checks the result against the whole render's. Small pieces cut nearly
 * every reference; larger ones let the scanner's fast path (a variable
 * met before in the same piece) see references near a piece's end. */
static void check_pieces(const uint8_t *tpl, size_t tlen, const struct env *e0, int rc1,
			 const struct pi_buf *whole, const struct pi_render_error *err1,
			 unsigned most)
{
	struct env e = {e0->data, e0->len, 0, {0}};
	unsigned seed = (unsigned)tlen * 2654435761u + (tlen ? tpl[0] : 0);
	struct pi_render_opts o = {PREFIX, lookup, classify, on_host, &e, (seed >> 7) % 64};
	struct pi_buf out = {0};
	struct pi_render_error err;
	char *buf = malloc(tlen + 1);
	size_t have = 0, fed = 0, off = 0;
	int rc = 0, last = 0;

	if (!buf)
		abort();
	memset(&err, 0, sizeof(err));
	for (;;) {
		size_t n = 0, used = (size_t)-1;

		if (!last) {
			seed = seed * 1103515245u + 12345u;
			n = (seed >> 16) % most;
			if (n > tlen - fed)
				n = tlen - fed;
			if (n == 0 && fed < tlen)
				n = 1;
			memcpy(buf + have, tpl + fed, n);
			have += n;
			fed += n;
			last = n == 0;
		}
		rc = pi_render_piece(buf, have, last, &o, &out, &used, &err);
		if (rc < 0)
			break;
		if (used > have || (last && !o.out_limit && used != have) ||
		    (last && used == 0 && have > 0))
			abort();
		memmove(buf, buf + used, have - used);
		have -= used;
		off += used;
		if (last && have == 0)
			break;
	}
	if (rc < 0 && err.line) {
		/* The piece's line and column count from its first byte. */
		unsigned line, col;

		line_col(tpl, off, &line, &col);
		if (err.line == 1)
			err.col += col - 1;
		err.line += line - 1;
	}
	if (rc != rc1 || (rc == 0 && !same_pairs(&e.pairs, &e0->pairs)))
		abort();
	if (rc == 0 && (out.len + 3 != whole->len ||
			(out.len && memcmp(out.data, whole->data + 3, out.len) != 0)))
		abort();
	if (rc < 0 && (err.line != err1->line || err.col != err1->col ||
		       strcmp(err.msg, err1->msg) != 0 || strcmp(err.var, err1->var) != 0)) {
		fprintf(stderr, "pieces: %u:%u %s, whole: %u:%u %s\n", err.line, err.col, err.msg,
			err1->line, err1->col, err1->msg);
		abort();
	}
	free(buf);
	free(out.data);
	free(e.pairs.data);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul = memchr(data, '\0', size);
	struct env e = {data, nul ? (size_t)(nul - data) : 0, 0, {0}};
	const uint8_t *tpl = nul ? nul + 1 : data;
	size_t tlen = size - (size_t)(tpl - data);
	struct pi_render_opts o = {PREFIX, lookup, classify, on_host, &e, 0};
	struct pi_buf out = {0}, want_pairs = {0};
	struct pi_render_error err;
	struct ref_out want = {0};
	unsigned want_hosts = 0;
	size_t at = 0;
	int wrc, rc;

	check_values(data, size < 300 ? size : 300);
	wrc = ref_expand(tpl, tlen, &e, &want, &at, &want_hosts, &want_pairs);

	pi_buf_append(&out, "PRE", 3);
	memset(&err, 0, sizeof(err));
	rc = pi_render((const char *)tpl, tlen, &o, &out, &err);
	if ((rc == 0) != (wrc == 0)) {
		fprintf(stderr, "rc %d but reference %d (%s)\n", rc, wrc, err.msg);
		abort();
	}
	if (out.len < 3 || memcmp(out.data, "PRE", 3) != 0)
		abort();
	if (rc == 0) {
		if (out.len - 3 != want.len ||
		    (want.len && memcmp(out.data + 3, want.data, want.len) != 0))
			abort();
		if (e.hosts_seen > want_hosts || !same_pairs(&e.pairs, &want_pairs))
			abort();
	} else {
		unsigned line, col;

		line_col(tpl, at, &line, &col);
		if (out.len != 3 || err.line != line || err.col != col || err.msg[0] == '\0') {
			fprintf(stderr, "at %u:%u, want %u:%u: %s\n", err.line, err.col, line, col,
				err.msg);
			abort();
		}
		for (const char *m = err.msg; *m; m++)
			if ((unsigned char)*m < 0x20)
				abort();
	}
	check_pieces(tpl, tlen, &e, rc, &out, &err, 9);
	check_pieces(tpl, tlen, &e, rc, &out, &err, 97);
	free(out.data);
	free(want.data);
	free(want_pairs.data);
	free(e.pairs.data);
	return 0;
}
