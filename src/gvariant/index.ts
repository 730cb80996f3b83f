export {
  decode,
  encode,
  GVariantError,
  type GvValue,
  offsetSize,
  sizeFromTotal,
  Variant,
  writeOffset,
} from './codec.js';
export { parseType } from './type.js';
