"""Coarse derivatives, computed once at ingest and stored in clear.

They are what leaves custos by default: an IPv4 /24 or IPv6 /48 network and, when a MaxMind
database is configured, country and region (city only where configured); a location snapped
to the centre of a grid cell (default about 10 km); a device as browser, OS and device
family without versions; contact details masked.
"""

from __future__ import annotations

import ipaddress
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

from ua_parser import parse as parse_user_agent

from custos.errors import ConfigurationError

KM_PER_DEGREE = 111.32


class GeoLookup:
    """Country / region (/ city) of an IP address from a MaxMind ``.mmdb`` file."""

    def __init__(self, path: Path, *, with_city: bool = False) -> None:
        import maxminddb

        try:
            self._reader = maxminddb.open_database(str(path))
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"{path}: cannot open the GeoIP database ({exc})") from None
        self.with_city = with_city

    def lookup(self, ip: str) -> dict[str, str]:
        found: Any = self._reader.get(ip)
        if not isinstance(found, dict):
            return {}
        place: dict[str, str] = {}
        country = found.get("country", {}).get("iso_code")
        if country:
            place["country"] = str(country)
        subdivisions = found.get("subdivisions") or []
        if subdivisions:
            region = subdivisions[0].get("iso_code") or subdivisions[0].get("names", {}).get("en")
            if region:
                place["region"] = str(region)
        if self.with_city:
            city = (found.get("city") or {}).get("names", {}).get("en")
            if city:
                place["city"] = str(city)
        return place


def ip_network(ip: str) -> str:
    """The /24 (IPv4) or /48 (IPv6) network containing ``ip``."""
    address = ipaddress.ip_address(ip)
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def grid_cell(lat: float, lon: float, grid_km: float) -> dict[str, float]:
    """The centre of the ``grid_km`` cell holding (lat, lon), rounded to 3 decimals."""
    lat_step = grid_km / KM_PER_DEGREE
    cell_lat = (math.floor(lat / lat_step) + 0.5) * lat_step
    cell_lat = max(-90.0, min(90.0, cell_lat))
    # Cells keep about grid_km of width away from the equator, wider near the poles.
    lon_step = min(360.0, grid_km / (KM_PER_DEGREE * max(math.cos(math.radians(cell_lat)), 0.01)))
    cell_lon = (math.floor((lon + 180.0) / lon_step) + 0.5) * lon_step - 180.0
    cell_lon = max(-180.0, min(180.0, cell_lon))
    return {"lat": round(cell_lat, 3), "lon": round(cell_lon, 3), "grid_km": grid_km}


@lru_cache(maxsize=4096)
def device_family(user_agent: str) -> dict[str, str]:
    """Browser, OS and device family of a user agent, without versions."""
    parsed = parse_user_agent(user_agent)
    return {
        "browser": parsed.user_agent.family if parsed.user_agent else "Other",
        "os": parsed.os.family if parsed.os else "Other",
        "device": parsed.device.family if parsed.device else "Other",
    }


def mask_email(email: str) -> str:
    local, _, domain = email.partition("@")
    tld = domain.rsplit(".", 1)[-1] if "." in domain else ""
    return f"{local[:1]}***@***.{tld}" if tld else f"{local[:1]}***@***"


def mask_phone(phone: str) -> str:
    digits = [c for c in phone if c.isdigit()]
    return "***" + "".join(digits[-2:])
