// Number formatting and plain-text tables for the console and the markdown report.

const integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

export function formatRate(n: number): string {
  return Number.isFinite(n) ? integer.format(n) : "-";
}

export function formatPct(n: number): string {
  return Number.isFinite(n) ? `${n.toFixed(0)}%` : "-";
}

/** A ratio to two decimals; to three when that tells it from a target it is close to. */
export function formatRatio(n: number, target?: number): string {
  if (!Number.isFinite(n)) return "-";
  const close = target !== undefined && Math.abs(n - target) < 0.01 && n !== target;
  return n.toFixed(close ? 3 : 2);
}

/** Milliseconds to three significant digits (0.0812, 1.23, 12.3, 123); "-" for none (-1). */
export function formatMs(n: number): string {
  if (!Number.isFinite(n) || n < 0) return "-";
  return n >= 100 ? n.toFixed(0) : n.toPrecision(3);
}

/** A figure with a fixed number of decimals; "-" for none. */
export function formatFixed(n: number, digits: number): string {
  return Number.isFinite(n) ? n.toFixed(digits) : "-";
}

/** "32 B", "4 KiB". */
export function sizeLabel(size: number): string {
  if (size >= 1024 && size % 1024 === 0) return `${size / 1024} KiB`;
  return `${size} B`;
}

/** A plain-text table: the first row is the header, the first column left-aligned. */
export function table(rows: string[][], leftColumns = 1): string {
  const widths = rows[0].map((_, col) => Math.max(...rows.map((row) => row[col].length)));
  const line = (row: string[]) =>
    row.map((cell, col) =>
      col < leftColumns ? cell.padEnd(widths[col]) : cell.padStart(widths[col]),
    );
  const rule = widths.map((w) => "-".repeat(w));
  return [line(rows[0]), rule, ...rows.slice(1).map(line)]
    .map((r) => r.join("  ").trimEnd())
    .join("\n");
}

/**
 * A markdown table: the first row is the header; `align` has one letter per column, "l" or "r"
 * (missing letters: "r").
 */
export function markdownTable(rows: string[][], align = "l"): string {
  const cellText = (cell: string) => cell.replace(/\|/g, "\\|");
  const rule = rows[0].map((_, col) => ((align[col] ?? "r") === "l" ? ":--" : "--:"));
  return [rows[0], rule, ...rows.slice(1)]
    .map((row) => `| ${row.map(cellText).join(" | ")} |`)
    .join("\n");
}
