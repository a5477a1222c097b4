/* Built-in template variables the init computes from the system (SPEC §3),
 * besides NGINX_LOCAL_RESOLVERS (which envsubst/templates.c reads itself):
 *
 *   NGINX_WORKER_PROCESSES  the CPUs the container may use: its cgroup's CPU
 *                           quota (v2 cpu.max, v1 cpu.cfs_quota_us /
 *                           cpu.cfs_period_us) rounded up, at least 1, at most
 *                           the CPUs in the init's affinity mask; without a
 *                           quota, the affinity count.
 *   NGINX_LISTEN_IPV6       "[::]" when the network namespace has an IPv6
 *                           address (/proc/net/if_inet6 lists one), else
 *                           "255.255.255.255": an address no TCP connection
 *                           can reach, so `listen ${NGINX_LISTEN_IPV6}:80;`
 *                           beside `listen 80;` is valid and inert there.
 *
 * Both values are single safe nginx words (SPEC §3's value rules hold
 * without exemption). A variable set in the environment wins: the renderer
 * looks there first. The child gets the plain environment. */
#ifndef PI_BUILTINS_H
#define PI_BUILTINS_H

#include <limits.h>
#include <stddef.h>

/* Where the CPU count came from, for the log line. */
struct pi_builtins_cpu {
	unsigned affinity;	    /* CPUs in the affinity mask (at least 1) */
	unsigned quota;		    /* ceil(quota / period) of the tightest cgroup, 0: none */
	char source[PATH_MAX + 32]; /* the file that gave `quota`, "" when none */
	unsigned cpus;		    /* the answer */
};

/* Computes NGINX_WORKER_PROCESSES. Reads /proc/self/cgroup and
 * /proc/self/mountinfo to find the init's cgroup (falling back to the usual
 * /sys/fs/cgroup mount points when mountinfo lists no cgroup file system),
 * then the quota of that cgroup and of each parent visible in the mount,
 * keeping the smallest. Never fails: what cannot be read counts as "no
 * quota". */
void pi_builtins_cpus(struct pi_builtins_cpu *out);

/* 1 when /proc/net/if_inet6 lists at least one address, else 0. */
int pi_builtins_has_ipv6(void);

/* The renderer's builtin callback (struct pi_templates_opts; envp, the
 * process's environment, as its ctx): the value of NGINX_WORKER_PROCESSES
 * or NGINX_LISTEN_IPV6, else NULL. The renderer asks only for a variable
 * the environment does not set and only when a template refers to it, so
 * a start whose templates use neither reads no cgroup file. The first call
 * computes both (and logs them at info, saying which ones the environment
 * sets); the values are static and stay the same until the process exits. */
const char *pi_builtins_lookup(void *envp, const char *name, size_t len, size_t *vlen);

#endif
