/**
 * Server-wide topics on the I/O thread: who is subscribed to what, both ways, and fan-out of a
 * published message to every subscriber. Any service may publish to any topic.
 */

/** A subscriber: one client connection. */
export interface Subscriber {
  readonly id: number;
  send(payload: Uint8Array, binary: boolean): void;
}

interface Membership {
  silent: boolean;
}

export class LocalTopics {
  private readonly subscribers = new Map<string, Map<Subscriber, Membership>>();
  private readonly topicsOf = new Map<Subscriber, Set<string>>();

  subscribe(subscriber: Subscriber, topic: string, silent: boolean): void {
    let members = this.subscribers.get(topic);
    if (members === undefined) {
      members = new Map();
      this.subscribers.set(topic, members);
    }
    members.set(subscriber, { silent });
    let topics = this.topicsOf.get(subscriber);
    if (topics === undefined) {
      topics = new Set();
      this.topicsOf.set(subscriber, topics);
    }
    topics.add(topic);
  }

  unsubscribe(subscriber: Subscriber, topic: string): void {
    const members = this.subscribers.get(topic);
    if (members?.delete(subscriber) && members.size === 0) this.subscribers.delete(topic);
    const topics = this.topicsOf.get(subscriber);
    if (topics?.delete(topic) && topics.size === 0) this.topicsOf.delete(subscriber);
  }

  /** Drops every subscription of a subscriber that is gone. */
  remove(subscriber: Subscriber): void {
    const topics = this.topicsOf.get(subscriber);
    if (topics === undefined) return;
    for (const topic of topics) {
      const members = this.subscribers.get(topic);
      if (members?.delete(subscriber) && members.size === 0) this.subscribers.delete(topic);
    }
    this.topicsOf.delete(subscriber);
  }

  /** Members of a topic, silent subscribers left out. */
  memberCount(topic: string): number {
    let count = 0;
    for (const membership of this.subscribers.get(topic)?.values() ?? []) {
      if (!membership.silent) count++;
    }
    return count;
  }

  /** Sends to every subscriber but `exceptId`; returns how many got it. */
  publish(topic: string, payload: Uint8Array, binary: boolean, exceptId: number): number {
    const members = this.subscribers.get(topic);
    if (members === undefined) return 0;
    let delivered = 0;
    // A snapshot: a subscriber whose send fails may be removed while this loop runs.
    for (const subscriber of [...members.keys()]) {
      if (subscriber.id === exceptId) continue;
      subscriber.send(payload, binary);
      delivered++;
    }
    return delivered;
  }
}
