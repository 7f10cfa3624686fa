// End-to-end test of the riskstream web console in real headless Chromium.
// Starts the real binary on fresh topics with the console on a free port and two county
// tokens, produces a gas hazard in 330503101 with kcat, and drives the page like an
// operator would. Screenshots go to docs/console/. Run it through ./run.sh.
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
const SENSOR = "S-330503-0042-GAS1";
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
function reading(t, value) {
  return SENSOR + "\t" + JSON.stringify({ sensor_id: SENSOR, site_id: "SITE-330503-0042", region: "330503101",
    kind: "gas_lel", ts: new Date(t).toISOString(), value, unit: "%LEL" });
}
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

test("operators see, acknowledge and close an episode in the console", { timeout: 180000 }, async () => {
  const consolePort = await freePort(), metricsPort = await freePort();
  const base = `http://127.0.0.1:${consolePort}`;
  const dir = mkdtempSync(join(tmpdir(), "rs-console-"));
  const cfg = join(dir, "riskstream.toml");
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
[sinks.alerts]
type = "kafka"
topic = "${topics.alerts}"
[console]
enabled = true
addr = "127.0.0.1:${consolePort}"
actions_topic = "${topics.actions}"
[[console.tokens]]
token = "${TOKEN_503}"
center = "330503"
[[console.tokens]]
token = "${TOKEN_521}"
center = "330521"
`);
  // A normal baseline first (it also creates the sensors topic): 30 readings, 10 s apart.
  const t0 = Date.now() - 15 * 60 * 1000;
  kcatProduce(topics.sensors, Array.from({ length: 30 }, (_, i) => reading(t0 + i * 10000, 3.0 + (i % 3) * 0.1)));

  child = spawn(bin, ["run", "--config", cfg], { env: { ...process.env, RUST_LOG: "warn" }, stdio: ["ignore", "ignore", "inherit"] });
  await until("the console to answer", async () => (await fetch(base + "/api/centers")).ok);
  await until("riskstream to be ready", async () => (await fetch(`http://127.0.0.1:${metricsPort}/readyz`)).ok);
  check("riskstream started with the console on " + base);

  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const ctxA = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const ctxB = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const a = await ctxA.newPage(), b = await ctxB.newPage();
  const pageErrors = [];
  for (const p of [a, b]) p.on("pageerror", (e) => pageErrors.push(String(e)));
  await a.goto(base + "/?center=330503");
  await b.goto(base + "/?center=330521");
  for (const p of [a, b]) await p.locator("#conn.live").waitFor({ timeout: 15000 });
  assert.equal(await a.locator("#center").inputValue(), "330503");
  assert.equal(await a.locator("#open > li").count(), 0);
  check("both pages connected live (SSE), county 330503 and county 330521, no open episodes yet");

  // The hazard: 4 readings at 31.5 %LEL (the alarm limit is 25).
  kcatProduce(topics.sensors, [0, 1, 2, 3].map((i) => reading(t0 + (30 + i) * 10000, 31.5)));
  const card = a.locator('#open > li.lvl-red[data-id^="sensors:threshold:"]');
  await card.waitFor({ timeout: 30000 });
  await a.locator("#red-banner:not([hidden])").waitFor({ timeout: 5000 });
  const text = await card.innerText();
  for (const want of ["RED", SENSOR, "observed", "expected", "threshold 25", "window", "330503101"]) {
    assert.ok(text.includes(want), `card shows ${want}: ${text}`);
  }
  assert.match(await a.locator("#announce").innerText(), /New red alert/);
  check("the red episode appeared live on 330503's page with level, subject, region, evidence and age; red banner and aria-live announcement shown");
  await a.screenshot({ path: join(shots, "open-episodes.png"), fullPage: true });

  await sleep(1500); // let page B receive whatever the broadcast carries
  assert.equal(await b.locator("#open > li").count(), 0, "330521 sees nothing of 330503's episode");
  check("county 330521's page does not show the episode");
  await b.screenshot({ path: join(shots, "other-county.png") });

  const alertId = await card.getAttribute("data-id");
  // 330521's token is refused on 330503's episode.
  const denied = await b.evaluate(async ([id, tok]) => {
    const r = await fetch("/api/episodes/" + encodeURIComponent(id) + "/ack", {
      method: "POST", headers: { Authorization: "Bearer " + tok, "Content-Type": "application/json" }, body: "{}" });
    return r.status;
  }, [alertId, TOKEN_521]);
  assert.equal(denied, 403);
  const noToken = await b.evaluate(async (id) => (await fetch("/api/episodes/" + encodeURIComponent(id) + "/ack", { method: "POST" })).status, alertId);
  assert.equal(noToken, 401);
  check("330521's token gets 403 acking it; no token gets 401");

  // Operator of 330503: token typed into the page, then Acknowledge, then Close (handled).
  await a.locator("#token").fill(TOKEN_503);
  await a.locator("#token").press("Tab");
  await card.getByRole("button", { name: "Acknowledge" }).click();
  await a.locator(`#open > li[data-id="${alertId}"]`, { hasText: "Acknowledged" }).waitFor({ timeout: 10000 });
  check("Acknowledge click: episode shows 'Acknowledged' (202 after the broker's ack, SSE update)");
  await a.locator(`#open > li[data-id="${alertId}"]`).getByRole("button", { name: "Close…" }).click();
  await a.locator("#dlg[open]").waitFor();
  await a.locator("#outcome").selectOption("handled");
  await a.screenshot({ path: join(shots, "close-dialog.png") });
  await a.locator("#dlg-ok").click();
  await a.locator(`#closed > li[data-id="${alertId}"]`, { hasText: "Closed: handled" }).waitFor({ timeout: 10000 });
  check("Close (handled) through the dialog: the episode moved to 'Closed in the last 24 hours'");
  await a.locator("#large").click();
  await a.screenshot({ path: join(shots, "closed-large-type.png"), fullPage: true });
  await a.locator("#large").click();

  // The actions topic holds both events, keyed by alert_id.
  const acts = await until("2 action events on the topic", async () => {
    const got = kcatRead(topics.actions);
    return got.length >= 2 ? got : null;
  });
  assert.deepEqual(acts.map((m) => m.value.action), ["ack", "close"]);
  for (const m of acts) {
    assert.equal(m.key, alertId);
    assert.equal(m.value.by_center, "330503");
    assert.ok(m.value.at);
  }
  assert.equal(acts[1].value.outcome, "handled");
  check("actions topic: ack and close (outcome handled) keyed by alert_id, by_center 330503");

  const m = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const L = ['level="red"', 'center="330503"'];
  assert.equal(metric(m, "riskstream_console_time_to_ack_seconds_count", L), 1);
  assert.equal(metric(m, "riskstream_console_acks_total", [...L, 'within_limit="true"']), 1);
  assert.equal(metric(m, "riskstream_console_closed_total", [...L, 'outcome="handled"']), 1);
  assert.equal(metric(m, "riskstream_console_denied_total", ['reason="outside_center"']), 1);
  assert.equal(metric(m, "riskstream_console_denied_total", ['reason="missing_token"']), 1);
  check("/metrics: time_to_ack count 1, acks_total within_limit=true 1, closed_total handled 1, denied outside_center 1 and missing_token 1");
  console.log(m.split("\n").filter((l) => l.startsWith("riskstream_console_")).map((l) => "    " + l).join("\n"));

  // Readings back to normal: the episode resolves, and that alert carries the actions.
  kcatProduce(topics.sensors, Array.from({ length: 20 }, (_, i) => reading(t0 + (34 + i) * 10000, 3.0)));
  const resolved = await until("the resolved alert", async () =>
    kcatRead(topics.alerts).map((x) => x.value).find((x) => x.alert_id === alertId && x.status === "resolved"));
  assert.equal(resolved.actions.closed_outcome, "handled");
  assert.equal(resolved.actions.acknowledged_by, "330503");
  check("the next alert of the episode (resolved) carries actions {acknowledged_by 330503, closed_outcome handled}");

  assert.deepEqual(pageErrors, [], "no JavaScript errors on the pages");
  check("no JavaScript errors on either page");
});
