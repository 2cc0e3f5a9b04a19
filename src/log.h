/* log.h — the process-wide logger: one line per call on stderr, with UTC time and level. */
#ifndef USHER_LOG_INTERNAL_H
#define USHER_LOG_INTERNAL_H

#include <stdarg.h>

#include "usher/log.h"

/* Sets the most verbose level that is printed (default info). Call before threads start. */
void usher_log_set_level(usher_log_level level);

/* Writes one line atomically (a single write(2)); safe from any thread. */
void usher_log(usher_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void usher_logv(usher_log_level level, const char *prefix, const char *fmt, va_list ap);

#define usher_err(...) usher_log(USHER_LOG_ERROR, __VA_ARGS__)
#define usher_warn(...) usher_log(USHER_LOG_WARN, __VA_ARGS__)
#define usher_info(...) usher_log(USHER_LOG_INFO, __VA_ARGS__)
#define usher_debug(...) usher_log(USHER_LOG_DEBUG, __VA_ARGS__)

#endif
