"""MuJoCo simulation of the arm: scene from the package URDF, physics, referee, gym env.

The task itself (robot, safe set, actions, mu, starts, goals, reward, spaces) is `ssq_ros.task`,
which imports no simulator; this package adds only what needs MuJoCo or gymnasium. No ROS.
Importing this package registers the gymnasium ids `ssq_ros/ReachAvoid-v0` (discrete) and
`ssq_ros/ReachAvoidContinuous-v0` (continuous).
"""
from gymnasium.envs.registration import register, registry

for _env_id, _discrete in (('ssq_ros/ReachAvoid-v0', True),
                           ('ssq_ros/ReachAvoidContinuous-v0', False)):
    if _env_id not in registry:
        register(id=_env_id, entry_point='ssq_ros.sim.env:ReachAvoidEnv',
                 kwargs={'discrete': _discrete})
