// Text widths for the layout. The first measureText calls in a page are slow (each one shapes its string), and a
// 1000-row matrix has hundreds of candidate labels: labels of printable ASCII are summed from per-character
// widths measured once per font, other text is measured whole. Both are cached and shared by every view in a
// document, so a second heatmap (or a resize) measures nothing. Summing ignores kerning (a fraction of a pixel
// per pair), which only moves margins that are padded anyway; the text itself is drawn by the canvas.
import type { Measure } from "./figure";

export type RawMeasure = (text: string, font: string) => number;

const FIRST = 0x20;
const LAST = 0x7e;
const MAX_WHOLE = 20_000;

function isPrintableAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < FIRST || c > LAST) return false;
  }
  return true;
}

export class TextMeasurer {
  /** Calls of the underlying measure function (tests check the caching with it). */
  rawCalls = 0;
  private readonly chars = new Map<string, Float64Array>();
  private readonly whole = new Map<string, number>();

  constructor(private readonly raw: RawMeasure) {}

  readonly measure: Measure = (text, font) => {
    if (isPrintableAscii(text)) return this.asciiWidth(text, font);
    const key = `${font}\u0000${text}`;
    let w = this.whole.get(key);
    if (w === undefined) {
      w = this.call(text, font);
      if (this.whole.size >= MAX_WHOLE) this.whole.clear();
      this.whole.set(key, w);
    }
    return w;
  };

  /** Forget every width (web fonts loaded, theme changed the font family). */
  clear(): void {
    this.chars.clear();
    this.whole.clear();
  }

  private asciiWidth(text: string, font: string): number {
    let table = this.chars.get(font);
    if (!table) {
      table = new Float64Array(LAST - FIRST + 1).fill(NaN);
      this.chars.set(font, table);
    }
    let w = 0;
    for (let i = 0; i < text.length; i++) {
      const k = text.charCodeAt(i) - FIRST;
      let cw = table[k];
      if (cw !== cw) cw = table[k] = this.call(text[i], font);
      w += cw;
    }
    return w;
  }

  private call(text: string, font: string): number {
    this.rawCalls++;
    return this.raw(text, font);
  }
}

const perDocument = new WeakMap<Document, TextMeasurer>();

/** The measurer shared by every view in `doc`, measuring with a canvas that is never shown. */
export function documentMeasurer(doc: Document): TextMeasurer {
  let m = perDocument.get(doc);
  if (!m) {
    const ctx = doc.createElement("canvas").getContext("2d");
    let current = "";
    m = new TextMeasurer((text, font) => {
      if (!ctx) return text.length * 6;
      if (font !== current) ctx.font = current = font;
      return ctx.measureText(text).width;
    });
    perDocument.set(doc, m);
  }
  return m;
}
