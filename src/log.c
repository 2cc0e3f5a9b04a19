/* log.c — see log.h. */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static volatile usher_log_level max_level = USHER_LOG_INFO;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

void usher_log_set_level(usher_log_level level)
{
    max_level = level;
}

void usher_logv(usher_log_level level, const char *prefix, const char *fmt, va_list ap)
{
    char line[2048];
    struct timespec ts;
    struct tm tm;
    size_t n = 0;
    int r;

    if (level > max_level)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    r = snprintf(line + n, sizeof(line) - n, ".%03ldZ usher[%d] %s: %s%s", ts.tv_nsec / 1000000,
                 (int)getpid(), level_names[level], prefix ? prefix : "", prefix ? ": " : "");
    if (r > 0)
        n += (size_t)r < sizeof(line) - n ? (size_t)r : sizeof(line) - n - 1;
    r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    if (r > 0)
        n += (size_t)r < sizeof(line) - n ? (size_t)r : sizeof(line) - n - 1;
    if (n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    if (write(STDERR_FILENO, line, n) < 0) {
        /* nowhere left to report it */
    }
}

void usher_log(usher_log_level level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    usher_logv(level, NULL, fmt, ap);
    va_end(ap);
}
