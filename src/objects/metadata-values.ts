/**
 * Commit metadata values between people and GVariant.
 *
 * `--meta KEY=VALUE` stores a string (`s`), like `ostree commit --add-metadata-string`.
 * `--meta KEY:TYPE=VALUE` stores another type:
 *
 *   b            true | false
 *   y n q i u    decimal integers (8/16/32-bit)
 *   x t          decimal 64-bit integers (stored as OSTree's --add-metadata does: GVariant little-endian)
 *   d            a decimal number
 *   s            a string (the same as no type)
 *   as           comma-separated strings ("a,b,c"; "" is the empty list)
 *   ay           hex bytes ("00ff10")
 *
 * Example: `--meta version=2.0 --meta build:t=1234 --meta arches:as=x86_64,aarch64`.
 */
import { RegistryError } from '../errors.js';
import { type GvValue, Variant } from '../gvariant/index.js';

const INT_RANGES: Record<string, [bigint, bigint]> = {
  y: [0n, 255n],
  n: [-32768n, 32767n],
  q: [0n, 65535n],
  i: [-2147483648n, 2147483647n],
  u: [0n, 4294967295n],
  x: [-(2n ** 63n), 2n ** 63n - 1n],
  t: [0n, 2n ** 64n - 1n],
};

function bad(arg: string, why: string): RegistryError {
  return new RegistryError(
    'E_USAGE',
    `--meta ${arg}: ${why}`,
    { found: arg },
    'use KEY=VALUE or KEY:TYPE=VALUE',
  );
}

export function parseMetaArg(arg: string): [string, Variant] {
  const eq = arg.indexOf('=');
  if (eq <= 0) throw bad(arg, 'expected KEY=VALUE');
  const left = arg.slice(0, eq);
  const raw = arg.slice(eq + 1);
  const colon = left.lastIndexOf(':');
  const key = colon > 0 ? left.slice(0, colon) : left;
  const type = colon > 0 ? left.slice(colon + 1) : 's';
  if (key === '') throw bad(arg, 'empty key');
  if (type === 's') return [key, new Variant('s', raw)];
  if (type === 'b') {
    if (raw !== 'true' && raw !== 'false') throw bad(arg, 'a b value is true or false');
    return [key, new Variant('b', raw === 'true')];
  }
  if (type === 'd') {
    const n = Number(raw);
    if (raw.trim() === '' || !Number.isFinite(n)) throw bad(arg, 'not a number');
    return [key, new Variant('d', n)];
  }
  if (type === 'as') return [key, new Variant('as', raw === '' ? [] : raw.split(','))];
  if (type === 'ay') {
    if (!/^([0-9a-fA-F]{2})*$/.test(raw)) throw bad(arg, 'an ay value is hex bytes');
    return [key, new Variant('ay', Buffer.from(raw, 'hex'))];
  }
  const range = INT_RANGES[type];
  if (!range) throw bad(arg, `unsupported type "${type}" (use b y n q i u x t d s as ay)`);
  if (!/^-?\d+$/.test(raw)) throw bad(arg, 'not a decimal integer');
  const v = BigInt(raw);
  if (v < range[0] || v > range[1]) throw bad(arg, `out of range for ${type}`);
  return [key, new Variant(type, type === 'x' || type === 't' ? v : Number(v))];
}

/** A JSON-safe rendering of a metadata value: numbers, strings, booleans, lists; bytes as hex. */
export function variantToJson(v: Variant): unknown {
  const conv = (type: string, value: GvValue): unknown => {
    if (value instanceof Variant) return conv(value.type, value.value);
    if (type === 'ay') return Buffer.from(value as Uint8Array).toString('hex');
    if (typeof value === 'bigint')
      return value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value.toString();
    if (Array.isArray(value)) return value.map((x) => conv(type.startsWith('a') ? type.slice(1) : '', x));
    if (value instanceof Uint8Array) return Buffer.from(value).toString('hex');
    return value;
  };
  return conv(v.type, v.value);
}
