#!/usr/bin/env python3
"""Times ETRN replies: how long an SMTP server takes to answer `ETRN DOMAIN`.

Usage: etrn-time.py PORT DOMAIN SESSIONS PER_SESSION

Opens SESSIONS connections to 127.0.0.1:PORT one after the other; in each, after the greeting
and EHLO, sends PER_SESSION ETRN commands one at a time, each timed from the moment it is sent
to the moment the whole reply has been read. Prints the median in milliseconds on stdout and
every time on stderr. Exits 1 if a reply is not 250, 251, 252 or 253, or the server is silent
for 600 seconds.
"""

import socket
import statistics
import sys
import time


def reply(reader):
    """Reads one whole SMTP reply (every continuation line) and returns its last line."""
    while True:
        line = reader.readline()
        if not line:
            raise ConnectionError("the server closed the connection")
        if line[3:4] != b"-":
            return line.decode("ascii", "replace").rstrip("\r\n")


def main():
    port, domain, sessions, per_session = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    times = []
    for _ in range(sessions):
        with socket.create_connection(("127.0.0.1", int(port)), timeout=600) as conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            reader = conn.makefile("rb")
            reply(reader)
            conn.sendall(b"EHLO bench.example.test\r\n")
            reply(reader)
            for _ in range(per_session):
                start = time.perf_counter()
                conn.sendall(f"ETRN {domain}\r\n".encode("ascii"))
                last = reply(reader)
                times.append((time.perf_counter() - start) * 1000)
                if last[:3] not in ("250", "251", "252", "253"):
                    print(f"etrn-time.py: ETRN {domain}: {last}", file=sys.stderr)
                    sys.exit(1)
            conn.sendall(b"QUIT\r\n")
            reply(reader)
    print(" ".join(f"{t:.3f}" for t in times), file=sys.stderr)
    print(f"{statistics.median(times):.3f}")


if __name__ == "__main__":
    main()
