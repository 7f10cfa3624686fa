// End-to-end test of the riskstream web console in real headless Chromium.
// Starts the real binary on fresh topics with the console on a free port and two county
// tokens, produces a gas hazard on three sensors of one site in 330503101 with kcat, and
// drives the page like an operator would: one card for the site event, one
// acknowledgement for all its members. Then a second site's red hazard is left alone and
// climbs to the city's console once its acknowledgement limit passes (issue #23).
// Screenshots go to docs/console/. Run it through ./run.sh.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync, mkdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import net from "node:net";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../..");
const bin = process.env.RISKSTREAM_BIN || join(root, "target/debug/riskstream");
const brokers = process.env.RISKSTREAM_TEST_BROKERS || "127.0.0.1:9092";
const shots = join(root, "docs/console");
mkdirSync(shots, { recursive: true });

const TOKEN_503 = "test-county-330503-" + Math.random().toString(36).slice(2);
const TOKEN_521 = "test-county-330521-" + Math.random().toString(36).slice(2);
const SITE_A = "SITE-330503-0042", SITE_B = "SITE-330503-0019";
const SENSORS_A = ["S-330503-0042-GAS1", "S-330503-0042-GAS2", "S-330503-0042-GAS3"];
const SENSOR_B = "S-330503-0019-GAS1";
const checked = [];
const check = (what) => { checked.push(what); console.log("  checked: " + what); };

function freePort() {
  return new Promise((res) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => res(p)); });
  });
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(what, fn, ms = 30000) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    try { last = await fn(); if (last) return last; } catch (e) { last = e; }
    await sleep(250);
  }
  throw new Error("timed out waiting for " + what + (last ? ": " + last : ""));
}
function kcatProduce(topic, lines) {
  const r = spawnSync("kcat", ["-b", brokers, "-P", "-t", topic, "-K", "\t"], { input: lines.join("\n") + "\n" });
  assert.equal(r.status, 0, "kcat produce: " + r.stderr);
}
function kcatRead(topic) {
  const r = spawnSync("kcat", ["-b", brokers, "-C", "-t", topic, "-e", "-q", "-f", "%k\t%s\n"], { encoding: "utf8", timeout: 20000 });
  return (r.stdout || "").split("\n").filter(Boolean).map((l) => {
    const i = l.indexOf("\t");
    return { key: l.slice(0, i), value: JSON.parse(l.slice(i + 1)) };
  });
}
function reading(sensor, t, value) {
  const site = sensor.startsWith("S-330503-0019") ? SITE_B : SITE_A;
  const region = site === SITE_B ? "330503107" : "330503101";
  return sensor + "\t" + JSON.stringify({ sensor_id: sensor, site_id: site, region,
    kind: "gas_lel", ts: new Date(t).toISOString(), value, unit: "%LEL" });
}
// Readings i in [from, to) of every sensor, 10 s apart, in time order.
function readings(sensors, t0, from, to, value) {
  const out = [];
  for (let i = from; i < to; i++) for (const s of sensors) out.push(reading(s, t0 + i * 10000, value(s, i)));
  return out;
}
const normal = (_s, i) => 3.0 + (i % 3) * 0.1;
function metric(text, name, labels) {
  const line = text.split("\n").find((l) => l.startsWith(name + "{") && labels.every((x) => l.includes(x)));
  return line ? Number(line.split(" ").pop()) : 0;
}

const id = process.pid + "-" + Math.random().toString(16).slice(2, 10);
const topics = { incidents: `console-inc-${id}`, sensors: `console-sen-${id}`, fraud: `console-fr-${id}`,
  dlq: `console-dlq-${id}`, alerts: `console-alerts-${id}`, actions: `console-actions-${id}` };
let child, browser;
after(async () => {
  if (browser) await browser.close().catch(() => {});
  if (child && child.exitCode === null) {
    child.kill("SIGTERM");
    await Promise.race([new Promise((r) => child.once("exit", r)), sleep(10000)]);
  }
  console.log(`\nconsole test checked ${checked.length} things:\n` + checked.map((c) => "  - " + c).join("\n"));
});

test("operators see one card per incident, acknowledge it once for all members, and what nobody acknowledges climbs to the city", { timeout: 300000 }, async () => {
  const consolePort = await freePort(), metricsPort = await freePort();
  const base = `http://127.0.0.1:${consolePort}`;
  const dir = mkdtempSync(join(tmpdir(), "rs-console-"));
  const cfg = join(dir, "riskstream.toml");
  // Red and orange stay with the township and county here, so that only an escalation
  // brings an incident to the city; the acknowledgement limit is short for the test.
  writeFileSync(cfg, `
[kafka]
brokers = "${brokers}"
group_id = "console-group-${id}"
[topics]
incidents = "${topics.incidents}"
sensors = "${topics.sensors}"
fraud = "${topics.fraud}"
dead_letter = "${topics.dlq}"
[processing]
drain_timeout = "5s"
[metrics]
addr = "127.0.0.1:${metricsPort}"
[regions]
file = "${join(root, "config/regions.toml")}"
[alerts]
resolve_after = "1m"
[alerts.route]
red = ["township", "county"]
orange = ["township", "county"]
[sinks.alerts]
type = "kafka"
topic = "${topics.alerts}"
incidents_topic = "${topics.alerts}.incidents"
[console]
enabled = true
addr = "127.0.0.1:${consolePort}"
actions_topic = "${topics.actions}"
[console.ack_limits]
red = "40s"
orange = "40s"
[[console.tokens]]
token = "${TOKEN_503}"
center = "330503"
[[console.tokens]]
token = "${TOKEN_521}"
center = "330521"
`);
  // A normal baseline first (it also creates the sensors topic): 30 readings per sensor, 10 s apart.
  const t0 = Date.now() - 15 * 60 * 1000;
  const ALL = [...SENSORS_A, SENSOR_B];
  kcatProduce(topics.sensors, readings(ALL, t0, 0, 30, normal));

  child = spawn(bin, ["run", "--config", cfg], { env: { ...process.env, RUST_LOG: "warn" }, stdio: ["ignore", "ignore", "inherit"] });
  await until("the console to answer", async () => (await fetch(base + "/api/centers")).ok);
  await until("riskstream to be ready", async () => (await fetch(`http://127.0.0.1:${metricsPort}/readyz`)).ok);
  check("riskstream started with the console on " + base);

  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const pages = [];
  for (let n = 0; n < 3; n++) pages.push(await (await browser.newContext({ viewport: { width: 1400, height: 900 } })).newPage());
  const [a, b, city] = pages;
  const pageErrors = [];
  for (const p of pages) p.on("pageerror", (e) => pageErrors.push(String(e)));
  await a.goto(base + "/?center=330503");
  await b.goto(base + "/?center=330521");
  await city.goto(base + "/?center=330500");
  for (const p of pages) await p.locator("#conn.live").waitFor({ timeout: 15000 });
  assert.equal(await a.locator("#center").inputValue(), "330503");
  assert.equal(await a.locator("#open > li").count(), 0);
  check("three pages connected live (SSE): county 330503, county 330521, the city 330500; no open incidents yet");

  // The site event: 4 readings at 31.5 %LEL (the alarm limit is 25) on all three sensors.
  kcatProduce(topics.sensors, readings(ALL, t0, 30, 34, (s, i) => (s === SENSOR_B ? normal(s, i) : 31.5)));
  const card = a.locator(`#open > li.lvl-red[data-kind="incident"][data-id^="sensors:site:${SITE_A}:"]`);
  await card.waitFor({ timeout: 30000 });
  await a.locator("#red-banner:not([hidden])").waitFor({ timeout: 5000 });
  // Every sensor's threshold episode is folded under the one card.
  await until("the three sensors' episodes under the card", async () => {
    const ids = await card.locator("li.member").evaluateAll((ls) => ls.map((l) => l.dataset.alert));
    return SENSORS_A.every((s) => ids.some((x) => x.startsWith("sensors:threshold:" + s + ":"))) ? ids : null;
  });
  await sleep(1500); // whatever else the step publishes has arrived
  assert.equal(await a.locator("#open > li").count(), 1, "one card for the site event");
  const members = await card.locator("li.member").evaluateAll((ls) => ls.map((l) => l.dataset.alert));
  const text = await card.innerText();
  for (const want of ["RED", SITE_A, "related alerts", "threshold"]) {
    assert.ok(text.includes(want), `card shows ${want}: ${text}`);
  }
  assert.match(await a.locator("#announce").innerText(), /New red incident/);
  check(`the site event on 3 sensors is ONE red card on 330503's page with ${members.length} member episodes folded under it; red banner and aria-live announcement`);
  await card.locator("details.members > summary").click();
  await card.locator("details.members[open] li.member").first().waitFor();
  check("the members unfold under the card (details/summary)");
  await a.screenshot({ path: join(shots, "open-episodes.png"), fullPage: true });

  assert.equal(await b.locator("#open > li").count(), 0, "330521 sees nothing of 330503's incident");
  assert.equal(await city.locator("#open > li").count(), 0, "red stays with township and county here");
  check("county 330521's page and the city's page do not show it");
  await b.screenshot({ path: join(shots, "other-county.png") });

  const incidentId = await card.getAttribute("data-id");
  const post = (p, path, tok) => p.evaluate(async ([path, tok]) => (await fetch(path, {
    method: "POST", headers: tok ? { Authorization: "Bearer " + tok, "Content-Type": "application/json" } : {}, body: "{}" })).status,
  [path, tok]);
  const ackPath = "/api/incidents/" + encodeURIComponent(incidentId) + "/ack";
  assert.equal(await post(b, ackPath, TOKEN_521), 403);
  assert.equal(await post(b, ackPath, null), 401);
  check("330521's token gets 403 acknowledging the incident; no token gets 401");

  // Operator of 330503: token typed into the page, then one Acknowledge, then Close (handled).
  await a.locator("#token").fill(TOKEN_503);
  await a.locator("#token").press("Tab");
  await card.getByRole("button", { name: "Acknowledge" }).click();
  await a.locator(`#open > li[data-id="${incidentId}"]`, { hasText: "Acknowledged" }).waitFor({ timeout: 10000 });
  const eps = (await (await fetch(base + "/api/episodes?center=330503")).json()).episodes
    .filter((v) => v.alert.incident_id === incidentId);
  assert.ok(eps.length >= 3, "members held: " + eps.length);
  for (const v of eps) assert.equal(v.alert.actions?.acknowledged_by, "330503", "member " + v.alert_id + " acknowledged");
  check(`one Acknowledge click acknowledged the incident and all ${eps.length} of its member episodes`);
  await a.locator(`#open > li[data-id="${incidentId}"]`).getByRole("button", { name: "Close…" }).click();
  await a.locator("#dlg[open]").waitFor();
  await a.locator("#outcome").selectOption("handled");
  await a.screenshot({ path: join(shots, "close-dialog.png") });
  await a.locator("#dlg-ok").click();
  await a.locator(`#closed > li[data-id="${incidentId}"]`, { hasText: "Closed: handled" }).waitFor({ timeout: 10000 });
  assert.equal(await a.locator("#open > li").count(), 0);
  check("Close (handled) through the dialog: the incident moved to 'Closed in the last 24 hours'");
  await a.locator("#large").click();
  await a.screenshot({ path: join(shots, "closed-large-type.png"), fullPage: true });
  await a.locator("#large").click();

  // The actions topic holds both events, keyed by incident_id.
  const acts = await until("2 action events on the topic", async () => {
    const got = kcatRead(topics.actions);
    return got.length >= 2 ? got : null;
  });
  assert.deepEqual(acts.map((m) => m.value.action), ["ack", "close"]);
  for (const m of acts) {
    assert.equal(m.key, incidentId);
    assert.equal(m.value.incident_id, incidentId);
    assert.equal(m.value.by_center, "330503");
    assert.ok(m.value.at);
  }
  assert.equal(acts[1].value.outcome, "handled");
  assert.ok(acts[1].value.members.length >= 3, "the close records its members");
  check("actions topic: ack and close (outcome handled, with its members) keyed by incident_id, by_center 330503");

  const m = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const L = ['level="red"', 'center="330503"'];
  assert.equal(metric(m, "riskstream_console_time_to_ack_seconds_count", L), 1);
  assert.equal(metric(m, "riskstream_console_acks_total", [...L, 'within_limit="true"']), 1);
  assert.equal(metric(m, "riskstream_console_closed_total", [...L, 'outcome="handled"']), 1);
  assert.equal(metric(m, "riskstream_console_denied_total", ['reason="outside_center"']), 1);
  assert.equal(metric(m, "riskstream_console_denied_total", ['reason="missing_token"']), 1);
  check("/metrics per incident: time_to_ack count 1, acks_total within_limit=true 1, closed_total handled 1 (not one per member); denied outside_center 1 and missing_token 1");

  // Readings back to normal: every member resolves, and those alerts carry the actions.
  kcatProduce(topics.sensors, readings(ALL, t0, 34, 54, normal));
  const resolved = await until("the members' resolved alerts", async () => {
    const r = kcatRead(topics.alerts).map((x) => x.value)
      .filter((x) => x.incident_id === incidentId && x.detector === "threshold" && x.status === "resolved");
    return r.length >= 3 ? r : null;
  });
  for (const r of resolved) {
    assert.equal(r.actions.closed_outcome, "handled", r.alert_id);
    assert.equal(r.actions.acknowledged_by, "330503", r.alert_id);
  }
  check("every member's resolved alert carries the incident's actions {acknowledged_by 330503, closed_outcome handled}");

  // Site B's red hazard, left alone: after the 40 s limit the city joins its route.
  kcatProduce(topics.sensors, readings([SENSOR_B], t0, 54, 58, () => 31.5));
  const cardB = (p) => p.locator(`#open > li[data-kind="incident"][data-id^="sensors:site:${SITE_B}:"]`);
  await cardB(a).waitFor({ timeout: 30000 });
  const shownAt = Date.now();
  assert.equal(await cardB(city).count(), 0, "not the city's yet");
  check("site B's red incident is on county 330503's page, not on the city's");
  await cardB(city).waitFor({ timeout: 75000 });
  const waited = (Date.now() - shownAt) / 1000;
  const cityText = await cardB(city).innerText();
  assert.match(cityText, /Escalated to .* not acknowledged within 40s \(red\)/);
  assert.ok(waited >= 30, "escalated only after the limit: " + waited + " s");
  assert.equal(await city.locator(`#open > li[data-id^="sensors:site:${SITE_A}:"], #closed > li[data-id^="sensors:site:${SITE_A}:"]`).count(), 0,
    "the incident acknowledged in time never reached the city");
  await city.screenshot({ path: join(shots, "escalated-city.png"), fullPage: true });
  check(`unacknowledged, site B's red incident reached the city's page after ${waited.toFixed(0)} s with the reason shown; the incident acknowledged in time did not`);
  const m2 = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  assert.equal(metric(m2, "riskstream_incidents_escalated_total", ['level="red"', 'to="city"']), 1);
  const esc = kcatRead(topics.actions).filter((x) => x.value.action === "escalate");
  assert.equal(esc.length, 1);
  assert.equal(esc[0].value.to_center, "330500");
  assert.ok(esc[0].key.startsWith("sensors:site:" + SITE_B));
  check("riskstream_incidents_escalated_total{level=red,to=city} 1; the escalation is on the actions topic, keyed by incident_id");

  assert.deepEqual(pageErrors, [], "no JavaScript errors on the pages");
  check("no JavaScript errors on any page");
});
