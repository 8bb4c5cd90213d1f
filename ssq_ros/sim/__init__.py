"""MuJoCo simulation of the arm: scene from the package URDF, referee, reach-avoid task, env.

mujoco and numpy only (plus the safety layer for kinematics and actions); no ROS. Importing this
package registers the gymnasium ids `ssq_ros/ReachAvoid-v0` (discrete) and
`ssq_ros/ReachAvoidContinuous-v0` (continuous).
"""
from gymnasium.envs.registration import register, registry

for _env_id, _discrete in (('ssq_ros/ReachAvoid-v0', True),
                           ('ssq_ros/ReachAvoidContinuous-v0', False)):
    if _env_id not in registry:
        register(id=_env_id, entry_point='ssq_ros.sim.env:ReachAvoidEnv',
                 kwargs={'discrete': _discrete})
