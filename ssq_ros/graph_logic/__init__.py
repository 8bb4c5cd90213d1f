"""ROS-free logic of the node graph: what the thin nodes in `ssq_ros.nodes` wrap.

`phases` (the run's phases and their text form), `transitions` (the flat, labelled layout of a
transition and of an episode summary), `behavior_loop` (mu acting on measured states, episodes,
rewards), `learner_run` (the learner's schedule, log, checkpoints, evaluation and metrics),
`monitor` (unsafe-state counts and marker colours), `episode_goal` (an episode's goal from a
real arm's measured state, for episode_server).
"""
