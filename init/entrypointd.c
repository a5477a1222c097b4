/* /docker-entrypoint.d/: see entrypointd.h. */
#include "init/entrypointd.h"
#include "init/config.h"
#include "init/log.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define ED_DEPTH_MAX 8	   /* folders below the top one */
#define ED_FILES_MAX 10000 /* the walk stops here: "10000+" */
/* Entries of any kind looked at, so that folders linking back to their
 * parents cannot make the walk explode before the depth limit. */
#define ED_SEEN_MAX 50000
#define ED_SHOWN    5 /* names in the log line */

/* What the init does instead, so they are no reason to warn. */
static const char *const ed_stock[] = {
    "10-listen-on-ipv6-by-default.sh", /* NGINX_LISTEN_IPV6 */
    "15-local-resolvers.envsh",	       /* NGINX_LOCAL_RESOLVERS */
    "20-envsubst-on-templates.sh",     /* the renderer */
    "30-tune-worker-processes.sh",     /* NGINX_WORKER_PROCESSES */
};

/* The count, and the ED_SHOWN first names in strcmp order. */
struct ed_found {
	char *names[ED_SHOWN];
	size_t n, nnames, seen;
	int more;
};

static int ed_is_stock(const char *rel)
{
	for (size_t i = 0; i < sizeof(ed_stock) / sizeof(ed_stock[0]); i++)
		if (strcmp(rel, ed_stock[i]) == 0)
			return 1;
	return 0;
}

/* Counts a file and keeps its name when it is among the first ED_SHOWN. */
static void ed_add(struct ed_found *f, const char *name)
{
	size_t i = f->nnames;
	char *copy;

	f->n++;
	if (i == ED_SHOWN && strcmp(name, f->names[ED_SHOWN - 1]) >= 0)
		return;
	if (!(copy = strdup(name)))
		return;
	if (i == ED_SHOWN)
		free(f->names[--i]);
	else
		f->nnames++;
	for (; i > 0 && strcmp(name, f->names[i - 1]) < 0; i--)
		f->names[i] = f->names[i - 1];
	f->names[i] = copy;
}

static int ed_walk(const char *dir, const char *rel, int depth, struct ed_found *f)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	if (!d)
		return -errno;
	while ((e = readdir(d))) {
		char path[PATH_MAX], sub[PATH_MAX];
		struct stat st;

		if (e->d_name[0] == '.')
			continue; /* ".", "..", and a .gitkeep is no customisation */
		if (++f->seen > ED_SEEN_MAX) {
			f->more = 1;
			break;
		}
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) >= sizeof(path) ||
		    (size_t)snprintf(sub, sizeof(sub), "%s%s%s", rel, *rel ? "/" : "", e->d_name) >=
			sizeof(sub) ||
		    stat(path, &st) < 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			if (depth < ED_DEPTH_MAX && !f->more)
				ed_walk(path, sub, depth + 1, f);
		} else if (!ed_is_stock(sub)) {
			ed_add(f, sub);
		}
		if (f->n >= ED_FILES_MAX) {
			f->more = 1;
			break;
		}
	}
	closedir(d);
	return 0;
}

void pi_entrypointd_warn(char *const *envp)
{
	const char *dir = pi_config_env_get(envp, "PEERPREP_INIT_ENTRYPOINT_DIR");
	struct ed_found *f = calloc(1, sizeof(*f));
	char shown[ED_SHOWN * (NAME_MAX + 1) + 8] = "";
	size_t len = 0;
	int rc;

	if (!dir || !*dir)
		dir = PI_ENTRYPOINTD_DIR;
	if (!f)
		return;
	rc = ed_walk(dir, "", 0, f);
	if (rc < 0 && rc != -ENOENT)
		PI_LOG(PI_WARN,
		       "cannot read the folder of entrypoint scripts; nothing in it is run",
		       PI_STR("dir", dir), PI_STR("error", strerror(-rc)));
	if (f->n) {
		for (size_t i = 0; i < f->nnames; i++) {
			int w = snprintf(shown + len, sizeof(shown) - len, "%s%.*s", i ? " " : "",
					 NAME_MAX, f->names[i]);
			if (w > 0 && (size_t)w < sizeof(shown) - len)
				len += (size_t)w;
		}
		if (f->n > ED_SHOWN && len + 4 < sizeof(shown))
			memcpy(shown + len, " ...", 5);
		char count[32];
		snprintf(count, sizeof(count), "%zu%s", f->n, f->more ? "+" : "");
		PI_LOG(PI_WARN,
		       "peerprep-init does not run entrypoint scripts; move their work into "
		       "templates or the image",
		       PI_STR("dir", dir), PI_STR("count", count), PI_STR("files", shown));
	}
	for (size_t i = 0; i < f->nnames; i++)
		free(f->names[i]);
	free(f);
}

void pi_entrypointd_warn_filter(char *const *envp)
{
	const char *filter = pi_config_env_get(envp, "NGINX_ENVSUBST_FILTER");

	if (filter && *filter)
		PI_LOG(PI_WARN, "NGINX_ENVSUBST_FILTER is not read: only variables named with "
				"templates.prefix are substituted, and a template's other "
				"references are refused or left to nginx");
}
