/* usher/log.h — log levels shared by the core and handlers. */
#ifndef USHER_LOG_H
#define USHER_LOG_H

typedef enum usher_log_level {
    USHER_LOG_ERROR = 0,
    USHER_LOG_WARN,
    USHER_LOG_INFO,
    USHER_LOG_DEBUG
} usher_log_level;

#endif /* USHER_LOG_H */
