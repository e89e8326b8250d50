// Headless Chromium (Debian's, driven by playwright-core from scripts/browser.sh) and a tiny
// page server on 127.0.0.1 that serves the built SDK, RudderStack's npm build and test pages.

import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { freePort } from './helpers.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

export const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export async function launchChromium() {
  const pw = process.env.SLUICE_TEST_PLAYWRIGHT;
  const exe = process.env.SLUICE_TEST_CHROMIUM;
  if (!pw || !exe) {
    throw new Error('SLUICE_TEST_PLAYWRIGHT / SLUICE_TEST_CHROMIUM are not set: run `bash scripts/browser.sh install` and `eval "$(bash scripts/browser.sh env)"`');
  }
  const { chromium } = require(pw);
  return chromium.launch({ executablePath: exe, headless: true, args: CHROMIUM_FLAGS });
}

// Resolved by path: the package's "exports" do not list its UMD files.
const RUDDER_UMD = join(here, '../node_modules/@rudderstack/analytics-js/dist/npm/modern/bundled/umd/index.js');

const SLUICE_PAGE = `<!doctype html><html><head><title>Sluice test page</title>
<script src="/sdk.js"></script>
<script>
  const q = new URLSearchParams(location.search);
  window.analytics = new SluiceAnalytics.Analytics({
    writeKey: q.get('key'), dataPlaneUrl: q.get('dp'),
    flushAt: Number(q.get('flushAt') || 20), flushInterval: Number(q.get('interval') || 100),
    minRetryDelay: 100, maxRetryDelay: 500,
  });
</script></head><body><h1>Sluice</h1></body></html>`;

const RUDDER_PAGE = `<!doctype html><html><head><title>RudderStack test page</title>
<script src="/rudder.js"></script>
<script>
  const q = new URLSearchParams(location.search);
  window.ra = new rudderanalytics.RudderAnalytics();
  window.raReady = new Promise((resolve) => window.ra.ready(resolve));
  window.ra.load(q.get('key'), q.get('dp'), {
    configUrl: q.get('dp'),
    // Nothing from RudderStack's CDN: no destinations (Sluice lists none), no polyfill, and the
    // plugins come from this bundled build. The base URLs point here in case anything tries.
    destSDKBaseURL: location.origin + '/no-cdn/integrations',
    pluginsSDKBaseURL: location.origin + '/no-cdn/plugins',
    polyfillIfRequired: false,
    loadIntegration: false,
    plugins: ['XhrQueue', 'StorageEncryption'],
    sessions: { autoTrack: false },
    logLevel: 'ERROR',
  });
</script></head><body><h1>RudderStack</h1></body></html>`;

/** Serves the pages; every request is in `log`. */
export async function startPageServer() {
  const port = await freePort();
  const log = [];
  const sdk = () => readFileSync(join(here, '../dist/sluice-analytics.min.js'));
  const server = createServer((req, res) => {
    log.push(req.url);
    const path = req.url.split('?')[0];
    const send = (type, body) => res.writeHead(200, { 'Content-Type': type, 'Cache-Control': 'no-store' }).end(body);
    if (path === '/sdk.js') return send('text/javascript', sdk());
    if (path === '/rudder.js') return send('text/javascript', readFileSync(RUDDER_UMD));
    if (path === '/sluice.html') return send('text/html', SLUICE_PAGE);
    if (path === '/rudder.html') return send('text/html', RUDDER_PAGE);
    if (path === '/pixel.html') {
      // An e-mail-like page: no script, two image pixels, one of them missing its event name.
      const dp = new URL(req.url, 'http://x').searchParams.get('dp');
      const q = (params) => new URLSearchParams(params).toString().replace(/&/g, '&amp;');
      return send('text/html', `<!doctype html><title>mail</title>
<img id="ok" src="${dp}/pixel/v1/track?${q({ writeKey: 'js-test-key', anonymousId: 'mail-7', event: 'Email Opened', 'properties.campaign': 'weekly' })}">
<img id="bad" src="${dp}/pixel/v1/track?${q({ writeKey: 'js-test-key', anonymousId: 'mail-7' })}">
<img id="page" src="${dp}/pixel/v1/page?${q({ writeKey: 'js-test-key', anonymousId: 'mail-7', name: 'Newsletter' })}">`);
    }
    if (path === '/bye.html') return send('text/html', '<!doctype html><title>bye</title><p>left');
    res.writeHead(404).end();
  });
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  return { origin: `http://127.0.0.1:${port}`, log, close: () => new Promise((r) => server.close(r)) };
}
