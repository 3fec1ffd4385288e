// Stand-ins for the five files Autobahn's compression cases stream from (a JSON document, a
// 512x512 greyscale bitmap, German prose, an HTML page, a PDF). The originals are not
// vendored; these are generated from a fixed seed with the same kind of redundancy, so the
// deflate code sees text-like, image-like and mostly-incompressible input. Each is larger than
// the biggest message (128 KiB), so no message wraps around onto itself.

/** Deterministic 32-bit PRNG (mulberry32), so every run streams the same octets. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function pick<T>(rand: () => number, items: readonly T[]): T {
  return items[Math.floor(rand() * items.length)];
}

const WORDS = [
  "alpha",
  "beta",
  "gamma",
  "delta",
  "node",
  "socket",
  "frame",
  "message",
  "server",
  "client",
  "deflate",
  "window",
  "context",
  "payload",
  "length",
  "stream",
  "buffer",
  "event",
  "close",
  "open",
  "ping",
  "pong",
  "text",
  "binary",
  "fragment",
  "opcode",
  "mask",
  "header",
  "status",
];

/** ~190 KB of ASCII JSON: an array of records with repeated keys and varied values. */
function jsonData(): Buffer {
  const rand = prng(0x1a2b3c4d);
  const records: unknown[] = [];
  let size = 0;
  for (let i = 0; size < 194_000; i++) {
    const record = {
      id: i,
      guid: Math.floor(rand() * 2 ** 32)
        .toString(16)
        .padStart(8, "0"),
      active: rand() < 0.5,
      balance: Math.round(rand() * 1_000_000) / 100,
      name: `${pick(rand, WORDS)} ${pick(rand, WORDS)}`,
      tags: [pick(rand, WORDS), pick(rand, WORDS), pick(rand, WORDS)],
      location: {
        lat: Math.round((rand() * 180 - 90) * 1e6) / 1e6,
        lon: Math.round((rand() * 360 - 180) * 1e6) / 1e6,
      },
      about: Array.from({ length: 8 + Math.floor(rand() * 12) }, () => pick(rand, WORDS)).join(" "),
    };
    records.push(record);
    size += JSON.stringify(record).length + 1;
  }
  return Buffer.from(JSON.stringify(records, null, 1), "utf8");
}

/** A 512x512 8-bit greyscale BMP: smooth shapes with sensor-like noise (263 KB). */
function bitmapData(): Buffer {
  const rand = prng(0x5eed0001);
  const width = 512;
  const height = 512;
  const palette = 256 * 4;
  const header = Buffer.alloc(54);
  const offset = 54 + palette;
  header.write("BM", 0, "latin1");
  header.writeUInt32LE(offset + width * height, 2);
  header.writeUInt32LE(offset, 10);
  header.writeUInt32LE(40, 14);
  header.writeInt32LE(width, 18);
  header.writeInt32LE(height, 22);
  header.writeUInt16LE(1, 26);
  header.writeUInt16LE(8, 28);
  header.writeUInt32LE(width * height, 34);
  header.writeUInt32LE(256, 46);
  const colours = Buffer.alloc(palette);
  for (let i = 0; i < 256; i++) colours.fill(i, i * 4, i * 4 + 3);
  const pixels = Buffer.alloc(width * height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const v =
        128 +
        60 * Math.sin(x / 37) * Math.cos(y / 53) +
        40 * Math.sin((x + y) / 91) +
        (rand() - 0.5) * 24;
      pixels[y * width + x] = Math.max(0, Math.min(255, Math.round(v)));
    }
  }
  return Buffer.concat([header, colours, pixels]);
}

const GERMAN = [
  "Habe",
  "nun",
  "ach",
  "Philosophie",
  "Juristerei",
  "und",
  "Medizin",
  "leider",
  "auch",
  "Theologie",
  "durchaus",
  "studiert",
  "mit",
  "heißem",
  "Bemühn",
  "Da",
  "steh",
  "ich",
  "armer",
  "Tor",
  "bin",
  "so",
  "klug",
  "als",
  "wie",
  "zuvor",
  "Heiße",
  "Magister",
  "Doktor",
  "gar",
  "zieh",
  "schon",
  "an",
  "die",
  "zehen",
  "Jahr",
  "Herauf",
  "herab",
  "quer",
  "krumm",
  "meine",
  "Schüler",
  "der",
  "Nase",
  "herum",
  "sehe",
  "daß",
  "wir",
  "nichts",
  "wissen",
  "können",
  "Das",
  "will",
  "mir",
  "schier",
  "Herz",
  "verbrennen",
  "Zwar",
  "bin",
  "gescheiter",
  "Laffen",
  "Geist",
  "Welt",
  "Natur",
  "Kräfte",
  "Mephistopheles",
  "Faust",
  "Gretchen",
  "Wagner",
  "Nacht",
  "Zimmer",
];

/** ~220 KB of German-looking verse in UTF-8 (sent as binary, as Autobahn does). */
function proseData(): Buffer {
  const rand = prng(0xfa057001);
  const lines: string[] = [];
  let size = 0;
  while (size < 222_000) {
    const speaker =
      rand() < 0.1 ? `\n${pick(rand, ["FAUST", "MEPHISTOPHELES", "WAGNER", "MARGARETE"])}:\n` : "";
    const words = Array.from({ length: 4 + Math.floor(rand() * 6) }, () => pick(rand, GERMAN));
    const line = `${speaker}${words.join(" ")}${pick(rand, [",", ".", "!", ";", ""])}`;
    lines.push(line);
    size += Buffer.byteLength(line) + 1;
  }
  return Buffer.from(lines.join("\n"), "utf8");
}

/** ~200 KB of ASCII HTML: nested tables and links with repetitive markup. */
function htmlData(): Buffer {
  const rand = prng(0x4a7e1001);
  const parts = [
    '<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8"><title>Report</title></head>\n<body>\n',
  ];
  let size = parts[0].length;
  for (let i = 0; size < 200_000; i++) {
    const row =
      `<tr class="${pick(rand, ["odd", "even"])}"><td><a href="/item/${i}">${pick(rand, WORDS)}</a></td>` +
      `<td>${Math.floor(rand() * 100000)}</td><td><span style="color:#${Math.floor(
        rand() * 0xffffff,
      )
        .toString(16)
        .padStart(6, "0")}">${pick(rand, WORDS)} ${pick(rand, WORDS)}</span></td></tr>\n`;
    parts.push(
      i % 40 === 0 ? `<table>\n<tr><th>Name</th><th>Value</th><th>Notes</th></tr>\n${row}` : row,
    );
    if (i % 40 === 39) parts.push("</table>\n");
    size += row.length + 60;
  }
  parts.push("</body>\n</html>\n");
  return Buffer.from(parts.join(""), "utf8");
}

/** ~1 MB PDF-like file: text object syntax between streams of random (incompressible) octets. */
function pdfData(): Buffer {
  const rand = prng(0x0bdf0001);
  const parts: Buffer[] = [Buffer.from("%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", "latin1")];
  let size = 0;
  for (let obj = 1; size < 1_040_000; obj++) {
    const streamLength = 2000 + Math.floor(rand() * 14000);
    const head = Buffer.from(
      `${obj} 0 obj\n<< /Length ${streamLength} /Filter /FlateDecode /Type /XObject /Subtype /Image >>\nstream\n`,
      "latin1",
    );
    const body = Buffer.alloc(streamLength);
    for (let i = 0; i < streamLength; i++) body[i] = Math.floor(rand() * 256);
    const tail = Buffer.from("\nendstream\nendobj\n", "latin1");
    parts.push(head, body, tail);
    size += head.length + body.length + tail.length;
  }
  parts.push(Buffer.from("trailer\n<< /Root 1 0 R >>\n%%EOF\n", "latin1"));
  return Buffer.concat(parts);
}

export interface TestData {
  description: string;
  /** Autobahn's flag: whether messages cut from this file go as binary or text. */
  binary: boolean;
  data: Buffer;
}

let cache: Record<"json" | "bitmap" | "prose" | "html" | "pdf", TestData> | null = null;

/** The five data sets in Autobahn's 12.1-12.5 order. */
export function testData() {
  cache ??= {
    json: { description: "Large JSON data file", binary: false, data: jsonData() },
    bitmap: { description: "Picture, bitmap 512x512 greyscale", binary: true, data: bitmapData() },
    prose: { description: "Human readable text (German verse)", binary: true, data: proseData() },
    html: { description: "Large HTML file", binary: false, data: htmlData() },
    pdf: { description: "A larger PDF", binary: true, data: pdfData() },
  };
  return cache;
}
