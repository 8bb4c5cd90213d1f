"""What a result was produced with: the code's git commit and the resolved config's hash.

Every metrics.json and every benchmark results JSON carries `provenance(config)`, so a number can
be traced to the code and the exact settings that produced it.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

from ssq_ros.config import to_dict

# The repository the package's code lives in (a source checkout), if it is one.
_SOURCE = Path(__file__).resolve().parents[2]
# Tracked files that cannot change a result: prose and the results files themselves (editing a
# page while a benchmark starts must not mark its records as made by uncommitted code).
_NOT_CODE = ('docs/', 'bench/results/')


def is_code(path: str) -> bool:
    """Whether a tracked file (a path relative to the checkout) can change what runs."""
    return not (path.endswith('.md') or path.startswith(_NOT_CODE))


@cache
def code_version() -> dict[str, Any]:
    """{'code_commit': `git rev-parse HEAD` of the package's checkout, or 'unknown' outside
    one; 'code_dirty': whether tracked files that can change what runs (`is_code`) differ
    from that commit (None when unknown)}."""
    if not (_SOURCE / '.git').exists():
        return {'code_commit': 'unknown', 'code_dirty': None}
    try:
        commit = subprocess.run(['git', '-C', str(_SOURCE), 'rev-parse', 'HEAD'],
                                capture_output=True, text=True, timeout=10, check=True)
        changed = subprocess.run(['git', '-C', str(_SOURCE), 'diff', 'HEAD', '--name-only'],
                                 capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return {'code_commit': 'unknown', 'code_dirty': None}
    return {'code_commit': commit.stdout.strip(),
            'code_dirty': any(is_code(path) for path in changed.stdout.splitlines())}


def config_hash(config: Any) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces) of a config dataclass or mapping."""
    text = json.dumps(to_dict(config), sort_keys=True, separators=(',', ':'))
    return hashlib.sha256(text.encode()).hexdigest()


def provenance(config: Any = None) -> dict[str, Any]:
    """code_commit, code_dirty and, given a (resolved) config, config_sha256."""
    out = dict(code_version())
    if config is not None:
        out['config_sha256'] = config_hash(config)
    return out
