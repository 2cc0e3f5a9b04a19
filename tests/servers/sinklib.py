"""sinklib: what the test sinks (smtp_sink.py, http_sink.py) share. Standard library only."""

import os


def write_atomic(path, data):
    """Guarantee: PATH either does not exist or holds all of DATA (tmp file + rename)."""
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.replace(tmp, path)
