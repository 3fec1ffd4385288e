/**
 * The logging interface Switchboard writes to: the subset of pino's API it uses, so a pino
 * logger (or a child of one) can be passed straight in.
 */
export interface Logger {
  error(context: object, message: string): void;
  warn(context: object, message: string): void;
  info(context: object, message: string): void;
  debug(context: object, message: string): void;
}

const ignore = (): void => {};

/** Drops everything: the default for library use, where the application owns logging. */
export const silentLogger: Logger = { error: ignore, warn: ignore, info: ignore, debug: ignore };
