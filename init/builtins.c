/* Built-in template variables: see builtins.h. */
#include "init/builtins.h"
#include "init/config.h"
#include "init/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define WORKERS_VAR "NGINX_WORKER_PROCESSES"
#define IPV6_VAR    "NGINX_LISTEN_IPV6"
/* No TCP connection can have the limited broadcast address as its
 * destination, so a `listen` on it beside the wildcard never matches. */
#define IPV6_NONE "255.255.255.255"
#define CPUS_MAX  (1u << 16) /* affinity masks tried up to this many CPUs */

/* A cgroup hierarchy as this process sees it: the mount point, the path
 * inside the hierarchy that is mounted there, and this process's cgroup. */
struct bi_hier {
	int found;
	char root[PATH_MAX];
	char point[PATH_MAX];
	char cgroup[PATH_MAX];
};

/* Reads at most n-1 bytes of a small file (a cgroup or /proc file) into buf,
 * NUL-terminated. Returns the length or a negative errno. */
static ssize_t bi_read_small(const char *path, char *buf, size_t n)
{
	size_t len = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	while (len < n - 1) {
		ssize_t r = read(fd, buf + len, n - 1 - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;
			close(fd);
			return -e;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	buf[len] = '\0';
	return (ssize_t)len;
}

/* ---- affinity ------------------------------------------------------------ */

static unsigned bi_affinity(void)
{
	cpu_set_t set;
	unsigned n = 0;

	if (sched_getaffinity(0, sizeof(set), &set) == 0) {
		n = (unsigned)CPU_COUNT(&set);
	} else {
		/* More CPUs than a cpu_set_t holds: grow the mask until it fits. */
		for (unsigned cpus = 2048; cpus <= CPUS_MAX && n == 0; cpus *= 2) {
			cpu_set_t *dyn = CPU_ALLOC(cpus);
			size_t size = CPU_ALLOC_SIZE(cpus);

			if (!dyn)
				break;
			if (sched_getaffinity(0, size, dyn) == 0)
				n = (unsigned)CPU_COUNT_S(size, dyn);
			CPU_FREE(dyn);
		}
	}
	if (n == 0) {
		long online = sysconf(_SC_NPROCESSORS_ONLN);
		n = online > 0 ? (unsigned)online : 1;
	}
	return n;
}

/* ---- finding the cgroup -------------------------------------------------- */

/* Undoes mountinfo's octal escapes (\040 for a space) in place. */
static void bi_unescape(char *s)
{
	char *w = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*w++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else {
			*w++ = *s;
		}
	}
	*w = '\0';
}

/* 1 when the comma-separated list holds word. */
static int bi_has_word(const char *list, const char *word)
{
	size_t n = strlen(word);

	for (const char *p = list; p && *p;) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		if (len == n && memcmp(p, word, n) == 0)
			return 1;
		p = end ? end + 1 : NULL;
	}
	return 0;
}

/* 1 when the cgroup path lies at or below root. */
static int bi_under(const char *cgroup, const char *root)
{
	size_t n = strlen(root);

	if (strcmp(root, "/") == 0)
		return cgroup[0] == '/';
	return strncmp(cgroup, root, n) == 0 && (cgroup[n] == '/' || cgroup[n] == '\0');
}

/* Takes a mount of the hierarchy. One that holds this process's cgroup
 * beats one that does not, and among equals the later one wins: it is
 * listed after, and so mounted over, any earlier one at the same place. */
static void bi_set_mount(struct bi_hier *h, const char *root, const char *point)
{
	if (strlen(root) >= sizeof(h->root) || strlen(point) >= sizeof(h->point))
		return;
	if (h->found && bi_under(h->cgroup, h->root) && !bi_under(h->cgroup, root))
		return;
	strcpy(h->root, root);
	strcpy(h->point, point);
	h->found = 1;
}

/* The cgroup2 mount and the cgroup (v1) mount with the cpu controller that
 * hold this process's cgroups, from /proc/self/mountinfo:
 *   ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS */
static void bi_scan_mounts(struct bi_hier *v2, struct bi_hier *v1)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char *line = NULL;
	size_t cap = 0;

	if (!f)
		return;
	while (getline(&line, &cap, f) > 0) {
		char *field[6], *save = NULL, *tok, *fstype = NULL, *super = NULL;
		int i = 0, dash = 0;

		for (tok = strtok_r(line, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save)) {
			if (i < 6)
				field[i++] = tok;
			else if (!dash && strcmp(tok, "-") == 0)
				dash = 1;
			else if (dash == 1)
				fstype = tok, dash = 2;
			else if (dash == 2)
				dash = 3; /* the source */
			else if (dash == 3)
				super = tok, dash = 4;
		}
		if (i < 6 || !fstype)
			continue;
		bi_unescape(field[3]);
		bi_unescape(field[4]);
		if (strcmp(fstype, "cgroup2") == 0)
			bi_set_mount(v2, field[3], field[4]);
		else if (strcmp(fstype, "cgroup") == 0 && bi_has_word(super, "cpu"))
			bi_set_mount(v1, field[3], field[4]);
	}
	free(line);
	fclose(f);
}

/* Without a cgroup mount in mountinfo, the places container runtimes use. */
static void bi_usual_mounts(struct bi_hier *v2, struct bi_hier *v1)
{
	static const char *const v1_points[] = {"/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu"};
	struct stat st;

	if (stat("/sys/fs/cgroup/cgroup.controllers", &st) == 0)
		bi_set_mount(v2, "/", "/sys/fs/cgroup");
	for (size_t i = 0; i < sizeof(v1_points) / sizeof(v1_points[0]); i++) {
		char path[PATH_MAX];

		snprintf(path, sizeof(path), "%s/cpu.cfs_period_us", v1_points[i]);
		if (stat(path, &st) == 0)
			bi_set_mount(v1, "/", v1_points[i]);
	}
}

/* This process's cgroup paths, from /proc/self/cgroup: "0::PATH" for v2,
 * "N:LIST:PATH" with cpu in LIST for v1. */
static void bi_scan_cgroups(struct bi_hier *v2, struct bi_hier *v1)
{
	FILE *f = fopen("/proc/self/cgroup", "re");
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;

	if (!f)
		return;
	while ((n = getline(&line, &cap, f)) > 0) {
		char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		struct bi_hier *h = NULL;

		if (!c2)
			continue;
		if (line[n - 1] == '\n')
			line[n - 1] = '\0';
		*c2 = '\0';
		if (c1 == line + 1 && line[0] == '0' && c2 == c1 + 1)
			h = v2;
		else if (bi_has_word(c1 + 1, "cpu"))
			h = v1;
		if (h && !h->cgroup[0] && strlen(c2 + 1) < sizeof(h->cgroup))
			strcpy(h->cgroup, c2 + 1);
	}
	free(line);
	fclose(f);
}

/* The folder of this process's cgroup under the mount point: the cgroup
 * path made relative to the mounted root. A cgroup outside the mounted part
 * (a path with "..", as a cgroup namespace shows its outside) or a folder
 * that does not exist gives the mount point itself. */
static void bi_cgroup_dir(const struct bi_hier *h, char *dir, size_t n)
{
	size_t rlen = strcmp(h->root, "/") == 0 ? 0 : strlen(h->root);
	const char *rel = bi_under(h->cgroup, h->root) ? h->cgroup + rlen : "";
	struct stat st;

	if (strstr(rel, "/..") || strcmp(rel, "/") == 0)
		rel = "";
	if ((size_t)snprintf(dir, n, "%s%s", h->point, rel) >= n || stat(dir, &st) != 0 ||
	    !S_ISDIR(st.st_mode))
		snprintf(dir, n, "%s", h->point);
}

/* ---- reading quotas ------------------------------------------------------ */

/* ceil(q / p), at least 1 (a tiny quota still runs one worker). */
static unsigned bi_ceil_div(unsigned long long q, unsigned long long p)
{
	unsigned long long c = q / p + (q % p != 0);

	return c > UINT_MAX ? UINT_MAX : (unsigned)(c ? c : 1);
}

/* The CPUs a cgroup folder's quota allows (rounded up); 0 when it sets none
 * or its files cannot be read. `file` receives the file that said so. */
static unsigned bi_quota_v2(const char *dir, char *file, size_t n)
{
	unsigned long long q, p;
	char buf[128];

	if ((size_t)snprintf(file, n, "%s/cpu.max", dir) >= n ||
	    bi_read_small(file, buf, sizeof(buf)) <= 0)
		return 0;
	/* "max PERIOD" (no limit) fails the first %llu. */
	if (buf[0] == '-' || sscanf(buf, "%llu %llu", &q, &p) != 2 || p == 0)
		return 0;
	return bi_ceil_div(q, p);
}

static unsigned bi_quota_v1(const char *dir, char *file, size_t n)
{
	char qpath[PATH_MAX + 32], qbuf[64], pbuf[64];
	long long q;
	unsigned long long p;

	if ((size_t)snprintf(qpath, sizeof(qpath), "%s/cpu.cfs_quota_us", dir) >= sizeof(qpath) ||
	    (size_t)snprintf(file, n, "%s/cpu.cfs_period_us", dir) >= n ||
	    bi_read_small(qpath, qbuf, sizeof(qbuf)) <= 0 ||
	    bi_read_small(file, pbuf, sizeof(pbuf)) <= 0)
		return 0;
	/* -1 is "no limit". */
	if (sscanf(qbuf, "%lld", &q) != 1 || q <= 0 || pbuf[0] == '-' ||
	    sscanf(pbuf, "%llu", &p) != 1 || p == 0)
		return 0;
	snprintf(file, n, "%s", qpath);
	return bi_ceil_div((unsigned long long)q, p);
}

/* The smallest quota of the cgroup and its parents up to the mount point
 * (a parent's limit binds its children too). */
static void bi_hier_quota(const struct bi_hier *h, int v2, struct pi_builtins_cpu *out)
{
	char dir[PATH_MAX], file[PATH_MAX + 32];
	size_t plen = strlen(h->point);

	if (!h->found)
		return;
	bi_cgroup_dir(h, dir, sizeof(dir));
	for (;;) {
		unsigned c = v2 ? bi_quota_v2(dir, file, sizeof(file))
				: bi_quota_v1(dir, file, sizeof(file));
		char *slash;

		if (c && (out->quota == 0 || c < out->quota)) {
			out->quota = c;
			snprintf(out->source, sizeof(out->source), "%s", file);
		}
		slash = strrchr(dir, '/');
		if (strlen(dir) <= plen || !slash || (size_t)(slash - dir) < plen)
			break;
		*slash = '\0';
	}
}

void pi_builtins_cpus(struct pi_builtins_cpu *out)
{
	struct bi_hier *h = calloc(2, sizeof(*h));

	memset(out, 0, sizeof(*out));
	out->affinity = bi_affinity();
	if (h) {
		bi_scan_cgroups(&h[0], &h[1]);
		bi_scan_mounts(&h[0], &h[1]);
		if (!h[0].found && !h[1].found)
			bi_usual_mounts(&h[0], &h[1]);
		bi_hier_quota(&h[0], 1, out);
		bi_hier_quota(&h[1], 0, out);
		free(h);
	}
	out->cpus = out->affinity;
	if (out->quota && out->quota < out->cpus)
		out->cpus = out->quota;
}

/* ---- IPv6 ---------------------------------------------------------------- */

int pi_builtins_has_ipv6(void)
{
	char buf[256];

	/* One line per address; the file is missing when IPv6 is off in the
	 * kernel and empty in a namespace where it is disabled. */
	return bi_read_small("/proc/net/if_inet6", buf, sizeof(buf)) > 0;
}

/* ---- the renderer's environment ------------------------------------------ */

static char bi_workers[16];
static char bi_ipv6[24];
static int bi_computed;

/* Both values at once, so that one log line says what the init decided. */
static void bi_compute(char *const *envp)
{
	const char *w = pi_config_env_get(envp, WORKERS_VAR),
		   *v6 = pi_config_env_get(envp, IPV6_VAR);
	struct pi_builtins_cpu cpu = {0};
	char quota[16] = "none";

	bi_computed = 1;
	if (!w) { /* one the environment sets is not computed at all */
		pi_builtins_cpus(&cpu);
		snprintf(bi_workers, sizeof(bi_workers), "%u", cpu.cpus);
	}
	if (!v6)
		snprintf(bi_ipv6, sizeof(bi_ipv6), "%s",
			 pi_builtins_has_ipv6() ? "[::]" : IPV6_NONE);
	if (cpu.quota)
		snprintf(quota, sizeof(quota), "%u", cpu.quota);
	PI_LOG(PI_INFO, "built-in template variables",
	       PI_STR(WORKERS_VAR, w ? "(from the environment)" : bi_workers),
	       PI_STR("cpu_quota", quota), PI_STR("quota_file", cpu.source),
	       PI_UINT("affinity_cpus", cpu.affinity),
	       PI_STR(IPV6_VAR, v6 ? "(from the environment)" : bi_ipv6));
}

static int bi_is(const char *name, size_t len, const char *var)
{
	return len == strlen(var) && memcmp(name, var, len) == 0;
}

const char *pi_builtins_lookup(void *envp, const char *name, size_t len, size_t *vlen)
{
	const char *v;

	if (bi_is(name, len, WORKERS_VAR))
		v = bi_workers;
	else if (bi_is(name, len, IPV6_VAR))
		v = bi_ipv6;
	else
		return NULL;
	if (!bi_computed)
		bi_compute(envp);
	*vlen = strlen(v);
	return v;
}
