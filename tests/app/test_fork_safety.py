"""A pool child is never forked while another thread of the worker is inside a name lookup
(app/worker/fork_safety.py): it would inherit glibc's resolver lock held and hang on its first."""

from __future__ import annotations

import subprocess
import sys

# The lookup stands in for glibc's (which cannot be made to block on purpose): it waits until a
# timer lets it go. The main thread forks while it is inside; the order of the two events shows
# whether the fork waited for the lookup to finish.
PROGRAM = """
import os, socket, threading
from app.worker import fork_safety

inside, leave, events = threading.Event(), threading.Event(), []

def lookup(*args, **kwargs):
    inside.set()
    leave.wait()
    events.append("lookup finished")
    return []

socket.getaddrinfo = lookup
if GUARD:
    fork_safety.guard_name_lookups()
threading.Thread(target=socket.getaddrinfo, args=("postgres", 5432)).start()
inside.wait()
threading.Timer(0.5, leave.set).start()
pid = os.fork()
if pid == 0:
    os._exit(0)
events.append("forked")
os.waitpid(pid, 0)
print(",".join(events) if len(events) == 2 else ",".join(events + ["lookup finished"]))
"""


def run(guard: bool) -> str:
    completed = subprocess.run(
        [sys.executable, "-c", f"GUARD = {guard}\n{PROGRAM}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return completed.stdout.strip()


def test_a_fork_waits_for_the_lookup_in_progress() -> None:
    assert run(guard=True) == "lookup finished,forked"


def test_without_the_guard_the_fork_happens_inside_the_lookup() -> None:
    # What the guard prevents: the control that shows the test above can fail.
    assert run(guard=False) == "forked,lookup finished"
