"""The [approvals] table: group lists are lists, and a wrong one is named."""

from __future__ import annotations

import pytest

from custos.approvals.model import ApprovalSettings
from custos.errors import ConfigurationError


@pytest.mark.parametrize("key", ["approver_groups", "review_groups"])
@pytest.mark.parametrize("value", ["privacy_office", ["privacy_office", 3], [""], 7])
def test_a_group_list_that_is_not_a_list_of_names_is_refused(key: str, value: object) -> None:
    # A bare string was read letter by letter: any one-letter group could approve.
    with pytest.raises(ConfigurationError, match=rf"\[approvals\] {key} must be a list"):
        ApprovalSettings.from_config({key: value})


def test_group_lists_are_taken_as_given() -> None:
    settings = ApprovalSettings.from_config(
        {"approver_groups": ["approvers", "legal"], "review_groups": ["privacy_office"]}
    )
    assert settings.approver_groups == ("approvers", "legal")
    assert settings.review_groups == ("privacy_office",)


@pytest.mark.parametrize("value", [0, -1, "many"])
def test_a_break_glass_limit_below_one_is_refused(value: object) -> None:
    with pytest.raises(ConfigurationError, match=r"\[approvals\]"):
        ApprovalSettings.from_config({"break_glass_open_limit": value})
    assert ApprovalSettings.from_config({"break_glass_open_limit": 1}).break_glass_open_limit == 1
