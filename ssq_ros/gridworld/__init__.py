"""A cliff-walk gridworld with a known answer: the proof that the learning core is right.

Small enough to solve exactly (value iteration of the KL-regularized operator), so the learned Q,
the induced and extracted policies and their safety can be checked against the truth.
"""
