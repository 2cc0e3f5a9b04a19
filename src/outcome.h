/* outcome.h — the one place that maps a transport outcome to OK / RETRY / FAIL. */
#ifndef USHER_OUTCOME_H
#define USHER_OUTCOME_H

#include <stdint.h>

#include <curl/curl.h>

#include "usher/handler.h"

/* HTTP: 2xx OK; 408, 429, 5xx RETRY; everything else (other 1xx-4xx, 3xx) FAIL. */
usher_result usher_classify_http(long status);
/* SMTP reply code of a failed transaction: 4xx RETRY, 5xx FAIL, 2xx/3xx OK. */
usher_result usher_classify_smtp(long code);
/* libcurl transport errors: timeouts, DNS, refused or dropped connections and TLS handshake
 * trouble RETRY; a malformed URL, an unsupported protocol or bad credentials FAIL. */
usher_result usher_classify_curl(CURLcode rc);
/* A Retry-After value (delta-seconds or an HTTP-date) in ms from now_wall_ms; -1 if invalid. */
int64_t usher_parse_retry_after(const char *value, int64_t now_wall_ms);

#endif
