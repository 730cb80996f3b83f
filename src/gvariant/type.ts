/**
 * GVariant type strings, parsed into a tree that knows each type's alignment and fixed size.
 *
 * Only what OSTree uses is supported: the basic types, `v`, arrays (`aT`), tuples `(...)` and
 * dict entries `{KV}`. Maybe types (`mT`) never occur in OSTree's objects and are refused.
 */

export type BasicCode = 'y' | 'b' | 'n' | 'q' | 'i' | 'u' | 'h' | 'x' | 't' | 'd' | 's' | 'o' | 'g';

export type GvType =
  | { kind: 'basic'; code: BasicCode; align: number; fixedSize: number | undefined; str: string }
  | { kind: 'variant'; align: 8; fixedSize: undefined; str: 'v' }
  | { kind: 'array'; elem: GvType; align: number; fixedSize: undefined; str: string }
  | { kind: 'tuple'; members: GvType[]; align: number; fixedSize: number | undefined; str: string }
  | { kind: 'dict'; members: [GvType, GvType]; align: number; fixedSize: number | undefined; str: string };

const BASIC: Record<BasicCode, { align: number; fixedSize: number | undefined }> = {
  y: { align: 1, fixedSize: 1 },
  b: { align: 1, fixedSize: 1 },
  n: { align: 2, fixedSize: 2 },
  q: { align: 2, fixedSize: 2 },
  i: { align: 4, fixedSize: 4 },
  u: { align: 4, fixedSize: 4 },
  h: { align: 4, fixedSize: 4 },
  x: { align: 8, fixedSize: 8 },
  t: { align: 8, fixedSize: 8 },
  d: { align: 8, fixedSize: 8 },
  s: { align: 1, fixedSize: undefined },
  o: { align: 1, fixedSize: undefined },
  g: { align: 1, fixedSize: undefined },
};

export function alignUp(n: number, align: number): number {
  return (n + align - 1) & ~(align - 1);
}

function container(kind: 'tuple' | 'dict', members: GvType[], str: string): GvType {
  let align = 1;
  let offset = 0;
  let fixed = true;
  for (const m of members) {
    align = Math.max(align, m.align);
    if (m.fixedSize === undefined) fixed = false;
    else offset = alignUp(offset, m.align) + m.fixedSize;
  }
  // A fixed tuple's size is rounded up to its alignment; the unit tuple `()` takes one byte.
  const fixedSize = fixed ? Math.max(1, alignUp(offset, align)) : undefined;
  if (kind === 'dict') return { kind, members: members as [GvType, GvType], align, fixedSize, str };
  return { kind, members, align, fixedSize, str };
}

function parseAt(s: string, pos: number): [GvType, number] {
  const c = s[pos];
  if (c === undefined) throw new Error(`GVariant type "${s}": unexpected end`);
  if (c in BASIC) {
    const b = BASIC[c as BasicCode];
    return [{ kind: 'basic', code: c as BasicCode, align: b.align, fixedSize: b.fixedSize, str: c }, pos + 1];
  }
  if (c === 'v') return [{ kind: 'variant', align: 8, fixedSize: undefined, str: 'v' }, pos + 1];
  if (c === 'a') {
    const [elem, next] = parseAt(s, pos + 1);
    return [{ kind: 'array', elem, align: elem.align, fixedSize: undefined, str: s.slice(pos, next) }, next];
  }
  if (c === '(' || c === '{') {
    const close = c === '(' ? ')' : '}';
    const members: GvType[] = [];
    let p = pos + 1;
    while (s[p] !== close) {
      if (p >= s.length) throw new Error(`GVariant type "${s}": unclosed ${c}`);
      const [m, next] = parseAt(s, p);
      members.push(m);
      p = next;
    }
    if (c === '{' && (members.length !== 2 || members[0]?.kind !== 'basic')) {
      throw new Error(`GVariant type "${s}": a dict entry needs a basic key and one value`);
    }
    return [container(c === '(' ? 'tuple' : 'dict', members, s.slice(pos, p + 1)), p + 1];
  }
  throw new Error(`GVariant type "${s}": unsupported type character "${c}"`);
}

const cache = new Map<string, GvType>();

/** Parse a complete type string ("(a{sv}aya(say)sstayay)"); results are cached. */
export function parseType(s: string): GvType {
  let t = cache.get(s);
  if (t) return t;
  const [parsed, end] = parseAt(s, 0);
  if (end !== s.length) throw new Error(`GVariant type "${s}": trailing characters`);
  t = parsed;
  cache.set(s, t);
  return t;
}

/** Is this a complete, supported type string? Used to validate the type inside a variant. */
export function isValidType(s: string): boolean {
  try {
    parseType(s);
    return true;
  } catch {
    return false;
  }
}
