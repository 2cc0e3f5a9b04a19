#!/usr/bin/python3
"""smtp_sink: a real SMTP server for usher's integration tests and benchmark.

Listens on 127.0.0.1 only. Every accepted message is stored as MAILDIR/<seq>.eml (the DATA
bytes exactly as received after dot-unstuffing, CRLF line ends kept) and then described by one
JSON line in MAILDIR/index.jsonl. Faults (451 at end of DATA, 550 for recipients, reply delays,
AUTH on/off) are switched at runtime through a small HTTP control API on a second loopback port;
see tests/servers/README.md.

It emulates a remote MTA that shares no CPU with the code under test, so it must be cheap per
message: one asyncio Protocol per connection parses commands straight out of its receive
buffer, finds the end of DATA with one bytes.find(b"\\r\\n.\\r\\n") over the buffer, and writes
replies directly to the transport. Delays are timers (loop.call_later), never sleeps, so many
connections waiting for a delayed reply cost no CPU. The SMTP dialogue (reply codes and texts)
follows aiosmtpd 1.4, which this server replaces. Python standard library only.
"""

import argparse
import asyncio
import base64
import binascii
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
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sinklib import write_atomic

log = logging.getLogger("smtp_sink")

MODE_KEYS = {"tempfail_count", "tempfail_seconds", "reject_rcpt", "delay_ms", "delay_on",
             "auth_user", "auth_password"}

# Longest DATA line accepted, CRLF included (aiosmtpd's limit: 999 bytes + CRLF; RFC 5321's
# 998 + CRLF, plus one byte of slack for a dot-stuffed line).
DATA_LINE_LIMIT = 1001
# Longest command line (CRLF excluded) before "500 Command line too long"; MAIL gets room for
# SIZE= and SMTPUTF8 in an EHLO session, as in aiosmtpd.
COMMAND_LIMIT = 512
# Unrecognised commands tolerated per connection; the next one closes it (as aiosmtpd).
BOGUS_LIMIT = 5
# A connection without a command for this long is closed (aiosmtpd's default timeout).
IDLE_TIMEOUT_S = 300.0

HELP_SYNTAX = {"AUTH": "AUTH <mechanism>", "DATA": "DATA", "EHLO": "EHLO hostname",
               "HELO": "HELO hostname", "HELP": "HELP [command]", "MAIL": "MAIL FROM: <address>",
               "NOOP": "NOOP [ignored]", "QUIT": "QUIT", "RCPT": "RCPT TO: <address>",
               "RSET": "RSET", "VRFY": "VRFY <address>"}
HELP_EXTENDED = {"MAIL": " [SP <mail-parameters>]", "RCPT": " [SP <mail-parameters>]"}

# <local@domain> made of plain ASCII atoms: what get_angle_addr() returns unchanged. Anything
# else (quoted local parts, source routes, comments, <>, UTF-8) goes through the email package.
SIMPLE_ANGLE_ADDR = re.compile(
    rb"<([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    rb"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>".decode())

CODE_AUTH_OK = "235 2.7.0 Authentication successful"
CODE_AUTH_BAD = "535 5.7.8 Authentication credentials invalid"


def parse_address(arg):
    """(address, rest) of an SMTP path argument like aiosmtpd's _getaddr: ("", "") for an empty
    argument, (None, None) when it cannot be parsed; rest = the text after the address (the
    ESMTP parameters). "<>" yields the address "<>"."""
    if not arg:
        return "", ""
    m = SIMPLE_ANGLE_ADDR.match(arg)
    if m is not None:  # fast path, same result as the email package for these
        return m.group(1), arg[m.end():].strip()
    try:
        if arg.lstrip().startswith("<"):
            address, rest = get_angle_addr(arg)
        else:
            address, rest = get_addr_spec(arg)
    except (HeaderParseError, IndexError, ValueError):
        return None, None
    return address.addr_spec, str(rest)


def parse_params(words):
    """ESMTP parameters WORDS ("KEY" or "KEY=VALUE") as a dict (True for a bare KEY), or None if
    one is malformed (RFC 1869 syntax, as aiosmtpd checks it)."""
    result = {}
    for word in words:
        key, eq, value = word.partition("=")
        if not key.isalnum() or (eq and not value):
            return None
        result[key] = value if eq else True
    return result


def data_verdict(chunk, limit):
    """Why DATA bytes CHUNK (dot-stuffed, possibly ending in a partial line) must be refused,
    judged line by line in order as aiosmtpd does: "long" when a line (CRLF included) exceeds
    DATA_LINE_LIMIT first, "much" when the running byte count exceeds LIMIT (0 = no limit)
    first, None when neither happens."""
    total = 0
    lines = chunk.split(b"\r\n")
    last = len(lines) - 1
    for i, line in enumerate(lines):
        n = len(line) + (2 if i < last else 0)
        if n > DATA_LINE_LIMIT:
            return "long"
        total += n
        if limit and total > limit:
            return "much"
    return None


class State:
    """Fault mode + counters, shared by the SMTP event loop and the control-HTTP threads.

    Every method takes the lock only for a few dict operations (never across I/O or waits),
    so the event loop is never blocked for long.
    """

    def __init__(self, default_auth):
        self.lock = threading.Lock()
        self.default_auth = default_auth  # (user, password) from the command line, or None
        self.reset()

    def reset(self):
        """Guarantee: mode off (AUTH back to the command line), all counters zero."""
        with self.lock:
            self.mode = {}
            self.delay_all = 0.0   # seconds before every reply (delay_on "all")
            self.delay_data = 0.0  # seconds before the end-of-DATA reply (delay_on "data")
            self.tempfail_left = 0
            self.tempfail_until = 0.0
            self.reject_re = None
            self.stats = {"connections": 0, "stored": 0, "tempfailed": 0, "rcpt_rejected": 0,
                          "auth_ok": 0, "auth_failed": 0, "pipelined": 0, "bdat": 0}

    def set_mode(self, mode):
        """Replace the whole mode (absent keys = off). Raises ValueError (or re.error) on bad
        input, leaving the previous mode in place."""
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
        on = mode.get("delay_on", "all")
        if on not in ("all", "data"):
            raise ValueError('delay_on must be "all" or "data"')
        pat = mode.get("reject_rcpt")
        reject_re = re.compile(pat, re.IGNORECASE) if pat else None
        if ("auth_user" in mode) != ("auth_password" in mode):
            raise ValueError("auth_user and auth_password go together")
        with self.lock:
            self.mode = dict(mode)
            self.delay_all = delay / 1000.0 if on == "all" else 0.0
            self.delay_data = delay / 1000.0 if on == "data" else 0.0
            self.tempfail_left = count
            self.tempfail_until = time.monotonic() + seconds if seconds else 0.0
            self.reject_re = reject_re

    def auth(self):
        """(user, password) new connections must AUTH with, or None for no AUTH."""
        with self.lock:
            if "auth_user" in self.mode:
                return (str(self.mode["auth_user"]), str(self.mode["auth_password"]))
            return self.default_auth

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
        """True (and counted) if ADDRESS matches the reject_rcpt pattern."""
        with self.lock:
            if self.reject_re is not None and self.reject_re.search(address or ""):
                self.stats["rcpt_rejected"] += 1
                return True
            return False

    def count(self, key):
        """Add one to counter KEY."""
        with self.lock:
            self.stats[key] += 1

    def snapshot(self):
        """The /_control/stats document (a copy; safe to serialise outside the lock)."""
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

    def store(self, mail_from, rcpt_tos, mail_options, data, auth_login):
        """Store DATA (the unstuffed message) with its envelope; returns its seq."""
        self.seq += 1
        name = f"{self.seq}.eml"
        write_atomic(os.path.join(self.path, name), data)
        subject = message_id = None
        try:
            # Only the header block is parsed (everything after the first empty line is body
            # to the parser anyway). compat32 plus explicit RFC 2047 decoding: the same strings
            # as policy.default for these two headers, at a fraction of the cost.
            end = data.find(b"\r\n\r\n")
            head = data if end < 0 else data[:end + 4]
            hdrs = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
            if hdrs["subject"] is not None:
                subject = str(email.header.make_header(email.header.decode_header(hdrs["subject"])))
            if hdrs["message-id"] is not None:
                message_id = str(hdrs["message-id"]).strip()
        except Exception as e:  # a malformed header must not lose the message
            log.warning("seq %d: cannot parse headers: %s", self.seq, e)
        entry = {"seq": self.seq, "mail_from": mail_from, "rcpt_tos": list(rcpt_tos),
                 "size": len(data), "subject": subject, "message_id": message_id, "file": name,
                 "ts": time.time(), "auth_login": auth_login, "mail_options": list(mail_options)}
        line = json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n"
        os.write(self.index_fd, line.encode("utf-8", "surrogateescape"))
        return self.seq


class Config:
    """What every connection needs: command-line settings, shared state, the maildir, and the
    set of open sessions (for the idle sweep)."""

    def __init__(self, args, state, maildir):
        self.hostname = args.hostname
        self.max_size = args.max_size          # 0 = no limit
        self.smtputf8 = not args.no_smtputf8
        self.pipelining = not args.no_pipelining
        self.chunking = not args.no_chunking
        self.state = state
        self.maildir = maildir
        self.sessions = set()
        # Refuse to buffer a DATA section beyond this; the verdict is known by then.
        self.data_cap = args.max_size + 2 * DATA_LINE_LIMIT if args.max_size else 0


# Session input modes: what the next bytes in the buffer are.
CMD, DATA, AUTH_PLAIN, AUTH_LOGIN_USER, AUTH_LOGIN_PASS, BDAT = range(6)


class Session(asyncio.Protocol):
    """One SMTP connection.

    Guarantees: replies go out in command order, one reply per command; while a reply is
    delayed, further input is only buffered, so a pipelining client sees exactly the sequential
    dialogue; delays are timers, so a waiting connection costs no CPU; a message is stored (or
    refused) when its end arrives, delay or not, and it has been renamed into the maildir and
    indexed before its 250 reply is written. As RFC 2920 lets a server (and as Postfix does),
    the replies to a group of pipelined commands go out together, in one write, once the
    commands that arrived are handled or a reply must wait: a pipelining client gets the
    replies to MAIL, RCPT and BDAT in one segment, a client sending one command at a time each
    reply at once.
    """

    def __init__(self, cfg):
        self.cfg = cfg
        self.transport = None

    # -- asyncio callbacks --------------------------------------------------------------------

    def connection_made(self, transport):
        """Counts the connection, fixes its AUTH requirement, sends the greeting."""
        cfg = self.cfg
        self.transport = transport
        self.loop = asyncio.get_running_loop()
        self.buf = bytearray()
        self.out = bytearray()     # replies not yet written (see flush)
        self.processing = False    # inside process(): replies wait for its end
        self.mode = CMD
        self.busy = False          # a reply is pending on a timer
        self.timer = None
        self.closed = False
        self.skip_line = False     # discarding an over-long command line up to its LF
        self.data_scan = 0         # where to resume searching for the end of DATA
        self.data_refused = None   # "long"/"much" once an oversized DATA is being discarded
        self.host_name = None      # from HELO/EHLO
        self.extended = False      # EHLO (not HELO)
        self.auth_login = None     # login of a successful AUTH
        self.auth_pending = None   # (mechanism, login) while AUTH waits for a response line
        self.bogus = BOGUS_LIMIT
        self.last_active = self.loop.time()
        self.new_envelope()
        cfg.sessions.add(self)
        cfg.state.count("connections")
        self.creds = cfg.state.auth()  # per connection: an "auth_user" mode applies from now on
        self.reply(f"220 {cfg.hostname} ESMTP usher smtp_sink")

    def data_received(self, data):
        """Buffers DATA; processes it unless a delayed reply is pending."""
        self.buf += data
        if not self.busy:
            self.process()

    def connection_lost(self, exc):
        """Forgets the session and cancels its pending timer."""
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.cfg.sessions.discard(self)

    # -- replies ------------------------------------------------------------------------------

    def reply(self, *lines, close=False):
        """Queue one reply (several LINES = one multi-line reply) and write it with those queued
        before it: after the delay_on "all" delay, if any, else at once, or at the end of
        process() when called from it; with CLOSE, close the connection after it."""
        if self.closed:
            return
        self.out += ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape")
        delay = self.cfg.state.delay_all
        if delay:
            self.busy = True
            self.timer = self.loop.call_later(delay, self.send_delayed, close)
        elif close:
            self.close()
        elif not self.processing:
            self.flush()

    def flush(self):
        """Write the queued replies, in one write."""
        if self.out:
            self.transport.write(bytes(self.out))
            self.out.clear()

    def send_delayed(self, close):
        """Timer callback of reply(): write the queued replies, then resume reading input."""
        self.timer = None
        if self.closed:
            return
        if close:
            self.close()
            return
        self.flush()
        self.busy = False
        self.process()

    def close(self):
        """Close after the queued replies are written; ignore all further input."""
        self.flush()
        self.closed = True
        self.buf.clear()
        self.transport.close()

    # -- input --------------------------------------------------------------------------------

    def process(self):
        """Handle every complete command line / DATA section in the buffer, in order, until it
        is exhausted or a reply is pending on a timer; then write the replies queued meanwhile
        (unless a timer writes them, with its own)."""
        self.processing = True
        try:
            self.process_input()
        finally:
            self.processing = False
        if not self.busy and not self.closed:
            self.flush()

    def process_input(self):
        """process() without the write."""
        buf = self.buf
        while buf and not self.busy and not self.closed:
            if self.mode == DATA:
                if not self.take_data():
                    return
                continue
            if self.mode == BDAT:
                self.take_chunk()
                continue
            lf = buf.find(b"\n")
            if lf < 0:
                if len(buf) > DATA_LINE_LIMIT:  # over-long line: drop it as it arrives
                    self.skip_line = True
                    buf.clear()
                return
            line = bytes(buf[:lf + 1])
            del buf[:lf + 1]
            if self.skip_line:
                self.skip_line = False
                self.reply("500 Command line too long")
                continue
            self.last_active = self.loop.time()
            if self.mode == CMD:
                # the next command came before this one's reply (BDAT's own chunk follows it)
                if b"\n" in buf and not line[:5].upper().startswith(b"BDAT "):
                    self.cfg.state.count("pipelined")
                self.command(line.rstrip(b"\r\n"))
            else:
                self.auth_response(line.strip())

    def command(self, line):
        """Parse and dispatch one command line (CRLF stripped)."""
        if not line:
            return self.reply("500 Error: bad syntax")
        word, _, arg = line.partition(b" ")
        try:
            verb = word.upper().decode("ascii")
        except UnicodeDecodeError:
            return self.reply("500 Error: bad syntax")
        arg = arg.strip()
        if not arg:
            arg = None
        elif self.cfg.smtputf8:
            arg = arg.decode("utf-8", "surrogateescape")
        else:
            try:
                arg = arg.decode("ascii")
            except UnicodeDecodeError:
                return self.reply("500 Error: strict ASCII mode")
        limit = COMMAND_LIMIT
        if verb == "MAIL" and self.extended:
            limit += 26 + (10 if self.cfg.smtputf8 else 0)
        if len(line) > limit:
            return self.reply("500 Command line too long")
        method = getattr(self, "smtp_" + verb, None)
        if method is None:
            self.bogus -= 1
            if self.bogus < 1:
                return self.reply("502 5.5.1 Too many unrecognized commands, goodbye.",
                                  close=True)
            return self.reply(f'500 Error: command "{verb}" not recognized')
        method(arg)

    def new_envelope(self):
        """Forget the current transaction (MAIL, RCPTs); HELO and AUTH are kept."""
        self.mail_from = None
        self.mail_options = []
        self.rcpt_tos = []
        self.chunks = None         # the BDAT chunks of the message so far
        self.chunk_refused = None  # the reply owed after the last chunk, when refused

    def helo_refusal(self, helo="HELO"):
        """The 503 owed when no HELO/EHLO was given yet, else None."""
        return None if self.host_name else f"503 Error: send {helo} first"

    def auth_refusal(self):
        """The 530 owed when AUTH is required and has not succeeded yet, else None."""
        if self.creds is not None and self.auth_login is None:
            return "530 5.7.0 Authentication required"
        return None

    def need_helo(self, helo="HELO"):
        """True (and 503 sent) if no HELO/EHLO was given yet."""
        line = self.helo_refusal(helo)
        if line:
            self.reply(line)
        return line is not None

    def need_auth(self):
        """True (and 530 sent) if AUTH is required and has not succeeded yet."""
        line = self.auth_refusal()
        if line:
            self.reply(line)
        return line is not None

    # -- commands (aiosmtpd 1.4's replies) ----------------------------------------------------

    def smtp_HELO(self, arg):
        """HELO: plain SMTP session."""
        if not arg:
            return self.reply("501 Syntax: HELO hostname")
        self.new_envelope()
        self.extended = False
        self.host_name = arg
        self.reply(f"250 {self.cfg.hostname}")

    def smtp_EHLO(self, arg):
        """EHLO: advertises SIZE, 8BITMIME, PIPELINING (unless --no-pipelining), CHUNKING (unless
        --no-chunking), SMTPUTF8 (unless --no-smtputf8), AUTH when required."""
        if not arg:
            return self.reply("501 Syntax: EHLO hostname")
        self.new_envelope()
        self.extended = True
        self.host_name = arg
        lines = [f"250-{self.cfg.hostname}"]
        if self.cfg.max_size:
            lines.append(f"250-SIZE {self.cfg.max_size}")
        lines.append("250-8BITMIME")
        if self.cfg.pipelining:
            lines.append("250-PIPELINING")
        if self.cfg.chunking:
            lines.append("250-CHUNKING")
        if self.cfg.smtputf8:
            lines.append("250-SMTPUTF8")
        if self.creds is not None:
            lines.append("250-AUTH LOGIN PLAIN")
        lines.append("250 HELP")
        self.reply(*lines)

    def smtp_NOOP(self, arg):
        self.reply("250 OK")

    def smtp_QUIT(self, arg):
        """QUIT: 221, then the connection is closed."""
        if arg:
            return self.reply("501 Syntax: QUIT")
        self.reply("221 Bye", close=True)

    def smtp_RSET(self, arg):
        if arg:
            return self.reply("501 Syntax: RSET")
        self.new_envelope()
        self.reply("250 OK")

    def smtp_STARTTLS(self, arg):
        """No TLS here (never advertised)."""
        if arg:
            return self.reply("501 Syntax: STARTTLS")
        self.reply("454 TLS not available")

    def smtp_EXPN(self, arg):
        self.reply("502 EXPN not implemented")

    def smtp_HELP(self, arg):
        if self.need_auth():
            return
        code = 250
        if arg:
            syntax = HELP_SYNTAX.get(arg.upper())
            if syntax:
                if self.extended:
                    syntax += HELP_EXTENDED.get(arg.upper(), "")
                return self.reply("250 Syntax: " + syntax)
            code = 501
        self.reply(f"{code} Supported commands: {' '.join(sorted(HELP_SYNTAX))}")

    def smtp_VRFY(self, arg):
        if self.need_auth():
            return
        if not arg:
            return self.reply("501 Syntax: VRFY <address>")
        address, _ = parse_address(arg)
        if address is None:
            return self.reply("502 Could not VRFY " + arg)
        self.reply("252 Cannot VRFY user, but will accept message and attempt delivery")

    def smtp_AUTH(self, arg):
        """AUTH PLAIN / AUTH LOGIN, with or without an initial response. Offered only when the
        connection requires AUTH (there is no TLS, and aiosmtpd refuses AUTH without TLS unless
        it is required)."""
        if self.need_helo("EHLO"):
            return
        if not self.extended:
            return self.reply("500 Error: command 'AUTH' not recognized")
        if self.creds is None:
            return self.reply("538 5.7.11 Encryption required for requested "
                              "authentication mechanism")
        if self.auth_login is not None:
            return self.reply("503 Already authenticated")
        if not arg:
            return self.reply("501 Not enough value")
        args = arg.split()
        if len(args) > 2:
            return self.reply("501 Too many values")
        mech = args[0].upper()
        if mech not in ("PLAIN", "LOGIN"):
            return self.reply("504 5.5.4 Unrecognized authentication type")
        if len(args) == 1:  # no initial response: ask for it
            self.mode = AUTH_PLAIN if mech == "PLAIN" else AUTH_LOGIN_USER
            self.reply("334 " if mech == "PLAIN" else "334 " + b64("User Name\0"))
            return
        blob = unb64(args[1].encode("utf-8", "surrogateescape"))
        if blob is None:
            return self.reply("501 5.5.2 Can't decode base64")
        if mech == "PLAIN":
            self.auth_plain(blob)
        else:
            self.auth_pending = blob
            self.mode = AUTH_LOGIN_PASS
            self.reply("334 " + b64("Password\0"))

    def auth_response(self, blob):
        """A client line answering a 334 challenge (base64, or "*" to abort)."""
        mode, self.mode = self.mode, CMD
        if blob == b"*":
            return self.reply("501 5.7.0 Auth aborted")
        data = unb64(blob)
        if data is None:
            return self.reply("501 5.5.2 Can't decode base64")
        if mode == AUTH_PLAIN:
            self.auth_plain(data)
        elif mode == AUTH_LOGIN_USER:
            self.auth_pending = data
            self.mode = AUTH_LOGIN_PASS
            self.reply("334 " + b64("Password\0"))
        else:
            login, self.auth_pending = self.auth_pending, None
            self.auth_check(login, data)

    def auth_plain(self, blob):
        """Check an AUTH PLAIN blob "authzid NUL login NUL password"."""
        try:
            _, login, password = blob.split(b"\0")
        except ValueError:
            return self.reply("501 5.5.2 Can't split auth value")
        self.auth_check(login, password)

    def auth_check(self, login, password):
        """235 and authenticated (counted auth_ok) if LOGIN/PASSWORD match, else 535
        (counted auth_failed)."""
        login = login.decode("utf-8", "replace")
        ok = (login, password.decode("utf-8", "replace")) == self.creds
        self.cfg.state.count("auth_ok" if ok else "auth_failed")
        if ok:
            self.auth_login = login
            self.reply(CODE_AUTH_OK)
        else:
            self.reply(CODE_AUTH_BAD)

    def smtp_MAIL(self, arg):
        """MAIL FROM:<addr> [SIZE=n] [BODY=7BIT|8BITMIME] [SMTPUTF8]."""
        if self.need_helo() or self.need_auth():
            return
        syntaxerr = "501 Syntax: MAIL FROM: <address>"
        if self.extended:
            syntaxerr += " [SP <mail-parameters>]"
        if arg is None or arg[:5].upper() != "FROM:":
            return self.reply(syntaxerr)
        address, rest = parse_address(arg[5:].strip())
        if address is None:
            return self.reply("553 5.1.3 Error: malformed address")
        if not address or (not self.extended and rest):
            return self.reply(syntaxerr)
        if self.mail_from:
            return self.reply("503 Error: nested MAIL command")
        options = rest.upper().split()
        params = parse_params(options)
        if params is None:
            return self.reply(syntaxerr)
        if params.pop("BODY", "7BIT") not in ("7BIT", "8BITMIME"):
            return self.reply("501 Error: BODY can only be one of 7BIT, 8BITMIME")
        smtputf8 = params.pop("SMTPUTF8", False)
        if smtputf8 is not False and smtputf8 is not True:
            return self.reply("501 Error: SMTPUTF8 takes no arguments")
        if smtputf8 and not self.cfg.smtputf8:
            return self.reply("501 Error: SMTPUTF8 disabled")
        size = params.pop("SIZE", None)
        if size:
            if size is True or not size.isdigit():
                return self.reply(syntaxerr)
            if self.cfg.max_size and int(size) > self.cfg.max_size:
                return self.reply("552 Error: message size exceeds fixed maximum message size")
        if params:
            return self.reply("555 MAIL FROM parameters not recognized or not implemented")
        self.mail_from = address
        self.mail_options = options
        self.reply("250 OK")

    def smtp_RCPT(self, arg):
        """RCPT TO:<addr>; 550 5.1.1 when the address matches the reject_rcpt mode."""
        if self.need_helo() or self.need_auth():
            return
        if not self.mail_from:
            return self.reply("503 Error: need MAIL command")
        syntaxerr = "501 Syntax: RCPT TO: <address>"
        if self.extended:
            syntaxerr += " [SP <mail-parameters>]"
        if arg is None or arg[:3].upper() != "TO:":
            return self.reply(syntaxerr)
        address, rest = parse_address(arg[3:].strip())
        if address is None:
            return self.reply("553 5.1.3 Error: malformed address")
        if not address or (not self.extended and rest):
            return self.reply(syntaxerr)
        params = parse_params(rest.upper().split())
        if params is None:
            return self.reply(syntaxerr)
        if params:
            return self.reply("555 RCPT TO parameters not recognized or not implemented")
        if self.cfg.state.rcpt_rejected(address):
            return self.reply("550 5.1.1 Injected permanent failure: recipient rejected")
        self.rcpt_tos.append(address)
        self.reply("250 OK")

    def smtp_DATA(self, arg):
        """DATA: 354, then the message is read up to <CRLF>.<CRLF> (see take_data)."""
        if self.need_helo() or self.need_auth():
            return
        if not self.rcpt_tos:
            return self.reply("503 Error: need RCPT command")
        if arg:
            return self.reply("501 Syntax: DATA")
        self.mode = DATA
        self.data_scan = 0
        self.data_refused = None
        self.reply("354 End data with <CR><LF>.<CR><LF>")

    def smtp_BDAT(self, arg):
        """BDAT <size> [LAST] (RFC 3030): the next SIZE bytes are a chunk of the message, taken
        as they are (no dot-stuffing). The reply comes once the chunk is read, also when the
        command is refused, since a client sends the chunk regardless: 250 per chunk, and after
        the LAST one the end-of-DATA decision (451, or stored and 250, after the delay_on "data"
        delay)."""
        if not self.cfg.chunking:
            return self.reply('500 Error: command "BDAT" not recognized')
        words = (arg or "").split()
        if not words or not words[0].isdigit():  # (no size: the chunk cannot be skipped)
            return self.reply("501 Syntax: BDAT <size> [LAST]")
        if len(words) > 2 or (len(words) == 2 and words[1].upper() != "LAST"):
            refused = "501 Syntax: BDAT <size> [LAST]"
        else:
            refused = self.helo_refusal() or self.auth_refusal() or \
                (None if self.rcpt_tos else "503 5.5.1 Error: need RCPT command")
        if self.chunks is None:
            self.chunks = bytearray()
        self.chunk_refused = self.chunk_refused or refused
        self.chunk_size = self.chunk_left = int(words[0])
        self.chunk_last = len(words) == 2
        self.mode = BDAT
        self.cfg.state.count("bdat")
        if self.chunk_left == 0:
            self.take_chunk()

    def take_chunk(self):
        """Consume what has arrived of the current BDAT chunk; once it is complete, reply."""
        buf = self.buf
        n = min(len(buf), self.chunk_left)
        if self.chunk_refused is None and self.cfg.max_size and \
                len(self.chunks) + n > self.cfg.max_size:
            self.chunk_refused = "552 Error: Too much mail data"
        if self.chunk_refused is None:
            self.chunks += buf[:n]
        del buf[:n]
        self.chunk_left -= n
        if self.chunk_left > 0:
            return
        self.mode = CMD
        self.last_active = self.loop.time()
        refused = self.chunk_refused
        if refused is not None or self.chunk_last:
            data, self.chunks, self.chunk_refused = bytes(self.chunks), None, None
            if refused is not None:
                self.new_envelope()
                return self.reply(refused)
            return self.finish_data(data)
        self.reply(f"250 2.0.0 {self.chunk_size} octets received")

    # -- DATA ---------------------------------------------------------------------------------

    def take_data(self):
        """Consume a complete DATA section from the buffer and handle it; False (buffer kept,
        or trimmed to its last 4 bytes when refusing an oversized message) if the terminating
        <CRLF>.<CRLF> has not arrived yet."""
        buf = self.buf
        if self.data_refused is None and buf.startswith(b".\r\n"):
            end, skip = 0, 3  # empty message
        else:
            idx = buf.find(b"\r\n.\r\n", self.data_scan)
            if idx < 0:
                self.data_scan = max(0, len(buf) - 4)
                cap = self.cfg.data_cap
                if cap and len(buf) > cap:  # too big: the verdict is known, stop buffering
                    if self.data_refused is None:
                        self.data_refused = data_verdict(bytes(buf), self.cfg.max_size) or "much"
                    del buf[:-4]
                    self.data_scan = 0
                return False
            end, skip = idx + 2, idx + 5
        stuffed = bytes(buf[:end])
        del buf[:skip]
        self.mode = CMD
        self.last_active = self.loop.time()
        refused = self.data_refused
        if refused is None and stuffed:
            # One C-level split finds the longest line; the line-by-line walk only when needed.
            if (len(stuffed) > self.cfg.max_size > 0
                    or max(map(len, stuffed.split(b"\r\n"))) > DATA_LINE_LIMIT - 2):
                refused = data_verdict(stuffed, self.cfg.max_size)
        if refused is not None:
            self.new_envelope()
            if refused == "long":
                return self.reply("500 Line too long (see RFC5321 4.5.3.1.6)")
            return self.reply("552 Error: Too much mail data")
        # RFC 5321 4.5.2 transparency: drop the first dot of every line that starts with one.
        data = stuffed.replace(b"\r\n.", b"\r\n")
        if data.startswith(b"."):
            data = data[1:]
        self.finish_data(data)
        return True

    def finish_data(self, data):
        """The end-of-DATA decision, made at once: 451 (tempfail mode), or store and 250. With
        delay_on "data" only the reply waits (so the work of many concurrent sessions does not
        pile up when their timers fire together, which would add to the delay)."""
        cfg = self.cfg
        mail_from, rcpt_tos, options = self.mail_from, self.rcpt_tos, self.mail_options
        self.new_envelope()
        if cfg.state.take_tempfail():
            return self.data_reply("451 4.3.0 Injected temporary failure, try again later")
        seq = cfg.maildir.store(mail_from, rcpt_tos, options, data, self.auth_login)
        cfg.state.count("stored")
        log.info("stored #%d from %s to %s (%d bytes)", seq, mail_from, rcpt_tos, len(data))
        self.data_reply(f"250 2.0.0 OK queued as {seq}")

    def data_reply(self, line):
        """The end-of-DATA reply: after the delay_on "data" delay, if any; further input waits
        for it."""
        delay = self.cfg.state.delay_data
        if not delay:
            return self.reply(line)
        self.busy = True
        self.timer = self.loop.call_later(delay, self.data_reply_delayed, line)

    def data_reply_delayed(self, line):
        """Timer callback of data_reply(): send the reply, resume reading input."""
        self.timer = None
        if self.closed:
            return
        self.busy = False
        self.reply(line)
        self.process()


def b64(text):
    """TEXT base64-encoded, as str (for 334 challenges)."""
    return base64.b64encode(text.encode()).decode()


def unb64(blob):
    """The bytes that strict base64 BLOB encodes, or None if it is not valid base64."""
    try:
        return base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        return None


def control_handler_class(state, close_idle):
    class ControlHandler(BaseHTTPRequestHandler):
        """/_control/{mode,reset,stats,close_idle}: answers JSON, always with Content-Length.
        close_idle() runs on the event loop and returns how many sessions it closed."""
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
            elif path == "/_control/close_idle":
                self.reply(200, {"closed": close_idle()})
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
    p.add_argument("--no-chunking", action="store_true", help="do not advertise CHUNKING (BDAT)")
    p.add_argument("--no-pipelining", action="store_true",
                   help="do not advertise PIPELINING (clients then send one command at a time)")
    p.add_argument("--hostname", default="smtp-sink.test", help="name in greeting and EHLO")
    p.add_argument("--verbose", "-v", action="store_true", help="log every message to stderr")
    a = p.parse_args(argv)
    if (a.auth_user is None) != (a.auth_password is None):
        p.error("--auth-user and --auth-password go together")
    return a


async def serve(args):
    """Run until SIGTERM/SIGINT. Guarantee: the port file is written only once both the SMTP
    and the control port accept connections."""
    state = State((args.auth_user, args.auth_password) if args.auth_user is not None else None)
    cfg = Config(args, state, Maildir(args.maildir))
    loop = asyncio.get_running_loop()

    async def close_idle_sessions():
        idle = [s for s in cfg.sessions
                if not s.closed and not s.busy and s.mode == CMD and s.mail_from is None
                and s.host_name and not s.buf]
        for s in idle:
            s.close()
        return len(idle)

    def close_idle():
        """From a control thread: closes, on the loop, every session between transactions."""
        return asyncio.run_coroutine_threadsafe(close_idle_sessions(), loop).result(5)

    ctl = ThreadingHTTPServer(("127.0.0.1", args.control_port),
                              control_handler_class(state, close_idle))
    ctl.daemon_threads = True
    threading.Thread(target=ctl.serve_forever, name="control", daemon=True).start()
    server = await loop.create_server(lambda: Session(cfg), host="127.0.0.1", port=args.port,
                                      backlog=256)
    port = server.sockets[0].getsockname()[1]
    cport = ctl.server_address[1]
    if args.control_port_file:
        write_atomic(args.control_port_file, f"{cport}\n".encode())
    if args.port_file:
        write_atomic(args.port_file, f"{port}\n".encode())
    print(f"smtp_sink: SMTP on 127.0.0.1:{port}, control on 127.0.0.1:{cport}, "
          f"maildir {args.maildir}, auth {'on' if args.auth_user is not None else 'off'}",
          file=sys.stderr, flush=True)

    def sweep():
        """Close connections that sent no command for IDLE_TIMEOUT_S; runs every 10 s."""
        limit = loop.time() - IDLE_TIMEOUT_S
        for s in [s for s in cfg.sessions if s.last_active < limit and not s.closed]:
            log.info("closing an idle connection")
            s.close()
        loop.call_later(10.0, sweep)

    loop.call_later(10.0, sweep)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    for s in list(cfg.sessions):
        s.transport.abort()
    ctl.shutdown()
    ctl.server_close()


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
