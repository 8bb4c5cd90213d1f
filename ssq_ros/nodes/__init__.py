"""Thin rclpy nodes: message conversion and wiring around the ROS-free layers."""
