// The apiserver's protobuf wire (application/vnd.kubernetes.protobuf), read only as far as the
// operator needs: the envelope, a list's items and continuation, watch frames and Status (the
// objects' fields: wire-objects.ts). A field not read is skipped by its length, never decoded: a
// pod's 1.45 MB env value costs nothing to step over (as JSON the apiserver may write it as 8.7 MB
// that JSON.parse must read whole, ~45 ms of the shared event loop per change).

export const protobufType = 'application/vnd.kubernetes.protobuf';

const magic = Buffer.from([0x6b, 0x38, 0x73, 0x00]); // "k8s\0"

/** A message that is not the wire the apiserver writes. */
export class WireError extends Error {
  constructor(message: string) {
    super(`protobuf: ${message}`);
    this.name = 'WireError';
  }
}

/**
 * Each field of the message in buf[start, end): `visit(field, value, from, to, int32)`. For a
 * varint, `value` is its number as unsigned (exact to 2^53) and `int32` its low 32 bits as a
 * signed int32 (an int32 field: a negative one is written as 10 bytes); for a length-delimited
 * field, [from, to) is its bytes. Fixed-width fields are stepped over. Groups are refused (the
 * apiserver writes none).
 */
export function eachField(buf: Buffer, start: number, end: number, visit: (field: number, value: number, from: number, to: number, int32: number) => void): void {
  let i = start;
  let low = 0;
  const varint = (): number => {
    let n = 0;
    let mul = 1;
    low = 0;
    for (let k = 0; k < 10; k++) {
      if (i >= end) throw new WireError('a varint runs past its message');
      const b = buf[i++]!;
      n += (b & 0x7f) * mul;
      if (k < 5) low |= (b & 0x7f) << (7 * k);
      if (b < 0x80) return n;
      mul *= 128;
    }
    throw new WireError('a varint longer than 10 bytes');
  };
  while (i < end) {
    const key = varint();
    const field = Math.floor(key / 8);
    const type = key & 7;
    if (type === 0) {
      const value = varint();
      visit(field, value, 0, 0, low | 0);
      continue;
    }
    if (type !== 1 && type !== 2 && type !== 5) throw new WireError(`wire type ${type} of field ${field}`);
    const len = type === 2 ? varint() : type === 1 ? 8 : 4;
    const from = i;
    i += len;
    if (i > end) throw new WireError('a field runs past its message'); // before it is visited
    if (type === 2) visit(field, 0, from, i, 0);
  }
}

export const text = (buf: Buffer, from: number, to: number): string => buf.toString('utf8', from, to);

/** The object inside the envelope (magic, then runtime.Unknown's raw: field 2). */
export function unwrap(buf: Buffer, start = 0, end = buf.length): Buffer {
  if (end - start < magic.length || buf.compare(magic, 0, magic.length, start, start + magic.length) !== 0) throw new WireError('no k8s envelope');
  let raw: Buffer | undefined;
  eachField(buf, start + magic.length, end, (f, _v, from, to) => { if (f === 2) raw = buf.subarray(from, to); });
  if (!raw) throw new WireError('an envelope without an object');
  return raw;
}

export interface ListOf<T> { items: T[]; metadata: { resourceVersion?: string; continue?: string } }

/** A list (its ListMeta is field 1, its items field 2), each item decoded by `item`. */
export function decodeList<T>(msg: Buffer, item: (msg: Buffer) => T): ListOf<T> {
  const out: ListOf<T> = { items: [], metadata: {} };
  eachField(msg, 0, msg.length, (f, _v, from, to) => {
    if (f === 2) out.items.push(item(msg.subarray(from, to)));
    else if (f === 1) {
      eachField(msg, from, to, (g, _w, a, b) => {
        if (g === 2) out.metadata.resourceVersion = text(msg, a, b);
        else if (g === 3) out.metadata.continue = text(msg, a, b);
      });
    }
  });
  return out;
}

export interface StatusLike { kind: 'Status'; code?: number; reason?: string; message?: string }

/** A meta/v1 Status: message 3, reason 4, code 6. */
export function decodeStatus(msg: Buffer): StatusLike {
  const out: StatusLike = { kind: 'Status' };
  eachField(msg, 0, msg.length, (f, _v, from, to, int32) => {
    if (f === 3) out.message = text(msg, from, to);
    else if (f === 4) out.reason = text(msg, from, to);
    else if (f === 6) out.code = int32;
  });
  return out;
}

/** A watch event (type 1; object 2, a RawExtension whose raw, field 1, is an enveloped object). */
export function decodeWatchEvent<T>(frame: Buffer, object: (msg: Buffer) => T): { type: string; object: T | StatusLike } {
  let type = '';
  let raw: Buffer | undefined;
  eachField(frame, 0, frame.length, (f, _v, from, to) => {
    if (f === 1) type = text(frame, from, to);
    else if (f === 2) eachField(frame, from, to, (g, _w, a, b) => { if (g === 1) raw = frame.subarray(a, b); });
  });
  if (!raw) throw new WireError(`a ${type || 'typeless'} watch event without an object`);
  const msg = unwrap(raw);
  return { type, object: type === 'ERROR' ? decodeStatus(msg) : object(msg) };
}

/** Whether a Content-Type is the protobuf wire (also `;stream=watch`). */
export function isProtobuf(contentType: string | string[] | undefined): boolean {
  const t = Array.isArray(contentType) ? contentType[0] : contentType;
  return !!t && t.split(';')[0]!.trim().toLowerCase() === protobufType;
}
