// A WebSocket echo server on Node's `ws` package, for wsc's interop tests.
// Usage: node ws_node_server.js [--no-context-takeover] [--window-bits N]
// Binds 127.0.0.1 on a free port and prints `READY <port>`. Echoes every message with its type.
const { WebSocketServer } = require('ws');

const args = process.argv.slice(2);
const nct = args.includes('--no-context-takeover');
const wbIdx = args.indexOf('--window-bits');
const windowBits = wbIdx >= 0 ? Number(args[wbIdx + 1]) : undefined;

const perMessageDeflate = {
  threshold: 0,
  serverNoContextTakeover: nct,
  clientNoContextTakeover: nct,
};
if (windowBits) {
  perMessageDeflate.serverMaxWindowBits = windowBits;
  perMessageDeflate.clientMaxWindowBits = windowBits;
}

const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate, maxPayload: 256 * 1024 * 1024 });
wss.on('listening', () => console.log(`READY ${wss.address().port}`));
wss.on('connection', (ws, req) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary, compress: true }));
});
