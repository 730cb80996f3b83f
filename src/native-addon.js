// @ts-check
/**
 * Load one of the optional native addons (native/NAME, built by scripts/build-native.mjs), from
 * the sources (src/, what vitest runs) or the build (dist/src/). Plain JavaScript: the import
 * workers load the igzip addon too, and Node 20 cannot start a worker from a .ts file.
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/**
 * The addon's exports, or null with why: `error` is set when it is built but did not load (a
 * library it links removed since, say), unset when it is simply not built.
 * @param {string} name @returns {{ addon: unknown, error?: Error }}
 */
export function loadAddon(name) {
  /** @type {Error | undefined} */
  let error;
  for (const root of ['../native', '../../native']) {
    try {
      return {
        addon: require(new URL(`${root}/${name}/build/Release/${name}.node`, import.meta.url).pathname),
      };
    } catch (e) {
      if (/** @type {NodeJS.ErrnoException} */ (e).code !== 'MODULE_NOT_FOUND')
        error = /** @type {Error} */ (e);
    }
  }
  return { addon: null, error };
}
