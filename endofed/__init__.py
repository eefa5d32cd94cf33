"""endofed: federated self-supervised 3D MRI pre-training (T1 + T2 masked image modelling) on Flower.

The installed library. Flower glue lives in the app bundle's ``server/`` and ``client/`` role packages.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("endofed")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
