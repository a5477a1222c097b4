/* The health view: a small status record the supervisor owns and writes,
 * and the health server only reads (SPEC §6). Everything runs on one libuv
 * loop, so no locking: the server reads it while answering a request. */
#ifndef PI_HEALTH_STATUS_H
#define PI_HEALTH_STATUS_H

#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>
#include <time.h>

#define PI_HEALTH_MAX_ADDRS 16
#define PI_HEALTH_NAME_MAX 256

/* Every string is a copy held in the entry itself: nothing here points
 * into memory another module may free (a reload frees the rendered
 * templates the names came from). Use pi_health_upstream_name to fill. */
struct pi_health_upstream {
	char var[PI_HEALTH_NAME_MAX];  /* variable name, NUL-terminated */
	char host[PI_HEALTH_NAME_MAX]; /* its value (a host is at most 253 bytes) */
	int resolved;	  /* 1: last lookup succeeded */
	time_t checked;	  /* time of the last lookup, 0 before the first */
	size_t n_addrs;	  /* how many addresses nginx runs with (all of them) */
	char addrs[PI_HEALTH_MAX_ADDRS][48]; /* the first of them, sorted */
	char error[192]; /* the resolver's error when !resolved */
	char note[160];	 /* shown as output when resolved and not empty: more
			    addresses than shown, a newer set not loaded yet */
};

struct pi_health_view {
	pid_t child_pid;       /* 0 when no child runs */
	int stopping;	       /* 1 from the first SIGTERM/SIGINT */
	int reload_ok;	       /* 1 unless the last reload was rejected */
	time_t reload_time;    /* last reload attempt, or start */
	/* Which step of the last reload failed, and that the log has the
	 * reason: /health serves it as it is, so it never holds the config
	 * test's output or any environment value (nginx echoes substituted
	 * values in its [emerg] lines). */
	char reload_error[256];
	size_t n_upstreams;
	struct pi_health_upstream *upstreams;
};

/* Copies var and host into u (each cut to PI_HEALTH_NAME_MAX - 1 bytes;
 * a host value is checked to be at most 253 bytes long before it gets
 * here). */
static inline void pi_health_upstream_name(struct pi_health_upstream *u, const char *var,
					   const char *host)
{
	snprintf(u->var, sizeof(u->var), "%s", var);
	snprintf(u->host, sizeof(u->host), "%s", host);
}

#endif
