/* Unit tests of envsubst/tpl_stream.c for large templates, which are
 * mapped a window at a time: references cut at a window's end, a reference
 * longer than a window, a template truncated while it is rendered (an
 * error, not a SIGBUS death), and the SIGBUS disposition left as it was. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "envsubst/templates.h"
#include "envsubst/tpl_internal.h"
#include "tap.h"

#define MIB (1u << 20)

static char root[64], dir[128], out[128], tpl_path[192], out_path[192];
static char *env[] = {"NGINX_X=x1", "NGINX_USER_HOST=user-service.internal",
		      "NGINX_LONG_NAME_OF_A_HOST_X_HOST=long.internal", "PATH=/bin", NULL};

/* The template and the output it must render to, built side by side. */
static struct pi_buf tpl, want;

static void add(const char *text, const char *rendered)
{
	pi_buf_append(&tpl, text, strlen(text));
	pi_buf_append(&want, rendered, strlen(rendered));
}

/* Plain text up to offset `at` of the template. */
static void pad_to(size_t at)
{
	while (tpl.len < at) {
		char c = (char)('a' + tpl.len % 26);

		pi_buf_append(&tpl, &c, 1);
		pi_buf_append(&want, &c, 1);
	}
}

static void write_file(const char *path, const char *p, size_t n)
{
	FILE *f = fopen(path, "w");

	if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0)
		diag("cannot write %s", path);
}

static char *read_file(const char *path, size_t *n)
{
	FILE *f = fopen(path, "r");
	struct stat st;
	char *p;

	*n = 0;
	if (!f || fstat(fileno(f), &st) < 0 || !(p = malloc((size_t)st.st_size + 1))) {
		if (f)
			fclose(f);
		return NULL;
	}
	*n = fread(p, 1, (size_t)st.st_size, f);
	fclose(f);
	return p;
}

static struct pi_templates_opts opts(void)
{
	struct pi_templates_opts o = {
	    .dir = dir, .output_dir = out, .hosts = "NGINX_*_HOST", .envp = env};

	return o;
}

/* A template of case `c` (see test_windows) in tpl, its output in want. */
static void build(int c)
{
	char *big;

	tpl.len = want.len = 0;
	add("# head $host ${uri}\n", "# head $host ${uri}\n");
	switch (c) {
	case 0: /* a name cut by the first window's end */
		pad_to(MIB - 3);
		add("$NGINX_X;", "x1;");
		break;
	case 1: /* a lone '$' as the window's last byte */
		pad_to(MIB - 1);
		add("$ ", "$ ");
		break;
	case 2: /* "${" cut after the '$' */
		pad_to(MIB - 1);
		add("${NGINX_USER_HOST}", "user-service.internal");
		break;
	case 3: /* a name longer than 32 bytes, cut */
		pad_to(MIB - 20);
		add("$NGINX_LONG_NAME_OF_A_HOST_X_HOST", "long.internal");
		break;
	case 4: /* a default of 1.5 MiB, longer than a whole window */
		big = malloc(MIB + MIB / 2 + 1);
		if (!big)
			abort();
		memset(big, 'q', MIB + MIB / 2);
		big[MIB + MIB / 2] = '\0';
		pad_to(MIB - 10);
		add("${NGINX_UNSET:-", "");
		add(big, big);
		add("}", "");
		free(big);
		break;
	}
	while (tpl.len < 5 * MIB / 2)
		add("$$NGINX_X ${NGINX_X:-d} \x80\xff$NGINX_X $host ${NGINX_USER_HOST}\n",
		    "$x1 x1 \x80\xffx1 $host user-service.internal\n");
}

/* References cut at the first window's end in every way, a default longer
 * than a window, and many more references across the later windows: each
 * output is exactly the one built beside its template. */
static void test_windows(void)
{
	struct pi_templates_opts o = opts();
	struct pi_templates_error err;
	struct pi_templates *t = NULL;
	char path[256], *got;
	size_t n;

	for (int c = 0; c < 5; c++) {
		build(c);
		snprintf(path, sizeof(path), "%s/case%d.conf.template", dir, c);
		write_file(path, tpl.data, tpl.len);
	}
	is_int(pi_templates_render(&o, &t, &err), 0, "render five templates over 1 MiB");
	if (!is_int(pi_templates_commit(t, &err), 0, "commit them"))
		diag("%s", err.msg);
	pi_templates_free(t);
	for (int c = 0; c < 5; c++) {
		build(c);
		snprintf(path, sizeof(path), "%s/case%d.conf", out, c);
		got = read_file(path, &n);
		ok(got && n == want.len && memcmp(got, want.data, n) == 0,
		   "case %d: the output is the %zu bytes expected (got %zu)", c, want.len, n);
		free(got);
	}

	/* An output changed 1.5 MiB in: the new one is written from there
	 * on after the equal part is copied, and cut to its exact size (its
	 * blocks are allocated up front from the template's size). */
	snprintf(path, sizeof(path), "%s/case0.conf", out);
	got = read_file(path, &n);
	if (got && n > MIB * 2) {
		got[MIB + MIB / 2] = '#';
		write_file(path, got, n - 100);
	}
	free(got);
	t = NULL;
	is_int(pi_templates_render(&o, &t, &err), 0, "render them again");
	if (!is_int(pi_templates_commit(t, &err), 0, "commit over a changed output"))
		diag("%s", err.msg);
	pi_templates_free(t);
	build(0);
	got = read_file(path, &n);
	ok(got && n == want.len && memcmp(got, want.data, n) == 0,
	   "case 0: the output is the %zu bytes expected again (got %zu)", want.len, n);
	free(got);
	for (int c = 0; c < 5; c++) {
		snprintf(path, sizeof(path), "%s/case%d.conf.template", dir, c);
		unlink(path);
	}
}

/* An error past the first window names its line and column in the file. */
static void test_error_place(void)
{
	struct pi_templates_opts o = opts();
	struct pi_templates_error err;
	struct pi_templates *t = NULL;
	char wantmsg[512];
	unsigned line = 1, col;
	size_t bol = 0;

	build(0);
	while (tpl.len < 2 * MIB + 100)
		add("a line with $host\n", "");
	add("xy $NGINX_Y\n", "");
	for (size_t i = 0; i + 12 < tpl.len; i++)
		if (tpl.data[i] == '\n') {
			line++;
			bol = i + 1;
		}
	col = (unsigned)(tpl.len - 12 - bol) + 4;
	write_file(tpl_path, tpl.data, tpl.len);
	is_int(pi_templates_render(&o, &t, &err), 0, "render a template with an error at 2 MiB");
	snprintf(wantmsg, sizeof(wantmsg), "%s:%u:%u: NGINX_Y is not set", tpl_path, line, col);
	ok(pi_templates_commit(t, &err) < 0 && strcmp(err.msg, wantmsg) == 0,
	   "the error is at line %u col %u: %s", line, col, err.msg);
	pi_templates_free(t);
	unlink(tpl_path);
}

static int forwarded;

static void on_bus(int sig)
{
	(void)sig;
	forwarded++;
}

/* The sink of the truncation tests: truncates the template to trunc_to
 * bytes on its first call (after the first piece of output). */
static int emits;
static off_t trunc_to = 1000;

static int truncating_sink(void *sink, const char *p, size_t n, struct pi_templates_error *err)
{
	(void)sink, (void)p, (void)n, (void)err;
	if (emits++ == 0 && truncate(tpl_path, trunc_to) < 0)
		diag("truncate: %s", strerror(errno));
	return 0;
}

static int raising_sink(void *sink, const char *p, size_t n, struct pi_templates_error *err)
{
	(void)sink, (void)p, (void)n, (void)err;
	if (emits++ == 0)
		raise(SIGBUS);
	return 0;
}

/* A template truncated while it is mapped: the pages lost raise SIGBUS,
 * which becomes this template's error. A SIGBUS that is not about the
 * template goes to the handler there was before, which is back after. */
static void test_truncated(void)
{
	struct pi_templates_opts o = opts();
	struct pi_templates_error err;
	struct pi_templates *t = NULL;
	struct sigaction sa = {.sa_handler = on_bus}, now;
	int rc;

	tpl.len = want.len = 0;
	while (tpl.len < 3 * MIB)
		add("location / { proxy_pass http://$NGINX_USER_HOST; }\n",
		    "location / { proxy_pass http://user-service.internal; }\n");
	write_file(tpl_path, tpl.data, tpl.len);
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, NULL);

	is_int(pi_templates_render(&o, &t, &err), 0, "render a 3 MiB template");
	emits = 0;
	rc = pi_tpl_stream(t, tpl_path, truncating_sink, NULL, &err);
	is_int(rc, -EIO, "truncated while rendered: an error, not a SIGBUS death");
	ok(strstr(err.msg, "was truncated or could not be read") != NULL, "... saying so: %s",
	   err.msg);
	sigaction(SIGBUS, NULL, &now);
	ok(now.sa_handler == on_bus, "the SIGBUS handler there before is back");
	is_int(forwarded, 0, "... and was not called");

	write_file(tpl_path, tpl.data, tpl.len);
	emits = 0;
	rc = pi_tpl_stream(t, tpl_path, raising_sink, NULL, &err);
	is_int(rc, 0, "a SIGBUS sent while rendering");
	is_int(forwarded, 1, "... goes to the handler there before");
	pi_templates_free(t);
	sa.sa_handler = SIG_DFL;
	sigaction(SIGBUS, &sa, NULL);
}

/* Truncations no SIGBUS reports: a template read in pieces (under 1 MiB)
 * cut between two pieces, and a mapped one cut inside its last page (the
 * bytes lost read as zeros). Both are the template's error, as above. */
static void test_truncated_quietly(void)
{
	static const size_t sizes[] = {600u << 10, MIB + 100};
	struct pi_templates_opts o = opts();
	struct pi_templates_error err;

	for (size_t i = 0; i < 2; i++) {
		struct pi_templates *t = NULL;

		tpl.len = want.len = 0;
		while (tpl.len < sizes[i])
			add("# x\n", "# x\n");
		tpl.len = sizes[i]; /* cut anywhere: only the size matters */
		write_file(tpl_path, tpl.data, tpl.len);
		trunc_to = i == 0 ? 300 << 10 : (off_t)sizes[i] - 50;
		is_int(pi_templates_render(&o, &t, &err), 0, "render the template");
		emits = 0;
		is_int(pi_tpl_stream(t, tpl_path, truncating_sink, NULL, &err), -EIO,
		       i == 0 ? "read in pieces and truncated while rendered: an error"
			      : "mapped and cut in its last page while rendered: an error");
		ok(strstr(err.msg, "was truncated or could not be read") != NULL,
		   "... saying so: %s", err.msg);
		pi_templates_free(t);
	}
	trunc_to = 1000;
}

int main(void)
{
	char cmd[128];

	snprintf(root, sizeof(root), "/tmp/pi-stream-%ld", (long)getpid());
	snprintf(dir, sizeof(dir), "%s/tpl", root);
	snprintf(out, sizeof(out), "%s/out", root);
	snprintf(tpl_path, sizeof(tpl_path), "%s/big.conf.template", dir);
	snprintf(out_path, sizeof(out_path), "%s/big.conf", out);
	mkdir(root, 0755);
	mkdir(dir, 0755);
	test_windows();
	test_error_place();
	test_truncated();
	test_truncated_quietly();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	if (system(cmd) != 0)
		diag("cannot remove %s", root);
	free(tpl.data);
	free(want.data);
	return done_testing();
}
