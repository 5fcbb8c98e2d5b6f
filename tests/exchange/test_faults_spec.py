from __future__ import annotations

import pytest

from apps.exchange.faults import Faults, parse_faults


def test_a_spec_switches_faults_on_by_name() -> None:
    faults = parse_faults("drop_every=30, skip_seq_every=100,no_ping,error_every=500,error_code=25,stall_for=2.5")
    assert faults == Faults(
        drop_every=30.0, skip_seq_every=100, no_ping=True, error_every=500, error_code=25, stall_for=2.5
    )


def test_an_empty_spec_is_no_faults() -> None:
    assert parse_faults("") == Faults()


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [("drop_evry=3", "unknown fault 'drop_evry'"), ("skip_seq_every=often", "skip_seq_every needs a number")],
)
def test_a_bad_spec_says_what_is_wrong(spec: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse_faults(spec)
