"""Adapters that put the libraries a team would pick instead of ssq_ros on the same task.

`common` and `ssq` need only ssq_ros; `sb3_sac` needs stable-baselines3 and `d3rlpy_offline`
needs d3rlpy (the optional `bench` extra). Every method is trained on the reach-avoid env of
`ssq_ros.sim` with the same episode seeds and step budget, and judged by the same referee.
"""
