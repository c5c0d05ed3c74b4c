"""Fail closed: a record the consent worker must send and cannot (a changelog record, a dead
letter, a re-homed event), or an event it fails to apply (a bug), ends the process at once,
with EXIT_CODE.

Why not raise, or stop faust gracefully? Both commit: faust answers an agent's exception by
committing the consumer's acknowledged offsets (`Consumer.on_task_error`) and restarting the
agent, and a graceful stop commits them too (`Consumer.on_stop`). Either would commit the
offset of the event whose record was lost, and the event would never be applied. Ending the
process as a kill -9 would leaves the offset uncommitted: the worker restarted by its
supervisor (`consentry up`, Kubernetes) reads the event again and sends the record again. The
local store may already hold the row; the agent writes a row even when unchanged, so the
re-read event re-sends it. If the record can never be sent (over the size limit, a missing
ACL) the worker stops again, on every restart, until an operator fixes the cause: see
docs/operations.md, "ConsentryServiceRestarting".
"""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

log = logging.getLogger(__name__)

EXIT_CODE = 70  # EX_SOFTWARE


def stop(what: str, error: BaseException) -> NoReturn:
    """End the process now: `what` (a sentence: which record or event, what failed) says why."""
    log.critical(
        "%s (%s: %s): stopping now, before any offset commit; the event is read again after the restart",
        what,
        type(error).__name__,
        error,
    )
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:  # flushing is best effort: exiting is what matters
            pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_CODE)


def on_send_failure(topic: str, error: BaseException) -> NoReturn:
    """consentry.patches calls this for a record faust could not send."""
    stop(f"a record for {topic} cannot be sent", error)
