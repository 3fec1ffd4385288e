import type { Engine } from "./engine.js";
import { EngineError } from "./engine.js";
import type { EngineChannel, EngineWire, RemoteMethod } from "./remote.js";

/**
 * The other end of RemoteEngine (remote.ts): runs one engine per channel, made by `makeEngine`
 * when the remote side starts, answers its calls and sends its events back. The primary of
 * `switchboard serve --workers N` serves each worker this way, with in-memory engines on one
 * bus.
 */
export class EngineHost {
  private readonly engines = new Set<Engine>();

  constructor(private readonly makeEngine: (nodeId: string) => Engine) {}

  /**
   * Serves one remote engine over `channel`. Call the returned function when the channel is
   * gone (the worker exited): its engine closes, so its members leave every topic.
   */
  serve(channel: EngineChannel): () => Promise<void> {
    let engine: Engine | null = null;
    let gone = false;
    const reply = (id: number, value: unknown) => {
      if (!gone) channel.send({ sb: "engine", t: "reply", id, value });
    };
    const fail = (id: number, error: unknown) => {
      if (gone) return;
      if (error instanceof EngineError) {
        channel.send({ sb: "engine", t: "fail", id, code: error.code, message: error.message });
      } else {
        channel.send({
          sb: "engine",
          t: "fail",
          id,
          code: "ENGINE_REMOTE",
          message: String(error),
        });
      }
    };
    const call = async (method: RemoteMethod, args: unknown[]): Promise<unknown> => {
      if (method === "start") {
        if (engine !== null) {
          throw new EngineError("ENGINE_ALREADY_STARTED", "this channel's engine was started");
        }
        const made = this.makeEngine(String(args[0]));
        engine = made;
        this.engines.add(made);
        await made.start({
          message: (message) => {
            if (!gone) channel.send({ sb: "engine", t: "message", message });
          },
          presence: (change) => {
            if (!gone) channel.send({ sb: "engine", t: "presence", change });
          },
        });
        return undefined;
      }
      if (engine === null) throw new EngineError("ENGINE_NOT_STARTED", "the engine is not started");
      const target = engine as unknown as Record<RemoteMethod, (...values: unknown[]) => unknown>;
      const result = await target[method].apply(engine, args);
      if (method === "close") this.engines.delete(engine);
      return result;
    };
    channel.onMessage((wire: EngineWire) => {
      if (wire.t !== "call") return;
      call(wire.method, wire.args).then(
        (value) => reply(wire.id, value),
        (error: unknown) => fail(wire.id, error),
      );
    });
    return async () => {
      gone = true;
      if (engine !== null) {
        this.engines.delete(engine);
        await engine.close();
      }
    };
  }

  /** Closes every engine it runs. */
  async close(): Promise<void> {
    await Promise.all([...this.engines].map((engine) => engine.close()));
    this.engines.clear();
  }
}
