/**
 * Bounded concurrency for transfers. A TaskGroup runs tasks at most `limit` at a time, stops
 * starting new ones after the first failure, and `wait()` returns only when every started task has
 * settled — so when a pull fails, no request is still writing into the cache behind our back and
 * the error the user sees is the first one, not a cascade.
 */

class Aborted extends Error {}

export class TaskGroup {
  private running = 0;
  private readonly queue: Array<() => void> = [];
  private readonly pending = new Set<Promise<void>>();
  private error: { e: unknown } | undefined;

  constructor(private readonly limit: number) {}

  get failed(): boolean {
    return this.error !== undefined;
  }

  /** Hold one of the `limit` slots while `fn` runs (for the expensive part of a task: the request). */
  async slot<T>(fn: () => Promise<T>): Promise<T> {
    if (this.running >= this.limit) await new Promise<void>((r) => this.queue.push(r));
    this.running++;
    try {
      if (this.error) throw new Aborted();
      return await fn();
    } finally {
      this.running--;
      this.queue.shift()?.();
    }
  }

  /** Start a task; its failure fails the group. */
  spawn(fn: () => Promise<void>): void {
    if (this.error) return;
    const p: Promise<void> = fn()
      .catch((e: unknown) => {
        if (!this.error && !(e instanceof Aborted)) this.error = { e };
      })
      .finally(() => this.pending.delete(p));
    this.pending.add(p);
  }

  /** Wait for every task (including tasks spawned by tasks), then throw the first failure if any. */
  async wait(): Promise<void> {
    while (this.pending.size) await Promise.all([...this.pending]);
    if (this.error) throw this.error.e;
  }
}

/**
 * Run `fn` over `items` with `limit` workers (no promise per item up front: 100,000 objects would
 * otherwise mean 100,000 queued closures). The first failure stops the workers and is thrown once
 * all of them have stopped.
 */
export async function forEachLimit<T>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  let error: { e: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (!error && next < items.length) {
      const item = items[next++] as T;
      try {
        await fn(item);
      } catch (e) {
        error ??= { e };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  if (error) throw error.e;
}
