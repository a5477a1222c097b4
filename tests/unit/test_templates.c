/* Unit tests of envsubst/templates.c against real folders under /tmp:
 * the walk, mirroring, all-or-nothing, rollback, unwritable outputs,
 * NGINX_LOCAL_RESOLVERS and the host list. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "envsubst/templates.h"
#include "tap.h"

static char root[64];

/* A path under root, in one of many rotating buffers. */
__attribute__((format(printf, 1, 2))) static const char *P(const char *fmt, ...)
{
	static char bufs[64][512];
	static int next;
	char *b = bufs[next++ % 64];
	int n = snprintf(b, 512, "%s/", root);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(b + n, (size_t)(512 - n), fmt, ap);
	va_end(ap);
	return b;
}

/* s with every '@' replaced by root: the expected error lines. */
static const char *R(const char *s)
{
	static char buf[1024];
	size_t n = 0;

	for (; *s && n + sizeof(root) < sizeof(buf); s++)
		if (*s == '@')
			n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s", root);
		else
			buf[n++] = *s;
	buf[n] = '\0';
	return buf;
}

static void mkdirs(const char *path)
{
	char buf[512];

	snprintf(buf, sizeof(buf), "%s", path);
	for (char *s = buf + 1; *s; s++)
		if (*s == '/') {
			*s = '\0';
			mkdir(buf, 0755);
			*s = '/';
		}
	mkdir(buf, 0755);
}

static void put(const char *path, const char *text)
{
	char dir[512];
	FILE *f;

	snprintf(dir, sizeof(dir), "%s", path);
	*strrchr(dir, '/') = '\0';
	mkdirs(dir);
	f = fopen(path, "w");
	if (!f || fputs(text, f) < 0 || fclose(f) != 0)
		diag("cannot write %s", path);
}

/* The file's contents, or "(absent)". */
static const char *get(const char *path)
{
	static char buf[4096];
	FILE *f = fopen(path, "r");
	size_t n;

	if (!f)
		return "(absent)";
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

/* How many names in dir (recursively) start with '.', i.e. temp files. */
static int hidden(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	if (!d)
		return 0;
	while ((de = readdir(d)) != NULL) {
		char sub[1024];

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (de->d_name[0] == '.')
			n++;
		snprintf(sub, sizeof(sub), "%s/%s", dir, de->d_name);
		if (de->d_type == DT_DIR)
			n += hidden(sub);
	}
	closedir(d);
	return n;
}

/* What the last render_all printed for its first template. */
static char printed[1 << 16];

/* pi_templates_render, then (template errors are found when rendering)
 * pi_templates_print into `printed`, first header line dropped. On error
 * *t is NULL. */
static int render_all(const struct pi_templates_opts *o, struct pi_templates **t,
		      struct pi_templates_error *err)
{
	char *buf = NULL, *nl;
	size_t len = 0;
	FILE *f;
	int rc = pi_templates_render(o, t, err);

	printed[0] = '\0';
	if (rc < 0)
		return rc;
	f = open_memstream(&buf, &len);
	if (!f)
		abort();
	rc = pi_templates_print(*t, f, err);
	fclose(f);
	nl = buf ? strchr(buf, '\n') : NULL;
	snprintf(printed, sizeof(printed), "%s", nl ? nl + 1 : "");
	free(buf);
	if (rc < 0) {
		pi_templates_free(*t);
		*t = NULL;
	}
	return rc;
}

/* The rendered first output (only output 0 is supported). */
static const char *data(const struct pi_templates *t, size_t i)
{
	(void)t;
	(void)i;
	return printed;
}

static void rm_rf(const char *path)
{
	char cmd[600];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
	if (system(cmd) != 0)
		diag("cannot remove %s", path);
}

static char *base_env[] = {"NGINX_X=x1", "NGINX_USER_HOST=user-service", "PATH=/bin", NULL};

/* The options every test starts from; the paths live in their own
 * buffers so later P() calls cannot overwrite them. */
static struct pi_templates_opts opts(char **env)
{
	static char dir[128], out[128], stream[128], resolv[128];
	struct pi_templates_opts o = {
	    .dir = dir,
	    .output_dir = out,
	    .stream_output_dir = stream,
	    .hosts = "NGINX_*_HOST",
	    .resolv_conf = resolv,
	    .envp = env ? env : base_env,
	};

	snprintf(dir, sizeof(dir), "%s/tpl", root);
	snprintf(out, sizeof(out), "%s/out", root);
	snprintf(stream, sizeof(stream), "%s/stream", root);
	snprintf(resolv, sizeof(resolv), "%s/resolv.conf", root);
	return o;
}

static void test_walk(void)
{
	struct pi_templates_opts o = opts(NULL);
	struct pi_templates_error err;
	struct pi_templates *t = NULL;
	char *buf = NULL;
	size_t len = 0;
	FILE *f;

	rm_rf(root);
	put(P("tpl/b.conf.template"), "b $NGINX_X\n");
	put(P("tpl/a.conf.template"), "a ${NGINX_X}\n");
	put(P("tpl/sub/deep/c.conf.template"), "c ${NGINX_USER_HOST}\n");
	put(P("tpl/s.stream-template"), "s $NGINX_X");
	put(P("tpl/readme.txt"), "$NGINX_UNSET");
	put(P("tpl/.hidden.template"), "$NGINX_UNSET");
	put(P("tpl/..data/x.template"), "$NGINX_UNSET");
	put(P("tpl/.template"), "$NGINX_UNSET");
	o.dir = P("tpl/"); /* a trailing slash changes nothing */

	if (!is_int(render_all(&o, &t, &err), 0, "render a tree"))
		diag("%s", err.msg);
	if (!t)
		return;
	is_int(pi_templates_missing(t), 0, "the folder exists");
	is_int(pi_templates_count(t), 4, "four templates, hidden and other files skipped");
	is_str(pi_templates_output(t, 0), P("out/a.conf"), "sorted: a.conf first");
	is_str(pi_templates_output(t, 1), P("out/b.conf"), "b.conf");
	is_str(pi_templates_output(t, 2), P("stream/s"), "stream template to stream_output_dir");
	is_str(pi_templates_output(t, 3), P("out/sub/deep/c.conf"), "sub-folders mirrored");
	is_str(pi_templates_source(t, 3), P("tpl/sub/deep/c.conf.template"), "source path");

	f = open_memstream(&buf, &len);
	is_int(pi_templates_print(t, f, &err), 0, "print");
	fclose(f);
	{
		char want[2048];
		snprintf(want, sizeof(want),
			 "# ==> %s\na x1\n# ==> %s\nb x1\n# ==> %s\ns x1# ==> %s\nc user-service\n",
			 P("out/a.conf"), P("out/b.conf"), P("stream/s"), P("out/sub/deep/c.conf"));
		is_str(buf, want, "print: each output after its header line");
	}
	free(buf);
	is_int(access(P("out"), F_OK), -1, "render and print write nothing");

	if (!is_int(pi_templates_commit(t, &err), 0, "commit"))
		diag("%s", err.msg);
	is_str(get(P("out/a.conf")), "a x1\n", "a.conf written");
	is_str(get(P("out/sub/deep/c.conf")), "c user-service\n", "sub/deep/c.conf written");
	is_str(get(P("stream/s")), "s x1", "stream/s written");
	is_int(hidden(P("out")) + hidden(P("stream")), 0, "no temp file left");
	{
		struct stat st;
		ok(stat(P("out/a.conf"), &st) == 0 && (st.st_mode & 0777) == 0644,
		   "new files are 0644");
	}
	is_int(pi_templates_commit(t, &err), -EALREADY, "a second commit is refused");
	pi_templates_free(t);
	is_str(get(P("out/a.conf")), "a x1\n", "free leaves the files");
}

static void test_all_or_nothing(void)
{
	struct pi_templates_opts o = opts(NULL);
	struct pi_templates_error err;
	struct pi_templates *t = NULL;

	rm_rf(root);
	put(P("out/a.conf"), "old a\n");
	put(P("tpl/a.conf.template"), "new a $NGINX_X\n");
	put(P("tpl/b.conf.template"), "new b\n");
	put(P("tpl/c.conf.template"), "new c\n\n  proxy_pass ${NGINX_MISSING};\n");
	is_int(render_all(&o, &t, &err), -EINVAL, "the last template fails");
	is_str(err.msg, R("@/tpl/c.conf.template:3:14: NGINX_MISSING is not set"),
	       "the error names file, line, column and variable");
	ok(t == NULL, "no result on error");

	/* Now the templates render, but the last output cannot be written:
	 * its name is taken by a folder. */
	put(P("tpl/c.conf.template"), "new c\n");
	mkdirs(P("out/c.conf"));
	t = NULL;
	if (!is_int(render_all(&o, &t, &err), 0, "render"))
		diag("%s", err.msg);
	is_int(pi_templates_commit(t, &err), -EISDIR, "commit fails on the last output");
	is_str(err.msg, R("cannot read previous @/out/c.conf: Is a directory"), "... naming it");
	is_str(get(P("out/a.conf")), "old a\n", "a.conf unchanged");
	is_str(get(P("out/b.conf")), "(absent)", "b.conf not created");
	is_int(hidden(P("out")), 0, "no temp file left");
	pi_templates_free(t);

	/* A sub-folder whose mirror cannot be created: commit creates
	 * out/new/ for the first template, then fails; out/new goes again. */
	rm_rf(root);
	put(P("out/a.conf"), "old a\n");
	put(P("tpl/a.conf.template"), "new a\n");
	put(P("tpl/new/n.conf.template"), "new n\n");
	put(P("tpl/z/z.conf.template"), "new z\n");
	put(P("out/z"), "a file where a folder should be\n");
	t = NULL;
	is_int(render_all(&o, &t, &err), 0, "render");
	is_int(pi_templates_commit(t, &err), -ENOTDIR, "commit fails on the last folder");
	is_str(err.msg, R("cannot create output folder @/out/z: Not a directory"),
	       "... naming the folder");
	is_str(get(P("out/a.conf")), "old a\n", "a.conf unchanged");
	is_int(access(P("out/new"), F_OK), -1, "the folder made for n.conf is removed again");
	is_int(hidden(P("out")), 0, "no temp file left");
	pi_templates_free(t);
}

static void test_rollback(void)
{
	struct pi_templates_opts o = opts(NULL);
	struct pi_templates_error err;
	struct pi_templates *t = NULL;
	struct stat before, after;

	rm_rf(root);
	put(P("out/a.conf"), "old a\n");
	chmod(P("out/a.conf"), 02600);
	put(P("out/same.conf"), "same\n");
	put(P("tpl/a.conf.template"), "new a\n");
	put(P("tpl/same.conf.template"), "same\n");
	put(P("tpl/b.conf.template"), "new b\n");
	put(P("tpl/sub/c.conf.template"), "new c\n");
	stat(P("out/same.conf"), &before);
	is_int(render_all(&o, &t, &err), 0, "render");
	is_int(pi_templates_rollback(t, NULL), 0, "rollback before commit does nothing");
	is_int(pi_templates_commit(t, &err), 0, "commit");
	is_str(get(P("out/a.conf")), "new a\n", "a.conf replaced");
	stat(P("out/a.conf"), &after);
	is_int(after.st_mode & 07777, 0600, "a replaced file keeps its permissions, no set-id bit");
	stat(P("out/same.conf"), &after);
	ok(after.st_ino == before.st_ino, "an output that would not change is not rewritten");
	is_str(get(P("out/sub/c.conf")), "new c\n", "sub/c.conf created");

	is_int(pi_templates_rollback(t, NULL), 0, "rollback");
	is_str(get(P("out/a.conf")), "old a\n", "a.conf restored");
	stat(P("out/a.conf"), &after);
	is_int(after.st_mode & 0777, 0600, "... with its mode");
	is_str(get(P("out/same.conf")), "same\n", "same.conf as it was");
	is_str(get(P("out/b.conf")), "(absent)", "b.conf, new, removed");
	is_int(access(P("out/sub"), F_OK), -1, "the folder commit created is removed");
	is_int(hidden(P("out")), 0, "no temp file left");
	is_int(pi_templates_rollback(t, NULL), 0, "a second rollback does nothing");
	is_str(get(P("out/a.conf")), "old a\n", "... a.conf still restored");
	pi_templates_free(t);
}

static void test_unwritable(void)
{
	struct pi_templates_opts o = opts(NULL);
	struct pi_templates_error err;
	struct pi_templates *t = NULL;

	/* Tests run as root, which ignores mode bits: a path through a
	 * regular file cannot be written by anyone. */
	rm_rf(root);
	put(P("tpl/a.conf.template"), "a\n");
	put(P("file.txt"), "x");
	o.output_dir = P("file.txt/sub");
	is_int(render_all(&o, &t, &err), 0, "render");
	is_int(pi_templates_commit(t, &err), -ENOTDIR, "an unwritable output folder");
	is_str(err.msg, R("cannot create output folder @/file.txt/sub: Not a directory"),
	       "... is named");
	pi_templates_free(t);
}

static void test_missing_and_errors(void)
{
	struct pi_templates_opts o = opts(NULL);
	struct pi_templates_error err;
	struct pi_templates *t = NULL;

	rm_rf(root);
	mkdirs(root);
	is_int(render_all(&o, &t, &err), 0, "a missing templates folder");
	if (t) {
		is_int(pi_templates_count(t), 0, "... gives no templates");
		is_int(pi_templates_missing(t), 1, "... and says it was missing");
		is_int(pi_templates_commit(t, &err), 0, "... commit writes nothing");
		is_int(access(P("out"), F_OK), -1, "... not even the output folder");
		pi_templates_free(t);
	}

	put(P("tpl"), "a file\n");
	t = NULL;
	is_int(render_all(&o, &t, &err), -ENOTDIR, "templates.dir is a file");
	is_str(err.msg, R("cannot read templates folder @/tpl: Not a directory"), "... named");
	unlink(P("tpl"));

	put(P("tpl/ok.template"), "x");
	if (symlink(P("tpl/nowhere"), P("tpl/gone.template")) != 0)
		diag("symlink failed");
	is_int(render_all(&o, &t, &err), -ENOENT, "a dangling template link");
	is_str(err.msg, R("cannot read template @/tpl/gone.template: No such file or directory"),
	       "... named");
	unlink(P("tpl/gone.template"));

	if (symlink(".", P("tpl/loop")) != 0)
		diag("symlink failed");
	is_int(render_all(&o, &t, &err), -ELOOP, "a folder link loop");
	is_str(err.msg, R("folder @/tpl/loop is inside itself (symbolic link loop)"), "... named");
	unlink(P("tpl/loop"));

	put(P("tpl/ok.stream-template"), "y");
	o.stream_output_dir = o.output_dir;
	is_int(render_all(&o, &t, &err), -EINVAL, "two templates, one output");
	is_str(err.msg,
	       R("templates @/tpl/ok.stream-template and @/tpl/ok.template both render to "
		 "@/out/ok"),
	       "... named");

	rm_rf(P("tpl"));
	put(P("tpl/cfg.template"), "root ${NGINX_ENVSUBST_OUTPUT_DIR:-/x};\n");
	is_int(render_all(&o, &t, &err), -EINVAL, "a configuration variable");
	is_str(err.msg,
	       R("@/tpl/cfg.template:1:6: NGINX_ENVSUBST_OUTPUT_DIR is configuration, not a "
		 "template variable"),
	       "... is never rendered");
	ok(t == NULL, "no result on errors");
}

static void test_resolvers(void)
{
	struct pi_templates_opts o = opts(NULL);
	struct pi_templates_error err;
	struct pi_templates *t = NULL;
	char *env[] = {"NGINX_LOCAL_RESOLVERS=1.1.1.1", NULL};

	rm_rf(root);
	put(P("tpl/r.template"), "resolver ${NGINX_LOCAL_RESOLVERS};");
	put(P("resolv.conf"), "# nameserver 9.9.9.9\n"
			      "search example.com\n"
			      "nameserver 10.0.0.2\n"
			      "nameserver\tfe80::1%eth0\n"
			      "nameserver  2001:db8::53  # office\r\n"
			      "nameserver bogus\n"
			      "nameservers 8.8.8.8\n"
			      "nameserver 192.168.1.1");
	if (!is_int(render_all(&o, &t, &err), 0, "resolvers from resolv.conf"))
		diag("%s", err.msg);
	if (t) {
		is_str(data(t, 0), "resolver 10.0.0.2 [fe80::1] [2001:db8::53] 192.168.1.1;",
		       "IPv4 as is, IPv6 in brackets, zone dropped, junk skipped");
		pi_templates_free(t);
	}

	o.envp = env;
	t = NULL;
	is_int(render_all(&o, &t, &err), 0, "resolvers from the environment");
	if (t) {
		is_str(data(t, 0), "resolver 1.1.1.1;", "the environment wins");
		pi_templates_free(t);
	}

	o.envp = base_env;
	o.resolv_conf = P("none");
	is_int(render_all(&o, &t, &err), -EINVAL, "no resolv.conf");
	is_str(err.msg, R("@/tpl/r.template:1:10: NGINX_LOCAL_RESOLVERS is not set"),
	       "... leaves it unset");
}

static void test_hosts(void)
{
	struct pi_templates_opts o = opts(NULL);
	struct pi_templates_error err;
	struct pi_templates *t = NULL;
	char *env[] = {"NGINX_B_HOST=b.internal",
		       "NGINX_A_HOST=10.0.0.1",
		       "NGINX_X=1",
		       "NGINX_A_HOST=ignored.duplicate",
		       "OTHER_HOST=not-a-pattern-match_",
		       "NGINX_ENVSUBST_X_HOST=config",
		       NULL};
	char *bad[] = {"NGINX_USER_HOST=user_service", NULL};
	char *empty[] = {"NGINX_USER_HOST=", NULL};
	const char *var, *value;

	rm_rf(root);
	put(P("tpl/a.template"), "$NGINX_A_HOST ${NGINX_C_HOST:-c.internal} "
				 "${NGINX_C_HOST:-c.internal} ${NGINX_D_HOST:-[::1]}");
	o.envp = env;
	if (!is_int(render_all(&o, &t, &err), 0, "render with hosts"))
		diag("%s", err.msg);
	if (!t)
		return;
	is_str(data(t, 0), "10.0.0.1 c.internal c.internal [::1]",
	       "the first of duplicate variables wins");
	if (is_int(pi_templates_nhosts(t), 4, "four unique hosts")) {
		pi_templates_host(t, 0, &var, &value);
		ok(!strcmp(var, "NGINX_A_HOST") && !strcmp(value, "10.0.0.1"), "env host A");
		pi_templates_host(t, 1, &var, &value);
		ok(!strcmp(var, "NGINX_B_HOST") && !strcmp(value, "b.internal"),
		   "env host B, unused by templates, still listed");
		pi_templates_host(t, 2, &var, &value);
		ok(!strcmp(var, "NGINX_C_HOST") && !strcmp(value, "c.internal"),
		   "default host C, once");
		pi_templates_host(t, 3, &var, &value);
		ok(!strcmp(var, "NGINX_D_HOST") && !strcmp(value, "[::1]"), "default host D");
	}
	pi_templates_free(t);

	o.envp = bad;
	t = NULL;
	is_int(render_all(&o, &t, &err), -EINVAL, "a bad host in the environment");
	is_str(err.msg,
	       "NGINX_USER_HOST is not a valid host name or IP address (position 5 of its value)",
	       "... is named, its value is not");
	o.envp = empty;
	is_int(render_all(&o, &t, &err), -EINVAL, "an empty host");
	is_str(err.msg, "NGINX_USER_HOST is empty but names an upstream host", "... is named");
}

/* A template error found while committing (templates render then)
 * changes nothing and leaves no temp file. */
static void test_commit_template_error(void)
{
	struct pi_templates_opts o = opts(NULL);
	struct pi_templates_error err;
	struct pi_templates *t = NULL;

	rm_rf(root);
	put(P("out/a.conf"), "old a\n");
	put(P("tpl/a.conf.template"), "new a $NGINX_X\n");
	put(P("tpl/b.conf.template"), "new b\n");
	put(P("tpl/c.conf.template"), "new c\n\n  proxy_pass ${NGINX_MISSING};\n");
	is_int(pi_templates_render(&o, &t, &err), 0, "render finds the templates");
	{
		char *buf = NULL;
		size_t len = 0;
		FILE *f = open_memstream(&buf, &len);

		is_int(pi_templates_print(t, f, &err), -EINVAL, "print meets the error");
		fclose(f);
		is_int((long)len, 0, "... and prints nothing, not even the good templates");
		free(buf);
	}
	is_int(pi_templates_commit(t, &err), -EINVAL, "commit meets the error");
	is_str(err.msg, R("@/tpl/c.conf.template:3:14: NGINX_MISSING is not set"), "... named");
	is_str(get(P("out/a.conf")), "old a\n", "a.conf unchanged");
	is_str(get(P("out/b.conf")), "(absent)", "b.conf not created");
	is_int(hidden(P("out")), 0, "no temp file left");
	pi_templates_free(t);
}

/* A FIFO (or any non-regular file) at an output path is refused, naming
 * it, without blocking and without changing anything. */
static void test_fifo_output(void)
{
	struct pi_templates_opts o = opts(NULL);
	struct pi_templates_error err;
	struct pi_templates *t = NULL;

	rm_rf(root);
	put(P("out/a.conf"), "old a\n");
	put(P("tpl/a.conf.template"), "new a\n");
	put(P("tpl/b.conf.template"), "new b\n");
	if (mkfifo(P("out/b.conf"), 0644) != 0)
		diag("mkfifo failed");
	is_int(pi_templates_render(&o, &t, &err), 0, "render");
	alarm(20); /* the old code blocked here for good */
	is_int(pi_templates_commit(t, &err), -EINVAL, "a FIFO at an output path is refused");
	alarm(0);
	is_str(err.msg, R("cannot replace @/out/b.conf: not a regular file"), "... naming it");
	is_str(get(P("out/a.conf")), "old a\n", "a.conf unchanged");
	is_int(hidden(P("out")), 0, "no temp file or kept link left");
	pi_templates_free(t);
}

/* Big outputs go through the temp file piece by piece; the comparison
 * with the previous output is piece by piece too: same, longer, shorter,
 * different at the very end. */
static void test_stream_compare(void)
{
	static char big[600000];
	struct pi_templates_opts o = opts(NULL);
	struct pi_templates_error err;
	struct pi_templates *t = NULL;
	struct stat a, b;
	FILE *f;
	size_t n;

	rm_rf(root);
	for (n = 0; n + 40 < sizeof(big);)
		n += (size_t)sprintf(big + n, "line %06zu $host $NGINX_X;\n", n);
	put(P("tpl/big.conf.template"), big);
	is_int(pi_templates_render(&o, &t, &err), 0, "render a 600 KB template");
	if (!is_int(pi_templates_commit(t, &err), 0, "commit it"))
		diag("%s", err.msg);
	pi_templates_free(t);
	f = fopen(P("out/big.conf"), "r");
	n = f ? fread(big, 1, sizeof(big) - 1, f) : 0;
	if (f)
		fclose(f);
	big[n] = '\0';
	ok(n > 400000 && strstr(big, "$host x1;") && !strstr(big, "NGINX_X"),
	   "the output is complete (%zu bytes)", n);
	stat(P("out/big.conf"), &a);
	t = NULL;
	render_all(&o, &t, &err);
	is_int(pi_templates_commit(t, &err), 0, "commit again");
	stat(P("out/big.conf"), &b);
	ok(a.st_ino == b.st_ino, "an unchanged big output is left alone");
	is_int(hidden(P("out")), 0, "... and no temp file made");
	pi_templates_free(t);

	/* The old output holds one more byte than the new: a changed file. */
	f = fopen(P("out/big.conf"), "a");
	fputs("!", f);
	fclose(f);
	t = NULL;
	pi_templates_render(&o, &t, &err);
	is_int(pi_templates_commit(t, &err), 0, "commit over a longer old output");
	stat(P("out/big.conf"), &b);
	ok(b.st_ino != a.st_ino && (size_t)b.st_size == n, "... replaced, %zu bytes",
	   (size_t)b.st_size);
	is_int(pi_templates_rollback(t, NULL), 0, "rollback");
	stat(P("out/big.conf"), &b);
	ok(b.st_ino == a.st_ino && (size_t)b.st_size == n + 1, "... puts the very same file back");
	pi_templates_free(t);

	/* The new output differs in its last byte only. */
	truncate(P("out/big.conf"), (off_t)n - 1);
	f = fopen(P("out/big.conf"), "a");
	fputs("?", f);
	fclose(f);
	t = NULL;
	pi_templates_render(&o, &t, &err);
	is_int(pi_templates_commit(t, &err), 0, "commit over an old output differing at its end");
	f = fopen(P("out/big.conf"), "r");
	n = f ? fread(big, 1, sizeof(big) - 1, f) : 0;
	if (f)
		fclose(f);
	ok(n > 400000 && big[n - 1] == '\n' && big[0] == 'l', "... the whole new text is there");
	pi_templates_free(t);
}

/* A template removed before a reload: the output the init rendered from
 * it goes in the same commit and comes back at a rollback; other files in
 * the output folder, and a file someone else put at a path the init once
 * wrote, are never touched. */
static void test_removed_template(void)
{
	struct pi_templates_opts o = opts(NULL);
	struct pi_templates_error err;
	struct pi_templates *t1 = NULL, *t2 = NULL, *t3 = NULL;
	struct stat before, after;

	rm_rf(root);
	put(P("tpl/a.conf.template"), "a\n");
	put(P("tpl/b.conf.template"), "b\n");
	put(P("tpl/sub/c.conf.template"), "c\n");
	put(P("out/other.conf"), "not ours\n");
	pi_templates_render(&o, &t1, &err);
	is_int(pi_templates_commit(t1, &err), 0, "first commit");
	stat(P("out/b.conf"), &before);

	unlink(P("tpl/b.conf.template"));
	unlink(P("tpl/sub/c.conf.template"));
	put(P("tpl/a.conf.template"), "a2\n");
	is_int(pi_templates_render(&o, &t2, &err), 0, "render after two templates went");
	pi_templates_supersede(t2, t1);
	pi_templates_free(t1); /* t2 keeps nothing of t1 */
	if (!is_int(pi_templates_commit(t2, &err), 0, "commit"))
		diag("%s", err.msg);
	is_str(get(P("out/a.conf")), "a2\n", "a.conf replaced");
	is_str(get(P("out/b.conf")), "(absent)", "b.conf, its template gone, removed");
	is_str(get(P("out/sub/c.conf")), "(absent)", "sub/c.conf removed too");
	is_str(get(P("out/other.conf")), "not ours\n", "a file the init did not render stays");

	is_int(pi_templates_rollback(t2, NULL), 0, "rollback");
	is_str(get(P("out/a.conf")), "a\n", "a.conf restored");
	is_str(get(P("out/b.conf")), "b\n", "b.conf back");
	stat(P("out/b.conf"), &after);
	ok(after.st_ino == before.st_ino, "... the very same file");
	is_str(get(P("out/sub/c.conf")), "c\n", "sub/c.conf back");
	is_int(hidden(P("out")), 0, "no kept link left");

	/* Now commit for good, settle, and let someone replace sub/c.conf:
	 * it is not the init's file any more. */
	t1 = NULL;
	put(P("tpl/b.conf.template"), "b\n");
	put(P("tpl/sub/c.conf.template"), "c\n");
	pi_templates_render(&o, &t1, &err);
	pi_templates_supersede(t1, t2);
	pi_templates_free(t2);
	is_int(pi_templates_commit(t1, &err), 0, "commit all three again");
	pi_templates_settle(t1);
	is_int(hidden(P("out")), 0, "settle removes the kept links");
	unlink(P("out/sub/c.conf"));
	put(P("out/sub/c.conf"), "someone else's\n");
	unlink(P("tpl/sub/c.conf.template"));
	pi_templates_render(&o, &t3, &err);
	pi_templates_supersede(t3, t1);
	is_int(pi_templates_commit(t3, &err), 0, "commit without c");
	is_str(get(P("out/sub/c.conf")), "someone else's\n",
	       "a file replaced by someone else is not removed");
	pi_templates_free(t1);
	pi_templates_free(t3);
	is_int(hidden(P("out")), 0, "free removes the kept links");
}

/* An output name as long as a template name allows (255 bytes less
 * ".template"): its hidden temp file and kept link are cut to fit a
 * directory entry, so it is replaced and removed like any other. */
/* A template moved into a folder that, in the output tree, is a symbolic
 * link back to the same folder: the new output is the old one under
 * another name, and removing the old name as stale would remove the file
 * just committed (content changed or not). */
static void test_stale_alias_of_an_output(void)
{
	struct pi_templates_opts o = opts(NULL);
	struct pi_templates_error err;
	struct pi_templates *t1 = NULL, *t2 = NULL;

	for (int changed = 0; changed < 2; changed++) {
		rm_rf(root);
		put(P("tpl/x.conf.template"), "x\n");
		mkdirs(P("out"));
		ok(symlink(".", P("out/sub")) == 0, "out/sub -> out");
		is_int(pi_templates_render(&o, &t1, &err), 0, "render");
		is_int(pi_templates_commit(t1, &err), 0, "first commit");

		unlink(P("tpl/x.conf.template"));
		put(P("tpl/sub/x.conf.template"), changed ? "x2\n" : "x\n");
		is_int(pi_templates_render(&o, &t2, &err), 0, "render from the moved template");
		pi_templates_supersede(t2, t1);
		pi_templates_free(t1);
		if (!is_int(pi_templates_commit(t2, &err), 0, "commit"))
			diag("%s", err.msg);
		is_str(get(P("out/sub/x.conf")), changed ? "x2\n" : "x\n",
		       changed ? "changed: the output is there" : "unchanged: the output is there");
		is_int(pi_templates_rollback(t2, NULL), 0, "rollback");
		is_str(get(P("out/x.conf")), "x\n", "... and after a rollback, the first one");
		is_int(hidden(P("out")), 0, "no kept link left");
		pi_templates_free(t2);
	}
}

static void test_long_output_name(void)
{
	struct pi_templates_opts o = opts(NULL);
	struct pi_templates_error err;
	struct pi_templates *t1 = NULL, *t2 = NULL, *t3 = NULL;
	char name[247];

	memset(name, 'n', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	rm_rf(root);
	put(P("tpl/%s.template", name), "one\n");
	pi_templates_render(&o, &t1, &err);
	is_int(pi_templates_commit(t1, &err), 0, "a 246-byte output name is created");
	put(P("tpl/%s.template", name), "two\n");
	pi_templates_render(&o, &t2, &err);
	pi_templates_supersede(t2, t1);
	if (!is_int(pi_templates_commit(t2, &err), 0, "... replaced (a kept link beside it)"))
		diag("%s", err.msg);
	is_str(get(P("out/%s", name)), "two\n", "... with the new text");
	is_int(pi_templates_rollback(t2, NULL), 0, "... put back");
	is_str(get(P("out/%s", name)), "one\n", "... the old text");
	pi_templates_free(t2);
	unlink(P("tpl/%s.template", name));
	pi_templates_render(&o, &t3, &err);
	pi_templates_supersede(t3, t1);
	if (!is_int(pi_templates_commit(t3, &err), 0, "... and removed with its template"))
		diag("%s", err.msg);
	is_str(get(P("out/%s", name)), "(absent)", "... gone");
	pi_templates_free(t1);
	pi_templates_free(t3);
	is_int(hidden(P("out")), 0, "no hidden name left");
}

/* Fills the file system holding path until a write fails. */
static void fill_disk(const char *path)
{
	static char block[4096];
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	while (fd >= 0 && write(fd, block, sizeof(block)) > 0)
		;
	while (fd >= 0 && write(fd, block, 1) > 0)
		;
	if (fd >= 0)
		close(fd);
}

#define DISK_CHECK(cond, bit)                                                                      \
	do {                                                                                       \
		if (!(cond))                                                                       \
			fails |= 1 << (bit);                                                       \
	} while (0)

/* In a child, on a 64 KiB tmpfs in its own mount namespace: a commit on a
 * full disk changes nothing; a rollback on a full disk succeeds. Returns
 * a bit set of failed checks, 255 when the tmpfs could not be set up. */
static int full_disk_child(void)
{
	struct pi_templates_opts o = opts(NULL);
	struct pi_templates_error err;
	struct pi_templates *t = NULL;
	char text[20000];
	int fails = 0;

	if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
	    mount("pi-test", P("out"), "tmpfs", 0, "size=64k") != 0)
		return 255;
	memset(text, 'o', sizeof(text) - 2);
	text[sizeof(text) - 2] = '\n';
	text[sizeof(text) - 1] = '\0';
	put(P("out/a.conf"), text);
	text[0] = 'n';
	put(P("tpl/a.conf.template"), text);
	fill_disk(P("out/filler"));
	DISK_CHECK(pi_templates_render(&o, &t, &err) == 0, 0);
	DISK_CHECK(pi_templates_commit(t, &err) == -ENOSPC, 1);
	DISK_CHECK(get(P("out/a.conf"))[0] == 'o' && hidden(P("out")) == 0, 2);
	pi_templates_free(t);

	unlink(P("out/filler"));
	t = NULL;
	DISK_CHECK(pi_templates_render(&o, &t, &err) == 0, 3);
	DISK_CHECK(pi_templates_commit(t, &err) == 0, 4);
	DISK_CHECK(get(P("out/a.conf"))[0] == 'n', 5);
	fill_disk(P("out/filler"));
	DISK_CHECK(pi_templates_rollback(t, NULL) == 0, 6);
	DISK_CHECK(get(P("out/a.conf"))[0] == 'o' && strlen(get(P("out/a.conf"))) > 4000, 7);
	pi_templates_free(t);
	umount(P("out"));
	return fails;
}

static void test_full_disk(void)
{
	int status = 0;
	pid_t pid;

	rm_rf(root);
	mkdirs(P("out"));
	fflush(stdout);
	pid = fork();
	if (pid == 0)
		_exit(full_disk_child());
	waitpid(pid, &status, 0);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 255) {
		ok(1, "# SKIP no mount namespace (needs root)");
		return;
	}
	if (!ok(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		"full disk: commit changes nothing, rollback needs no space"))
		diag("failed checks (bits): 0x%x, status %d", WEXITSTATUS(status), status);
}

/* A chain of folders, each linked twice from the one above: every folder
 * is walked once, however many paths reach it. */
static void test_link_chain(void)
{
	struct pi_templates_opts o = opts(NULL);
	struct pi_templates_error err;
	struct pi_templates *t = NULL;
	struct timespec t0, t1;
	enum { LEVELS = 17 };
	double ms;

	rm_rf(root);
	mkdirs(P("tpl"));
	for (int i = 1; i <= LEVELS; i++) {
		put(P("chain/%d/x.conf.template", i), "x\n");
		if (symlink(P("chain/%d", i), i == 1 ? P("tpl/a") : P("chain/%d/a", i - 1)) != 0 ||
		    symlink(P("chain/%d", i), i == 1 ? P("tpl/b") : P("chain/%d/b", i - 1)) != 0)
			diag("symlink failed");
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	is_int(pi_templates_render(&o, &t, &err), 0, "a chain of 34 links renders");
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
	if (t) {
		is_int(pi_templates_count(t), LEVELS, "... one template per folder");
		is_str(pi_templates_output(t, LEVELS - 2), P("out/a/a/x.conf"),
		       "... by its first path");
	}
	ok(ms < 1000, "... in %.1f ms (the old walk took 2^17 visits)", ms);
	pi_templates_free(t);
}

/* A plain tree deeper than the cap is too deep, not a loop. */
static void test_too_deep(void)
{
	struct pi_templates_opts o = opts(NULL);
	struct pi_templates_error err;
	struct pi_templates *t = NULL;
	char rel[256] = "tpl";

	rm_rf(root);
	for (int i = 2; i <= 33; i++)
		strcat(rel, "/d");
	put(P("%s/x.conf.template", rel), "x\n");
	is_int(pi_templates_render(&o, &t, &err), -ELOOP, "a tree 33 levels deep is refused");
	is_str(err.msg,
	       R("folder @/tpl/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d "
		 "is too deep: level 33, the limit is 32"),
	       "... as too deep, with its level");
	*strrchr(rel, '/') = '\0';
	rm_rf(P("%s/d", rel));
	put(P("%s/x.conf.template", rel), "x\n");
	is_int(pi_templates_render(&o, &t, &err), 0, "32 levels are fine");
	pi_templates_free(t);
}

/* A symbolic link at an output path is replaced by the rendered file, and
 * a rollback puts the link itself back, whether or not it led anywhere. */
static void test_symlink_output(void)
{
	struct pi_templates_opts o = opts(NULL);
	struct pi_templates_error err;
	struct pi_templates *t = NULL;
	char target[512];
	struct stat st;

	rm_rf(root);
	put(P("tpl/dangling.conf.template"), "new d\n");
	put(P("tpl/live.conf.template"), "new l\n");
	put(P("elsewhere/live.conf"), "old l\n");
	mkdirs(P("out"));
	if (symlink(P("elsewhere/nothing.conf"), P("out/dangling.conf")) != 0 ||
	    symlink(P("elsewhere/live.conf"), P("out/live.conf")) != 0)
		diag("symlink failed");
	is_int(render_all(&o, &t, &err), 0, "render");
	is_int(pi_templates_commit(t, &err), 0, "commit");
	is_str(get(P("out/dangling.conf")), "new d\n", "a dangling link's output rendered");
	ok(lstat(P("out/dangling.conf"), &st) == 0 && S_ISREG(st.st_mode), "... as a file");
	is_str(get(P("out/live.conf")), "new l\n", "a link's output rendered");
	is_str(get(P("elsewhere/live.conf")), "old l\n", "... the file it led to untouched");

	is_int(pi_templates_rollback(t, NULL), 0, "rollback");
	ok(lstat(P("out/dangling.conf"), &st) == 0 && S_ISLNK(st.st_mode),
	   "the dangling link is back");
	memset(target, 0, sizeof(target));
	ok(readlink(P("out/dangling.conf"), target, sizeof(target) - 1) > 0 &&
	       strcmp(target, P("elsewhere/nothing.conf")) == 0,
	   "... leading where it did");
	ok(lstat(P("out/live.conf"), &st) == 0 && S_ISLNK(st.st_mode), "the live link is back");
	is_str(get(P("out/live.conf")), "old l\n", "... and reads the old file");
	is_int(hidden(P("out")), 0, "no temp file or kept link left");
	pi_templates_free(t);

	/* Committed and settled: the kept links go, the files stay. */
	is_int(render_all(&o, &t, &err), 0, "render again");
	is_int(pi_templates_commit(t, &err), 0, "commit again");
	pi_templates_settle(t);
	is_str(get(P("out/dangling.conf")), "new d\n", "settled: the file stays");
	is_int(hidden(P("out")), 0, "settled: no kept link left");
	pi_templates_free(t);
}

int main(void)
{
	snprintf(root, sizeof(root), "/tmp/pi-templates-%ld", (long)getpid());
	test_walk();
	test_all_or_nothing();
	test_rollback();
	test_unwritable();
	test_missing_and_errors();
	test_resolvers();
	test_hosts();
	test_commit_template_error();
	test_fifo_output();
	test_stream_compare();
	test_removed_template();
	test_stale_alias_of_an_output();
	test_long_output_name();
	test_full_disk();
	test_link_chain();
	test_too_deep();
	test_symlink_output();
	rm_rf(root);
	return done_testing();
}
