// Feed parsing without a DOM: RSS 2.0, RSS 1.0 (RDF), Atom and JSON Feed.
// Pure functions (no OmniFlow imports), so `node --test` runs them as they are.

const NAMED = {
  amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: '\u00a0', ndash: '\u2013',
  mdash: '\u2014', hellip: '\u2026', lsquo: '\u2018', rsquo: '\u2019', ldquo: '\u201c',
  rdquo: '\u201d', laquo: '\u00ab', raquo: '\u00bb', copy: '\u00a9', reg: '\u00ae',
  trade: '\u2122', eacute: '\u00e9', egrave: '\u00e8', agrave: '\u00e0', ccedil: '\u00e7',
  uuml: '\u00fc', ouml: '\u00f6', auml: '\u00e4', szlig: '\u00df', euro: '\u20ac',
};

/** Decode XML character references and the common HTML named entities. */
export function decodeEntities(text) {
  if (!text.includes('&')) return text;
  return text.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|[a-zA-Z][a-zA-Z0-9]*);/g, (whole, ref) => {
    if (ref[0] === '#') {
      const code = ref[1] === 'x' || ref[1] === 'X' ? parseInt(ref.slice(2), 16) : parseInt(ref.slice(1), 10);
      return code > 0 && code <= 0x10ffff ? String.fromCodePoint(code) : whole;
    }
    return Object.prototype.hasOwnProperty.call(NAMED, ref) ? NAMED[ref] : whole;
  });
}

const localName = (name) => name.slice(name.indexOf(':') + 1).toLowerCase();

function parseAttributes(source) {
  const attrs = {};
  const re = /([^\s=/>]+)\s*(?:=\s*("[^"]*"|'[^']*'|[^\s>]+))?/g;
  let m;
  while ((m = re.exec(source)) !== null) {
    let value = m[2] ?? '';
    if (value[0] === '"' || value[0] === "'") value = value.slice(1, -1);
    attrs[localName(m[1])] = decodeEntities(value);
  }
  return attrs;
}

/**
 * A tolerant XML reader: elements `{ name, attrs, children, text }` (names are
 * local and lowercase, text is the decoded character data directly inside).
 * Unclosed elements are closed at the end; stray end tags are ignored.
 */
export function parseXml(xml) {
  const root = { name: '#document', attrs: {}, children: [], text: '' };
  const stack = [root];
  const top = () => stack[stack.length - 1];
  let i = 0;
  while (i < xml.length) {
    const lt = xml.indexOf('<', i);
    if (lt === -1) {
      top().text += decodeEntities(xml.slice(i));
      break;
    }
    if (lt > i) top().text += decodeEntities(xml.slice(i, lt));
    if (xml.startsWith('<!--', lt)) {
      const end = xml.indexOf('-->', lt + 4);
      i = end === -1 ? xml.length : end + 3;
    } else if (xml.startsWith('<![CDATA[', lt)) {
      const end = xml.indexOf(']]>', lt + 9);
      top().text += xml.slice(lt + 9, end === -1 ? xml.length : end);
      i = end === -1 ? xml.length : end + 3;
    } else if (xml.startsWith('<?', lt)) {
      const end = xml.indexOf('?>', lt + 2);
      i = end === -1 ? xml.length : end + 2;
    } else if (xml.startsWith('<!', lt)) {
      // DOCTYPE, possibly with an internal subset in [...]
      let j = lt + 2;
      let depth = 0;
      for (; j < xml.length; j++) {
        const c = xml[j];
        if (c === '[') depth++;
        else if (c === ']') depth--;
        else if (c === '>' && depth <= 0) break;
      }
      i = j + 1;
    } else {
      // a start or end tag: find its '>' outside quotes
      let j = lt + 1;
      let quote = null;
      for (; j < xml.length; j++) {
        const c = xml[j];
        if (quote) {
          if (c === quote) quote = null;
        } else if (c === '"' || c === "'") quote = c;
        else if (c === '>') break;
      }
      const body = xml.slice(lt + 1, j);
      i = j + 1;
      if (body[0] === '/') {
        const name = localName(body.slice(1).trim());
        const at = stack.findLastIndex((el) => el.name === name);
        if (at > 0) stack.length = at;
        continue;
      }
      const selfClosing = body.endsWith('/');
      const inner = selfClosing ? body.slice(0, -1) : body;
      const nameEnd = inner.search(/[\s/]|$/);
      const name = inner.slice(0, nameEnd);
      if (!name) {
        top().text += '<';
        i = lt + 1;
        continue;
      }
      const el = { name: localName(name), attrs: parseAttributes(inner.slice(nameEnd)), children: [], text: '' };
      top().children.push(el);
      if (!selfClosing) stack.push(el);
    }
  }
  return root;
}

function* walk(el) {
  for (const child of el.children) {
    yield child;
    yield* walk(child);
  }
}

const childrenNamed = (el, name) => el.children.filter((c) => c.name === name);
const child = (el, name) => el.children.find((c) => c.name === name);

/** All text inside an element, tags dropped, whitespace collapsed. */
function textOf(el) {
  if (!el) return '';
  let out = el.text;
  for (const c of el.children) out += ' ' + textOf(c);
  return out.replace(/\s+/g, ' ').trim();
}

/** A title may hold escaped HTML (Atom type="html", many RSS feeds): drop its tags. */
function plainTitle(el) {
  const text = textOf(el);
  return text.includes('<') ? decodeEntities(text.replace(/<[^>]*>/g, ' ')).replace(/\s+/g, ' ').trim() : text;
}

function rssLink(item) {
  for (const link of childrenNamed(item, 'link')) {
    const text = textOf(link);
    if (text) return text;
    if (link.attrs.href && (!link.attrs.rel || link.attrs.rel === 'alternate')) return link.attrs.href;
  }
  const guid = child(item, 'guid');
  if (guid && guid.attrs.ispermalink !== 'false' && /^https?:\/\//i.test(textOf(guid))) return textOf(guid);
  return item.attrs.about || null;
}

function atomLink(entry) {
  const links = childrenNamed(entry, 'link');
  const best = links.find((l) => !l.attrs.rel || l.attrs.rel === 'alternate') || links[0];
  return best ? best.attrs.href || textOf(best) || null : null;
}

export class FeedError extends Error {}

/** Parse RSS 2.0, RSS 1.0 (RDF) or Atom text. */
export function parseXmlFeed(xml) {
  const doc = parseXml(xml);
  const root = doc.children.find((c) => c.name !== '#text');
  if (!root) throw new FeedError('no XML element found: is this a feed?');
  if (root.name === 'feed') {
    return {
      format: 'atom',
      title: plainTitle(child(root, 'title')),
      items: childrenNamed(root, 'entry').map((e) => ({ title: plainTitle(child(e, 'title')), link: atomLink(e) })),
    };
  }
  if (root.name === 'rss' || root.name === 'rdf') {
    const channel = child(root, 'channel') || root;
    const items = [...walk(root)].filter((el) => el.name === 'item');
    return {
      format: root.name === 'rss' ? 'rss' : 'rdf',
      title: plainTitle(child(channel, 'title')),
      items: items.map((it) => ({ title: plainTitle(child(it, 'title')), link: rssLink(it) })),
    };
  }
  throw new FeedError(`the root element is <${root.name}>, not <rss>, <rdf:RDF> or <feed> (Atom)`);
}

/** Parse a JSON Feed (text or an already-parsed object). */
export function parseJsonFeed(json) {
  let feed = json;
  if (typeof json === 'string') {
    try {
      feed = JSON.parse(json);
    } catch (e) {
      throw new FeedError(`json is not JSON: ${e.message}`);
    }
  }
  if (!feed || typeof feed !== 'object' || !Array.isArray(feed.items)) {
    throw new FeedError('json is not a JSON Feed: it has no "items" array');
  }
  return {
    format: 'json',
    title: typeof feed.title === 'string' ? feed.title : '',
    items: feed.items
      .filter((it) => it && typeof it === 'object')
      .map((it) => ({
        title: typeof it.title === 'string' ? it.title : '',
        link: it.url || it.external_url || null,
      })),
  };
}

/** Parse feed text of any supported kind, by its first character. */
export function parseAny(text) {
  return /^\s*[{[]/.test(text) ? parseJsonFeed(text) : parseXmlFeed(text);
}
