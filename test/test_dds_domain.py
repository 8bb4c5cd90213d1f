"""Concurrent sessions on one machine get different ROS domain ids."""
import subprocess
import sys

import pytest

from ssq_ros import dds_domain


def test_held_ids_are_not_given_again_until_released(tmp_path, monkeypatch):
    monkeypatch.setattr(dds_domain, 'FIRST_ID', 7)
    monkeypatch.setattr(dds_domain, 'LAST_ID', 9)
    mine = {dds_domain.reserve_domain_id(tmp_path), dds_domain.reserve_domain_id(tmp_path)}
    assert len(mine) == 2 and mine <= {7, 8, 9}
    # Another process gets the one id left, whatever its pid suggests.
    script = ('import sys; from ssq_ros import dds_domain as d; d.FIRST_ID, d.LAST_ID = 7, 9; '
              f'print(d.reserve_domain_id({str(tmp_path)!r}))')
    other = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                           check=True)
    assert int(other.stdout) == ({7, 8, 9} - mine).pop()
    # That process has exited, so its id is free again; with all three held, none is left.
    dds_domain.reserve_domain_id(tmp_path)
    with pytest.raises(RuntimeError, match='every ROS domain id 7-9 is held'):
        dds_domain.reserve_domain_id(tmp_path)
