// input: {"id": 7}
// error: fatal
// message-contains: Uncaught Error: item 7 not found
// message-contains: at find (code.js:7:
// message-contains: at lookup (code.js:10:
function find(id) {
  throw new Error(`item ${id} not found`);
}
function lookup(id) {
  return find(id);
}
return lookup(input.id);
