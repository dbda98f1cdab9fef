"""Run a command, then write its exit code, peak RSS and CPU time (`os.wait4`) as JSON.

    python -S bench/launch.py RESULT.json -- COMMAND [ARG ...]

Why a launcher: Linux records in a child's peak RSS (ru_maxrss) its parent's high-water mark at
the moment the child was spawned (vfork, then exec: the child's accounting starts from the shared
address space). A benchmark harness that simulated a year of feed in-process holds GBs, so its
children's `wait4` peaks would report the harness, not the pipeline: the last stop measured
1,848 MB for a run whose own high-water mark was 1,127 MB. Spawned from this small process, the
command's peak is its own (and that of the descendants it reaped). Standard library only.
"""

import json
import os
import signal
import subprocess
import sys


def main() -> int:
    result_path, separator, *command = sys.argv[1:]
    if separator != "--" or not command:
        sys.exit(__doc__)
    child = subprocess.Popen(command)
    # Stop the command with the launcher (the harness's SIGTERM on a timeout, say).
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = returncode = os.waitstatus_to_exitcode(status)
    with open(result_path, "w") as out:
        json.dump(
            {"returncode": returncode, "peak_kib": usage.ru_maxrss, "cpu_s": usage.ru_utime + usage.ru_stime}, out
        )
    return returncode if returncode >= 0 else 128 - returncode


if __name__ == "__main__":
    sys.exit(main())
