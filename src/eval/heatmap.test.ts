import { test } from 'node:test';
import assert from 'node:assert/strict';
import { escapeXml, heatColor, heatmapSvg } from './heatmap.js';

/** Checks that tags nest and balance (a small XML well-formedness check); returns the element names in order. */
function parseTags(svg: string): string[] {
  const body = svg.replace(/^<\?xml[^>]*\?>\s*/, '');
  const stack: string[] = [];
  const names: string[] = [];
  for (const m of body.matchAll(/<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>/g)) {
    const [, close, name, , selfClose] = m;
    if (close) {
      assert.equal(stack.pop(), name, `unbalanced </${name}>`);
    } else {
      names.push(name);
      if (!selfClose) stack.push(name);
    }
  }
  assert.deepEqual(stack, [], 'unclosed tags');
  // No stray markup characters outside tags.
  assert.doesNotMatch(body.replace(/<[^>]*>/g, ''), /[<>]/);
  return names;
}

test('heatmapSvg: well-formed, one rect per cell, labels and title', () => {
  const values = [[100, 50, 0], [NaN, 12.5, 99.99]]; // 12.5 is written 13, 99.99 is 100
  const svg = heatmapSvg({ title: 'NIAH <fastkv> & co', xLabels: [1024, 2048, 4096], yLabels: ['0', '100'], values });
  const names = parseTags(svg);
  assert.equal(names[0], 'svg');
  assert.equal((svg.match(/<rect class="cell"/g) ?? []).length, 6);
  assert.ok(svg.includes('NIAH &lt;fastkv&gt; &amp; co'));
  for (const label of ['1024', '2048', '4096', 'Depth (%)', 'Context length (tokens)', '>13<', '>100<']) assert.ok(svg.includes(label), label);
  assert.throws(() => heatmapSvg({ title: 't', xLabels: [1], yLabels: [1, 2], values: [[1]] }), /2 rows of 1/);
});

test('heatColor: red at 0, yellow at 50, green at 100, grey for missing', () => {
  assert.equal(heatColor(0), '#f0496e');
  assert.equal(heatColor(50), '#ebb839');
  assert.equal(heatColor(100), '#0cd79f');
  assert.equal(heatColor(150), '#0cd79f');
  assert.equal(heatColor(NaN), '#d0d0d0');
  assert.equal(escapeXml(`a<b>"c"&'d'`), 'a&lt;b&gt;&quot;c&quot;&amp;&apos;d&apos;');
});
