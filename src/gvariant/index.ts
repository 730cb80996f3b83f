export { decode, encode, GVariantError, type GvValue, offsetSize, Variant } from './codec.js';
export { parseType } from './type.js';
