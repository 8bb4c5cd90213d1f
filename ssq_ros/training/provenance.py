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


@cache
def code_version() -> dict[str, Any]:
    """{'code_commit': `git rev-parse HEAD` of the package's checkout, or 'unknown' outside
    one; 'code_dirty': whether tracked files differ from that commit (None when unknown)}."""
    if not (_SOURCE / '.git').exists():
        return {'code_commit': 'unknown', 'code_dirty': None}
    try:
        commit = subprocess.run(['git', '-C', str(_SOURCE), 'rev-parse', 'HEAD'],
                                capture_output=True, text=True, timeout=10, check=True)
        status = subprocess.run(['git', '-C', str(_SOURCE), 'status', '--porcelain',
                                 '--untracked-files=no'],
                                capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return {'code_commit': 'unknown', 'code_dirty': None}
    return {'code_commit': commit.stdout.strip(), 'code_dirty': bool(status.stdout.strip())}


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
