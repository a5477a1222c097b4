#include "init/health_log.h"

#include "init/log.h"

/* The health levels are numbered as the init's. */
_Static_assert((int)PI_HEALTH_LOG_DEBUG == (int)PI_DEBUG &&
		   (int)PI_HEALTH_LOG_ERROR == (int)PI_ERROR,
	       "health log levels match the init's");

void pi_init_health_log(void *data, int level, const char *msg, const char *const *f)
{
	(void)data;
	if (!f || !f[0] || !f[1])
		PI_LOG(level, "%s", msg);
	else if (!f[2] || !f[3])
		PI_LOG(level, "%s" PI_KV "%s=%s", msg, f[0], f[1]);
	else
		PI_LOG(level, "%s" PI_KV "%s=%s" PI_KV "%s=%s", msg, f[0], f[1], f[2], f[3]);
}
