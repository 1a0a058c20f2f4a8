// Display list → canvas. The only place (with widget.ts) that touches canvas APIs.
import type { Item, Theme } from "./figure";

export interface Images {
  cells: CanvasImageSource | null;
  colorbar: CanvasImageSource | null;
  /** Where the cells image goes when it is not the figure's plot rectangle (the plot rounded to device pixels). */
  cellsRect?: { x: number; y: number; w: number; h: number };
}

const ALIGN: Record<string, CanvasTextAlign> = { left: "left", right: "right", center: "center" };

export function hatchPattern(ctx: CanvasRenderingContext2D, theme: Theme): CanvasPattern | string {
  const tile = document.createElement("canvas");
  tile.width = 6;
  tile.height = 6;
  const t = tile.getContext("2d");
  if (!t) return theme.hatchBackground;
  t.fillStyle = theme.hatchBackground;
  t.fillRect(0, 0, 6, 6);
  t.strokeStyle = theme.hatchLine;
  t.lineWidth = 1;
  t.beginPath();
  // Three segments so the diagonal continues seamlessly across tile edges.
  t.moveTo(-1, 1);
  t.lineTo(1, -1);
  t.moveTo(0, 6);
  t.lineTo(6, 0);
  t.moveTo(5, 7);
  t.lineTo(7, 5);
  t.stroke();
  return ctx.createPattern(tile, "repeat") ?? theme.hatchBackground;
}

export function drawItems(ctx: CanvasRenderingContext2D, items: Item[], images: Images, theme: Theme): void {
  let hatch: CanvasPattern | string | null = null;
  for (const it of items) {
    switch (it.kind) {
      case "fill":
        ctx.fillStyle = it.color;
        ctx.fillRect(it.x, it.y, it.w, it.h);
        break;
      case "stroke":
        ctx.strokeStyle = it.color;
        ctx.lineWidth = it.width;
        ctx.strokeRect(it.x + 0.5, it.y + 0.5, it.w - 1, it.h - 1);
        break;
      case "line":
        ctx.strokeStyle = it.color;
        ctx.lineWidth = it.width;
        ctx.beginPath();
        ctx.moveTo(it.x1, it.y1);
        ctx.lineTo(it.x2, it.y2);
        ctx.stroke();
        break;
      case "hatch":
        hatch ??= hatchPattern(ctx, theme);
        ctx.fillStyle = hatch;
        ctx.fillRect(it.x, it.y, it.w, it.h);
        break;
      case "image": {
        const img = images[it.src];
        if (!img) break;
        // One pixel per cell, scaled without smoothing: crisp cells at any zoom, no per-cell drawing.
        ctx.imageSmoothingEnabled = false;
        const r = it.src === "cells" && images.cellsRect ? images.cellsRect : it;
        ctx.drawImage(img, r.x, r.y, r.w, r.h);
        break;
      }
      case "text":
        ctx.font = it.font;
        ctx.fillStyle = it.color;
        ctx.textAlign = ALIGN[it.align];
        ctx.textBaseline = it.baseline;
        if (it.angle) {
          ctx.save();
          ctx.translate(it.x, it.y);
          ctx.rotate((it.angle * Math.PI) / 180);
          ctx.fillText(it.text, 0, 0);
          ctx.restore();
        } else {
          ctx.fillText(it.text, it.x, it.y);
        }
        break;
    }
  }
}
