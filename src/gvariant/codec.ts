/**
 * GVariant serialisation, as GLib's gvariant-serialiser.c does it, for the types OSTree uses.
 *
 * Values in JavaScript:
 *   y n q i u h d -> number      b -> boolean      x t -> bigint      s o g -> string
 *   ay -> Uint8Array (raw bytes) aT -> array      (..) and {KV} -> array of members
 *   v -> Variant (type string + value)
 *
 * Integers are written little-endian, as GVariant does. OSTree's own big-endian fields
 * (uid, gid, mode, timestamps) are byte-swapped by the caller: see src/objects/.
 *
 * Every container is serialised as if it started at offset 0: alignment is relative to the start
 * of the enclosing container, and a container always starts at an offset aligned to its own
 * alignment, which is at least its children's. So children can be encoded on their own and
 * concatenated with zero padding.
 *
 * decode() refuses anything that is not in normal form (GLib's g_variant_is_normal_form): it decodes,
 * re-encodes and compares the bytes. Normal form is unique, so this is exact, and OSTree's client
 * checks the same property on commits, dirtrees, dirmetas and the summary.
 */
import { alignUp, type GvType, isValidType, parseType } from './type.js';

export class Variant {
  constructor(
    readonly type: string,
    readonly value: GvValue,
  ) {}
}

export type GvValue = number | bigint | boolean | string | Uint8Array | Variant | GvValue[];

export class GVariantError extends Error {
  override name = 'GVariantError';
}

const utf8 = new TextDecoder('utf-8', { fatal: true });
const EMPTY = Buffer.alloc(0);

/**
 * Bytes per framing offset for a container whose body (before offsets) is `body` bytes: the
 * smallest of 1, 2, 4, 8 that can address its end, its offsets included.
 */
export function offsetSize(body: number, nOffsets: number): number {
  if (nOffsets === 0) return 0;
  if (body + nOffsets <= 0xff) return 1;
  if (body + 2 * nOffsets <= 0xffff) return 2;
  if (body + 4 * nOffsets <= 0xffffffff) return 4;
  return 8;
}

/** A framing offset of `k` bytes (offsetSize), little-endian. */
export function writeOffset(buf: Buffer, at: number, value: number, k: number): void {
  if (k === 1) buf.writeUInt8(value, at);
  else if (k === 2) buf.writeUInt16LE(value, at);
  else if (k === 4) buf.writeUInt32LE(value, at);
  else buf.writeBigUInt64LE(BigInt(value), at);
}

function readOffset(buf: Uint8Array, at: number, k: number): number {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (k === 1) return b.readUInt8(at);
  if (k === 2) return b.readUInt16LE(at);
  if (k === 4) return b.readUInt32LE(at);
  const v = b.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new GVariantError('framing offset out of range');
  return Number(v);
}

/** Concatenate parts placed at aligned positions, then append framing offsets. */
class Builder {
  private parts: Uint8Array[] = [];
  length = 0;

  align(a: number): void {
    const target = alignUp(this.length, a);
    if (target > this.length) {
      this.parts.push(Buffer.alloc(target - this.length));
      this.length = target;
    }
  }

  push(b: Uint8Array): void {
    this.parts.push(b);
    this.length += b.length;
  }

  finish(offsets: number[]): Buffer {
    const k = offsetSize(this.length, offsets.length);
    const tail = Buffer.alloc(k * offsets.length);
    offsets.forEach((o, i) => {
      writeOffset(tail, i * k, o, k);
    });
    this.parts.push(tail);
    return Buffer.concat(this.parts, this.length + tail.length);
  }
}

function encodeBasic(code: string, value: GvValue): Buffer {
  switch (code) {
    case 'y': {
      const b = Buffer.alloc(1);
      b.writeUInt8(value as number);
      return b;
    }
    case 'b':
      return Buffer.from([value ? 1 : 0]);
    case 'n': {
      const b = Buffer.alloc(2);
      b.writeInt16LE(value as number);
      return b;
    }
    case 'q': {
      const b = Buffer.alloc(2);
      b.writeUInt16LE(value as number);
      return b;
    }
    case 'i':
    case 'h': {
      const b = Buffer.alloc(4);
      b.writeInt32LE(value as number);
      return b;
    }
    case 'u': {
      const b = Buffer.alloc(4);
      b.writeUInt32LE(value as number);
      return b;
    }
    case 'x': {
      const b = Buffer.alloc(8);
      b.writeBigInt64LE(value as bigint);
      return b;
    }
    case 't': {
      const b = Buffer.alloc(8);
      b.writeBigUInt64LE(value as bigint);
      return b;
    }
    case 'd': {
      const b = Buffer.alloc(8);
      b.writeDoubleLE(value as number);
      return b;
    }
    default: {
      const s = value as string;
      if (s.includes('\0')) throw new GVariantError('a GVariant string cannot contain NUL');
      return Buffer.from(`${s}\0`, 'utf8');
    }
  }
}

function encodeMembers(members: GvType[], values: GvValue[]): Buffer {
  if (values.length !== members.length) {
    throw new GVariantError(`expected ${members.length} members, got ${values.length}`);
  }
  const b = new Builder();
  const offsets: number[] = [];
  members.forEach((m, i) => {
    b.align(m.align);
    b.push(encodeWith(m, values[i] as GvValue));
    if (m.fixedSize === undefined && i !== members.length - 1) offsets.push(b.length);
  });
  return b.finish(offsets.reverse());
}

function encodeWith(t: GvType, value: GvValue): Buffer {
  switch (t.kind) {
    case 'basic':
      return encodeBasic(t.code, value);
    case 'variant': {
      if (!(value instanceof Variant)) throw new GVariantError('expected a Variant');
      const child = encodeWith(parseType(value.type), value.value);
      return Buffer.concat([child, Buffer.from([0]), Buffer.from(value.type, 'ascii')]);
    }
    case 'array': {
      if (t.elem.kind === 'basic' && t.elem.code === 'y') {
        if (!(value instanceof Uint8Array)) throw new GVariantError('expected bytes for ay');
        return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
      }
      const items = value as GvValue[];
      if (items.length === 0) return EMPTY;
      const b = new Builder();
      const offsets: number[] = [];
      for (const item of items) {
        b.align(t.elem.align);
        b.push(encodeWith(t.elem, item));
        if (t.elem.fixedSize === undefined) offsets.push(b.length);
      }
      return b.finish(offsets);
    }
    case 'tuple':
    case 'dict': {
      const out = encodeMembers(t.members, value as GvValue[]);
      if (t.fixedSize !== undefined && out.length < t.fixedSize) {
        return Buffer.concat([out, Buffer.alloc(t.fixedSize - out.length)]);
      }
      return out;
    }
  }
}

/** Serialise `value` as type `type` (a type string such as "(uuua(ayay))"). */
export function encode(type: string, value: GvValue): Buffer {
  return encodeWith(parseType(type), value);
}

function decodeBasic(code: string, b: Buffer): GvValue {
  switch (code) {
    case 'y':
      return b.readUInt8(0);
    case 'b':
      if (b[0]! > 1) throw new GVariantError('boolean is not 0 or 1');
      return b[0] === 1;
    case 'n':
      return b.readInt16LE(0);
    case 'q':
      return b.readUInt16LE(0);
    case 'i':
    case 'h':
      return b.readInt32LE(0);
    case 'u':
      return b.readUInt32LE(0);
    case 'x':
      return b.readBigInt64LE(0);
    case 't':
      return b.readBigUInt64LE(0);
    case 'd':
      return b.readDoubleLE(0);
    default: {
      if (b.length === 0 || b[b.length - 1] !== 0) throw new GVariantError('string is not NUL-terminated');
      const body = b.subarray(0, b.length - 1);
      if (body.includes(0)) throw new GVariantError('string contains NUL');
      try {
        return utf8.decode(body);
      } catch {
        throw new GVariantError('string is not valid UTF-8');
      }
    }
  }
}

function decodeMembers(members: GvType[], b: Buffer): GvValue[] {
  const nOffsets = members.filter((m, i) => m.fixedSize === undefined && i !== members.length - 1).length;
  const k = nOffsets === 0 ? 0 : sizeFromTotal(b.length);
  const tableStart = b.length - k * nOffsets;
  if (tableStart < 0) throw new GVariantError('container too small for its framing offsets');
  const out: GvValue[] = [];
  let pos = 0;
  let nextOffset = 0;
  members.forEach((m, i) => {
    pos = alignUp(pos, m.align);
    let end: number;
    if (m.fixedSize !== undefined) end = pos + m.fixedSize;
    else if (i === members.length - 1) end = tableStart;
    else {
      end = readOffset(b, b.length - k * (nextOffset + 1), k);
      nextOffset++;
    }
    if (pos > end || end > tableStart) throw new GVariantError('member out of bounds');
    out.push(decodeWith(m, b.subarray(pos, end)));
    pos = end;
  });
  return out;
}

/** A reader derives the offset size from the container's total size alone. */
export function sizeFromTotal(total: number): number {
  if (total <= 0xff) return 1;
  if (total <= 0xffff) return 2;
  if (total <= 0xffffffff) return 4;
  return 8;
}

function decodeWith(t: GvType, b: Buffer): GvValue {
  if (t.fixedSize !== undefined && b.length !== t.fixedSize) {
    throw new GVariantError(`${t.str} must be ${t.fixedSize} bytes, found ${b.length}`);
  }
  switch (t.kind) {
    case 'basic':
      return decodeBasic(t.code, b);
    case 'variant': {
      const sep = b.lastIndexOf(0);
      if (sep < 0) throw new GVariantError('variant has no type separator');
      const type = b.subarray(sep + 1).toString('latin1');
      if (!isValidType(type)) throw new GVariantError(`variant has an invalid type "${type}"`);
      return new Variant(type, decodeWith(parseType(type), b.subarray(0, sep)));
    }
    case 'array': {
      const elem = t.elem;
      if (elem.kind === 'basic' && elem.code === 'y') return b;
      if (b.length === 0) return [];
      if (elem.fixedSize !== undefined) {
        if (b.length % elem.fixedSize !== 0)
          throw new GVariantError('array length is not a multiple of its element');
        const out: GvValue[] = [];
        for (let p = 0; p < b.length; p += elem.fixedSize)
          out.push(decodeWith(elem, b.subarray(p, p + elem.fixedSize)));
        return out;
      }
      const k = sizeFromTotal(b.length);
      const tableStart = readOffset(b, b.length - k, k);
      if (tableStart > b.length - k || (b.length - tableStart) % k !== 0) {
        throw new GVariantError('array framing offsets out of bounds');
      }
      const n = (b.length - tableStart) / k;
      const out: GvValue[] = [];
      let pos = 0;
      for (let i = 0; i < n; i++) {
        pos = alignUp(pos, elem.align);
        const end = readOffset(b, tableStart + i * k, k);
        if (pos > end || end > tableStart) throw new GVariantError('array element out of bounds');
        out.push(decodeWith(elem, b.subarray(pos, end)));
        pos = end;
      }
      return out;
    }
    case 'tuple':
    case 'dict':
      return decodeMembers(t.members, b);
  }
}

/**
 * Parse `bytes` as `type`. Throws GVariantError if the bytes are malformed or not in normal form
 * (non-minimal offsets, non-zero padding, trailing bytes).
 */
export function decode(type: string, bytes: Uint8Array): GvValue {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let value: GvValue;
  try {
    value = decodeWith(parseType(type), b);
  } catch (e) {
    if (e instanceof GVariantError) throw e;
    // Buffer reads past the end throw RangeError: malformed input, not a bug.
    throw new GVariantError(`malformed ${type}: ${(e as Error).message}`);
  }
  if (!encode(type, value).equals(b)) throw new GVariantError(`${type} is not in GVariant normal form`);
  return value;
}
