import { describe, expect, it } from 'vitest';
import { decode, encode, GVariantError, Variant } from '../src/gvariant/index.js';

const hex = (b: Buffer) => b.toString('hex');

describe('GVariant codec', () => {
  it('encodes strings with a NUL and byte arrays raw', () => {
    expect(hex(encode('s', ''))).toBe('00');
    expect(hex(encode('s', 'ab'))).toBe('616200');
    expect(hex(encode('ay', Buffer.from([1, 2])))).toBe('0102');
  });

  it('frames variable-size array elements with end offsets after the body', () => {
    // ["a", "bc"]: "a\0" "bc\0", then end offsets 2 and 5 (one byte each)
    expect(hex(encode('as', ['a', 'bc']))).toBe('6100626300' + '0205');
    expect(decode('as', encode('as', ['a', 'bc']))).toEqual(['a', 'bc']);
  });

  it('lists tuple offsets in reverse member order and aligns members', () => {
    // (s, s, u): first s ends at 2, second at 4; u aligned to 4 → offsets reversed: 04 02
    const b = encode('(ssu)', ['a', 'b', 7]);
    expect(hex(b)).toBe('61006200' + '07000000' + '0402');
    expect(decode('(ssu)', b)).toEqual(['a', 'b', 7]);
  });

  it('pads fixed-size tuples to their alignment and encodes the unit tuple as one byte', () => {
    expect(hex(encode('(yu)', [1, 2]))).toBe('01000000' + '02000000');
    expect(hex(encode('()', []))).toBe('00');
  });

  it('encodes a variant as value, NUL, type string', () => {
    expect(hex(encode('v', new Variant('s', 'x')))).toBe('7800' + '00' + '73');
    const back = decode('a{sv}', encode('a{sv}', [['k', new Variant('t', 5n)]])) as [string, Variant][];
    expect(back[0]![1]).toEqual(new Variant('t', 5n));
  });

  it('uses 2-byte offsets once a container passes 255 bytes', () => {
    const items = Array.from({ length: 100 }, (_, i) => `item${i}`);
    const b = encode('as', items);
    expect(b.length).toBeGreaterThan(255);
    // The last offset (2 bytes, little-endian) points at the start of the offset table.
    expect(b.readUInt16LE(b.length - 2)).toBe(b.length - 2 * items.length);
    expect(decode('as', b)).toEqual(items);
  });

  it('refuses input that is not in normal form', () => {
    const good = encode('(ssu)', ['a', 'b', 7]);
    const padded = encode('(yu)', [1, 2]);
    const nonZeroPad = Buffer.from(padded);
    nonZeroPad[1] = 1;
    expect(() => decode('(yu)', nonZeroPad)).toThrow(GVariantError);
    expect(() => decode('(ssu)', Buffer.concat([good, Buffer.from([0])]))).toThrow(GVariantError);
    // A 2-byte offset where 1 byte suffices is not minimal.
    expect(() => decode('as', Buffer.from('61000200', 'hex'))).toThrow(GVariantError);
    expect(() => decode('s', Buffer.from('6162', 'hex'))).toThrow(/NUL-terminated/);
    expect(() => decode('s', Buffer.from('ff00', 'hex'))).toThrow(/UTF-8/);
    expect(() => decode('b', Buffer.from([2]))).toThrow(GVariantError);
  });
});
