var __defProp = Object.defineProperty;
var __getOwnPropNames = Object.getOwnPropertyNames;
var __esm = (fn, res) => function __init() {
  return fn && (res = (0, fn[__getOwnPropNames(fn)[0]])(fn = 0)), res;
};
var __export = (target, all) => {
  for (var name in all)
    __defProp(target, name, { get: all[name], enumerable: true });
};

// node_modules/@noble/hashes/utils.js
function isBytes(a) {
  return a instanceof Uint8Array || ArrayBuffer.isView(a) && a.constructor.name === "Uint8Array" && "BYTES_PER_ELEMENT" in a && a.BYTES_PER_ELEMENT === 1;
}
function anumber(n, title = "") {
  if (typeof n !== "number")
    throw new TypeError(atitle(title) + "expected number, got " + typeof n);
  if (!Number.isSafeInteger(n) || n < 0)
    throw new RangeError(atitle(title) + "expected integer >= 0, got " + n);
  return n;
}
function abytes(value, length, title = "") {
  if (isBytes(value) && (length === void 0 || value.length === length))
    return value;
  if (length !== void 0)
    anumber(length, "length");
  const bytes = isBytes(value);
  const ofLen = length !== void 0 ? ` of length ${length}` : "";
  const got = bytes ? `length=${value.length}` : `type=${typeof value}`;
  const message = atitle(title) + "expected Uint8Array" + ofLen + ", got " + got;
  if (!bytes)
    throw new TypeError(message);
  throw new RangeError(message);
}
function copyBytes(bytes) {
  return Uint8Array.from(abytes(bytes));
}
function aexists(instance, checkFinished = true) {
  if (instance.destroyed)
    throw new Error("hash was destroyed");
  if (checkFinished && instance.finished)
    throw new Error("digest() was already called");
}
function aoutput(out, instance) {
  abytes(out, void 0, "output");
  const min = instance.outputLen;
  if (!(out.length >= min)) {
    throw new RangeError('"output" expected length >= ' + min);
  }
}
function u8(arr) {
  return new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength);
}
function u32(arr) {
  return new Uint32Array(arr.buffer, arr.byteOffset, Math.floor(arr.byteLength / 4));
}
function clean(...arrays) {
  for (let i = 0; i < arrays.length; i++) {
    arrays[i].fill(0);
  }
}
function byteSwap(word) {
  return word << 24 & 4278190080 | word << 8 & 16711680 | word >>> 8 & 65280 | word >>> 24 & 255;
}
function byteSwap32(arr) {
  for (let i = 0; i < arr.length; i++) {
    arr[i] = byteSwap(arr[i]);
  }
  return arr;
}
function nextTick(onReject) {
  const host = globalThis;
  if (typeof host.scheduler?.yield === "function") {
    const promise = host.scheduler.yield();
    if (onReject)
      promise.catch(onReject);
    return promise;
  }
  return new Promise((resolve) => host.setTimeout(resolve, 0));
}
function utf8ToBytes(str) {
  if (typeof str !== "string")
    throw new TypeError("string expected");
  const encoded = new TextEncoder().encode(str);
  try {
    return new Uint8Array(encoded);
  } finally {
    clean(encoded);
  }
}
function kdfInputToBytes(data, errorTitle = "") {
  if (typeof data === "string")
    return utf8ToBytes(data);
  return abytes(data, void 0, errorTitle);
}
function checkOpts(defaults, opts, title = "opts") {
  aopts(defaults, "defaults");
  if (opts !== void 0)
    aopts(opts, title);
  const merged = Object.assign(/* @__PURE__ */ Object.create(null), defaults, opts);
  return merged;
}
function createHasher(hashCons, info = {}) {
  if (typeof hashCons !== "function")
    throw new TypeError('"hashCons" expected function, got type=' + typeof hashCons);
  info = checkOpts({}, info, "info");
  const hashC = (msg, opts) => hashCons(opts).update(msg).digest();
  const tmp = hashCons(void 0);
  hashC.outputLen = tmp.outputLen;
  hashC.blockLen = tmp.blockLen;
  hashC.canXOF = tmp.canXOF;
  hashC.create = (opts) => hashCons(opts);
  Object.assign(hashC, info);
  return Object.freeze(hashC);
}
var atitle, aobject, aopts, isLE, swap8IfBE, swap32IfBE;
var init_utils = __esm({
  "node_modules/@noble/hashes/utils.js"() {
    atitle = (title) => title ? `"${title}" ` : "";
    aobject = (value, label) => {
      if (value === null || typeof value !== "object" || Array.isArray(value))
        throw new TypeError((label === "object" ? "" : `"${label}" `) + "expected object, got type=" + typeof value);
    };
    aopts = (value, label) => {
      aobject(value, label);
      const proto = Object.getPrototypeOf(value);
      if (proto !== Object.prototype && proto !== null)
        throw new TypeError(`"${label}" expected plain object`);
      if (Object.hasOwn(value, "__proto__"))
        throw new TypeError(`"${label}.__proto__" is not allowed`);
    };
    isLE = /* @__PURE__ */ (() => new Uint8Array(new Uint32Array([287454020]).buffer)[0] === 68)();
    swap8IfBE = isLE ? (n) => n : (n) => byteSwap(n) >>> 0;
    swap32IfBE = isLE ? (u) => u : byteSwap32;
  }
});

// node_modules/@noble/hashes/_blake.js
var BSIGMA;
var init_blake = __esm({
  "node_modules/@noble/hashes/_blake.js"() {
    BSIGMA = /* @__PURE__ */ Uint8Array.from([
      0,
      1,
      2,
      3,
      4,
      5,
      6,
      7,
      8,
      9,
      10,
      11,
      12,
      13,
      14,
      15,
      14,
      10,
      4,
      8,
      9,
      15,
      13,
      6,
      1,
      12,
      0,
      2,
      11,
      7,
      5,
      3,
      11,
      8,
      12,
      0,
      5,
      2,
      15,
      13,
      10,
      14,
      3,
      6,
      7,
      1,
      9,
      4,
      7,
      9,
      3,
      1,
      13,
      12,
      11,
      14,
      2,
      6,
      5,
      10,
      4,
      0,
      15,
      8,
      9,
      0,
      5,
      7,
      2,
      4,
      10,
      15,
      14,
      1,
      11,
      12,
      6,
      8,
      3,
      13,
      2,
      12,
      6,
      10,
      0,
      11,
      8,
      3,
      4,
      13,
      7,
      5,
      15,
      14,
      1,
      9,
      12,
      5,
      1,
      15,
      14,
      13,
      4,
      10,
      0,
      7,
      6,
      3,
      9,
      2,
      8,
      11,
      13,
      11,
      7,
      14,
      12,
      1,
      3,
      9,
      5,
      0,
      15,
      4,
      8,
      6,
      2,
      10,
      6,
      15,
      14,
      9,
      11,
      3,
      0,
      8,
      12,
      2,
      13,
      7,
      1,
      4,
      10,
      5,
      10,
      2,
      8,
      4,
      7,
      6,
      1,
      5,
      15,
      11,
      9,
      14,
      3,
      12,
      13,
      0,
      0,
      1,
      2,
      3,
      4,
      5,
      6,
      7,
      8,
      9,
      10,
      11,
      12,
      13,
      14,
      15,
      14,
      10,
      4,
      8,
      9,
      15,
      13,
      6,
      1,
      12,
      0,
      2,
      11,
      7,
      5,
      3,
      // Blake1, unused in others
      11,
      8,
      12,
      0,
      5,
      2,
      15,
      13,
      10,
      14,
      3,
      6,
      7,
      1,
      9,
      4,
      7,
      9,
      3,
      1,
      13,
      12,
      11,
      14,
      2,
      6,
      5,
      10,
      4,
      0,
      15,
      8,
      9,
      0,
      5,
      7,
      2,
      4,
      10,
      15,
      14,
      1,
      11,
      12,
      6,
      8,
      3,
      13,
      2,
      12,
      6,
      10,
      0,
      11,
      8,
      3,
      4,
      13,
      7,
      5,
      15,
      14,
      1,
      9
    ]);
  }
});

// node_modules/@noble/hashes/_u64.js
function add(Ah, Al, Bh, Bl) {
  const l = (Al >>> 0) + (Bl >>> 0);
  return { h: Ah + Bh + (l / 2 ** 32 | 0) | 0, l: l | 0 };
}
var fromNumH, fromNumL, rotrSH, rotrSL, rotrBH, rotrBL, rotr32H, rotr32L, add3L, add3H;
var init_u64 = __esm({
  "node_modules/@noble/hashes/_u64.js"() {
    fromNumH = (n) => n / 2 ** 32 | 0;
    fromNumL = (n) => n >>> 0;
    rotrSH = (h, l, s) => h >>> s | l << 32 - s;
    rotrSL = (h, l, s) => h << 32 - s | l >>> s;
    rotrBH = (h, l, s) => h << 64 - s | l >>> s - 32;
    rotrBL = (h, l, s) => h >>> s - 32 | l << 64 - s;
    rotr32H = (_h, l) => l;
    rotr32L = (h, _l) => h;
    add3L = (Al, Bl, Cl) => (Al >>> 0) + (Bl >>> 0) + (Cl >>> 0);
    add3H = (low, Ah, Bh, Ch) => Ah + Bh + Ch + (low / 2 ** 32 | 0) | 0;
  }
});

// node_modules/@noble/hashes/blake2.js
function G1b(a, b, c, d, msg, x) {
  const Xl = msg[x], Xh = msg[x + 1];
  let Al = BBUF[2 * a], Ah = BBUF[2 * a + 1];
  let Bl = BBUF[2 * b], Bh = BBUF[2 * b + 1];
  let Cl = BBUF[2 * c], Ch = BBUF[2 * c + 1];
  let Dl = BBUF[2 * d], Dh = BBUF[2 * d + 1];
  const ll = add3L(Al, Bl, Xl);
  Ah = add3H(ll, Ah, Bh, Xh);
  Al = ll | 0;
  let xh = Dh ^ Ah, xl = Dl ^ Al;
  Dh = rotr32H(xh, xl);
  Dl = rotr32L(xh, xl);
  ({ h: Ch, l: Cl } = add(Ch, Cl, Dh, Dl));
  xh = Bh ^ Ch;
  xl = Bl ^ Cl;
  Bh = rotrSH(xh, xl, 24);
  Bl = rotrSL(xh, xl, 24);
  BBUF[2 * a] = Al;
  BBUF[2 * a + 1] = Ah;
  BBUF[2 * b] = Bl;
  BBUF[2 * b + 1] = Bh;
  BBUF[2 * c] = Cl;
  BBUF[2 * c + 1] = Ch;
  BBUF[2 * d] = Dl;
  BBUF[2 * d + 1] = Dh;
}
function G2b(a, b, c, d, msg, x) {
  const Xl = msg[x], Xh = msg[x + 1];
  let Al = BBUF[2 * a], Ah = BBUF[2 * a + 1];
  let Bl = BBUF[2 * b], Bh = BBUF[2 * b + 1];
  let Cl = BBUF[2 * c], Ch = BBUF[2 * c + 1];
  let Dl = BBUF[2 * d], Dh = BBUF[2 * d + 1];
  const ll = add3L(Al, Bl, Xl);
  Ah = add3H(ll, Ah, Bh, Xh);
  Al = ll | 0;
  let xh = Dh ^ Ah, xl = Dl ^ Al;
  Dh = rotrSH(xh, xl, 16);
  Dl = rotrSL(xh, xl, 16);
  ({ h: Ch, l: Cl } = add(Ch, Cl, Dh, Dl));
  xh = Bh ^ Ch;
  xl = Bl ^ Cl;
  Bh = rotrBH(xh, xl, 63);
  Bl = rotrBL(xh, xl, 63);
  BBUF[2 * a] = Al;
  BBUF[2 * a + 1] = Ah;
  BBUF[2 * b] = Bl;
  BBUF[2 * b + 1] = Bh;
  BBUF[2 * c] = Cl;
  BBUF[2 * c + 1] = Ch;
  BBUF[2 * d] = Dl;
  BBUF[2 * d + 1] = Dh;
}
function checkBlake2Opts(outputLen, opts = {}, keyLen, saltLen, persLen) {
  anumber(keyLen);
  if (outputLen <= 0 || outputLen > keyLen)
    throw new Error('"dkLen" must be 1..' + keyLen + ", got " + outputLen);
  const { key, salt, personalization } = opts;
  if (key !== void 0 && (key.length < 1 || key.length > keyLen))
    throw new Error('"key" expected to be undefined or of length=1..' + keyLen);
  if (salt !== void 0)
    abytes(salt, saltLen, "salt");
  if (personalization !== void 0)
    abytes(personalization, persLen, "personalization");
}
var B2B_IV, BBUF, _BLAKE2, _BLAKE2b, blake2b;
var init_blake2 = __esm({
  "node_modules/@noble/hashes/blake2.js"() {
    init_blake();
    init_u64();
    init_utils();
    B2B_IV = /* @__PURE__ */ Uint32Array.from([
      4089235720,
      1779033703,
      2227873595,
      3144134277,
      4271175723,
      1013904242,
      1595750129,
      2773480762,
      2917565137,
      1359893119,
      725511199,
      2600822924,
      4215389547,
      528734635,
      327033209,
      1541459225
    ]);
    BBUF = /* @__PURE__ */ new Uint32Array(32);
    _BLAKE2 = class {
      buffer;
      buffer32;
      finished = false;
      destroyed = false;
      length = 0;
      pos = 0;
      blockLen;
      outputLen;
      canXOF = false;
      constructor(blockLen, outputLen) {
        anumber(blockLen);
        anumber(outputLen);
        this.blockLen = blockLen;
        this.outputLen = outputLen;
        this.buffer = new Uint8Array(blockLen);
        this.buffer32 = u32(this.buffer);
      }
      update(data) {
        aexists(this);
        abytes(data);
        const { blockLen, buffer, buffer32 } = this;
        const len = data.length;
        const offset = data.byteOffset;
        const buf = data.buffer;
        for (let pos = 0; pos < len; ) {
          if (this.pos === blockLen) {
            swap32IfBE(buffer32);
            this.compress(buffer32, 0, false);
            swap32IfBE(buffer32);
            this.pos = 0;
          }
          const take = Math.min(blockLen - this.pos, len - pos);
          const dataOffset = offset + pos;
          if (take === blockLen && !(dataOffset % 4) && pos + take < len) {
            const data32 = new Uint32Array(buf, dataOffset, Math.floor((len - pos) / 4));
            swap32IfBE(data32);
            for (let pos32 = 0; pos + blockLen < len; pos32 += buffer32.length, pos += blockLen) {
              this.length += blockLen;
              this.compress(data32, pos32, false);
            }
            swap32IfBE(data32);
            continue;
          }
          buffer.set(pos === 0 && take === len ? data : data.subarray(pos, pos + take), this.pos);
          this.pos += take;
          this.length += take;
          pos += take;
        }
        return this;
      }
      digestInto(out) {
        aexists(this);
        aoutput(out, this);
        if (out.byteOffset & 3)
          throw new RangeError('"output" expected 4-byte aligned byteOffset, got ' + out.byteOffset);
        const { pos, buffer32 } = this;
        this.finished = true;
        this.buffer.fill(0, pos);
        swap32IfBE(buffer32);
        this.compress(buffer32, 0, true);
        swap32IfBE(buffer32);
        const state = this.get();
        const out32 = out === this.buffer ? buffer32 : u32(out);
        const full = Math.floor(this.outputLen / 4);
        for (let i = 0; i < full; i++)
          out32[i] = swap8IfBE(state[i]);
        const tail = this.outputLen % 4;
        if (!tail)
          return;
        const off = full * 4;
        const word = state[full];
        for (let i = 0; i < tail; i++)
          out[off + i] = word >>> 8 * i;
      }
      digest() {
        const { buffer, outputLen } = this;
        this.digestInto(buffer);
        const res = buffer.slice(0, outputLen);
        this.destroy();
        return res;
      }
      _cloneInto(to) {
        const { buffer, length, finished, destroyed, outputLen, pos } = this;
        to ||= new this.constructor({ dkLen: outputLen });
        to.set(...this.get());
        to.buffer.set(buffer);
        to.destroyed = destroyed;
        to.finished = finished;
        to.length = length;
        to.pos = pos;
        to.outputLen = outputLen;
        return to;
      }
      clone() {
        return this._cloneInto();
      }
    };
    _BLAKE2b = class extends _BLAKE2 {
      // Same IV words as SHA-512 / BLAKE2b, encoded as LE u32 low/high halves.
      v0l = B2B_IV[0] | 0;
      v0h = B2B_IV[1] | 0;
      v1l = B2B_IV[2] | 0;
      v1h = B2B_IV[3] | 0;
      v2l = B2B_IV[4] | 0;
      v2h = B2B_IV[5] | 0;
      v3l = B2B_IV[6] | 0;
      v3h = B2B_IV[7] | 0;
      v4l = B2B_IV[8] | 0;
      v4h = B2B_IV[9] | 0;
      v5l = B2B_IV[10] | 0;
      v5h = B2B_IV[11] | 0;
      v6l = B2B_IV[12] | 0;
      v6h = B2B_IV[13] | 0;
      v7l = B2B_IV[14] | 0;
      v7h = B2B_IV[15] | 0;
      constructor(opts = {}) {
        opts = checkOpts({}, opts);
        const olen = opts.dkLen === void 0 ? 64 : opts.dkLen;
        super(128, olen);
        checkBlake2Opts(olen, opts, 64, 16, 16);
        let { key, personalization, salt } = opts;
        let keyLength = 0;
        if (key !== void 0) {
          abytes(key, void 0, "key");
          keyLength = key.length;
        }
        this.v0l ^= this.outputLen | keyLength << 8 | 1 << 16 | 1 << 24;
        if (salt !== void 0) {
          abytes(salt, void 0, "salt");
          const slt = u32(copyBytes(salt));
          this.v4l ^= swap8IfBE(slt[0]);
          this.v4h ^= swap8IfBE(slt[1]);
          this.v5l ^= swap8IfBE(slt[2]);
          this.v5h ^= swap8IfBE(slt[3]);
        }
        if (personalization !== void 0) {
          abytes(personalization, void 0, "personalization");
          const pers = u32(copyBytes(personalization));
          this.v6l ^= swap8IfBE(pers[0]);
          this.v6h ^= swap8IfBE(pers[1]);
          this.v7l ^= swap8IfBE(pers[2]);
          this.v7h ^= swap8IfBE(pers[3]);
        }
        if (key !== void 0) {
          const tmp = new Uint8Array(this.blockLen);
          tmp.set(key);
          this.update(tmp);
          clean(tmp);
        }
      }
      // prettier-ignore
      get() {
        let { v0l, v0h, v1l, v1h, v2l, v2h, v3l, v3h, v4l, v4h, v5l, v5h, v6l, v6h, v7l, v7h } = this;
        return [v0l, v0h, v1l, v1h, v2l, v2h, v3l, v3h, v4l, v4h, v5l, v5h, v6l, v6h, v7l, v7h];
      }
      // prettier-ignore
      set(v0l, v0h, v1l, v1h, v2l, v2h, v3l, v3h, v4l, v4h, v5l, v5h, v6l, v6h, v7l, v7h) {
        this.v0l = v0l | 0;
        this.v0h = v0h | 0;
        this.v1l = v1l | 0;
        this.v1h = v1h | 0;
        this.v2l = v2l | 0;
        this.v2h = v2h | 0;
        this.v3l = v3l | 0;
        this.v3h = v3h | 0;
        this.v4l = v4l | 0;
        this.v4h = v4h | 0;
        this.v5l = v5l | 0;
        this.v5h = v5h | 0;
        this.v6l = v6l | 0;
        this.v6h = v6h | 0;
        this.v7l = v7l | 0;
        this.v7h = v7h | 0;
      }
      compress(msg, offset, isLast) {
        const { v0l, v0h, v1l, v1h, v2l, v2h, v3l, v3h, v4l, v4h, v5l, v5h, v6l, v6h, v7l, v7h } = this;
        {
          BBUF[0] = v0l;
          BBUF[1] = v0h;
          BBUF[2] = v1l;
          BBUF[3] = v1h;
          BBUF[4] = v2l;
          BBUF[5] = v2h;
          BBUF[6] = v3l;
          BBUF[7] = v3h;
          BBUF[8] = v4l;
          BBUF[9] = v4h;
          BBUF[10] = v5l;
          BBUF[11] = v5h;
          BBUF[12] = v6l;
          BBUF[13] = v6h;
          BBUF[14] = v7l;
          BBUF[15] = v7h;
        }
        BBUF.set(B2B_IV, 16);
        const l = fromNumL(this.length);
        const h = fromNumH(this.length);
        BBUF[24] = B2B_IV[8] ^ l;
        BBUF[25] = B2B_IV[9] ^ h;
        if (isLast) {
          BBUF[28] = ~BBUF[28];
          BBUF[29] = ~BBUF[29];
        }
        let j = 0;
        const s = BSIGMA;
        for (let i = 0; i < 12; i++) {
          G1b(0, 4, 8, 12, msg, offset + 2 * s[j++]);
          G2b(0, 4, 8, 12, msg, offset + 2 * s[j++]);
          G1b(1, 5, 9, 13, msg, offset + 2 * s[j++]);
          G2b(1, 5, 9, 13, msg, offset + 2 * s[j++]);
          G1b(2, 6, 10, 14, msg, offset + 2 * s[j++]);
          G2b(2, 6, 10, 14, msg, offset + 2 * s[j++]);
          G1b(3, 7, 11, 15, msg, offset + 2 * s[j++]);
          G2b(3, 7, 11, 15, msg, offset + 2 * s[j++]);
          G1b(0, 5, 10, 15, msg, offset + 2 * s[j++]);
          G2b(0, 5, 10, 15, msg, offset + 2 * s[j++]);
          G1b(1, 6, 11, 12, msg, offset + 2 * s[j++]);
          G2b(1, 6, 11, 12, msg, offset + 2 * s[j++]);
          G1b(2, 7, 8, 13, msg, offset + 2 * s[j++]);
          G2b(2, 7, 8, 13, msg, offset + 2 * s[j++]);
          G1b(3, 4, 9, 14, msg, offset + 2 * s[j++]);
          G2b(3, 4, 9, 14, msg, offset + 2 * s[j++]);
        }
        this.v0l ^= BBUF[0] ^ BBUF[16];
        this.v0h ^= BBUF[1] ^ BBUF[17];
        this.v1l ^= BBUF[2] ^ BBUF[18];
        this.v1h ^= BBUF[3] ^ BBUF[19];
        this.v2l ^= BBUF[4] ^ BBUF[20];
        this.v2h ^= BBUF[5] ^ BBUF[21];
        this.v3l ^= BBUF[6] ^ BBUF[22];
        this.v3h ^= BBUF[7] ^ BBUF[23];
        this.v4l ^= BBUF[8] ^ BBUF[24];
        this.v4h ^= BBUF[9] ^ BBUF[25];
        this.v5l ^= BBUF[10] ^ BBUF[26];
        this.v5h ^= BBUF[11] ^ BBUF[27];
        this.v6l ^= BBUF[12] ^ BBUF[28];
        this.v6h ^= BBUF[13] ^ BBUF[29];
        this.v7l ^= BBUF[14] ^ BBUF[30];
        this.v7h ^= BBUF[15] ^ BBUF[31];
        clean(BBUF);
      }
      destroy() {
        this.destroyed = true;
        clean(this.buffer32);
        this.set(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
      }
    };
    blake2b = /* @__PURE__ */ createHasher((opts) => new _BLAKE2b(opts));
  }
});

// node_modules/@noble/hashes/argon2.js
var argon2_exports = {};
__export(argon2_exports, {
  argon2d: () => argon2d,
  argon2dAsync: () => argon2dAsync,
  argon2i: () => argon2i,
  argon2iAsync: () => argon2iAsync,
  argon2id: () => argon2id,
  argon2idAsync: () => argon2idAsync
});
function G(a, b, c, d) {
  let Al = A2_BUF[2 * a], Ah = A2_BUF[2 * a + 1];
  let Bl = A2_BUF[2 * b], Bh = A2_BUF[2 * b + 1];
  let Cl = A2_BUF[2 * c], Ch = A2_BUF[2 * c + 1];
  let Dl = A2_BUF[2 * d], Dh = A2_BUF[2 * d + 1];
  let ml = 0, mh = 0, rl = 0, xh = 0, xl = 0;
  ml = Math.imul(Al, Bl);
  mh = ((Al >>> 0) * (Bl >>> 0) - (ml >>> 0)) / 4294967296 + 0.5 | 0;
  rl = (Al >>> 0) + (Bl >>> 0) + (ml << 1 >>> 0);
  Ah = Ah + Bh + (mh << 1 | ml >>> 31) + (rl / 4294967296 | 0) | 0;
  Al = rl | 0;
  xh = Dh ^ Ah;
  xl = Dl ^ Al;
  Dh = xl;
  Dl = xh;
  ml = Math.imul(Cl, Dl);
  mh = ((Cl >>> 0) * (Dl >>> 0) - (ml >>> 0)) / 4294967296 + 0.5 | 0;
  rl = (Cl >>> 0) + (Dl >>> 0) + (ml << 1 >>> 0);
  Ch = Ch + Dh + (mh << 1 | ml >>> 31) + (rl / 4294967296 | 0) | 0;
  Cl = rl | 0;
  xh = Bh ^ Ch;
  xl = Bl ^ Cl;
  Bh = xh >>> 24 | xl << 8;
  Bl = xh << 8 | xl >>> 24;
  ml = Math.imul(Al, Bl);
  mh = ((Al >>> 0) * (Bl >>> 0) - (ml >>> 0)) / 4294967296 + 0.5 | 0;
  rl = (Al >>> 0) + (Bl >>> 0) + (ml << 1 >>> 0);
  Ah = Ah + Bh + (mh << 1 | ml >>> 31) + (rl / 4294967296 | 0) | 0;
  Al = rl | 0;
  xh = Dh ^ Ah;
  xl = Dl ^ Al;
  Dh = xh >>> 16 | xl << 16;
  Dl = xh << 16 | xl >>> 16;
  ml = Math.imul(Cl, Dl);
  mh = ((Cl >>> 0) * (Dl >>> 0) - (ml >>> 0)) / 4294967296 + 0.5 | 0;
  rl = (Cl >>> 0) + (Dl >>> 0) + (ml << 1 >>> 0);
  Ch = Ch + Dh + (mh << 1 | ml >>> 31) + (rl / 4294967296 | 0) | 0;
  Cl = rl | 0;
  xh = Bh ^ Ch;
  xl = Bl ^ Cl;
  Bh = xh << 1 | xl >>> 31;
  Bl = xh >>> 31 | xl << 1;
  A2_BUF[2 * a] = Al, A2_BUF[2 * a + 1] = Ah;
  A2_BUF[2 * b] = Bl, A2_BUF[2 * b + 1] = Bh;
  A2_BUF[2 * c] = Cl, A2_BUF[2 * c + 1] = Ch;
  A2_BUF[2 * d] = Dl, A2_BUF[2 * d + 1] = Dh;
}
function P(v00, v01, v02, v03, v04, v05, v06, v07, v08, v09, v10, v11, v12, v13, v14, v15) {
  G(v00, v04, v08, v12);
  G(v01, v05, v09, v13);
  G(v02, v06, v10, v14);
  G(v03, v07, v11, v15);
  G(v00, v05, v10, v15);
  G(v01, v06, v11, v12);
  G(v02, v07, v08, v13);
  G(v03, v04, v09, v14);
}
function block(x, xPos, yPos, outPos, needXor) {
  if (needXor) {
    for (let i = 0; i < 256; i++) {
      const r = x[xPos + i] ^ x[yPos + i];
      A2_BUF[i] = r;
      x[outPos + i] ^= r;
    }
  } else {
    for (let i = 0; i < 256; i++) {
      const r = x[xPos + i] ^ x[yPos + i];
      A2_BUF[i] = r;
      x[outPos + i] = r;
    }
  }
  for (let i = 0; i < 128; i += 16) {
    P(i, i + 1, i + 2, i + 3, i + 4, i + 5, i + 6, i + 7, i + 8, i + 9, i + 10, i + 11, i + 12, i + 13, i + 14, i + 15);
  }
  for (let i = 0; i < 16; i += 2) {
    P(i, i + 1, i + 16, i + 17, i + 32, i + 33, i + 48, i + 49, i + 64, i + 65, i + 80, i + 81, i + 96, i + 97, i + 112, i + 113);
  }
  for (let i = 0; i < 256; i++)
    x[outPos + i] ^= A2_BUF[i];
  clean(A2_BUF);
}
function Hp(A, dkLen) {
  const A8 = u8(A);
  const T = new Uint32Array(1);
  const T8 = u8(T);
  T[0] = swap8IfBE(dkLen);
  if (dkLen <= 64)
    return blake2b.create({ dkLen }).update(T8).update(A8).digest();
  const out = new Uint8Array(dkLen);
  let V = blake2b.create({}).update(T8).update(A8).digest();
  let pos = 0;
  out.set(V.subarray(0, 32));
  pos += 32;
  for (; dkLen - pos > 64; pos += 32) {
    const Vh = blake2b.create({}).update(V);
    Vh.digestInto(V);
    Vh.destroy();
    out.set(V.subarray(0, 32), pos);
  }
  out.set(blake2b(V, { dkLen: dkLen - pos }), pos);
  clean(V, T);
  return out;
}
function indexAlpha(r, s, laneLen, segmentLen, index, randL, sameLane = false) {
  let area;
  if (r === 0) {
    if (s === 0)
      area = index - 1;
    else if (sameLane)
      area = s * segmentLen + index - 1;
    else
      area = s * segmentLen + (index == 0 ? -1 : 0);
  } else if (sameLane)
    area = laneLen - segmentLen + index - 1;
  else
    area = laneLen - segmentLen + (index == 0 ? -1 : 0);
  const startPos = r !== 0 && s !== ARGON2_SYNC_POINTS - 1 ? (s + 1) * segmentLen : 0;
  const randLow = Math.imul(randL, randL);
  const randHigh = ((randL >>> 0) * (randL >>> 0) - (randLow >>> 0)) / 4294967296 + 0.5 | 0;
  const areaLow = Math.imul(area, randHigh);
  const areaHigh = ((area >>> 0) * (randHigh >>> 0) - (areaLow >>> 0)) / 4294967296 + 0.5 | 0;
  const rel = area - 1 - areaHigh;
  return (startPos + rel) % laneLen;
}
function isU32(num) {
  return Number.isSafeInteger(num) && num >= 0 && num < maxUint32;
}
function argon2Opts(opts = {}) {
  opts = checkOpts({}, opts);
  const merged = {
    t: 3,
    m: ARGON2_DEFAULT_MEMORY,
    p: 1,
    version: 19,
    dkLen: 32,
    maxmem: ARGON2_DEFAULT_MAXMEM,
    asyncTick: 10
  };
  for (let [k, v] of Object.entries(opts))
    if (v !== void 0)
      merged[k] = v;
  const { dkLen, p, m, t, version, onProgress, asyncTick } = merged;
  if (!isU32(dkLen) || dkLen < 4)
    throw new Error('"dkLen" must be 4..');
  if (!isU32(p) || p < 1 || p >= Math.pow(2, 24))
    throw new Error('"p" must be 1..2^24');
  if (!isU32(m))
    throw new Error('"m" must be 0..2^32');
  if (!isU32(t) || t < 1)
    throw new Error('"t" (iterations) must be 1..2^32');
  if (onProgress !== void 0 && typeof onProgress !== "function")
    throw new Error('"onProgress" must be a function');
  anumber(asyncTick, "asyncTick");
  if (!isU32(m) || m < 8 * p)
    throw new Error('"m" (memory) must be at least 8*p bytes');
  if (version !== 16 && version !== 19)
    throw new Error('"version" must be 0x10 or 0x13, got ' + version);
  return merged;
}
function argon2InitialHash(password, salt, type, opts) {
  const ownedInputs = [];
  const BUF = new Uint32Array(1);
  const BUF8 = u8(BUF);
  let h;
  let H0;
  let succeeded = false;
  const rememberOwned = (input, bytes) => {
    if (typeof input === "string")
      ownedInputs.push(bytes);
    return bytes;
  };
  try {
    const passwordBytes = rememberOwned(password, kdfInputToBytes(password, "password"));
    const saltBytes = rememberOwned(salt, kdfInputToBytes(salt, "salt"));
    if (!isU32(passwordBytes.length))
      throw new Error('"password" must be less of length 1..4Gb');
    if (!isU32(saltBytes.length) || saltBytes.length < 8)
      throw new Error('"salt" must be of length 8..4Gb');
    if (!Object.values(AT).includes(type))
      throw new Error('"type" was invalid');
    let { p, dkLen, m, t, version, key, personalization, maxmem, onProgress, asyncTick } = argon2Opts(opts);
    const keyInput = key;
    key = rememberOwned(keyInput, abytesOrZero(keyInput, "key"));
    const personalizationInput = personalization;
    personalization = rememberOwned(personalizationInput, abytesOrZero(personalizationInput, "personalization"));
    h = blake2b.create();
    for (let item of [p, dkLen, m, t, version, type]) {
      BUF[0] = swap8IfBE(item);
      h.update(BUF8);
    }
    for (let i of [passwordBytes, saltBytes, key, personalization]) {
      BUF[0] = swap8IfBE(i.length);
      h.update(BUF8).update(i);
    }
    H0 = new Uint32Array(18);
    h.digestInto(u8(H0));
    succeeded = true;
    return { H0, p, dkLen, m, t, version, maxmem, onProgress, asyncTick };
  } finally {
    if (h)
      h.destroy();
    clean(BUF, ...ownedInputs);
    if (!succeeded && H0)
      clean(H0);
  }
}
function argon2Init(password, salt, type, opts) {
  const { H0, p, dkLen, m, t, version, maxmem, onProgress, asyncTick } = argon2InitialHash(password, salt, type, opts);
  try {
    const lanes = p;
    const mP = 4 * p * Math.floor(m / (ARGON2_SYNC_POINTS * p));
    const laneLen = Math.floor(mP / p);
    const segmentLen = Math.floor(laneLen / ARGON2_SYNC_POINTS);
    const memUsed = mP * 1024;
    if (!isU32(maxmem))
      throw new Error('"maxmem" expected <2**32, got ' + maxmem);
    if (memUsed > maxmem)
      throw new Error('"maxmem" limit was hit: memUsed(mP*1024)=' + memUsed + ", maxmem=" + maxmem);
    const B = new Uint32Array(memUsed / 4);
    for (let l = 0; l < p; l++) {
      const i = 256 * laneLen * l;
      H0[17] = swap8IfBE(l);
      H0[16] = swap8IfBE(0);
      B.set(swap32IfBE(u32(Hp(H0, 1024))), i);
      H0[16] = swap8IfBE(1);
      B.set(swap32IfBE(u32(Hp(H0, 1024))), i + 256);
    }
    let perBlock = () => {
    };
    if (onProgress) {
      const totalBlock = t * ARGON2_SYNC_POINTS * p * segmentLen - 2 * p;
      const callbackPer = Math.max(Math.floor(totalBlock / 1e4), 1);
      let blockCnt = 0;
      perBlock = () => {
        blockCnt++;
        if (onProgress && (!(blockCnt % callbackPer) || blockCnt === totalBlock))
          onProgress(blockCnt / totalBlock);
      };
    }
    return { type, mP, p, t, version, B, laneLen, lanes, segmentLen, dkLen, perBlock, asyncTick };
  } finally {
    clean(H0);
  }
}
function argon2Output(B, p, laneLen, dkLen) {
  const B_final = new Uint32Array(256);
  for (let l = 0; l < p; l++)
    for (let j = 0; j < 256; j++)
      B_final[j] ^= B[256 * (laneLen * l + laneLen - 1) + j];
  const res = Hp(swap32IfBE(B_final), dkLen);
  clean(B, B_final);
  return res;
}
function* argon2Blocks(ctx, address) {
  const { type, mP, p, t, version, B, laneLen, lanes, segmentLen, perBlock } = ctx;
  address[256 + 6] = mP;
  address[256 + 8] = t;
  address[256 + 10] = type;
  for (let r = 0; r < t; r++) {
    const needXor = r !== 0 && version === 19;
    address[256 + 0] = r;
    for (let s = 0; s < ARGON2_SYNC_POINTS; s++) {
      address[256 + 4] = s;
      const dataIndependent = type == AT.Argon2i || type == AT.Argon2id && r === 0 && s < 2;
      for (let l = 0; l < p; l++) {
        address[256 + 2] = l;
        address[256 + 12] = 0;
        let startPos = 0;
        if (r === 0 && s === 0) {
          startPos = 2;
          if (dataIndependent) {
            address[256 + 12]++;
            block(address, 256, 2 * 256, 0, false);
            block(address, 0, 2 * 256, 0, false);
          }
        }
        let offset = l * laneLen + s * segmentLen + startPos;
        for (let index = startPos; index < segmentLen; index++, offset++) {
          perBlock();
          const prev = offset % laneLen ? offset - 1 : offset + laneLen - 1;
          let randL, randH;
          if (dataIndependent) {
            let i128 = index % 128;
            if (i128 === 0) {
              address[256 + 12]++;
              block(address, 256, 2 * 256, 0, false);
              block(address, 0, 2 * 256, 0, false);
            }
            randL = address[2 * i128];
            randH = address[2 * i128 + 1];
          } else {
            const T = 256 * prev;
            randL = B[T];
            randH = B[T + 1];
          }
          const refLane = r === 0 && s === 0 ? l : randH % lanes;
          const refPos = indexAlpha(r, s, laneLen, segmentLen, index, randL, refLane == l);
          const refBlock = laneLen * refLane + refPos;
          block(B, 256 * prev, 256 * refBlock, offset * 256, needXor);
          yield;
        }
      }
    }
  }
  clean(address);
}
function argon2(type, password, salt, opts) {
  const ctx = argon2Init(password, salt, type, opts);
  const blocks = argon2Blocks(ctx, new Uint32Array(3 * 256));
  while (!blocks.next().done) {
  }
  return argon2Output(ctx.B, ctx.p, ctx.laneLen, ctx.dkLen);
}
async function argon2Async(type, password, salt, opts) {
  const ctx = argon2Init(password, salt, type, opts);
  const address = new Uint32Array(3 * 256);
  const blocks = argon2Blocks(ctx, address);
  const abort = () => clean(address, ctx.B);
  let ts = Date.now();
  while (!blocks.next().done) {
    const diff = Date.now() - ts;
    if (diff >= 0 && diff < ctx.asyncTick)
      continue;
    await nextTick(abort);
    ts = Date.now();
  }
  return argon2Output(ctx.B, ctx.p, ctx.laneLen, ctx.dkLen);
}
var AT, ARGON2_SYNC_POINTS, abytesOrZero, A2_BUF, maxUint32, ARGON2_DEFAULT_MEMORY, ARGON2_DEFAULT_MAXMEM, argon2d, argon2i, argon2id, argon2dAsync, argon2iAsync, argon2idAsync;
var init_argon2 = __esm({
  "node_modules/@noble/hashes/argon2.js"() {
    init_blake2();
    init_utils();
    AT = { Argon2d: 0, Argon2i: 1, Argon2id: 2 };
    ARGON2_SYNC_POINTS = 4;
    abytesOrZero = (buf, errorTitle = "") => {
      if (buf === void 0)
        return Uint8Array.of();
      return kdfInputToBytes(buf, errorTitle);
    };
    A2_BUF = new Uint32Array(256);
    maxUint32 = Math.pow(2, 32);
    ARGON2_DEFAULT_MEMORY = 1024 ** 2;
    ARGON2_DEFAULT_MAXMEM = ARGON2_DEFAULT_MEMORY * 1024;
    argon2d = (password, salt, opts = {}) => argon2(AT.Argon2d, password, salt, opts);
    argon2i = (password, salt, opts = {}) => argon2(AT.Argon2i, password, salt, opts);
    argon2id = (password, salt, opts = {}) => argon2(AT.Argon2id, password, salt, opts);
    argon2dAsync = (password, salt, opts = {}) => argon2Async(AT.Argon2d, password, salt, opts);
    argon2iAsync = (password, salt, opts = {}) => argon2Async(AT.Argon2i, password, salt, opts);
    argon2idAsync = (password, salt, opts = {}) => argon2Async(AT.Argon2id, password, salt, opts);
  }
});

// src/index.js
var encoder = new TextEncoder();
var X_DATE = "X-Date";
function subtle() {
  const c = globalThis.crypto;
  if (!c || !c.subtle || typeof c.getRandomValues !== "function") {
    throw new KeyserviceError("WebCrypto is not available: keyservice needs a secure context (HTTPS or localhost) or Node >= 20", { code: "webcrypto_unavailable" });
  }
  return c.subtle;
}
function toHex(bytes) {
  let out = "";
  for (const b of bytes) out += b.toString(16).padStart(2, "0");
  return out;
}
function fromHex(text) {
  if (text.length % 2 !== 0 || /[^0-9a-f]/i.test(text)) throw new TypeError("not hex");
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}
function toBase64(bytes) {
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}
function asBytes(data) {
  if (data === void 0 || data === null) return new Uint8Array(0);
  if (typeof data === "string") return encoder.encode(data);
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError("expected a string, Uint8Array, ArrayBuffer or typed array");
}
function concat(parts) {
  const length = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(length);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
function newNonce() {
  subtle();
  return globalThis.crypto.getRandomValues(new Uint8Array(64));
}
async function initTokenHash(initToken) {
  const digest = await subtle().digest("SHA-512", encoder.encode(initToken));
  return toBase64(new Uint8Array(digest));
}
async function eraseNonce(namespace, userId) {
  const digest = await subtle().digest("SHA-256", encoder.encode(`keyservice erase
${namespace}
${userId}`));
  const base64url = toBase64(new Uint8Array(digest)).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
  return `erase:${base64url}`;
}
async function ss1Hash({ secret, nonce, method, path, body, date }) {
  const key = await subtle().importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-512" }, false, [
    "sign"
  ]);
  const message = concat([
    asBytes(nonce),
    encoder.encode(method.toUpperCase()),
    encoder.encode(path),
    asBytes(body),
    encoder.encode(date)
  ]);
  return toHex(new Uint8Array(await subtle().sign("HMAC", key, message)));
}
async function ss1Authorization({ keyId, secret, method, path, body, date, nonce }) {
  if (!keyId || keyId.includes(",") || new TextEncoder().encode(keyId).length > 256) {
    throw new TypeError("a key id is 1 to 256 bytes and holds no comma");
  }
  const n = nonce === void 0 ? newNonce() : typeof nonce === "string" ? fromHex(nonce) : asBytes(nonce);
  if (n.length !== 64) throw new TypeError("an ss1 nonce is 64 bytes");
  const hash = await ss1Hash({ secret, nonce: n, method, path, body, date });
  return `ss1 keyid=${keyId}, hash=${hash}, nonce=${toHex(n)}`;
}
var KeyserviceError = class extends Error {
  /**
   * @param {string} message
   * @param {{status?: number, code?: string, retryAfter?: number, cause?: unknown}} [details]
   */
  constructor(message, details = {}) {
    super(message, details.cause === void 0 ? void 0 : { cause: details.cause });
    this.name = "KeyserviceError";
    this.status = details.status ?? 0;
    this.code = details.code ?? "network_error";
    this.retryAfter = details.retryAfter;
  }
};
function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
function retryAfterOf(response) {
  const value = response.headers.get("retry-after");
  if (value === null) return void 0;
  const seconds = Number(value);
  return Number.isFinite(seconds) && seconds >= 0 ? seconds : void 0;
}
async function errorOf(response) {
  let code = `http_${response.status}`;
  let message = `keyservice answered ${response.status}`;
  try {
    const body = await response.json();
    if (body && typeof body.error === "string") code = body.error;
    if (body && typeof body.message === "string") message = body.message;
  } catch {
  }
  return new KeyserviceError(message, { status: response.status, code, retryAfter: retryAfterOf(response) });
}
var Keyservice = class {
  /**
   * @param {string} url The service's base URL, e.g. `https://keys.example.com`.
   * @param {{fetch?: typeof fetch, getRetries?: number, maxRetryAfter?: number, timeoutMs?: number}} [options]
   */
  constructor(url, options = {}) {
    this.url = String(url).replace(/\/+$/, "");
    this.fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.getRetries = options.getRetries ?? 2;
    this.maxRetryAfter = options.maxRetryAfter ?? 30;
    this.timeoutMs = options.timeoutMs ?? 3e4;
    this.clockOffset = 0;
  }
  /** The date to sign with, as an HTTP date, corrected by the learnt offset. */
  date() {
    return new Date(Date.now() + this.clockOffset * 1e3).toUTCString();
  }
  async send(method, path, { body, headers = {}, signer } = {}) {
    const bytes = body === void 0 ? void 0 : asBytes(body);
    const all = { ...headers };
    if (signer) {
      const date = this.date();
      all[X_DATE] = date;
      all.Authorization = await ss1Authorization({
        keyId: signer.keyId,
        secret: signer.secret,
        method,
        path,
        body: bytes,
        date
      });
    }
    const controller = typeof AbortController === "function" ? new AbortController() : void 0;
    const timer = controller ? setTimeout(() => controller.abort(), this.timeoutMs) : void 0;
    try {
      return await this.fetch(this.url + path, {
        method,
        headers: all,
        body: bytes,
        signal: controller?.signal,
        credentials: "omit",
        cache: "no-store"
      });
    } catch (cause) {
      const timedOut = controller?.signal.aborted;
      if (!timedOut && await this.answersOtherPages()) {
        throw new KeyserviceError(
          `keyservice answered, but not to this page: add ${globalThis.location.origin} to its cors_origins`,
          { code: "cors_refused", cause }
        );
      }
      throw new KeyserviceError(timedOut ? "keyservice did not answer in time" : "keyservice could not be reached", {
        code: timedOut ? "timeout" : "network_error",
        cause
      });
    } finally {
      if (timer !== void 0) clearTimeout(timer);
    }
  }
  /**
   * In a page of another origin, whether keyservice is up although the call failed: a
   * browser reports a refusal by CORS exactly as it reports an outage, but a `no-cors`
   * request (whose answer the page cannot read) still tells whether the server answered.
   * @returns {Promise<boolean>}
   */
  async answersOtherPages() {
    const here = globalThis.location?.origin;
    if (typeof globalThis.document === "undefined" || !here || here === new URL(this.url).origin) return false;
    const controller = typeof AbortController === "function" ? new AbortController() : void 0;
    const timer = controller ? setTimeout(() => controller.abort(), Math.min(this.timeoutMs, 3e3)) : void 0;
    try {
      await this.fetch(`${this.url}/healthz`, {
        mode: "no-cors",
        credentials: "omit",
        cache: "no-store",
        signal: controller?.signal
      });
      return true;
    } catch {
      return false;
    } finally {
      if (timer !== void 0) clearTimeout(timer);
    }
  }
  /**
   * One call with the client's retry rules: a refused date is corrected from the
   * server's clock and retried once; `Retry-After` on 429/503 is honoured (within
   * `maxRetryAfter`) for idempotent calls; GETs are retried on network errors. A PUT
   * without a condition is never retried: it may have landed.
   */
  async call(method, path, { body, headers, signer, idempotent = method === "GET", expect = [200] } = {}) {
    let corrected = false;
    let networkRetries = method === "GET" ? this.getRetries : 0;
    let waits = 2;
    for (; ; ) {
      let response;
      try {
        response = await this.send(method, path, { body, headers, signer });
      } catch (error2) {
        if (networkRetries > 0) {
          networkRetries -= 1;
          await sleep(200);
          continue;
        }
        throw error2;
      }
      if (expect.includes(response.status)) return response;
      const error = await errorOf(response);
      if (signer && !corrected && (error.code === "clock_skew" || error.code === "stale_date")) {
        corrected = true;
        const server = Date.parse(response.headers.get("date") ?? "");
        if (error.code === "clock_skew" && Number.isFinite(server)) {
          this.clockOffset = Math.round((server - Date.now()) / 1e3);
          continue;
        }
        if (error.code === "stale_date" && error.retryAfter !== void 0 && error.retryAfter <= this.maxRetryAfter) {
          await sleep(error.retryAfter * 1e3);
          continue;
        }
      }
      if (idempotent && waits > 0 && (response.status === 429 || response.status === 503) && error.retryAfter !== void 0 && error.retryAfter <= this.maxRetryAfter) {
        waits -= 1;
        await sleep(error.retryAfter * 1e3);
        continue;
      }
      throw error;
    }
  }
  /**
   * `POST /init`: a new init token, the device's signing secret.
   * @returns {Promise<{initToken: string, expiresAt: string}>}
   */
  async init() {
    const response = await this.call("POST", "/init", { idempotent: true });
    const body = await response.json();
    return { initToken: body.initToken, expiresAt: body.expiresAt };
  }
  /**
   * A device session from the session token the Real Service handed over and the
   * device's own init token. Makes no request.
   * @param {string} sessionToken
   * @param {string} initToken
   */
  session(sessionToken, initToken) {
    return new Session(this, sessionToken, initToken);
  }
  /**
   * The Real Service's side (Node backends): its namespace credential. Never ship a
   * credential to a browser.
   * @param {{keyId: string, secret: string}} credential
   */
  realService(credential) {
    return new RealService(this, credential);
  }
};
var Session = class {
  constructor(keyservice, sessionToken, initToken) {
    this.keyservice = keyservice;
    Object.defineProperty(this, "signer", { value: { keyId: sessionToken, secret: initToken }, enumerable: false });
  }
  /**
   * `PUT /key`: stores a new version; returns its number. `ifMatch` (a version) makes it
   * a compare-and-swap and `ifNoneMatch: '*'` a first write; only those are retried.
   * @param {Uint8Array|ArrayBuffer|string} bytes
   * @param {{contentType?: string, ifMatch?: number, ifNoneMatch?: '*'}} [options]
   * @returns {Promise<number>}
   */
  async putKey(bytes, options = {}) {
    const headers = { "Content-Type": options.contentType ?? "application/octet-stream" };
    if (options.ifMatch !== void 0 && options.ifNoneMatch !== void 0) {
      throw new TypeError("ifMatch and ifNoneMatch cannot both be given");
    }
    if (options.ifMatch !== void 0) headers["If-Match"] = `"${options.ifMatch}"`;
    if (options.ifNoneMatch !== void 0) {
      if (options.ifNoneMatch !== "*") throw new TypeError("ifNoneMatch takes only '*'");
      headers["If-None-Match"] = "*";
    }
    const conditional = options.ifMatch !== void 0 || options.ifNoneMatch !== void 0;
    const response = await this.keyservice.call("PUT", "/key", {
      body: asBytes(bytes),
      headers,
      signer: this.signer,
      idempotent: conditional,
      expect: [200, 201]
    });
    return (await response.json()).version;
  }
  /**
   * `GET /key`: the latest version, or the given one.
   * @param {number} [version]
   * @returns {Promise<{version: number, contentType: string, bytes: Uint8Array}>}
   */
  async getKey(version) {
    const path = version === void 0 ? "/key" : `/key?version=${Number(version)}`;
    const response = await this.keyservice.call("GET", path, { signer: this.signer });
    const etag = response.headers.get("etag") ?? "";
    return {
      version: Number(etag.replaceAll('"', "")),
      contentType: response.headers.get("content-type") ?? "application/octet-stream",
      bytes: new Uint8Array(await response.arrayBuffer())
    };
  }
  /**
   * The number of the latest version (a `GET /key` whose bytes are dropped).
   * @returns {Promise<number>}
   */
  async getKeyVersion() {
    const key = await this.getKey();
    key.bytes.fill(0);
    return key.version;
  }
  /** `DELETE /key`: every version of the key, gone. */
  async deleteKey() {
    await this.keyservice.call("DELETE", "/key", { signer: this.signer, idempotent: true, expect: [204] });
  }
  /** `DELETE /session`: this session ends at once. */
  async logout() {
    await this.keyservice.call("DELETE", "/session", { signer: this.signer, idempotent: true, expect: [204] });
  }
  /**
   * `GET /key/history`: a page of who used this user's key and sessions, newest first.
   * Pass a page's `next` as `before` for the older page after it.
   * @param {{limit?: number, before?: string}} [options]
   * @returns {Promise<{entries: AccessEntry[], next: string|null}>}
   */
  async accessHistory(options = {}) {
    const query = new URLSearchParams();
    if (options.limit !== void 0) query.set("limit", String(options.limit));
    if (options.before !== void 0) query.set("before", options.before);
    const path = query.size === 0 ? "/key/history" : `/key/history?${query}`;
    const response = await this.keyservice.call("GET", path, { signer: this.signer });
    return response.json();
  }
};
function countAccesses(entries) {
  const out = /* @__PURE__ */ new Map();
  for (const entry of entries) {
    const bySession = out.get(entry.session) ?? {};
    bySession[entry.operation] = (bySession[entry.operation] ?? 0) + entry.count;
    out.set(entry.session, bySession);
  }
  return out;
}
var RealService = class {
  constructor(keyservice, credential) {
    this.keyservice = keyservice;
    Object.defineProperty(this, "signer", {
      value: { keyId: credential.keyId, secret: credential.secret },
      enumerable: false
    });
  }
  async post(path, payload) {
    const response = await this.keyservice.call("POST", path, {
      body: JSON.stringify(payload),
      headers: { "Content-Type": "application/json" },
      signer: this.signer,
      idempotent: path !== "/connect"
    });
    return response.json();
  }
  /**
   * `POST /connect`: a session for the device whose init token hashes to
   * `initTokenHash`, for `userId` in `namespace`. A namespace that requires independent
   * identity also needs `idToken`: the ID token the user's identity provider issued for
   * this login, with `nonce` = `initTokenHash`.
   * @returns {Promise<{sessionToken: string, expiresAt: string}>}
   */
  connect(namespace, userId, initTokenHash2, { idToken } = {}) {
    const body = { namespace, userId, initTokenHash: initTokenHash2 };
    if (idToken !== void 0) body.idToken = idToken;
    return this.post("/connect", body);
  }
  /**
   * `POST /erase`: destroys the user's key, sessions and access history; returns the
   * receipt. A namespace that requires independent identity also needs `idToken`: an ID
   * token the user's identity provider issued for this erasure, with `nonce` =
   * `await eraseNonce(namespace, userId)`, recently (`erase_max_age_secs`); a token
   * authorises one erasure.
   * @returns {Promise<{userId: string, erasedAt: string, versionsDestroyed: number, sessionsRevoked: number, accessRecordsDestroyed: number}>}
   */
  erase(namespace, userId, { idToken } = {}) {
    const body = { namespace, userId };
    if (idToken !== void 0) body.idToken = idToken;
    return this.post("/erase", body);
  }
  /** `POST /export`: what keyservice holds about the user (never key bytes). */
  export(namespace, userId) {
    return this.post("/export", { namespace, userId });
  }
};
var AES_GCM = { name: "AES-GCM", length: 256 };
var DATA_KEY_TYPE = "application/vnd.keyservice.aes-gcm-256";
var WRAPPED_KEY_TYPE = "application/vnd.keyservice.wrapped-v1";
async function escrowNewDataKey(session, options = {}) {
  const raw = globalThis.crypto.getRandomValues(new Uint8Array(32));
  try {
    const factor = options.userFactor;
    if (factor) {
      const wrapped = await wrapForFactor(raw, factor);
      await session.putKey(wrapped, { contentType: WRAPPED_KEY_TYPE, ifNoneMatch: "*" });
    } else {
      await session.putKey(raw, { contentType: DATA_KEY_TYPE, ifNoneMatch: "*" });
    }
    return await subtle().importKey("raw", raw, AES_GCM, false, ["encrypt", "decrypt"]);
  } finally {
    raw.fill(0);
  }
}
async function fetchDataKey(session, versionOrOptions, legacyOptions = {}) {
  const options = versionOrOptions !== null && typeof versionOrOptions === "object" ? versionOrOptions : { ...legacyOptions, version: versionOrOptions };
  const key = await session.getKey(options.version);
  let raw = key.bytes;
  try {
    if (key.contentType === WRAPPED_KEY_TYPE) {
      if (!options.userFactor) {
        throw new KeyserviceError("the data key is wrapped under a passphrase or passkey; give the userFactor", { code: "user_factor_required" });
      }
      raw = await unwrapForFactor(key.bytes, options.userFactor);
    }
    if (raw.length !== 32) throw new KeyserviceError("the escrowed key is not a 256-bit AES key", { code: "not_a_data_key" });
    return await subtle().importKey("raw", raw, AES_GCM, false, ["encrypt", "decrypt"]);
  } finally {
    key.bytes.fill(0);
    raw.fill(0);
  }
}
async function getOrCreateDataKey(session, options = {}) {
  try {
    return await fetchDataKey(session, { userFactor: options.userFactor });
  } catch (error) {
    if (!(error instanceof KeyserviceError) || error.code !== "no_key") throw error;
  }
  try {
    return await escrowNewDataKey(session, options);
  } catch (error) {
    if (error instanceof KeyserviceError && error.code === "precondition_failed") {
      return fetchDataKey(session, { userFactor: options.userFactor });
    }
    throw error;
  }
}
async function wrapForFactor(raw, factor) {
  if (typeof factor.passphrase === "string") return wrapWithPassphrase(raw, factor.passphrase, { params: factor.params });
  if (factor.passkey) {
    const prfSalt = globalThis.crypto.getRandomValues(new Uint8Array(PRF_SALT_LEN));
    const output = await passkeyPrf({ ...factor.passkey, prfSalt });
    try {
      return await wrapWithPrf(raw, output, { credentialId: factor.passkey.credentialId, prfSalt });
    } finally {
      output.fill(0);
    }
  }
  throw new TypeError("userFactor takes { passphrase } or { passkey: { credentialId } }");
}
async function unwrapForFactor(wrapped, factor) {
  try {
    if (typeof factor.passphrase === "string") return await unwrapWithPassphrase(wrapped, factor.passphrase);
    if (factor.passkey) {
      const described = describeWrapped(wrapped);
      if (described.kdf !== "webauthn-prf") throw new WrapError("the key is wrapped under a passphrase", "other_factor");
      const output = await passkeyPrf({ ...factor.passkey, credentialId: described.credentialId, prfSalt: described.prfSalt });
      try {
        return await unwrapWithPrf(wrapped, output);
      } finally {
        output.fill(0);
      }
    }
  } catch (error) {
    throw error instanceof KeyserviceError ? error : passkeyError(error);
  }
  throw new TypeError("userFactor takes { passphrase } or { passkey: { credentialId } }");
}
var WRAP_VERSION = 1;
var KDF_ARGON2ID = 1;
var KDF_PRF = 2;
var PRF_SALT_LEN = 32;
var PRF_INFO = encoder.encode("keyservice-wrap v1 webauthn-prf");
var DEFAULT_ARGON2 = Object.freeze({ memoryKib: 65536, iterations: 3, parallelism: 1 });
var MINIMUM_ARGON2 = Object.freeze({ memoryKib: 19456, iterations: 2, parallelism: 1 });
var MAXIMUM_ARGON2 = Object.freeze({ memoryKib: 2 * 1024 * 1024, iterations: 64, parallelism: 16 });
var WrapError = class extends KeyserviceError {
  constructor(message, code, cause) {
    super(message, { code, cause });
    this.name = "WrapError";
  }
};
function passkeyError(cause) {
  if (cause instanceof KeyserviceError) return cause;
  if (cause?.name === "NotAllowedError") {
    return new WrapError("the passkey was not available, or the user did not confirm in time", "passkey_not_allowed", cause);
  }
  return new WrapError("the passkey could not be used", "passkey_failed", cause);
}
function within(params, low, high) {
  return ["memoryKib", "iterations", "parallelism"].every(
    (name) => Number.isInteger(params[name]) && params[name] >= low[name] && params[name] <= high[name]
  );
}
async function argon2Kek(passphrase, params, salt) {
  const { argon2idAsync: argon2idAsync2 } = await Promise.resolve().then(() => (init_argon2(), argon2_exports));
  const password = encoder.encode(passphrase.normalize("NFC"));
  try {
    return await argon2idAsync2(password, salt, {
      m: params.memoryKib,
      t: params.iterations,
      p: params.parallelism,
      dkLen: 32,
      version: 19
    });
  } finally {
    password.fill(0);
  }
}
async function prfKek(prfOutput) {
  const bytes = asBytes(prfOutput);
  if (bytes.length !== 32) throw new WrapError("a PRF output is 32 bytes", "malformed");
  const ikm = await subtle().importKey("raw", bytes, "HKDF", false, ["deriveBits"]);
  const bits = await subtle().deriveBits({ name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info: PRF_INFO }, ikm, 256);
  return new Uint8Array(bits);
}
async function sealWrapped(kek, header, nonce, key) {
  if (key.length === 0) throw new WrapError("an empty key", "malformed");
  const full = concat([header, nonce]);
  const aes = await subtle().importKey("raw", kek, "AES-GCM", false, ["encrypt"]);
  kek.fill(0);
  const sealed = await subtle().encrypt({ name: "AES-GCM", iv: nonce, additionalData: full }, aes, key);
  return concat([full, new Uint8Array(sealed)]);
}
async function openWrapped(kek, wrapped, headerLength) {
  const aes = await subtle().importKey("raw", kek, "AES-GCM", false, ["decrypt"]);
  kek.fill(0);
  const header = wrapped.slice(0, headerLength);
  try {
    const plain = await subtle().decrypt(
      { name: "AES-GCM", iv: header.slice(headerLength - 12), additionalData: header },
      aes,
      wrapped.slice(headerLength)
    );
    return new Uint8Array(plain);
  } catch {
    throw new WrapError("the passphrase or passkey does not open this key", "wrong_user_factor");
  }
}
function parseWrapped(wrapped) {
  const bytes = asBytes(wrapped);
  const tooShort = () => new WrapError("not a wrapped key: too short", "malformed");
  if (bytes.length < 2) throw tooShort();
  if (bytes[0] !== WRAP_VERSION) throw new WrapError("not a wrapped key: unknown format version", "malformed");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let described;
  let headerLength;
  if (bytes[1] === KDF_ARGON2ID) {
    if (bytes.length < 2 + 9 + 16) throw tooShort();
    const params = { memoryKib: view.getUint32(2), iterations: view.getUint32(6), parallelism: bytes[10] };
    const floor = { memoryKib: 8, iterations: 1, parallelism: 1 };
    if (!within(params, floor, MAXIMUM_ARGON2) || params.memoryKib < 8 * params.parallelism) {
      throw new WrapError("the wrapped key asks for an Argon2id cost outside what is allowed", "parameters");
    }
    described = { kdf: "argon2id", params, salt: bytes.slice(11, 27) };
    headerLength = 27 + 12;
  } else if (bytes[1] === KDF_PRF) {
    if (bytes.length < 2 + PRF_SALT_LEN + 2) throw tooShort();
    const length = view.getUint16(2 + PRF_SALT_LEN);
    if (length < 1 || length > 1023) throw new WrapError("not a wrapped key: a credential id is 1 to 1023 bytes", "malformed");
    const start = 2 + PRF_SALT_LEN + 2;
    if (bytes.length < start + length) throw tooShort();
    described = { kdf: "webauthn-prf", prfSalt: bytes.slice(2, 2 + PRF_SALT_LEN), credentialId: bytes.slice(start, start + length) };
    headerLength = start + length + 12;
  } else {
    throw new WrapError("not a wrapped key: unknown key derivation", "malformed");
  }
  if (bytes.length <= headerLength + 16) throw tooShort();
  return { bytes, described, headerLength };
}
function describeWrapped(wrapped) {
  const { described } = parseWrapped(wrapped);
  if (described.kdf === "argon2id") return { kdf: described.kdf, params: described.params };
  return described;
}
async function wrapWithPassphrase(key, passphrase, options = {}) {
  const params = options.params ?? DEFAULT_ARGON2;
  if (!within(params, MINIMUM_ARGON2, MAXIMUM_ARGON2)) {
    throw new WrapError("Argon2id parameters below the minimum (19 MiB, 2 passes, 1 lane) or above the maximum", "parameters");
  }
  const salt = options.salt ?? globalThis.crypto.getRandomValues(new Uint8Array(16));
  const nonce = options.nonce ?? globalThis.crypto.getRandomValues(new Uint8Array(12));
  const header = new Uint8Array(11);
  const view = new DataView(header.buffer);
  header[0] = WRAP_VERSION;
  header[1] = KDF_ARGON2ID;
  view.setUint32(2, params.memoryKib);
  view.setUint32(6, params.iterations);
  header[10] = params.parallelism;
  const kek = await argon2Kek(passphrase, params, salt);
  return sealWrapped(kek, concat([header, salt]), nonce, asBytes(key));
}
async function unwrapWithPassphrase(wrapped, passphrase) {
  const { bytes, described, headerLength } = parseWrapped(wrapped);
  if (described.kdf !== "argon2id") throw new WrapError("the key is wrapped under a passkey", "other_factor");
  const kek = await argon2Kek(passphrase, described.params, described.salt);
  return openWrapped(kek, bytes, headerLength);
}
async function wrapWithPrf(key, prfOutput, options) {
  const credentialId = asBytes(options.credentialId);
  const prfSalt = asBytes(options.prfSalt);
  if (credentialId.length < 1 || credentialId.length > 1023) throw new WrapError("a credential id is 1 to 1023 bytes", "malformed");
  if (prfSalt.length !== PRF_SALT_LEN) throw new WrapError("a PRF salt is 32 bytes", "malformed");
  const nonce = options.nonce ?? globalThis.crypto.getRandomValues(new Uint8Array(12));
  const length = new Uint8Array(2);
  new DataView(length.buffer).setUint16(0, credentialId.length);
  const header = concat([new Uint8Array([WRAP_VERSION, KDF_PRF]), prfSalt, length, credentialId]);
  return sealWrapped(await prfKek(prfOutput), header, nonce, asBytes(key));
}
async function unwrapWithPrf(wrapped, prfOutput) {
  const { bytes, described, headerLength } = parseWrapped(wrapped);
  if (described.kdf !== "webauthn-prf") throw new WrapError("the key is wrapped under a passphrase", "other_factor");
  return openWrapped(await prfKek(prfOutput), bytes, headerLength);
}
async function createPasskey({ userName, rpId, rpName }) {
  const credential = await navigator.credentials.create({
    publicKey: {
      rp: { name: rpName ?? "keyservice", ...rpId ? { id: rpId } : {} },
      user: { id: globalThis.crypto.getRandomValues(new Uint8Array(16)), name: userName, displayName: userName },
      challenge: globalThis.crypto.getRandomValues(new Uint8Array(32)),
      pubKeyCredParams: [{ type: "public-key", alg: -7 }, { type: "public-key", alg: -257 }],
      authenticatorSelection: { residentKey: "preferred", userVerification: "required" },
      extensions: { prf: {} }
    }
  }).catch((cause) => {
    throw passkeyError(cause);
  });
  if (!credential.getClientExtensionResults().prf?.enabled) {
    throw new WrapError("this authenticator cannot derive keys (no WebAuthn PRF)", "prf_unsupported");
  }
  return new Uint8Array(credential.rawId);
}
async function passkeyPrf({ credentialId, prfSalt, rpId }) {
  const assertion = await navigator.credentials.get({
    publicKey: {
      challenge: globalThis.crypto.getRandomValues(new Uint8Array(32)),
      allowCredentials: [{ type: "public-key", id: asBytes(credentialId) }],
      userVerification: "required",
      ...rpId ? { rpId } : {},
      extensions: { prf: { eval: { first: asBytes(prfSalt) } } }
    }
  }).catch((cause) => {
    throw passkeyError(cause);
  });
  const first = assertion.getClientExtensionResults().prf?.results?.first;
  if (!first) throw new WrapError("the authenticator gave no PRF output", "prf_unsupported");
  return new Uint8Array(first);
}
async function encrypt(key, plaintext) {
  const iv = globalThis.crypto.getRandomValues(new Uint8Array(12));
  const sealed = new Uint8Array(await subtle().encrypt({ name: "AES-GCM", iv }, key, asBytes(plaintext)));
  return concat([iv, sealed]);
}
async function decrypt(key, sealed) {
  const bytes = asBytes(sealed);
  const failed = (cause) => new KeyserviceError("the data does not open under this key: another key, or it was changed", { code: "decrypt_failed", cause });
  if (bytes.length < 12 + 16) throw failed(new RangeError("too short to be AES-GCM output"));
  const plain = await subtle().decrypt({ name: "AES-GCM", iv: bytes.slice(0, 12) }, key, bytes.slice(12)).catch((cause) => {
    throw failed(cause);
  });
  return new Uint8Array(plain);
}
var DB_NAME = "keyservice";
var STORE = "keys";
function openDb() {
  return new Promise((resolve, reject) => {
    if (!globalThis.indexedDB) {
      reject(new KeyserviceError("IndexedDB is not available here", { code: "indexeddb_unavailable" }));
      return;
    }
    const request = globalThis.indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}
async function withStore(mode, action) {
  const db = await openDb();
  try {
    return await new Promise((resolve, reject) => {
      const transaction = db.transaction(STORE, mode);
      const request = action(transaction.objectStore(STORE));
      transaction.oncomplete = () => resolve(request.result);
      transaction.onerror = () => reject(transaction.error);
      transaction.onabort = () => reject(transaction.error);
    });
  } finally {
    db.close();
  }
}
function storeKey(name, key) {
  if (key.extractable) throw new TypeError("store only non-extractable keys");
  return withStore("readwrite", (store) => store.put(key, name));
}
function loadKey(name) {
  return withStore("readonly", (store) => store.get(name));
}
function forgetKey(name) {
  return withStore("readwrite", (store) => store.delete(name));
}
export {
  DEFAULT_ARGON2,
  Keyservice,
  KeyserviceError,
  MAXIMUM_ARGON2,
  MINIMUM_ARGON2,
  RealService,
  Session,
  WRAPPED_KEY_TYPE,
  WrapError,
  X_DATE,
  countAccesses,
  createPasskey,
  decrypt,
  describeWrapped,
  encrypt,
  eraseNonce,
  escrowNewDataKey,
  fetchDataKey,
  forgetKey,
  getOrCreateDataKey,
  initTokenHash,
  loadKey,
  newNonce,
  passkeyPrf,
  ss1Authorization,
  ss1Hash,
  storeKey,
  unwrapWithPassphrase,
  unwrapWithPrf,
  wrapWithPassphrase,
  wrapWithPrf
};
