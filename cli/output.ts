/** Data goes to stdout (JSON with --json); messages, progress and errors go to stderr. */
import { isRegistryError, noSpaceError } from '../src/errors.js';
import { EXIT, exitCodeFor } from './exit-codes.js';

export { formatBytes } from '../src/format.js';

export function out(line = ''): void {
  process.stdout.write(`${line}\n`);
}

export function json(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

export function note(line: string): void {
  process.stderr.write(`${line}\n`);
}

/** Print an error for a person (or as JSON) and return the exit code. */
export function reportError(thrown: unknown, asJson: boolean): number {
  // A raw ENOSPC from a write below (a temp file, SQLite) is a full disk, not a bug.
  const e = isRegistryError(thrown) ? thrown : (noSpaceError(thrown, 'writing') ?? thrown);
  if (isRegistryError(e)) {
    if (asJson) process.stderr.write(`${JSON.stringify({ error: e.toJSON() })}\n`);
    else {
      note(`sysroot: error: ${e.message}`);
      for (const p of (e.details.paths ?? []).slice(0, 50)) note(`  ${p}`);
      if ((e.details.paths?.length ?? 0) > 50) note(`  … and ${e.details.paths!.length - 50} more`);
      if (e.hint) note(`hint: ${e.hint}`);
    }
    return exitCodeFor(e.code);
  }
  const err = e as Error;
  if (asJson) {
    process.stderr.write(
      `${JSON.stringify({ error: { code: 'E_INTERNAL', message: String(err?.message ?? e) } })}\n`,
    );
  } else {
    note(`sysroot: internal error: ${err?.stack ?? String(e)}`);
    note('This is a bug; please report it with the command you ran.');
  }
  return EXIT.INTERNAL;
}

export function formatTime(epochSeconds: number): string {
  return new Date(epochSeconds * 1000).toISOString().replace('.000Z', 'Z');
}
