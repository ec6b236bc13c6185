// {{name}}: an OmniFlow piece in JavaScript.
import { InvalidInput, Piece, log } from './omniflow-piece.js';

const piece = new Piece('{{name}}', '0.1.0', 'Greets someone').action(
  'greet',
  'Greet `name`',
  {
    input: {
      type: 'object',
      required: ['name'],
      additionalProperties: false,
      properties: { name: { type: 'string', description: 'Who to greet' } },
    },
    output: { type: 'object', required: ['text'], properties: { text: { type: 'string' } } },
  },
  // May be `async` (e.g. to `await fetch(...)`, which goes through the step's grants).
  (ctx, { name }) => {
    // InvalidInput and Fatal are never retried, Retryable is; any other
    // error becomes a fatal error with its stack in the step log.
    name = name.trim();
    if (!name) throw new InvalidInput('name is empty');
    log.info(`greeting ${name} (attempt ${ctx.attempt})`);
    return { text: `Hello, ${name}!` };
  },
);

export const handler = piece.handler();
