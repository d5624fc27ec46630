#!/usr/bin/env bash
# A whole NCT07117175 trial through the CLI, from screening to the MTD.
#
# Every patient, date, adverse event and name below is invented; the DLT
# definition is the template in spec/nct07117175/dlt.toml.  The script runs
# from the repository root (CI runs it as: bash examples/nct07117175_trial.sh)
# and fails if any step behaves differently from what docs/trial.md says.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
DB="$WORK/nct07117175.db"
er() { escalation-rules "$@"; }
# record a JSON event or list of events given on stdin (a list is one transaction)
rec() { er trial record "$DB" - --key "$KEY"; }
# a command that must be refused (exit status 2, one line on stderr)
refused() {
  local status=0
  "$@" 2>"$WORK/err" || status=$?
  if [ "$status" -ne 2 ]; then echo "expected a refusal (exit 2), got exit $status: $*" >&2; exit 1; fi
  echo "refused as expected: $(cat "$WORK/err")"
}
step() { printf '\n== %s\n' "$*"; }

step "create a signing key (kept outside the store) and a signed store"
KEY="$WORK/trial.key"
er trial keygen "$KEY"
er trial init --spec spec/nct07117175 --key "$KEY" "$DB"

step "dose 1 (accelerated titration): one patient, 14-28 day window"
er trial record "$DB" --key "$KEY" --type screened --at 2025-03-03T09:00Z --patient P01 --eligible yes
rec <<'EOF'
[{"type": "enrolled", "at": "2025-03-04T10:00Z", "patient": "P01", "dose": 1, "cohort": 1},
 {"type": "infused", "at": "2025-03-05T16:00Z", "patient": "P01", "date": "2025-03-05"},
 {"type": "ae_reported", "at": "2025-03-06T09:00Z", "patient": "P01", "ae": "crs-1",
  "term": "Cytokine release syndrome", "category": "crs", "components": {"fever": true},
  "onset": "2025-03-06T08:00Z", "attribution": "probable"},
 {"type": "ae_updated", "at": "2025-03-08T13:00Z", "patient": "P01", "ae": "crs-1", "resolved": "2025-03-08T12:00Z"}]
EOF
er trial status "$DB" --as-of 2025-03-10
refused er trial record "$DB" --key "$KEY" --type screened --at 2025-03-11 --patient P01 --eligible yes
refused er trial record "$DB" --key "$KEY" --type dlt_adjudicated --at 2025-03-12 --patient P01 --dlt no \
  --role investigator --person "Dr L. Wang"

step "day-14 safety assessment closes the first patient's window: 1N, a joint decision"
er trial record "$DB" --key "$KEY" --type dlt_adjudicated --at 2025-03-19T10:00Z --patient P01 --dlt no \
  --role investigator --person "Dr L. Wang" --note "day-14 safety assessment"
er trial status "$DB" --as-of 2025-03-19T12:00Z
refused er trial record "$DB" --key "$KEY" --type decision_signed --at 2025-03-20T09:00Z --option fill \
  --role investigator --person "Dr L. Wang"
er trial record "$DB" --key "$KEY" --type decision_signed --at 2025-03-20T09:00Z --option escalate \
  --role investigator --person "Dr L. Wang"
refused er trial record "$DB" --key "$KEY" --type decision_signed --at 2025-03-20T09:30Z --option escalate \
  --role sponsor --person "Dr L. Wang"
refused er trial record "$DB" --key "$KEY" --type decision_signed --at 2025-03-20T09:30Z --option escalate \
  --role monitor --person "K. Ito"
er trial record "$DB" --key "$KEY" --type decision_signed --at 2025-03-20T15:00Z --option escalate \
  --role sponsor --person "R. Zhou"

step "dose 2: three patients; grade 3 ICANS that improves within 72 h is no DLT"
rec <<'EOF'
[{"type": "screened", "at": "2025-03-21T09:00Z", "patient": "P02", "eligible": true},
 {"type": "screened", "at": "2025-03-21T10:00Z", "patient": "P03", "eligible": true},
 {"type": "screened", "at": "2025-03-21T11:00Z", "patient": "P04", "eligible": true},
 {"type": "enrolled", "at": "2025-03-24T09:00Z", "patient": "P02", "dose": 2},
 {"type": "enrolled", "at": "2025-03-24T10:00Z", "patient": "P03", "dose": 2},
 {"type": "enrolled", "at": "2025-03-24T11:00Z", "patient": "P04", "dose": 2},
 {"type": "infused", "at": "2025-03-25T18:00Z", "patient": "P02", "date": "2025-03-25"},
 {"type": "infused", "at": "2025-03-25T18:00Z", "patient": "P03", "date": "2025-03-25"},
 {"type": "infused", "at": "2025-03-25T18:00Z", "patient": "P04", "date": "2025-03-25"},
 {"type": "ae_reported", "at": "2025-03-30T08:00Z", "patient": "P03", "ae": "icans-1",
  "term": "Immune effector cell-associated neurotoxicity syndrome", "category": "icans",
  "components": {"ice": 2}, "onset": "2025-03-30T06:00Z", "attribution": "possible"},
 {"type": "ae_updated", "at": "2025-04-01T08:00Z", "patient": "P03", "ae": "icans-1",
  "date": "2025-04-01T06:00Z", "components": {"ice": 8}},
 {"type": "ae_updated", "at": "2025-04-03T08:00Z", "patient": "P03", "ae": "icans-1", "resolved": "2025-04-03T06:00Z"}]
EOF
er trial record "$DB" --key "$KEY" --type screened --at 2025-04-04 --patient P05 --eligible yes
refused er trial record "$DB" --key "$KEY" --type enrolled --at 2025-04-05 --patient P05 --dose 3
er trial status "$DB" --as-of 2025-04-10
rec <<'EOF'
[{"type": "decision_signed", "at": "2025-04-23T09:00Z", "option": "escalate", "role": "investigator",
  "person": "Dr L. Wang", "rule": "pass-to-next"},
 {"type": "decision_signed", "at": "2025-04-23T11:00Z", "option": "escalate", "role": "sponsor", "person": "R. Zhou"}]
EOF

step "dose 3: a screen failure, a drop-out replaced, a CRS grade 3 lasting over 72 h (DLT)"
rec <<'EOF'
[{"type": "screened", "at": "2025-04-24T09:00Z", "patient": "P06", "eligible": false,
  "reasons": ["CD7 on fewer than 70% of leukaemia cells by flow cytometry"],
  "result": {"criteria": {"cd7-flow": "fail"}}},
 {"type": "screened", "at": "2025-04-24T10:00Z", "patient": "P07", "eligible": true},
 {"type": "screened", "at": "2025-04-24T11:00Z", "patient": "P08", "eligible": true},
 {"type": "enrolled", "at": "2025-04-28T09:00Z", "patient": "P05", "dose": 3},
 {"type": "enrolled", "at": "2025-04-28T10:00Z", "patient": "P07", "dose": 3},
 {"type": "enrolled", "at": "2025-04-28T11:00Z", "patient": "P08", "dose": 3},
 {"type": "infused", "at": "2025-04-29T18:00Z", "patient": "P05", "date": "2025-04-29"},
 {"type": "infused", "at": "2025-04-29T18:00Z", "patient": "P08", "date": "2025-04-29"},
 {"type": "not_evaluable", "at": "2025-04-29T18:00Z", "patient": "P07", "reason": "withdrew consent before the infusion"},
 {"type": "ae_reported", "at": "2025-04-30T21:00Z", "patient": "P08", "ae": "crs-1", "term": "Cytokine release syndrome",
  "category": "crs", "components": {"fever": true, "hypotension": "one-vasopressor"},
  "onset": "2025-04-30T20:00Z", "attribution": "probable"}]
EOF
refused er trial record "$DB" --key "$KEY" --type enrolled --at 2025-04-30 --patient P06 --dose 3
er trial record "$DB" --key "$KEY" --type screened --at 2025-04-30T09:00Z --patient P09 --eligible yes
er trial record "$DB" --key "$KEY" --type enrolled --at 2025-05-02T09:00Z --patient P09 --dose 3 --cohort 3
er trial record "$DB" --key "$KEY" --type infused --at 2025-05-03T18:00Z --patient P09 --date 2025-05-03
er trial status "$DB" --as-of 2025-05-03T19:00Z
rec <<'EOF'
[{"type": "ae_updated", "at": "2025-05-05T09:00Z", "patient": "P08", "ae": "crs-1", "date": "2025-05-05T08:00Z",
  "components": {"fever": true, "hypotension": "no-vasopressors"}},
 {"type": "ae_updated", "at": "2025-05-08T09:00Z", "patient": "P08", "ae": "crs-1", "resolved": "2025-05-08T08:00Z"}]
EOF
er trial status "$DB" --as-of 2025-05-20

step "one DLT in three: three more at dose 3 (no decision needed); a grade 4 neutropenia that recovers"
rec <<'EOF'
[{"type": "screened", "at": "2025-06-02T09:00Z", "patient": "P10", "eligible": true},
 {"type": "screened", "at": "2025-06-02T10:00Z", "patient": "P11", "eligible": true},
 {"type": "screened", "at": "2025-06-02T11:00Z", "patient": "P12", "eligible": true},
 {"type": "enrolled", "at": "2025-06-03T09:00Z", "patient": "P10", "dose": 3},
 {"type": "enrolled", "at": "2025-06-03T10:00Z", "patient": "P11", "dose": 3},
 {"type": "enrolled", "at": "2025-06-03T11:00Z", "patient": "P12", "dose": 3},
 {"type": "infused", "at": "2025-06-04T18:00Z", "patient": "P10", "date": "2025-06-04"},
 {"type": "infused", "at": "2025-06-04T18:00Z", "patient": "P11", "date": "2025-06-04"},
 {"type": "infused", "at": "2025-06-04T18:00Z", "patient": "P12", "date": "2025-06-04"},
 {"type": "ae_reported", "at": "2025-06-08T09:00Z", "patient": "P11", "ae": "neut-1",
  "term": "Neutrophil count decreased", "category": "hematologic", "grade": 4,
  "onset": "2025-06-08T08:00Z", "attribution": "possible"},
 {"type": "ae_updated", "at": "2025-06-20T09:00Z", "patient": "P11", "ae": "neut-1", "date": "2025-06-20T08:00Z", "grade": 3},
 {"type": "ae_updated", "at": "2025-06-25T09:00Z", "patient": "P11", "ae": "neut-1", "resolved": "2025-06-25T08:00Z"}]
EOF
er trial status "$DB" --as-of 2025-06-26

step "no MTD at the highest planned dose: amend the protocol (amount of the added group), then add it"
er trial status "$DB" --as-of 2025-07-03
er trial record "$DB" --key "$KEY" --type protocol_amended --at 2025-07-03T09:00Z --reference "Amendment 1 (protocol v2.0)" \
  --change change-dose --level 4 --dose-label "1×10^8 CAR-NK cells/kg" --amount 1e8
rec <<'EOF'
[{"type": "decision_signed", "at": "2025-07-04T09:00Z", "option": "add-group", "role": "investigator", "person": "Dr L. Wang"},
 {"type": "decision_signed", "at": "2025-07-04T10:00Z", "option": "add-group", "role": "sponsor", "person": "R. Zhou"}]
EOF

step "dose 4: two DLTs decide it before the third patient's window closes"
rec <<'EOF'
[{"type": "screened", "at": "2025-07-07T09:00Z", "patient": "P13", "eligible": true},
 {"type": "screened", "at": "2025-07-07T10:00Z", "patient": "P14", "eligible": true},
 {"type": "screened", "at": "2025-07-07T11:00Z", "patient": "P15", "eligible": true},
 {"type": "enrolled", "at": "2025-07-08T09:00Z", "patient": "P13", "dose": 4},
 {"type": "enrolled", "at": "2025-07-08T10:00Z", "patient": "P14", "dose": 4},
 {"type": "enrolled", "at": "2025-07-08T11:00Z", "patient": "P15", "dose": 4},
 {"type": "infused", "at": "2025-07-09T18:00Z", "patient": "P13", "date": "2025-07-09"},
 {"type": "infused", "at": "2025-07-09T18:00Z", "patient": "P14", "date": "2025-07-09"},
 {"type": "infused", "at": "2025-07-09T18:00Z", "patient": "P15", "date": "2025-07-09"},
 {"type": "ae_reported", "at": "2025-07-12T09:00Z", "patient": "P13", "ae": "alt-1",
  "term": "Alanine aminotransferase increased", "category": "non-hematologic", "grade": 4,
  "onset": "2025-07-12T08:00Z", "attribution": "possible"},
 {"type": "ae_reported", "at": "2025-07-15T09:00Z", "patient": "P14", "ae": "icans-1",
  "term": "Immune effector cell-associated neurotoxicity syndrome", "category": "icans",
  "components": {"consciousness": "unarousable"}, "onset": "2025-07-15T07:00Z"}]
EOF
er trial status "$DB" --as-of 2025-07-15T10:00Z
er trial record "$DB" --key "$KEY" --type ae_updated --at 2025-07-15T12:00Z --patient P14 --ae icans-1 --attribution probable
er trial status "$DB" --as-of 2025-07-16

step "the remaining five places at dose 3 (the dose below): a first cohort of 3"
rec <<'EOF'
[{"type": "screened", "at": "2025-07-17T09:00Z", "patient": "P16", "eligible": true},
 {"type": "screened", "at": "2025-07-17T09:10Z", "patient": "P17", "eligible": true},
 {"type": "screened", "at": "2025-07-17T09:20Z", "patient": "P18", "eligible": true},
 {"type": "enrolled", "at": "2025-07-21T09:00Z", "patient": "P16", "dose": 3},
 {"type": "enrolled", "at": "2025-07-21T09:10Z", "patient": "P17", "dose": 3},
 {"type": "enrolled", "at": "2025-07-21T09:20Z", "patient": "P18", "dose": 3},
 {"type": "infused", "at": "2025-07-22T18:00Z", "patient": "P16", "date": "2025-07-22"},
 {"type": "infused", "at": "2025-07-22T18:00Z", "patient": "P17", "date": "2025-07-22"},
 {"type": "infused", "at": "2025-07-22T18:00Z", "patient": "P18", "date": "2025-07-22"}]
EOF
refused er trial record "$DB" --key "$KEY" --type ae_reported --at 2025-07-23 --patient P21 --ae x --term Nausea \
  --category non-hematologic --grade 2 --onset 2025-07-23
refused er trial record "$DB" --key "$KEY" --type ae_reported --at 2025-07-23 --patient P16 --ae x --term Nausea \
  --category non-hematologic --grade 2 --onset 2025-07-20

step "after the cohort's 28-day windows: the investigator and the sponsor go on with the last two places"
er trial status "$DB" --as-of 2025-08-20
er trial record "$DB" --key "$KEY" --type decision_signed --at 2025-08-20T09:00Z --option continue --role investigator \
  --person "Dr L. Wang"
er trial record "$DB" --key "$KEY" --type decision_signed --at 2025-08-20T10:00Z --option continue --role sponsor \
  --person "R. Zhou"
rec <<'EOF'
[{"type": "screened", "at": "2025-08-21T09:30Z", "patient": "P19", "eligible": true},
 {"type": "screened", "at": "2025-08-21T09:40Z", "patient": "P20", "eligible": true},
 {"type": "enrolled", "at": "2025-08-25T09:30Z", "patient": "P19", "dose": 3},
 {"type": "enrolled", "at": "2025-08-25T09:40Z", "patient": "P20", "dose": 3},
 {"type": "infused", "at": "2025-08-26T18:00Z", "patient": "P19", "date": "2025-08-26"},
 {"type": "infused", "at": "2025-08-26T18:00Z", "patient": "P20", "date": "2025-08-26"}]
EOF

step "the end: the remaining subjects observed; the investigator and the sponsor declare the MTD"
er trial status "$DB" --as-of 2025-09-24
er trial record "$DB" --key "$KEY" --type decision_signed --at 2025-09-24T09:00Z --option declare --role investigator \
  --person "Dr L. Wang"
refused er trial record "$DB" --key "$KEY" --type decision_signed --at 2025-09-24T09:30Z --option no-mtd --role sponsor \
  --person "R. Zhou"
er trial record "$DB" --key "$KEY" --type decision_signed --at 2025-09-24T10:00Z --option declare --role sponsor \
  --person "R. Zhou"
er trial status "$DB" --as-of 2025-09-25
er trial status "$DB" --as-of 2025-09-25 --json > "$WORK/status.json"
python3 - "$WORK/status.json" <<'EOF'
import json, sys
status = json.load(open(sys.argv[1], encoding="utf-8"))
assert status["next"]["action"] == "stop", status["next"]
assert status["decision"]["mtd"] == 3, status["decision"]
assert status["observing"] == [], status["observing"]
print(f"MTD: dose {status['decision']['mtd']} ({status['decision']['mtd_label']}); history {status['history']}")
EOF

step "the audit log verifies with the public key, up to the last receipt; its export replays to the same status"
RECEIPT=$(er trial record "$DB" --key "$KEY" --json --type screened --at 2025-09-26T09:00Z --patient P99 \
  --eligible no --note "screened after the end of enrolment" | python3 -c 'import json, sys; print(json.load(sys.stdin)["head"])')
er trial verify "$DB" --key "$KEY.pub" --expect-head "$RECEIPT"
er trial log "$DB" | tail -n 3
er trial export "$DB" -o "$WORK/events.jsonl"
er trial import "$WORK/replay.db" "$WORK/events.jsonl" --key "$KEY"   # creates the store from the export
er trial status "$WORK/replay.db" --as-of 2025-09-25 --json > "$WORK/replay.json"
cmp "$WORK/status.json" "$WORK/replay.json"
echo "replayed status identical"
