// RudderStack's and Segment's own Node SDKs, unmodified, against the real collector.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { WRITE_KEY, startSluice, waitDelivered } from './helpers.mjs';

const require = createRequire(import.meta.url);
const servers = [];
after(async () => {
  for (const s of servers) {
    await s.stop();
    s.cleanup();
  }
});

test('@rudderstack/rudder-sdk-node: every call lands with the SDK fields', async () => {
  const s = await startSluice();
  servers.push(s);
  const Analytics = require('@rudderstack/rudder-sdk-node');
  const client = new Analytics(WRITE_KEY, { dataPlaneUrl: s.url, flushAt: 100, flushInterval: 100000, logLevel: 'error' });
  client.identify({ userId: 'r1', traits: { email: 'r1@example.com' } });
  client.track({ userId: 'r1', event: 'Channel Joined', properties: { channel: 'off-topic' } });
  client.page({ userId: 'r1', name: 'Docs', properties: { url: 'https://example.com/docs' } });
  client.screen({ userId: 'r1', name: 'Home' });
  client.group({ userId: 'r1', groupId: 'g1', traits: { name: 'Core' } });
  client.alias({ userId: 'r1', previousId: 'anon-r' });
  await client.flush();
  const got = await waitDelivered(s.cfg.outDir, 6);
  const byType = Object.fromEntries(got.map((e) => [e.type, e]));
  assert.deepEqual(Object.keys(byType).sort(), ['alias', 'group', 'identify', 'page', 'screen', 'track']);
  assert.equal(byType.track.event, 'Channel Joined');
  assert.equal(byType.track.properties.channel, 'off-topic');
  assert.equal(byType.track.userId, 'r1');
  assert.match(byType.track.context.library.name, /analytics-node|rudder/i);
  assert.ok(byType.track.messageId && byType.track.originalTimestamp && byType.track.receivedAt);
  assert.equal(byType.identify.context.traits?.email ?? byType.identify.traits?.email, 'r1@example.com');
  assert.equal(byType.group.groupId, 'g1');
  assert.equal(byType.alias.previousId, 'anon-r');
});

test('@segment/analytics-node: every call lands with the SDK fields', async () => {
  const s = await startSluice();
  servers.push(s);
  const { Analytics } = require('@segment/analytics-node');
  const errors = [];
  const analytics = new Analytics({ writeKey: WRITE_KEY, host: s.url, path: '/v1/batch', maxEventsInBatch: 100, flushInterval: 100000 });
  analytics.on('error', (e) => errors.push(e));
  analytics.identify({ userId: 's1', traits: { plan: 'team' } });
  analytics.track({ userId: 's1', event: 'Call Started', properties: { participants: 3 } });
  analytics.page({ userId: 's1', name: 'Pricing', properties: { path: '/pricing' } });
  analytics.screen({ userId: 's1', name: 'Thread' });
  analytics.group({ userId: 's1', groupId: 'g2', traits: { seats: 40 } });
  analytics.alias({ userId: 's1', previousId: 'anon-s' });
  await analytics.closeAndFlush({ timeout: 10000 });
  assert.deepEqual(errors, []);
  const got = await waitDelivered(s.cfg.outDir, 6);
  const byType = Object.fromEntries(got.map((e) => [e.type, e]));
  assert.deepEqual(Object.keys(byType).sort(), ['alias', 'group', 'identify', 'page', 'screen', 'track']);
  assert.equal(byType.track.event, 'Call Started');
  assert.equal(byType.track.properties.participants, 3);
  assert.equal(byType.track.context.library.name, '@segment/analytics-node');
  assert.ok(byType.track.messageId && byType.track.timestamp && byType.track.receivedAt);
  assert.equal(byType.identify.traits.plan, 'team');
  assert.equal(byType.page.name, 'Pricing');
  assert.equal(byType.group.traits.seats, 40);
});
