"""``python -m persistence_ros``: the same as the ``persistence-ros`` command."""

import sys

from persistence_ros.cli import main

sys.exit(main())
