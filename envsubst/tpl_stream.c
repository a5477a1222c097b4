/* One template rendered piece by piece: read a block, render it, hand the
 * output on, keep the reference cut at the block's end for the next
 * round. Neither the template nor its output is ever in memory whole; the
 * three buffers (input, output, the sink's compare buffer) live in the set
 * and serve every template of a render.
 *
 * A large template is mapped a window at a time instead of read: read(2)
 * would copy every byte once more, which is a good part of the time a
 * large render takes. A mapped file that shrinks under us (truncated
 * while rendered) or cannot be read raises SIGBUS on the next access to
 * the lost pages; a handler installed for the length of the stream turns
 * that into an error of this template, so the init never dies of it. */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "envsubst/tpl_internal.h"

/* A template is read this much at a time, so the piece being rendered is
 * still in the CPU's cache from the read. */
#define STREAM_PIECE (128u << 10)
/* Rendered output is handed on once it reaches this much. */
#define STREAM_OUT (256u << 10)
/* Templates of this size or more are mapped, this much at a time (the
 * mapped pages count in the process's RSS). */
#define STREAM_MAP_MIN (1u << 20)
#define STREAM_WINDOW  (1u << 20)
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

/* Reads the next block (piece bytes, or more) after what is left in
 * t->in. Returns the byte count (0 at the end) or a negative errno. */
static ssize_t stream_fill(struct pi_templates *t, int fd, size_t piece)
{
	struct pi_buf *in = &t->in;
	int rc;

	/* What is left over is a reference cut by the end of the piece; when
	 * it fills half the buffer, double it, so a long unclosed
	 * "${NAME:-" is not scanned again for every block. */
	if (in->cap < piece || in->len > in->cap / 2) {
		rc = pi_buf_reserve(in, in->cap < piece ? piece : in->cap);
		if (rc < 0)
			return rc;
	}
	return pi_tpl_read(fd, in->data + in->len, in->cap - in->len);
}

/* Renders in[0..len) (what is left at *off in the file) and hands the
 * output on, until it is used up (last) or only a cut reference is left;
 * *done is how much of it was rendered. */
static int stream_render(struct pi_templates *t, const char *in, size_t len,
			 const struct pi_render_opts *ro, int fd, size_t off, int last,
			 pi_tpl_emit_fn emit, void *sink, struct pi_templates_error *err,
			 const char *source, size_t *done)
{
	struct pi_render_error rerr;
	size_t used;
	int rc;

	*done = 0;
	for (;;) {
		t->out.len = 0;
		rc = pi_render_piece(in + *done, len - *done, last, ro, &t->out, &used, &rerr);
		if (rc < 0) {
			if (rerr.line) {
				stream_place(fd, off + *done, &rerr);
				pi_tpl_seterr(err, "%s:%u:%u: %s", source, rerr.line, rerr.col,
					      rerr.msg);
			} else {
				pi_tpl_seterr(err, "%s: %s", source, rerr.msg);
			}
			return rc;
		}
		if (t->out.len && (rc = emit(sink, t->out.data, t->out.len, err)) < 0)
			return rc;
		*done += used;
		/* Stopped by the output limit: go on with the same input. */
		if (used == 0 || *done == len || t->out.len < ro->out_limit)
			return 0;
	}
}

/* The window being rendered, for stream_on_bus. Static rather than on
 * the stack: what siglongjmp returns to must not read automatic variables
 * changed since sigsetjmp. One per process, not per thread: one thread at
 * a time renders (templates.h), and only that thread reads the window, so
 * only it can fault inside [lo, hi). (A thread-local would also make every
 * start map a TLS block before main.) */
static struct stream_guard {
	const char *lo, *hi; /* the pages mapped; NULL when none */
	size_t len;	     /* the length of the mapping at lo */
	sigjmp_buf jmp;
	int armed;
} stream_guard;
static struct sigaction stream_bus_before;

/* SIGBUS: a fault inside the window being rendered goes back to
 * stream_mapped as an error. Anything else is none of ours: the handler
 * that was there before is put back, so a fault comes back at once to it
 * and a signal sent with kill(2) is raised again for it. */
static void stream_on_bus(int sig, siginfo_t *si, void *uc)
{
	const char *a = si->si_addr;

	(void)uc;
	if (stream_guard.armed && si->si_code > 0 && a >= stream_guard.lo && a < stream_guard.hi)
		siglongjmp(stream_guard.jmp, 1);
	sigaction(SIGBUS, &stream_bus_before, NULL);
	if (si->si_code <= 0)
		raise(sig);
}

/* Maps size - at bytes of the file at at, at most win; 0 or -errno. */
static int stream_map(int fd, size_t at, size_t size, size_t win)
{
	size_t n = size - at < win ? size - at : win;
	void *p = mmap(NULL, n, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, (off_t)at);

	if (p == MAP_FAILED)
		return -errno;
	stream_guard.len = n;
	stream_guard.lo = p;
	stream_guard.hi = stream_guard.lo + n;
	return 0;
}

static void stream_unmap(void)
{
	if (stream_guard.lo)
		munmap((void *)stream_guard.lo, stream_guard.len);
	stream_guard.lo = stream_guard.hi = NULL;
}

/* Renders the size bytes of fd a window at a time; the first window is
 * mapped already. A reference cut at a window's end starts the next one;
 * one longer than a whole window doubles the window. */
static int stream_windows(struct pi_templates *t, const struct pi_render_opts *ro, int fd,
			  size_t size, pi_tpl_emit_fn emit, void *sink,
			  struct pi_templates_error *err, const char *source)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE), off = 0, win = STREAM_WINDOW;

	for (;;) {
		size_t at = off - off % page, done;
		int last = at + stream_guard.len == size, rc;

		rc = stream_render(t, stream_guard.lo + (off - at), stream_guard.len - (off - at),
				   ro, fd, off, last, emit, sink, err, source, &done);
		stream_unmap();
		if (rc < 0)
			return rc;
		off += done;
		if (last)
			return 0;
		if (done == 0 && win <= size / 2)
			win *= 2;
		else if (done == 0)
			win = size;
		at = off - off % page;
		if ((rc = stream_map(fd, at, size, win)) < 0) {
			pi_tpl_seterr(err, "cannot read template %s: %s", source, strerror(-rc));
			return rc;
		}
	}
}

/* The error of a template that lost bytes while it was rendered. */
static int stream_truncated(struct pi_templates_error *err, const char *source)
{
	pi_tpl_seterr(err,
		      "cannot read template %s: it was truncated or could not be read while it "
		      "was rendered",
		      source);
	return -EIO;
}

/* Whether fd is still size bytes long: a cut inside the last page mapped
 * raises no SIGBUS (the bytes lost read as zeros). */
static int stream_still(int fd, size_t size)
{
	struct stat st;

	return fstat(fd, &st) == 0 && (size_t)st.st_size >= size;
}

/* A large template, mapped (see the top of this file). Returns 1 when it
 * cannot be mapped (the caller reads it instead), else 0 or -errno. */
static int stream_mapped(struct pi_templates *t, const struct pi_render_opts *ro, int fd,
			 size_t size, pi_tpl_emit_fn emit, void *sink,
			 struct pi_templates_error *err, const char *source)
{
	struct sigaction sa = {.sa_sigaction = stream_on_bus, .sa_flags = SA_SIGINFO}, before;
	int rc;

	if (stream_map(fd, 0, size, STREAM_WINDOW) < 0)
		return 1;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGBUS, &sa, &before) < 0) {
		stream_unmap();
		return 1;
	}
	/* Our own handler is never remembered as the one before (were two
	 * streams ever to overlap): put back by stream_on_bus, it would hand
	 * a fault that is not ours back to itself forever. */
	if (before.sa_sigaction != stream_on_bus)
		stream_bus_before = before;
	if (sigsetjmp(stream_guard.jmp, 1) == 0) {
		stream_guard.armed = 1;
		rc = stream_windows(t, ro, fd, size, emit, sink, err, source);
		if (rc == 0 && !stream_still(fd, size))
			rc = stream_truncated(err, source);
	} else {
		rc = stream_truncated(err, source);
	}
	stream_guard.armed = 0;
	stream_unmap();
	sigaction(SIGBUS, &stream_bus_before, NULL);
	return rc;
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
	if (st.st_size >= STREAM_MAP_MIN &&
	    (rc = stream_mapped(t, &ro, fd, (size_t)st.st_size, emit, sink, err, source)) <= 0)
		goto out;
	rc = 0;
	/* A small template is read in one piece of its own size (plus the
	 * byte that finds its end; one that grows meanwhile doubles the
	 * buffer): the heap serves that without mapping and unmapping a whole
	 * STREAM_PIECE on the way to nginx's start. */
	size_t piece = (size_t)st.st_size < STREAM_PIECE ? (size_t)st.st_size + 1 : STREAM_PIECE;
	while (!last) {
		ssize_t r = stream_fill(t, fd, piece);
		size_t done;

		if (r < 0) {
			rc = (int)r;
			goto read_failed;
		}
		last = r == 0;
		/* off + t->in.len bytes read: fewer than the size at the end of
		 * the file means it was cut between two pieces. */
		if (last && off + t->in.len < (size_t)st.st_size) {
			rc = stream_truncated(err, source);
			goto out;
		}
		t->in.len += (size_t)r;
		if (off + t->in.len > PI_TEMPLATES_MAX_SIZE) {
			rc = -EFBIG;
			goto read_failed;
		}
		rc = stream_render(t, t->in.data, t->in.len, &ro, fd, off, last, emit, sink, err,
				   source, &done);
		if (rc < 0)
			goto out;
		memmove(t->in.data, t->in.data + done, t->in.len - done);
		t->in.len -= done;
		off += done;
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
