"""Running a learned policy: its export (`export`) and the shielded executor (`executor`).

A regular package (this file), so that setup.py's find_packages() installs it: without it a
colcon (ament_python) or non-editable pip install leaves ssq_ros.deploy out and policy_executor
and q_learner fail at import.
"""
