"""
persistence_ros: clean 3D tracks of real objects from a stereo pair and a 2D detector.

The pure core (tracking, stereo geometry, model, simulation, evaluation) imports no ROS
client library; the ROS 2 adapters live in :mod:`persistence_ros.ros`.
"""

__version__ = '0.1.0'
