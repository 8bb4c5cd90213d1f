"""A ROS_DOMAIN_ID of its own for a test session or a benchmark on a shared machine.

Integration tests and benchmarks run real nodes over DDS with discovery kept on localhost; two
sessions on one machine that pick the same domain would hear each other's topics. Each domain
id here is taken by holding an exclusive lock on a file named after it, so concurrent sessions
(and CI beside a developer's run) always get different ids; the lock goes with the process.
"""
from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

# ROS 2 advises 0-101 on Linux (higher ids can collide with ephemeral ports); 0 is everyone's.
FIRST_ID, LAST_ID = 1, 101
_held: list = []  # open lock files: the ids this process holds until it exits


def reserve_domain_id(lock_dir: str | Path | None = None) -> int:
    """A domain id in [FIRST_ID, LAST_ID] that no other live process reserved; RuntimeError
    when all are taken. Starts the search at this process's id to spread sessions out."""
    folder = Path(lock_dir or tempfile.gettempdir())
    count = LAST_ID - FIRST_ID + 1
    for offset in range(count):
        domain = FIRST_ID + (os.getpid() + offset) % count
        handle = open(folder / f'ssq_ros-ros-domain-{domain}.lock', 'a')
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        _held.append(handle)
        return domain
    raise RuntimeError(f'every ROS domain id {FIRST_ID}-{LAST_ID} is held by another process '
                       f'(lock files ssq_ros-ros-domain-*.lock in {folder})')


def isolate_dds() -> int:
    """Use a reserved domain id (unless ROS_DOMAIN_ID is set already) and localhost-only
    discovery, for this process and the nodes it starts; the domain id."""
    if 'ROS_DOMAIN_ID' not in os.environ:
        os.environ['ROS_DOMAIN_ID'] = str(reserve_domain_id())
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    return int(os.environ['ROS_DOMAIN_ID'])
