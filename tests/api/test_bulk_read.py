"""A bulk read found in an audit log reaches the alert surfaces like any rule's alert: the
API's alert list and one alert, and the dashboard's list and alert page (real HTTP on
loopback, a real CloudTrail import)."""

from __future__ import annotations

from custos.detect import EventStore
from custos.detect.importers import import_log, parse_mapping
from tests.api.conftest import Service
from tests.detect.test_import_cloudtrail import BOB, MAPPING, dynamo_scan, json_lines


def test_a_bulk_read_shows_in_the_api_and_the_dashboard(service: Service) -> None:
    system = service.system
    scan = dynamo_scan(1, BOB, "Payments")
    report = import_log(
        EventStore(system.db), json_lines([scan]), "trail.json", parse_mapping(MAPPING, "m")
    )
    assert report.bulk_added == 1
    system.detect()
    with service.client(service.tokens["siem"]) as siem:
        listed = [a for a in siem.get("/v1/alerts").json() if a["rule"] == "bulk_read"]
        (alert,) = listed
        assert (alert["severity"], alert["principals"], alert["subjects"]) == (
            "high", ["emp-1002"], [],
        )  # fmt: skip
        assert alert["case"]
        # Its evidence's arrival is recorded, so its time-to-alert is known as for events.
        assert isinstance(alert["time_to_alert"], float)
        one = siem.get(f"/v1/alerts/{alert['id']}")
        assert one.status_code == 200
        assert one.json()["explanation"] == alert["explanation"]
        assert "read payment of many people outside custos" in alert["explanation"]
    priya = service.session("priya")
    page = priya.get("/alerts")
    assert page.status_code == 200
    assert f'href="/alerts/{alert["id"]}"' in page.text
    assert "bulk read" in page.text
    detail = priya.get(f"/alerts/{alert['id']}")
    assert detail.status_code == 200
    assert "outside custos" in detail.text
    # Its evidence: the Scan, with where to find it in the log.
    assert 'id="bulk-evidence"' in detail.text
    assert "Payments" in detail.text
    assert "trail.json line 1" in detail.text
