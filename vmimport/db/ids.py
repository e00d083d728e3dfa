"""Resource ids in EC2's current form: a prefix and 17 lower-case hex digits."""

import re
import secrets

PREFIXES = {
    "import-image-task": "import-ami",
    "import-snapshot-task": "import-snap",
    "export-image-task": "export-ami",
    "image": "ami",
    "snapshot": "snap",
}


def new_id(resource_type: str) -> str:
    return f"{PREFIXES[resource_type]}-{secrets.token_hex(9)[:17]}"


_PATTERN = re.compile(r"^(import-ami|import-snap|export-ami|ami|snap)-[0-9a-f]{8,17}$")


def resource_type_of(resource_id: str) -> str | None:
    """The tagging ResourceType of an id we issue, or None if it is not one of ours."""
    m = _PATTERN.match(resource_id)
    if not m:
        return None
    return {v: k for k, v in PREFIXES.items()}[m.group(1)]
