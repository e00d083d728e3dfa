"""What tools ask before anything else: DescribeRegions, DescribeAvailabilityZones,
DescribeAccountAttributes — answered for the one region this server holds — and
DescribeConversionTasks (the legacy ImportInstance/ImportVolume tasks, which vmimport never
creates: the AWS CLI's ``conversion-task-completed`` waiter still polls it)."""

from __future__ import annotations

import re

from .context import Context
from .errors import ApiError, invalid_value
from .listing import check_bounds, filter_items

OPT_IN = "opt-in-not-required"
# No instances are ever launched here: what EC2 reports for an account that may launch none.
_ACCOUNT_ATTRIBUTES = {
    "supported-platforms": ["VPC"], "default-vpc": ["none"], "max-instances": ["0"],
    "max-elastic-ips": ["0"], "vpc-max-elastic-ips": ["0"],
    "vpc-max-security-groups-per-interface": ["0"],
}


def zone_id_prefix(region: str) -> str:
    """EC2's zone-id prefix: ``us-east-1`` -> ``use1``, ``ap-southeast-2`` -> ``apse2``."""
    parts = region.split("-")
    if len(parts) < 3 or not re.fullmatch(r"\d+", parts[-1]):
        return re.sub(r"[^a-z0-9]", "", region)
    return parts[0] + "".join(p[0] for p in parts[1:-1]) + parts[-1]


def _zone(region: str) -> dict:
    return {"ZoneName": f"{region}a", "ZoneId": f"{zone_id_prefix(region)}-az1",
            "State": "available", "RegionName": region, "ZoneType": "availability-zone",
            "GroupName": region, "NetworkBorderGroup": region, "OptInStatus": OPT_IN,
            "Messages": []}


def describe_regions(ctx: Context, params: dict) -> dict:
    filters = check_bounds(params)
    unknown = [n for n in params.get("RegionNames") or [] if n != ctx.region]
    if unknown:
        raise ApiError("InvalidParameterValue", f"Invalid region names: {', '.join(unknown)} "
                       f"(this server holds only {ctx.region})")
    # Where this region is served: this server (EC2 names its regional host; tools show it).
    endpoint = f"{ctx.settings.host}:{ctx.settings.port}"
    region = {"RegionName": ctx.region, "Endpoint": endpoint, "OptInStatus": OPT_IN}
    fields = {"region-name": [ctx.region], "opt-in-status": [OPT_IN], "endpoint": [endpoint]}
    kept = filter_items([region], filters, lambda _r, name: fields.get(name))
    return {"Regions": kept}


def describe_availability_zones(ctx: Context, params: dict) -> dict:
    filters = check_bounds(params)
    zone = _zone(ctx.region)
    for key, field in (("ZoneNames", "ZoneName"), ("ZoneIds", "ZoneId")):
        unknown = [n for n in params.get(key) or [] if n != zone[field]]
        if unknown:
            raise invalid_value(key, unknown[0], f"The zone '{unknown[0]}' does not exist in "
                                f"region {ctx.region}; this server has one zone, "
                                f"{zone['ZoneName']} ({zone['ZoneId']}).")
    fields = {"zone-name": [zone["ZoneName"]], "zone-id": [zone["ZoneId"]],
              "region-name": [ctx.region], "state": ["available"],
              "zone-type": ["availability-zone"], "group-name": [ctx.region],
              "network-border-group": [ctx.region], "opt-in-status": [OPT_IN]}
    return {"AvailabilityZones": filter_items([zone], filters, lambda _z, n: fields.get(n))}


def describe_account_attributes(ctx: Context, params: dict) -> dict:
    names = params.get("AttributeNames") or list(_ACCOUNT_ATTRIBUTES)
    for name in names:
        if name not in _ACCOUNT_ATTRIBUTES:
            raise invalid_value("AttributeName", name, "Valid names: "
                                + ", ".join(_ACCOUNT_ATTRIBUTES) + ".")
    return {"AccountAttributes": [
        {"AttributeName": name,
         "AttributeValues": [{"AttributeValue": v} for v in _ACCOUNT_ATTRIBUTES[name]]}
        for name in names]}


def describe_conversion_tasks(ctx: Context, params: dict) -> dict:
    ids = params.get("ConversionTaskIds") or []
    if ids:
        raise ApiError("InvalidConversionTaskId",
                       f"The conversion task ID '{ids[0]}' does not exist (vmimport runs no "
                       "ImportInstance/ImportVolume conversion tasks; see ImportImage)")
    return {"ConversionTasks": []}
