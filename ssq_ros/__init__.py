"""Safe-Support Q-Learning for manipulators, as a ROS 2 package with a ROS-free core."""
