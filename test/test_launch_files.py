"""Launch files, checked statically (launch/launch_ros are not installable from PyPI)."""

import ast
from pathlib import Path
import re

import pytest

from persistence_ros.ros.parameters import DEFAULTS

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((ROOT / 'launch').glob('*.launch.py'))
# Parameters every ROS 2 node has besides the node's own table.
BUILTIN_PARAMETERS = {'use_sim_time'}


def _calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, 'id', getattr(n.func, 'attr', None)) == name]


def _kw(call, name):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _installed_executables():
    cmake = (ROOT / 'CMakeLists.txt').read_text()
    found = set()
    for match in re.finditer(r'foreach\(_script ([^)]*)\)(.*?)endforeach', cmake, re.S):
        if 'DESTINATION lib/${PROJECT_NAME}' in match.group(2):
            found.update(match.group(1).split())
    return found


def test_there_are_launch_files():
    assert {p.name for p in LAUNCH_FILES} == {'persistence.launch.py', 'replay.launch.py'}


@pytest.mark.parametrize('path', LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_is_consistent_with_the_package(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert 'generate_launch_description' in functions
    nodes = _calls(tree, 'Node') + _calls(tree, 'LifecycleNode')
    assert nodes
    executables = _installed_executables()
    assert 'persistence_node' in executables
    for node in nodes:
        package = ast.literal_eval(_kw(node, 'package'))
        executable = ast.literal_eval(_kw(node, 'executable'))
        if package == 'persistence_ros':
            assert executable in executables
            for params in ast.walk(_kw(node, 'parameters')):
                if isinstance(params, ast.Dict):
                    for key in params.keys:
                        name = ast.literal_eval(key)
                        assert name in DEFAULTS or name in BUILTIN_PARAMETERS, name
        else:   # other packages' nodes: rviz2 only, with the package's RViz config
            assert (package, executable) == ('rviz2', 'rviz2')
    for item in ast.walk(tree):  # overrides added to a dict: overrides['name'] = ...
        if isinstance(item, ast.Assign) and isinstance(item.targets[0], ast.Subscript):
            name = ast.literal_eval(item.targets[0].slice)
            assert name in DEFAULTS or name in BUILTIN_PARAMETERS, name
    # Every file joined below the package share exists in the source tree.
    for call in _calls(tree, 'join'):
        parts = [a.value for a in call.args if isinstance(a, ast.Constant)]
        if parts and parts[0] in ('config', 'launch'):
            assert (ROOT.joinpath(*parts)).is_file(), parts
            assert (ROOT / 'CMakeLists.txt').read_text().count(parts[0]) > 0


def test_device_argument_overrides_the_params_file_only_when_given():
    # A launch argument's default would win over the params file's model.device.
    tree = ast.parse((ROOT / 'launch' / 'persistence.launch.py').read_text())
    (device,) = [c for c in _calls(tree, 'DeclareLaunchArgument')
                 if ast.literal_eval(c.args[0]) == 'device']
    assert ast.literal_eval(_kw(device, 'default_value')) == ''
    (guarded,) = [n for n in ast.walk(tree) if isinstance(n, ast.If)
                  and ast.unparse(n.test) == 'device']
    assert ast.unparse(guarded.body[0]) == "overrides['model.device'] = device"


def test_replay_launch_plays_with_clock_and_uses_sim_time():
    source = (ROOT / 'launch' / 'replay.launch.py').read_text()
    tree = ast.parse(source)
    (play,) = _calls(tree, 'ExecuteProcess')
    cmd = [ast.literal_eval(e) for e in _kw(play, 'cmd').elts if isinstance(e, ast.Constant)]
    assert cmd[:4] == ['ros2', 'bag', 'play', '--clock']
    assert "'use_sim_time': 'true'" in source and 'persistence.rviz' in source
