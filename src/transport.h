/* transport.h — a worker's reusable HTTP/SMTP state, lent to usher_http / usher_smtp_send. */
#ifndef USHER_TRANSPORT_H
#define USHER_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

#include "usher/handler.h"

/* What an SMTP server offered in its EHLO reply (smtp.c uses them). */
#define SMTP_CAP_PIPELINING 1u
#define SMTP_CAP_SMTPUTF8 2u
#define SMTP_CAP_SIZE 4u
#define SMTP_CAP_CHUNKING 8u

/* What carries an SMTP session (smtp.c asks libcurl once the session has written). */
enum { SMTP_TLS_UNKNOWN, SMTP_TLS_NONE, SMTP_TLS_OPENSSL, SMTP_TLS_OTHER };

/* Sockets one HTTP transfer may watch at once (a connect may try IPv6 and IPv4 together). */
#define HTTP_MAX_SOCKS 4

typedef struct usher_transport {
    CURL *http;          /* the request handle, reset for each request */
    CURLM *http_multi;   /* drives it; kept across calls: its connection cache gives keep-alive */
    struct { curl_socket_t fd; short events; } http_socks[HTTP_MAX_SOCKS]; /* what it watches */
    int http_nsocks;
    int64_t http_timer_at; /* when libcurl wants its timeout handled (monotonic ms); -1: never */
    char *body;          /* last HTTP response body */
    size_t body_len, body_cap;
    char retry_after[64];
    CURL *smtp;          /* an open SMTP session (libcurl CONNECT_ONLY), kept across calls */
    char *smtp_session;  /* what it was opened for (URL, user, password); NULL: none open */
    unsigned smtp_caps;  /* SMTP_CAP_* of its server */
    int64_t smtp_used_ms; /* when it last finished a transaction (monotonic) */
    char *msg;           /* the message being sent, as DATA carries it ("." line included) */
    size_t msg_len, msg_cap;
    char reply[1024];    /* reply bytes read and not yet parsed */
    size_t reply_len;
    bool smtp_drained;   /* the last read took all there was, in the socket and in TLS */
    bool smtp_sent;      /* a command went out since the last read */
    int smtp_tls;        /* SMTP_TLS_*: known from the session's first write on */
    void *smtp_ssl;      /* its SSL *, with SMTP_TLS_OPENSSL */
} usher_transport;

/* The calling worker's transport (worker.c). */
usher_transport *usher_ctx_transport(usher_ctx *ctx);

/* Frees the handles and buffers; the struct may be reused afterwards. */
void usher_transport_free(usher_transport *t);
/* Closes the SMTP session, if one is open. */
void usher_smtp_close(usher_transport *t);
/* A short word for a libcurl error ("timeout", "connect", ...), for reasons and logs. */
const char *usher_curl_word(CURLcode rc);

/* Appends to out the header-safe form of a display name or subject: control characters
 * dropped; at most 360 bytes of a quoted value, 900 of another (so no header line passes 998);
 * ASCII kept (quoted as an RFC 5322 quoted-string when quote is set); non-ASCII RFC 2047
 * encoded as UTF-8 base64 encoded-words, one per folded line. Returns 0, or -1 when it does not
 * fit (2048 bytes always do). */
int usher_header_text(const char *in, int quote, char *out, size_t n);

#endif
