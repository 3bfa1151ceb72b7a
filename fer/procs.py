"""Is a process still running? Asked by the atomic writers' clean-up and by the study ledger."""

from __future__ import annotations

import os
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (a writer or worker still at work).

    A zombie (killed, not yet reaped by its parent, which in a container may never happen) is
    not running: on Linux its state in ``/proc/<pid>/stat`` is ``Z``.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # without procfs (macOS) trust os.kill; with it, the process just went away
        return not Path("/proc").is_dir()
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"  # the command name may hold spaces or ")"
