/* One template rendered piece by piece: read a block, render it, hand the
 * output on, keep the reference cut at the block's end for the next
 * round. Neither the template nor its output is ever in memory whole; the
 * three buffers (input, output, the sink's compare buffer) live in the set
 * and serve every template of a render. */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "envsubst/tpl_internal.h"

/* A template is read this much at a time, so the piece being rendered is
 * still in the CPU's cache from the read. */
#define STREAM_PIECE (128u << 10)
/* Rendered output is handed on once it reaches this much. */
#define STREAM_OUT (128u << 10)
/* The limit as the error message spells it. */
#define STREAM_MAX_TEXT "512 MiB"
_Static_assert(PI_TEMPLATES_MAX_SIZE == 512u << 20, "STREAM_MAX_TEXT is out of date");

/* Makes the place of an error in a piece starting `off` bytes into the
 * file a place in the file: reads the bytes before the piece again and
 * counts their lines. Only errors pay for this. */
static void stream_place(int fd, size_t off, struct pi_render_error *e)
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
	col = e->line == 1 ? col + e->col : e->col;
	lines += e->line;
	e->line = lines > UINT_MAX ? UINT_MAX : (unsigned)lines;
	e->col = col > UINT_MAX ? UINT_MAX : (unsigned)col;
}

/* Reads the next block after what is left in t->in. Returns the byte
 * count (0 at the end) or a negative errno. */
static ssize_t stream_fill(struct pi_templates *t, int fd)
{
	struct pi_buf *in = &t->in;
	int rc;

	/* What is left over is a reference cut by the end of the piece; when
	 * it fills half the buffer, double it, so a long unclosed
	 * "${NAME:-" is not scanned again for every block. */
	if (in->cap < STREAM_PIECE || in->len > in->cap / 2) {
		rc = pi_buf_reserve(in, in->cap < STREAM_PIECE ? STREAM_PIECE : in->cap);
		if (rc < 0)
			return rc;
	}
	return pi_tpl_read(fd, in->data + in->len, in->cap - in->len);
}

/* Renders what t->in holds and hands it on, until the input is used up
 * (last) or only a cut reference is left. */
static int stream_render(struct pi_templates *t, const struct pi_render_opts *ro, int fd,
			 size_t *off, int last, pi_tpl_emit_fn emit, void *sink,
			 struct pi_templates_error *err, const char *source)
{
	struct pi_render_error rerr;
	size_t done = 0, used;
	int rc;

	for (;;) {
		t->out.len = 0;
		rc = pi_render_piece(t->in.data + done, t->in.len - done, last, ro, &t->out, &used,
				     &rerr);
		if (rc < 0) {
			if (rerr.line) {
				stream_place(fd, *off + done, &rerr);
				pi_tpl_seterr(err, "%s:%u:%u: %s", source, rerr.line, rerr.col,
					      rerr.msg);
			} else {
				pi_tpl_seterr(err, "%s: %s", source, rerr.msg);
			}
			return rc;
		}
		if (t->out.len && (rc = emit(sink, t->out.data, t->out.len, err)) < 0)
			return rc;
		done += used;
		/* Stopped by the output limit: go on with the same input. */
		if (used == 0 || done == t->in.len || t->out.len < ro->out_limit)
			break;
	}
	memmove(t->in.data, t->in.data + done, t->in.len - done);
	t->in.len -= done;
	*off += done;
	return 0;
}

int pi_tpl_stream(struct pi_templates *t, const char *source, pi_tpl_emit_fn emit, void *sink,
		  struct pi_templates_error *err)
{
	struct pi_render_opts ro;
	struct stat st;
	size_t off = 0; /* where t->in.data[0] is in the file */
	int fd, last = 0, rc = 0;

	pi_tpl_env_opts(t->env, t, t->prefix, &ro);
	ro.out_limit = STREAM_OUT;
	t->in.len = 0;
	fd = pi_tpl_open_regular(source, PI_TEMPLATES_MAX_SIZE, &st);
	if (fd < 0) {
		rc = fd;
		goto read_failed;
	}
	while (!last) {
		ssize_t r = stream_fill(t, fd);

		if (r < 0) {
			rc = (int)r;
			goto read_failed;
		}
		last = r == 0;
		t->in.len += (size_t)r;
		if (off + t->in.len > PI_TEMPLATES_MAX_SIZE) {
			rc = -EFBIG;
			goto read_failed;
		}
		rc = stream_render(t, &ro, fd, &off, last, emit, sink, err, source);
		if (rc < 0)
			goto out;
	}
	goto out;
read_failed:
	if (rc == -EFBIG)
		pi_tpl_seterr(err, "template %s is larger than " STREAM_MAX_TEXT, source);
	else if (rc == -ENOMEM)
		pi_tpl_seterr(err, "%s: out of memory", source);
	else
		pi_tpl_seterr(err, "cannot read template %s: %s", source, strerror(-rc));
out:
	if (fd >= 0)
		close(fd);
	return rc;
}

void pi_tpl_stream_release(struct pi_templates *t)
{
	free(t->in.data);
	free(t->out.data);
	free(t->cmp.data);
	t->in = t->out = t->cmp = (struct pi_buf){0};
}
