"""ros2 launch ssq_ros deploy_sim.launch.py [name:=value ...]   (--show-args lists them)

Nodes, parameters and arguments come from ssq_ros.graph.GRAPHS['deploy_sim'], the same
description that `ssq-launch deploy_sim` runs without ROS tooling.
It runs until Ctrl-C; a node that fails ends it, as in `ssq-launch deploy_sim`.
"""
from ssq_ros.graph import launch_description


def generate_launch_description():
    return launch_description('deploy_sim')
