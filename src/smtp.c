/*
 * smtp.c — usher_smtp_send: one e-mail per call over a worker's kept SMTP session.
 *
 * libcurl opens the session (CONNECT_ONLY: TCP or implicit TLS, greeting, EHLO, STARTTLS when
 * offered, AUTH) and carries its bytes (curl_easy_send/recv, so TLS stays libcurl's); usher
 * speaks the mail transaction itself, because libcurl sends MAIL, RCPT and DATA one round trip
 * at a time. When the server offers PIPELINING (RFC 2920) the three go out in one write and a
 * message costs two round trips instead of four; with CHUNKING (RFC 3030) too, BDAT carries the
 * message in that same write: one round trip. The session is kept for the next message; one
 * that the server dropped while idle is noticed before anything was accepted and opened anew.
 */
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/ssl.h>

#include "fiber.h"
#include "log.h"
#include "outcome.h"
#include "pipeline.h"
#include "transport.h"

#define SMTP_TIMEOUT_MS 30000L /* one message, opening a session included */
#define SMTP_IDLE_MS 60000      /* a session idle this long is opened anew rather than trusted */

/* --- the message ------------------------------------------------------------------------- */

/* Makes room for n more bytes in t->msg; false when out of memory. */
static bool msg_room(usher_transport *t, size_t n)
{
    if (t->msg_len + n > t->msg_cap) {
        size_t cap = t->msg_cap ? t->msg_cap : 4096;
        while (cap < t->msg_len + n)
            cap *= 2;
        char *nm = realloc(t->msg, cap);
        if (nm == NULL)
            return false;
        t->msg = nm;
        t->msg_cap = cap;
    }
    return true;
}

/* Appends n bytes to t->msg; false when out of memory. */
static bool msg_add(usher_transport *t, const char *p, size_t n)
{
    if (!msg_room(t, n))
        return false;
    memcpy(t->msg + t->msg_len, p, n);
    t->msg_len += n;
    return true;
}

static bool msg_str(usher_transport *t, const char *s)
{
    return msg_add(t, s, strlen(s));
}

/* Appends s quoted-printable encoded (RFC 2045): lines end in CRLF whatever ended them in s,
 * output lines stay within 76 characters, a line of the message never starts with '.' (so no
 * dot-stuffing is needed) and trailing blanks are encoded. */
static bool msg_qp(usher_transport *t, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *p = (const unsigned char *)s;
    size_t col = 0;
    bool ok = true;

    while (*p && ok) {
        unsigned char c = *p++;
        char enc[3];
        size_t n = 1;

        if (c == '\r')
            continue;
        if (c == '\n') {
            ok = msg_add(t, "\r\n", 2);
            col = 0;
            continue;
        }
        enc[0] = (char)c;
        if ((c == ' ' || c == '\t') ? (*p == '\n' || *p == '\r' || *p == 0)
                                    : (c < 33 || c > 126 || c == '=' || (c == '.' && col == 0))) {
            enc[0] = '=';
            enc[1] = hex[c >> 4];
            enc[2] = hex[c & 15];
            n = 3;
        }
        if (col + n > 75) { /* soft line break: "=" ends the line at 76 */
            ok = msg_add(t, "=\r\n", 3);
            col = 0;
            if (ok && enc[0] == '.') { /* now at a line's start */
                memcpy(enc, "=2E", 3);
                n = 3;
            }
        }
        ok = ok && msg_add(t, enc, n);
        col += n;
    }
    return ok;
}

/* One body part: its headers, then text quoted-printable. */
static bool msg_part(usher_transport *t, const char *boundary, const char *type,
                     const char *text)
{
    return msg_str(t, "--") && msg_str(t, boundary) && msg_str(t, "\r\nContent-Type: ") &&
           msg_str(t, type) &&
           msg_str(t, "; charset=UTF-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n") &&
           msg_qp(t, text) && msg_str(t, "\r\n");
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

/* Builds m's message in t->msg (headers, a multipart/alternative body of the text and the
 * HTML, the terminating "." line), ready for DATA (BDAT sends it without the "." line). False
 * when out of memory. */
static bool build_message(usher_transport *t, const usher_mail *m, time_t now)
{
    /* "=_" never occurs in quoted-printable text, so no part can contain the boundary */
    static const char boundary[] = "=_usher_alternative";
    char line[3072], text[2048], date[64], mid[300];
    struct tm tm;

    t->msg_len = 0;
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
    snprintf(line, sizeof(line), "Date: %s\r\n", date);
    if (!msg_str(t, line))
        return false;
    if (m->from_name && *m->from_name &&
        usher_header_text(m->from_name, 1, text, sizeof(text)) == 0)
        snprintf(line, sizeof(line), "From: %s <%s>\r\n", text, m->from);
    else
        snprintf(line, sizeof(line), "From: <%s>\r\n", m->from);
    if (!msg_str(t, line))
        return false;
    if (m->to_name && *m->to_name && usher_header_text(m->to_name, 1, text, sizeof(text)) == 0)
        snprintf(line, sizeof(line), "To: %s <%s>\r\n", text, m->to);
    else
        snprintf(line, sizeof(line), "To: <%s>\r\n", m->to);
    if (!msg_str(t, line))
        return false;
    if (usher_header_text(m->subject ? m->subject : "", 0, text, sizeof(text)) != 0)
        text[0] = 0;
    snprintf(line, sizeof(line), "Subject: %s\r\n", text);
    if (!msg_str(t, line))
        return false;
    id_safe(m->message_id ? m->message_id : "", mid, sizeof(mid));
    snprintf(line, sizeof(line), "Message-ID: <%s%s%ld@usher.invalid>\r\n", mid,
             mid[0] ? "." : "", m->message_id ? 0L : (long)now);
    return msg_str(t, line) && msg_str(t, "MIME-Version: 1.0\r\n") &&
           msg_str(t, "Content-Type: multipart/alternative; boundary=\"") &&
           msg_str(t, boundary) && msg_str(t, "\"\r\n\r\n") &&
           msg_part(t, boundary, "text/plain", m->text ? m->text : "") &&
           (m->html == NULL || msg_part(t, boundary, "text/html", m->html)) &&
           msg_str(t, "--") && msg_str(t, boundary) && msg_str(t, "--\r\n.\r\n");
}

/* The envelope form of address a in out: the domain in ASCII (IDNA, as libcurl's own SMTP
 * does), the local part as is. *utf8 is set when either was not ASCII. False when the domain
 * cannot be converted or it does not fit. */
static bool envelope_address(const char *a, char *out, size_t n, bool *utf8)
{
    const char *at = strrchr(a, '@');
    bool ascii_local = true, ascii_domain = true;
    char *host = NULL;
    CURLU *u = NULL;
    int w;

    for (const unsigned char *p = (const unsigned char *)a; *p; p++)
        if (*p >= 0x80)
            *((const char *)p < at ? &ascii_local : &ascii_domain) = false;
    *utf8 = !ascii_local || !ascii_domain;
    for (const unsigned char *p = (const unsigned char *)at + 1; !ascii_domain && *p; p++)
        if (*p < 0x80 && !isalnum(*p) && *p != '-' && *p != '.')
            return false; /* only a host name is converted */
    if (ascii_domain) {
        w = snprintf(out, n, "<%s>", a);
        return w > 0 && (size_t)w < n;
    }
    char url[300];
    snprintf(url, sizeof(url), "smtp://%s/", at + 1);
    if ((u = curl_url()) == NULL || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, CURLU_PUNYCODE) != CURLUE_OK) {
        curl_url_cleanup(u);
        return false;
    }
    w = snprintf(out, n, "<%.*s@%s>", (int)(at - a), a, host);
    curl_free(host);
    curl_url_cleanup(u);
    return w > 0 && (size_t)w < n;
}

/* --- the session ------------------------------------------------------------------------- */

/* Notes the capabilities in the server's replies as libcurl reads them while connecting (the
 * EHLO after STARTTLS replaces the one before it: a 220 starts over). */
static int on_smtp_debug(CURL *h, curl_infotype type, char *data, size_t size, void *userp)
{
    usher_transport *t = userp;
    static const struct {
        const char *word;
        unsigned cap;
    } caps[] = { { "PIPELINING", SMTP_CAP_PIPELINING },
                 { "SMTPUTF8", SMTP_CAP_SMTPUTF8 },
                 { "SIZE", SMTP_CAP_SIZE },
                 { "CHUNKING", SMTP_CAP_CHUNKING } };

    (void)h;
    if (type != CURLINFO_HEADER_IN)
        return 0;
    for (size_t i = 0; i < size;) {
        size_t e = i;
        while (e < size && data[e] != '\n')
            e++;
        if (e - i >= 3 && memcmp(data + i, "220", 3) == 0) {
            t->smtp_caps = 0;
        } else if (e - i > 4 && memcmp(data + i, "250", 3) == 0) {
            for (size_t k = 0; k < sizeof(caps) / sizeof(caps[0]); k++) {
                size_t wl = strlen(caps[k].word);
                if (e - i - 4 >= wl && strncasecmp(data + i + 4, caps[k].word, wl) == 0 &&
                    (e - i - 4 == wl || strchr(" \r\n", data[i + 4 + wl]) != NULL))
                    t->smtp_caps |= caps[k].cap;
            }
        }
        i = e + 1;
    }
    return 0;
}

void usher_smtp_close(usher_transport *t)
{
    if (t->smtp != NULL)
        curl_easy_cleanup(t->smtp); /* closes its connection */
    t->smtp = NULL;
    if (t->smtp_session != NULL)
        OPENSSL_cleanse(t->smtp_session, strlen(t->smtp_session)); /* it holds the password */
    free(t->smtp_session);
    t->smtp_session = NULL;
    t->smtp_caps = 0;
    t->reply_len = 0;
    t->smtp_drained = t->smtp_sent = false;
    t->smtp_tls = SMTP_TLS_UNKNOWN;
    t->smtp_ssl = NULL;
}

/* A session's opening (curl_easy_perform with CONNECT_ONLY): connect, greeting, EHLO,
 * STARTTLS, AUTH, all blocking, so it runs through usher_offload. */
struct smtp_open {
    CURL *h;
    CURLcode rc;
};

static void smtp_open_perform(void *arg)
{
    struct smtp_open *o = arg;

    o->rc = curl_easy_perform(o->h);
}

/* Opens a session for m (closing any other). OK, or the outcome and reason of the failure. */
static usher_result smtp_open(usher_ctx *ctx, usher_transport *t, const usher_mail *m,
                              const char *key, int64_t deadline)
{
    int64_t left = deadline - usher_now_ms();
    long code = 0;
    CURLcode rc;

    usher_smtp_close(t);
    if ((t->smtp = curl_easy_init()) == NULL || (t->smtp_session = strdup(key)) == NULL) {
        usher_smtp_close(t);
        usher_set_reason(ctx, "smtp_init");
        return USHER_RETRY;
    }
    curl_easy_setopt(t->smtp, CURLOPT_URL, m->smtp_url);
    curl_easy_setopt(t->smtp, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
    curl_easy_setopt(t->smtp, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(t->smtp, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(t->smtp, CURLOPT_TIMEOUT_MS, (long)(left > 1 ? left : 1));
    curl_easy_setopt(t->smtp, CURLOPT_USE_SSL, (long)CURLUSESSL_TRY);
    curl_easy_setopt(t->smtp, CURLOPT_CONNECT_ONLY, 1L);
    curl_easy_setopt(t->smtp, CURLOPT_VERBOSE, 1L); /* (for on_smtp_debug; nothing printed) */
    curl_easy_setopt(t->smtp, CURLOPT_DEBUGFUNCTION, on_smtp_debug);
    curl_easy_setopt(t->smtp, CURLOPT_DEBUGDATA, t);
    if (m->username != NULL && *m->username) {
        curl_easy_setopt(t->smtp, CURLOPT_USERNAME, m->username);
        curl_easy_setopt(t->smtp, CURLOPT_PASSWORD, m->password ? m->password : "");
    }
    struct smtp_open open = { t->smtp, CURLE_FAILED_INIT };
    usher_offload(smtp_open_perform, &open); /* (blocking: in a fiber, the others run) */
    rc = open.rc;
    if (rc == CURLE_OK) {
        t->smtp_used_ms = usher_now_ms();
        return USHER_OK;
    }
    curl_easy_getinfo(t->smtp, CURLINFO_RESPONSE_CODE, &code);
    usher_smtp_close(t);
    if (code >= 400) {
        usher_set_reason(ctx, "smtp_%ld", code);
        return usher_classify_smtp(code);
    }
    usher_set_reason(ctx, "smtp_%s", usher_curl_word(rc));
    return usher_classify_curl(rc);
}

/* I/O outcomes of the session. */
enum { IO_OK = 0, IO_DROPPED = -1, IO_TIMEOUT = -2 };

/* Waits until the session's socket is ready for events: IO_OK, or IO_TIMEOUT at deadline, or
 * IO_DROPPED when the socket is gone or poll fails. */
static int smtp_wait(usher_transport *t, short events, int64_t deadline)
{
    curl_socket_t s = CURL_SOCKET_BAD;
    struct pollfd pfd;
    int64_t left = deadline - usher_now_ms();

    if (left <= 0)
        return IO_TIMEOUT;
    if (curl_easy_getinfo(t->smtp, CURLINFO_ACTIVESOCKET, &s) != CURLE_OK || s == CURL_SOCKET_BAD)
        return IO_DROPPED;
    pfd.fd = s;
    pfd.events = events;
    for (;;) {
        int r = usher_io_wait(&pfd, 1, (int)left);
        if (r > 0)
            return IO_OK;
        if (r == 0)
            return IO_TIMEOUT;
        if (errno != EINTR)
            return IO_DROPPED;
        if ((left = deadline - usher_now_ms()) <= 0) /* (a signal: wait out the rest) */
            return IO_TIMEOUT;
    }
}

/* Sends n bytes. */
static int smtp_send(usher_transport *t, const char *p, size_t n, int64_t deadline)
{
    while (n > 0) {
        size_t sent = 0;
        CURLcode rc = curl_easy_send(t->smtp, p, n, &sent);
        if (rc == CURLE_AGAIN) {
            int io = smtp_wait(t, POLLOUT, deadline);
            if (io != IO_OK)
                return io;
            continue;
        }
        if (rc != CURLE_OK)
            return IO_DROPPED;
        p += sent;
        n -= sent;
    }
    t->smtp_sent = true;
    return IO_OK;
}

/* Sends the n bytes of head and then the message without its "." line (as BDAT carries it),
 * in one write when there is memory for it; t->msg is as before afterwards. */
static int smtp_send_before_msg(usher_transport *t, const char *head, size_t n,
                                int64_t deadline)
{
    int io;

    if (!msg_room(t, n)) { /* (two writes, then) */
        io = smtp_send(t, head, n, deadline);
        return io == IO_OK ? smtp_send(t, t->msg, t->msg_len - 3, deadline) : io;
    }
    memmove(t->msg + n, t->msg, t->msg_len);
    memcpy(t->msg, head, n);
    io = smtp_send(t, t->msg, n + t->msg_len - 3, deadline);
    memmove(t->msg, t->msg + n, t->msg_len);
    return io;
}

/* True unless the session's bytes cannot wait in TLS, where poll() does not see them: plain
 * TCP, or OpenSSL holding none. Call it only after a send. */
static bool tls_may_hold(usher_transport *t)
{
    if (t->smtp_tls == SMTP_TLS_UNKNOWN) {
        /* (only now: the connect-only transfer left the connection detached from the handle
         * until the first send, and libcurl then reports no TLS state at all) */
        struct curl_tlssessioninfo *tls = NULL;
        t->smtp_tls = SMTP_TLS_OTHER; /* (when libcurl cannot tell: assume it may) */
        if (curl_easy_getinfo(t->smtp, CURLINFO_TLS_SSL_PTR, &tls) == CURLE_OK && tls != NULL) {
            if (tls->internals == NULL)
                t->smtp_tls = SMTP_TLS_NONE;
            else if (tls->backend == CURLSSLBACKEND_OPENSSL)
                t->smtp_tls = SMTP_TLS_OPENSSL;
            t->smtp_ssl = tls->internals;
        }
    }
    return t->smtp_tls == SMTP_TLS_OTHER ||
           (t->smtp_tls == SMTP_TLS_OPENSSL && SSL_has_pending(t->smtp_ssl));
}

/* Reads one whole reply (its continuation lines skipped) and leaves its code in *code. */
static int smtp_reply(usher_transport *t, long *code, int64_t deadline)
{
    for (;;) {
        char *nl = memchr(t->reply, '\n', t->reply_len);
        if (nl != NULL) {
            size_t len = (size_t)(nl - t->reply) + 1;
            bool last = len < 5 || t->reply[3] != '-';
            bool digits = len >= 4 && isdigit((unsigned char)t->reply[0]) &&
                          isdigit((unsigned char)t->reply[1]) &&
                          isdigit((unsigned char)t->reply[2]);
            if (!digits)
                return IO_DROPPED; /* not SMTP: treat as a broken session */
            *code = (t->reply[0] - '0') * 100 + (t->reply[1] - '0') * 10 + (t->reply[2] - '0');
            memmove(t->reply, t->reply + len, t->reply_len - len);
            t->reply_len -= len;
            if (last)
                return IO_OK;
            continue;
        }
        if (t->reply_len == sizeof(t->reply))
            return IO_DROPPED; /* a reply line longer than SMTP allows */
        /* Nothing read since a command went out and nothing was left to read before: the
         * answer cannot be here yet, so wait for it instead of trying a read first (unless TLS
         * may hold bytes back that poll() cannot see). */
        if (t->smtp_sent && t->smtp_drained && !tls_may_hold(t)) {
            int io = smtp_wait(t, POLLIN, deadline);
            if (io != IO_OK)
                return io;
        }
        size_t got = 0, room = sizeof(t->reply) - t->reply_len;
        CURLcode rc = curl_easy_recv(t->smtp, t->reply + t->reply_len, room, &got);
        t->smtp_sent = false;
        if (rc == CURLE_AGAIN) {
            t->smtp_drained = true;
            int io = smtp_wait(t, POLLIN, deadline);
            if (io != IO_OK)
                return io;
            continue;
        }
        if (rc != CURLE_OK || got == 0)
            return IO_DROPPED;
        t->smtp_drained = got < room; /* (less than asked: TLS holds none of it back) */
        t->reply_len += got;
    }
}

/* Runs one mail transaction on the open session, before deadline. *stale is set when the
 * session turned out to be dead before the server answered MAIL (dropped, or a 421): nothing
 * was accepted, so the message may go out on a new session. The session stays open after a
 * delivery, and after a refused envelope once RSET has cleared it; otherwise it is closed. */
static usher_result smtp_transaction(usher_ctx *ctx, usher_transport *t, const char *from,
                                     const char *to, bool utf8, int64_t deadline, bool *stale)
{
    bool pipe = (t->smtp_caps & SMTP_CAP_PIPELINING) != 0, keep = false;
    bool bdat = pipe && (t->smtp_caps & SMTP_CAP_CHUNKING) != 0;
    char cmd[3][600];
    long code[3] = { 0, 0, 0 }, rset = 0;
    int io = IO_OK, last = -1; /* last: the command whose reply came last */

    t->reply_len = 0;
    snprintf(cmd[0], sizeof(cmd[0]), "MAIL FROM:%s", from);
    if (t->smtp_caps & SMTP_CAP_SIZE) /* (the message without its "." line) */
        snprintf(cmd[0] + strlen(cmd[0]), sizeof(cmd[0]) - strlen(cmd[0]), " SIZE=%zu",
                 t->msg_len - 3);
    if (utf8 && (t->smtp_caps & SMTP_CAP_SMTPUTF8))
        snprintf(cmd[0] + strlen(cmd[0]), sizeof(cmd[0]) - strlen(cmd[0]), " SMTPUTF8");
    snprintf(cmd[0] + strlen(cmd[0]), sizeof(cmd[0]) - strlen(cmd[0]), "\r\n");
    snprintf(cmd[1], sizeof(cmd[1]), "RCPT TO:%s\r\n", to);
    if (bdat) /* (the message as it is: no line of it starts with '.', so nothing is stuffed) */
        snprintf(cmd[2], sizeof(cmd[2]), "BDAT %zu LAST\r\n", t->msg_len - 3);
    else
        snprintf(cmd[2], sizeof(cmd[2]), "DATA\r\n");
    /* With PIPELINING: the three commands in one write, then their three replies (DATA may get
     * its 354 even after MAIL or RCPT was refused: the message is then never sent, and the
     * session closed). With CHUNKING too (RFC 3030), BDAT carries the message right behind the
     * commands, in the same write, and its reply is the message's: one round trip instead of
     * two. Without PIPELINING: one at a time, stopping at the first refusal. */
    if (pipe) {
        char all[sizeof(cmd)];
        snprintf(all, sizeof(all), "%s%s%s", cmd[0], cmd[1], cmd[2]);
        io = bdat ? smtp_send_before_msg(t, all, strlen(all), deadline)
                  : smtp_send(t, all, strlen(all), deadline);
    }
    for (int i = 0; i < 3 && io == IO_OK; i++) {
        if (!pipe)
            io = smtp_send(t, cmd[i], strlen(cmd[i]), deadline);
        if (io == IO_OK && (io = smtp_reply(t, &code[i], deadline)) == IO_OK)
            last = i;
        if (io == IO_OK && !pipe && code[i] != (i == 2 ? 354 : 250) &&
            !(i == 1 && code[i] == 251))
            break;
    }
    if (bdat && io == IO_OK && code[0] == 250 && (code[1] == 250 || code[1] == 251) &&
        code[2] >= 200 && code[2] < 300) {
        t->smtp_used_ms = usher_now_ms();
        return USHER_OK;
    }
    if (io == IO_OK && code[0] == 250 && (code[1] == 250 || code[1] == 251) && code[2] == 354) {
        io = smtp_send(t, t->msg, t->msg_len, deadline);
        if (io == IO_OK)
            io = smtp_reply(t, &code[2], deadline); /* (DATA's 354 is done with) */
        if (io == IO_OK && code[2] >= 200 && code[2] < 300) {
            t->smtp_used_ms = usher_now_ms();
            return USHER_OK;
        }
    }
    if (io == IO_OK && last >= 0 && code[last] != 354 && code[0] != 421 && code[1] != 421 &&
        code[2] != 421) {
        /* refused, every reply read and no DATA under way: RSET keeps the session (a
         * greylisting 4xx then costs no new TLS handshake and AUTH) */
        io = smtp_send(t, "RSET\r\n", 6, deadline);
        keep = io == IO_OK && smtp_reply(t, &rset, deadline) == IO_OK && rset == 250;
        io = IO_OK; /* (the transaction's own outcome stands) */
    }
    *stale = (io == IO_DROPPED && last < 0) || code[0] == 421;
    if (keep)
        t->smtp_used_ms = usher_now_ms();
    else
        usher_smtp_close(t);
    for (int i = 0; i < 3; i++) { /* a refusal says why, also when the server then hung up */
        if (code[i] >= 400) {
            usher_set_reason(ctx, "smtp_%ld", code[i]);
            return usher_classify_smtp(code[i]);
        }
    }
    if (io == IO_TIMEOUT)
        usher_set_reason(ctx, "smtp_timeout");
    else if (io != IO_OK)
        usher_set_reason(ctx, "smtp_dropped");
    else
        usher_set_reason(ctx, "smtp_%ld", last >= 0 ? code[last] : 0L); /* (not SMTP's codes) */
    return USHER_RETRY;
}

usher_result usher_smtp_send(usher_ctx *ctx, const usher_mail *m)
{
    usher_transport *t = usher_ctx_transport(ctx);
    int64_t deadline = usher_now_ms() + SMTP_TIMEOUT_MS;
    char from[300], to[300], *key = NULL;
    bool utf8_from = false, utf8_to = false;
    usher_result r = USHER_RETRY;
    size_t klen;

    if (!plain_address(m->from) || !plain_address(m->to) ||
        !envelope_address(m->from, from, sizeof(from), &utf8_from) ||
        !envelope_address(m->to, to, sizeof(to), &utf8_to)) {
        usher_set_reason(ctx, "invalid_address");
        return USHER_FAIL;
    }
    klen = strlen(m->smtp_url ? m->smtp_url : "") + strlen(m->username ? m->username : "") +
           strlen(m->password ? m->password : "") + 3;
    if (!build_message(t, m, time(NULL)) || (key = malloc(klen)) == NULL) {
        usher_set_reason(ctx, "out_of_memory");
        return USHER_RETRY;
    }
    snprintf(key, klen, "%s\n%s\n%s", m->smtp_url ? m->smtp_url : "",
             m->username ? m->username : "", m->password ? m->password : "");
    /* the kept session first; once more on a new one if it had died while idle */
    for (int attempt = 0;; attempt++) {
        bool fresh = t->smtp_session == NULL || strcmp(t->smtp_session, key) != 0 ||
                     usher_now_ms() - t->smtp_used_ms > SMTP_IDLE_MS,
             stale = false;
        if (fresh && (r = smtp_open(ctx, t, m, key, deadline)) != USHER_OK)
            break;
        r = smtp_transaction(ctx, t, from, to, utf8_from || utf8_to, deadline, &stale);
        if (r == USHER_OK || !stale || fresh || attempt > 0)
            break;
    }
    OPENSSL_cleanse(key, klen);
    free(key);
    return r;
}
