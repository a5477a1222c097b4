/* The init's logger as the health library's log callback (health/log.h). */
#ifndef PI_INIT_HEALTH_LOG_H
#define PI_INIT_HEALTH_LOG_H

#include "health/log.h"

/* Writes one health event as one log line; data is unused. */
pi_health_log_cb pi_init_health_log;

#endif
