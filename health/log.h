/* How the health library reports events it cannot return: the program
 * passes a callback (libuv style); the library never writes to a log
 * itself and includes nothing of the program's. */
#ifndef PI_HEALTH_LOG_H
#define PI_HEALTH_LOG_H

enum pi_health_log_level {
	PI_HEALTH_LOG_DEBUG = 0,
	PI_HEALTH_LOG_INFO = 1,
	PI_HEALTH_LOG_WARN = 2,
	PI_HEALTH_LOG_ERROR = 3,
};

/* The most key/value pairs one event carries. */
#define PI_HEALTH_LOG_FIELDS 2

/* One event: msg is a short fixed sentence, fields a NULL-terminated list
 * of alternating keys and values (at most PI_HEALTH_LOG_FIELDS pairs; a
 * value may hold any bytes). Every pointer is valid only for the duration
 * of the call. data is the pointer given with the callback. */
typedef void pi_health_log_cb(void *data, int level, const char *msg, const char *const *fields);

#endif
