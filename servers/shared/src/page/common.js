"use strict";
// Helpers both pages use: number formatting, percentiles from histogram buckets, sparklines.
const $ = (id) => document.getElementById(id);

function fmt(n, digits) {
  if (n === null || n === undefined || !isFinite(n)) return "–";
  return n.toLocaleString("en-US", { maximumFractionDigits: digits ?? 0 });
}

// The p-th percentile (0..1) of answers counted per bucket, interpolated inside the bucket.
function percentile(counts, bounds, p) {
  const total = counts.reduce((a, b) => a + b, 0);
  if (total === 0) return null;
  let seen = 0;
  for (let i = 0; i < counts.length; i++) {
    if (counts[i] > 0 && seen + counts[i] >= p * total) {
      if (i >= bounds.length) return bounds[bounds.length - 1];  // slower than the last bound
      const lo = i === 0 ? 0 : bounds[i - 1];
      return lo + (bounds[i] - lo) * ((p * total - seen) / counts[i]);
    }
    seen += counts[i];
  }
  return null;
}

function spark(values, cls, label, unit) {
  const finite = values.filter((v) => v !== null && isFinite(v));
  const max = Math.max(1e-9, ...finite);
  const n = Math.max(values.length, 2);
  const pts = values.map((v, i) => v === null ? null :
      `${(i / (n - 1) * 300).toFixed(1)},${(38 - v / max * 36).toFixed(1)}`)
    .filter(Boolean).join(" ");
  const last = values.length ? values[values.length - 1] : null;
  return `<div class="spark ${cls}">${label} <b>${fmt(last, unit === "ms" ? 2 : 1)}</b>${unit}
    <svg viewBox="0 0 300 40" preserveAspectRatio="none" aria-hidden="true"><polyline points="${pts}"/></svg></div>`;
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

