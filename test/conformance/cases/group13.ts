// Autobahn group 13, WebSocket Compression (different parameters): the JSON data set through
// seven permessage-deflate offers: the default, server_no_context_takeover, a server window of
// 8 and 15 bits, both together, and a list of three offers for the server to choose from
// (RFC 7692 sections 5, 7.1.1 and 7.1.2).
import type { DeflateOffer } from "../deflate.js";
import type { CaseDefinition } from "../judge.js";
import { compressionCase, MSG_SIZES } from "./compression.js";
import { testData } from "./testdata.js";

/** Autobahn's DEFLATE_PARAMS client offers, in order (13.1 to 13.7). */
export const OFFERS_13: DeflateOffer[][] = [
  [{}],
  [{ requestNoContextTakeover: true }],
  [{ requestMaxWindowBits: 8 }],
  [{ requestMaxWindowBits: 15 }],
  [{ requestNoContextTakeover: true, requestMaxWindowBits: 8 }],
  [{ requestNoContextTakeover: true, requestMaxWindowBits: 15 }],
  [
    { requestNoContextTakeover: true, requestMaxWindowBits: 8 },
    { requestNoContextTakeover: true },
    {},
  ],
];

export function group13(): CaseDefinition[] {
  const json = testData().json;
  return OFFERS_13.flatMap((offers, j) =>
    MSG_SIZES.map(([length, autoFragment], i) =>
      compressionCase(`13.${j + 1}.${i + 1}`, json, offers, length, autoFragment),
    ),
  );
}
