/** node:util's messages are long and name positionals; say what went wrong in a few words. */
export function describeParseError(error: unknown): string {
  const { code, message } = error as { code?: string; message: string };
  const option = /'([^']+)'/.exec(message)?.[1] ?? "";
  const long = /--[\w-]+/.exec(option)?.[0] ?? option;
  if (code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") return `unknown option ${option}`;
  if (message.includes("argument missing")) return `${long} needs a value`;
  if (message.includes("ambiguous")) {
    return `${long} needs a value (to pass one starting with "-", write ${long}=VALUE)`;
  }
  if (message.includes("does not take an argument")) return `${long} does not take a value`;
  return message.split("\n")[0];
}
