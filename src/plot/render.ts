/**
 * Vega-Lite specs to SVG (vega's headless renderer, no browser and no canvas) and SVG to PNG (resvg, a Rust SVG
 * renderer shipped as prebuilt binaries inside its npm packages), with Open Sans from the `open-sans-fonts`
 * package so that a PNG's text looks the same on every machine, whatever fonts it has.
 * @module
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import type { TopLevelSpec } from 'vega-lite';

/** The font every chart asks for, and the fallbacks a browser viewing the SVG uses when it lacks it. */
export const CHART_FONT = 'Open Sans, Helvetica, Arial, sans-serif';
/** PNG pixels per SVG pixel. */
export const PNG_SCALE = 2;

/** Renders a Vega-Lite spec as a standalone SVG document. */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  // Loaded here, not at the top: only `fastkv report` needs them, and they take a while to load.
  const [vega, vegaLite] = await Promise.all([import('vega'), import('vega-lite')]);
  const view = new vega.View(vega.parse(vegaLite.compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

function fontFiles(): string[] {
  const dir = path.dirname(createRequire(import.meta.url).resolve('open-sans-fonts/package.json'));
  return ['Regular/OpenSans-Regular.ttf', 'Bold/OpenSans-Bold.ttf', 'Italic/OpenSans-Italic.ttf'].map((f) => path.join(dir, 'open-sans', f));
}

/** Renders an SVG document as PNG at {@link PNG_SCALE}× its size, on white. */
export async function svgToPng(svg: string): Promise<Buffer> {
  const { Resvg } = await import('@resvg/resvg-js');
  const resvg = new Resvg(svg, {
    fitTo: { mode: 'zoom', value: PNG_SCALE },
    background: '#ffffff',
    font: { loadSystemFonts: false, fontFiles: fontFiles(), defaultFontFamily: 'Open Sans', sansSerifFamily: 'Open Sans' },
  });
  return resvg.render().asPng();
}
