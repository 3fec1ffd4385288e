/**
 * Corking across connections: output produced anywhere during one event-loop turn is written
 * once, in the check phase that follows. Pipelined requests therefore cost one write per socket
 * per turn instead of one per frame.
 */

interface Flushable {
  flush(): void;
}

let queue: Flushable[] = [];
let spare: Flushable[] = [];
let scheduled = false;

export function scheduleFlush(target: Flushable): void {
  queue.push(target);
  if (!scheduled) {
    scheduled = true;
    setImmediate(flushAll);
  }
}

function flushAll(): void {
  scheduled = false;
  const batch = queue;
  queue = spare;
  for (let i = 0; i < batch.length; i++) batch[i].flush();
  batch.length = 0;
  spare = batch;
}
