"""The task an arm learns, assembled without a simulator: robot, safe set, support check,
actions, the behavior controller mu, observation and action spaces, episode seeds and goals.

numpy, pinocchio (through the safety layer) and the learning layer's behavior policies only: this
package imports neither mujoco nor gymnasium, so every node that runs beside a real arm builds its
problem from here (`setup.build_task_problem`). `ssq_ros.sim` adds the MuJoCo scene, physics,
referee and gym env on top of the same `TaskSetup`.

    config      SimConfig (the experiment's `sim` section: physics, task, actions, behavior)
    reach_avoid ReachAvoidTask: starts, goals (train / held-out halves), reward, observation
    episodes    the env seeds of training and held-out episodes
    spaces      TaskSpaces: what a learner and an exported policy are built for
    setup       TaskSetup, TaskProblem, build_task_problem, reach_avoid_task
"""
