"""
The ``persistence-ros`` command: one entry point, one subcommand per job.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``main(args) -> int``; modules are imported only when their subcommand runs, so ``--help`` is
fast and the core commands work without ROS installed.
"""

import argparse
import importlib
import importlib.util
import sys
from typing import List, Optional

from persistence_ros import __version__

# name -> (module, one-line help). Order is the order of --help.
SUBCOMMANDS = {
    'simulate': ('persistence_ros.simulation.command',
                 'render stereo scenes with reflections, glare and detector errors to rosbag2 + '
                 'truth.json, or build a training data set'),
    'composite': ('persistence_ros.composite.command',
                  'composite moving objects, mirror images, flares and detector clutter onto real '
                  'stereo photographs to rosbag2 + truth.json (a second scene source)'),
    'evaluate': ('persistence_ros.evaluation.command',
                 "score a run (the core pipeline with a filter, or a node's recorded tracks) "
                 'against ground truth'),
    'train': ('persistence_ros.model.command',
              'train the tokenizer or the persistence classifier'),
    'replay': ('persistence_ros.ros.replay',
               'play a bag over DDS into persistence_node and record its outputs (needs ROS 2)'),
    'bench': ('persistence_ros.tools.bench',
              'measure speed (model streaming, rendering, node) and robustness (fuzz, soak)'),
    'demo': ('persistence_ros.tools.demo',
             'the main job: simulate, run, evaluate, write a report'),
}


def _available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """Return the parser; only ``command``'s module (if given) is imported for its options."""
    parser = argparse.ArgumentParser(
        prog='persistence-ros',
        description='Clean 3D tracks of real objects from a stereo pair and a 2D detector.')
    parser.add_argument('--version', action='version', version=f'%(prog)s {__version__}')
    subparsers = parser.add_subparsers(dest='command', metavar='COMMAND')
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        if not _available(module_name):
            continue
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(_module=module_name)
        if name == command:
            importlib.import_module(module_name).add_arguments(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; return the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((arg for arg in argv if not arg.startswith('-')), None)
    try:
        parser = build_parser(command if command in SUBCOMMANDS else None)
    except ImportError as error:
        print(f'persistence-ros {command}: cannot start: {error}', file=sys.stderr)
        return 1
    args = parser.parse_args(argv)
    if not getattr(args, 'command', None):
        parser.print_help()
        return 2
    module = importlib.import_module(args._module)
    return int(module.main(args) or 0)


if __name__ == '__main__':
    sys.exit(main())
