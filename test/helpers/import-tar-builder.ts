/**
 * Hand-written ustar members for hostile archives that a well-behaved writer (src/tar/writer.ts)
 * refuses to produce: hard links to '../x', members below symlinks, type clashes, device nodes.
 */

export interface RawMember {
  /** Written verbatim into the 100-byte name field (no normalisation). */
  name: string;
  type: 'file' | 'dir' | 'symlink' | 'hardlink' | 'chardev' | 'blockdev' | 'fifo';
  body?: Buffer | string;
  linkname?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  devmajor?: number;
  devminor?: number;
}

const TYPEFLAG: Record<RawMember['type'], string> = {
  file: '0',
  hardlink: '1',
  symlink: '2',
  chardev: '3',
  blockdev: '4',
  dir: '5',
  fifo: '6',
};

function octal(b: Buffer, off: number, len: number, v: number): void {
  b.write(`${v.toString(8).padStart(len - 1, '0')}\0`, off, len, 'latin1');
}

export function rawHeader(m: RawMember, size: number): Buffer {
  const h = Buffer.alloc(512);
  h.write(m.name, 0, 100, 'utf8');
  octal(h, 100, 8, m.mode ?? (m.type === 'dir' ? 0o755 : 0o644));
  octal(h, 108, 8, m.uid ?? 0);
  octal(h, 116, 8, m.gid ?? 0);
  octal(h, 124, 12, size);
  octal(h, 136, 12, 0);
  h.write(TYPEFLAG[m.type], 156, 1, 'latin1');
  h.write(m.linkname ?? '', 157, 100, 'utf8');
  h.write('ustar\0' + '00', 257, 8, 'latin1');
  octal(h, 329, 8, m.devmajor ?? 0);
  octal(h, 337, 8, m.devminor ?? 0);
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const c of h) sum += c;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'latin1');
  return h;
}

/** A complete archive: each member's header and padded body, then two zero blocks. */
export function rawTar(members: RawMember[]): Buffer {
  const parts: Buffer[] = [];
  for (const m of members) {
    const body = m.body === undefined ? Buffer.alloc(0) : Buffer.from(m.body);
    parts.push(rawHeader(m, m.type === 'file' ? body.length : 0));
    if (m.type === 'file' && body.length > 0) {
      parts.push(body, Buffer.alloc((512 - (body.length % 512)) % 512));
    }
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

/** The archive as a stream of odd-sized chunks, to exercise members split across reads. */
export async function* chunked(b: Buffer, size = 7001): AsyncGenerator<Buffer> {
  for (let i = 0; i < b.length; i += size) yield b.subarray(i, i + size);
}
