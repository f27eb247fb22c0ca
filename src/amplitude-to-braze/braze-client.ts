import type { Clock } from '../clock.js';
import type { BrazeSettings } from '../config/config.js';
import { HttpSender } from '../delivery/http-sender.js';
import { RequestWindow } from '../delivery/request-window.js';
import { sleep } from '../delivery/delivery-leg.js';
import type { Answer } from '../delivery/outcome.js';
import { scrubSecrets } from '../observability/logger.js';
import { classifyBrazeResponse, countArrays } from './braze-response.js';

const USER_AGENT = 'amplitude-braze-gateway/0.1';

/**
 * The one client of a Braze workspace's `/users/track`: every writer (the outbound leg, cohort and
 * trait syncs) shares its connection pool and its request budget, because Braze counts requests per
 * workspace. Each answer comes back classified into one DeliveryOutcome, with rejects naming object
 * positions in the request: attributes first, then events, then purchases.
 */
export class BrazeClient {
  readonly url: string;
  private readonly sender: HttpSender;
  private readonly window: RequestWindow;

  constructor(
    private readonly settings: Pick<BrazeSettings, 'restEndpoint' | 'apiKey' | 'concurrency' | 'requestTimeoutMs' | 'rateLimitRequests' | 'rateLimitWindowMs'>,
    clock: Clock,
  ) {
    this.url = `${settings.restEndpoint.replace(/\/+$/, '')}/users/track`;
    this.sender = new HttpSender(settings.restEndpoint, { connections: settings.concurrency, timeoutMs: settings.requestTimeoutMs, userAgent: USER_AGENT });
    this.window = new RequestWindow(settings.rateLimitRequests, settings.rateLimitWindowMs, clock);
  }

  /** Posts one `/users/track` body (its arrays in the order attributes, events, purchases). */
  async track(body: string): Promise<Answer> {
    // The workspace's request budget is shared by every request: wait for the next window when spent.
    for (let wait = this.window.take(); wait > 0; wait = this.window.take()) await sleep(wait);
    const res = await this.sender.post('/users/track', body, { authorization: `Bearer ${this.settings.apiKey}` });
    const text = scrubSecrets(res.networkError ? res.networkError : res.text, [this.settings.apiKey]);
    const outcome = classifyBrazeResponse(res.status, res.headers, text, () => countArrays(body), Date.now());
    return { outcome, status: res.status, durationMs: res.durationMs, body: text };
  }

  close(): Promise<void> {
    return this.sender.close();
  }
}
