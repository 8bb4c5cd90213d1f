"""Test session set-up: DDS isolated per session so parallel runs never hear each other."""
import os

# Set before anything imports rclpy; child processes (integration tests) inherit it.
os.environ.setdefault('ROS_DOMAIN_ID', str(1 + os.getpid() % 100))
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
os.environ.setdefault('MPLBACKEND', 'Agg')

# Tiny networks on a 2-core machine: a second intra-op thread costs ~8x (measured on the
# extraction tests), so the whole test session runs torch single-threaded.
import torch  # noqa: E402

torch.set_num_threads(1)
