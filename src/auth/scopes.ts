/**
 * Token scopes and what they allow (docs/http-api.md):
 *
 *   pull          read, when anonymous reads are switched off
 *   push:<glob>   upload objects, and move refs that match the glob
 *   admin         everything, including rollbacks
 *
 * Globs follow ref syntax: `*` matches within one path component, `**` across components, so
 * `push:stage3-sysroot/*` allows `stage3-sysroot/x86_64` but not `stage3-sysroot/x86_64/debug`.
 */
import { RegistryError } from '../errors.js';

export type Scope = { kind: 'pull' } | { kind: 'admin' } | { kind: 'push'; glob: string };

/** One glob component: ref characters and `*`, not empty, not `.`/`..`. */
const GLOB_COMPONENT = /^[-._A-Za-z0-9*]+$/;
/** Same bound as ref names (src/repo/refs.ts); a glob longer than any ref matches nothing useful. */
const MAX_GLOB_LENGTH = 255;

export function parseScope(text: string): Scope {
  if (text === 'pull') return { kind: 'pull' };
  if (text === 'admin') return { kind: 'admin' };
  if (text.startsWith('push:')) {
    const glob = text.slice('push:'.length);
    const parts = glob.split('/');
    if (
      glob.length > 0 &&
      glob.length <= MAX_GLOB_LENGTH &&
      parts.every((p) => GLOB_COMPONENT.test(p) && p !== '.' && p !== '..')
    ) {
      return { kind: 'push', glob };
    }
  }
  throw new RegistryError(
    'E_USAGE',
    `invalid scope ${JSON.stringify(text)}`,
    { found: text },
    'a scope is pull, admin or push:<ref glob> (e.g. push:stage3-sysroot/*; * stays within one component, ** crosses "/")',
  );
}

export function formatScope(s: Scope): string {
  return s.kind === 'push' ? `push:${s.glob}` : s.kind;
}

function globRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const ch = glob[i]!;
    if (ch === '*' && glob[i + 1] === '*') {
      re += '.*';
      i++;
    } else if (ch === '*') re += '[^/]*';
    else re += ch.replace(/[.-]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

export function globMatches(glob: string, ref: string): boolean {
  return globRegExp(glob).test(ref);
}

function parsed(scopes: readonly string[]): Scope[] {
  const out: Scope[] = [];
  for (const s of scopes) {
    try {
      out.push(parseScope(s));
    } catch {
      // A scope this version does not understand grants nothing.
    }
  }
  return out;
}

export function isAdmin(scopes: readonly string[]): boolean {
  return parsed(scopes).some((s) => s.kind === 'admin');
}

/** Any valid token may read: a push job has to read the head it builds on. */
export function canRead(scopes: readonly string[]): boolean {
  return parsed(scopes).length > 0;
}

/** Objects are not tied to refs, so any push scope may upload them. */
export function canUpload(scopes: readonly string[]): boolean {
  return parsed(scopes).some((s) => s.kind === 'admin' || s.kind === 'push');
}

export function canPushRef(scopes: readonly string[], ref: string): boolean {
  return parsed(scopes).some((s) => s.kind === 'admin' || (s.kind === 'push' && globMatches(s.glob, ref)));
}
