"""Units as laboratories write them (eligibility._units): pint spellings, UCUM codes, IU for enzymes."""

from __future__ import annotations

import pytest

from escalation_rules.eligibility._units import lab_factor, lab_unit
from escalation_rules.errors import GuardSyntaxError


def test_ucum_counts_and_annotations_convert() -> None:
    """UCUM powers of ten and annotations in braces are read by the UCUM parser."""
    assert lab_factor("10*9/L", "1/uL") == pytest.approx(1000.0)
    assert lab_factor("10*3/uL", "1/L") == pytest.approx(1e9)
    assert lab_factor("mL/min/{1.73_m2}", "L/h") == pytest.approx(0.06)
    assert lab_factor("[lb_av]", "kg") == pytest.approx(0.45359237)


def test_international_units_are_enzyme_units_only_for_enzyme_activities() -> None:
    """IU/L converts to U/L (enzymes), but an international unit is not a mass concentration."""
    assert lab_factor("IU/L", "U/L") == 1.0
    assert lab_factor("[IU]/mL", "U/L") == pytest.approx(1000.0)
    with pytest.raises(GuardSyntaxError):
        lab_factor("IU/L", "mg/dL")


def test_plain_spellings_are_kept_and_lower_case_decilitre_is_read() -> None:
    """A spelling pint reads is kept as written; mg/dl is mg/dL."""
    assert lab_unit("mg/dl") == "mg/dl"
    assert lab_factor("mg/dl", "mg/dL") == 1.0


@pytest.mark.parametrize(("text", "close"), [("mg/dLL", "mg/dL"), ("UI/L", "U/L"), ("umol/LL", "umol/L")])
def test_unknown_units_are_refused_with_close_matches(text: str, close: str) -> None:
    """An unknown unit names itself and lists close known spellings."""
    with pytest.raises(GuardSyntaxError) as err:
        lab_unit(text)
    assert err.value.message.startswith(f"unknown unit {text!r} (close matches: ") and close in err.value.message
