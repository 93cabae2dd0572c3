"""The ament linters (flake8 with ament's configuration, pep257) over the source tree."""

import configparser
from pathlib import Path

import ament_flake8
from ament_flake8.main import main_with_errors
from ament_pep257.main import main as pep257_main
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PATHS = [str(REPO_ROOT / name) for name in ('persistence_ros', 'test', 'launch', 'setup.py')
         if (REPO_ROOT / name).exists()]


def flake8_config(tmp_path: Path) -> Path:
    """Return ament's flake8 configuration plus this package's name for import grouping."""
    config = configparser.ConfigParser()
    config.read(Path(ament_flake8.__file__).parent / 'configuration' / 'ament_flake8.ini')
    config['flake8']['application-import-names'] = 'persistence_ros'
    # No worker processes: forking a pytest process that already loaded torch / Mesa's LLVM
    # segfaulted a flake8 worker in CI (flake8_quotes, 2026-11-23).
    config['flake8']['jobs'] = '1'
    path = tmp_path / 'flake8.ini'
    with path.open('w') as stream:
        config.write(stream)
    return path


@pytest.mark.linter
def test_flake8(tmp_path):
    rc, errors = main_with_errors(argv=['--config', str(flake8_config(tmp_path))] + PATHS)
    assert rc == 0, f'flake8 found {len(errors)} problem(s):\n' + '\n'.join(errors)


@pytest.mark.linter
def test_pep257():
    rc = pep257_main(argv=PATHS)
    assert rc == 0, 'pep257 found docstring problems (see the output above)'
