"""Responses checked against botocore's output shapes, member by member: botocore's parser
drops what it does not know and leaves out what is missing, so a client sees neither; this
walks the XML itself and names each unknown member, each value of the wrong type and each
required member missing."""

from __future__ import annotations

from datetime import datetime

import botocore.model
from defusedxml import ElementTree

# Members of the response root that no output shape lists.
ENVELOPE = {"requestId", "RequestId", "ResponseMetadata"}


def _tag(element) -> str:
    return element.tag.rsplit("}", 1)[-1]


def _scalar_problem(shape: botocore.model.Shape, text: str) -> str | None:
    kind = shape.type_name
    try:
        if kind in ("integer", "long"):
            int(text)
        elif kind in ("float", "double"):
            float(text)
        elif kind == "boolean" and text not in ("true", "false"):
            return f"boolean {text!r}"
        elif kind == "timestamp":
            datetime.fromisoformat(text.replace("Z", "+00:00"))
        elif kind == "string" and shape.enum and text not in shape.enum:
            return f"{text!r} is not one of {shape.name}'s values"
    except ValueError:
        return f"{kind} {text!r}"
    return None


def check_element(shape: botocore.model.Shape, element, path: str, problems: list[str]) -> None:
    if shape.type_name == "structure":
        members = {m.serialization.get("name", name): (name, m)
                   for name, m in shape.members.items()}
        seen = set()
        for child in element:
            tag = _tag(child)
            if tag not in members:
                if not (path == "" and tag in ENVELOPE):
                    problems.append(f"{path or shape.name}: unknown member <{tag}>")
                continue
            name, member = members[tag]
            seen.add(name)
            check_element(member, child, f"{path}.{name}" if path else name, problems)
        for name in shape.required_members:
            if name not in seen:
                problems.append(f"{path or shape.name}: required member {name} missing")
    elif shape.type_name == "list":
        item = shape.member.serialization.get("name", "member")
        for index, child in enumerate(element):
            if _tag(child) != item:
                problems.append(f"{path}: list item <{_tag(child)}>, not <{item}>")
            check_element(shape.member, child, f"{path}[{index}]", problems)
    elif shape.type_name != "map":
        problem = _scalar_problem(shape, element.text or "")
        if problem:
            problems.append(f"{path}: {problem}")


def check_response(operation: botocore.model.OperationModel, body: bytes) -> list[str]:
    """Problems of one successful XML response (EC2/Query protocol) of ``operation``."""
    root = ElementTree.fromstring(body)
    problems: list[str] = []
    shape = operation.output_shape
    if shape is None:  # EC2 answers <return>true</return> where the model has no output
        extra = [_tag(c) for c in root if _tag(c) not in ENVELOPE | {"return"}]
        return [f"unknown member <{t}> (the output is empty)" for t in extra]
    if operation.metadata["protocol"] == "query":  # <XResponse><XResult>...</XResult>
        result = root.find(f"{{*}}{operation.name}Result")
        root = result if result is not None else root
    check_element(shape, root, "", problems)
    return problems
