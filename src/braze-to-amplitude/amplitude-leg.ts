import type { AmplitudeSettings, InboundSettings } from '../config/config.js';
import type { ConsumedMessage } from '../kafka/consumer-loop.js';
import { scrubSecrets } from '../observability/logger.js';
import { HttpSender } from '../delivery/http-sender.js';
import { retryAfterFromHeaders } from '../delivery/backoff.js';
import { DeliveryLeg, type DeliveryLegDeps, type LegItem } from '../delivery/delivery-leg.js';
import { classifyAmplitudeResponse, type DroppedEvent } from './amplitude-response.js';
import { safeJsonParse, validateCurrentsEvent } from '../currents-ingest/currents-body.js';
import { identityKey, mapCurrentsEvent, type CurrentsMappingOptions } from './currents-to-amplitude.js';
import { RECEIVED_AT_HEADER } from '../currents-ingest/currents-route.js';
import type { IdPacer, PacedIds } from './id-pacer.js';
import type { BatchingProducer } from '../kafka/batching-producer.js';

export const AMPLITUDE_DESTINATION = 'amplitude';
const USER_AGENT = 'amplitude-braze-gateway/0.1';

export interface AmplitudeItem extends LegItem {
  eventJson: string;
  deviceId?: string;
  userId?: string;
}

export type AmplitudeLegDeps = Omit<DeliveryLegDeps, 'leg' | 'destination' | 'limits' | 'concurrency' | 'lingerMs' | 'maxInFlightEvents' | 'backoff'> & {
  amplitude: AmplitudeSettings & { apiKey: string };
  settings: InboundSettings;
  /** per-id pacing; absent when limits are off */
  pacer?: IdPacer;
  /** where events over their id's rate or quota wait (the retry topic) */
  retry?: { topic: string; producer: BatchingProducer };
};

export const NOT_BEFORE_HEADER = 'not-before';
export const PARK_REASON_HEADER = 'reason';

/**
 * The inbound leg after Kafka: Currents events become Amplitude events, batched under Amplitude's
 * request limits with order kept per identity, and each answer is applied as the reference and
 * the official SDKs do: listed bad events dead-lettered and the rest resent, 413 halved, throttled
 * ids held while others go on, quota-exceeded ids parked, a refused key holding everything.
 */
export class AmplitudeLeg extends DeliveryLeg<AmplitudeItem> {
  private readonly sender: HttpSender;
  private readonly mapping: CurrentsMappingOptions;
  private readonly apiKeyJson: string;
  private readonly optionsJson: string;
  /** per key, events waiting in memory for their id's rate, oldest first */
  private readonly holds = new Map<string, { items: AmplitudeItem[]; timer?: NodeJS.Timeout }>();

  constructor(private readonly deps: AmplitudeLegDeps) {
    const s = deps.settings;
    super({
      ...deps,
      leg: 'inbound',
      destination: AMPLITUDE_DESTINATION,
      limits: { maxPerArray: s.maxEventsPerRequest, maxTotal: 0, maxBytes: s.maxRequestBytes - 256 },
      concurrency: s.concurrency,
      lingerMs: s.lingerMs,
      maxInFlightEvents: s.maxInFlightEvents,
      backoff: { baseMs: s.retryBaseMs, maxMs: s.retryMaxMs, authRetryMs: s.authRetryMs },
    });
    const m = s.mapping;
    this.mapping = {
      minIdLength: m.minIdLength,
      eventNamePrefix: m.eventNamePrefix,
      customEventPrefix: m.customEventPrefix,
      customPropertyPrefix: m.customPropertyPrefix,
      purchasePropertyPrefix: m.purchasePropertyPrefix,
      eventScope: m.eventScope,
      nameOverrides: m.nameOverrides,
    };
    this.apiKeyJson = JSON.stringify(deps.amplitude.apiKey);
    this.optionsJson = JSON.stringify({ min_id_length: m.minIdLength });
    this.sender = new HttpSender(deps.amplitude.httpApiUrl, { connections: s.concurrency, timeoutMs: s.requestTimeoutMs, userAgent: USER_AGENT });
  }

  protected prepare(msg: ConsumedMessage): AmplitudeItem | undefined {
    const parsed = safeJsonParse(msg.value ?? Buffer.alloc(0));
    // Re-validated on the way out: the topic may hold events written by other producers.
    const v = parsed.ok ? validateCurrentsEvent(parsed.value) : undefined;
    if (!v || !v.ok) {
      void this.deadLetter(msg, v ? v.reason : 'not_json', v ? v.message : (parsed.ok ? '' : parsed.message));
      return undefined;
    }
    const r = mapCurrentsEvent(v.event, this.mapping);
    for (const id of r.droppedIds) this.d.metrics.adjustments.inc({ leg: 'inbound', kind: 'dropped', rule: `${id.field}_${id.reason}` });
    if (!r.ok) {
      if (r.reason === 'unsupported_event') this.skip(msg, r.reason);
      else void this.deadLetter(msg, r.reason, r.message);
      return undefined;
    }
    const ev = r.event;
    const eventJson = JSON.stringify(ev);
    // Parked events carry their first receipt in a header; others were stamped by the record timestamp.
    const receivedAt = Number(headerString(msg.headers[RECEIVED_AT_HEADER]) || msg.timestampMs);
    const item: AmplitudeItem = {
      key: identityKey(ev, this.mapping) ?? '',
      msg,
      eventJson,
      ...(ev.device_id ? { deviceId: ev.device_id } : {}),
      ...(ev.user_id ? { userId: ev.user_id } : {}),
      events: 1,
      attributes: 0,
      purchases: 0,
      bytes: eventJson.length + 1,
      seenMs: Number.isFinite(receivedAt) && receivedAt > 0 ? receivedAt : this.d.clock.now(),
    };
    return this.pace(item, msg.topic === this.deps.retry?.topic);
  }

  /** Sends the item now, or holds, parks or dead-letters it as its ids' rate and quota say. */
  private pace(item: AmplitudeItem, retried: boolean): AmplitudeItem | undefined {
    const pacer = this.deps.pacer;
    if (!pacer) return item;
    const ids = pacedIds(item);
    const v = retried ? pacer.decideRetried(ids) : pacer.decide(ids);
    switch (v.kind) {
      case 'send':
        return item;
      case 'hold': {
        const h = this.holds.get(item.key);
        if (h) h.items.push(item);
        else this.holds.set(item.key, { items: [item], timer: setTimeout(() => this.releaseHeld(item.key), Math.max(0, v.untilMs - this.d.clock.now())) });
        return undefined;
      }
      case 'park':
        void this.park(item, v.untilMs, v.reason);
        return undefined;
      case 'dead_letter':
        void this.deadLetter(item.msg, 'daily_quota', `over the daily quota until ${new Date(v.untilMs).toISOString()}`);
        return undefined;
    }
  }

  /** Moves a key's held events into the batch queue as their ids' rate admits them. */
  private releaseHeld(key: string): void {
    const h = this.holds.get(key);
    const pacer = this.deps.pacer;
    if (!h || !pacer) return;
    h.timer = undefined;
    while (h.items.length > 0) {
      const head = h.items[0] as AmplitudeItem;
      const v = pacer.recheck(pacedIds(head));
      if (v.kind === 'hold') {
        h.timer = setTimeout(() => this.releaseHeld(key), Math.max(1, v.untilMs - this.d.clock.now()));
        this.pump();
        return;
      }
      h.items.shift();
      if (v.kind === 'send') this.enqueue(head);
      else {
        pacer.release(key);
        if (v.kind === 'park') void this.park(head, v.untilMs, v.reason);
        else void this.deadLetter(head.msg, 'daily_quota', `over the daily quota until ${new Date(v.untilMs).toISOString()}`);
      }
    }
    this.holds.delete(key);
    this.pump();
  }

  /** Writes the event to the retry topic with its not-before time; its offset is released once stored. */
  private async park(item: AmplitudeItem, untilMs: number, reason: string): Promise<void> {
    const retry = this.deps.retry;
    if (!retry) {
      await this.deadLetter(item.msg, reason, 'no retry topic configured');
      return;
    }
    await retry.producer.send(retry.topic, [
      {
        key: item.key,
        value: item.msg.value,
        headers: { [NOT_BEFORE_HEADER]: String(Math.ceil(untilMs)), [PARK_REASON_HEADER]: reason, [RECEIVED_AT_HEADER]: String(item.seenMs) },
      },
    ]);
    this.finish(item.msg);
  }

  protected override async expireHeld(cutoff: number): Promise<void> {
    const expired: AmplitudeItem[] = [];
    for (const [key, h] of this.holds) {
      const keep = h.items.filter((i) => i.seenMs > cutoff);
      for (const i of h.items) if (i.seenMs <= cutoff) {
        expired.push(i);
        this.deps.pacer?.release(key);
      }
      h.items = keep;
      if (keep.length === 0) {
        if (h.timer) clearTimeout(h.timer);
        this.holds.delete(key);
      }
    }
    await this.expire(expired, cutoff);
  }

  protected async deliver(items: AmplitudeItem[]): Promise<void> {
    const { metrics } = this.d;
    for (;;) {
      items = await this.beforeAttempt(items);
      if (items.length === 0) return;
      const body = `{"api_key":${this.apiKeyJson},"events":[${items.map((i) => i.eventJson).join(',')}],"options":${this.optionsJson}}`;
      metrics.batchSize.observe({ destination: AMPLITUDE_DESTINATION }, items.length);
      this.d.health.recordAttempt();
      const res = await this.sender.post('/2/httpapi', body, {});
      metrics.requests.inc({ destination: AMPLITUDE_DESTINATION, status: String(res.status) });
      metrics.requestDuration.observe({ destination: AMPLITUDE_DESTINATION }, res.durationMs / 1000);
      let parsed: unknown;
      try {
        parsed = JSON.parse(scrubSecrets(res.text, [this.deps.amplitude.apiKey]));
      } catch {
        parsed = undefined;
      }
      const o = classifyAmplitudeResponse(res.status, parsed, res.headers, items.length, Date.now());
      switch (o.kind) {
        case 'ok':
          for (const it of items) this.finish(it.msg);
          this.delivered(items.length);
          return;
        case 'invalid_events':
        case 'silenced':
          await this.dropAndResend(items, o.events, o.failure.message);
          return;
        case 'too_large':
        case 'split':
          if (items.length > 1) {
            const mid = Math.ceil(items.length / 2);
            await this.deliver(items.slice(0, mid));
            await this.deliver(items.slice(mid));
          } else {
            await this.deadLetter((items[0] as AmplitudeItem).msg, 'too_large_single', o.failure.message);
          }
          return;
        case 'throttled':
        case 'daily_quota': {
          const quota = o.kind === 'daily_quota' ? idSet(o.devices, o.users) : undefined;
          const throttled = idSet(o.throttledDevices, o.throttledUsers);
          const indexes = new Set(o.throttledIndexes);
          const parked: AmplitudeItem[] = [];
          const held: AmplitudeItem[] = [];
          const rest: AmplitudeItem[] = [];
          items.forEach((it, i) => {
            if (quota && matches(it, quota)) parked.push(it);
            else if (indexes.has(i) || matches(it, throttled)) held.push(it);
            else rest.push(it);
          });
          if (parked.length === 0 && held.length === 0) {
            // Throttled without naming anyone: slow the whole destination.
            this.failed(o.failure, res.status);
            continue;
          }
          this.d.health.recordFailure('rate_limited', o.failure.message);
          metrics.retries.inc({ destination: AMPLITUDE_DESTINATION, class: 'rate_limited' }, held.length > 0 ? 1 : 0);
          // The configured hold (30 s, Amplitude's advice), or longer when Amplitude says so.
          const hold = Math.max(this.deps.settings.throttleHoldMs, retryAfterFromHeaders(res.headers, Date.now()) ?? 0);
          await Promise.all([
            ...parked.map((it) => this.deadLetter(it.msg, 'daily_quota', o.failure.message)),
            rest.length > 0 ? this.deliver(rest) : Promise.resolve(),
            held.length > 0 ? this.waitOutsideSlot(hold).then(() => this.deliver(held)) : Promise.resolve(),
          ]);
          return;
        }
        case 'auth':
        case 'fatal':
        case 'retryable':
          this.failed(o.failure, res.status);
          continue;
      }
    }
  }

  /** Dead-letters the events Amplitude named, and sends the others again as they were. */
  private async dropAndResend(items: AmplitudeItem[], dropped: DroppedEvent[], message: string): Promise<void> {
    const bad = new Map<number, DroppedEvent>();
    for (const e of dropped) if (e.index >= 0 && e.index < items.length) bad.set(e.index, e);
    const rest = items.filter((_, i) => !bad.has(i));
    await Promise.all([
      ...[...bad].map(([i, e]) =>
        this.deadLetter((items[i] as AmplitudeItem).msg, e.reason, `${message}${e.fields.length ? ` (fields: ${e.fields.join(', ')})` : ''}`),
      ),
      rest.length > 0 ? this.deliver(rest) : Promise.resolve(),
    ]);
  }

  protected async closeTransport(): Promise<void> {
    for (const h of this.holds.values()) if (h.timer) clearTimeout(h.timer);
    await this.sender.close();
  }
}

function pacedIds(it: AmplitudeItem): PacedIds {
  return { key: it.key, ...(it.deviceId ? { deviceId: it.deviceId } : {}), ...(it.userId ? { userId: it.userId } : {}) };
}

function idSet(devices: string[], users: string[]): { devices: Set<string>; users: Set<string> } {
  return { devices: new Set(devices), users: new Set(users) };
}

function matches(it: AmplitudeItem, s: { devices: Set<string>; users: Set<string> }): boolean {
  return (it.deviceId !== undefined && s.devices.has(it.deviceId)) || (it.userId !== undefined && s.users.has(it.userId));
}

function headerString(v: Buffer | string | Array<Buffer | string> | undefined): string {
  const x = Array.isArray(v) ? v[0] : v;
  return x === undefined ? '' : x.toString();
}
