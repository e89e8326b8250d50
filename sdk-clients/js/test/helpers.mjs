// Starts the real `sluice` binary on a free port with a files destination, and reads what that
// destination wrote. Also a fault-injecting HTTP proxy for the status codes the collector only
// gives under conditions that are slow to set up (503 with Retry-After).

import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, readdirSync, readFileSync, openSync, rmSync } from 'node:fs';
import { createServer, request } from 'node:http';
import { tmpdir, homedir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';

export const WRITE_KEY = 'js-test-key';

export function sluiceBinary() {
  if (process.env.SLUICE_BIN) return process.env.SLUICE_BIN;
  const target = process.env.CARGO_TARGET_DIR || join(homedir(), '.cache/sluice/target');
  return join(target, 'debug/sluice');
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function waitFor(what, fn, timeoutMs = 20000, everyMs = 50) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await fn();
    if (last) return last;
    await sleep(everyMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/** A temporary directory with a config: one source, one files destination under dir/out. */
export function makeConfig({ port, rateLimit } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-js-'));
  const rate = rateLimit ? `\n    rate_limit: { events_per_second: ${rateLimit.eventsPerSecond}, burst: ${rateLimit.burst} }` : '';
  const yaml = `data_dir: ${join(dir, 'data')}
collector:
  listen: 127.0.0.1:${port}
  workers: 1
sources:
  - id: js
    write_keys: ["${WRITE_KEY}"]${rate}
destinations:
  - id: out
    batch: { max_events: 500, max_age_ms: 100 }
    sink: { type: files, path: ${join(dir, 'out')} }
`;
  writeFileSync(join(dir, 'sluice.yaml'), yaml);
  return { dir, config: join(dir, 'sluice.yaml'), outDir: join(dir, 'out') };
}

/** Starts sluice; resolves once /health answers. `stop()` ends it (SIGTERM, then waits). */
export async function startSluice(opts = {}) {
  const port = opts.port || (await freePort());
  const cfg = opts.cfg || makeConfig({ port, rateLimit: opts.rateLimit });
  const logPath = join(cfg.dir, 'sluice.log');
  const log = openSync(logPath, 'a');
  const child = spawn(sluiceBinary(), ['run', '--config', cfg.config], { stdio: ['ignore', log, log] });
  let exited = null;
  child.on('exit', (code, signal) => (exited = { code, signal }));
  const url = `http://127.0.0.1:${port}`;
  await waitFor(`sluice on ${url}`, async () => {
    if (exited) throw new Error(`sluice exited early (${JSON.stringify(exited)}): ${readFileSync(logPath, 'utf8')}`);
    try {
      return (await fetch(`${url}/health`)).ok;
    } catch {
      return false;
    }
  });
  return {
    port,
    url,
    cfg,
    child,
    async stop() {
      if (exited) return;
      child.kill('SIGTERM');
      await waitFor('sluice to exit', () => exited !== null, 15000);
    },
    cleanup() {
      rmSync(cfg.dir, { recursive: true, force: true });
    },
  };
}

/** Every event the files destination wrote under outDir (finished files only). */
export function delivered(outDir) {
  const events = [];
  const walk = (dir) => {
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (e.name.startsWith('.')) continue; // still being written
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ndjson.gz')) {
        for (const line of gunzipSync(readFileSync(p)).toString('utf8').split('\n')) {
          if (line.trim()) events.push(JSON.parse(line));
        }
      }
    }
  };
  walk(outDir);
  return events;
}

/** Waits until `n` events (optionally matching `filter`) were delivered; returns them. */
export function waitDelivered(outDir, n, filter = () => true, timeoutMs = 20000) {
  return waitFor(`${n} delivered events`, () => {
    const got = delivered(outDir).filter(filter);
    return got.length >= n ? got : null;
  }, timeoutMs);
}

/**
 * A proxy in front of the collector. `plan(req)` may return `{ status, headers }` to answer
 * instead of the collector; every request is logged with its time and the answer's status.
 */
export async function startProxy(targetPort, plan) {
  const port = await freePort();
  const log = [];
  const server = createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const entry = { at: Date.now(), method: req.method, url: req.url, status: 0 };
      log.push(entry);
      const fake = plan(req, log);
      if (fake) {
        entry.status = fake.status;
        res.writeHead(fake.status, { 'Content-Type': 'application/json', ...fake.headers });
        res.end(JSON.stringify({ error: 'injected', message: `proxy answered ${fake.status}` }));
        return;
      }
      const up = request({ host: '127.0.0.1', port: targetPort, method: req.method, path: req.url, headers: req.headers }, (r) => {
        entry.status = r.statusCode;
        res.writeHead(r.statusCode, r.headers);
        r.pipe(res);
      });
      up.on('error', () => {
        entry.status = 502;
        res.writeHead(502).end();
      });
      up.end(Buffer.concat(chunks));
    });
  });
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${port}`, log, close: () => new Promise((r) => server.close(r)) };
}
