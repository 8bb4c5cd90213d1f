"""ssq-gridworld end to end with a tiny budget: JSON keys, the PNG, the table, bad input."""
import json

import pytest
import yaml

from ssq_ros.cli.gridworld import main

TINY = dict(env_steps=3000, critic_updates=150, extraction_updates=50, eval_episodes=2,
            critic=dict(hidden_sizes=[16], alpha=0.05, gamma=0.9, tau=0.1, lr=3e-3,
                        batch_size=64),
            extraction=dict(hidden_sizes=[16], batch_size=64))


def test_cli_writes_summary_json_png_and_table(tmp_path, capsys):
    config = tmp_path / 'tiny.yaml'
    config.write_text(yaml.safe_dump(TINY))
    out = tmp_path / 'run' / 'gridworld.json'
    assert main(['--seeds', '1', '--out', str(out), '--config', str(config)]) == 0
    summary = json.loads(out.read_text())
    assert summary['optimal_safe_return'] < 0
    ssq, baseline = summary['methods']['ssq'], summary['methods']['eps_greedy_q']
    assert ssq['unsafe_visits_train'] == 0 and baseline['unsafe_visits_train'] > 0
    assert {'eval_return', 'value_error'} <= set(ssq) and 'eval_return' in baseline
    assert summary['config']['env_steps'] == 3000 and len(summary['seeds']) == 1
    png = out.with_suffix('.png')
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    printed = capsys.readouterr().out
    assert 'ssq' in printed and 'eps_greedy_q' in printed and 'optimal safe return' in printed


def test_cli_rejects_bad_config_and_arguments(tmp_path, capsys):
    bad = tmp_path / 'bad.yaml'
    bad.write_text(yaml.safe_dump({'env_stepz': 10}))
    assert main(['--config', str(bad), '--out', str(tmp_path / 'x.json')]) == 2
    assert 'env_stepz' in capsys.readouterr().err
    assert main(['--slip', '1.5', '--out', str(tmp_path / 'x.json')]) == 2
    assert 'slip' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(['--seeds', '0'])
    assert not (tmp_path / 'x.json').exists()
