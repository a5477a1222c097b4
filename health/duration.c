#include "health/duration.h"

#include <ctype.h>
#include <errno.h>
#include <string.h>

int pi_health_parse_duration(const char *s, uint64_t *ms)
{
	double v = 0, scale = 1, mult = 1000.0;
	int digits = 0;

	while (isspace((unsigned char)*s))
		s++;
	for (; isdigit((unsigned char)*s); s++, digits++)
		v = v * 10 + (*s - '0');
	if (*s == '.')
		for (s++; isdigit((unsigned char)*s); s++, digits++)
			v += (*s - '0') * (scale /= 10);
	if (!digits || v > 1e12)
		return -EINVAL;
	if (strncmp(s, "ms", 2) == 0)
		mult = 1.0, s += 2;
	else if (*s == 'm')
		mult = 60000.0, s++;
	else if (*s == 's')
		s++;
	while (isspace((unsigned char)*s))
		s++;
	if (*s)
		return -EINVAL;
	v *= mult;
	/* A week is far beyond any sensible wait; reject rather than overflow. */
	if (v > 7 * 86400.0 * 1000.0)
		return -EINVAL;
	/* Rounded to the nearest millisecond, but never from above 0 to 0,
	 * which means "off" or "no limit" where it is allowed. */
	*ms = (uint64_t)(v + 0.5);
	if (*ms == 0 && v > 0)
		*ms = 1;
	return 0;
}
