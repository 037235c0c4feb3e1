"""Library behind the Ray workflow scripts: clusters, addresses, jobs and sweeps for Isaac Lab.

The package sits next to the scripts and is imported from there, so it works without
installation, inside ``ray job submit --working-dir .`` and under ``./isaaclab.sh -p``.
"""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
