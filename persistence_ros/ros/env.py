"""
Process environment that keeps DDS on this machine.

Every process the package starts for ROS (tests, replay, demo) calls :func:`local_dds_env` or
:func:`apply_local_dds_env` before rclpy is initialised.
"""

import os
from pathlib import Path
import sys
from typing import Dict, Iterable, List, Optional, Set

SHARED_MEMORY_DIR = Path('/dev/shm')
FASTDDS_PREFIXES = ('fastdds_', 'fast_datasharing_')


def fastdds_profile_path() -> Optional[Path]:
    """Return the package's Fast DDS profile (config/fastdds.xml), installed or in the source."""
    here = Path(__file__).resolve()
    candidates = [Path(sys.prefix) / 'share' / 'persistence_ros' / 'config' / 'fastdds.xml',
                  here.parents[2] / 'config' / 'fastdds.xml']
    try:
        from ament_index_python.packages import get_package_share_directory
        candidates.insert(0, Path(get_package_share_directory('persistence_ros'))
                          / 'config' / 'fastdds.xml')
    except (ImportError, LookupError, OSError, ValueError):
        pass
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


def local_dds_env(domain_id: Optional[int] = None, log_dir: Optional[str] = None,
                  base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Return a copy of the environment with localhost-only discovery and the shm profile."""
    env = dict(os.environ if base is None else base)
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    profile = fastdds_profile_path()
    if profile is not None:
        env.setdefault('FASTDDS_DEFAULT_PROFILES_FILE', str(profile))
    if domain_id is not None:
        env['ROS_DOMAIN_ID'] = str(int(domain_id))
    if log_dir is not None:
        env['ROS_LOG_DIR'] = str(log_dir)
    return env


def apply_local_dds_env(domain_id: Optional[int] = None, log_dir: Optional[str] = None) -> None:
    """Apply :func:`local_dds_env` to this process (call before rclpy.init)."""
    os.environ.update(local_dds_env(domain_id=domain_id, log_dir=log_dir))


def fastdds_segments(folder: Path = SHARED_MEMORY_DIR) -> Set[str]:
    """
    Return the names of this user's Fast DDS shared-memory segments in ``folder``.

    Segments only: their ``_el`` lock files and the ``sem.*`` semaphores beside them are left
    out. Empty where the folder does not exist (no POSIX shared memory).
    """
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return set()
    uid = os.getuid()
    names = set()
    for entry in entries:
        if entry.name.startswith(FASTDDS_PREFIXES) and not entry.name.endswith('_el'):
            try:
                if entry.stat().st_uid == uid:
                    names.add(entry.name)
            except OSError:  # removed meanwhile
                pass
    return names


def unmapped_segments(names: Iterable[str], folder: Path = SHARED_MEMORY_DIR) -> Set[str]:
    """
    Return those of ``names`` that still exist and that no process (whose maps we may read) maps.

    A Fast DDS participant maps its segments while it lives and removes them when it is
    deleted; one that exists with no process mapping it was left by a participant that was
    never deleted (a killed process, or one whose context was never finalized).
    Hand-written: Fast DDS's own check (``fastdds shm clean``) is not on PyPI.
    """
    wanted = {name for name in names if (folder / name).exists()}
    if not wanted:
        return set()
    prefix = str(folder).rstrip('/') + '/'
    mapped = set()
    for maps in Path('/proc').glob('[0-9]*/maps'):
        try:
            text = maps.read_text()
        except OSError:  # gone, or another user's
            continue
        for line in text.splitlines():
            at = line.find(prefix)
            if at >= 0:
                mapped.add(line[at + len(prefix):].split(' ')[0])
    return wanted - mapped


def segments_left_since(before: Set[str]) -> List[str]:
    """Return, sorted, the Fast DDS segments created since ``before`` that nobody maps now."""
    return sorted(unmapped_segments(fastdds_segments() - before))
