// The chart of a run: horizontal bars of Switchboard's figures relative to its peers' (main and
// worker mode against ws, and against uWebSockets.js where it was measured), one group per case,
// a vertical line at 1.0 (parity) and a marker at each target. A log scale when the ratios span
// more than 20x. Plain SVG, written by hand: 800 px wide, text as text.
import { formatRatio } from "./format.js";
import type { Report } from "./report.js";
import type { Ratio } from "./result.js";

const WIDTH = 800;
const LABEL_X = 16;
const PLOT_X0 = 200;
const PLOT_X1 = 690;
const BAR_H = 12;
const ROW_H = 17;
const GROUP_HEAD = 20;
const GROUP_GAP = 8;
const FONT = "system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif";
const COLORS: Record<string, string> = {
  "switchboard main": "#2b6cb0",
  "switchboard worker": "#63b3ed",
};
const OTHER_COLOR = "#718096";
/** A white outline under text, so that grid and parity lines do not run through it. */
const HALO = ' stroke="#ffffff" stroke-width="3" paint-order="stroke"';
const TARGET_COLOR = "#c53030";

function esc(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

interface Scale {
  log: boolean;
  min: number;
  max: number;
  x(value: number): number;
  ticks: number[];
}

function scaleOf(values: number[]): Scale {
  const finite = values.filter((v) => Number.isFinite(v) && v > 0);
  const lo = Math.min(1, ...finite);
  const hi = Math.max(1, ...finite);
  const log = hi / lo > 20;
  if (log) {
    // From the 1-2-5 step at or below the smallest value to the one at or above the largest.
    const steps = (v: number) => {
      const decade = 10 ** Math.floor(Math.log10(v));
      return [1, 2, 5, 10].map((m) => m * decade);
    };
    const min = Math.max(...steps(lo / 1.15).filter((t) => t <= lo / 1.15));
    const max = Math.min(...steps(hi * 1.15).filter((t) => t >= hi * 1.15));
    const ticks: number[] = [];
    for (let decade = 10 ** Math.floor(Math.log10(min)); decade <= max; decade *= 10) {
      for (const m of [1, 2, 5]) {
        const t = decade * m;
        if (t >= min * 0.9999 && t <= max * 1.0001) ticks.push(t);
      }
    }
    const span = Math.log10(max) - Math.log10(min);
    const x = (v: number) =>
      PLOT_X0 + ((Math.log10(Math.max(v, min)) - Math.log10(min)) / span) * (PLOT_X1 - PLOT_X0);
    return { log, min, max, x, ticks };
  }
  // Linear from 0: a step of 1, 2, 5 x 10^k giving at most 10 ticks.
  const top = hi * 1.1;
  const step = [0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 20, 50].find((s) => top / s <= 10) ?? 100;
  const max = Math.ceil(top / step) * step;
  const ticks: number[] = [];
  for (let t = 0; t <= max + step / 1000; t += step) ticks.push(Math.round(t * 1000) / 1000);
  const x = (v: number) => PLOT_X0 + (Math.min(Math.max(v, 0), max) / max) * (PLOT_X1 - PLOT_X0);
  return { log, min: 0, max, x, ticks };
}

function patternId(name: string): string {
  return `striped-${name.replace(/\W+/g, "-")}`;
}

function tickText(v: number): string {
  if (v >= 1) return `${Number(v.toPrecision(3))}`;
  return `${Number(v.toPrecision(2))}`;
}

/** The SVG chart of a report's ratios (a report without any gets a line saying so). */
export function chart(report: Report): string {
  const groups: Array<{ title: string; bars: Ratio[] }> = [];
  for (const s of report.suites) {
    for (const c of s.cases) {
      const bars = s.ratios.filter((r) => r.chart && r.caseId === c.id);
      if (bars.length === 0) continue;
      const lower = !c.metric.higherIsBetter;
      groups.push({
        title: `${s.title}: ${c.label}${lower ? ` (${c.metric.name}, lower is better)` : ` (${c.metric.name})`}`,
        bars,
      });
    }
  }
  const all = groups.flatMap((g) => g.bars);
  const scale = scaleOf([...all.map((r) => r.ratio), ...all.flatMap((r) => r.target ?? [])]);
  const m = report.machine;
  const headH = report.quick ? 98 : 82;
  const bodyH = groups.reduce((h, g) => h + GROUP_HEAD + g.bars.length * ROW_H + GROUP_GAP, 0);
  const axisY = headH + bodyH;
  const height = axisY + 84;
  const grey = (y: number, text: string) =>
    `<text x="${LABEL_X}" y="${y}" fill="#4a5568">${esc(text)}</text>`;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" ` +
      `viewBox="0 0 ${WIDTH} ${height}" font-family="${FONT}" font-size="12" role="img">`,
    `<title>${esc(
      `Switchboard relative to ws and uWebSockets.js: ${all.length} ratios, ` +
        `${report.date.slice(0, 10)}, ${report.command}`,
    )}</title>`,
    "<defs>",
    ...Object.entries({ ...COLORS, other: OTHER_COLOR }).map(
      ([name, color]) =>
        `<pattern id="${patternId(name)}" width="6" height="6" patternUnits="userSpaceOnUse" ` +
        `patternTransform="rotate(45)"><rect width="6" height="6" fill="${color}" fill-opacity="0.3"/>` +
        `<rect width="3" height="6" fill="${color}"/></pattern>`,
    ),
    "</defs>",
    `<rect width="${WIDTH}" height="${height}" fill="#ffffff"/>`,
    `<text x="${LABEL_X}" y="24" font-size="16" font-weight="600">Switchboard relative to ws and uWebSockets.js</text>`,
    grey(43, `${m.cpu}, ${m.cores} CPUs, ${m.memory_gib} GiB, ${m.kernel}; ${report.placement}`),
    grey(
      59,
      `Node ${m.node}, ws ${m.ws}${m.uwebsockets ? `, uwebsockets ${m.uwebsockets}` : ""}, ` +
        `git ${m.git}; ${report.date.slice(0, 16).replace("T", " ")} UTC; ` +
        `${scale.log ? "log scale" : "linear scale"}`,
    ),
    grey(75, `$ ${report.command}`),
  );
  if (report.quick) {
    out.push(
      `<text x="${LABEL_X}" y="91" fill="${TARGET_COLOR}">A --quick smoke run: one short round, ` +
        "fewer cases. Not figures to quote.</text>",
    );
  }
  if (groups.length === 0) {
    out.push(`<text x="${LABEL_X}" y="${headH + 20}">No ratio was measured.</text>`, "</svg>");
    return `${out.join("\n")}\n`;
  }
  // Grid and ticks.
  for (const t of scale.ticks) {
    const x = scale.x(t).toFixed(1);
    out.push(
      `<line x1="${x}" y1="${headH}" x2="${x}" y2="${axisY}" stroke="#e2e8f0" stroke-width="1"/>`,
      `<text x="${x}" y="${axisY + 16}" text-anchor="middle" fill="#4a5568">${tickText(t)}x</text>`,
    );
  }
  // Parity: a dashed line at 1.0 through each group's bars (not through its title).
  const one = scale.x(1);
  let y = headH;
  for (const g of groups) {
    out.push(`<text x="${LABEL_X}" y="${y + 14}" font-weight="600"${HALO}>${esc(g.title)}</text>`);
    y += GROUP_HEAD;
    out.push(
      `<line x1="${one.toFixed(1)}" y1="${y - 2}" x2="${one.toFixed(1)}" ` +
        `y2="${y + g.bars.length * ROW_H + 2}" stroke="#1a202c" stroke-width="1.5" ` +
        'stroke-dasharray="4 3"/>',
    );
    for (const r of g.bars) {
      const color = COLORS[r.ours] ?? OTHER_COLOR;
      const ours = r.ours.replace(/^switchboard /, "");
      const label = `${ours} / ${r.peer}`;
      const x0 = scale.log ? scale.x(scale.min) : scale.x(0);
      const x1 = Number.isFinite(r.ratio) ? scale.x(r.ratio) : x0;
      const barY = y + (ROW_H - BAR_H) / 2;
      // A verdict that is unclear, or a figure that is not the server's: a lighter bar.
      const doubtful = r.verdict === "unclear" || (r.note ?? "").includes("generator-bound");
      const fill = doubtful ? `url(#${patternId(COLORS[r.ours] ? r.ours : "other")})` : color;
      out.push(
        `<text x="${PLOT_X0 - 8}" y="${y + 12.5}" text-anchor="end">${esc(label)}</text>`,
        `<rect x="${x0.toFixed(1)}" y="${barY.toFixed(1)}" width="${Math.max(1, x1 - x0).toFixed(1)}" ` +
          `height="${BAR_H}" fill="${fill}">` +
          `<title>${esc(`${r.caseLabel}: ${r.ours} / ${r.peer} = ${formatRatio(r.ratio)}`)}</title></rect>`,
      );
      if (r.target !== undefined) {
        const tx = scale.x(r.target).toFixed(1);
        out.push(
          `<line x1="${tx}" y1="${(barY - 3).toFixed(1)}" x2="${tx}" y2="${(barY + BAR_H + 3).toFixed(1)}" ` +
            `stroke="${TARGET_COLOR}" stroke-width="2.5"/>`,
        );
      }
      const mark =
        r.verdict === "met"
          ? " \u2713"
          : r.verdict === "missed"
            ? " \u2717"
            : r.verdict === "unclear"
              ? " ?"
              : "";
      const text = `${Number.isFinite(r.ratio) ? `${formatRatio(r.ratio, r.target)}x` : "no figure"}${mark}`;
      let valueX = Math.max(x1, r.target === undefined ? 0 : scale.x(r.target)) + 6;
      // Not across the parity line: past it.
      if (valueX < one + 4 && valueX + 7 * text.length > one) valueX = one + 6;
      out.push(`<text x="${valueX.toFixed(1)}" y="${y + 12.5}"${HALO}>${text}</text>`);
      y += ROW_H;
    }
    y += GROUP_GAP;
  }
  out.push(`<line x1="${PLOT_X0}" y1="${axisY}" x2="${PLOT_X1}" y2="${axisY}" stroke="#a0aec0"/>`);
  // Legend.
  const ly = axisY + 38;
  const legend: string[] = [
    `<rect x="${LABEL_X}" y="${ly - 10}" width="14" height="${BAR_H}" fill="${COLORS["switchboard main"]}"/>`,
    `<text x="${LABEL_X + 20}" y="${ly}">main mode (service on the I/O thread)</text>`,
    `<rect x="${LABEL_X + 255}" y="${ly - 10}" width="14" height="${BAR_H}" fill="${COLORS["switchboard worker"]}"/>`,
    `<text x="${LABEL_X + 275}" y="${ly}">worker mode</text>`,
    `<line x1="${LABEL_X + 375}" y1="${ly - 12}" x2="${LABEL_X + 375}" y2="${ly + 3}" stroke="${TARGET_COLOR}" stroke-width="2.5"/>`,
    `<text x="${LABEL_X + 383}" y="${ly}">target (\u2713 met, \u2717 missed, ? unclear)</text>`,
    `<line x1="${LABEL_X + 620}" y1="${ly - 12}" x2="${LABEL_X + 620}" y2="${ly + 3}" stroke="#1a202c" stroke-width="1.5" stroke-dasharray="4 3"/>`,
    `<text x="${LABEL_X + 628}" y="${ly}">1.0 = parity</text>`,
    grey(
      ly + 20,
      "Each bar: Switchboard's figure / the peer's, measured in the same run with the same load generator.",
    ),
    grey(
      ly + 36,
      "Striped: unclear (a server held back by other load or steal time, or a generator-bound figure).",
    ),
  ];
  out.push(...legend, "</svg>");
  return `${out.join("\n")}\n`;
}
