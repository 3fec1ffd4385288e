import type { ServiceMount, ServiceMountOptions } from "../server/service-mount.js";

/** What every framework integration takes: the services and how they run, plus the dispatch bound. */
export interface FrameworkServicesOptions extends ServiceMountOptions {
  /**
   * Milliseconds the application's middleware may take to answer an upgrade or let it through
   * to the services (default 10 s); past it the client gets 503.
   */
  dispatchTimeoutMs?: number;
}

/** What every framework integration returns besides its framework's handler. */
export interface MountedServices {
  /** The services: hosts, topics, connections (for tests and metrics). */
  readonly mount: ServiceMount;
  /**
   * Closes the services' clients with 1001, runs stop hooks and ends runtimes. Call it before
   * closing the server, which otherwise waits for the WebSocket connections.
   */
  close(): Promise<void>;
}
