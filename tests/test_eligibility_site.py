"""Site reference ranges (eligibility._site): reading the site file, choosing a range, and its use in screening."""

from __future__ import annotations

from pathlib import Path

import pytest

from escalation_rules import load_protocol
from escalation_rules.cli import main
from escalation_rules.eligibility import EligibilitySpec, SiteError, load_eligibility, load_site, screen
from test_eligibility import BASE, edit

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "examples" / "site-ranges.toml"
NO_RANGES = {f"measurements[code={code}].reference_range": None for code in ("creatinine", "bilirubin", "alt", "ast")}


@pytest.fixture(scope="module")
def spec() -> EligibilitySpec:
    return load_eligibility(load_protocol(ROOT / "spec" / "nct07117175"))


def test_most_specific_fitting_range_is_chosen() -> None:
    """A range for the patient's sex or age band beats a general one; unknown sex leaves a sex-split test open."""
    site = load_site(SITE)
    female = site.range("alt", "female", 40)
    assert female is not None and female.high == 35
    old = site.range("ast", "male", 70)
    assert old is not None and old.high == 40
    young = site.range("ast", "male", 40)
    assert young is not None and young.high == 35
    assert site.range("alt", None, 40) is None
    assert site.range("ast", "male", None) is None  # the age band would be chosen if it fitted
    assert site.range("lvef", "male", 40) is None


def test_without_any_range_uln_criteria_are_undetermined_saying_so(spec: EligibilitySpec) -> None:
    """With no range in the record and no site file, x ULN criteria are unknown and the reason says why."""
    result = screen(spec, edit(BASE, NO_RANGES))
    assert result.outcome == "undetermined" and "alt.uln" in result.needed
    assert result.result("inc_alt").reason.endswith(
        "missing alt.uln (alt.uln: no reference range in the record and no site file (screen --site))")


def test_site_ranges_fill_in_and_the_record_range_wins(spec: EligibilitySpec) -> None:
    """The site's range is used where the record has none, shown as such; a record's own range wins."""
    site = load_site(SITE)
    filled = screen(spec, edit(BASE, NO_RANGES), site=site)
    assert filled.outcome == "eligible"
    assert "alt.uln = 35 U/L (site file: 7-35 U/L (female))" in filled.result("inc_alt").reason
    own = screen(spec, edit(BASE, {"measurements[code=alt].reference_range": {"high": 10}}), site=site)
    assert own.result("inc_alt").value is False and "site file" not in own.result("inc_alt").reason


def test_male_range_applies_to_a_man(spec: EligibilitySpec) -> None:
    """ALT 120 U/L is 3.4 x the female ULN of 35 but 2.7 x the male ULN of 45."""
    site = load_site(SITE)
    record = edit(BASE, {**NO_RANGES, "measurements[code=alt].value": 120})
    assert screen(spec, record, site=site).result("inc_alt").value is False
    male = edit(record, {"demographics.sex": "male"})
    assert screen(spec, male, site=site).result("inc_alt").value is True


def test_bad_site_file_is_refused_naming_key_paths(tmp_path: Path) -> None:
    """Every problem of a site file is one line naming the file and the key path."""
    path = tmp_path / "site.toml"
    path.write_text('[[ranges.alt]]\nhigh = -3\nunit = "UI/L"\nsex = "x"\n[[ranges.ast]]\nlow = 40\nhigh = 30\n'
                    'unit = "U/L"\nage_from = 70\nage_to = 60\n[other]\n', encoding="utf-8")
    with pytest.raises(SiteError) as err:
        load_site(path)
    lines = [line.split(": ", 1)[1] for line in err.value.problems]
    assert lines == ["other: unknown key (expected one of: ranges, site)",
                     "ranges.alt[0].high: expected a number of 0 or more (got -3)",
                     "ranges.alt[0].unit: unknown unit 'UI/L' (close matches: U/L, IU/L, IU/mL)",
                     "ranges.alt[0].sex: expected female or male (got 'x')",
                     "ranges.ast[0]: low 40 is above high 30",
                     "ranges.ast[0]: age_from 70 is not below age_to 60"]


def test_cli_site_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """screen --site uses the file's ranges; a missing site file is refused with status 2."""
    import json

    record = tmp_path / "p.json"
    record.write_text(json.dumps(edit(BASE, NO_RANGES)), encoding="utf-8")
    spec_dir = str(ROOT / "spec" / "nct07117175")
    assert main(["screen", spec_dir, str(record)]) == 4
    assert main(["screen", spec_dir, str(record), "--site", str(SITE)]) == 0
    assert main(["screen", spec_dir, str(record), "--site", str(tmp_path / "none.toml")]) == 2
    assert "none.toml: cannot read" in capsys.readouterr().err
