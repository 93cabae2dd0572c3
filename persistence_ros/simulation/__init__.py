"""MuJoCo stereo scenes, a classical detector, rosbag2 + truth.json output and data sets."""
