/**
 * The familiar Needle-in-a-Haystack picture as SVG: context length across, needle depth down, each cell
 * coloured from red (0) through yellow to green (100) with its value written in it, as the reference's
 * `visualize.py` draws it (colours #F0496E, #EBB839, #0CD79F). Pure string building; no dependencies.
 * @module
 */

export interface HeatmapOptions {
  title: string;
  /** Column labels (context lengths). */
  xLabels: readonly (string | number)[];
  /** Row labels (depths, top to bottom). */
  yLabels: readonly (string | number)[];
  /** values[row][column], in [0, 100]; NaN draws a grey, unlabelled cell. */
  values: readonly (readonly number[])[];
  xTitle?: string;
  yTitle?: string;
  /** Cell size in pixels (default 44 × 28). */
  cellWidth?: number;
  cellHeight?: number;
}

const STOPS: readonly [number, number, number][] = [[0xf0, 0x49, 0x6e], [0xeb, 0xb8, 0x39], [0x0c, 0xd7, 0x9f]];

/** Red → yellow → green for a value in [0, 100] (clamped). */
export function heatColor(value: number): string {
  if (!Number.isFinite(value)) return '#d0d0d0';
  const t = Math.min(1, Math.max(0, value / 100)) * (STOPS.length - 1);
  const i = Math.min(STOPS.length - 2, Math.floor(t));
  const f = t - i;
  const c = STOPS[i].map((a, k) => Math.round(a + (STOPS[i + 1][k] - a) * f));
  return `#${c.map((v) => v.toString(16).padStart(2, '0')).join('')}`;
}

export function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

function formatCell(v: number): string {
  if (Math.abs(v - Math.round(v)) < 0.05) return String(Math.round(v));
  return v.toFixed(v >= 10 ? 0 : 1);
}

/** Renders the heatmap as a standalone SVG document. */
export function heatmapSvg(o: HeatmapOptions): string {
  const cw = o.cellWidth ?? 44;
  const ch = o.cellHeight ?? 28;
  const rows = o.yLabels.length;
  const cols = o.xLabels.length;
  if (o.values.length !== rows || o.values.some((r) => r.length !== cols)) {
    throw new RangeError(`heatmap values must be ${rows} rows of ${cols}`);
  }
  const top = 44;
  const legendGap = 20;
  const legendWidth = 14;
  const gridW = cols * cw;
  const gridH = rows * ch;
  // Wide enough for the title too (about 8 px per character at 14 px bold).
  const plotWidth = 72 + gridW + legendGap + legendWidth + 40;
  const width = Math.max(plotWidth, Math.ceil(o.title.length * 8) + 24);
  const left = 72 + Math.floor((width - plotWidth) / 2);
  const height = top + gridH + 52;
  const out: string[] = [];
  out.push(`<?xml version="1.0" encoding="UTF-8"?>`);
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif">`);
  out.push(`<title>${escapeXml(o.title)}</title>`);
  out.push(`<rect class="background" x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`);
  out.push(`<text x="${width / 2}" y="22" font-size="14" font-weight="bold" text-anchor="middle">${escapeXml(o.title)}</text>`);
  out.push('<g class="cells">');
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const v = o.values[r][c];
      const x = left + c * cw;
      const y = top + r * ch;
      out.push(`<rect class="cell" x="${x}" y="${y}" width="${cw}" height="${ch}" fill="${heatColor(v)}" stroke="#ffffff" stroke-width="1"><title>${escapeXml(`${o.xLabels[c]} × ${o.yLabels[r]}: ${Number.isFinite(v) ? v.toFixed(1) : 'n/a'}`)}</title></rect>`);
      if (Number.isFinite(v)) {
        out.push(`<text x="${x + cw / 2}" y="${y + ch / 2 + 4}" font-size="10" text-anchor="middle" fill="#1a1a1a">${formatCell(v)}</text>`);
      }
    }
  }
  out.push('</g>');
  // Axes: tick labels, then the titles.
  out.push('<g class="axes" font-size="10">');
  for (let c = 0; c < cols; c++) {
    out.push(`<text x="${left + c * cw + cw / 2}" y="${top + gridH + 14}" text-anchor="middle">${escapeXml(String(o.xLabels[c]))}</text>`);
  }
  for (let r = 0; r < rows; r++) {
    out.push(`<text x="${left - 6}" y="${top + r * ch + ch / 2 + 4}" text-anchor="end">${escapeXml(String(o.yLabels[r]))}</text>`);
  }
  out.push(`<text x="${left + gridW / 2}" y="${top + gridH + 36}" font-size="12" text-anchor="middle">${escapeXml(o.xTitle ?? 'Context length (tokens)')}</text>`);
  out.push(`<text x="${left - 56}" y="${top + gridH / 2}" font-size="12" text-anchor="middle" transform="rotate(-90 ${left - 56} ${top + gridH / 2})">${escapeXml(o.yTitle ?? 'Depth (%)')}</text>`);
  out.push('</g>');
  // Colour scale: a vertical gradient from 100 (top) to 0 (bottom).
  const lx = left + gridW + legendGap;
  out.push('<defs><linearGradient id="scale" x1="0" y1="1" x2="0" y2="0">');
  STOPS.forEach((_, i) => out.push(`<stop offset="${i / (STOPS.length - 1)}" stop-color="${heatColor((100 * i) / (STOPS.length - 1))}"/>`));
  out.push('</linearGradient></defs>');
  out.push(`<rect class="legend" x="${lx}" y="${top}" width="${legendWidth}" height="${gridH}" fill="url(#scale)"/>`);
  out.push(`<text x="${lx + legendWidth + 4}" y="${top + 8}" font-size="10">100</text>`);
  out.push(`<text x="${lx + legendWidth + 4}" y="${top + gridH}" font-size="10">0</text>`);
  out.push('</svg>');
  return out.join('\n') + '\n';
}
