/* A tiny TAP producer for the unit tests, run with prove(1).
 *
 *   ok(cond, "fmt", ...)        one test point; cond non-zero passes
 *   is_int(got, want, name)     integers compared, both printed on failure
 *   is_str(got, want, name)     strings compared (NULL allowed), both printed
 *   diag("fmt", ...)            a "# " comment line on standard error
 *   return done_testing();      prints the plan "1..N"; 0 when all passed
 *
 * Each returns the test's verdict (1 pass, 0 fail) so a caller can skip
 * dependent checks. Nothing here uses assert(3), so the checks survive
 * NDEBUG. State lives in static variables: one test program is one
 * translation unit, which is what this header is meant for. */
#ifndef PI_TAP_H
#define PI_TAP_H

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define TAP_FN __attribute__((unused)) static

static unsigned tap_run_, tap_failed_;

__attribute__((format(printf, 2, 0))) TAP_FN int tap_vok_(int cond, const char *fmt, va_list ap)
{
	tap_run_++;
	if (!cond)
		tap_failed_++;
	printf("%sok %u - ", cond ? "" : "not ", tap_run_);
	vprintf(fmt, ap);
	putchar('\n');
	fflush(stdout);
	return cond != 0;
}

__attribute__((format(printf, 1, 2))) TAP_FN void diag(const char *fmt, ...)
{
	va_list ap;

	/* stdout first, so the comment lands after the test line it explains. */
	fflush(stdout);
	fputs("# ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fflush(stderr);
}

__attribute__((format(printf, 2, 3))) TAP_FN int ok(int cond, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = tap_vok_(cond, fmt, ap);
	va_end(ap);
	return r;
}

TAP_FN int is_int(long got, long want, const char *name)
{
	if (!ok(got == want, "%s", name)) {
		diag("     got: %ld", got);
		diag("expected: %ld", want);
		return 0;
	}
	return 1;
}

TAP_FN int is_str(const char *got, const char *want, const char *name)
{
	int same = (got == NULL || want == NULL) ? got == want : strcmp(got, want) == 0;

	if (!ok(same, "%s", name)) {
		diag("     got: %s%s%s", got ? "'" : "", got ? got : "NULL", got ? "'" : "");
		diag("expected: %s%s%s", want ? "'" : "", want ? want : "NULL", want ? "'" : "");
		return 0;
	}
	return 1;
}

TAP_FN int done_testing(void)
{
	printf("1..%u\n", tap_run_);
	fflush(stdout);
	if (tap_failed_)
		diag("failed %u of %u tests", tap_failed_, tap_run_);
	return tap_failed_ ? 1 : (tap_run_ ? 0 : 1);
}

#endif
