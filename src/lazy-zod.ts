/**
 * zod, loaded on first use. `import { z } from 'zod'` costs ~30 ms at start-up (zod 4 is 94
 * modules), a sixth of what a `sysroot pull` spends before its first request, for schemas that most
 * commands never check (a ref log record, the remotes file). Every module takes zod from here, so a
 * process holds one instance of it (the CommonJS build, which can be required synchronously).
 */
import { createRequire } from 'node:module';
import type { z as Z } from 'zod';

let loaded: typeof Z | undefined;

/** zod's `z`, required now if no one has yet. */
export function zod(): typeof Z {
  loaded ??= (createRequire(import.meta.url)('zod') as { z: typeof Z }).z;
  return loaded;
}

/** A value built with zod on first use (a schema), then kept. */
export function lazy<T>(build: (z: typeof Z) => T): () => T {
  let value: { v: T } | undefined;
  return () => {
    value ??= { v: build(zod()) };
    return value.v;
  };
}
