// Display list → standalone SVG document. Labels are user data: every text and attribute is escaped.
import type { Item } from "./figure";

export function escapeXml(s: string): string {
  return s
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&apos;")
    .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]/g, ""); // not allowed in XML 1.0
}

const n = (x: number) => String(Math.round(x * 100) / 100);

/** Split "bold 14px family" into SVG font attributes. */
function fontAttrs(font: string): string {
  const m = /^(?:(italic)\s+)?(?:(bold)\s+)?(\d+(?:\.\d+)?)px\s+(.*)$/.exec(font);
  if (!m) return `font-size="11"`;
  let a = `font-size="${m[3]}" font-family="${escapeXml(m[4])}"`;
  if (m[1]) a += ` font-style="italic"`;
  if (m[2]) a += ` font-weight="bold"`;
  return a;
}

const ANCHOR = { left: "start", right: "end", center: "middle" } as const;
const BASELINE = { top: "hanging", middle: "central", bottom: "text-after-edge", alphabetic: "alphabetic" } as const;

export interface SvgImages {
  cells: string; // data: URL of the 1 px/cell image
  colorbar: string; // data: URL of the 1 × 256 colour-bar image
}

export function toSvg(
  items: Item[],
  width: number,
  height: number,
  images: SvgImages,
  hatch: { background: string; line: string },
): string {
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" ` +
      `width="${n(width)}" height="${n(height)}" viewBox="0 0 ${n(width)} ${n(height)}">`,
  );
  out.push(
    `<defs><pattern id="hw-hatch" patternUnits="userSpaceOnUse" width="6" height="6">` +
      `<rect width="6" height="6" fill="${escapeXml(hatch.background)}"/>` +
      `<path d="M-1,1 l2,-2 M0,6 l6,-6 M5,7 l2,-2" stroke="${escapeXml(hatch.line)}" stroke-width="1"/>` +
      `</pattern></defs>`,
  );
  for (const it of items) {
    switch (it.kind) {
      case "fill":
        out.push(`<rect x="${n(it.x)}" y="${n(it.y)}" width="${n(it.w)}" height="${n(it.h)}" fill="${escapeXml(it.color)}"/>`);
        break;
      case "stroke":
        out.push(
          `<rect x="${n(it.x + 0.5)}" y="${n(it.y + 0.5)}" width="${n(it.w - 1)}" height="${n(it.h - 1)}" ` +
            `fill="none" stroke="${escapeXml(it.color)}" stroke-width="${it.width}"/>`,
        );
        break;
      case "line":
        out.push(
          `<line x1="${n(it.x1)}" y1="${n(it.y1)}" x2="${n(it.x2)}" y2="${n(it.y2)}" ` +
            `stroke="${escapeXml(it.color)}" stroke-width="${it.width}"/>`,
        );
        break;
      case "hatch":
        out.push(`<rect x="${n(it.x)}" y="${n(it.y)}" width="${n(it.w)}" height="${n(it.h)}" fill="url(#hw-hatch)"/>`);
        break;
      case "image":
        // pixelated: one image pixel per cell must stay a crisp block when scaled up. xlink:href (not only
        // SVG 2 href) so older SVG tools (librsvg, Inkscape) show the cells too; stored once, it is the bulk.
        out.push(
          `<image x="${n(it.x)}" y="${n(it.y)}" width="${n(it.w)}" height="${n(it.h)}" preserveAspectRatio="none" ` +
            `style="image-rendering:pixelated;image-rendering:crisp-edges" ` +
            `xlink:href="${escapeXml(images[it.src])}"/>`,
        );
        break;
      case "text": {
        const rot = it.angle ? ` transform="rotate(${it.angle} ${n(it.x)} ${n(it.y)})"` : "";
        out.push(
          `<text x="${n(it.x)}" y="${n(it.y)}" ${fontAttrs(it.font)} fill="${escapeXml(it.color)}" ` +
            `text-anchor="${ANCHOR[it.align]}" dominant-baseline="${BASELINE[it.baseline]}"${rot}>` +
            `${escapeXml(it.text)}</text>`,
        );
        break;
      }
    }
  }
  out.push("</svg>");
  return out.join("\n");
}
