/**
 * Objects this server has found corrupt in its own store, by id (`<sha>.<type>`): a pack generation
 * that failed on one, or a metadata object that did not hash to its name when /repo/ served it.
 * Such an object is never served again by this process, neither as bytes nor as a redirect to the
 * bucket: its answer is 500 E_CORRUPT_OBJECT (no-store), which no cache keeps, where the bytes would
 * be cached for a year as immutable. An operator restores the object (`sysroot fsck` names it) and
 * restarts the server.
 *
 * Only reads of the store feed it, never an upload: an uploaded object that fails verification is
 * the uploader's (400), and must not let a stranger take a good stored object out of service.
 */
import { isRegistryError, RegistryError } from '../src/errors.js';
import type { Logger } from './logger.js';

export class KnownCorrupt {
  private readonly ids = new Set<string>();

  constructor(private readonly logger: Logger) {}

  /** Remember the object an E_CORRUPT_OBJECT from a store read names; other errors are ignored. */
  noteFrom(e: unknown): void {
    if (!isRegistryError(e, 'E_CORRUPT_OBJECT')) return;
    const id = e.details.object;
    if (typeof id !== 'string' || this.ids.has(id)) return;
    this.ids.add(id);
    this.logger.error(
      `store object ${id} is corrupt (${e.message}); it is no longer served; run sysroot fsck`,
    );
  }

  has(id: string): boolean {
    return this.ids.has(id);
  }

  /** The error for a request of a known corrupt object. */
  refusal(id: string): RegistryError {
    return new RegistryError(
      'E_CORRUPT_OBJECT',
      `object ${id} is corrupt in this server's store and is not served`,
      { object: id },
      'the registry operator must restore it (sysroot fsck names it); try another mirror meanwhile',
    );
  }
}
