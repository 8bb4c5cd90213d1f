"""The peer adapters (SB3 SAC, d3rlpy IQL/CQL) train and evaluate; needs the bench extra, so
`make bench` runs it before the benchmark and `make test` does not collect it."""
import json

import pytest

from bench import bench_peers
from bench.peers.ssq import tiny_ssq_config


@pytest.fixture(scope='module')
def tiny_config(tmp_path_factory):
    return tiny_ssq_config(tmp_path_factory.mktemp('bench'), 40)


def test_peer_adapters_train_and_evaluate(tiny_config, tmp_path):
    out = tmp_path / 'peers.json'
    assert bench_peers.main(['--methods', 'sac_penalized', 'sac_shielded', 'dqn_shielded', 'iql',
                             'discrete_cql',
                             '--steps', '100', '--eval-episodes', '1',
                             '--offline-updates', '5', '--ssq-config', tiny_config,
                             '--runs', str(tmp_path / 'runs'), '--out', str(out),
                             '--no-progress']) == 0
    result = json.loads(out.read_text())
    rows = {row['method']: row for row in result['table']}
    assert set(rows) == {'sac_penalized', 'sac_shielded', 'dqn_shielded', 'iql', 'discrete_cql'}
    assert rows['sac_penalized']['env_steps_train'] == 100
    sac = next(r for r in result['runs'] if r['method'] == 'sac_penalized')
    assert sac['training']['curve']['unsafe_cumulative'][-1] == \
        sac['training']['unsafe_states_train']
    assert sac['value_calibration_error'] is not None
    for method in ('sac_shielded', 'dqn_shielded'):
        shielded = next(r for r in result['runs'] if r['method'] == method)
        assert shielded['training']['unsafe_states_train'] == 0  # behind mu's support
        assert shielded['training']['shield_interventions_train'] > 0  # its actions replaced
        assert rows[method]['unsafe_eval_shielded'] == 0
    for method in ('iql', 'discrete_cql'):
        assert rows[method]['unsafe_train'] == 0  # the data came from the safe behavior
        assert rows[method]['unsafe_eval_shielded'] == 0
