"""Where the package's data (config/, urdf/, launch/, rviz/) lives: the source tree or share/."""
from __future__ import annotations

from functools import cache
from pathlib import Path

PACKAGE = 'ssq_ros'


@cache
def share_dir() -> Path:
    """The folder holding config/, urdf/, launch/ and rviz/.

    A source checkout (pip -e, colcon --symlink-install, running from the repository) wins, so
    an edited config is what runs; otherwise the installed share/ssq_ros from the ament index.
    """
    source = Path(__file__).resolve().parents[1]
    if (source / 'config').is_dir() and (source / 'package.xml').is_file():
        return source
    try:
        from ament_index_python.packages import get_package_share_directory
    except ImportError as exc:  # pragma: no cover - a broken install, not a user error
        raise FileNotFoundError(f'{PACKAGE}: no source tree beside the code and no ament '
                                'index to find share/ssq_ros') from exc
    return Path(get_package_share_directory(PACKAGE))


def config_path(name: str) -> Path:
    return share_dir() / 'config' / name


def urdf_path(name: str) -> Path:
    return share_dir() / 'urdf' / name
