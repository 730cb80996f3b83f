/**
 * OSTree stores its own integer fields big-endian inside little-endian GVariant containers
 * (uid, gid, mode, rdev, the .filez size and the commit timestamp). These swap a value so that
 * GVariant's little-endian write puts its big-endian bytes on disk.
 */
export function bswap32(v: number): number {
  return (((v & 0xff) << 24) | ((v & 0xff00) << 8) | ((v >>> 8) & 0xff00) | ((v >>> 24) & 0xff)) >>> 0;
}

export function bswap64(v: bigint): bigint {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(v);
  return b.readBigUInt64BE(0);
}
