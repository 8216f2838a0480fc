// fractofl web page: bring an image over the endpoint's request limit to the model's scale
// in the browser, as `fractofl predict` does (serving/request_preparation.py), so that it
// can be sent: the endpoint's own first step (data bar cut off, antialiased bilinear
// resampling as torch's F.interpolate(antialias=True), or the whole image squashed to the
// model's input), sent as float32 .npy that the endpoint takes as it is.
// The browser decodes PNG and JPEG (8 bits a channel, so a 16-bit PNG loses its low bits);
// TIFF (8- or 16-bit gray, 8-bit RGB; uncompressed, LZW or PackBits) is read with the
// vendored UTIF.js, 16 bits kept. A deflate-compressed TIFF is not read (no inflate here).
"use strict";

window.FractoflPrepare = (() => {
  // core/images/databar.py
  const MIN_FLAT_SHARE = 0.5;
  const MIN_ROWS = 4;
  const MAX_SHARE_OF_HEIGHT = 0.25;
  // core/images/imageio.py: BT.601 luminance
  const LUMA = [0.299, 0.587, 0.114];
  // core/images/physical_scale.py: the largest image at the model's scale
  const MAX_PREPARED_PIXELS = 50_000_000;

  class PrepareError extends Error {
    constructor(key, params = {}) {
      super(key);
      this.key = key;
      this.params = params;
    }
  }

  // The file's gray levels in [0, 1] (H x W, row by row), as the endpoint decodes them.
  async function decodeGray(file) {
    const head = new Uint8Array(await file.slice(0, 4).arrayBuffer());
    const tiff = (head[0] === 0x49 && head[1] === 0x49) || (head[0] === 0x4d && head[1] === 0x4d);
    return tiff ? decodeTiff(file) : decodeBitmap(file);
  }

  async function decodeBitmap(file) {
    let bitmap;
    try {
      bitmap = await createImageBitmap(file, {
        colorSpaceConversion: "none",
        premultiplyAlpha: "none",
      });
    } catch {
      throw new PrepareError("cannotPrepare");
    }
    const { width, height } = bitmap;
    const canvas = new OffscreenCanvas(width, height);
    const context = canvas.getContext("2d");
    context.drawImage(bitmap, 0, 0);
    bitmap.close();
    const rgba = context.getImageData(0, 0, width, height).data;
    const gray = new Float32Array(width * height);
    for (let i = 0, p = 0; i < gray.length; i++, p += 4) {
      gray[i] = luma(rgba[p], rgba[p + 1], rgba[p + 2]);
    }
    return { gray, width, height };
  }

  // The first image of a TIFF, as PIL decodes it for the endpoint: 16-bit gray / 65535,
  // 8-bit gray / 255, 8-bit RGB(A) to BT.601 luminance.
  async function decodeTiff(file) {
    let image;
    try {
      const buffer = await file.arrayBuffer();
      [image] = window.UTIF.decode(buffer);
      window.UTIF.decodeImage(buffer, image);
    } catch {
      throw new PrepareError("cannotPrepare");
    }
    const bits = (image.t258 || [1])[0];
    const samples = (image.t277 || [1])[0];
    const photometric = (image.t262 || [1])[0];
    const format = (image.t339 || [1])[0];
    const gray8or16 = samples === 1 && photometric === 1 && (bits === 8 || bits === 16);
    const rgb8 = samples >= 3 && photometric === 2 && bits === 8;
    if (!image.data || format !== 1 || !(gray8or16 || rgb8)) {
      throw new PrepareError("cannotPrepare");
    }
    const { width, height, data } = image;
    const gray = new Float32Array(width * height);
    if (bits === 16) {
      const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
      for (let i = 0; i < gray.length; i++) gray[i] = view.getUint16(2 * i, true) / 65535;
    } else if (samples === 1) {
      for (let i = 0; i < gray.length; i++) gray[i] = data[i] / 255;
    } else {
      for (let i = 0, p = 0; i < gray.length; i++, p += samples) {
        gray[i] = luma(data[p], data[p + 1], data[p + 2]);
      }
    }
    return { gray, width, height };
  }

  // An 8-bit pixel's gray level in [0, 1]: itself when gray, else BT.601 luminance.
  function luma(r, g, b) {
    return r === g && g === b ? r / 255 : (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b) / 255;
  }

  function detectDatabar(gray, width, height) {
    const limit = Math.floor(height * MAX_SHARE_OF_HEIGHT);
    let rows = 0;
    while (rows < height && flatShare(gray, width, height - 1 - rows) >= MIN_FLAT_SHARE) {
      rows += 1;
      if (rows > limit) return 0;
    }
    return rows >= MIN_ROWS ? rows : 0;
  }

  function flatShare(gray, width, row) {
    const counts = new Map();
    let most = 0;
    for (let x = row * width; x < (row + 1) * width; x++) {
      const n = (counts.get(gray[x]) || 0) + 1;
      counts.set(gray[x], n);
      if (n > most) most = n;
    }
    return most / width;
  }

  // Python's round(): halves to even (core/images/scale.py's scaled_shape uses it).
  function roundHalfEven(value) {
    const floor = Math.floor(value);
    const rest = value - floor;
    if (rest !== 0.5) return Math.round(value);
    return floor % 2 === 0 ? floor : floor + 1;
  }

  // torch's antialiased bilinear weights along one side (UpSampleKernel.cpp).
  function weights(inSize, outSize) {
    const scale = inSize / outSize;
    const support = scale >= 1 ? scale : 1;
    const invscale = scale >= 1 ? 1 / scale : 1;
    const taps = [];
    for (let i = 0; i < outSize; i++) {
      const centre = scale * (i + 0.5);
      const first = Math.max(Math.trunc(centre - support + 0.5), 0);
      const last = Math.min(Math.trunc(centre + support + 0.5), inSize);
      const w = [];
      let total = 0;
      for (let j = first; j < last; j++) {
        const x = Math.abs((j - centre + 0.5) * invscale);
        const value = x < 1 ? 1 - x : 0;
        w.push(value);
        total += value;
      }
      taps.push({ first, w: total ? w.map((v) => v / total) : w });
    }
    return taps;
  }

  function resize(gray, width, height, outWidth, outHeight) {
    if (outWidth === width && outHeight === height) return gray;
    const across = weights(width, outWidth);
    const wide = new Float64Array(height * outWidth);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < outWidth; x++) {
        const { first, w } = across[x];
        let sum = 0;
        for (let k = 0; k < w.length; k++) sum += w[k] * gray[y * width + first + k];
        wide[y * outWidth + x] = sum;
      }
    }
    const down = weights(height, outHeight);
    const out = new Float32Array(outHeight * outWidth);
    for (let y = 0; y < outHeight; y++) {
      const { first, w } = down[y];
      for (let x = 0; x < outWidth; x++) {
        let sum = 0;
        for (let k = 0; k < w.length; k++) sum += w[k] * wide[(first + k) * outWidth + x];
        out[y * outWidth + x] = Math.min(1, Math.max(0, sum));
      }
    }
    return out;
  }

  // numpy's .npy (version 1.0) of a float32 H x W array.
  function npy(pixels, width, height) {
    let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${height}, ${width}), }`;
    const unpadded = 10 + header.length + 1;
    header += " ".repeat((64 - (unpadded % 64)) % 64) + "\n";
    const bytes = new Uint8Array(10 + header.length + pixels.length * 4);
    bytes.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0], 0);
    new DataView(bytes.buffer).setUint16(8, header.length, true);
    for (let i = 0; i < header.length; i++) bytes[10 + i] = header.charCodeAt(i);
    const data = new DataView(bytes.buffer, 10 + header.length);
    for (let i = 0; i < pixels.length; i++) data.setFloat32(4 * i, pixels[i], true);
    return bytes;
  }

  // The file at the model's scale: {body, parameters (content type), from, to}.
  // ``preprocessing`` is the model's (GET /ping); ``pixelSizeUm`` the page's field.
  async function prepare(file, preprocessing, pixelSizeUm) {
    const physical = (preprocessing.pixel_size_um || 0) > 0;
    if (physical && !(pixelSizeUm > 0)) throw new PrepareError("needPixelSize");
    const { gray, width, height } = await decodeGray(file);
    let pixels;
    let size;
    let parameters = "";
    if (physical) {
      const rows = detectDatabar(gray, width, height);
      const kept = height - rows;
      const factor = pixelSizeUm / preprocessing.pixel_size_um;
      size = [
        Math.max(1, roundHalfEven(width * factor)),
        Math.max(1, roundHalfEven(kept * factor)),
      ];
      if (size[0] * size[1] > MAX_PREPARED_PIXELS) {
        throw new PrepareError("scaleTooLarge", { to: `${size[0]}×${size[1]}` });
      }
      if (size[0] < preprocessing.image_size || size[1] < preprocessing.image_size) {
        throw new PrepareError("smallerThanTile", { tile: preprocessing.image_size });
      }
      pixels = resize(gray.subarray(0, kept * width), width, kept, size[0], size[1]);
      parameters = `; pixel_size_um=${preprocessing.pixel_size_um}; databar_px=0`;
    } else {
      size = [preprocessing.image_size, preprocessing.image_size];
      pixels = resize(gray, width, height, size[0], size[1]);
    }
    return {
      body: npy(pixels, size[0], size[1]),
      parameters,
      from: `${width}×${height}`,
      to: `${size[0]}×${size[1]}`,
    };
  }

  return { prepare, PrepareError, roundHalfEven, weights };
})();
