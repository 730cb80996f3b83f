/**
 * Packs: one streamed, zstd-compressed file holding many OSTree objects (format: format.ts and
 * docs/format.md "Packs").
 *
 * - PackWriter   records in, compressed frames out to an async sink, with backpressure (writer.ts)
 * - readPack     compressed bytes in, verified records out as events, in bounded memory (reader.ts)
 * - PackIndex    where each record and frame is; encodeIndex / decodeIndex for the `.idx` file
 * - PackFile     random access to a pack on disk through its index, unverified (pack-file.ts)
 *
 * A note on content records (kind 5): readPack's `data` events carry the file's bytes, with the
 * header given as `file.meta`; PackFile returns a record's payload exactly as stored (header ‖ file
 * bytes; parseContentHeader splits it).
 */
export {
  badPack,
  DEFAULT_LEVEL,
  FRAME_TARGET,
  type FrameInfo,
  isRecordKind,
  KIND,
  type KindName,
  kindName,
  MAX_METADATA_RECORD,
  objectTypeOf,
  PACK_MAGIC,
  type PackIndex,
  RECORD_HEADER_SIZE,
  type RecordInfo,
  type RecordKind,
  recordId,
  STORE_LEVEL,
} from './format.js';
export { decodeIndex, encodeIndex, INDEX_MAGIC } from './index-file.js';
export { MAX_READ, PackFile } from './pack-file.js';
export { MAX_COLLECT, type PackEvent, type ReadPackOptions, type RecordFile, readPack } from './reader.js';
export {
  type PackSink,
  type PackSummary,
  PackWriter,
  type PackWriterOptions,
  writableSink,
} from './writer.js';
