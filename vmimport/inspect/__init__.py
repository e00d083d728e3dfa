"""The pipeline's ``inspect`` box: what is on the boot disk, and what the import decides from it.

``inspect_disk`` reads the partition table and filesystems (through the dissect packages) and
reports the operating system, architecture and boot modes; ``decide`` applies AWS's rules to that
and to the user's requested values, raising ``ImportFailure`` with AWS's wording when refusing.
Rules and sources: ``reference/os-inspection.md``.
"""

from vmimport.inspect.decide import decide
from vmimport.inspect.inspector import inspect_disk
from vmimport.inspect.model import Decision, Inspection, PartitionInfo

__all__ = ["Decision", "Inspection", "PartitionInfo", "decide", "inspect_disk"]
