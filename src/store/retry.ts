/**
 * Retry timing for remote stores: exponential backoff with full jitter (each delay uniform in
 * [0, min(cap, base · 2^n)]), which spreads the retries of many clients hit by one 503 SlowDown burst
 * instead of having them come back in step.
 *
 * The defaults give up after 8 attempts and at most 0.1+0.2+0.4+0.8+1.6+3.2+5 = 11.3 s of waiting
 * (half that on average): longer than an RGW restart of a few seconds, short enough that a push
 * against a dead endpoint fails within a quarter of a minute.
 */
export interface RetryPolicy {
  /** Attempts in all, the first included (1 = never retry). */
  attempts: number;
  /** The cap of the first delay, doubled for each further retry. */
  baseDelayMs: number;
  /** No single delay is longer than this. */
  maxDelayMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 8, baseDelayMs: 100, maxDelayMs: 5_000 };

/** What a store reports before it waits and tries again (for logs and tests). */
export interface RetryEvent {
  op: string;
  key: string;
  /** The attempt that just failed, from 1. */
  attempt: number;
  code: string;
  status: number | undefined;
  delayMs: number;
}

/** The delay before retry number `retry` (0 = the first retry). */
export function backoffDelay(retry: number, policy: RetryPolicy, random: () => number = Math.random): number {
  const cap = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.min(retry, 30));
  return Math.floor(random() * cap);
}

export function retryPolicy(p: Partial<RetryPolicy> = {}): RetryPolicy {
  const policy = { ...DEFAULT_RETRY, ...p };
  if (!Number.isInteger(policy.attempts) || policy.attempts < 1)
    throw new RangeError(`retry attempts must be a positive integer, not ${policy.attempts}`);
  return policy;
}
