#!/usr/bin/env node
// The `sysroot` command. The TypeScript sources are compiled to dist/ by `npm ci` (the prepare script).
import { fixYoungGeneration } from '../dist/src/young-generation.js';

// A push keeps V8's young generation small (src/young-generation.js says why, and why not a pull).
// Set here, before anything loads: V8 grows it while the modules load, and never shrinks it.
if (process.argv[2] === 'push') fixYoungGeneration();

import('../dist/cli/main.js').then((m) => m.main(process.argv));
