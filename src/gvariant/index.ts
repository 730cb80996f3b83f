export { decode, encode, GVariantError, type GvValue, Variant } from './codec.js';
export { parseType } from './type.js';
