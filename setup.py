"""
Plain ``pip install -e .`` of the pure-Python core (training, simulation, evaluation).

The ROS 2 build is the ament_cmake one (CMakeLists.txt): it generates the messages and installs
this same package beside them. This file installs only the Python modules and the
``persistence-ros`` command, for machines without ROS (e.g. a GPU box for training); the ROS
adapters (``persistence_ros.ros``) need a ROS 2 install.
"""

from setuptools import find_packages, setup

setup(
    name='persistence_ros',
    version='0.1.0',
    description='Clean 3D tracks of real objects from a stereo pair and a 2D detector',
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=find_packages(include=['persistence_ros', 'persistence_ros.*']),
    package_data={'persistence_ros': ['model/weights/*.safetensors', 'model/weights/*.json',
                                      'model/weights/*.npz',
                                      'model/configs/*.yaml']},
    install_requires=[
        'numpy', 'scipy', 'opencv-python-headless<5', 'PyYAML', 'torch', 'torchvision',
        'safetensors', 'vector-quantize-pytorch', 'rosbags', 'mcap', 'mcap-ros2-support',
        'mujoco', 'scikit-image', 'scikit-learn', 'matplotlib', 'tqdm', 'rich',
    ],
    entry_points={'console_scripts': ['persistence-ros = persistence_ros.cli:main']},
)
