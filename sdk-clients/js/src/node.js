// The Node client: an in-memory queue, gzip for larger bodies, and `closeAndFlush()` to call
// before the process exits (its timers never keep a process alive by themselves).

import { gzipSync } from 'node:zlib';
import { hostname } from 'node:os';
import { Core, VERSION } from './core.js';

class MemoryStore {
  load() {
    return [];
  }
  save() {}
}

// Bodies below this go as they are: gzip costs more than it saves on a few events.
const GZIP_FROM_BYTES = 1024;

async function send(url, body, headers, timeout) {
  let payload = body;
  const h = { ...headers, 'User-Agent': `sluice-analytics-node/${VERSION}` };
  if (Buffer.byteLength(body) >= GZIP_FROM_BYTES) {
    payload = gzipSync(body);
    h['Content-Encoding'] = 'gzip';
  }
  const res = await fetch(url, { method: 'POST', headers: h, body: payload, signal: AbortSignal.timeout(timeout) });
  const text = await res.text().catch(() => '');
  const ra = res.headers.get('retry-after');
  let retryAfter = null;
  if (ra) {
    const n = Number(ra);
    retryAfter = Number.isFinite(n) ? n * 1000 : Math.max(0, Date.parse(ra) - Date.now()) || null;
  }
  return { status: res.status, retryAfter, body: text.slice(0, 300) };
}

export class Analytics extends Core {
  constructor(options) {
    const host = hostname();
    super(options, {
      store: new MemoryStore(),
      context: () => ({ device: { hostname: host }, os: { name: process.platform }, runtime: { name: 'node', version: process.version } }),
      send,
      identity: null,
    });
  }
}

export { VERSION };
export default Analytics;
