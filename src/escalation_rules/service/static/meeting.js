// The dose-escalation meeting page: reads the trial through the /v1 API with the token given at sign-in
// (kept in this browser tab's sessionStorage only) and signs decisions in the caller's own role.
"use strict";

const $ = (id) => document.getElementById(id);
const session = { trial: null, token: null, info: null };

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function row(cells, cls) {
  const tr = el("tr", null, cls);
  for (const cell of cells) tr.appendChild(cell instanceof Node ? wrap(cell) : el("td", cell));
  return tr;
}

function wrap(node) {
  const td = el("td");
  td.appendChild(node);
  return td;
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (session.token) headers["Authorization"] = "Bearer " + session.token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch("/v1/trials/" + encodeURIComponent(session.trial) + path,
    { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || ("HTTP " + response.status));
  return data;
}

function day(moment) { return moment ? moment.slice(0, 10) : "—"; }

function showChain(report) {
  const chain = $("chain");
  chain.className = "chain " + (report.ok ? "ok" : "broken");
  chain.textContent = report.ok
    ? "Audit chain verified: " + report.events + " events, hash chain intact, every event valid."
    : "Audit chain BROKEN: " + report.problems.join("; ");
}

function showDecision(status, log) {
  const next = status.next, decision = status.decision;
  const words = {
    enrol: "Enrol " + next.places + " patient(s) at dose " + next.dose + " (cohort " + next.cohort + ")",
    wait: "Wait until " + day(next.until) + " for " + next.waiting.join(", "),
    sign: "Sign-off needed from " + next.roles.join(" and ") + " on one of: " + next.options.join(", "),
    stop: "Stop: MTD " + (decision.mtd === null ? "not determined" : "dose " + decision.mtd + " (" + decision.mtd_label + ")"),
  };
  $("next-action").textContent = words[next.action] || next.action;
  $("reason").textContent = next.reason;
  $("rule").textContent = decision.rule;
  $("clause").textContent = decision.clause;
  const options = clear($("options"));
  for (const option of decision.options || []) {
    options.appendChild(el("li", option.id + ": " + option.label));
  }
  const signoff = clear($("signoff").tBodies[0]);
  const buttons = clear($("sign-buttons"));
  $("signoff").hidden = next.action !== "sign";
  if (next.action !== "sign") return;
  const signers = {};
  for (const entry of log.events) {
    if (entry.event.type === "decision_signed") signers[entry.event.role] = entry.event.person;
  }
  for (const role of next.roles) {
    const option = next.signed[role];
    const text = option ? "signed " + option + " by " + (signers[role] || "?") : "still must sign";
    signoff.appendChild(row([role, text], option ? "signed" : "missing"));
  }
  // every signature at one decision point is for the same option: once one is signed, only it is offered
  const agreed = Object.values(next.signed)[0];
  for (const role of session.info.signing_roles) {
    if (!next.roles.includes(role) || next.signed[role]) continue;
    for (const option of agreed ? [agreed] : next.options) {
      const button = el("button", "Sign “" + option + "” as " + role, "sign");
      button.type = "button";
      button.id = "sign-" + option + "-" + role;
      button.addEventListener("click", () => sign(option, role, decision.rule));
      buttons.appendChild(button);
    }
  }
}

function showLadder(status) {
  const body = clear($("ladder").tBodies[0]);
  const current = status.next.dose || status.decision.dose;
  for (const dose of session.info.protocol.doses) {
    const patients = status.patients.filter((p) => p.dose === dose.level);
    const dlts = patients.filter((p) => p.outcome === "dlt").length;
    body.appendChild(row([dose.level, dose.label, patients.length, dlts], dose.level === current ? "current" : ""));
  }
}

function showCohorts(status) {
  const body = clear($("cohorts").tBodies[0]);
  const byId = Object.fromEntries(status.patients.map((p) => [p.patient, p]));
  for (const cohort of status.cohorts) {
    for (const id of cohort.patients) {
      const p = byId[id];
      const outcome = el("span", p.outcome, p.outcome);
      body.appendChild(row([cohort.cohort, cohort.dose, id, outcome, p.infused || "—", day(p.window_closes),
        p.reason]));
    }
  }
  const pending = clear($("pending"));
  const waiting = status.patients.filter((p) => p.outcome === "pending");
  if (!waiting.length) pending.appendChild(el("li", "none"));
  for (const p of waiting) {
    pending.appendChild(el("li", p.patient + " (dose " + p.dose + "): pending until " +
      (p.until ? day(p.until) : "more is recorded") + ": " + p.reason));
  }
}

function showLog(log) {
  const body = clear($("log").tBodies[0]);
  for (const entry of log.events) {
    const { type, at, ...rest } = entry.event;
    const details = Object.entries(rest).map(([k, v]) => k + "=" + JSON.stringify(v)).join(" ");
    body.appendChild(row([entry.seq, entry.recorded_at, type + " at " + at, details, entry.recorded_by || "—",
      entry.hash.slice(0, 12)]));
  }
}

async function refresh() {
  document.body.dataset.state = "loading";  // "ready" once every section shows the same moment
  const [status, log, report] = await Promise.all([api("GET", "/status"), api("GET", "/log"), api("GET", "/verify")]);
  showChain(report);
  showDecision(status, log);
  showLadder(status);
  showCohorts(status);
  showLog(log);
  document.body.dataset.state = "ready";
}

async function sign(option, role, rule) {
  document.body.dataset.state = "loading";
  $("message").textContent = "";
  try {
    const answer = await api("POST", "/events", { type: "decision_signed", option, role, rule });
    $("message").textContent = "Recorded your signature (event " + answer.recorded.join(", ") + ").";
  } catch (error) {
    $("message").textContent = "Refused: " + error.message;
  }
  await refresh();
}

async function signIn(event) {
  if (event) event.preventDefault();
  session.trial = $("trial").value.trim();
  session.token = $("token").value.trim();
  $("signin-error").textContent = "";
  try {
    session.info = await api("GET", "");
    sessionStorage.setItem("meeting", JSON.stringify({ trial: session.trial, token: session.token }));
    $("who").textContent = session.info.person;
    $("trial-name").textContent = session.trial;
    $("roles").textContent = session.info.roles.join(", ");
    $("signin").hidden = true;
    $("meeting").hidden = false;
    await refresh();
  } catch (error) {
    $("signin-error").textContent = error.message;
  }
}

function signOut() {
  sessionStorage.removeItem("meeting");
  location.reload();
}

document.addEventListener("DOMContentLoaded", () => {
  $("signin").addEventListener("submit", signIn);
  $("refresh").addEventListener("click", () => refresh().catch((e) => { $("message").textContent = e.message; }));
  $("signout").addEventListener("click", signOut);
  const params = new URLSearchParams(location.search);
  if (params.get("trial")) $("trial").value = params.get("trial");
  const kept = JSON.parse(sessionStorage.getItem("meeting") || "null");
  if (kept) {
    $("trial").value = kept.trial;
    $("token").value = kept.token;
    signIn();
  }
});
