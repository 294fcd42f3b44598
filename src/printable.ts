// Text someone else wrote (a team's spec, an issuer's or the apiserver's answer) made safe to put
// in a message or on a terminal: control characters written out as \uXXXX, never sent raw (ESC and
// BEL start terminal escape sequences that set a window title, the clipboard, …).

/** C0 controls, DEL, C1 controls, and the bidirectional overrides that reorder what is shown. */
const controls = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
/** The same but newline and tab, which a terminal's text may hold. */
const controlsButLines = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

const escape = (c: string) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;

/** One line of text (a condition's message, a problem): every control character escaped. */
export function oneLine(s: string): string {
  return s.replace(controls, escape);
}

/** Text for a terminal: control characters escaped but newline and tab. */
export function printable(s: string): string {
  return s.replace(controlsButLines, escape);
}
