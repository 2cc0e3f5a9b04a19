/* transport.c — usher_http and usher_smtp_send: one HTTP/SMTP layer for every handler. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/evp.h>

#include "log.h"
#include "outcome.h"
#include "pipeline.h"
#include "transport.h"

#define MAX_BODY (1u << 20)

void usher_transport_free(usher_transport *t)
{
    if (t->http != NULL)
        curl_easy_cleanup(t->http);
    if (t->smtp != NULL)
        curl_easy_cleanup(t->smtp);
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

/* A short word for a libcurl error, for reasons and logs. */
static const char *curl_word(CURLcode rc)
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
    rc = curl_easy_perform(t->http);
    if (rc != CURLE_OK) {
        r = usher_classify_curl(rc);
        usher_set_reason(ctx, "http_%s", curl_word(rc));
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
    size_t k = 0, w = 0;
    int ascii = 1;

    for (const unsigned char *p = (const unsigned char *)in; *p && k + 1 < sizeof(clean); p++) {
        if (*p < 0x20 || *p == 0x7f)
            continue; /* CR, LF, NUL, ...: never part of a header */
        ascii &= *p < 0x80;
        clean[k++] = (char)*p;
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
    /* Encoded-words of at most 45 input bytes (60 base64 chars), split on UTF-8 boundaries. */
    for (size_t i = 0; i < k;) {
        size_t len = k - i > 45 ? 45 : k - i;
        while (len > 0 && i + len < k && ((unsigned char)clean[i + len] & 0xC0) == 0x80)
            len--;
        unsigned char b64[64];
        int bl = EVP_EncodeBlock(b64, (const unsigned char *)clean + i, (int)len);
        int m = snprintf(out + w, n - w, "%s=?UTF-8?B?%.*s?=", w ? " " : "", bl, b64);
        if (m < 0 || (size_t)m >= n - w)
            return -1;
        w += (size_t)m;
        i += len;
    }
    return 0;
}

/* True for an address usher can put in an envelope and a header unchanged. */
static int plain_address(const char *a)
{
    const char *at = a ? strchr(a, '@') : NULL;

    if (at == NULL || at == a || at[1] == 0 || strlen(a) > 254)
        return 0;
    for (const unsigned char *p = (const unsigned char *)a; *p; p++)
        if (*p <= 0x20 || *p == 0x7f || strchr("<>(),;:\"[]\\", *p) != NULL)
            return 0;
    return 1;
}

/* Copies s keeping only characters safe in a Message-ID local part. */
static void id_safe(const char *s, char *out, size_t n)
{
    size_t w = 0;

    for (; s && *s && w + 1 < n; s++)
        out[w++] = isalnum((unsigned char)*s) || *s == '.' || *s == '-' || *s == '_' ? *s : '_';
    out[w] = 0;
}

/* A copy of s with every line break as CRLF (MIME's canonical form; a bare LF would be
 * encoded as =0A). NULL when out of memory. */
static char *to_crlf(const char *s)
{
    size_t n = 0, w = 0;
    char *out;

    for (const char *p = s; *p; p++)
        n += *p == '\n' ? 2 : 1;
    if ((out = malloc(n + 1)) == NULL)
        return NULL;
    for (const char *p = s; *p; p++) {
        if (*p == '\r')
            continue;
        if (*p == '\n')
            out[w++] = '\r';
        out[w++] = *p;
    }
    out[w] = 0;
    return out;
}

usher_result usher_smtp_send(usher_ctx *ctx, const usher_mail *m)
{
    usher_transport *t = usher_ctx_transport(ctx);
    struct curl_slist *hdrs = NULL, *rcpt = NULL;
    curl_mime *mime = NULL, *alt = NULL;
    curl_mimepart *part = NULL;
    char *text_crlf = NULL, *html_crlf = NULL;
    usher_result r = USHER_RETRY;
    char line[2048], text[1200], from[300], to[300], date[64], mid[300];
    long code = 0;
    CURLcode rc;
    time_t now = time(NULL);
    struct tm tm;

    if (!plain_address(m->from) || !plain_address(m->to)) {
        usher_set_reason(ctx, "invalid_address");
        return USHER_FAIL;
    }
    if (t->smtp == NULL && (t->smtp = curl_easy_init()) == NULL) {
        usher_set_reason(ctx, "smtp_init");
        return USHER_RETRY;
    }
    curl_easy_reset(t->smtp);

    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
    snprintf(line, sizeof(line), "Date: %s", date);
    hdrs = curl_slist_append(hdrs, line);
    if (m->from_name && *m->from_name && usher_header_text(m->from_name, 1, text, sizeof(text)) == 0)
        snprintf(line, sizeof(line), "From: %s <%s>", text, m->from);
    else
        snprintf(line, sizeof(line), "From: <%s>", m->from);
    hdrs = curl_slist_append(hdrs, line);
    if (m->to_name && *m->to_name && usher_header_text(m->to_name, 1, text, sizeof(text)) == 0)
        snprintf(line, sizeof(line), "To: %s <%s>", text, m->to);
    else
        snprintf(line, sizeof(line), "To: <%s>", m->to);
    hdrs = curl_slist_append(hdrs, line);
    if (usher_header_text(m->subject ? m->subject : "", 0, text, sizeof(text)) != 0)
        text[0] = 0;
    snprintf(line, sizeof(line), "Subject: %s", text);
    hdrs = curl_slist_append(hdrs, line);
    id_safe(m->message_id ? m->message_id : "", mid, sizeof(mid));
    snprintf(line, sizeof(line), "Message-ID: <%s%s%ld@usher.invalid>", mid, mid[0] ? "." : "",
             m->message_id ? 0L : (long)now);
    hdrs = curl_slist_append(hdrs, line);

    text_crlf = to_crlf(m->text ? m->text : "");
    html_crlf = m->html ? to_crlf(m->html) : NULL;
    if (text_crlf == NULL || (m->html != NULL && html_crlf == NULL)) {
        usher_set_reason(ctx, "out_of_memory");
        goto done;
    }
    mime = curl_mime_init(t->smtp);
    alt = curl_mime_init(t->smtp);
    part = curl_mime_addpart(alt);
    curl_mime_data(part, text_crlf, CURL_ZERO_TERMINATED);
    curl_mime_type(part, "text/plain; charset=UTF-8");
    curl_mime_encoder(part, "quoted-printable");
    if (m->html != NULL) {
        part = curl_mime_addpart(alt);
        curl_mime_data(part, html_crlf, CURL_ZERO_TERMINATED);
        curl_mime_type(part, "text/html; charset=UTF-8");
        curl_mime_encoder(part, "quoted-printable");
    }
    part = curl_mime_addpart(mime);
    curl_mime_subparts(part, alt); /* mime now owns alt */
    alt = NULL;
    curl_mime_type(part, "multipart/alternative");

    snprintf(from, sizeof(from), "<%s>", m->from);
    snprintf(to, sizeof(to), "<%s>", m->to);
    rcpt = curl_slist_append(rcpt, to);
    curl_easy_setopt(t->smtp, CURLOPT_URL, m->smtp_url);
    curl_easy_setopt(t->smtp, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
    curl_easy_setopt(t->smtp, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(t->smtp, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(t->smtp, CURLOPT_TIMEOUT_MS, 30000L);
    curl_easy_setopt(t->smtp, CURLOPT_USE_SSL, (long)CURLUSESSL_TRY);
    curl_easy_setopt(t->smtp, CURLOPT_MAIL_FROM, from);
    curl_easy_setopt(t->smtp, CURLOPT_MAIL_RCPT, rcpt);
    curl_easy_setopt(t->smtp, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(t->smtp, CURLOPT_MIMEPOST, mime);
    if (m->username != NULL && *m->username) {
        curl_easy_setopt(t->smtp, CURLOPT_USERNAME, m->username);
        curl_easy_setopt(t->smtp, CURLOPT_PASSWORD, m->password ? m->password : "");
    }
    rc = curl_easy_perform(t->smtp);
    curl_easy_getinfo(t->smtp, CURLINFO_RESPONSE_CODE, &code);
    if (rc == CURLE_OK) {
        r = USHER_OK;
    } else if (code >= 400) {
        r = usher_classify_smtp(code);
        usher_set_reason(ctx, "smtp_%ld", code);
    } else {
        r = usher_classify_curl(rc);
        usher_set_reason(ctx, "smtp_%s", curl_word(rc));
    }
done:
    curl_mime_free(mime);
    curl_slist_free_all(hdrs);
    curl_slist_free_all(rcpt);
    free(text_crlf);
    free(html_crlf);
    return r;
}
