/* Golden-file tests of the renderer: tests/render/NAME.template with
 * NAME.env, against NAME.expected or NAME.error. The format is described in
 * tests/render/README.md. Run from the repository root (prove is). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "envsubst/templates.h"
#include "tap.h"

#define GOLDEN "tests/render"

struct text {
	char *data;
	size_t len;
};

/* Reads a whole file; returns 0, or -errno with t->data NULL. */
static int slurp(const char *path, struct text *t)
{
	FILE *f = fopen(path, "rb");
	char buf[4096];
	size_t n;

	t->data = NULL;
	t->len = 0;
	if (!f)
		return -errno;
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
		char *p = realloc(t->data, t->len + n + 1);

		if (!p)
			abort();
		t->data = p;
		memcpy(t->data + t->len, buf, n);
		t->len += n;
		t->data[t->len] = '\0';
	}
	fclose(f);
	if (!t->data)
		t->data = calloc(1, 1);
	return 0;
}

static int hex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
		return (c | 0x20) - 'a' + 10;
	return -1;
}

/* Parses NAME.env into a NULL-terminated "KEY=VALUE" array, unescaping
 * \xNN and \\ in place. A missing file is an empty environment. */
static char **load_env(const char *path, struct text *file)
{
	char **env = calloc(1, sizeof(*env));
	size_t n = 0;
	char *line, *save = NULL;

	if (!env)
		abort();
	if (slurp(path, file) < 0)
		return env;
	for (line = strtok_r(file->data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *r = line, *w = line;

		if (*line == '#' || !strchr(line, '='))
			continue;
		while (*r) {
			if (r[0] == '\\' && r[1] == 'x' && hex(r[2]) >= 0 && hex(r[3]) >= 0) {
				*w++ = (char)(hex(r[2]) * 16 + hex(r[3]));
				r += 4;
			} else if (r[0] == '\\' && r[1] == '\\') {
				*w++ = '\\';
				r += 2;
			} else {
				*w++ = *r++;
			}
		}
		*w = '\0';
		env = realloc(env, (n + 2) * sizeof(*env));
		if (!env)
			abort();
		env[n++] = line;
		env[n] = NULL;
	}
	return env;
}

static int copy_file(const char *from, const char *to)
{
	struct text t;
	FILE *f;
	int ok_ = 0;

	if (slurp(from, &t) < 0)
		return -1;
	f = fopen(to, "wb");
	if (f) {
		ok_ = fwrite(t.data, 1, t.len, f) == t.len;
		ok_ = fclose(f) == 0 && ok_;
	}
	free(t.data);
	return ok_ ? 0 : -1;
}

static void check(const char *name)
{
	char path[512], tmp[] = "/tmp/pi-golden-XXXXXX", copy[600];
	struct text envfile = {0}, want = {0};
	struct pi_templates_opts o = {0};
	struct pi_templates_error err;
	struct pi_templates *t = NULL;
	char *printed = NULL;
	size_t plen = 0;
	int rc, have_expected, have_error;
	char **env;

	snprintf(path, sizeof(path), GOLDEN "/%s.env", name);
	env = load_env(path, &envfile);
	snprintf(path, sizeof(path), GOLDEN "/%s.expected", name);
	have_expected = slurp(path, &want) == 0;
	if (!have_expected) {
		snprintf(path, sizeof(path), GOLDEN "/%s.error", name);
		have_error = slurp(path, &want) == 0;
	} else {
		snprintf(path, sizeof(path), GOLDEN "/%s.error", name);
		have_error = access(path, F_OK) == 0;
	}
	if (!ok(have_expected != have_error, "%s: exactly one of .expected and .error", name))
		goto out;

	/* The template alone in a folder, so its error cannot be another's. */
	if (!mkdtemp(tmp))
		abort();
	snprintf(path, sizeof(path), GOLDEN "/%s.template", name);
	snprintf(copy, sizeof(copy), "%s/%s.template", tmp, name);
	if (copy_file(path, copy) < 0)
		abort();
	o.dir = tmp;
	o.output_dir = "/nonexistent/out";
	o.stream_output_dir = "/nonexistent/stream";
	o.hosts = "NGINX_*_HOST";
	o.resolv_conf = GOLDEN "/resolv.conf";
	o.envp = env;
	/* The template renders when printed: into memory, after its
	 * "# ==> OUTPUT" line. */
	rc = pi_templates_render(&o, &t, &err);
	if (rc == 0) {
		FILE *f = open_memstream(&printed, &plen);

		if (!f)
			abort();
		rc = pi_templates_print(t, f, &err);
		fclose(f);
	}
	unlink(copy);
	rmdir(tmp);

	if (have_expected) {
		const char *nl = printed ? memchr(printed, '\n', plen) : NULL;
		const char *got = rc == 0 && nl ? nl + 1 : "";
		size_t len = rc == 0 && nl ? plen - (size_t)(got - printed) : 0;

		if (!ok(rc == 0 && len == want.len && memcmp(got, want.data, len) == 0,
			"%s: rendered as expected", name)) {
			if (rc < 0)
				diag("error: %s", err.msg);
			else
				diag("got %zu bytes:\n%.*s", len, (int)len, got);
		}
	} else {
		char *msg = err.msg;
		size_t tl = strlen(tmp);

		/* The expected line names the template relative to its folder. */
		if (strncmp(msg, tmp, tl) == 0 && msg[tl] == '/')
			msg += tl + 1;
		if (want.len && want.data[want.len - 1] == '\n')
			want.data[--want.len] = '\0';
		if (ok(rc < 0, "%s: fails", name))
			is_str(msg, want.data, name);
	}
	pi_templates_free(t);
	free(printed);
out:
	free(want.data);
	free(envfile.data);
	free(env);
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(void)
{
	DIR *d = opendir(GOLDEN);
	struct dirent *de;
	char **names = NULL;
	size_t n = 0;

	if (!ok(d != NULL, "open " GOLDEN " (run from the repository root)"))
		return done_testing();
	while ((de = readdir(d)) != NULL) {
		size_t len = strlen(de->d_name);

		if (len > 9 && strcmp(de->d_name + len - 9, ".template") == 0) {
			names = realloc(names, (n + 1) * sizeof(*names));
			if (!names || !(names[n] = strndup(de->d_name, len - 9)))
				abort();
			n++;
		}
	}
	closedir(d);
	qsort(names, n, sizeof(*names), str_cmp);
	ok(n >= 10, "found %zu golden templates", n);
	for (size_t i = 0; i < n; i++) {
		check(names[i]);
		free(names[i]);
	}
	free(names);
	return done_testing();
}
