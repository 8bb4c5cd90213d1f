"""Controllers that act on the arm: the safe behavior controller mu (numpy + pinocchio, no ROS)."""
