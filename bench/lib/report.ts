// The report of a whole run: everything as JSON, a markdown page people can read (the machine
// and the command at the top, one table per suite, the targets), and the chart of the ratios.
import { formatMs, formatPct, formatRate, formatRatio, markdownTable } from "./format.js";
import { type Machine, machineLine } from "./machine.js";
import type { Figure, Flag, Ratio, SharedOptions, SuiteId, SuiteResult } from "./result.js";
import { SERVER_MODE_TEXT, type ServerMode } from "./server.js";

export interface Report {
  /** ISO date of the start. */
  date: string;
  elapsed_s: number;
  /** The command that produced it, as it would be typed. */
  command: string;
  argv: string[];
  quick: boolean;
  machine: Machine;
  placement: string;
  /** How the servers ran: compiled with tsc, with plain node, or through tsx (--tsx). */
  server_mode: ServerMode;
  /** The compiled servers' build: where, whether this run compiled them, how long it took. */
  server_build: { dir: string; rebuilt: boolean; ms: number } | null;
  /** % of one core other processes used just before the run. */
  background_load_pct: number | null;
  options: { shared: SharedOptions; suites: Partial<Record<SuiteId, object>> };
  suites: SuiteResult[];
  /** Suites that were selected and did not produce a result, and why. */
  skipped: Array<{ suite: SuiteId; why: string }>;
  /** Every ratio that has a target, across suites. */
  targets: Ratio[];
  notices: string[];
}

export const FLAG_TEXT: Record<Flag, string> = {
  "generator-saturated":
    "the load generator used over 80% of its core and may have been the limit: the figure is a lower bound, not the server's",
  "server-not-busy":
    "the server (its process, or its core with the kernel's network work) was busy under 85% of the time: something else limited it",
  disturbed: "in some runs other processes used over 20% of a core: the figure is noisy",
  steal: "in some runs the hypervisor took over 10% of a core away (steal time)",
  unsettled: "the server's memory had not settled when it was read",
  errors: "some runs failed (see the warnings); the figure is over the others",
};

/** "32 B x 16 in flight: switchboard main / ws". */
export function ratioLabel(r: Ratio): string {
  return `${r.caseLabel}: ${r.ours} / ${r.peer}`;
}

export function targetText(r: Ratio): string {
  return r.target === undefined ? "-" : `${r.higherIsBetter ? ">=" : "<="} ${r.target.toFixed(2)}`;
}

function suiteTitle(report: Report, id: SuiteId): string {
  return report.suites.find((s) => s.id === id)?.title ?? id;
}

/** A figure as the report shows it: a generator-bound one as a lower bound. */
function figureText(f: Figure, digits: number): string {
  if (!Number.isFinite(f.value)) return "error";
  const text = digits > 0 ? f.value.toFixed(digits) : formatRate(f.value);
  return f.flags.includes("generator-saturated") ? `>= ${text}` : text;
}

export function targetsTable(report: Report): string {
  const rows = [["suite", "target", "measured", "per CPU-s", "verdict", "note"]];
  for (const r of report.targets) {
    rows.push([
      suiteTitle(report, r.suite),
      `${ratioLabel(r)} ${targetText(r)}`,
      formatRatio(r.ratio, r.target),
      formatRatio(r.perCpuRatio, r.target),
      r.verdict,
      r.note ?? "",
    ]);
  }
  return markdownTable(rows, "llrrll");
}

function suiteSection(s: SuiteResult): string {
  const lines = [`## ${s.title}`, "", s.description, ""];
  const lowerIsBetter = s.cases.some((c) => !c.metric.higherIsBetter);
  const digits = lowerIsBetter ? 2 : 0;
  const latency = s.cases.some((c) => c.figures.some((f) => Number.isFinite(f.p50Ms)));
  const header = ["case", "server", s.cases[0]?.metric.name ?? "figure"];
  if (!lowerIsBetter) header.push("per CPU-s");
  if (latency) header.push("p50 ms", "p99 ms", "p99.9 ms");
  header.push("server CPU", "generator CPU", "flags");
  const rows = [header];
  for (const c of s.cases) {
    for (const f of c.figures) {
      const row = [c.label, f.server, figureText(f, digits)];
      if (!lowerIsBetter) row.push(formatRate(f.perServerCpuS));
      if (latency) row.push(formatMs(f.p50Ms), formatMs(f.p99Ms), formatMs(f.p999Ms));
      row.push(formatPct(f.serverCpuPct), formatPct(f.generatorCpuPct), f.flags.join(", "));
      rows.push(row);
    }
  }
  lines.push(markdownTable(rows, `ll${"r".repeat(header.length - 3)}l`), "");
  if (s.ratios.length > 0) {
    const ratioRows = [
      ["ratio", "measured", ...(lowerIsBetter ? [] : ["per CPU-s"]), "target", "verdict"],
    ];
    for (const r of s.ratios) {
      ratioRows.push([
        ratioLabel(r),
        formatRatio(r.ratio, r.target),
        ...(lowerIsBetter ? [] : [formatRatio(r.perCpuRatio, r.target)]),
        targetText(r),
        r.verdict === "-" ? "" : r.verdict,
      ]);
    }
    lines.push(markdownTable(ratioRows, `l${"r".repeat(ratioRows[0].length - 2)}l`), "");
  }
  for (const notice of s.notices) lines.push(`- notice: ${notice}`);
  for (const warning of s.warnings) lines.push(`- warning: ${warning}`);
  if (s.notices.length + s.warnings.length > 0) lines.push("");
  return lines.join("\n");
}

/** The markdown report; the chart and docs/benchmarks.md as paths relative to where it goes. */
export function markdown(report: Report, links: { chart: string; docs: string }): string {
  const m = report.machine;
  const date = `${report.date.slice(0, 16).replace("T", " ")} UTC`;
  const lines = ["# Switchboard benchmarks", ""];
  if (report.quick) {
    lines.push(
      "> **A `--quick` run**: one short round per case on fewer cases, a smoke run of the whole " +
        "suite. Read the format from it, not the figures.",
      "",
    );
  }
  lines.push(
    `- **Machine:** ${machineLine(m)}`,
    `- **Placement:** ${report.placement}`,
    `- **Servers:** ${SERVER_MODE_TEXT[report.server_mode]}`,
    `- **Command:** \`${report.command}\``,
    `- **Date:** ${date}, ${Math.round(report.elapsed_s)} s`,
  );
  if (report.background_load_pct !== null) {
    lines.push(
      `- **Other load before the run:** ${formatPct(report.background_load_pct)} of a core`,
    );
  }
  lines.push(
    "",
    "Every figure is the median of the rounds; every ratio divides two figures measured in the " +
      "same run, on the same machine, with the same load generator. How it is measured and how " +
      `to read it: [docs/benchmarks.md](${links.docs}).`,
    "",
    `![Switchboard's figures relative to ws and uWebSockets.js](${links.chart})`,
    "",
    "## Targets",
    "",
  );
  lines.push(report.targets.length > 0 ? targetsTable(report) : "No target was measured.", "");
  for (const skipped of report.skipped)
    lines.push(`- **${skipped.suite} not measured:** ${skipped.why}`);
  if (report.skipped.length > 0) lines.push("");
  for (const notice of report.notices) lines.push(`- notice: ${notice}`);
  if (report.notices.length > 0) lines.push("");
  for (const s of report.suites) lines.push(suiteSection(s));
  lines.push("## Flags", "");
  for (const [flag, text] of Object.entries(FLAG_TEXT)) lines.push(`- **${flag}**: ${text}.`);
  lines.push("");
  return lines.join("\n");
}
