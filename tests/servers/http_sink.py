#!/usr/bin/python3
"""http_sink: an HTTP/1.1 server for usher's integration tests (Slack webhooks, CRM APIs).

Listens on 127.0.0.1 only; keep-alive; every answer has Content-Length. Each request that is
answered (any status) or deliberately dropped is appended as one JSON line to the --log file
*before* its response is sent, so a client that got an answer always finds its line there.
Faults (status codes, Retry-After, delays, dropped connections, a deterministic failure
fraction) are set at runtime through /_control/ (never logged); see tests/servers/README.md.

It emulates a remote service that shares no CPU with the code under test, so it must be cheap
per request: one asyncio Protocol per connection parses requests straight out of its receive
buffer and writes each answer with one transport.write(); delays are timers (loop.call_later),
so many connections waiting for a delayed answer cost no CPU. Everything runs on the event-loop
thread, so the shared state needs no lock. Only the Python standard library is used.
"""

import argparse
import asyncio
import base64
import datetime
import json
import os
import random
import signal
import sys
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from sinklib import write_atomic

HUBSPOT_UPSERT_SUFFIX = "/crm/v3/objects/contacts/batch/upsert"
MODE_KEYS = {"status", "retry_after", "delay_ms", "drop", "count", "fail_ratio", "seed", "paths",
             "body", "content_type"}
SERVER = "usher-http-sink/1"
REASONS = {code: msg for code, (msg, _) in BaseHTTPRequestHandler.responses.items()}
MAX_HEAD = 64 * 1024      # request line + headers larger than this: 431, connection closed
JSON = "application/json"
TEXT = "text/plain; charset=utf-8"


def is_slack_path(path):
    """Slack-style incoming-webhook path: /services/T../B../X.. (as on hooks.slack.com) or
    anything with a "slack" path segment prefix, e.g. /slack, /slack/T1/B2/x, /hooks/slack-ops."""
    return path.startswith("/services/") or any(
        seg.lower().startswith("slack") for seg in path.split("/"))


def iso_now():
    """The current UTC time as 2026-01-01T00:00:00.000Z."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")[:-6] + "Z"


_date_cache = [0, ""]


def http_date():
    """The Date header value for now (formatted at most once per second)."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0], _date_cache[1] = now, formatdate(now, usegmt=True)
    return _date_cache[1]


def json_body(obj):
    """OBJ as the JSON answer body (one line, newline-terminated)."""
    return (json.dumps(obj) + "\n").encode()


class Sink:
    """Request log, fault mode, statistics and fake-CRM ids.

    Used only from the event-loop thread, so no lock: each method runs to completion without
    interleaving with another request's.
    """

    def __init__(self, log_path):
        self.log_path = log_path
        self.seq = 0
        if log_path and os.path.exists(log_path):  # continue numbering across restarts
            with open(log_path, "rb") as f:
                for line in f:
                    try:
                        self.seq = max(self.seq, int(json.loads(line)["seq"]))
                    except (ValueError, KeyError, TypeError):
                        pass
        self.log_fd = (os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                       if log_path else None)
        self.reset()

    def reset(self, truncate_log=False):
        """Guarantee: mode off, statistics and CRM ids cleared; with TRUNCATE_LOG the log file
        is emptied (seq keeps counting)."""
        self.mode = None          # validated mode dict, or None = normal answers
        self.fault_left = None    # faults still to inject (None = unlimited)
        self.rng = None
        self.by_path = {}         # path -> {status -> count}
        self.by_status = {}
        self.total = 0
        self.contacts = {}        # (idProperty, id) -> HubSpot-like object id
        self.next_object_id = 1001
        if truncate_log and self.log_fd is not None:
            os.ftruncate(self.log_fd, 0)

    def set_mode(self, m):
        """Validate and install a mode (replacing the previous one). Raises ValueError and
        leaves the previous mode in place on bad input."""
        if not isinstance(m, dict):
            raise ValueError("mode must be a JSON object")
        unknown = set(m) - MODE_KEYS
        if unknown:
            raise ValueError(f"unknown mode keys {sorted(unknown)}; known: {sorted(MODE_KEYS)}")
        status = m.get("status")
        if status is not None and not (isinstance(status, int) and 100 <= status <= 599):
            raise ValueError("status must be an integer 100..599 or null")
        count = m.get("count")
        if count is not None and (not isinstance(count, int) or count < 0):
            raise ValueError("count must be a non-negative integer or null")
        ratio = m.get("fail_ratio", 1.0)
        ratio = 1.0 if ratio is None else float(ratio)
        if not 0.0 <= ratio <= 1.0:
            raise ValueError("fail_ratio must be within 0..1")
        delay = m.get("delay_ms") or 0
        if not isinstance(delay, (int, float)) or delay < 0:
            raise ValueError("delay_ms must be a non-negative number")
        paths = m.get("paths")
        if paths is not None and (not isinstance(paths, list)
                                  or not all(isinstance(p, str) for p in paths)):
            raise ValueError("paths must be a list of strings or null")
        mode = {"status": status, "retry_after": m.get("retry_after"), "delay_ms": delay,
                "drop": bool(m.get("drop", False)), "count": count, "fail_ratio": ratio,
                "seed": m.get("seed", 1), "paths": paths, "body": m.get("body"),
                "content_type": m.get("content_type")}
        self.mode = mode
        self.fault_left = count
        self.rng = random.Random(mode["seed"])

    def take_fault(self, path):
        """The mode to apply to this request, or None for a normal answer.

        A request matches when paths is null or one entry equals its path or is a path prefix
        of it ("/slack" matches "/slack/T1/B2"). A matching request is selected when the seeded
        generator's next draw is below fail_ratio (one draw per matching request while faults
        remain); each selected request consumes one of count.
        """
        m = self.mode
        if m is None or self.fault_left == 0:
            return None
        if m["paths"] is not None and not any(
                path == p or path.startswith(p.rstrip("/") + "/") for p in m["paths"]):
            return None
        if m["fail_ratio"] < 1.0 and self.rng.random() >= m["fail_ratio"]:
            return None
        if self.fault_left is not None:
            self.fault_left -= 1
        return m

    def record(self, entry):
        """Assign the next seq, append ENTRY as one line (one write(2) on an O_APPEND
        descriptor, so lines never interleave), count it."""
        self.seq += 1
        entry["seq"] = self.seq
        if self.log_fd is not None:
            line = json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n"
            os.write(self.log_fd, line.encode("utf-8", "replace"))
        st = str(entry["status"])
        self.total += 1
        self.by_status[st] = self.by_status.get(st, 0) + 1
        per = self.by_path.setdefault(entry["path"], {})
        per[st] = per.get(st, 0) + 1

    def contact_id(self, id_property, ident):
        """Stable object id per (idProperty, id); second value True if it was new."""
        key = (id_property, ident)
        if key in self.contacts:
            return self.contacts[key], False
        self.contacts[key] = str(self.next_object_id)
        self.next_object_id += 1
        return self.contacts[key], True

    def stats(self):
        """The /_control/stats document."""
        return {"total": self.total, "by_status": dict(self.by_status),
                "by_path": {p: dict(c) for p, c in self.by_path.items()},
                "mode": self.mode, "fault_left": self.fault_left, "last_seq": self.seq,
                "contacts": len(self.contacts)}

    # -- answers ------------------------------------------------------------------------------

    def fault_answer(self, fault, path):
        """(status, body, content type, extra headers) of an injected status."""
        status = fault["status"]
        extra = []
        if fault["retry_after"] is not None:
            extra.append(("Retry-After", fault["retry_after"]))
        if fault["body"] is not None:
            return status, str(fault["body"]).encode(), fault["content_type"] or TEXT, extra
        if is_slack_path(path) and status >= 400:
            text = {429: "rate_limited", 404: "no_service", 403: "action_prohibited",
                    400: "invalid_payload"}.get(status, "injected_failure")
            return status, text.encode(), TEXT, extra
        obj = {"ok": 200 <= status < 300, "status": status, "injected": True}
        return status, json_body(obj), JSON, extra

    def default_answer(self, method, path, body):
        """(status, body, content type, extra headers) of a normal answer."""
        if method == "POST" and path.endswith(HUBSPOT_UPSERT_SUFFIX):
            return self.hubspot_upsert(body)
        if is_slack_path(path):
            return 200, b"ok", TEXT, ()
        return 200, b'{"ok":true}\n', JSON, ()

    def hubspot_upsert(self, body):
        """HubSpot CRM v3 batch upsert: 200 COMPLETE with one result per input, stable ids
        per (idProperty, id) ("new" true the first time); 400 VALIDATION_ERROR if the body
        is not {"inputs":[{"id":..,"properties":{..}},..]}."""
        try:
            req = json.loads(body)
            inputs = req["inputs"]
            if not isinstance(inputs, list) or not inputs:
                raise ValueError("inputs must be a non-empty list")
            for i in inputs:
                if not isinstance(i, dict) or not isinstance(i.get("properties", {}), dict) \
                        or "id" not in i:
                    raise ValueError("each input needs id and properties")
        except (ValueError, KeyError, TypeError) as e:
            err = {"status": "error", "message": f"Invalid input JSON: {e}",
                   "category": "VALIDATION_ERROR", "correlationId": "00000000-sink"}
            return 400, json_body(err), JSON, ()
        started = iso_now()
        results = []
        for i in inputs:
            idp = i.get("idProperty", "email")
            oid, new = self.contact_id(idp, str(i["id"]))
            props = {k: (None if v is None else str(v))
                     for k, v in i.get("properties", {}).items()}
            props.update({idp: str(i["id"]), "hs_object_id": oid})
            results.append({"id": oid, "properties": props, "createdAt": started,
                            "updatedAt": started, "archived": False, "new": new})
        resp = {"status": "COMPLETE", "results": results, "startedAt": started,
                "completedAt": iso_now()}
        return 200, json_body(resp), JSON, ()

    def control(self, method, path, body):
        """(status, JSON body) of a /_control/ request."""
        if path == "/_control/stats" and method == "GET":
            return 200, self.stats()
        if path == "/_control/health" and method == "GET":
            return 200, {"ok": True}
        if path == "/_control/mode" and method == "POST":
            try:
                self.set_mode(json.loads(body or b"{}"))
            except (ValueError, TypeError) as e:
                return 400, {"ok": False, "error": str(e)}
            return 200, self.stats()
        if path == "/_control/reset" and method == "POST":
            try:
                opts = json.loads(body) if body.strip() else {}
            except ValueError as e:
                return 400, {"ok": False, "error": str(e)}
            self.reset(truncate_log=bool(isinstance(opts, dict) and opts.get("truncate_log")))
            return 200, self.stats()
        return 404, {"ok": False, "error": f"unknown control {method} {path}"}


class Server:
    """Settings and state shared by all connections, plus the set of open connections."""

    def __init__(self, sink, max_body, idle_timeout):
        self.sink = sink
        self.max_body = max_body
        self.idle_timeout = idle_timeout
        self.conns = set()


# Connection input states: what the next bytes in the buffer are.
HEAD, BODY, CHUNK_SIZE, CHUNK_DATA, TRAILER = range(5)


class Conn(asyncio.Protocol):
    """One HTTP/1.1 connection.

    Guarantees: requests are answered one at a time, in order (input arriving while an answer
    is delayed is only buffered); a request's log line is written before its answer; every
    answer carries Content-Length (and "Connection: close" when the connection is closed after
    it); a delay is a timer, so a waiting connection costs no CPU.
    """

    def __init__(self, srv):
        self.srv = srv
        self.transport = None

    # -- asyncio callbacks --------------------------------------------------------------------

    def connection_made(self, transport):
        """Registers the connection for the idle sweep."""
        self.transport = transport
        self.loop = asyncio.get_running_loop()
        self.buf = bytearray()
        self.state = HEAD
        self.busy = False        # an answer is pending on a timer
        self.timer = None
        self.closed = False
        self.last_active = self.loop.time()
        self.srv.conns.add(self)

    def data_received(self, data):
        """Buffers DATA; handles it unless an answer is pending."""
        self.buf += data
        self.last_active = self.loop.time()
        if not self.busy:
            self.process()

    def connection_lost(self, exc):
        """Forgets the connection and cancels its pending timer."""
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.srv.conns.discard(self)

    def close(self):
        """Close after queued output is flushed; ignore all further input."""
        self.closed = True
        self.buf.clear()
        self.transport.close()

    # -- parsing ------------------------------------------------------------------------------

    def process(self):
        """Consume complete requests from the buffer, in order, until it is exhausted, a
        request is incomplete, or an answer is pending on a timer."""
        buf = self.buf
        while buf and not self.busy and not self.closed:
            state = self.state
            if state == HEAD:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        self.error(431, "request header too large")
                    return
                head = bytes(buf[:end])
                del buf[:end + 4]
                self.parse_head(head)
            elif state == BODY:
                if len(buf) < self.need:
                    return
                body = bytes(buf[:self.need])
                del buf[:self.need]
                self.state = HEAD
                self.handle(body)
            elif state == CHUNK_SIZE:
                lf = buf.find(b"\n")
                if lf < 0:
                    if len(buf) > 1024:
                        self.close()  # not a chunk-size line
                    return
                line = bytes(buf[:lf])
                del buf[:lf + 1]
                try:
                    size = int(line.split(b";")[0].strip() or b"0", 16)
                except ValueError:
                    return self.close()
                if size == 0:
                    self.state = TRAILER
                elif len(self.chunks) + size > self.srv.max_body:
                    return self.too_large()
                else:
                    self.need = size
                    self.state = CHUNK_DATA
            elif state == CHUNK_DATA:
                # the chunk, then the CRLF after it
                if len(buf) < self.need:
                    return
                lf = buf.find(b"\n", self.need)
                if lf < 0:
                    if len(buf) > self.need + 8:
                        self.close()
                    return
                self.chunks += buf[:self.need]
                del buf[:lf + 1]
                self.state = CHUNK_SIZE
            else:  # TRAILER: header lines up to an empty line
                lf = buf.find(b"\n")
                if lf < 0:
                    if len(buf) > 8192:
                        self.close()
                    return
                line = buf[:lf + 1]
                del buf[:lf + 1]
                if line in (b"\r\n", b"\n"):
                    self.state = HEAD
                    body, self.chunks = bytes(self.chunks), None
                    self.handle(body)

    def parse_head(self, head):
        """Parse the request line and headers in HEAD (no final CRLFCRLF); sets up reading the
        body (sending 100 Continue when asked), or answers 400/413 and closes."""
        lines = head.decode("iso-8859-1").split("\r\n")
        words = lines[0].split()
        if len(words) != 3 or not words[2].startswith("HTTP/"):
            return self.error(400, f"bad request line {lines[0][:100]!r}")
        self.method, self.target, version = words
        try:
            major, minor = version[5:].split(".")
            vnum = (int(major), int(minor))
        except ValueError:
            return self.error(400, f"bad request version {version[:20]!r}")
        headers = []  # [name, value] in order, names as sent
        for line in lines[1:]:
            if line[:1] in (" ", "\t") and headers:  # obsolete line folding
                headers[-1][1] += " " + line.strip()
                continue
            name, colon, value = line.partition(":")
            if not colon:
                return self.error(400, f"bad header line {line[:100]!r}")
            headers.append([name.strip(), value.strip()])
        hmap = {}
        for name, value in headers:
            key = name.lower()
            hmap[key] = f"{hmap[key]}, {value}" if key in hmap else value
        self.hmap = hmap
        # keep-alive as http.server: on by default in HTTP/1.1, opt-in in HTTP/1.0
        conn = hmap.get("connection", "").lower()
        self.close_after = conn == "close" or (vnum < (1, 1) and conn != "keep-alive")
        if hmap.get("expect", "").lower() == "100-continue" and vnum >= (1, 1):
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if "chunked" in hmap.get("transfer-encoding", "").lower():
            self.chunks = bytearray()
            self.state = CHUNK_SIZE
            return
        try:
            n = int(hmap.get("content-length") or 0)
        except ValueError:
            return self.close()
        if n < 0:
            return self.close()
        if n > self.srv.max_body:
            return self.too_large()
        if n == 0:
            self.handle(b"")
        else:
            self.need = n
            self.state = BODY

    # -- answering ----------------------------------------------------------------------------

    def handle(self, body):
        """A complete request: control requests are answered at once; others take a fault
        decision and are finished now or after the fault's delay."""
        url = urlsplit(self.target)
        path = url.path
        sink = self.srv.sink
        if path.startswith("/_control/"):
            status, obj = sink.control(self.method, path, body)
            return self.send(status, json_body(obj), JSON, ())
        fault = sink.take_fault(path)
        if fault and fault["delay_ms"]:
            req = (self.method, url, self.hmap, self.close_after, body, fault)
            self.busy = True
            self.timer = self.loop.call_later(fault["delay_ms"] / 1000.0, self.finish_delayed,
                                              req)
        else:
            self.finish(self.method, url, self.hmap, self.close_after, body, fault)

    def finish_delayed(self, req):
        """Timer callback of a delayed request: finish it, then resume reading input."""
        self.timer = None
        if self.closed:
            return
        self.busy = False
        self.close_after = req[3]
        self.finish(*req)
        self.process()

    def finish(self, method, url, hmap, close_after, body, fault):
        """Log the request, then answer it (or drop the connection for a "drop" fault). HMAP:
        the headers by lower-case name (repeated ones joined with ", ")."""
        sink = self.srv.sink
        path = url.path
        entry = {"seq": None, "path": path, "query": url.query, "method": method,
                 "headers": hmap, "ts": time.time()}
        try:
            entry["body"] = body.decode("utf-8")
        except UnicodeDecodeError:
            entry["body"] = body.decode("utf-8", "replace")
            entry["body_base64"] = base64.b64encode(body).decode()
        if fault and fault["drop"]:
            entry.update(status=0, dropped=True)
            sink.record(entry)
            return self.close()  # no answer at all: the client sees an empty reply
        if fault and fault["status"] is not None:
            status, payload, ctype, extra = sink.fault_answer(fault, path)
        else:
            status, payload, ctype, extra = sink.default_answer(method, path, body)
        entry["status"] = status
        sink.record(entry)
        self.send(status, payload, ctype, extra, head=(method == "HEAD"))

    def send(self, status, body, ctype, extra, head=False):
        """Write one answer (status line, headers with Content-Length, body unless HEAD) in one
        write; close the connection after it when the request asked for that."""
        parts = [f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\nServer: {SERVER}\r\n"
                 f"Date: {http_date()}\r\nContent-Type: {ctype}\r\n"
                 f"Content-Length: {len(body)}\r\n"]
        for k, v in extra:
            parts.append(f"{k}: {v}\r\n")
        if self.close_after:
            parts.append("Connection: close\r\n")
        parts.append("\r\n")
        out = "".join(parts).encode("latin-1", "replace")
        self.transport.write(out if head else out + body)
        if self.close_after:
            self.close()

    def too_large(self):
        """413 for a body over --max-body; the connection is closed (the body is not read)."""
        self.close_after = True
        self.send(413, json_body({"ok": False, "error":
                                  f"body larger than {self.srv.max_body} bytes"}), JSON, ())

    def error(self, status, message):
        """Answer a malformed request with STATUS and close the connection."""
        self.close_after = True
        self.send(status, json_body({"ok": False, "error": message}), JSON, ())


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="HTTP/1.1 sink for tests: logs every request as a JSON line; faults are "
                    "set at runtime via POST /_control/mode (see tests/servers/README.md).")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = pick free)")
    p.add_argument("--port-file", help="write the bound port here once listening")
    p.add_argument("--log", help="JSON-lines request log (appended; seq continues)")
    p.add_argument("--max-body", type=int, default=64 * 1024 * 1024,
                   help="larger request bodies get 413 (default 64 MiB)")
    p.add_argument("--idle-timeout", type=float, default=120.0,
                   help="close a connection idle for this many seconds (default 120)")
    return p.parse_args(argv)


async def serve(args):
    """Run until SIGTERM/SIGINT. Guarantee: the port file is written only once the port
    accepts connections."""
    srv = Server(Sink(args.log), args.max_body, args.idle_timeout)
    loop = asyncio.get_running_loop()
    # backlog: many concurrent connects from usher's worker pool
    server = await loop.create_server(lambda: Conn(srv), host="127.0.0.1", port=args.port,
                                      backlog=256)
    port = server.sockets[0].getsockname()[1]
    if args.port_file:
        write_atomic(args.port_file, f"{port}\n".encode())
    print(f"http_sink: listening on 127.0.0.1:{port}, log {args.log}", file=sys.stderr, flush=True)

    interval = max(0.05, min(5.0, args.idle_timeout / 4))

    def sweep():
        """Close connections without input for --idle-timeout (unless an answer is pending)."""
        limit = loop.time() - args.idle_timeout
        for c in [c for c in srv.conns if c.last_active < limit and not c.busy]:
            c.close()
        loop.call_later(interval, sweep)

    loop.call_later(interval, sweep)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    for c in list(srv.conns):
        c.transport.abort()


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
