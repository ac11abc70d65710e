/**
 * The report's figures as Vega-Lite specs, from plain rows: accuracy against speed (the FastKV paper's main
 * figure), latency and throughput against prompt length with the arithmetic bounds dashed, and NIAH heatmaps.
 * Colours follow the method (one colour per method in every figure, `full` first), so that a reader matches
 * methods across pictures; budgets are written next to the points.
 * @module
 */
import type { TopLevelSpec } from 'vega-lite';
import { CHART_FONT } from './render.js';

/** Tableau 10, then 10 lighter tones for reports with more than 10 methods. */
const PALETTE = ['#4c78a8', '#f58518', '#e45756', '#72b7b2', '#54a24b', '#eeca3b', '#b279a2', '#ff9da6', '#9d755d', '#bab0ac',
  '#9ecae9', '#ffbf79', '#ff9d98', '#88d27a', '#83bcb6', '#f2cf5b', '#d6a5c9', '#fcbfd2', '#d8b5a5', '#79706e'];

/** The colour scale of the `method` field: methods in the given order, colours from {@link PALETTE}. */
export function methodColors(methods: readonly string[]): { domain: string[]; range: string[] } {
  return { domain: [...methods], range: methods.map((_, i) => PALETTE[i % PALETTE.length]) };
}

/** Title and caption lines of a figure. */
export interface Caption { title: string; lines: string[] }

const CONFIG = {
  font: CHART_FONT,
  background: '#ffffff',
  title: { fontSize: 15, subtitleFontSize: 11, subtitleColor: '#444444', anchor: 'start', offset: 12 },
  axis: { labelFontSize: 11, titleFontSize: 12, gridColor: '#e6e6e6' },
  legend: { labelFontSize: 11, titleFontSize: 12, labelLimit: 260 },
  header: { labelFontSize: 12, titleFontSize: 12 },
  view: { stroke: '#bbbbbb' },
} as const;

function title(c: Caption) {
  return { text: c.title, subtitle: c.lines };
}

export interface AccuracyRow {
  series: string;
  method: string;
  /** The budget as written next to the point ("0.1", "B=512"); empty for full. */
  budget: string;
  accuracy: number;
  ttftSeconds: number;
  decodeTokensPerSecond: number | null;
}

/**
 * Accuracy against time to first token and against decode tokens/s, side by side: one point per method and
 * budget, the points of a method joined.
 */
export function accuracySpeedChart(rows: readonly AccuracyRow[], metric: string, tokens: number, methods: readonly string[], caption: Caption): TopLevelSpec {
  const panel = (field: 'ttftSeconds' | 'decodeTokensPerSecond', axisTitle: string) => ({
    width: 340,
    height: 280,
    transform: [{ filter: `isValid(datum.${field})` }],
    encoding: {
      x: { field, type: 'quantitative', title: axisTitle, scale: { zero: false, nice: true } },
      y: { field: 'accuracy', type: 'quantitative', title: metric, scale: { zero: false, nice: true } },
      color: { field: 'method', type: 'nominal', title: 'method', scale: methodColors(methods) },
    },
    layer: [
      { mark: { type: 'line', strokeWidth: 1.5, opacity: 0.7 }, encoding: { detail: { field: 'method' }, order: { field } } },
      {
        mark: { type: 'point', filled: true, size: 80, opacity: 1 },
        encoding: {
          shape: { field: 'method', type: 'nominal', title: 'method', scale: { domain: [...methods] } },
          tooltip: [{ field: 'series', title: 'configuration' }, { field: 'accuracy', format: '.1f' }, { field, format: '.3~g' }],
        },
      },
      { mark: { type: 'text', align: 'left', dx: 7, dy: -7, fontSize: 10, color: '#333333' }, encoding: { text: { field: 'budget' } } },
    ],
  });
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: title(caption),
    data: { values: rows.map((r) => ({ ...r })) },
    hconcat: [
      panel('ttftSeconds', `Time to first token at ${tokens} tokens (s)`),
      panel('decodeTokensPerSecond', `Decode throughput at ${tokens} tokens (tokens/s)`),
    ],
    resolve: { scale: { y: 'shared' } },
    config: CONFIG,
  } as TopLevelSpec;
}

export interface LengthRow {
  /** The facet: which bench run (its budget, or its file). */
  run: string;
  series: string;
  method: string;
  tokens: number;
  value: number;
  /** `measured`, or `arithmetic bound` for the dashed line. */
  line: string;
}

/**
 * A quantity against prompt length (log2 axis), one line per configuration, measured solid and bound dashed,
 * one panel per bench run.
 */
export function lengthChart(rows: readonly LengthRow[], yTitle: string, methods: readonly string[], runs: readonly string[], caption: Caption): TopLevelSpec {
  const lengths = [...new Set(rows.map((r) => r.tokens))].sort((a, b) => a - b);
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: title(caption),
    data: { values: rows.map((r) => ({ ...r })) },
    facet: { column: { field: 'run', type: 'nominal', title: null, sort: [...runs], header: { labelFontWeight: 'bold' } } },
    spec: {
      width: runs.length > 2 ? 260 : 340,
      height: 260,
      encoding: {
        x: { field: 'tokens', type: 'quantitative', title: 'Prompt length (tokens)', scale: { type: 'log', base: 2 }, axis: { values: lengths, format: 'd' } },
        y: { field: 'value', type: 'quantitative', title: yTitle, scale: { zero: true } },
        color: { field: 'method', type: 'nominal', title: 'method', scale: methodColors(methods), legend: { symbolType: 'stroke', symbolStrokeWidth: 3 } },
        strokeDash: {
          field: 'line', type: 'nominal', title: 'line', scale: { domain: ['measured', 'arithmetic bound'], range: [[1, 0], [5, 4]] },
          legend: { symbolType: 'stroke', symbolStrokeColor: '#555555', symbolStrokeWidth: 2 },
        },
        detail: { field: 'series' },
      },
      layer: [
        { mark: { type: 'line', strokeWidth: 2 } },
        {
          mark: { type: 'point', filled: true, size: 40 },
          transform: [{ filter: "datum.line === 'measured'" }],
          encoding: { strokeDash: { value: [1, 0] }, tooltip: [{ field: 'series', title: 'configuration' }, { field: 'tokens' }, { field: 'value', format: '.3~g' }] },
        },
      ],
    },
    resolve: { scale: { y: 'shared' } },
    config: CONFIG,
  } as TopLevelSpec;
}

export interface HeatmapRow {
  series: string;
  tokens: number;
  depth: number;
  /** Percent; null draws an empty cell. */
  value: number | null;
}

/** NIAH heatmaps, one panel per configuration: context length across, needle depth down, red (0) to green (100). */
export function niahHeatmapChart(rows: readonly HeatmapRow[], metric: string, series: readonly string[], caption: Caption): TopLevelSpec {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: title(caption),
    data: { values: rows.map((r) => ({ ...r })) },
    facet: { field: 'series', type: 'nominal', title: null, sort: [...series], header: { labelFontWeight: 'bold' } },
    columns: Math.min(3, series.length),
    spec: {
      width: { step: 44 },
      height: { step: 26 },
      encoding: {
        x: { field: 'tokens', type: 'ordinal', title: 'Context length (tokens)', sort: 'ascending', axis: { labelAngle: 0 } },
        y: { field: 'depth', type: 'ordinal', title: 'Needle depth (%)', sort: 'ascending' },
      },
      layer: [
        {
          mark: { type: 'rect', stroke: '#ffffff', strokeWidth: 1 },
          encoding: {
            // The reference's visualize.py colours: #F0496E at 0, #EBB839 at 50, #0CD79F at 100.
            color: { field: 'value', type: 'quantitative', title: metric, scale: { domain: [0, 50, 100], range: ['#f0496e', '#ebb839', '#0cd79f'] } },
            tooltip: [{ field: 'series', title: 'configuration' }, { field: 'tokens' }, { field: 'depth' }, { field: 'value', format: '.1f' }],
          },
        },
        { mark: { type: 'text', fontSize: 10, color: '#1a1a1a' }, encoding: { text: { field: 'value', type: 'quantitative', format: '.0f' } } },
      ],
    },
    config: CONFIG,
  } as TopLevelSpec;
}
