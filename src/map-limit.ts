/** Bounded concurrency over an array, shared by the checkout, pack generation and the object store. */

/**
 * `fn` over `items` with at most `limit` calls in flight; results in input order. After the first
 * failure no new call starts, and the promise rejects with that failure only once every call in
 * flight has settled: a caller that cleans up (removes a temp tree) must not race its own writers.
 */
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, i: number) => Promise<R>,
): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  let failure: { error: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (!failure && next < items.length) {
      const i = next++;
      try {
        out[i] = await fn(items[i]!, i);
      } catch (e) {
        failure ??= { error: e };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failure) throw failure.error;
  return out;
}
