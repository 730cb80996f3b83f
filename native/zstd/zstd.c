/*
 * zstd.node: a pack's zstd frames decoded on one of libuv's pool threads, while the JavaScript
 * thread verifies and checks out the frame before (src/pack/frames.ts says when it is used, and
 * what it saves).
 *
 *   frameSize(bytes, max) -> number
 *     The compressed size of the zstd frame (or skippable frame) that `bytes` starts with, once
 *     `bytes` holds all of it; 0 while more bytes are needed. Throws { code, name } (zstd's error)
 *     when `bytes` cannot start a frame, or starts one whose header asks for a window or declares
 *     content of more than `max` bytes (frameParameter_windowTooLarge, as a decoder limited to
 *     that window would). Synchronous: it reads only the frame and block headers.
 *
 *   createDecoder() -> decoder
 *     A zstd decompression context, freed when the decoder is garbage-collected.
 *
 *   decodeFrame(decoder, src, dst) -> Promise<number>
 *     Decompresses the single frame in `src` into `dst` on the pool and resolves with the bytes
 *     produced; zstd checks the frame's content checksum when it has one. Rejects with
 *     { code, name } (zstd's error: dstSize_tooSmall when the frame holds more than `dst`), or
 *     { code: -1, name: "busy" } if the decoder is already decoding. The caller must not change
 *     `src` or `dst` until the promise settles; both are kept alive until then.
 *
 * Links Debian's libzstd (libzstd-dev); without this addon frames are decoded on the JavaScript
 * thread through zstd-napi, the same bytes, later.
 */
#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_getFrameHeader: exported by libzstd.so.1 since 1.3 */
#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <zstd.h>
#include <zstd_errors.h>

typedef struct {
  ZSTD_DCtx *dctx;
  bool busy;
} decoder_t;

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  /* The decoder, `src` and `dst`: kept alive while the pool thread uses them. */
  napi_ref refs[3];
  decoder_t *decoder;
  const void *src;
  size_t src_length;
  void *dst;
  size_t dst_capacity;
  size_t result;
} job_t;

/* A zstd error as a JavaScript object { code, name }. */
static napi_value zstd_error(napi_env env, size_t code) {
  napi_value err, v;
  napi_create_object(env, &err);
  napi_create_int32(env, (int32_t)ZSTD_getErrorCode(code), &v);
  napi_set_named_property(env, err, "code", v);
  napi_create_string_utf8(env, ZSTD_getErrorName(code), NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, err, "name", v);
  return err;
}

/* An error of ours in the same shape: { code: -1, name }. */
static napi_value own_error(napi_env env, const char *name) {
  napi_value err, v;
  napi_create_object(env, &err);
  napi_create_int32(env, -1, &v);
  napi_set_named_property(env, err, "code", v);
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, err, "name", v);
  return err;
}

static bool bytes_of(napi_env env, napi_value value, void **data, size_t *length) {
  bool is;
  if (napi_is_buffer(env, value, &is) == napi_ok && is)
    return napi_get_buffer_info(env, value, data, length) == napi_ok;
  napi_typedarray_type type;
  if (napi_is_typedarray(env, value, &is) != napi_ok || !is) return false;
  if (napi_get_typedarray_info(env, value, &type, length, data, NULL, NULL) != napi_ok) return false;
  return type == napi_uint8_array;
}

static napi_value frame_size(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  void *data;
  size_t length;
  double max;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 2 ||
      !bytes_of(env, argv[0], &data, &length) || napi_get_value_double(env, argv[1], &max) != napi_ok) {
    napi_throw_type_error(env, NULL, "frameSize(bytes: Uint8Array, max: number)");
    return NULL;
  }
  napi_value result;
  ZSTD_frameHeader h;
  size_t header = ZSTD_getFrameHeader(&h, data, length);
  if (ZSTD_isError(header)) {
    napi_throw(env, zstd_error(env, header));
    return NULL;
  }
  if (header > 0) {
    /* Not even the whole frame header yet. */
    napi_create_double(env, 0, &result);
    return result;
  }
  if (h.frameType == ZSTD_frame &&
      ((double)h.windowSize > max ||
       (h.frameContentSize != ZSTD_CONTENTSIZE_UNKNOWN && (double)h.frameContentSize > max))) {
    napi_throw(env, zstd_error(env, (size_t)-ZSTD_error_frameParameter_windowTooLarge));
    return NULL;
  }
  size_t size = ZSTD_findFrameCompressedSize(data, length);
  if (ZSTD_isError(size)) {
    if (ZSTD_getErrorCode(size) != ZSTD_error_srcSize_wrong) {
      napi_throw(env, zstd_error(env, size));
      return NULL;
    }
    size = 0;
  }
  napi_create_double(env, (double)size, &result);
  return result;
}

static void free_decoder(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  decoder_t *d = data;
  ZSTD_freeDCtx(d->dctx);
  free(d);
}

static napi_value create_decoder(napi_env env, napi_callback_info info) {
  (void)info;
  decoder_t *d = calloc(1, sizeof *d);
  if (d) d->dctx = ZSTD_createDCtx();
  if (!d || !d->dctx) {
    free(d);
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  napi_value external;
  if (napi_create_external(env, d, free_decoder, NULL, &external) != napi_ok) {
    free_decoder(env, d, NULL);
    napi_throw_error(env, NULL, "cannot create the decoder");
    return NULL;
  }
  return external;
}

static void execute(napi_env env, void *data) {
  (void)env;
  job_t *j = data;
  j->result = ZSTD_decompressDCtx(j->decoder->dctx, j->dst, j->dst_capacity, j->src, j->src_length);
}

static void complete(napi_env env, napi_status status, void *data) {
  job_t *j = data;
  j->decoder->busy = false;
  if (status != napi_ok) {
    napi_reject_deferred(env, j->deferred, own_error(env, "cancelled"));
  } else if (ZSTD_isError(j->result)) {
    napi_reject_deferred(env, j->deferred, zstd_error(env, j->result));
  } else {
    napi_value v;
    napi_create_double(env, (double)j->result, &v);
    napi_resolve_deferred(env, j->deferred, v);
  }
  for (int i = 0; i < 3; i++) napi_delete_reference(env, j->refs[i]);
  napi_delete_async_work(env, j->work);
  free(j);
}

static napi_value decode_frame(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  decoder_t *d;
  void *src, *dst;
  size_t src_length, dst_capacity;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 3 ||
      napi_get_value_external(env, argv[0], (void **)&d) != napi_ok || !d ||
      !bytes_of(env, argv[1], &src, &src_length) || !bytes_of(env, argv[2], &dst, &dst_capacity)) {
    napi_throw_type_error(env, NULL, "decodeFrame(decoder, src: Uint8Array, dst: Uint8Array)");
    return NULL;
  }
  napi_value promise;
  napi_deferred deferred;
  if (napi_create_promise(env, &deferred, &promise) != napi_ok) {
    napi_throw_error(env, NULL, "cannot create a promise");
    return NULL;
  }
  if (d->busy) {
    napi_reject_deferred(env, deferred, own_error(env, "busy"));
    return promise;
  }
  job_t *j = calloc(1, sizeof *j);
  if (!j) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  j->deferred = deferred;
  j->decoder = d;
  j->src = src;
  j->src_length = src_length;
  j->dst = dst;
  j->dst_capacity = dst_capacity;
  int made = 0;
  napi_value name;
  for (; made < 3; made++)
    if (napi_create_reference(env, argv[made], 1, &j->refs[made]) != napi_ok) break;
  if (made < 3 || napi_create_string_utf8(env, "sysroot:decodeFrame", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, execute, complete, j, &j->work) != napi_ok) {
    for (int i = 0; i < made; i++) napi_delete_reference(env, j->refs[i]);
    free(j);
    napi_throw_error(env, NULL, "cannot create the work");
    return NULL;
  }
  if (napi_queue_async_work(env, j->work) != napi_ok) {
    for (int i = 0; i < 3; i++) napi_delete_reference(env, j->refs[i]);
    napi_delete_async_work(env, j->work);
    free(j);
    napi_throw_error(env, NULL, "cannot queue the work");
    return NULL;
  }
  d->busy = true;
  return promise;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"frameSize", NULL, frame_size, NULL, NULL, NULL, napi_default, NULL},
      {"createDecoder", NULL, create_decoder, NULL, NULL, NULL, napi_default, NULL},
      {"decodeFrame", NULL, decode_frame, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
