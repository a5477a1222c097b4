/* Unit tests of envsubst/templates.c against real folders under /tmp:
 * the walk, mirroring, all-or-nothing, rollback, unwritable outputs,
 * NGINX_LOCAL_RESOLVERS and the host list. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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
	chmod(P("out/a.conf"), 0600);
	put(P("out/same.conf"), "same\n");
	put(P("tpl/a.conf.template"), "new a\n");
	put(P("tpl/same.conf.template"), "same\n");
	put(P("tpl/b.conf.template"), "new b\n");
	put(P("tpl/sub/c.conf.template"), "new c\n");
	stat(P("out/same.conf"), &before);
	is_int(render_all(&o, &t, &err), 0, "render");
	is_int(pi_templates_rollback(t), 0, "rollback before commit does nothing");
	is_int(pi_templates_commit(t, &err), 0, "commit");
	is_str(get(P("out/a.conf")), "new a\n", "a.conf replaced");
	stat(P("out/a.conf"), &after);
	is_int(after.st_mode & 0777, 0600, "a replaced file keeps its mode");
	stat(P("out/same.conf"), &after);
	ok(after.st_ino == before.st_ino, "an output that would not change is not rewritten");
	is_str(get(P("out/sub/c.conf")), "new c\n", "sub/c.conf created");

	is_int(pi_templates_rollback(t), 0, "rollback");
	is_str(get(P("out/a.conf")), "old a\n", "a.conf restored");
	stat(P("out/a.conf"), &after);
	is_int(after.st_mode & 0777, 0600, "... with its mode");
	is_str(get(P("out/same.conf")), "same\n", "same.conf as it was");
	is_str(get(P("out/b.conf")), "(absent)", "b.conf, new, removed");
	is_int(access(P("out/sub"), F_OK), -1, "the folder commit created is removed");
	is_int(hidden(P("out")), 0, "no temp file left");
	is_int(pi_templates_rollback(t), 0, "a second rollback does nothing");
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
	rm_rf(root);
	return done_testing();
}
