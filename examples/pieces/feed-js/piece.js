// feed: parse RSS / Atom / JSON Feed text into {items: [{title, link}]};
// an example OmniFlow piece in JavaScript.
import { Piece, InvalidInput, Fatal, http, log } from './omniflow-piece.js';
import { FeedError, parseAny, parseJsonFeed, parseXmlFeed } from './feed.js';

const ITEM = {
  type: 'object',
  required: ['title', 'link'],
  properties: { title: { type: 'string' }, link: { type: ['string', 'null'] } },
};
const OUTPUT = {
  type: 'object',
  required: ['items'],
  properties: {
    items: { type: 'array', items: ITEM },
    format: { enum: ['rss', 'rdf', 'atom', 'json'] },
    title: { type: 'string' },
  },
};
const LIMIT = { type: 'integer', minimum: 0, description: 'Keep at most this many items (0: all)' };

function limited(feed, limit) {
  return limit ? { ...feed, items: feed.items.slice(0, limit) } : feed;
}

const piece = new Piece('feed', '0.1.0', 'Feed reader: RSS 2.0, RSS 1.0, Atom and JSON Feed to a list of items')
  .action(
    'parse',
    'Parse feed text ({xml} or {json}) into items with a title and a link',
    {
      input: {
        type: 'object',
        additionalProperties: false,
        properties: {
          xml: { type: 'string', description: 'RSS or Atom text' },
          json: { type: ['string', 'object'], description: 'JSON Feed text (or the parsed object)' },
          limit: LIMIT,
        },
        oneOf: [{ required: ['xml'] }, { required: ['json'] }],
      },
      output: OUTPUT,
    },
    (ctx, input) => {
      try {
        const feed = input.xml !== undefined ? parseXmlFeed(input.xml) : parseJsonFeed(input.json);
        log.debug(`${feed.format} feed, ${feed.items.length} items`);
        return limited(feed, input.limit);
      } catch (e) {
        if (e instanceof FeedError) throw new InvalidInput(e.message);
        throw e;
      }
    },
  )
  .action(
    'fetch',
    'GET a feed URL (the step must grant it) and parse it',
    {
      input: {
        type: 'object',
        required: ['url'],
        additionalProperties: false,
        properties: { url: { type: 'string', pattern: '^[hH][tT][tT][pP][sS]?://' }, limit: LIMIT },
      },
      output: OUTPUT,
    },
    async (ctx, { url, limit }) => {
      const response = await http.check(
        await http.fetch(url, {
          headers: { accept: 'application/rss+xml, application/atom+xml, application/feed+json, */*;q=0.5' },
        }),
      );
      const text = await response.text();
      try {
        const feed = parseAny(text);
        log.info(`GET ${url}: ${response.status}, ${feed.format} feed, ${feed.items.length} items`);
        return limited(feed, limit);
      } catch (e) {
        if (e instanceof FeedError) throw new Fatal(`${url} did not answer with a feed: ${e.message}`);
        throw e;
      }
    },
  );

export const handler = piece.handler();
