export * from './checksum.js';
export * from './commit.js';
export * from './commitmeta.js';
export * from './dirmeta.js';
export * from './dirtree.js';
export * from './file.js';
export { sha256 } from './metadata-object.js';
export * from './summary.js';
export * from './xattrs.js';
