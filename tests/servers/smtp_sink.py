#!/usr/bin/python3
"""smtp_sink: a real SMTP server (aiosmtpd) for usher's integration tests.

Listens on 127.0.0.1 only. Every accepted message is stored as MAILDIR/<seq>.eml (the DATA
bytes exactly as received after dot-unstuffing, CRLF line ends kept) and then described by one
JSON line in MAILDIR/index.jsonl. Faults (451 at end of DATA, 550 for recipients, reply delays,
AUTH on/off) are switched at runtime through a small HTTP control API on a second loopback port;
see tests/servers/README.md.

Uses Debian's python3-aiosmtpd, hence /usr/bin/python3 explicitly.
"""

import argparse
import asyncio
import email.header
import email.parser
import email.policy
import json
import logging
import os
import re
import signal
import sys
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

warnings.filterwarnings("ignore")  # aiosmtpd warns about AUTH without TLS; that is intended here
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword  # noqa: E402

log = logging.getLogger("smtp_sink")

MODE_KEYS = {"tempfail_count", "tempfail_seconds", "reject_rcpt", "delay_ms", "delay_on",
             "auth_user", "auth_password"}


def write_atomic(path, data):
    """Guarantee: PATH either does not exist or holds all of DATA (tmp file + rename)."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class State:
    """Fault mode + counters, shared by the SMTP event loop and the control-HTTP threads.

    Every method takes the lock only for a few dict operations (never across I/O or sleeps),
    so the event loop is never blocked for long.
    """

    def __init__(self, default_auth):
        self.lock = threading.Lock()
        self.default_auth = default_auth  # (user, password) from the command line, or None
        self.reset()

    def reset(self):
        with self.lock:
            self.mode = {}
            self.tempfail_left = 0
            self.tempfail_until = 0.0
            self.reject_re = None
            self.stats = {"connections": 0, "stored": 0, "tempfailed": 0, "rcpt_rejected": 0,
                          "auth_ok": 0, "auth_failed": 0}

    def set_mode(self, mode):
        """Replace the whole mode (absent keys = off). Raises ValueError on bad input."""
        if not isinstance(mode, dict):
            raise ValueError("mode must be a JSON object")
        unknown = set(mode) - MODE_KEYS
        if unknown:
            raise ValueError(f"unknown mode keys {sorted(unknown)}; known: {sorted(MODE_KEYS)}")
        count = int(mode.get("tempfail_count") or 0)
        seconds = float(mode.get("tempfail_seconds") or 0)
        delay = int(mode.get("delay_ms") or 0)
        if count < 0 or seconds < 0 or delay < 0:
            raise ValueError("tempfail_count, tempfail_seconds and delay_ms must be >= 0")
        if mode.get("delay_on", "all") not in ("all", "data"):
            raise ValueError('delay_on must be "all" or "data"')
        pat = mode.get("reject_rcpt")
        reject_re = re.compile(pat, re.IGNORECASE) if pat else None
        if ("auth_user" in mode) != ("auth_password" in mode):
            raise ValueError("auth_user and auth_password go together")
        with self.lock:
            self.mode = dict(mode)
            self.tempfail_left = count
            self.tempfail_until = time.monotonic() + seconds if seconds else 0.0
            self.reject_re = reject_re

    def auth(self):
        """(user, password) new connections must AUTH with, or None for no AUTH."""
        with self.lock:
            if "auth_user" in self.mode:
                return (str(self.mode["auth_user"]), str(self.mode["auth_password"]))
            return self.default_auth

    def delay(self, where):
        """Seconds to sleep at WHERE: "all" = before every reply (greeting included), "data" =
        before the end-of-DATA reply only. Non-zero only for the delay_on the mode selected."""
        with self.lock:
            ms = int(self.mode.get("delay_ms") or 0)
            on = self.mode.get("delay_on", "all")
        return ms / 1000.0 if on == where else 0.0

    def take_tempfail(self):
        """True if this DATA must get a 451 (consumes one of tempfail_count if no window)."""
        with self.lock:
            if self.tempfail_until and time.monotonic() < self.tempfail_until:
                self.stats["tempfailed"] += 1
                return True
            if self.tempfail_left > 0:
                self.tempfail_left -= 1
                self.stats["tempfailed"] += 1
                return True
            return False

    def rcpt_rejected(self, address):
        with self.lock:
            if self.reject_re is not None and self.reject_re.search(address or ""):
                self.stats["rcpt_rejected"] += 1
                return True
            return False

    def count(self, key):
        with self.lock:
            self.stats[key] += 1

    def snapshot(self):
        with self.lock:
            left = max(0.0, self.tempfail_until - time.monotonic()) if self.tempfail_until else 0.0
            return {"stats": dict(self.stats), "mode": dict(self.mode),
                    "tempfail_left": self.tempfail_left, "tempfail_window_left_s": round(left, 3)}


class Maildir:
    """Stores messages as DIR/<seq>.eml and appends DIR/index.jsonl.

    Guarantees: seq is 1, 2, 3... continuing after the highest <seq>.eml already in DIR; the .eml
    is complete (renamed into place) before its index line is written; each index line is written
    with a single write(2) on an O_APPEND descriptor, so readers never see interleaved lines.
    Only called from the event-loop thread, so no lock is needed.
    """

    def __init__(self, path):
        self.path = path
        os.makedirs(path, exist_ok=True)
        seqs = [int(n[:-4]) for n in os.listdir(path) if re.fullmatch(r"\d+\.eml", n)]
        self.seq = max(seqs, default=0)
        self.index_fd = os.open(os.path.join(path, "index.jsonl"),
                                os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def store(self, envelope, auth_login):
        self.seq += 1
        data = envelope.original_content or b""
        name = f"{self.seq}.eml"
        write_atomic(os.path.join(self.path, name), data)
        subject = message_id = None
        try:
            # compat32 plus explicit RFC 2047 decoding: the same strings as policy.default for
            # these two headers, at a fifth of the cost (the sink must keep up with benchmarks)
            hdrs = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(data)
            if hdrs["subject"] is not None:
                subject = str(email.header.make_header(email.header.decode_header(hdrs["subject"])))
            if hdrs["message-id"] is not None:
                message_id = str(hdrs["message-id"]).strip()
        except Exception as e:  # a malformed header must not lose the message
            log.warning("seq %d: cannot parse headers: %s", self.seq, e)
        entry = {"seq": self.seq, "mail_from": envelope.mail_from,
                 "rcpt_tos": list(envelope.rcpt_tos), "size": len(data), "subject": subject,
                 "message_id": message_id, "file": name, "ts": time.time(),
                 "auth_login": auth_login, "mail_options": list(envelope.mail_options)}
        line = json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n"
        os.write(self.index_fd, line.encode("utf-8", "surrogateescape"))
        return self.seq


class Handler:
    """aiosmtpd handler hooks: RCPT rejection, DATA tempfail/delay, storing."""

    def __init__(self, state, maildir):
        self.state = state
        self.maildir = maildir

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.state.rcpt_rejected(address):
            return "550 5.1.1 Injected permanent failure: recipient rejected"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        d = self.state.delay("data")  # (delay_on=all is done in SinkSMTP.push)
        if d:
            await asyncio.sleep(d)
        if self.state.take_tempfail():
            return "451 4.3.0 Injected temporary failure, try again later"
        login = None
        if session.authenticated and isinstance(session.auth_data, LoginPassword):
            login = session.auth_data.login.decode("utf-8", "replace")
        seq = self.maildir.store(envelope, login)
        self.state.count("stored")
        log.info("stored #%d from %s to %s (%d bytes)", seq, envelope.mail_from,
                 envelope.rcpt_tos, len(envelope.original_content or b""))
        return f"250 2.0.0 OK queued as {seq}"


class SinkSMTP(SMTP):
    """SMTP session that sleeps delay_ms before every reply when delay_on is "all" (once per
    reply: the continuation lines "250-..." of a multi-line reply are not delayed)."""

    def __init__(self, handler, state, **kw):
        self._sink_state = state
        super().__init__(handler, **kw)

    async def push(self, status):
        s = status if isinstance(status, str) else status.decode("ascii", "replace")
        d = self._sink_state.delay("all") if s[3:4] != "-" else 0.0
        if d:
            await asyncio.sleep(d)
        await super().push(status)


def make_authenticator(state, creds):
    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword)
              and auth_data.login.decode("utf-8", "replace") == creds[0]
              and auth_data.password.decode("utf-8", "replace") == creds[1])
        state.count("auth_ok" if ok else "auth_failed")
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)
    return authenticator


def control_handler_class(state):
    class ControlHandler(BaseHTTPRequestHandler):
        """/_control/{mode,reset,stats}: answers JSON, always with Content-Length."""
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            log.debug("control: " + fmt, *args)

        def reply(self, status, obj):
            body = (json.dumps(obj) + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def body(self):
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def do_GET(self):
            if self.path.split("?")[0] == "/_control/stats":
                self.reply(200, state.snapshot())
            else:
                self.reply(404, {"error": "unknown control path"})

        def do_POST(self):
            raw = self.body()
            path = self.path.split("?")[0]
            if path == "/_control/reset":
                state.reset()
                self.reply(200, state.snapshot())
            elif path == "/_control/mode":
                try:
                    state.set_mode(json.loads(raw or b"{}"))
                except (ValueError, TypeError, re.error) as e:
                    self.reply(400, {"error": str(e)})
                    return
                log.info("mode set: %s", raw.decode("utf-8", "replace"))
                self.reply(200, state.snapshot())
            else:
                self.reply(404, {"error": "unknown control path"})
    return ControlHandler


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="SMTP sink for tests: stores every message in a maildir; faults are "
                    "injected at runtime via an HTTP control API (see tests/servers/README.md).")
    p.add_argument("--port", type=int, default=0, help="SMTP port on 127.0.0.1 (0 = pick free)")
    p.add_argument("--port-file", help="write the bound SMTP port here once listening "
                   "(written last: when it exists, the control port is up too)")
    p.add_argument("--control-port", type=int, default=0,
                   help="control HTTP port on 127.0.0.1 (0 = pick free)")
    p.add_argument("--control-port-file", help="write the bound control port here")
    p.add_argument("--maildir", required=True, help="directory for <seq>.eml and index.jsonl")
    p.add_argument("--auth-user", help="require AUTH PLAIN/LOGIN with this user (plain text, "
                   "no TLS) for every connection")
    p.add_argument("--auth-password", help="password for --auth-user")
    p.add_argument("--max-size", type=int, default=32 * 1024 * 1024,
                   help="largest message accepted (SIZE), bytes; default 32 MiB")
    p.add_argument("--no-smtputf8", action="store_true", help="do not advertise SMTPUTF8")
    p.add_argument("--hostname", default="smtp-sink.test", help="name in greeting and EHLO")
    p.add_argument("--verbose", "-v", action="store_true", help="log every message to stderr")
    a = p.parse_args(argv)
    if (a.auth_user is None) != (a.auth_password is None):
        p.error("--auth-user and --auth-password go together")
    return a


async def serve(args):
    state = State((args.auth_user, args.auth_password) if args.auth_user is not None else None)
    maildir = Maildir(args.maildir)
    handler = Handler(state, maildir)
    loop = asyncio.get_running_loop()

    def factory():
        # Read per connection, so an "auth_user" mode applies to every new connection.
        state.count("connections")
        creds = state.auth()
        kw = dict(hostname=args.hostname, data_size_limit=args.max_size,
                  enable_SMTPUTF8=not args.no_smtputf8, decode_data=False, loop=loop)
        if creds:
            kw.update(auth_required=True, auth_require_tls=False,
                      authenticator=make_authenticator(state, creds))
        # Without creds: auth_require_tls=True (the default) and no TLS = AUTH not advertised.
        return SinkSMTP(handler, state, **kw)

    ctl = ThreadingHTTPServer(("127.0.0.1", args.control_port), control_handler_class(state))
    ctl.daemon_threads = True
    threading.Thread(target=ctl.serve_forever, name="control", daemon=True).start()
    server = await loop.create_server(factory, host="127.0.0.1", port=args.port)
    port = server.sockets[0].getsockname()[1]
    cport = ctl.server_address[1]
    if args.control_port_file:
        write_atomic(args.control_port_file, f"{cport}\n".encode())
    if args.port_file:
        write_atomic(args.port_file, f"{port}\n".encode())
    print(f"smtp_sink: SMTP on 127.0.0.1:{port}, control on 127.0.0.1:{cport}, "
          f"maildir {args.maildir}, auth {'on' if args.auth_user is not None else 'off'}",
          file=sys.stderr, flush=True)

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    ctl.shutdown()
    ctl.server_close()


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("mail.log").setLevel(logging.ERROR)  # aiosmtpd's own chatter
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
