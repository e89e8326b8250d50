// @sluice/analytics in Node against the real collector binary.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { Analytics } from '../dist/node.mjs';
import { WRITE_KEY, startSluice, freePort, makeConfig, waitDelivered, delivered, startProxy } from './helpers.mjs';

const servers = [];
after(async () => {
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

test('every call lands with client-set ids, timestamps and library', async () => {
  const s = await sluice();
  const a = new Analytics({ writeKey: WRITE_KEY, dataPlaneUrl: s.url });
  const ids = [
    a.identify({ userId: 'u1', traits: { plan: 'pro' } }),
    a.track({ userId: 'u1', event: 'Post Created', properties: { channel: 'town-square' } }),
    a.page({ userId: 'u1', name: 'Settings', properties: { path: '/settings' } }),
    a.page('Docs', 'Install', { version: 2 }, { userId: 'u1' }),
    a.screen({ userId: 'u1', name: 'Channel' }),
    a.group({ userId: 'u1', groupId: 'team-9', traits: { size: 12 } }),
    a.alias({ userId: 'u1', previousId: 'anon-1' }),
    a.track({ anonymousId: 'anon-2', event: 'Signed Up', timestamp: new Date('2026-11-30T09:00:00Z') }),
  ];
  assert.deepEqual(await a.closeAndFlush(), { pending: 0 });
  const got = await waitDelivered(s.cfg.outDir, ids.length);
  const byId = new Map(got.map((e) => [e.messageId, e]));
  assert.deepEqual(new Set(byId.keys()), new Set(ids), 'the SDK messageIds are stored unchanged');
  const track = byId.get(ids[1]);
  assert.equal(track.type, 'track');
  assert.equal(track.event, 'Post Created');
  assert.equal(track.properties.channel, 'town-square');
  assert.equal(track.context.library.name, '@sluice/analytics');
  assert.match(track.originalTimestamp, /^\d{4}-\d\d-\d\dT/);
  assert.ok(track.sentAt && track.receivedAt && track.timestamp);
  assert.equal(byId.get(ids[0]).traits.plan, 'pro');
  assert.equal(byId.get(ids[5]).groupId, 'team-9');
  assert.equal(byId.get(ids[6]).previousId, 'anon-1');
  const categorized = got.find((e) => e.name === 'Install');
  assert.equal(categorized.category, 'Docs');
  assert.equal(categorized.properties.version, 2);
  assert.equal(categorized.userId, 'u1');
  assert.equal(byId.get(ids[7]).originalTimestamp, '2026-11-30T09:00:00.000Z');
  assert.throws(() => a.track({ userId: 'u1', event: 'x' }), /closed/);
});

test('a wrong write key is reported on every attempt and the events are kept', async () => {
  const s = await sluice();
  const errors = [];
  const a = new Analytics({
    writeKey: 'not-in-the-yaml',
    dataPlaneUrl: s.url,
    minRetryDelay: 50,
    maxRetryDelay: 100,
    onError: (err, events) => errors.push([err.message, events.length]),
  });
  a.track({ userId: 'u1', event: 'Lost?' });
  a.page({ userId: 'u1' }, undefined);
  const { pending } = await a.closeAndFlush({ timeout: 600 });
  assert.equal(pending, 2, 'events are kept, not dropped');
  assert.ok(errors.length >= 2, `reported on every attempt: ${errors.length}`);
  assert.match(errors[0][0], /write key.*401.*unknown_write_key/);
});

test('an event without userId or anonymousId is refused at the call', () => {
  const a = new Analytics({ writeKey: WRITE_KEY, dataPlaneUrl: 'http://127.0.0.1:9' });
  assert.throws(() => a.track({ event: 'Nobody' }), /userId or anonymousId/);
  assert.throws(() => a.track({ userId: 'u', event: ' ' }), /event name/);
});

test('collector down, then up: nothing is lost', async () => {
  const port = await freePort();
  const cfg = makeConfig({ port });
  const a = new Analytics({ writeKey: WRITE_KEY, dataPlaneUrl: `http://127.0.0.1:${port}`, flushAt: 7, minRetryDelay: 50, maxRetryDelay: 400 });
  const ids = [];
  for (let i = 0; i < 40; i++) ids.push(a.track({ userId: `u${i % 3}`, event: 'Message Sent', properties: { i } }));
  const first = await a.flush();
  assert.equal(first.pending, 40, 'nothing could be sent');
  assert.match(first.error, /network error/);
  assert.ok(a.stats.retries >= 1);
  const s = await sluice({ port, cfg });
  assert.deepEqual(await a.closeAndFlush({ timeout: 15000 }), { pending: 0 });
  const got = await waitDelivered(s.cfg.outDir, 40);
  assert.deepEqual(new Set(got.map((e) => e.messageId)), new Set(ids));
  // One in-flight request at a time: each user's events arrive in the order they were made.
  for (const u of ['u0', 'u1', 'u2']) {
    const order = got.filter((e) => e.userId === u).map((e) => e.properties.i);
    assert.deepEqual(order, [...order].sort((x, y) => x - y), `order of ${u}`);
  }
});

test('429 from the rate limiter: the client waits for Retry-After instead of hammering', async () => {
  const s = await sluice({ rateLimit: { eventsPerSecond: 10, burst: 10 } });
  const proxy = await startProxy(s.port, () => null); // only to see each request
  const a = new Analytics({ writeKey: WRITE_KEY, dataPlaneUrl: proxy.url, flushAt: 10, minRetryDelay: 5, maxRetryDelay: 20 });
  for (let i = 0; i < 30; i++) a.track({ userId: 'u1', event: 'Burst', properties: { i } });
  assert.deepEqual(await a.closeAndFlush({ timeout: 20000 }), { pending: 0 });
  await waitDelivered(s.cfg.outDir, 30);
  const limited = proxy.log.filter((r) => r.status === 429);
  assert.ok(limited.length >= 1, `the limiter answered 429 at least once: ${JSON.stringify(proxy.log)}`);
  // With 5-20 ms backoff and no respect for Retry-After (1 s) there would be dozens of 429s.
  assert.ok(limited.length <= 4, `${limited.length} 429s: Retry-After was not honoured`);
  for (const r of limited) {
    const next = proxy.log[proxy.log.indexOf(r) + 1];
    assert.ok(next.at - r.at >= 950, `retried ${next.at - r.at} ms after a 429 with Retry-After: 1`);
  }
  await proxy.close();
});

test('503 with Retry-After is honoured and the batch delivered after', async () => {
  const s = await sluice();
  let refusals = 2;
  const proxy = await startProxy(s.port, (req) =>
    req.url.startsWith('/v1/batch') && refusals-- > 0 ? { status: 503, headers: { 'Retry-After': '1' } } : null,
  );
  const a = new Analytics({ writeKey: WRITE_KEY, dataPlaneUrl: proxy.url, minRetryDelay: 5, maxRetryDelay: 10 });
  const ids = [1, 2, 3].map((i) => a.track({ userId: 'u1', event: 'After Outage', properties: { i } }));
  const started = Date.now();
  assert.deepEqual(await a.closeAndFlush({ timeout: 15000 }), { pending: 0 });
  assert.ok(Date.now() - started >= 1900, 'two Retry-After: 1 waits');
  const statuses = proxy.log.map((r) => r.status);
  assert.deepEqual(statuses, [503, 503, 200]);
  assert.ok(proxy.log[1].at - proxy.log[0].at >= 950 && proxy.log[2].at - proxy.log[1].at >= 950);
  const got = await waitDelivered(s.cfg.outDir, 3);
  assert.deepEqual(got.map((e) => e.messageId).sort(), [...ids].sort());
  await proxy.close();
});

test('a 400 for one bad event does not lose the good events of its batch', async () => {
  const s = await sluice();
  const refused = [];
  const a = new Analytics({
    writeKey: WRITE_KEY,
    dataPlaneUrl: s.url,
    flushAt: 16,
    onError: (err, events) => refused.push({ err: err.message, ids: events.map((e) => e.messageId) }),
  });
  const good = [];
  let bad;
  for (let i = 0; i < 16; i++) {
    // The collector refuses `properties` that are not an object (Segment's spec); the client
    // passes them through as given.
    if (i === 11) bad = a.track({ userId: 'u1', event: 'Broken', properties: 'not an object' });
    else good.push(a.track({ userId: 'u1', event: 'Fine', properties: { i } }));
  }
  assert.deepEqual(await a.closeAndFlush({ timeout: 15000 }), { pending: 0 });
  const got = await waitDelivered(s.cfg.outDir, 15);
  assert.deepEqual(new Set(got.map((e) => e.messageId)), new Set(good));
  assert.equal(refused.length, 1);
  assert.deepEqual(refused[0].ids, [bad]);
  assert.match(refused[0].err, /400.*properties/s);
  assert.equal(a.stats.dropped, 1);
  assert.equal(delivered(s.cfg.outDir).length, 15, 'no duplicates from the bisection');
});

test('large batches go gzipped and land', async () => {
  const s = await sluice();
  const a = new Analytics({ writeKey: WRITE_KEY, dataPlaneUrl: s.url, flushAt: 50 });
  const text = 'x'.repeat(2000);
  for (let i = 0; i < 120; i++) a.track({ userId: 'u1', event: 'Big', properties: { i, text } });
  assert.deepEqual(await a.closeAndFlush(), { pending: 0 });
  const got = await waitDelivered(s.cfg.outDir, 120);
  assert.equal(got[0].properties.text.length, 2000);
});
