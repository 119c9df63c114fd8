"""Coarse derivatives, computed once at ingest and stored in clear.

They are what leaves custos by default: an IPv4 /24 or IPv6 /48 network (the /24 of the
embedded IPv4 address for IPv6 forms that carry one) and, when a MaxMind database is
configured, country and region (city only where configured); a location snapped to the centre
of a grid cell (default about 10 km); a device as browser, OS and device family without
versions; contact details masked.
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


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052's well-known prefix
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")  # RFC 4291 IPv4-mapped
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # RFC 2765 IPv4-translated (SIIT)
_COMPATIBLE = ipaddress.IPv6Network("::/96")  # RFC 4291 IPv4-compatible (deprecated)


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries, if it is one of the forms that embed one:
    6to4 ``2002::/16`` (bits 16-47), Teredo ``2001::/32`` (the client's address, the last 32
    bits inverted), NAT64 ``64:ff9b::/96``, IPv4-mapped ``::ffff:0:0/96``, IPv4-translated
    ``::ffff:0:0:0/96`` and IPv4-compatible ``::/96`` (but ``::`` and ``::1``)."""
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    low = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _NAT64 or address in _MAPPED or address in _TRANSLATED:
        return low
    if address in _COMPATIBLE and int(address) > 1:
        return low
    return None


def geo_address(ip: str) -> str:
    """The address to place ``ip`` by: its embedded IPv4 address if it has one (a 6to4 or
    Teredo address's own prefix would place the relay, not the client), else itself."""
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            return str(inner)
    return str(address)


def ip_network(ip: str) -> str:
    """The /24 (IPv4) or /48 (IPv6) network containing ``ip``; for an IPv6 address that
    embeds an IPv4 address (:func:`embedded_ipv4`), the /24 of that IPv4 address.

    An IPv6 /48 is coarse because it names a site, not a host; but a 6to4 /48 *is* the
    site's exact IPv4 address, and the other forms carry it in bits a /48 would either leak
    or hide from the comparison with the same client seen over IPv4. Through the embedded
    address, every form of one client coarsens to exactly what its IPv4 address does.
    Raises ``ValueError`` for text that is no IP address.
    """
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is None:
            return str(ipaddress.IPv6Network((address, 48), strict=False))
        address = inner
    return str(ipaddress.IPv4Network((address, 24), strict=False))


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
