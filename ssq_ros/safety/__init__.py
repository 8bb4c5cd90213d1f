"""Safety layer: robot model, kinematics, safe set, support check, end-effector actions.

numpy and pinocchio only: no ROS, no torch, no MuJoCo, so the same code runs in the trainer, in
the ROS nodes and on a robot's controller PC.
"""
