"""vmimport: a self-hosted, EC2-compatible VM Import/Export service."""

from importlib import metadata

try:
    __version__ = metadata.version("vmimport")
except metadata.PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0+unknown"
