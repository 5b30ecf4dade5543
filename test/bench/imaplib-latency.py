"""Per-command latency as Python's imaplib sees it (Nagle left on, an APPEND's
literal and its CRLF written separately): `python3 imaplib-latency.py HOST PORT
USER PASSWORD ROUNDS`. Each round: connect, LOGIN, SELECT INBOX, 3 APPENDs,
LOGOUT. Prints {"login": ms, "select": ms, "append": ms} (medians)."""
import imaplib
import json
import statistics
import sys
import time

host, port, user, password, rounds = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
message = b"From: bench@example.com\r\nSubject: latency\r\n\r\n" + b"hello world\r\n" * 50
times = {"login": [], "select": [], "append": []}


def timed(kind, call):
    t = time.perf_counter()
    typ, data = call()
    times[kind].append((time.perf_counter() - t) * 1000)
    if typ != "OK":
        raise SystemExit(f"{kind}: {typ} {data}")


for _ in range(rounds):
    c = imaplib.IMAP4(host, port)
    timed("login", lambda: c.login(user, password))
    timed("select", lambda: c.select("INBOX"))
    for _ in range(3):
        timed("append", lambda: c.append("INBOX", None, None, message))
    c.logout()
print(json.dumps({k: statistics.median(v) for k, v in times.items()}))
