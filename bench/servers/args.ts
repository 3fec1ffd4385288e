// Command line shared by the benchmark echo servers: `--port N [--deflate]`.
export interface ServerArgs {
  port: number;
  deflate: boolean;
}

export function parseServerArgs(argv: string[]): ServerArgs {
  let port = 0;
  let deflate = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--deflate") {
      deflate = true;
    } else if (arg === "--port") {
      port = Number(argv[++i]);
      if (!Number.isInteger(port) || port < 0 || port > 65535) {
        throw new Error(`bad --port: ${argv[i]}`);
      }
    } else {
      throw new Error(`unknown argument: ${arg}`);
    }
  }
  return { port, deflate };
}
