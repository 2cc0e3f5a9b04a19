/* outcome.c — see outcome.h. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "outcome.h"

usher_result usher_classify_http(long status)
{
    if (status >= 200 && status < 300)
        return USHER_OK;
    if (status == 408 || status == 429 || (status >= 500 && status < 600))
        return USHER_RETRY;
    return USHER_FAIL;
}

usher_result usher_classify_smtp(long code)
{
    if (code >= 400 && code < 500)
        return USHER_RETRY;
    if (code >= 500)
        return USHER_FAIL;
    return USHER_OK;
}

usher_result usher_classify_curl(CURLcode rc)
{
    switch (rc) {
    case CURLE_OK:
        return USHER_OK;
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_LOGIN_DENIED:
    case CURLE_REMOTE_ACCESS_DENIED:
    case CURLE_TOO_MANY_REDIRECTS:
    case CURLE_FILESIZE_EXCEEDED:
    case CURLE_BAD_CONTENT_ENCODING:
        return USHER_FAIL;
    default:
        /* timeouts, name resolution, refused/reset/empty replies, TLS, send/recv errors */
        return USHER_RETRY;
    }
}

int64_t usher_parse_retry_after(const char *value, int64_t now_wall_ms)
{
    struct tm tm;
    const char *end = NULL;
    char *num_end = NULL;
    long long secs;

    if (value == NULL)
        return -1;
    while (isspace((unsigned char)*value))
        value++;
    if (isdigit((unsigned char)*value)) {
        secs = strtoll(value, &num_end, 10);
        while (isspace((unsigned char)*num_end))
            num_end++;
        if (*num_end != 0 || secs < 0)
            return -1;
        if (secs > 86400)
            secs = 86400;
        return secs * 1000;
    }
    memset(&tm, 0, sizeof(tm));
    end = strptime(value, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (end == NULL)
        return -1;
    int64_t at = (int64_t)timegm(&tm) * 1000;
    return at > now_wall_ms ? at - now_wall_ms : 0;
}
