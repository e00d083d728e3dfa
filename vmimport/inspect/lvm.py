"""LVM2 physical volumes, volume groups and logical volumes, read from the on-disk metadata.

Our own bounded reader rather than dissect.volume's: dissect.volume maps a striped segment's stripes
one after another (not interleaved), parses the metadata text with ``ast.literal_eval`` line by line
and reads whatever size the metadata area claims. Here the label, the metadata area and the text are
size-checked, the text parser is a small tokenizer with a depth and item limit, and only linear and
striped segments are mapped; thin, snapshot, RAID, mirror, cache and VDO volumes are reported with
their type so the refusal can say exactly what was found.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

from vmimport.inspect.budget import MAX_SINGLE_READ, InspectionLimit
from vmimport.seekable import SeekableView

SECTOR = 512
MDA_MAGIC = b" LVM2 x[5A%r0N*>"
MAX_METADATA = 1024 * 1024  # LVM's own default metadata area is 1 MiB
MAX_DEPTH = 16
MAX_ITEMS = 100_000  # tokens in one metadata text
MAX_LVS = 256
MAX_SEGMENTS = 256  # per logical volume
MAX_STRIPES = 64
READABLE_SEGMENTS = {"linear", "striped"}


class LvmError(Exception):
    """LVM metadata that cannot be used; the message says what is wrong."""


@dataclass
class PhysicalVolume:
    uuid: str  # without dashes, as in the PV label
    reader: object  # BoundedReader (the whole disk)
    offset: int  # byte offset of the PV on the disk
    size: int
    where: str  # "partition 2", "the whole disk"
    vg_name: str | None = None
    metadata: dict | None = None


@dataclass
class Segment:
    start_extent: int
    extent_count: int
    type: str
    stripe_size: int  # bytes (striped with more than one stripe)
    stripes: list[tuple[str, int]]  # (pv key in the VG, first extent on that PV)


@dataclass
class LogicalVolume:
    vg: str
    name: str
    status: list[str]
    segments: list[Segment] = field(default_factory=list)

    @property
    def types(self) -> set[str]:
        return {s.type for s in self.segments}

    @property
    def path(self) -> str:
        return f"{self.vg}/{self.name}"


# ---------------------------------------------------------------- physical volume label and metadata


def read_pv(reader, offset: int, size: int, where: str) -> PhysicalVolume:
    """The PV whose label is in the first four sectors at ``offset``; LvmError if malformed."""
    head = reader.pread(offset, 4 * SECTOR)
    for i in range(4):
        sector = head[i * SECTOR : (i + 1) * SECTOR]
        if sector[:8] == b"LABELONE" and sector[24:32] == b"LVM2 001":
            label_at = i * SECTOR
            break
    else:
        raise LvmError(f"{where}: no LVM2 label in its first four sectors")
    content = struct.unpack_from("<I", head, label_at + 20)[0]
    if not 32 <= content < SECTOR - 40:
        raise LvmError(f"{where}: LVM2 label points outside its sector")
    pvh = head[label_at + content : label_at + SECTOR]
    pv_uuid = pvh[:32].decode("ascii", "replace")
    pos = 40  # uuid + device_size
    data_areas, meta_areas = [], []
    for target in (data_areas, meta_areas):
        while pos + 16 <= len(pvh):
            loc, length = struct.unpack_from("<QQ", pvh, pos)
            pos += 16
            if loc == 0:
                break
            target.append((loc, length))
    if not meta_areas:
        raise LvmError(f"{where}: the physical volume has no metadata area (metadata kept on other PVs only)")
    pv = PhysicalVolume(uuid=pv_uuid, reader=reader, offset=offset, size=size, where=where)
    pv.metadata, pv.vg_name = _read_metadata(reader, offset, size, meta_areas[0], where)
    return pv


def _read_metadata(reader, pv_offset: int, pv_size: int, area: tuple[int, int], where: str) -> tuple[dict, str]:
    mda_at, mda_size = area
    if mda_at + 512 > pv_size:
        raise LvmError(f"{where}: the metadata area lies outside the physical volume")
    hdr = reader.pread(pv_offset + mda_at, SECTOR)
    if hdr[4:20] != MDA_MAGIC:
        raise LvmError(f"{where}: the metadata area header has no LVM2 magic")
    raw_offset, raw_size = struct.unpack_from("<QQ", hdr, 40)
    if raw_size == 0:
        raise LvmError(f"{where}: the physical volume belongs to no volume group (empty metadata)")
    if raw_size > MAX_METADATA or raw_size > mda_size:
        raise InspectionLimit(f"{where}: LVM metadata of {raw_size} bytes (limit {MAX_METADATA})")
    if raw_offset >= mda_size:
        raise LvmError(f"{where}: the LVM metadata text lies outside its area")
    first = min(raw_size, mda_size - raw_offset)  # the area is a ring after its 512-byte header
    text = reader.pread(pv_offset + mda_at + raw_offset, first)
    if first < raw_size:
        text += reader.pread(pv_offset + mda_at + SECTOR, raw_size - first)
    parsed = parse_metadata(text.rstrip(b"\0").decode("utf-8", "replace"), where)
    groups = [k for k, v in parsed.items() if isinstance(v, dict)]
    if len(groups) != 1:
        raise LvmError(f"{where}: the LVM metadata names {len(groups)} volume groups, not one")
    return parsed, groups[0]


_TOKEN = re.compile(r'\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*")|(-?\d+)|([A-Za-z0-9_.+\-/]+)|([{}\[\]=,]))')


def parse_metadata(text: str, where: str = "LVM") -> dict:
    """LVM2's text format: ``name { ... }``, ``key = value`` with strings, integers and [lists]."""
    tokens = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            if text[pos:].strip() == "":
                break
            raise LvmError(f"{where}: unreadable LVM metadata near byte {pos}")
        pos = m.end()
        if m.group(1) is not None:
            continue
        if m.group(2) is not None:
            tokens.append(("s", re.sub(r"\\(.)", r"\1", m.group(2)[1:-1])))
        elif m.group(3) is not None:
            tokens.append(("i", int(m.group(3))))
        elif m.group(4) is not None:
            tokens.append(("w", m.group(4)))
        else:
            tokens.append(("p", m.group(5)))
        if len(tokens) > MAX_ITEMS:
            raise InspectionLimit(f"{where}: LVM metadata has more than {MAX_ITEMS} items")
    root: dict = {}
    stack = [root]
    i = 0

    def bad(what: str) -> LvmError:
        return LvmError(f"{where}: malformed LVM metadata ({what})")

    while i < len(tokens):
        kind, value = tokens[i]
        if kind == "p" and value == "}":
            if len(stack) == 1:
                raise bad("unbalanced '}'")
            stack.pop()
            i += 1
            continue
        if kind not in ("w", "s") or i + 1 >= len(tokens):
            raise bad(f"unexpected {value!r}")
        nxt = tokens[i + 1]
        if nxt == ("p", "{"):
            if len(stack) >= MAX_DEPTH:
                raise InspectionLimit(f"{where}: LVM metadata nested deeper than {MAX_DEPTH}")
            child: dict = {}
            stack[-1][str(value)] = child
            stack.append(child)
            i += 2
            continue
        if nxt != ("p", "=") or i + 2 >= len(tokens):
            raise bad(f"no '=' after {value!r}")
        i += 2
        if tokens[i] == ("p", "["):
            items = []
            i += 1
            while i < len(tokens) and tokens[i] != ("p", "]"):
                if tokens[i] != ("p", ","):
                    if tokens[i][0] == "p":
                        raise bad("a list holds punctuation")
                    items.append(tokens[i][1])
                i += 1
            if i >= len(tokens):
                raise bad("unterminated list")
            stack[-1][str(value)] = items
        elif tokens[i][0] in ("s", "i", "w"):
            stack[-1][str(value)] = tokens[i][1]
        else:
            raise bad(f"no value after {value!r}")
        i += 1
    if len(stack) != 1:
        raise bad("unbalanced '{'")
    return root


# ---------------------------------------------------------------- volume groups and logical volumes


def _int(d: dict, key: str, where: str) -> int:
    v = d.get(key)
    if not isinstance(v, int) or v < 0:
        raise LvmError(f"{where}: LVM metadata lacks a valid {key}")
    return v


@dataclass
class VolumeGroup:
    name: str
    extent_size: int  # bytes
    pvs: dict[str, PhysicalVolume]  # key in the metadata ("pv0") -> PV found on this disk
    pe_start: dict[str, int]  # key -> byte offset of extent 0 inside the PV
    missing: list[str]  # keys of PVs the metadata names but this disk does not hold
    lvs: list[LogicalVolume]


def assemble(pvs: list[PhysicalVolume]) -> list[VolumeGroup]:
    """Group PVs by volume group (the newest metadata, by seqno, wins) and list its logical volumes."""
    by_vg: dict[str, list[PhysicalVolume]] = {}
    for pv in pvs:
        by_vg.setdefault(pv.vg_name, []).append(pv)
    groups = []
    for name, members in by_vg.items():
        newest = max(members, key=lambda p: p.metadata[name].get("seqno", 0) if isinstance(p.metadata[name].get("seqno"), int) else 0)
        groups.append(_volume_group(name, newest.metadata[name], members))
    return groups


def _volume_group(name: str, meta: dict, members: list[PhysicalVolume]) -> VolumeGroup:
    where = f"volume group {name}"
    extent = _int(meta, "extent_size", where) * SECTOR
    if extent == 0 or extent & (extent - 1):
        raise LvmError(f"{where}: extent size {extent} is not a power of two")
    by_uuid = {pv.uuid: pv for pv in members}
    pvs, pe_start, missing = {}, {}, []
    for key, pvmeta in (meta.get("physical_volumes") or {}).items():
        if not isinstance(pvmeta, dict):
            continue
        pv = by_uuid.get(str(pvmeta.get("id", "")).replace("-", ""))
        if pv is None:
            missing.append(key)
            continue
        pvs[key] = pv
        pe_start[key] = _int(pvmeta, "pe_start", f"{where} {key}") * SECTOR
    lvs = []
    for lv_name, lvmeta in (meta.get("logical_volumes") or {}).items():
        if not isinstance(lvmeta, dict):
            continue
        if len(lvs) >= MAX_LVS:
            raise InspectionLimit(f"{where}: more than {MAX_LVS} logical volumes")
        lv = LogicalVolume(vg=name, name=lv_name, status=[str(s) for s in lvmeta.get("status") or []])
        for seg_name, seg in lvmeta.items():
            if not (isinstance(seg, dict) and seg_name.startswith("segment")):
                continue
            if len(lv.segments) >= MAX_SEGMENTS:
                raise InspectionLimit(f"logical volume {lv.path}: more than {MAX_SEGMENTS} segments")
            lv.segments.append(_segment(seg, f"logical volume {lv.path} {seg_name}"))
        lv.segments.sort(key=lambda s: s.start_extent)
        lvs.append(lv)
    return VolumeGroup(name, extent, pvs, pe_start, missing, lvs)


def _segment(seg: dict, where: str) -> Segment:
    kind = str(seg.get("type", "")).split("+", 1)[0]
    stripes_raw = seg.get("stripes") or []
    stripes = []
    if kind in READABLE_SEGMENTS:
        if len(stripes_raw) % 2 or not stripes_raw or len(stripes_raw) > 2 * MAX_STRIPES:
            raise LvmError(f"{where}: {len(stripes_raw) // 2} stripes (1 to {MAX_STRIPES} expected)")
        for i in range(0, len(stripes_raw), 2):
            pv, first = stripes_raw[i], stripes_raw[i + 1]
            if not isinstance(pv, str) or not isinstance(first, int) or first < 0:
                raise LvmError(f"{where}: malformed stripe list")
            stripes.append((pv, first))
    stripe_size = seg.get("stripe_size", 0) if len(stripes) > 1 else 0
    if len(stripes) > 1 and (not isinstance(stripe_size, int) or stripe_size <= 0 or stripe_size & (stripe_size - 1)):
        raise LvmError(f"{where}: invalid stripe size {stripe_size!r}")
    return Segment(_int(seg, "start_extent", where), _int(seg, "extent_count", where), kind,
                   stripe_size * SECTOR, stripes)


def unreadable_reason(vg: VolumeGroup, lv: LogicalVolume) -> str | None:
    """Why ``lv`` cannot be read from this disk, or None."""
    odd = sorted(lv.types - READABLE_SEGMENTS)
    if odd:
        what = {"thin": "a thin volume", "thin-pool": "a thin pool", "snapshot": "a snapshot",
                "mirror": "a mirror", "cache": "a cached volume", "vdo": "a VDO volume"}
        kind = next((what[t] for t in odd if t in what), "a RAID volume" if any(t.startswith("raid") for t in odd) else None)
        return f"is {kind or 'of segment type ' + odd[0]} ({', '.join(odd)}), which vmimport does not read"
    if not lv.segments:
        return "has no segments"
    expected = 0
    for s in lv.segments:
        if s.start_extent != expected:
            return f"has a gap or overlap at extent {s.start_extent}"
        expected += s.extent_count
        for pv_key, _ in s.stripes:
            if pv_key not in vg.pvs:
                return f"uses physical volume {pv_key}, which is not on this disk"
    return None


class LogicalVolumeReader(SeekableView):
    """A logical volume as a readable, seekable stream (with ``pread``/``size`` like BoundedReader)."""

    def __init__(self, vg: VolumeGroup, lv: LogicalVolume):
        super().__init__()
        self.vg, self.lv = vg, lv
        self.size = sum(s.extent_count for s in lv.segments) * vg.extent_size
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.size - self._pos
        data = self.pread(self._pos, n)
        self._pos += len(data)
        return data

    def pread(self, offset: int, n: int) -> bytes:
        n = max(0, min(n, self.size - offset))
        if n > MAX_SINGLE_READ:  # checked here too: the zeros for a PV cut short are not read, so not charged
            raise InspectionLimit(f"a filesystem structure asked for a {n}-byte read (limit {MAX_SINGLE_READ})")
        out = []
        while n > 0:
            piece = self._map(offset, n)
            pv, at, length = piece
            data = pv.reader.pread(pv.offset + at, length)
            if len(data) < length:
                data += b"\0" * (length - len(data))  # a PV cut short by the disk's end
            out.append(data)
            offset += length
            n -= length
        return b"".join(out)

    def _map(self, offset: int, n: int) -> tuple[PhysicalVolume, int, int]:
        """(PV, byte offset inside it, contiguous length) for LV byte ``offset``."""
        ext = self.vg.extent_size
        for s in self.lv.segments:
            seg_start, seg_end = s.start_extent * ext, (s.start_extent + s.extent_count) * ext
            if not seg_start <= offset < seg_end:
                continue
            rel = offset - seg_start
            if len(s.stripes) == 1:
                key, first = s.stripes[0]
                at, length = first * ext + rel, seg_end - offset
            else:
                chunk = rel // s.stripe_size
                key, first = s.stripes[chunk % len(s.stripes)]
                row = chunk // len(s.stripes)
                within = rel % s.stripe_size
                at, length = first * ext + row * s.stripe_size + within, s.stripe_size - within
            return self.vg.pvs[key], self.vg.pe_start[key] + at, min(length, n)
        raise LvmError(f"logical volume {self.lv.path}: offset {offset} is in no segment")
