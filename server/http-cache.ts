/**
 * Conditional and range requests (RFC 9110 §13 and §14), as pure functions of the request headers
 * and the validators of what would be served. ostree 2022.7 re-sends `If-Modified-Since` or
 * `If-None-Match` for summary.sig; CDNs and `curl -C -` use the rest.
 */

export interface Validators {
  /** A strong entity tag, quotes included. */
  etag: string;
  /** Whole seconds; absent when the date cannot be trusted to change with the content. */
  lastModified?: Date;
}

/**
 * Last-Modified has one-second resolution, so two versions of a mutable file written within the
 * same second would share it and a client could get a wrong 304. A date is only offered (and only
 * used for If-Modified-Since) once its second is over; the strong ETag covers the rest.
 */
export function stableLastModified(mtimeMs: number, nowMs: number): Date | undefined {
  const sec = Math.floor(mtimeMs / 1000);
  return sec < Math.floor(nowMs / 1000) ? new Date(sec * 1000) : undefined;
}

function etagList(header: string): string[] {
  return header
    .split(',')
    .map((t) => t.trim())
    .filter((t) => t.length > 0);
}

/** Weak comparison, as If-None-Match requires: `W/"x"` equals `"x"`. */
function weakEqual(a: string, b: string): boolean {
  return a.replace(/^W\//, '') === b.replace(/^W\//, '');
}

/** True if a GET or HEAD should be answered 304 Not Modified. */
export function notModified(headers: Headers, v: Validators): boolean {
  const inm = headers.get('if-none-match');
  // If-None-Match takes precedence: If-Modified-Since is ignored when it is present (§13.1.3).
  if (inm !== null) return etagList(inm).some((t) => t === '*' || weakEqual(t, v.etag));
  const ims = headers.get('if-modified-since');
  if (ims === null || v.lastModified === undefined) return false;
  const since = Date.parse(ims);
  return Number.isFinite(since) && v.lastModified.getTime() <= since;
}

export type RangeAnswer =
  | { kind: 'full' }
  /** [start, end): end is exclusive, as BlobStore.readStream takes it. */
  | { kind: 'partial'; start: number; end: number }
  | { kind: 'unsatisfiable' };

/**
 * The one range to serve, if any. Multiple ranges, other units, malformed specs and a stale
 * If-Range all fall back to the whole body, which §14.2 allows; a well-formed range that starts at
 * or beyond the end is 416.
 */
export function chooseRange(headers: Headers, size: number, v: Validators): RangeAnswer {
  const range = headers.get('range');
  if (range === null) return { kind: 'full' };
  const ifRange = headers.get('if-range');
  if (ifRange !== null) {
    const matches = ifRange.startsWith('"')
      ? ifRange === v.etag
      : v.lastModified !== undefined && Date.parse(ifRange) === v.lastModified.getTime();
    if (!matches) return { kind: 'full' };
  }
  const m = /^bytes=(\d*)-(\d*)$/i.exec(range.trim());
  if (!m || (m[1] === '' && m[2] === '')) return { kind: 'full' };
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (!Number.isSafeInteger(suffix)) return { kind: 'full' };
    if (suffix === 0 || size === 0) return { kind: 'unsatisfiable' };
    return { kind: 'partial', start: Math.max(0, size - suffix), end: size };
  }
  const start = Number(m[1]);
  const last = m[2] === '' ? Number.MAX_SAFE_INTEGER : Number(m[2]);
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(last) || last < start) return { kind: 'full' };
  if (start >= size) return { kind: 'unsatisfiable' };
  return { kind: 'partial', start, end: Math.min(last, size - 1) + 1 };
}
