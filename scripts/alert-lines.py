#!/usr/bin/env python3
"""Reads alert JSON lines (one per line) on stdin; prints one readable, coloured line each."""
import json
import signal
import sys

COLOUR = {"blue": 34, "yellow": 33, "orange": 35, "red": 31}

signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` is fine

for line in sys.stdin:
    try:
        a = json.loads(line)
    except ValueError:
        continue
    level = a.get("level", "?")
    ev = a.get("evidence", {})
    observed = ev.get("observed")
    if isinstance(observed, float):
        observed = round(observed, 3)
    expected = round(ev.get("expected", 0.0), 2)
    route = ",".join(a.get("route", []))
    print(
        f"\033[{COLOUR.get(level, 0)}m{level.upper():6}\033[0m {a.get('status', ''):8} "
        f"{a.get('stream', ''):9} {a.get('detector', ''):12} {a.get('title', '')} "
        f"(observed {observed}, expected {expected}) -> {route}",
        flush=True,
    )
