// The platform-independent client: message building, the queue, batching, retries and the
// isolation of events the collector refuses. browser.js and node.js give it a store, a context and
// a transport.

export const VERSION = '0.1.0';
export const LIBRARY = '@sluice/analytics';

const DEFAULTS = {
  flushAt: 20, // events per request
  flushInterval: 1000, // ms an event may wait for company
  maxBatchBytes: 512 * 1024, // well under the collector's 4 MiB body limit
  maxEventBytes: 256 * 1024,
  maxQueueEvents: 10000, // the oldest are dropped past this, with onError
  minRetryDelay: 500,
  maxRetryDelay: 30000,
  requestTimeout: 10000,
};

export function uuid() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID();
  const b = new Uint8Array(16);
  if (c && typeof c.getRandomValues === 'function') c.getRandomValues(b);
  else for (let i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const byteLength = (s) => (typeof TextEncoder !== 'undefined' ? new TextEncoder().encode(s).length : s.length * 3);

function isoTime(t) {
  if (t === undefined || t === null) return new Date().toISOString();
  return t instanceof Date ? t.toISOString() : String(t);
}

// Whole seconds or an HTTP date; null when absent or unreadable.
export function parseRetryAfter(value) {
  if (!value) return null;
  const secs = Number(value);
  if (Number.isFinite(secs)) return Math.max(0, secs * 1000);
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(0, at - Date.now());
}

function mergeContext(base, extra) {
  const out = { ...base };
  for (const [k, v] of Object.entries(extra || {})) {
    out[k] = isObject(v) && isObject(out[k]) ? { ...out[k], ...v } : v;
  }
  return out;
}

export class Core {
  /**
   * @param {object} options user options (see index.d.ts)
   * @param {object} platform { store, context(), send(url, body, headers, timeout), identity }
   */
  constructor(options, platform) {
    if (!options || !options.writeKey) throw new Error('sluice analytics: writeKey is required');
    if (!options.dataPlaneUrl) throw new Error('sluice analytics: dataPlaneUrl is required');
    this.options = { ...DEFAULTS, ...options };
    this.writeKey = options.writeKey;
    this.endpoint = `${String(options.dataPlaneUrl).replace(/\/+$/, '')}/v1/batch`;
    this.platform = platform;
    this.onError = options.onError || ((err) => console.warn(`[sluice analytics] ${err.message}`));
    this.queue = platform.store.load();
    this.inFlight = false;
    this.attempt = 0;
    this.retryAt = 0; // ms epoch; >0 while backing off after a failure
    this.timer = null;
    this.closed = false;
    this.isolating = 0; // head events of a refused batch still being bisected
    this.isolationLimit = Infinity;
    this.waiters = [];
    this.stats = { sent: 0, dropped: 0, retries: 0 };
    if (this.queue.length) this.schedule(0);
  }

  // ---- the public message API (Segment's shape: positional or one object) ----

  track(event, properties, options) {
    if (isObject(event)) return this.enqueue('track', event);
    return this.enqueue('track', { ...options, event, properties: properties || {} });
  }

  identify(userId, traits, options) {
    if (isObject(userId)) return this.enqueue('identify', userId);
    if (isObject(traits) || traits === undefined) return this.enqueue('identify', { ...options, userId, traits: traits || {} });
    return this.enqueue('identify', { userId });
  }

  page(name, properties, options, more) {
    if (isObject(name)) return this.enqueue('page', name);
    // analytics.js's page(category, name, properties, options)
    if (typeof properties === 'string') {
      return this.enqueue('page', { ...more, category: name, name: properties, properties: { category: name, ...(options || {}) } });
    }
    return this.enqueue('page', { ...options, name, properties: properties || {} });
  }

  screen(name, properties, options) {
    if (isObject(name)) return this.enqueue('screen', name);
    return this.enqueue('screen', { ...options, name, properties: properties || {} });
  }

  group(groupId, traits, options) {
    if (isObject(groupId)) return this.enqueue('group', groupId);
    return this.enqueue('group', { ...options, groupId, traits: traits || {} });
  }

  alias(userId, previousId, options) {
    if (isObject(userId)) return this.enqueue('alias', userId);
    return this.enqueue('alias', { ...options, userId, previousId });
  }

  reset() {
    if (this.platform.identity) this.platform.identity.reset();
  }

  // ---- building ----

  build(type, fields) {
    const id = this.platform.identity;
    const msg = { ...fields, type };
    if (type === 'identify' && id && fields.userId) id.setUser(fields.userId, fields.traits);
    if (type === 'alias' && id) {
      if (msg.previousId === undefined) msg.previousId = id.userId() || id.anonymousId();
      if (fields.userId) id.setUser(fields.userId);
    }
    if (id) {
      if (msg.anonymousId === undefined) msg.anonymousId = id.anonymousId();
      if (msg.userId === undefined && id.userId()) msg.userId = id.userId();
    }
    if (type === 'page' && this.platform.pageProperties) {
      msg.properties = { ...this.platform.pageProperties(), ...(msg.properties || {}) };
      if (msg.name !== undefined && msg.properties.name === undefined) msg.properties.name = msg.name;
    }
    msg.messageId = fields.messageId || uuid();
    msg.originalTimestamp = isoTime(fields.timestamp || fields.originalTimestamp);
    delete msg.timestamp;
    const traits = id && id.traits && type !== 'identify' ? id.traits() : null;
    const base = { library: { name: LIBRARY, version: VERSION }, ...this.platform.context() };
    if (traits && Object.keys(traits).length) base.traits = traits;
    msg.context = mergeContext(base, fields.context);
    for (const k of Object.keys(msg)) if (msg[k] === undefined) delete msg[k];
    return msg;
  }

  validate(msg) {
    const blank = (v) => v === undefined || v === null || String(v).trim() === '';
    if (blank(msg.userId) && blank(msg.anonymousId)) return 'needs a userId or anonymousId';
    if (msg.type === 'track' && blank(msg.event)) return 'track needs an event name';
    if (msg.type === 'group' && blank(msg.groupId)) return 'group needs a groupId';
    if (msg.type === 'alias' && blank(msg.previousId)) return 'alias needs a previousId';
    return null;
  }

  /** Returns the messageId, or throws for an event that can never be sent. */
  enqueue(type, fields) {
    if (this.closed) throw new Error('sluice analytics: the client is closed');
    const msg = this.build(type, fields || {});
    const problem = this.validate(msg);
    if (problem) throw new Error(`sluice analytics: ${type} ${problem}`);
    const size = byteLength(JSON.stringify(msg));
    if (size > this.options.maxEventBytes) {
      throw new Error(`sluice analytics: ${type} event is ${size} bytes, over maxEventBytes ${this.options.maxEventBytes}`);
    }
    this.queue.push(msg);
    if (this.queue.length > this.options.maxQueueEvents) {
      const dropped = this.queue.splice(0, this.queue.length - this.options.maxQueueEvents);
      this.stats.dropped += dropped.length;
      this.onError(new Error(`queue full: dropped the ${dropped.length} oldest event(s)`), dropped);
    }
    this.platform.store.save(this.queue);
    this.schedule(this.queue.length >= this.options.flushAt ? 0 : this.options.flushInterval);
    return msg.messageId;
  }

  // ---- sending ----

  schedule(delay) {
    if (this.inFlight) return;
    const at = Math.max(Date.now() + delay, this.retryAt);
    // An earlier timer stays, unless a failure since then pushed retryAt past it.
    if (this.timer && this.timerAt <= at && this.timerAt >= this.retryAt) return;
    clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.sendNext();
    }, at - Date.now());
    if (this.timer && typeof this.timer.unref === 'function' && !this.options.keepAlive) this.timer.unref();
  }

  /** The head of the queue that fits one request. */
  nextBatch() {
    let limit = Math.min(this.options.flushAt, this.queue.length);
    if (this.isolating > 0) limit = Math.min(limit, this.isolationLimit, this.isolating);
    const batch = [];
    let bytes = 64;
    for (const msg of this.queue) {
      if (batch.length >= limit) break;
      const n = byteLength(JSON.stringify(msg)) + 1;
      if (batch.length > 0 && bytes + n > this.options.maxBatchBytes) break;
      batch.push(msg);
      bytes += n;
    }
    return batch;
  }

  async sendNext() {
    if (this.inFlight) return;
    if (Date.now() < this.retryAt) return this.schedule(0); // still backing off
    if (this.queue.length === 0) return this.settle();
    this.inFlight = true;
    const batch = this.nextBatch();
    let outcome;
    try {
      const body = JSON.stringify({ batch, sentAt: new Date().toISOString() });
      const headers = {
        'Content-Type': 'application/json',
        Authorization: `Basic ${base64(`${this.writeKey}:`)}`,
      };
      const res = await this.platform.send(this.endpoint, body, headers, this.options.requestTimeout);
      outcome = this.classify(res.status, res.retryAfter);
      if (outcome.kind !== 'ok') outcome.message = `${res.status} ${res.body || ''}`.trim();
    } catch (err) {
      outcome = { kind: 'retry', message: `network error: ${err && err.message}` };
    }
    this.inFlight = false;
    this.apply(outcome, batch);
  }

  classify(status, retryAfter) {
    if (status >= 200 && status < 300) return { kind: 'ok' };
    if (status === 408 || status === 429 || status >= 500) return { kind: 'retry', retryAfter };
    // A bad key or forbidden source is a deployment problem: keep the events and say so loudly.
    if (status === 401 || status === 403) return { kind: 'retry', auth: true, retryAfter };
    return { kind: 'refused' }; // 400, 413 and other 4xx: something in this batch is wrong
  }

  remove(batch) {
    const ids = new Set(batch.map((m) => m.messageId));
    this.queue = this.queue.filter((m) => !ids.has(m.messageId));
    this.platform.store.save(this.queue);
  }

  apply(outcome, batch) {
    if (outcome.kind === 'ok') {
      if (this.platform.delivered) this.platform.delivered();
      this.remove(batch);
      this.stats.sent += batch.length;
      this.attempt = 0;
      this.retryAt = 0;
      if (this.isolating > 0) this.isolating = Math.max(0, this.isolating - batch.length);
      if (this.isolating === 0) this.isolationLimit = Infinity;
    } else if (outcome.kind === 'refused') {
      this.attempt = 0;
      this.retryAt = 0;
      if (batch.length === 1) {
        // Bisected down to the offender: it alone is dropped, and reported.
        this.remove(batch);
        this.stats.dropped += 1;
        if (this.isolating > 0) this.isolating -= 1;
        if (this.isolating === 0) this.isolationLimit = Infinity;
        this.onError(new Error(`event refused by the collector: ${outcome.message}`), batch);
      } else {
        if (this.isolating === 0) this.isolating = batch.length;
        this.isolationLimit = Math.ceil(batch.length / 2);
      }
    } else {
      this.attempt += 1;
      this.stats.retries += 1;
      const backoff = Math.min(this.options.maxRetryDelay, this.options.minRetryDelay * 2 ** (this.attempt - 1));
      // Full jitter in [backoff/2, backoff]: clients that failed together do not return together.
      let delay = backoff / 2 + Math.random() * (backoff / 2);
      if (outcome.retryAfter != null) delay = Math.max(outcome.retryAfter, this.options.minRetryDelay / 4);
      this.retryAt = Date.now() + delay;
      if (outcome.auth) this.onError(new Error(`the collector refused the write key (${outcome.message}); events are kept`), batch);
      this.notifyFailure(outcome.message);
    }
    if (this.queue.length > 0) this.schedule(0);
    else this.settle();
  }

  notifyFailure(message) {
    const waiting = this.waiters;
    this.waiters = [];
    for (const w of waiting) w(message);
  }

  settle() {
    this.notifyFailure(null);
  }

  /**
   * Sends what is queued now. Resolves when the queue is empty, or with the error message of the
   * first failed attempt (the events stay queued and are retried).
   */
  flush() {
    if (this.queue.length === 0 && !this.inFlight) return Promise.resolve({ pending: 0, error: null });
    const done = new Promise((resolve) => this.waiters.push((error) => resolve({ pending: this.queue.length, error })));
    this.retryAt = Math.min(this.retryAt, Date.now());
    clearTimeout(this.timer);
    this.timer = null;
    this.timerAt = 0;
    if (!this.inFlight) this.sendNext();
    return done;
  }

  /**
   * Stops taking events and delivers the queue, retrying as usual, until it is empty or `timeout`
   * ms have passed. Resolves with the number of events still undelivered.
   */
  async closeAndFlush({ timeout = 10000 } = {}) {
    this.closed = true;
    const deadline = Date.now() + timeout;
    while ((this.queue.length > 0 || this.inFlight) && Date.now() < deadline) {
      const wait = Math.max(0, this.retryAt - Date.now());
      if (wait > 0) await sleep(Math.min(wait, deadline - Date.now()));
      if (Date.now() >= deadline) break;
      if (this.inFlight) await new Promise((r) => this.waiters.push(r));
      else {
        const p = new Promise((r) => this.waiters.push(r));
        this.sendNext();
        await p;
      }
    }
    clearTimeout(this.timer);
    this.timer = null;
    return { pending: this.queue.length };
  }
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

export function base64(text) {
  if (typeof btoa === 'function') return btoa(unescape(encodeURIComponent(text)));
  return Buffer.from(text, 'utf8').toString('base64');
}
