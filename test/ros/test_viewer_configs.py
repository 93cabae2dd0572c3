"""The shipped viewer configurations name the node's real topics, QoS and frame."""

import ast
import json
from pathlib import Path
import time

import pytest
import rclpy
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy
import yaml

from persistence_ros.ros import messages
from persistence_ros.ros.persistence_node import NODE_NAME, PersistenceNode
from persistence_ros.ros.replay import DEFAULT_NAMESPACE
from persistence_ros.simulation.generate import FRAME_IDS

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parents[2]
FOXGLOVE_LAYOUT = ROOT / 'config' / 'foxglove_layout.json'
RVIZ_CONFIG = ROOT / 'config' / 'persistence.rviz'
# Publishers every (lifecycle) node has; not outputs to show.
INFRASTRUCTURE = {'/rosout', '/parameter_events'}
# The data a viewer can draw, by message type; TrackArray is the package's own message.
DRAWN = {'sensor_msgs/msg/PointCloud2', 'visualization_msgs/msg/MarkerArray',
         'sensor_msgs/msg/Image', 'diagnostic_msgs/msg/DiagnosticArray'}


def _launch_namespace() -> str:
    tree = ast.parse((ROOT / 'launch' / 'persistence.launch.py').read_text())
    for call in ast.walk(tree):
        if (isinstance(call, ast.Call) and getattr(call.func, 'id', '') == 'DeclareLaunchArgument'
                and ast.literal_eval(call.args[0]) == 'namespace'):
            default = next(k.value for k in call.keywords if k.arg == 'default_value')
            return '/' + ast.literal_eval(default).strip('/')
    raise AssertionError('launch/persistence.launch.py declares no namespace argument')


@pytest.fixture(scope='module')
def node_outputs():
    """Return the configured node's drawable outputs {topic: (type, qos)} and status id."""
    namespace = _launch_namespace()
    assert namespace == DEFAULT_NAMESPACE   # replay and launch run the node in one namespace
    context = rclpy.Context()
    rclpy.init(context=context)
    node = PersistenceNode(context=context, namespace=namespace, parameter_overrides=[
        Parameter('filter.name', value='stereo'), Parameter('publish.debug_image', value=True)])
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        deadline = time.monotonic() + 10.0
        while True:   # the node's own publishers reach its graph cache asynchronously
            found = dict(node.get_publisher_names_and_types_by_node(NODE_NAME, namespace))
            if any(t.endswith('/cameras') for t in found) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        outputs = {}
        for topic, types in found.items():
            if topic in INFRASTRUCTURE or topic.endswith('/transition_event'):
                continue
            (info,) = node.get_publishers_info_by_topic(topic)
            outputs[topic] = (types[0], info.qos_profile)
        yield outputs, node.diagnostic_status_id()
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def _drawn(outputs, msgtype):
    return {topic for topic, (kind, _) in outputs.items() if kind == msgtype}


def test_node_outputs_are_the_expected_ones(node_outputs):
    outputs, _ = node_outputs
    ns = f'{DEFAULT_NAMESPACE}/{NODE_NAME}'
    assert set(outputs) == {f'{ns}/points', f'{ns}/markers', f'{ns}/cameras', f'{ns}/tracks',
                            f'{ns}/debug_image', '/diagnostics'}
    assert outputs[f'{ns}/cameras'][1].durability == DurabilityPolicy.TRANSIENT_LOCAL


def test_foxglove_layout_shows_every_output_in_the_left_optical_frame(node_outputs):
    outputs, (status_name, hardware_id) = node_outputs
    layout = json.loads(FOXGLOVE_LAYOUT.read_text())
    assert {'configById', 'layout', 'globalVariables', 'userNodes', 'playbackConfig'} <= set(
        layout)   # the LayoutData Foxglove's "Import layout" reads
    panels = layout['configById']

    def leaves(node):
        return ([node] if isinstance(node, str)
                else leaves(node['first']) + leaves(node['second']))
    assert sorted(leaves(layout['layout'])) == sorted(panels)   # every panel placed once
    (three_d,) = [c for k, c in panels.items() if k.startswith('3D!')]
    assert three_d['followTf'] == FRAME_IDS['left']
    visible = {t for t, c in three_d['topics'].items() if c.get('visible')}
    assert visible == (_drawn(outputs, 'sensor_msgs/msg/PointCloud2')
                       | _drawn(outputs, 'visualization_msgs/msg/MarkerArray'))
    (image,) = [c for k, c in panels.items() if k.startswith('ImageViewPanel!')]
    assert {image['cameraTopic']} == _drawn(outputs, 'sensor_msgs/msg/Image')
    (status,) = [c for k, c in panels.items() if k.startswith('DiagnosticStatusPanel!')]
    assert {status['topicToRender']} == _drawn(outputs, 'diagnostic_msgs/msg/DiagnosticArray')
    assert (status['selectedName'], status['selectedHardwareId']) == (status_name, hardware_id)
    # every topic the layout names is one the node publishes
    named = set(three_d['topics']) | {image['cameraTopic'], status['topicToRender']}
    assert named <= set(outputs)


def test_rviz_config_shows_every_output_with_its_qos(node_outputs):
    outputs, _ = node_outputs
    rviz = yaml.safe_load(RVIZ_CONFIG.read_text())
    manager = rviz['Visualization Manager']
    assert manager['Global Options']['Fixed Frame'] == FRAME_IDS['left']
    displays = [d for d in manager['Displays'] if 'Topic' in d]
    classes = {'rviz_default_plugins/PointCloud2': 'sensor_msgs/msg/PointCloud2',
               'rviz_default_plugins/MarkerArray': 'visualization_msgs/msg/MarkerArray',
               'rviz_default_plugins/Image': 'sensor_msgs/msg/Image'}
    shown = {}
    for display in displays:
        topic = display['Topic']['Value']
        shown[topic] = display
        if topic in outputs:   # the node's outputs, with the type and QoS it publishes
            kind, qos = outputs[topic]
            assert classes[display['Class']] == kind, topic
            durability = display['Topic']['Durability Policy']
            latched = qos.durability == DurabilityPolicy.TRANSIENT_LOCAL
            assert durability == ('Transient Local' if latched else 'Volatile'), topic
        else:   # otherwise one of the node's inputs (the raw left image)
            assert topic == f'{DEFAULT_NAMESPACE}/left/image_raw', topic
    for msgtype in classes.values():
        assert _drawn(outputs, msgtype) <= set(shown), msgtype
    marker_displays = [d for d in displays if d['Class'] == 'rviz_default_plugins/MarkerArray']
    namespaces = set().union(*(d.get('Namespaces', {}) for d in marker_displays))
    assert namespaces == set(messages.MARKER_NAMESPACES) | {messages.CAMERA_NAMESPACE}
