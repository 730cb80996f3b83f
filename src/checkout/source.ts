/**
 * Where a checkout reads its objects from, when that is not a repository's ObjectStore: the pull
 * cache's packs (src/transfer/pack-source.ts). checkoutCommit takes either.
 *
 * A source hands out metadata by checksum and content objects in whatever order suits it (a pack
 * is cheapest read front to back: each frame is then decompressed once). What it hands out must
 * already be trusted: the cached packs were verified record by record when they were received
 * (zstd's frame checksums catch damage since), and a pack arriving hands out each record only once
 * readPack verified it.
 */
import type { Checksum, DirTree } from '../objects/index.js';
import type { Content } from './content.js';

export interface CheckoutSource {
  /** A commit, dirtree or dirmeta; E_OBJECT_MISSING if the source does not hold it. */
  readMetadata(checksum: Checksum, type: 'commit' | 'dirtree' | 'dirmeta'): Promise<Buffer>;
  /**
   * A dirtree already decoded (and so checked for normal form), when the source has one: a pack
   * arriving decodes each dirtree to verify it, and decoding the ~800 of a sysroot again cost a
   * cold pull ~25 ms. Optional; the checkout decodes readMetadata's bytes otherwise.
   */
  readDirTree?(checksum: Checksum): Promise<DirTree>;
  /**
   * Every content object of `wanted`, each once, in the source's order; E_OBJECT_MISSING naming
   * one it does not hold (a pack arriving may only know at its end). The checkout trusts nothing it
   * wrote until the iteration ended. The consumer is done with one object (its payload, or its
   * stream) before it asks for the next.
   */
  contents(wanted: readonly Checksum[]): AsyncIterable<{ checksum: Checksum; content: Content }>;
}
