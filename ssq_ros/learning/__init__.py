"""The learning core: behavior policies, replay, KL-regularized critic, extraction, evaluation.

torch and numpy only; nothing here imports ROS, so every piece runs and is tested alone.
"""
