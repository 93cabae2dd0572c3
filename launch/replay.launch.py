"""Play a bag (ros2 bag play --clock) into persistence_node and show it in RViz."""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    """Return the launch description: bag player, the node (sim time) and rviz2."""
    share = get_package_share_directory('persistence_ros')
    arguments = [
        DeclareLaunchArgument('bag', description='rosbag2 directory (e.g. from '
                                                 'persistence-ros simulate)'),
        DeclareLaunchArgument('rate', default_value='1.0', description='playback rate'),
        DeclareLaunchArgument('params_file',
                              default_value=os.path.join(share, 'config', 'persistence.yaml')),
        DeclareLaunchArgument('rviz', default_value='true'),
    ]
    node = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, 'launch', 'persistence.launch.py')),
        launch_arguments={'use_sim_time': 'true',
                          'params_file': LaunchConfiguration('params_file')}.items())
    player = ExecuteProcess(
        cmd=['ros2', 'bag', 'play', '--clock', '--rate', LaunchConfiguration('rate'),
             LaunchConfiguration('bag')],
        output='screen')
    rviz = Node(package='rviz2', executable='rviz2', name='rviz2',
                arguments=['-d', os.path.join(share, 'config', 'persistence.rviz')],
                parameters=[{'use_sim_time': True}],
                condition=IfCondition(LaunchConfiguration('rviz')))
    return LaunchDescription(arguments + [node, player, rviz])
