"""What an import leaves for its detail beyond EC2's shapes: each phase as the worker enters
it (with the time), and what inspection found on the boot volume. Written with the task row,
read by ``service.task_detail``."""

from __future__ import annotations

from datetime import datetime, timezone

from vmimport.db.models import ImportTask
from vmimport.inspect.model import Inspection

# A task that ran longer than this many phases (retries of many disks) keeps the first ones.
MAX_PHASES = 200


def add_phase(task: ImportTask, phase: str, disk_number: int | None) -> None:
    """Append ``phase`` to the task's list (in the caller's write session)."""
    phases = list(task.phases or [])
    if len(phases) >= MAX_PHASES:
        return
    entry = {"Phase": phase, "Time": datetime.now(timezone.utc).isoformat()}
    if disk_number is not None:
        entry["Disk"] = disk_number
    task.phases = phases + [entry]  # a new list: JSON columns see assignments, not appends


def inspection_record(inspection: Inspection) -> dict:
    """What inspection found, in the API's member names (service/task_detail.py)."""
    record = {
        "PartitionScheme": inspection.partition_scheme,
        "Partitions": [{"Number": p.number, "Start": p.start, "Size": p.size, "Type": p.type,
                        "Active": p.active, "Filesystem": p.filesystem, "Label": p.label}
                       for p in inspection.partitions],
        "OsFamily": inspection.os_family, "Distribution": inspection.distribution,
        "Version": inspection.version, "OsName": inspection.os_name,
        "Kernel": inspection.kernel, "Architecture": inspection.architecture,
        "WindowsEdition": inspection.windows_edition, "WindowsBuild": inspection.windows_build,
        "BootModes": sorted(inspection.boot_modes), "RootPartition": inspection.root_partition,
        "Encrypted": list(inspection.encrypted), "Findings": list(inspection.findings),
        "Incomplete": inspection.incomplete, "Seconds": round(inspection.seconds, 3),
    }
    return {name: value for name, value in record.items() if value not in (None, [])}
