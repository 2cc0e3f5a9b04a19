/*
 * welcome_email — sends a welcome e-mail (text + HTML) to every new user.
 *
 * [handler.welcome_email]            default events: signup
 *   smtp_url       required   smtp://host:port or smtps://host:port (STARTTLS when offered)
 *   username       (none)     SMTP AUTH user; no AUTH when empty
 *   password       (none)     SMTP AUTH password; never logged
 *   from           required   sender address, e.g. noreply@example.com (no display name here)
 *   from_name      (none)     sender display name, e.g. Example
 *   subject        "Welcome, {{user.name|there}}!"
 *   template_text  config/templates/welcome.txt    path of the plain-text body template
 *   template_html  config/templates/welcome.html   path of the HTML body template; empty = text only
 *
 * Templates use {{field}} and {{field|fallback}} (fields as in usher_event_field). Values are
 * escaped for where they go: the subject loses control characters, the HTML body gets entities,
 * the text body is copied as is. Relative template paths are relative to usher's working
 * directory; both files are read once at start-up, and a missing one stops usher from starting.
 *
 * Events without an e-mail address are skipped. Idempotency: before sending, the handler checks
 * its Redis marker PREFIX:done:welcome_email:<event id>, and sets it after the server accepted
 * the message, so a redelivered signup is not welcomed twice. The Message-ID carries the event
 * id, so the rare resend (Redis lost between sending and marking, then a redelivery) is
 * recognizable.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "usher/handler.h"

static const usher_config_key keys[] = {
    { "smtp_url", NULL, "smtp://host:port or smtps://host:port", 1 },
    { "username", NULL, "SMTP AUTH user (empty: no AUTH)", 0 },
    { "password", NULL, "SMTP AUTH password", 0 },
    { "from", NULL, "sender address, e.g. noreply@example.com", 1 },
    { "from_name", NULL, "sender display name", 0 },
    { "subject", "Welcome, {{user.name|there}}!", "subject template", 0 },
    { "template_text", "config/templates/welcome.txt", "path of the text body template", 0 },
    { "template_html", "config/templates/welcome.html",
      "path of the HTML body template (empty: text only)", 0 },
    { NULL, NULL, NULL, 0 },
};

/* Built by init, read-only afterwards: handle() runs on several threads at once. */
typedef struct state {
    const char *smtp_url, *username, *password, *from, *from_name, *subject; /* borrowed */
    char *text; /* template file contents, owned */
    char *html; /* NULL: text only */
} state;

/* Reads the whole file at path into a new NUL-terminated string. Returns NULL with errstr set
 * (naming key and path) when it cannot. */
static char *read_file(const char *key, const char *path, char *errstr, size_t errstr_size)
{
    FILE *f = NULL;
    char *buf = NULL, *nb = NULL;
    size_t len = 0, cap = 0, n;

    if ((f = fopen(path, "rb")) == NULL) {
        snprintf(errstr, errstr_size, "%s: cannot read %s: %s", key, path, strerror(errno));
        return NULL;
    }
    do {
        if (len + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            if ((nb = realloc(buf, cap)) == NULL) {
                snprintf(errstr, errstr_size, "%s: out of memory reading %s", key, path);
                goto fail;
            }
            buf = nb;
        }
        n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
    } while (n > 0);
    if (ferror(f)) {
        snprintf(errstr, errstr_size, "%s: cannot read %s: %s", key, path, strerror(errno));
        goto fail;
    }
    buf[len] = 0;
    fclose(f);
    return buf;
fail:
    free(buf);
    fclose(f);
    return NULL;
}

static void destroy(void *p)
{
    state *st = p;

    if (st == NULL)
        return;
    free(st->text);
    free(st->html);
    free(st);
}

static int init(const usher_handler_conf *conf, void **out, char *errstr, size_t errstr_size)
{
    state *st = calloc(1, sizeof(*st));
    const char *from, *html_path;

    if (st == NULL) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    st->smtp_url = usher_conf_get(conf, "smtp_url");
    st->username = usher_conf_get(conf, "username");
    st->password = usher_conf_get(conf, "password");
    st->from_name = usher_conf_get(conf, "from_name");
    st->subject = usher_conf_get(conf, "subject");
    from = usher_conf_get(conf, "from");
    if (from == NULL || strchr(from, '@') == NULL || strpbrk(from, "<> \t\"") != NULL) {
        snprintf(errstr, errstr_size, "from: '%s' is not a plain address such as "
                 "noreply@example.com (put the display name in from_name)", from ? from : "");
        goto fail;
    }
    st->from = from;
    st->text = read_file("template_text", usher_conf_get(conf, "template_text"), errstr,
                         errstr_size);
    if (st->text == NULL)
        goto fail;
    html_path = usher_conf_get(conf, "template_html");
    if (html_path != NULL && *html_path != 0) {
        st->html = read_file("template_html", html_path, errstr, errstr_size);
        if (st->html == NULL)
            goto fail;
    }
    *out = st;
    return 0;
fail:
    destroy(st);
    return -1;
}

static usher_result handle(usher_ctx *ctx, const usher_event *ev, void *p)
{
    const state *st = p;
    char *subject = NULL, *text = NULL, *html = NULL;
    usher_result res = USHER_RETRY;
    int done;

    if (ev->user.email == NULL)
        return USHER_SKIP;
    done = usher_once_done_before(ctx, ev);
    if (done == 1)
        return USHER_OK; /* welcomed before this record was redelivered */
    if (done < 0) {
        usher_set_reason(ctx, "redis_unavailable");
        return USHER_RETRY;
    }
    subject = usher_render(st->subject, ev, USHER_ESCAPE_HEADER);
    text = usher_render(st->text, ev, USHER_ESCAPE_NONE);
    if (st->html != NULL)
        html = usher_render(st->html, ev, USHER_ESCAPE_HTML);
    if (subject == NULL || text == NULL || (st->html != NULL && html == NULL)) {
        usher_set_reason(ctx, "out_of_memory");
        goto out;
    }
    usher_mail m = {
        .smtp_url = st->smtp_url,
        .username = st->username,
        .password = st->password,
        .from = st->from,
        .from_name = st->from_name,
        .to = ev->user.email,
        .to_name = ev->user.name,
        .subject = subject,
        .text = text,
        .html = html,
        .message_id = ev->id,
    };
    res = usher_smtp_send(ctx, &m);
    /* The mail is out: a retry now would surely send it twice, so a marker that cannot be
     * written only costs protection against a later redelivery. Report what SMTP said. */
    if (res == USHER_OK)
        usher_once_mark(ctx, ev, 0);
out:
    free(subject);
    free(text);
    free(html);
    return res;
}

const usher_handler usher_handler_welcome_email = {
    .abi_version = USHER_HANDLER_ABI_VERSION,
    .name = "welcome_email",
    .description = "sends a welcome e-mail (text + HTML) over SMTP to each new user",
    .default_events = "signup",
    .config_keys = keys,
    .init = init,
    .handle = handle,
    .destroy = destroy,
    .flags = USHER_HANDLER_COOPERATIVE, /* it waits only in usher_smtp_send and for Redis */
};
