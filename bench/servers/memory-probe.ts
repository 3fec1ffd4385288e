// Loaded into each server of `npm run bench:idle` before its own script, the same for every
// server and run the same way (`node --expose-gc --import <compiled memory-probe.js> <server.js>
// ...`, or with `--tsx`, `node --expose-gc --import tsx --import <memory-probe.ts> <server.ts>`).
// On SIGUSR2 it runs a full garbage collection and prints `process.memoryUsage()` as one JSON
// line on stdout. The orchestrator does this before each reading of the server's RSS, so that
// both readings count the memory the server keeps rather than whatever garbage the last
// allocations left, and it gets the split between the JavaScript heap and the memory outside it
// (Buffers, native objects) for its per-connection breakdown.
//
// Only the main thread's heap is collected and reported: in a worker thread `process.on` does
// not receive signals. The process's RSS still counts every thread's memory.
process.on("SIGUSR2", () => {
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  const usage = process.memoryUsage();
  process.stdout.write(`${JSON.stringify({ memoryProbe: { ...usage, gc: gc !== undefined } })}\n`);
});
