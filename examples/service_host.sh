#!/usr/bin/env bash
# A host system that is not written in Python (here: bash and curl) asks the service what the protocol
# says and records trial events.  Run it against a server:
#   BASE=http://127.0.0.1:8000 TOKEN=... TRIAL=demo bash examples/service_host.sh
# TOKEN must hold the admin and investigator roles for TRIAL (or none at all when the server runs without
# --users on loopback).
set -euo pipefail
: "${BASE:?the server, e.g. http://127.0.0.1:8000}" "${TOKEN:=}" "${TRIAL:=demo}"

api() {  # METHOD PATH [JSON] [more curl arguments]: print the answer; exit status 22 on an HTTP error
  local args=(-sS --fail-with-body -X "$1" "$BASE$2" -H "Authorization: Bearer $TOKEN")
  [ -n "${3:-}" ] && args+=(-H "Content-Type: application/json" --data "$3")
  local status=0
  curl "${args[@]}" "${@:4}" || status=$?
  echo; return "$status"
}

echo "# what the protocol says after one patient without DLT at dose 1"
api POST /v1/protocols/nct07117175/decide '{"history": "1N"}' | grep -o '"rule":"[^"]*"'

echo "# a trial, a screening (sent twice with one Idempotency-Key: stored once) and an enrolment"
api POST /v1/trials "{\"id\": \"$TRIAL\", \"protocol\": \"nct07117175\"}"
screened='{"type": "screened", "at": "2025-03-03T09:00Z", "patient": "P01", "eligible": true}'
api POST "/v1/trials/$TRIAL/events" "$screened" -H "Idempotency-Key: screen-P01"
api POST "/v1/trials/$TRIAL/events" "$screened" -H "Idempotency-Key: screen-P01"
api POST "/v1/trials/$TRIAL/events" '{"type": "enrolled", "at": "2025-03-04T10:00Z", "patient": "P01", "dose": 1}'

echo "# what the trial waits for now"
api GET "/v1/trials/$TRIAL/status?as_of=2025-03-10" | grep -o '"next":{"action":"[a-z]*"'

echo "# a second patient now is refused, with the CLI's one-line message"
api POST "/v1/trials/$TRIAL/events" '{"type": "enrolled", "at": "2025-03-05", "patient": "P02", "dose": 1}' \
  || echo "(refused, curl exit status $?)"
