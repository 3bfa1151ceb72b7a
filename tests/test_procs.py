"""Dead writers and workers are recognised, zombies included (temp files and leases are reclaimed)."""

import os
import signal
import subprocess
import time

from fer.procs import pid_alive


def test_running_killed_and_reaped_processes():
    proc = subprocess.Popen(["sleep", "30"])
    assert pid_alive(proc.pid) and pid_alive(os.getpid())
    os.kill(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(proc.pid) and time.monotonic() < deadline:  # killed, not reaped: a zombie
        time.sleep(0.05)
    assert not pid_alive(proc.pid)
    proc.wait()
    assert not pid_alive(proc.pid)
