"""
Process environment that keeps DDS on this machine.

Every process the package starts for ROS (tests, replay, demo) calls :func:`local_dds_env` or
:func:`apply_local_dds_env` before rclpy is initialised.
"""

import os
from pathlib import Path
import sys
from typing import Dict, Optional


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
