"""ros2 launch ssq_ros train_sim.launch.py [name:=value ...]   (--show-args lists them)

Nodes, parameters and arguments come from ssq_ros.graph.GRAPHS['train_sim'], the same
description that `ssq-launch train_sim` runs without ROS tooling.
It ends by itself when q_learner exits (training is over, metrics.json written). A node that
crashes is respawned 1 s later (launch_ros's respawn, at most 3 times; the crash after that
ends the launch), as `ssq-launch train_sim` does (docs/topics.md, "Faults").
"""
from ssq_ros.graph import launch_description


def generate_launch_description():
    return launch_description('train_sim')
