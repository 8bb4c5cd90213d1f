"""ros2 launch ssq_ros deploy_hw.launch.py [name:=value ...]   (--show-args lists them)

Nodes, parameters and arguments come from ssq_ros.graph.GRAPHS['deploy_hw'], the same
description that `ssq-launch deploy_hw` runs without ROS tooling.
It runs until Ctrl-C (with train_on_robot:=true, until q_learner exits); a node that fails
ends it, as in `ssq-launch deploy_hw`; only q_learner is respawned after a crash (nothing that
commands or guards the arm: docs/topics.md, "Faults").
"""
from ssq_ros.graph import launch_description


def generate_launch_description():
    return launch_description('deploy_hw')
