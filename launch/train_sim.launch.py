"""ros2 launch ssq_ros train_sim.launch.py [name:=value ...]   (--show-args lists them)

Nodes, parameters and arguments come from ssq_ros.graph.GRAPHS['train_sim'], the same
description that `ssq-launch train_sim` runs without ROS tooling.
It ends by itself when q_learner exits (training is over, metrics.json written) or when
a node fails, as `ssq-launch train_sim` does.
"""
from ssq_ros.graph import launch_description


def generate_launch_description():
    return launch_description('train_sim')
