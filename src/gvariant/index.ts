export {
  decode,
  encode,
  GVariantError,
  type GvValue,
  offsetSize,
  sizeFromTotal,
  Variant,
} from './codec.js';
export { parseType } from './type.js';
