// Protobuf messages as the apiserver writes them (field numbers as in k8s.io/api's generated.proto),
// for unit tests of what reads them: a Pod with the fields the operator reads and others around
// them, lists, Status and watch frames.
export function varint(n: number): Buffer {
  const out: number[] = [];
  while (n >= 128) { out.push((n % 128) | 128); n = Math.floor(n / 128); }
  out.push(n);
  return Buffer.from(out);
}
/** An int32 field as the apiserver writes it: a negative one as 10 bytes (two's complement). */
export function int32(field: number, n: number): Buffer {
  let v = BigInt.asUintN(64, BigInt(n));
  const out: number[] = [];
  while (v >= 128n) { out.push(Number(v & 127n) | 128); v >>= 7n; }
  out.push(Number(v));
  return Buffer.concat([varint(field * 8), Buffer.from(out)]);
}
export const bytes = (field: number, b: Buffer | string) => { const v = Buffer.from(b); return Buffer.concat([varint(field * 8 + 2), varint(v.length), v]); };
export const num = (field: number, n: number) => Buffer.concat([varint(field * 8), varint(n)]);
export const msg = (...parts: Buffer[]) => Buffer.concat(parts);
export const envelope = (kind: string, raw: Buffer) => msg(Buffer.from('k8s\0', 'latin1'), bytes(1, msg(bytes(1, 'v1'), bytes(2, kind))), bytes(2, raw));

export interface PodSpec { name: string; ns?: string; uid?: string; rv?: string; deleted?: number; hostNetwork?: boolean; phase?: string; ips?: string[]; pad?: number }
export function pod(p: PodSpec): Buffer {
  const meta = msg(bytes(1, p.name), bytes(2, ''), ...(p.ns !== undefined ? [bytes(3, p.ns)] : []), ...(p.uid ? [bytes(5, p.uid)] : []),
    ...(p.rv ? [bytes(6, p.rv)] : []), num(7, 3), bytes(8, msg(num(1, 1_700_000_000), num(2, 0))),
    ...(p.deleted ? [bytes(9, msg(num(1, p.deleted)))] : []), bytes(11, msg(bytes(1, 'app'), bytes(2, 'x'))),
    bytes(12, msg(bytes(1, 'note'), bytes(2, '<'.repeat(p.pad ?? 10)))));
  // a container with an env value (field 2 of PodSpec: containers), and fields around the one read
  const spec = msg(bytes(2, msg(bytes(1, 'c'), bytes(7, msg(bytes(1, 'PAD'), bytes(2, '<'.repeat(p.pad ?? 10)))))), bytes(10, 'node-1'),
    num(11, p.hostNetwork ? 1 : 0), num(12, 1));
  const podStatus = msg(bytes(1, p.phase ?? 'Running'), bytes(2, msg(bytes(1, 'Ready'), bytes(2, 'True'))), bytes(5, '10.0.0.1'),
    bytes(6, p.ips?.[0] ?? ''), ...(p.ips ?? []).map((ip) => bytes(12, msg(bytes(1, ip)))), Buffer.from([0x49, 1, 2, 3, 4, 5, 6, 7, 8])); // a fixed64 field 9
  return msg(bytes(1, meta), bytes(2, spec), bytes(3, podStatus));
}
export const podList = (items: Buffer[], rv: string, cont = '') => msg(bytes(1, msg(bytes(1, ''), bytes(2, rv), bytes(3, cont))), ...items.map((i) => bytes(2, i)));
export const status = (code: number, reason: string, message: string) => msg(bytes(1, msg()), bytes(2, 'Failure'), bytes(3, message), bytes(4, reason), int32(6, code));
export const event = (type: string, object: Buffer) => { const e = msg(bytes(1, type), bytes(2, bytes(1, object))); const len = Buffer.alloc(4); len.writeUInt32BE(e.length); return msg(len, e); };
