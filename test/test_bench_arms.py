"""bench/bench_arms.py on a tiny budget (one arm), and the per-arm experiment files it runs.

Here rather than in bench/tests: it needs no bench extra, and bench/tests runs only under
`make bench`."""
import json

from bench import bench_arms
from ssq_ros.config import to_dict
from ssq_ros.paths import share_dir
from ssq_ros.safety.robot import load_robot
from ssq_ros.task.config import SimConfig, load_sim_config
from ssq_ros.training.config import load_run_config, resolve_config_file


def test_every_arm_trains_on_the_robot_and_task_its_demo_runs():
    for arm in bench_arms.ARMS.values():
        train = load_run_config(share_dir() / arm.train)
        assert resolve_config_file(train.robot).resolve() == (share_dir() / arm.robot).resolve()
        sim = load_sim_config(share_dir() / arm.sim) if arm.sim else SimConfig()
        assert to_dict(train.sim) == to_dict(sim), arm.name  # the two files kept in step
        assert load_robot(share_dir() / arm.robot).dof in (6, 7)


def test_bench_arms_smoke(tmp_path):
    out, runs = tmp_path / 'arms.json', tmp_path / 'runs'
    argv = ['--arms', 'z1', '--demo-steps', '20', '--referee-stride', '5', '--timing-states',
            '8', '--timing-rounds', '2', '--runs', str(runs), '--out', str(out)]
    assert bench_arms.main(argv) == 0
    result = json.loads(out.read_text())
    row, = result['arms']
    assert row['arm'] == 'z1' and row['dof'] == 6 and row['spheres'] == 21
    assert row['self_collision_pairs_checked'] <= row['link_pairs']
    assert row['demo']['steps'] == 20 and row['demo']['unsafe_states'] == 0
    assert not row['demo']['reused'] and (runs / 'z1' / 'sim_demo.json').is_file()
    for kind in ('support_is_safe', 'decision'):
        timing = row['timing'][kind]
        assert timing['calls'] == 8 and 0 < timing['p50_ms'] <= timing['p99_ms']
    assert row['timing']['candidates'] == 13
    assert '| z1 | 6 | 21 |' in result['table']
    assert bench_arms.main(argv + ['--reuse']) == 0  # the stored demo of the same budget
    assert json.loads(out.read_text())['arms'][0]['demo']['reused']
