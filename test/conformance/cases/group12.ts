// Autobahn group 12, WebSocket Compression (different payloads): permessage-deflate with the
// default offer, over five kinds of data and eighteen message sizes / fragmentations
// (RFC 7692 section 7, context takeover in both directions unless the server declines it).
import type { CaseDefinition } from "../judge.js";
import { compressionCase, MSG_SIZES } from "./compression.js";
import { testData } from "./testdata.js";

export function group12(): CaseDefinition[] {
  const data = testData();
  const sets = [data.json, data.bitmap, data.prose, data.html, data.pdf];
  return sets.flatMap((td, j) =>
    MSG_SIZES.map(([length, autoFragment], i) =>
      compressionCase(`12.${j + 1}.${i + 1}`, td, [{}], length, autoFragment),
    ),
  );
}
