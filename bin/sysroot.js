#!/usr/bin/env node
// The `sysroot` command. The TypeScript sources are compiled to dist/ by `npm ci` (the prepare script).
import('../dist/cli/main.js').then((m) => m.main(process.argv));
