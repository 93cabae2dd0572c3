"""Launch persistence_node (lifecycle node; it configures and activates itself)."""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode


def generate_launch_description():
    """Return the launch description (arguments: see DeclareLaunchArgument below)."""
    share = get_package_share_directory('persistence_ros')
    arguments = [
        DeclareLaunchArgument('namespace', default_value='stereo',
                              description='namespace: inputs are NS/left/..., NS/right/...'),
        DeclareLaunchArgument('params_file',
                              default_value=os.path.join(share, 'config', 'persistence.yaml'),
                              description='node parameters file'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='use /clock (bag replay)'),
        DeclareLaunchArgument('device', default_value='',
                              description='model device: auto, cpu or cuda (empty: the '
                                          "params file's model.device)"),
        DeclareLaunchArgument('left_image', default_value='left/image_raw'),
        DeclareLaunchArgument('right_image', default_value='right/image_raw'),
        DeclareLaunchArgument('left_detections', default_value='left/detections'),
        DeclareLaunchArgument('right_detections', default_value='right/detections'),
        DeclareLaunchArgument('left_camera_info', default_value='left/camera_info'),
        DeclareLaunchArgument('right_camera_info', default_value='right/camera_info'),
    ]
    return LaunchDescription(arguments + [OpaqueFunction(function=_node)])


def _node(context):
    # Overrides given here win over the params file: only pass device when it was given.
    overrides = {'use_sim_time': LaunchConfiguration('use_sim_time')}
    device = LaunchConfiguration('device').perform(context)
    if device:
        overrides['model.device'] = device
    return [LifecycleNode(
        package='persistence_ros', executable='persistence_node', name='persistence_node',
        namespace=LaunchConfiguration('namespace'), output='screen',
        parameters=[LaunchConfiguration('params_file'), overrides],
        # images.transport compressed subscribes to <image>/compressed (image_transport's
        # name): remapped along with the raw topic
        remappings=[('left/image_raw', LaunchConfiguration('left_image')),
                    ('right/image_raw', LaunchConfiguration('right_image')),
                    ('left/image_raw/compressed', [LaunchConfiguration('left_image'),
                                                   '/compressed']),
                    ('right/image_raw/compressed', [LaunchConfiguration('right_image'),
                                                    '/compressed']),
                    ('left/detections', LaunchConfiguration('left_detections')),
                    ('right/detections', LaunchConfiguration('right_detections')),
                    ('left/camera_info', LaunchConfiguration('left_camera_info')),
                    ('right/camera_info', LaunchConfiguration('right_camera_info'))])]
