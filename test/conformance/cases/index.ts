// Every case, in Autobahn's order.
import type { CaseDefinition } from "../judge.js";
import { GROUP_1 } from "./group1.js";
import { GROUP_2 } from "./group2.js";
import { GROUP_3 } from "./group3.js";
import { GROUP_4 } from "./group4.js";
import { GROUP_5 } from "./group5.js";
import { GROUP_6 } from "./group6.js";
import { GROUP_7 } from "./group7.js";
import { GROUP_9 } from "./group9.js";
import { GROUP_10 } from "./group10.js";
import { group12 } from "./group12.js";
import { group13 } from "./group13.js";

export function allCases(): CaseDefinition[] {
  return [
    ...GROUP_1,
    ...GROUP_2,
    ...GROUP_3,
    ...GROUP_4,
    ...GROUP_5,
    ...GROUP_6,
    ...GROUP_7,
    ...GROUP_9,
    ...GROUP_10,
    ...group12(),
    ...group13(),
  ];
}
