"""Test session set-up: DDS isolated per session so parallel runs never hear each other."""
import os

from ssq_ros.dds_domain import isolate_dds

# Set before anything imports rclpy; child processes (integration tests) inherit it.
isolate_dds()
os.environ.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
os.environ.setdefault('MPLBACKEND', 'Agg')

# Tiny networks on a 2-core machine: a second intra-op thread costs ~8x (measured on the
# extraction tests), so the whole test session runs torch single-threaded.
import torch  # noqa: E402

torch.set_num_threads(1)
