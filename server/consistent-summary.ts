/**
 * The summary, served only when it agrees with refs/heads.
 *
 * Why the repository's write order is safe for clients: every ref move happens under the write lock,
 * after the new commit's whole closure is checked present, and replaces `refs/heads/<ref>` first and
 * `summary` second. Objects are never deleted. So
 *   - a client that reads the new summary finds the new refs/heads too, and every object it names;
 *   - a client that reads the old summary gets the previous head, which is complete and kept forever
 *     (and is still a valid pin): at worst it is one release behind, never broken;
 *   - a summary is never ahead of refs/heads, so `ostree pull` (summary first) and a client that
 *     reads refs/heads (no summary) cannot be sent to a commit the other path does not know yet.
 * The one disagreement a reader can observe is the few milliseconds between the two replaces. We
 * check for it on every summary read (a few small files: one per ref) and wait it out; a summary left
 * stale by a crash between the two writes, or by a ref written by stock ostree, is rewritten from
 * refs/heads under the lock.
 *
 * summary.sig: ostree fetches it first, and keeps using its cached summary while summary.sig is
 * unchanged, so a summary.sig that does not belong to the summary served would pin clients to an old
 * summary or fail their verification. The repository stores each summary's signature write-once
 * under the summary's sha256 *before* it replaces the summary (sysroot/summary-sigs/, layout.ts), so
 * the signature of the summary read here is always there to serve; none means that summary was
 * written without keys, and summary.sig is then 404.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { decodeSummary, sha256 } from '../src/objects/index.js';
import { SUMMARY_KEY, summarySigKey } from '../src/repo/layout.js';
import type { Repository } from '../src/repo/repository.js';
import type { BlobStat } from '../src/store/blob-store.js';
import type { Logger } from './logger.js';

/** A ref move spends a few ms between the two replaces; 20 + 40 + 80 ms waits it out with room. */
const RETRY_DELAYS_MS = [20, 40, 80];

export interface SummarySnapshot {
  bytes: Buffer;
  /** Taken before the bytes were read, so a Last-Modified derived from it is never newer than they. */
  stat: BlobStat;
}

export class ConsistentSummary {
  private repair: Promise<void> | undefined;

  constructor(
    private readonly repo: Repository,
    private readonly logger: Logger,
  ) {}

  /** The summary bytes, agreeing with refs/heads; undefined if there is no summary and no ref. */
  async read(): Promise<SummarySnapshot | undefined> {
    for (let attempt = 0; ; attempt++) {
      const snapshot = await this.readOnce();
      if (snapshot.agrees) return snapshot.value;
      if (attempt < RETRY_DELAYS_MS.length) {
        await sleep(RETRY_DELAYS_MS[attempt]);
        continue;
      }
      if (attempt === RETRY_DELAYS_MS.length) {
        this.logger.warn('summary disagrees with refs/heads; rewriting it from refs/heads');
        this.repair ??= this.repo.writeSummary().finally(() => {
          this.repair = undefined;
        });
        await this.repair;
        continue;
      }
      // Refs keep moving faster than we can read: serve the newest summary, which is still safe.
      return snapshot.value;
    }
  }

  /** The summary.sig of the summary read() serves now; undefined if that summary is unsigned. */
  async readSig(): Promise<SummarySnapshot | undefined> {
    const summary = await this.read();
    if (!summary) return undefined;
    const key = summarySigKey(sha256(summary.bytes));
    const stat = await this.repo.blobs.stat(key);
    const bytes = stat && (await this.repo.blobs.read(key));
    return stat && bytes ? { bytes, stat } : undefined;
  }

  private async readOnce(): Promise<{ agrees: boolean; value: SummarySnapshot | undefined }> {
    const stat = await this.repo.blobs.stat(SUMMARY_KEY);
    const bytes = stat && (await this.repo.blobs.read(SUMMARY_KEY));
    const refs = await this.repo.listRefs();
    if (!stat || !bytes) return { agrees: refs.length === 0, value: undefined };
    let listed: Array<{ name: string; checksum: string }>;
    try {
      listed = decodeSummary(bytes).refs;
    } catch {
      return { agrees: false, value: { bytes, stat } };
    }
    const heads = new Map(refs.map((r) => [r.name, r.head]));
    const agrees = listed.length === heads.size && listed.every((r) => heads.get(r.name) === r.checksum);
    return { agrees, value: { bytes, stat } };
  }
}
