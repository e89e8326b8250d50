// Type declarations of @sluice/analytics (the same API in the browser and in Node).

export declare const VERSION: string;

export type Json = string | number | boolean | null | Json[] | { [key: string]: Json };
export type Properties = Record<string, unknown>;

export interface AnalyticsOptions {
  /** Write key of a source in Sluice's YAML. */
  writeKey: string;
  /** Base URL of the collector, e.g. `https://events.example.com` (no path). */
  dataPlaneUrl: string;
  /** Events per request (default 20). */
  flushAt?: number;
  /** Milliseconds an event waits for others before it is sent (default 1000). */
  flushInterval?: number;
  /** Upper bound of one request body (default 512 KiB; the collector takes 4 MiB). */
  maxBatchBytes?: number;
  /** Larger events are refused by `track()` & co. with an exception (default 256 KiB). */
  maxEventBytes?: number;
  /** Queue bound; past it the oldest events are dropped and reported to `onError` (default 10000). */
  maxQueueEvents?: number;
  /** First retry delay in ms (default 500); doubles per attempt, with jitter. */
  minRetryDelay?: number;
  /** Longest retry delay in ms (default 30000). A `Retry-After` from the collector wins. */
  maxRetryDelay?: number;
  /** Milliseconds before a request counts as failed and is retried (default 10000). */
  requestTimeout?: number;
  /** Browser: hand queued events to `navigator.sendBeacon` when the page is hidden or left (default true). */
  useBeacon?: boolean;
  /** Node: keep the process alive while events wait for their timer (default false). */
  keepAlive?: boolean;
  /**
   * Called for events that are given up: refused one by one by the collector (400 after the
   * batch was bisected down to them), or dropped because the queue was full. Also called, with
   * the events kept, when the collector refuses the write key (401/403).
   */
  onError?: (error: Error, events: Message[]) => void;
}

export interface CommonFields {
  userId?: string;
  anonymousId?: string;
  messageId?: string;
  /** When it happened; defaults to now. Sent as `originalTimestamp`. */
  timestamp?: Date | string;
  context?: Properties;
  integrations?: Record<string, boolean | Properties>;
}

export interface TrackParams extends CommonFields { event: string; properties?: Properties }
export interface IdentifyParams extends CommonFields { traits?: Properties }
export interface PageParams extends CommonFields { name?: string; category?: string; properties?: Properties }
export interface ScreenParams extends CommonFields { name?: string; properties?: Properties }
export interface GroupParams extends CommonFields { groupId: string; traits?: Properties }
export interface AliasParams extends CommonFields { userId: string; previousId?: string }

/** An event as queued and sent. */
export interface Message extends Record<string, unknown> {
  type: 'track' | 'identify' | 'page' | 'screen' | 'group' | 'alias';
  messageId: string;
  originalTimestamp: string;
  context: Properties;
}

export interface FlushResult {
  /** Events still queued. */
  pending: number;
  /** Why the last attempt failed (the events stay queued and are retried), or null. */
  error: string | null;
}

export declare class Analytics {
  constructor(options: AnalyticsOptions);
  /** Each call returns the event's messageId once the event is queued (persisted in the browser). */
  track(event: string, properties?: Properties, options?: CommonFields): string;
  track(params: TrackParams): string;
  identify(userId: string, traits?: Properties, options?: CommonFields): string;
  identify(params: IdentifyParams): string;
  page(name?: string, properties?: Properties, options?: CommonFields): string;
  page(category: string, name: string, properties?: Properties, options?: CommonFields): string;
  page(params: PageParams): string;
  screen(name: string, properties?: Properties, options?: CommonFields): string;
  screen(params: ScreenParams): string;
  group(groupId: string, traits?: Properties, options?: CommonFields): string;
  group(params: GroupParams): string;
  alias(userId: string, previousId?: string, options?: CommonFields): string;
  alias(params: AliasParams): string;
  /** Browser: forgets userId and traits and starts a new anonymous id. */
  reset(): void;
  /** Sends what is queued now; see FlushResult. */
  flush(): Promise<FlushResult>;
  /** Stops taking events and delivers the queue within `timeout` ms (default 10000). */
  closeAndFlush(options?: { timeout?: number }): Promise<{ pending: number }>;
  /** Browser: beacons the queue now (what `pagehide` does); returns how many events were handed over. */
  beaconQueued?(): number;
  readonly stats: { sent: number; dropped: number; retries: number };
}

export default Analytics;
