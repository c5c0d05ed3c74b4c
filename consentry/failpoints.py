"""Crash points for the reliability tests: kill the process at an exact step.

`CONSENTRY_FAILPOINTS="sink.after_store:2,ingest.before_commit"` makes the 2nd pass through
`sink.after_store` (and the 1st through `ingest.before_commit`) end the process at once, as
a kill -9 would, so a test can crash a service inside a window that random kills rarely hit.
`NAME:N:stop` freezes the process (SIGSTOP) at the Nth pass instead, as a paused machine
would, until the test sends SIGCONT: a worker that wakes up after its group moved on (a
zombie).
`NAME@SECONDS` makes every pass through `await slow(NAME)` wait that long instead: a window a
test must observe (ingest holding posts while it loads) stays open on a fast machine too.
`NAME@/PATH` (an absolute path) makes each pass wait until that file exists: the test decides
when the window closes (a consent worker with an event in flight). The first pass writes
"failpoint NAME: holding" to stderr, so a test can wait until the window is open.
`NAME:N@...` lets the first N-1 passes through and holds from the Nth on (the 4th event
applied, not the 1st).
Unset (always, outside tests), `hit` and `slow` are one dict lookup.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

EXIT_CODE = 75
_armed: dict[str, int] = {}
_stops: set[str] = set()  # armed names that freeze the process instead of ending it
_delays: dict[str, float | str] = {}  # seconds, or the path of a file to wait for
_free_passes: dict[str, int] = {}  # passes let through before a delay applies (`NAME:N@...`)
_announced: set[str] = set()
for _item in filter(None, os.environ.get("CONSENTRY_FAILPOINTS", "").split(",")):
    _item = _item.strip()
    if "@" in _item:
        _name, _, _seconds = _item.partition("@")
        _name, _, _nth = _name.partition(":")
        _delays[_name] = _seconds if _seconds.startswith("/") else float(_seconds)
        _free_passes[_name] = int(_nth or 1) - 1
        continue
    _name, _, _count = _item.partition(":")
    _count, _, _action = _count.partition(":")
    _armed[_name] = int(_count or 1)
    if _action == "stop":
        _stops.add(_name)
    elif _action:
        raise ValueError(f"CONSENTRY_FAILPOINTS: unknown action {_action!r} in {_item!r} (exit is the default, or stop)")


async def slow(name: str) -> None:
    delay = _delays.get(name)
    if delay is not None:
        if _free_passes.get(name, 0) > 0:
            _free_passes[name] -= 1
            return
        if name not in _announced:  # once: a test can wait for the window to be open
            _announced.add(name)
            sys.stderr.write(f"failpoint {name}: holding\n")
            sys.stderr.flush()
        if isinstance(delay, str):
            while not os.path.exists(delay):
                await asyncio.sleep(0.05)
        else:
            await asyncio.sleep(delay)


def hit(name: str) -> None:
    left = _armed.get(name)
    if left is None:
        return
    if left > 1:
        _armed[name] = left - 1
        return
    if name in _stops:
        del _armed[name]
        sys.stderr.write(f"failpoint {name}: stopping (SIGSTOP) until SIGCONT\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGSTOP)
        return
    sys.stderr.write(f"failpoint {name}: exiting now\n")
    sys.stderr.flush()
    os._exit(EXIT_CODE)
