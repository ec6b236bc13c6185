// input: {"id": 7}
// error: fatal
// message-contains: Uncaught Error: item 7 not found
// message-contains: at
function find(id) {
  throw new Error(`item ${id} not found`);
}
function lookup(id) {
  return find(id);
}
return lookup(input.id);
