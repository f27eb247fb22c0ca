import type { AmplitudeSettings, InboundSettings } from '../config/config.js';
import type { ConsumedMessage, MessageSink } from '../kafka/consumer-loop.js';
import { scrubSecrets } from '../observability/logger.js';
import { HttpSender } from '../delivery/http-sender.js';
import { DeliveryLeg, type DeliveryLegDeps, type Destination, type Encoded, type LegItem } from '../delivery/delivery-leg.js';
import type { Answer } from '../delivery/outcome.js';
import { amplitudeOutcome, classifyAmplitudeResponse } from './amplitude-response.js';
import { parseJsonText, validateCurrentsEvent } from '../currents-ingest/currents-body.js';
import { identityKey, mapCurrentsEvent, type CurrentsMappingOptions } from './currents-to-amplitude.js';
import { RECEIVED_AT_HEADER } from '../currents-ingest/currents-route.js';
import type { IdPacer, PacedIds, ParkTier } from './id-pacer.js';
import { retryTopicFor, tierOfTopic } from './park-tiers.js';
import type { BatchingProducer } from '../kafka/batching-producer.js';

export const AMPLITUDE_DESTINATION = 'amplitude';
const USER_AGENT = 'amplitude-braze-gateway/0.1';

export interface AmplitudeItem extends LegItem {
  eventJson: string;
  deviceId?: string;
  userId?: string;
}

export type AmplitudeLegDeps = Omit<DeliveryLegDeps<AmplitudeItem>, 'leg' | 'destination' | 'encode' | 'limits' | 'concurrency' | 'lingerMs' | 'maxInFlightEvents' | 'backoff' | 'admit' | 'takeHeldBefore' | 'park'> & {
  amplitude: AmplitudeSettings & { apiKey: string };
  settings: InboundSettings;
  /** per-id pacing; absent when limits are off */
  pacer?: IdPacer;
  /** AMPLITUDE_QUOTA_ACTION: park events over a daily quota, or dead-letter them */
  quotaAction: 'park' | 'dead-letter';
  /** how long ids Amplitude names over quota are parked when there is no pacer to ask */
  quotaBucketMs: number;
  /** where events over their id's rate (`topic`, the short tier) or daily quota (`quotaTopic`, the long tier) wait */
  retry?: { topic: string; quotaTopic: string; producer: BatchingProducer };
};

export const NOT_BEFORE_HEADER = 'not-before';
export const PARK_REASON_HEADER = 'reason';

/**
 * The inbound leg after Kafka: Currents events become Amplitude events, paced per device and user
 * id, batched under Amplitude's request limits with order kept per identity, and delivered by the
 * shared core, which acts on each answer's outcome.
 */
export class AmplitudeLeg implements MessageSink {
  private readonly core: DeliveryLeg<AmplitudeItem>;
  private readonly mapping: CurrentsMappingOptions;
  /** per key, events waiting in memory for their id's rate, oldest first */
  private readonly holds = new Map<string, { items: AmplitudeItem[]; timer?: NodeJS.Timeout }>();

  constructor(private readonly deps: AmplitudeLegDeps) {
    const s = deps.settings;
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
    this.core = new DeliveryLeg<AmplitudeItem>({
      ...deps,
      leg: 'inbound',
      destination: new AmplitudeDestination(deps.amplitude, s, m.minIdLength),
      encode: (msg, seenMs) => this.encode(msg, seenMs),
      limits: { maxPerPart: s.maxEventsPerRequest, maxTotal: 0, maxBytes: s.maxRequestBytes - 256 },
      concurrency: s.concurrency,
      lingerMs: s.lingerMs,
      maxInFlightEvents: s.maxInFlightEvents,
      backoff: { baseMs: s.retryBaseMs, maxMs: s.retryMaxMs, stopRetryMs: s.authRetryMs },
      ...(deps.pacer ? { admit: (item: AmplitudeItem) => this.admit(item) } : {}),
      takeHeldBefore: (cutoff) => this.takeHeldBefore(cutoff),
      park: (items, ids) => this.parkQuota(items, ids),
    });
    // Events that waited for their partition's restored counts go on as soon as they are in.
    // (Not from inside the pacer's call: a restore can end during a decision the core is making.)
    deps.pacer?.onRestored((partition) => queueMicrotask(() => this.releasePartition(partition)));
  }

  accept(msg: ConsumedMessage): void {
    this.core.accept(msg);
  }

  hasCapacity(): boolean {
    return this.core.hasCapacity();
  }

  drain(timeoutMs: number): Promise<boolean> {
    return this.core.drain(timeoutMs);
  }

  get pending(): number {
    return this.core.pending;
  }

  expireBefore(cutoff: number): Promise<number> {
    return this.core.expireBefore(cutoff);
  }

  private encode(msg: ConsumedMessage, recordMs: number): Encoded<AmplitudeItem> {
    const parsed = parseJsonText(msg.value ?? Buffer.alloc(0));
    // Re-validated on the way out: the topic may hold events written by other producers. One walk
    // (validateCurrentsEvent's) judges depth, strings and forbidden keys alike.
    if (!parsed.ok) return { deadLetter: 'not_json', error: parsed.message };
    const v = validateCurrentsEvent(parsed.value);
    if (!v.ok) return { deadLetter: v.reason, error: v.message };
    const r = mapCurrentsEvent(v.event, this.mapping);
    for (const id of r.droppedIds) this.deps.metrics.adjustments.inc({ leg: 'inbound', kind: 'dropped', rule: `${id.field}_${id.reason}` });
    if (!r.ok) return r.reason === 'unsupported_event' ? { skip: r.reason } : { deadLetter: r.reason, error: r.message };
    const ev = r.event;
    const eventJson = JSON.stringify(ev);
    // Parked events carry their first receipt in a header; others count from the record timestamp.
    const receivedAt = Number(headerString(msg.headers[RECEIVED_AT_HEADER]));
    return {
      item: {
        key: identityKey(ev, this.mapping) ?? '',
        msg,
        eventJson,
        ...(ev.device_id ? { deviceId: ev.device_id } : {}),
        ...(ev.user_id ? { userId: ev.user_id } : {}),
        parts: ONE,
        bytes: eventJson.length + 1,
        seenMs: Number.isFinite(receivedAt) && receivedAt > 0 ? receivedAt : recordMs,
      },
    };
  }

  /** Sends the item now, or holds, parks or dead-letters it as its ids' rate and quota say. */
  private admit(item: AmplitudeItem): boolean {
    const pacer = this.deps.pacer as IdPacer;
    const ids = pacedIds(item);
    const retry = this.deps.retry;
    const tier = retry ? tierOfTopic(item.msg.topic, { retry: retry.topic, retryQuota: retry.quotaTopic }) : undefined;
    const v = tier ? pacer.decideRetried(ids, tier) : pacer.decide(ids);
    switch (v.kind) {
      case 'send':
        return true;
      case 'hold': {
        const h = this.holds.get(item.key);
        if (h) h.items.push(item);
        else this.holds.set(item.key, { items: [item], timer: setTimeout(() => this.releaseHeld(item.key), Math.max(0, v.untilMs - this.deps.clock.now())) });
        return false;
      }
      case 'park':
        void this.park(item, v.untilMs, v.reason, v.tier);
        return false;
      case 'dead_letter':
        void this.core.deadLetter(item.msg, 'daily_quota', `over the daily quota until ${new Date(v.untilMs).toISOString()}`);
        return false;
    }
  }

  private releasePartition(partition: number): void {
    const keys: string[] = [];
    for (const [key, h] of this.holds) if (h.items[0]?.msg.partition === partition) keys.push(key);
    for (const key of keys) {
      const h = this.holds.get(key);
      if (h?.timer) clearTimeout(h.timer);
      this.releaseHeld(key);
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
        h.timer = setTimeout(() => this.releaseHeld(key), Math.max(1, v.untilMs - this.deps.clock.now()));
        this.core.pump();
        return;
      }
      h.items.shift();
      if (v.kind === 'send') this.core.enqueue(head);
      else {
        pacer.release(key);
        if (v.kind === 'park') void this.park(head, v.untilMs, v.reason, v.tier);
        else void this.core.deadLetter(head.msg, 'daily_quota', `over the daily quota until ${new Date(v.untilMs).toISOString()}`);
      }
    }
    this.holds.delete(key);
    this.core.pump();
  }

  /**
   * Amplitude said these ids are over their daily quota: the pacer parks their new events without
   * sending them until the window allows, and these events are parked (long tier) until then, or
   * dead-lettered with AMPLITUDE_QUOTA_ACTION=dead-letter.
   */
  private async parkQuota(items: AmplitudeItem[], ids: { devices: string[]; users: string[] }): Promise<void> {
    const pacer = this.deps.pacer;
    const untilMs = pacer ? pacer.markOverQuota(ids) : this.deps.clock.now() + this.deps.quotaBucketMs;
    if (this.deps.quotaAction === 'dead-letter') {
      await Promise.all(items.map((it) => this.core.deadLetter(it.msg, 'daily_quota', `Amplitude: over the daily quota until ${new Date(untilMs).toISOString()}`)));
      return;
    }
    const retry = this.deps.retry;
    for (const it of items) {
      const returning = retry !== undefined && (it.msg.topic === retry.topic || it.msg.topic === retry.quotaTopic);
      pacer?.noteParked(pacedIds(it), untilMs, 'daily_quota', returning);
    }
    await Promise.all(items.map((it) => this.park(it, untilMs, 'daily_quota', 'long')));
  }

  /** Writes the event to its tier's retry topic with its not-before time; its offset is released once stored. */
  private async park(item: AmplitudeItem, untilMs: number, reason: 'rate_limit' | 'daily_quota', tier: ParkTier): Promise<void> {
    const retry = this.deps.retry;
    if (!retry) {
      this.deps.pacer?.unpark(item.key, tier);
      await this.core.deadLetter(item.msg, reason, 'no retry topic configured');
      return;
    }
    await retry.producer.send(retryTopicFor(tier, { retry: retry.topic, retryQuota: retry.quotaTopic }), [
      {
        key: item.key,
        value: item.msg.value,
        headers: { [NOT_BEFORE_HEADER]: String(Math.ceil(untilMs)), [PARK_REASON_HEADER]: reason, [RECEIVED_AT_HEADER]: String(item.seenMs) },
      },
    ]);
    this.core.finish(item.msg);
  }

  private takeHeldBefore(cutoff: number): AmplitudeItem[] {
    const expired: AmplitudeItem[] = [];
    for (const [key, h] of this.holds) {
      const keep: AmplitudeItem[] = [];
      for (const i of h.items) {
        if (i.seenMs <= cutoff) {
          expired.push(i);
          this.deps.pacer?.release(key);
        } else keep.push(i);
      }
      h.items = keep;
      if (keep.length === 0) {
        if (h.timer) clearTimeout(h.timer);
        this.holds.delete(key);
      }
    }
    return expired;
  }

  async close(): Promise<void> {
    for (const h of this.holds.values()) if (h.timer) clearTimeout(h.timer);
    await this.core.close();
  }
}

const ONE: readonly number[] = [1];

/** Posts batches to Amplitude's ingest endpoint and classifies each answer. */
export class AmplitudeDestination implements Destination<AmplitudeItem> {
  readonly name = AMPLITUDE_DESTINATION;
  readonly url: string;
  private readonly sender: HttpSender;
  private readonly apiKeyJson: string;
  private readonly optionsJson: string;
  private readonly throttleHoldMs: number;

  constructor(
    private readonly amplitude: AmplitudeSettings & { apiKey: string },
    s: InboundSettings,
    minIdLength: number,
  ) {
    this.url = amplitude.httpApiUrl;
    this.throttleHoldMs = s.throttleHoldMs;
    this.sender = new HttpSender(amplitude.httpApiUrl, { connections: s.concurrency, timeoutMs: s.requestTimeoutMs, userAgent: USER_AGENT });
    this.apiKeyJson = JSON.stringify(amplitude.apiKey);
    this.optionsJson = JSON.stringify({ min_id_length: minIdLength });
  }

  async send(items: AmplitudeItem[]): Promise<Answer> {
    const body = `{"api_key":${this.apiKeyJson},"events":[${items.map((i) => i.eventJson).join(',')}],"options":${this.optionsJson}}`;
    const res = await this.sender.post('', body, {});
    const text = scrubSecrets(res.networkError ?? res.text, [this.amplitude.apiKey]);
    const classified = res.status === 0 ? { kind: 'retryable' as const, failure: { class: 'retryable' as const, reason: 'network', message: `Amplitude unreachable: ${text}` } } : classifyAmplitudeResponse(res.status, text, res.headers, items.length, Date.now());
    return { outcome: amplitudeOutcome(classified, items, this.throttleHoldMs), status: res.status, durationMs: res.durationMs, body: text };
  }

  close(): Promise<void> {
    return this.sender.close();
  }
}

function pacedIds(it: AmplitudeItem): PacedIds {
  // The partition of the event's key: its daily counts are kept, and persisted, per partition.
  return { key: it.key, partition: it.msg.partition, ...(it.deviceId ? { deviceId: it.deviceId } : {}), ...(it.userId ? { userId: it.userId } : {}) };
}

function headerString(v: Buffer | string | Array<Buffer | string> | undefined): string {
  const x = Array.isArray(v) ? v[0] : v;
  return x === undefined ? '' : x.toString();
}
