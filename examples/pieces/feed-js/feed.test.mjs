// node --test examples/pieces/feed-js/  (the parser only; no component needed)
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseAny, parseJsonFeed, parseXmlFeed, FeedError } from './feed.js';

test('RSS 2.0 with CDATA, entities, comments and a guid link', () => {
  const feed = parseXmlFeed(`<?xml version="1.0" encoding="utf-8"?>
<!DOCTYPE rss [<!ENTITY x "y">]>
<rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom"><channel>
  <title>News &amp; views</title><atom:link href="https://ex.org/feed" rel="self"/>
  <!-- <item><title>commented out</title></item> -->
  <item><title><![CDATA[Fish & <b>chips</b>]]></title><link>https://ex.org/1</link></item>
  <item><title>Caf&#233; &#x2014; open</title><guid>https://ex.org/2</guid></item>
  <item><title>No link</title><guid isPermaLink="false">abc</guid></item>
</channel></rss>`);
  assert.equal(feed.format, 'rss');
  assert.equal(feed.title, 'News & views');
  assert.deepEqual(feed.items, [
    { title: 'Fish & chips', link: 'https://ex.org/1' },
    { title: 'Café — open', link: 'https://ex.org/2' },
    { title: 'No link', link: null },
  ]);
});

test('Atom: alternate link, html title', () => {
  const feed = parseXmlFeed(`<feed xmlns="http://www.w3.org/2005/Atom"><title type="text">A</title>
<entry><title type="html">&lt;em&gt;Hi&lt;/em&gt; there</title>
<link rel="edit" href="https://ex.org/e"/><link href="https://ex.org/a"/></entry>
<entry><title>Two</title><link rel="alternate" type="text/html" href='https://ex.org/b?x=1&amp;y=2'/></entry></feed>`);
  assert.equal(feed.format, 'atom');
  assert.deepEqual(feed.items, [
    { title: 'Hi there', link: 'https://ex.org/a' },
    { title: 'Two', link: 'https://ex.org/b?x=1&y=2' },
  ]);
});

test('RSS 1.0 (RDF): items outside the channel', () => {
  const feed = parseXmlFeed(`<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/">
<channel rdf:about="https://ex.org"><title>R</title></channel>
<item rdf:about="https://ex.org/r1"><title>R1</title><link>https://ex.org/r1</link></item></rdf:RDF>`);
  assert.equal(feed.format, 'rdf');
  assert.deepEqual(feed.items, [{ title: 'R1', link: 'https://ex.org/r1' }]);
});

test('JSON Feed, text or object, and parseAny', () => {
  const text = '{"version":"https://jsonfeed.org/version/1.1","title":"J","items":[{"id":"1","title":"One","url":"https://ex.org/j1"},{"id":"2","external_url":"https://ex.org/j2"}]}';
  const expected = [{ title: 'One', link: 'https://ex.org/j1' }, { title: '', link: 'https://ex.org/j2' }];
  assert.deepEqual(parseJsonFeed(text).items, expected);
  assert.deepEqual(parseJsonFeed(JSON.parse(text)).items, expected);
  assert.equal(parseAny('  ' + text).format, 'json');
});

test('not a feed', () => {
  assert.throws(() => parseXmlFeed('<html><body>x</body></html>'), FeedError);
  assert.throws(() => parseXmlFeed('just text'), FeedError);
  assert.throws(() => parseJsonFeed('{"items": 3}'), FeedError);
  assert.throws(() => parseJsonFeed('{nope'), FeedError);
});
