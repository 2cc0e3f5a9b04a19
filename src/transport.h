/* transport.h — a worker's reusable HTTP/SMTP state, lent to usher_http / usher_smtp_send. */
#ifndef USHER_TRANSPORT_H
#define USHER_TRANSPORT_H

#include <stddef.h>

#include <curl/curl.h>

#include "usher/handler.h"

typedef struct usher_transport {
    CURL *http;          /* kept across calls: its connection cache gives keep-alive */
    CURL *smtp;
    char *body;          /* last HTTP response body */
    size_t body_len, body_cap;
    char retry_after[64];
} usher_transport;

/* The calling worker's transport (worker.c). */
usher_transport *usher_ctx_transport(usher_ctx *ctx);

/* Frees the handles and buffers; the struct may be reused afterwards. */
void usher_transport_free(usher_transport *t);

/* Appends to out the header-safe form of a display name or subject: control characters
 * dropped; ASCII kept (quoted as an RFC 5322 quoted-string when quote is set); non-ASCII
 * RFC 2047 encoded as UTF-8 base64 encoded-words. Returns 0, or -1 when it does not fit. */
int usher_header_text(const char *in, int quote, char *out, size_t n);

#endif
