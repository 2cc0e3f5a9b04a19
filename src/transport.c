/* transport.c — usher_http, and what it shares with usher_smtp_send (smtp.c). */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "fiber.h"
#include "log.h"
#include "outcome.h"
#include "pipeline.h"
#include "transport.h"

#define MAX_BODY (1u << 20)

void usher_transport_free(usher_transport *t)
{
    if (t->http_multi != NULL)
        curl_multi_cleanup(t->http_multi); /* (the request handle is never left in it) */
    if (t->http != NULL)
        curl_easy_cleanup(t->http);
    usher_smtp_close(t);
    free(t->msg);
    free(t->body);
    memset(t, 0, sizeof(*t));
}

/* Collects the response body, keeping at most MAX_BODY bytes. */
static size_t on_body(char *p, size_t size, size_t nmemb, void *userdata)
{
    usher_transport *t = userdata;
    size_t n = size * nmemb, keep = n;

    if (t->body_len + keep > MAX_BODY)
        keep = MAX_BODY - t->body_len;
    if (keep > 0) {
        if (t->body_len + keep + 1 > t->body_cap) {
            size_t ncap = t->body_cap ? t->body_cap : 4096;
            while (ncap < t->body_len + keep + 1)
                ncap *= 2;
            char *nb = realloc(t->body, ncap);
            if (nb == NULL)
                return 0; /* aborts the transfer: CURLE_WRITE_ERROR -> retry */
            t->body = nb;
            t->body_cap = ncap;
        }
        memcpy(t->body + t->body_len, p, keep);
        t->body_len += keep;
        t->body[t->body_len] = 0;
    }
    return n;
}

/* Remembers a Retry-After header of the response. */
static size_t on_header(char *p, size_t size, size_t nmemb, void *userdata)
{
    usher_transport *t = userdata;
    size_t n = size * nmemb;

    if (n > 12 && strncasecmp(p, "Retry-After:", 12) == 0) {
        size_t k = n - 12;
        if (k >= sizeof(t->retry_after))
            k = sizeof(t->retry_after) - 1;
        memcpy(t->retry_after, p + 12, k);
        t->retry_after[k] = 0;
        t->retry_after[strcspn(t->retry_after, "\r\n")] = 0;
    }
    return n;
}

const char *usher_curl_word(CURLcode rc)
{
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        return "timeout";
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
        return "connect";
    case CURLE_GOT_NOTHING:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_PARTIAL_FILE:
        return "dropped";
    case CURLE_LOGIN_DENIED:
        return "auth";
    default:
        return "error";
    }
}

/* libcurl's CURLMOPT_SOCKETFUNCTION: keeps the sockets and events the transfer waits for. */
static int on_socket(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp)
{
    usher_transport *t = userp;
    short events = (short)((what & CURL_POLL_IN ? POLLIN : 0) |
                           (what & CURL_POLL_OUT ? POLLOUT : 0));
    int i = 0;

    (void)e;
    (void)socketp;
    while (i < t->http_nsocks && t->http_socks[i].fd != fd)
        i++;
    if (what == CURL_POLL_REMOVE) {
        if (i < t->http_nsocks)
            t->http_socks[i] = t->http_socks[--t->http_nsocks];
        return 0;
    }
    if (i == t->http_nsocks) {
        if (i == HTTP_MAX_SOCKS)
            return -1; /* (never seen: fails the transfer rather than hang) */
        t->http_nsocks++;
        t->http_socks[i].fd = fd;
    }
    t->http_socks[i].events = events;
    return 0;
}

/* libcurl's CURLMOPT_TIMERFUNCTION: keeps when to hand libcurl its timeout. */
static int on_timer(CURLM *m, long timeout_ms, void *userp)
{
    usher_transport *t = userp;

    (void)m;
    t->http_timer_at = timeout_ms < 0 ? -1 : usher_now_ms() + timeout_ms;
    return 0;
}

/* Makes the request set up in t->http, as curl_easy_perform would, but driven by socket events
 * (curl_multi_socket_action): libcurl then reads when poll() said the socket is readable
 * instead of polling it again itself, which saves three poll() calls per request. Returns
 * the transfer's result. */
static CURLcode http_transfer(usher_transport *t)
{
    CURLcode rc = CURLE_FAILED_INIT;
    CURLMcode mc;
    CURLMsg *msg;
    int running = 0, left = 0;

    if (t->http_multi == NULL) {
        if ((t->http_multi = curl_multi_init()) == NULL)
            return CURLE_OUT_OF_MEMORY;
        curl_multi_setopt(t->http_multi, CURLMOPT_SOCKETFUNCTION, on_socket);
        curl_multi_setopt(t->http_multi, CURLMOPT_SOCKETDATA, t);
        curl_multi_setopt(t->http_multi, CURLMOPT_TIMERFUNCTION, on_timer);
        curl_multi_setopt(t->http_multi, CURLMOPT_TIMERDATA, t);
    }
    t->http_timer_at = -1;
    if (curl_multi_add_handle(t->http_multi, t->http) != CURLM_OK)
        return CURLE_OUT_OF_MEMORY;
    mc = curl_multi_socket_action(t->http_multi, CURL_SOCKET_TIMEOUT, 0, &running);
    while (mc == CURLM_OK && running > 0) {
        struct pollfd pfd[HTTP_MAX_SOCKS];
        int n = t->http_nsocks, wait = 1000, r;
        int64_t now = usher_now_ms();

        if (t->http_timer_at >= 0)
            wait = t->http_timer_at <= now ? 0
                 : t->http_timer_at - now < INT_MAX ? (int)(t->http_timer_at - now) : INT_MAX;
        for (int i = 0; i < n; i++)
            pfd[i] = (struct pollfd){ .fd = t->http_socks[i].fd,
                                      .events = t->http_socks[i].events };
        r = wait > 0 ? usher_io_wait(pfd, (nfds_t)n, wait) : 0;
        if (r < 0 && errno != EINTR) {
            rc = CURLE_RECV_ERROR;
            break;
        }
        for (int i = 0; i < n && r > 0 && mc == CURLM_OK; i++) {
            int ev = (pfd[i].revents & (POLLIN | POLLHUP) ? CURL_CSELECT_IN : 0) |
                     (pfd[i].revents & POLLOUT ? CURL_CSELECT_OUT : 0) |
                     (pfd[i].revents & (POLLERR | POLLNVAL) ? CURL_CSELECT_ERR : 0);
            if (ev != 0)
                mc = curl_multi_socket_action(t->http_multi, pfd[i].fd, ev, &running);
        }
        if (mc == CURLM_OK && running > 0 &&
            (r == 0 || (t->http_timer_at >= 0 && t->http_timer_at <= usher_now_ms())))
            mc = curl_multi_socket_action(t->http_multi, CURL_SOCKET_TIMEOUT, 0, &running);
    }
    if (mc != CURLM_OK)
        rc = CURLE_OUT_OF_MEMORY;
    while ((msg = curl_multi_info_read(t->http_multi, &left)) != NULL)
        if (msg->msg == CURLMSG_DONE && msg->easy_handle == t->http)
            rc = msg->data.result;
    curl_multi_remove_handle(t->http_multi, t->http);
    return rc;
}

usher_result usher_http(usher_ctx *ctx, const usher_http_request *req, usher_http_response *resp)
{
    usher_transport *t = usher_ctx_transport(ctx);
    struct curl_slist *hdrs = NULL;
    usher_result r = USHER_RETRY;
    long status = 0;
    CURLcode rc;

    if (resp != NULL)
        memset(resp, 0, sizeof(*resp));
    if (t->http == NULL && (t->http = curl_easy_init()) == NULL) {
        usher_set_reason(ctx, "http_init");
        return USHER_RETRY;
    }
    curl_easy_reset(t->http); /* keeps the connection cache */
    t->body_len = 0;
    t->retry_after[0] = 0;
    for (size_t i = 0; req->headers != NULL && req->headers[i] != NULL; i++)
        hdrs = curl_slist_append(hdrs, req->headers[i]);
    curl_easy_setopt(t->http, CURLOPT_URL, req->url);
    curl_easy_setopt(t->http, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(t->http, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(t->http, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(t->http, CURLOPT_TIMEOUT_MS, req->timeout_ms > 0 ? req->timeout_ms : 30000L);
    curl_easy_setopt(t->http, CURLOPT_USERAGENT, "usher/" USHER_VERSION);
    curl_easy_setopt(t->http, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(t->http, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(t->http, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(t->http, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(t->http, CURLOPT_HEADERDATA, t);
    if (req->body != NULL) {
        curl_easy_setopt(t->http, CURLOPT_POSTFIELDS, req->body);
        curl_easy_setopt(t->http, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    }
    if (req->method != NULL)
        curl_easy_setopt(t->http, CURLOPT_CUSTOMREQUEST, req->method);
    rc = http_transfer(t);
    if (rc != CURLE_OK) {
        r = usher_classify_curl(rc);
        usher_set_reason(ctx, "http_%s", usher_curl_word(rc));
        goto out;
    }
    curl_easy_getinfo(t->http, CURLINFO_RESPONSE_CODE, &status);
    r = usher_classify_http(status);
    if (r != USHER_OK)
        usher_set_reason(ctx, "http_%ld", status);
    int64_t ra = usher_parse_retry_after(t->retry_after[0] ? t->retry_after : NULL,
                                         usher_wall_ms());
    if (r == USHER_RETRY && ra >= 0)
        usher_retry_after(ctx, ra);
    if (resp != NULL)
        resp->retry_after_ms = ra;
out:
    if (resp != NULL) {
        resp->status = status;
        resp->body = t->body ? t->body : "";
        resp->body_len = t->body_len;
        if (rc != CURLE_OK)
            resp->retry_after_ms = -1;
    }
    curl_slist_free_all(hdrs);
    return r;
}

int usher_header_text(const char *in, int quote, char *out, size_t n)
{
    char clean[1024];
    size_t k = 0, w = 0, cap = quote ? 360 : 900; /* so a header line stays within 998 */
    int ascii = 1;

    for (const unsigned char *p = (const unsigned char *)in; *p && k < cap; p++) {
        if (*p < 0x20 || *p == 0x7f)
            continue; /* CR, LF, NUL, ...: never part of a header */
        ascii &= *p < 0x80;
        clean[k++] = (char)*p;
    }
    if (k == cap && !ascii) { /* cut: drop a UTF-8 sequence left incomplete */
        size_t lead = k;
        while (lead > 0 && ((unsigned char)clean[lead - 1] & 0xC0) == 0x80)
            lead--;
        if (lead > 0 && (unsigned char)clean[lead - 1] >= 0xC0) {
            unsigned char c = (unsigned char)clean[lead - 1];
            size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
            if (k - (lead - 1) < need)
                k = lead - 1;
        }
    }
    clean[k] = 0;
    if (ascii) {
        if (!quote) {
            if (k + 1 > n)
                return -1;
            memcpy(out, clean, k + 1);
            return 0;
        }
        if (n < 3)
            return -1;
        out[w++] = '"';
        for (size_t i = 0; i < k; i++) {
            if (w + 4 > n)
                return -1;
            if (clean[i] == '"' || clean[i] == '\\')
                out[w++] = '\\';
            out[w++] = clean[i];
        }
        out[w++] = '"';
        out[w] = 0;
        return 0;
    }
    /* Encoded-words of at most 45 input bytes (60 base64 chars), split on UTF-8 boundaries, one
     * per folded line. */
    for (size_t i = 0; i < k;) {
        size_t len = k - i > 45 ? 45 : k - i;
        while (len > 0 && i + len < k && ((unsigned char)clean[i + len] & 0xC0) == 0x80)
            len--;
        unsigned char b64[64];
        int bl = EVP_EncodeBlock(b64, (const unsigned char *)clean + i, (int)len);
        int m = snprintf(out + w, n - w, "%s=?UTF-8?B?%.*s?=", w ? "\r\n " : "", bl, b64);
        if (m < 0 || (size_t)m >= n - w)
            return -1;
        w += (size_t)m;
        i += len;
    }
    return 0;
}
