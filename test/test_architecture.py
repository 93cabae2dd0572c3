"""The package's import graph, read from the source: no cycle, and one-way layers."""

import ast
from pathlib import Path
import subprocess
import sys

import pytest

ROOT = Path(__file__).resolve().parents[1] / 'persistence_ros'
PACKAGE = 'persistence_ros'


def _module_names():
    names = {}
    for path in sorted(ROOT.rglob('*.py')):
        parts = path.relative_to(ROOT.parent).with_suffix('').parts
        if parts[-1] == '__init__':
            parts = parts[:-1]
        names['.'.join(parts)] = path
    return names


def import_graph():
    """Return {module: {modules of the package it imports}}, lazy imports in functions too."""
    modules = _module_names()
    graph = {}
    for name, path in modules.items():
        targets = set()
        is_package = path.name == '__init__.py'
        for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
            if isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ''
                if node.level:  # relative import
                    anchor = name.split('.') if is_package else name.split('.')[:-1]
                    anchor = anchor[:len(anchor) - (node.level - 1)]
                    base = '.'.join(anchor + ([base] if base else []))
                candidates = [f'{base}.{alias.name}' for alias in node.names] + [base]
            else:
                continue
            for candidate in candidates:
                # the longest prefix that is a module of the package
                parts = candidate.split('.')
                while parts and '.'.join(parts) not in modules:
                    parts.pop()
                if parts and '.'.join(parts) != name:
                    targets.add('.'.join(parts))
        graph[name] = targets
    return graph


def find_cycle(graph):
    """Return one import cycle as a list of modules (first == last), or None."""
    state = {}
    stack = []

    def visit(node):
        state[node] = 'open'
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 'open':
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 'done'
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_cycle_finder_finds_a_cycle_and_passes_a_tree():
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b', 'c'}, 'b': {'c'}, 'c': set()}) is None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 30 and 'persistence_ros.pipeline' in graph
    assert 'persistence_ros.stereo_track' in graph['persistence_ros.pipeline']
    cycle = find_cycle(graph)
    assert cycle is None, 'import cycle: ' + ' -> '.join(cycle)


@pytest.mark.parametrize('module, must_not_reach', [
    # the base module and the features depend on no filter
    ('persistence_ros.stereo_track', ('persistence_ros.baselines', 'persistence_ros.gbdt',
                                      'persistence_ros.pipeline', 'persistence_ros.model')),
    ('persistence_ros.features', ('persistence_ros.baselines', 'persistence_ros.gbdt',
                                  'persistence_ros.filter_factory')),
    # the core never reaches up into evaluation, simulation, tools or the ROS adapters
    ('persistence_ros.pipeline', ('persistence_ros.evaluation', 'persistence_ros.simulation',
                                  'persistence_ros.tools', 'persistence_ros.ros')),
    ('persistence_ros.offline_runner', ('persistence_ros.evaluation',
                                        'persistence_ros.simulation', 'persistence_ros.ros')),
    ('persistence_ros.model.persistence_filter', ('persistence_ros.gbdt',
                                                  'persistence_ros.evaluation',
                                                  'persistence_ros.simulation')),
    ('persistence_ros.simulation.dataset', ('persistence_ros.evaluation.runner',
                                            'persistence_ros.evaluation.command',
                                            'persistence_ros.tools')),
])
def test_layers_are_one_way(module, must_not_reach):
    graph = import_graph()
    reached, todo = set(), [module]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in reached:
                reached.add(nxt)
                todo.append(nxt)
    bad = sorted(m for m in reached if any(m == b or m.startswith(b + '.')
                                           for b in must_not_reach))
    assert not bad, f'{module} reaches {bad}'


def test_importing_the_learned_filter_loads_no_scikit_learn():
    code = ('import sys, persistence_ros.model.persistence_filter, persistence_ros.pipeline, '
            'persistence_ros.filter_factory\n'
            'print(sorted(m for m in sys.modules if m.split(".")[0] == "sklearn"))')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=120, cwd='/')
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == '[]'
