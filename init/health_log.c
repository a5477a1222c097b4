#include "init/health_log.h"

#include "init/log.h"

/* The health levels are numbered as the init's. */
_Static_assert((int)PI_HEALTH_LOG_DEBUG == (int)PI_DEBUG &&
		   (int)PI_HEALTH_LOG_ERROR == (int)PI_ERROR,
	       "health log levels match the init's");

void pi_init_health_log(void *data, int level, const char *msg, const char *const *f)
{
	struct pi_log_field fields[PI_HEALTH_LOG_FIELDS];
	size_t n = 0;

	(void)data;
	if (level < pi_log_min_level)
		return;
	for (; f && n < PI_HEALTH_LOG_FIELDS && f[2 * n] && f[2 * n + 1]; n++)
		fields[n] = PI_STR(f[2 * n], f[2 * n + 1]);
	pi_log_emit(level, msg, fields, n);
}
