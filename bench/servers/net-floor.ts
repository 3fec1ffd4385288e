// The connect suite's floor: the least a Node.js server does for one connection of the connect
// load, on the same node:net sockets every Node WebSocket server uses. It is not a WebSocket
// server: it finds the key in the request head, answers 101 with the accept value
// (RFC 6455 section 4.2.2), and answers whatever arrives next with a close frame of code 1000
// and its FIN, without parsing or validating anything else. Its connections per CPU-second are
// what Node's accept, socket objects, stream machinery and system calls allow; what a real server
// reaches below it is what that server's own work costs.
//
//   node bench/.build/js/bench/servers/net-floor.js --port 0
import { createHash } from "node:crypto";
import { createServer, type Socket } from "node:net";
import { parseServerArgs } from "./args.js";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const KEY_HEADER = "\r\nsec-websocket-key:";
/** FIN + close, unmasked (a server's frames are), a 2-byte payload: code 1000. */
const CLOSE_1000 = Buffer.from([0x88, 0x02, 0x03, 0xe8]);

const { port } = parseServerArgs(process.argv.slice(2));

function answerHead(socket: Socket, head: string): void {
  const lower = head.toLowerCase();
  const at = lower.indexOf(KEY_HEADER);
  if (at === -1) {
    socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    return;
  }
  const start = at + KEY_HEADER.length;
  const key = head.slice(start, lower.indexOf("\r\n", start)).trim();
  const accept = createHash("sha1")
    .update(key + GUID)
    .digest("base64");
  socket.write(
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
  );
}

const server = createServer((socket) => {
  socket.setNoDelay(true);
  let head = "";
  let upgraded = false;
  socket.on("data", (chunk: Buffer) => {
    if (upgraded) {
      // The client's close frame (or anything else): the closing handshake's answer and FIN,
      // and the socket closed once they are written, as section 7.1.1 has a server do after
      // the closing handshake (the client's FIN is not waited for).
      socket.end(CLOSE_1000, () => socket.destroy());
      return;
    }
    head += chunk.toString("latin1");
    if (!head.includes("\r\n\r\n")) return;
    upgraded = true;
    answerHead(socket, head);
  });
  // The load generator ends runs by dropping its sockets; a reset is expected, not news.
  socket.on("error", () => {});
});

server.listen(port, "127.0.0.1", () => {
  const address = server.address();
  const actual = typeof address === "object" && address !== null ? address.port : port;
  console.log(`node:net floor listening on ws://127.0.0.1:${actual}/echo`);
});

const stop = () => process.exit(0);
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
