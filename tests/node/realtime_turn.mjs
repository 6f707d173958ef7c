// One Realtime text turn with the official Node SDK's WebSocket client, which
// always dials wss://: FAREGATE_URL is https://host:port/v1, FAREGATE_CA the PEM
// that signed faregate's certificate. Prints the response.done event as JSON.
import { readFileSync } from 'node:fs';
import OpenAI from 'openai';
import { OpenAIRealtimeWS } from 'openai/realtime/ws';

const client = new OpenAI({ baseURL: process.env.FAREGATE_URL, apiKey: 'sk-node-client' });
const rt = new OpenAIRealtimeWS(
  { model: 'gpt-realtime', options: { ca: readFileSync(process.env.FAREGATE_CA) } },
  client,
);
const timer = setTimeout(() => { console.error('timed out'); process.exit(3); }, 20000);
rt.on('error', (err) => { console.error(String(err && (err.message || err))); process.exit(2); });
rt.socket.on('open', () => {
  rt.send({ type: 'conversation.item.create', item: { type: 'message', role: 'user',
    content: [{ type: 'input_text', text: 'hello from node' }] } });
  rt.send({ type: 'response.create', response: { output_modalities: ['text'] } });
});
rt.on('response.done', (event) => {
  console.log(JSON.stringify(event));
  clearTimeout(timer);
  rt.close();
});
