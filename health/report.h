/* The /health answer (SPEC §6): an application/health+json document
 * rendered from a pi_health_view and the nginx probe's result, and kept
 * until either changes. Internal to health/.
 *
 * Every request asks pi_health_report_fresh first: it compares every field
 * the report shows (the view's and each upstream entry's) and the probe
 * result with what the answer was rendered from, so any change shows on
 * the very next answer. A field added to the view and rendered is added to
 * that comparison too (report.c, rpt_same_*). The body grows to whatever
 * the view needs: every valid state fits. */
#ifndef PI_HEALTH_REPORT_H
#define PI_HEALTH_REPORT_H

#include <stddef.h>

#include "health/status.h"

#define PI_HEALTH_REPORT_HEAD_MAX 256
/* The end of a head whose connection stays open. */
#define PI_HEALTH_KEEP_ALIVE "keep-alive\r\n\r\n"

struct pi_health_report {
	const struct pi_health_view *view; /* borrowed; outlives the report */
	const char *version;		   /* borrowed; JSON "version" */
	const char *probe_name;		   /* borrowed; "" when there is no probe */
	/* The answer: its head up to "Connection: ", and its body. */
	char head[PI_HEALTH_REPORT_HEAD_MAX];
	size_t head_len;
	const char *body; /* in body_buf, or a static text after running out of memory */
	size_t body_len;
	/* The whole answer on a connection that stays open (head, "keep-alive",
	 * body) in one piece, for one write; NULL after running out of memory. */
	const char *keep_alive;
	size_t keep_alive_len;
	char *body_buf; /* owned; grows, never shrinks; keep_alive, then body */
	size_t body_cap;
	/* What the answer was rendered from. */
	int valid, seen_probe;
	struct pi_health_view seen;
	struct pi_health_upstream *seen_ups; /* owned, seen_cap entries */
	size_t seen_cap;
};

/* Sets up r for view; every pointer is borrowed and must outlive r. */
void pi_health_report_init(struct pi_health_report *r, const struct pi_health_view *view,
			   const char *version, const char *probe_name);

/* 1 when r's answer was rendered from the view as it is now and from
 * probe_result (0: nginx accepts, else a negative errno; ignored without a
 * probe). */
int pi_health_report_fresh(const struct pi_health_report *r, int probe_result);

/* Renders the answer again. Returns 0, or -ENOMEM: the answer is then a
 * short 500 saying so (still a whole, valid response) and r stays stale,
 * so the next request tries again. */
int pi_health_report_render(struct pi_health_report *r, int probe_result);

/* Frees what r owns; r may be set up again with pi_health_report_init. */
void pi_health_report_free(struct pi_health_report *r);

/* Formats a response head up to "Connection: " (whose value depends on
 * the request) into p (room bytes). extra is "" or whole header lines.
 * Returns its length, or -ENOBUFS when it does not fit. */
int pi_health_format_head(char *p, size_t room, int status, const char *type, const char *extra,
			  size_t body_len);

#endif
