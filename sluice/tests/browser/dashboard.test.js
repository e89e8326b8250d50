// The built-in dashboard in headless Chromium (playwright-core), against the real `sluice run`:
// the page loads with no console error and no request beyond the admin listener, the numbers it
// shows match /metrics after known traffic, recent errors carry their reasons, and screenshots
// (laptop and wall screen) are written to the test output.
//
// Run by scripts/test.sh after `cargo test`: SLUICE_BIN is the debug binary, SLUICE_TEST_CHROMIUM
// and SLUICE_TEST_PLAYWRIGHT come from `scripts/browser.sh env`. SLUICE_TEST_OUTPUT (default: a
// directory under the system temp dir) receives the screenshots; SLUICE_UPDATE_SCREENSHOT=1 also
// copies the laptop one to docs/dashboard.png.
"use strict";

const { test } = require("node:test");
const assert = require("node:assert/strict");
const { spawn } = require("node:child_process");
const fs = require("node:fs");
const http = require("node:http");
const net = require("node:net");
const os = require("node:os");
const path = require("node:path");

const { chromium } = require(process.env.SLUICE_TEST_PLAYWRIGHT || "playwright-core");
const BIN = process.env.SLUICE_BIN;
const REPO = path.resolve(__dirname, "../../..");

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function waitFor(what, fn, ms = 20000) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what} (last: ${last})`);
}

// Sum of a metric in Prometheus text over the samples whose labels contain `match`.
function metric(text, name, match = "") {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith(name + "{") || line.startsWith(name + " ")) {
      if (match && !line.includes(match)) continue;
      sum += Number(line.slice(line.lastIndexOf(" ") + 1));
    }
  }
  return sum;
}

async function send(port, key, events) {
  const batch = events.map((e, i) => ({ type: "track", userId: `u${i % 7}`, event: e }));
  const r = await fetch(`http://127.0.0.1:${port}/v1/batch`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: "Basic " + Buffer.from(`${key}:`).toString("base64") },
    body: JSON.stringify({ batch }),
  });
  await r.text();
  return r.status;
}

test("the dashboard shows what /metrics shows, without console errors", { timeout: 120000 }, async (t) => {
  assert.ok(BIN && fs.existsSync(BIN), `SLUICE_BIN (${BIN}) must be the sluice binary`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "sluice-dashboard-"));
  const out = process.env.SLUICE_TEST_OUTPUT || path.join(os.tmpdir(), "sluice-test-output");
  fs.mkdirSync(out, { recursive: true });

  // A webhook that refuses everything with 400: its events are dead-lettered with that reason.
  const hook = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      res.writeHead(400, { "content-type": "application/json" });
      res.end('{"error":"schema mismatch: properties.plan"}');
    });
  });
  await new Promise((r) => hook.listen(0, "127.0.0.1", r));
  t.after(() => hook.close());

  const [port, adminPort] = [await freePort(), await freePort()];
  const config = path.join(dir, "sluice.yaml");
  fs.writeFileSync(config, `data_dir: ${dir}/data
collector:
  listen: 127.0.0.1:${port}
admin:
  listen: 127.0.0.1:${adminPort}
sources:
  - id: web
    write_keys: ["web-key"]
  - id: ios
    write_keys: ["ios-key"]
destinations:
  - id: warehouse
    batch: { max_events: 50, max_age_ms: 200 }
    sink: { type: files, path: ${dir}/out }
  - id: crm_hook
    batch: { max_events: 50, max_age_ms: 200 }
    sink: { type: webhook, url: "http://127.0.0.1:${hook.address().port}/hook", timeout_ms: 2000 }
  - id: paused
    enabled: false
    sink: { type: files, path: ${dir}/paused }
`);
  const log = fs.openSync(path.join(dir, "sluice.log"), "a");
  const sluice = spawn(BIN, ["run", "--config", config], { cwd: REPO, stdio: ["ignore", log, log] });
  t.after(() => sluice.kill("SIGKILL"));
  const admin = `http://127.0.0.1:${adminPort}`;
  await waitFor("sluice", async () => (await fetch(`${admin}/ready`)).ok);

  // Known traffic: 12 web + 5 ios events accepted, one request with an unknown key refused.
  for (let n = 0; n < 3; n++) assert.equal(await send(port, "web-key", ["Post Created", "Post Read", "Post Read", "Reaction Added"]), 200);
  assert.equal(await send(port, "ios-key", Array(5).fill("App Opened")), 200);
  assert.equal(await send(port, "nobody", ["x"]), 401);
  const settled = async () => {
    const m = await (await fetch(`${admin}/metrics`)).text();
    const received = metric(m, "sluice_events_received_total");
    const done = metric(m, "sluice_destination_delivered_total", 'destination="warehouse"') === received
      && metric(m, "sluice_destination_dead_lettered_total", 'destination="crm_hook"') === received;
    return done && m;
  };
  let text = await waitFor("delivery and dead letters", settled);
  assert.equal(metric(text, "sluice_events_received_total"), 17);

  const browser = await chromium.launch({
    executablePath: process.env.SLUICE_TEST_CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  t.after(() => browser.close());
  const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  const problems = [];
  page.on("console", (m) => m.type() === "error" && problems.push(`console: ${m.text()}`));
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("requestfailed", (r) => problems.push(`request failed: ${r.url()}`));
  page.on("request", (r) => !r.url().startsWith(admin + "/") && !r.url().startsWith("data:") && problems.push(`external request: ${r.url()}`));

  await page.goto(`${admin}/dashboard`);
  const polls = async (n) => waitFor(`${n} polls`, () => page.evaluate((n) => Number(document.body.dataset.polls || 0) >= n, n));
  await polls(2);
  const shown = (key) => page.textContent(`[data-metric="${key}"]`);
  const asNumber = (s) => Number(s.replace(/,/g, ""));

  const check = async (m) => {
    assert.equal(asNumber(await shown("received_total")), metric(m, "sluice_events_received_total"));
    assert.equal(asNumber(await shown("rejected_total")), metric(m, "sluice_requests_rejected_total"));
    assert.equal(asNumber(await shown("delivered_total")), metric(m, "sluice_destination_delivered_total"));
    assert.equal(asNumber(await shown("dead_lettered_total")), metric(m, "sluice_destination_dead_lettered_total"));
    const row = (id) => page.$$eval(`tr[data-destination="${id}"] td`, (tds) => tds.map((td) => td.textContent));
    const hookRow = await row("crm_hook");
    assert.equal(asNumber(hookRow[6]), metric(m, "sluice_destination_dead_lettered_total", 'destination="crm_hook"'));
    assert.equal(asNumber(hookRow[2]), metric(m, "sluice_destination_delivered_total", 'destination="crm_hook"'));
    const wh = await row("warehouse");
    assert.equal(asNumber(wh[2]), metric(m, "sluice_destination_delivered_total", 'destination="warehouse"'));
    assert.equal(asNumber(wh[3]), metric(m, "sluice_destination_lag_events", 'destination="warehouse"'));
    assert.equal((await row("paused"))[1], "disabled");
  };
  await check(text);
  assert.equal(await shown("received_total"), "17");

  // Recent errors name the cause: the webhook's 400 and the unknown write key.
  const errors = await page.$$eval("#errors tbody tr", (trs) => trs.map((tr) => tr.textContent));
  assert.ok(errors.some((e) => e.includes("dead_lettered") && e.includes("crm_hook") && e.includes("400")), errors.join("\n"));
  assert.ok(errors.some((e) => e.includes("rejected") && e.includes("unknown_write_key")), errors.join("\n"));

  // Some seconds of traffic so the charts have lines, then the numbers again and the screenshots.
  for (let s = 0; s < 8; s++) {
    await send(port, "web-key", Array(20 + 15 * s).fill("Post Read"));
    await send(port, "ios-key", Array(10 + (s % 3) * 10).fill("App Opened"));
    if (s === 4) await send(port, "web-key", [{ bad: true }]);
    await new Promise((r) => setTimeout(r, 700));
  }
  text = await waitFor("the later traffic delivered", settled);
  const before = await page.evaluate(() => Number(document.body.dataset.polls));
  await polls(before + 2);
  await check(text);
  assert.ok(await page.evaluate(() => document.querySelectorAll("#legend-ingest span").length) >= 2, "one ingest line per source");

  await page.screenshot({ path: path.join(out, "dashboard.png"), fullPage: true });
  await page.setViewportSize({ width: 2560, height: 1440 });
  await page.waitForTimeout(300);
  await page.screenshot({ path: path.join(out, "dashboard-wall.png") });
  console.log(`screenshots in ${out}`);
  if (process.env.SLUICE_UPDATE_SCREENSHOT === "1") fs.copyFileSync(path.join(out, "dashboard.png"), path.join(REPO, "docs/dashboard.png"));

  assert.deepEqual(problems, []);
});
