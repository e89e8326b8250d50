// The browser client: a localStorage queue that outlives the page, the anonymous id in
// localStorage and a cookie, page context, and navigator.sendBeacon when the page goes away.

import { Core, uuid, VERSION } from './core.js';

const PREFIX = 'sluice:';
const HEARTBEAT_MS = 2000;
// A tab that has not written its heartbeat for this long is gone: its queue may be adopted.
const STALE_MS = 3 * HEARTBEAT_MS;
// Chrome and Firefox refuse beacons over 64 KiB in flight; stay below with room for the envelope.
const BEACON_BYTES = 60 * 1024;

function storage() {
  try {
    const s = globalThis.localStorage;
    const probe = `${PREFIX}probe`;
    s.setItem(probe, '1');
    s.removeItem(probe);
    return s;
  } catch {
    return null; // private mode, disabled storage: fall back to memory
  }
}

function readCookie(name) {
  const m = (globalThis.document && document.cookie ? document.cookie : '').match(new RegExp(`(?:^|; )${name}=([^;]*)`));
  return m ? decodeURIComponent(m[1]) : null;
}

function writeCookie(name, value, days) {
  if (!globalThis.document) return;
  const expires = value === null ? 'Thu, 01 Jan 1970 00:00:00 GMT' : new Date(Date.now() + days * 864e5).toUTCString();
  const secure = globalThis.location && location.protocol === 'https:' ? '; Secure' : '';
  document.cookie = `${name}=${encodeURIComponent(value || '')}; expires=${expires}; path=/; SameSite=Lax${secure}`;
}

/** Anonymous id, user id and traits, kept across page loads. */
class Identity {
  constructor(ls) {
    this.ls = ls;
    this.memory = {};
  }
  get(key) {
    const v = this.ls ? this.ls.getItem(PREFIX + key) : this.memory[key];
    return v === undefined ? null : v;
  }
  set(key, value) {
    if (this.ls) {
      if (value === null) this.ls.removeItem(PREFIX + key);
      else this.ls.setItem(PREFIX + key, value);
    } else this.memory[key] = value;
  }
  anonymousId() {
    let id = this.get('anonymousId') || readCookie('sluice_aid');
    if (!id) id = uuid();
    if (this.get('anonymousId') !== id) this.set('anonymousId', id);
    if (readCookie('sluice_aid') !== id) writeCookie('sluice_aid', id, 365);
    return id;
  }
  userId() {
    return this.get('userId');
  }
  traits() {
    try {
      return JSON.parse(this.get('traits') || '{}');
    } catch {
      return {};
    }
  }
  setUser(userId, traits) {
    if (userId !== this.userId()) this.set('traits', null);
    this.set('userId', String(userId));
    if (traits) this.set('traits', JSON.stringify({ ...this.traits(), ...traits }));
  }
  reset() {
    this.set('userId', null);
    this.set('traits', null);
    this.set('anonymousId', null);
    writeCookie('sluice_aid', null);
  }
}

/**
 * Each page instance owns one queue key (`sluice:q:<writeKey>:<instance>`) and a heartbeat key
 * (`sluice:t:...`, a timestamp rewritten every 2 s), so two tabs never overwrite each other's
 * events and the heartbeat never rewrites the whole queue. A queue whose page closed or stopped
 * beating is adopted by the next page that starts: that is how events queued while offline
 * survive a reload.
 */
class QueueStore {
  constructor(ls, writeKey) {
    this.ls = ls;
    this.prefix = `${PREFIX}q:${writeKey}:`;
    this.id = uuid();
    this.key = this.prefix + this.id;
    this.beatKey = `${PREFIX}t:${writeKey}:${this.id}`;
    this.events = [];
  }
  load() {
    if (!this.ls) return [];
    const adopted = [];
    const now = Date.now();
    for (let i = this.ls.length - 1; i >= 0; i--) {
      const key = this.ls.key(i);
      if (!key || !key.startsWith(this.prefix) || key === this.key) continue;
      const beatKey = PREFIX + 't:' + key.slice(PREFIX.length + 2);
      try {
        const entry = JSON.parse(this.ls.getItem(key));
        const beat = Number(this.ls.getItem(beatKey) || 0);
        if (!entry.closed && now - beat < STALE_MS) continue; // another live tab
        adopted.push(...entry.events);
      } catch {
        /* unreadable entry: nothing to adopt */
      }
      this.ls.removeItem(key);
      this.ls.removeItem(beatKey);
    }
    const seen = new Set();
    this.events = adopted.filter((m) => m && m.messageId && !seen.has(m.messageId) && seen.add(m.messageId));
    this.events.sort((a, b) => String(a.originalTimestamp).localeCompare(String(b.originalTimestamp)));
    this.beat();
    this.save(this.events);
    return this.events;
  }
  beat() {
    if (this.ls) {
      try {
        this.ls.setItem(this.beatKey, String(Date.now()));
      } catch {
        /* quota: the queue entry still says the page is open */
      }
    }
  }
  save(events, closed = false) {
    this.events = events;
    if (!this.ls) return;
    try {
      this.ls.setItem(this.key, JSON.stringify({ closed, events }));
    } catch (e) {
      // Quota exceeded: the events are still in memory and sent as usual.
    }
  }
}

function pageProperties() {
  const loc = globalThis.location || {};
  const doc = globalThis.document || {};
  let url = loc.href || '';
  const canonical = doc.querySelector && doc.querySelector('link[rel="canonical"]');
  if (canonical && canonical.href) url = canonical.href;
  return {
    path: loc.pathname,
    referrer: doc.referrer || '',
    search: loc.search || '',
    title: doc.title || '',
    url: url.split('#')[0],
  };
}

function context() {
  const nav = globalThis.navigator || {};
  const scr = globalThis.screen || {};
  let timezone;
  try {
    timezone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  } catch {
    /* old engines */
  }
  return {
    page: pageProperties(),
    userAgent: nav.userAgent,
    locale: nav.language,
    timezone,
    screen: { width: scr.width, height: scr.height, density: globalThis.devicePixelRatio },
  };
}

async function send(url, body, headers, timeout) {
  const ctl = typeof AbortController === 'function' ? new AbortController() : null;
  const timer = ctl ? setTimeout(() => ctl.abort(), timeout) : null;
  try {
    const res = await fetch(url, { method: 'POST', headers, body, signal: ctl && ctl.signal, credentials: 'omit' });
    const text = await res.text().catch(() => '');
    return { status: res.status, retryAfter: parseRA(res.headers.get('Retry-After')), body: text.slice(0, 300) };
  } finally {
    clearTimeout(timer);
  }
}

function parseRA(v) {
  if (!v) return null;
  const n = Number(v);
  if (Number.isFinite(n)) return n * 1000;
  const t = Date.parse(v);
  return Number.isNaN(t) ? null : Math.max(0, t - Date.now());
}

// How long a success (on this page or an earlier one) vouches for the collector at page exit.
const HEALTHY_MS = 60 * 1000;

export class Analytics extends Core {
  constructor(options) {
    const ls = storage();
    const store = new QueueStore(ls, options && options.writeKey);
    const okKey = `${PREFIX}ok:${options && options.writeKey}`;
    const delivered = () => {
      try {
        if (ls) ls.setItem(okKey, String(Date.now()));
      } catch {
        /* quota */
      }
    };
    super(options, { store, context, send, pageProperties, identity: new Identity(ls), delivered });
    this.lastOk = () => Number((ls && ls.getItem(okKey)) || 0);
    this.beaconUrl = `${String(options.dataPlaneUrl).replace(/\/+$/, '')}/beacon/v1/batch?writeKey=${encodeURIComponent(options.writeKey)}`;
    if (globalThis.addEventListener && options.useBeacon !== false) {
      addEventListener('pagehide', () => this.leave());
      if (globalThis.document) {
        document.addEventListener('visibilitychange', () => {
          // A hidden tab may never come back (mobile browsers kill it without pagehide).
          if (document.visibilityState === 'hidden' && this.health() === 'up') this.beaconQueued();
        });
      }
    }
    this.heartbeat = setInterval(() => store.beat(), HEARTBEAT_MS);
  }

  /** 'down' after a failed attempt, 'up' after a recent success, else 'unknown'. */
  health() {
    if (this.attempt > 0) return 'down';
    return Date.now() - this.lastOk() < HEALTHY_MS ? 'up' : 'unknown';
  }

  /**
   * The page is going away. A beacon's fate is never known, so: with the collector up, queued
   * events go by sendBeacon and are forgotten; with the collector failing they stay in
   * localStorage for the next page; when nothing has been confirmed yet they go by beacon AND stay
   * queued, so the next page of the site sends them again (a duplicate with the same messageId
   * rather than a loss).
   */
  leave() {
    const health = this.health();
    if (health !== 'down') this.beaconQueued(health === 'up');
    clearInterval(this.heartbeat);
    this.platform.store.save(this.queue, true);
  }

  /** Hands the queue to sendBeacon in chunks under 60 KB; returns how many events went. */
  beaconQueued(forget = true) {
    const nav = globalThis.navigator;
    if (!nav || typeof nav.sendBeacon !== 'function' || this.queue.length === 0) return 0;
    const handed = [];
    let chunk = [];
    let bytes = 64;
    const flushChunk = () => {
      if (chunk.length === 0) return true;
      const ok = nav.sendBeacon(this.beaconUrl, JSON.stringify({ batch: chunk, sentAt: new Date().toISOString() }));
      if (ok) handed.push(...chunk);
      chunk = [];
      bytes = 64;
      return ok;
    };
    for (const msg of this.queue) {
      const n = JSON.stringify(msg).length + 1;
      if (n + 64 > BEACON_BYTES) continue; // too big for a beacon: left for the next page
      if (bytes + n > BEACON_BYTES && !flushChunk()) break;
      chunk.push(msg);
      bytes += n;
    }
    flushChunk();
    if (forget && handed.length) this.remove(handed);
    return handed.length;
  }
}

export { VERSION };
export default Analytics;
