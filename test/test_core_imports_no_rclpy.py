"""The pure core never imports rclpy or ROS message packages (statically and at run time)."""

import ast
from pathlib import Path
import subprocess
import sys

import persistence_ros

PACKAGE_DIR = Path(persistence_ros.__file__).resolve().parent
ADAPTER_DIRS = ('ros', 'msg')
FORBIDDEN = ('rclpy', 'rosidl_runtime_py', 'message_filters', 'launch', 'launch_ros',
             'sensor_msgs', 'std_msgs', 'geometry_msgs', 'builtin_interfaces',
             'visualization_msgs', 'diagnostic_msgs', 'lifecycle_msgs', 'persistence_ros.msg',
             'persistence_ros.ros')


def core_modules():
    for path in sorted(PACKAGE_DIR.rglob('*.py')):
        relative = path.relative_to(PACKAGE_DIR)
        if relative.parts[0] in ADAPTER_DIRS:
            continue
        yield path, relative


def imported_names(path: Path):
    tree = ast.parse(path.read_text(encoding='utf-8'))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
            yield from (f'{node.module}.{alias.name}' for alias in node.names)


def is_forbidden(name: str) -> bool:
    return any(name == bad or name.startswith(bad + '.') for bad in FORBIDDEN)


def test_core_sources_import_no_ros():
    modules = list(core_modules())
    assert len(modules) >= 5, f'expected the core modules under {PACKAGE_DIR}'
    offenders = [f'{relative}: {name}' for path, relative in modules
                 for name in imported_names(path) if is_forbidden(name)]
    assert not offenders, 'core modules import ROS:\n' + '\n'.join(offenders)


def test_importing_every_core_module_loads_no_rclpy():
    names = ['persistence_ros.' + '.'.join(relative.with_suffix('').parts)
             for _, relative in core_modules() if relative.name != '__main__.py']
    names = [name[:-len('.__init__')] if name.endswith('.__init__') else name for name in names]
    code = ('import importlib, sys\n'
            f'forbidden = {list(FORBIDDEN)!r}\n'
            f'for name in {names!r}:\n'
            '    importlib.import_module(name)\n'
            'loaded = sorted(m for m in sys.modules\n'
            '                if any(m == bad or m.startswith(bad + ".") for bad in forbidden))\n'
            'print("LOADED", loaded)\n'
            'sys.exit(1 if loaded else 0)\n')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=300, cwd='/')
    assert result.returncode == 0, result.stdout + result.stderr
