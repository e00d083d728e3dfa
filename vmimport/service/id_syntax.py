"""EC2's id syntax checks: an id that cannot be one (``ami-zz``) is ``*.Malformed``, an id of
the right form that names nothing is ``*.NotFound`` — clients and scripts tell the two apart
(a typo against a deleted resource)."""

from __future__ import annotations

import re

from vmimport.messages import shorten

from .errors import ApiError

# EC2 ids: the prefix, then 8 (older ids) or 17 lower-case hex digits.
_FORMS = {
    "ami": ("InvalidAMIID.Malformed", re.compile(r"ami-(?:[0-9a-f]{8}|[0-9a-f]{17})")),
    "snap": ("InvalidSnapshotID.Malformed", re.compile(r"snap-(?:[0-9a-f]{8}|[0-9a-f]{17})")),
}


def check_ids(prefix: str, ids) -> None:
    """Refuse the first id of ``ids`` (one id or several) that is not of the ``prefix`` form."""
    code, form = _FORMS[prefix]
    for resource_id in [ids] if isinstance(ids, str) else ids or []:
        if not form.fullmatch(resource_id):
            raise ApiError(code, f'Invalid id: "{shorten(resource_id)}" (expecting '
                           f'"{prefix}-..." followed by 8 or 17 hexadecimal digits)')
