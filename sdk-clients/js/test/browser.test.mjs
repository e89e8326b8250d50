// The browser build in headless Chromium, and RudderStack's own browser SDK (v3, from npm)
// configured from Sluice's /sourceConfig, both against the real collector binary.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { WRITE_KEY, startSluice, freePort, makeConfig, waitDelivered, startProxy } from './helpers.mjs';
import { launchChromium, startPageServer } from './browser_helpers.mjs';

let browser;
let pages;
const servers = [];
before(async () => {
  browser = await launchChromium();
  pages = await startPageServer();
});
after(async () => {
  await browser?.close();
  await pages?.close();
  for (const s of servers) {
    await s.stop();
    s.cleanup();
  }
});
async function sluice(opts) {
  const s = await startSluice(opts);
  servers.push(s);
  return s;
}

/** A fresh context (own localStorage) that records every URL the browser asks for. */
async function newPage() {
  const context = await browser.newContext();
  const requests = [];
  context.on('request', (r) => requests.push({ url: r.url(), method: r.method(), type: r.resourceType() }));
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  return { context, page, requests, errors };
}

const sluicePage = (dp, extra = '') => `${pages.origin}/sluice.html?key=${WRITE_KEY}&dp=${encodeURIComponent(dp)}${extra}`;

function assertLocalOnly(requests) {
  const outside = requests.filter((r) => !r.url.startsWith('http://127.0.0.1:') && !r.url.startsWith('data:') && r.url !== 'about:blank');
  assert.deepEqual(outside, [], 'no request may leave 127.0.0.1');
}

test('browser: events land with page context and a persisted anonymous id', async () => {
  const s = await sluice();
  const { context, page, requests, errors } = await newPage();
  await page.goto(sluicePage(s.url), { waitUntil: 'load' });
  const first = await page.evaluate(() => [
    analytics.page(),
    analytics.track('Post Created', { channel: 'town-square' }),
    analytics.identify('u-42', { role: 'admin' }),
    analytics.track('Reaction Added', { emoji: 'tada' }),
  ]);
  await page.evaluate(() => analytics.flush());
  const got = await waitDelivered(s.cfg.outDir, 4);
  const byId = new Map(got.map((e) => [e.messageId, e]));
  const pv = byId.get(first[0]);
  assert.equal(pv.type, 'page');
  assert.equal(pv.properties.path, '/sluice.html');
  assert.equal(pv.properties.title, 'Sluice test page');
  assert.equal(pv.context.page.url.split('?')[0], `${pages.origin}/sluice.html`);
  assert.match(pv.context.userAgent, /Chrome/);
  assert.equal(pv.context.library.name, '@sluice/analytics');
  const anon = pv.anonymousId;
  assert.match(anon, /^[0-9a-f-]{36}$/);
  const after = byId.get(first[3]);
  assert.equal(after.userId, 'u-42', 'identify() sticks to later events');
  assert.equal(after.anonymousId, anon);
  assert.equal(after.context.traits.role, 'admin');

  // A reload keeps the anonymous id and the user (localStorage + cookie).
  await page.reload({ waitUntil: 'load' });
  const again = await page.evaluate(() => analytics.track('Reloaded'));
  await page.evaluate(() => analytics.flush());
  const [reloaded] = await waitDelivered(s.cfg.outDir, 1, (e) => e.messageId === again);
  assert.equal(reloaded.anonymousId, anon);
  assert.equal(reloaded.userId, 'u-42');
  assert.ok((await context.cookies()).some((c) => c.name === 'sluice_aid' && c.value === anon));
  assert.deepEqual(errors, []);
  assertLocalOnly(requests);
  await context.close();
});

test('browser: collector down, page reloaded, events sent once the collector is back', async () => {
  const port = await freePort();
  const cfg = makeConfig({ port });
  const dp = `http://127.0.0.1:${port}`;
  const { context, page, errors } = await newPage();
  await page.goto(sluicePage(dp), { waitUntil: 'load' });
  const ids = await page.evaluate(() => {
    const out = [];
    for (let i = 0; i < 5; i++) out.push(analytics.track('Offline Action', { i }));
    return out;
  });
  await page.waitForFunction(() => analytics.stats.retries >= 1);
  const stored = await page.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith('sluice:q:')).length);
  assert.equal(stored, 1, 'the queue is in localStorage');

  await page.reload({ waitUntil: 'load' });
  // The new page adopted the old page's queue (the old one closed on pagehide, without beaconing
  // because the collector was failing).
  assert.deepEqual((await page.evaluate(() => analytics.queue.map((m) => m.messageId))).sort(), [...ids].sort());

  const s = await sluice({ port, cfg });
  const got = await waitDelivered(s.cfg.outDir, 5, (e) => e.event === 'Offline Action');
  assert.deepEqual(got.map((e) => e.messageId).sort(), [...ids].sort());
  assert.deepEqual(got.map((e) => e.properties.i), [0, 1, 2, 3, 4], 'in order');
  await page.waitForFunction(() => analytics.queue.length === 0);
  assert.deepEqual(errors, []);
  await context.close();
});

test('browser: events still queued when the page goes away leave by sendBeacon', async () => {
  const s = await sluice();
  // The proxy records what reached the collector (Chromium does not report beacons sent while a
  // page unloads to playwright).
  const proxy = await startProxy(s.port, () => null);
  const { context, page, errors } = await newPage();
  // A long interval: nothing is sent before the page is left, except the flushed first event,
  // which shows the page that the collector is up.
  await page.goto(sluicePage(proxy.url, '&interval=600000&flushAt=100'), { waitUntil: 'load' });
  const warm = await page.evaluate(async () => {
    const id = analytics.track('Warm Up');
    await analytics.flush();
    return id;
  });
  const ids = await page.evaluate(() => [analytics.track('Draft Saved'), analytics.track('Tab Closed', { n: 2 }), analytics.page()]);
  await page.goto(`${pages.origin}/bye.html`, { waitUntil: 'load' });
  const got = await waitDelivered(s.cfg.outDir, 4);
  assert.deepEqual(got.map((e) => e.messageId).sort(), [warm, ...ids].sort());
  const posts = proxy.log.filter((r) => r.method === 'POST');
  assert.ok(posts[0].url.startsWith('/v1/batch'), 'the warm-up went by fetch');
  assert.ok(posts.length >= 2, 'then something was posted on leaving');
  for (const r of posts.slice(1)) assert.ok(r.url.startsWith(`/beacon/v1/batch?writeKey=${WRITE_KEY}`), `only beacons carried the rest: ${r.url}`);
  assert.deepEqual(posts.map((r) => r.status), posts.map(() => 200));
  // The collector was up, so the beaconed events were forgotten: the next page has nothing to resend.
  await page.goto(sluicePage(proxy.url, '&interval=600000&flushAt=100'), { waitUntil: 'load' });
  assert.equal(await page.evaluate(() => analytics.queue.length), 0);
  assert.deepEqual(errors, []);
  await context.close();
  await proxy.close();
});

test('browser: two tabs keep separate queues; a reload adopts only the closed tab\'s queue', async () => {
  const port = await freePort(); // nothing listens: every event stays queued
  const dp = `http://127.0.0.1:${port}`;
  const { context, errors } = await newPage();
  const a = await context.newPage();
  const b = await context.newPage();
  await a.goto(sluicePage(dp), { waitUntil: 'load' });
  await b.goto(sluicePage(dp), { waitUntil: 'load' });
  const idsA = await a.evaluate(() => [analytics.track('In A', { n: 1 }), analytics.track('In A', { n: 2 })]);
  const idsB = await b.evaluate(() => [analytics.track('In B', { n: 1 })]);
  const queues = await a.evaluate(() =>
    Object.keys(localStorage).filter((k) => k.startsWith('sluice:q:')).map((k) => JSON.parse(localStorage.getItem(k)).events.map((e) => e.messageId).sort()),
  );
  assert.deepEqual(queues.sort((x, y) => x.length - y.length), [idsB, [...idsA].sort()], 'one queue per tab, nothing overwritten');
  await a.reload({ waitUntil: 'load' });
  // The reloaded tab takes its own closed queue, not the live tab's.
  assert.deepEqual((await a.evaluate(() => analytics.queue.map((m) => m.messageId))).sort(), [...idsA].sort());
  assert.deepEqual(await b.evaluate(() => analytics.queue.map((m) => m.messageId)), idsB);
  assert.deepEqual(errors, []);
  await context.close();
});

test('browser: image pixels load as 1x1 images, also on errors, and their events land', async () => {
  const s = await sluice();
  const { context, page, requests } = await newPage();
  await page.goto(`${pages.origin}/pixel.html?dp=${encodeURIComponent(s.url)}`, { waitUntil: 'load' });
  const sizes = await page.evaluate(() => [...document.images].map((i) => [i.id, i.complete, i.naturalWidth, i.naturalHeight]));
  assert.deepEqual(sizes, [['ok', true, 1, 1], ['bad', true, 1, 1], ['page', true, 1, 1]], 'no broken image, even for the invalid pixel');
  const got = await waitDelivered(s.cfg.outDir, 2);
  const byType = Object.fromEntries(got.map((e) => [e.type, e]));
  assert.equal(byType.track.event, 'Email Opened');
  assert.equal(byType.track.properties.campaign, 'weekly');
  assert.equal(byType.track.anonymousId, 'mail-7');
  assert.equal(byType.page.name, 'Newsletter');
  assert.equal(got.length, 2, 'the pixel without an event name stored nothing');
  assertLocalOnly(requests);
  await context.close();
});

test("RudderStack's browser SDK v3 loads its config from Sluice and its events land", async () => {
  const s = await sluice();
  const { context, page, requests, errors } = await newPage();
  await page.goto(`${pages.origin}/rudder.html?key=${WRITE_KEY}&dp=${encodeURIComponent(s.url)}`, { waitUntil: 'load' });
  await page.evaluate(() => Promise.race([window.raReady, new Promise((_, no) => setTimeout(() => no(new Error('SDK not ready in 10 s')), 10000))]));
  await page.evaluate(() => {
    ra.page('Docs', 'Getting Started', { section: 'intro' });
    ra.identify('rs-user-1', { plan: 'enterprise' });
    ra.track('Button Clicked', { label: 'Sign up' });
  });
  const got = await waitDelivered(s.cfg.outDir, 3);
  const byType = Object.fromEntries(got.map((e) => [e.type, e]));
  assert.equal(byType.track.event, 'Button Clicked');
  assert.equal(byType.track.properties.label, 'Sign up');
  assert.equal(byType.track.userId, 'rs-user-1');
  assert.equal(byType.identify.context.traits.plan, 'enterprise');
  assert.equal(byType.page.name, 'Getting Started');
  assert.equal(byType.page.properties.path, '/rudder.html');
  assert.match(byType.track.context.library.name, /RudderLabs JavaScript SDK/);
  assert.ok(requests.some((r) => r.url.startsWith(`${s.url}/sourceConfig`)), 'the config came from Sluice');
  assertLocalOnly(requests);
  assert.deepEqual(errors, []);
  await context.close();
});
