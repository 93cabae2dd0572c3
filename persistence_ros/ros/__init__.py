"""ROS 2 adapters: nodes, message conversions and process environment (these import rclpy)."""
