"""ssq-sim-demo end to end on a tiny budget: JSON numbers, PNG, clear errors."""
import json

from ssq_ros.cli.sim_demo import main


def test_demo_writes_json_and_png(tmp_path, capsys):
    assert main(['--steps', '60', '--out', str(tmp_path), '--baselines']) == 0
    result = json.loads((tmp_path / 'sim_demo.json').read_text())
    assert result['unsafe_states'] == 0 and result['min_margin'] > 0
    assert result['steps'] == 60 and result['hold_refused'] == 0
    assert set(result['baselines']) == {'unshielded', 'random_joint'}
    assert all(row['steps'] == 60 for row in result['baselines'].values())
    assert (tmp_path / 'sim_demo.png').stat().st_size > 10_000
    assert 'unsafe states 0' in capsys.readouterr().out


def test_demo_continuous(tmp_path):
    assert main(['--steps', '20', '--out', str(tmp_path), '--continuous',
                 '--referee-stride', '1']) == 0
    result = json.loads((tmp_path / 'sim_demo.json').read_text())
    assert result['unsafe_states'] == 0 and not result['discrete']
    assert result['referee_stride'] == 1


def test_demo_reports_bad_files(tmp_path, capsys):
    bad = tmp_path / 'robot.yaml'
    bad.write_text('urdf: nowhere.urdf\n')
    assert main(['--steps', '5', '--out', str(tmp_path), '--robot', str(bad)]) == 2
    assert 'ssq-sim-demo:' in capsys.readouterr().err
    assert main(['--steps', '5', '--out', str(tmp_path), '--referee-stride', '0']) == 2
    assert 'referee_stride' in capsys.readouterr().err
